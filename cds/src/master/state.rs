//! The Master's replicated state and the commands that change it.
//!
//! Everything here is deterministic: the same commands in the same order
//! give the same state on every Master replica (no clock, no randomness;
//! ties broken by id). Commands travel as JSON: they are rare, and an
//! operator can read them in a trace.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::moves::{Move, MoveCommand};
use super::snapshot::{Origin, Snapshot, SnapshotCommand, Task};
use crate::engine::{DEFAULT_BLOCK_SIZE, SECTOR};
use crate::placement::{self, Candidate};
use crate::pool;

/// A BlockServer's place in the failure-domain hierarchy (the node and
/// its disks are the last two levels).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct Location {
    pub region: String,
    pub zone: String,
    pub rack: String,
}

/// A BlockServer as it registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    pub id: u64,
    pub raft_addr: String,
    pub data_addr: String,
    pub location: Location,
    /// Capacity of each of its disks, in bytes.
    pub disks: Vec<u64>,
    /// Being drained: its replicas move elsewhere and it gets no new ones.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drained: bool,
    /// The pool of each of its disks (empty: all in the default pool).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<String>,
}

impl Server {
    /// The pool of its disk `i`.
    pub fn pool_of(&self, i: usize) -> &str {
        pool::of_disk(&self.pools, i)
    }

    /// Whether it has a disk in `pool`.
    pub fn in_pool(&self, pool: &str) -> bool {
        (0..self.disks.len().max(1)).any(|i| self.pool_of(i) == pool)
    }

    /// The pools its disks are in, each once.
    pub fn pool_names(&self) -> BTreeSet<&str> {
        (0..self.disks.len().max(1))
            .map(|i| self.pool_of(i))
            .collect()
    }

    /// The server as a placement candidate (node level: the Master leaves
    /// the disk to the server).
    pub fn candidate(&self) -> Candidate {
        Candidate {
            region: self.location.region.clone(),
            zone: self.location.zone.clone(),
            rack: self.location.rack.clone(),
            node: self.id,
            disk: None,
        }
    }
}

/// A volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub id: u64,
    pub name: String,
    pub size: u64,
    pub block_size: u64,
    pub owner: String,
    /// Bumped at every open for writing: BlockGroups refuse writes of an
    /// older epoch.
    pub epoch: u64,
    /// Block index to the group holding it; a block not listed was never
    /// written and reads as zeros.
    pub blocks: BTreeMap<u64, u64>,
    /// The head version writes go to, and its base (the version it was
    /// started on; 0: none). See `snapshot.rs`.
    #[serde(default = "first_version")]
    pub head: u64,
    #[serde(default)]
    pub base: u64,
    /// The number the volume's next version gets.
    #[serde(default = "second_version")]
    pub next_version: u64,
    /// Snapshots by name.
    #[serde(default)]
    pub snapshots: BTreeMap<String, Snapshot>,
    /// For a clone: what its never-written slices read through to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// The pool whose groups hold its blocks (a clone's is its source's).
    #[serde(default = "pool::default_pool")]
    pub pool: String,
    /// The snapshot task under way on this volume: its next version change
    /// waits for it (so a group is never more than one step behind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<u64>,
}

fn first_version() -> u64 {
    1
}

fn second_version() -> u64 {
    2
}

/// A BlockGroup: its replicas' servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub id: u64,
    /// The voters of its configuration as last recorded (at creation, then
    /// at each finished move).
    pub replicas: Vec<u64>,
    /// The log index of the configuration `replicas` records (0: the
    /// initial one). Orders the group's configurations: a replica GC order
    /// carries it (`moves.rs`).
    #[serde(default)]
    pub epoch: u64,
    /// The move under way, if any (one at a time per group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving: Option<Move>,
    /// The pool whose disks hold its replicas.
    #[serde(default = "pool::default_pool")]
    pub pool: String,
}

impl Group {
    /// The voters the group is moving to (its replicas when no move is
    /// under way).
    pub fn target(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.replicas.clone();
        if let Some(m) = &self.moving {
            v.retain(|&r| r != m.from);
            v.push(m.to);
            v.sort_unstable();
        }
        v
    }

    /// Whether `server` holds, or is being given, a replica of it.
    pub fn involves(&self, server: u64) -> bool {
        self.replicas.contains(&server) || self.moving.as_ref().is_some_and(|m| m.to == server)
    }
}

/// A change to the Master's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MasterCommand {
    RegisterServer {
        server: Server,
    },
    /// Creates `count` groups of `pool`, each placed on `replication`
    /// servers with a disk in the pool.
    CreateGroups {
        count: u64,
        replication: usize,
        #[serde(default = "pool::default_pool")]
        pool: String,
    },
    /// Creates a volume whose blocks go to `pool`'s groups.
    CreateVolume {
        name: String,
        size: u64,
        block_size: Option<u64>,
        owner: String,
        #[serde(default = "pool::default_pool")]
        pool: String,
    },
    ResizeVolume {
        name: String,
        size: u64,
    },
    DeleteVolume {
        name: String,
    },
    /// Opens a volume for writing: a new epoch fences earlier writers.
    OpenVolume {
        name: String,
    },
    /// Assigns groups to blocks not assigned yet (a first write).
    AllocateBlocks {
        name: String,
        blocks: Vec<u64>,
    },
    /// Snapshots, rollbacks, clones and their tasks (`snapshot.rs`).
    Snapshot(SnapshotCommand),
    /// Replica moves (repair, drain, balance) and server states
    /// (`moves.rs`).
    Move(MoveCommand),
}

/// What a command came to.
///
/// Externally tagged on purpose: an internally tagged enum is decoded
/// through serde's buffered content, which cannot read the integer keys
/// of a volume's block map back from their JSON strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MasterReply {
    Ok,
    Groups { groups: Vec<Group> },
    Volume { volume: Volume },
    Task { task: Task },
    Error { error: MasterError },
}

/// Why the Master refused a command (the same on every replica).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MasterError {
    #[error("no volume named {name:?}")]
    NoVolume { name: String },
    #[error("a volume named {name:?} exists already")]
    VolumeExists { name: String },
    #[error("bad volume: {why}")]
    BadVolume { why: String },
    #[error("cannot place {replication} replicas on distinct nodes: {servers} servers have disks in pool {pool:?}")]
    NotEnoughServers {
        replication: usize,
        servers: usize,
        #[serde(default = "pool::default_pool")]
        pool: String,
    },
    #[error("pool {pool:?} has no groups to hold blocks: create some first")]
    NoGroups {
        #[serde(default = "pool::default_pool")]
        pool: String,
    },
    #[error("bad pool: {why}")]
    BadPool { why: String },
    #[error("block {block} is past the end of volume {name:?}")]
    BlockOutOfRange { name: String, block: u64 },
    #[error("server {id} registered already with another address")]
    ServerConflict { id: u64 },
    #[error("volume {name:?} has a snapshot task under way (task {task}); retry when it is done")]
    TaskUnderWay { name: String, task: u64 },
    #[error("volume {name:?} is busy (a clone being made); retry when its task is done")]
    Busy { name: String },
    #[error("volume {name:?} has no snapshot {snapshot:?}")]
    NoSnapshot { name: String, snapshot: String },
    #[error("volume {name:?} has a snapshot {snapshot:?} already")]
    SnapshotExists { name: String, snapshot: String },
    #[error("snapshot {snapshot:?} of {name:?} is not ready ({state})")]
    SnapshotNotReady {
        name: String,
        snapshot: String,
        state: String,
    },
    #[error("volume {name:?} has {max} snapshots: delete some first")]
    TooManySnapshots { name: String, max: usize },
    #[error("{name:?} is the source of clone {clone:?}: delete the clone first")]
    HasClones { name: String, clone: String },
    #[error("no task {id}")]
    NoTask { id: u64 },
    #[error("no group {id}")]
    NoGroup { id: u64 },
    #[error("no server {id}")]
    NoServer { id: u64 },
    #[error("cannot move group {group}: {why}")]
    BadMove { group: u64, why: String },
    #[error("server {id} still holds replicas or moves ({why}): drain it first")]
    ServerBusy { id: u64, why: String },
}

/// Largest volume: 64 TiB.
pub const MAX_VOLUME_BYTES: u64 = 64 << 40;
/// Most groups one `CreateGroups` makes.
pub const MAX_GROUPS_PER_REQUEST: u64 = 4096;
/// Longest volume name.
pub const MAX_NAME_BYTES: usize = 128;

/// The Master's whole state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterState {
    pub servers: BTreeMap<u64, Server>,
    pub volumes: BTreeMap<String, Volume>,
    pub groups: BTreeMap<u64, Group>,
    /// Deleted volumes (by id, never reused) and the groups that held
    /// their blocks: heartbeats tell those groups' leaders to purge them.
    /// Kept (a few bytes per group) so a replica down at the deletion
    /// purges when it leads.
    #[serde(default)]
    pub deleted: BTreeMap<u64, BTreeSet<u64>>,
    /// Snapshot tasks: those under way, and the latest finished ones.
    #[serde(default)]
    pub tasks: BTreeMap<u64, Task>,
    next_volume: u64,
    next_group: u64,
    #[serde(default)]
    pub(super) next_task: u64,
}

impl MasterState {
    /// Applies `cmd`.
    pub fn apply(&mut self, cmd: &MasterCommand) -> MasterReply {
        match self.apply_inner(cmd) {
            Ok(r) => r,
            Err(error) => MasterReply::Error { error },
        }
    }

    fn apply_inner(&mut self, cmd: &MasterCommand) -> Result<MasterReply, MasterError> {
        match cmd {
            MasterCommand::RegisterServer { server } => {
                if let Some(old) = self.servers.get(&server.id) {
                    if old.raft_addr != server.raft_addr {
                        return Err(MasterError::ServerConflict { id: server.id });
                    }
                }
                // A restart registers again: what the Master decided
                // about the server (drained) stays.
                let drained = self.servers.get(&server.id).is_some_and(|s| s.drained);
                self.servers.insert(
                    server.id,
                    Server {
                        drained,
                        ..server.clone()
                    },
                );
                Ok(MasterReply::Ok)
            }
            MasterCommand::CreateGroups {
                count,
                replication,
                pool,
            } => {
                if *count > MAX_GROUPS_PER_REQUEST {
                    return Err(MasterError::BadVolume {
                        why: format!("{count} groups at once: at most {MAX_GROUPS_PER_REQUEST}"),
                    });
                }
                check_pool(pool)?;
                let mut made = Vec::new();
                for _ in 0..*count {
                    let replicas = place(&self.servers, &self.groups, pool, *replication)?;
                    self.next_group += 1;
                    let g = Group {
                        id: self.next_group,
                        replicas,
                        epoch: 0,
                        moving: None,
                        pool: pool.clone(),
                    };
                    self.groups.insert(g.id, g.clone());
                    made.push(g);
                }
                Ok(MasterReply::Groups { groups: made })
            }
            MasterCommand::CreateVolume {
                name,
                size,
                block_size,
                owner,
                pool,
            } => {
                check_name(name)?;
                check_pool(pool)?;
                // A pool exists where servers have disks in it: a name no
                // server knows is a typo, refused before any data goes in.
                if !self.servers.values().any(|s| s.in_pool(pool)) {
                    let known: BTreeSet<&str> =
                        self.servers.values().flat_map(Server::pool_names).collect();
                    return Err(MasterError::BadPool {
                        why: format!(
                            "no server has a disk in pool {pool:?} (pools: {})",
                            known.into_iter().collect::<Vec<_>>().join(", ")
                        ),
                    });
                }
                if self.volumes.contains_key(name) {
                    return Err(MasterError::VolumeExists { name: name.clone() });
                }
                let block_size = block_size.unwrap_or(DEFAULT_BLOCK_SIZE);
                check_size(*size, block_size)?;
                self.next_volume += 1;
                let v = Volume {
                    id: self.next_volume,
                    name: name.clone(),
                    size: *size,
                    block_size,
                    owner: owner.clone(),
                    epoch: 0,
                    blocks: BTreeMap::new(),
                    head: 1,
                    base: 0,
                    next_version: 2,
                    snapshots: BTreeMap::new(),
                    origin: None,
                    task: None,
                    pool: pool.clone(),
                };
                self.volumes.insert(name.clone(), v.clone());
                Ok(MasterReply::Volume { volume: v })
            }
            MasterCommand::ResizeVolume { name, size } => {
                let v = self.volume_mut(name)?;
                check_size(*size, v.block_size)?;
                if *size < v.size {
                    return Err(MasterError::BadVolume {
                        why: format!("shrinking {} to {size} bytes would lose data", v.size),
                    });
                }
                v.size = *size;
                Ok(MasterReply::Volume { volume: v.clone() })
            }
            MasterCommand::DeleteVolume { name } => {
                let v = self
                    .volumes
                    .get(name)
                    .ok_or_else(|| MasterError::NoVolume { name: name.clone() })?;
                if let Some(c) = self.clones_of(v.id).next() {
                    return Err(MasterError::HasClones {
                        name: name.clone(),
                        clone: c.name.clone(),
                    });
                }
                if v.task.is_some() {
                    return Err(MasterError::Busy { name: name.clone() });
                }
                let v = self
                    .volumes
                    .remove(name)
                    .ok_or_else(|| MasterError::NoVolume { name: name.clone() })?;
                let groups: BTreeSet<u64> = v.blocks.values().copied().collect();
                if !groups.is_empty() {
                    self.deleted.insert(v.id, groups);
                }
                Ok(MasterReply::Ok)
            }
            MasterCommand::OpenVolume { name } => {
                let v = self.volume_mut(name)?;
                if v.origin.is_some() && v.task.is_some() {
                    // A clone is usable once every group knows its origin.
                    return Err(MasterError::Busy { name: name.clone() });
                }
                v.epoch += 1;
                Ok(MasterReply::Volume { volume: v.clone() })
            }
            MasterCommand::AllocateBlocks { name, blocks } => {
                let v = self
                    .volumes
                    .get(name)
                    .ok_or_else(|| MasterError::NoVolume { name: name.clone() })?;
                let pool = v.pool.clone();
                if !self.groups.values().any(|g| g.pool == pool) {
                    return Err(MasterError::NoGroups { pool });
                }
                let nblocks = v.size.div_ceil(v.block_size);
                if let Some(&b) = blocks.iter().find(|&&b| b >= nblocks) {
                    return Err(MasterError::BlockOutOfRange {
                        name: name.clone(),
                        block: b,
                    });
                }
                // Each new block goes to the group of the volume's pool
                // holding the fewest blocks (of all volumes), lowest id
                // first on a tie.
                let mut load: BTreeMap<u64, u64> = self
                    .groups
                    .values()
                    .filter(|g| g.pool == pool)
                    .map(|g| (g.id, 0))
                    .collect();
                for v in self.volumes.values() {
                    for g in v.blocks.values() {
                        if let Some(n) = load.get_mut(g) {
                            *n += 1;
                        }
                    }
                }
                let v = self.volume_mut(name)?;
                for &b in blocks {
                    if v.blocks.contains_key(&b) {
                        continue;
                    }
                    let (&g, _) = load
                        .iter()
                        .min_by_key(|(&g, &n)| (n, g))
                        .expect("the pool's groups checked non-empty");
                    v.blocks.insert(b, g);
                    *load.entry(g).or_default() += 1;
                }
                Ok(MasterReply::Volume { volume: v.clone() })
            }
            MasterCommand::Snapshot(c) => self.apply_snapshot(c),
            MasterCommand::Move(c) => self.apply_move(c),
        }
    }

    pub(super) fn next_volume_id_bump(&mut self) {
        self.next_volume += 1;
    }

    pub(super) fn last_volume_id(&self) -> u64 {
        self.next_volume
    }

    pub(super) fn volume_mut(&mut self, name: &str) -> Result<&mut Volume, MasterError> {
        self.volumes
            .get_mut(name)
            .ok_or_else(|| MasterError::NoVolume {
                name: name.to_string(),
            })
    }
}

fn check_pool(name: &str) -> Result<(), MasterError> {
    pool::check_name(name).map_err(|e| MasterError::BadPool { why: e.to_string() })
}

pub(super) fn check_name(name: &str) -> Result<(), MasterError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(MasterError::BadVolume {
            why: format!(
                "name {:?}: 1 to {MAX_NAME_BYTES} ASCII letters, digits, '-', '_' or '.'",
                name.chars().take(40).collect::<String>()
            ),
        })
    }
}

fn check_size(size: u64, block_size: u64) -> Result<(), MasterError> {
    let bad = |why: String| Err(MasterError::BadVolume { why });
    if block_size == 0 || !block_size.is_multiple_of(64 << 10) || block_size > 1 << 30 {
        return bad(format!(
            "block size {block_size}: a multiple of 64 KiB, at most 1 GiB"
        ));
    }
    if size == 0 || !size.is_multiple_of(SECTOR) || size > MAX_VOLUME_BYTES {
        return bad(format!(
            "size {size}: a positive multiple of {SECTOR} bytes, at most {MAX_VOLUME_BYTES}"
        ));
    }
    Ok(())
}

/// Picks `n` servers for a new group of `pool` by the rules of
/// [`crate::placement`], among the servers with a disk in the pool:
/// distinct members of the highest failure-domain level that has `n` of
/// them (regions, zones, racks, else nodes), never two on one node; among
/// those, the nodes holding the fewest of the pool's replicas, then the
/// ones sharing the fewest groups with the replicas already picked
/// (scatter width), then the lowest ids.
pub fn place(
    servers: &BTreeMap<u64, Server>,
    groups: &BTreeMap<u64, Group>,
    pool: &str,
    n: usize,
) -> Result<Vec<u64>, MasterError> {
    let members: Vec<&Server> = servers
        .values()
        .filter(|s| !s.drained && s.in_pool(pool))
        .collect();
    let candidates: Vec<Candidate> = members.iter().map(|s| s.candidate()).collect();
    let placed: Vec<Vec<placement::Slot>> = groups
        .values()
        .filter(|g| g.pool == pool)
        .map(|g| g.replicas.iter().map(|&r| (r, None)).collect())
        .collect();
    match placement::place(&candidates, &placed, n, false) {
        Ok(chosen) => Ok(chosen.iter().map(|c| c.node).collect()),
        Err(_) => Err(MasterError::NotEnoughServers {
            replication: n,
            servers: members.len(),
            pool: pool.to_string(),
        }),
    }
}
