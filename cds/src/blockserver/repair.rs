//! Repairing a corrupt sector a read met, with a copy from another
//! replica of the group, over the data path.
//!
//! The read that meets a corrupt sector is not answered with it: this
//! replica asks the group's other members for their copy
//! ([`Request::CopySector`]), takes the first that holds at its own point
//! of the log (the rule is the engine's, `engine/repair.rs`), and reads
//! again. A copy from a replica that is behind or ahead is refused until
//! one side catches up, so the rounds go on, bounded by
//! [`REPAIR_TIMEOUT`]. If no replica has a good copy, the read fails
//! `Unavailable`: the data is never served wrong.

use std::time::Instant;

use super::limits::{REPAIR_RETRY, REPAIR_TIMEOUT};
use super::{Inner, Replica};
use crate::blockclient::Conn;
use crate::blockgroup::lock;
use crate::engine::{Repair, SectorCopy, SectorId};
use crate::wire::{Request, Response};

/// Repairs `slot`'s sector `sector` of `group`'s engine on this server
/// (`r`), or says why it could not.
pub(super) async fn repair(
    inner: &Inner,
    group: u64,
    r: &Replica,
    slot: u64,
    sector: u64,
) -> Result<(), String> {
    let engine = r.engine.clone();
    let Some(id) = lock(&engine).locate(slot, sector) else {
        // Rewritten or reclaimed since the read: nothing left to repair.
        return Ok(());
    };
    let me = inner.cfg.id;
    let status = r.node.status().await.map_err(|e| e.to_string())?;
    let peers: Vec<u64> = status
        .raft
        .membership
        .members()
        .into_iter()
        .filter(|&p| p != me)
        .collect();
    let deadline = Instant::now() + REPAIR_TIMEOUT;
    let mut last = String::from("no other replica");
    loop {
        for &p in &peers {
            let copy = match ask(inner, p, group, id).await {
                Ok(c) => c,
                Err(why) => {
                    last = format!("replica {p}: {why}");
                    continue;
                }
            };
            let e = engine.clone();
            let done = tokio::task::spawn_blocking(move || lock(&e).repair_sector(id, &copy))
                .await
                .map_err(|e| e.to_string())?;
            match done {
                Ok(Repair::Repaired) => {
                    eprintln!(
                        "blockserver {me}: group {group}: corrupt sector {sector} of slot {slot} \
                         ({id:?}) repaired with replica {p}'s copy"
                    );
                    return Ok(());
                }
                Ok(Repair::Healthy | Repair::Gone) => return Ok(()),
                Ok(Repair::Later) => {
                    last = format!("replica {p}'s copy is from another point of the log")
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("no copy in {REPAIR_TIMEOUT:?}; last: {last}"));
        }
        tokio::time::sleep(REPAIR_RETRY).await;
    }
}

/// Asks server `peer` for its copy of sector `id` of `group`.
async fn ask(inner: &Inner, peer: u64, group: u64, id: SectorId) -> Result<SectorCopy, String> {
    let addr = *inner
        .peer_data
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&peer)
        .ok_or("no address for it")?;
    let conn = Conn::connect(addr, inner.cfg.cluster_id, &inner.cfg.token)
        .await
        .map_err(|e| e.to_string())?;
    let req = Request::CopySector {
        group,
        volume: id.key.volume,
        block: id.key.block,
        slice: id.key.slice,
        version: id.version,
        sector: id.sector,
    };
    match tokio::time::timeout(REPAIR_TIMEOUT, conn.call(&req)).await {
        Ok(Some(Response::SectorCopy { since, at, data })) => Ok(SectorCopy {
            data: data.to_vec(),
            since,
            at,
        }),
        Ok(Some(other)) => Err(format!("answered {other:?}")),
        Ok(None) => Err("the connection closed".into()),
        Err(_) => Err("no answer in time".into()),
    }
}
