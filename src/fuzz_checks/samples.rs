//! Records every seed corpus shares: one of each state, built with the real types.

use crate::fingerprint::Fingerprint;
use crate::record::{ClaimId, Record};
use crate::time::Timestamp;

/// One record of each shape the codec knows, by name.
pub(super) fn sample_records() -> Vec<(&'static str, Record)> {
    let fp = Fingerprint::of(b"POST /orders {\"item\":\"book\"}");
    let t = Timestamp::from_millis;
    vec![
        (
            "completed",
            Record::builder(fp, t(1_700_000_000_000))
                .expires_at(Some(t(1_700_086_400_000)))
                .completed(t(1_700_000_000_250), br#"{"order_id":17}"#.to_vec()),
        ),
        (
            "completed_empty_response",
            Record::builder(fp, t(0)).completed(t(0), Vec::new()),
        ),
        (
            "completed_extremes",
            Record::builder(fp, t(u64::MAX))
                .expires_at(Some(t(u64::MAX)))
                .completed(t(u64::MAX), vec![0xff; 300])
                .with_attempt(u32::MAX),
        ),
        (
            "completed_recovered",
            Record::builder(fp, t(5))
                .expires_at(Some(t(86_400_005)))
                .completed(t(9), b"ok".to_vec())
                .with_attempt(3),
        ),
        (
            "in_flight",
            Record::builder(fp, t(1_700_000_000_000))
                .expires_at(Some(t(1_700_086_400_000)))
                .in_flight(
                    ClaimId::from_u128(0x0123_4567_89ab_cdef_0000_0000_0000_0001),
                    t(1_700_000_030_000),
                ),
        ),
        (
            "in_flight_owner",
            Record::builder(fp, t(10))
                .in_flight(ClaimId::from_u128(u128::MAX), t(15))
                .with_owner(Some(b"host-a:4242:1700000000".to_vec())),
        ),
        (
            "in_flight_zero_lease",
            Record::builder(Fingerprint::from_bytes([0; 32]), t(0))
                .expires_at(Some(t(0)))
                .in_flight(ClaimId::from_u128(0), t(0))
                .with_owner(Some(Vec::new())),
        ),
        (
            "abandoned",
            Record::builder(fp, t(100))
                .expires_at(Some(t(200)))
                .in_flight(ClaimId::from_u128(7), t(150))
                .with_abandoned_at(Some(t(120)))
                .with_attempt(2),
        ),
    ]
}
