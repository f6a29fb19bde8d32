//! The byte layout of the journal: its file header and its frames. Pure functions, so they
//! are fuzzed on their own: no input may make them panic.
//!
//! A frame is one group commit: a 64-byte header, then the payload (the batch's changes),
//! zero-padded to [`FRAME_ALIGN`]. Starting every frame on a fresh sector means appending
//! never rewrites a sector that holds an earlier, acknowledged frame with new bytes.
//!
//! ```text
//! header:  magic "IDJF" | kind u8 | 0 0 0 | journal id u128 | lsn u64 | payload length u32
//!          | 12 zero bytes | checksum: first 16 bytes of BLAKE3(header[0..48] ++ payload)
//! payload: count u32, then per change: key length u16 | key | tag u8 (0 delete, 1 put)
//!          | for a put: value length u32 | value (an encoded record)
//! ```
//!
//! All integers are little-endian.

/// Frames start at multiples of this many bytes (one sector).
pub(crate) const FRAME_ALIGN: u64 = 512;
/// Length of a frame header.
pub(crate) const HEADER_LEN: usize = 64;
/// The journal's own header occupies the first page; frames live after it.
pub(crate) const FILE_HEADER_LEN: u64 = 4096;

const FRAME_MAGIC: &[u8; 4] = b"IDJF";
const FILE_MAGIC: &[u8; 16] = b"idemdb journal\0\0";
/// The journal format this build writes. Format 2 records the file's preallocated extent
/// in the header; format 1 (read, never written) did not.
pub(crate) const JOURNAL_FORMAT: u32 = 2;
/// The first journal format, without a recorded extent.
const JOURNAL_FORMAT_V1: u32 = 1;

/// What a frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameKind {
    /// A group commit's changes.
    Batch,
    /// Nothing: the next frame starts at the beginning of the frame area.
    Wrap,
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub(crate) kind: FrameKind,
    pub(crate) journal_id: u128,
    pub(crate) lsn: u64,
    pub(crate) payload_len: u32,
    checksum: [u8; 16],
}

/// One change in a frame: the record stored under `key` is now `value` (`None`: deleted).
pub(crate) type FrameEntry = (Vec<u8>, Option<Vec<u8>>);

/// `n` rounded up to a whole number of frame sectors.
pub(crate) fn align(n: u64) -> u64 {
    n.div_ceil(FRAME_ALIGN).saturating_mul(FRAME_ALIGN)
}

/// The aligned size a frame with `payload_len` bytes of payload takes.
pub(crate) fn frame_size(payload_len: usize) -> u64 {
    align(HEADER_LEN as u64 + payload_len as u64)
}

fn checksum(header_start: &[u8], payload: &[u8]) -> [u8; 16] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(header_start);
    hasher.update(payload);
    let mut out = [0u8; 16];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    out
}

/// Appends a whole frame (header, payload, padding) to `out`.
pub(crate) fn encode_frame(
    kind: FrameKind,
    journal_id: u128,
    lsn: u64,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let start = out.len();
    out.extend_from_slice(FRAME_MAGIC);
    out.push(match kind {
        FrameKind::Batch => 1,
        FrameKind::Wrap => 2,
    });
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&journal_id.to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(&[0; 12]);
    let sum = checksum(&out[start..start + 48], payload);
    out.extend_from_slice(&sum);
    out.extend_from_slice(payload);
    let padded = start + frame_size(payload.len()) as usize;
    out.resize(padded, 0);
}

/// Parses a frame header; `None` if the bytes are not one.
pub(crate) fn parse_header(bytes: &[u8]) -> Option<FrameHeader> {
    let bytes: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
    if &bytes[0..4] != FRAME_MAGIC || bytes[5..8] != [0; 3] || bytes[36..48] != [0; 12] {
        return None;
    }
    let kind = match bytes[4] {
        1 => FrameKind::Batch,
        2 => FrameKind::Wrap,
        _ => return None,
    };
    let le_u64 = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
    let journal_id = u128::from_le_bytes(bytes[8..24].try_into().unwrap_or([0; 16]));
    let payload_len = u32::from_le_bytes(bytes[32..36].try_into().unwrap_or([0; 4]));
    let mut sum = [0u8; 16];
    sum.copy_from_slice(&bytes[48..64]);
    Some(FrameHeader {
        kind,
        journal_id,
        lsn: le_u64(24),
        payload_len,
        checksum: sum,
    })
}

impl FrameHeader {
    /// Whether `payload` is exactly what this header's checksum covers. `header_bytes` are
    /// the 64 bytes the header was parsed from.
    pub(crate) fn verifies(&self, header_bytes: &[u8], payload: &[u8]) -> bool {
        header_bytes.len() >= 48
            && payload.len() == self.payload_len as usize
            && checksum(&header_bytes[..48], payload) == self.checksum
    }
}

/// Encodes a batch's changes as a frame payload.
pub(crate) fn encode_changes<'a>(
    changes: impl ExactSizeIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(
        &u32::try_from(changes.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    for (key, value) in changes {
        out.extend_from_slice(&u16::try_from(key.len()).unwrap_or(u16::MAX).to_le_bytes());
        out.extend_from_slice(key);
        match value {
            None => out.push(0),
            Some(value) => {
                out.push(1);
                out.extend_from_slice(
                    &u32::try_from(value.len()).unwrap_or(u32::MAX).to_le_bytes(),
                );
                out.extend_from_slice(value);
            }
        }
    }
}

/// Decodes a frame payload; an error names what is malformed.
pub(crate) fn decode_changes(payload: &[u8]) -> Result<Vec<FrameEntry>, &'static str> {
    let mut rest = payload;
    let mut take = |n: usize| -> Result<&[u8], &'static str> {
        if rest.len() < n {
            return Err("payload ends inside a change");
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let count = u32::from_le_bytes(take(4)?.try_into().map_err(|_| "bad count")?);
    // Each change takes at least 3 bytes, so a count beyond that is a lie: refuse it before
    // reserving memory for it.
    if count as usize > payload.len() / 3 {
        return Err("change count exceeds the payload");
    }
    let mut changes = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let key_len = u16::from_le_bytes(take(2)?.try_into().map_err(|_| "bad key length")?);
        let key = take(usize::from(key_len))?.to_vec();
        let value = match take(1)?[0] {
            0 => None,
            1 => {
                let len = u32::from_le_bytes(take(4)?.try_into().map_err(|_| "bad value length")?);
                Some(take(len as usize)?.to_vec())
            }
            _ => return Err("unknown change tag"),
        };
        changes.push((key, value));
    }
    if !rest.is_empty() {
        return Err("trailing bytes after the last change");
    }
    Ok(changes)
}

/// The journal file's header page: magic | format u32 | journal id u128 | capacity u64 |
/// extent u64 | checksum (first 16 bytes of BLAKE3 of what precedes it), zero-padded.
/// `extent` is how far the file has been preallocated: every byte before it was written and
/// synced before the header said so, so a file shorter than its extent was cut short.
pub(crate) fn encode_file_header(journal_id: u128, capacity: u64, extent: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(FILE_HEADER_LEN as usize);
    out.extend_from_slice(FILE_MAGIC);
    out.extend_from_slice(&JOURNAL_FORMAT.to_le_bytes());
    out.extend_from_slice(&journal_id.to_le_bytes());
    out.extend_from_slice(&capacity.to_le_bytes());
    out.extend_from_slice(&extent.to_le_bytes());
    let sum = checksum(&out, &[]);
    out.extend_from_slice(&sum);
    out.resize(FILE_HEADER_LEN as usize, 0);
    out
}

/// What the journal file's header page says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileHeader {
    pub(crate) format: u32,
    pub(crate) journal_id: u128,
    pub(crate) capacity: u64,
    /// How far the file was preallocated; `None` in a format-1 journal, which did not say.
    pub(crate) extent: Option<u64>,
}

/// Parses the header page; the error says what is wrong with it.
pub(crate) fn parse_file_header(bytes: &[u8]) -> Result<FileHeader, &'static str> {
    let start = bytes.get(..20).ok_or("shorter than a journal header")?;
    if &start[..16] != FILE_MAGIC {
        return Err("not an idemdb journal");
    }
    let format = u32::from_le_bytes(start[16..20].try_into().map_err(|_| "bad format")?);
    // Format 1 has no extent: its checksum follows the capacity.
    let summed = if format == JOURNAL_FORMAT_V1 { 44 } else { 52 };
    let bytes = bytes
        .get(..summed + 16)
        .ok_or("shorter than a journal header")?;
    let mut sum = [0u8; 16];
    sum.copy_from_slice(&bytes[summed..summed + 16]);
    if checksum(&bytes[..summed], &[]) != sum {
        return Err("the journal header's checksum does not match");
    }
    let journal_id = u128::from_le_bytes(bytes[20..36].try_into().map_err(|_| "bad id")?);
    let capacity = u64::from_le_bytes(bytes[36..44].try_into().map_err(|_| "bad capacity")?);
    let extent = (format != JOURNAL_FORMAT_V1)
        .then(|| bytes[44..52].try_into().map(u64::from_le_bytes))
        .transpose()
        .map_err(|_| "bad extent")?;
    Ok(FileHeader {
        format,
        journal_id,
        capacity,
        extent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes() -> Vec<FrameEntry> {
        vec![
            (b"\x01akey".to_vec(), Some(b"record bytes".to_vec())),
            (b"\x01bother".to_vec(), None),
            (Vec::new(), Some(Vec::new())),
        ]
    }

    fn payload(changes: &[FrameEntry]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_changes(
            changes.iter().map(|(k, v)| (k.as_slice(), v.as_deref())),
            &mut out,
        );
        out
    }

    #[test]
    fn frames_round_trip_and_are_aligned() {
        let p = payload(&changes());
        let mut out = vec![0xAA; 3]; // frames are appended after whatever is there
        encode_frame(FrameKind::Batch, 7, 42, &p, &mut out);
        let frame = &out[3..];
        assert_eq!(frame.len() as u64, frame_size(p.len()));
        assert_eq!(frame.len() % FRAME_ALIGN as usize, 0);
        let h = parse_header(frame).expect("header");
        assert_eq!(
            (h.kind, h.journal_id, h.lsn, h.payload_len as usize),
            (FrameKind::Batch, 7, 42, p.len())
        );
        let body = &frame[HEADER_LEN..HEADER_LEN + p.len()];
        assert!(h.verifies(&frame[..HEADER_LEN], body));
        assert_eq!(decode_changes(body).expect("decodes"), changes());
    }

    #[test]
    fn any_damage_fails_verification() {
        let p = payload(&changes());
        let mut frame = Vec::new();
        encode_frame(FrameKind::Batch, 7, 42, &p, &mut frame);
        for i in 0..HEADER_LEN + p.len() {
            let mut bad = frame.clone();
            bad[i] ^= 0x10;
            let ok = parse_header(&bad).is_some_and(|h| {
                h.verifies(&bad[..HEADER_LEN], &bad[HEADER_LEN..HEADER_LEN + p.len()])
            });
            assert!(!ok, "flipping byte {i} went unnoticed");
        }
    }

    #[test]
    fn malformed_payloads_are_errors() {
        let p = payload(&changes());
        for cut in 0..p.len() {
            assert!(decode_changes(&p[..cut]).is_err(), "prefix {cut}");
        }
        let mut extra = p.clone();
        extra.push(0);
        assert!(decode_changes(&extra).is_err());
        assert!(
            decode_changes(&[0xff, 0xff, 0xff, 0xff]).is_err(),
            "huge count"
        );
        let mut bad_tag = payload(&[(b"k".to_vec(), None)]);
        let last = bad_tag.len() - 1;
        bad_tag[last] = 9;
        assert!(decode_changes(&bad_tag).is_err());
    }

    #[test]
    fn file_header_round_trip_and_damage() {
        let h = encode_file_header(99, 1 << 26, 1 << 21);
        assert_eq!(h.len() as u64, FILE_HEADER_LEN);
        assert_eq!(
            parse_file_header(&h),
            Ok(FileHeader {
                format: JOURNAL_FORMAT,
                journal_id: 99,
                capacity: 1 << 26,
                extent: Some(1 << 21),
            })
        );
        for i in 0..68 {
            let mut bad = h.clone();
            bad[i] ^= 1;
            assert!(parse_file_header(&bad).is_err(), "byte {i}");
        }
        assert!(parse_file_header(&h[..10]).is_err());
    }

    #[test]
    fn a_format_1_header_reads_without_an_extent() {
        let mut h = Vec::new();
        h.extend_from_slice(FILE_MAGIC);
        h.extend_from_slice(&JOURNAL_FORMAT_V1.to_le_bytes());
        h.extend_from_slice(&7u128.to_le_bytes());
        h.extend_from_slice(&(1u64 << 26).to_le_bytes());
        let sum = checksum(&h, &[]);
        h.extend_from_slice(&sum);
        h.resize(FILE_HEADER_LEN as usize, 0);
        let parsed = parse_file_header(&h).expect("format 1");
        assert_eq!((parsed.journal_id, parsed.extent), (7, None));
    }
}
