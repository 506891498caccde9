//! Replica GC: a replica the Master no longer lists for this server goes
//! to its disk's trash directory, and is deleted from there after a delay.
//!
//! The Master orders it (`GcOrder`) only after it has led for a full round
//! of heartbeats, with an epoch: the log index of a committed
//! configuration of the group (its leader's latest report, at least the
//! Master's record) that leaves the server out. The server obeys only if its replica
//! is obsolete by its own account too ([`obsolete`]), so an order based on
//! a Master state that is behind the group never removes a live member.
//! The trash keeps the files for an operator who finds the order was wrong
//! (a mistaken topology, a bug): moving a directory back under `groups/`
//! and restarting the server brings the replica back.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use raft_core::{Membership, NodeId};

use super::Inner;

/// Whether this server's replica, whose configuration is `membership` set
/// at log index `conf_index`, may be removed on an order carrying `epoch`:
/// its configuration is older than the one the Master recorded (the group
/// moved on without it while it was away), or its own configuration
/// leaves it out (it saw its removal). A replica that is a member of a
/// configuration at least as new as the Master's record is kept.
pub fn obsolete(me: NodeId, membership: &Membership, conf_index: u64, epoch: u64) -> bool {
    conf_index < epoch || !membership.contains(me)
}

/// The trash directory of a disk.
pub(crate) fn trash_dir(disk: &Path) -> PathBuf {
    disk.join("trash")
}

/// Moves `group`'s files on `disk` to the trash, named `GROUP.UNIX_MS`;
/// both directories are synced, so the move survives a crash.
pub(crate) fn to_trash(disk: &Path, group: u64) -> std::io::Result<PathBuf> {
    let groups = disk.join("groups");
    let trash = trash_dir(disk);
    std::fs::create_dir_all(&trash)?;
    let dest = trash.join(format!("{group}.{}", now_ms()));
    std::fs::rename(groups.join(group.to_string()), &dest)?;
    for d in [&groups, &trash] {
        std::fs::File::open(d)?.sync_all()?;
    }
    Ok(dest)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Deletes, every so often, what lies in the trash for longer than
/// `keep`. Entries with a name this code did not give are left alone.
pub(crate) async fn sweep(inner: Arc<Inner>, keep: Duration) {
    let every = (keep / 4).clamp(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        tokio::time::sleep(every).await;
        let disks = inner.cfg.disks.clone();
        let id = inner.cfg.id;
        let swept = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for d in &disks {
                out.extend(sweep_disk(&trash_dir(d), keep));
            }
            out
        })
        .await
        .unwrap_or_default();
        for (path, outcome) in swept {
            match outcome {
                Ok(()) => eprintln!("blockserver {id}: deleted {}", path.display()),
                Err(e) => eprintln!("blockserver {id}: cannot delete {}: {e}", path.display()),
            }
        }
    }
}

fn sweep_disk(trash: &Path, keep: Duration) -> Vec<(PathBuf, std::io::Result<()>)> {
    let Ok(entries) = std::fs::read_dir(trash) else {
        return Vec::new();
    };
    let now = now_ms();
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (group, ms) = name.split_once('.')?;
            group.parse::<u64>().ok()?;
            let ms: u64 = ms.parse().ok()?;
            (now.saturating_sub(ms) >= keep.as_millis() as u64).then(|| e.path())
        })
        .map(|p| {
            let r = std::fs::remove_dir_all(&p);
            (p, r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(voters: &[u64]) -> Membership {
        Membership {
            voters: voters.to_vec(),
            ..Membership::default()
        }
    }

    #[test]
    fn only_an_obsolete_replica_is_removed() {
        // Away during a move at index 40: its configuration (index 3)
        // still lists it.
        assert!(obsolete(3, &m(&[1, 2, 3]), 3, 40));
        // Saw its own removal.
        assert!(obsolete(3, &m(&[1, 2, 4]), 40, 40));
        // Never configured (a move abandoned before it was added).
        assert!(obsolete(4, &m(&[]), 0, 40));
        // A member at the Master's epoch or later: kept.
        assert!(!obsolete(4, &m(&[1, 2, 4]), 40, 40));
        assert!(!obsolete(4, &m(&[1, 2, 4]), 57, 40));
    }

    #[test]
    fn the_trash_keeps_then_deletes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = dir.path();
        std::fs::create_dir_all(disk.join("groups/7/engine")).expect("mkdir");
        std::fs::write(disk.join("groups/7/engine/x"), b"data").expect("write");
        let dest = to_trash(disk, 7).expect("trash");
        assert!(!disk.join("groups/7").exists());
        assert!(dest.join("engine/x").exists());
        std::fs::create_dir_all(trash_dir(disk).join("not-ours")).expect("mkdir");
        assert!(sweep_disk(&trash_dir(disk), Duration::from_secs(3600)).is_empty());
        let swept = sweep_disk(&trash_dir(disk), Duration::ZERO);
        assert_eq!(swept.len(), 1);
        assert!(!dest.exists());
        assert!(trash_dir(disk).join("not-ours").exists());
    }
}
