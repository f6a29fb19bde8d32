//! The `journal_frame` target: the journal's frame codec, and recovery over it.

use redb::StorageBackend;
use redb::backends::InMemoryBackend;

use super::record_decode::record_decode;
use super::samples::sample_records;
use crate::codec;
use crate::error::Error;
use crate::key::{split_storage_key, storage_key};
use crate::storage::journal::frame::{
    self, FILE_HEADER_LEN, FRAME_ALIGN, FrameKind, HEADER_LEN, JOURNAL_FORMAT,
};
use crate::storage::journal::{Journal, MIN_CAPACITY};

/// The journal id the `journal_frame` check gives the journal it recovers; seeds whose
/// frames carry it are followed by recovery.
pub const FUZZ_JOURNAL_ID: u128 = 0x1de3_db00_f022_0000_0000_0000_0000_0001;

/// The journal's frame codec on arbitrary bytes, and recovery over them.
///
/// The bytes are read four ways, none of which may panic or read out of bounds:
/// - as one frame: a header that parses re-encodes (with the payload behind it) to the
///   same 48 bytes; the checksum verifies exactly when re-encoding reproduces all 64; a
///   verified frame re-encodes identically, padding aside;
/// - as a payload: changes that decode re-encode to the same bytes (and their keys and
///   records go through the storage-key and record decoders);
/// - as a journal header page: one that parses re-encodes identically;
/// - as the frame area of a journal (with header id [`FUZZ_JOURNAL_ID`]): recovery either
///   returns frames in increasing LSN order and a head inside the area on a frame boundary,
///   or a typed corruption error (never an I/O error, which would mean a read past the
///   end); the same again after every frame's checksum is recomputed, so that mutated
///   frames get past the checksum into the payload decoder and the lost-frame probe.
pub fn journal_frame(data: &[u8]) {
    check_frame(data);
    check_payload(data);
    if let Ok(header) = frame::parse_file_header(data)
        && header.format == JOURNAL_FORMAT
    {
        let page = frame::encode_file_header(
            header.journal_id,
            header.capacity,
            header.extent.unwrap_or(0),
        );
        assert_eq!(
            page[..68],
            data[..68],
            "a journal header does not re-encode identically"
        );
    }
    check_recovery(data);
    check_recovery(&resealed(data));
}

fn check_frame(data: &[u8]) {
    let Some(header) = frame::parse_header(data) else {
        return;
    };
    let len = header.payload_len as usize;
    let Some(payload) = HEADER_LEN
        .checked_add(len)
        .and_then(|end| data.get(HEADER_LEN..end))
    else {
        return;
    };
    let mut out = Vec::new();
    frame::encode_frame(
        header.kind,
        header.journal_id,
        header.lsn,
        payload,
        &mut out,
    );
    assert_eq!(out.len() as u64, frame::frame_size(len), "frame size");
    assert_eq!(out.len() % FRAME_ALIGN as usize, 0, "frame alignment");
    assert_eq!(out[..48], data[..48], "a frame header does not re-encode");
    let verified = header.verifies(&data[..HEADER_LEN], payload);
    assert_eq!(
        verified,
        out[..HEADER_LEN] == data[..HEADER_LEN],
        "the checksum verdict disagrees with re-encoding"
    );
    if verified {
        assert_eq!(out[HEADER_LEN..HEADER_LEN + len], *payload);
        assert!(out[HEADER_LEN + len..].iter().all(|b| *b == 0), "padding");
    }
    check_payload(payload);
}

fn check_payload(payload: &[u8]) {
    let Ok(changes) = frame::decode_changes(payload) else {
        return;
    };
    let mut out = Vec::new();
    frame::encode_changes(
        changes.iter().map(|(k, v)| (k.as_slice(), v.as_deref())),
        &mut out,
    );
    assert!(out == payload, "a payload does not re-encode identically");
    for (key, value) in &changes {
        let _ = split_storage_key(key);
        if let Some(value) = value {
            record_decode(value);
        }
    }
}

fn check_recovery(area: &[u8]) {
    let io = InMemoryBackend::new();
    let allocated = FILE_HEADER_LEN + area.len() as u64;
    let header_page = frame::encode_file_header(FUZZ_JOURNAL_ID, MIN_CAPACITY, allocated);
    io.set_len(allocated).expect("memory");
    io.write(0, &header_page).expect("memory");
    io.write(FILE_HEADER_LEN, area).expect("memory");
    let header = Journal::read_header(&io).expect("the journal's own header");
    match Journal::recover(&io, &header, FILE_HEADER_LEN, 0) {
        Ok(recovered) => {
            let head = recovered.head;
            assert!(
                (FILE_HEADER_LEN..MIN_CAPACITY).contains(&head) && head.is_multiple_of(FRAME_ALIGN),
                "recovery resumes at {head}, not a frame position"
            );
            assert!(
                head <= allocated.max(FILE_HEADER_LEN),
                "recovery resumes at {head}, past the {allocated} bytes there are"
            );
            let mut last = 0;
            for (lsn, _) in &recovered.frames {
                assert!(*lsn > last, "recovered frames out of LSN order");
                last = *lsn;
            }
            assert!(
                last <= recovered.last_lsn,
                "last LSN behind a recovered frame"
            );
        }
        Err(Error::Corrupt { .. }) => {}
        Err(e) => panic!("recovery of a journal image failed with a non-corruption error: {e}"),
    }
}

/// `area` with every parseable frame's checksum recomputed, last frame first, so that the
/// checksum of a frame covers the final bytes of any frame header resealed inside it.
fn resealed(area: &[u8]) -> Vec<u8> {
    let mut image = area.to_vec();
    let align = FRAME_ALIGN as usize;
    let mut at = image.len() / align * align;
    loop {
        if let Some(header) = image.get(at..).and_then(frame::parse_header) {
            let end = (at + HEADER_LEN).checked_add(header.payload_len as usize);
            if let Some(end) = end.filter(|end| *end <= image.len()) {
                let mut out = Vec::new();
                frame::encode_frame(
                    header.kind,
                    header.journal_id,
                    header.lsn,
                    &image[at + HEADER_LEN..end],
                    &mut out,
                );
                image[at..at + HEADER_LEN].copy_from_slice(&out[..HEADER_LEN]);
            }
        }
        if at == 0 {
            return image;
        }
        at -= align;
    }
}

// Seeds.

fn journal_payload(changes: &[(Vec<u8>, Option<Vec<u8>>)]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode_changes(
        changes.iter().map(|(k, v)| (k.as_slice(), v.as_deref())),
        &mut out,
    );
    out
}

pub(super) fn seeds() -> Vec<(String, Vec<u8>)> {
    let records = sample_records();
    let record = |i: usize| codec::encode(&records[i % records.len()].1).expect("encodes");
    let batch_a = journal_payload(&[
        (storage_key("shop", "order-1"), Some(record(0))),
        (storage_key("shop", "order-2"), Some(record(4))),
        (storage_key("billing", "inv-9"), None),
    ]);
    let batch_b = journal_payload(&[(storage_key("shop", "order-2"), Some(record(1)))]);
    let batch_c = journal_payload(&[
        (
            storage_key("t", "7f1c0b9e-2a4d-4c8e-9b1a-3e5f6a7b8c9d"),
            Some(record(7)),
        ),
        (Vec::new(), Some(Vec::new())),
    ]);
    let empty_batch = journal_payload(&[]);
    let id = FUZZ_JOURNAL_ID;
    let frame_of = |kind: FrameKind, journal: u128, lsn: u64, payload: &[u8]| {
        let mut out = Vec::new();
        frame::encode_frame(kind, journal, lsn, payload, &mut out);
        out
    };
    let one = frame_of(FrameKind::Batch, id, 1, &batch_a);
    let mut out: Vec<(String, Vec<u8>)> = vec![("frame_batch.bin".into(), one.clone())];
    out.push((
        "frame_empty_batch.bin".into(),
        frame_of(FrameKind::Batch, id, 1, &empty_batch),
    ));
    out.push((
        "frame_wrap.bin".into(),
        frame_of(FrameKind::Wrap, id, 1, &[]),
    ));
    out.push((
        "frame_other_journal.bin".into(),
        frame_of(FrameKind::Batch, 99, 1, &batch_b),
    ));
    let three = [
        frame_of(FrameKind::Batch, id, 1, &batch_a),
        frame_of(FrameKind::Batch, id, 2, &batch_b),
        frame_of(FrameKind::Batch, id, 3, &batch_c),
    ]
    .concat();
    out.push(("ring_three_frames.bin".into(), three.clone()));
    out.push((
        "ring_wrap_then_stale.bin".into(),
        [
            frame_of(FrameKind::Batch, id, 5, &batch_b),
            frame_of(FrameKind::Wrap, id, 6, &[]),
            frame_of(FrameKind::Batch, id, 4, &batch_c),
        ]
        .concat(),
    ));
    out.push((
        "ring_lsn_gap_backwards.bin".into(),
        [
            frame_of(FrameKind::Batch, id, 10, &batch_b),
            frame_of(FrameKind::Batch, id, 7, &batch_c),
        ]
        .concat(),
    ));
    let mut damaged_middle = three.clone();
    let second = one.len() + HEADER_LEN + 2;
    damaged_middle[second] ^= 0x40;
    out.push(("ring_damaged_middle.bin".into(), damaged_middle));
    let mut damaged_first = three.clone();
    damaged_first[HEADER_LEN + 1] ^= 1;
    out.push(("ring_damaged_first.bin".into(), damaged_first));
    out.push((
        "frame_truncated.bin".into(),
        one[..HEADER_LEN + batch_a.len() - 1].to_vec(),
    ));
    out.push(("frame_header_only.bin".into(), one[..HEADER_LEN].to_vec()));
    let mut bad_kind = one.clone();
    bad_kind[4] = 3;
    out.push(("frame_unknown_kind.bin".into(), bad_kind));
    let mut bad_length = one.clone();
    bad_length[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
    out.push(("frame_huge_length.bin".into(), bad_length));
    out.push(("payload_batch.bin".into(), batch_a.clone()));
    out.push((
        "payload_truncated.bin".into(),
        batch_a[..batch_a.len() - 1].to_vec(),
    ));
    out.push((
        "payload_huge_count.bin".into(),
        vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0],
    ));
    let mut bad_tag = batch_b.clone();
    bad_tag[4 + 2 + storage_key("shop", "order-2").len()] = 9;
    out.push(("payload_unknown_tag.bin".into(), bad_tag));
    let mut file_header = frame::encode_file_header(id, MIN_CAPACITY, MIN_CAPACITY);
    file_header.truncate(68);
    out.push(("file_header.bin".into(), file_header.clone()));
    let mut future = frame::encode_file_header(id, MIN_CAPACITY, MIN_CAPACITY);
    future[16] = 3;
    future.truncate(68);
    out.push(("file_header_damaged.bin".into(), future));
    out.push(("empty.bin".into(), Vec::new()));
    out
}
