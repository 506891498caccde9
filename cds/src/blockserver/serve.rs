//! The data path's server side: connections, the hello, and requests
//! served concurrently, each answered when it completes.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use raft_core::runtime::node::NodeError;
use raft_core::ReadError;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

use super::limits::{
    HELLO_TIMEOUT, MAX_BYTES_IN_FLIGHT, MAX_CONNECTIONS, MAX_HELLO_BYTES,
    MAX_IN_FLIGHT_PER_CONNECTION, MAX_IO_BYTES, MAX_REPAIRS_PER_READ, READ_BUFFER_BYTES,
    REQUEST_TIMEOUT, WRITE_STALL_TIMEOUT,
};
use super::{Inner, Replica};
use crate::blockgroup::command::{decode_result, encode, Applied};
use crate::blockgroup::lock;
use crate::engine::{Command, EngineError, ReadAt, SectorId, SliceKey, SECTOR};
use crate::wire::{
    decode_request, read_header, read_payload, read_request, write_frames, Outgoing, Request,
    Response, VersionRow,
};

/// Accepts connections until the server stops.
pub(super) async fn accept(inner: Arc<Inner>, listener: TcpListener) {
    let conns = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let bytes = Arc::new(Semaphore::new(MAX_BYTES_IN_FLIGHT));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, say: wait a little instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        // Past the limit a connection is closed at once, never queued.
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (inner, bytes) = (inner.clone(), bytes.clone());
        tokio::spawn(async move {
            connection(inner, stream, bytes).await;
            drop(permit);
        });
    }
}

/// Serves one connection until it closes, misbehaves, or the server stops.
async fn connection(inner: Arc<Inner>, stream: TcpStream, bytes: Arc<Semaphore>) {
    let (rd, mut wr) = stream.into_split();
    let mut rd = tokio::io::BufReader::with_capacity(READ_BUFFER_BYTES, rd);
    let mut stop = inner.stop.subscribe();
    // The hello: the cluster's id and token, in time.
    let hello = tokio::time::timeout(HELLO_TIMEOUT, read_request(&mut rd, MAX_HELLO_BYTES)).await;
    let ok = match hello {
        Ok(Ok((id, Request::Hello { cluster_id, token }))) => {
            let good = cluster_id == inner.cfg.cluster_id && token == inner.cfg.token;
            let answer = if good {
                Response::Welcome
            } else {
                Response::BadRequest("wrong cluster or token".into())
            };
            let _ = wr.write_all(&answer.encode(id)).await;
            good
        }
        _ => false,
    };
    if !ok {
        return;
    }
    // Answers go out through one writer, in the order they complete.
    // Each holds its request's limits until written, so answers waiting
    // for a slow client count against the connection's budget.
    let (tx, mut rx) = mpsc::channel::<Outgoing>(MAX_IN_FLIGHT_PER_CONNECTION);
    let writer = tokio::spawn(async move {
        let _ = write_frames(&mut wr, &mut rx, Some(WRITE_STALL_TIMEOUT)).await;
    });
    let per_conn = Arc::new(Semaphore::new(MAX_IN_FLIGHT_PER_CONNECTION));
    loop {
        let next = tokio::select! {
            r = read_header(&mut rd) => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        // A closed connection, or a frame that failed its checks: the
        // stream is out of step, so it ends here.
        let Ok(h) = next else { break };
        let Ok(slot) = per_conn.clone().acquire_owned().await else {
            break;
        };
        // Room for the payload is reserved before it is read, and for a
        // read's data before it is served.
        let Ok(mut held) = bytes.clone().acquire_many_owned(h.len.max(1)).await else {
            break;
        };
        let Ok(payload) = read_payload(&mut rd, &h).await else {
            break;
        };
        let Ok(req) = decode_request(&h, payload) else {
            break;
        };
        let id = h.id;
        let io = &inner.io;
        match &req {
            Request::Read { len, .. } => {
                io.reads.fetch_add(1, Ordering::Relaxed);
                io.read_bytes.fetch_add(*len, Ordering::Relaxed);
            }
            Request::Write { data, .. } => {
                io.writes.fetch_add(1, Ordering::Relaxed);
                io.write_bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            _ => {}
        }
        if let Request::Read { len, .. } = &req {
            let want = (*len).clamp(1, MAX_IO_BYTES) as u32;
            let Ok(more) = bytes.clone().acquire_many_owned(want).await else {
                break;
            };
            held.merge(more);
        }
        let (inner, tx) = (inner.clone(), tx.clone());
        tokio::spawn(async move {
            let answer = handle(&inner, req).await;
            let out = Outgoing {
                frame: answer.encode(id),
                held: vec![slot, held],
            };
            let _ = tx.send(out).await;
        });
    }
    drop(tx);
    let _ = writer.await;
}

pub(super) fn replica(inner: &Inner, group: u64) -> Option<Replica> {
    inner
        .groups
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&group)
        .cloned()
}

/// What a failed proposal or read point means to the client.
fn node_error(e: NodeError) -> Response {
    match e {
        NodeError::NotLeader { leader } | NodeError::Read(ReadError::NotLeader { leader }) => {
            Response::NotLeader {
                leader: leader.unwrap_or(0),
            }
        }
        other => Response::Unavailable(other.to_string()),
    }
}

async fn handle(inner: &Inner, req: Request) -> Response {
    match req {
        Request::Hello { .. } => Response::BadRequest("hello twice".into()),
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
            if data.len() as u64 > MAX_IO_BYTES {
                return Response::BadRequest(format!("a write of more than {MAX_IO_BYTES} bytes"));
            }
            let cmd = Command::Write {
                volume,
                block,
                offset,
                data,
                epoch,
                head,
                base,
            };
            propose(inner, group, &cmd).await
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
            let cmd = Command::Zero {
                volume,
                block,
                offset,
                len,
                epoch,
                head,
                base,
            };
            propose(inner, group, &cmd).await
        }
        Request::Advance {
            group,
            volume,
            head,
            base,
        } => propose(inner, group, &Command::Advance { volume, head, base }).await,
        Request::DropVersion {
            group,
            volume,
            version,
        } => propose(inner, group, &Command::Drop { volume, version }).await,
        Request::Clone {
            group,
            volume,
            from,
            version,
        } => {
            let cmd = Command::Clone {
                volume,
                from,
                version,
            };
            propose(inner, group, &cmd).await
        }
        Request::Versions { group, volume } => versions(inner, group, volume).await,
        Request::Fence {
            group,
            volume,
            epoch,
        } => propose(inner, group, &Command::Fence { volume, epoch }).await,
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
            let at = match (version, head) {
                (0, 0) => ReadAt::Head,
                (0, head) => ReadAt::Tagged { head, base },
                (v, _) => ReadAt::Version(v),
            };
            read(inner, group, volume, block, offset, len, at).await
        }
        Request::CopySector {
            group,
            volume,
            block,
            slice,
            version,
            sector,
        } => {
            let id = SectorId {
                key: SliceKey {
                    volume,
                    block,
                    slice,
                },
                version,
                sector,
            };
            copy_sector(inner, group, id).await
        }
    }
}

/// This replica's copy of a sector, for another replica repairing its
/// own. Any replica answers: the copy says where in the log it holds.
async fn copy_sector(inner: &Inner, group: u64, id: SectorId) -> Response {
    let Some(r) = replica(inner, group) else {
        return Response::NoGroup;
    };
    let engine = r.engine.clone();
    let got = tokio::task::spawn_blocking(move || lock(&engine).copy_sector(id)).await;
    match got {
        Ok(Ok(Some(c))) => Response::SectorCopy {
            since: c.since,
            at: c.at,
            data: Bytes::from(c.data),
        },
        Ok(Ok(None)) => Response::Unavailable("no such sector here".into()),
        Ok(Err(e)) => Response::Unavailable(format!("this replica's copy is bad too: {e}")),
        Err(e) => Response::Unavailable(format!("copy task: {e}")),
    }
}

async fn propose(inner: &Inner, group: u64, cmd: &Command) -> Response {
    let Some(r) = replica(inner, group) else {
        return Response::NoGroup;
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, r.node.propose(encode(cmd))).await {
        Err(_) => Response::Unavailable("timed out; the outcome is unknown".into()),
        Ok(Err(e)) => node_error(e),
        Ok(Ok(out)) => match decode_result(&out.result) {
            Ok(a) => Response::Applied(a),
            Err(why) => Response::Applied(Applied::Failed(format!("unreadable result: {why}"))),
        },
    }
}

/// A volume's versions on this group, from its leader (after a read point,
/// so every version step acknowledged before is seen).
async fn versions(inner: &Inner, group: u64, volume: u64) -> Response {
    let Some(r) = replica(inner, group) else {
        return Response::NoGroup;
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, r.node.read_lease()).await {
        Err(_) => return Response::Unavailable("timed out waiting for a read point".into()),
        Ok(Err(e)) => return node_error(e),
        Ok(Ok(_)) => {}
    }
    let engine = r.engine.clone();
    match tokio::task::spawn_blocking(move || lock(&engine).versions(volume)).await {
        Ok(vs) => Response::Versions(
            vs.into_iter()
                .map(|v| VersionRow {
                    version: v.version,
                    parent: v.parent.unwrap_or(0),
                    state: v.state,
                    slots: v.slots,
                })
                .collect(),
        ),
        Err(e) => Response::Unavailable(format!("versions task: {e}")),
    }
}

async fn read(
    inner: &Inner,
    group: u64,
    volume: u64,
    block: u64,
    offset: u64,
    len: u64,
    at: ReadAt,
) -> Response {
    if len > MAX_IO_BYTES {
        return Response::BadRequest(format!("a read of more than {MAX_IO_BYTES} bytes"));
    }
    let Some(r) = replica(inner, group) else {
        return Response::NoGroup;
    };
    // The leader's lease (or a ReadIndex round) shows it still leads, and
    // its engine has applied every write acknowledged before now.
    match tokio::time::timeout(REQUEST_TIMEOUT, r.node.read_lease()).await {
        Err(_) => return Response::Unavailable("timed out waiting for a read point".into()),
        Ok(Err(e)) => return node_error(e),
        Ok(Ok(_)) => {}
    }
    let mut repairs = 0;
    loop {
        let read_from = move |e: &mut crate::engine::Engine| {
            let mut buf = vec![0u8; len as usize];
            let r = e.read(volume, block, offset, &mut buf, at);
            r.map(|inner| inner.map(|()| buf))
        };
        // An idle engine is read right here: a read from the page cache
        // costs less than the hand-off to a blocking thread. One that is
        // busy (applying, flushing) is waited for on a blocking thread,
        // never on this async worker.
        let idle = match r.engine.try_lock() {
            Ok(mut e) => Some(read_from(&mut e)),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(read_from(&mut p.into_inner())),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        let got = match idle {
            Some(r) => Ok(r),
            None => {
                let engine = r.engine.clone();
                tokio::task::spawn_blocking(move || read_from(&mut lock(&engine))).await
            }
        };
        match got {
            Ok(Ok(Ok(buf))) => return Response::Data(Bytes::from(buf)),
            Ok(Ok(Err(refusal))) => return Response::Applied(Applied::Refused(refusal)),
            // Never served: repaired from a replica, then read again.
            Ok(Err(EngineError::CorruptSector { slot, sector, .. }))
                if repairs < MAX_REPAIRS_PER_READ =>
            {
                repairs += 1;
                if let Err(why) = super::repair::repair(inner, group, &r, slot, sector).await {
                    return Response::Unavailable(format!(
                        "a corrupt sector ({} bytes into slot {slot}) could not be repaired: {why}",
                        sector * SECTOR
                    ));
                }
            }
            Ok(Err(e)) => return Response::Unavailable(format!("this replica cannot read: {e}")),
            Err(e) => return Response::Unavailable(format!("read task: {e}")),
        }
    }
}
