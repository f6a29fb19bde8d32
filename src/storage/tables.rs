//! The redb tables of a store, and how a file is recognised as one.
//!
//! Tables hold raw bytes and idemdb decodes them itself: redb's `Value::from_bytes` cannot
//! fail, and a damaged record must be a typed error, not a panic.

use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableError};

use crate::codec;
use crate::error::{Error, Result};
use crate::storage::generations::{self, GENERATIONS};
use crate::time::Timestamp;

/// Magic string and store format version.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("idemdb_meta");
/// Storage key → encoded record: the only records table of a store from before
/// generations, and generation 0 of one since (see `generations`).
pub(crate) const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("idemdb_records");
/// Expiry index: big-endian sweep instant ++ storage key → nothing.
pub(crate) const EXPIRY: TableDefinition<&[u8], ()> = TableDefinition::new("idemdb_expiry");

const MAGIC_KEY: &str = "magic";
/// Present once the expiry index matches the records exactly (see
/// [`drop_mismatched_index_entries`]).
const INDEX_EXACT_KEY: &str = "index_exact";
const MAGIC: &[u8] = b"idemdb store";
const FORMAT_KEY: &str = "format";
const CHECKPOINT_KEY: &str = "checkpoint";

/// The store format this build writes and the newest it reads. Format 2 added the journal,
/// format 3 the record generations (older stores are upgraded when opened: their records
/// table becomes generation 0).
pub(crate) const STORE_FORMAT: u32 = 3;

/// What the last fold made durable: everything the journal `journal_id` holds up to frame
/// `folded_lsn` is in the tables, and the unfolded frames start at `tail`. `clean` is set by
/// an orderly close (nothing left to recover) and cleared when the store is opened again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub(crate) journal_id: u128,
    pub(crate) folded_lsn: u64,
    pub(crate) tail: u64,
    pub(crate) clean: bool,
}

impl Checkpoint {
    fn encode(&self) -> [u8; 34] {
        let mut out = [0u8; 34];
        out[0] = 1;
        out[1..17].copy_from_slice(&self.journal_id.to_le_bytes());
        out[17..25].copy_from_slice(&self.folded_lsn.to_le_bytes());
        out[25..33].copy_from_slice(&self.tail.to_le_bytes());
        out[33] = u8::from(self.clean);
        out
    }

    fn decode(bytes: &[u8]) -> Option<Checkpoint> {
        let bytes: &[u8; 34] = bytes.try_into().ok()?;
        if bytes[0] != 1 || bytes[33] > 1 {
            return None;
        }
        Some(Checkpoint {
            journal_id: u128::from_le_bytes(bytes[1..17].try_into().ok()?),
            folded_lsn: u64::from_le_bytes(bytes[17..25].try_into().ok()?),
            tail: u64::from_le_bytes(bytes[25..33].try_into().ok()?),
            clean: bytes[33] == 1,
        })
    }
}

/// The last checkpoint, if the store has ever had a journal.
pub(crate) fn read_checkpoint(db: &impl ReadableDatabase) -> Result<Option<Checkpoint>> {
    let read = db.begin_read().map_err(Error::from_redb)?;
    read_checkpoint_from(&read)
}

/// The last checkpoint, as a read transaction of any kind of database sees it.
pub(crate) fn read_checkpoint_from(read: &redb::ReadTransaction) -> Result<Option<Checkpoint>> {
    let meta = read.open_table(META).map_err(Error::from_redb)?;
    let Some(bytes) = meta.get(CHECKPOINT_KEY).map_err(Error::from_redb)? else {
        return Ok(None);
    };
    Checkpoint::decode(bytes.value())
        .map(Some)
        .ok_or_else(|| Error::Corrupt {
            detail: "the journal checkpoint is malformed".to_owned(),
        })
}

/// Records a checkpoint in the transaction that made it true.
pub(crate) fn write_checkpoint(
    write: &redb::WriteTransaction,
    checkpoint: &Checkpoint,
) -> Result<()> {
    let mut meta = write.open_table(META).map_err(Error::from_redb)?;
    meta.insert(CHECKPOINT_KEY, &checkpoint.encode()[..])
        .map_err(Error::from_redb)?;
    meta.insert(FORMAT_KEY, &STORE_FORMAT.to_le_bytes()[..])
        .map_err(Error::from_redb)?;
    Ok(())
}

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
    // The read transaction of the check ends before the clean-up writes.
    let tables = check_tables(db, path)?;
    if tables.empty {
        return init(db);
    }
    if !tables.index_exact {
        drop_mismatched_index_entries(db)?;
    }
    if !tables.generations {
        // The new format is recorded with the tables it needs: a build of format 2 would
        // see only generation 0.
        let write = db.begin_write().map_err(Error::from_redb)?;
        generations::ensure_table(&write)?;
        write
            .open_table(META)
            .map_err(Error::from_redb)?
            .insert(FORMAT_KEY, &STORE_FORMAT.to_le_bytes()[..])
            .map_err(Error::from_redb)?;
        write.commit().map_err(Error::from_redb)?;
    }
    Ok(())
}

/// Checks that `db` is an idemdb store of a format this build reads, and reads as it is:
/// one that would need a write first (a brand-new empty database, an older format) is
/// [`Error::ReadOnly`].
pub(crate) fn check_readable(db: &impl ReadableDatabase, path: &Path) -> Result<()> {
    let tables = check_tables(db, path)?;
    let needs = if tables.empty {
        "initialising a store never finished"
    } else if !tables.generations || !tables.index_exact {
        "upgrading the store from an older format"
    } else {
        return Ok(());
    };
    Err(Error::ReadOnly {
        path: path.to_owned(),
        needs: needs.to_owned(),
    })
}

/// What [`check_tables`] found that needs writing.
struct Found {
    /// A redb database without any table: the store is still to be initialised.
    empty: bool,
    /// The expiry index is marked exact.
    index_exact: bool,
    /// The store has its generations table.
    generations: bool,
}

/// The checks of [`check_or_init`] and [`check_readable`].
fn check_tables(db: &impl ReadableDatabase, path: &Path) -> Result<Found> {
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
            return Ok(Found {
                empty: true,
                index_exact: true,
                generations: true,
            });
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
    let generations = match read.open_table(GENERATIONS) {
        Ok(_) => true,
        Err(TableError::TableDoesNotExist(_)) => {
            read.open_table(RECORDS).map_err(|e| Error::Corrupt {
                detail: format!("the records table is unreadable: {e}"),
            })?;
            false
        }
        Err(e) => {
            return Err(Error::Corrupt {
                detail: format!("the record generations are unreadable: {e}"),
            });
        }
    };
    read.open_table(EXPIRY).map_err(|e| Error::Corrupt {
        detail: format!("the expiry index is unreadable: {e}"),
    })?;
    let index_exact = meta
        .get(INDEX_EXACT_KEY)
        .map_err(Error::from_redb)?
        .is_some();
    Ok(Found {
        empty: false,
        index_exact,
        generations,
    })
}

/// Removes every expiry-index entry that does not match its record, once, on a store
/// written before the index was kept exact (earlier builds left the entry of a damaged
/// record behind when it was replaced), and marks the index exact: the sweeper trusts it.
fn drop_mismatched_index_entries(db: &redb::Database) -> Result<()> {
    let write = db.begin_write().map_err(Error::from_redb)?;
    {
        let records = write.open_table(RECORDS).map_err(Error::from_redb)?;
        let mut expiry = write.open_table(EXPIRY).map_err(Error::from_redb)?;
        let mut mismatched = Vec::new();
        for entry in expiry.iter().map_err(Error::from_redb)? {
            let (index, _) = entry.map_err(Error::from_redb)?;
            let matches = match split_index_key(index.value()) {
                None => false,
                Some((at, key)) => {
                    let record = records.get(key).map_err(Error::from_redb)?;
                    record
                        .and_then(|bytes| codec::decode(bytes.value()).ok())
                        .and_then(|record| record.sweep_at())
                        == Some(at)
                }
            };
            if !matches {
                mismatched.push(index.value().to_vec());
            }
        }
        for index in &mismatched {
            expiry.remove(index.as_slice()).map_err(Error::from_redb)?;
        }
        if !mismatched.is_empty() {
            tracing::warn!(
                entries = mismatched.len(),
                "removed expiry-index entries that did not match their records"
            );
        }
        let mut meta = write.open_table(META).map_err(Error::from_redb)?;
        meta.insert(INDEX_EXACT_KEY, &b"1"[..])
            .map_err(Error::from_redb)?;
    }
    write.commit().map_err(Error::from_redb)
}

fn init(db: &redb::Database) -> Result<()> {
    let write = db.begin_write().map_err(Error::from_redb)?;
    {
        let mut meta = write.open_table(META).map_err(Error::from_redb)?;
        meta.insert(MAGIC_KEY, MAGIC).map_err(Error::from_redb)?;
        meta.insert(FORMAT_KEY, &STORE_FORMAT.to_le_bytes()[..])
            .map_err(Error::from_redb)?;
        meta.insert(INDEX_EXACT_KEY, &b"1"[..])
            .map_err(Error::from_redb)?;
        generations::ensure_table(&write)?;
        write.open_table(EXPIRY).map_err(Error::from_redb)?;
    }
    write.commit().map_err(Error::from_redb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_and_refuse_garbage() {
        let c = Checkpoint {
            journal_id: u128::MAX - 5,
            folded_lsn: 77,
            tail: 4096 + 512,
            clean: true,
        };
        assert_eq!(Checkpoint::decode(&c.encode()), Some(c));
        assert_eq!(Checkpoint::decode(&c.encode()[..33]), None);
        let mut bad = c.encode();
        bad[33] = 2;
        assert_eq!(Checkpoint::decode(&bad), None);
    }

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
