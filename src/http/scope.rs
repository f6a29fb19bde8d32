//! Scopes: who a request comes from (a tenant, an API key, a user) and which endpoint it
//! addresses. The same key in two scopes is two unrelated records, so two tenants or two
//! endpoints never replay each other's responses.

use std::fmt;

use ::http::header::{self, HeaderName, HeaderValue};
use ::http::{Method, StatusCode, request};

use crate::key::MAX_SCOPE_LEN;

/// Names the tenant a request comes from: the first part of its scope. The layer appends
/// the method and path (unless told not to), so an extractor only says *who*.
///
/// Any `Fn(&request::Parts) -> Result<String, ScopeRejection>` is an extractor:
///
/// ```
/// use idemdb::http::ScopeRejection;
/// use http::StatusCode;
///
/// let by_tenant = |parts: &http::request::Parts| {
///     parts
///         .headers
///         .get("x-tenant-id")
///         .and_then(|v| v.to_str().ok())
///         .map(|tenant| format!("tenant={tenant}"))
///         .ok_or_else(|| ScopeRejection::new(StatusCode::UNAUTHORIZED, "no x-tenant-id header"))
/// };
/// # let _ = idemdb::http::IdempotencyLayer::builder(
/// #     idemdb::Store::builder().open_in_memory().unwrap()).scope(by_tenant);
/// ```
///
/// The tenant text must be valid in a scope (no control characters); a long one is
/// replaced by its digest so the whole scope fits the store's limit.
pub trait ScopeExtractor: Send + Sync + 'static {
    /// The tenant of this request, or why the request is refused.
    fn tenant(&self, request: &request::Parts) -> Result<String, ScopeRejection>;
}

impl<F> ScopeExtractor for F
where
    F: Fn(&request::Parts) -> Result<String, ScopeRejection> + Send + Sync + 'static,
{
    fn tenant(&self, request: &request::Parts) -> Result<String, ScopeRejection> {
        self(request)
    }
}

/// A refusal from a [`ScopeExtractor`]: the layer answers with this status, these headers
/// and a problem+json body (code `IDEMPOTENCY_SCOPE_REJECTED`) whose detail is the message.
///
/// A 401 must carry a `WWW-Authenticate` challenge (RFC 9110, section 15.5.2): add it with
/// [`header`](Self::header).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScopeRejection {
    /// The response status (for example 400 or 401).
    pub status: StatusCode,
    /// What is wrong, for the client.
    pub detail: String,
    /// Headers the refusal carries (for example `WWW-Authenticate`), in order.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ScopeRejection {
    /// A refusal with this status and message.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> ScopeRejection {
        ScopeRejection {
            status,
            detail: detail.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a header to the refusal (appended, so a header may be given more than once).
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> ScopeRejection {
        self.headers.push((name, value));
        self
    }
}

impl fmt::Display for ScopeRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.detail, self.status)
    }
}

impl std::error::Error for ScopeRejection {}

/// The default extractor: the tenant is a digest of the request's credentials (by default
/// the `Authorization` and `X-Api-Key` headers), or `anonymous` without any. Two callers
/// with different credentials never share a record, and no secret is written to the store
/// (only a 128-bit BLAKE3 digest of it). A client that changes credentials between retries
/// (a refreshed token) starts a new record.
#[derive(Debug, Clone)]
pub struct CredentialScope {
    headers: Vec<HeaderName>,
}

impl Default for CredentialScope {
    fn default() -> Self {
        CredentialScope {
            headers: vec![header::AUTHORIZATION, HeaderName::from_static("x-api-key")],
        }
    }
}

impl CredentialScope {
    /// Credentials from `Authorization` and `X-Api-Key`.
    pub fn new() -> CredentialScope {
        CredentialScope::default()
    }

    /// Credentials from these headers instead (for example a session cookie's header).
    pub fn headers(headers: impl IntoIterator<Item = HeaderName>) -> CredentialScope {
        CredentialScope {
            headers: headers.into_iter().collect(),
        }
    }
}

impl ScopeExtractor for CredentialScope {
    fn tenant(&self, request: &request::Parts) -> Result<String, ScopeRejection> {
        let mut hasher = blake3::Hasher::new_derive_key("idemdb 2026-11 http credential scope");
        let mut any = false;
        for name in &self.headers {
            for value in request.headers.get_all(name) {
                any = true;
                frame(&mut hasher, name.as_str().as_bytes());
                frame(&mut hasher, value.as_bytes());
            }
        }
        if !any {
            return Ok("anonymous".to_owned());
        }
        Ok(format!("cred:{}", short_hex(&hasher)))
    }
}

/// The tenant is the value of one header (say `X-Tenant-Id`), as `name=value`, or with
/// [`digest`](Self::digest) a digest of it (for a header holding a secret). A request
/// without the header is refused with 400, or with the status set by
/// [`missing_status`](Self::missing_status).
#[derive(Debug, Clone)]
pub struct HeaderScope {
    name: HeaderName,
    digest: bool,
    missing: StatusCode,
    challenge: Option<HeaderValue>,
}

impl HeaderScope {
    /// The tenant named by header `name`, stored in plain text.
    pub fn new(name: HeaderName) -> HeaderScope {
        HeaderScope {
            name,
            digest: false,
            missing: StatusCode::BAD_REQUEST,
            challenge: None,
        }
    }

    /// Store a 128-bit digest of the value instead of the value.
    pub fn digest(mut self) -> HeaderScope {
        self.digest = true;
        self
    }

    /// The status for a request without the header (default 400). For an API key, prefer
    /// [`challenge`](Self::challenge): a 401 must say how to authenticate.
    pub fn missing_status(mut self, status: StatusCode) -> HeaderScope {
        self.missing = status;
        self
    }

    /// Refuse a request without the header with 401 Unauthorized carrying this
    /// `WWW-Authenticate` challenge (RFC 9110 requires one on every 401), for example
    /// `ApiKey header="X-Api-Key"`.
    pub fn challenge(mut self, challenge: HeaderValue) -> HeaderScope {
        self.missing = StatusCode::UNAUTHORIZED;
        self.challenge = Some(challenge);
        self
    }
}

impl ScopeExtractor for HeaderScope {
    fn tenant(&self, request: &request::Parts) -> Result<String, ScopeRejection> {
        let name = &self.name;
        let value = request.headers.get(name).ok_or_else(|| {
            let rejection =
                ScopeRejection::new(self.missing, format!("the request has no {name} header"));
            match &self.challenge {
                Some(challenge) => rejection.header(header::WWW_AUTHENTICATE, challenge.clone()),
                None => rejection,
            }
        })?;
        if self.digest {
            let mut hasher = blake3::Hasher::new_derive_key("idemdb 2026-11 http header scope");
            frame(&mut hasher, value.as_bytes());
            return Ok(format!("{name}#{}", short_hex(&hasher)));
        }
        let value = value.to_str().map_err(|_| {
            ScopeRejection::new(
                StatusCode::BAD_REQUEST,
                format!("the {name} header is not visible ASCII text"),
            )
        })?;
        Ok(format!("{name}={value}"))
    }
}

fn frame(hasher: &mut blake3::Hasher, bytes: &[u8]) {
    hasher.update(&(bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// The first 128 bits of the digest, in hex.
fn short_hex(hasher: &blake3::Hasher) -> String {
    let hex = hasher.finalize().to_hex();
    hex[..32].to_owned()
}

fn digest_of(text: &str) -> String {
    let mut hasher = blake3::Hasher::new_derive_key("idemdb 2026-11 http long scope part");
    frame(&mut hasher, text.as_bytes());
    format!("#{}", short_hex(&hasher))
}

/// The longest tenant kept as it is; a longer one is replaced by its digest.
const MAX_TENANT_LEN: usize = 128;

/// The scope of a request: `tenant METHOD path`, or just the tenant when the route is left
/// out. Parts that would make it longer than a scope may be are replaced by digests.
pub(crate) fn compose(tenant: &str, method: &Method, path: &str, include_route: bool) -> String {
    let tenant = if tenant.len() > MAX_TENANT_LEN {
        digest_of(tenant)
    } else {
        tenant.to_owned()
    };
    if !include_route {
        return tenant;
    }
    let scope = format!("{tenant} {method} {path}");
    if scope.len() <= MAX_SCOPE_LEN {
        return scope;
    }
    format!("{tenant} {method} {}", digest_of(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> request::Parts {
        let mut builder = ::http::Request::builder().method("POST").uri("/v1/x");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("request").into_parts().0
    }

    #[test]
    fn credentials_separate_callers_without_storing_secrets() {
        let scope = CredentialScope::new();
        let a = scope.tenant(&parts(&[("authorization", "Bearer secret-a")]));
        let b = scope.tenant(&parts(&[("authorization", "Bearer secret-b")]));
        let key = scope.tenant(&parts(&[("x-api-key", "Bearer secret-a")]));
        let (a, b, key) = (a.expect("a"), b.expect("b"), key.expect("key"));
        assert_ne!(a, b);
        assert_ne!(a, key, "the header name is part of the digest");
        assert!(!a.contains("secret"));
        assert_eq!(scope.tenant(&parts(&[])), Ok("anonymous".to_owned()));
    }

    #[test]
    fn header_scope_plain_digest_and_missing() {
        let name = HeaderName::from_static("x-tenant-id");
        let plain = HeaderScope::new(name.clone());
        let request = parts(&[("x-tenant-id", "acme")]);
        assert_eq!(plain.tenant(&request), Ok("x-tenant-id=acme".to_owned()));
        let hashed = HeaderScope::new(name.clone()).digest();
        let tenant = hashed.tenant(&request).expect("digest");
        assert!(tenant.starts_with("x-tenant-id#") && !tenant.contains("acme"));
        let missing = HeaderScope::new(name).missing_status(StatusCode::UNAUTHORIZED);
        let rejection = missing.tenant(&parts(&[])).expect_err("missing");
        assert_eq!(rejection.status, StatusCode::UNAUTHORIZED);
        assert!(rejection.headers.is_empty());
    }

    #[test]
    fn header_scope_challenge_is_a_401_with_www_authenticate() {
        let challenge = HeaderValue::from_static("ApiKey header=\"X-Api-Key\"");
        let scope = HeaderScope::new(HeaderName::from_static("x-api-key"))
            .digest()
            .challenge(challenge.clone());
        let rejection = scope.tenant(&parts(&[])).expect_err("missing");
        assert_eq!(rejection.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            rejection.headers,
            vec![(header::WWW_AUTHENTICATE, challenge)]
        );
        assert!(scope.tenant(&parts(&[("x-api-key", "k")])).is_ok());
    }

    #[test]
    fn composed_scopes_fit_and_stay_distinct() {
        let post = Method::POST;
        assert_eq!(compose("t", &post, "/a", true), "t POST /a");
        assert_eq!(compose("t", &post, "/a", false), "t");
        assert_ne!(
            compose("t", &post, "/a", true),
            compose("t", &Method::PATCH, "/a", true)
        );
        let long_path = format!("/{}", "p".repeat(400));
        let other_long_path = format!("/{}", "q".repeat(400));
        let a = compose("t", &post, &long_path, true);
        let b = compose("t", &post, &other_long_path, true);
        assert!(a.len() <= MAX_SCOPE_LEN && b.len() <= MAX_SCOPE_LEN);
        assert_ne!(a, b);
        let long_tenant = "t".repeat(300);
        let c = compose(&long_tenant, &post, &long_path, true);
        assert!(c.len() <= MAX_SCOPE_LEN);
        assert!(crate::validate_scope(&c).is_ok());
    }
}
