//! A private `redis-server`: started as a child process on 127.0.0.1 with a free port,
//! its AOF in the run's temporary directory, and shut down when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{free_port, log_tail, which};

/// A running private Redis server; dropping it shuts it down.
pub struct RedisServer {
    child: Child,
    port: u16,
    version: String,
}

impl RedisServer {
    /// `redis-server` on `PATH`, if installed.
    pub fn find() -> Option<PathBuf> {
        which("redis-server")
    }

    /// Starts a server with its data in `dir` (created): AOF on, fsync at every write,
    /// no RDB snapshots and no automatic AOF rewrites (the AOF is the durability; a fork
    /// would disturb timings).
    pub fn start(binary: &Path, dir: &Path) -> Result<RedisServer> {
        std::fs::create_dir_all(dir)?;
        let mut last_error = None;
        // A free port can be taken between finding and binding it: try a few.
        for _ in 0..3 {
            match Self::try_start(binary, dir) {
                Ok(server) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    fn try_start(binary: &Path, dir: &Path) -> Result<RedisServer> {
        let port = free_port()?;
        let log = dir.join("redis.log");
        let child = Command::new(binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--protected-mode", "yes", "--daemonize", "no"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            // No automatic AOF rewrites in the middle of a measurement: the prefill ends
            // with one, explicitly.
            .args(["--auto-aof-rewrite-percentage", "0"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut server = RedisServer {
            child,
            port,
            version: String::new(),
        };
        let client = redis::Client::open(server.url())?;
        let started = Instant::now();
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "redis-server exited at start ({status}):\n{}",
                    log_tail(&log)
                );
            }
            if let Ok(mut conn) = client.get_connection() {
                let info: String = redis::cmd("INFO").arg("server").query(&mut conn)?;
                server.version = info_field(&info, "redis_version").unwrap_or_default();
                return Ok(server);
            }
            if started.elapsed() > Duration::from_secs(20) {
                bail!(
                    "redis-server did not answer within 20 s:\n{}",
                    log_tail(&log)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Rewrites the AOF now and waits for it, so no rewrite runs during measurements.
    pub fn rewrite_aof(&self, conn: &mut redis::Connection) -> Result<()> {
        // A rewrite already running (or scheduled) is as good as ours: wait for it.
        let asked: redis::RedisResult<String> = redis::cmd("BGREWRITEAOF").query(conn);
        if let Err(e) = asked
            && !e.to_string().contains("already in progress")
        {
            return Err(e).context("Redis BGREWRITEAOF");
        }
        let started = Instant::now();
        loop {
            crate::check_interrupted()?;
            let info: String = redis::cmd("INFO").arg("persistence").query(conn)?;
            let busy = info_field(&info, "aof_rewrite_in_progress").as_deref() == Some("1")
                || info_field(&info, "aof_rewrite_scheduled").as_deref() == Some("1");
            if !busy {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(600) {
                bail!("Redis AOF rewrite did not finish within 10 minutes");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A `name:value` line of `INFO` output.
fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SHUTDOWN closes the connection instead of replying: its "error" is expected.
        if let Ok(client) = redis::Client::open(self.url())
            && let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(2))
        {
            let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").arg("NOSAVE").query(&mut conn);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
