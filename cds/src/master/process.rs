//! One Master process: [`run`] serves a Master replica until SIGTERM or
//! SIGINT.
//!
//! The replica is one Raft group on a [`GroupHost`] (storage in
//! `data_dir/raft`, the TCP transport between the Masters) applying
//! [`super::MasterSm`], and the HTTP API of [`super::http`] on the
//! hardened server loop the KV nodes use (bounded connections, header
//! and write timeouts).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use raft_core::runtime::host::{GroupHost, HostConfig};
use raft_core::runtime::node::NodeConfig;
use raft_core::runtime::transport::{Transport, TransportConfig};
use raft_core::storage::local::{open, LocalOptions};
use raft_core::storage::Storage;
use raft_core::ConfState;
use serde::{Deserialize, Serialize};

use super::http::{router, MasterApi};
use super::state_machine::{MasterSm, SharedState};
use crate::cdscluster::fault_file::FaultWatch;
use crate::error::{bail, Context, Error, Result};

/// The Master's Raft group id (its transport carries no other).
pub const MASTER_GROUP: u64 = 1;
/// HTTP connections served at once.
const HTTP_MAX_CONNECTIONS: usize = 256;
/// How long in-flight requests get at shutdown.
const HTTP_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Where a Master replica listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterPeer {
    pub raft: SocketAddr,
    pub http: SocketAddr,
}

/// A Master process's config file (`cdsctl cds master --config FILE`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterConfig {
    pub id: u64,
    pub cluster_id: u64,
    /// Between the Masters, and from BlockServers and volume clients.
    pub token: String,
    /// For changes to the cluster's shape (volumes, groups).
    pub admin_token: String,
    pub data_dir: PathBuf,
    /// Every Master replica, this one included, by id.
    pub peers: BTreeMap<u64, MasterPeer>,
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every: u64,
    /// How long a BlockServer may go unheard before its replicas are
    /// repaired elsewhere (counted from when this Master started leading).
    #[serde(default = "default_repair_grace_ms")]
    pub repair_grace_ms: u64,
}

/// The default repair grace period: long enough for a restart, short
/// enough that a lost node's groups are not left with two replicas long.
pub const DEFAULT_REPAIR_GRACE_MS: u64 = 10_000;

fn default_repair_grace_ms() -> u64 {
    DEFAULT_REPAIR_GRACE_MS
}

fn default_tick_ms() -> u64 {
    50
}

fn default_snapshot_every() -> u64 {
    1_000
}

impl MasterConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<MasterConfig> {
        let cfg: MasterConfig = crate::secret::read_private_json(path)?;
        cfg.validate()
            .with_context(|| format!("invalid config file {}", path.display()))?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        crate::secret::check_token(&self.token)?;
        crate::secret::check_token(&self.admin_token).context("admin_token")?;
        if self.token == self.admin_token {
            bail!(Invalid, "admin_token must differ from token");
        }
        if !self.peers.contains_key(&self.id) {
            bail!(Invalid, "peers does not list this Master ({})", self.id);
        }
        if !(1..=10_000).contains(&self.tick_ms) {
            bail!(Invalid, "tick_ms: {} (1 to 10000)", self.tick_ms);
        }
        if !(1_000..=86_400_000).contains(&self.repair_grace_ms) {
            bail!(
                Invalid,
                "repair_grace_ms: {} (1000 to 86400000)",
                self.repair_grace_ms
            );
        }
        Ok(())
    }

    fn me(&self) -> &MasterPeer {
        &self.peers[&self.id]
    }
}

/// Serves the Master of `config_path` until a signal; an error names what
/// failed.
pub fn run(config_path: &Path) -> Result<()> {
    let cfg = MasterConfig::load(config_path)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let id = cfg.id;
    rt.block_on(serve(cfg))
        .with_context(|| format!("master {id} ({})", config_path.display()))
}

async fn serve(cfg: MasterConfig) -> Result<()> {
    let id = cfg.id;
    crate::secret::private_dir(&cfg.data_dir)?;
    let signal = crate::kv::node::stop_signal()?;
    let raft_dir = cfg.data_dir.join("raft");
    let mut storage = open(&raft_dir, &LocalOptions::default())
        .with_context(|| format!("cannot open the storage {}", raft_dir.display()))?;
    let is_new = storage.conf_state().voters.is_empty()
        && storage.hard_state() == Default::default()
        && Storage::last_index(&storage) == 0;
    if is_new {
        storage
            .set_conf_state(ConfState {
                voters: cfg.peers.keys().copied().collect(),
                ..ConfState::default()
            })
            .context("cannot write the initial voters")?;
    }
    let tick = Duration::from_millis(cfg.tick_ms);
    let mut tc = TransportConfig::new(id, cfg.me().raft, cfg.cluster_id, cfg.token.clone());
    tc.peers = cfg
        .peers
        .iter()
        .filter(|(&p, _)| p != id)
        .map(|(&p, a)| (p, a.raft))
        .collect();
    let (transport, inbound) = Transport::start(tc)
        .await
        .with_context(|| format!("cannot start the Raft transport on {}", cfg.me().raft))?;
    let mut hc = HostConfig::new(id, cfg.peers.keys().copied().filter(|&p| p != id).collect());
    hc.tick = tick;
    let host =
        GroupHost::start(hc, transport.clone(), inbound).context("cannot start the group host")?;
    let mut ncfg = NodeConfig::new(id, MASTER_GROUP);
    ncfg.tick = tick;
    ncfg.config.heartbeat_tick = 2;
    ncfg.snapshot_every = cfg.snapshot_every;
    ncfg.log_margin = 100;
    let state: SharedState = Arc::default();
    let node = host
        .create_group(ncfg, storage, Box::new(MasterSm::new(state.clone())))
        .context("cannot start the Master's group")?;

    let http_addr = cfg.me().http;
    let listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {http_addr}"))?;
    let api = MasterApi::new(
        id,
        node.clone(),
        state,
        cfg.peers
            .iter()
            .map(|(&p, a)| (p, a.http.to_string()))
            .collect(),
        http_addr,
        cfg.token.clone(),
        cfg.admin_token.clone(),
    );
    let executor = tokio::spawn(super::executor::run(
        api.clone(),
        Duration::from_millis(cfg.repair_grace_ms),
        super::schedule::Limits::default(),
    ));
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(crate::kv::server::serve(
        listener,
        router(api),
        HTTP_MAX_CONNECTIONS,
        id,
        None,
        async move {
            let _ = http_stopped.await;
        },
    ));
    let pid_path = crate::kv::node::write_pid(&cfg.data_dir)?;
    eprintln!(
        "master {id}: serving (pid {}, raft {}, http {http_addr}, data {})",
        std::process::id(),
        cfg.me().raft,
        cfg.data_dir.display()
    );
    let watch = {
        let node = node.clone();
        let transport = transport.clone();
        // A Master has no disk faults (its log is not on a BlockServer
        // disk); its Raft links take the network ones.
        let mut faults = FaultWatch::new(&cfg.data_dir, format!("master {id}"));
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Some(f) = node.failure() {
                    return f;
                }
                if let Some(now) = faults.poll() {
                    transport.set_filter(now.filter);
                }
            }
        }
    };
    let outcome = tokio::select! {
        name = signal => {
            eprintln!("master {id}: {name} received, shutting down");
            Ok(())
        }
        f = watch => Err(Error::Runtime { what: "the Master's group stopped".into(), error: f }),
        r = &mut server => Err(Error::Runtime {
            what: "the HTTP server stopped".into(),
            error: format!("{r:?}"),
        }),
    };
    executor.abort();
    host.shutdown().await;
    let _ = stop_http.send(());
    if tokio::time::timeout(HTTP_SHUTDOWN_GRACE, &mut server)
        .await
        .is_err()
    {
        server.abort();
    }
    transport.shutdown().await;
    let _ = std::fs::remove_file(&pid_path);
    outcome
}
