//! PostgreSQL with `fsync=on` and `synchronous_commit=on` (each commit waits for its WAL
//! flush; concurrent commits share flushes), used as users hand-roll it: one table keyed by
//! the idempotency key, `INSERT … ON CONFLICT` claims, `UPDATE` completes, `SELECT`
//! replays, `DELETE … WHERE expires_at <= now` sweeps, one connection per thread, prepared
//! statements.

use anyhow::{Context, Result, bail};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;
use postgres::{Client, Statement};

use crate::keys::{KeyStream, RETENTION_MS};
use crate::servers::postgres::PostgresServer;
use crate::system::{Claimed, Lookup, Session, System};

/// Rows per COPY (one transaction each) during the prefill.
const PREFILL_BATCH: u64 = 200_000;

const CLAIM: &str = "INSERT INTO idem (key, fingerprint, state, response, created_at, expires_at)
     VALUES ($1, $2, 0, NULL, $3, $4)
     ON CONFLICT (key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, state = 0,
         response = NULL, created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
     WHERE idem.expires_at <= EXCLUDED.created_at";
const COMPLETE: &str =
    "UPDATE idem SET state = 1, response = $2 WHERE key = $1 AND state = 0 AND created_at = $3";
const READ: &str =
    "SELECT fingerprint, state, response FROM idem WHERE key = $1 AND expires_at > $2";

/// A private PostgreSQL server with the benchmark's table.
pub struct Postgres {
    server: PostgresServer,
    version: String,
}

/// Milliseconds as SQL's bigint.
fn ms(t: u64) -> Result<i64> {
    i64::try_from(t).context("a timestamp beyond i64")
}

impl Postgres {
    /// Creates the schema (the expiry index comes after the prefill).
    pub fn new(server: PostgresServer) -> Result<Postgres> {
        let mut client = server.connect()?;
        client
            .batch_execute(
                "CREATE TABLE idem (
                     key text PRIMARY KEY,
                     fingerprint bytea NOT NULL,
                     state smallint NOT NULL,
                     response bytea,
                     created_at bigint NOT NULL,
                     expires_at bigint NOT NULL
                 );",
            )
            .context("creating the PostgreSQL schema")?;
        let version: String = client.query_one("SHOW server_version", &[])?.get(0);
        Ok(Postgres { server, version })
    }

    fn copy_completed(
        &self,
        keys: KeyStream,
        count: u64,
        created: u64,
        expires: u64,
    ) -> Result<()> {
        let mut client = self.server.connect()?;
        let types = [
            Type::TEXT,
            Type::BYTEA,
            Type::INT2,
            Type::BYTEA,
            Type::INT8,
            Type::INT8,
        ];
        let (created, expires) = (ms(created)?, ms(expires)?);
        let mut start = 0;
        while start < count {
            crate::check_interrupted()?;
            let end = (start + PREFILL_BATCH).min(count);
            let mut batch: Vec<_> = (start..end).map(|i| keys.request(i)).collect();
            batch.sort_unstable_by(|a, b| a.key.cmp(&b.key));
            let sink = client.copy_in(
                "COPY idem (key, fingerprint, state, response, created_at, expires_at) FROM STDIN BINARY",
            )?;
            let mut writer = BinaryCopyInWriter::new(sink, &types);
            for r in &batch {
                let fp: &[u8] = &r.fp;
                writer.write(&[&r.key, &fp, &1i16, &r.response, &created, &expires])?;
            }
            writer.finish()?;
            start = end;
        }
        Ok(())
    }
}

impl System for Postgres {
    type Session = PostgresSession;

    fn session(&self, _concurrency: usize) -> Result<PostgresSession> {
        let mut client = self.server.connect()?;
        let claim = client.prepare(CLAIM)?;
        let complete = client.prepare(COMPLETE)?;
        let read = client.prepare(READ)?;
        Ok(PostgresSession {
            client,
            claim,
            complete,
            read,
        })
    }

    /// Binary COPY of sorted keys, then the expiry index, `VACUUM ANALYZE` and a
    /// checkpoint, so the measurements start from a settled table.
    fn prefill(&mut self, keys: KeyStream, count: u64, now_ms: u64) -> Result<()> {
        self.copy_completed(keys, count, now_ms, now_ms + RETENTION_MS)?;
        let mut client = self.server.connect()?;
        // One statement per call: VACUUM refuses to run in the implicit transaction of a
        // multi-statement query.
        for statement in [
            "CREATE INDEX IF NOT EXISTS idem_expires ON idem (expires_at)",
            "VACUUM ANALYZE idem",
            "CHECKPOINT",
        ] {
            client
                .batch_execute(statement)
                .with_context(|| format!("PostgreSQL: {statement}"))?;
        }
        Ok(())
    }

    fn insert_completed(
        &mut self,
        keys: KeyStream,
        count: u64,
        created_ms: u64,
        expires_ms: u64,
    ) -> Result<()> {
        self.copy_completed(keys, count, created_ms, expires_ms)
    }

    fn sweep(&self, now_ms: u64) -> Result<u64> {
        let mut client = self.server.connect()?;
        Ok(client.execute("DELETE FROM idem WHERE expires_at <= $1", &[&ms(now_ms)?])?)
    }

    fn describe(&self) -> String {
        format!(
            "PostgreSQL {} (private server: fsync=on, synchronous_commit=on, shared_buffers=256MB)",
            self.version
        )
    }
}

/// One connection with its prepared statements.
pub struct PostgresSession {
    client: Client,
    claim: Statement,
    complete: Statement,
    read: Statement,
}

/// A won claim: the key and the instant that identifies this claim's row.
pub struct PostgresClaim {
    key: String,
    created: i64,
}

impl Session for PostgresSession {
    type Claim = PostgresClaim;

    fn claim(&mut self, key: &str, fp: &[u8; 32], now_ms: u64) -> Result<Claimed<PostgresClaim>> {
        let created = ms(now_ms)?;
        let fp: &[u8] = fp;
        let changed = self.client.execute(
            &self.claim,
            &[&key, &fp, &created, &ms(now_ms + RETENTION_MS)?],
        )?;
        Ok(if changed == 1 {
            Claimed::Won(PostgresClaim {
                key: key.to_owned(),
                created,
            })
        } else {
            Claimed::Taken { replayed: None }
        })
    }

    fn complete(&mut self, claim: PostgresClaim, response: &[u8]) -> Result<()> {
        let changed = self
            .client
            .execute(&self.complete, &[&claim.key, &response, &claim.created])?;
        if changed != 1 {
            bail!(
                "PostgreSQL: completing {} updated {changed} rows",
                claim.key
            );
        }
        Ok(())
    }

    fn replay(&mut self, key: &str, fp: &[u8; 32], now_ms: u64) -> Result<Lookup> {
        let row = self.client.query_opt(&self.read, &[&key, &ms(now_ms)?])?;
        let Some(row) = row else {
            return Ok(Lookup::Missing);
        };
        let stored: &[u8] = row.try_get(0)?;
        let state: i16 = row.try_get(1)?;
        let response: Option<Vec<u8>> = row.try_get(2)?;
        Ok(match (stored == fp.as_slice(), state, response) {
            (false, _, _) => Lookup::Conflict,
            (true, 1, Some(response)) => Lookup::Replay(response),
            _ => Lookup::InFlight,
        })
    }
}
