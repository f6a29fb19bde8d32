//! The HTTP layer over real TCP, one request at a time: replays, conflicts, keys, scopes,
//! the expiry header and the request body limit.
#![cfg(feature = "http")]

mod http_support;

use std::time::Duration;

use http_support::{Server, read_to_close, uuid};
use idemdb::http::{ConflictStatus, HeaderScope, IdempotencyLayer, ScopeRejection};
use idemdb::{KeyPolicy, ManualClock, Store, Timestamp, UuidVersions};

fn store() -> Store {
    Store::builder()
        .sweep_interval(None)
        .open_in_memory()
        .expect("store")
}

fn uuid_store() -> Store {
    Store::builder()
        .sweep_interval(None)
        .key_policy(KeyPolicy::Uuid(UuidVersions::ALL))
        .open_in_memory()
        .expect("store")
}

const BODY: &str = r#"{"to": ["ada"], "message": "hello"}"#;

#[tokio::test]
async fn a_replay_is_byte_identical_and_marked() {
    let server = Server::start(IdempotencyLayer::new(store())).await;
    let call = server.post("/v1/notifications").key("k-1").json(BODY);

    let first = call.send().await;
    assert_eq!(first.status, 201, "{first:?}");
    assert!(!first.replayed());
    assert_eq!(first.json()["id"], "notifications-0001");

    for _ in 0..3 {
        let again = call.send().await;
        assert_eq!(again.status, first.status);
        assert_eq!(again.body, first.body, "the body is replayed byte for byte");
        assert_eq!(again.stored_headers(), first.stored_headers());
        assert!(again.replayed(), "{again:?}");
        let multi: Vec<_> = again.headers.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["one", "two"], "repeated headers keep their order");
    }
    assert_eq!(server.probe.runs("notifications"), 1);
    server.stop().await;
}

#[tokio::test]
async fn json_member_order_and_whitespace_do_not_make_another_request() {
    let server = Server::start(IdempotencyLayer::new(store())).await;
    let first = server
        .post("/v1/notifications")
        .key("k-json")
        .json(r#"{"message":"hello","to":["ada"]}"#)
        .send()
        .await;
    assert_eq!(first.status, 201);
    let reordered = server
        .post("/v1/notifications")
        .key("k-json")
        .json("{ \"to\" : [ \"ada\" ],\n  \"message\" : \"hello\" }")
        .send()
        .await;
    assert!(reordered.replayed(), "{reordered:?}");
    assert_eq!(reordered.body, first.body);
    assert_eq!(server.probe.runs("notifications"), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_reused_key_with_another_request_is_422_by_default() {
    let server = Server::start(IdempotencyLayer::new(store())).await;
    let first = server.post("/v1/notifications").key("k-2").json(BODY);
    assert_eq!(first.send().await.status, 201);

    let other_body = server
        .post("/v1/notifications")
        .key("k-2")
        .json(r#"{"to": ["ada"], "message": "something else"}"#)
        .send()
        .await;
    assert_eq!(other_body.status, 422, "{other_body:?}");
    assert_eq!(other_body.problem_code(), "IDEMPOTENCY_CONFLICT");
    assert_eq!(other_body.json()["status"], 422);
    assert!(other_body.header("idempotency-expires").is_some());

    let other_query = server
        .post("/v1/notifications?priority=high")
        .key("k-2")
        .json(BODY)
        .send()
        .await;
    assert_eq!(other_query.status, 422, "the query is part of the request");

    // The conflict changed nothing: the original request still replays.
    assert!(first.send().await.replayed());
    assert_eq!(server.probe.runs("notifications"), 1);
    server.stop().await;
}

#[tokio::test]
async fn conflicts_can_be_409_and_chosen_headers_count() {
    let layer = IdempotencyLayer::builder(store())
        .conflict_status(ConflictStatus::Conflict)
        .fingerprint_headers([http::HeaderName::from_static("x-account")])
        .build()
        .expect("layer");
    let server = Server::start(layer).await;
    let call = |account: &str| {
        server
            .post("/v1/notifications")
            .key("k-3")
            .header("x-account", account)
            .json(BODY)
    };
    assert_eq!(call("a").send().await.status, 201);
    let conflict = call("b").send().await;
    assert_eq!(conflict.status, 409, "{conflict:?}");
    assert_eq!(conflict.problem_code(), "IDEMPOTENCY_CONFLICT");
    assert!(call("a").send().await.replayed());
    server.stop().await;
}

#[tokio::test]
async fn a_missing_key_is_400_when_keys_are_required() {
    let layer = IdempotencyLayer::builder(store())
        .require_key(true)
        .build()
        .expect("layer");
    let server = Server::start(layer).await;
    let missing = server.post("/v1/notifications").json(BODY).send().await;
    assert_eq!(missing.status, 400, "{missing:?}");
    assert_eq!(missing.problem_code(), "IDEMPOTENCY_KEY_MISSING");
    assert!(
        missing.json()["detail"]
            .as_str()
            .expect("detail")
            .contains("idempotency-key"),
        "{missing:?}"
    );
    assert_eq!(server.probe.runs("notifications"), 0);

    // Methods that are not covered pass through, key or not.
    let stats = server.request("GET", "/v1/stats").send().await;
    assert_eq!(stats.status, 200);
    assert_eq!(&stats.body[..], b"0");
    server.stop().await;
}

#[tokio::test]
async fn without_a_key_requests_pass_through_when_keys_are_optional() {
    let server = Server::start(IdempotencyLayer::new(store())).await;
    for n in 1..=2 {
        let reply = server.post("/v1/notifications").json(BODY).send().await;
        assert_eq!(reply.status, 201);
        assert!(!reply.replayed());
        assert!(reply.header("idempotency-expires").is_none());
        assert_eq!(server.probe.runs("notifications"), n);
    }
    server.stop().await;
}

#[tokio::test]
async fn malformed_keys_are_400_with_the_reason() {
    let layer = IdempotencyLayer::builder(uuid_store())
        .json_key_fields(["idempotency_key", "external_id"])
        .build()
        .expect("layer");
    let server = Server::start(layer).await;

    let not_uuid = server
        .post("/v1/notifications")
        .key("not-a-uuid")
        .json(BODY)
        .send()
        .await;
    assert_eq!(not_uuid.status, 400, "{not_uuid:?}");
    assert_eq!(not_uuid.problem_code(), "IDEMPOTENCY_KEY_INVALID");
    let detail = not_uuid.json()["detail"]
        .as_str()
        .expect("detail")
        .to_owned();
    assert!(
        detail.contains("not-a-uuid") || detail.contains("UUID"),
        "{detail}"
    );

    let unclosed = server
        .post("/v1/notifications")
        .key(&format!("\"{}", uuid()))
        .json(BODY)
        .send()
        .await;
    assert_eq!(unclosed.status, 400);
    assert_eq!(unclosed.problem_code(), "IDEMPOTENCY_KEY_INVALID");
    assert!(
        unclosed.json()["detail"]
            .as_str()
            .expect("detail")
            .contains("never closes"),
        "{unclosed:?}"
    );

    let bad_field = server
        .post("/v1/notifications")
        .json(r#"{"idempotency_key": "nope", "message": "hi"}"#)
        .send()
        .await;
    assert_eq!(bad_field.status, 400);
    assert_eq!(bad_field.problem_code(), "IDEMPOTENCY_KEY_INVALID");
    assert!(
        bad_field.json()["detail"]
            .as_str()
            .expect("detail")
            .contains("idempotency_key"),
        "{bad_field:?}"
    );
    assert_eq!(server.probe.runs("notifications"), 0);
    server.stop().await;
}

#[tokio::test]
async fn keys_come_quoted_bare_or_from_a_json_field_with_its_legacy_alias() {
    let layer = IdempotencyLayer::builder(uuid_store())
        .json_key_fields(["idempotency_key", "external_id"])
        .build()
        .expect("layer");
    let server = Server::start(layer).await;

    // A structured-field string and the bare key are the same key.
    let key = uuid();
    let quoted = server
        .post("/v1/notifications")
        .key(&format!("\"{key}\""))
        .json(BODY)
        .send()
        .await;
    assert_eq!(quoted.status, 201);
    let bare = server
        .post("/v1/notifications")
        .key(&key)
        .json(BODY)
        .send()
        .await;
    assert!(bare.replayed(), "{bare:?}");
    assert_eq!(bare.body, quoted.body);

    // The body field and its legacy name each carry a key.
    for field in ["idempotency_key", "external_id"] {
        let body = format!(r#"{{"{field}": "{}", "message": "hi"}}"#, uuid());
        let first = server.post("/v1/notifications").json(&body).send().await;
        assert_eq!(first.status, 201, "{field}: {first:?}");
        assert!(first.header("idempotency-expires").is_some());
        let again = server.post("/v1/notifications").json(&body).send().await;
        assert!(again.replayed(), "{field}: {again:?}");
        assert_eq!(again.body, first.body);
    }

    // The header and the body naming different keys is refused.
    let body = format!(r#"{{"idempotency_key": "{}"}}"#, uuid());
    let mismatch = server
        .post("/v1/notifications")
        .key(&uuid())
        .json(&body)
        .send()
        .await;
    assert_eq!(mismatch.status, 400);
    assert_eq!(mismatch.problem_code(), "IDEMPOTENCY_KEY_MISMATCH");
    assert_eq!(server.probe.runs("notifications"), 3);
    server.stop().await;
}

#[tokio::test]
async fn two_tenants_with_the_same_key_stay_apart() {
    // The default scope: a digest of the caller's credentials, plus method and path.
    let server = Server::start(IdempotencyLayer::new(store())).await;
    let as_tenant = |api_key: &str| {
        server
            .post("/v1/notifications")
            .key("shared-key")
            .header("x-api-key", api_key)
            .json(BODY)
    };
    let a = as_tenant("tenant-a-secret").send().await;
    let b = as_tenant("tenant-b-secret").send().await;
    assert_eq!((a.status, b.status), (201, 201));
    assert!(
        !a.replayed() && !b.replayed(),
        "neither sees the other's response"
    );
    assert_ne!(a.body, b.body);
    assert_eq!(server.probe.runs("notifications"), 2);

    let a_again = as_tenant("tenant-a-secret").send().await;
    let b_again = as_tenant("tenant-b-secret").send().await;
    assert!(a_again.replayed() && b_again.replayed());
    assert_eq!(a_again.body, a.body);
    assert_eq!(b_again.body, b.body);

    // A different body from tenant b is b's conflict only; tenant a still replays.
    let b_other = server
        .post("/v1/notifications")
        .key("shared-key")
        .header("x-api-key", "tenant-b-secret")
        .json(r#"{"message": "other"}"#)
        .send()
        .await;
    assert_eq!(b_other.status, 422);
    assert!(as_tenant("tenant-a-secret").send().await.replayed());

    // No secret is written to the store.
    let contexts = server.probe.contexts.lock().expect("contexts").clone();
    assert!(contexts.iter().all(|c| !c.scope.contains("secret")));
    server.stop().await;
}

#[tokio::test]
async fn a_tenant_header_scope_keeps_tenants_apart_and_refuses_requests_without_it() {
    let layer = IdempotencyLayer::builder(store())
        .scope(
            HeaderScope::new(http::HeaderName::from_static("x-tenant-id"))
                .missing_status(http::StatusCode::UNAUTHORIZED),
        )
        .build()
        .expect("layer");
    let server = Server::start(layer).await;
    let as_tenant = |tenant: &str| {
        server
            .post("/v1/notifications")
            .key("k-t")
            .header("x-tenant-id", tenant)
            .json(BODY)
    };
    let acme = as_tenant("acme").send().await;
    let umbrella = as_tenant("umbrella").send().await;
    assert!(!acme.replayed() && !umbrella.replayed());
    assert_eq!(server.probe.runs("notifications"), 2);
    assert!(as_tenant("acme").send().await.replayed());

    let anonymous = server
        .post("/v1/notifications")
        .key("k-t")
        .json(BODY)
        .send()
        .await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.problem_code(), "IDEMPOTENCY_SCOPE_REJECTED");
    assert_eq!(server.probe.runs("notifications"), 2);
    server.stop().await;
}

#[tokio::test]
async fn two_endpoints_with_the_same_key_stay_apart_and_patch_is_covered() {
    let server = Server::start(IdempotencyLayer::new(store())).await;
    let post = server.post("/v1/notifications").key("k-route").json(BODY);
    let patch = server
        .request("PATCH", "/v1/notifications/7")
        .key("k-route")
        .json(BODY);
    let p1 = post.send().await;
    let q1 = patch.send().await;
    assert!(!p1.replayed() && !q1.replayed());
    assert_ne!(p1.body, q1.body);
    let q2 = patch.send().await;
    assert!(q2.replayed(), "PATCH is covered by default: {q2:?}");
    assert_eq!(q2.body, q1.body);
    assert!(post.send().await.replayed());
    assert_eq!(server.probe.runs("notifications"), 2);

    let scopes: Vec<String> = server
        .probe
        .contexts
        .lock()
        .expect("contexts")
        .iter()
        .map(|c| c.scope.clone())
        .collect();
    assert_eq!(
        scopes,
        [
            "anonymous POST /v1/notifications",
            "anonymous PATCH /v1/notifications/7"
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn every_response_with_a_record_carries_its_expiry() {
    let clock = ManualClock::new(Timestamp::from_millis(1_700_000_000_000));
    let store = Store::builder()
        .clock(clock.clone())
        .sweep_interval(None)
        .open_in_memory()
        .expect("store");
    let layer = IdempotencyLayer::builder(store)
        .retention(Duration::from_secs(3600))
        .build()
        .expect("layer");
    let server = Server::start(layer).await;
    let call = server.post("/v1/notifications").key("k-exp").json(BODY);
    // 1_700_000_000 s is Tue, 14 Nov 2023 22:13:20 GMT; the record lives one hour.
    let expected = "Tue, 14 Nov 2023 23:13:20 GMT";

    let first = call.send().await;
    assert_eq!(first.header("idempotency-expires"), Some(expected));
    assert_eq!(
        server
            .probe
            .last_context()
            .expires_at
            .map(|t| t.as_millis()),
        Some(1_700_003_600_000)
    );
    clock.advance(Duration::from_secs(60));
    let replay = call.send().await;
    assert!(replay.replayed());
    assert_eq!(
        replay.header("idempotency-expires"),
        Some(expected),
        "expiry counts from the first claim"
    );
    let conflict = server
        .post("/v1/notifications")
        .key("k-exp")
        .json("{}")
        .send()
        .await;
    assert_eq!(conflict.header("idempotency-expires"), Some(expected));

    // Past the window the key runs as a fresh request.
    clock.advance(Duration::from_secs(3600));
    let fresh = call.send().await;
    assert!(!fresh.replayed());
    assert_eq!(
        fresh.header("idempotency-expires"),
        Some("Wed, 15 Nov 2023 00:14:20 GMT")
    );
    assert_eq!(server.probe.runs("notifications"), 2);
    server.stop().await;
}

#[tokio::test]
async fn a_request_body_above_the_limit_is_413() {
    let layer = IdempotencyLayer::builder(store())
        .max_request_body(1024)
        .build()
        .expect("layer");
    let server = Server::start(layer).await;

    let at_limit = server
        .post("/v1/notifications")
        .key("k-size-ok")
        .body(vec![b'a'; 1024])
        .send()
        .await;
    assert_eq!(at_limit.status, 201, "{at_limit:?}");
    assert_eq!(at_limit.json()["request_bytes"], 1024);

    let declared = server
        .post("/v1/notifications")
        .key("k-size")
        .body(vec![b'a'; 4096])
        .send()
        .await;
    assert_eq!(declared.status, 413, "{declared:?}");
    assert_eq!(declared.problem_code(), "REQUEST_BODY_TOO_LARGE");

    // A chunked body declares no length: it is refused once it passes the limit.
    let chunk = "b".repeat(800);
    let raw = format!(
        "POST /v1/notifications HTTP/1.1\r\nhost: test\r\nidempotency-key: k-chunked\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n\
         {len:x}\r\n{chunk}\r\n{len:x}\r\n{chunk}\r\n0\r\n\r\n",
        len = chunk.len()
    );
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut stream, raw.as_bytes())
        .await
        .expect("write");
    let answer = String::from_utf8_lossy(&read_to_close(stream).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("REQUEST_BODY_TOO_LARGE"), "{answer}");

    assert_eq!(server.probe.runs("notifications"), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_closure_names_the_tenant_and_the_layer_adds_the_route() {
    // As an authentication layer would: the user is known from the request, here a header.
    let by_user = |parts: &http::request::Parts| {
        parts
            .headers
            .get("x-user")
            .and_then(|v| v.to_str().ok())
            .map(|user| format!("user={user}"))
            .ok_or_else(|| ScopeRejection::new(http::StatusCode::UNAUTHORIZED, "who are you?"))
    };
    let layer = IdempotencyLayer::builder(store())
        .scope(by_user)
        .build()
        .expect("layer");
    let server = Server::start(layer).await;
    let as_user = |user: &str| {
        server
            .post("/v1/notifications")
            .key("k-user")
            .header("x-user", user)
            .json(BODY)
    };
    assert!(!as_user("ada").send().await.replayed());
    assert!(!as_user("bob").send().await.replayed());
    assert!(as_user("ada").send().await.replayed());
    assert_eq!(
        server.probe.last_context().scope,
        "user=bob POST /v1/notifications"
    );
    let nobody = server
        .post("/v1/notifications")
        .key("k-user")
        .json(BODY)
        .send()
        .await;
    assert_eq!(nobody.status, 401);
    assert_eq!(nobody.json()["detail"], "who are you?");
    assert_eq!(server.probe.runs("notifications"), 2);
    server.stop().await;
}
