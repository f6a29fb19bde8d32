//! Deterministic test data: fresh UUIDv4 keys from a fixed seed, each key's request
//! fingerprint and its ~200-byte response.
//!
//! Keys are addressed by `(stream, index)`: the prefill uses stream 0, every measured
//! workload of every run uses a stream of its own, so a "fresh" key is never one any store
//! has seen. Every system gets the same keys.

use idemdb::Fingerprint;

/// The idemdb scope used for every key (peers store the bare key).
pub const SCOPE: &str = "bench";

/// Size of every stored response, in bytes.
pub const RESPONSE_LEN: usize = 200;

/// How long a normal record is kept: 24 hours, idemdb's default retention.
pub const RETENTION_MS: u64 = 24 * 3600 * 1000;

/// One request of the benchmark: its key, fingerprint and response.
#[derive(Debug, Clone)]
pub struct Request {
    /// A lower-case hyphenated UUIDv4.
    pub key: String,
    /// What identifies the request (idemdb's fingerprint; peers store its 32 bytes).
    pub fp: [u8; 32],
    /// The response a completed request stores, exactly [`RESPONSE_LEN`] bytes.
    pub response: Vec<u8>,
}

/// The SplitMix64 finaliser: a fast, well-mixed 64-bit hash.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stream of keys: `key(i)` is the i-th key of the stream.
#[derive(Debug, Clone, Copy)]
pub struct KeyStream {
    base: u64,
}

impl KeyStream {
    /// The stream `stream` of the run seeded with `seed`.
    pub fn new(seed: u64, stream: u64) -> KeyStream {
        KeyStream {
            base: mix(seed ^ mix(stream.wrapping_add(0x5EED))),
        }
    }

    /// The i-th key: a UUIDv4 built from 128 pseudo-random bits.
    pub fn key(&self, i: u64) -> String {
        let hi = mix(self.base ^ mix(i));
        let lo = mix(hi ^ self.base.rotate_left(17) ^ i);
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&hi.to_le_bytes());
        bytes[8..].copy_from_slice(&lo.to_le_bytes());
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .hyphenated()
            .to_string()
    }

    /// The i-th request: key, fingerprint and response.
    pub fn request(&self, i: u64) -> Request {
        request_for(self.key(i))
    }
}

/// The fingerprint and response of the request with this key.
pub fn request_for(key: String) -> Request {
    let fp = fingerprint(&key);
    let response = response(&key);
    Request { key, fp, response }
}

/// What a user of idemdb would compute for `POST /v1/charges` with this key's body.
pub fn fingerprint(key: &str) -> [u8; 32] {
    *Fingerprint::builder()
        .method("POST")
        .path("/v1/charges")
        .body(key)
        .finish()
        .as_bytes()
}

/// A JSON response of exactly [`RESPONSE_LEN`] bytes that names the key.
pub fn response(key: &str) -> Vec<u8> {
    let mut out =
        format!(r#"{{"id":"ch_{key}","status":"succeeded","amount":1000,"currency":"EUR","pad":""#)
            .into_bytes();
    let tail = b"\"}";
    out.resize(RESPONSE_LEN - tail.len(), b'x');
    out.extend_from_slice(tail);
    out
}

/// Stream numbers: one per (run, workload, thread), never 0 (the prefill's).
pub fn stream_id(run: u32, workload: u32, thread: u32) -> u64 {
    1 + ((u64::from(run) << 40) | (u64::from(workload) << 24) | u64::from(thread))
}

/// A small seeded generator for picking keys to replay.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(mix(seed))
    }

    /// A number below `bound` (which must be positive).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix(self.0) % bound.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_deterministic_v4_and_distinct() {
        let a = KeyStream::new(42, 0);
        let b = KeyStream::new(42, 1);
        assert_eq!(a.key(7), KeyStream::new(42, 0).key(7));
        assert_ne!(a.key(7), a.key(8));
        assert_ne!(a.key(7), b.key(7));
        let parsed = uuid::Uuid::parse_str(&a.key(7)).expect("a uuid");
        assert_eq!(parsed.get_version_num(), 4);
        let all: std::collections::HashSet<String> = (0..10_000).map(|i| a.key(i)).collect();
        assert_eq!(all.len(), 10_000);
    }

    #[test]
    fn responses_are_exactly_200_bytes() {
        let key = KeyStream::new(1, 2).key(3);
        assert_eq!(response(&key).len(), RESPONSE_LEN);
        assert!(std::str::from_utf8(&response(&key)).is_ok());
    }
}
