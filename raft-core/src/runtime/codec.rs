//! The wire encoding of an [`Envelope`]: what one process sends another.
//!
//! It exists so the transport can carry every message the core produces
//! without a serialization framework, in a layout that is versioned (a node
//! refuses bytes from a layout it does not know instead of misreading them)
//! and that can be decoded from untrusted bytes safely: every count and length
//! read from the input is checked against a named limit *and* against the
//! bytes actually present before anything is allocated, so a hostile or
//! damaged length field can neither panic the decoder nor make it allocate
//! more than the input's own size.
//!
//! Layout (all integers little-endian, fixed width):
//!
//! ```text
//! envelope  = version:u8 group:u64 from:u64 to:u64 term:u64 tag:u8 body
//! bool      = u8 (0 or 1; anything else is an error)
//! bytes     = len:u32 byte*len
//! entry     = index:u64 term:u64 kind:u8 data:bytes
//! ids       = count:u32 u64*count
//! conf      = index:u64 voters:ids outgoing:ids learners:ids
//! file      = name:(len:u16 utf8) size:u64 crc:u32
//! meta      = index:u64 term:u64 conf count:u32 file*count
//! ```
//!
//! Body tags: 1 RequestVote, 2 RequestVoteResponse, 3 Append,
//! 4 AppendResponse, 5 Heartbeat, 6 HeartbeatResponse, 7 TimeoutNow,
//! 8 InstallSnapshot, 9 SnapshotChunkRequest, 10 SnapshotChunk.
//! A new field or variant means a new [`CODEC_VERSION`]. Version 2 added
//! the heartbeat's `quiesce` flag (`commit read_round lease_tick quiesce:bool`).
//!
//! # Payloads are not copied on decode
//!
//! [`decode_shared`] decodes from a [`Bytes`] (the transport reads each
//! frame into its own buffer): every entry's data and every snapshot
//! chunk is a slice of that buffer, so a received `Append` reaches the
//! follower's log, cache and state machine without its payloads being
//! copied. (A decoded entry keeps the whole frame alive until the last
//! entry of it is dropped; a frame is at most [`MAX_ENVELOPE_BYTES`].)
//! [`decode`] takes a plain slice and copies the payloads out of it.

use crate::core::{
    Bytes, ConfState, Entry, EntryKind, Message, MessageBody, SnapshotFile, SnapshotMeta,
};
use crate::runtime::Envelope;

/// The layout version written first in every encoded envelope. Decoding
/// refuses any other value.
pub const CODEC_VERSION: u8 = 2;
/// The wire's limits, named (and related to each other) in
/// [`super::limits`]. An `Append` that respects the other limits but goes
/// past [`MAX_ENVELOPE_BYTES`] is refused by [`validate`].
pub use super::limits::{
    MAX_CONF_NODES, MAX_DATA_BYTES, MAX_ENTRIES_PER_MESSAGE, MAX_ENVELOPE_BYTES,
    MAX_FILE_NAME_BYTES, MAX_SNAPSHOT_FILES,
};

/// Fixed bytes of an envelope before its body: version, group, from, to,
/// term, tag.
const HEADER_BYTES: usize = 1 + 8 + 8 + 8 + 8 + 1;
/// Fewest bytes one encoded entry takes (index, term, kind, data length):
/// bounds how many entries a given input can hold.
const MIN_ENTRY_BYTES: usize = 8 + 8 + 1 + 4;
/// Fewest bytes one encoded snapshot file takes (name length, size, crc).
const MIN_FILE_BYTES: usize = 2 + 8 + 4;

/// The exact length of [`encode`]'s output for `env`, without encoding
/// (saturating at `usize::MAX`). What byte-bounded queues count an envelope
/// for ([`super::limits`]).
pub fn encoded_len(env: &Envelope) -> usize {
    let ids = |v: &[u64]| 4usize.saturating_add(v.len().saturating_mul(8));
    let body = match &env.msg.body {
        MessageBody::RequestVote { .. } => 1 + 8 + 8 + 1,
        MessageBody::RequestVoteResponse { .. } => 2,
        MessageBody::Append { entries, .. } => entries.iter().fold(8 * 4 + 4, |n: usize, e| {
            n.saturating_add(MIN_ENTRY_BYTES + e.data.len())
        }),
        MessageBody::AppendResponse { .. } => 1 + 8 * 4,
        MessageBody::Heartbeat { .. } => 8 * 3 + 1,
        MessageBody::HeartbeatResponse { .. } => 8 * 2,
        MessageBody::TimeoutNow => 0,
        MessageBody::InstallSnapshot { meta } => {
            let c = &meta.conf;
            let conf = (8usize)
                .saturating_add(ids(&c.voters))
                .saturating_add(ids(&c.outgoing))
                .saturating_add(ids(&c.learners));
            meta.files.iter().fold(8 + 8 + 4 + conf, |n: usize, f| {
                // The name is written cut at u16::MAX (and then refused).
                let name = f.name.len().min(usize::from(u16::MAX));
                n.saturating_add(MIN_FILE_BYTES + name)
            })
        }
        MessageBody::SnapshotChunkRequest { .. } => 8 + 4 + 8 + 8,
        MessageBody::SnapshotChunk { data, .. } => {
            (8 + 4 + 8 + 4 + 4 + 1usize).saturating_add(data.len())
        }
    };
    HEADER_BYTES.saturating_add(body)
}

/// Why bytes could not be decoded into an envelope, or an envelope would not
/// be accepted by a receiver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The input ended before the value being read did.
    #[error("truncated: needed {needed} more bytes at offset {at}")]
    Truncated { at: usize, needed: usize },
    /// The input was written in a layout this node does not know.
    #[error("unknown codec version {0} (this node speaks {CODEC_VERSION})")]
    UnknownVersion(u8),
    /// A message body tag no variant has.
    #[error("unknown message tag {tag} at offset {at}")]
    UnknownTag { at: usize, tag: u8 },
    /// An entry kind no [`EntryKind`] has.
    #[error("unknown entry kind {kind} at offset {at}")]
    UnknownEntryKind { at: usize, kind: u8 },
    /// A boolean byte that is neither 0 nor 1.
    #[error("invalid boolean {value} at offset {at}")]
    InvalidBool { at: usize, value: u8 },
    /// A count or length above its named limit.
    #[error("{what}: {len} is over the limit of {limit}")]
    OverLimit {
        what: &'static str,
        len: u64,
        limit: usize,
    },
    /// A snapshot file name that is not UTF-8.
    #[error("snapshot file name at offset {at} is not UTF-8")]
    InvalidUtf8 { at: usize },
    /// Bytes left over after a whole envelope.
    #[error("{0} trailing bytes after the envelope")]
    TrailingBytes(usize),
}

/// Appends the encoding of `env` to `out`. Never fails: an envelope past the
/// wire limits is still encoded, and the receiver refuses it; senders call
/// [`validate`] first to drop such an envelope locally instead.
pub fn encode(env: &Envelope, out: &mut Vec<u8>) {
    let m = &env.msg;
    out.reserve(HEADER_BYTES + 64);
    out.push(CODEC_VERSION);
    put_u64(out, env.group);
    put_u64(out, m.from);
    put_u64(out, m.to);
    put_u64(out, m.term);
    match &m.body {
        MessageBody::RequestVote {
            pre_vote,
            last_log_index,
            last_log_term,
            leader_transfer,
        } => {
            out.push(1);
            put_bool(out, *pre_vote);
            put_u64(out, *last_log_index);
            put_u64(out, *last_log_term);
            put_bool(out, *leader_transfer);
        }
        MessageBody::RequestVoteResponse { pre_vote, granted } => {
            out.push(2);
            put_bool(out, *pre_vote);
            put_bool(out, *granted);
        }
        MessageBody::Append {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
            lease_tick,
        } => {
            out.push(3);
            put_u64(out, *prev_log_index);
            put_u64(out, *prev_log_term);
            put_u64(out, *leader_commit);
            put_u64(out, *lease_tick);
            put_u32(out, entries.len() as u32);
            for e in entries {
                put_u64(out, e.index);
                put_u64(out, e.term);
                out.push(match e.kind {
                    EntryKind::Normal => 0,
                    EntryKind::Noop => 1,
                    EntryKind::ConfChange => 2,
                });
                put_bytes(out, &e.data);
            }
        }
        MessageBody::AppendResponse {
            success,
            index,
            hint_index,
            hint_term,
            lease_tick,
        } => {
            out.push(4);
            put_bool(out, *success);
            put_u64(out, *index);
            put_u64(out, *hint_index);
            put_u64(out, *hint_term);
            put_u64(out, *lease_tick);
        }
        MessageBody::Heartbeat {
            commit,
            read_round,
            lease_tick,
            quiesce,
        } => {
            out.push(5);
            put_u64(out, *commit);
            put_u64(out, *read_round);
            put_u64(out, *lease_tick);
            put_bool(out, *quiesce);
        }
        MessageBody::HeartbeatResponse {
            read_round,
            lease_tick,
        } => {
            out.push(6);
            put_u64(out, *read_round);
            put_u64(out, *lease_tick);
        }
        MessageBody::TimeoutNow => out.push(7),
        MessageBody::InstallSnapshot { meta } => {
            out.push(8);
            put_meta(out, meta);
        }
        MessageBody::SnapshotChunkRequest {
            index,
            file,
            offset,
            len,
        } => {
            out.push(9);
            put_u64(out, *index);
            put_u32(out, *file);
            put_u64(out, *offset);
            put_u64(out, *len);
        }
        MessageBody::SnapshotChunk {
            index,
            file,
            offset,
            data,
            crc,
            gone,
        } => {
            out.push(10);
            put_u64(out, *index);
            put_u32(out, *file);
            put_u64(out, *offset);
            put_bytes(out, data);
            put_u32(out, *crc);
            put_bool(out, *gone);
        }
    }
}

/// Checks that a receiver would accept `env`: every count and length within
/// its limit and the whole encoding within [`MAX_ENVELOPE_BYTES`]. Cheap (no
/// encoding); a sender drops what fails instead of having the receiver close
/// the connection.
pub fn validate(env: &Envelope) -> Result<(), CodecError> {
    let over = |what, len: usize, limit| CodecError::OverLimit {
        what,
        len: len as u64,
        limit,
    };
    match &env.msg.body {
        MessageBody::Append { entries, .. } => {
            if entries.len() > MAX_ENTRIES_PER_MESSAGE {
                return Err(over("entries", entries.len(), MAX_ENTRIES_PER_MESSAGE));
            }
            for e in entries {
                if e.data.len() > MAX_DATA_BYTES {
                    return Err(over("entry data", e.data.len(), MAX_DATA_BYTES));
                }
            }
        }
        MessageBody::SnapshotChunk { data, .. } if data.len() > MAX_DATA_BYTES => {
            return Err(over("chunk data", data.len(), MAX_DATA_BYTES));
        }
        MessageBody::InstallSnapshot { meta } => {
            let c = &meta.conf;
            for (what, ids) in [
                ("voters", &c.voters),
                ("outgoing voters", &c.outgoing),
                ("learners", &c.learners),
            ] {
                if ids.len() > MAX_CONF_NODES {
                    return Err(over(what, ids.len(), MAX_CONF_NODES));
                }
            }
            if meta.files.len() > MAX_SNAPSHOT_FILES {
                return Err(over("snapshot files", meta.files.len(), MAX_SNAPSHOT_FILES));
            }
            for f in &meta.files {
                if f.name.len() > MAX_FILE_NAME_BYTES {
                    return Err(over("file name", f.name.len(), MAX_FILE_NAME_BYTES));
                }
            }
        }
        _ => {}
    }
    let size = encoded_len(env);
    if size > MAX_ENVELOPE_BYTES {
        return Err(over("envelope bytes", size, MAX_ENVELOPE_BYTES));
    }
    Ok(())
}

/// Decodes exactly one envelope from `buf`, copying payloads out of it.
/// Any defect (truncation, unknown version, tag or kind, a count past its
/// limit, bytes left over) is an error; this never panics, and allocates at
/// most in proportion to `buf.len()`.
pub fn decode(buf: &[u8]) -> Result<Envelope, CodecError> {
    decode_from(Reader {
        buf,
        pos: 0,
        shared: None,
    })
}

/// Like [`decode`], but every payload (entry data, snapshot chunk) is a
/// slice of `buf`, sharing its memory: no payload is copied.
pub fn decode_shared(buf: &Bytes) -> Result<Envelope, CodecError> {
    decode_from(Reader {
        buf,
        pos: 0,
        shared: Some(buf),
    })
}

fn decode_from(mut r: Reader<'_>) -> Result<Envelope, CodecError> {
    let buf = r.buf;
    let version = r.u8()?;
    if version != CODEC_VERSION {
        return Err(CodecError::UnknownVersion(version));
    }
    let group = r.u64()?;
    let from = r.u64()?;
    let to = r.u64()?;
    let term = r.u64()?;
    let tag_at = r.pos;
    let body = match r.u8()? {
        1 => MessageBody::RequestVote {
            pre_vote: r.bool()?,
            last_log_index: r.u64()?,
            last_log_term: r.u64()?,
            leader_transfer: r.bool()?,
        },
        2 => MessageBody::RequestVoteResponse {
            pre_vote: r.bool()?,
            granted: r.bool()?,
        },
        3 => {
            let prev_log_index = r.u64()?;
            let prev_log_term = r.u64()?;
            let leader_commit = r.u64()?;
            let lease_tick = r.u64()?;
            let n = r.count("entries", MAX_ENTRIES_PER_MESSAGE, MIN_ENTRY_BYTES)?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let index = r.u64()?;
                let term = r.u64()?;
                let kind_at = r.pos;
                let kind = match r.u8()? {
                    0 => EntryKind::Normal,
                    1 => EntryKind::Noop,
                    2 => EntryKind::ConfChange,
                    kind => return Err(CodecError::UnknownEntryKind { at: kind_at, kind }),
                };
                let data = r.bytes("entry data")?;
                entries.push(Entry {
                    index,
                    term,
                    kind,
                    data,
                });
            }
            MessageBody::Append {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                lease_tick,
            }
        }
        4 => MessageBody::AppendResponse {
            success: r.bool()?,
            index: r.u64()?,
            hint_index: r.u64()?,
            hint_term: r.u64()?,
            lease_tick: r.u64()?,
        },
        5 => MessageBody::Heartbeat {
            commit: r.u64()?,
            read_round: r.u64()?,
            lease_tick: r.u64()?,
            quiesce: r.bool()?,
        },
        6 => MessageBody::HeartbeatResponse {
            read_round: r.u64()?,
            lease_tick: r.u64()?,
        },
        7 => MessageBody::TimeoutNow,
        8 => MessageBody::InstallSnapshot { meta: r.meta()? },
        9 => MessageBody::SnapshotChunkRequest {
            index: r.u64()?,
            file: r.u32()?,
            offset: r.u64()?,
            len: r.u64()?,
        },
        10 => MessageBody::SnapshotChunk {
            index: r.u64()?,
            file: r.u32()?,
            offset: r.u64()?,
            data: r.bytes("chunk data")?,
            crc: r.u32()?,
            gone: r.bool()?,
        },
        tag => return Err(CodecError::UnknownTag { at: tag_at, tag }),
    };
    let left = buf.len() - r.pos;
    if left != 0 {
        return Err(CodecError::TrailingBytes(left));
    }
    Ok(Envelope {
        group,
        msg: Message {
            from,
            to,
            term,
            body,
        },
    })
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bool(out: &mut Vec<u8>, v: bool) {
    out.push(u8::from(v));
}

fn put_bytes(out: &mut Vec<u8>, data: &[u8]) {
    // A length past u32 cannot pass `validate`; saturating makes the
    // receiver see a length over MAX_DATA_BYTES and refuse the envelope
    // instead of reading a wrapped-around length.
    put_u32(out, u32::try_from(data.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(data);
}

fn put_ids(out: &mut Vec<u8>, ids: &[u64]) {
    put_u32(out, u32::try_from(ids.len()).unwrap_or(u32::MAX));
    for id in ids {
        put_u64(out, *id);
    }
}

fn put_meta(out: &mut Vec<u8>, meta: &SnapshotMeta) {
    put_u64(out, meta.index);
    put_u64(out, meta.term);
    put_u64(out, meta.conf.index);
    put_ids(out, &meta.conf.voters);
    put_ids(out, &meta.conf.outgoing);
    put_ids(out, &meta.conf.learners);
    put_u32(out, u32::try_from(meta.files.len()).unwrap_or(u32::MAX));
    for f in &meta.files {
        // A name past u16 fails `validate`; saturating makes a receiver
        // refuse it (over MAX_FILE_NAME_BYTES) rather than misparse.
        let name = f.name.as_bytes();
        out.extend_from_slice(&u16::try_from(name.len()).unwrap_or(u16::MAX).to_le_bytes());
        out.extend_from_slice(&name[..name.len().min(usize::from(u16::MAX))]);
        put_u64(out, f.size);
        put_u32(out, f.crc);
    }
}

/// A cursor over untrusted input: every read checks the bytes present.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// `buf` as a shared buffer: payloads are sliced from it, not copied.
    shared: Option<&'a Bytes>,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let left = self.buf.len() - self.pos;
        if n > left {
            return Err(CodecError::Truncated {
                at: self.pos,
                needed: n - left,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn bool(&mut self) -> Result<bool, CodecError> {
        let at = self.pos;
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(CodecError::InvalidBool { at, value }),
        }
    }

    /// A count of items of at least `min_item_bytes` each: checked against
    /// `limit`, then against what the rest of the input could hold, so the
    /// caller may allocate for it.
    fn count(
        &mut self,
        what: &'static str,
        limit: usize,
        min_item_bytes: usize,
    ) -> Result<usize, CodecError> {
        let n = self.u32()? as usize;
        if n > limit {
            return Err(CodecError::OverLimit {
                what,
                len: n as u64,
                limit,
            });
        }
        let left = self.buf.len() - self.pos;
        let need = n.saturating_mul(min_item_bytes);
        if need > left {
            return Err(CodecError::Truncated {
                at: self.pos,
                needed: need - left,
            });
        }
        Ok(n)
    }

    fn bytes(&mut self, what: &'static str) -> Result<Bytes, CodecError> {
        let n = self.count(what, MAX_DATA_BYTES, 1)?;
        let at = self.pos;
        let s = self.take(n)?;
        Ok(match self.shared {
            Some(b) => b.slice(at..at + n),
            None => Bytes::copy_from_slice(s),
        })
    }

    fn ids(&mut self, what: &'static str) -> Result<Vec<u64>, CodecError> {
        let n = self.count(what, MAX_CONF_NODES, 8)?;
        (0..n).map(|_| self.u64()).collect()
    }

    fn meta(&mut self) -> Result<SnapshotMeta, CodecError> {
        let index = self.u64()?;
        let term = self.u64()?;
        let conf = ConfState {
            index: self.u64()?,
            voters: self.ids("voters")?,
            outgoing: self.ids("outgoing voters")?,
            learners: self.ids("learners")?,
        };
        let n = self.count("snapshot files", MAX_SNAPSHOT_FILES, MIN_FILE_BYTES)?;
        let mut files = Vec::with_capacity(n);
        for _ in 0..n {
            let len = usize::from(self.u16()?);
            if len > MAX_FILE_NAME_BYTES {
                return Err(CodecError::OverLimit {
                    what: "file name",
                    len: len as u64,
                    limit: MAX_FILE_NAME_BYTES,
                });
            }
            let at = self.pos;
            let name = std::str::from_utf8(self.take(len)?)
                .map_err(|_| CodecError::InvalidUtf8 { at })?
                .to_owned();
            files.push(SnapshotFile {
                name,
                size: self.u64()?,
                crc: self.u32()?,
            });
        }
        Ok(SnapshotMeta {
            index,
            term,
            conf,
            files,
        })
    }
}
