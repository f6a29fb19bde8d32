//! The layer, its service, and the life of one request through them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ::http::header::{self, HeaderValue};
use ::http::{Request, Response, StatusCode, request, response};
use bytes::Bytes;
use http_body::Body as HttpBody;
use tower::{Layer, Service};
use tracing::Instrument;

use super::body::{self, Body, BoxError, Collected, ReadError, Unstorable, boxed, full};
use super::config::{IdempotencyLayerBuilder, Settings, StatusAction};
use super::drain::{DrainHandle, DrainState};
use super::key::{self, KeyProblem};
use super::problem::{Code, Refusal, problem};
use super::request_fingerprint::fingerprint;
use super::scope;
use super::stored_response::{StoredResponse, end_to_end_headers};
use super::waiting::{ClaimGuard, WaitRoom, to_completion};
use super::{IDEMPOTENCY_EXPIRES, IDEMPOTENT_REPLAYED, IdempotencyContext, http_date};
use crate::begin::Begin;
use crate::decision::{Conflict, InProgress, Replay};
use crate::error::{Error, Result};
use crate::fingerprint::Fingerprint;
use crate::store::Store;
use crate::time::Timestamp;

/// What every service the layer builds shares.
pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) settings: Settings,
    pub(crate) room: Arc<WaitRoom>,
    pub(crate) drain: Arc<DrainState>,
}

/// A tower [`Layer`] that makes the services it wraps idempotent: see the
/// [module docs](super).
#[derive(Clone)]
pub struct IdempotencyLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for IdempotencyLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("store", &self.shared.store)
            .finish_non_exhaustive()
    }
}

impl IdempotencyLayer {
    /// A layer with every default, over `store`.
    pub fn new(store: Store) -> IdempotencyLayer {
        // The defaults are the store's own retention and lease: nothing to check.
        IdempotencyLayerBuilder::new(store).build_unchecked()
    }

    /// Configures a layer over `store`.
    pub fn builder(store: Store) -> IdempotencyLayerBuilder {
        IdempotencyLayerBuilder::new(store)
    }

    pub(crate) fn from_shared(shared: Arc<Shared>) -> IdempotencyLayer {
        IdempotencyLayer { shared }
    }

    /// The handle that waits, at shutdown, for every handler this layer (and its clones)
    /// started — including those whose client has gone — to record its outcome: call
    /// [`DrainHandle::wait`] after the server has stopped and before closing the store.
    pub fn drain_handle(&self) -> DrainHandle {
        DrainHandle::new(Arc::clone(&self.shared.drain))
    }

    #[cfg(test)]
    pub(crate) fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = IdempotencyService<S>;

    fn layer(&self, inner: S) -> IdempotencyService<S> {
        IdempotencyService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service an [`IdempotencyLayer`] wraps around an inner service.
///
/// It needs a tokio runtime (a claim's end runs in a task of its own), as hyper and axum
/// provide.
#[derive(Clone)]
pub struct IdempotencyService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> std::fmt::Debug for IdempotencyService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyService")
            .field("store", &self.shared.store)
            .finish_non_exhaustive()
    }
}

type ResponseFuture<E> = Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>;

impl<S, B, ResBody> Service<Request<B>> for IdempotencyService<S>
where
    S: Service<Request<Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The service that was polled ready handles this request; the clone stays behind.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(handle(Arc::clone(&self.shared), inner, request))
    }
}

/// Calls the inner service without idempotency.
async fn pass<S, ResBody>(mut inner: S, request: Request<Body>) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<Body>, Response = Response<ResBody>>,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    Ok(inner.call(request).await?.map(boxed))
}

async fn handle<S, B, ResBody>(
    shared: Arc<Shared>,
    inner: S,
    request: Request<B>,
) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<Body>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let settings = &shared.settings;
    if !settings.methods.contains(request.method()) {
        return pass(inner, request.map(boxed)).await;
    }
    let (parts, body) = request.into_parts();
    let header_key = match key::from_header(&parts.headers, &settings.header) {
        Ok(key) => key,
        Err(p) => return Ok(key_refusal(p).into_response()),
    };
    if header_key.is_none() && settings.json_fields.is_empty() {
        if settings.require_key {
            return Ok(missing_key(settings));
        }
        return pass(inner, Request::from_parts(parts, boxed(body))).await;
    }

    let bytes = match read_body(&parts, body, settings.max_request_body).await {
        Ok(bytes) => bytes,
        Err(refusal) => return Ok(refusal.into_response()),
    };
    let declared_json = super::request_fingerprint::is_json(&parts.headers);
    let key = match request_key(&shared, header_key, &bytes, declared_json) {
        Ok(Some(key)) => key,
        Ok(None) if settings.require_key => return Ok(missing_key(settings)),
        Ok(None) => return pass(inner, Request::from_parts(parts, full(bytes))).await,
        Err(refusal) => return Ok(refusal.into_response()),
    };
    let tenant = match settings.scope.tenant(&parts) {
        Ok(tenant) => tenant,
        Err(rejection) => {
            let mut response = problem(rejection.status, Code::ScopeRejected, &rejection.detail);
            for (name, value) in rejection.headers {
                response.headers_mut().append(name, value);
            }
            return Ok(response);
        }
    };
    let scope = scope::compose(
        &tenant,
        &parts.method,
        parts.uri.path(),
        settings.include_route,
    );
    if let Err(reason) = crate::key::validate_scope(&scope) {
        return Ok(problem(
            StatusCode::BAD_REQUEST,
            Code::ScopeInvalid,
            &format!("the request's idempotency scope is invalid: {reason}"),
        ));
    }
    let fingerprint = fingerprint(&parts, &bytes, &settings.fingerprint_headers);

    let guard = match begin(&shared, &scope, &key, fingerprint).await {
        Began::Execute(guard) => guard,
        Began::Respond(response) => return Ok(response),
    };
    let expires_at = guard.expires_at();
    let mut parts = parts;
    parts.extensions.insert(IdempotencyContext {
        scope,
        key,
        attempt: guard.claim().map_or(1, crate::claim::Claim::attempt),
        recovery: guard.claim().is_some_and(crate::claim::Claim::is_recovery),
        expires_at,
    });
    let request = Request::from_parts(parts, full(bytes));
    // Boxed here, where the types are concrete, so the compiler proves it `Send` once.
    let work: ResponseFuture<S::Error> =
        Box::pin(execute(Arc::clone(&shared), inner, request, guard));
    if !settings.run_to_completion {
        return work.await;
    }
    match tokio::spawn(work.in_current_span()).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => {
            tracing::error!(
                "the handler of an idempotent request panicked; its claim is abandoned"
            );
            let mut response = problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::HandlerPanicked,
                "the request handler failed; retry it with the same idempotency key",
            );
            // The abandoned record stays until it expires (or a retry takes it over).
            set_expiry(&mut response, expires_at);
            Ok(response)
        }
        Err(_) => Ok(problem(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::StoreUnavailable,
            "the server is shutting down",
        )),
    }
}

/// Reads the body within the limit, or says why not.
async fn read_body<B>(parts: &request::Parts, body: B, limit: usize) -> Result<Bytes, Refusal>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::RequestTooLarge,
            format!("the request body is larger than {limit} bytes"),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    match body::read_limited(body, limit).await {
        Ok(bytes) => Ok(bytes),
        Err(ReadError::TooLarge) => Err(too_large()),
        Err(ReadError::Failed(e)) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            Code::RequestUnreadable,
            format!("the request body could not be read: {e}"),
        )),
    }
}

/// The request's key, validated and in the form the store keeps it: `Ok(None)` without one.
///
/// A body that should carry the key but is not JSON is refused when that is what the
/// client meant (the content type says JSON) or when a key is required; with a key in the
/// header, or an optional key and a body of another type, it is the handler's business.
fn request_key(
    shared: &Shared,
    header_key: Option<String>,
    body: &[u8],
    declared_json: bool,
) -> Result<Option<String>, Refusal> {
    let settings = &shared.settings;
    let policy = &shared.store.inner.settings.key_policy;
    let validate = |key: &str, source: &str| {
        let invalid = |reason: &dyn std::fmt::Display| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                Code::KeyInvalid,
                format!("invalid idempotency key in {source}: {reason}"),
            )
        };
        key::check_no_comma(key).map_err(|reason| invalid(&reason))?;
        policy
            .validate(key)
            .map(|k| k.into_owned())
            .map_err(|reason| invalid(&reason))
    };
    let header_name = settings.header.as_str();
    let header_key = header_key
        .map(|k| validate(&k, &format!("the {header_name} header")))
        .transpose()?;
    let body_key = match key::from_json_body(body, &settings.json_fields) {
        Err(KeyProblem::BodyMalformed(_))
            if header_key.is_some() || !(declared_json || settings.require_key) =>
        {
            None
        }
        found => found.map_err(key_refusal)?,
    };
    let body_key = body_key
        .map(|(field, k)| validate(&k, &format!("the body field {field:?}")).map(|k| (field, k)))
        .transpose()?;
    match (header_key, body_key) {
        (Some(h), Some((field, b))) if h != b => Err(key_refusal(KeyProblem::Mismatch(format!(
            "the {header_name} header and the body field {field:?} name different idempotency keys"
        )))),
        (Some(h), _) => Ok(Some(h)),
        (None, Some((_, b))) => Ok(Some(b)),
        (None, None) => Ok(None),
    }
}

fn key_refusal(p: KeyProblem) -> Refusal {
    match p {
        KeyProblem::Malformed(detail) => {
            Refusal::new(StatusCode::BAD_REQUEST, Code::KeyInvalid, detail)
        }
        KeyProblem::Mismatch(detail) => {
            Refusal::new(StatusCode::BAD_REQUEST, Code::KeyMismatch, detail)
        }
        KeyProblem::BodyMalformed(detail) => {
            Refusal::new(StatusCode::BAD_REQUEST, Code::BodyMalformed, detail)
        }
    }
}

fn missing_key(settings: &Settings) -> Response<Body> {
    let mut detail = format!("this request requires an {} header", settings.header);
    if !settings.json_fields.is_empty() {
        let fields: Vec<String> = settings
            .json_fields
            .iter()
            .map(|f| format!("{f:?}"))
            .collect();
        detail.push_str(&format!(" or a JSON body field {}", fields.join(" or ")));
    }
    problem(StatusCode::BAD_REQUEST, Code::KeyMissing, &detail)
}

enum Began {
    Execute(ClaimGuard),
    Respond(Response<Body>),
}

/// What one look at the store found; an execution comes already guarded.
enum Looked {
    Execute(ClaimGuard),
    Other(Begin),
    /// The layer is draining: the store was not asked.
    Draining,
}

/// The shortest and longest pause between two looks at a key held outside this layer (a
/// holder in this layer wakes its waiters at once; another layer over the same store, or
/// direct `Store` calls, do not know of our waiters).
const FIRST_PAUSE: Duration = Duration::from_millis(5);
const LONGEST_PAUSE: Duration = Duration::from_millis(250);

/// Begins the request: an execution, or the response to send instead. A key in progress
/// is waited for, without holding a thread, until the layer's wait runs out.
async fn begin(shared: &Arc<Shared>, scope: &str, key: &str, fingerprint: Fingerprint) -> Began {
    let settings = &shared.settings;
    let deadline = tokio::time::Instant::now() + settings.wait;
    let mut ticket = None;
    let mut pause = FIRST_PAUSE;
    loop {
        // Registered before looking, so a holder that ends its claim after the look wakes us.
        let notify = ticket.as_ref().and_then(super::waiting::WaitTicket::notify);
        let notified = notify.as_deref().map(tokio::sync::Notify::notified);
        let mut notified = std::pin::pin!(notified);
        if let Some(notified) = notified.as_mut().as_pin_mut() {
            notified.enable();
        }
        let answer = match begin_once(shared, scope, key, fingerprint).await {
            Ok(Looked::Execute(guard)) => return Began::Execute(guard),
            Ok(Looked::Other(answer)) => answer,
            Ok(Looked::Draining) => return Began::Respond(shutting_down()),
            Err(e) => return Began::Respond(store_error(&e)),
        };
        let in_progress = match answer {
            // `begin_once` turns every execution into a guard.
            Begin::Execute(claim) => {
                let started = shared.drain.enter();
                let guard =
                    ClaimGuard::new(claim, Arc::clone(shared), scope.into(), key.into(), started);
                return Began::Execute(guard);
            }
            Begin::Replay(replay) => return Began::Respond(replay_response(replay)),
            Begin::Conflict(conflict) => {
                return Began::Respond(conflict_response(settings, &conflict));
            }
            Begin::Abandoned(abandoned) => {
                let mut response = problem(
                    StatusCode::CONFLICT,
                    Code::Abandoned,
                    "an earlier attempt with this idempotency key stopped without an outcome; \
                     it will not run again until the key expires or an operator clears it",
                );
                set_expiry(&mut response, abandoned.expires_at);
                return Began::Respond(response);
            }
            Begin::InProgress(p) => p,
        };
        if ticket.is_none() {
            ticket = Some(shared.room.join(scope, key));
            continue; // look again, now that a wake-up cannot be missed
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Began::Respond(in_progress_response(shared, scope, key, &in_progress).await);
        }
        let nap = pause.min(deadline - now);
        pause = (pause * 2).min(LONGEST_PAUSE);
        match notified.as_pin_mut() {
            Some(notified) => drop(tokio::time::timeout(nap, notified).await),
            None => tokio::time::sleep(nap).await,
        }
    }
}

/// One `begin`, without waiting in the store, in a task that runs to its end: an
/// execution is wrapped in a [`ClaimGuard`] there, so if the request goes away before the
/// handler starts (here, or with the answer not yet taken), dropping the guard releases
/// the claim.
///
/// The look counts as started work for the drain from before the store is asked: an
/// execution carries the count on in its guard until its outcome is recorded.
async fn begin_once(
    shared: &Arc<Shared>,
    scope: &str,
    key: &str,
    fingerprint: Fingerprint,
) -> Result<Looked> {
    let Some(started) = shared.drain.enter() else {
        return Ok(Looked::Draining);
    };
    let shared = Arc::clone(shared);
    let (scope, key) = (scope.to_owned(), key.to_owned());
    let options = shared.settings.options.clone().no_wait();
    to_completion(async move {
        let begin = shared
            .store
            .begin_with_async(&scope, &key, fingerprint, &options)
            .await?;
        Ok(match begin {
            Begin::Execute(claim) => Looked::Execute(ClaimGuard::new(
                claim,
                Arc::clone(&shared),
                scope,
                key,
                Some(started),
            )),
            // Nothing to finish: the look is over (the token is dropped here).
            other => Looked::Other(other),
        })
    })
    .await
}

/// Runs the inner service with the claim held, and ends the claim by the response's status.
async fn execute<S, ResBody>(
    shared: Arc<Shared>,
    mut inner: S,
    request: Request<Body>,
    guard: ClaimGuard,
) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<Body>, Response = Response<ResBody>>,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let guard = guard.start();
    let response = match inner.call(request).await {
        Ok(response) => response,
        Err(e) => {
            // No response: whether the operation happened is unknown.
            log_end_error("abandoning", guard.abandon().await);
            return Err(e);
        }
    };
    let (mut parts, body) = response.into_parts();
    let expires_at = guard.expires_at();
    match (shared.settings.status_policy)(parts.status) {
        StatusAction::Release => {
            log_end_error("releasing", guard.release().await);
            Ok(Response::from_parts(parts, boxed(body)))
        }
        StatusAction::Abandon => {
            log_end_error("abandoning", guard.abandon().await);
            set_expiry_parts(&mut parts, expires_at);
            Ok(Response::from_parts(parts, boxed(body)))
        }
        StatusAction::Store => store_response(&shared, parts, boxed(body), guard).await,
    }
}

async fn store_response<E>(
    shared: &Shared,
    mut parts: response::Parts,
    body: Body,
    guard: ClaimGuard,
) -> Result<Response<Body>, E> {
    let expires_at = guard.expires_at();
    let headers = end_to_end_headers(&parts, &[&IDEMPOTENT_REPLAYED, &IDEMPOTENCY_EXPIRES]);
    let limit = shared.store.max_response_size();
    let body_limit = limit.saturating_sub(StoredResponse::encoded_len(&headers, 0));
    match body::collect_bounded(body, body_limit).await {
        Collected::Whole(bytes) => {
            let stored = StoredResponse {
                status: parts.status,
                headers,
                body: bytes.to_vec(),
            };
            match guard.complete(stored.encode()).await {
                Ok(completion) => set_expiry_parts(&mut parts, completion.expires_at),
                Err(error) => {
                    // The handler ran and the client gets its response; the key stays
                    // claimed (abandoned), never freed for a second run.
                    tracing::error!(%error, "storing the response of an idempotent request failed; its claim is abandoned");
                    set_expiry_parts(&mut parts, expires_at);
                }
            }
            Ok(Response::from_parts(parts, full(bytes)))
        }
        Collected::Unstorable { body, why } => {
            let reason = match why {
                Unstorable::TooLarge => format!(
                    "the response (status, headers and body) is larger than the store's \
                     max_response_size of {limit} bytes"
                ),
                Unstorable::Trailers => "the response has trailers".to_owned(),
            };
            tracing::warn!(
                status = parts.status.as_u16(),
                "{reason}: it is passed through and not stored; the claim is abandoned, so \
                 the store's recovery policy decides what a retry gets"
            );
            log_end_error("abandoning", guard.abandon().await);
            set_expiry_parts(&mut parts, expires_at);
            Ok(Response::from_parts(parts, body))
        }
        Collected::Failed { error, read } => {
            tracing::error!(%error, read, "the response body of an idempotent request failed; its claim is abandoned");
            log_end_error("abandoning", guard.abandon().await);
            Ok(problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::ResponseFailed,
                "the response could not be produced; retry with the same idempotency key",
            ))
        }
    }
}

pub(crate) fn log_end_error(what: &str, result: Result<()>) {
    if let Err(error) = result {
        tracing::warn!(%error, "{what} the claim of an idempotent request failed");
    }
}

fn replay_response(replay: Replay) -> Response<Body> {
    let stored = match StoredResponse::decode(&replay.response) {
        Ok(stored) => stored,
        Err(detail) => {
            tracing::error!(%detail, "a stored response cannot be read");
            return problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::RecordUnreadable,
                "the stored response of this idempotency key cannot be read",
            );
        }
    };
    let mut response = Response::new(full(Bytes::from(stored.body)));
    *response.status_mut() = stored.status;
    *response.headers_mut() = stored.headers;
    response
        .headers_mut()
        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    set_expiry(&mut response, replay.expires_at);
    response
}

fn conflict_response(settings: &Settings, conflict: &Conflict) -> Response<Body> {
    let mut response = problem(
        settings.conflict.status(),
        Code::Conflict,
        "this idempotency key was already used for a different request (method, path, query, \
         body or headers differ); use a new key for a new request",
    );
    set_expiry(&mut response, conflict.expires_at);
    response
}

async fn in_progress_response(
    shared: &Arc<Shared>,
    scope: &str,
    key: &str,
    in_progress: &InProgress,
) -> Response<Body> {
    let mut response = problem(
        StatusCode::CONFLICT,
        Code::InProgress,
        "a request with this idempotency key is still in progress; retry after the time in \
         Retry-After",
    );
    let hint = in_progress
        .retry_after
        .min(shared.settings.wait.max(Duration::from_secs(1)));
    let seconds = hint.as_secs() + u64::from(hint.subsec_nanos() > 0);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    // A read of the committed record: it never waits for a writer.
    if let Ok(Some(record)) = shared.store.get(scope, key) {
        set_expiry(&mut response, record.expires_at);
    }
    response
}

/// The answer to a covered request that arrives while the layer drains.
fn shutting_down() -> Response<Body> {
    let mut response = problem(
        StatusCode::SERVICE_UNAVAILABLE,
        Code::StoreUnavailable,
        "the server is shutting down; retry with the same idempotency key later",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn store_error(error: &Error) -> Response<Body> {
    match error {
        Error::InvalidKey(reason) => problem(
            StatusCode::BAD_REQUEST,
            Code::KeyInvalid,
            &format!("invalid idempotency key: {reason}"),
        ),
        Error::InvalidScope(reason) => problem(
            StatusCode::BAD_REQUEST,
            Code::ScopeInvalid,
            &format!("the request's idempotency scope is invalid: {reason}"),
        ),
        other => {
            tracing::error!(error = %other, "the idempotency store failed");
            let mut response = problem(
                StatusCode::SERVICE_UNAVAILABLE,
                Code::StoreUnavailable,
                "the idempotency store is unavailable; retry with the same idempotency key later",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
    }
}

fn expiry_value(expires_at: Option<Timestamp>) -> HeaderValue {
    match expires_at {
        Some(at) => HeaderValue::from_str(&http_date::format(at))
            .unwrap_or_else(|_| HeaderValue::from_static("never")),
        None => HeaderValue::from_static("never"),
    }
}

fn set_expiry(response: &mut Response<Body>, expires_at: Option<Timestamp>) {
    response
        .headers_mut()
        .insert(IDEMPOTENCY_EXPIRES, expiry_value(expires_at));
}

fn set_expiry_parts(parts: &mut response::Parts, expires_at: Option<Timestamp>) {
    parts
        .headers
        .insert(IDEMPOTENCY_EXPIRES, expiry_value(expires_at));
}
