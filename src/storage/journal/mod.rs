//! The journal: a ring of frames in a file beside the database, where every group commit
//! is appended and synced as one contiguous write.
//!
//! Why: a redb commit writes about eight scattered pages and each costs a seek-like delay at
//! sync time, while an append to a preallocated file costs one page (see
//! `benches/commit_anatomy.rs`). So the durable step of every operation is a journal append;
//! the records reach the redb tables later, in large batches ("folds"), off the critical
//! path.
//!
//! The file is a header page, then a ring of frames. Frames are appended at `head`; a fold
//! that has moved everything up to some frame into redb frees the ring up to that frame
//! (`tail`). When a frame does not fit before the end of the file, a small wrap frame says
//! "continue at the start". The file grows in zero-filled chunks up to its capacity, so
//! appends overwrite allocated blocks and a data sync does not have to flush file metadata.
//!
//! Every frame carries an LSN, strictly increasing and never reused (a failed append burns
//! its LSN). Recovery starts at the tail the last fold recorded and follows frames while
//! each is intact and newer than the one before; the first torn or stale frame is the end.
//! An intact frame newer than that end anywhere in the ring would mean an acknowledged
//! frame was damaged: that is reported as corruption instead of silently dropping it.

pub(crate) mod file;
pub(crate) mod frame;

use std::collections::{BTreeMap, VecDeque};

use redb::StorageBackend;

use crate::error::{Error, Result};
use frame::{FILE_HEADER_LEN, FRAME_ALIGN, FileHeader, FrameEntry, FrameKind, HEADER_LEN};

/// The journal grows its file by this much at a time (zero-filled, then synced with the
/// next commit).
const GROWTH_CHUNK: u64 = 1024 * 1024;

/// The smallest journal accepted.
pub(crate) const MIN_CAPACITY: u64 = 1024 * 1024;

/// Where an appended frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Appended {
    /// The frame's LSN.
    pub(crate) lsn: u64,
    /// Where the next frame starts: the tail, once this frame is folded.
    pub(crate) end: u64,
}

/// Why an append did not happen.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// The ring has no room until a fold frees some.
    Full,
    /// The device failed; nothing was acknowledged, the LSNs tried are burnt.
    Io(std::io::Error),
}

/// Frames found by recovery, in LSN order, and where appending resumes.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) frames: Vec<(u64, Vec<FrameEntry>)>,
    pub(crate) last_lsn: u64,
    pub(crate) head: u64,
}

impl Recovered {
    /// The last state of each key the frames change (`None`: deleted): later frames win.
    /// What a recovery folds, or a session that does not fold keeps in memory.
    /// The frames are taken (left empty), not copied.
    pub(crate) fn take_latest_states(&mut self) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        let mut latest = BTreeMap::new();
        for (_, changes) in std::mem::take(&mut self.frames) {
            for (key, value) in changes {
                latest.insert(key, value);
            }
        }
        latest
    }
}

#[derive(Debug)]
struct Span {
    lsn: u64,
    bytes: u64,
    end: u64,
}

/// An open journal. Only the writer appends; folds release space.
pub(crate) struct Journal {
    io: Box<dyn StorageBackend>,
    id: u128,
    capacity: u64,
    allocated: u64,
    /// The extent the header records: never more than is allocated and synced.
    recorded_extent: u64,
    head: u64,
    next_lsn: u64,
    /// Frames appended but not yet folded, oldest first.
    spans: VecDeque<Span>,
    /// Set when folds do not reach the database file (a short-process session): no space
    /// is ever released, since every frame since the file's checkpoint is still needed.
    keep_all: bool,
    used: u64,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("id", &self.id)
            .field("capacity", &self.capacity)
            .field("head", &self.head)
            .field("next_lsn", &self.next_lsn)
            .field("used", &self.used)
            .finish_non_exhaustive()
    }
}

fn corrupt(detail: impl Into<String>) -> Error {
    Error::Corrupt {
        detail: format!("journal: {}", detail.into()),
    }
}

impl Journal {
    /// Creates a fresh journal over `io` (truncating it), its first frame numbered after
    /// `last_lsn`.
    pub(crate) fn create(
        io: Box<dyn StorageBackend>,
        capacity: u64,
        last_lsn: u64,
    ) -> Result<Journal> {
        let capacity = (capacity / FRAME_ALIGN) * FRAME_ALIGN;
        let id = uuid::Uuid::new_v4().as_u128();
        io.set_len(0).map_err(Error::from_io)?;
        let mut journal = Journal {
            io,
            id,
            capacity,
            allocated: FILE_HEADER_LEN,
            recorded_extent: FILE_HEADER_LEN,
            head: FILE_HEADER_LEN,
            next_lsn: last_lsn + 1,
            spans: VecDeque::new(),
            keep_all: false,
            used: 0,
            buf: Vec::new(),
        };
        journal
            .fill_zeros(FILE_HEADER_LEN + GROWTH_CHUNK)
            .map_err(Error::from_io)?;
        // One sync covers the zeros and the header: until the store records this journal's
        // id (after this returns), nothing refers to it, so a crash before the sync is
        // harmless.
        journal.recorded_extent = journal.allocated;
        journal
            .io
            .write(
                0,
                &frame::encode_file_header(id, capacity, journal.recorded_extent),
            )
            .map_err(Error::from_io)?;
        journal.io.sync_data().map_err(Error::from_io)?;
        Ok(journal)
    }

    /// Reads the header of an existing journal.
    pub(crate) fn read_header(io: &dyn StorageBackend) -> Result<FileHeader> {
        let len = io.len().map_err(Error::from_io)?;
        if len < FILE_HEADER_LEN {
            return Err(corrupt(format!(
                "the file is {len} bytes, shorter than its header"
            )));
        }
        let mut page = vec![0u8; FILE_HEADER_LEN as usize];
        io.read(0, &mut page).map_err(Error::from_io)?;
        let header = frame::parse_file_header(&page).map_err(corrupt)?;
        if header.format != frame::JOURNAL_FORMAT && header.format != 1 {
            return Err(corrupt(format!("unknown journal format {}", header.format)));
        }
        if header.capacity < MIN_CAPACITY || !header.capacity.is_multiple_of(FRAME_ALIGN) {
            return Err(corrupt(format!("implausible capacity {}", header.capacity)));
        }
        Ok(header)
    }

    /// Finds every intact frame after `last_folded` starting at `tail`, and checks that no
    /// intact newer frame lies beyond the first damaged one and that the file is as long as
    /// its header says it was preallocated.
    pub(crate) fn recover(
        io: &dyn StorageBackend,
        header: &FileHeader,
        tail: u64,
        last_folded: u64,
    ) -> Result<Recovered> {
        Journal::recover_with(io, header, tail, last_folded, true)
    }

    /// [`recover`](Self::recover) for a short-process session, which opens often: the
    /// whole ring is searched for intact frames beyond the end only when the end looks
    /// damaged (see below), not on every open.
    pub(crate) fn recover_quick(
        io: &dyn StorageBackend,
        header: &FileHeader,
        tail: u64,
        last_folded: u64,
    ) -> Result<Recovered> {
        Journal::recover_with(io, header, tail, last_folded, false)
    }

    fn recover_with(
        io: &dyn StorageBackend,
        header: &FileHeader,
        tail: u64,
        last_folded: u64,
        thorough: bool,
    ) -> Result<Recovered> {
        let walk = walk(io, header, tail, last_folded)?;
        if let Some(cut) = walk.cut_short {
            return Err(corrupt(format!(
                "the file is {} bytes, but it was preallocated to {} bytes: it was cut short, \
                 and whatever was acknowledged after offset {} is lost ({} frames before it \
                 are intact)",
                cut.len,
                cut.extent,
                cut.len,
                walk.recovered.frames.len()
            )));
        }
        // Reading the whole ring for intact frames beyond the end costs the journal's size.
        // A quick recovery does it only when the end looks damaged: an end at zeros or at
        // an older lap's frame is where appending stopped, and a discarded tail's frames
        // were each checked by `walk`. (An intact frame beyond an end that looks clean
        // means the checkpoint itself is wrong; the thorough recovery of a writing open
        // and `check` find that.)
        let lost = match walk.end {
            End::Lost(lost) => Some(lost),
            End::Clean if !thorough => None,
            End::Clean | End::Garbled => {
                probe_for_lost_frames(io, header, walk.allocated, walk.recovered.last_lsn)?
            }
        };
        if let Some(lost) = lost {
            return Err(corrupt(format!(
                "frame {} at offset {} is intact, but a frame acknowledged before it is damaged \
                 (at offset {})",
                lost.lsn, lost.offset, walk.recovered.head
            )));
        }
        if let Some(tail) = walk.discarded {
            tracing::warn!(
                offset = tail.offset,
                frames = tail.frames,
                bytes = tail.bytes,
                "the journal ends in a frame that does not verify (an append a crash cut short, \
                 or damage): it is discarded"
            );
        }
        Ok(walk.recovered)
    }

    /// What recovery would find, without refusing anything: for `check` and salvage.
    pub(crate) fn inspect(
        io: &dyn StorageBackend,
        header: &FileHeader,
        tail: u64,
        last_folded: u64,
    ) -> Result<Inspection> {
        let walk = walk(io, header, tail, last_folded)?;
        let lost = probe_for_lost_frames(io, header, walk.allocated, walk.recovered.last_lsn)?;
        Ok(Inspection {
            frames: walk.recovered.frames,
            last_lsn: walk.recovered.last_lsn,
            end: walk.recovered.head,
            discarded: walk.discarded,
            cut_short: walk.cut_short,
            intact_after_damage: lost,
        })
    }

    /// Every intact frame of this journal anywhere in the file, in LSN order: what can be
    /// salvaged when the checkpoint saying where to start is unreadable.
    pub(crate) fn scan_all(
        io: &dyn StorageBackend,
        header: &FileHeader,
    ) -> Result<Vec<(u64, Vec<FrameEntry>)>> {
        let allocated = io.len().map_err(Error::from_io)?.min(header.capacity);
        let mut frames = Vec::new();
        for_each_intact_frame(io, header, allocated, 0, |lsn, _, kind, payload| {
            if kind == FrameKind::Batch
                && let Ok(changes) = frame::decode_changes(payload)
            {
                frames.push((lsn, changes));
            }
            false
        })?;
        frames.sort_by_key(|(lsn, _)| *lsn);
        Ok(frames)
    }

    /// Continues an existing journal after recovery (everything in it is folded).
    pub(crate) fn resume(
        io: Box<dyn StorageBackend>,
        header: &FileHeader,
        head: u64,
        last_lsn: u64,
    ) -> Result<Journal> {
        let allocated = io.len().map_err(Error::from_io)?.min(header.capacity);
        let allocated = (allocated / FRAME_ALIGN) * FRAME_ALIGN;
        Ok(Journal {
            io,
            id: header.journal_id,
            capacity: header.capacity,
            allocated,
            // A format-1 header, or one recording more than is there (a journal folded
            // clean, then cut): the next growth writes the true extent.
            recorded_extent: header.extent.unwrap_or(0).min(allocated),
            head,
            next_lsn: last_lsn + 1,
            spans: VecDeque::new(),
            keep_all: false,
            used: 0,
            buf: Vec::new(),
        })
    }

    /// Continues an existing journal whose frames from `tail` to `head` are not folded
    /// into the database file and never will be by this process: they count as used, and
    /// no fold releases anything.
    pub(crate) fn resume_unfolded(
        io: Box<dyn StorageBackend>,
        header: &FileHeader,
        tail: u64,
        head: u64,
        last_lsn: u64,
    ) -> Result<Journal> {
        let mut journal = Journal::resume(io, header, head, last_lsn)?;
        let area = journal.area();
        let tail = if tail >= header.capacity {
            FILE_HEADER_LEN
        } else {
            tail
        };
        // The ring runs from the tail to the head, wrapping at the capacity.
        journal.used = if head >= tail {
            head - tail
        } else {
            area - (tail - head)
        };
        journal.keep_all = true;
        Ok(journal)
    }

    /// This journal's id, recorded with every fold.
    pub(crate) fn id(&self) -> u128 {
        self.id
    }

    /// Where the next frame goes.
    pub(crate) fn head(&self) -> u64 {
        self.head
    }

    /// The last LSN handed out (appended or burnt).
    pub(crate) fn last_lsn(&self) -> u64 {
        self.next_lsn - 1
    }

    /// Bytes of the ring holding unfolded frames.
    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    /// Bytes of the ring.
    pub(crate) fn area(&self) -> u64 {
        self.capacity - FILE_HEADER_LEN
    }

    /// The largest payload a frame may carry: half the ring, so one frame can always be
    /// appended once the ring has been folded empty.
    pub(crate) fn max_payload(&self) -> usize {
        usize::try_from(self.area() / 2).unwrap_or(usize::MAX) - HEADER_LEN
    }

    /// Allocates the file up to `end` (or a whole growth chunk, up to the capacity), records
    /// the new extent in the header. The zeros are synced before the header says they are
    /// there, so the header's extent never exceeds what a crash leaves on disk.
    fn grow_to(&mut self, end: u64) -> std::io::Result<()> {
        let end = end.min(self.capacity);
        if end <= self.allocated {
            return Ok(());
        }
        let target = (end.max(self.allocated + GROWTH_CHUNK)).min(self.capacity);
        self.fill_zeros(target)?;
        self.io.sync_data()?;
        self.recorded_extent = self.allocated;
        // Made durable by the append's own sync.
        self.io.write(
            0,
            &frame::encode_file_header(self.id, self.capacity, self.recorded_extent),
        )
    }

    /// Extends the file to `target` and writes its zeros for real: blocks allocated now are
    /// overwritten in place later, so syncing an append never has to flush new file metadata.
    fn fill_zeros(&mut self, target: u64) -> std::io::Result<()> {
        self.io.set_len(target)?;
        let zeros = vec![0u8; 1024 * 1024];
        while self.allocated < target {
            let n = (target - self.allocated).min(zeros.len() as u64);
            self.io.write(self.allocated, &zeros[..n as usize])?;
            self.allocated += n;
        }
        Ok(())
    }

    /// Appends one frame holding `payload` and, if `sync`, makes it durable. On success the
    /// frame is durable (or written, without `sync`) and will be found by recovery.
    pub(crate) fn append(&mut self, payload: &[u8], sync: bool) -> Result<Appended, AppendError> {
        let size = frame::frame_size(payload.len());
        let start = self.head;
        let (pos, waste) = if start >= self.capacity {
            (FILE_HEADER_LEN, 0)
        } else if start + size > self.capacity {
            (FILE_HEADER_LEN, self.capacity - start)
        } else {
            (start, 0)
        };
        if self.used + waste + size > self.area() {
            return Err(AppendError::Full);
        }
        let first_lsn = self.next_lsn;
        // Burn the LSNs now: whatever happens below, they are never handed out again.
        self.next_lsn += if waste > 0 { 2 } else { 1 };
        let lsn = self.next_lsn - 1;
        let result = (|| -> std::io::Result<()> {
            if waste > 0 {
                self.buf.clear();
                frame::encode_frame(FrameKind::Wrap, self.id, first_lsn, &[], &mut self.buf);
                self.io.write(start, &self.buf)?;
            }
            self.grow_to(pos + size)?;
            self.buf.clear();
            frame::encode_frame(FrameKind::Batch, self.id, lsn, payload, &mut self.buf);
            self.io.write(pos, &self.buf)?;
            if sync {
                self.io.sync_data()?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            return Err(AppendError::Io(e));
        }
        if waste > 0 {
            self.spans.push_back(Span {
                lsn: first_lsn,
                bytes: waste,
                end: FILE_HEADER_LEN,
            });
        }
        self.head = pos + size;
        self.spans.push_back(Span {
            lsn,
            bytes: size,
            end: self.head,
        });
        self.used += waste + size;
        Ok(Appended {
            lsn,
            end: self.head,
        })
    }

    /// Makes every appended frame durable (for appends made without `sync`).
    pub(crate) fn sync(&mut self) -> std::io::Result<()> {
        self.io.sync_data()
    }

    /// Frees the ring up to and including frame `lsn`, which a fold has made durable in the
    /// database. Returns the new tail.
    pub(crate) fn release_through(&mut self, lsn: u64) -> Option<u64> {
        if self.keep_all {
            return None;
        }
        let mut tail = None;
        while let Some(span) = self.spans.front() {
            if span.lsn > lsn {
                break;
            }
            self.used -= span.bytes;
            tail = Some(span.end);
            self.spans.pop_front();
        }
        tail
    }

    /// Releases the file.
    pub(crate) fn close(&self) -> std::io::Result<()> {
        self.io.close()
    }
}

/// The last frame a walk from the tail could not take: an append a crash cut short, or
/// damage. Its frames could not be replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DiscardedTail {
    /// Where the first discarded frame starts.
    pub(crate) offset: u64,
    /// Frames that look like this journal's and newer than the last one replayed, but do
    /// not verify (or run past the end of the file).
    pub(crate) frames: u64,
    /// The bytes they span.
    pub(crate) bytes: u64,
}

/// A journal file shorter than the extent its header records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CutShort {
    pub(crate) len: u64,
    pub(crate) extent: u64,
}

/// An intact frame found beyond the end of the replayable frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LostFrame {
    pub(crate) lsn: u64,
    pub(crate) offset: u64,
}

/// What [`Journal::inspect`] found.
#[derive(Debug)]
pub(crate) struct Inspection {
    /// The frames recovery would replay, in LSN order.
    pub(crate) frames: Vec<(u64, Vec<FrameEntry>)>,
    pub(crate) last_lsn: u64,
    /// Where the replayable frames end.
    pub(crate) end: u64,
    pub(crate) discarded: Option<DiscardedTail>,
    pub(crate) cut_short: Option<CutShort>,
    /// An intact frame newer than the end: an acknowledged frame before it is damaged.
    pub(crate) intact_after_damage: Option<LostFrame>,
}

struct Walk {
    recovered: Recovered,
    allocated: u64,
    discarded: Option<DiscardedTail>,
    cut_short: Option<CutShort>,
    end: End,
}

/// What follows the replayable frames (and the discarded tail, if any).
enum End {
    /// Zeros, an older lap's frame, or the end of the file: where appending stopped.
    Clean,
    /// A frame of the discarded tail verifies: an acknowledged frame before it is damaged.
    Lost(LostFrame),
    /// Bytes that are no frame header: possibly a damaged one, so the whole ring must be
    /// searched for intact frames beyond it.
    Garbled,
}

/// Follows the frames from `tail` while each is intact and newer than the one before, then
/// describes what ends the walk.
fn walk(io: &dyn StorageBackend, header: &FileHeader, tail: u64, last_folded: u64) -> Result<Walk> {
    let capacity = header.capacity;
    let len = io.len().map_err(Error::from_io)?;
    let allocated = len.min(capacity);
    let cut_short = header
        .extent
        .filter(|&extent| len < extent)
        .map(|extent| CutShort { len, extent });
    let normalize = |pos: u64| {
        if pos >= capacity {
            FILE_HEADER_LEN
        } else {
            pos
        }
    };
    if tail < FILE_HEADER_LEN || !tail.is_multiple_of(FRAME_ALIGN) {
        return Err(corrupt(format!(
            "the recorded tail {tail} is not a frame position"
        )));
    }
    let mut pos = normalize(tail);
    let mut last = last_folded;
    let mut frames = Vec::new();
    let mut head_bytes = [0u8; HEADER_LEN];
    let mut payload = Vec::new();
    loop {
        if pos + HEADER_LEN as u64 > allocated {
            break;
        }
        io.read(pos, &mut head_bytes).map_err(Error::from_io)?;
        let Some(h) = frame::parse_header(&head_bytes) else {
            break;
        };
        let size = frame::frame_size(h.payload_len as usize);
        if h.journal_id != header.journal_id || h.lsn <= last || pos + size > allocated {
            break;
        }
        payload.resize(h.payload_len as usize, 0);
        io.read(pos + HEADER_LEN as u64, &mut payload)
            .map_err(Error::from_io)?;
        if !h.verifies(&head_bytes, &payload) {
            break;
        }
        last = h.lsn;
        match h.kind {
            FrameKind::Wrap => pos = FILE_HEADER_LEN,
            FrameKind::Batch => {
                let changes = frame::decode_changes(&payload)
                    .map_err(|e| corrupt(format!("frame {} passes its checksum but {e}", h.lsn)))?;
                frames.push((h.lsn, changes));
                pos = normalize(pos + size);
            }
        }
    }
    let (discarded, end) = discarded_after(io, header, allocated, pos, last)?;
    Ok(Walk {
        recovered: Recovered {
            frames,
            last_lsn: last,
            head: pos,
        },
        allocated,
        discarded,
        cut_short,
        end,
    })
}

/// Counts the frames from `pos` on that carry this journal's id and ever newer LSNs but
/// could not be replayed: each is the tail a crash cut short or a damaged frame. Says what
/// follows them.
fn discarded_after(
    io: &dyn StorageBackend,
    header: &FileHeader,
    allocated: u64,
    mut pos: u64,
    mut last: u64,
) -> Result<(Option<DiscardedTail>, End)> {
    let start = pos;
    let mut frames = 0u64;
    let mut end = pos;
    let mut head_bytes = [0u8; HEADER_LEN];
    let mut payload = Vec::new();
    let state = loop {
        if pos + HEADER_LEN as u64 > allocated {
            break End::Clean;
        }
        io.read(pos, &mut head_bytes).map_err(Error::from_io)?;
        let Some(h) = frame::parse_header(&head_bytes) else {
            break if head_bytes.iter().all(|&b| b == 0) {
                End::Clean
            } else {
                End::Garbled
            };
        };
        // A journal is created empty, so another journal's frame can only be damage.
        if h.journal_id != header.journal_id {
            break End::Garbled;
        }
        if h.lsn <= last {
            break End::Clean;
        }
        let next = pos.saturating_add(frame::frame_size(h.payload_len as usize));
        // The first frame is the one the walk could not take; a later one that verifies
        // was appended after it, so the first was acknowledged and then damaged.
        if frames > 0 && next <= allocated {
            payload.resize(h.payload_len as usize, 0);
            io.read(pos + HEADER_LEN as u64, &mut payload)
                .map_err(Error::from_io)?;
            if h.verifies(&head_bytes, &payload) {
                break End::Lost(LostFrame {
                    lsn: h.lsn,
                    offset: pos,
                });
            }
        }
        frames += 1;
        last = h.lsn;
        end = next.min(allocated);
        if next >= allocated {
            break End::Clean;
        }
        pos = next;
    };
    let discarded = (frames > 0).then(|| DiscardedTail {
        offset: start,
        frames,
        bytes: end - start,
    });
    Ok((discarded, state))
}

/// Calls `visit(lsn, offset, kind, payload)` for every intact frame of this journal newer
/// than `last` anywhere in the first `allocated` bytes, until it returns true.
fn for_each_intact_frame(
    io: &dyn StorageBackend,
    header: &FileHeader,
    allocated: u64,
    last: u64,
    mut visit: impl FnMut(u64, u64, FrameKind, &[u8]) -> bool,
) -> Result<()> {
    const CHUNK: u64 = 1024 * 1024;
    let mut chunk = Vec::new();
    let mut base = FILE_HEADER_LEN;
    while base < allocated {
        let n = (allocated - base).min(CHUNK);
        chunk.resize(n as usize, 0);
        io.read(base, &mut chunk).map_err(Error::from_io)?;
        for off in (0..n).step_by(FRAME_ALIGN as usize) {
            let at = off as usize;
            let Some(h) = chunk.get(at..at + HEADER_LEN).and_then(frame::parse_header) else {
                continue;
            };
            if h.journal_id != header.journal_id || h.lsn <= last {
                continue;
            }
            let pos = base + off;
            let end = pos + frame::frame_size(h.payload_len as usize);
            if end > allocated {
                continue;
            }
            let mut payload = vec![0u8; h.payload_len as usize];
            io.read(pos + HEADER_LEN as u64, &mut payload)
                .map_err(Error::from_io)?;
            if h.verifies(&chunk[at..at + HEADER_LEN], &payload)
                && visit(h.lsn, pos, h.kind, &payload)
            {
                return Ok(());
            }
        }
        base += n;
    }
    Ok(())
}

/// Looks for an intact frame newer than `last` anywhere in the ring. Appends are strictly
/// sequential and each is synced before the next begins, so such a frame can only exist if
/// a frame before it — acknowledged — was damaged after the fact.
fn probe_for_lost_frames(
    io: &dyn StorageBackend,
    header: &FileHeader,
    allocated: u64,
    last: u64,
) -> Result<Option<LostFrame>> {
    let mut lost = None;
    for_each_intact_frame(io, header, allocated, last, |lsn, offset, _, _| {
        lost = Some(LostFrame { lsn, offset });
        true
    })?;
    Ok(lost)
}

#[cfg(test)]
mod tests;
