//! Reaching a local cluster's nodes: which are worth asking, which one
//! leads, and the admin requests the operations send.

use std::time::{Duration, Instant};

use crate::client::{self, Access, Method, Reply};
use crate::error::{bail, Context, Error, Result};
use crate::status::Status;

use super::directory::{ClusterFile, NodeEntry};
use super::process::{self, ProcState};

/// How long one admin request to one node may take, redirects included.
const ADMIN_DEADLINE: Duration = Duration::from_secs(3);
/// Pause between two rounds of asking the nodes.
pub(crate) const POLL_EVERY: Duration = Duration::from_millis(100);

/// HTTP addresses of the nodes worth asking (not known to be down or
/// paused), so a dead node does not cost a timeout per request; fails
/// when no node runs.
pub fn live_http(c: &ClusterFile) -> Result<Vec<String>> {
    let addrs: Vec<String> = c
        .nodes
        .iter()
        .filter(|n| process::state(n) == ProcState::Up)
        .map(|n| n.http_addr.clone())
        .collect();
    if addrs.is_empty() {
        bail!(
            Cluster,
            "no node of the cluster is running (start them with `cdsctl kv restart N`, \
             see `cdsctl kv status`)"
        );
    }
    Ok(addrs)
}

/// Asks every running node for its status until `deadline` and returns
/// the leader's, the one with the highest term if a deposed leader has
/// not noticed yet.
pub fn find_leader(c: &ClusterFile, deadline: Instant) -> Result<(NodeEntry, Status)> {
    let access = Access::of(c)?;
    loop {
        let best = c
            .nodes
            .iter()
            .filter(|n| process::state(n) == ProcState::Up)
            .filter_map(|n| client::status(&access, &n.http_addr).ok().map(|s| (n, s)))
            .filter(|(_, s)| s.is_leader())
            .max_by_key(|(_, s)| s.term);
        if let Some((n, s)) = best {
            return Ok((n.clone(), s));
        }
        if Instant::now() >= deadline {
            bail!(
                Cluster,
                "no node reports itself leader (see `cdsctl kv status`)"
            );
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// Sends one admin request (with the admin token) to one node of `c`
/// (redirects only within the cluster, no retries beyond a short
/// deadline), and fails on anything but 200.
pub(crate) fn admin(
    c: &ClusterFile,
    node: &NodeEntry,
    method: Method,
    path: &str,
    body: &[u8],
) -> Result<Reply> {
    let reply = client::request(
        &Access::of(c)?,
        std::slice::from_ref(&node.http_addr),
        method,
        path,
        body,
        None,
        Instant::now() + ADMIN_DEADLINE,
    )
    .with_context(|| format!("node {} ({path})", node.id))?;
    if reply.status != 200 {
        return Err(Error::Refused {
            what: format!("node {} refused {path}", node.id),
            status: reply.status,
            text: reply.error_text(),
        });
    }
    Ok(reply)
}
