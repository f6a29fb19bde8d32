//! The on-disk encoding of a record: one format byte, then the record in bincode 2.
//!
//! Everything that knows about bincode lives here, behind our own format byte, so the
//! encoder can be replaced (bincode's upstream has stopped) by adding a format version
//! without touching anything else. The serde mirror types below are the on-disk schema;
//! the public [`Record`] can change shape without changing the file format.
//!
//! Decoding never trusts the bytes: an unknown format byte, a truncated or oversized value,
//! or trailing garbage is a typed [`Error::Corrupt`], never a panic.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fingerprint::Fingerprint;
use crate::record::{ClaimId, Completed, InFlight, Record, RecordState};
use crate::time::Timestamp;

/// The first record format: read, no longer written.
const FORMAT_V1: u8 = 1;
/// The record format this build writes: format 1 plus whether an in-flight claim is
/// detached.
const FORMAT_V2: u8 = 2;

/// The largest encoded record decoding will accept. Responses are limited to
/// [`MAX_RESPONSE_LIMIT`](crate::MAX_RESPONSE_LIMIT) by configuration, so anything larger
/// is corrupt, and bincode must not allocate more than this on the word of a length field.
const DECODE_LIMIT: usize = 65 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
}

fn decode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// A record in either format; `S` is the format's state.
#[derive(Serialize, Deserialize)]
struct Stored<S> {
    fingerprint: [u8; 32],
    created_at: u64,
    expires_at: Option<u64>,
    attempt: u32,
    state: S,
}

#[derive(Serialize, Deserialize)]
enum StateV1<'a> {
    InFlight {
        claim: u128,
        lease_until: u64,
        abandoned_at: Option<u64>,
        #[serde(borrow, with = "serde_bytes")]
        owner: Option<&'a [u8]>,
    },
    Completed {
        completed_at: u64,
        #[serde(borrow, with = "serde_bytes")]
        response: &'a [u8],
    },
}

#[derive(Serialize, Deserialize)]
enum StateV2<'a> {
    InFlight {
        claim: u128,
        lease_until: u64,
        abandoned_at: Option<u64>,
        #[serde(borrow, with = "serde_bytes")]
        owner: Option<&'a [u8]>,
        detached: bool,
    },
    Completed {
        completed_at: u64,
        #[serde(borrow, with = "serde_bytes")]
        response: &'a [u8],
    },
}

impl From<StateV1<'_>> for RecordState {
    fn from(state: StateV1<'_>) -> RecordState {
        match state {
            StateV1::InFlight {
                claim,
                lease_until,
                abandoned_at,
                owner,
            } => StateV2::InFlight {
                claim,
                lease_until,
                abandoned_at,
                owner,
                detached: false,
            }
            .into(),
            StateV1::Completed {
                completed_at,
                response,
            } => StateV2::Completed {
                completed_at,
                response,
            }
            .into(),
        }
    }
}

impl From<StateV2<'_>> for RecordState {
    fn from(state: StateV2<'_>) -> RecordState {
        match state {
            StateV2::InFlight {
                claim,
                lease_until,
                abandoned_at,
                owner,
                detached,
            } => RecordState::InFlight(InFlight {
                claim: ClaimId::from_u128(claim),
                lease_until: Timestamp::from_millis(lease_until),
                abandoned_at: abandoned_at.map(Timestamp::from_millis),
                owner: owner.map(<[u8]>::to_vec),
                detached,
            }),
            StateV2::Completed {
                completed_at,
                response,
            } => RecordState::Completed(Completed {
                completed_at: Timestamp::from_millis(completed_at),
                response: response.to_vec(),
            }),
        }
    }
}

/// Encodes a record for storage.
pub(crate) fn encode(record: &Record) -> Result<Vec<u8>> {
    let state = match &record.state {
        RecordState::InFlight(f) => StateV2::InFlight {
            claim: f.claim.as_u128(),
            lease_until: f.lease_until.as_millis(),
            abandoned_at: f.abandoned_at.map(Timestamp::as_millis),
            owner: f.owner.as_deref(),
            detached: f.detached,
        },
        RecordState::Completed(c) => StateV2::Completed {
            completed_at: c.completed_at.as_millis(),
            response: &c.response,
        },
    };
    let stored = Stored {
        fingerprint: *record.fingerprint.as_bytes(),
        created_at: record.created_at.as_millis(),
        expires_at: record.expires_at.map(Timestamp::as_millis),
        attempt: record.attempt,
        state,
    };
    let response_len = record.response().map_or(0, <[u8]>::len);
    let mut out = Vec::with_capacity(96 + response_len);
    out.push(FORMAT_V2);
    bincode::serde::encode_into_std_write(&stored, &mut out, config()).map_err(|e| {
        Error::Corrupt {
            detail: format!("record could not be encoded: {e}"),
        }
    })?;
    Ok(out)
}

/// Decodes a stored record, in either format.
pub(crate) fn decode(bytes: &[u8]) -> Result<Record> {
    let (&format, payload) = bytes
        .split_first()
        .ok_or_else(|| corrupt("empty record".to_owned()))?;
    match format {
        FORMAT_V1 => into_record(decode_payload::<StateV1<'_>>(payload)?),
        FORMAT_V2 => into_record(decode_payload::<StateV2<'_>>(payload)?),
        other => Err(corrupt(format!("unknown record format {other}"))),
    }
}

fn corrupt(detail: String) -> Error {
    Error::Corrupt { detail }
}

/// Decodes the whole payload, refusing trailing bytes.
fn decode_payload<'a, S: Deserialize<'a>>(payload: &'a [u8]) -> Result<Stored<S>> {
    let (stored, used): (Stored<S>, usize) =
        bincode::serde::borrow_decode_from_slice(payload, decode_config())
            .map_err(|e| corrupt(format!("record does not decode: {e}")))?;
    if used != payload.len() {
        return Err(corrupt(format!(
            "record has {} trailing bytes",
            payload.len() - used
        )));
    }
    Ok(stored)
}

fn into_record<S: Into<RecordState>>(stored: Stored<S>) -> Result<Record> {
    if stored.attempt == 0 {
        return Err(corrupt("record has attempt 0".to_owned()));
    }
    Ok(Record {
        fingerprint: Fingerprint::from_bytes(stored.fingerprint),
        created_at: Timestamp::from_millis(stored.created_at),
        expires_at: stored.expires_at.map(Timestamp::from_millis),
        attempt: stored.attempt,
        state: stored.state.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Record> {
        let fp = Fingerprint::of(b"x");
        let at = Timestamp::from_millis;
        vec![
            Record::builder(fp, at(0)).completed(at(5), b"response".to_vec()),
            Record::builder(fp, at(1))
                .expires_at(Some(at(u64::MAX)))
                .completed(at(2), Vec::new())
                .with_attempt(7),
            Record::builder(fp, at(10))
                .expires_at(Some(at(20)))
                .in_flight(ClaimId::from_u128(u128::MAX), at(15))
                .with_owner(Some(b"host:1:2".to_vec())),
            Record::builder(fp, at(10)).in_flight(ClaimId::from_u128(0), at(0)),
            Record::builder(fp, at(10))
                .in_flight(ClaimId::from_u128(3), at(40))
                .with_detached(true)
                .with_abandoned_at(Some(at(30))),
        ]
    }

    /// Format 1, as earlier builds wrote it, still reads: a claim in it is not detached.
    #[test]
    fn format_1_still_reads() {
        let fp = Fingerprint::of(b"x");
        let v1 = Stored {
            fingerprint: *fp.as_bytes(),
            created_at: 10,
            expires_at: Some(20),
            attempt: 2,
            state: StateV1::InFlight {
                claim: 9,
                lease_until: 15,
                abandoned_at: None,
                owner: Some(b"o"),
            },
        };
        let mut bytes = vec![FORMAT_V1];
        bincode::serde::encode_into_std_write(&v1, &mut bytes, config()).expect("encodes");
        let at = Timestamp::from_millis;
        let want = Record::builder(fp, at(10))
            .expires_at(Some(at(20)))
            .in_flight(ClaimId::from_u128(9), at(15))
            .with_owner(Some(b"o".to_vec()))
            .with_attempt(2);
        assert_eq!(decode(&bytes).expect("decodes"), want);
        let v1 = Stored {
            fingerprint: *fp.as_bytes(),
            created_at: 10,
            expires_at: None,
            attempt: 1,
            state: StateV1::Completed {
                completed_at: 12,
                response: b"r",
            },
        };
        let mut bytes = vec![FORMAT_V1];
        bincode::serde::encode_into_std_write(&v1, &mut bytes, config()).expect("encodes");
        let want = Record::builder(fp, at(10)).completed(at(12), b"r".to_vec());
        assert_eq!(decode(&bytes).expect("decodes"), want);
    }

    #[test]
    fn round_trip() {
        for r in samples() {
            let bytes = encode(&r).expect("encodes");
            assert_eq!(bytes[0], FORMAT_V2);
            assert_eq!(decode(&bytes).expect("decodes"), r);
        }
    }

    #[test]
    fn damaged_bytes_are_typed_errors() {
        assert!(matches!(decode(&[]), Err(Error::Corrupt { .. })));
        assert!(matches!(decode(&[9, 0, 0]), Err(Error::Corrupt { .. })));
        for r in samples() {
            let bytes = encode(&r).expect("encodes");
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut]).is_err(), "prefix {cut} decoded");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(matches!(decode(&longer), Err(Error::Corrupt { .. })));
        }
        // a length field claiming a huge response must not allocate it
        let mut huge = vec![FORMAT_V2];
        huge.extend_from_slice(&[0u8; 32]);
        huge.extend_from_slice(&[
            0, 0, 1, 1, 0xfb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ]);
        assert!(matches!(decode(&huge), Err(Error::Corrupt { .. })));
    }
}
