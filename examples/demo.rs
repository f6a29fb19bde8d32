//! A tour of idemdb on a store file it creates: execute, replay, conflict, and recovery
//! after a real crash.
//!
//! ```sh
//! cargo run --example demo            # uses ./idemdb-demo.idemdb
//! cargo run --example demo -- FILE    # or a file of your choice (it is recreated)
//! ```

use std::process::Command;
use std::time::Duration;

use idemdb::{Begin, BeginOptions, Fingerprint, Store};

const CRASH_CHILD: &str = "--crash-child";

fn notification(text: &str) -> Result<Fingerprint, idemdb::Error> {
    Ok(Fingerprint::builder()
        .method("POST")
        .path("/v1/notifications")
        .json_body(format!(r#"{{"to": "user-42", "text": "{text}"}}"#).as_bytes())?
        .finish())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(CRASH_CHILD) {
        return crash_mid_execution(&args[2]);
    }
    let path = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "idemdb-demo.idemdb".to_owned());
    if std::fs::metadata(&path).is_ok() {
        std::fs::remove_file(&path)?;
    }
    println!("store: {path}\n");

    let store = Store::open(&path)?;
    let mut sent = 0;
    let welcome = notification("Welcome!")?;

    // 1. First request: executes.
    println!("1. POST /v1/notifications  Idempotency-Key: notif-1");
    match store.begin("push-api", "notif-1", welcome)? {
        Begin::Execute(claim) => {
            sent += 1; // the side effect: "send" the push notification
            claim.complete(br#"{"id": "msg-0001", "recipients": 1}"#)?;
            println!("   executed: notification sent (sent so far: {sent})");
        }
        other => return Err(format!("unexpected {}", other.kind()).into()),
    }

    // 2. A retry (the client never saw the response): replays, nothing is sent again.
    println!("2. the same request again (a client retry)");
    match store.begin("push-api", "notif-1", welcome)? {
        Begin::Replay(r) => println!(
            "   replayed: {} (sent so far: {sent})",
            String::from_utf8_lossy(&r.response)
        ),
        other => return Err(format!("unexpected {}", other.kind()).into()),
    }

    // 3. The same key with a different body: a conflict, never a replay.
    println!("3. the same key, another body");
    match store.begin("push-api", "notif-1", notification("Buy now!")?)? {
        Begin::Conflict(c) => println!(
            "   conflict: the key belongs to another request (its record is {})",
            c.state
        ),
        other => return Err(format!("unexpected {}", other.kind()).into()),
    }
    store.close()?;

    // 4. A process claims a key and crashes mid-execution (a real abort, not a drop).
    println!("4. a worker claims charge-7 and crashes while charging");
    let status = Command::new(std::env::current_exe()?)
        .args([CRASH_CHILD, &path])
        .status()?;
    println!("   worker exited abnormally: {}", !status.success());

    // The worker's claim was made by an earlier opening of the store, whose process is
    // gone: it counts as abandoned at once, without waiting for its lease to end.
    let store = Store::open(&path)?;
    match store.begin("billing", "charge-7", Fingerprint::of(b"charge 10 EUR"))? {
        Begin::Execute(claim) => {
            let recovery = claim
                .recovery()
                .ok_or("a takeover is flagged as a recovery")?;
            println!(
                "   after the restart: executing again at once as attempt {}, flagged as a recovery of claim {}",
                claim.attempt(),
                recovery.previous_claim
            );
            println!("   (check with the payment provider whether attempt 1 charged, then finish)");
            claim.complete(b"charged once")?;
        }
        other => return Err(format!("unexpected {}", other.kind()).into()),
    }
    let counts = store.count_by_state()?;
    println!(
        "\nstore now holds {} completed, {} in flight; stats: {} executes, {} replays, {} conflicts, {} recoveries",
        counts.completed,
        counts.in_flight,
        store.stats().executes,
        store.stats().replays,
        store.stats().conflicts,
        store.stats().recoveries,
    );
    store.close()?;
    Ok(())
}

/// The crashing worker: claims with a one-second lease, then dies without an outcome.
fn crash_mid_execution(path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let store = Store::open(path)?;
    let options = BeginOptions::new()
        .lease(Duration::from_secs(1))
        .owner(format!("pid {}", std::process::id()));
    if let Begin::Execute(_claim) = store.begin_with(
        "billing",
        "charge-7",
        Fingerprint::of(b"charge 10 EUR"),
        &options,
    )? {
        // ... the charge is under way when the process dies ...
        std::process::abort();
    }
    Err("the worker expected to execute".into())
}
