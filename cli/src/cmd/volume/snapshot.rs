//! `cdsctl volume snapshot | snapshots | snapshot-rm | rollback | clone |
//! tasks`: a volume's snapshots through the Master, whose tasks the
//! SnapshotWorkers carry to every BlockGroup.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cds::cdscluster::CdsCluster;
use cds::engine::DEFAULT_SLICE_SIZE;
use cds::master::api::{CloneRequest, SnapshotName};
use cds::master::client::MasterClient;
use cds::master::{Task, TaskKind, TaskState, Volume as VolumeMeta};

use super::{human, runtime};

/// Pause between looks at a task.
const TASK_POLL: Duration = Duration::from_millis(20);

/// Splits `NAME@SNAP`.
pub(crate) fn split_at_snapshot(s: &str) -> Result<(&str, &str)> {
    match s.split_once('@') {
        Some((v, snap)) if !v.is_empty() && !snap.is_empty() => Ok((v, snap)),
        _ => bail!("{s:?}: write VOLUME@SNAPSHOT"),
    }
}

/// Waits until task `task` is done (or `timeout` passes); returns it.
fn wait_task(m: &MasterClient, task: &Task, timeout: Duration) -> Result<Task> {
    let deadline = Instant::now() + timeout;
    loop {
        let t: Task = m
            .get(&format!("/v1/tasks/{}", task.id))
            .with_context(|| format!("reading task {}", task.id))?;
        if t.state == TaskState::Done {
            return Ok(t);
        }
        if Instant::now() >= deadline {
            bail!(
                "task {} is still running after {timeout:?} ({} of {} groups done): is a \
                 SnapshotWorker up? (`cdsctl cds status`; `cdsctl volume tasks` shows it)",
                t.id,
                t.done,
                t.total
            );
        }
        std::thread::sleep(TASK_POLL);
    }
}

/// Starts a task with `start` and, unless `no_wait`, waits for it; prints
/// `what` and the time taken.
fn task_command(
    c: &CdsCluster,
    what: &str,
    no_wait: bool,
    timeout: Duration,
    start: impl FnOnce(&MasterClient) -> Result<Task>,
) -> Result<Task> {
    let admin = c.admin();
    let t0 = Instant::now();
    let task = start(&admin)?;
    if no_wait {
        outln!("{what}: task {} started", task.id);
        return Ok(task);
    }
    let done = wait_task(&c.master(), &task, timeout)?;
    outln!(
        "{what}: done in {:.1} ms on {} groups (task {})",
        t0.elapsed().as_secs_f64() * 1000.0,
        done.total,
        done.id
    );
    Ok(done)
}

pub(crate) fn snapshot(
    c: &CdsCluster,
    name: &str,
    snap: &str,
    no_wait: bool,
    timeout: Duration,
) -> Result<()> {
    let what = format!("snapshot {name}@{snap}");
    task_command(c, &what, no_wait, timeout, |m| {
        m.post(
            &format!("/v1/volumes/{name}/snapshots"),
            &SnapshotName {
                snapshot: snap.to_string(),
            },
        )
        .context("taking the snapshot")
    })?;
    Ok(())
}

pub(crate) fn snapshot_rm(
    c: &CdsCluster,
    name: &str,
    snap: &str,
    no_wait: bool,
    timeout: Duration,
) -> Result<()> {
    let what = format!("snapshot {name}@{snap} removed");
    task_command(c, &what, no_wait, timeout, |m| {
        m.delete(&format!("/v1/volumes/{name}/snapshots/{snap}"))
            .context("removing the snapshot")
    })?;
    Ok(())
}

pub(crate) fn rollback(
    c: &CdsCluster,
    name: &str,
    snap: &str,
    no_wait: bool,
    timeout: Duration,
) -> Result<()> {
    let what = format!("{name} rolled back to {snap}");
    task_command(c, &what, no_wait, timeout, |m| {
        m.post(
            &format!("/v1/volumes/{name}/rollback"),
            &SnapshotName {
                snapshot: snap.to_string(),
            },
        )
        .context("rolling back")
    })?;
    outln!(
        "every reader and writer now sees {snap}; the old head's slices are reclaimed in the \
         background"
    );
    Ok(())
}

pub(crate) fn clone(
    c: &CdsCluster,
    source: &str,
    new: &str,
    no_wait: bool,
    timeout: Duration,
) -> Result<()> {
    let (name, snap) = split_at_snapshot(source)?;
    let what = format!("clone {new} of {name}@{snap}");
    task_command(c, &what, no_wait, timeout, |m| {
        m.post(
            &format!("/v1/volumes/{name}/clone"),
            &CloneRequest {
                snapshot: snap.to_string(),
                clone: new.to_string(),
                owner: String::new(),
            },
        )
        .context("cloning")
    })?;
    Ok(())
}

pub(crate) fn snapshots(c: &CdsCluster, name: &str, json: bool) -> Result<()> {
    let v: VolumeMeta = c
        .master()
        .get(&format!("/v1/volumes/{name}"))
        .with_context(|| format!("volume {name}"))?;
    let slots = runtime()?.block_on(cds::volume::version_slots(&c.access(), v.id))?;
    let bytes = |version: u64| slots.get(&version).copied().unwrap_or(0) * DEFAULT_SLICE_SIZE;
    // Versions no one can read any more (deleted snapshots, heads a
    // rollback abandoned) that still hold slices: what the background
    // reclaim has left to free, or what a live version still shares.
    let gone_versions: BTreeMap<u64, u64> = slots
        .keys()
        .filter(|&&ver| ver != v.head && !v.snapshots.values().any(|s| s.version == ver))
        .map(|&ver| (ver, bytes(ver)))
        .filter(|&(_, b)| b > 0)
        .collect();
    let gone: u64 = gone_versions.values().sum();
    if json {
        let list: Vec<serde_json::Value> = v
            .snapshots
            .iter()
            .map(|(s, snap)| {
                serde_json::json!({
                    "name": s, "version": snap.version, "state": snap.state,
                    "created_ms": snap.created_ms, "bytes": bytes(snap.version),
                })
            })
            .collect();
        let out = serde_json::json!({
            "volume": v.name, "head": v.head, "base": v.base,
            "head_bytes": bytes(v.head), "gone_bytes": gone,
            "gone_versions": gone_versions, "snapshots": list, "origin": v.origin,
        });
        outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    outln!(
        "{:<24} {:>8} {:<9} {:>12}",
        "SNAPSHOT",
        "VERSION",
        "STATE",
        "OWN SPACE"
    );
    let mut list: Vec<_> = v.snapshots.iter().collect();
    list.sort_by_key(|(_, s)| s.version);
    for (s, snap) in list {
        outln!(
            "{:<24} {:>8} {:<9} {:>12}",
            s,
            snap.version,
            snap.state.to_string(),
            human(bytes(snap.version))
        );
    }
    outln!(
        "{:<24} {:>8} {:<9} {:>12}",
        "(head)",
        v.head,
        if v.task.is_some() { "busy" } else { "writable" },
        human(bytes(v.head))
    );
    if gone > 0 {
        outln!(
            "{:<24} {:>8} {:<9} {:>12}",
            "(removed versions)",
            "-",
            "held",
            human(gone)
        );
    }
    if let Some(o) = &v.origin {
        outln!(
            "a clone of {}@{} (version {})",
            o.volume,
            o.snapshot,
            o.version
        );
    }
    outln!("own space: slices written while that version was the head (what removing it frees, unless a later version shares them)");
    if gone > 0 {
        outln!("removed versions: slices of deleted snapshots and rolled-back heads that a live version still reads, or that the background reclaim has not freed yet");
    }
    Ok(())
}

pub(crate) fn tasks(c: &CdsCluster, json: bool) -> Result<()> {
    let tasks: Vec<Task> = c.master().get("/v1/tasks").context("listing tasks")?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&tasks)?);
        return Ok(());
    }
    outln!(
        "{:>5} {:<20} {:<28} {:<8} {:>10} {:>10}",
        "TASK",
        "VOLUME",
        "WHAT",
        "STATE",
        "GROUPS",
        "TOOK"
    );
    for t in tasks {
        let what = match &t.kind {
            TaskKind::Snapshot { snapshot, .. } => format!("snapshot {snapshot}"),
            TaskKind::Rollback { snapshot, .. } => format!("rollback to {snapshot}"),
            TaskKind::Delete { snapshot, .. } => format!("remove {snapshot}"),
            TaskKind::Clone { version, .. } => format!("clone (version {version})"),
        };
        let took = t.finished_ms.map_or("-".to_string(), |f| {
            format!("{} ms", f.saturating_sub(t.created_ms))
        });
        outln!(
            "{:>5} {:<20} {:<28} {:<8} {:>10} {:>10}",
            t.id,
            t.volume,
            what,
            match t.state {
                TaskState::Running => "running",
                TaskState::Done => "done",
            },
            format!("{}/{}", t.done, t.total),
            took
        );
    }
    Ok(())
}
