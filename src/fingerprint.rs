//! Fingerprints: what makes two requests "the same request".

use std::fmt;

use crate::canonical_json::canonical_json;
use crate::error::{Error, Result};

/// A 32-byte BLAKE3 digest of a request's identifying fields.
///
/// Two requests with the same key but different fingerprints are a conflict; the same key
/// with the same fingerprint is a retry.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// Wraps a digest computed elsewhere.
    pub const fn from_bytes(bytes: [u8; 32]) -> Fingerprint {
        Fingerprint(bytes)
    }

    /// The digest's bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A fingerprint of one unnamed byte string: for callers whose whole request is one value.
    pub fn of(bytes: impl AsRef<[u8]>) -> Fingerprint {
        FingerprintBuilder::new().field("", bytes).finish()
    }

    /// Starts a fingerprint built from named fields.
    pub fn builder() -> FingerprintBuilder {
        FingerprintBuilder::new()
    }

    /// Lower-case hexadecimal, 64 characters.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// Parses the 64-character hexadecimal form.
    pub fn from_hex(hex: &str) -> Option<Fingerprint> {
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Fingerprint(out))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

// Field tags: a raw field and a canonical-JSON field never hash alike even with equal bytes.
const TAG_RAW: u8 = 1;
const TAG_JSON: u8 = 2;

/// Builds a [`Fingerprint`] from named fields, in the order they are added.
///
/// Each field is framed (a tag, then the name and the value, each preceded by its length),
/// so no split of the same bytes into different fields can produce the same digest: a path
/// of `/a` with a body of `b` never collides with a path of `/ab` and an empty body.
///
/// ```
/// use idemdb::Fingerprint;
///
/// let a = Fingerprint::builder()
///     .method("POST")
///     .path("/v1/notifications")
///     .json_body(br#"{"to": "u1", "text": "hi"}"#)?
///     .finish();
/// let b = Fingerprint::builder()
///     .method("POST")
///     .path("/v1/notifications")
///     .json_body(br#"{"text":"hi","to":"u1"}"#)?
///     .finish();
/// assert_eq!(a, b);
/// # Ok::<(), idemdb::Error>(())
/// ```
#[derive(Clone)]
pub struct FingerprintBuilder {
    hasher: blake3::Hasher,
}

impl fmt::Debug for FingerprintBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FingerprintBuilder").finish_non_exhaustive()
    }
}

impl Default for FingerprintBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl FingerprintBuilder {
    /// An empty builder.
    pub fn new() -> FingerprintBuilder {
        FingerprintBuilder {
            hasher: blake3::Hasher::new_derive_key("idemdb 2026-11 request fingerprint v1"),
        }
    }

    fn framed(mut self, tag: u8, name: &str, value: &[u8]) -> Self {
        self.hasher.update(&[tag]);
        self.hasher.update(&(name.len() as u64).to_le_bytes());
        self.hasher.update(name.as_bytes());
        self.hasher.update(&(value.len() as u64).to_le_bytes());
        self.hasher.update(value);
        self
    }

    /// Adds a named field with raw bytes.
    pub fn field(self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.framed(TAG_RAW, name, value.as_ref())
    }

    /// Adds the request method (the field `method`), compared exactly.
    pub fn method(self, method: &str) -> Self {
        self.field("method", method)
    }

    /// Adds the request path (the field `path`).
    pub fn path(self, path: &str) -> Self {
        self.field("path", path)
    }

    /// Adds the request body as raw bytes (the field `body`).
    pub fn body(self, body: impl AsRef<[u8]>) -> Self {
        self.field("body", body)
    }

    /// Adds a named field holding JSON, in its canonical form (see
    /// [`canonical_json`](crate::canonical_json())): member order and whitespace do not
    /// change the fingerprint. Invalid JSON is an [`Error::InvalidJson`].
    pub fn json_field(self, name: &str, json: &[u8]) -> Result<Self> {
        let canonical = canonical_json(json).map_err(|source| Error::InvalidJson {
            field: name.to_owned(),
            source,
        })?;
        Ok(self.framed(TAG_JSON, name, &canonical))
    }

    /// Adds the request body as canonical JSON (the field `body`).
    pub fn json_body(self, json: &[u8]) -> Result<Self> {
        self.json_field("body", json)
    }

    /// The digest of everything added.
    pub fn finish(&self) -> Fingerprint {
        Fingerprint(*self.hasher.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_separates_fields() {
        let a = Fingerprint::builder().path("/a").body("b").finish();
        let b = Fingerprint::builder().path("/ab").body("").finish();
        assert_ne!(a, b);
        let c = Fingerprint::builder().field("ab", "c").finish();
        let d = Fingerprint::builder().field("a", "bc").finish();
        assert_ne!(c, d);
        // raw and JSON fields with the same bytes differ
        let raw = Fingerprint::builder().field("body", "1").finish();
        let json = Fingerprint::builder()
            .json_field("body", b"1")
            .expect("json")
            .finish();
        assert_ne!(raw, json);
        // order of fields matters
        let x = Fingerprint::builder().method("POST").path("/p").finish();
        let y = Fingerprint::builder().path("/p").method("POST").finish();
        assert_ne!(x, y);
    }

    #[test]
    fn hex_round_trip() {
        let f = Fingerprint::of(b"request");
        assert_eq!(Fingerprint::from_hex(&f.to_hex()), Some(f));
        assert_eq!(Fingerprint::from_hex("zz"), None);
        assert_eq!(Fingerprint::from_hex(&"g".repeat(64)), None);
        assert_eq!(f.to_hex().len(), 64);
    }

    #[test]
    fn invalid_json_names_the_field() {
        let err = Fingerprint::builder()
            .json_field("payload", b"{")
            .expect_err("invalid");
        assert!(matches!(err, Error::InvalidJson { ref field, .. } if field == "payload"));
    }
}
