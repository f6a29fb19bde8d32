//! Iterating over records, one scope or all, in pages.

use std::collections::VecDeque;

use crate::error::{Error, Result};
use crate::key::{scope_prefix, split_storage_key};
use crate::record::Record;
use crate::store::Store;

const PAGE: usize = 256;

/// One record found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScanEntry {
    /// The scope.
    pub scope: String,
    /// The key.
    pub key: String,
    /// The record.
    pub record: Record,
}

/// An iterator over records in key order; see [`Store::scan`].
///
/// It reads a page at a time, each from a fresh snapshot, so it never holds up writers and
/// may miss or include records written while it runs.
#[derive(Debug)]
pub struct Scan {
    store: Store,
    next: Option<Vec<u8>>,
    end: Option<Vec<u8>>,
    include_expired: bool,
    page_size: usize,
    page: VecDeque<Result<ScanEntry>>,
}

impl Scan {
    pub(crate) fn new(store: Store, scope: Option<&str>, include_expired: bool) -> Scan {
        let (start, end) = match scope {
            Some(scope) => {
                let prefix = scope_prefix(scope);
                let end = successor(&prefix);
                (prefix, end)
            }
            None => (Vec::new(), None),
        };
        Scan {
            store,
            next: Some(start),
            end,
            include_expired,
            page_size: PAGE,
            page: VecDeque::new(),
        }
    }

    /// Reads `size` records per snapshot (large pages for whole-store counts).
    pub(crate) fn with_page_size(mut self, size: usize) -> Scan {
        self.page_size = size.max(1);
        self
    }

    fn fill(&mut self) -> Result<()> {
        let Some(start) = self.next.take() else {
            return Ok(());
        };
        let inner = &self.store.inner;
        inner.check_open()?;
        let page = inner
            .engine
            .scan(&start, self.end.as_deref(), self.page_size)?;
        self.next = page.next;
        let now = inner.settings.clock.now();
        for (storage_key, record) in page.rows {
            let Some((scope, key)) = split_storage_key(&storage_key) else {
                self.page.push_back(Err(Error::Corrupt {
                    detail: "a record's key is not a framed (scope, key) pair".to_owned(),
                }));
                continue;
            };
            let entry = record.map(|record| ScanEntry {
                scope: scope.to_owned(),
                key: key.to_owned(),
                record,
            });
            if let Ok(e) = &entry
                && !self.include_expired
                && e.record.is_expired(now)
            {
                continue;
            }
            self.page.push_back(entry);
        }
        Ok(())
    }
}

impl Iterator for Scan {
    type Item = Result<ScanEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(entry) = self.page.pop_front() {
                return Some(entry);
            }
            self.next.as_ref()?;
            if let Err(e) = self.fill() {
                self.next = None;
                return Some(Err(e));
            }
        }
    }
}

/// The smallest byte string greater than every string starting with `prefix`; `None` when
/// there is none (all 0xFF).
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last < u8::MAX {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::successor;

    #[test]
    fn successor_of_prefixes() {
        assert_eq!(successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(successor(&[1, 0xff]), Some(vec![2]));
        assert_eq!(successor(&[0xff, 0xff]), None);
    }
}
