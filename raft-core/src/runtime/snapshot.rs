//! Snapshots as directories: where a state machine's snapshot is written,
//! how it is finished off the node task, and how an installed one is
//! handed to the state machine.
//!
//! A snapshot of gigabytes must never pass through memory, nor stall the
//! node task while it is written. So the apply task gives the state
//! machine a [`SnapshotWriter`] rooted in a fresh *staging* directory
//! under the node's snapshot store; the state machine writes or hard-links
//! its files there and may hand back a job; [`finish_staged`] runs that job
//! on a blocking thread, then syncs each file and the directory and
//! describes each file by its size and CRC-32C: counted while it was
//! written for a created file (see [`super::snapshot_file`]), by
//! streaming it through one buffer of [`SNAPSHOT_IO_BUFFER`] bytes for a
//! linked one. The node task then only writes
//! the meta and renames the directory into place
//! ([`crate::Driver::save_snapshot_dir`]): its work does not depend on the
//! state's size.
//!
//! Loading goes the other way: [`prepare_load`] hard-links the stored
//! snapshot's files, under the names the state machine gave them, into a
//! fresh directory the apply task passes to `on_snapshot_load` and removes
//! afterwards. The links keep the files alive even if a newer snapshot
//! replaces the stored one before the apply task gets to them.
//!
//! A store held in memory (`memory://`, tests) has no directory: staging
//! then happens in a private directory under the system's temporary
//! directory, and the store copies the files in (and out, to load). That
//! path is not bounded in memory, as the store itself is not.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::core::{checksum_extend, SnapshotFile, SnapshotMeta};
use crate::storage::{staged_file, NodeStorage, Storage};
use crate::NodeId;

use super::limits::SNAPSHOT_IO_BUFFER;
use super::snapshot_file::{read_tally, Tally};
use super::state_machine::{check_file_name, SnapshotJob, StagedName};
use super::GroupId;

/// Where a node stages snapshots being saved or loaded.
#[derive(Debug)]
pub(crate) struct Staging {
    root: PathBuf,
    /// A private directory of this node (store in memory), removed on drop.
    private: bool,
    /// Makes every staging directory name fresh.
    seq: AtomicU64,
}

impl Staging {
    /// The staging root of `storage`'s snapshot store, or, for a store in
    /// memory, a new private directory for node `id` of `group`.
    pub(crate) fn for_storage(
        storage: &NodeStorage,
        id: NodeId,
        group: GroupId,
    ) -> Result<Staging, String> {
        if let Some(root) = storage.snapshot_staging_root() {
            return Ok(Staging {
                root,
                private: false,
                seq: AtomicU64::new(0),
            });
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let root = std::env::temp_dir().join(format!(
            "cds-raft-snapshots-{}-g{group}-n{id}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
        Ok(Staging {
            root,
            private: true,
            seq: AtomicU64::new(0),
        })
    }

    /// Creates a fresh, empty directory `<kind>-<index>-<n>.tmp` under the
    /// root (the `.tmp` suffix makes the store remove it on open, should
    /// the process die before it is renamed or removed).
    pub(crate) fn fresh_dir(&self, kind: &str, index: u64) -> Result<PathBuf, String> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join(format!("{kind}-{index}-{n}.tmp"));
        if dir.exists() {
            // A leftover of an earlier process with the same numbering.
            std::fs::remove_dir_all(&dir)
                .map_err(|e| format!("removing {}: {e}", dir.display()))?;
        }
        std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        Ok(dir)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.private {
            remove_quietly(&self.root);
        }
    }
}

/// Removes a staging directory that is no longer needed. A failure only
/// leaves it behind: the store removes `.tmp` leftovers on open.
pub(crate) fn remove_quietly(dir: &Path) {
    if dir.exists() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A snapshot written, synced and described: ready for the node task to
/// store with [`crate::Driver::save_snapshot_dir`].
#[derive(Debug)]
pub(crate) struct Staged {
    pub(crate) dir: PathBuf,
    pub(crate) files: Vec<SnapshotFile>,
}

/// Runs the state machine's `job` (if any), then makes the staged files
/// durable and describes them: a created file's size and CRC-32C are what
/// its writer counted (checked against the file's length: a file written
/// around its writer fails the save), a linked file is read once through
/// a buffer of [`SNAPSHOT_IO_BUFFER`] bytes; each file is synced, then the
/// directory. Runs on a blocking thread.
pub(crate) fn finish_staged(
    dir: &Path,
    names: &[StagedName],
    job: Option<SnapshotJob>,
) -> Result<Staged, String> {
    if let Some(job) = job {
        job().map_err(|e| format!("the state machine's snapshot job failed: {e}"))?;
    }
    let mut buf = Vec::new();
    let mut files = Vec::with_capacity(names.len());
    for (i, (name, tally)) in names.iter().enumerate() {
        let path = staged_file(dir, i);
        let io = |op: &str, e: std::io::Error| format!("{op} {}: {e}", path.display());
        let mut f = std::fs::File::open(&path).map_err(|e| io("open", e))?;
        let Tally { size, crc } = match tally {
            Some(t) => {
                let t = read_tally(t);
                let len = f.metadata().map_err(|e| io("stat", e))?.len();
                if len != t.size {
                    return Err(format!(
                        "snapshot file {name:?} holds {len} bytes but {} were written through its writer",
                        t.size
                    ));
                }
                t
            }
            None => {
                buf.resize(SNAPSHOT_IO_BUFFER, 0);
                let (mut size, mut crc) = (0u64, 0u32);
                loop {
                    let n = f.read(&mut buf).map_err(|e| io("read", e))?;
                    if n == 0 {
                        break;
                    }
                    crc = checksum_extend(crc, &buf[..n]);
                    size += n as u64;
                }
                Tally { size, crc }
            }
        };
        // Read-only handles sync on Linux; the data is the inode's.
        f.sync_all().map_err(|e| io("sync", e))?;
        files.push(SnapshotFile {
            name: name.clone(),
            size,
            crc,
        });
    }
    sync_dir(dir)?;
    Ok(Staged {
        dir: dir.to_path_buf(),
        files,
    })
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("sync directory {}: {e}", dir.display()))
}

/// A fresh directory holding the latest stored snapshot `meta`'s files
/// under their names, for `on_snapshot_load`: hard links to the store's
/// files (no byte copied; done on the node task, whatever the size), or,
/// for a store in memory, copies streamed out a buffer at a time. Names
/// are checked again: a received meta's names come from another node.
pub(crate) fn prepare_load(
    storage: &NodeStorage,
    staging: &Staging,
    meta: &SnapshotMeta,
) -> Result<PathBuf, String> {
    for f in &meta.files {
        check_file_name(&f.name).map_err(|e| format!("snapshot at {}: {e}", meta.index))?;
    }
    let dir = staging.fresh_dir("load", meta.index)?;
    let r = fill_load_dir(storage, meta, &dir);
    if r.is_err() {
        remove_quietly(&dir);
    }
    r.map(|()| dir)
}

fn fill_load_dir(storage: &NodeStorage, meta: &SnapshotMeta, dir: &Path) -> Result<(), String> {
    if storage.snapshot_meta().as_ref() != Some(meta) {
        return Err(format!(
            "the snapshot at {} is not the latest in storage",
            meta.index
        ));
    }
    let stored = storage.latest_snapshot_dir();
    for (i, f) in meta.files.iter().enumerate() {
        let to = dir.join(&f.name);
        if let Some((_, from)) = &stored {
            let from = staged_file(from, i);
            std::fs::hard_link(&from, &to)
                .map_err(|e| format!("link {} to {}: {e}", from.display(), to.display()))?;
            continue;
        }
        // A store in memory: copy the file out, a buffer at a time.
        let io = |op: &str, e: &dyn std::fmt::Display| format!("{op} {}: {e}", to.display());
        let mut out = std::fs::File::create(&to).map_err(|e| io("create", &e))?;
        let mut at = 0;
        while at < f.size {
            let len = (SNAPSHOT_IO_BUFFER as u64).min(f.size - at);
            let data = storage
                .snapshot_chunk(i as u32, at, len)
                .map_err(|e| io("read the snapshot for", &e))?;
            if data.is_empty() {
                return Err(format!("snapshot file {i} ends at {at} of {}", f.size));
            }
            out.write_all(&data).map_err(|e| io("write", &e))?;
            at += data.len() as u64;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::finish_staged;
    use crate::core::checksum_extend;
    use crate::runtime::state_machine::SnapshotWriter;

    #[test]
    fn created_files_are_described_by_their_writer_and_linked_ones_by_reading() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, b"linked bytes").unwrap();
        let dir = tmp.path().join("staged");
        std::fs::create_dir(&dir).unwrap();
        let mut w = SnapshotWriter::new(3, dir.clone());
        let mut a = w.create("a").unwrap();
        w.link("b", &outside).unwrap();
        let (dir, names) = w.into_parts();
        let job = Box::new(move || a.write_all(b"created bytes").map_err(|e| e.to_string()));
        let staged = finish_staged(&dir, &names, Some(job)).unwrap();
        let described: Vec<_> = staged
            .files
            .iter()
            .map(|f| (f.name.as_str(), f.size, f.crc))
            .collect();
        assert_eq!(
            described,
            [
                ("a", 13, checksum_extend(0, b"created bytes")),
                ("b", 12, checksum_extend(0, b"linked bytes")),
            ]
        );
    }

    #[test]
    fn a_created_file_written_around_its_writer_fails_the_save() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = SnapshotWriter::new(3, tmp.path().to_path_buf());
        let mut a = w.create("a").unwrap();
        a.write_all(b"through the writer").unwrap();
        let (dir, names) = w.into_parts();
        // Appended behind the writer's back.
        let path = crate::storage::staged_file(&dir, 0);
        let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(b" and not").unwrap();
        let e = finish_staged(&dir, &names, None).unwrap_err();
        assert!(e.contains("were written through its writer"), "{e}");
    }
}
