//! Presets: the idempotency rules of well-known public APIs, as one named value that
//! configures both halves of a service — the store (which keys exist, how long records may
//! live) and the layer (where the key is, how long records do live, how a reused key is
//! answered).

use std::time::Duration;

use super::config::ConflictStatus;
use crate::config::StoreBuilder;
use crate::key::{KeyPolicy, UuidVersions};

const DAY: Duration = Duration::from_secs(24 * 3600);

/// The idempotency rules of a known public API, applied in two calls that name the same
/// preset: one on the store, one on the layer.
///
/// ```
/// use idemdb::Store;
/// use idemdb::http::{IdempotencyLayer, Preset};
///
/// let preset = Preset::noticia();
/// let store = Store::builder().preset(&preset).open_in_memory()?;
/// let layer = IdempotencyLayer::builder(store).preset(&preset).build()?;
/// # Ok::<(), idemdb::Error>(())
/// ```
///
/// The store half ([`StoreBuilder::preset`]) sets the key policy, the default retention and
/// the longest retention: they are the store's because direct [`Store`](crate::Store) calls
/// and the command-line tool must obey them too. The layer half
/// ([`IdempotencyLayerBuilder::preset`](super::IdempotencyLayerBuilder::preset)) sets the
/// retention of the layer's records, the JSON body fields that carry the key and the status
/// of a conflict. The layer's `build` refuses a store opened without the preset's key
/// policy and longest retention, so half a preset cannot go unnoticed. Settings applied
/// after the preset override it (for example `require_key(true)`, or a shorter
/// `retention` within the preset's bounds).
///
/// | preset | keys | retention (bounds) | key in | reused key |
/// | --- | --- | --- | --- | --- |
/// | [`onesignal`](Self::onesignal) | RFC 9562 UUIDs | 30 days (1 s – 30 days) | `Idempotency-Key`, body `idempotency_key` or legacy `external_id` | 422 `IDEMPOTENCY_CONFLICT` |
/// | [`workflow`](Self::workflow) | any text, ≤ 256 characters | 24 h (1 s – 24 h) | `Idempotency-Key` | 422 `IDEMPOTENCY_CONFLICT` |
/// | [`noticia`](Self::noticia) | any text, ≤ 255 bytes | 24 h (1 s – 24 h) | `Idempotency-Key` | 409 `IDEMPOTENCY_CONFLICT` |
///
/// In every preset the key is optional (`require_key(true)` makes it mandatory), replays
/// carry `Idempotent-Replayed: true`, and a key with a comma is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    name: &'static str,
    key_policy: KeyPolicy,
    retention: Duration,
    max_retention: Duration,
    json_key_fields: &'static [&'static str],
    conflict: ConflictStatus,
}

impl Preset {
    /// A push-notification API in the OneSignal style: the key is an RFC 9562 UUID, sent in
    /// the body as `idempotency_key` or under its legacy name `external_id` (or in the
    /// `Idempotency-Key` header); a retry within 30 days gets the first request's result,
    /// and after 30 days the key may run again. A reused key with another request is not
    /// processed (422).
    pub fn onesignal() -> Preset {
        Preset {
            name: "onesignal",
            key_policy: KeyPolicy::Uuid(UuidVersions::ALL),
            retention: 30 * DAY,
            max_retention: 30 * DAY,
            json_key_fields: &["idempotency_key", "external_id"],
            conflict: ConflictStatus::UnprocessableContent,
        }
    }

    /// A workflow product's idempotent key: any text of up to 256 characters (counted as
    /// characters, [`KeyPolicy::OpaqueChars`]), kept for a window between 1 second and
    /// 24 hours — 24 hours unless the layer sets a shorter
    /// [`retention`](super::IdempotencyLayerBuilder::retention); a longer one is refused.
    pub fn workflow() -> Preset {
        Preset {
            name: "workflow",
            key_policy: KeyPolicy::OpaqueChars { max_chars: 256 },
            retention: DAY,
            max_retention: DAY,
            json_key_fields: &[],
            conflict: ConflictStatus::UnprocessableContent,
        }
    }

    /// The Noticia style: an `Idempotency-Key` header (any text up to 255 bytes, a UUID v4
    /// for example), kept 24 hours; a replay returns the original status and body with
    /// `Idempotent-Replayed: true`; the same key with another body is 409
    /// `IDEMPOTENCY_CONFLICT`. Body fields are not read: in that API `external_id` is an
    /// entity's lasting identity, not a retry key.
    pub fn noticia() -> Preset {
        Preset {
            name: "noticia",
            key_policy: KeyPolicy::default(),
            retention: DAY,
            max_retention: DAY,
            json_key_fields: &[],
            conflict: ConflictStatus::Conflict,
        }
    }

    /// The preset's name, as its constructor is called.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The key policy the store gets.
    pub fn key_policy(&self) -> &KeyPolicy {
        &self.key_policy
    }

    /// How long the layer's records are kept (also the store's default retention).
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// The longest retention the store allows.
    pub fn max_retention(&self) -> Duration {
        self.max_retention
    }

    /// The JSON body fields that carry the key, in order (empty: the header only).
    pub fn json_key_fields(&self) -> &'static [&'static str] {
        self.json_key_fields
    }

    /// The status of a reused key with another request.
    pub fn conflict_status(&self) -> ConflictStatus {
        self.conflict
    }

    /// What in the store's settings differs from the preset's store half, if anything.
    pub(crate) fn store_mismatch(&self, settings: &crate::config::Settings) -> Option<String> {
        let mut differences = Vec::new();
        if settings.key_policy != self.key_policy {
            differences.push(format!(
                "its key policy is {:?}, the preset's is {:?}",
                settings.key_policy, self.key_policy
            ));
        }
        if settings.max_retention != self.max_retention {
            differences.push(format!(
                "its longest retention is {:?}, the preset's is {:?}",
                settings.max_retention, self.max_retention
            ));
        }
        if differences.is_empty() {
            return None;
        }
        Some(format!(
            "the store was opened without the {name} preset ({}); open it with \
             Store::builder().preset(&Preset::{name}())",
            differences.join("; "),
            name = self.name
        ))
    }
}

impl StoreBuilder {
    /// Applies the store half of an HTTP [`Preset`] (feature `http`): its key policy, its
    /// retention as the default, and its longest retention. Settings applied afterwards
    /// override it.
    pub fn preset(self, preset: &Preset) -> StoreBuilder {
        self.key_policy(preset.key_policy.clone())
            .max_retention(preset.max_retention)
            .default_retention(preset.retention)
    }
}
