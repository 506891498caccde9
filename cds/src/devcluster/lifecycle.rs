//! Starting and stopping a local cluster and its nodes: `up`, `down`,
//! `restart`, the signals (`kill`, `pause`, `resume`), and each node's
//! report for a status table.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use raft_core::NodeId;

use crate::client::{self, Access};
use crate::error::{bail, Context, Describe, Error, Result};
use crate::kv::MAX_GROUPS;
use crate::status::Status;

use super::directory::{self, ClusterFile, NodeEntry};
use super::outcome::{NodeStop, Outcome};
use super::process::{self, NodeProgram, ProcState};
use super::reach::POLL_EVERY;

/// The most voters `up` starts.
pub const MAX_NODES: u64 = 9;
/// How long each node gets to stop when `up` gives up.
const UP_CLEANUP_GRACE: Duration = Duration::from_secs(5);
/// Log lines quoted per node when `up` fails, and when a restarted node
/// exits.
const UP_LOG_LINES: usize = 5;
const RESTART_LOG_LINES: usize = 10;
/// How long a restarted node gets to fail when another process answers
/// on its address, so the error says why.
const RESTART_SETTLE: Duration = Duration::from_millis(300);

/// A cluster `up` started.
#[derive(Debug, Clone)]
pub struct Started {
    /// Its table, as written to `cluster.json` (absolute paths).
    pub cluster: ClusterFile,
    /// The cluster directory, absolute.
    pub dir: PathBuf,
    /// The node that leads (the first group, with several).
    pub leader: NodeId,
}

/// Starts a cluster of `n` voters hosting `groups` groups in `dir` (a new
/// or empty directory): picks free ports, writes `cluster.json` and each
/// node's config (with a CA and node certificates when `tls`), spawns
/// `program` for each node and waits (at most `timeout`) until exactly one
/// node leads and every group has a leader. On failure, nothing is left
/// running and the error quotes the nodes' last log lines.
pub fn up(
    program: &NodeProgram,
    n: u64,
    dir: &Path,
    timeout: Duration,
    tls: bool,
    groups: u64,
) -> Result<Started> {
    if !(1..=MAX_NODES).contains(&n) {
        bail!(
            Invalid,
            "--nodes must be between 1 and {MAX_NODES}, got {n}"
        );
    }
    if !(1..=MAX_GROUPS).contains(&groups) {
        bail!(
            Invalid,
            "--groups must be between 1 and {MAX_GROUPS}, got {groups}"
        );
    }
    check_free(dir)?;
    // Owner-only: it holds cluster.json and the nodes' configs (the token).
    crate::secret::private_dir(dir)?;
    // Absolute paths: the node configs must not depend on our cwd.
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let ports = directory::pick_ports(2 * n as usize)?;
    let addrs: Vec<_> = ports.chunks(2).map(|p| (p[0], p[1])).collect();
    let mut c = ClusterFile::new(
        &dir,
        &addrs,
        directory::new_token()?,
        directory::new_token()?,
    );
    c.tls = tls;
    c.groups = groups;
    let voters: Vec<u64> = c.nodes.iter().map(|node| node.id).collect();
    for node in &c.nodes {
        if c.tls {
            c.issue_cert(node)?;
        }
        directory::write_node_config(&c.node_config(node, voters.clone()))?;
    }
    c.save(&dir)?;

    let mut children = Vec::new();
    for i in 0..c.nodes.len() {
        match process::spawn_node(program, &c.nodes[i]) {
            Ok(child) => {
                c.nodes[i].pid = Some(child.id());
                children.push((c.nodes[i].id, child));
            }
            Err(e) => {
                c.save(&dir)?;
                stop_all(&c);
                return Err(e);
            }
        }
    }
    c.save(&dir)?;

    match wait_for_leader(&c, &mut children, timeout) {
        Ok(leader) => Ok(Started {
            cluster: c,
            dir,
            leader,
        }),
        Err(e) => {
            // Leave nothing running behind a failed `up`.
            stop_all(&c);
            let logs: Vec<String> = c
                .nodes
                .iter()
                .map(|node| {
                    format!(
                        "--- node {} ({}):\n{}",
                        node.id,
                        node.log_path().display(),
                        process::log_tail(node, UP_LOG_LINES)
                    )
                })
                .collect();
            Err(e.during(format!(
                "starting the cluster in {} (nodes stopped); last log lines:\n{}",
                dir.display(),
                logs.join("\n")
            )))
        }
    }
}

/// Refuses a directory that holds a cluster (running or not) or anything
/// else, saying what to do instead.
fn check_free(dir: &Path) -> Result<()> {
    if dir.join(directory::CLUSTER_FILE).exists() {
        let c = ClusterFile::load(dir)?;
        let running: Vec<String> = c
            .nodes
            .iter()
            .filter(|node| process::state(node) != ProcState::Down)
            .map(|node| node.id.to_string())
            .collect();
        if !running.is_empty() {
            bail!(
                Cluster,
                "{} already holds a running cluster (nodes {} running); \
                 stop it with `cdsctl kv down --dir {}` or pick another --dir",
                dir.display(),
                running.join(", "),
                dir.display()
            );
        }
        bail!(
            Cluster,
            "{} already holds a stopped cluster (nodes {}); start its nodes with \
             `cdsctl kv restart N --dir {}`, or remove the directory to start afresh",
            dir.display(),
            c.ids_text(),
            dir.display()
        );
    }
    if dir.exists() {
        let non_empty = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some();
        if non_empty {
            bail!(
                Invalid,
                "{} exists, is not empty and holds no cluster.json; \
                 refusing to write a cluster into it",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Waits until exactly one node reports itself leader (and, with several
/// groups, every group has a leader somewhere); fails early when a node
/// process exits.
fn wait_for_leader(
    c: &ClusterFile,
    children: &mut [(u64, Child)],
    timeout: Duration,
) -> Result<u64> {
    let access = Access::of(c)?;
    let deadline = Instant::now() + timeout;
    loop {
        for (id, child) in children.iter_mut() {
            if let Some(code) = child.try_wait().context("checking a node process")? {
                bail!(Cluster, "node {id} exited during startup ({code})");
            }
        }
        let statuses: Vec<Status> = c
            .nodes
            .iter()
            .filter_map(|node| client::status(&access, &node.http_addr).ok())
            .collect();
        let leaders: Vec<u64> = statuses
            .iter()
            .filter(|s| s.is_leader())
            .map(|s| s.id)
            .collect();
        let led: u64 = statuses.iter().map(|s| s.groups_led).sum();
        if let [one] = leaders[..] {
            if c.groups <= 1 || led >= c.groups {
                return Ok(one);
            }
        }
        if Instant::now() >= deadline {
            bail!(
                Cluster,
                "no single leader after {timeout:?} (leaders reported: {leaders:?})"
            );
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// Best-effort stop of every node (used when `up` fails); what fails is
/// said on stderr, the error being reported is `up`'s.
fn stop_all(c: &ClusterFile) {
    for node in &c.nodes {
        if let Err(e) = process::stop(node, UP_CLEANUP_GRACE) {
            eprintln!("warning: {e}");
        }
    }
}

/// Stops every node of the cluster in `dir`: SIGTERM to all at once (so
/// they shut down in parallel), then SIGKILL to those still running after
/// `timeout`. Returns how each ended, in id order; fails, after trying
/// every node, if some could not be stopped.
pub fn down(dir: &Path, timeout: Duration) -> Result<Vec<(NodeId, NodeStop)>> {
    let c = ClusterFile::load(dir)?;
    let mut ended = Vec::new();
    let mut running = Vec::new();
    for node in &c.nodes {
        if process::state(node) == ProcState::Down {
            ended.push((node.id, NodeStop::NotRunning));
            continue;
        }
        // SIGCONT first: a paused process cannot act on SIGTERM.
        let _ = process::signal(node, libc::SIGCONT);
        process::signal(node, libc::SIGTERM)?;
        running.push(node);
    }
    let deadline = Instant::now() + timeout;
    let mut failed = Vec::new();
    for node in running {
        let left = deadline.saturating_duration_since(Instant::now());
        if process::wait_down(node, left) {
            ended.push((node.id, NodeStop::Stopped));
            continue;
        }
        match process::kill(node) {
            Ok(()) => ended.push((node.id, NodeStop::Killed { grace: timeout })),
            Err(e) => failed.push(e.to_string()),
        }
    }
    if !failed.is_empty() {
        bail!(Cluster, "{}", failed.join("; "));
    }
    ended.sort_by_key(|(id, _)| *id);
    Ok(ended)
}

/// One node as a status table shows it: its entry, what the OS says of
/// its process, and its own report if it answered.
#[derive(Debug, Clone)]
pub struct NodeReport {
    /// Its entry in `cluster.json`.
    pub node: NodeEntry,
    /// Its process.
    pub state: ProcState,
    /// Its `/status`; `None` when it is not running (a paused node is not
    /// asked: it would only time out) or did not answer.
    pub status: Option<Status>,
}

/// Every node's report, in table order.
pub fn reports(c: &ClusterFile) -> Result<Vec<NodeReport>> {
    let access = Access::of(c)?;
    Ok(c.nodes
        .iter()
        .map(|node| {
            let state = process::state(node);
            let status = match state {
                ProcState::Up => client::status(&access, &node.http_addr).ok(),
                _ => None,
            };
            NodeReport {
                node: node.clone(),
                state,
                status,
            }
        })
        .collect())
}

/// SIGKILLs node `id` (a crash) and waits until it is gone; fails if it
/// is not running.
pub fn kill(dir: &Path, id: NodeId) -> Result<Outcome> {
    let c = ClusterFile::load(dir)?;
    let node = c.node(id)?;
    // Check first so that killing a dead node is an error, not a no-op.
    if process::state(node) == ProcState::Down {
        return Err(process::not_running(id));
    }
    process::kill(node)?;
    Ok(Outcome::Killed(id))
}

/// SIGSTOPs node `id` (a long GC pause or a hung VM).
pub fn pause(dir: &Path, id: NodeId) -> Result<Outcome> {
    signal(dir, id, libc::SIGSTOP).map(|()| Outcome::Paused(id))
}

/// SIGCONTs node `id`.
pub fn resume(dir: &Path, id: NodeId) -> Result<Outcome> {
    signal(dir, id, libc::SIGCONT).map(|()| Outcome::Resumed(id))
}

fn signal(dir: &Path, id: NodeId, sig: libc::c_int) -> Result<()> {
    let c = ClusterFile::load(dir)?;
    process::signal(c.node(id)?, sig)
}

/// Starts node `id` (which must be down) again with `program` and its
/// config, and waits (at most `timeout`) until this new process answers
/// `/status`.
pub fn restart(
    program: &NodeProgram,
    dir: &Path,
    id: NodeId,
    timeout: Duration,
) -> Result<Outcome> {
    let mut c = ClusterFile::load(dir)?;
    let node = c.node(id)?.clone();
    match process::state(&node) {
        ProcState::Down => {}
        st => bail!(
            Cluster,
            "node {id} is {st}; `cdsctl kv kill {id}` or `down` it first"
        ),
    }
    let mut child = process::spawn_node(program, &node)?;
    c.node_mut(id)?.pid = Some(child.id());
    c.save(dir)?;
    let access = Access::of(&c)?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(code) = child.try_wait().context("checking the node process")? {
            bail!(
                Cluster,
                "node {id} exited right after restart ({code}); last log lines:\n{}",
                process::log_tail(&node, RESTART_LOG_LINES)
            );
        }
        match client::status(&access, &node.http_addr) {
            // Only our process counts: another one answering on the address
            // (a node started by hand, say) is exactly why ours may be
            // about to exit with "address in use".
            Ok(s) if s.pid == Some(u64::from(child.id())) => {
                return Ok(Outcome::Restarted {
                    id,
                    pid: child.id(),
                    role: s.role,
                    term: s.term,
                });
            }
            Ok(s) => {
                // Give ours a moment to fail, so the error says why.
                std::thread::sleep(RESTART_SETTLE);
                if let Some(code) = child.try_wait().context("checking the node process")? {
                    bail!(
                        Cluster,
                        "node {id} exited right after restart ({code}): another process \
                         (pid {}) answers on {}; last log lines:\n{}",
                        s.pid.map_or("unknown".to_string(), |p| p.to_string()),
                        node.http_addr,
                        process::log_tail(&node, RESTART_LOG_LINES)
                    );
                }
            }
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            return Err(Error::Cluster(format!(
                "node {id} (pid {}) does not answer on {} after {timeout:?}; see {}",
                child.id(),
                node.http_addr,
                node.log_path().display()
            )));
        }
        std::thread::sleep(POLL_EVERY);
    }
}
