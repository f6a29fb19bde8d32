//! The presets, each held to the rules its API documents, over real TCP. The test names
//! paraphrase the rule they check.
#![cfg(feature = "http")]

mod http_support;

use std::time::Duration;

use http_support::{Server, uuid};
use idemdb::http::{ConflictStatus, IdempotencyLayer, Preset};
use idemdb::{Error, KeyPolicy, ManualClock, StateKind, Store, Timestamp};

const DAY: Duration = Duration::from_secs(24 * 3600);

/// A store with the preset's store half, on a clock the test moves.
fn preset_store(preset: &Preset) -> (Store, ManualClock) {
    let clock = ManualClock::new(Timestamp::from_millis(1_800_000_000_000));
    let store = Store::builder()
        .preset(preset)
        .clock(clock.clone())
        .sweep_interval(None)
        .open_in_memory()
        .expect("store");
    (store, clock)
}

async fn preset_server(preset: &Preset) -> (Server, Store, ManualClock) {
    let (store, clock) = preset_store(preset);
    let layer = IdempotencyLayer::builder(store.clone())
        .preset(preset)
        .build()
        .expect("layer");
    (Server::start(layer).await, store, clock)
}

fn onesignal_body(field: &str, key: &str, message: &str) -> String {
    format!(
        r#"{{"{field}": "{key}", "contents": {{"en": "{message}"}}, "included_segments": ["All"]}}"#
    )
}

#[test]
fn the_presets_say_what_they_set() {
    let onesignal = Preset::onesignal();
    assert_eq!(onesignal.name(), "onesignal");
    assert_eq!(onesignal.retention(), 30 * DAY);
    assert_eq!(onesignal.max_retention(), 30 * DAY);
    assert_eq!(
        onesignal.json_key_fields(),
        &["idempotency_key", "external_id"]
    );
    assert!(matches!(onesignal.key_policy(), KeyPolicy::Uuid(_)));
    let workflow = Preset::workflow();
    assert_eq!(
        workflow.key_policy(),
        &KeyPolicy::OpaqueChars { max_chars: 256 }
    );
    assert_eq!((workflow.retention(), workflow.max_retention()), (DAY, DAY));
    let noticia = Preset::noticia();
    assert_eq!(noticia.conflict_status(), ConflictStatus::Conflict);
    assert_eq!(noticia.retention(), DAY);
    assert!(noticia.json_key_fields().is_empty());
}

#[tokio::test]
async fn half_a_preset_is_refused_when_the_layer_is_built() {
    for preset in [Preset::onesignal(), Preset::workflow(), Preset::noticia()] {
        let plain = Store::builder()
            .sweep_interval(None)
            .open_in_memory()
            .expect("store");
        let error = IdempotencyLayer::builder(plain)
            .preset(&preset)
            .build()
            .expect_err("a store without the preset");
        match error {
            Error::InvalidConfig { option, reason } => {
                assert_eq!(option, "preset");
                assert!(
                    reason.contains(&format!(
                        "Store::builder().preset(&Preset::{}())",
                        preset.name()
                    )),
                    "{reason}"
                );
            }
            other => panic!("{}: {other:?}", preset.name()),
        }
    }
}

// --- OneSignal: `idempotency_key` (legacy `external_id`), RFC 9562 UUIDs, 30 days ---

#[tokio::test]
async fn onesignal_only_one_notification_is_delivered_however_often_the_request_is_sent() {
    let (server, _store, _clock) = preset_server(&Preset::onesignal()).await;
    let body = onesignal_body("idempotency_key", &uuid(), "hello");
    let first = server.post("/v1/notifications").json(&body).send().await;
    assert_eq!(first.status, 201, "{first:?}");
    for _ in 0..4 {
        let retry = server.post("/v1/notifications").json(&body).send().await;
        assert!(retry.replayed(), "{retry:?}");
        assert_eq!(
            retry.body, first.body,
            "the result of the previous operation"
        );
    }
    assert_eq!(server.probe.runs("notifications"), 1);
    server.stop().await;
}

#[tokio::test]
async fn onesignal_the_legacy_name_external_id_works_too() {
    let (server, _store, _clock) = preset_server(&Preset::onesignal()).await;
    let body = onesignal_body("external_id", &uuid(), "hello");
    let first = server.post("/v1/notifications").json(&body).send().await;
    assert_eq!(first.status, 201, "{first:?}");
    let retry = server.post("/v1/notifications").json(&body).send().await;
    assert!(retry.replayed(), "{retry:?}");
    assert_eq!(server.probe.runs("notifications"), 1);
    server.stop().await;
}

#[tokio::test]
async fn onesignal_keys_must_be_rfc_9562_uuids() {
    let (server, _store, _clock) = preset_server(&Preset::onesignal()).await;
    let not_uuid = onesignal_body("idempotency_key", "order-4815", "hello");
    let refused = server
        .post("/v1/notifications")
        .json(&not_uuid)
        .send()
        .await;
    assert_eq!(refused.status, 400, "{refused:?}");
    assert_eq!(refused.problem_code(), "IDEMPOTENCY_KEY_INVALID");
    // v3 and v4, as the older page says, and v7, as RFC 9562 allows.
    for key in [
        "6fa459ea-ee8a-3ca4-894e-db77e160355e",
        "7f1c0b9e-2a4d-4c8e-9b1a-3e5f6a7b8c9d",
        "01890a5d-ac96-774b-bcce-b302099a8057",
    ] {
        let body = onesignal_body("idempotency_key", key, "hello");
        let reply = server.post("/v1/notifications").json(&body).send().await;
        assert_eq!(reply.status, 201, "{key}: {reply:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn onesignal_a_key_reused_for_another_message_processes_only_the_first() {
    let (server, _store, _clock) = preset_server(&Preset::onesignal()).await;
    let key = uuid();
    let first = server
        .post("/v1/notifications")
        .json(&onesignal_body("idempotency_key", &key, "hello"))
        .send()
        .await;
    assert_eq!(first.status, 201);
    let other = server
        .post("/v1/notifications")
        .json(&onesignal_body(
            "idempotency_key",
            &key,
            "a different message",
        ))
        .send()
        .await;
    assert_eq!(other.status, 422, "{other:?}");
    assert_eq!(other.problem_code(), "IDEMPOTENCY_CONFLICT");
    assert_eq!(server.probe.runs("notifications"), 1, "only the first");
    server.stop().await;
}

#[tokio::test]
async fn onesignal_keys_are_kept_30_days_and_may_send_again_after() {
    let (server, _store, clock) = preset_server(&Preset::onesignal()).await;
    let body = onesignal_body("idempotency_key", &uuid(), "hello");
    assert_eq!(
        server
            .post("/v1/notifications")
            .json(&body)
            .send()
            .await
            .status,
        201
    );
    clock.advance(30 * DAY - Duration::from_secs(1));
    assert!(
        server
            .post("/v1/notifications")
            .json(&body)
            .send()
            .await
            .replayed()
    );
    clock.advance(Duration::from_secs(1));
    let after = server.post("/v1/notifications").json(&body).send().await;
    assert_eq!(after.status, 201);
    assert!(!after.replayed(), "after 30 days the key runs again");
    assert_eq!(server.probe.runs("notifications"), 2);
    server.stop().await;
}

#[tokio::test]
async fn onesignal_the_key_is_an_optional_parameter() {
    let (server, _store, _clock) = preset_server(&Preset::onesignal()).await;
    let body = r#"{"contents": {"en": "hello"}, "included_segments": ["All"]}"#;
    for n in 1..=2 {
        let reply = server.post("/v1/notifications").json(body).send().await;
        assert_eq!(reply.status, 201);
        assert!(!reply.replayed());
        assert_eq!(server.probe.runs("notifications"), n);
    }
    server.stop().await;
}

// --- The workflow product: any key up to 256 characters, a window of 1 s to 24 h ---

#[tokio::test]
async fn workflow_keys_of_256_characters_or_fewer_are_accepted() {
    let (server, store, _clock) = preset_server(&Preset::workflow()).await;
    let longest = "k".repeat(256);
    let first = server.post("/v1/notifications").key(&longest).send().await;
    assert_eq!(first.status, 201, "{first:?}");
    assert!(
        server
            .post("/v1/notifications")
            .key(&longest)
            .send()
            .await
            .replayed()
    );
    let too_long = server
        .post("/v1/notifications")
        .key(&"k".repeat(257))
        .send()
        .await;
    assert_eq!(too_long.status, 400, "{too_long:?}");
    assert_eq!(too_long.problem_code(), "IDEMPOTENCY_KEY_INVALID");
    assert!(
        too_long.json()["detail"]
            .as_str()
            .expect("detail")
            .contains("the limit is 256 characters"),
        "{too_long:?}"
    );
    // Characters, not bytes: 256 two-byte characters are one key (headers carry ASCII, so
    // this is the library's view of the same store).
    let wide = "é".repeat(256);
    let fingerprint = idemdb::Fingerprint::of(b"event");
    assert!(store.begin("workflow", &wide, fingerprint).is_ok());
    assert!(matches!(
        store.begin("workflow", &"é".repeat(257), fingerprint),
        Err(Error::InvalidKey(_))
    ));
    server.stop().await;
}

#[test]
fn a_character_limit_out_of_range_is_refused_when_the_store_opens() {
    for max_chars in [0, idemdb::MAX_KEY_CHARS_LIMIT + 1] {
        let opened = Store::builder()
            .key_policy(KeyPolicy::OpaqueChars { max_chars })
            .open_in_memory();
        match opened {
            Err(Error::InvalidConfig { option, reason }) => {
                assert_eq!(option, "key_policy");
                assert!(
                    reason.contains(&format!("max_chars {max_chars}")),
                    "{reason}"
                );
            }
            other => panic!("max_chars {max_chars}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn workflow_the_duration_must_be_between_1_second_and_24_hours() {
    let (store, _clock) = preset_store(&Preset::workflow());
    let layer_with = |retention: Duration| {
        IdempotencyLayer::builder(store.clone())
            .preset(&Preset::workflow())
            .retention(retention)
            .build()
    };
    assert!(layer_with(Duration::from_secs(1)).is_ok());
    assert!(layer_with(DAY).is_ok());
    for outside in [Duration::from_millis(999), DAY + Duration::from_secs(1)] {
        assert!(
            matches!(layer_with(outside), Err(Error::InvalidRetention { .. })),
            "{outside:?}"
        );
    }
}

#[tokio::test]
async fn workflow_a_key_prevents_firing_again_for_the_chosen_duration() {
    let (store, clock) = preset_store(&Preset::workflow());
    let layer = IdempotencyLayer::builder(store.clone())
        .preset(&Preset::workflow())
        .retention(Duration::from_secs(10 * 60))
        .build()
        .expect("layer");
    let server = Server::start(layer).await;
    let call = server.post("/v1/notifications").key("order-4815-shipped");
    assert_eq!(call.send().await.status, 201);
    clock.advance(Duration::from_secs(9 * 60));
    assert!(call.send().await.replayed(), "still within the duration");
    clock.advance(Duration::from_secs(60));
    let again = call.send().await;
    assert!(!again.replayed(), "the duration is over: it fires again");
    assert_eq!(server.probe.runs("notifications"), 2);
    server.stop().await;
}

#[tokio::test]
async fn workflow_keys_are_purged_after_24_hours() {
    let (server, _store, clock) = preset_server(&Preset::workflow()).await;
    let call = server.post("/v1/notifications").key("welcome-user-17");
    assert_eq!(call.send().await.status, 201);
    clock.advance(DAY - Duration::from_secs(1));
    assert!(call.send().await.replayed());
    clock.advance(Duration::from_secs(1));
    assert!(!call.send().await.replayed());
    assert_eq!(server.probe.runs("notifications"), 2);
    server.stop().await;
}

// --- Noticia: `Idempotency-Key`, 24 h, 409 IDEMPOTENCY_CONFLICT ---

const PROFILE: &str = r#"{ "external_id": "crm-customer-4815", "first_name": "Camille" }"#;
const NOTICIA_KEY: &str = "7f1c0b9e-2a4d-4c8e-9b1a-3e5f6a7b8c9d";

#[tokio::test]
async fn noticia_the_first_call_runs_and_its_response_is_stored_against_the_key() {
    let (server, store, _clock) = preset_server(&Preset::noticia()).await;
    let first = server
        .post("/v1/notifications")
        .header("x-api-key", "ntca_test")
        .key(NOTICIA_KEY)
        .json(PROFILE)
        .send()
        .await;
    assert_eq!(first.status, 201, "{first:?}");
    assert!(!first.replayed());
    let context = server.probe.last_context();
    let record = store
        .get(&context.scope, NOTICIA_KEY)
        .expect("get")
        .expect("a record");
    assert_eq!(record.kind(store.now()), StateKind::Completed);
    server.stop().await;
}

#[tokio::test]
async fn noticia_a_replay_returns_the_original_status_and_body_and_does_not_run_again() {
    let (server, _store, _clock) = preset_server(&Preset::noticia()).await;
    let call = server
        .post("/v1/notifications")
        .header("x-api-key", "ntca_test")
        .key(NOTICIA_KEY)
        .json(PROFILE);
    let first = call.send().await;
    let replay = call.send().await;
    assert_eq!(replay.status, first.status);
    assert_eq!(replay.body, first.body);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(server.probe.runs("notifications"), 1, "the action ran once");
    server.stop().await;
}

#[tokio::test]
async fn noticia_the_same_key_with_a_different_body_is_409_idempotency_conflict() {
    let (server, _store, _clock) = preset_server(&Preset::noticia()).await;
    let call = |body: &str| {
        server
            .post("/v1/notifications")
            .header("x-api-key", "ntca_test")
            .key(NOTICIA_KEY)
            .json(body)
    };
    assert_eq!(call(PROFILE).send().await.status, 201);
    let conflict = call(r#"{ "external_id": "crm-customer-4815", "first_name": "Camilla" }"#)
        .send()
        .await;
    assert_eq!(conflict.status, 409, "{conflict:?}");
    assert_eq!(conflict.problem_code(), "IDEMPOTENCY_CONFLICT");
    assert_eq!(server.probe.runs("notifications"), 1);
    server.stop().await;
}

#[tokio::test]
async fn noticia_after_24_hours_the_same_key_runs_as_a_fresh_request() {
    let (server, _store, clock) = preset_server(&Preset::noticia()).await;
    let call = server
        .post("/v1/notifications")
        .header("x-api-key", "ntca_test")
        .key(NOTICIA_KEY)
        .json(PROFILE);
    assert_eq!(call.send().await.status, 201);
    clock.advance(DAY - Duration::from_secs(1));
    assert!(call.send().await.replayed(), "retained for 24 hours");
    clock.advance(Duration::from_secs(1));
    let fresh = call.send().await;
    assert_eq!(fresh.status, 201);
    assert!(!fresh.replayed(), "after that, a fresh request");
    assert_eq!(server.probe.runs("notifications"), 2);
    server.stop().await;
}

#[tokio::test]
async fn noticia_the_header_is_optional_and_external_id_is_not_a_retry_key() {
    let (server, _store, _clock) = preset_server(&Preset::noticia()).await;
    // Without the header each write runs: deduplicating by external_id is the API's own
    // upsert, a lasting identity, not the layer's business.
    for n in 1..=2 {
        let reply = server
            .post("/v1/notifications")
            .header("x-api-key", "ntca_test")
            .json(PROFILE)
            .send()
            .await;
        assert_eq!(reply.status, 201, "{reply:?}");
        assert!(!reply.replayed());
        assert!(reply.header("idempotency-expires").is_none());
        assert_eq!(server.probe.runs("notifications"), n);
    }
    server.stop().await;
}
