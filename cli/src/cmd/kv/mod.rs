//! `cdsctl kv ...`: a local cluster of node processes serving a replicated
//! key-value store, and the client commands that use and abuse it.
//!
//! Each invocation is short-lived: `up` spawns detached `cdsctl node`
//! processes and returns, and every later command finds them again through
//! the cluster directory (`DIR/cluster.json`). That keeps the tool usable from
//! a shell, a test or a demo script alike, and leaves the nodes as ordinary
//! processes that can be killed, paused and partitioned like real servers.
//! Every wait is bounded so no command can hang on a broken cluster.

// `pub(crate)`: `cdsctl top` drives the cluster through the same code.
pub(crate) mod bench;
pub(crate) mod client;
pub(crate) mod cluster;
pub(crate) mod proc;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use client::{Access, Method, Status};
use cluster::{ClusterFile, NodeEntry};
use proc::ProcState;

/// Subcommands of `cdsctl kv`.
#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Start a local cluster: pick free ports, write DIR, spawn the nodes and
    /// wait until they elect a leader.
    Up {
        /// Number of voters (1 to 9).
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        #[command(flatten)]
        dir: DirArg,
        /// How long to wait for a leader.
        #[arg(long, default_value = "20s", value_parser = parse_duration)]
        timeout: Duration,
        /// Encrypt and authenticate traffic between nodes with mutual TLS:
        /// a CA and a certificate per node are created in DIR/tls (as
        /// `cdsctl cert` does).
        #[arg(long)]
        tls: bool,
        /// Raft groups every node hosts (1 to 4096): keys are spread over
        /// them by hash, each group elects its own leader, and idle groups
        /// go quiescent (see the book's "Hosting many groups").
        #[arg(long, default_value_t = 1)]
        groups: u64,
    },
    /// Stop every node: SIGTERM, then SIGKILL after the timeout.
    Down {
        #[command(flatten)]
        dir: DirArg,
        /// How long each node gets to exit after SIGTERM.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Show every node: pid, up/down/paused, role, term, leader, commit, applied.
    Status {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Write KEY = VALUE (through the leader).
    Put {
        /// The key.
        key: String,
        /// The value (UTF-8 text as given).
        value: String,
        #[command(flatten)]
        dir: DirArg,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Read KEY and print its value; fails if the key is absent.
    Get {
        /// The key.
        key: String,
        /// linearizable (ReadIndex on the leader), lease, or stale (any node's
        /// local copy).
        #[arg(long, value_enum, default_value_t = Consistency::Linearizable)]
        consistency: Consistency,
        #[command(flatten)]
        dir: DirArg,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Delete KEY (through the leader).
    Del {
        /// The key.
        key: String,
        #[command(flatten)]
        dir: DirArg,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Compare-and-set KEY to VALUE (through the leader): only if KEY holds
    /// --expect, or with --absent only if KEY is absent. Fails when it did
    /// not swap.
    Cas {
        /// The key.
        key: String,
        /// The new value (UTF-8 text as given).
        value: String,
        /// The value KEY must hold.
        #[arg(long, conflicts_with = "absent", required_unless_present = "absent")]
        expect: Option<String>,
        /// KEY must be absent.
        #[arg(long)]
        absent: bool,
        #[command(flatten)]
        dir: DirArg,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// SIGKILL node N (a crash).
    Kill {
        /// The node id.
        id: u64,
        #[command(flatten)]
        dir: DirArg,
    },
    /// SIGSTOP node N (a long GC pause or a hung VM).
    Pause {
        /// The node id.
        id: u64,
        #[command(flatten)]
        dir: DirArg,
    },
    /// SIGCONT node N.
    Resume {
        /// The node id.
        id: u64,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Start node N again with the same config (it must be down).
    Restart {
        /// The node id.
        id: u64,
        #[command(flatten)]
        dir: DirArg,
        /// How long to wait for it to answer /status.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Cut the cluster into groups that cannot talk to each other, e.g.
    /// `1,2/3`; every node must be in exactly one group.
    Partition {
        /// Groups of node ids: comma-separated ids, groups separated by '/'.
        groups: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Remove every partition filter.
    Heal {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Ask the leader to hand leadership to node N, and wait until it has.
    TransferLeader {
        /// The node id.
        id: u64,
        #[command(flatten)]
        dir: DirArg,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Start a new node and make it a voter (through the leader).
    AddNode {
        #[command(flatten)]
        dir: DirArg,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Remove node N from the voters (through the leader), then stop it.
    RemoveNode {
        /// The node id.
        id: u64,
        #[command(flatten)]
        dir: DirArg,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Make node N take a snapshot now.
    Snapshot {
        /// The node id.
        id: u64,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Load the cluster with puts and print throughput and latency.
    Bench {
        /// Concurrent clients (threads).
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// How long to run, e.g. 20s or 500ms.
        #[arg(long, default_value = "20s", value_parser = parse_duration)]
        duration: Duration,
        /// Bytes per value.
        #[arg(long, default_value_t = 256)]
        value_size: usize,
        #[command(flatten)]
        dir: DirArg,
    },
}

/// The cluster directory, taken by every subcommand.
#[derive(Debug, Args)]
pub struct DirArg {
    /// The cluster directory (cluster.json and one nN/ per node).
    #[arg(long, default_value = "cds-cluster")]
    pub dir: PathBuf,
}

/// How long a client command keeps trying (elections, redirects).
#[derive(Debug, Args)]
pub struct WaitArg {
    /// Give up after this long, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Read consistency of `kv get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// ReadIndex on the leader.
    Linearizable,
    /// The leader's lease.
    Lease,
    /// Any node's local state machine, possibly behind.
    Stale,
}

impl Consistency {
    fn as_str(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Lease => "lease",
            Consistency::Stale => "stale",
        }
    }
}

/// Parses `20s`, `500ms`, `2m` or a bare number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 20s or 500ms"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("unknown unit '{unit}' in '{s}' (use ms, s or m)")),
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 86_400.0 {
        return Err(format!(
            "'{s}' is out of range (more than 0, at most a day)"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `1,2/3` into groups of ids.
fn parse_groups(s: &str) -> Result<Vec<Vec<u64>>> {
    let groups: Vec<Vec<u64>> = s
        .split('/')
        .map(|g| {
            g.split(',')
                .map(|id| {
                    id.trim()
                        .parse::<u64>()
                        .with_context(|| format!("'{id}' in '{s}' is not a node id"))
                })
                .collect::<Result<Vec<u64>>>()
        })
        .collect::<Result<_>>()?;
    if groups.len() < 2 {
        bail!("'{s}' has one group; separate groups with '/', e.g. 1,2/3");
    }
    let mut seen = std::collections::BTreeSet::new();
    for id in groups.iter().flatten() {
        if !seen.insert(*id) {
            bail!("node {id} is in more than one group in '{s}'");
        }
    }
    Ok(groups)
}

/// Where an action reports a problem that does not stop it (a node that
/// is not running is skipped): stderr for the CLI, the status bar in `top`.
pub(crate) type Warn<'a> = &'a mut dyn FnMut(String);

fn warn_stderr(w: String) {
    eprintln!("{w}");
}

/// Prints an action's outcome message: the CLI side of the functions that
/// `cdsctl top` also calls.
fn say(outcome: Result<String>) -> Result<()> {
    outln!("{}", outcome?);
    Ok(())
}

/// Runs a `cdsctl kv` subcommand.
pub fn run(cmd: KvCommand) -> Result<()> {
    match cmd {
        KvCommand::Up {
            nodes,
            dir,
            timeout,
            tls,
            groups,
        } => up(nodes, &dir.dir, timeout, tls, groups),
        KvCommand::Down { dir, timeout } => down(&dir.dir, timeout),
        KvCommand::Status { dir } => status(&dir.dir),
        KvCommand::Put {
            key,
            value,
            dir,
            wait,
        } => put(&dir.dir, &key, value.as_bytes(), wait.timeout),
        KvCommand::Get {
            key,
            consistency,
            dir,
            wait,
        } => get(&dir.dir, &key, consistency, wait.timeout),
        KvCommand::Del { key, dir, wait } => del(&dir.dir, &key, wait.timeout),
        KvCommand::Cas {
            key,
            value,
            expect,
            absent: _,
            dir,
            wait,
        } => cas(&dir.dir, &key, expect.as_deref(), &value, wait.timeout),
        KvCommand::Kill { id, dir } => say(kill(&dir.dir, id)),
        KvCommand::Pause { id, dir } => say(pause(&dir.dir, id)),
        KvCommand::Resume { id, dir } => say(resume(&dir.dir, id)),
        KvCommand::Restart { id, dir, timeout } => say(restart(&dir.dir, id, timeout)),
        KvCommand::Partition { groups, dir } => say(partition(&dir.dir, &groups, &mut warn_stderr)),
        KvCommand::Heal { dir } => say(heal(&dir.dir, &mut warn_stderr)),
        KvCommand::TransferLeader { id, dir, wait } => {
            say(transfer_leader(&dir.dir, id, wait.timeout))
        }
        KvCommand::AddNode { dir, wait } => say(add_node(&dir.dir, wait.timeout, &mut warn_stderr)),
        KvCommand::RemoveNode { id, dir, wait } => say(remove_node(&dir.dir, id, wait.timeout)),
        KvCommand::Snapshot { id, dir } => say(snapshot(&dir.dir, id)),
        KvCommand::Bench {
            clients,
            duration,
            value_size,
            dir,
        } => bench(&dir.dir, clients, duration, value_size),
    }
}

// ---------------------------------------------------------------- up/down

fn up(n: u64, dir: &Path, timeout: Duration, tls: bool, groups: u64) -> Result<()> {
    if !(1..=9).contains(&n) {
        bail!("--nodes must be between 1 and 9, got {n}");
    }
    let max = crate::cmd::node::MAX_GROUPS;
    if !(1..=max).contains(&groups) {
        bail!("--groups must be between 1 and {max}, got {groups}");
    }
    if dir.join(cluster::CLUSTER_FILE).exists() {
        let c = ClusterFile::load(dir)?;
        let running: Vec<String> = c
            .nodes
            .iter()
            .filter(|node| proc::state(node) != ProcState::Down)
            .map(|node| node.id.to_string())
            .collect();
        if !running.is_empty() {
            bail!(
                "{} already holds a running cluster (nodes {} running); \
                 stop it with `cdsctl kv down --dir {}` or pick another --dir",
                dir.display(),
                running.join(", "),
                dir.display()
            );
        }
        bail!(
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
                "{} exists, is not empty and holds no cluster.json; \
                 refusing to write a cluster into it",
                dir.display()
            );
        }
    }
    // Owner-only: it holds cluster.json and the nodes' configs (the token).
    crate::secret::private_dir(dir)?;
    // Absolute paths: the node configs must not depend on our cwd.
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let ports = cluster::pick_ports(2 * n as usize)?;
    let addrs: Vec<_> = ports.chunks(2).map(|p| (p[0], p[1])).collect();
    let mut c = ClusterFile::new(&dir, &addrs, cluster::new_token()?, cluster::new_token()?);
    c.tls = tls;
    c.groups = groups;
    let voters: Vec<u64> = c.nodes.iter().map(|node| node.id).collect();
    for node in &c.nodes {
        if c.tls {
            c.issue_cert(node)?;
        }
        cluster::write_node_config(&c.node_config(node, voters.clone()))?;
    }
    c.save(&dir)?;

    let mut children = Vec::new();
    for i in 0..c.nodes.len() {
        match proc::spawn_node(&c.nodes[i]) {
            Ok(child) => {
                c.nodes[i].pid = Some(child.id());
                children.push((c.nodes[i].id, child));
            }
            Err(e) => {
                c.save(&dir)?;
                stop_all(&c, Duration::from_secs(5));
                return Err(e);
            }
        }
    }
    c.save(&dir)?;

    match wait_for_leader(&c, &mut children, timeout) {
        Ok(leader) => {
            outln!(
                "cluster of {n} up in {} (leader: node {leader})",
                dir.display()
            );
            print_table(&c)?;
            Ok(())
        }
        Err(e) => {
            // Leave nothing running behind a failed `up`.
            stop_all(&c, Duration::from_secs(5));
            let logs: Vec<String> = c
                .nodes
                .iter()
                .map(|node| {
                    format!(
                        "--- node {} ({}):\n{}",
                        node.id,
                        node.log_path().display(),
                        proc::log_tail(node, 5)
                    )
                })
                .collect();
            Err(e.context(format!(
                "starting the cluster in {} (nodes stopped); last log lines:\n{}",
                dir.display(),
                logs.join("\n")
            )))
        }
    }
}

/// Waits until exactly one node reports itself leader; fails early when a
/// node process exits.
fn wait_for_leader(
    c: &ClusterFile,
    children: &mut [(u64, std::process::Child)],
    timeout: Duration,
) -> Result<u64> {
    let access = Access::of(c)?;
    let deadline = Instant::now() + timeout;
    loop {
        for (id, child) in children.iter_mut() {
            if let Some(code) = child.try_wait().context("checking a node process")? {
                bail!("node {id} exited during startup ({code})");
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
        // With several groups: every group has a leader somewhere.
        let led: u64 = statuses.iter().map(|s| s.groups_led).sum();
        if let [one] = leaders[..] {
            if c.groups <= 1 || led >= c.groups {
                return Ok(one);
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "no single leader after {:?} (leaders reported: {:?})",
                timeout,
                leaders
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Best-effort stop of every node (used when `up` fails).
fn stop_all(c: &ClusterFile, grace: Duration) {
    for node in &c.nodes {
        if let Err(e) = proc::stop(node, grace) {
            eprintln!("warning: {e:#}");
        }
    }
}

fn down(dir: &Path, timeout: Duration) -> Result<()> {
    let c = ClusterFile::load(dir)?;
    // SIGTERM everyone first, so the nodes shut down in parallel; SIGCONT
    // before it because a paused process cannot act on SIGTERM.
    let mut running = Vec::new();
    for node in &c.nodes {
        if proc::state(node) == ProcState::Down {
            outln!("node {}: not running", node.id);
            continue;
        }
        let _ = proc::signal(node, libc::SIGCONT);
        proc::signal(node, libc::SIGTERM)?;
        running.push(node);
    }
    let deadline = Instant::now() + timeout;
    let mut failed = Vec::new();
    for node in running {
        let left = deadline.saturating_duration_since(Instant::now());
        if proc::wait_down(node, left) {
            outln!("node {}: stopped", node.id);
            continue;
        }
        match proc::kill(node) {
            Ok(()) => outln!(
                "node {}: killed (SIGTERM timed out after {timeout:?})",
                node.id
            ),
            Err(e) => failed.push(format!("{e:#}")),
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}

// ---------------------------------------------------------------- status

/// One row of the status table: the process state and, if it answered, the
/// node's own report.
fn print_table(c: &ClusterFile) -> Result<()> {
    let access = Access::of(c)?;
    outln!(
        "{:>3} {:>8} {:<7} {:<21} {:<21} {:<13} {:>5} {:>6} {:>8} {:>8}",
        "id",
        "pid",
        "state",
        "http",
        "raft",
        "role",
        "term",
        "leader",
        "commit",
        "applied"
    );
    for node in &c.nodes {
        let st = proc::state(node);
        let pid = node.pid.map_or("-".to_owned(), |p| p.to_string());
        // A paused node would only time out; don't ask it.
        let report = match st {
            ProcState::Up => client::status(&access, &node.http_addr),
            _ => Err(anyhow::anyhow!("not asked")),
        };
        match report {
            Ok(s) => outln!(
                "{:>3} {:>8} {:<7} {:<21} {:<21} {:<13} {:>5} {:>6} {:>8} {:>8}",
                node.id,
                pid,
                st.to_string(),
                node.http_addr,
                node.raft_addr,
                s.role,
                s.term,
                s.leader.map_or("-".to_owned(), |l| l.to_string()),
                s.commit,
                s.applied
            ),
            Err(_) => outln!(
                "{:>3} {:>8} {:<7} {:<21} {:<21} {:<13} {:>5} {:>6} {:>8} {:>8}",
                node.id,
                pid,
                st.to_string(),
                node.http_addr,
                node.raft_addr,
                if st == ProcState::Up {
                    "no answer"
                } else {
                    "-"
                },
                "-",
                "-",
                "-",
                "-"
            ),
        }
    }
    Ok(())
}

fn status(dir: &Path) -> Result<()> {
    let c = ClusterFile::load(dir)?;
    print_table(&c)
}

// ---------------------------------------------------------------- kv ops

/// HTTP addresses of the nodes worth asking (not known to be down or
/// paused), so a dead node does not cost a timeout per request.
fn live_http(c: &ClusterFile) -> Result<Vec<String>> {
    let addrs: Vec<String> = c
        .nodes
        .iter()
        .filter(|n| proc::state(n) == ProcState::Up)
        .map(|n| n.http_addr.clone())
        .collect();
    if addrs.is_empty() {
        bail!(
            "no node of the cluster is running (start them with `cdsctl kv restart N`, \
             see `cdsctl kv status`)"
        );
    }
    Ok(addrs)
}

/// A write of this invocation: its own session (a random id), seq 1, so
/// the retries `client::request` makes after an unknown outcome apply it
/// once.
fn write_stamp() -> Result<client::Stamp> {
    Ok(client::Session::new()?.next())
}

fn put(dir: &Path, key: &str, value: &[u8], timeout: Duration) -> Result<()> {
    let c = ClusterFile::load(dir)?;
    let path = format!("/kv/{}", client::encode_key(key));
    let reply = client::request(
        &Access::of(&c)?,
        &live_http(&c)?,
        Method::Put,
        &path,
        value,
        Some(write_stamp()?),
        Instant::now() + timeout,
    )
    .with_context(|| format!("put {key}"))?;
    if reply.status != 200 {
        bail!("put {key}: {} {}", reply.status, reply.error_text());
    }
    outln!("{}", String::from_utf8_lossy(&reply.body).trim());
    Ok(())
}

fn get(dir: &Path, key: &str, consistency: Consistency, timeout: Duration) -> Result<()> {
    let c = ClusterFile::load(dir)?;
    let path = format!(
        "/kv/{}?consistency={}",
        client::encode_key(key),
        consistency.as_str()
    );
    let reply = client::request(
        &Access::of(&c)?,
        &live_http(&c)?,
        Method::Get,
        &path,
        &[],
        None,
        Instant::now() + timeout,
    )
    .with_context(|| format!("get {key}"))?;
    match reply.status {
        200 => {
            let mut out = crate::stdout::Stdout::lock();
            out.write_all(&reply.body)
                .and_then(|()| out.write_all(b"\n"))
                .context("writing the value to stdout")?;
            Ok(())
        }
        404 => bail!("key '{key}' not found"),
        s => bail!("get {key}: {s} {}", reply.error_text()),
    }
}

fn del(dir: &Path, key: &str, timeout: Duration) -> Result<()> {
    let c = ClusterFile::load(dir)?;
    let path = format!("/kv/{}", client::encode_key(key));
    let reply = client::request(
        &Access::of(&c)?,
        &live_http(&c)?,
        Method::Delete,
        &path,
        &[],
        Some(write_stamp()?),
        Instant::now() + timeout,
    )
    .with_context(|| format!("del {key}"))?;
    if reply.status != 200 {
        bail!("del {key}: {} {}", reply.status, reply.error_text());
    }
    outln!("{}", String::from_utf8_lossy(&reply.body).trim());
    Ok(())
}

/// `kv cas`: prints the answer; fails when the key did not hold `expect`
/// (`None`: was not absent).
fn cas(dir: &Path, key: &str, expect: Option<&str>, value: &str, timeout: Duration) -> Result<()> {
    let c = ClusterFile::load(dir)?;
    let path = format!("/kv/{}/cas", client::encode_key(key));
    let body = json!({ "expect": expect, "value": value }).to_string();
    let reply = client::request(
        &Access::of(&c)?,
        &live_http(&c)?,
        Method::Post,
        &path,
        body.as_bytes(),
        Some(write_stamp()?),
        Instant::now() + timeout,
    )
    .with_context(|| format!("cas {key}"))?;
    if reply.status != 200 {
        bail!("cas {key}: {} {}", reply.status, reply.error_text());
    }
    let answer = String::from_utf8_lossy(&reply.body).trim().to_owned();
    outln!("{answer}");
    let swapped = serde_json::from_slice::<serde_json::Value>(&reply.body)
        .ok()
        .and_then(|v| v.get("ok").and_then(serde_json::Value::as_bool));
    match (swapped, expect) {
        (Some(true), _) => Ok(()),
        (Some(false), Some(e)) => bail!("cas {key}: not swapped: the key does not hold {e:?}"),
        (Some(false), None) => bail!("cas {key}: not swapped: the key exists"),
        (None, _) => bail!("cas {key}: an answer without \"ok\": {answer}"),
    }
}

// ---------------------------------------------------------------- processes

/// `kv kill N`: SIGKILL node N (a crash); fails if it is not running.
pub(crate) fn kill(dir: &Path, id: u64) -> Result<String> {
    send_signal(dir, id, libc::SIGKILL, "killed")
}

/// `kv pause N`: SIGSTOP node N.
pub(crate) fn pause(dir: &Path, id: u64) -> Result<String> {
    send_signal(dir, id, libc::SIGSTOP, "paused")
}

/// `kv resume N`: SIGCONT node N.
pub(crate) fn resume(dir: &Path, id: u64) -> Result<String> {
    send_signal(dir, id, libc::SIGCONT, "resumed")
}

fn send_signal(dir: &Path, id: u64, sig: libc::c_int, done: &str) -> Result<String> {
    let c = ClusterFile::load(dir)?;
    let node = c.node(id)?;
    if sig == libc::SIGKILL {
        // Check first so that killing a dead node is an error, not a no-op.
        if proc::state(node) == ProcState::Down {
            bail!("node {id} is not running");
        }
        proc::kill(node)?;
    } else {
        proc::signal(node, sig)?;
    }
    Ok(format!("node {id} {done}"))
}

/// `kv restart N`: starts node N again with its config and waits (at most
/// `timeout`) until it answers `/status`.
pub(crate) fn restart(dir: &Path, id: u64, timeout: Duration) -> Result<String> {
    let mut c = ClusterFile::load(dir)?;
    let node = c.node(id)?.clone();
    match proc::state(&node) {
        ProcState::Down => {}
        st => bail!("node {id} is {st}; `cdsctl kv kill {id}` or `down` it first"),
    }
    let mut child = proc::spawn_node(&node)?;
    c.node_mut(id)?.pid = Some(child.id());
    c.save(dir)?;
    let access = Access::of(&c)?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(code) = child.try_wait().context("checking the node process")? {
            bail!(
                "node {id} exited right after restart ({code}); last log lines:\n{}",
                proc::log_tail(&node, 10)
            );
        }
        match client::status(&access, &node.http_addr) {
            // Only our process counts: another one answering on the address
            // (a node started by hand, say) is exactly why ours may be
            // about to exit with "address in use".
            Ok(s) if s.pid == Some(u64::from(child.id())) => {
                return Ok(format!(
                    "node {id} restarted (pid {}), {} in term {}",
                    child.id(),
                    s.role,
                    s.term
                ));
            }
            Ok(s) => {
                // Give ours a moment to fail, so the error says why.
                std::thread::sleep(Duration::from_millis(300));
                if let Some(code) = child.try_wait().context("checking the node process")? {
                    bail!(
                        "node {id} exited right after restart ({code}): another process \
                         (pid {}) answers on {}; last log lines:\n{}",
                        s.pid.map_or("unknown".to_string(), |p| p.to_string()),
                        node.http_addr,
                        proc::log_tail(&node, 10)
                    );
                }
            }
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            bail!(
                "node {id} (pid {}) does not answer on {} after {:?}; see {}",
                child.id(),
                node.http_addr,
                timeout,
                node.log_path().display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------- faults

/// Sends one admin request (with the admin token) to one node of `c`
/// (redirects only within the cluster, no retries beyond a short
/// deadline), and fails on anything but 200.
fn admin(
    c: &ClusterFile,
    node: &NodeEntry,
    method: Method,
    path: &str,
    body: &[u8],
) -> Result<client::Reply> {
    let reply = client::request(
        &Access::of(c)?,
        std::slice::from_ref(&node.http_addr),
        method,
        path,
        body,
        None,
        Instant::now() + Duration::from_secs(3),
    )
    .with_context(|| format!("node {} ({path})", node.id))?;
    if reply.status != 200 {
        bail!(
            "node {} refused {path}: {} {}",
            node.id,
            reply.status,
            reply.error_text()
        );
    }
    Ok(reply)
}

fn set_filter(c: &ClusterFile, node: &NodeEntry, drop: &[u64]) -> Result<()> {
    let body = json!({ "drop_to": drop, "drop_from": drop }).to_string();
    admin(c, node, Method::Post, "/admin/filter", body.as_bytes()).map(|_| ())
}

/// `kv partition SPEC`: cuts the cluster into the groups of `spec` (`1,2/3`).
pub(crate) fn partition(dir: &Path, spec: &str, warn: Warn) -> Result<String> {
    let c = ClusterFile::load(dir)?;
    let groups = parse_groups(spec)?;
    for id in groups.iter().flatten() {
        c.node(*id)?;
    }
    for node in &c.nodes {
        if !groups.iter().any(|g| g.contains(&node.id)) {
            bail!(
                "node {} is in no group of '{spec}'; list every node",
                node.id
            );
        }
    }
    for group in &groups {
        let others: Vec<u64> = c
            .nodes
            .iter()
            .map(|n| n.id)
            .filter(|id| !group.contains(id))
            .collect();
        for id in group {
            let node = c.node(*id)?;
            if proc::state(node) != ProcState::Up {
                // The filter lives in the node's memory; a node that is not
                // running cannot take it (and comes back unfiltered).
                warn(format!("warning: node {id} is not running; not filtered"));
                continue;
            }
            set_filter(&c, node, &others)?;
        }
    }
    let text: Vec<String> = groups
        .iter()
        .map(|g| {
            let ids: Vec<String> = g.iter().map(u64::to_string).collect();
            format!("{{{}}}", ids.join(","))
        })
        .collect();
    Ok(format!("partitioned: {}", text.join(" | ")))
}

/// `kv heal`: removes every node's partition filter.
pub(crate) fn heal(dir: &Path, warn: Warn) -> Result<String> {
    let c = ClusterFile::load(dir)?;
    let mut failed = Vec::new();
    for node in &c.nodes {
        if proc::state(node) != ProcState::Up {
            warn(format!("warning: node {} is not running; skipped", node.id));
            continue;
        }
        if let Err(e) = set_filter(&c, node, &[]) {
            failed.push(format!("{e:#}"));
        }
    }
    if !failed.is_empty() {
        bail!("heal incomplete: {}", failed.join("; "));
    }
    Ok("healed".to_owned())
}

/// Asks every running node for its status and returns the leader's, the
/// one with the highest term if a deposed leader has not noticed yet.
fn find_leader(c: &ClusterFile, deadline: Instant) -> Result<(NodeEntry, Status)> {
    let access = Access::of(c)?;
    loop {
        let best = c
            .nodes
            .iter()
            .filter(|n| proc::state(n) == ProcState::Up)
            .filter_map(|n| client::status(&access, &n.http_addr).ok().map(|s| (n, s)))
            .filter(|(_, s)| s.is_leader())
            .max_by_key(|(_, s)| s.term);
        if let Some((n, s)) = best {
            return Ok((n.clone(), s));
        }
        if Instant::now() >= deadline {
            bail!("no node reports itself leader (see `cdsctl kv status`)");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `kv transfer-leader N`: asks the leader to hand over to N and waits (at
/// most `timeout`) until N leads.
pub(crate) fn transfer_leader(dir: &Path, id: u64, timeout: Duration) -> Result<String> {
    let c = ClusterFile::load(dir)?;
    let target = c.node(id)?.clone();
    let deadline = Instant::now() + timeout;
    let (leader, _) = find_leader(&c, deadline)?;
    if leader.id == id {
        return Ok(format!("node {id} already leads"));
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
                return Ok(format!("node {id} leads (term {})", s.term));
            }
        }
        if Instant::now() >= deadline {
            bail!("node {id} did not become leader within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `kv snapshot N`: makes node N take a snapshot now.
pub(crate) fn snapshot(dir: &Path, id: u64) -> Result<String> {
    let c = ClusterFile::load(dir)?;
    let node = c.node(id)?;
    let reply = admin(&c, node, Method::Post, "/admin/snapshot", &[])?;
    Ok(format!(
        "node {id} snapshot: {}",
        String::from_utf8_lossy(&reply.body).trim()
    ))
}

// ---------------------------------------------------------------- membership

/// Waits until the leader's configuration satisfies `done`.
fn wait_voters(c: &ClusterFile, deadline: Instant, done: impl Fn(&[u64]) -> bool) -> Result<()> {
    loop {
        if let Ok((_, s)) = find_leader(c, deadline) {
            if done(&s.voters) {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            bail!("the configuration change did not finish in time (see `cdsctl kv status`)");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The new voter set is computed from the leader's report; an empty list
/// means the report lacks it, and acting on it would drop every voter.
fn check_voters_known(leader: &Status) -> Result<()> {
    if leader.voters.is_empty() {
        bail!(
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
        bail!(
            "the leader refused the change to voters {voters:?}: {} {}",
            reply.status,
            reply.error_text()
        );
    }
    Ok(())
}

/// `kv add-node`: starts a new node and makes it a voter (at most `timeout`).
pub(crate) fn add_node(dir: &Path, timeout: Duration, warn: Warn) -> Result<String> {
    let mut c = ClusterFile::load(dir)?;
    let deadline = Instant::now() + timeout;
    let (_, leader_status) = find_leader(&c, deadline)?;
    check_voters_known(&leader_status)?;
    let id = c.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
    let ports = cluster::pick_ports(2)?;
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
        cluster::write_node_config(&c.node_config(node, voters))?;
    }
    let new = c.node(id)?.clone();
    if c.tls {
        c.issue_cert(&new)?;
    }
    let child = proc::spawn_node(&new)?;
    c.node_mut(id)?.pid = Some(child.id());
    c.save(dir)?;
    // The running nodes' transports know only the peers of their config:
    // tell each where the new node listens before it becomes a member.
    let body = json!({ "id": id, "raft": new.raft_addr, "http": new.http_addr }).to_string();
    for node in c.nodes.iter().filter(|n| n.id != id) {
        if proc::state(node) != ProcState::Up {
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
    Ok(format!(
        "node {id} added (pid {}); voters {voters:?}",
        child.id()
    ))
}

/// `kv remove-node N`: removes N from the voters, then stops it.
pub(crate) fn remove_node(dir: &Path, id: u64, timeout: Duration) -> Result<String> {
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
        bail!("cannot remove node {id}: it is the only voter");
    }
    change_voters(&c, &voters, deadline)?;
    wait_voters(&c, deadline, |v| !v.contains(&id))?;
    let node = c.node(id)?.clone();
    let how = proc::stop(&node, Duration::from_secs(10))?;
    c.nodes.retain(|n| n.id != id);
    c.save(dir)?;
    Ok(format!(
        "node {id} removed from the voters ({how}); its data stays in {}",
        node.data_dir.display()
    ))
}

// ---------------------------------------------------------------- bench

fn bench(dir: &Path, clients: usize, duration: Duration, value_size: usize) -> Result<()> {
    check_clients(clients)?;
    let report = bench::run(bench_targets(dir)?, clients, duration, value_size)?;
    out!("{}", report.text);
    if report.ok == 0 {
        bail!("no put succeeded");
    }
    Ok(())
}

fn check_clients(clients: usize) -> Result<()> {
    if clients == 0 || clients > 4096 {
        bail!("--clients must be between 1 and 4096, got {clients}");
    }
    Ok(())
}

/// The HTTP addresses a load generator sends to: the leader first, so puts
/// skip the redirect, then the other running nodes as fallbacks if
/// leadership moves during the run.
fn bench_targets(dir: &Path) -> Result<bench::Targets> {
    let c = ClusterFile::load(dir)?;
    let tls = match c.ca_path() {
        Some(ca) => Some(tokio_rustls::TlsConnector::from(
            crate::tls::http_rustls_client(&ca)
                .with_context(|| format!("the cluster CA {}", ca.display()))?,
        )),
        None => None,
    };
    let (leader, _) = find_leader(&c, Instant::now() + Duration::from_secs(10))?;
    let mut nodes = vec![leader.http_addr.clone()];
    nodes.extend(
        live_http(&c)?
            .into_iter()
            .filter(|a| *a != leader.http_addr),
    );
    // Several groups: start from the nodes' own view of who leads what,
    // so the clients do not pay a redirect per group first.
    let mut leaders = std::collections::HashMap::new();
    if c.groups > 1 {
        let access = Access::of(&c)?;
        let http: std::collections::BTreeMap<u64, &str> = c
            .nodes
            .iter()
            .map(|n| (n.id, n.http_addr.as_str()))
            .collect();
        for n in &c.nodes {
            let Ok(view) = client::group_leaders(&access, &n.http_addr) else {
                continue;
            };
            for (g, l) in view {
                if let Some(a) = http.get(&l) {
                    leaders.entry(g).or_insert_with(|| (*a).to_owned());
                }
            }
        }
    }
    Ok(bench::Targets {
        nodes,
        tls,
        groups: (c.group, c.groups),
        leaders,
    })
}

/// The background load of `cdsctl top`: `bench`'s closed-loop PUTs, run
/// until stopped. Returns the running generator and its start message.
pub(crate) fn load_start(
    dir: &Path,
    clients: usize,
    value_size: usize,
) -> Result<(bench::Background, String)> {
    check_clients(clients)?;
    let bg = bench::Background::start(bench_targets(dir)?, clients, value_size)?;
    let msg = format!("load started: {clients} clients, {value_size} B puts");
    Ok((bg, msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20s").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("abc").is_err());
    }

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
    }
}
