//! The SnapshotWorker: carries the Master's snapshot tasks to every
//! BlockGroup.
//!
//! A worker holds no state of its own: it asks the Master for the tasks
//! under way ([`crate::master::Task`]), sends each task's step to every
//! group of the cluster (a version advance for a snapshot or rollback, a
//! version drop for a deleted snapshot, the origin for a clone), reports
//! progress, and tells the Master when every group has taken it. Every
//! step is idempotent on the groups, so a worker killed mid-task, or two
//! workers on one task, or a task retried after a Master leader change,
//! all end in the same state. [`process::run`] is the worker process.

pub mod process;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::blockclient::{GroupClient, IoError};
use crate::engine::Refusal;
use crate::master::api::TaskProgress;
use crate::master::client::{MasterCallError, MasterClient};
use crate::master::{Task, TaskKind};

/// Groups a task works on at once.
pub const MAX_GROUPS_IN_FLIGHT: usize = 32;
/// Pause before a group's step is sent again after a failure.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How often progress is reported while a task runs.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Why a task could not be finished now (the worker tries again later).
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("Master: {0}")]
    Master(#[from] MasterCallError),
    #[error("task {task} on group {group}: {why}")]
    Group { task: u64, group: u64, why: String },
}

/// Calls the Master off the async threads (its client blocks).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, MasterCallError> + Send + 'static,
) -> Result<T, MasterCallError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(MasterCallError::Protocol(format!("task failed: {e}"))))
}

/// One group's step of `task`, sent until the group has taken it (or
/// `give_up` passes: the task is then retried from the start later).
async fn group_step(
    data: &GroupClient,
    group: u64,
    replicas: &[u64],
    task: &Task,
    give_up: Instant,
) -> Result<(), TaskError> {
    let vol = task.volume_id;
    loop {
        let r = match &task.kind {
            TaskKind::Snapshot { head, base, .. } | TaskKind::Rollback { head, base, .. } => {
                match data.advance(group, replicas, vol, *head, *base).await {
                    // The group is past this step already (a later one
                    // reached it): nothing to do.
                    Err(IoError::Refused(Refusal::Stale { head: h, .. })) if h >= *head => Ok(()),
                    r => r.map(|_| ()),
                }
            }
            TaskKind::Delete { version, .. } => {
                data.drop_version(group, replicas, vol, *version).await
            }
            TaskKind::Clone { source, version } => {
                data.clone_volume(group, replicas, vol, *source, *version)
                    .await
            }
        };
        match r {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= give_up => {
                return Err(TaskError::Group {
                    task: task.id,
                    group,
                    why: e.to_string(),
                })
            }
            Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
        }
    }
}

/// Runs `task` on every group of `groups` (group id to replica server
/// ids), reporting progress to the Master, and finishes it there. A group
/// that cannot take its step within `patience` fails the run (nothing is
/// undone: the next run skips what is done). With `groups_per_second`
/// (0: as fast as the groups answer), steps start no faster than that,
/// so a task's entries do not crowd the volume's own writes.
pub async fn run_task(
    admin: Arc<MasterClient>,
    data: Arc<GroupClient>,
    groups: &BTreeMap<u64, Vec<u64>>,
    task: &Task,
    patience: Duration,
    groups_per_second: u32,
) -> Result<(), TaskError> {
    let pace = (groups_per_second > 0).then(|| Duration::from_secs(1) / groups_per_second);
    let mut next_start = Instant::now();
    let total = groups.len() as u64;
    // The pace adds its own time to what the groups may take.
    let paced = pace.map_or(Duration::ZERO, |p| {
        p.saturating_mul(u32::try_from(total).unwrap_or(u32::MAX))
    });
    let give_up = Instant::now() + patience + paced;
    let mut set = JoinSet::new();
    let mut pending = groups.iter().peekable();
    let mut done = 0u64;
    let mut first_err = None;
    let mut last_report = Instant::now();
    let report = |done: u64| {
        let admin = admin.clone();
        let path = format!("/v1/tasks/{}/progress", task.id);
        async move {
            blocking(move || admin.post::<_, Task>(&path, &TaskProgress { done, total })).await
        }
    };
    loop {
        while set.len() < MAX_GROUPS_IN_FLIGHT && pending.peek().is_some() {
            if let Some(pace) = pace {
                // Paced: start the next step when its turn comes, or
                // collect a finished one first if it is not time yet.
                if Instant::now() < next_start && !set.is_empty() {
                    break;
                }
                tokio::time::sleep_until(next_start.into()).await;
                next_start += pace;
            }
            let Some((&g, replicas)) = pending.next() else {
                break;
            };
            let (data, replicas, task) = (data.clone(), replicas.clone(), task.clone());
            set.spawn(async move { group_step(&data, g, &replicas, &task, give_up).await });
        }
        let Some(r) = set.join_next().await else {
            break;
        };
        match r {
            Ok(Ok(())) => done += 1,
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(TaskError::Group {
                    task: task.id,
                    group: 0,
                    why: format!("step task failed: {e}"),
                });
            }
        }
        if last_report.elapsed() >= PROGRESS_EVERY {
            last_report = Instant::now();
            report(done).await?;
        }
    }
    if let Some(e) = first_err {
        report(done).await?;
        return Err(e);
    }
    report(done).await?;
    let path = format!("/v1/tasks/{}/finish", task.id);
    blocking(move || admin.post::<_, Task>(&path, &serde_json::json!({}))).await?;
    Ok(())
}
