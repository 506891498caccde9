//! The transmission phase: requests read in order, served at once (many
//! in flight), answered as each completes: simple replies, or, when the
//! client negotiated structured replies, reads in chunks (the data of
//! allocated runs, holes for the rest, errors with their reason) and
//! block status for `base:allocation`.
//!
//! Semantics, as a client may rely on them:
//!
//! - a WRITE (and TRIM, WRITE_ZEROES) is answered only once every piece
//!   is committed by its BlockGroup's majority (each replica's log synced)
//!   and applied by the leader: it is durable and every later read, on
//!   any connection, sees it. So FLUSH has nothing left to do and FUA
//!   changes nothing; both are accepted;
//! - TRIM zeroes the range (a trimmed range reads back as zeros, and
//!   whole unwritten blocks stay unallocated);
//! - a request that fails gets its errno (`EINVAL` out of range or
//!   malformed, `EPERM` read-only or fenced by a newer writer, `ENOSPC`
//!   a full disk, `EIO` no replica in time: for a write, its outcome is
//!   then unknown, as after a local disk's error);
//! - a client that disconnects mid-request loses nothing it was told was
//!   written; requests still in flight run to completion.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::{mpsc, Semaphore};

use crate::wire::{write_frames, Outgoing};

use super::export::{errno, Export};
use super::handshake::Session;
use super::limits::{MAX_IN_FLIGHT_PER_CONNECTION, MAX_PAYLOAD, WRITE_STALL_TIMEOUT, ZERO_CHUNK};
use super::proto::{self, Request, REQUEST_HEADER};
use super::NbdStats;

/// Why a session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// `NBD_CMD_DISC`, or the client closed the connection.
    Client,
    /// The server is stopping.
    Shutdown,
    /// The client broke the protocol in a way that leaves the stream out
    /// of step (the reason is given).
    Protocol(String),
}

/// Serves requests on `export` until the session ends. `bytes` bounds the
/// payloads and read data in flight across the server.
pub async fn serve<R, W>(
    mut rd: R,
    wr: W,
    export: Arc<Export>,
    session: Session,
    bytes: Arc<Semaphore>,
    stats: Arc<NbdStats>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Outgoing>(MAX_IN_FLIGHT_PER_CONNECTION);
    let mut wr = wr;
    let writer = tokio::spawn(async move {
        let _ = write_frames(&mut wr, &mut rx, Some(WRITE_STALL_TIMEOUT)).await;
    });
    let per_conn = Arc::new(Semaphore::new(MAX_IN_FLIGHT_PER_CONNECTION));
    let end = loop {
        let mut h = [0u8; REQUEST_HEADER];
        let got = tokio::select! {
            r = rd.read_exact(&mut h) => r,
            _ = stop.wait_for(|s| *s) => break End::Shutdown,
        };
        if got.is_err() {
            break End::Client;
        }
        let req = match proto::request(&h) {
            Ok(r) => r,
            Err(why) => break End::Protocol(why),
        };
        if req.kind == proto::CMD_DISC {
            break End::Client;
        }
        let payload_len = if req.kind == proto::CMD_WRITE {
            if req.len > MAX_PAYLOAD {
                break End::Protocol(format!(
                    "a write of {} bytes (at most {MAX_PAYLOAD})",
                    req.len
                ));
            }
            req.len
        } else {
            0
        };
        let Ok(slot) = per_conn.clone().acquire_owned().await else {
            break End::Shutdown;
        };
        // Room for the payload (or the read's data) before it is read.
        let want = match req.kind {
            proto::CMD_READ => req.len.min(MAX_PAYLOAD),
            _ => payload_len,
        };
        let Ok(held) = bytes.clone().acquire_many_owned(want.max(1)).await else {
            break End::Shutdown;
        };
        let mut payload = BytesMut::zeroed(payload_len as usize);
        if rd.read_exact(&mut payload).await.is_err() {
            break End::Client;
        }
        let (export, tx, stats) = (export.clone(), tx.clone(), stats.clone());
        tokio::spawn(async move {
            let frame = answer(&export, session, &stats, req, payload).await;
            let _ = tx
                .send(Outgoing {
                    frame,
                    held: vec![slot, held],
                })
                .await;
        });
    };
    // Requests in flight finish and are answered (they hold `tx` clones)
    // before the writer ends.
    drop(tx);
    let _ = writer.await;
    end
}

/// Serves one request; returns the reply (header and any read data, or
/// the structured chunks).
async fn answer(
    export: &Export,
    session: Session,
    stats: &NbdStats,
    req: Request,
    payload: BytesMut,
) -> BytesMut {
    if session.structured && req.kind == proto::CMD_READ {
        let r = structured_read(export, req).await;
        stats.count(req.kind, r.is_ok());
        return match r {
            Ok(chunks) => chunks,
            Err((e, why)) => BytesMut::from(&proto::error_chunk(req.handle, e, &why)[..]),
        };
    }
    if req.kind == proto::CMD_BLOCK_STATUS {
        let r = block_status(export, session, req);
        stats.count(req.kind, r.is_ok());
        return match r {
            Ok(chunk) => chunk,
            Err(e) => BytesMut::from(&proto::simple_reply(e, req.handle)[..]),
        };
    }
    let result = run(export, req, payload).await;
    stats.count(req.kind, result.is_ok());
    match result {
        Ok(Some(data)) => {
            let mut b = BytesMut::with_capacity(16 + data.len());
            b.put_slice(&proto::simple_reply(0, req.handle));
            b.put_slice(&data);
            b
        }
        Ok(None) => BytesMut::from(&proto::simple_reply(0, req.handle)[..]),
        Err(e) => BytesMut::from(&proto::simple_reply(e, req.handle)[..]),
    }
}

/// The checks every request's range passes: known flags, inside the
/// export, at most the maximum payload for a read.
fn check_range(export: &Export, req: &Request) -> Result<(), u32> {
    if req.flags & !proto::CMD_FLAGS_KNOWN != 0 {
        return Err(proto::EINVAL);
    }
    let end = req.offset.checked_add(u64::from(req.len));
    if end.is_none_or(|end| end > export.size()) || req.len > MAX_PAYLOAD {
        return Err(proto::EINVAL);
    }
    Ok(())
}

/// A read answered in chunks: the data of allocated runs
/// (`OFFSET_DATA`), and unallocated runs as holes (`OFFSET_HOLE`, no
/// bytes sent); the last chunk is marked done. A failure is one error
/// chunk with its reason.
async fn structured_read(export: &Export, req: Request) -> Result<BytesMut, (u32, String)> {
    check_range(export, &req).map_err(|e| (e, "out of range or unknown flags".into()))?;
    let mut out = BytesMut::new();
    if req.len == 0 {
        out.put_slice(&proto::chunk(
            proto::REPLY_FLAG_DONE,
            proto::REPLY_TYPE_NONE,
            req.handle,
            &[],
        ));
        return Ok(out);
    }
    let runs = export.extents(req.offset, u64::from(req.len));
    let mut at = req.offset;
    for (i, (n, allocated)) in runs.iter().copied().enumerate() {
        let flags = if i + 1 == runs.len() {
            proto::REPLY_FLAG_DONE
        } else {
            0
        };
        if allocated {
            let data = export
                .read(at, n)
                .await
                .map_err(|e| (errno(&e), e.to_string()))?;
            let h = proto::chunk_header(
                flags,
                proto::REPLY_TYPE_OFFSET_DATA,
                req.handle,
                8 + n as u32,
            );
            out.reserve(20 + 8 + data.len());
            out.put_slice(&h);
            out.put_u64(at);
            out.put_slice(&data);
        } else {
            let mut p = [0u8; 12];
            p[..8].copy_from_slice(&at.to_be_bytes());
            p[8..].copy_from_slice(&(n as u32).to_be_bytes());
            out.put_slice(&proto::chunk(
                flags,
                proto::REPLY_TYPE_OFFSET_HOLE,
                req.handle,
                &p,
            ));
        }
        at += n;
    }
    Ok(out)
}

/// `NBD_CMD_BLOCK_STATUS` for `base:allocation`: the range's runs, an
/// unallocated one flagged hole and zero (one run with `REQ_ONE`).
fn block_status(export: &Export, session: Session, req: Request) -> Result<BytesMut, u32> {
    if !session.structured || !session.allocation || req.len == 0 {
        return Err(proto::EINVAL);
    }
    if req.flags & !proto::CMD_FLAGS_KNOWN != 0 {
        return Err(proto::EINVAL);
    }
    if req
        .offset
        .checked_add(u64::from(req.len))
        .is_none_or(|e| e > export.size())
    {
        return Err(proto::EINVAL);
    }
    let mut runs = export.extents(req.offset, u64::from(req.len));
    if req.flags & proto::CMD_FLAG_REQ_ONE != 0 {
        runs.truncate(1);
    }
    let mut p = Vec::with_capacity(4 + 8 * runs.len());
    p.extend_from_slice(&proto::BASE_ALLOCATION_ID.to_be_bytes());
    for (n, allocated) in runs {
        // The runs add up to at most the request's u32 length.
        p.extend_from_slice(&(n as u32).to_be_bytes());
        let state = if allocated {
            0
        } else {
            proto::STATE_HOLE | proto::STATE_ZERO
        };
        p.extend_from_slice(&state.to_be_bytes());
    }
    let c = proto::chunk(
        proto::REPLY_FLAG_DONE,
        proto::REPLY_TYPE_BLOCK_STATUS,
        req.handle,
        &p,
    );
    Ok(BytesMut::from(&c[..]))
}

/// What a request does; `Some` carries a read's data.
async fn run(
    export: &Export,
    req: Request,
    payload: BytesMut,
) -> Result<Option<bytes::Bytes>, u32> {
    if req.flags & !proto::CMD_FLAGS_KNOWN != 0 {
        return Err(proto::EINVAL);
    }
    let (offset, len) = (req.offset, u64::from(req.len));
    let writes = matches!(
        req.kind,
        proto::CMD_WRITE | proto::CMD_TRIM | proto::CMD_WRITE_ZEROES
    );
    if writes && export.read_only() {
        return Err(proto::EPERM);
    }
    // Past the end: EINVAL for reads, ENOSPC for writes (the protocol's
    // advice), checked before any work.
    if offset
        .checked_add(len)
        .is_none_or(|end| end > export.size())
    {
        return Err(if writes { proto::ENOSPC } else { proto::EINVAL });
    }
    match req.kind {
        proto::CMD_READ => {
            if req.len > MAX_PAYLOAD {
                return Err(proto::EINVAL);
            }
            export
                .read(offset, len)
                .await
                .map(Some)
                .map_err(|e| errno(&e))
        }
        proto::CMD_WRITE => export
            .write(offset, len, Some(payload.freeze()))
            .await
            .map(|()| None)
            .map_err(|e| errno(&e)),
        proto::CMD_TRIM | proto::CMD_WRITE_ZEROES => {
            let mut at = offset;
            while at < offset + len {
                let n = (offset + len - at).min(ZERO_CHUNK);
                export.write(at, n, None).await.map_err(|e| errno(&e))?;
                at += n;
            }
            Ok(None)
        }
        // Every answered write is already durable (see the module docs).
        proto::CMD_FLUSH => Ok(None),
        _ => Err(proto::EINVAL),
    }
}
