//! What the HTTP layer costs: requests with fresh idempotency keys through the layer, the
//! same route without it, and the engine's own durable claim+complete cycles (the
//! comparison's W2), each at 16 and 64 concurrent clients, in one run on this machine.
//!
//! ```sh
//! cargo bench --bench http_layer --features http                # 5 s per measurement
//! IDEMDB_BENCH_SECONDS=15 cargo bench --bench http_layer --features http
//! ```
//!
//! The layer is configured as the example (`examples/http_notifications.rs`) configures it
//! (the OneSignal preset, keys required, scoped per `X-Api-Key`), over a durable store in
//! a temporary directory; its handler answers 201 without I/O of its own, so the figures
//! are the layer's and the store's, not a handler's. The example itself, whose handler
//! syncs an outbox file per message, is measured too. Server and clients share this
//! process (and its cores): the server on a 2-worker runtime, the clients on another.

#[path = "../examples/http_notifications.rs"]
#[allow(dead_code)]
mod example;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderName, StatusCode};
use axum::routing::post;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use idemdb::http::{HeaderScope, IdempotencyLayer, Preset};
use idemdb::{Begin, Fingerprint, Store};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const CONCURRENCY: [usize; 2] = [16, 64];

fn main() -> Result<(), BoxError> {
    let seconds: u64 = std::env::var("IDEMDB_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let run = Duration::from_secs(seconds);
    let dir = tempfile::tempdir()?;
    println!(
        "http_layer: {seconds} s per measurement, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<34} {:>8} {:>12} {:>10}",
        "what", "clients", "per second", "vs engine"
    );
    for clients in CONCURRENCY {
        let engine = engine_w2(
            &dir.path().join(format!("w2-{clients}.idemdb")),
            clients,
            run,
        )?;
        print_row("engine W2 (blocking, threads)", clients, engine, engine);
        let path = dir.path().join(format!("w2a-{clients}.idemdb"));
        let tasks = engine_w2_async(&path, clients, run)?;
        print_row("engine W2 (async, tasks)", clients, tasks, engine);
        for (what, kind) in [
            ("layer, fresh keys", Server::Layer),
            ("same route, no layer", Server::NoLayer),
            ("the example (outbox synced)", Server::Example),
        ] {
            let rate = serve_and_load(kind, dir.path(), clients, run)?;
            print_row(what, clients, rate, engine);
        }
    }
    Ok(())
}

fn print_row(what: &str, clients: usize, rate: f64, engine: f64) {
    println!(
        "{what:<34} {clients:>8} {rate:>12.0} {:>9.0}%",
        100.0 * rate / engine
    );
}

/// The comparison's W2: `clients` threads, each claiming a fresh key and completing it,
/// durably, for `run`. Cycles per second.
fn engine_w2(path: &Path, clients: usize, run: Duration) -> Result<f64, BoxError> {
    let store = Store::builder().sweep_interval(None).open(path)?;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|t| {
            let (store, stop, done) = (store.clone(), Arc::clone(&stop), Arc::clone(&done));
            std::thread::spawn(move || -> idemdb::Result<()> {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w2-{t}-{n}");
                    n += 1;
                    let fp = Fingerprint::of(key.as_bytes());
                    if let Begin::Execute(claim) = store.begin("bench", &key, fp)? {
                        claim.complete(b"{\"id\":\"n\"}")?;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(run);
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    for worker in workers {
        worker.join().map_err(|_| "a W2 thread panicked")??;
    }
    store.close()?;
    Ok(done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64())
}

/// W2 through the async API: `clients` tasks on a 2-worker runtime.
fn engine_w2_async(path: &Path, clients: usize, run: Duration) -> Result<f64, BoxError> {
    let store = Store::builder().sweep_interval(None).open(path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|t| {
            let (store, stop, done) = (store.clone(), Arc::clone(&stop), Arc::clone(&done));
            runtime.spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w2a-{t}-{n}");
                    n += 1;
                    let fp = Fingerprint::of(key.as_bytes());
                    if let Begin::Execute(claim) = store.begin_async("bench", &key, fp).await? {
                        claim
                            .complete_async(b"{\"id\":\"n\"}")
                            .await
                            .map_err(|e| e.error)?;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok::<(), idemdb::Error>(())
            })
        })
        .collect();
    std::thread::sleep(run);
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    runtime.block_on(async {
        for task in tasks {
            task.await.map_err(|e| e.to_string())??;
        }
        Ok::<(), BoxError>(())
    })?;
    store.close()?;
    Ok(done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64())
}

#[derive(Clone, Copy)]
enum Server {
    Layer,
    NoLayer,
    Example,
}

async fn created() -> (StatusCode, &'static str) {
    (
        StatusCode::CREATED,
        "{\"id\":\"notification\",\"recipients\":1}",
    )
}

/// The router to measure, over a fresh store in `dir` (the store to close after).
fn router(kind: Server, path: &Path) -> Result<(Router, Option<Store>), BoxError> {
    Ok(match kind {
        Server::NoLayer => (
            Router::new().route("/v1/notifications", post(created)),
            None,
        ),
        Server::Layer => {
            let store = Store::builder()
                .preset(&Preset::onesignal())
                .sweep_interval(None)
                .open(path)?;
            let layer = IdempotencyLayer::builder(store.clone())
                .preset(&Preset::onesignal())
                .require_key(true)
                .scope(HeaderScope::new(HeaderName::from_static("x-api-key")).digest())
                .build()?;
            let router = Router::new()
                .route("/v1/notifications", post(created))
                .layer(layer);
            (router, Some(store))
        }
        Server::Example => {
            let store = example::open_store(path)?;
            let outbox = Arc::new(example::Outbox::open(&example::outbox_path(path))?);
            let (router, _drain) = example::app(store.clone(), outbox, Duration::ZERO)?;
            (router, Some(store))
        }
    })
}

/// Serves `kind` on 127.0.0.1 and runs `clients` connections against it for `run`, each
/// sending one request after another with a fresh key. Successful requests per second.
fn serve_and_load(
    kind: Server,
    dir: &Path,
    clients: usize,
    run: Duration,
) -> Result<f64, BoxError> {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let path = dir.join(format!("http-{}-{clients}.idemdb", kind as u8));
    let (router, store) = router(kind, &path)?;
    let listener = server_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    server_rt.spawn(async move { axum::serve(listener, router).await });

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let rate = client_rt.block_on(load(addr, clients, run))?;
    drop(client_rt);
    drop(server_rt);
    if let Some(store) = store {
        store.close()?;
    }
    Ok(rate)
}

async fn load(addr: SocketAddr, clients: usize, run: Duration) -> Result<f64, BoxError> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut ok = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = uuid::Uuid::new_v4().to_string();
                let request = hyper::Request::post("/v1/notifications")
                    .header("host", "127.0.0.1")
                    .header("x-api-key", "bench")
                    .header("idempotency-key", key.as_str())
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(
                        b"{\"to\":[\"ada\"],\"message\":\"hello\"}",
                    )))?;
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                let status = response.status();
                response.into_body().collect().await?;
                if status != StatusCode::CREATED {
                    return Err::<u64, BoxError>(format!("unexpected status {status}").into());
                }
                ok += 1;
            }
            Ok(ok)
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(run).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    Ok(total as f64 / elapsed.as_secs_f64())
}
