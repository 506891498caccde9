//! A BlockGroup's Raft entries and their results, as bytes.
//!
//! An entry's payload is one engine [`Command`]: a format byte, a tag,
//! the fields (little endian) and, for a write, the data itself as the
//! rest of the payload (sliced out of the received buffer, never copied).
//! A result is a status byte and the outcome, the refusal, or the reason
//! the replica failed.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::Reader;
use crate::engine::{Command, Outcome, Refusal, Step};

/// The payload format this build writes and reads.
const FORMAT: u8 = 2;

const WRITE: u8 = 1;
const ZERO: u8 = 2;
const ADVANCE: u8 = 3;
const DROP: u8 = 4;
const CLONE: u8 = 5;
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
            head,
            base,
        } => {
            b.reserve(data.len());
            b.put_u8(WRITE);
            for v in [*volume, *block, *offset, *epoch, *head, *base] {
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
            head,
            base,
        } => {
            b.put_u8(ZERO);
            for v in [*volume, *block, *offset, *len, *epoch, *head, *base] {
                b.put_u64_le(v);
            }
        }
        Command::Advance { volume, head, base } => {
            b.put_u8(ADVANCE);
            for v in [*volume, *head, *base] {
                b.put_u64_le(v);
            }
        }
        Command::Drop { volume, version } => {
            b.put_u8(DROP);
            b.put_u64_le(*volume);
            b.put_u64_le(*version);
        }
        Command::Clone {
            volume,
            from,
            version,
        } => {
            b.put_u8(CLONE);
            for v in [*volume, *from, *version] {
                b.put_u64_le(v);
            }
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
            let (head, base) = (r.u64()?, r.u64()?);
            let at = payload.len() - r.remaining();
            return Ok(Command::Write {
                volume,
                block,
                offset,
                data: payload.slice(at..),
                epoch,
                head,
                base,
            });
        }
        ZERO => Command::Zero {
            volume: r.u64()?,
            block: r.u64()?,
            offset: r.u64()?,
            len: r.u64()?,
            epoch: r.u64()?,
            head: r.u64()?,
            base: r.u64()?,
        },
        ADVANCE => Command::Advance {
            volume: r.u64()?,
            head: r.u64()?,
            base: r.u64()?,
        },
        DROP => Command::Drop {
            volume: r.u64()?,
            version: r.u64()?,
        },
        CLONE => Command::Clone {
            volume: r.u64()?,
            from: r.u64()?,
            version: r.u64()?,
        },
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
                Outcome::Advanced { head, step } => {
                    b.push(3);
                    u64s(&mut b, &[head]);
                    b.push(match step {
                        Step::Same => 0,
                        Step::Marked => 1,
                        Step::RolledBack => 2,
                        Step::Restarted => 3,
                    });
                }
                Outcome::Dropped { version } => {
                    b.push(4);
                    u64s(&mut b, &[version]);
                }
                Outcome::Cloned => b.push(5),
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
                Refusal::Stale {
                    volume,
                    asked,
                    head,
                    base,
                } => {
                    b.push(7);
                    u64s(&mut b, &[volume, asked, head, base]);
                }
                Refusal::UnknownBase { volume, base } => {
                    b.push(8);
                    u64s(&mut b, &[volume, base]);
                }
                Refusal::InUse { version, clone } => {
                    b.push(9);
                    u64s(&mut b, &[version, clone]);
                }
                Refusal::CloneConflict { volume } => {
                    b.push(10);
                    u64s(&mut b, &[volume]);
                }
                Refusal::CloneTooDeep => b.push(11),
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
            3 => Outcome::Advanced {
                head: r.u64()?,
                step: match r.u8()? {
                    0 => Step::Same,
                    1 => Step::Marked,
                    2 => Step::RolledBack,
                    3 => Step::Restarted,
                    s => return Err(format!("unknown version step {s}")),
                },
            },
            4 => Outcome::Dropped { version: r.u64()? },
            5 => Outcome::Cloned,
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
            7 => Refusal::Stale {
                volume: r.u64()?,
                asked: r.u64()?,
                head: r.u64()?,
                base: r.u64()?,
            },
            8 => Refusal::UnknownBase {
                volume: r.u64()?,
                base: r.u64()?,
            },
            9 => Refusal::InUse {
                version: r.u64()?,
                clone: r.u64()?,
            },
            10 => Refusal::CloneConflict { volume: r.u64()? },
            11 => Refusal::CloneTooDeep,
            t => return Err(format!("unknown refusal {t}")),
        }),
        MALFORMED => return Ok(Applied::Malformed(text(&r))),
        FAILED => return Ok(Applied::Failed(text(&r))),
        s => return Err(format!("unknown result status {s}")),
    };
    r.finish()?;
    Ok(a)
}
