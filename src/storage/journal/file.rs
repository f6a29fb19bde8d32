//! The journal's file on disk, as a [`StorageBackend`] so tests can swap in faulty or
//! in-memory storage for the journal exactly as they do for the database.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use redb::StorageBackend;

/// The journal file of the store at `store`: the same path with `-journal` appended.
pub(crate) fn journal_path(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push("-journal");
    PathBuf::from(name)
}

/// A plain file: positioned reads and writes, `fdatasync` for durability.
#[derive(Debug)]
pub(crate) struct JournalFile {
    file: File,
}

impl JournalFile {
    /// Opens (creating if needed) the journal file.
    pub(crate) fn open(path: &Path) -> std::io::Result<JournalFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(JournalFile { file })
    }
}

impl JournalFile {
    /// Opens an existing journal file for reading only: salvage and checks never write.
    pub(crate) fn open_read_only(path: &Path) -> std::io::Result<JournalFile> {
        Ok(JournalFile {
            file: OpenOptions::new().read(true).open(path)?,
        })
    }
}

impl StorageBackend for JournalFile {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.file.read_exact_at(out, offset)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.file.write_all_at(data, offset)
    }
}
