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

/// The record format this build writes.
const FORMAT_V1: u8 = 1;

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

#[derive(Serialize, Deserialize)]
struct RecordV1<'a> {
    fingerprint: [u8; 32],
    created_at: u64,
    expires_at: Option<u64>,
    attempt: u32,
    #[serde(borrow)]
    state: StateV1<'a>,
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

/// Encodes a record for storage.
pub(crate) fn encode(record: &Record) -> Result<Vec<u8>> {
    let state = match &record.state {
        RecordState::InFlight(f) => StateV1::InFlight {
            claim: f.claim.as_u128(),
            lease_until: f.lease_until.as_millis(),
            abandoned_at: f.abandoned_at.map(Timestamp::as_millis),
            owner: f.owner.as_deref(),
        },
        RecordState::Completed(c) => StateV1::Completed {
            completed_at: c.completed_at.as_millis(),
            response: &c.response,
        },
    };
    let v1 = RecordV1 {
        fingerprint: *record.fingerprint.as_bytes(),
        created_at: record.created_at.as_millis(),
        expires_at: record.expires_at.map(Timestamp::as_millis),
        attempt: record.attempt,
        state,
    };
    let response_len = record.response().map_or(0, <[u8]>::len);
    let mut out = Vec::with_capacity(96 + response_len);
    out.push(FORMAT_V1);
    bincode::serde::encode_into_std_write(&v1, &mut out, config()).map_err(|e| Error::Corrupt {
        detail: format!("record could not be encoded: {e}"),
    })?;
    Ok(out)
}

/// Decodes a stored record.
pub(crate) fn decode(bytes: &[u8]) -> Result<Record> {
    let corrupt = |detail: String| Error::Corrupt { detail };
    let (&format, payload) = bytes
        .split_first()
        .ok_or_else(|| corrupt("empty record".to_owned()))?;
    if format != FORMAT_V1 {
        return Err(corrupt(format!("unknown record format {format}")));
    }
    let (v1, used): (RecordV1<'_>, usize) =
        bincode::serde::borrow_decode_from_slice(payload, decode_config())
            .map_err(|e| corrupt(format!("record does not decode: {e}")))?;
    if used != payload.len() {
        return Err(corrupt(format!(
            "record has {} trailing bytes",
            payload.len() - used
        )));
    }
    let state = match v1.state {
        StateV1::InFlight {
            claim,
            lease_until,
            abandoned_at,
            owner,
        } => RecordState::InFlight(InFlight {
            claim: ClaimId::from_u128(claim),
            lease_until: Timestamp::from_millis(lease_until),
            abandoned_at: abandoned_at.map(Timestamp::from_millis),
            owner: owner.map(<[u8]>::to_vec),
        }),
        StateV1::Completed {
            completed_at,
            response,
        } => RecordState::Completed(Completed {
            completed_at: Timestamp::from_millis(completed_at),
            response: response.to_vec(),
        }),
    };
    if v1.attempt == 0 {
        return Err(corrupt("record has attempt 0".to_owned()));
    }
    Ok(Record {
        fingerprint: Fingerprint::from_bytes(v1.fingerprint),
        created_at: Timestamp::from_millis(v1.created_at),
        expires_at: v1.expires_at.map(Timestamp::from_millis),
        attempt: v1.attempt,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Record> {
        let fp = Fingerprint::of(b"x");
        vec![
            Record::new_completed(
                fp,
                Timestamp::from_millis(0),
                None,
                Timestamp::from_millis(5),
                b"response".to_vec(),
            ),
            Record::new_completed(
                fp,
                Timestamp::from_millis(1),
                Some(Timestamp::from_millis(u64::MAX)),
                Timestamp::from_millis(2),
                Vec::new(),
            )
            .with_attempt(7),
            Record::new_in_flight(
                fp,
                Timestamp::from_millis(10),
                Some(Timestamp::from_millis(20)),
                ClaimId::from_u128(u128::MAX),
                Timestamp::from_millis(15),
                Some(b"host:1:2".to_vec()),
            ),
            Record::new_in_flight(
                fp,
                Timestamp::from_millis(10),
                None,
                ClaimId::from_u128(0),
                Timestamp::from_millis(0),
                None,
            ),
        ]
    }

    #[test]
    fn round_trip() {
        for r in samples() {
            let bytes = encode(&r).expect("encodes");
            assert_eq!(bytes[0], FORMAT_V1);
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
        let mut huge = vec![FORMAT_V1];
        huge.extend_from_slice(&[0u8; 32]);
        huge.extend_from_slice(&[
            0, 0, 1, 1, 0xfb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ]);
        assert!(matches!(decode(&huge), Err(Error::Corrupt { .. })));
    }
}
