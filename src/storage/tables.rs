//! The redb tables of a store, and how a file is recognised as one.
//!
//! Tables hold raw bytes and idemdb decodes them itself: redb's `Value::from_bytes` cannot
//! fail, and a damaged record must be a typed error, not a panic.

use std::path::Path;

use redb::{ReadableDatabase, TableDefinition, TableError};

use crate::error::{Error, Result};
use crate::time::Timestamp;

/// Magic string and store format version.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("idemdb_meta");
/// Storage key → encoded record.
pub(crate) const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("idemdb_records");
/// Expiry index: big-endian sweep instant ++ storage key → nothing.
pub(crate) const EXPIRY: TableDefinition<&[u8], ()> = TableDefinition::new("idemdb_expiry");

const MAGIC_KEY: &str = "magic";
const MAGIC: &[u8] = b"idemdb store";
const FORMAT_KEY: &str = "format";

/// The store format this build writes and the newest it reads.
pub(crate) const STORE_FORMAT: u32 = 1;

/// The expiry-index key of a record swept at `at`: sorting by it sorts by instant.
pub(crate) fn index_key(at: Timestamp, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&at.as_millis().to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// Splits an expiry-index key; `None` if it is too short to hold an instant.
pub(crate) fn split_index_key(bytes: &[u8]) -> Option<(Timestamp, &[u8])> {
    let (at, key) = bytes.split_first_chunk::<8>()?;
    Some((Timestamp::from_millis(u64::from_be_bytes(*at)), key))
}

/// Checks that `db` is an idemdb store of a format this build reads, or initialises it if
/// it is a brand-new, empty redb database.
pub(crate) fn check_or_init(db: &redb::Database, path: &Path) -> Result<()> {
    let read = db.begin_read().map_err(Error::from_redb)?;
    let meta = match read.open_table(META) {
        Ok(meta) => meta,
        Err(TableError::TableDoesNotExist(_)) => {
            let mut names: Vec<String> = read
                .list_tables()
                .map_err(Error::from_redb)?
                .map(|t| redb::TableHandle::name(&t).to_owned())
                .collect();
            names.extend(
                read.list_multimap_tables()
                    .map_err(Error::from_redb)?
                    .map(|t| redb::MultimapTableHandle::name(&t).to_owned()),
            );
            drop(read);
            if !names.is_empty() {
                return Err(Error::NotAStore {
                    path: path.to_owned(),
                    reason: format!(
                        "a redb database holding other tables ({})",
                        names.join(", ")
                    ),
                });
            }
            // An empty redb file is what a crash between creating the file and the first
            // commit leaves behind, so it is initialised rather than refused.
            return init(db);
        }
        Err(e) => return Err(Error::from_redb(e)),
    };
    let magic = meta.get(MAGIC_KEY).map_err(Error::from_redb)?;
    if magic.as_ref().map(|m| m.value()) != Some(MAGIC) {
        return Err(Error::NotAStore {
            path: path.to_owned(),
            reason: "its metadata table does not carry the idemdb magic".to_owned(),
        });
    }
    let format = meta.get(FORMAT_KEY).map_err(Error::from_redb)?;
    let format = format
        .as_ref()
        .and_then(|f| <[u8; 4]>::try_from(f.value()).ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| Error::Corrupt {
            detail: "the store format version is missing or malformed".to_owned(),
        })?;
    if format > STORE_FORMAT {
        return Err(Error::NewerFormat {
            path: path.to_owned(),
            found: format,
            supported: STORE_FORMAT,
        });
    }
    read.open_table(RECORDS).map_err(|e| Error::Corrupt {
        detail: format!("the records table is unreadable: {e}"),
    })?;
    read.open_table(EXPIRY).map_err(|e| Error::Corrupt {
        detail: format!("the expiry index is unreadable: {e}"),
    })?;
    Ok(())
}

fn init(db: &redb::Database) -> Result<()> {
    let write = db.begin_write().map_err(Error::from_redb)?;
    {
        let mut meta = write.open_table(META).map_err(Error::from_redb)?;
        meta.insert(MAGIC_KEY, MAGIC).map_err(Error::from_redb)?;
        meta.insert(FORMAT_KEY, &STORE_FORMAT.to_le_bytes()[..])
            .map_err(Error::from_redb)?;
        write.open_table(RECORDS).map_err(Error::from_redb)?;
        write.open_table(EXPIRY).map_err(Error::from_redb)?;
    }
    write.commit().map_err(Error::from_redb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_keys_sort_by_instant_then_key() {
        let a = index_key(Timestamp::from_millis(1), b"zzz");
        let b = index_key(Timestamp::from_millis(256), b"aaa");
        assert!(a < b);
        assert_eq!(
            split_index_key(&b),
            Some((Timestamp::from_millis(256), &b"aaa"[..]))
        );
        assert_eq!(split_index_key(b"short"), None);
    }
}
