//! Byte layouts shared by the local stores: little-endian integers, the
//! membership and snapshot metas, and the checksummed "small file" frame
//! used for the meta, the compaction point and snapshot metas.
//!
//! Decoding never trusts a length read from disk: every count is checked
//! against a named limit and against the bytes actually present, and every
//! failure carries the byte offset where it was found, so the error that
//! reaches the operator names the file and the offset.

use std::path::Path;

use crate::core::{checksum, ConfState, HardState, SnapshotFile, SnapshotMeta};
use crate::storage::StorageError;

/// Most members a decoded membership list may hold.
pub const MAX_MEMBERS: u32 = 1 << 16;
/// Most files a decoded snapshot meta may list.
pub const MAX_SNAPSHOT_FILES: u32 = 1 << 12;
/// Longest snapshot file name accepted, in bytes.
pub const MAX_FILE_NAME_BYTES: u32 = 1 << 12;
/// Largest small file (meta, compaction point, snapshot meta) read.
pub const MAX_SMALL_FILE_BYTES: u64 = 16 << 20;

/// Bytes of a small file's frame around its body: magic, body length, CRC.
const FRAME_BYTES: usize = 8 + 4 + 4;

/// A decoding failure at byte `offset` of the file being decoded.
#[derive(Debug)]
pub struct DecodeError {
    pub offset: u64,
    pub reason: String,
}

impl DecodeError {
    /// The error that names `file`.
    pub fn in_file(self, file: &Path) -> StorageError {
        StorageError::Corrupt {
            file: file.to_path_buf(),
            offset: self.offset,
            reason: self.reason,
        }
    }
}

/// Reads integers and byte strings from a slice, reporting where it failed.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf[0]` in the file, so errors name file offsets.
    base: u64,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`, which starts at byte `base` of its file.
    pub fn new(buf: &'a [u8], base: u64) -> Reader<'a> {
        Reader { buf, pos: 0, base }
    }

    /// The file offset of the next byte.
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// An error at the current position.
    pub fn error(&self, reason: impl Into<String>) -> DecodeError {
        DecodeError {
            offset: self.offset(),
            reason: reason.into(),
        }
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.error(format!("{n} bytes needed, {} left", self.remaining())))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// The next byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }

    /// The next little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The next little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A count, checked against `limit` and against the bytes left (each
    /// item takes at least `item_bytes`), so a corrupt count cannot make the
    /// decoder allocate.
    pub fn count(&mut self, limit: u32, item_bytes: usize) -> Result<usize, DecodeError> {
        let at = self.offset();
        let n = self.u32()?;
        if n > limit || (n as usize).saturating_mul(item_bytes) > self.remaining() {
            return Err(DecodeError {
                offset: at,
                reason: format!("implausible count {n}"),
            });
        }
        Ok(n as usize)
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.remaining() != 0 {
            return Err(self.error(format!("{} unexpected trailing bytes", self.remaining())));
        }
        Ok(())
    }
}

/// Appends `v` little-endian.
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends `v` little-endian.
pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_ids(out: &mut Vec<u8>, ids: &[u64]) {
    put_u32(out, ids.len() as u32);
    for &id in ids {
        put_u64(out, id);
    }
}

fn ids(r: &mut Reader<'_>) -> Result<Vec<u64>, DecodeError> {
    let n = r.count(MAX_MEMBERS, 8)?;
    (0..n).map(|_| r.u64()).collect()
}

/// Appends `hs`: term, vote flag and vote, commit.
pub fn put_hard_state(out: &mut Vec<u8>, hs: &HardState) {
    put_u64(out, hs.term);
    match hs.vote {
        Some(v) => {
            out.push(1);
            put_u64(out, v);
        }
        None => {
            out.push(0);
            put_u64(out, 0);
        }
    }
    put_u64(out, hs.commit);
}

/// Reads what [`put_hard_state`] wrote.
pub fn hard_state(r: &mut Reader<'_>) -> Result<HardState, DecodeError> {
    let term = r.u64()?;
    let at = r.offset();
    let voted = r.u8()?;
    let vote = r.u64()?;
    let vote = match voted {
        0 => None,
        1 => Some(vote),
        v => {
            return Err(DecodeError {
                offset: at,
                reason: format!("bad vote flag {v}"),
            })
        }
    };
    let commit = r.u64()?;
    Ok(HardState { term, vote, commit })
}

/// Appends `cs`: index, then voters, outgoing voters and learners, each
/// a count and the ids.
pub fn put_conf_state(out: &mut Vec<u8>, cs: &ConfState) {
    put_u64(out, cs.index);
    put_ids(out, &cs.voters);
    put_ids(out, &cs.outgoing);
    put_ids(out, &cs.learners);
}

/// Reads what [`put_conf_state`] wrote.
pub fn conf_state(r: &mut Reader<'_>) -> Result<ConfState, DecodeError> {
    Ok(ConfState {
        index: r.u64()?,
        voters: ids(r)?,
        outgoing: ids(r)?,
        learners: ids(r)?,
    })
}

/// Appends `m`: index, term, membership, then per file its name, size and
/// CRC-32C.
pub fn put_snapshot_meta(out: &mut Vec<u8>, m: &SnapshotMeta) {
    put_u64(out, m.index);
    put_u64(out, m.term);
    put_conf_state(out, &m.conf);
    put_u32(out, m.files.len() as u32);
    for f in &m.files {
        put_u32(out, f.name.len() as u32);
        out.extend_from_slice(f.name.as_bytes());
        put_u64(out, f.size);
        put_u32(out, f.crc);
    }
}

/// Reads what [`put_snapshot_meta`] wrote.
pub fn snapshot_meta(r: &mut Reader<'_>) -> Result<SnapshotMeta, DecodeError> {
    let index = r.u64()?;
    let term = r.u64()?;
    let conf = conf_state(r)?;
    let n = r.count(MAX_SNAPSHOT_FILES, 4 + 8 + 4)?;
    let mut files = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.count(MAX_FILE_NAME_BYTES, 1)?;
        let at = r.offset();
        let name = std::str::from_utf8(r.bytes(len)?)
            .map_err(|_| DecodeError {
                offset: at,
                reason: "file name is not UTF-8".into(),
            })?
            .to_string();
        files.push(SnapshotFile {
            name,
            size: r.u64()?,
            crc: r.u32()?,
        });
    }
    Ok(SnapshotMeta {
        index,
        term,
        conf,
        files,
    })
}

/// Frames `body` as a small file: magic, body length, body, CRC-32C of all
/// that precedes it.
pub fn frame(magic: &[u8; 8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + FRAME_BYTES);
    out.extend_from_slice(magic);
    put_u32(&mut out, body.len() as u32);
    out.extend_from_slice(body);
    let crc = checksum(&out);
    put_u32(&mut out, crc);
    out
}

/// The body of a small file framed by [`frame`] with `magic`; returns the
/// body and its offset in the file.
pub fn unframe<'a>(magic: &[u8; 8], bytes: &'a [u8]) -> Result<(&'a [u8], u64), DecodeError> {
    let mut r = Reader::new(bytes, 0);
    if r.bytes(8)? != magic {
        return Err(DecodeError {
            offset: 0,
            reason: "wrong magic: not the expected kind of file".into(),
        });
    }
    let len = r.u32()? as usize;
    if len + 4 != r.remaining() {
        return Err(DecodeError {
            offset: 8,
            reason: format!(
                "body length {len} does not match the {} bytes present",
                r.remaining()
            ),
        });
    }
    let body_at = r.offset();
    let body = r.bytes(len)?;
    let crc_at = r.offset();
    let crc = r.u32()?;
    if checksum(&bytes[..crc_at as usize]) != crc {
        return Err(DecodeError {
            offset: crc_at,
            reason: "checksum mismatch".into(),
        });
    }
    Ok((body, body_at))
}
