//! A BlockGroup's Raft entries and their results, as bytes.
//!
//! An entry's payload is one engine [`Command`]: a format byte, a tag,
//! the fields (little endian) and, for a write, the data itself as the
//! rest of the payload (sliced out of the received buffer, never copied).
//! A result is a status byte and the outcome, the refusal, or the reason
//! the replica failed.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::Reader;
use crate::engine::{Command, Outcome, Refusal};

/// The payload format this build writes and reads.
const FORMAT: u8 = 1;

const WRITE: u8 = 1;
const ZERO: u8 = 2;
const MARK: u8 = 3;
const DROP: u8 = 4;
const ROLLBACK: u8 = 5;
const PURGE: u8 = 6;
const FENCE: u8 = 7;

/// Encodes `cmd` as an entry payload.
pub fn encode(cmd: &Command) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    b.put_u8(FORMAT);
    match cmd {
        Command::Write {
            volume,
            block,
            offset,
            data,
            epoch,
        } => {
            b.reserve(data.len());
            b.put_u8(WRITE);
            for v in [*volume, *block, *offset, *epoch] {
                b.put_u64_le(v);
            }
            b.put_slice(data);
        }
        Command::Zero {
            volume,
            block,
            offset,
            len,
            epoch,
        } => {
            b.put_u8(ZERO);
            for v in [*volume, *block, *offset, *len, *epoch] {
                b.put_u64_le(v);
            }
        }
        Command::Mark => b.put_u8(MARK),
        Command::Drop { version } => {
            b.put_u8(DROP);
            b.put_u64_le(*version);
        }
        Command::Rollback { to } => {
            b.put_u8(ROLLBACK);
            b.put_u64_le(*to);
        }
        Command::Purge { volume } => {
            b.put_u8(PURGE);
            b.put_u64_le(*volume);
        }
        Command::Fence { volume, epoch } => {
            b.put_u8(FENCE);
            b.put_u64_le(*volume);
            b.put_u64_le(*epoch);
        }
    }
    b.freeze()
}

/// Decodes an entry payload; a write's data shares `payload`'s buffer.
pub fn decode(payload: &Bytes) -> Result<Command, String> {
    let mut r = Reader::new(payload);
    let format = r.u8()?;
    if format != FORMAT {
        return Err(format!("entry format {format}, this build reads {FORMAT}"));
    }
    let cmd = match r.u8()? {
        WRITE => {
            let (volume, block, offset, epoch) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
            let at = payload.len() - r.remaining();
            return Ok(Command::Write {
                volume,
                block,
                offset,
                data: payload.slice(at..),
                epoch,
            });
        }
        ZERO => Command::Zero {
            volume: r.u64()?,
            block: r.u64()?,
            offset: r.u64()?,
            len: r.u64()?,
            epoch: r.u64()?,
        },
        MARK => Command::Mark,
        DROP => Command::Drop { version: r.u64()? },
        ROLLBACK => Command::Rollback { to: r.u64()? },
        PURGE => Command::Purge { volume: r.u64()? },
        FENCE => Command::Fence {
            volume: r.u64()?,
            epoch: r.u64()?,
        },
        t => return Err(format!("unknown command tag {t}")),
    };
    r.finish()?;
    Ok(cmd)
}

/// What applying an entry came to, as its proposer is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Done(Outcome),
    Refused(Refusal),
    /// The payload could not be decoded (every replica says the same).
    Malformed(String),
    /// This replica's engine failed; the replica stops.
    Failed(String),
}

const OK: u8 = 0;
const REFUSED: u8 = 1;
const MALFORMED: u8 = 2;
const FAILED: u8 = 3;

/// Encodes a result for the proposer.
pub fn encode_result(a: &Applied) -> Vec<u8> {
    let mut b = Vec::with_capacity(32);
    let u64s = |b: &mut Vec<u8>, vs: &[u64]| {
        for v in vs {
            b.extend_from_slice(&v.to_le_bytes());
        }
    };
    match a {
        Applied::Done(o) => {
            b.push(OK);
            match *o {
                Outcome::Written => b.push(1),
                Outcome::Zeroed => b.push(2),
                Outcome::Marked { version } => {
                    b.push(3);
                    u64s(&mut b, &[version]);
                }
                Outcome::Dropped { version } => {
                    b.push(4);
                    u64s(&mut b, &[version]);
                }
                Outcome::RolledBack { to, head } => {
                    b.push(5);
                    u64s(&mut b, &[to, head]);
                }
                Outcome::Skipped => b.push(6),
                Outcome::Purged { entries } => {
                    b.push(7);
                    u64s(&mut b, &[entries]);
                }
                Outcome::Fenced => b.push(8),
            }
        }
        Applied::Refused(r) => {
            b.push(REFUSED);
            match *r {
                Refusal::OutOfRange {
                    offset,
                    end,
                    block_size,
                } => {
                    b.push(1);
                    u64s(&mut b, &[offset, end, block_size]);
                }
                Refusal::Misaligned { offset, len } => {
                    b.push(2);
                    u64s(&mut b, &[offset, len]);
                }
                Refusal::NoSuchVersion(v) => {
                    b.push(3);
                    u64s(&mut b, &[v]);
                }
                Refusal::NotRetained(v) => {
                    b.push(4);
                    u64s(&mut b, &[v]);
                }
                Refusal::TooManyVersions => b.push(5),
                Refusal::Fenced {
                    volume,
                    epoch,
                    current,
                } => {
                    b.push(6);
                    u64s(&mut b, &[volume, epoch, current]);
                }
            }
        }
        Applied::Malformed(why) => {
            b.push(MALFORMED);
            b.extend_from_slice(why.as_bytes());
        }
        Applied::Failed(why) => {
            b.push(FAILED);
            b.extend_from_slice(why.as_bytes());
        }
    }
    b
}

/// Decodes a result.
pub fn decode_result(b: &[u8]) -> Result<Applied, String> {
    let mut r = Reader::new(b);
    let text = |r: &Reader| String::from_utf8_lossy(r.rest()).into_owned();
    let a = match r.u8()? {
        OK => Applied::Done(match r.u8()? {
            1 => Outcome::Written,
            2 => Outcome::Zeroed,
            3 => Outcome::Marked { version: r.u64()? },
            4 => Outcome::Dropped { version: r.u64()? },
            5 => Outcome::RolledBack {
                to: r.u64()?,
                head: r.u64()?,
            },
            6 => Outcome::Skipped,
            7 => Outcome::Purged { entries: r.u64()? },
            8 => Outcome::Fenced,
            t => return Err(format!("unknown outcome {t}")),
        }),
        REFUSED => Applied::Refused(match r.u8()? {
            1 => Refusal::OutOfRange {
                offset: r.u64()?,
                end: r.u64()?,
                block_size: r.u64()?,
            },
            2 => Refusal::Misaligned {
                offset: r.u64()?,
                len: r.u64()?,
            },
            3 => Refusal::NoSuchVersion(r.u64()?),
            4 => Refusal::NotRetained(r.u64()?),
            5 => Refusal::TooManyVersions,
            6 => Refusal::Fenced {
                volume: r.u64()?,
                epoch: r.u64()?,
                current: r.u64()?,
            },
            t => return Err(format!("unknown refusal {t}")),
        }),
        MALFORMED => return Ok(Applied::Malformed(text(&r))),
        FAILED => return Ok(Applied::Failed(text(&r))),
        s => return Err(format!("unknown result status {s}")),
    };
    r.finish()?;
    Ok(a)
}
