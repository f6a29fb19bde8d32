//! The HTTP layer at its edges, over real TCP: keys with commas, bodies that should carry
//! the key but are not JSON, and refusals that must say how to authenticate.
#![cfg(feature = "http")]

mod http_support;

use http::{HeaderName, HeaderValue, StatusCode};
use http_support::{Server, uuid};
use idemdb::http::{HeaderScope, IdempotencyLayer};
use idemdb::{KeyPolicy, Store, UuidVersions};

const BODY: &str = r#"{"to": ["ada"], "message": "hello"}"#;

fn store_with(policy: KeyPolicy) -> Store {
    Store::builder()
        .sweep_interval(None)
        .key_policy(policy)
        .open_in_memory()
        .expect("store")
}

#[tokio::test]
async fn a_key_with_a_comma_is_refused_under_every_policy() {
    let policies = [
        KeyPolicy::default(),
        KeyPolicy::Opaque { max_len: 4096 },
        KeyPolicy::OpaqueChars { max_chars: 256 },
        KeyPolicy::Uuid(UuidVersions::ALL),
    ];
    for policy in policies {
        let layer = IdempotencyLayer::builder(store_with(policy.clone()))
            .json_key_fields(["idempotency_key"])
            .build()
            .expect("layer");
        let server = Server::start(layer).await;
        // What a proxy makes of `Idempotency-Key: <a>` and `Idempotency-Key: <b>`.
        let joined = format!("{}, {}", uuid(), uuid());
        let quoted = format!("\"{}\", \"{}\"", uuid(), uuid());
        let in_quotes = format!("\"{},{}\"", uuid(), uuid());
        for value in [&joined, &quoted, &in_quotes] {
            let reply = server
                .post("/v1/notifications")
                .key(value)
                .json(BODY)
                .send()
                .await;
            assert_eq!(reply.status, 400, "{policy:?}, {value}: {reply:?}");
            assert_eq!(reply.problem_code(), "IDEMPOTENCY_KEY_INVALID");
        }
        let detail = server
            .post("/v1/notifications")
            .key(&joined)
            .json(BODY)
            .send()
            .await
            .json()["detail"]
            .as_str()
            .expect("detail")
            .to_owned();
        assert!(detail.contains("comma"), "{policy:?}: {detail}");
        // A body field is held to the same rule, so one key works in both places.
        let body = format!(r#"{{"idempotency_key": "{joined}"}}"#);
        let from_body = server.post("/v1/notifications").json(&body).send().await;
        assert_eq!(from_body.status, 400, "{policy:?}: {from_body:?}");
        assert_eq!(from_body.problem_code(), "IDEMPOTENCY_KEY_INVALID");
        assert_eq!(server.probe.runs("notifications"), 0, "{policy:?}");

        let one = uuid();
        let fine = server
            .post("/v1/notifications")
            .key(&one)
            .json(BODY)
            .send()
            .await;
        assert_eq!(fine.status, 201, "{policy:?}: {fine:?}");
        server.stop().await;
    }
}

#[tokio::test]
async fn a_malformed_json_body_that_should_carry_the_key_is_its_own_problem() {
    let layer = IdempotencyLayer::builder(store_with(KeyPolicy::default()))
        .json_key_fields(["idempotency_key", "external_id"])
        .require_key(true)
        .build()
        .expect("layer");
    let server = Server::start(layer).await;

    let broken = server
        .post("/v1/notifications")
        .json(r#"{"idempotency_key": "k-1", "message": "hi""#)
        .send()
        .await;
    assert_eq!(broken.status, 400, "{broken:?}");
    assert_eq!(broken.problem_code(), "IDEMPOTENCY_BODY_MALFORMED");
    let detail = broken.json()["detail"].as_str().expect("detail").to_owned();
    assert!(
        detail.contains("not valid JSON") && detail.contains("idempotency_key"),
        "{detail}"
    );

    // Sent without a JSON content type (as `curl -d` does), a key is still required, and
    // the body is still the only place it could be.
    let as_form = server
        .post("/v1/notifications")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(b"{not json".to_vec())
        .send()
        .await;
    assert_eq!(as_form.problem_code(), "IDEMPOTENCY_BODY_MALFORMED");

    // A well-formed body without the field is a missing key, as before.
    let without = server
        .post("/v1/notifications")
        .json(r#"{"message": "hi"}"#)
        .send()
        .await;
    assert_eq!(without.problem_code(), "IDEMPOTENCY_KEY_MISSING");

    // With the key in the header, the body is the handler's business.
    let with_header = server
        .post("/v1/notifications")
        .key("k-2")
        .json("{not json")
        .send()
        .await;
    assert_eq!(with_header.status, 201, "{with_header:?}");
    assert_eq!(server.probe.runs("notifications"), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_malformed_json_body_is_refused_even_when_keys_are_optional() {
    let layer = IdempotencyLayer::builder(store_with(KeyPolicy::default()))
        .json_key_fields(["idempotency_key"])
        .build()
        .expect("layer");
    let server = Server::start(layer).await;
    let broken = server
        .post("/v1/notifications")
        .json(r#"{"idempotency_key": "k-1""#)
        .send()
        .await;
    assert_eq!(broken.status, 400, "{broken:?}");
    assert_eq!(broken.problem_code(), "IDEMPOTENCY_BODY_MALFORMED");
    // A body that is not declared JSON cannot carry the key: with keys optional, it passes.
    let text = server
        .post("/v1/notifications")
        .header("content-type", "text/plain")
        .body(b"hello".to_vec())
        .send()
        .await;
    assert_eq!(text.status, 201, "{text:?}");
    assert_eq!(server.probe.runs("notifications"), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_401_from_the_scope_carries_its_challenge() {
    let challenge = "ApiKey header=\"X-Api-Key\"";
    let layer = IdempotencyLayer::builder(store_with(KeyPolicy::default()))
        .scope(
            HeaderScope::new(HeaderName::from_static("x-api-key"))
                .digest()
                .challenge(HeaderValue::from_static(challenge)),
        )
        .build()
        .expect("layer");
    let server = Server::start(layer).await;
    let anonymous = server
        .post("/v1/notifications")
        .key("k-1")
        .json(BODY)
        .send()
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED.as_u16());
    assert_eq!(anonymous.problem_code(), "IDEMPOTENCY_SCOPE_REJECTED");
    assert_eq!(anonymous.header("www-authenticate"), Some(challenge));

    let known = server
        .post("/v1/notifications")
        .key("k-1")
        .header("x-api-key", "demo-key")
        .json(BODY)
        .send()
        .await;
    assert_eq!(known.status, 201, "{known:?}");
    assert!(known.header("www-authenticate").is_none());
    server.stop().await;
}
