//! A BlockServer: one process hosting BlockGroup replicas, serving their
//! blocks over the data path's binary protocol ([`crate::wire`]).
//!
//! The replicas run on one [`GroupHost`] (one Raft transport, one timer,
//! node-level liveness, one log sync per disk). Each replica keeps its
//! Raft storage and its engine under `DISK/groups/<id>/` on one of the
//! server's disks (the disk that already holds the group, else the least
//! loaded one).
//! Requests are served as they arrive, many per connection at once:
//! writes and zeros are proposed to the group (the leader answers; a
//! follower says who leads), reads are served by the leader from its
//! engine once its lease (or a ReadIndex round) shows it still leads. IO
//! to different blocks of a group is pipelined through Raft; the engine
//! applies them in log order. A read that meets a corrupt sector is never
//! answered with it: the sector is repaired with another replica's copy
//! first (`repair.rs`).
//!
//! Which groups a server holds is decided by the Master; until the
//! control plane exists, callers create them with
//! [`BlockServer::create_group`].

pub mod disk;
pub(crate) mod gc;
pub mod limits;
pub(crate) mod moves;
pub mod process;
mod repair;
mod serve;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use raft_core::runtime::host::{GroupHost, HostConfig};
use raft_core::runtime::node::{NodeConfig, NodeHandle};
use raft_core::runtime::transport::{Transport, TransportConfig, TransportHandle};
use raft_core::storage::fs::{Fs, RealFs};
use raft_core::storage::host_sync::HostSync;
use raft_core::storage::local::{open_in_host, LocalOptions};
use raft_core::{ConfState, NodeId};
use tokio::task::JoinHandle;

use crate::blockgroup::{BlockGroupSm, SharedEngine, GC_SLICES_PER_BATCH};
use crate::engine::{Engine, EngineError, Geometry};
use crate::master::api::{DiskHealth, DiskReport, IoTotals};

/// Counters of the data path's requests, bumped as each arrives.
#[derive(Debug, Default)]
pub(crate) struct IoCounters {
    pub(crate) reads: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) read_bytes: AtomicU64,
    pub(crate) write_bytes: AtomicU64,
}

/// (size, free bytes) of the file system under `dir`, by `statvfs`.
pub(crate) fn space(dir: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "a NUL byte in the path")
    })?;
    // SAFETY: statvfs fills the struct we own from a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let unit = st.f_frsize as u64;
    Ok((st.f_blocks as u64 * unit, st.f_bavail as u64 * unit))
}

/// Where a peer BlockServer listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddrs {
    pub raft: SocketAddr,
    pub data: SocketAddr,
}

/// How a BlockServer runs.
#[derive(Debug, Clone)]
pub struct BlockServerConfig {
    pub id: NodeId,
    pub cluster_id: u64,
    /// The cluster's shared secret: peers and clients present it.
    pub token: String,
    /// Raft traffic between servers (loopback unless told otherwise).
    pub raft_listen: SocketAddr,
    /// The data path (loopback unless told otherwise).
    pub data_listen: SocketAddr,
    /// The server's disks (data directories, each a failure domain): a
    /// replica keeps its log and engine under one of them, in
    /// `DISK/groups/<id>/`. At least one.
    pub disks: Vec<PathBuf>,
    /// The pool of each disk (empty: all in the default pool): a new
    /// replica of a group goes to a disk of the group's pool.
    pub pools: Vec<String>,
    /// The other servers, by id.
    pub peers: BTreeMap<NodeId, PeerAddrs>,
    /// Real time per Raft tick.
    pub tick: Duration,
    /// Geometry of engines this server creates.
    pub geometry: Geometry,
    /// Entries between a group's snapshots (engine exports).
    pub snapshot_every: u64,
    /// Snapshot bytes per second each group's leader sends to a replica
    /// catching up (0: unlimited).
    pub install_bytes_per_s: u64,
    /// How long a removed replica's files stay in the trash.
    pub trash_keep: Duration,
}

impl BlockServerConfig {
    /// Defaults for server `id` keeping its data in `dir`: loopback on
    /// free ports, a 50 ms tick, 16 MiB blocks of 64 KiB slices, a
    /// snapshot every 20,000 entries.
    pub fn new(id: NodeId, cluster_id: u64, token: impl Into<String>, dir: &Path) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        BlockServerConfig {
            id,
            cluster_id,
            token: token.into(),
            raft_listen: any,
            data_listen: any,
            disks: vec![dir.to_path_buf()],
            pools: Vec::new(),
            peers: BTreeMap::new(),
            tick: Duration::from_millis(50),
            geometry: Geometry::default(),
            snapshot_every: limits::SNAPSHOT_EVERY,
            install_bytes_per_s: 0,
            trash_keep: limits::TRASH_KEEP,
        }
    }
}

/// Why a BlockServer could not start or do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("raft transport: {0}")]
    Transport(String),
    #[error("group host: {0}")]
    Host(String),
    #[error("group {group} storage: {why}")]
    Storage { group: u64, why: String },
    #[error("group {group} engine: {source}")]
    Engine {
        group: u64,
        #[source]
        source: EngineError,
    },
}

/// One replica this server holds.
#[derive(Clone)]
pub(crate) struct Replica {
    pub(crate) node: NodeHandle,
    pub(crate) engine: SharedEngine,
    /// Index in the config's `disks`.
    pub(crate) disk: usize,
}

pub(crate) struct Inner {
    pub(crate) cfg: BlockServerConfig,
    host: GroupHost,
    transport: TransportHandle,
    /// One shared log sync per disk. A failed sync fails every later one
    /// (what it held may be lost), so a disk that heals gets a new one
    /// (`heal_disk`): the replicas that used the old one were lost with
    /// the disk and keep it, failing; replicas placed there afterwards
    /// start on the new one.
    syncs: Vec<Mutex<Arc<HostSync>>>,
    /// Each disk's file system (fails every call once the disk failed),
    /// its failed flag, and why it failed.
    disk_fs: Vec<Arc<dyn Fs>>,
    disk_state: Vec<Arc<disk::DiskState>>,
    /// Disks failed by a fault file (`cdsctl cds fault disk-error`), which
    /// its removal heals; a disk its probe found failed stays failed.
    disk_by_fault: Mutex<BTreeSet<usize>>,
    disk_why: Mutex<BTreeMap<usize, String>>,
    /// Replicas on a failed disk: stopped, reported failed until the
    /// Master's GC order lets the server forget them.
    lost: Mutex<BTreeMap<u64, String>>,
    /// Lost replicas that stopped while their disk was full, by disk: their
    /// files are whole (a write that found no space wrote nothing the
    /// replica acknowledged), so they start again once it has room.
    stalled: Mutex<BTreeMap<u64, usize>>,
    /// Data-path requests taken since start (for heartbeats' IO rates).
    pub(crate) io: IoCounters,
    pub(crate) groups: RwLock<BTreeMap<u64, Replica>>,
    /// Where the other servers serve the data path (from the config, then
    /// as the Master tells): a repair asks them for copies.
    pub(crate) peer_data: RwLock<BTreeMap<NodeId, SocketAddr>>,
    data_addr: SocketAddr,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Set at shutdown: every connection closes.
    pub(crate) stop: tokio::sync::watch::Sender<bool>,
}

/// A running BlockServer; cheap to clone.
#[derive(Clone)]
pub struct BlockServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BlockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockServer")
            .field("id", &self.inner.cfg.id)
            .field("data", &self.inner.data_addr)
            .finish_non_exhaustive()
    }
}

impl BlockServer {
    /// Starts the Raft transport, the group host and the data-path
    /// listener. Must run within a tokio runtime.
    pub async fn start(cfg: BlockServerConfig) -> Result<BlockServer, ServerError> {
        cfg.geometry
            .validate()
            .map_err(|e| ServerError::Host(e.to_string()))?;
        let mut tc =
            TransportConfig::new(cfg.id, cfg.raft_listen, cfg.cluster_id, cfg.token.clone());
        tc.peers = cfg.peers.iter().map(|(&id, p)| (id, p.raft)).collect();
        let (transport, inbound) = Transport::start(tc)
            .await
            .map_err(|e| ServerError::Transport(e.to_string()))?;
        let mut hc = HostConfig::new(cfg.id, cfg.peers.keys().copied().collect());
        hc.tick = cfg.tick;
        let host = GroupHost::start(hc, transport.clone(), inbound)
            .map_err(|e| ServerError::Host(e.to_string()))?;
        if cfg.disks.is_empty() {
            return Err(ServerError::Host(
                "a BlockServer needs at least one disk".into(),
            ));
        }
        let real: Arc<dyn Fs> = Arc::new(RealFs);
        let mut syncs = Vec::new();
        let mut disk_fs: Vec<Arc<dyn Fs>> = Vec::new();
        let mut disk_state = Vec::new();
        for d in &cfg.disks {
            std::fs::create_dir_all(d).map_err(|e| ServerError::Storage {
                group: 0,
                why: format!("{}: {e}", d.display()),
            })?;
            let state = Arc::new(disk::DiskState::default());
            let fs: Arc<dyn Fs> = Arc::new(disk::DiskFs::new(real.clone(), state.clone()));
            syncs.push(Mutex::new(HostSync::new(fs.clone(), d)));
            disk_fs.push(fs);
            disk_state.push(state);
        }
        let listener = tokio::net::TcpListener::bind(cfg.data_listen)
            .await
            .map_err(|source| ServerError::Listen {
                addr: cfg.data_listen,
                source,
            })?;
        let data_addr = listener
            .local_addr()
            .map_err(|source| ServerError::Listen {
                addr: cfg.data_listen,
                source,
            })?;
        let peer_data = cfg.peers.iter().map(|(&id, a)| (id, a.data)).collect();
        let inner = Arc::new(Inner {
            peer_data: RwLock::new(peer_data),
            cfg,
            host,
            transport,
            syncs,
            disk_fs,
            disk_state,
            disk_by_fault: Mutex::new(BTreeSet::new()),
            disk_why: Mutex::new(BTreeMap::new()),
            lost: Mutex::new(BTreeMap::new()),
            stalled: Mutex::new(BTreeMap::new()),
            io: IoCounters::default(),
            groups: RwLock::new(BTreeMap::new()),
            data_addr,
            tasks: Mutex::new(Vec::new()),
            stop: tokio::sync::watch::channel(false).0,
        });
        let accept = tokio::spawn(serve::accept(inner.clone(), listener));
        let reclaim = tokio::spawn(reclaim(inner.clone()));
        let sweep = tokio::spawn(gc::sweep(inner.clone(), inner.cfg.trash_keep));
        inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([accept, reclaim, sweep]);
        Ok(BlockServer { inner })
    }

    pub fn id(&self) -> NodeId {
        self.inner.cfg.id
    }

    /// Where the data path listens.
    pub fn data_addr(&self) -> SocketAddr {
        self.inner.data_addr
    }

    /// Replaces the Raft transport's fault filter (what `cdsctl cds
    /// partition` sets): envelopes to and from the listed nodes are
    /// dropped, as a cut network link would.
    pub fn set_filter(&self, filter: raft_core::runtime::transport::FaultFilter) {
        self.inner.transport.set_filter(filter);
    }

    /// Where the Raft transport listens.
    pub fn raft_addr(&self) -> SocketAddr {
        self.inner.transport.local_addr()
    }

    /// Tells the transport where peer `id` listens for Raft, and has the
    /// host watch its liveness.
    pub fn set_peer(&self, id: NodeId, raft: SocketAddr) {
        self.inner.transport.set_peer(id, raft);
        self.inner.host.add_peer(id);
    }

    /// Tells the server where peer `id` serves the data path (where a
    /// repair asks it for copies).
    pub fn set_peer_data(&self, id: NodeId, data: SocketAddr) {
        self.inner
            .peer_data
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, data);
    }

    /// Proposes, in every group this server leads whose engine has not
    /// purged `volume` yet, the purge of that deleted volume's slices.
    /// Returns the groups where a purge was applied now.
    pub async fn purge(&self, volume: u64, groups: &[u64]) -> Vec<(u64, u64)> {
        let mut done = Vec::new();
        for &g in groups {
            let Some(r) = serve::replica(&self.inner, g) else {
                continue;
            };
            if r.node.role().0 != raft_core::Role::Leader
                || crate::blockgroup::lock(&r.engine).purged(volume)
            {
                continue;
            }
            let cmd = crate::blockgroup::command::encode(&crate::engine::Command::Purge { volume });
            let Ok(Ok(out)) =
                tokio::time::timeout(limits::REQUEST_TIMEOUT, r.node.propose(cmd)).await
            else {
                continue;
            };
            if let Ok(crate::blockgroup::command::Applied::Done(crate::engine::Outcome::Purged {
                entries,
            })) = crate::blockgroup::command::decode_result(&out.result)
            {
                done.push((g, entries));
            }
        }
        done
    }

    /// Starts this server's replica of `group`, whose voters are `voters`
    /// (on a first start; a replica with storage keeps its own
    /// configuration). Its storage and engine are opened where its files
    /// are, or created on a disk of `pool` (`None`: any disk).
    pub fn create_group(
        &self,
        group: u64,
        voters: Vec<NodeId>,
        pool: Option<&str>,
    ) -> Result<NodeHandle, ServerError> {
        let cfg = &self.inner.cfg;
        // Held throughout: a replica's files are opened by one engine and
        // one log at a time, never twice.
        let mut groups = self.inner.groups.write().unwrap_or_else(|p| p.into_inner());
        if groups.contains_key(&group) {
            return Err(ServerError::Host(format!(
                "group {group} is hosted here already"
            )));
        }
        let disk = self.disk_for(group, &groups, pool)?;
        let fs = self.inner.disk_fs[disk].clone();
        let gdir = cfg.disks[disk].join("groups").join(group.to_string());
        let edir = gdir.join("engine");
        let engine = if fs.exists(&edir.join("super")) {
            Engine::open(fs.clone(), &edir)
        } else {
            Engine::create(fs.clone(), &edir, cfg.geometry)
        }
        .map_err(|source| ServerError::Engine { group, source })?;
        let engine: SharedEngine = Arc::new(Mutex::new(engine));
        let storage_err = |why: String| ServerError::Storage { group, why };
        let mut storage = open_in_host(
            fs.clone(),
            &gdir.join("raft"),
            &LocalOptions::default(),
            Some(self.host_sync(disk)),
        )
        .map_err(|e| storage_err(e.to_string()))?;
        if storage.conf_state().voters.is_empty() {
            storage
                .set_conf_state(ConfState {
                    voters,
                    ..ConfState::default()
                })
                .map_err(|e| storage_err(e.to_string()))?;
        }
        let mut ncfg = NodeConfig::new(cfg.id, group);
        ncfg.tick = cfg.tick;
        ncfg.config.heartbeat_tick = 2;
        ncfg.snapshot_every = cfg.snapshot_every;
        if cfg.install_bytes_per_s > 0 {
            // Raft throttles per tick, a whole chunk at a time.
            let per_tick = (u128::from(cfg.install_bytes_per_s) * cfg.tick.as_millis() / 1000)
                .clamp(1, u128::from(u64::MAX)) as u64;
            ncfg.config.snapshot_chunk_size = ncfg.config.snapshot_chunk_size.min(per_tick);
            ncfg.config.snapshot_bytes_per_tick = per_tick;
        }
        // The log kept behind a snapshot: up to one snapshot interval,
        // at most 1,000 entries (a replica further behind installs it).
        ncfg.log_margin = cfg.snapshot_every.min(1_000);
        let sm = BlockGroupSm::new(fs, &edir, engine.clone());
        let node = self
            .inner
            .host
            .create_group(ncfg, storage, Box::new(sm))
            .map_err(|e| ServerError::Host(e.to_string()))?;
        groups.insert(
            group,
            Replica {
                node: node.clone(),
                engine,
                disk,
            },
        );
        Ok(node)
    }

    /// The disk of `group`'s replica: the one already holding its files
    /// (a restart), else the disk of `pool` holding the fewest replicas
    /// (lowest index on a tie).
    fn disk_for(
        &self,
        group: u64,
        groups: &BTreeMap<u64, Replica>,
        pool: Option<&str>,
    ) -> Result<usize, ServerError> {
        let disks = &self.inner.cfg.disks;
        // Files on a failed disk are as good as gone: a new replica goes
        // to a disk that works.
        if let Some(i) = disks.iter().enumerate().position(|(i, d)| {
            !self.disk_is_failed(i) && d.join("groups").join(group.to_string()).exists()
        }) {
            return Ok(i);
        }
        let mut load = vec![0usize; disks.len()];
        for r in groups.values() {
            load[r.disk] += 1;
        }
        let pools = &self.inner.cfg.pools;
        let in_pool = |i: usize| pool.is_none_or(|p| crate::pool::of_disk(pools, i) == p);
        // A full disk takes no new replica either.
        (0..disks.len())
            .filter(|&i| {
                in_pool(i) && !self.disk_is_failed(i) && !self.inner.disk_state[i].is_full()
            })
            .min_by_key(|&i| (load[i], i))
            .ok_or_else(|| ServerError::Storage {
                group,
                why: match pool {
                    Some(p) => format!(
                        "every disk of pool {p:?} on this server failed, is full or is missing"
                    ),
                    None => "every disk of this server failed or is full".into(),
                },
            })
    }

    fn disk_is_failed(&self, i: usize) -> bool {
        self.inner.disk_state[i].is_failed()
    }

    /// What each disk's state is now, for the heartbeat.
    pub fn disk_reports(&self) -> Vec<DiskReport> {
        self.inner
            .disk_state
            .iter()
            .enumerate()
            .map(|(i, st)| (i, st, space(&self.inner.cfg.disks[i]).unwrap_or((0, 0))))
            .map(|(i, st, (total_bytes, free_bytes))| DiskReport {
                state: if st.is_failed() {
                    DiskHealth::Failed
                } else if st.is_full() {
                    DiskHealth::Full
                } else {
                    DiskHealth::Ok
                },
                slow_ms: st.slow_ms(),
                why: self
                    .inner
                    .disk_why
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&i)
                    .cloned(),
                total_bytes,
                free_bytes,
            })
            .collect()
    }

    /// The data-path requests taken since start.
    pub fn io_totals(&self) -> IoTotals {
        let c = &self.inner.io;
        IoTotals {
            reads: c.reads.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            read_bytes: c.read_bytes.load(Ordering::Relaxed),
            write_bytes: c.write_bytes.load(Ordering::Relaxed),
        }
    }

    /// Applies the disk faults in force (`fault_file`): slowness and
    /// fullness as they are; a disk failed by a fault is failed (as
    /// [`fail_disk`](Self::fail_disk)) and, once no fault fails it, healed
    /// (see [`heal_disk`](Self::heal_disk)). Returns (disk, groups lost)
    /// for each disk failed now.
    pub async fn apply_disk_faults(
        &self,
        faults: &BTreeMap<usize, crate::cdscluster::fault_file::DiskFault>,
    ) -> Vec<(usize, Vec<u64>)> {
        let mut out = Vec::new();
        for (i, st) in self.inner.disk_state.iter().enumerate() {
            let f = faults.get(&i).copied().unwrap_or_default();
            st.set_slow_ms(f.slow_ms);
            let was_full = st.is_full();
            st.set_full(f.full);
            if was_full && !f.full {
                self.resume_stalled(i);
            }
            if f.error && !self.disk_is_failed(i) {
                self.inner
                    .disk_by_fault
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(i);
                out.push((
                    i,
                    self.fail_disk(i, "failed on purpose (a fault file)").await,
                ));
            } else if !f.error
                && self
                    .inner
                    .disk_by_fault
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(&i)
            {
                self.heal_disk(i);
            }
        }
        out
    }

    /// Heals disk `i`, failed by a fault now undone: its IO works again and
    /// it takes new replicas. The replicas lost with it stay lost (a sync
    /// that failed may have lost what they acknowledged): their files go to
    /// the disk's trash, so a restart does not bring them back.
    pub fn heal_disk(&self, i: usize) {
        let Some(st) = self.inner.disk_state.get(i) else {
            return;
        };
        st.set_failed(false);
        // The old sync may have failed while the disk did, and a failed
        // sync stays failed: new replicas here start on a fresh one (a
        // group placed here again after a disk error failed its first
        // sync forever, and a balance move to this disk never ended).
        *self.inner.syncs[i]
            .lock()
            .unwrap_or_else(|p| p.into_inner()) =
            HostSync::new(self.inner.disk_fs[i].clone(), &self.inner.cfg.disks[i]);
        self.inner
            .disk_by_fault
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&i);
        self.inner
            .disk_why
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&i);
        let disk = &self.inner.cfg.disks[i];
        // Only what runs from this disk stays: a lost group the Master
        // placed here again went to another disk (this one was failed), and
        // its stale copy here must not be what a restart opens.
        let hosted: BTreeSet<u64> = self
            .inner
            .groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, r)| r.disk == i)
            .map(|(&g, _)| g)
            .collect();
        if let Ok(entries) = std::fs::read_dir(disk.join("groups")) {
            for g in entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()))
                .filter(|g| !hosted.contains(g))
            {
                if let Err(e) = gc::to_trash(disk, g) {
                    eprintln!(
                        "blockserver {}: disk {}: moving lost group {g} to the trash: {e}",
                        self.inner.cfg.id,
                        i + 1
                    );
                }
            }
        }
    }

    /// Fails disk `i` (0-based): from now on every IO to it returns
    /// `EIO`; its replicas are stopped and reported failed (`lost`), so
    /// the Master rebuilds them elsewhere while the server serves from its
    /// other disks. Returns the groups lost, none if it had failed already.
    pub async fn fail_disk(&self, i: usize, why: &str) -> Vec<u64> {
        if i >= self.inner.disk_state.len() || self.disk_is_failed(i) {
            return Vec::new();
        }
        self.inner.disk_state[i].set_failed(true);
        self.inner
            .disk_why
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(i, why.to_string());
        let on_disk: Vec<(u64, Replica)> = {
            let mut groups = self.inner.groups.write().unwrap_or_else(|p| p.into_inner());
            let ids: Vec<u64> = groups
                .iter()
                .filter(|(_, r)| r.disk == i)
                .map(|(&g, _)| g)
                .collect();
            ids.into_iter()
                .filter_map(|g| groups.remove(&g).map(|r| (g, r)))
                .collect()
        };
        // Replicas whose files lie there but were not running (a restart
        // with the disk failed) are lost too.
        let mut lost: Vec<u64> = on_disk.iter().map(|(g, _)| *g).collect();
        if let Ok(entries) = std::fs::read_dir(self.inner.cfg.disks[i].join("groups")) {
            lost.extend(
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u64>().ok())),
            );
        }
        lost.sort_unstable();
        lost.dedup();
        for (g, _) in &on_disk {
            let _ = self.inner.host.remove_group(*g).await;
        }
        let mut l = self.inner.lost.lock().unwrap_or_else(|p| p.into_inner());
        for &g in &lost {
            l.insert(g, format!("disk {} failed: {why}", i + 1));
        }
        lost
    }

    /// Stops a replica that failed on its own (a storage or engine error:
    /// a sync that failed may have lost data, so it must not go on as if
    /// it were safe) and reports it lost; the server keeps serving the
    /// others. Returns whether it was hosted.
    pub async fn lose(&self, group: u64, why: &str) -> bool {
        let removed = self
            .inner
            .groups
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&group);
        let removed = match removed {
            Some(r) => {
                if self.inner.disk_state[r.disk].is_full() {
                    self.inner
                        .stalled
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(group, r.disk);
                }
                true
            }
            None => false,
        };
        if removed {
            let _ = self.inner.host.remove_group(group).await;
            self.inner
                .lost
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(group, why.to_string());
        }
        removed
    }

    /// Records a replica this server could not start as lost (reported
    /// failed, so the Master places it elsewhere).
    pub fn mark_lost(&self, group: u64, why: String) {
        self.inner
            .lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(group, why);
    }

    /// Replicas lost with a failed disk, and why.
    pub fn lost(&self) -> BTreeMap<u64, String> {
        self.inner
            .lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Starts again the replicas that stopped because disk `i` was full
    /// and are still lost (the Master has not moved their group away): from
    /// their files, as after a restart. The Master's GC removes the ones
    /// whose group went on without them.
    fn resume_stalled(&self, i: usize) {
        let groups: Vec<u64> = {
            let mut stalled = self.inner.stalled.lock().unwrap_or_else(|p| p.into_inner());
            let mine: Vec<u64> = stalled
                .iter()
                .filter(|(_, &d)| d == i)
                .map(|(&g, _)| g)
                .collect();
            for g in &mine {
                stalled.remove(g);
            }
            mine
        };
        for g in groups {
            if self
                .inner
                .lost
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&g)
                .is_none()
            {
                continue;
            }
            match self.create_group(g, Vec::new(), None) {
                Ok(_) => eprintln!(
                    "blockserver {}: group {g}: replica started again (disk {} has room)",
                    self.inner.cfg.id,
                    i + 1
                ),
                Err(e) => self.mark_lost(g, format!("starting again after a full disk: {e}")),
            }
        }
    }

    /// Forgets a lost replica (the Master moved the group away).
    pub fn forget_lost(&self, group: u64) -> bool {
        self.inner
            .stalled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&group);
        self.inner
            .lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&group)
            .is_some()
    }

    /// Probes every disk not failed yet with a small synced write; fails
    /// the ones that do not take it. Returns (disk, groups lost) for each
    /// disk found failed now.
    pub async fn check_disks(&self) -> Vec<(usize, Vec<u64>)> {
        let mut out = Vec::new();
        for i in 0..self.inner.cfg.disks.len() {
            if self.disk_is_failed(i) {
                continue;
            }
            let (fs, dir) = (
                self.inner.disk_fs[i].clone(),
                self.inner.cfg.disks[i].clone(),
            );
            let probe = tokio::task::spawn_blocking(move || disk::probe(fs.as_ref(), &dir)).await;
            let why = match probe {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => format!("its health probe failed: {e}"),
                Err(e) => format!("its health probe did not finish: {e}"),
            };
            out.push((i, self.fail_disk(i, &why).await));
        }
        out
    }

    /// Stops this server's replica of `group` and moves its files to its
    /// disk's trash directory (`gc.rs` deletes them after
    /// [`limits::TRASH_KEEP`]). Returns where they went.
    pub async fn remove_group(&self, group: u64) -> Result<PathBuf, ServerError> {
        let replica = self
            .inner
            .groups
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&group)
            .ok_or_else(|| ServerError::Host(format!("group {group} is not hosted here")))?;
        self.inner
            .host
            .remove_group(group)
            .await
            .map_err(|e| ServerError::Host(e.to_string()))?;
        let disk = self.inner.cfg.disks[replica.disk].clone();
        drop(replica);
        gc::to_trash(&disk, group).map_err(|e| ServerError::Storage {
            group,
            why: format!("moving to the trash: {e}"),
        })
    }

    /// Starts every replica whose files lie on this server's disks (a
    /// restart goes on with what it held; the Master's replica GC removes
    /// the ones no group lists any more). Returns the groups started.
    pub fn start_stored(&self) -> Result<Vec<u64>, ServerError> {
        let mut found = Vec::new();
        for (i, d) in self.inner.cfg.disks.iter().enumerate() {
            if self.disk_is_failed(i) {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(d.join("groups")) else {
                continue;
            };
            for e in entries.flatten() {
                if let Some(g) = e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) {
                    found.push(g);
                }
            }
        }
        found.sort_unstable();
        for &g in &found {
            if self.group(g).is_none() {
                // Its storage holds its configuration; none is given.
                self.create_group(g, Vec::new(), None)?;
            }
        }
        Ok(found)
    }

    /// The groups this server hosts, with their disk index.
    pub fn groups(&self) -> Vec<(u64, NodeHandle, usize)> {
        self.inner
            .groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(&g, r)| (g, r.node.clone(), r.disk))
            .collect()
    }

    /// This server's replica of `group`, if it holds one.
    pub fn group(&self, group: u64) -> Option<NodeHandle> {
        self.inner
            .groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&group)
            .map(|r| r.node.clone())
    }

    /// Each disk's shared log sync counters: whole-disk syncs issued, and
    /// the group log syncs they covered.
    pub fn sync_stats(&self) -> Vec<raft_core::storage::host_sync::HostSyncStats> {
        (0..self.inner.syncs.len())
            .map(|i| self.host_sync(i).stats())
            .collect()
    }

    /// Disk `i`'s shared log sync now.
    fn host_sync(&self, i: usize) -> Arc<HostSync> {
        self.inner.syncs[i]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The engine counters of this server's replica of `group` (copies,
    /// corrupt sectors carried and repaired, slots), if it holds one.
    pub fn engine_stats(&self, group: u64) -> Option<crate::engine::EngineStats> {
        let engine = self
            .inner
            .groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&group)?
            .engine
            .clone();
        let stats = crate::blockgroup::lock(&engine).stats();
        Some(stats)
    }

    /// Stops serving (every connection closes), every replica, and the
    /// transport.
    pub async fn shutdown(&self) {
        self.inner.stop.send_replace(true);
        for t in self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
        self.inner
            .groups
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.inner.host.shutdown().await;
        self.inner.transport.shutdown().await;
    }
}

/// Reclaims, a little at a time, the slices no live version sees (after a
/// rollback, a snapshot removed, a volume deleted) in every replica here.
/// Applying entries does some of it too; this goes on when no IO comes,
/// so an idle volume's space comes back as well.
async fn reclaim(inner: Arc<Inner>) {
    loop {
        tokio::time::sleep(limits::RECLAIM_EVERY).await;
        let engines: Vec<(u64, SharedEngine)> = inner
            .groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(&g, r)| (g, r.engine.clone()))
            .collect();
        for (group, engine) in engines {
            let mut e = crate::blockgroup::lock(&engine);
            // Nothing to do is one check. A failure stops the engine: the
            // group's next apply reports it and the replica stops serving.
            if let Err(err) = e.gc_step(GC_SLICES_PER_BATCH) {
                eprintln!(
                    "blockserver {}: group {group}: reclaiming: {err}",
                    inner.cfg.id
                );
            }
        }
    }
}
