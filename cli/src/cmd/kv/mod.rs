//! `cdsctl kv ...`: a local cluster of node processes serving a replicated
//! key-value store, and the client commands that use and abuse it.
//!
//! What the commands do lives in [`cds::devcluster`] (the processes and
//! the operations on them) and [`cds::client`] (the requests); this module
//! parses the arguments, calls them and prints what they return. `up`
//! spawns detached `cdsctl node` processes and returns; every later
//! command finds them again through the cluster directory
//! (`DIR/cluster.json`).

// `pub(crate)`: `cdsctl top` runs the same load.
pub(crate) mod bench;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cds::client::{self, Access, Method};
use cds::devcluster::directory::ClusterFile;
use cds::devcluster::process::ProcState;
use cds::devcluster::{self as cluster, NodeProgram, Outcome};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

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

fn warn_stderr(w: String) {
    eprintln!("{w}");
}

/// Prints an operation's outcome: the CLI side of the operations that
/// `cdsctl top` also calls.
fn say(outcome: cds::Result<Outcome>) -> Result<()> {
    outln!("{}", outcome?);
    Ok(())
}

/// The program a node process runs: this `cdsctl`, as `cdsctl node`.
pub(crate) fn node_program() -> Result<NodeProgram> {
    let exe = std::env::current_exe().context("finding the cdsctl executable to run nodes")?;
    Ok(NodeProgram::cdsctl(exe))
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
        KvCommand::Kill { id, dir } => say(cluster::kill(&dir.dir, id)),
        KvCommand::Pause { id, dir } => say(cluster::pause(&dir.dir, id)),
        KvCommand::Resume { id, dir } => say(cluster::resume(&dir.dir, id)),
        KvCommand::Restart { id, dir, timeout } => {
            say(cluster::restart(&node_program()?, &dir.dir, id, timeout))
        }
        KvCommand::Partition { groups, dir } => say(cluster::parse_groups(&groups)
            .and_then(|g| cluster::partition(&dir.dir, &g, &mut warn_stderr))),
        KvCommand::Heal { dir } => say(cluster::heal(&dir.dir, &mut warn_stderr)),
        KvCommand::TransferLeader { id, dir, wait } => {
            say(cluster::transfer_leader(&dir.dir, id, wait.timeout))
        }
        KvCommand::AddNode { dir, wait } => say(cluster::add_node(
            &node_program()?,
            &dir.dir,
            wait.timeout,
            &mut warn_stderr,
        )),
        KvCommand::RemoveNode { id, dir, wait } => {
            say(cluster::remove_node(&dir.dir, id, wait.timeout))
        }
        KvCommand::Snapshot { id, dir } => say(cluster::snapshot(&dir.dir, id)),
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
    let started = cluster::up(&node_program()?, n, dir, timeout, tls, groups)?;
    outln!(
        "cluster of {n} up in {} (leader: node {})",
        started.dir.display(),
        started.leader
    );
    print_table(&started.cluster)
}

fn down(dir: &Path, timeout: Duration) -> Result<()> {
    for (id, how) in cluster::down(dir, timeout)? {
        outln!("node {id}: {how}");
    }
    Ok(())
}

// ---------------------------------------------------------------- status

/// The status table: one row per node, its process state and, if it
/// answered, its own report.
fn print_table(c: &ClusterFile) -> Result<()> {
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
    for r in cluster::reports(c)? {
        let node = &r.node;
        let pid = node.pid.map_or("-".to_owned(), |p| p.to_string());
        match &r.status {
            Some(s) => outln!(
                "{:>3} {:>8} {:<7} {:<21} {:<21} {:<13} {:>5} {:>6} {:>8} {:>8}",
                node.id,
                pid,
                r.state.to_string(),
                node.http_addr,
                node.raft_addr,
                s.role,
                s.term,
                s.leader.map_or("-".to_owned(), |l| l.to_string()),
                s.commit,
                s.applied
            ),
            None => outln!(
                "{:>3} {:>8} {:<7} {:<21} {:<21} {:<13} {:>5} {:>6} {:>8} {:>8}",
                node.id,
                pid,
                r.state.to_string(),
                node.http_addr,
                node.raft_addr,
                if r.state == ProcState::Up {
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

/// A write of this invocation: its own session (a random id), seq 1, so
/// the retries `client::request` makes after an unknown outcome apply it
/// once.
fn write_stamp() -> Result<client::Stamp> {
    Ok(client::Session::new()?.next_stamp())
}

fn put(dir: &Path, key: &str, value: &[u8], timeout: Duration) -> Result<()> {
    let c = ClusterFile::load(dir)?;
    let path = format!("/kv/{}", client::encode_key(key));
    let reply = client::request(
        &Access::of(&c)?,
        &cluster::live_http(&c)?,
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
        &cluster::live_http(&c)?,
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
        &cluster::live_http(&c)?,
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
        &cluster::live_http(&c)?,
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
            cds::tls::http_rustls_client(&ca)
                .with_context(|| format!("the cluster CA {}", ca.display()))?,
        )),
        None => None,
    };
    let (leader, _) = cluster::find_leader(&c, Instant::now() + Duration::from_secs(10))?;
    let mut nodes = vec![leader.http_addr.clone()];
    nodes.extend(
        cluster::live_http(&c)?
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
}
