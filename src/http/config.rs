//! The layer's settings: every option, its default, and why.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ::http::header::HeaderName;
use ::http::{Method, StatusCode};

use super::preset::Preset;
use super::scope::{CredentialScope, ScopeExtractor};
use super::service::{IdempotencyLayer, Shared};
use super::{IDEMPOTENCY_KEY, waiting::WaitRoom};
use crate::begin::BeginOptions;
use crate::decision::RecoveryPolicy;
use crate::error::Result;
use crate::fingerprint::Fingerprint;
use crate::store::Store;

/// The status of a reused key with a different request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ConflictStatus {
    /// 422 Unprocessable Content, as draft-ietf-httpapi-idempotency-key-header says. The
    /// default.
    #[default]
    UnprocessableContent,
    /// 409 Conflict, as some public APIs answer.
    Conflict,
}

impl ConflictStatus {
    pub(crate) fn status(self) -> StatusCode {
        match self {
            ConflictStatus::UnprocessableContent => StatusCode::UNPROCESSABLE_ENTITY,
            ConflictStatus::Conflict => StatusCode::CONFLICT,
        }
    }
}

/// What the layer does with the key once the inner service has answered with a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusAction {
    /// The outcome is final: store the response, replay it to every retry.
    Store,
    /// Nothing happened that a retry must not repeat: free the key, so a retry runs again.
    Release,
    /// The outcome is unknown (the operation may have run partly): abandon the claim and
    /// let the store's [`RecoveryPolicy`] decide what a retry gets.
    Abandon,
}

/// The default status policy: store 2xx, 3xx and 4xx, except 408 Request Timeout and
/// 429 Too Many Requests, which say "try again later" and so are released like 5xx.
pub fn default_status_action(status: StatusCode) -> StatusAction {
    if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        StatusAction::Release
    } else {
        StatusAction::Store
    }
}

type StatusPolicy = Arc<dyn Fn(StatusCode) -> StatusAction + Send + Sync>;

/// The settings of a built layer.
pub(crate) struct Settings {
    pub(crate) methods: Vec<Method>,
    pub(crate) header: HeaderName,
    pub(crate) json_fields: Vec<String>,
    pub(crate) require_key: bool,
    pub(crate) scope: Arc<dyn ScopeExtractor>,
    pub(crate) include_route: bool,
    pub(crate) fingerprint_headers: Vec<HeaderName>,
    pub(crate) conflict: ConflictStatus,
    pub(crate) status_policy: StatusPolicy,
    pub(crate) wait: Duration,
    pub(crate) max_request_body: usize,
    pub(crate) options: BeginOptions,
    pub(crate) run_to_completion: bool,
}

/// Configures an [`IdempotencyLayer`]; see the [module docs](super) for the table of
/// defaults.
pub struct IdempotencyLayerBuilder {
    store: Store,
    settings: Settings,
    preset: Option<Preset>,
}

impl fmt::Debug for IdempotencyLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyLayerBuilder")
            .field("store", &self.store)
            .field("methods", &self.settings.methods)
            .field("header", &self.settings.header)
            .field("json_fields", &self.settings.json_fields)
            .field("require_key", &self.settings.require_key)
            .field("preset", &self.preset.as_ref().map(Preset::name))
            .finish_non_exhaustive()
    }
}

/// The largest request body read by default: 1 MiB.
pub const DEFAULT_MAX_REQUEST_BODY: usize = 1024 * 1024;

impl IdempotencyLayerBuilder {
    pub(crate) fn new(store: Store) -> IdempotencyLayerBuilder {
        let wait = store.inner.settings.wait;
        IdempotencyLayerBuilder {
            store,
            settings: Settings {
                methods: vec![Method::POST, Method::PATCH],
                header: IDEMPOTENCY_KEY,
                json_fields: Vec::new(),
                require_key: false,
                scope: Arc::new(CredentialScope::new()),
                include_route: true,
                fingerprint_headers: Vec::new(),
                conflict: ConflictStatus::default(),
                status_policy: Arc::new(default_status_action),
                wait,
                max_request_body: DEFAULT_MAX_REQUEST_BODY,
                options: BeginOptions::new(),
                run_to_completion: true,
            },
            preset: None,
        }
    }

    /// Applies the layer half of a [`Preset`]: its retention, the JSON body fields that
    /// carry the key, and the status of a conflict. Apply it first: later settings override
    /// it. [`build`](Self::build) checks that the store was opened with the same preset
    /// ([`StoreBuilder::preset`](crate::StoreBuilder::preset)).
    pub fn preset(self, preset: &Preset) -> Self {
        let mut builder = self
            .json_key_fields(preset.json_key_fields().iter().copied())
            .conflict_status(preset.conflict_status())
            .retention(preset.retention());
        builder.preset = Some(preset.clone());
        builder
    }

    /// The methods the layer covers (default POST and PATCH); requests with other methods
    /// pass through untouched.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.settings.methods = methods.into_iter().collect();
        self
    }

    /// The header carrying the key (default `Idempotency-Key`).
    pub fn header(mut self, name: HeaderName) -> Self {
        self.settings.header = name;
        self
    }

    /// Also look for the key in these top-level fields of a JSON body, in order (default:
    /// none). `["idempotency_key", "external_id"]` accepts the current name and its legacy
    /// alias. If the header and a field (or two fields) name different keys, the request
    /// is refused with 400.
    ///
    /// Off by default because a body field is part of an API's contract: in some APIs
    /// `external_id` is an entity's lasting identity, not a retry key.
    pub fn json_key_fields<I, T>(mut self, fields: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.settings.json_fields = fields.into_iter().map(Into::into).collect();
        self
    }

    /// Refuse covered requests without a key with 400 (default false: such requests pass
    /// through without idempotency, as the key is optional in most public APIs).
    pub fn require_key(mut self, required: bool) -> Self {
        self.settings.require_key = required;
        self
    }

    /// Who a request comes from (default [`CredentialScope`]: a digest of the
    /// `Authorization` and `X-Api-Key` headers).
    pub fn scope(mut self, extractor: impl ScopeExtractor) -> Self {
        self.settings.scope = Arc::new(extractor);
        self
    }

    /// Whether the scope includes the method and path (default true, so one key sent to two
    /// endpoints is two records). Turned off, a key reused on another endpoint is a conflict.
    pub fn scope_includes_route(mut self, include: bool) -> Self {
        self.settings.include_route = include;
        self
    }

    /// Request headers that are part of the fingerprint, besides the method, path, query
    /// and body (default none).
    pub fn fingerprint_headers(mut self, headers: impl IntoIterator<Item = HeaderName>) -> Self {
        self.settings.fingerprint_headers = headers.into_iter().collect();
        self
    }

    /// The status for a key reused with a different request (default 422).
    pub fn conflict_status(mut self, status: ConflictStatus) -> Self {
        self.settings.conflict = status;
        self
    }

    /// What to do with the key for each response status (default
    /// [`default_status_action`]).
    pub fn status_policy(
        mut self,
        policy: impl Fn(StatusCode) -> StatusAction + Send + Sync + 'static,
    ) -> Self {
        self.settings.status_policy = Arc::new(policy);
        self
    }

    /// How long a duplicate of a request in progress waits for it before it gets 409 with
    /// `Retry-After` (default: the store's wait, 10 s unless configured). Waiting holds no
    /// thread.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.settings.wait = wait;
        self
    }

    /// The largest request body read, in bytes (default 1 MiB); larger bodies get 413.
    pub fn max_request_body(mut self, bytes: usize) -> Self {
        self.settings.max_request_body = bytes;
        self
    }

    /// How long records are kept (default: the store's default retention).
    pub fn retention(mut self, retention: Duration) -> Self {
        self.settings.options = self.settings.options.retention(retention);
        self
    }

    /// Keep records forever.
    pub fn retention_forever(mut self) -> Self {
        self.settings.options = self.settings.options.forever();
        self
    }

    /// How long a claim holds its key while the handler runs (default: the store's lease).
    /// Make it longer than the slowest handler, or another process may take the key over.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.settings.options = self.settings.options.lease(lease);
        self
    }

    /// What a retry gets after a handler vanished mid-way (default: the store's policy).
    pub fn recovery(mut self, policy: RecoveryPolicy) -> Self {
        self.settings.options = self.settings.options.recovery(policy);
        self
    }

    /// Run the handler to completion even if the client goes away (default true): the
    /// handler runs in a task of its own, so a dropped connection neither cancels it nor
    /// leaves its outcome unknown, and a retry replays the stored response. Turned off, the
    /// handler runs inside the request's future: a dropped connection drops it mid-way and
    /// the claim is abandoned.
    pub fn run_to_completion(mut self, enabled: bool) -> Self {
        self.settings.run_to_completion = enabled;
        self
    }

    /// Checks the options against the store (retention within its limits, a lease of at
    /// most a year, the store half of a [`preset`](Self::preset)) and builds the layer.
    pub fn build(self) -> Result<IdempotencyLayer> {
        if let Some(reason) = self
            .preset
            .as_ref()
            .and_then(|preset| preset.store_mismatch(&self.store.inner.settings))
        {
            return Err(crate::error::Error::InvalidConfig {
                option: "preset",
                reason,
            });
        }
        self.store
            .inner
            .claim_spec(Fingerprint::of(b""), &self.settings.options)?;
        Ok(self.build_unchecked())
    }

    pub(crate) fn build_unchecked(self) -> IdempotencyLayer {
        IdempotencyLayer::from_shared(Arc::new(Shared {
            store: self.store,
            settings: self.settings,
            room: Arc::new(WaitRoom::default()),
            drain: Arc::default(),
        }))
    }
}
