//! The data path's protocol: framed, checksummed, versioned, pipelined.
//!
//! A connection starts with a `Hello` carrying the cluster id and the
//! cluster's token, answered `Welcome` (or closed). Then the client sends
//! requests, each with an id of its choosing, as fast as it likes; the
//! server answers each with the same id, in the order they complete.
//!
//! Frame: magic `CDSW` (4 bytes), version (1), kind (1), reserved (2),
//! request id (u64), payload length (u32), payload CRC-32C (u32), header
//! CRC-32C over the 24 bytes before it (u32), then the payload. All
//! integers little endian. A frame that fails a check closes the
//! connection: the stream can no longer be trusted to be in step.

use bytes::{BufMut, Bytes, BytesMut};
use raft_core::checksum;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::blockgroup::command::{decode_result, encode_result, Applied};
use crate::blockserver::limits::{MAX_FRAME_PAYLOAD, WRITE_BATCH_BYTES};
use crate::codec::Reader;
use crate::engine::VersionState;

const MAGIC: &[u8; 4] = b"CDSW";
/// The protocol version this build speaks.
pub const VERSION: u8 = 2;
const HEADER: usize = 28;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Bad(String),
}

/// A request, as the client sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Hello {
        cluster_id: u64,
        token: String,
    },
    /// A write at the volume's head version `head` (based on `base`) as
    /// the writer knows it: refused `Stale` if the group's is newer.
    Write {
        group: u64,
        volume: u64,
        block: u64,
        offset: u64,
        epoch: u64,
        head: u64,
        base: u64,
        data: Bytes,
    },
    Zero {
        group: u64,
        volume: u64,
        block: u64,
        offset: u64,
        len: u64,
        epoch: u64,
        head: u64,
        base: u64,
    },
    /// Takes `epoch` as the volume's writer epoch on the group (a new
    /// writer's open), answered `Applied(Done(Fenced))`.
    Fence {
        group: u64,
        volume: u64,
        epoch: u64,
    },
    /// `version` 0 reads the head as a reader that knows head version
    /// `head` (based on `base`) sees it (`head` 0: whatever the head is);
    /// another `version` reads that retained version (a snapshot).
    Read {
        group: u64,
        volume: u64,
        block: u64,
        offset: u64,
        len: u64,
        version: u64,
        head: u64,
        base: u64,
    },
    /// Moves a volume's head version on the group (the SnapshotWorker's
    /// snapshot and rollback steps), answered `Applied`.
    Advance {
        group: u64,
        volume: u64,
        head: u64,
        base: u64,
    },
    /// Drops a retained version of a volume on the group.
    DropVersion {
        group: u64,
        volume: u64,
        version: u64,
    },
    /// Makes `volume` a clone of `from` at `version` on the group.
    Clone {
        group: u64,
        volume: u64,
        from: u64,
        version: u64,
    },
    /// A volume's versions on the group and the space each holds,
    /// answered [`Response::Versions`] by the leader.
    Versions {
        group: u64,
        volume: u64,
    },
    /// A replica repairing a corrupt sector asks another replica of the
    /// group for its copy: sector `sector` of slice `slice` of a block,
    /// as the entry of version `version` holds it (answered by any
    /// replica, leader or not, with [`Response::SectorCopy`]).
    CopySector {
        group: u64,
        volume: u64,
        block: u64,
        slice: u32,
        version: u64,
        sector: u64,
    },
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Welcome,
    /// What a write or zero came to in the group.
    Applied(Applied),
    Data(Bytes),
    /// This server does not lead the group; `leader` (0: unknown) may.
    NotLeader {
        leader: u64,
    },
    /// This server holds no replica of the group.
    NoGroup,
    /// The request could not be served now; for a write the outcome is
    /// unknown (it may yet be applied).
    Unavailable(String),
    BadRequest(String),
    /// A replica's copy of a sector: its bytes hold at every Raft index
    /// from `since` to `at` (see `engine/repair.rs`).
    SectorCopy {
        since: u64,
        at: u64,
        data: Bytes,
    },
    /// A volume's versions on a group: (version, parent or 0, state,
    /// slots it holds).
    Versions(Vec<VersionRow>),
}

/// One version as [`Response::Versions`] carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct VersionRow {
    pub version: u64,
    pub parent: u64,
    pub state: VersionState,
    pub slots: u64,
}

/// The most rows a `Versions` answer may carry.
const MAX_VERSION_ROWS: u32 = 4096;

mod kind {
    pub const HELLO: u8 = 1;
    pub const WRITE: u8 = 2;
    pub const ZERO: u8 = 3;
    pub const READ: u8 = 4;
    pub const COPY_SECTOR: u8 = 5;
    pub const FENCE: u8 = 6;
    pub const ADVANCE: u8 = 7;
    pub const DROP_VERSION: u8 = 8;
    pub const CLONE: u8 = 9;
    pub const VERSIONS: u8 = 10;
    pub const WELCOME: u8 = 128;
    pub const APPLIED: u8 = 129;
    pub const DATA: u8 = 130;
    pub const NOT_LEADER: u8 = 131;
    pub const NO_GROUP: u8 = 132;
    pub const UNAVAILABLE: u8 = 133;
    pub const BAD_REQUEST: u8 = 134;
    pub const SECTOR_COPY: u8 = 135;
    pub const VERSIONS_ROWS: u8 = 136;
}

fn frame(kind: u8, id: u64, payload: &[u8]) -> BytesMut {
    let mut b = BytesMut::with_capacity(HEADER + payload.len());
    b.put_slice(MAGIC);
    b.put_u8(VERSION);
    b.put_u8(kind);
    b.put_u16_le(0);
    b.put_u64_le(id);
    b.put_u32_le(payload.len() as u32);
    b.put_u32_le(checksum(payload));
    let crc = checksum(&b[..24]);
    b.put_u32_le(crc);
    b.put_slice(payload);
    b
}

fn u64s(b: &mut Vec<u8>, vs: &[u64]) {
    for v in vs {
        b.extend_from_slice(&v.to_le_bytes());
    }
}

impl Request {
    /// The frame of this request with id `id`.
    pub fn encode(&self, id: u64) -> BytesMut {
        let mut p = Vec::new();
        let k = match self {
            Request::Hello { cluster_id, token } => {
                u64s(&mut p, &[*cluster_id]);
                p.extend_from_slice(token.as_bytes());
                kind::HELLO
            }
            Request::Write {
                group,
                volume,
                block,
                offset,
                epoch,
                head,
                base,
                data,
            } => {
                p.reserve(56 + data.len());
                u64s(
                    &mut p,
                    &[*group, *volume, *block, *offset, *epoch, *head, *base],
                );
                p.extend_from_slice(data);
                kind::WRITE
            }
            Request::Zero {
                group,
                volume,
                block,
                offset,
                len,
                epoch,
                head,
                base,
            } => {
                u64s(
                    &mut p,
                    &[*group, *volume, *block, *offset, *len, *epoch, *head, *base],
                );
                kind::ZERO
            }
            Request::Fence {
                group,
                volume,
                epoch,
            } => {
                u64s(&mut p, &[*group, *volume, *epoch]);
                kind::FENCE
            }
            Request::Read {
                group,
                volume,
                block,
                offset,
                len,
                version,
                head,
                base,
            } => {
                u64s(
                    &mut p,
                    &[
                        *group, *volume, *block, *offset, *len, *version, *head, *base,
                    ],
                );
                kind::READ
            }
            Request::Advance {
                group,
                volume,
                head,
                base,
            } => {
                u64s(&mut p, &[*group, *volume, *head, *base]);
                kind::ADVANCE
            }
            Request::DropVersion {
                group,
                volume,
                version,
            } => {
                u64s(&mut p, &[*group, *volume, *version]);
                kind::DROP_VERSION
            }
            Request::Clone {
                group,
                volume,
                from,
                version,
            } => {
                u64s(&mut p, &[*group, *volume, *from, *version]);
                kind::CLONE
            }
            Request::Versions { group, volume } => {
                u64s(&mut p, &[*group, *volume]);
                kind::VERSIONS
            }
            Request::CopySector {
                group,
                volume,
                block,
                slice,
                version,
                sector,
            } => {
                u64s(
                    &mut p,
                    &[
                        *group,
                        *volume,
                        *block,
                        u64::from(*slice),
                        *version,
                        *sector,
                    ],
                );
                kind::COPY_SECTOR
            }
        };
        frame(k, id, &p)
    }

    fn decode(kind: u8, payload: Bytes) -> Result<Request, String> {
        let mut r = Reader::new(&payload);
        let req = match kind {
            kind::HELLO => {
                let cluster_id = r.u64()?;
                let token =
                    String::from_utf8(r.rest().to_vec()).map_err(|_| "token is not UTF-8")?;
                return Ok(Request::Hello { cluster_id, token });
            }
            kind::WRITE => {
                let (group, volume, block, offset, epoch) =
                    (r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?);
                let (head, base) = (r.u64()?, r.u64()?);
                let at = payload.len() - r.remaining();
                return Ok(Request::Write {
                    group,
                    volume,
                    block,
                    offset,
                    epoch,
                    head,
                    base,
                    data: payload.slice(at..),
                });
            }
            kind::ZERO => Request::Zero {
                group: r.u64()?,
                volume: r.u64()?,
                block: r.u64()?,
                offset: r.u64()?,
                len: r.u64()?,
                epoch: r.u64()?,
                head: r.u64()?,
                base: r.u64()?,
            },
            kind::ADVANCE => Request::Advance {
                group: r.u64()?,
                volume: r.u64()?,
                head: r.u64()?,
                base: r.u64()?,
            },
            kind::DROP_VERSION => Request::DropVersion {
                group: r.u64()?,
                volume: r.u64()?,
                version: r.u64()?,
            },
            kind::CLONE => Request::Clone {
                group: r.u64()?,
                volume: r.u64()?,
                from: r.u64()?,
                version: r.u64()?,
            },
            kind::VERSIONS => Request::Versions {
                group: r.u64()?,
                volume: r.u64()?,
            },
            kind::FENCE => Request::Fence {
                group: r.u64()?,
                volume: r.u64()?,
                epoch: r.u64()?,
            },
            kind::READ => Request::Read {
                group: r.u64()?,
                volume: r.u64()?,
                block: r.u64()?,
                offset: r.u64()?,
                len: r.u64()?,
                version: r.u64()?,
                head: r.u64()?,
                base: r.u64()?,
            },
            kind::COPY_SECTOR => Request::CopySector {
                group: r.u64()?,
                volume: r.u64()?,
                block: r.u64()?,
                slice: u32::try_from(r.u64()?).map_err(|_| "a slice past u32")?,
                version: r.u64()?,
                sector: r.u64()?,
            },
            k => return Err(format!("unknown request kind {k}")),
        };
        r.finish()?;
        Ok(req)
    }
}

impl Response {
    /// The frame of this answer to request `id`.
    pub fn encode(&self, id: u64) -> BytesMut {
        let (k, p): (u8, Vec<u8>) = match self {
            Response::Welcome => (kind::WELCOME, Vec::new()),
            Response::Applied(a) => (kind::APPLIED, encode_result(a)),
            Response::Data(d) => return frame(kind::DATA, id, d),
            Response::NotLeader { leader } => (kind::NOT_LEADER, leader.to_le_bytes().to_vec()),
            Response::NoGroup => (kind::NO_GROUP, Vec::new()),
            Response::Unavailable(w) => (kind::UNAVAILABLE, w.as_bytes().to_vec()),
            Response::BadRequest(w) => (kind::BAD_REQUEST, w.as_bytes().to_vec()),
            Response::SectorCopy { since, at, data } => {
                let mut p = Vec::with_capacity(16 + data.len());
                u64s(&mut p, &[*since, *at]);
                p.extend_from_slice(data);
                (kind::SECTOR_COPY, p)
            }
            Response::Versions(rows) => {
                let mut p = Vec::with_capacity(4 + rows.len() * 25);
                p.extend_from_slice(&(rows.len() as u32).to_le_bytes());
                for r in rows {
                    u64s(&mut p, &[r.version, r.parent]);
                    p.push(match r.state {
                        VersionState::Head => 0,
                        VersionState::Retained => 1,
                        VersionState::Gone => 2,
                    });
                    u64s(&mut p, &[r.slots]);
                }
                (kind::VERSIONS_ROWS, p)
            }
        };
        frame(k, id, &p)
    }

    fn decode(kind: u8, payload: Bytes) -> Result<Response, String> {
        let text = |p: &Bytes| String::from_utf8_lossy(p).into_owned();
        Ok(match kind {
            kind::WELCOME => Response::Welcome,
            kind::APPLIED => Response::Applied(decode_result(&payload)?),
            kind::DATA => Response::Data(payload),
            kind::NOT_LEADER => {
                let mut r = Reader::new(&payload);
                let leader = r.u64()?;
                r.finish()?;
                Response::NotLeader { leader }
            }
            kind::NO_GROUP => Response::NoGroup,
            kind::UNAVAILABLE => Response::Unavailable(text(&payload)),
            kind::BAD_REQUEST => Response::BadRequest(text(&payload)),
            kind::SECTOR_COPY => {
                let mut r = Reader::new(&payload);
                let (since, at) = (r.u64()?, r.u64()?);
                let from = payload.len() - r.remaining();
                Response::SectorCopy {
                    since,
                    at,
                    data: payload.slice(from..),
                }
            }
            kind::VERSIONS_ROWS => {
                let mut r = Reader::new(&payload);
                let n = r.u32()?;
                if n > MAX_VERSION_ROWS {
                    return Err(format!("{n} version rows (at most {MAX_VERSION_ROWS})"));
                }
                let mut rows = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let (version, parent) = (r.u64()?, r.u64()?);
                    let state = match r.u8()? {
                        0 => VersionState::Head,
                        1 => VersionState::Retained,
                        2 => VersionState::Gone,
                        s => return Err(format!("unknown version state {s}")),
                    };
                    rows.push(VersionRow {
                        version,
                        parent,
                        state,
                        slots: r.u64()?,
                    });
                }
                r.finish()?;
                Response::Versions(rows)
            }
            k => return Err(format!("unknown response kind {k}")),
        })
    }
}

/// A frame's header, checked: its kind, request id and payload length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: u8,
    pub id: u64,
    /// Payload bytes that follow (at most the protocol's limit).
    pub len: u32,
    crc: u32,
}

/// Reads and checks a frame's header; the payload is not read yet, so a
/// server can reserve room for it first.
pub async fn read_header<R: AsyncRead + Unpin>(r: &mut R) -> Result<FrameHeader, WireError> {
    let mut h = [0u8; HEADER];
    r.read_exact(&mut h).await?;
    let bad = |w: String| Err(WireError::Bad(w));
    if &h[..4] != MAGIC {
        return bad("no CDSW magic".into());
    }
    let le32 = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    if checksum(&h[..24]) != le32(24) {
        return bad("header checksum mismatch".into());
    }
    if h[4] != VERSION {
        return bad(format!(
            "protocol version {}, this build speaks {VERSION}",
            h[4]
        ));
    }
    let mut idb = [0u8; 8];
    idb.copy_from_slice(&h[8..16]);
    let len = le32(16);
    if len > MAX_FRAME_PAYLOAD {
        return bad(format!(
            "a payload of {len} bytes (at most {MAX_FRAME_PAYLOAD})"
        ));
    }
    Ok(FrameHeader {
        kind: h[5],
        id: u64::from_le_bytes(idb),
        len,
        crc: le32(20),
    })
}

/// Reads and checks the payload announced by `h`.
pub async fn read_payload<R: AsyncRead + Unpin>(
    r: &mut R,
    h: &FrameHeader,
) -> Result<Bytes, WireError> {
    let mut p = BytesMut::zeroed(h.len as usize);
    r.read_exact(&mut p).await?;
    if checksum(&p) != h.crc {
        return Err(WireError::Bad("payload checksum mismatch".into()));
    }
    Ok(p.freeze())
}

/// Decodes a request frame's payload.
pub fn decode_request(h: &FrameHeader, payload: Bytes) -> Result<Request, WireError> {
    Request::decode(h.kind, payload).map_err(WireError::Bad)
}

/// Reads one request frame whose payload is at most `max` bytes.
pub async fn read_request<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
) -> Result<(u64, Request), WireError> {
    let h = read_header(r).await?;
    if h.len > max {
        return Err(WireError::Bad(format!(
            "a payload of {} bytes here (at most {max})",
            h.len
        )));
    }
    let p = read_payload(r, &h).await?;
    Ok((h.id, decode_request(&h, p)?))
}

/// Reads one response frame.
pub async fn read_response<R: AsyncRead + Unpin>(r: &mut R) -> Result<(u64, Response), WireError> {
    let h = read_header(r).await?;
    let p = read_payload(r, &h).await?;
    let resp = Response::decode(h.kind, p).map_err(WireError::Bad)?;
    Ok((h.id, resp))
}

/// Writes a whole frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &[u8]) -> Result<(), WireError> {
    w.write_all(frame).await?;
    Ok(())
}

/// A frame queued for a connection's writer, with what it holds of the
/// connection's limits (released once the frame is written, so the
/// writer's queue is bounded in bytes by the same budget).
#[derive(Debug)]
pub struct Outgoing {
    pub frame: BytesMut,
    pub held: Vec<tokio::sync::OwnedSemaphorePermit>,
}

/// A connection's writer: writes every frame `rx` yields until its senders
/// are gone (`Ok`), a write fails, or one makes no progress for `stall`
/// (`Err`). Frames that wait together go out together ([`write_batch`]).
pub async fn write_frames<W: AsyncWrite + Unpin>(
    wr: &mut W,
    rx: &mut tokio::sync::mpsc::Receiver<Outgoing>,
    stall: Option<std::time::Duration>,
) -> std::io::Result<()> {
    while let Some(first) = rx.recv().await {
        let wrote = write_batch(wr, first, rx);
        match stall {
            Some(d) => tokio::time::timeout(d, wrote)
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??,
            None => wrote.await?,
        }
    }
    Ok(())
}

/// Writes `first` and the frames already waiting behind it in `rx` with
/// as few system calls as it can: small frames are gathered into one
/// buffer of at most [`WRITE_BATCH_BYTES`], a large one goes out alone.
/// At 32 requests in flight, one write per answer was a third of a
/// served read's cost.
async fn write_batch<W: AsyncWrite + Unpin>(
    w: &mut W,
    first: Outgoing,
    rx: &mut tokio::sync::mpsc::Receiver<Outgoing>,
) -> std::io::Result<()> {
    let mut buf = first.frame;
    let mut held = vec![first.held];
    while buf.len() < WRITE_BATCH_BYTES {
        let Ok(next) = rx.try_recv() else { break };
        if next.frame.len() >= WRITE_BATCH_BYTES {
            w.write_all(&buf).await?;
            buf = next.frame;
        } else {
            buf.extend_from_slice(&next.frame);
        }
        held.push(next.held);
    }
    w.write_all(&buf).await?;
    drop(held);
    Ok(())
}
