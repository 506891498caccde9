//! One BlockServer process: [`run`] serves a BlockServer until SIGTERM or
//! SIGINT, under the Master's direction.
//!
//! At start it registers with the Master (its id, addresses, location and
//! disks); then every `heartbeat_ms` it reports each replica it hosts
//! (role, term, applied index) and the Master answers with the groups it
//! must host and where every server listens. The server starts the
//! replicas it lacks (a restart finds their files on its disks and goes
//! on from them) and tells its transport where the peers are. A replica
//! that fails (a storage or engine error, its disk failed) stops and is
//! reported lost; the process goes on serving the others, and the Master
//! rebuilds the lost ones elsewhere.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::limits::REPORT_WITHIN;
use super::{BlockServer, BlockServerConfig};
use crate::cdscluster::fault_file::FaultWatch;
use crate::error::{bail, Context, Error, Result};
use crate::master::api::{
    Assignment, ConfReport, GcOrder, Heartbeat, InstallProgress, ReplicaReport,
};
use crate::master::client::{MasterCallError, MasterClient};
use crate::master::{Location, Server};

/// How long one call to the Master may take, retries included.
const MASTER_DEADLINE: Duration = Duration::from_secs(5);

/// A BlockServer process's config file (`cdsctl cds blockserver --config
/// FILE`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockServerFileConfig {
    pub id: u64,
    pub cluster_id: u64,
    /// Between servers, from clients, and to the Master.
    pub token: String,
    pub raft_addr: SocketAddr,
    pub data_addr: SocketAddr,
    /// Holds the pid file.
    pub data_dir: PathBuf,
    /// Its disks (data directories); at least one.
    pub disks: Vec<PathBuf>,
    /// The pool of each disk, in order (empty: all in the default pool).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<String>,
    /// The Masters' HTTP addresses.
    pub masters: Vec<String>,
    #[serde(default)]
    pub location: Location,
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// How long a replica removed by replica GC stays in the trash.
    #[serde(default = "default_trash_keep_ms")]
    pub trash_keep_ms: u64,
    /// Entries between a replica's snapshots (engine exports); a replica
    /// that falls further behind than the log kept catches up by a
    /// snapshot install.
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every: u64,
    /// Snapshot bytes per second a group's leader sends to a replica
    /// catching up (0: unlimited): bounds what a repair takes from the
    /// network and the disks.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub install_bytes_per_s: u64,
}

fn default_snapshot_every() -> u64 {
    super::limits::SNAPSHOT_EVERY
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn default_trash_keep_ms() -> u64 {
    super::limits::TRASH_KEEP.as_millis() as u64
}

fn default_tick_ms() -> u64 {
    50
}

fn default_heartbeat_ms() -> u64 {
    1_000
}

impl BlockServerFileConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let cfg: Self = crate::secret::read_private_json(path)?;
        crate::secret::check_token(&cfg.token)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        if cfg.disks.is_empty() || cfg.masters.is_empty() {
            bail!(
                Invalid,
                "invalid config file {}: disks and masters must not be empty",
                path.display()
            );
        }
        if !cfg.pools.is_empty() && cfg.pools.len() != cfg.disks.len() {
            bail!(
                Invalid,
                "invalid config file {}: {} pools for {} disks (one per disk, or none)",
                path.display(),
                cfg.pools.len(),
                cfg.disks.len()
            );
        }
        for p in &cfg.pools {
            if let Err(e) = crate::pool::check_name(p) {
                bail!(Invalid, "invalid config file {}: {e}", path.display());
            }
        }
        if !(super::limits::MIN_SNAPSHOT_EVERY..=super::limits::MAX_SNAPSHOT_EVERY)
            .contains(&cfg.snapshot_every)
            || cfg.install_bytes_per_s != 0
                && cfg.install_bytes_per_s < super::limits::MIN_INSTALL_BYTES_PER_S
        {
            bail!(
                Invalid,
                "invalid config file {}: snapshot_every {} to {}, install_bytes_per_s 0 or at least {}",
                path.display(),
                super::limits::MIN_SNAPSHOT_EVERY,
                super::limits::MAX_SNAPSHOT_EVERY,
                super::limits::MIN_INSTALL_BYTES_PER_S
            );
        }
        if !(1..=10_000).contains(&cfg.tick_ms) || !(10..=60_000).contains(&cfg.heartbeat_ms) {
            bail!(
                Invalid,
                "invalid config file {}: tick_ms 1 to 10000, heartbeat_ms 10 to 60000",
                path.display()
            );
        }
        Ok(cfg)
    }
}

/// The size of the file system holding `dir` (the disk's capacity, as
/// registered with the Master; not what is free).
fn capacity(dir: &Path) -> Result<u64> {
    super::space(dir)
        .map(|(total, _)| total)
        .with_context(|| format!("statvfs {}", dir.display()))
}

/// Serves the BlockServer of `config_path` until a signal.
pub fn run(config_path: &Path) -> Result<()> {
    let cfg = BlockServerFileConfig::load(config_path)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let id = cfg.id;
    rt.block_on(serve(cfg))
        .with_context(|| format!("blockserver {id} ({})", config_path.display()))
}

/// Calls the Master off the async threads (its client blocks).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, MasterCallError> + Send + 'static,
) -> Result<T, MasterCallError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(MasterCallError::Protocol(format!("task failed: {e}"))))
}

async fn serve(cfg: BlockServerFileConfig) -> Result<()> {
    let id = cfg.id;
    crate::secret::private_dir(&cfg.data_dir)?;
    let signal = crate::kv::node::stop_signal()?;
    let mut disks = Vec::new();
    for d in &cfg.disks {
        std::fs::create_dir_all(d).with_context(|| format!("creating disk {}", d.display()))?;
        disks.push(capacity(d)?);
    }
    let mut sc = BlockServerConfig::new(id, cfg.cluster_id, cfg.token.clone(), &cfg.disks[0]);
    sc.disks = cfg.disks.clone();
    sc.pools = cfg.pools.clone();
    sc.raft_listen = cfg.raft_addr;
    sc.data_listen = cfg.data_addr;
    sc.tick = Duration::from_millis(cfg.tick_ms);
    sc.trash_keep = Duration::from_millis(cfg.trash_keep_ms);
    sc.snapshot_every = cfg.snapshot_every;
    sc.install_bytes_per_s = cfg.install_bytes_per_s;
    let server = BlockServer::start(sc).await.map_err(|e| Error::Runtime {
        what: "cannot start the BlockServer".into(),
        error: e.to_string(),
    })?;
    // Faults in force before a restart apply before any replica starts:
    // a failed disk's replicas are not started.
    let mut faults = FaultWatch::new(&cfg.data_dir, format!("blockserver {id}"));
    apply_faults(&server, &mut faults).await;
    let stored = server.start_stored().map_err(|e| Error::Runtime {
        what: "cannot start the replicas on its disks".into(),
        error: e.to_string(),
    })?;
    if !stored.is_empty() {
        eprintln!(
            "blockserver {id}: {} replicas found on its disks",
            stored.len()
        );
    }
    let master = Arc::new(MasterClient::new(
        cfg.masters.clone(),
        cfg.token.clone(),
        MASTER_DEADLINE,
    ));
    let me = Server {
        id,
        raft_addr: server.raft_addr().to_string(),
        data_addr: server.data_addr().to_string(),
        location: cfg.location.clone(),
        disks,
        drained: false,
        pools: cfg.pools.clone(),
    };
    let pid_path = crate::kv::node::write_pid(&cfg.data_dir)?;
    eprintln!(
        "blockserver {id}: serving (pid {}, raft {}, data {}, disks {:?})",
        std::process::id(),
        me.raft_addr,
        me.data_addr,
        cfg.disks
    );
    let work = directed(server.clone(), master, me, cfg.heartbeat_ms, faults);
    let outcome = tokio::select! {
        name = signal => {
            eprintln!("blockserver {id}: {name} received, shutting down");
            Ok(())
        }
        e = work => Err(e),
    };
    server.shutdown().await;
    let _ = std::fs::remove_file(&pid_path);
    outcome
}

/// Registers, then heartbeats and carries out the assignment, forever;
/// returns only the error that must stop the process.
async fn directed(
    server: BlockServer,
    master: Arc<MasterClient>,
    me: Server,
    heartbeat_ms: u64,
    mut faults: FaultWatch,
) -> Error {
    let id = me.id;
    let every = Duration::from_millis(heartbeat_ms);
    let mut registered = false;
    let stepping: Stepping = Arc::default();
    let mut last_reports: BTreeMap<u64, ReplicaReport> = BTreeMap::new();
    loop {
        apply_faults(&server, &mut faults).await;
        // A replica that failed stops (its disk may have lost what it
        // said was synced); the others go on. Disks are probed, and the
        // ones failed on purpose applied.
        for (g, node, _) in server.groups() {
            if let Some(f) = node.failure() {
                if server.lose(g, &f).await {
                    eprintln!("blockserver {id}: group {g}: replica stopped: {f}");
                }
            }
        }
        for (d, lost) in server.check_disks().await {
            eprintln!(
                "blockserver {id}: disk {} failed; replicas lost: {lost:?}",
                d + 1
            );
        }
        if !registered {
            let (m, s) = (master.clone(), me.clone());
            match blocking(move || m.post::<_, serde_json::Value>("/v1/servers", &s)).await {
                Ok(_) => {
                    eprintln!("blockserver {id}: registered with the Master");
                    registered = true;
                }
                Err(e) if e.kind() == "server_conflict" => {
                    return Error::Cluster(format!("the Master refused registration: {e}"))
                }
                Err(e) => eprintln!("blockserver {id}: cannot register yet: {e}"),
            }
        }
        if registered {
            let mut replicas = Vec::new();
            for (g, node, disk) in server.groups() {
                // A replica busy on a slow disk may take long to answer:
                // its previous report goes instead, so one slow disk does
                // not hold back the heartbeat and make the whole server
                // look dead.
                let status = tokio::time::timeout(REPORT_WITHIN, node.status()).await;
                let Ok(status) = status else {
                    if let Some(r) = last_reports.get(&g) {
                        replicas.push(r.clone());
                    }
                    continue;
                };
                if let Ok(st) = status {
                    let r = &st.raft;
                    let m = &r.membership;
                    replicas.push(ReplicaReport {
                        group: g,
                        leader: r.role == raft_core::Role::Leader,
                        term: r.term,
                        applied: r.applied,
                        conf: Some(ConfReport {
                            voters: m.voters.clone(),
                            outgoing: m.outgoing.clone(),
                            learners: m.learners.clone(),
                            index: r.conf_index,
                            committed: r.conf_index <= r.commit,
                        }),
                        failed: node.failure(),
                        disk: Some(disk as u32),
                        installing: r.receiving_snapshot.map(|p| InstallProgress {
                            index: p.index,
                            have_bytes: p.have_bytes,
                            total_bytes: p.total_bytes,
                        }),
                        sending_to: r.sending_snapshots.keys().copied().collect(),
                    });
                }
            }
            for (g, why) in server.lost() {
                replicas.push(ReplicaReport {
                    group: g,
                    leader: false,
                    term: 0,
                    applied: 0,
                    conf: None,
                    failed: Some(why),
                    disk: None,
                    installing: None,
                    sending_to: Vec::new(),
                });
            }
            last_reports = replicas
                .iter()
                .filter(|r| r.conf.is_some())
                .map(|r| (r.group, r.clone()))
                .collect();
            let hb = Heartbeat {
                server: id,
                replicas,
                disks: server.disk_reports(),
                io: server.io_totals(),
            };
            let m = master.clone();
            match blocking(move || m.post::<_, Assignment>("/v1/heartbeat", &hb)).await {
                Ok(a) => {
                    if let Err(e) = carry_out(&server, &a) {
                        return e;
                    }
                    take_move_steps(&server, &a, &stepping);
                    for o in &a.gc {
                        collect(&server, o).await;
                    }
                    for &g in &a.elect {
                        if let Some(node) = server.group(g) {
                            if let Ok(true) = node.election_timeout_now().await {
                                eprintln!("blockserver {id}: group {g}: campaigning (the Master knows its leader lost)");
                            }
                        }
                    }
                    for m in &a.transfers {
                        // In the background: a transfer takes up to an
                        // election timeout, the heartbeats go on.
                        if let Some(node) = server.group(m.group) {
                            let (group, to) = (m.group, m.to);
                            tokio::spawn(async move {
                                // Only to a replica that has every entry:
                                // a transfer refuses writes until the
                                // target takes over or an election timeout
                                // passes, so one to a replica cut off (the
                                // Master still hears its heartbeats) would
                                // only stall the group.
                                let caught_up = node.status().await.is_ok_and(|st| {
                                    st.raft.peer_match.get(&to) == Some(&st.raft.last_index)
                                });
                                if !caught_up {
                                    return;
                                }
                                match node.transfer_leader(to).await {
                                    Ok(()) => eprintln!(
                                        "blockserver {id}: group {group}: leadership handed to {to} (leader balance)"
                                    ),
                                    Err(e) => eprintln!(
                                        "blockserver {id}: group {group}: leadership to {to}: {e}"
                                    ),
                                }
                            });
                        }
                    }
                    for p in &a.purge {
                        for (g, n) in server.purge(p.volume, &p.groups).await {
                            eprintln!(
                                "blockserver {id}: group {g}: deleted volume {} purged ({n} slice entries freed)",
                                p.volume
                            );
                        }
                    }
                }
                Err(e) if e.kind() == "not_found" => registered = false,
                Err(e) => eprintln!("blockserver {id}: heartbeat: {e}"),
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// Starts the replicas the assignment names that are not running here.
fn carry_out(server: &BlockServer, a: &Assignment) -> Result<(), Error> {
    for s in &a.servers {
        if s.id == server.id() {
            continue;
        }
        match (
            s.raft_addr.parse::<SocketAddr>(),
            s.data_addr.parse::<SocketAddr>(),
        ) {
            (Ok(raft), Ok(data)) => {
                server.set_peer(s.id, raft);
                server.set_peer_data(s.id, data);
            }
            _ => eprintln!(
                "blockserver {}: server {} has a bad address ({:?}, {:?})",
                server.id(),
                s.id,
                s.raft_addr,
                s.data_addr
            ),
        }
    }
    let lost = server.lost();
    for g in &a.groups {
        if server.group(g.id).is_some() || lost.contains_key(&g.id) {
            continue;
        }
        // Only a group's first replicas start with its configuration. A
        // replica given by a move (or to a group that moved before) starts
        // with none and learns it from the leader's log or snapshot: one
        // made from the Master's record could vote with a log it never had.
        let voters = if g.epoch == 0 && g.replicas.contains(&server.id()) {
            g.replicas.clone()
        } else {
            Vec::new()
        };
        // One replica that cannot start (its disk failing) is reported
        // lost and placed elsewhere; the server goes on with the others.
        if let Err(e) = server.create_group(g.id, voters, Some(&g.pool)) {
            let why = format!("cannot start: {e}");
            eprintln!("blockserver {}: group {}: {why}", server.id(), g.id);
            server.mark_lost(g.id, why);
        }
    }
    Ok(())
}

/// Groups whose move step is being taken (one at a time per group).
type Stepping = Arc<std::sync::Mutex<std::collections::BTreeSet<u64>>>;

/// Takes, in the background, the next step of every move of a group this
/// server leads (`moves.rs`), and tidies learners no move lists.
fn take_move_steps(server: &BlockServer, a: &Assignment, stepping: &Stepping) {
    for g in &a.groups {
        let Some(node) = server.group(g.id) else {
            continue;
        };
        if node.role().0 != raft_core::Role::Leader {
            continue;
        }
        if !stepping
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(g.id)
        {
            continue;
        }
        let (g, stepping, id) = (g.clone(), stepping.clone(), server.id());
        tokio::spawn(async move {
            match super::moves::step(id, &node, &g).await {
                Ok(Some(what)) => eprintln!("blockserver {id}: group {}: {what}", g.id),
                Ok(None) => {}
                Err(e) => eprintln!("blockserver {id}: group {}: move step: {e}", g.id),
            }
            stepping
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&g.id);
        });
    }
}

/// Carries out a replica GC order if this server's replica agrees it is
/// obsolete (`gc.rs`).
async fn collect(server: &BlockServer, o: &GcOrder) {
    let id = server.id();
    if server.forget_lost(o.group) {
        eprintln!(
            "blockserver {id}: group {}: lost replica forgotten (the group moved on without it)",
            o.group
        );
        return;
    }
    let Some(node) = server.group(o.group) else {
        return;
    };
    let Ok(st) = node.status().await else {
        return;
    };
    if !super::gc::obsolete(id, &st.raft.membership, st.raft.conf_index, o.epoch) {
        eprintln!(
            "blockserver {id}: group {}: GC refused: this replica is a member at epoch {} (the Master's is {})",
            o.group, st.raft.conf_index, o.epoch
        );
        return;
    }
    let why = if st.raft.membership.contains(id) {
        format!(
            "its configuration (at {}) is older than the group's (epoch {})",
            st.raft.conf_index, o.epoch
        )
    } else {
        format!(
            "its configuration (at {}) leaves it out",
            st.raft.conf_index
        )
    };
    match server.remove_group(o.group).await {
        Ok(to) => eprintln!(
            "blockserver {id}: group {}: replica removed: {why}; files in {}",
            o.group,
            to.display()
        ),
        Err(e) => eprintln!("blockserver {id}: group {}: replica GC: {e}", o.group),
    }
}

/// Applies the fault files' changes (`cdsctl cds fault`): the Raft-link
/// faults as the transport's filter, the disk faults on the disks.
async fn apply_faults(server: &BlockServer, faults: &mut FaultWatch) {
    let Some(now) = faults.poll() else {
        return;
    };
    server.set_filter(now.filter);
    for (d, lost) in server.apply_disk_faults(&now.disks).await {
        eprintln!(
            "blockserver {}: disk {} failed on purpose; replicas lost: {lost:?}",
            server.id(),
            d + 1
        );
    }
}
