//! The Master's HTTP/JSON API: the bodies its server answers and its
//! clients read, in one place.
//!
//! Paths (every request carries `Authorization: Bearer TOKEN`; the
//! cluster token for BlockServers and volume clients, the admin token for
//! what changes the cluster's shape: the admin token is accepted
//! everywhere, the cluster token not on admin paths):
//!
//! | method and path | token | body → answer |
//! |---|---|---|
//! | `GET /v1/status` | cluster | → [`MasterStatus`] (any replica) |
//! | `GET /v1/cluster` | cluster | → [`ClusterView`] (leader) |
//! | `POST /v1/servers` | cluster | [`Server`] → `{}` (leader) |
//! | `POST /v1/heartbeat` | cluster | [`Heartbeat`] → [`Assignment`] (leader) |
//! | `POST /v1/servers/ID/drain` | admin | [`DrainRequest`] → `{}` (leader) |
//! | `DELETE /v1/servers/ID` | admin | → `{}`: forget a server holding nothing (leader) |
//! | `POST /v1/groups` | admin | [`CreateGroups`] → `[Group]` (leader) |
//! | `GET /v1/volumes` | cluster | → `[Volume]` (leader) |
//! | `POST /v1/volumes` | admin | [`CreateVolume`] → [`Volume`] (leader) |
//! | `GET /v1/volumes/NAME` | cluster | → [`Volume`] (leader) |
//! | `POST /v1/volumes/NAME/resize` | admin | [`Resize`] → [`Volume`] (leader) |
//! | `DELETE /v1/volumes/NAME` | admin | → `{}` (leader) |
//! | `POST /v1/volumes/NAME/open` | cluster | → [`Volume`] with a new epoch (leader) |
//! | `POST /v1/volumes/NAME/allocate` | cluster | [`Allocate`] → [`Volume`] (leader) |
//! | `POST /v1/volumes/NAME/snapshots` | admin | [`SnapshotName`] → [`Task`] (leader) |
//! | `DELETE /v1/volumes/NAME/snapshots/SNAP` | admin | → [`Task`] (leader) |
//! | `POST /v1/volumes/NAME/rollback` | admin | [`SnapshotName`] → [`Task`] (leader) |
//! | `POST /v1/volumes/NAME/clone` | admin | [`CloneRequest`] → [`Task`] (leader) |
//! | `GET /v1/tasks` | cluster | → `[Task]` (leader) |
//! | `GET /v1/tasks/ID` | cluster | → [`Task`] (leader) |
//! | `POST /v1/tasks/ID/progress` | admin | [`TaskProgress`] → [`Task`] (a SnapshotWorker) |
//! | `POST /v1/tasks/ID/finish` | admin | → [`Task`] (a SnapshotWorker, once every group took it) |
//!
//! Reads served by the leader are linearizable (a ReadIndex round before
//! the state is read). A replica that does not lead answers `503` with
//! [`ApiError::kind`] `not_leader` and, when it knows it, the leader's
//! HTTP address; the client goes there.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use super::snapshot::{Snapshot, SnapshotState, Task, TaskKind, TaskState};
pub use super::state::{Group, Location, Server, Volume};

/// A Master replica's view of itself and its group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterStatus {
    pub id: u64,
    /// `leader`, `follower`, `candidate`, ...
    pub role: String,
    pub term: u64,
    /// The Master replica believed to lead, if any.
    pub leader: Option<u64>,
    /// Its HTTP address, if known.
    pub leader_http: Option<String>,
    pub applied: u64,
    pub pid: u32,
    pub volumes: usize,
    pub servers: usize,
    pub groups: usize,
}

/// Everything a client needs to route IO, and what the Master last heard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    pub servers: Vec<Server>,
    pub groups: Vec<Group>,
    /// Group id to the server that last reported leading it (soft state of
    /// the leading Master, from heartbeats; may be stale or missing).
    pub leaders: BTreeMap<u64, u64>,
    /// Server id to milliseconds since its last heartbeat reached this
    /// Master (missing: none since this Master took over).
    pub last_heard_ms: BTreeMap<u64, u64>,
    /// Groups with a replica on a dead server or reported failed, as the
    /// scheduler last found them (repair started or waiting).
    #[serde(default)]
    pub degraded: Vec<u64>,
    /// Groups with only a minority of replicas alive: not repaired
    /// automatically (their dead replicas must come back).
    #[serde(default)]
    pub stuck: Vec<u64>,
    /// The disk of each replica, as the servers last reported.
    #[serde(default)]
    pub replica_disks: Vec<ReplicaDisk>,
    /// Each server's disks as its latest heartbeat reported them.
    #[serde(default)]
    pub disk_health: BTreeMap<u64, Vec<DiskReport>>,
    /// Each server's data-path rates between its last two heartbeats.
    #[serde(default)]
    pub io_rates: BTreeMap<u64, IoRates>,
    /// Snapshot installs under way, from the receivers' latest heartbeats.
    #[serde(default)]
    pub installs: Vec<InstallView>,
}

/// One replica as its server reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaReport {
    pub group: u64,
    pub leader: bool,
    pub term: u64,
    pub applied: u64,
    /// Its configuration (the latest in its log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf: Option<ConfReport>,
    /// Why it stopped, if it failed (a storage or engine error, its disk
    /// lost): the Master repairs the group elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// Which of the server's disks holds it (0-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<u32>,
    /// The snapshot it is receiving from its leader (a new or lagging
    /// replica catching up), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installing: Option<InstallProgress>,
    /// Leader only: the servers whose replicas it is installing a
    /// snapshot on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sending_to: Vec<u64>,
}

/// How far a snapshot install has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallProgress {
    /// The snapshot's last included log index.
    pub index: u64,
    /// Bytes received and verified so far.
    pub have_bytes: u64,
    /// The snapshot's size.
    pub total_bytes: u64,
}

/// A snapshot install under way, as the Master last heard of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallView {
    pub group: u64,
    /// The server whose replica receives it.
    pub server: u64,
    #[serde(flatten)]
    pub progress: InstallProgress,
}

/// Where one replica lives: its server and the disk there (0-based).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaDisk {
    pub group: u64,
    pub server: u64,
    pub disk: u32,
}

/// Start (`true`) or stop draining a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainRequest {
    pub drained: bool,
}

/// A replica's Raft configuration, as a heartbeat reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfReport {
    /// Voters (the new ones while joint), sorted.
    pub voters: Vec<u64>,
    /// The outgoing voters while joint; empty otherwise.
    #[serde(default)]
    pub outgoing: Vec<u64>,
    #[serde(default)]
    pub learners: Vec<u64>,
    /// The log index of the configuration (its epoch).
    pub index: u64,
    /// Whether the configuration's entry is committed.
    pub committed: bool,
}

/// Remove this server's replica of `group`: the group's committed
/// configuration at log index `epoch` (its leader's latest report, at
/// least the Master's record) leaves it out. The server
/// obeys only if its replica's own configuration is older than `epoch` or
/// leaves it out too (`blockserver/gc.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcOrder {
    pub group: u64,
    pub epoch: u64,
}

/// A BlockServer's periodic report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub server: u64,
    pub replicas: Vec<ReplicaReport>,
    /// Each disk's state, in the server's disk order.
    #[serde(default)]
    pub disks: Vec<DiskReport>,
    /// The data path's requests since the server started.
    #[serde(default)]
    pub io: IoTotals,
}

/// Data-path requests a BlockServer took since it started (each counted
/// when it arrives, whatever its outcome).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoTotals {
    pub reads: u64,
    pub writes: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
}

/// A BlockServer's data-path rates between its last two heartbeats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoRates {
    pub reads_per_s: u64,
    pub writes_per_s: u64,
    pub read_bytes_per_s: u64,
    pub write_bytes_per_s: u64,
}

impl IoRates {
    /// The rates from `before` to `now`, `secs` apart (zeros when the
    /// counters went back: the server restarted).
    pub fn between(before: IoTotals, now: IoTotals, secs: f64) -> IoRates {
        if secs <= 0.0 || now.reads < before.reads || now.writes < before.writes {
            return IoRates::default();
        }
        let per = |a: u64, b: u64| (b.saturating_sub(a) as f64 / secs).round() as u64;
        IoRates {
            reads_per_s: per(before.reads, now.reads),
            writes_per_s: per(before.writes, now.writes),
            read_bytes_per_s: per(before.read_bytes, now.read_bytes),
            write_bytes_per_s: per(before.write_bytes, now.write_bytes),
        }
    }
}

/// Whether a disk takes IO, as its server sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskHealth {
    Ok,
    /// Its IO fails: its replicas were lost, it takes no new one.
    Failed,
    /// Out of space: replicas that must grow a file fail; no new one.
    Full,
}

/// One disk in a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskReport {
    pub state: DiskHealth,
    /// A slow-disk fault's wait per IO (0: none).
    #[serde(default)]
    pub slow_ms: u64,
    /// Why it failed, if it did.
    #[serde(default)]
    pub why: Option<String>,
    /// The file system's size and free space under the disk's directory
    /// (0 when it cannot be read).
    #[serde(default)]
    pub total_bytes: u64,
    #[serde(default)]
    pub free_bytes: u64,
}

/// What the Master answers a heartbeat: the groups the server must host
/// and where every server is (so it can reach its groups' peers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub groups: Vec<Group>,
    pub servers: Vec<Server>,
    /// Deleted volumes whose slices groups of this server may still hold:
    /// the server's leaders purge them.
    #[serde(default)]
    pub purge: Vec<PurgeOrder>,
    /// Leaderships this server should hand over (leader balancing).
    #[serde(default)]
    pub transfers: Vec<super::balance::LeaderMove>,
    /// Replicas this server holds that no group lists any more.
    #[serde(default)]
    pub gc: Vec<GcOrder>,
    /// Groups whose leader is lost (its replica failed while its process
    /// lives on): this server's replica should campaign.
    #[serde(default)]
    pub elect: Vec<u64>,
}

/// A deleted volume and the groups of a server that held its blocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeOrder {
    pub volume: u64,
    pub groups: Vec<u64>,
}

/// `POST /v1/groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateGroups {
    pub count: u64,
    #[serde(default = "three")]
    pub replication: usize,
    /// The pool whose disks hold the groups.
    #[serde(default = "crate::pool::default_pool")]
    pub pool: String,
}

fn three() -> usize {
    3
}

/// `POST /v1/volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateVolume {
    pub name: String,
    pub size: u64,
    #[serde(default)]
    pub block_size: Option<u64>,
    #[serde(default)]
    pub owner: String,
    /// The pool whose groups hold its blocks.
    #[serde(default = "crate::pool::default_pool")]
    pub pool: String,
}

/// `POST /v1/volumes/NAME/resize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resize {
    pub size: u64,
}

/// `POST /v1/volumes/NAME/allocate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocate {
    pub blocks: Vec<u64>,
}

/// `POST /v1/volumes/NAME/snapshots` and `.../rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotName {
    pub snapshot: String,
}

/// `POST /v1/volumes/NAME/clone`: a new volume `clone` from `snapshot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneRequest {
    pub snapshot: String,
    pub clone: String,
    #[serde(default)]
    pub owner: String,
}

/// `POST /v1/tasks/ID/progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskProgress {
    pub done: u64,
    pub total: u64,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong, for a person.
    pub error: String,
    /// For a program: `not_leader`, `unavailable`, `unauthorized`,
    /// `bad_request`, `not_found`, `conflict`, `unknown_outcome`, or a
    /// [`super::MasterError`] kind (`no_volume`, `volume_exists`, ...).
    pub kind: String,
    /// With `not_leader`: the leader's HTTP address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_http: Option<String>,
}

/// The most a request body may hold (a heartbeat of a few thousand
/// replicas, an allocation of every block of a large volume).
pub const MAX_BODY_BYTES: usize = 4 << 20;

#[cfg(test)]
mod io_tests {
    use super::*;

    #[test]
    fn io_rates_are_per_second_and_zero_after_a_restart() {
        let t = |reads, writes| IoTotals {
            reads,
            writes,
            read_bytes: reads * 4096,
            write_bytes: writes * 4096,
        };
        let r = IoRates::between(t(100, 50), t(300, 150), 2.0);
        assert_eq!(
            r,
            IoRates {
                reads_per_s: 100,
                writes_per_s: 50,
                read_bytes_per_s: 409_600,
                write_bytes_per_s: 204_800,
            }
        );
        assert_eq!(
            IoRates::between(t(300, 150), t(5, 5), 1.0),
            IoRates::default()
        );
        assert_eq!(IoRates::between(t(1, 1), t(2, 2), 0.0), IoRates::default());
    }
}
