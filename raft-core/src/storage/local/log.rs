//! The segmented, checksummed log.
//!
//! The log is a sequence of segment files, each named by the index of its
//! first entry and closed once it passes a size limit, so compaction
//! deletes whole files and a torn write can only touch the last one.
//!
//! A segment starts with a 24-byte header (magic `CDSRLOG1`, first index,
//! 4 reserved bytes, CRC-32C of the preceding 20 bytes) and then holds
//! records, one per entry:
//!
//! ```text
//! crc u32 | len u32 | index u64 | term u64 | kind u8 | data (len - 17 bytes)
//! ```
//!
//! all little-endian, `crc` the CRC-32C of everything after it (length
//! included, so a damaged length cannot pass). `kind` holds the entry kind
//! (0 normal, 1 no-op, 2 configuration change) in its low bits, and in bit
//! 7 the *sync mark*: set on the first record written after a sync. A
//! batch of records is written and then synced once (`fdatasync`).
//!
//! On open every record is checked. A bad record in the last segment is a
//! write cut short by a crash unless an intact record with the sync mark
//! follows it: without one, the bad record lies in the last stretch
//! written since a sync, which the file system may have persisted in any
//! order (a hole of unwritten pages with intact records after it is
//! normal), and nothing in it was acknowledged. It is truncated there and
//! reported. Anything else (a bad record followed by a record of a later
//! sync, a bad record in an earlier segment, an intact record with the
//! wrong index, a gap between segments) is corruption: the open fails
//! naming the file and the byte offset. Nothing is skipped silently.
//! (Damage to the last synced batch itself cannot be told from a torn
//! write; it is cut off and reported like one.)
//!
//! Where crashes could leave a state that looks like corruption, the
//! writes are ordered so they cannot: a segment is synced before the next
//! one is created; a new segment gets its header under a temporary name and
//! is renamed into place; a suffix truncation is synced before new records
//! are written over it, and the segments after it are removed durably
//! first; a reset records its intent before it deletes anything.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::core::{checksum, Entry, EntryKind};
use crate::storage::fs::{Fs, FsFile, OpenMode};
use crate::storage::host_sync::{HostSync, PendingSync};
use crate::storage::traits::{check_append, check_range};
use crate::storage::{LogStore, RecoveryReport, StorageError, TornTail};

use super::codec::{self, put_u32, put_u64, Reader};
use super::{read_small, remove_leftover, sync_dir, write_atomic, TMP_SUFFIX};

/// Identifies a segment file and its layout version.
const SEGMENT_MAGIC: [u8; 8] = *b"CDSRLOG1";
/// Identifies the compaction point file and its layout version.
const COMPACTED_MAGIC: [u8; 8] = *b"CDSRCMP1";
/// The compaction point file in the log directory.
const COMPACTED_FILE: &str = "compacted";
/// Segment file names end with this.
const SEGMENT_SUFFIX: &str = ".seg";

/// Bytes of a segment header.
pub const SEGMENT_HEADER_BYTES: u64 = 24;
/// Bytes of a record before its payload: CRC and length.
pub const RECORD_HEADER_BYTES: u64 = 8;
/// Bytes of a record's payload before the entry data: index, term, kind.
const PAYLOAD_FIXED_BYTES: u64 = 17;
/// Bit of the kind byte marking the first record written after a sync.
const SYNC_MARK: u8 = 0x80;
/// Largest entry data accepted; also bounds the length field read back.
pub const MAX_ENTRY_DATA_BYTES: u64 = 64 << 20;
/// Default size at which a segment is closed.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// Largest segment size allowed in the options.
pub const MAX_SEGMENT_BYTES: u64 = 512 << 20;
/// Largest segment file read on open: a full segment plus its last record.
const MAX_SEGMENT_FILE_BYTES: u64 =
    MAX_SEGMENT_BYTES + RECORD_HEADER_BYTES + PAYLOAD_FIXED_BYTES + MAX_ENTRY_DATA_BYTES;
/// Records are encoded into a buffer written out once it holds this many
/// bytes (or at the end of the batch).
pub const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// Bytes a record for an entry with `data_len` bytes of data takes.
pub fn record_len(data_len: usize) -> u64 {
    RECORD_HEADER_BYTES + PAYLOAD_FIXED_BYTES + data_len as u64
}

/// The file name of the segment starting at `first_index`.
pub fn segment_file_name(first_index: u64) -> String {
    format!("{first_index:020}{SEGMENT_SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn kind_code(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::Normal => 0,
        EntryKind::Noop => 1,
        EntryKind::ConfChange => 2,
    }
}

fn kind_of(code: u8) -> Option<EntryKind> {
    match code {
        0 => Some(EntryKind::Normal),
        1 => Some(EntryKind::Noop),
        2 => Some(EntryKind::ConfChange),
        _ => None,
    }
}

fn encode_header(first_index: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(SEGMENT_HEADER_BYTES as usize);
    h.extend_from_slice(&SEGMENT_MAGIC);
    put_u64(&mut h, first_index);
    put_u32(&mut h, 0);
    let crc = checksum(&h);
    put_u32(&mut h, crc);
    h
}

/// Appends the record of `e` to `out`; `sync_mark` when it is the first
/// record written since the last sync.
fn encode_record(e: &Entry, sync_mark: bool, out: &mut Vec<u8>) {
    let start = out.len();
    put_u32(out, 0); // the CRC, filled in below
    put_u32(out, (PAYLOAD_FIXED_BYTES + e.data.len() as u64) as u32);
    put_u64(out, e.index);
    put_u64(out, e.term);
    out.push(kind_code(e.kind) | if sync_mark { SYNC_MARK } else { 0 });
    out.extend_from_slice(&e.data);
    let crc = checksum(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// A record whose checksum matched.
struct Record {
    index: u64,
    term: u64,
    /// The kind byte without the sync mark.
    kind: u8,
    sync_mark: bool,
    /// Where the data lies in the buffer parsed.
    data: std::ops::Range<usize>,
    /// Bytes of the whole record.
    len: u64,
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

/// The record at `pos` of `buf`, or why there is no intact one there.
fn parse_record(buf: &[u8], pos: usize) -> Result<Record, String> {
    let left = buf.len().saturating_sub(pos);
    let (Some(crc), Some(len)) = (le_u32(buf, pos), le_u32(buf, pos + 4)) else {
        return Err(format!("record header cut short ({left} bytes)"));
    };
    let len = len as u64;
    if !(PAYLOAD_FIXED_BYTES..=PAYLOAD_FIXED_BYTES + MAX_ENTRY_DATA_BYTES).contains(&len) {
        return Err(format!("implausible record length {len}"));
    }
    let end = pos + (RECORD_HEADER_BYTES + len) as usize;
    let Some(covered) = buf.get(pos + 4..end) else {
        return Err(format!(
            "record cut short: {len} bytes announced, {} present",
            left.saturating_sub(RECORD_HEADER_BYTES as usize)
        ));
    };
    if checksum(covered) != crc {
        return Err("record checksum mismatch".into());
    }
    let p = pos + RECORD_HEADER_BYTES as usize;
    // The checksum matched, so these reads are within `covered`.
    let (Some(index), Some(term), Some(&kind)) =
        (le_u64(buf, p), le_u64(buf, p + 8), buf.get(p + 16))
    else {
        return Err("record payload cut short".into());
    };
    Ok(Record {
        index,
        term,
        kind: kind & !SYNC_MARK,
        sync_mark: kind & SYNC_MARK != 0,
        data: p + PAYLOAD_FIXED_BYTES as usize..end,
        len: RECORD_HEADER_BYTES + len,
    })
}

/// The offset of an intact record with the sync mark after the bad one at
/// `bad`, holding an index at or after `expected`: if there is one, the bad
/// record was synced before it, so it is not a torn write but damage.
fn find_later_sync(buf: &[u8], bad: usize, expected: u64) -> Option<usize> {
    let min = (RECORD_HEADER_BYTES + PAYLOAD_FIXED_BYTES) as usize;
    // Indexes a record in the rest of the buffer could plausibly hold; the
    // cheap checks come first so the scan stays linear in practice.
    let max_index = expected.saturating_add((buf.len() - bad) as u64 / min as u64);
    let mut p = bad + 1;
    while p + min <= buf.len() {
        let plausible = le_u64(buf, p + RECORD_HEADER_BYTES as usize)
            .is_some_and(|i| (expected..=max_index).contains(&i));
        match parse_record(buf, p) {
            Ok(rec) if plausible && rec.sync_mark => return Some(p),
            Ok(rec) if plausible => p += rec.len as usize,
            _ => p += 1,
        }
    }
    None
}

/// How many records began in `buf[pos..]`, following length fields while
/// they are plausible.
fn records_started(buf: &[u8], mut pos: usize) -> u64 {
    let mut n = 0;
    while pos < buf.len() {
        n += 1;
        match le_u32(buf, pos + 4).map(u64::from) {
            Some(len)
                if (PAYLOAD_FIXED_BYTES..=PAYLOAD_FIXED_BYTES + MAX_ENTRY_DATA_BYTES)
                    .contains(&len) =>
            {
                pos += (RECORD_HEADER_BYTES + len) as usize
            }
            _ => break,
        }
    }
    n
}

/// One segment file and the position of each of its records.
#[derive(Debug)]
struct Segment {
    first_index: u64,
    path: PathBuf,
    /// Byte offset of each record; record `i` holds `first_index + i`.
    offsets: Vec<u64>,
    terms: Vec<u64>,
    /// Bytes of header and intact records.
    end: u64,
}

impl Segment {
    fn last_index(&self) -> u64 {
        self.first_index + self.offsets.len() as u64 - 1
    }

    fn record_end(&self, i: usize) -> u64 {
        self.offsets.get(i + 1).copied().unwrap_or(self.end)
    }
}

/// What checking one segment file found.
enum Scanned {
    Segment(Segment, Option<TornTail>),
    /// The last segment's header itself is incomplete.
    TornHeader(TornTail),
}

/// Checks the segment `bytes` read from `path`; see the module docs for
/// what is torn and what is corrupt.
fn scan_segment(
    path: &Path,
    name_first: u64,
    bytes: &[u8],
    is_last: bool,
) -> Result<Scanned, StorageError> {
    let corrupt = |offset: u64, reason: String| StorageError::Corrupt {
        file: path.to_path_buf(),
        offset,
        reason,
    };
    let len = bytes.len() as u64;
    if len < SEGMENT_HEADER_BYTES {
        if !is_last {
            return Err(corrupt(0, "segment header cut short".into()));
        }
        return Ok(Scanned::TornHeader(TornTail {
            file: path.to_path_buf(),
            offset: 0,
            dropped_bytes: len,
            dropped_records: 0,
            first_lost_index: name_first,
        }));
    }
    let header = |r: &mut Reader<'_>| -> Result<(Vec<u8>, u64, u32, u32), codec::DecodeError> {
        Ok((r.bytes(8)?.to_vec(), r.u64()?, r.u32()?, r.u32()?))
    };
    let mut r = Reader::new(&bytes[..SEGMENT_HEADER_BYTES as usize], 0);
    let (magic, first, _reserved, crc) = header(&mut r).map_err(|e| e.in_file(path))?;
    if magic != SEGMENT_MAGIC {
        return Err(corrupt(0, "not a log segment (wrong magic)".into()));
    }
    if checksum(&bytes[..20]) != crc {
        return Err(corrupt(20, "segment header checksum mismatch".into()));
    }
    if first == 0 {
        return Err(corrupt(8, "first index 0 (indexes start at 1)".into()));
    }
    if first != name_first {
        return Err(corrupt(
            8,
            format!("header says first index {first}, the file name {name_first}"),
        ));
    }
    let mut seg = Segment {
        first_index: first,
        path: path.to_path_buf(),
        offsets: Vec::new(),
        terms: Vec::new(),
        end: SEGMENT_HEADER_BYTES,
    };
    let mut pos = SEGMENT_HEADER_BYTES as usize;
    let mut expected = first;
    while pos < bytes.len() {
        match parse_record(bytes, pos) {
            Ok(rec) if rec.index != expected => {
                return Err(corrupt(
                    pos as u64,
                    format!(
                        "record holds index {} where {expected} was expected",
                        rec.index
                    ),
                ));
            }
            Ok(rec) if kind_of(rec.kind).is_none() => {
                return Err(corrupt(
                    pos as u64,
                    format!("unknown entry kind {}", rec.kind),
                ));
            }
            Ok(rec) => {
                seg.offsets.push(pos as u64);
                seg.terms.push(rec.term);
                pos += rec.len as usize;
                expected += 1;
            }
            Err(reason) => {
                if !is_last {
                    return Err(corrupt(pos as u64, reason));
                }
                if let Some(at) = find_later_sync(bytes, pos, expected) {
                    return Err(corrupt(
                        pos as u64,
                        format!(
                            "{reason}, and an intact record of a later sync follows at byte {at}"
                        ),
                    ));
                }
                seg.end = pos as u64;
                let torn = TornTail {
                    file: path.to_path_buf(),
                    offset: pos as u64,
                    dropped_bytes: len - pos as u64,
                    dropped_records: records_started(bytes, pos),
                    first_lost_index: expected,
                };
                return Ok(Scanned::Segment(seg, Some(torn)));
            }
        }
    }
    seg.end = pos as u64;
    Ok(Scanned::Segment(seg, None))
}

/// The local [`LogStore`]: segment files in one directory.
#[derive(Debug)]
pub struct SegmentedLog {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    segment_bytes: u64,
    /// The compaction point and its term.
    compacted: u64,
    compacted_term: u64,
    /// Contiguous: each starts right after the previous one's last entry.
    /// Only the last is written to.
    segments: Vec<Segment>,
    /// The last segment, open for writing and positioned at its end.
    active: Option<Box<dyn FsFile>>,
    /// Whether the active segment holds writes not yet synced.
    dirty: bool,
    /// Set by a failed write or sync: memory and disk may differ.
    poison: super::Poison,
    /// The host's shared sync, when this log is one group's of many:
    /// syncing then makes the whole disk durable, once for every group
    /// that wrote meanwhile (`storage::host_sync`).
    host_sync: Option<Arc<HostSync>>,
}

impl SegmentedLog {
    /// Syncs through the host's shared sync from now on (see
    /// `storage::host_sync`); `None`: each sync is this log's own.
    pub fn set_host_sync(&mut self, h: Option<Arc<HostSync>>) {
        self.host_sync = h;
    }

    /// Opens (creating if needed) the log in `dir` on the real disk,
    /// checking every record; repairs go into `report`.
    #[cfg(feature = "local")]
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        report: &mut RecoveryReport,
    ) -> Result<SegmentedLog, StorageError> {
        SegmentedLog::open_with(
            Arc::new(crate::storage::fs::RealFs),
            dir,
            segment_bytes,
            report,
        )
    }

    /// [`SegmentedLog::open`] on the file system `fs`.
    pub fn open_with(
        fs: Arc<dyn Fs>,
        dir: &Path,
        segment_bytes: u64,
        report: &mut RecoveryReport,
    ) -> Result<SegmentedLog, StorageError> {
        if segment_bytes > MAX_SEGMENT_BYTES {
            return Err(StorageError::Invalid(format!(
                "segment size {segment_bytes} is above the limit {MAX_SEGMENT_BYTES}"
            )));
        }
        let shared = fs;
        let fs: &dyn Fs = &*shared;
        super::create_dir(fs, dir)?;
        let mut names = Vec::new();
        let listing = fs
            .read_dir(dir)
            .map_err(|e| StorageError::io("list", dir, e))?;
        for name in listing {
            if name.ends_with(TMP_SUFFIX) {
                remove_leftover(fs, dir.join(&name), report)?;
            } else if let Some(first) = parse_segment_name(&name) {
                names.push((first, dir.join(&name)));
            }
        }
        names.sort();

        let (compacted, compacted_term, reset_pending) = read_compacted(fs, dir)?;
        if reset_pending {
            // A reset recorded its intent and was cut short: finish it.
            for (_, path) in names.drain(..) {
                remove_leftover(fs, path, report)?;
            }
            sync_dir(fs, dir)?;
            write_compacted(fs, dir, compacted, compacted_term, false)?;
        }

        let mut segments: Vec<Segment> = Vec::with_capacity(names.len());
        let count = names.len();
        for (k, (first, path)) in names.into_iter().enumerate() {
            let bytes = read_segment(fs, &path)?;
            match scan_segment(&path, first, &bytes, k + 1 == count)? {
                Scanned::TornHeader(torn) => {
                    fs.remove_file(&path)
                        .map_err(|e| StorageError::io("remove", &path, e))?;
                    sync_dir(fs, dir)?;
                    report.torn_tail = Some(torn);
                }
                Scanned::Segment(seg, torn) => {
                    if let Some(torn) = torn {
                        let mut f = fs
                            .open(&path, OpenMode::Write)
                            .map_err(|e| StorageError::io("open", &path, e))?;
                        f.set_len(torn.offset)
                            .and_then(|()| f.sync_all())
                            .map_err(|e| StorageError::io("truncate", &path, e))?;
                        report.torn_tail = Some(torn);
                    }
                    segments.push(seg);
                }
            }
        }

        // Segments wholly at or below the compaction point are leftovers of
        // a compaction whose removals a crash undid.
        let keep_from = segments
            .iter()
            .position(|s| s.last_index() > compacted)
            .unwrap_or(segments.len());
        for seg in segments.drain(..keep_from) {
            remove_leftover(fs, seg.path, report)?;
        }
        for pair in segments.windows(2) {
            if pair[1].first_index != pair[0].last_index() + 1 {
                return Err(StorageError::Corrupt {
                    file: pair[1].path.clone(),
                    offset: 0,
                    reason: format!(
                        "index gap: the segment starts at {}, the previous one ends at {}",
                        pair[1].first_index,
                        pair[0].last_index()
                    ),
                });
            }
        }
        if let Some(first) = segments.first() {
            if first.first_index > compacted + 1 {
                return Err(StorageError::Corrupt {
                    file: first.path.clone(),
                    offset: 0,
                    reason: format!(
                        "index gap: the log starts at {} but is compacted only to {compacted}",
                        first.first_index
                    ),
                });
            }
        }
        let mut log = SegmentedLog {
            fs: shared.clone(),
            dir: dir.to_path_buf(),
            segment_bytes,
            compacted,
            compacted_term,
            segments,
            active: None,
            dirty: false,
            poison: super::Poison::default(),
            host_sync: None,
        };
        if let Some(seg) = log
            .segments
            .iter()
            .find(|s| s.first_index <= compacted && compacted <= s.last_index() && compacted > 0)
        {
            let held = seg.terms[(compacted - seg.first_index) as usize];
            if held != compacted_term {
                return Err(StorageError::Inconsistent(format!(
                    "the compaction point {compacted} has term {compacted_term} but {} holds \
                     it with term {held}",
                    seg.path.display()
                )));
            }
        }
        if !log.segments.is_empty() {
            log.open_active()?;
            // A process that died between a write and its sync left the
            // write in the page cache, where this one reads it: it must be
            // durable before any of it is reported as held.
            log.dirty = true;
            log.sync_active()?;
        }
        // Likewise the renames and removals such a process did not sync.
        sync_dir(fs, dir)?;
        Ok(log)
    }

    /// Opens the last segment for writing, positioned at its end.
    fn open_active(&mut self) -> Result<(), StorageError> {
        self.active = None;
        let Some(seg) = self.segments.last() else {
            return Ok(());
        };
        let mut f = self
            .fs
            .open(&seg.path, OpenMode::Write)
            .map_err(|e| StorageError::io("open", &seg.path, e))?;
        f.seek(seg.end)
            .map_err(|e| StorageError::io("seek", &seg.path, e))?;
        self.active = Some(f);
        Ok(())
    }

    /// Runs a mutation; an error that may have left memory and disk apart
    /// poisons the store.
    fn guarded<T>(
        &mut self,
        f: impl FnOnce(&mut SegmentedLog) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        self.poison.check()?;
        let r = f(self);
        self.poison.note(&r);
        r
    }

    /// The position in `segments` of the segment holding `index`.
    fn segment_of(&self, index: u64) -> Result<usize, StorageError> {
        self.segments
            .partition_point(|s| s.first_index <= index)
            .checked_sub(1)
            .filter(|&k| index <= self.segments[k].last_index())
            .ok_or(StorageError::Unavailable {
                lo: index,
                hi: index + 1,
            })
    }

    /// Drops every entry from `index` on: later segments are removed
    /// durably, then the segment holding `index` is cut and synced, so no
    /// stale record can reappear behind new ones after a crash.
    fn truncate_from(&mut self, index: u64) -> Result<(), StorageError> {
        let k = self.segment_of(index)?;
        let later: Vec<Segment> = self.segments.drain(k + 1..).collect();
        if !later.is_empty() {
            self.active = None;
            for seg in later {
                self.fs
                    .remove_file(&seg.path)
                    .map_err(|e| StorageError::io("remove", &seg.path, e))?;
            }
            sync_dir(&*self.fs, &self.dir)?;
        }
        if self.active.is_none() {
            self.open_active()?;
        }
        let seg = &mut self.segments[k];
        let i = (index - seg.first_index) as usize;
        let cut = seg.offsets[i];
        let Some(f) = self.active.as_mut() else {
            return Err(StorageError::Failed("no active segment".into()));
        };
        f.set_len(cut)
            .and_then(|()| f.sync_data())
            .and_then(|()| f.seek(cut))
            .map_err(|e| StorageError::io("truncate", &seg.path, e))?;
        seg.offsets.truncate(i);
        seg.terms.truncate(i);
        seg.end = cut;
        self.dirty = false;
        Ok(())
    }

    /// Starts the segment whose first entry will be `first_index`. The
    /// current one is synced first: only the last segment may be torn.
    fn create_segment(&mut self, first_index: u64) -> Result<(), StorageError> {
        self.sync_active()?;
        let name = segment_file_name(first_index);
        let path = self.dir.join(&name);
        write_atomic(&*self.fs, &self.dir, &name, &encode_header(first_index))?;
        self.segments.push(Segment {
            first_index,
            path,
            offsets: Vec::new(),
            terms: Vec::new(),
            end: SEGMENT_HEADER_BYTES,
        });
        self.open_active()
    }

    /// Writes `buf` (the records at `pending`) to the active segment.
    fn flush(
        &mut self,
        buf: &mut Vec<u8>,
        pending: &mut Vec<(u64, u64)>,
    ) -> Result<(), StorageError> {
        if buf.is_empty() {
            return Ok(());
        }
        let (Some(f), Some(seg)) = (self.active.as_mut(), self.segments.last_mut()) else {
            return Err(StorageError::Failed("no active segment".into()));
        };
        f.write_all(buf)
            .map_err(|e| StorageError::io("write", &seg.path, e))?;
        for (offset, term) in pending.drain(..) {
            seg.offsets.push(offset);
            seg.terms.push(term);
        }
        seg.end += buf.len() as u64;
        buf.clear();
        self.dirty = true;
        Ok(())
    }

    fn append_records(&mut self, ents: &[Entry]) -> Result<(), StorageError> {
        let mut buf = Vec::new();
        // (offset, term) of the records in `buf`, not yet in the segment.
        let mut pending: Vec<(u64, u64)> = Vec::new();
        for e in ents {
            let roll = match self.segments.last() {
                None => true,
                Some(seg) => {
                    seg.end + buf.len() as u64 >= self.segment_bytes
                        && !(seg.offsets.is_empty() && pending.is_empty())
                }
            };
            if roll {
                self.flush(&mut buf, &mut pending)?;
                self.create_segment(e.index)?;
            }
            // Nothing written since the last sync: this record opens a new
            // stretch that a crash may tear.
            let sync_mark = !self.dirty && pending.is_empty();
            let end = self.segments.last().map_or(0, |s| s.end);
            pending.push((end + buf.len() as u64, e.term));
            encode_record(e, sync_mark, &mut buf);
            if buf.len() >= WRITE_BUFFER_BYTES {
                self.flush(&mut buf, &mut pending)?;
            }
        }
        self.flush(&mut buf, &mut pending)
    }

    fn sync_active(&mut self) -> Result<(), StorageError> {
        if !self.dirty {
            return Ok(());
        }
        if let (Some(f), Some(seg)) = (self.active.as_mut(), self.segments.last()) {
            match &self.host_sync {
                Some(h) => h.sync(),
                None => f.sync_data(),
            }
            .map_err(|e| StorageError::io("sync", &seg.path, e))?;
        }
        self.dirty = false;
        Ok(())
    }

    /// Reads records `a..b` of segment `k` and checks each again (the disk
    /// may have changed since it was opened).
    fn read_records(
        &self,
        k: usize,
        a: usize,
        b: usize,
        out: &mut Vec<Entry>,
    ) -> Result<(), StorageError> {
        let seg = &self.segments[k];
        let start = seg.offsets[a];
        let end = seg.record_end(b - 1);
        let mut buf = vec![0u8; (end - start) as usize];
        self.fs
            .read_exact_at(&seg.path, start, &mut buf)
            .map_err(|e| StorageError::io("read", &seg.path, e))?;
        // The entries share this one read buffer (no copy per entry).
        let buf = crate::core::Bytes::from(buf);
        let mut pos = 0;
        for i in a..b {
            let at = seg.offsets[i];
            let corrupt = |reason: String| StorageError::Corrupt {
                file: seg.path.clone(),
                offset: at,
                reason,
            };
            let rec = parse_record(&buf, pos).map_err(corrupt)?;
            let index = seg.first_index + i as u64;
            if rec.index != index || rec.term != seg.terms[i] {
                return Err(corrupt(format!(
                    "record holds ({}, {}) where ({index}, {}) was written",
                    rec.index, rec.term, seg.terms[i]
                )));
            }
            let kind = kind_of(rec.kind)
                .ok_or_else(|| corrupt(format!("unknown entry kind {}", rec.kind)))?;
            out.push(Entry {
                index,
                term: rec.term,
                kind,
                data: buf.slice(rec.data.clone()),
            });
            pos += rec.len as usize;
        }
        Ok(())
    }
}

fn read_segment(fs: &dyn Fs, path: &Path) -> Result<Vec<u8>, StorageError> {
    let len = fs
        .metadata(path)
        .map_err(|e| StorageError::io("stat", path, e))?
        .len;
    if len > MAX_SEGMENT_FILE_BYTES {
        return Err(StorageError::Corrupt {
            file: path.to_path_buf(),
            offset: MAX_SEGMENT_FILE_BYTES,
            reason: format!("segment of {len} bytes, more than any segment holds"),
        });
    }
    fs.read(path).map_err(|e| StorageError::io("read", path, e))
}

/// The compaction point, its term, and whether a reset to it is pending.
fn read_compacted(fs: &dyn Fs, dir: &Path) -> Result<(u64, u64, bool), StorageError> {
    let path = dir.join(COMPACTED_FILE);
    let Some(bytes) = read_small(fs, &path)? else {
        return Ok((0, 0, false));
    };
    let decode = || {
        let (body, at) = codec::unframe(&COMPACTED_MAGIC, &bytes)?;
        let mut r = Reader::new(body, at);
        let index = r.u64()?;
        let term = r.u64()?;
        let flag_at = r.offset();
        let pending = match r.u8()? {
            0 => false,
            1 => true,
            v => {
                return Err(codec::DecodeError {
                    offset: flag_at,
                    reason: format!("bad reset flag {v}"),
                })
            }
        };
        r.finish()?;
        Ok((index, term, pending))
    };
    decode().map_err(|e| e.in_file(&path))
}

fn write_compacted(
    fs: &dyn Fs,
    dir: &Path,
    index: u64,
    term: u64,
    reset_pending: bool,
) -> Result<(), StorageError> {
    let mut body = Vec::new();
    put_u64(&mut body, index);
    put_u64(&mut body, term);
    body.push(u8::from(reset_pending));
    write_atomic(
        fs,
        dir,
        COMPACTED_FILE,
        &codec::frame(&COMPACTED_MAGIC, &body),
    )
}

impl LogStore for SegmentedLog {
    fn first_index(&self) -> u64 {
        self.compacted + 1
    }

    fn last_index(&self) -> u64 {
        self.segments
            .last()
            .map_or(self.compacted, |s| s.last_index().max(self.compacted))
    }

    fn term(&self, index: u64) -> Result<u64, StorageError> {
        self.poison.check()?;
        if index == self.compacted {
            return Ok(self.compacted_term);
        }
        if index < self.compacted || index > self.last_index() {
            return Err(StorageError::Unavailable {
                lo: index,
                hi: index + 1,
            });
        }
        let seg = &self.segments[self.segment_of(index)?];
        Ok(seg.terms[(index - seg.first_index) as usize])
    }

    fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        self.poison.check()?;
        check_range(self.first_index(), self.last_index(), lo, hi)?;
        let mut out = Vec::new();
        let mut bytes = 0u64;
        let mut index = lo;
        while index < hi {
            let k = self.segment_of(index)?;
            let seg = &self.segments[k];
            let a = (index - seg.first_index) as usize;
            let stop = (hi.min(seg.last_index() + 1) - seg.first_index) as usize;
            // Count what fits from the record lengths, then read it at once.
            let mut b = a;
            let mut full = false;
            while b < stop {
                let data =
                    seg.record_end(b) - seg.offsets[b] - RECORD_HEADER_BYTES - PAYLOAD_FIXED_BYTES;
                bytes += 24 + data; // `Entry::size`
                if out.len() + (b - a) > 0 && bytes > max_bytes {
                    full = true;
                    break;
                }
                b += 1;
            }
            if b > a {
                self.read_records(k, a, b, &mut out)?;
            }
            index += (b - a) as u64;
            if full {
                break;
            }
        }
        Ok(out)
    }

    fn append(&mut self, ents: &[Entry]) -> Result<usize, StorageError> {
        self.poison.check()?;
        check_append(self.first_index(), self.last_index(), ents)?;
        if let Some(e) = ents
            .iter()
            .find(|e| e.data.len() as u64 > MAX_ENTRY_DATA_BYTES)
        {
            return Err(StorageError::Invalid(format!(
                "entry {} holds {} bytes, above the limit {MAX_ENTRY_DATA_BYTES}",
                e.index,
                e.data.len()
            )));
        }
        let Some(head) = ents.first() else {
            return Ok(0);
        };
        let dropped = (self.last_index() + 1 - head.index) as usize;
        self.guarded(|log| {
            if dropped > 0 {
                log.truncate_from(head.index)?;
            }
            log.append_records(ents)
        })?;
        Ok(dropped)
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.guarded(|log| log.sync_active())
    }

    fn begin_shared_sync(&mut self) -> Result<Option<PendingSync>, StorageError> {
        self.poison.check()?;
        match &self.host_sync {
            Some(h) if self.dirty && self.active.is_some() => Ok(Some(h.request())),
            _ => Ok(None),
        }
    }

    fn end_shared_sync(&mut self, outcome: std::io::Result<()>) -> Result<(), StorageError> {
        self.guarded(|log| {
            let path = log.segments.last().map(|s| s.path.clone());
            outcome.map_err(|e| StorageError::io("sync", path.unwrap_or_default(), e))?;
            // Nothing was appended since the request (the caller's
            // promise), so everything written is now durable.
            log.dirty = false;
            Ok(())
        })
    }

    fn append_may_block(&self, ents: &[Entry]) -> bool {
        let Some(head) = ents.first() else {
            return false;
        };
        let bytes: u64 = ents.iter().map(|e| record_len(e.data.len())).sum();
        self.host_sync.is_none()
            // A truncation cuts and syncs the segment.
            || head.index <= self.last_index()
            // A new segment syncs the current one and the directory.
            || self
                .segments
                .last()
                .is_none_or(|seg| seg.end + bytes >= self.segment_bytes)
            || self.active.is_none()
    }

    fn compact(&mut self, upto: u64) -> Result<usize, StorageError> {
        self.poison.check()?;
        if upto <= self.compacted {
            return Ok(0);
        }
        if upto > self.last_index() {
            return Err(StorageError::Invalid(format!(
                "compaction to {upto} is past the last entry ({})",
                self.last_index()
            )));
        }
        let term = self.term(upto)?;
        self.guarded(|log| {
            write_compacted(&*log.fs, &log.dir, upto, term, false)?;
            let dropped = (upto - log.compacted) as usize;
            log.compacted = upto;
            log.compacted_term = term;
            // Whole segments at or below the point go (the next append
            // starts a new one if the last went). No directory sync: a
            // removal a crash undoes is redone on open, since the segment
            // lies below the compaction point.
            let n = log
                .segments
                .iter()
                .take_while(|s| s.last_index() <= upto)
                .count();
            if n == log.segments.len() {
                log.active = None;
                log.dirty = false;
            }
            for seg in log.segments.drain(..n) {
                log.fs
                    .remove_file(&seg.path)
                    .map_err(|e| StorageError::io("remove", &seg.path, e))?;
            }
            Ok(dropped)
        })
    }

    fn reset(&mut self, index: u64, term: u64) -> Result<(), StorageError> {
        self.guarded(|log| {
            // The intent first: a crash from here on ends the reset on open.
            write_compacted(&*log.fs, &log.dir, index, term, true)?;
            log.active = None;
            log.dirty = false;
            for seg in log.segments.drain(..) {
                log.fs
                    .remove_file(&seg.path)
                    .map_err(|e| StorageError::io("remove", &seg.path, e))?;
            }
            sync_dir(&*log.fs, &log.dir)?;
            write_compacted(&*log.fs, &log.dir, index, term, false)?;
            log.compacted = index;
            log.compacted_term = term;
            Ok(())
        })
    }
}
