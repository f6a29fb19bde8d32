//! The journal on in-memory storage: appends, wrap-around, recovery and its refusals.

use std::sync::Arc;

use redb::StorageBackend;
use redb::backends::InMemoryBackend;

use super::frame::{self, FILE_HEADER_LEN, FrameEntry};
use super::*;
use crate::storage::backend::SharedBackend;

fn memory() -> Arc<InMemoryBackend> {
    Arc::new(InMemoryBackend::new())
}

fn io(m: &Arc<InMemoryBackend>) -> Box<dyn StorageBackend> {
    Box::new(SharedBackend(Arc::clone(m)))
}

fn payload(tag: u64, size: usize) -> (Vec<u8>, Vec<FrameEntry>) {
    let changes = vec![(tag.to_le_bytes().to_vec(), Some(vec![tag as u8; size]))];
    let mut out = Vec::new();
    frame::encode_changes(
        changes.iter().map(|(k, v)| (k.as_slice(), v.as_deref())),
        &mut out,
    );
    (out, changes)
}

fn recover(m: &Arc<InMemoryBackend>, tail: u64, last: u64) -> Result<Recovered> {
    let header = Journal::read_header(&SharedBackend(Arc::clone(m)))?;
    Journal::recover(&SharedBackend(Arc::clone(m)), &header, tail, last)
}

#[test]
fn appended_frames_are_recovered_in_order() {
    let m = memory();
    let mut j = Journal::create(io(&m), MIN_CAPACITY, 10).expect("create");
    let mut expected = Vec::new();
    let mut ends = Vec::new();
    for i in 0..20 {
        let (p, changes) = payload(i, 100 + i as usize * 37);
        let a = j.append(&p, true).map_err(|_| "append").expect("append");
        assert_eq!(a.lsn, 11 + i);
        expected.push((a.lsn, changes));
        ends.push(a.end);
    }
    let r = recover(&m, FILE_HEADER_LEN, 10).expect("recover");
    assert_eq!(r.frames, expected);
    assert_eq!(r.last_lsn, 30);
    assert_eq!(r.head, j.head());
    // from a later checkpoint (frames up to 25 folded, tail right after frame 25)
    let r = recover(&m, ends[14], 25).expect("recover");
    assert_eq!(r.frames, expected[15..]);
    // a checkpoint whose tail lies before its LSN is inconsistent: frames 26.. would be
    // unreachable, and that is reported, not ignored
    assert!(matches!(
        recover(&m, FILE_HEADER_LEN, 25),
        Err(Error::Corrupt { .. })
    ));
}

#[test]
fn the_ring_wraps_and_refuses_to_overrun_unfolded_frames() {
    let m = memory();
    let mut j = Journal::create(io(&m), MIN_CAPACITY, 0).expect("create");
    let (p, _) = payload(1, 100_000);
    let mut appended = Vec::new();
    loop {
        match j.append(&p, true) {
            Ok(a) => appended.push(a),
            Err(AppendError::Full) => break,
            Err(AppendError::Io(e)) => panic!("{e}"),
        }
    }
    assert_eq!(appended.len(), 10, "a 1 MiB ring holds ten 100 kB frames");
    // fold the first three: room for more, and the next frame wraps to the start
    let tail = j.release_through(appended[2].lsn).expect("released");
    let mut lsn_before_wrap = j.last_lsn();
    let a = j
        .append(&p, true)
        .map_err(|_| "append")
        .expect("fits after the wrap");
    assert_eq!(a.lsn, lsn_before_wrap + 2, "the wrap frame took an LSN");
    lsn_before_wrap = a.lsn;
    assert!(a.end < appended[2].end);
    let r = recover(&m, tail, appended[2].lsn).expect("recover");
    let lsns: Vec<u64> = r.frames.iter().map(|(l, _)| *l).collect();
    let mut want: Vec<u64> = appended[3..].iter().map(|a| a.lsn).collect();
    want.push(lsn_before_wrap);
    assert_eq!(lsns, want);
    assert_eq!(r.head, j.head());
}

#[test]
fn a_torn_last_frame_ends_recovery_quietly() {
    let m = memory();
    let mut j = Journal::create(io(&m), MIN_CAPACITY, 0).expect("create");
    let (p, _) = payload(1, 3000);
    let first = j.append(&p, true).map_err(|_| "append").expect("append");
    let second = j.append(&p, true).map_err(|_| "append").expect("append");
    // tear the second frame: its last sector never reached the disk
    let torn_at = second.end - 512;
    m.write(torn_at, &[0u8; 512]).expect("tear");
    let r = recover(&m, FILE_HEADER_LEN, 0).expect("a torn tail is not corruption");
    assert_eq!(r.last_lsn, first.lsn);
    assert_eq!(r.head, first.end);
}

#[test]
fn a_damaged_acknowledged_frame_before_intact_ones_is_corruption() {
    let m = memory();
    let mut j = Journal::create(io(&m), MIN_CAPACITY, 0).expect("create");
    let (p, _) = payload(1, 3000);
    let first = j.append(&p, true).map_err(|_| "append").expect("append");
    j.append(&p, true).map_err(|_| "append").expect("append");
    j.append(&p, true).map_err(|_| "append").expect("append");
    // rot one byte inside the second frame
    m.write(first.end + 700, &[0xEE]).expect("rot");
    match recover(&m, FILE_HEADER_LEN, 0) {
        Err(Error::Corrupt { detail }) => assert!(detail.contains("damaged"), "{detail}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_failed_append_burns_its_lsn_and_the_next_one_takes_its_place() {
    let m = memory();
    let mut j = Journal::create(io(&m), MIN_CAPACITY, 0).expect("create");
    let (p, _) = payload(1, 1000);
    let ok = j.append(&p, true).map_err(|_| "append").expect("append");
    // simulate a failed append: the bytes were written, the caller was told it failed
    let (failed_payload, _) = payload(2, 5000);
    let mut failed = Vec::new();
    frame::encode_frame(
        frame::FrameKind::Batch,
        j.id(),
        ok.lsn + 1,
        &failed_payload,
        &mut failed,
    );
    m.write(ok.end, &failed).expect("write");
    j.next_lsn += 1; // what append does when the device fails
    let (p3, changes3) = payload(3, 100);
    let next = j.append(&p3, true).map_err(|_| "append").expect("append");
    assert_eq!(next.lsn, ok.lsn + 2);
    let r = recover(&m, FILE_HEADER_LEN, 0).expect("recover");
    assert_eq!(r.last_lsn, next.lsn);
    assert_eq!(r.frames.last().map(|f| &f.1), Some(&changes3));
}

#[test]
fn stale_frames_of_an_earlier_lap_are_ignored() {
    let m = memory();
    let mut j = Journal::create(io(&m), MIN_CAPACITY, 0).expect("create");
    let (p, _) = payload(1, 200_000);
    let mut last = None;
    for _ in 0..20 {
        let a = match j.append(&p, true) {
            Ok(a) => a,
            Err(AppendError::Full) => {
                let lsn = last.map(|a: Appended| a.lsn).expect("something appended");
                j.release_through(lsn);
                j.append(&p, true)
                    .map_err(|_| "append")
                    .expect("append after release")
            }
            Err(AppendError::Io(e)) => panic!("{e}"),
        };
        last = Some(a);
    }
    let last = last.expect("appended");
    let r = recover(&m, last.end, last.lsn).expect("recover");
    assert!(r.frames.is_empty());
    assert_eq!(r.last_lsn, last.lsn);
}

#[test]
fn damaged_headers_and_foreign_journals_are_refused() {
    let m = memory();
    drop(Journal::create(io(&m), MIN_CAPACITY, 0).expect("create"));
    m.write(3, &[0xFF]).expect("damage");
    assert!(matches!(
        Journal::read_header(&SharedBackend(Arc::clone(&m))),
        Err(Error::Corrupt { .. })
    ));
    let empty = memory();
    assert!(matches!(
        Journal::read_header(&SharedBackend(empty)),
        Err(Error::Corrupt { .. })
    ));
}
