//! Closing or dropping a store ends its threads. This file holds one test, so no other test
//! of the same process starts threads while it counts them.

use std::time::{Duration, Instant};

use idemdb::{Fingerprint, Store};

/// The names of this process's threads that belong to idemdb (Linux `/proc`).
fn idemdb_threads() -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| name.starts_with("idemdb-"))
        .collect()
}

/// Waits (a thread names itself only once it runs) until `count` idemdb threads exist, and
/// returns their sorted names.
fn wait_for_threads(count: usize) -> Vec<String> {
    let started = Instant::now();
    loop {
        let mut names = idemdb_threads();
        if names.len() == count || started.elapsed() > Duration::from_secs(10) {
            names.sort();
            return names;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn close_and_drop_stop_the_writer_the_folder_and_the_sweeper() {
    if !std::path::Path::new("/proc/self/task").exists() {
        eprintln!("no /proc: thread names cannot be observed here");
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("s.idemdb");

    let store = Store::builder()
        .sweep_interval(Some(Duration::from_millis(10)))
        .open(&path)
        .expect("open");
    store
        .run("s", "k", Fingerprint::of(b"x"), |_| {
            Ok::<_, ()>(b"r".to_vec())
        })
        .expect("run");
    assert_eq!(
        wait_for_threads(3),
        ["idemdb-folder", "idemdb-sweeper", "idemdb-writer"]
    );
    store.close().expect("close");
    assert_eq!(wait_for_threads(0), Vec::<String>::new(), "after close");

    let store = Store::builder()
        .sweep_interval(Some(Duration::from_millis(10)))
        .open(&path)
        .expect("reopen");
    let clone = store.clone();
    assert_eq!(wait_for_threads(3).len(), 3);
    drop(store);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(idemdb_threads().len(), 3, "a clone keeps the store open");
    drop(clone);
    assert_eq!(
        wait_for_threads(0),
        Vec::<String>::new(),
        "after the last drop"
    );
}
