//! Opening one new store from many places at once: every open ends in the same store,
//! none sees a half-created file; and an open that waits for the lock gets the store as
//! soon as its holder lets go.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use idemdb::{Begin, Error, Fingerprint, Store};

/// Opens the store at `path`, retrying while another handle holds it (as the CLI does).
fn open_retrying(path: &std::path::Path) -> idemdb::Result<Store> {
    let started = Instant::now();
    loop {
        match Store::builder().sweep_interval(None).open(path) {
            Err(Error::Locked { .. }) if started.elapsed() < Duration::from_secs(60) => {
                std::thread::sleep(Duration::from_millis(1));
            }
            other => return other,
        }
    }
}

#[test]
fn threads_creating_one_new_store_at_once_all_open_it() {
    const THREADS: usize = 8;
    for trial in 0..25 {
        let dir = tempfile::tempdir().expect("dir");
        let path = Arc::new(dir.path().join("new.idemdb"));
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let path = Arc::clone(&path);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || -> idemdb::Result<()> {
                    barrier.wait();
                    let store = open_retrying(&path)?;
                    if let Begin::Execute(claim) =
                        store.begin("s", &format!("k{t}"), Fingerprint::of(b"x"))?
                    {
                        claim.complete(b"done").map_err(|e| e.error)?;
                    }
                    store.close()
                })
            })
            .collect();
        for (t, handle) in handles.into_iter().enumerate() {
            let result = handle.join().expect("thread");
            assert!(result.is_ok(), "trial {trial}, thread {t}: {result:?}");
        }
        let store = open_retrying(&path).expect("reopen");
        for t in 0..THREADS {
            assert!(
                store.get("s", &format!("k{t}")).expect("get").is_some(),
                "trial {trial}: k{t} recorded"
            );
        }
        store.close().expect("close");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| !n.contains(".creating-")),
            "no temporary file is left behind: {names:?}"
        );
    }
}

#[test]
fn an_open_blocking_on_the_lock_gets_the_store_when_its_holder_closes() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("held.idemdb");
    let holder = Store::builder()
        .sweep_interval(None)
        .open(&path)
        .expect("holder");
    assert!(matches!(
        Store::builder().sweep_interval(None).open(&path),
        Err(Error::Locked { .. })
    ));
    let waiter_path = path.clone();
    let waiter = std::thread::spawn(move || {
        Store::builder()
            .sweep_interval(None)
            .block_on_lock(true)
            .open(&waiter_path)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !waiter.is_finished(),
        "the waiter waits while the store is held"
    );
    holder.close().expect("close");
    let store = waiter.join().expect("thread").expect("the waiter opens it");
    store.close().expect("close");
}
