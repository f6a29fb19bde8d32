//! SQLite through rusqlite (bundled), in WAL mode, with `synchronous=FULL` (every commit
//! syncs the WAL: an acknowledged write survives a power loss) or `synchronous=NORMAL`
//! (commits sync only at checkpoints: survives a process crash, not a power loss).
//!
//! The plain schema a user would write: one table keyed by the idempotency key, an index on
//! `expires_at` for the sweep, one autocommit statement per claim and per completion, and
//! one connection per thread (SQLite serializes writers; waiting ones use `busy_timeout`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OptionalExtension, params};

use crate::keys::{KeyStream, RETENTION_MS};
use crate::system::{Claimed, Lookup, Session, System};

/// Which `synchronous` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// `synchronous=FULL`: the WAL is synced at every commit.
    Full,
    /// `synchronous=NORMAL`: the WAL is synced at checkpoints only.
    Normal,
}

/// Rows per prefill transaction.
const PREFILL_BATCH: u64 = 100_000;

const CLAIM: &str = "INSERT INTO idem (key, fingerprint, state, response, created_at, expires_at)
     VALUES (?1, ?2, 0, NULL, ?3, ?4)
     ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, state = 0,
         response = NULL, created_at = excluded.created_at, expires_at = excluded.expires_at
     WHERE idem.expires_at <= excluded.created_at";
const COMPLETE: &str =
    "UPDATE idem SET state = 1, response = ?2 WHERE key = ?1 AND state = 0 AND created_at = ?3";
const READ: &str =
    "SELECT fingerprint, state, response FROM idem WHERE key = ?1 AND expires_at > ?2";

/// SQLite in one database file (plus its WAL).
pub struct Sqlite {
    path: PathBuf,
    sync: Sync,
}

impl Sqlite {
    /// Creates the database and its schema.
    pub fn open(path: &Path, sync: Sync) -> Result<Sqlite> {
        let db = Sqlite {
            path: path.to_owned(),
            sync,
        };
        let conn = db.connect()?;
        conn.execute_batch(
            "CREATE TABLE idem (
                 key TEXT PRIMARY KEY,
                 fingerprint BLOB NOT NULL,
                 state INTEGER NOT NULL,
                 response BLOB,
                 created_at INTEGER NOT NULL,
                 expires_at INTEGER NOT NULL
             );",
        )
        .context("creating the SQLite schema")?;
        Ok(db)
    }

    /// A connection with the measured settings.
    fn connect(&self) -> Result<Connection> {
        let conn = Connection::open(&self.path)
            .with_context(|| format!("opening SQLite {}", self.path.display()))?;
        let sync = match self.sync {
            Sync::Full => "FULL",
            Sync::Normal => "NORMAL",
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = {sync};
             PRAGMA cache_size = -262144;
             PRAGMA busy_timeout = 60000;"
        ))
        .context("setting SQLite pragmas")?;
        Ok(conn)
    }

    fn has_index(conn: &Connection) -> Result<bool> {
        Ok(conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'idem_expires'",
                [],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    fn bulk_insert(&self, keys: KeyStream, count: u64, created: u64, expires: u64) -> Result<()> {
        let mut conn = self.connect()?;
        let mut start = 0;
        while start < count {
            crate::check_interrupted()?;
            let end = (start + PREFILL_BATCH).min(count);
            let mut batch: Vec<_> = (start..end).map(|i| keys.request(i)).collect();
            batch.sort_unstable_by(|a, b| a.key.cmp(&b.key));
            let txn = conn.transaction()?;
            {
                let mut insert = txn.prepare_cached(
                    "INSERT INTO idem (key, fingerprint, state, response, created_at, expires_at)
                     VALUES (?1, ?2, 1, ?3, ?4, ?5)",
                )?;
                for r in &batch {
                    insert.execute(params![
                        r.key,
                        &r.fp[..],
                        r.response,
                        ms(created)?,
                        ms(expires)?
                    ])?;
                }
            }
            txn.commit()?;
            start = end;
        }
        Ok(())
    }
}

/// Milliseconds as SQL's signed integer.
fn ms(t: u64) -> Result<i64> {
    i64::try_from(t).context("a timestamp beyond i64")
}

impl System for Sqlite {
    type Session = SqliteSession;

    fn session(&self, _concurrency: usize) -> Result<SqliteSession> {
        Ok(SqliteSession {
            conn: self.connect()?,
        })
    }

    /// Bulk transactions of sorted keys; the expiry index is built after the load.
    fn prefill(&mut self, keys: KeyStream, count: u64, now_ms: u64) -> Result<()> {
        self.bulk_insert(keys, count, now_ms, now_ms + RETENTION_MS)?;
        let conn = self.connect()?;
        if !Self::has_index(&conn)? {
            conn.execute_batch("CREATE INDEX idem_expires ON idem (expires_at);")?;
        }
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    fn insert_completed(
        &mut self,
        keys: KeyStream,
        count: u64,
        created_ms: u64,
        expires_ms: u64,
    ) -> Result<()> {
        self.bulk_insert(keys, count, created_ms, expires_ms)
    }

    fn sweep(&self, now_ms: u64) -> Result<u64> {
        let conn = self.connect()?;
        let deleted = conn.execute(
            "DELETE FROM idem WHERE expires_at <= ?1",
            params![ms(now_ms)?],
        )?;
        Ok(deleted as u64)
    }

    fn describe(&self) -> String {
        format!(
            "SQLite {} (rusqlite, bundled; WAL, synchronous={}, 256 MiB cache, busy_timeout 60 s)",
            rusqlite::version(),
            match self.sync {
                Sync::Full => "FULL",
                Sync::Normal => "NORMAL",
            }
        )
    }
}

/// One connection.
pub struct SqliteSession {
    conn: Connection,
}

/// A won claim: the key and the instant that identifies this claim's row.
pub struct SqliteClaim {
    key: String,
    created: i64,
}

impl Session for SqliteSession {
    type Claim = SqliteClaim;

    fn claim(&mut self, key: &str, fp: &[u8; 32], now_ms: u64) -> Result<Claimed<SqliteClaim>> {
        let created = ms(now_ms)?;
        let changed = self.conn.prepare_cached(CLAIM)?.execute(params![
            key,
            &fp[..],
            created,
            ms(now_ms + RETENTION_MS)?
        ])?;
        Ok(if changed == 1 {
            Claimed::Won(SqliteClaim {
                key: key.to_owned(),
                created,
            })
        } else {
            Claimed::Taken { replayed: None }
        })
    }

    fn complete(&mut self, claim: SqliteClaim, response: &[u8]) -> Result<()> {
        let changed = self.conn.prepare_cached(COMPLETE)?.execute(params![
            claim.key,
            response,
            claim.created
        ])?;
        if changed != 1 {
            bail!("SQLite: completing {} updated {changed} rows", claim.key);
        }
        Ok(())
    }

    fn replay(&mut self, key: &str, fp: &[u8; 32], now_ms: u64) -> Result<Lookup> {
        let row = self
            .conn
            .prepare_cached(READ)?
            .query_row(params![key, ms(now_ms)?], |row| {
                Ok((
                    row.get::<_, Vec<u8>>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, Option<Vec<u8>>>(2)?,
                ))
            })
            .optional()?;
        Ok(match row {
            None => Lookup::Missing,
            Some((stored, _, _)) if stored.as_slice() != fp.as_slice() => Lookup::Conflict,
            Some((_, 1, Some(response))) => Lookup::Replay(response),
            Some(_) => Lookup::InFlight,
        })
    }
}
