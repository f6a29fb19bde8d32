//! What the HTTP end-to-end tests share: an axum service with probe handlers behind the
//! idempotency layer, served over real TCP, and a hyper client that talks to it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use idemdb::http::{IdempotencyContext, IdempotencyLayer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, oneshot};
use tokio::task::JoinHandle;

/// How long any single step of a test may take before it counts as a hang.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

/// Awaits `future`, failing the test if it takes longer than [`HANG_GUARD`].
pub async fn guard<F: std::future::Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(HANG_GUARD, future).await {
        Ok(output) => output,
        Err(_) => panic!("hang: {what} did not finish within {HANG_GUARD:?}"),
    }
}

/// What the handlers saw: how often each ran, with which idempotency context, and a gate
/// the gated handler waits at.
pub struct Probe {
    /// Handler entries per route name.
    runs: Mutex<BTreeMap<&'static str, u64>>,
    /// Every context a handler was given, in order.
    pub contexts: Mutex<Vec<IdempotencyContext>>,
    /// Permits for the gated handler (none at first).
    pub gate: Semaphore,
    /// Fired whenever the gated handler starts.
    pub gated_started: Notify,
    /// Gated handlers that were dropped before they finished.
    pub gated_cancelled: AtomicU64,
    /// Gated handlers that finished.
    pub gated_finished: AtomicU64,
}

impl Default for Probe {
    fn default() -> Probe {
        Probe {
            runs: Mutex::default(),
            contexts: Mutex::default(),
            gate: Semaphore::new(0),
            gated_started: Notify::new(),
            gated_cancelled: AtomicU64::new(0),
            gated_finished: AtomicU64::new(0),
        }
    }
}

impl Probe {
    /// How often the handler `route` ran.
    pub fn runs(&self, route: &str) -> u64 {
        self.runs
            .lock()
            .expect("probe")
            .get(route)
            .copied()
            .unwrap_or(0)
    }

    /// Counts one run of `route` and returns its number (1 for the first).
    fn count(&self, route: &'static str, context: Option<IdempotencyContext>) -> u64 {
        if let Some(context) = context {
            self.contexts.lock().expect("probe").push(context);
        }
        let mut runs = self.runs.lock().expect("probe");
        let n = runs.entry(route).or_insert(0);
        *n += 1;
        *n
    }

    /// The last context a handler saw.
    pub fn last_context(&self) -> IdempotencyContext {
        self.contexts
            .lock()
            .expect("probe")
            .last()
            .cloned()
            .expect("a handler ran with an idempotency context")
    }
}

type Ctx = Option<Extension<IdempotencyContext>>;

fn created(route: &str, n: u64, context: &Ctx, body: &Bytes) -> Response {
    let (attempt, recovery) = context
        .as_ref()
        .map_or((0, false), |c| (c.attempt, c.recovery));
    let json = serde_json::json!({
        "id": format!("{route}-{n:04}"),
        "attempt": attempt,
        "recovery": recovery,
        "request_bytes": body.len(),
    });
    let mut response = (StatusCode::CREATED, axum::Json(json)).into_response();
    let headers = response.headers_mut();
    headers.insert("x-run", HeaderValue::from(n));
    headers.append("x-multi", HeaderValue::from_static("one"));
    headers.append("x-multi", HeaderValue::from_static("two"));
    response
}

async fn notifications(State(p): State<Arc<Probe>>, c: Ctx, body: Bytes) -> Response {
    let n = p.count("notifications", c.as_ref().map(|c| c.0.clone()));
    created("notifications", n, &c, &body)
}

async fn stats(State(p): State<Arc<Probe>>) -> String {
    p.runs("notifications").to_string()
}

async fn health() -> &'static str {
    "ok"
}

/// Sets `gated_cancelled` if the handler's future is dropped before it finishes.
struct CancelWatch<'a> {
    probe: &'a Probe,
    finished: bool,
}

impl Drop for CancelWatch<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.probe.gated_cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn gated(State(p): State<Arc<Probe>>, c: Ctx, body: Bytes) -> Response {
    let n = p.count("gated", c.as_ref().map(|c| c.0.clone()));
    let mut watch = CancelWatch {
        probe: &p,
        finished: false,
    };
    p.gated_started.notify_waiters();
    p.gate.acquire().await.expect("gate").forget();
    watch.finished = true;
    p.gated_finished.fetch_add(1, Ordering::SeqCst);
    created("gated", n, &c, &body)
}

async fn flaky(State(p): State<Arc<Probe>>, c: Ctx, body: Bytes) -> Response {
    let n = p.count("flaky", c.as_ref().map(|c| c.0.clone()));
    if n == 1 {
        let json = serde_json::json!({"error": "the upstream is down, try again"});
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json)).into_response();
    }
    created("flaky", n, &c, &body)
}

async fn panicky(State(p): State<Arc<Probe>>, c: Ctx, body: Bytes) -> Response {
    let n = p.count("panicky", c.as_ref().map(|c| c.0.clone()));
    if n == 1 {
        panic!("the test handler panics on its first run");
    }
    created("panicky", n, &c, &body)
}

async fn slow(State(p): State<Arc<Probe>>, c: Ctx, body: Bytes) -> Response {
    let n = p.count("slow", c.as_ref().map(|c| c.0.clone()));
    tokio::time::sleep(Duration::from_millis(20)).await;
    created("slow", n, &c, &body)
}

/// Answers with `?bytes=N` bytes of `x`.
async fn big(State(p): State<Arc<Probe>>, c: Ctx, uri: axum::http::Uri) -> Response {
    p.count("big", c.as_ref().map(|c| c.0.clone()));
    let size = uri
        .query()
        .and_then(|q| q.strip_prefix("bytes="))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    (StatusCode::OK, vec![b'x'; size]).into_response()
}

/// The test service: every route above, behind `layer`.
pub fn app(layer: IdempotencyLayer, probe: Arc<Probe>) -> Router {
    Router::new()
        .route("/v1/notifications", post(notifications))
        .route("/v1/notifications/{id}", patch(notifications))
        .route("/v1/stats", get(stats))
        .route("/health", get(health))
        .route("/v1/gated", post(gated))
        .route("/v1/flaky", post(flaky))
        .route("/v1/panicky", post(panicky))
        .route("/v1/slow", post(slow))
        .route("/v1/big", post(big))
        .layer(layer)
        .with_state(probe)
}

/// A running test service.
pub struct Server {
    pub addr: SocketAddr,
    pub probe: Arc<Probe>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves `app(layer)` on a free loopback port, on the current runtime.
    pub async fn start(layer: IdempotencyLayer) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let probe = Arc::new(Probe::default());
        let app = app(layer, Arc::clone(&probe));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
        });
        Server {
            addr,
            probe,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops accepting, lets open connections finish, and waits until the server is gone.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            guard("server shutdown", task).await.expect("server task");
        }
    }

    /// A request builder for `path` on this server.
    pub fn post(&self, path: &str) -> Call {
        Call::new(self.addr, "POST", path)
    }

    /// A request builder for `path` on this server.
    pub fn request(&self, method: &str, path: &str) -> Call {
        Call::new(self.addr, method, path)
    }
}

/// A response as the client received it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// A header as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("text header"))
    }

    /// Whether the layer marked this response as a replay.
    pub fn replayed(&self) -> bool {
        self.header("idempotent-replayed") == Some("true")
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    /// The `code` of a problem+json body.
    pub fn problem_code(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "not a problem response: {self:?}"
        );
        self.json()["code"].as_str().expect("code").to_owned()
    }

    /// Every header but `date` (set per connection by the server) and `idempotent-replayed`.
    pub fn stored_headers(&self) -> Vec<(String, Vec<u8>)> {
        self.headers
            .iter()
            .filter(|(name, _)| *name != "date" && *name != "idempotent-replayed")
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect()
    }
}

/// One request, sent over a fresh TCP connection with hyper's HTTP/1 client.
#[derive(Debug, Clone)]
pub struct Call {
    addr: SocketAddr,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Call {
    pub fn new(addr: SocketAddr, method: &str, path: &str) -> Call {
        Call {
            addr,
            method: method.to_owned(),
            path: path.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Call {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn key(self, key: &str) -> Call {
        self.header("idempotency-key", key)
    }

    pub fn json(mut self, body: &str) -> Call {
        self.body = body.as_bytes().to_vec();
        self.header("content-type", "application/json")
    }

    pub fn body(mut self, body: Vec<u8>) -> Call {
        self.body = body;
        self
    }

    fn build(&self) -> Request<Full<Bytes>> {
        let mut builder = Request::builder()
            .method(self.method.as_str())
            .uri(self.path.as_str())
            .header("host", self.addr.to_string());
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder
            .body(Full::new(Bytes::from(self.body.clone())))
            .expect("request")
    }

    /// Sends the request and reads the whole response.
    pub async fn send(&self) -> Reply {
        guard("a request", self.send_unguarded()).await
    }

    async fn send_unguarded(&self) -> Reply {
        let stream = TcpStream::connect(self.addr).await.expect("connect");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        let driver = tokio::spawn(connection);
        let response = sender.send_request(self.build()).await.expect("response");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("response body").to_bytes();
        drop(sender);
        driver.abort();
        Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    }

    /// The request as HTTP/1.1 bytes, for tests that write to a raw socket.
    pub fn raw(&self) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\n",
            self.method,
            self.path,
            self.addr,
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// Opens a raw connection and writes the whole request, without reading the answer.
    pub async fn send_raw(&self) -> TcpStream {
        let mut stream = guard("connect", TcpStream::connect(self.addr))
            .await
            .expect("connect");
        stream.write_all(&self.raw()).await.expect("write request");
        stream.flush().await.expect("flush");
        stream
    }
}

/// Reads from a raw connection until the server closes it, and returns what came.
pub async fn read_to_close(mut stream: TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    guard("reading a raw response", stream.read_to_end(&mut out))
        .await
        .expect("read");
    out
}

/// Waits until `check` holds, looking every few milliseconds (a hang guard bounds it).
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    guard(what, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// A fresh random UUID v4, as text.
pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Where captured log lines go.
struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static LOGS: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();

/// Captures every log line of this test process from now on (installed once).
pub fn capture_logs() {
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buffer);
        tracing_subscriber::fmt()
            .with_writer(move || LogSink(Arc::clone(&sink)))
            .try_init()
            .expect("the only log subscriber");
        buffer
    });
}

/// The log lines captured so far that contain `needle`.
pub fn logged(needle: &str) -> Vec<String> {
    let Some(buffer) = LOGS.get() else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&buffer.lock().expect("log")).into_owned();
    text.lines()
        .filter(|line| line.contains(needle))
        .map(str::to_owned)
        .collect()
}
