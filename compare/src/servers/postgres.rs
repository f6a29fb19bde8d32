//! A private PostgreSQL cluster: `initdb` in the run's temporary directory, started with
//! `pg_ctl` on 127.0.0.1 with a free port (its socket in that directory too), and stopped
//! with `pg_ctl stop` when dropped.
//!
//! PostgreSQL refuses to run as root. When the benchmark runs as root, the cluster is
//! created and run as the `postgres` user if it exists, else as `nobody`: the cluster's
//! directory is handed to that user, and every PostgreSQL command runs with its uid/gid
//! (the standard library drops root's supplementary groups).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use postgres::{Client, NoTls};

use super::{free_port, log_tail, run, which};

/// The database superuser the benchmark creates and connects as.
const SUPERUSER: &str = "bench";

/// A user to run PostgreSQL as.
#[derive(Debug, Clone)]
struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

/// A running private cluster; dropping it stops it.
pub struct PostgresServer {
    bin: PathBuf,
    dir: PathBuf,
    data: PathBuf,
    port: u16,
    run_as: Option<RunAs>,
    running: bool,
}

impl PostgresServer {
    /// The directory holding `initdb`, `pg_ctl` and `postgres`: `explicit` if given, else
    /// the newest `/usr/lib/postgresql/*/bin`, else `PATH`.
    pub fn find(explicit: Option<&Path>) -> Option<PathBuf> {
        let complete = |dir: &Path| {
            ["initdb", "pg_ctl", "postgres"]
                .iter()
                .all(|b| dir.join(b).is_file())
        };
        if let Some(dir) = explicit {
            return complete(dir).then(|| dir.to_owned());
        }
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
                let bin = entry.path().join("bin");
                complete(&bin).then_some((version, bin))
            })
            .collect();
        versions.sort();
        if let Some((_, bin)) = versions.pop() {
            return Some(bin);
        }
        let initdb = which("initdb")?;
        let dir = initdb.parent()?.to_owned();
        complete(&dir).then_some(dir)
    }

    /// Creates and starts a cluster in `dir` (created).
    pub fn start(bin: &Path, dir: &Path) -> Result<PostgresServer> {
        let run_as = pick_user()?;
        std::fs::create_dir_all(dir)?;
        if let Some(user) = &run_as {
            // The user must reach the directory through its parents and own it.
            if let Some(parent) = dir.parent() {
                std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755))?;
            }
            std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid))
                .with_context(|| format!("handing {} to {}", dir.display(), user.name))?;
        }
        let data = dir.join("data");
        let mut server = PostgresServer {
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            data,
            port: 0,
            run_as,
            running: false,
        };
        let mut initdb = server.command("initdb");
        initdb.arg("-D").arg(&server.data).args([
            "-U",
            SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "-N",
        ]);
        run(&mut initdb, "initdb")?;
        let mut last_error = None;
        for _ in 0..3 {
            match server.try_start() {
                Ok(()) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("PostgreSQL did not start")))
    }

    fn try_start(&mut self) -> Result<()> {
        self.port = free_port()?;
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=on -c synchronous_commit=on \
             -c full_page_writes=on -c shared_buffers=256MB -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("postgres.log");
        let mut start = self.command("pg_ctl");
        start
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &options, "start"]);
        // From here on, a failure still needs a stop.
        self.running = true;
        if let Err(e) = run(&mut start, "pg_ctl start") {
            self.stop();
            bail!("{e:#}\n{}", log_tail(&log));
        }
        let started = Instant::now();
        loop {
            match self.connect() {
                Ok(_) => return Ok(()),
                Err(e) if started.elapsed() > Duration::from_secs(30) => {
                    self.stop();
                    bail!(
                        "PostgreSQL does not accept connections: {e:#}\n{}",
                        log_tail(&log)
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// A PostgreSQL program, run as the cluster's user.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command.current_dir(&self.dir).env("LC_ALL", "C");
        if let Some(user) = &self.run_as {
            command
                .uid(user.uid)
                .gid(user.gid)
                .env("HOME", &self.dir)
                .env("USER", &user.name);
        }
        command
    }

    /// A new connection to the cluster.
    pub fn connect(&self) -> Result<Client> {
        Client::connect(
            &format!(
                "host=127.0.0.1 port={} user={SUPERUSER} dbname=postgres",
                self.port
            ),
            NoTls,
        )
        .context("connecting to the private PostgreSQL")
    }

    /// Stops the cluster (fast shutdown; immediate if that fails).
    fn stop(&mut self) {
        if !self.running {
            return;
        }
        for mode in ["fast", "immediate"] {
            let mut stop = self.command("pg_ctl");
            stop.arg("-D")
                .arg(&self.data)
                .args(["-m", mode, "-w", "-t", "60", "stop"]);
            if run(&mut stop, "pg_ctl stop").is_ok() {
                break;
            }
        }
        self.running = false;
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `None` when not root; otherwise the `postgres` user, or `nobody`.
fn pick_user() -> Result<Option<RunAs>> {
    let uid = id(&["-u"])?;
    if uid != 0 {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let (Ok(uid), Ok(gid)) = (id(&["-u", name]), id(&["-g", name])) {
            return Ok(Some(RunAs {
                name: name.to_owned(),
                uid,
                gid,
            }));
        }
    }
    bail!(
        "running as root, and neither a `postgres` nor a `nobody` user exists to run PostgreSQL as; run the benchmark as an ordinary user"
    )
}

/// `id ARGS` as a number.
fn id(args: &[&str]) -> Result<u32> {
    let output = run(Command::new("id").args(args), "id")?;
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .context("parsing the output of `id`")
}
