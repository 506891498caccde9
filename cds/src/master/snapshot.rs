//! Snapshots, rollbacks and clones in the Master: the records, and the
//! tasks a SnapshotWorker carries out on every BlockGroup.
//!
//! A volume's versions are numbered here, in the order they are made; the
//! volume's `head` is the version writes go to and `base` the version it
//! was started on. Every command below changes the Master's state at once
//! and records a [`Task`] that carries the change to the BlockGroups:
//!
//! - **snapshot**: the head becomes the snapshot's version and a new head
//!   starts on it (`head` = a new number, `base` = the old head); the
//!   task advances every group to the new head, which freezes the old one
//!   there. The snapshot is `ready` when every group has.
//! - **rollback** to a snapshot: a new head on the snapshot's version; the
//!   task advances every group, which abandons its old head there.
//! - **delete** a snapshot: the task drops its version on every group,
//!   then the record goes.
//! - **clone** a snapshot: a new volume whose slices read through to the
//!   snapshot; the task tells every group, then the clone can be opened.
//!
//! One task at a time per volume: a volume's next version change waits
//! until every group took the previous one, so a group (or a writer) is
//! at most one step behind, which is what lets a BlockGroup take the step
//! from a write's tag alone (`engine/versions.rs`). Tasks are idempotent
//! on the groups, so a SnapshotWorker that dies mid-task leaves nothing a
//! restart cannot finish.

use serde::{Deserialize, Serialize};

use super::state::{check_name, MasterError, MasterReply, MasterState, Volume};

/// The most snapshots one volume keeps (the engine keeps up to 256
/// retained versions per volume; this leaves room).
pub const MAX_SNAPSHOTS: usize = 128;
/// Finished tasks kept for `volume tasks` and progress reports.
pub const MAX_FINISHED_TASKS: usize = 256;

/// A snapshot of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The volume version it is.
    pub version: u64,
    /// The volume's size when it was taken.
    #[serde(default)]
    pub size: u64,
    pub state: SnapshotState,
    /// When it was asked for (the proposer's clock, ms since the epoch).
    pub created_ms: u64,
}

/// Where a snapshot stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotState {
    /// Its task has not reached every group yet.
    Creating,
    Ready,
    /// Being dropped from every group.
    Deleting,
}

impl std::fmt::Display for SnapshotState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SnapshotState::Creating => "creating",
            SnapshotState::Ready => "ready",
            SnapshotState::Deleting => "deleting",
        })
    }
}

/// What a clone reads through to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub volume_id: u64,
    pub volume: String,
    pub snapshot: String,
    pub version: u64,
}

/// One task for the SnapshotWorkers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: u64,
    /// The volume it works on (for a clone, the new volume).
    pub volume: String,
    pub volume_id: u64,
    pub kind: TaskKind,
    pub state: TaskState,
    /// Groups done, of `total`, as last reported by a worker.
    pub done: u64,
    pub total: u64,
    pub created_ms: u64,
    #[serde(default)]
    pub finished_ms: Option<u64>,
}

/// What a task does on every group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskKind {
    /// Advance every group to `head` (based on `base`, the snapshot).
    Snapshot {
        snapshot: String,
        head: u64,
        base: u64,
    },
    /// Advance every group to `head`, based on the snapshot's version.
    Rollback {
        snapshot: String,
        head: u64,
        base: u64,
    },
    /// Drop `version` on every group.
    Delete { snapshot: String, version: u64 },
    /// Tell every group the clone's origin.
    Clone { source: u64, version: u64 },
}

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Running,
    Done,
}

/// The Master commands of this module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "snapshot_op", rename_all = "snake_case")]
pub enum SnapshotCommand {
    Create {
        volume: String,
        snapshot: String,
        now_ms: u64,
    },
    Rollback {
        volume: String,
        snapshot: String,
        now_ms: u64,
    },
    Delete {
        volume: String,
        snapshot: String,
        now_ms: u64,
    },
    Clone {
        volume: String,
        snapshot: String,
        clone: String,
        owner: String,
        now_ms: u64,
    },
    /// A worker's progress on a task: `done` groups of `total`.
    Progress { task: u64, done: u64, total: u64 },
    /// A worker finished a task on every group.
    Finish { task: u64, now_ms: u64 },
}

impl MasterState {
    /// The clones of volume `id` (those reading through to it).
    pub fn clones_of(&self, id: u64) -> impl Iterator<Item = &Volume> + '_ {
        self.volumes
            .values()
            .filter(move |v| v.origin.as_ref().is_some_and(|o| o.volume_id == id))
    }

    /// The tasks under way, oldest first.
    pub fn running_tasks(&self) -> impl Iterator<Item = &Task> + '_ {
        self.tasks
            .values()
            .filter(|t| t.state == TaskState::Running)
    }

    pub(super) fn apply_snapshot(
        &mut self,
        cmd: &SnapshotCommand,
    ) -> Result<MasterReply, MasterError> {
        match cmd {
            SnapshotCommand::Create {
                volume,
                snapshot,
                now_ms,
            } => {
                check_name(snapshot)?;
                let v = self.idle_volume(volume)?;
                if v.snapshots.contains_key(snapshot) {
                    return Err(MasterError::SnapshotExists {
                        name: volume.clone(),
                        snapshot: snapshot.clone(),
                    });
                }
                if v.snapshots.len() >= MAX_SNAPSHOTS {
                    return Err(MasterError::TooManySnapshots {
                        name: volume.clone(),
                        max: MAX_SNAPSHOTS,
                    });
                }
                let v = self.volume_mut(volume)?;
                let (frozen, head) = (v.head, v.next_version);
                v.snapshots.insert(
                    snapshot.clone(),
                    Snapshot {
                        version: frozen,
                        size: v.size,
                        state: SnapshotState::Creating,
                        created_ms: *now_ms,
                    },
                );
                v.next_version += 1;
                v.head = head;
                v.base = frozen;
                let kind = TaskKind::Snapshot {
                    snapshot: snapshot.clone(),
                    head,
                    base: frozen,
                };
                self.start_task(volume, kind, *now_ms)
            }
            SnapshotCommand::Rollback {
                volume,
                snapshot,
                now_ms,
            } => {
                self.idle_volume(volume)?;
                let to = self.ready_snapshot(volume, snapshot)?;
                let v = self.volume_mut(volume)?;
                let head = v.next_version;
                v.next_version += 1;
                v.head = head;
                v.base = to;
                let kind = TaskKind::Rollback {
                    snapshot: snapshot.clone(),
                    head,
                    base: to,
                };
                self.start_task(volume, kind, *now_ms)
            }
            SnapshotCommand::Delete {
                volume,
                snapshot,
                now_ms,
            } => {
                let v = self.idle_volume(volume)?;
                let id = v.id;
                let version = self.ready_snapshot(volume, snapshot)?;
                let user = self
                    .clones_of(id)
                    .find(|c| c.origin.as_ref().is_some_and(|o| o.version == version));
                if let Some(c) = user {
                    return Err(MasterError::HasClones {
                        name: format!("{volume}@{snapshot}"),
                        clone: c.name.clone(),
                    });
                }
                let v = self.volume_mut(volume)?;
                if let Some(s) = v.snapshots.get_mut(snapshot) {
                    s.state = SnapshotState::Deleting;
                }
                let kind = TaskKind::Delete {
                    snapshot: snapshot.clone(),
                    version,
                };
                self.start_task(volume, kind, *now_ms)
            }
            SnapshotCommand::Clone {
                volume,
                snapshot,
                clone,
                owner,
                now_ms,
            } => {
                check_name(clone)?;
                if self.volumes.contains_key(clone) {
                    return Err(MasterError::VolumeExists {
                        name: clone.clone(),
                    });
                }
                let version = self.ready_snapshot(volume, snapshot)?;
                let src = self
                    .volumes
                    .get(volume)
                    .ok_or_else(|| MasterError::NoVolume {
                        name: volume.clone(),
                    })?
                    .clone();
                self.next_volume_id_bump();
                let c = Volume {
                    id: self.last_volume_id(),
                    name: clone.clone(),
                    size: src.size,
                    block_size: src.block_size,
                    owner: owner.clone(),
                    epoch: 0,
                    // A clone's blocks live where the source's do: a write
                    // copies the source's slice within the group.
                    blocks: src.blocks.clone(),
                    head: 1,
                    base: 0,
                    next_version: 2,
                    snapshots: Default::default(),
                    origin: Some(Origin {
                        volume_id: src.id,
                        volume: volume.clone(),
                        snapshot: snapshot.clone(),
                        version,
                    }),
                    task: None,
                    pool: src.pool.clone(),
                };
                self.volumes.insert(clone.clone(), c);
                let kind = TaskKind::Clone {
                    source: src.id,
                    version,
                };
                self.start_task(clone, kind, *now_ms)
            }
            SnapshotCommand::Progress { task, done, total } => {
                let t = self
                    .tasks
                    .get_mut(task)
                    .ok_or(MasterError::NoTask { id: *task })?;
                if t.state == TaskState::Running {
                    t.done = (*done).min(*total);
                    t.total = *total;
                }
                Ok(MasterReply::Task { task: t.clone() })
            }
            SnapshotCommand::Finish { task, now_ms } => self.finish_task(*task, *now_ms),
        }
    }

    /// Volume `name`, with no task under way.
    fn idle_volume(&self, name: &str) -> Result<&Volume, MasterError> {
        let v = self
            .volumes
            .get(name)
            .ok_or_else(|| MasterError::NoVolume {
                name: name.to_string(),
            })?;
        match v.task {
            Some(task) => Err(MasterError::TaskUnderWay {
                name: name.to_string(),
                task,
            }),
            None => Ok(v),
        }
    }

    /// The version of a ready snapshot.
    fn ready_snapshot(&self, volume: &str, snapshot: &str) -> Result<u64, MasterError> {
        let v = self
            .volumes
            .get(volume)
            .ok_or_else(|| MasterError::NoVolume {
                name: volume.to_string(),
            })?;
        let s = v
            .snapshots
            .get(snapshot)
            .ok_or_else(|| MasterError::NoSnapshot {
                name: volume.to_string(),
                snapshot: snapshot.to_string(),
            })?;
        if s.state != SnapshotState::Ready {
            return Err(MasterError::SnapshotNotReady {
                name: volume.to_string(),
                snapshot: snapshot.to_string(),
                state: s.state.to_string(),
            });
        }
        Ok(s.version)
    }

    fn start_task(
        &mut self,
        volume: &str,
        kind: TaskKind,
        now_ms: u64,
    ) -> Result<MasterReply, MasterError> {
        self.next_task += 1;
        let id = self.next_task;
        let v = self.volume_mut(volume)?;
        v.task = Some(id);
        let task = Task {
            id,
            volume: volume.to_string(),
            volume_id: v.id,
            kind,
            state: TaskState::Running,
            done: 0,
            total: 0,
            created_ms: now_ms,
            finished_ms: None,
        };
        self.tasks.insert(id, task.clone());
        Ok(MasterReply::Task { task })
    }

    fn finish_task(&mut self, id: u64, now_ms: u64) -> Result<MasterReply, MasterError> {
        let t = self
            .tasks
            .get(&id)
            .ok_or(MasterError::NoTask { id })?
            .clone();
        if t.state == TaskState::Done {
            return Ok(MasterReply::Task { task: t });
        }
        if let Some(v) = self.volumes.get_mut(&t.volume) {
            if v.task == Some(id) {
                v.task = None;
            }
            match &t.kind {
                TaskKind::Snapshot { snapshot, .. } => {
                    if let Some(s) = v.snapshots.get_mut(snapshot) {
                        s.state = SnapshotState::Ready;
                    }
                }
                TaskKind::Delete { snapshot, .. } => {
                    v.snapshots.remove(snapshot);
                }
                TaskKind::Rollback { .. } | TaskKind::Clone { .. } => {}
            }
        }
        let t = self.tasks.get_mut(&id).ok_or(MasterError::NoTask { id })?;
        t.state = TaskState::Done;
        t.done = t.total;
        t.finished_ms = Some(now_ms);
        let task = t.clone();
        // Keep the newest finished tasks only.
        let finished: Vec<u64> = self
            .tasks
            .values()
            .filter(|t| t.state == TaskState::Done)
            .map(|t| t.id)
            .collect();
        for old in finished
            .iter()
            .take(finished.len().saturating_sub(MAX_FINISHED_TASKS))
        {
            self.tasks.remove(old);
        }
        Ok(MasterReply::Task { task })
    }
}
