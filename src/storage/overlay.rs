//! A database file read through an in-memory overlay: redb may write (the repair a crashed
//! file needs before it can be read), but every write stays in memory and the file is
//! never changed. Used by `check` and salvage to read a store without writing to it.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use parking_lot::Mutex;
use redb::StorageBackend;

const PAGE: u64 = 4096;

/// The file below, and the pages written over it.
#[derive(Debug)]
pub(crate) struct OverlayBackend {
    file: File,
    /// The file's length: nothing writes it while the overlay holds its lock.
    file_len: u64,
    state: Mutex<Overlay>,
}

#[derive(Debug)]
struct Overlay {
    len: u64,
    pages: BTreeMap<u64, Vec<u8>>,
}

impl OverlayBackend {
    pub(crate) fn new(file: File) -> std::io::Result<OverlayBackend> {
        let len = file.metadata()?.len();
        Ok(OverlayBackend {
            file,
            file_len: len,
            state: Mutex::new(Overlay {
                len,
                pages: BTreeMap::new(),
            }),
        })
    }

    /// The page at `index` as it reads now: written over, or from the file (zeros past its
    /// end).
    fn page(&self, state: &Overlay, index: u64) -> std::io::Result<Vec<u8>> {
        if let Some(page) = state.pages.get(&index) {
            return Ok(page.clone());
        }
        let mut page = vec![0u8; PAGE as usize];
        let start = index * PAGE;
        let file_len = self.file_len.min(state.len);
        if start < file_len {
            let n = (file_len - start).min(PAGE) as usize;
            self.file.read_exact_at(&mut page[..n], start)?;
        }
        Ok(page)
    }
}

impl StorageBackend for OverlayBackend {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.state.lock().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let state = self.state.lock();
        if offset + out.len() as u64 > state.len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "read past the end of the file",
            ));
        }
        let end = offset + out.len() as u64;
        // Most reads touch nothing written over: one read from the file.
        if end <= self.file_len.min(state.len)
            && state
                .pages
                .range(offset / PAGE..=end.saturating_sub(1) / PAGE)
                .next()
                .is_none()
        {
            return self.file.read_exact_at(out, offset);
        }
        let mut done = 0usize;
        while done < out.len() {
            let at = offset + done as u64;
            let page = self.page(&state, at / PAGE)?;
            let within = (at % PAGE) as usize;
            let n = (PAGE as usize - within).min(out.len() - done);
            out[done..done + n].copy_from_slice(&page[within..within + n]);
            done += n;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let mut state = self.state.lock();
        if len < state.len {
            // Bytes cut off read as zeros if the file grows again.
            let first_gone = len.div_ceil(PAGE);
            state.pages.retain(|&index, _| index < first_gone);
            if !len.is_multiple_of(PAGE) {
                let index = len / PAGE;
                let mut page = self.page(&state, index)?;
                page[(len % PAGE) as usize..].fill(0);
                state.pages.insert(index, page);
            }
            for index in first_gone..self.file_len.div_ceil(PAGE) {
                state.pages.insert(index, vec![0u8; PAGE as usize]);
            }
        }
        state.len = len;
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut state = self.state.lock();
        let mut done = 0usize;
        while done < data.len() {
            let at = offset + done as u64;
            let index = at / PAGE;
            let mut page = self.page(&state, index)?;
            let within = (at % PAGE) as usize;
            let n = (PAGE as usize - within).min(data.len() - done);
            page[within..within + n].copy_from_slice(&data[done..done + n]);
            state.pages.insert(index, page);
            done += n;
        }
        state.len = state.len.max(offset + data.len() as u64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_stay_in_memory_and_read_back() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("f");
        std::fs::write(&path, vec![1u8; 10_000]).expect("write");
        let overlay = OverlayBackend::new(File::open(&path).expect("open")).expect("overlay");
        overlay.write(4000, &[2u8; 200]).expect("write");
        overlay.set_len(12_000).expect("grow");
        let mut out = vec![0u8; 12_000];
        overlay.read(0, &mut out).expect("read");
        assert!(out[..4000].iter().all(|&b| b == 1));
        assert!(out[4000..4200].iter().all(|&b| b == 2));
        assert!(out[4200..10_000].iter().all(|&b| b == 1));
        assert!(out[10_000..].iter().all(|&b| b == 0));
        overlay.set_len(5000).expect("shrink");
        overlay.set_len(6000).expect("grow");
        let mut tail = vec![9u8; 1000];
        overlay.read(5000, &mut tail).expect("read");
        assert!(tail.iter().all(|&b| b == 0));
        assert_eq!(std::fs::read(&path).expect("read"), vec![1u8; 10_000]);
    }
}
