//! What one durable commit costs on this machine, counted rather than guessed: syncs, write
//! calls, bytes, distinct 4 KiB pages and contiguous runs of pages per commit, for idemdb's
//! claim and complete, for redb used directly (a random-key table and an append-only
//! journal table), and for a raw append to a preallocated file.
//!
//! `cargo bench --bench commit_anatomy` (set `ANATOMY_COMMITS` to change the sample size).
//! The counts are exact and repeatable; the microseconds depend on the machine's load.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

use idemdb::testing::{Backend, StorageRole};
use idemdb::{Begin, Fingerprint, Store};
use parking_lot::Mutex;
use redb::{self, ReadableDatabase, StorageBackend, TableDefinition};

#[derive(Debug, Default)]
struct Tally {
    syncs: u64,
    writes: u64,
    bytes: u64,
    pages: u64,
    runs: u64,
    open_pages: BTreeSet<u64>,
}

impl Tally {
    fn close_commit(&mut self) {
        let pages = std::mem::take(&mut self.open_pages);
        self.pages += pages.len() as u64;
        let mut previous: Option<u64> = None;
        for p in pages {
            if previous != Some(p.wrapping_sub(1)) {
                self.runs += 1;
            }
            previous = Some(p);
        }
    }
}

#[derive(Debug)]
struct Counting {
    inner: redb::backends::FileBackend,
    tally: Arc<Mutex<Tally>>,
}

impl StorageBackend for Counting {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        let mut t = self.tally.lock();
        t.syncs += 1;
        t.close_commit();
        drop(t);
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut t = self.tally.lock();
        t.writes += 1;
        t.bytes += data.len() as u64;
        let first = offset / 4096;
        let last = (offset + data.len().max(1) as u64 - 1) / 4096;
        t.open_pages.extend(first..=last);
        drop(t);
        self.inner.write(offset, data)
    }
}

/// The same counting file under idemdb's store (which takes its own storage trait).
impl Backend for Counting {
    fn len(&self) -> std::io::Result<u64> {
        StorageBackend::len(self)
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        StorageBackend::read(self, offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        StorageBackend::set_len(self, len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        StorageBackend::sync_data(self)
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        StorageBackend::write(self, offset, data)
    }
}

fn counting(path: &std::path::Path, tally: &Arc<Mutex<Tally>>) -> std::io::Result<Counting> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    Ok(Counting {
        inner: redb::backends::FileBackend::new(file)
            .map_err(|e| std::io::Error::other(e.to_string()))?,
        tally: Arc::clone(tally),
    })
}

fn report(name: &str, commits: u64, tally: &Tally, elapsed: std::time::Duration) {
    let per = |v: u64| v as f64 / commits as f64;
    println!(
        "{name:<44} {:>7.2} {:>8.2} {:>9.0} {:>7.2} {:>6.2} {:>9.1}",
        per(tally.syncs),
        per(tally.writes),
        per(tally.bytes),
        per(tally.pages),
        per(tally.runs),
        elapsed.as_secs_f64() * 1e6 / commits as f64
    );
}

fn key(i: u64) -> String {
    // UUID-like, random order
    let h = blake3::hash(&i.to_le_bytes());
    uuid::Builder::from_random_bytes(h.as_bytes()[..16].try_into().unwrap_or([0; 16]))
        .into_uuid()
        .to_string()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let commits: u64 = std::env::var("ANATOMY_COMMITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let prefill: u64 = 20_000;
    let dir = tempfile::tempdir_in(".")?;
    println!("per commit, {commits} commits, stores prefilled with {prefill} records");
    println!(
        "{:<44} {:>7} {:>8} {:>9} {:>7} {:>6} {:>9}",
        "scenario", "syncs", "writes", "bytes", "pages", "runs", "µs"
    );

    // idemdb: claim, then complete, of fresh keys
    let tally = Arc::new(Mutex::new(Tally::default()));
    let path = dir.path().join("idemdb.idemdb");
    let t = Arc::clone(&tally);
    let p = path.clone();
    // Database and journal together: folds into redb are part of what a commit costs.
    let store = Store::builder().sweep_interval(None).open_with_backend(
        "anatomy",
        move |role| match role {
            StorageRole::Database => counting(&p, &t),
            StorageRole::Journal => counting(&p.with_extension("journal"), &t),
        },
    )?;
    let response = vec![b'r'; 200];
    let mut claims = Vec::new();
    for i in 0..prefill {
        let k = key(i);
        if let Begin::Execute(c) = store.begin("bench", &k, Fingerprint::of(&k))? {
            c.complete(&response)?;
        }
    }
    *tally.lock() = Tally::default();
    let started = Instant::now();
    for i in prefill..prefill + commits {
        let k = key(i);
        if let Begin::Execute(c) = store.begin("bench", &k, Fingerprint::of(&k))? {
            claims.push(c);
        }
    }
    report(
        "idemdb claim (fresh key)",
        commits,
        &tally.lock(),
        started.elapsed(),
    );
    *tally.lock() = Tally::default();
    let started = Instant::now();
    for c in claims {
        c.complete(&response)?;
    }
    report(
        "idemdb complete (200 B)",
        commits,
        &tally.lock(),
        started.elapsed(),
    );
    store.close()?;

    // redb directly: one table, random keys, one insert per commit
    for (name, journal) in [
        ("redb: random-key insert (300 B)", false),
        ("redb: append to u64-keyed journal (300 B)", true),
    ] {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let path = dir.path().join(format!("redb-{journal}.redb"));
        let db = redb::Builder::new().create_with_backend(counting(&path, &tally)?)?;
        const RANDOM: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
        const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");
        let value = vec![7u8; 300];
        let w = db.begin_write()?;
        {
            let mut t = w.open_table(RANDOM)?;
            for i in 0..prefill {
                t.insert(key(i).as_str(), value.as_slice())?;
            }
            w.open_table(JOURNAL)?;
        }
        w.commit()?;
        *tally.lock() = Tally::default();
        let started = Instant::now();
        for i in 0..commits {
            let w = db.begin_write()?;
            if journal {
                w.open_table(JOURNAL)?.insert(i, value.as_slice())?;
            } else {
                w.open_table(RANDOM)?
                    .insert(key(prefill + i).as_str(), value.as_slice())?;
            }
            w.commit()?;
        }
        report(name, commits, &tally.lock(), started.elapsed());
        let r = db.begin_read()?;
        drop(r);
    }

    // raw file: append 512 B records to a preallocated (zero-written, synced) file
    for (name, size) in [
        ("raw: 512 B append + fdatasync (preallocated)", 512usize),
        ("raw: 4 KiB append + fdatasync (preallocated)", 4096),
    ] {
        let path = dir.path().join(format!("raw-{size}"));
        let file: File = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        let zeros = vec![0u8; 1 << 20];
        for chunk in 0..16u64 {
            file.write_all_at(&zeros, chunk << 20)?;
        }
        file.sync_all()?;
        let record = vec![1u8; size];
        let mut tally = Tally::default();
        let started = Instant::now();
        for i in 0..commits {
            let offset = i * size as u64;
            file.write_all_at(&record, offset)?;
            tally.writes += 1;
            tally.bytes += size as u64;
            tally
                .open_pages
                .extend(offset / 4096..=(offset + size as u64 - 1) / 4096);
            file.sync_data()?;
            tally.syncs += 1;
            tally.close_commit();
        }
        report(name, commits, &tally, started.elapsed());
    }
    Ok(())
}
