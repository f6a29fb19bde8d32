//! Records as JSON: the line format of `export` and `import` (also the core of `get
//! --json`), and a record's details for people.
//!
//! An export is a header line, then one record a line, then a trailer line with the
//! number of records, so that an export cut short (or with lines added or lost) is told
//! from a whole one:
//!
//! ```text
//! {"idemdb_export":2,"exported_at":1763884800000}
//! {"scope":"default","key":"k1","state":"completed","fingerprint":"<64 hex>","created_at":1763884700000,"expires_at":1763971100000,"attempt":1,"completed_at":1763884701000,"response_base64":"SURNUgEA…"}
//! {"scope":"default","key":"k2","state":"in_flight","fingerprint":"<64 hex>","created_at":1763884790000,"expires_at":null,"attempt":2,"claim":"<32 hex>","lease_until":1763888390000,"abandoned_at":null,"owner_base64":"aWRlbWRi…"}
//! {"idemdb_export_end":true,"records":2}
//! ```
//!
//! Format 1 was the same without the trailer.
//!
//! Instants are milliseconds since the Unix epoch; `expires_at` is null for a record kept
//! forever. Responses and owner tags are standard base64 (with padding), so any bytes
//! survive the round trip.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use idemdb::{ClaimId, Fingerprint, Record, RecordState, Timestamp};
use serde::{Deserialize, Serialize};

/// The format version an export header carries: 2, with a trailer line.
pub const EXPORT_VERSION: u32 = 2;

/// The format version of exports without a trailer, which `import` reads only when told
/// to (`--no-trailer`).
pub const UNTRAILED_VERSION: u32 = 1;

/// How a trailer line starts, as written: the field that tells it from a record.
pub const TRAILER_START: &str = "{\"idemdb_export_end\"";

/// The last line of an export.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trailer {
    /// Always true: marks the line as the end.
    pub idemdb_export_end: bool,
    /// How many record lines come before it.
    pub records: u64,
}

/// The first line of an export.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// The export format version.
    pub idemdb_export: u32,
    /// When the export was written (ms since the epoch).
    pub exported_at: u64,
}

/// A record's stored state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineState {
    /// Claimed, not completed (live, or abandoned: `lease_until` and `abandoned_at` tell).
    InFlight,
    /// Completed, with a response.
    Completed,
}

/// One record, as a line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// The scope.
    pub scope: String,
    /// The key.
    pub key: String,
    /// The stored state.
    pub state: LineState,
    /// The request fingerprint, 64 hexadecimal digits.
    pub fingerprint: String,
    /// When the key was first claimed.
    pub created_at: u64,
    /// When the record expires; null: never.
    pub expires_at: Option<u64>,
    /// Executions so far (1, plus one per recovery).
    pub attempt: u32,
    /// Completed: when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<u64>,
    /// Completed: the response, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_base64: Option<String>,
    /// In flight: the claim id, 32 hexadecimal digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    /// In flight: when the lease ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<u64>,
    /// In flight: when the holder abandoned it, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abandoned_at: Option<u64>,
    /// In flight: the owner tag, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_base64: Option<String>,
}

impl Line {
    /// The line for a stored record.
    pub fn of(scope: &str, key: &str, record: &Record) -> Line {
        let mut line = Line {
            scope: scope.to_owned(),
            key: key.to_owned(),
            state: LineState::Completed,
            fingerprint: record.fingerprint().to_hex(),
            created_at: record.created_at().as_millis(),
            expires_at: record.expires_at().map(Timestamp::as_millis),
            attempt: record.attempt(),
            completed_at: None,
            response_base64: None,
            claim: None,
            lease_until: None,
            abandoned_at: None,
            owner_base64: None,
        };
        match record.state() {
            RecordState::Completed(c) => {
                line.completed_at = Some(c.completed_at().as_millis());
                line.response_base64 = Some(BASE64.encode(c.response()));
            }
            RecordState::InFlight(f) => {
                line.state = LineState::InFlight;
                line.claim = Some(f.claim().to_string());
                line.lease_until = Some(f.lease_until().as_millis());
                line.abandoned_at = f.abandoned_at().map(Timestamp::as_millis);
                line.owner_base64 = f.owner().map(|o| BASE64.encode(o));
            }
        }
        line
    }

    /// The record this line describes; the error names the field that is wrong.
    pub fn to_record(&self) -> Result<Record, String> {
        let fingerprint = Fingerprint::from_hex(&self.fingerprint)
            .ok_or("fingerprint: not 64 hexadecimal digits")?;
        let created_at = Timestamp::from_millis(self.created_at);
        let expires_at = self.expires_at.map(Timestamp::from_millis);
        if self.attempt == 0 {
            return Err("attempt: must be at least 1".to_owned());
        }
        let record = match self.state {
            LineState::Completed => {
                self.refuse_fields(&[
                    ("claim", self.claim.is_some()),
                    ("lease_until", self.lease_until.is_some()),
                    ("abandoned_at", self.abandoned_at.is_some()),
                    ("owner_base64", self.owner_base64.is_some()),
                ])?;
                let completed_at = self
                    .completed_at
                    .ok_or("completed_at: missing for a completed record")?;
                let response = self
                    .response_base64
                    .as_deref()
                    .ok_or("response_base64: missing for a completed record")?;
                let response = BASE64
                    .decode(response)
                    .map_err(|e| format!("response_base64: {e}"))?;
                Record::builder(fingerprint, created_at)
                    .expires_at(expires_at)
                    .completed(Timestamp::from_millis(completed_at), response)
            }
            LineState::InFlight => {
                self.refuse_fields(&[
                    ("completed_at", self.completed_at.is_some()),
                    ("response_base64", self.response_base64.is_some()),
                ])?;
                let claim = self
                    .claim
                    .as_deref()
                    .ok_or("claim: missing for an in-flight record")?;
                let claim = ClaimId::parse(claim).ok_or("claim: not 32 hexadecimal digits")?;
                let lease_until = self
                    .lease_until
                    .ok_or("lease_until: missing for an in-flight record")?;
                let owner = self
                    .owner_base64
                    .as_deref()
                    .map(|o| BASE64.decode(o))
                    .transpose()
                    .map_err(|e| format!("owner_base64: {e}"))?;
                Record::builder(fingerprint, created_at)
                    .expires_at(expires_at)
                    .in_flight(claim, Timestamp::from_millis(lease_until))
                    .with_owner(owner)
                    .with_abandoned_at(self.abandoned_at.map(Timestamp::from_millis))
            }
        };
        Ok(record.with_attempt(self.attempt))
    }

    fn refuse_fields(&self, fields: &[(&str, bool)]) -> Result<(), String> {
        match fields.iter().find(|(_, present)| *present) {
            Some((name, _)) => Err(format!(
                "{name}: not allowed for a {} record",
                match self.state {
                    LineState::Completed => "completed",
                    LineState::InFlight => "in-flight",
                }
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp() -> Fingerprint {
        Fingerprint::of(b"echo hi")
    }

    #[test]
    fn completed_and_in_flight_records_round_trip() {
        let completed = Record::builder(fp(), Timestamp::from_millis(1_000))
            .completed(Timestamp::from_millis(2_000), vec![0, 159, 146, 150, 255])
            .with_attempt(3);
        let in_flight = Record::builder(fp(), Timestamp::from_millis(1_000))
            .expires_at(Some(Timestamp::from_millis(90_000)))
            .in_flight(ClaimId::from_u128(0xabc), Timestamp::from_millis(5_000))
            .with_owner(Some(b"owner \xff".to_vec()))
            .with_abandoned_at(Some(Timestamp::from_millis(4_000)));
        for record in [completed, in_flight] {
            let line = Line::of("s", "k", &record);
            let text = serde_json::to_string(&line).expect("serialize");
            let back: Line = serde_json::from_str(&text).expect("parse");
            assert_eq!(back, line);
            assert_eq!(back.to_record(), Ok(record));
        }
    }

    #[test]
    fn broken_lines_name_the_field() {
        let record = Record::builder(fp(), Timestamp::from_millis(1))
            .completed(Timestamp::from_millis(2), b"x".to_vec());
        let good = Line::of("s", "k", &record);
        let cases: Vec<(Line, &str)> = vec![
            (
                Line {
                    fingerprint: "zz".to_owned(),
                    ..good.clone()
                },
                "fingerprint",
            ),
            (
                Line {
                    response_base64: Some("***".to_owned()),
                    ..good.clone()
                },
                "response_base64",
            ),
            (
                Line {
                    claim: Some("00".to_owned()),
                    ..good.clone()
                },
                "claim",
            ),
            (
                Line {
                    attempt: 0,
                    ..good.clone()
                },
                "attempt",
            ),
            (
                Line {
                    state: LineState::InFlight,
                    ..good
                },
                "completed_at",
            ),
        ];
        for (line, field) in cases {
            let err = line.to_record().expect_err(field);
            assert!(err.starts_with(field), "{err}");
        }
        assert!(serde_json::from_str::<Line>(r#"{"scope":"s","extra":1}"#).is_err());
    }
}
