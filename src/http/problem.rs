//! The layer's own error responses: RFC 9457 `application/problem+json` bodies with a
//! stable `code` member, so clients can branch without parsing prose.

use ::http::header::{self, HeaderValue};
use ::http::{Response, StatusCode};
use bytes::Bytes;

use super::body::{Body, full};

/// The `code` of each problem the layer answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    KeyMissing,
    KeyInvalid,
    KeyMismatch,
    BodyMalformed,
    ScopeRejected,
    ScopeInvalid,
    RequestTooLarge,
    RequestUnreadable,
    Conflict,
    InProgress,
    Abandoned,
    StoreUnavailable,
    RecordUnreadable,
    HandlerPanicked,
    ResponseFailed,
}

impl Code {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Code::KeyMissing => "IDEMPOTENCY_KEY_MISSING",
            Code::KeyInvalid => "IDEMPOTENCY_KEY_INVALID",
            Code::KeyMismatch => "IDEMPOTENCY_KEY_MISMATCH",
            Code::BodyMalformed => "IDEMPOTENCY_BODY_MALFORMED",
            Code::ScopeRejected => "IDEMPOTENCY_SCOPE_REJECTED",
            Code::ScopeInvalid => "IDEMPOTENCY_SCOPE_INVALID",
            Code::RequestTooLarge => "REQUEST_BODY_TOO_LARGE",
            Code::RequestUnreadable => "REQUEST_BODY_UNREADABLE",
            Code::Conflict => "IDEMPOTENCY_CONFLICT",
            Code::InProgress => "IDEMPOTENCY_IN_PROGRESS",
            Code::Abandoned => "IDEMPOTENCY_ABANDONED",
            Code::StoreUnavailable => "IDEMPOTENCY_STORE_UNAVAILABLE",
            Code::RecordUnreadable => "IDEMPOTENCY_RECORD_UNREADABLE",
            Code::HandlerPanicked => "HANDLER_PANICKED",
            Code::ResponseFailed => "RESPONSE_FAILED",
        }
    }
}

/// A refusal of a request, before it becomes a [`problem`] response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) code: Code,
    pub(crate) detail: String,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, code: Code, detail: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code,
            detail: detail.into(),
        }
    }

    pub(crate) fn into_response(self) -> Response<Body> {
        problem(self.status, self.code, &self.detail)
    }
}

/// A problem response: `type` is `about:blank`, so `title` is the status's reason phrase
/// (RFC 9457 §4.2.1); `detail` explains this occurrence; `code` names the problem.
pub(crate) fn problem(status: StatusCode, code: Code, detail: &str) -> Response<Body> {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
        "code": code.as_str(),
    });
    let mut response = Response::new(full(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn problem_body_is_escaped_json() {
        let response = problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            Code::Conflict,
            "key \"k\" reused",
        );
        assert_eq!(response.status(), 422);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(value["code"], "IDEMPOTENCY_CONFLICT");
        assert_eq!(value["status"], 422);
        assert_eq!(value["title"], "Unprocessable Entity");
        assert_eq!(value["detail"], "key \"k\" reused");
    }
}
