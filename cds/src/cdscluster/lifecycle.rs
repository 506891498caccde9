//! Starting, inspecting, stopping and faulting a local CDS cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::directory::{proc_dir, CdsCluster, ProcName, Role, CDS_FILE};
use crate::blockserver::process::BlockServerFileConfig;
use crate::devcluster::directory::{new_token, pick_ports, NodeEntry};
use crate::devcluster::process::{self, NodeProgram, ProcState};
use crate::devcluster::NodeStop;
use crate::error::{bail, Context, Describe, Error, Result};
use crate::master::api::{ClusterView, CreateGroups, MasterStatus};
use crate::master::process::{MasterConfig, MasterPeer};
use crate::master::{Group, Location};
use crate::snapshotworker::process::WorkerConfig;
use crate::topology::Topology;

/// BlockGroups `up` creates unless told otherwise: enough that a few
/// volumes spread over every server, few enough that an idle dev cluster
/// costs little.
pub const DEFAULT_GROUPS: u64 = 32;
/// Bounds `up` accepts.
const MAX_MASTERS: u64 = 7;
pub(super) const MAX_SERVERS: u64 = 32;
const MAX_DISKS: u64 = 8;
const MAX_WORKERS: u64 = 8;
const MAX_UP_GROUPS: u64 = 4096;
/// Time between polls while waiting.
const POLL: Duration = Duration::from_millis(100);
/// What each process gets to stop when `up` gives up.
const CLEANUP_GRACE: Duration = Duration::from_secs(5);
pub(super) const LOG_LINES: usize = 8;

/// What `up` starts.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The `cdsctl` binary (run as `cdsctl cds master|blockserver --config F`).
    pub exe: PathBuf,
    pub masters: u64,
    pub servers: u64,
    pub disks: u64,
    pub groups: u64,
    /// SnapshotWorkers (0: snapshot tasks wait until one is started).
    pub workers: u64,
    /// Their pace: groups per second a task's steps start on (0: no
    /// limit).
    pub worker_rate: u32,
    /// Where each BlockServer stands and its disks (then `servers` and
    /// `disks` are the topology's); `None`: `servers` nodes dealt over
    /// three zones, `disks` disks each.
    pub topology: Option<Topology>,
    pub tick_ms: u64,
    /// How long a BlockServer may go unheard before the Master repairs
    /// its replicas elsewhere.
    pub repair_grace: Duration,
    /// How long a replica removed by replica GC stays in the trash.
    pub trash_keep: Duration,
    /// Entries between a BlockGroup replica's snapshots.
    pub snapshot_every: u64,
    /// Snapshot bytes per second a group's leader sends to a replica
    /// catching up (0: unlimited).
    pub install_bytes_per_s: u64,
    /// How long `up` waits for the cluster to serve.
    pub timeout: Duration,
}

impl UpOptions {
    /// 3 Masters, 3 BlockServers with 2 disks each, [`DEFAULT_GROUPS`]
    /// groups, one SnapshotWorker, a 50 ms tick, 60 s to start.
    pub fn new(exe: PathBuf) -> UpOptions {
        UpOptions {
            exe,
            masters: 3,
            servers: 3,
            disks: 2,
            groups: DEFAULT_GROUPS,
            workers: 1,
            worker_rate: 0,
            topology: None,
            tick_ms: 50,
            repair_grace: Duration::from_millis(crate::master::process::DEFAULT_REPAIR_GRACE_MS),
            trash_keep: crate::blockserver::limits::TRASH_KEEP,
            snapshot_every: crate::blockserver::limits::SNAPSHOT_EVERY,
            install_bytes_per_s: 0,
            timeout: Duration::from_secs(60),
        }
    }
}

pub(super) fn program(exe: &Path, role: Role) -> NodeProgram {
    NodeProgram {
        exe: exe.to_path_buf(),
        args: vec![
            "cds".into(),
            match role {
                Role::Master => "master",
                Role::BlockServer => "blockserver",
                Role::SnapshotWorker => "snapshot-worker",
            }
            .into(),
        ],
    }
}

/// Starts a cluster in `dir` (new or empty) and waits until every group
/// has a leader. On failure nothing is left running and the error quotes
/// the processes' last log lines.
pub fn up(dir: &Path, o: &UpOptions) -> Result<CdsCluster> {
    let mut o = o.clone();
    if let Some(t) = &o.topology {
        t.check().map_err(|e| Error::Invalid(e.to_string()))?;
        o.servers = t.nodes.len() as u64;
    }
    let o = &o;
    let check = |what: &str, v: u64, lo: u64, hi: u64| -> Result<()> {
        if !(lo..=hi).contains(&v) {
            bail!(Invalid, "--{what} must be between {lo} and {hi}, got {v}");
        }
        Ok(())
    };
    check("masters", o.masters, 1, MAX_MASTERS)?;
    check("servers", o.servers, 3, MAX_SERVERS)?;
    check("disks", o.disks, 1, MAX_DISKS)?;
    check("groups", o.groups, 1, MAX_UP_GROUPS)?;
    check("workers", o.workers, 0, MAX_WORKERS)?;
    check(
        "worker-rate",
        u64::from(o.worker_rate),
        0,
        u64::from(crate::snapshotworker::process::MAX_GROUPS_PER_SECOND),
    )?;
    check("tick-ms", o.tick_ms, 1, 10_000)?;
    {
        use crate::blockserver::limits::{
            MAX_SNAPSHOT_EVERY, MIN_INSTALL_BYTES_PER_S, MIN_SNAPSHOT_EVERY,
        };
        check(
            "snapshot-every",
            o.snapshot_every,
            MIN_SNAPSHOT_EVERY,
            MAX_SNAPSHOT_EVERY,
        )?;
        if o.install_bytes_per_s != 0 && o.install_bytes_per_s < MIN_INSTALL_BYTES_PER_S {
            bail!(
                Invalid,
                "--install-rate must be 0 (unlimited) or at least {} KiB/s, got {} bytes/s",
                MIN_INSTALL_BYTES_PER_S >> 10,
                o.install_bytes_per_s
            );
        }
    }
    check(
        "repair-grace (ms)",
        o.repair_grace.as_millis() as u64,
        1_000,
        86_400_000,
    )?;
    check_free(dir)?;
    crate::secret::private_dir(dir)?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let ports = pick_ports(2 * (o.masters + o.servers) as usize)?;
    let (mports, sports) = ports.split_at(2 * o.masters as usize);
    let token = new_token()?;
    let admin_token = new_token()?;
    let cluster_id = u64::from_str_radix(&new_token()?[..12], 16).unwrap_or(1);
    let peers: BTreeMap<u64, MasterPeer> = (1..=o.masters)
        .map(|i| {
            let p = &mports[2 * (i - 1) as usize..];
            (
                i,
                MasterPeer {
                    raft: p[0],
                    http: p[1],
                },
            )
        })
        .collect();
    let mut c = CdsCluster {
        cluster_id,
        token: token.clone(),
        admin_token: admin_token.clone(),
        masters: Vec::new(),
        servers: Vec::new(),
        workers: Vec::new(),
    };
    for (&id, p) in &peers {
        let name = ProcName {
            role: Role::Master,
            id,
        };
        let data_dir = proc_dir(&dir, name);
        let cfg = MasterConfig {
            id,
            cluster_id,
            token: token.clone(),
            admin_token: admin_token.clone(),
            data_dir: data_dir.clone(),
            peers: peers.clone(),
            tick_ms: o.tick_ms,
            snapshot_every: 1_000,
            repair_grace_ms: o.repair_grace.as_millis() as u64,
        };
        write_config(&data_dir, &cfg)?;
        c.masters.push(NodeEntry {
            id,
            pid: None,
            raft_addr: p.raft.to_string(),
            http_addr: p.http.to_string(),
            data_dir,
        });
    }
    let masters: Vec<String> = peers.values().map(|p| p.http.to_string()).collect();
    for i in 1..=o.servers {
        let name = ProcName {
            role: Role::BlockServer,
            id: i,
        };
        let data_dir = proc_dir(&dir, name);
        let p = &sports[2 * (i - 1) as usize..];
        let decl = o
            .topology
            .as_ref()
            .and_then(|t| t.nodes.get((i - 1) as usize));
        let disks = decl.map_or(o.disks, |d| u64::from(d.disk_count()));
        let pools = o
            .topology
            .as_ref()
            .map_or_else(Vec::new, |t| t.disk_pools((i - 1) as usize));
        let location = decl.map_or_else(
            // Three zones, servers dealt over them in turn.
            || Location {
                region: "local".into(),
                zone: format!("z{}", (i - 1) % 3 + 1),
                rack: format!("r{}", (i - 1) / 3 + 1),
            },
            |d| d.location(),
        );
        let cfg = BlockServerFileConfig {
            id: i,
            cluster_id,
            token: token.clone(),
            raft_addr: p[0],
            data_addr: p[1],
            data_dir: data_dir.clone(),
            disks: (1..=disks)
                .map(|d| data_dir.join(format!("disk{d}")))
                .collect(),
            pools,
            masters: masters.clone(),
            location,
            tick_ms: o.tick_ms,
            heartbeat_ms: 500,
            trash_keep_ms: o.trash_keep.as_millis() as u64,
            snapshot_every: o.snapshot_every,
            install_bytes_per_s: o.install_bytes_per_s,
        };
        write_config(&data_dir, &cfg)?;
        c.servers.push(NodeEntry {
            id: i,
            pid: None,
            raft_addr: p[0].to_string(),
            http_addr: p[1].to_string(),
            data_dir,
        });
    }
    for i in 1..=o.workers {
        let name = ProcName {
            role: Role::SnapshotWorker,
            id: i,
        };
        let data_dir = proc_dir(&dir, name);
        let cfg = WorkerConfig {
            id: i,
            cluster_id,
            token: token.clone(),
            admin_token: admin_token.clone(),
            masters: masters.clone(),
            data_dir: data_dir.clone(),
            poll_ms: 100,
            groups_per_second: o.worker_rate,
        };
        write_config(&data_dir, &cfg)?;
        c.workers.push(NodeEntry {
            id: i,
            pid: None,
            raft_addr: String::new(),
            http_addr: String::new(),
            data_dir,
        });
    }
    c.save(&dir)?;
    let mut children: Vec<(ProcName, Child)> = Vec::new();
    let names: Vec<ProcName> = c.all().into_iter().map(|(n, _)| n).collect();
    for name in names {
        let entry = c.entry(name)?.clone();
        match process::spawn_node(&program(&o.exe, name.role), &entry) {
            Ok(child) => {
                c.entry_mut(name)?.pid = Some(child.id());
                children.push((name, child));
            }
            Err(e) => {
                c.save(&dir)?;
                stop_all(&c);
                return Err(e);
            }
        }
    }
    c.save(&dir)?;
    match wait_serving(&c, o, &mut children) {
        Ok(()) => Ok(c),
        Err(e) => {
            stop_all(&c);
            let logs: Vec<String> = c
                .all()
                .into_iter()
                .map(|(n, e)| {
                    format!(
                        "--- {n} ({}):\n{}",
                        e.log_path().display(),
                        process::log_tail(e, LOG_LINES)
                    )
                })
                .collect();
            Err(e.during(format!(
                "starting the CDS cluster in {} (processes stopped); last log lines:\n{}",
                dir.display(),
                logs.join("\n")
            )))
        }
    }
}

pub(super) fn write_config<T: Serialize>(data_dir: &Path, cfg: &T) -> Result<()> {
    crate::secret::private_dir(data_dir)?;
    let text = serde_json::to_string_pretty(cfg).context("encoding a config")?;
    crate::secret::write_private(&data_dir.join("config.json"), text.as_bytes())
}

fn check_free(dir: &Path) -> Result<()> {
    if dir.join(CDS_FILE).exists() {
        bail!(
            Cluster,
            "{} already holds a CDS cluster; `cdsctl cds down --dir {}` stops it, \
             and removing the directory starts afresh",
            dir.display(),
            dir.display()
        );
    }
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            Invalid,
            "{} exists and is not empty; refusing to write a cluster into it",
            dir.display()
        );
    }
    Ok(())
}

/// Polls `f` until it gives a value, a started process exits, or the
/// deadline passes (`what` names what was awaited).
fn wait_for<T>(
    what: &str,
    deadline: Instant,
    children: &mut [(ProcName, Child)],
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let mut last = String::new();
    loop {
        for (name, child) in children.iter_mut() {
            if let Some(code) = child.try_wait().context("checking a process")? {
                bail!(Cluster, "{name} exited during startup ({code})");
            }
        }
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = e.to_string(),
        }
        if Instant::now() >= deadline {
            bail!(Cluster, "timed out waiting for {what} (last: {last})");
        }
        std::thread::sleep(POLL);
    }
}

fn wait_serving(c: &CdsCluster, o: &UpOptions, children: &mut [(ProcName, Child)]) -> Result<()> {
    let deadline = Instant::now() + o.timeout;
    let master = c.master();
    let admin = c.admin();
    wait_for("a Master leader", deadline, children, || {
        Ok(c.master_addrs()
            .iter()
            .filter_map(|a| master.status_of(a).ok())
            .find(|s| s.role == "leader")
            .map(|_| ()))
    })?;
    wait_for("every BlockServer to register", deadline, children, || {
        let v: ClusterView = master.get("/v1/cluster").map_err(master_err)?;
        Ok((v.servers.len() as u64 >= o.servers).then_some(()))
    })?;
    // `groups` groups in each pool.
    let pools = o
        .topology
        .as_ref()
        .map_or_else(|| vec![crate::pool::default_pool()], Topology::pool_names);
    for pool in &pools {
        let _: Vec<Group> = admin
            .post(
                "/v1/groups",
                &CreateGroups {
                    count: o.groups,
                    replication: 3,
                    pool: pool.clone(),
                },
            )
            .map_err(master_err)?;
    }
    let all = o.groups * pools.len() as u64;
    wait_for("every group to elect a leader", deadline, children, || {
        let v: ClusterView = master.get("/v1/cluster").map_err(master_err)?;
        Ok((v.leaders.len() as u64 >= all).then_some(()))
    })
}

fn master_err(e: crate::master::client::MasterCallError) -> Error {
    Error::Cluster(format!("Master: {e}"))
}

fn stop_all(c: &CdsCluster) {
    for (name, e) in c.all() {
        if let Err(err) = process::stop(e, CLEANUP_GRACE) {
            eprintln!("warning: stopping {name}: {err}");
        }
    }
}

/// Stops every process of the cluster in `dir`: SIGTERM to all, SIGKILL
/// to those still running after `grace`.
pub fn down(dir: &Path, grace: Duration) -> Result<Vec<(ProcName, NodeStop)>> {
    let c = CdsCluster::load(dir)?;
    let mut running = Vec::new();
    let mut out = Vec::new();
    for (name, e) in c.all() {
        if process::state(e) == ProcState::Down {
            out.push((name, NodeStop::NotRunning));
            continue;
        }
        let _ = process::signal(e, libc::SIGCONT);
        let _ = process::signal(e, libc::SIGTERM);
        running.push((name, e));
    }
    let deadline = Instant::now() + grace;
    let mut failed = Vec::new();
    for (name, e) in running {
        if process::wait_down(e, deadline.saturating_duration_since(Instant::now())) {
            out.push((name, NodeStop::Stopped));
            continue;
        }
        match process::kill(e) {
            Ok(()) => out.push((name, NodeStop::Killed { grace })),
            Err(err) => failed.push(format!("{name}: {err}")),
        }
    }
    if !failed.is_empty() {
        bail!(Cluster, "{}", failed.join("; "));
    }
    out.sort_by_key(|(n, _)| *n);
    Ok(out)
}

/// One process as `cds status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ProcReport {
    pub name: String,
    pub pid: Option<u32>,
    /// `up`, `paused` or `down`.
    pub state: String,
    /// Raft address; for a BlockServer also its data address in `addr`.
    pub raft_addr: String,
    pub addr: String,
    /// A Master's own status, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master: Option<MasterStatus>,
    /// A BlockServer's replicas and how many it leads (from the Master).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leads: Option<u64>,
    /// Milliseconds since the Master last heard the BlockServer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_heard_ms: Option<u64>,
}

/// Every process's report; the cluster view when a Master leads.
pub fn status(dir: &Path) -> Result<(Vec<ProcReport>, Option<ClusterView>)> {
    let c = CdsCluster::load(dir)?;
    let master = c.master();
    let view: Option<ClusterView> = master.get("/v1/cluster").ok();
    let mut out = Vec::new();
    for (name, e) in c.all() {
        let state = process::state(e);
        let mut r = ProcReport {
            name: name.to_string(),
            pid: e.pid,
            state: state.to_string(),
            raft_addr: e.raft_addr.clone(),
            addr: e.http_addr.clone(),
            master: None,
            replicas: None,
            leads: None,
            last_heard_ms: None,
        };
        match name.role {
            Role::Master if state == ProcState::Up => {
                r.master = master.status_of(&e.http_addr).ok();
            }
            Role::BlockServer => {
                if let Some(v) = &view {
                    r.replicas = Some(
                        v.groups
                            .iter()
                            .filter(|g| g.replicas.contains(&e.id))
                            .count() as u64,
                    );
                    r.leads = Some(v.leaders.values().filter(|&&s| s == e.id).count() as u64);
                    r.last_heard_ms = v.last_heard_ms.get(&e.id).copied();
                }
            }
            _ => {}
        }
        out.push(r);
    }
    Ok((out, view))
}

/// A fault `cds` can inject into one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL: a crash.
    Kill,
    /// SIGSTOP: a hung process.
    Pause,
    /// SIGCONT.
    Resume,
}

/// Injects `fault` into process `name`.
pub fn fault(dir: &Path, name: ProcName, fault: Fault) -> Result<()> {
    let c = CdsCluster::load(dir)?;
    let e = c.entry(name)?;
    if process::state(e) == ProcState::Down {
        bail!(Cluster, "{name} is not running");
    }
    match fault {
        Fault::Kill => process::kill(e),
        Fault::Pause => process::signal(e, libc::SIGSTOP),
        Fault::Resume => process::signal(e, libc::SIGCONT),
    }
}

/// Starts process `name` (which must be down) again from its config and
/// data; returns its pid once it has run for a moment without exiting.
pub fn restart(dir: &Path, exe: &Path, name: ProcName) -> Result<u32> {
    let mut c = CdsCluster::load(dir)?;
    let e = c.entry(name)?.clone();
    if process::state(&e) != ProcState::Down {
        bail!(Cluster, "{name} is running; `cdsctl cds kill {name}` first");
    }
    let mut child = process::spawn_node(&program(exe, name.role), &e)?;
    c.entry_mut(name)?.pid = Some(child.id());
    c.save(dir)?;
    let settle = Instant::now() + Duration::from_millis(500);
    while Instant::now() < settle {
        if let Some(code) = child.try_wait().context("checking the process")? {
            bail!(
                Cluster,
                "{name} exited right after restart ({code}); last log lines:\n{}",
                process::log_tail(&e, LOG_LINES)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child.id())
}
