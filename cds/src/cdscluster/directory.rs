//! The CDS cluster directory: `DIR/cds.json` (the process table and the
//! tokens, owner-only) and each process's `DIR/<name>/config.json`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::devcluster::directory::NodeEntry;
use crate::error::{bail, Context, Error, Result};
use crate::master::client::MasterClient;
use crate::volume::ClusterAccess;

/// The process table inside a cluster directory.
pub const CDS_FILE: &str = "cds.json";
/// How long one Master call from `cdsctl` may take, retries included.
const MASTER_DEADLINE: Duration = Duration::from_secs(10);
/// How long one volume IO piece may take, retries included.
const IO_DEADLINE: Duration = Duration::from_secs(30);

/// What a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    Master,
    BlockServer,
    SnapshotWorker,
}

/// A process's name: `m2`, `b1`, `w1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProcName {
    pub role: Role,
    pub id: u64,
}

impl std::fmt::Display for ProcName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = match self.role {
            Role::Master => 'm',
            Role::BlockServer => 'b',
            Role::SnapshotWorker => 'w',
        };
        write!(f, "{p}{}", self.id)
    }
}

impl std::str::FromStr for ProcName {
    type Err = Error;
    fn from_str(s: &str) -> Result<ProcName> {
        let bad = || {
            Error::Invalid(format!(
                "{s:?} names no process: write m1, m2, ... for a Master, b1, b2, ... for a \
                 BlockServer, w1, ... for a SnapshotWorker"
            ))
        };
        let (role, rest) = match s.as_bytes().first() {
            Some(b'm') => (Role::Master, &s[1..]),
            Some(b'b') => (Role::BlockServer, &s[1..]),
            Some(b'w') => (Role::SnapshotWorker, &s[1..]),
            _ => return Err(bad()),
        };
        let id: u64 = rest.parse().map_err(|_| bad())?;
        if id == 0 {
            return Err(bad());
        }
        Ok(ProcName { role, id })
    }
}

/// The table of a local CDS cluster (`DIR/cds.json`).
///
/// A Master's entry has its Raft and HTTP addresses; a BlockServer's its
/// Raft address and, in `http_addr`, its data-path address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdsCluster {
    pub cluster_id: u64,
    /// Raft, data path and Master API (BlockServers, volume clients).
    pub token: String,
    /// The Master's admin API (volumes, groups).
    pub admin_token: String,
    pub masters: Vec<NodeEntry>,
    pub servers: Vec<NodeEntry>,
    /// SnapshotWorkers (they listen on nothing: empty addresses).
    #[serde(default)]
    pub workers: Vec<NodeEntry>,
}

impl CdsCluster {
    /// Reads `DIR/cds.json`; refused when others can read it.
    pub fn load(dir: &Path) -> Result<CdsCluster> {
        let path = dir.join(CDS_FILE);
        if !path.exists() {
            bail!(
                Cluster,
                "{} holds no CDS cluster (no {CDS_FILE}); start one with `cdsctl cds up --dir {}`",
                dir.display(),
                dir.display()
            );
        }
        crate::secret::read_private_json(&path)
    }

    /// Writes `DIR/cds.json` atomically, owner-only.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).context("encoding cds.json")?;
        crate::secret::write_private(&dir.join(CDS_FILE), text.as_bytes())
    }

    /// The entry of process `name`.
    pub fn entry(&self, name: ProcName) -> Result<&NodeEntry> {
        self.entries(name.role)
            .iter()
            .find(|e| e.id == name.id)
            .ok_or_else(|| Error::Invalid(format!("this cluster has no process {name}")))
    }

    pub(crate) fn entry_mut(&mut self, name: ProcName) -> Result<&mut NodeEntry> {
        let list = match name.role {
            Role::Master => &mut self.masters,
            Role::BlockServer => &mut self.servers,
            Role::SnapshotWorker => &mut self.workers,
        };
        list.iter_mut()
            .find(|e| e.id == name.id)
            .ok_or_else(|| Error::Invalid(format!("this cluster has no process {name}")))
    }

    pub fn entries(&self, role: Role) -> &[NodeEntry] {
        match role {
            Role::Master => &self.masters,
            Role::BlockServer => &self.servers,
            Role::SnapshotWorker => &self.workers,
        }
    }

    /// Every process: Masters, BlockServers, SnapshotWorkers.
    pub fn all(&self) -> Vec<(ProcName, &NodeEntry)> {
        [Role::Master, Role::BlockServer, Role::SnapshotWorker]
            .into_iter()
            .flat_map(|role| {
                self.entries(role)
                    .iter()
                    .map(move |e| (ProcName { role, id: e.id }, e))
            })
            .collect()
    }

    /// The Masters' HTTP addresses.
    pub fn master_addrs(&self) -> Vec<String> {
        self.masters.iter().map(|m| m.http_addr.clone()).collect()
    }

    /// A Master client with the cluster token (reads, volume IO).
    pub fn master(&self) -> MasterClient {
        MasterClient::new(self.master_addrs(), self.token.clone(), MASTER_DEADLINE)
    }

    /// A Master client with the admin token (volumes, groups).
    pub fn admin(&self) -> MasterClient {
        MasterClient::new(
            self.master_addrs(),
            self.admin_token.clone(),
            MASTER_DEADLINE,
        )
    }

    /// What a volume client needs.
    pub fn access(&self) -> ClusterAccess {
        ClusterAccess {
            master: Arc::new(self.master()),
            cluster_id: self.cluster_id,
            token: self.token.clone(),
            io_deadline: IO_DEADLINE,
        }
    }
}

/// The data directory of process `name` in cluster directory `dir`.
pub(crate) fn proc_dir(dir: &Path, name: ProcName) -> PathBuf {
    dir.join(name.to_string())
}
