//! The `record_decode` target: the record codec on arbitrary bytes.

use super::samples::sample_records;
use crate::codec;
use crate::fingerprint::Fingerprint;
use crate::record::{Completed, Record, RecordState};
use crate::time::Timestamp;

/// The record codec on arbitrary bytes: decoding never panics; whatever decodes re-encodes
/// to bytes that decode to the same record, re-encoding is a fixed point no longer than the
/// input (the encoder writes every integer in its shortest form; a format-1 in-flight
/// record gains the one-byte detached flag of format 2), and no strict prefix or extension
/// of a decodable input decodes.
pub fn record_decode(data: &[u8]) {
    let Ok(record) = codec::decode(data) else {
        return;
    };
    assert!(record.attempt >= 1, "decoded a record with attempt 0");
    let encoded = codec::encode(&record).expect("a decoded record must re-encode");
    // Format 1 (still read) lacks the one-byte detached flag format 2 writes.
    let grown = usize::from(data.first() == Some(&1) && record.in_flight().is_some());
    assert!(
        encoded.len() <= data.len() + grown,
        "re-encoding grew the record from {} to {} bytes",
        data.len(),
        encoded.len()
    );
    let again = codec::decode(&encoded).expect("a re-encoded record must decode");
    assert_eq!(again, record, "the round trip changed the record");
    let twice = codec::encode(&again).expect("a decoded record must re-encode");
    assert_eq!(twice, encoded, "re-encoding is not a fixed point");

    // A record is self-delimiting: cutting it short or adding a byte is corruption, never
    // another record.
    for cut in [data.len() - 1, data.len() / 2, 1, 0] {
        assert!(
            codec::decode(&data[..cut]).is_err(),
            "a {cut}-byte prefix of a {}-byte record decoded",
            data.len()
        );
    }
    let mut longer = data.to_vec();
    longer.push(0);
    assert!(
        codec::decode(&longer).is_err(),
        "a record with a trailing byte decoded"
    );
}

// Seeds.

pub(super) fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, record) in sample_records() {
        let bytes = codec::encode(&record).expect("sample records encode");
        out.push((format!("{name}.bin"), bytes.clone()));
        if name == "completed" || name == "in_flight_owner" {
            out.push((
                format!("{name}_truncated.bin"),
                bytes[..bytes.len() - 3].to_vec(),
            ));
            let mut trailing = bytes.clone();
            trailing.push(0);
            out.push((format!("{name}_trailing_byte.bin"), trailing));
            let mut future = bytes.clone();
            future[0] = 3;
            out.push((format!("{name}_future_format.bin"), future));
            let mut flipped = bytes.clone();
            flipped[40] ^= 0xff;
            out.push((format!("{name}_garbled.bin"), flipped));
        }
    }
    // attempt 0 is refused on decoding; the encoder writes whatever it is given
    let zero = Record {
        fingerprint: Fingerprint::of(b"x"),
        created_at: Timestamp::from_millis(1),
        expires_at: None,
        attempt: 0,
        state: RecordState::Completed(Completed {
            completed_at: Timestamp::from_millis(2),
            response: b"r".to_vec(),
        }),
    };
    out.push((
        "attempt_zero.bin".to_owned(),
        codec::encode(&zero).expect("encodes"),
    ));
    // an integer written longer than it needs to be (5 as a 2-byte varint)
    let small = Record {
        created_at: Timestamp::from_millis(5),
        attempt: 1,
        ..zero.clone()
    };
    let mut long = codec::encode(&small).expect("encodes");
    assert_eq!(
        long[33], 5,
        "created_at follows the format byte and fingerprint"
    );
    long.splice(33..34, [251, 5, 0]);
    out.push(("non_minimal_varint.bin".to_owned(), long));
    // a response length claiming far more than the input holds
    let mut huge = vec![1u8];
    huge.extend_from_slice(&[0u8; 32]);
    huge.extend_from_slice(&[
        0, 0, 1, 1, 0xfb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
    ]);
    out.push(("huge_length.bin".to_owned(), huge));
    out.push(("empty.bin".to_owned(), Vec::new()));
    out.push(("format_byte_only.bin".to_owned(), vec![1]));
    out
}
