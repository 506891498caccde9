//! Membership changes of a running cluster: a new node started and made a
//! voter, a voter removed and stopped. Both go through the leader
//! (`POST /admin/change`) and wait until its configuration shows the
//! change.

use std::path::Path;
use std::time::{Duration, Instant};

use raft_core::NodeId;
use serde_json::json;

use crate::client::{self, Access, Method};
use crate::error::{bail, Context, Error, Result};
use crate::status::Status;

use super::directory::{self, ClusterFile, NodeEntry};
use super::outcome::Outcome;
use super::process::{self, NodeProgram, ProcState};
use super::reach::{admin, find_leader, live_http, POLL_EVERY};
use super::Warn;

/// How long a removed node gets to exit after SIGTERM.
const REMOVED_STOP_GRACE: Duration = Duration::from_secs(10);

/// Waits until the leader's configuration satisfies `done`.
fn wait_voters(c: &ClusterFile, deadline: Instant, done: impl Fn(&[u64]) -> bool) -> Result<()> {
    loop {
        if let Ok((_, s)) = find_leader(c, deadline) {
            if done(&s.voters) {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            bail!(
                Cluster,
                "the configuration change did not finish in time (see `cdsctl kv status`)"
            );
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// The new voter set is computed from the leader's report; an empty list
/// means the report lacks it, and acting on it would drop every voter.
fn check_voters_known(leader: &Status) -> Result<()> {
    if leader.voters.is_empty() {
        bail!(
            Cluster,
            "the leader (node {}) reports no voters in /status; refusing to compute a new configuration",
            leader.id
        );
    }
    Ok(())
}

fn change_voters(c: &ClusterFile, voters: &[u64], deadline: Instant) -> Result<()> {
    let body = json!({ "voters": voters }).to_string();
    let reply = client::request(
        &Access::of(c)?,
        &live_http(c)?,
        Method::Post,
        "/admin/change",
        body.as_bytes(),
        None,
        deadline,
    )
    .context("asking the leader to change the voters")?;
    if reply.status != 200 {
        return Err(Error::Refused {
            what: format!("the leader refused the change to voters {voters:?}"),
            status: reply.status,
            text: reply.error_text(),
        });
    }
    Ok(())
}

/// Starts a new node with `program` and makes it a voter (at most
/// `timeout`): every config learns its addresses, the running nodes are
/// told where it listens, then the leader changes the voters. On failure
/// the new node is left running and listed in `cluster.json`, and the
/// error says how to undo it.
pub fn add_node(
    program: &NodeProgram,
    dir: &Path,
    timeout: Duration,
    warn: Warn,
) -> Result<Outcome> {
    let mut c = ClusterFile::load(dir)?;
    let deadline = Instant::now() + timeout;
    let (_, leader_status) = find_leader(&c, deadline)?;
    check_voters_known(&leader_status)?;
    let id = c.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
    let ports = directory::pick_ports(2)?;
    let base = c
        .nodes
        .first()
        .and_then(|n| n.data_dir.parent())
        .map_or_else(|| dir.to_path_buf(), Path::to_path_buf);
    c.nodes.push(NodeEntry {
        id,
        pid: None,
        raft_addr: ports[0].to_string(),
        http_addr: ports[1].to_string(),
        data_dir: base.join(format!("n{id}")),
    });
    // Every config learns the new peer's addresses, for the next restart of
    // the running nodes (their transports read peers at startup).
    let first_voters: Vec<u64> = c
        .nodes
        .iter()
        .filter(|n| n.id != id)
        .map(|n| n.id)
        .collect();
    for node in &c.nodes {
        let voters = if node.id == id {
            Vec::new()
        } else {
            first_voters.clone()
        };
        directory::write_node_config(&c.node_config(node, voters))?;
    }
    let new = c.node(id)?.clone();
    if c.tls {
        c.issue_cert(&new)?;
    }
    let child = process::spawn_node(program, &new)?;
    c.node_mut(id)?.pid = Some(child.id());
    c.save(dir)?;
    // The running nodes' transports know only the peers of their config:
    // tell each where the new node listens before it becomes a member.
    let body = json!({ "id": id, "raft": new.raft_addr, "http": new.http_addr }).to_string();
    for node in c.nodes.iter().filter(|n| n.id != id) {
        if process::state(node) != ProcState::Up {
            warn(format!(
                "warning: node {} is not running; it learns node {id} from its config on restart",
                node.id
            ));
            continue;
        }
        admin(&c, node, Method::Post, "/admin/peer", body.as_bytes())?;
    }
    let mut voters = leader_status.voters.clone();
    voters.push(id);
    change_voters(&c, &voters, deadline)
        .and_then(|()| wait_voters(&c, deadline, |v| v.contains(&id)))
        .with_context(|| {
            format!(
                "adding node {id}; it is left running and listed in cluster.json \
                 (`cdsctl kv remove-node {id}` to undo), log in {}",
                new.log_path().display()
            )
        })?;
    Ok(Outcome::Added {
        id,
        pid: child.id(),
        voters,
    })
}

/// Removes node `id` from the voters (through the leader, at most
/// `timeout`), then stops its process and drops it from `cluster.json`;
/// its data directory stays.
pub fn remove_node(dir: &Path, id: NodeId, timeout: Duration) -> Result<Outcome> {
    let mut c = ClusterFile::load(dir)?;
    c.node(id)?;
    let deadline = Instant::now() + timeout;
    let (_, leader_status) = find_leader(&c, deadline)?;
    check_voters_known(&leader_status)?;
    let voters: Vec<u64> = leader_status
        .voters
        .iter()
        .copied()
        .filter(|v| *v != id)
        .collect();
    if voters.is_empty() {
        bail!(Cluster, "cannot remove node {id}: it is the only voter");
    }
    change_voters(&c, &voters, deadline)?;
    wait_voters(&c, deadline, |v| !v.contains(&id))?;
    let node = c.node(id)?.clone();
    let stop = process::stop(&node, REMOVED_STOP_GRACE)?;
    c.nodes.retain(|n| n.id != id);
    c.save(dir)?;
    Ok(Outcome::Removed {
        id,
        stop,
        data_dir: node.data_dir,
    })
}
