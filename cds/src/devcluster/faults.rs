//! Faults and admin actions on a running cluster: partitions (a filter in
//! each node's transport), leader transfer and snapshots.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use raft_core::NodeId;
use serde_json::json;

use crate::client::{self, Access, Method};
use crate::error::{bail, Error, Result};

use super::directory::{ClusterFile, NodeEntry};
use super::outcome::Outcome;
use super::process::{self, ProcState};
use super::reach::{admin, find_leader, POLL_EVERY};
use super::Warn;

/// Parses a partition written `1,2/3` (groups of comma-separated ids,
/// separated by '/') into its groups; refuses one group and an id in two.
pub fn parse_groups(s: &str) -> Result<Vec<Vec<NodeId>>> {
    let groups: Vec<Vec<u64>> = s
        .split('/')
        .map(|g| {
            g.split(',')
                .map(|id| {
                    id.trim().parse::<u64>().map_err(|e| {
                        Error::Invalid(format!("'{id}' in '{s}' is not a node id: {e}"))
                    })
                })
                .collect::<Result<Vec<u64>>>()
        })
        .collect::<Result<_>>()?;
    check_groups(&groups, s)?;
    Ok(groups)
}

/// Two groups at least, and no node in two: `spec` is how the caller
/// wrote them.
fn check_groups(groups: &[Vec<NodeId>], spec: &str) -> Result<()> {
    if groups.len() < 2 {
        bail!(
            Invalid,
            "'{spec}' has one group; separate groups with '/', e.g. 1,2/3"
        );
    }
    let mut seen = BTreeSet::new();
    for id in groups.iter().flatten() {
        if !seen.insert(*id) {
            bail!(Invalid, "node {id} is in more than one group in '{spec}'");
        }
    }
    Ok(())
}

/// `1,2/3` for these groups.
fn spec_text(groups: &[Vec<NodeId>]) -> String {
    let text: Vec<String> = groups
        .iter()
        .map(|g| {
            let ids: Vec<String> = g.iter().map(u64::to_string).collect();
            ids.join(",")
        })
        .collect();
    text.join("/")
}

fn set_filter(c: &ClusterFile, node: &NodeEntry, drop: &[u64]) -> Result<()> {
    let body = json!({ "drop_to": drop, "drop_from": drop }).to_string();
    admin(c, node, Method::Post, "/admin/filter", body.as_bytes()).map(|_| ())
}

/// Cuts the cluster in `dir` into `groups` that cannot talk to each
/// other: every node must be in exactly one group. A node that is not
/// running cannot take the filter (it lives in the node's memory) and is
/// skipped with a warning.
pub fn partition(dir: &Path, groups: &[Vec<NodeId>], warn: Warn) -> Result<Outcome> {
    let c = ClusterFile::load(dir)?;
    let spec = spec_text(groups);
    check_groups(groups, &spec)?;
    for id in groups.iter().flatten() {
        c.node(*id)?;
    }
    for node in &c.nodes {
        if !groups.iter().any(|g| g.contains(&node.id)) {
            bail!(
                Invalid,
                "node {} is in no group of '{spec}'; list every node",
                node.id
            );
        }
    }
    for group in groups {
        let others: Vec<u64> = c
            .nodes
            .iter()
            .map(|n| n.id)
            .filter(|id| !group.contains(id))
            .collect();
        for id in group {
            let node = c.node(*id)?;
            if process::state(node) != ProcState::Up {
                // ... and comes back unfiltered.
                warn(format!("warning: node {id} is not running; not filtered"));
                continue;
            }
            set_filter(&c, node, &others)?;
        }
    }
    Ok(Outcome::Partitioned(groups.to_vec()))
}

/// Removes every running node's partition filter; tries them all, then
/// fails if one refused.
pub fn heal(dir: &Path, warn: Warn) -> Result<Outcome> {
    let c = ClusterFile::load(dir)?;
    let mut failed = Vec::new();
    for node in &c.nodes {
        if process::state(node) != ProcState::Up {
            warn(format!("warning: node {} is not running; skipped", node.id));
            continue;
        }
        if let Err(e) = set_filter(&c, node, &[]) {
            failed.push(e.to_string());
        }
    }
    if !failed.is_empty() {
        bail!(Cluster, "heal incomplete: {}", failed.join("; "));
    }
    Ok(Outcome::Healed)
}

/// Asks the leader to hand leadership to node `id` and waits (at most
/// `timeout`) until `id` says it leads.
pub fn transfer_leader(dir: &Path, id: NodeId, timeout: Duration) -> Result<Outcome> {
    let c = ClusterFile::load(dir)?;
    let target = c.node(id)?.clone();
    let deadline = Instant::now() + timeout;
    let (leader, _) = find_leader(&c, deadline)?;
    if leader.id == id {
        return Ok(Outcome::AlreadyLeads(id));
    }
    admin(
        &c,
        &leader,
        Method::Post,
        &format!("/admin/transfer?to={id}"),
        &[],
    )?;
    let access = Access::of(&c)?;
    loop {
        if let Ok(s) = client::status(&access, &target.http_addr) {
            if s.is_leader() {
                return Ok(Outcome::Leads { id, term: s.term });
            }
        }
        if Instant::now() >= deadline {
            bail!(
                Cluster,
                "node {id} did not become leader within {timeout:?}"
            );
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// Makes node `id` take a snapshot now.
pub fn snapshot(dir: &Path, id: NodeId) -> Result<Outcome> {
    let c = ClusterFile::load(dir)?;
    let node = c.node(id)?;
    let reply = admin(&c, node, Method::Post, "/admin/snapshot", &[])?;
    Ok(Outcome::Snapshot {
        id,
        answer: String::from_utf8_lossy(&reply.body).trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups() {
        assert_eq!(parse_groups("1,2/3").unwrap(), vec![vec![1, 2], vec![3]]);
        assert_eq!(
            parse_groups(" 1 / 2 / 3 ").unwrap(),
            vec![vec![1], vec![2], vec![3]]
        );
        assert!(parse_groups("1,2,3").is_err());
        assert!(parse_groups("1,2/2").is_err());
        assert!(parse_groups("1,x/3").is_err());
        assert_eq!(spec_text(&[vec![1, 2], vec![3]]), "1,2/3");
    }
}
