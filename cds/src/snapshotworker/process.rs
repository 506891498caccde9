//! One SnapshotWorker process: [`run`] polls the Master for snapshot
//! tasks and carries them out until SIGTERM or SIGINT.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{blocking, run_task};
use crate::blockclient::GroupClient;
use crate::error::{bail, Context, Error, Result};
use crate::master::api::ClusterView;
use crate::master::client::MasterClient;
use crate::master::{Task, TaskState};

/// How long one Master call may take, retries included.
const MASTER_DEADLINE: Duration = Duration::from_secs(10);
/// What each step request to a group gets (redirects and retries).
const IO_DEADLINE: Duration = Duration::from_secs(10);
/// How long a run of one task waits for a group before it tries the
/// whole task again (a group without a leader for this long is being
/// repaired; the task waits for it).
const TASK_PATIENCE: Duration = Duration::from_secs(30);

/// The highest pace a worker's config may set (faster is "no limit").
pub const MAX_GROUPS_PER_SECOND: u32 = 100_000;

/// A SnapshotWorker's config file (`cdsctl cds snapshot-worker --config FILE`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerConfig {
    pub id: u64,
    pub cluster_id: u64,
    /// The data path's token (to reach the BlockGroups).
    pub token: String,
    /// The Master's admin token (to report and finish tasks).
    pub admin_token: String,
    /// The Masters' HTTP addresses.
    pub masters: Vec<String>,
    /// Where its pid and log go (it keeps no state).
    pub data_dir: PathBuf,
    /// Pause after a failed poll of the Master (a poll itself waits up
    /// to a second for a task to start).
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// The most groups a task's steps start on per second (0: no limit).
    #[serde(default)]
    pub groups_per_second: u32,
}

fn default_poll_ms() -> u64 {
    100
}

impl WorkerConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<WorkerConfig> {
        let cfg: WorkerConfig = crate::secret::read_private_json(path)?;
        crate::secret::check_token(&cfg.token)
            .and_then(|()| crate::secret::check_token(&cfg.admin_token))
            .with_context(|| format!("invalid config file {}", path.display()))?;
        if cfg.masters.is_empty() {
            bail!(Invalid, "{}: no masters listed", path.display());
        }
        if !(1..=60_000).contains(&cfg.poll_ms) {
            bail!(Invalid, "poll_ms: {} (1 to 60000)", cfg.poll_ms);
        }
        if cfg.groups_per_second > MAX_GROUPS_PER_SECOND {
            bail!(
                Invalid,
                "groups_per_second: {} (0 for no limit, or up to {MAX_GROUPS_PER_SECOND})",
                cfg.groups_per_second
            );
        }
        Ok(cfg)
    }
}

/// Runs the worker of `config_path` until a signal.
pub fn run(config_path: &Path) -> Result<()> {
    let cfg = WorkerConfig::load(config_path)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let id = cfg.id;
    rt.block_on(serve(cfg))
        .with_context(|| format!("snapshot worker {id} ({})", config_path.display()))
}

async fn serve(cfg: WorkerConfig) -> Result<()> {
    crate::secret::private_dir(&cfg.data_dir)?;
    let signal = crate::kv::node::stop_signal()?;
    let pid_path = crate::kv::node::write_pid(&cfg.data_dir)?;
    eprintln!(
        "snapshot worker {}: serving (pid {}, masters {})",
        cfg.id,
        std::process::id(),
        cfg.masters.join(",")
    );
    let outcome = tokio::select! {
        name = signal => {
            eprintln!("snapshot worker {}: {name} received, shutting down", cfg.id);
            Ok(())
        }
        e = work(&cfg) => Err(e),
    };
    let _ = std::fs::remove_file(&pid_path);
    outcome
}

/// Polls for tasks and runs them, forever; returns only an error that
/// retrying cannot cure.
async fn work(cfg: &WorkerConfig) -> Error {
    let admin = Arc::new(MasterClient::new(
        cfg.masters.clone(),
        cfg.admin_token.clone(),
        MASTER_DEADLINE,
    ));
    let poll = Duration::from_millis(cfg.poll_ms);
    loop {
        let tasks = {
            let admin = admin.clone();
            // A long poll: answered at once when a task is under way.
            blocking(move || admin.get::<Vec<Task>>("/v1/tasks?wait_ms=1000")).await
        };
        let running: Vec<Task> = match tasks {
            Ok(t) => t
                .into_iter()
                .filter(|t| t.state == TaskState::Running)
                .collect(),
            Err(e) => {
                if e.kind() == "unauthorized" {
                    return Error::Invalid(format!("the Master refused our token: {e}"));
                }
                eprintln!("snapshot worker {}: listing tasks: {e}", cfg.id);
                tokio::time::sleep(poll).await;
                continue;
            }
        };
        if running.is_empty() {
            continue;
        }
        let view = {
            let admin = admin.clone();
            blocking(move || admin.get::<ClusterView>("/v1/cluster")).await
        };
        let view = match view {
            Ok(v) => v,
            Err(e) => {
                eprintln!("snapshot worker {}: reading the cluster: {e}", cfg.id);
                tokio::time::sleep(poll).await;
                continue;
            }
        };
        let mut servers: BTreeMap<u64, SocketAddr> = BTreeMap::new();
        for s in &view.servers {
            match s.data_addr.parse() {
                Ok(a) => {
                    servers.insert(s.id, a);
                }
                Err(e) => eprintln!(
                    "snapshot worker {}: server {} address {:?}: {e}",
                    cfg.id, s.id, s.data_addr
                ),
            }
        }
        let data = Arc::new(
            GroupClient::new(cfg.cluster_id, &cfg.token, servers, IO_DEADLINE)
                .with_master(admin.clone()),
        );
        let groups: BTreeMap<u64, Vec<u64>> = view
            .groups
            .iter()
            .map(|g| (g.id, g.replicas.clone()))
            .collect();
        // Tasks of different volumes are independent: run them at once.
        let mut set = tokio::task::JoinSet::new();
        let rate = cfg.groups_per_second;
        for task in running {
            let (admin, data, groups) = (admin.clone(), data.clone(), groups.clone());
            set.spawn(async move {
                let started = std::time::Instant::now();
                let r = run_task(admin, data, &groups, &task, TASK_PATIENCE, rate).await;
                (task, started.elapsed(), r)
            });
        }
        while let Some(r) = set.join_next().await {
            match r {
                Ok((task, took, Ok(()))) => eprintln!(
                    "snapshot worker {}: task {} ({:?} of {}) done on {} groups in {took:?}",
                    cfg.id,
                    task.id,
                    task.kind,
                    task.volume,
                    groups.len()
                ),
                Ok((task, _, Err(e))) => {
                    eprintln!("snapshot worker {}: task {}: {e}", cfg.id, task.id)
                }
                Err(e) => eprintln!("snapshot worker {}: a task run failed: {e}", cfg.id),
            }
        }
    }
}
