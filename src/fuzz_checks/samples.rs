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
            Record::new_completed(
                fp,
                t(1_700_000_000_000),
                Some(t(1_700_086_400_000)),
                t(1_700_000_000_250),
                br#"{"order_id":17}"#.to_vec(),
            ),
        ),
        (
            "completed_empty_response",
            Record::new_completed(fp, t(0), None, t(0), Vec::new()),
        ),
        (
            "completed_extremes",
            Record::new_completed(
                fp,
                t(u64::MAX),
                Some(t(u64::MAX)),
                t(u64::MAX),
                vec![0xff; 300],
            )
            .with_attempt(u32::MAX),
        ),
        (
            "completed_recovered",
            Record::new_completed(fp, t(5), Some(t(86_400_005)), t(9), b"ok".to_vec())
                .with_attempt(3),
        ),
        (
            "in_flight",
            Record::new_in_flight(
                fp,
                t(1_700_000_000_000),
                Some(t(1_700_086_400_000)),
                ClaimId::from_u128(0x0123_4567_89ab_cdef_0000_0000_0000_0001),
                t(1_700_000_030_000),
                None,
            ),
        ),
        (
            "in_flight_owner",
            Record::new_in_flight(
                fp,
                t(10),
                None,
                ClaimId::from_u128(u128::MAX),
                t(15),
                Some(b"host-a:4242:1700000000".to_vec()),
            ),
        ),
        (
            "in_flight_zero_lease",
            Record::new_in_flight(
                Fingerprint::from_bytes([0; 32]),
                t(0),
                Some(t(0)),
                ClaimId::from_u128(0),
                t(0),
                Some(Vec::new()),
            ),
        ),
        (
            "abandoned",
            Record::new_in_flight(
                fp,
                t(100),
                Some(t(200)),
                ClaimId::from_u128(7),
                t(150),
                None,
            )
            .with_abandoned_at(Some(t(120)))
            .with_attempt(2),
        ),
    ]
}
