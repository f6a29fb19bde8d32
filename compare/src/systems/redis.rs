//! Redis with `appendonly yes` and `appendfsync always` (every write command is in the
//! fsynced AOF before its reply; Redis syncs once per event-loop pass for all waiting
//! clients), used as the common hand-rolled idempotency store: `SET key value NX PX ttl`
//! claims, `SET key value XX KEEPTTL` completes, `GET` replays. Expiry is Redis's own TTL,
//! so there is no sweep to measure.
//!
//! The value packs the record: fingerprint (32 bytes), state (1 byte), created_at (8 bytes,
//! big-endian ms), then the response.

use anyhow::{Context, Result, bail};
use redis::{Commands, Connection};

use crate::keys::{KeyStream, RETENTION_MS};
use crate::servers::redis::RedisServer;
use crate::system::{Claimed, Lookup, Session, SweepSupport, System};

const IN_FLIGHT: u8 = 0;
const COMPLETED: u8 = 1;
/// Commands per pipelined round trip during the prefill.
const PIPELINE: u64 = 1000;

/// A private Redis server and its address.
pub struct Redis {
    server: RedisServer,
    client: redis::Client,
}

impl Redis {
    /// Connects to a started private server.
    pub fn new(server: RedisServer) -> Result<Redis> {
        let client = redis::Client::open(server.url()).context("Redis client")?;
        Ok(Redis { server, client })
    }

    fn connect(&self) -> Result<Connection> {
        self.client
            .get_connection()
            .context("connecting to the private Redis")
    }
}

/// `CONFIG SET appendfsync MODE`.
fn set_appendfsync(conn: &mut Connection, mode: &str) -> Result<()> {
    let _: String = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendfsync")
        .arg(mode)
        .query(conn)
        .with_context(|| format!("Redis CONFIG SET appendfsync {mode}"))?;
    Ok(())
}

fn record_key(key: &str) -> String {
    format!("idem:{key}")
}

fn encode(fp: &[u8; 32], state: u8, created: u64, response: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(41 + response.len());
    v.extend_from_slice(fp);
    v.push(state);
    v.extend_from_slice(&created.to_be_bytes());
    v.extend_from_slice(response);
    v
}

impl System for Redis {
    type Session = RedisSession;

    fn session(&self, _concurrency: usize) -> Result<RedisSession> {
        Ok(RedisSession {
            conn: self.connect()?,
        })
    }

    /// Pipelined `SET … PXAT`, then an AOF rewrite (waited for) so that no rewrite of the
    /// prefill runs during the measurements.
    ///
    /// The AOF is not synced during the prefill itself (`appendfsync no`); `always` is set
    /// again before the rewrite, and the rewritten AOF is synced before it replaces the old.
    fn prefill(&mut self, keys: KeyStream, count: u64, now_ms: u64) -> Result<()> {
        let mut conn = self.connect()?;
        set_appendfsync(&mut conn, "no")?;
        self.insert_completed(keys, count, now_ms, now_ms + RETENTION_MS)?;
        set_appendfsync(&mut conn, "always")?;
        self.server.rewrite_aof(&mut conn)
    }

    fn insert_completed(
        &mut self,
        keys: KeyStream,
        count: u64,
        created_ms: u64,
        expires_ms: u64,
    ) -> Result<()> {
        let mut conn = self.connect()?;
        let mut start = 0;
        while start < count {
            crate::check_interrupted()?;
            let end = (start + PIPELINE).min(count);
            let mut pipe = redis::pipe();
            for i in start..end {
                let r = keys.request(i);
                pipe.cmd("SET")
                    .arg(record_key(&r.key))
                    .arg(encode(&r.fp, COMPLETED, created_ms, &r.response))
                    .arg("PXAT")
                    .arg(expires_ms)
                    .ignore();
            }
            pipe.query::<()>(&mut conn)
                .context("Redis bulk SET pipeline")?;
            start = end;
        }
        Ok(())
    }

    fn sweep_support(&self) -> SweepSupport {
        SweepSupport::NotApplicable(
            "Redis expires keys itself (TTL: lazily on access and by active sampling); there is no sweep to run or count",
        )
    }

    fn sweep(&self, _now_ms: u64) -> Result<u64> {
        bail!("Redis has no sweep workload")
    }

    fn describe(&self) -> String {
        format!(
            "Redis {} (private server, appendonly yes, appendfsync always, no RDB snapshots)",
            self.server.version()
        )
    }
}

/// One connection.
pub struct RedisSession {
    conn: Connection,
}

/// A won claim: the key and its record's identity.
pub struct RedisClaim {
    key: String,
    fp: [u8; 32],
    created: u64,
}

impl Session for RedisSession {
    type Claim = RedisClaim;

    fn claim(&mut self, key: &str, fp: &[u8; 32], now_ms: u64) -> Result<Claimed<RedisClaim>> {
        let rk = record_key(key);
        let set: Option<String> = redis::cmd("SET")
            .arg(&rk)
            .arg(encode(fp, IN_FLIGHT, now_ms, &[]))
            .arg("NX")
            .arg("PX")
            .arg(RETENTION_MS)
            .query(&mut self.conn)?;
        Ok(match set {
            Some(_) => Claimed::Won(RedisClaim {
                key: rk,
                fp: *fp,
                created: now_ms,
            }),
            None => Claimed::Taken { replayed: None },
        })
    }

    fn complete(&mut self, claim: RedisClaim, response: &[u8]) -> Result<()> {
        let set: Option<String> = redis::cmd("SET")
            .arg(&claim.key)
            .arg(encode(&claim.fp, COMPLETED, claim.created, response))
            .arg("XX")
            .arg("KEEPTTL")
            .query(&mut self.conn)?;
        if set.is_none() {
            bail!("Redis: completing {} found the key gone", claim.key);
        }
        Ok(())
    }

    fn replay(&mut self, key: &str, fp: &[u8; 32], _now_ms: u64) -> Result<Lookup> {
        let value: Option<Vec<u8>> = self.conn.get(record_key(key))?;
        let Some(value) = value else {
            return Ok(Lookup::Missing);
        };
        if value.len() < 41 {
            bail!("Redis: malformed record under {key}");
        }
        Ok(if value[..32] != fp[..] {
            Lookup::Conflict
        } else if value[32] != COMPLETED {
            Lookup::InFlight
        } else {
            Lookup::Replay(value[41..].to_vec())
        })
    }
}
