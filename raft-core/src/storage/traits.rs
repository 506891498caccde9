//! The three stores a node's durable state is split into.
//!
//! braft lets a deployment choose log, meta and snapshot storage
//! separately; these traits are that seam. A [`super::NodeStorage`] composes
//! one of each, implements the core's [`super::Storage`] over them and
//! applies a `Ready` to them in the contract's order. Implementations only
//! store: the Raft rules (what may be compacted, what an install does to
//! the hard state) live in `NodeStorage`, once.
//!
//! Every implementation must pass the conformance suite in
//! `raft-core/tests/storage_conformance.rs`.

use std::path::{Path, PathBuf};

use crate::core::{ConfState, Entry, HardState, SnapshotMeta};

use super::{PendingSync, StorageError};

/// The log: entries after a compaction point, appended in batches.
///
/// Indexes start at 1. `first_index()..=last_index()` can be read; the
/// compaction point `first_index() - 1` keeps its term. Reads outside that
/// range return [`StorageError::Unavailable`], never panic.
pub trait LogStore: Send {
    /// The first index held: the compaction point plus one.
    fn first_index(&self) -> u64;
    /// The last index held (`first_index() - 1` when empty).
    fn last_index(&self) -> u64;
    /// The term of `index`, for the compaction point and every held entry.
    fn term(&self, index: u64) -> Result<u64, StorageError>;
    /// Entries `lo..hi`: at least one when the range is not empty, then as
    /// many as fit in `max_bytes` (counted by [`Entry::size`]).
    fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, StorageError>;
    /// Appends `ents` (consecutive indexes), first dropping every entry at
    /// or after `ents[0].index`, which must lie in
    /// `first_index()..=last_index() + 1`. Returns how many entries were
    /// dropped. The entries are readable at once but durable only after
    /// [`LogStore::sync`].
    fn append(&mut self, ents: &[Entry]) -> Result<usize, StorageError>;
    /// Makes every appended entry durable (one fsync for the whole batch).
    fn sync(&mut self) -> Result<(), StorageError>;
    /// Asks the host's shared sync (`storage::host_sync`) to make every
    /// appended entry durable, for a caller that waits for the request
    /// away from the log (an async task) and then hands the outcome to
    /// [`LogStore::end_shared_sync`]; nothing else may touch the log in
    /// between. `None` (the default): nothing is pending, so the log syncs
    /// itself ([`LogStore::sync`]).
    fn begin_shared_sync(&mut self) -> Result<Option<PendingSync>, StorageError> {
        Ok(None)
    }
    /// Ends a sync begun with [`LogStore::begin_shared_sync`]: on success
    /// the entries are durable; a failure is final for this log, as any
    /// failed sync (what the disk held may be lost).
    fn end_shared_sync(&mut self, outcome: std::io::Result<()>) -> Result<(), StorageError> {
        outcome.map_err(|e| StorageError::Failed(format!("shared log sync: {e}")))
    }
    /// Whether appending `ents` and syncing could hold the calling thread
    /// on the disk (a sync of its own, a truncation, a new segment); a
    /// caller on an async task moves such work to a thread that may block.
    /// Only a hint: the default, no, suits stores in memory.
    fn append_may_block(&self, ents: &[Entry]) -> bool {
        let _ = ents;
        false
    }
    /// Drops the entries up to `upto` (at most `last_index()`), which
    /// becomes the compaction point and keeps its term. Durable on return.
    /// Returns how many entries were dropped.
    fn compact(&mut self, upto: u64) -> Result<usize, StorageError>;
    /// Drops every entry and makes `(index, term)` the compaction point, as
    /// one atomic, durable step (a snapshot install replaces the log).
    fn reset(&mut self, index: u64, term: u64) -> Result<(), StorageError>;
}

/// The hard state (term, vote, commit) and the membership base.
pub trait MetaStore: Send {
    /// The last saved state (defaults for a new node).
    fn load(&self) -> (HardState, ConfState);
    /// Replaces both, atomically and durably: after a crash the store holds
    /// either the old pair or the new one, never a mix or a torn file.
    fn save(&mut self, hs: &HardState, cs: &ConfState) -> Result<(), StorageError>;
}

/// Snapshots: the latest complete one, and at most one being received.
pub trait SnapshotStore: Send {
    /// The latest complete snapshot.
    fn latest(&self) -> Option<SnapshotMeta>;
    /// Up to `len` bytes of file `file` of the latest snapshot from
    /// `offset` (fewer at the end of the file).
    fn read_chunk(&self, file: u32, offset: u64, len: u64) -> Result<Vec<u8>, StorageError>;
    /// Makes `files` (in the order of `meta.files`) the latest snapshot,
    /// durably and atomically, and drops the previous one. A snapshot not
    /// newer than the latest changes nothing; returns whether it was saved.
    fn save(&mut self, meta: &SnapshotMeta, files: &[Vec<u8>]) -> Result<bool, StorageError>;
    /// The snapshot being received and, per file, how many bytes it holds
    /// (after a restart: how many reached the disk, so a transfer resumes).
    fn partial(&self) -> Option<(SnapshotMeta, Vec<u64>)>;
    /// Up to `len` bytes of file `file` of the partial snapshot.
    fn read_partial_chunk(&self, file: u32, offset: u64, len: u64)
        -> Result<Vec<u8>, StorageError>;
    /// Starts receiving `meta`, dropping any other partial snapshot.
    /// Durable on return.
    fn begin_partial(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError>;
    /// Appends `data` to file `file` of the partial snapshot; `offset` must
    /// be the bytes it holds. Durable after [`SnapshotStore::sync`].
    fn append_partial(&mut self, file: u32, offset: u64, data: &[u8]) -> Result<(), StorageError>;
    /// Drops the partial snapshot (none is fine).
    fn abort_partial(&mut self) -> Result<(), StorageError>;
    /// Makes the partial snapshot, whose meta must equal `meta`, the latest
    /// complete one, durably; the previous latest is dropped.
    fn install_partial(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError>;
    /// Makes every appended chunk durable.
    fn sync(&mut self) -> Result<(), StorageError>;
    /// Where file `file` of the latest snapshot lives, for error messages
    /// (`None` for stores that are not files).
    fn latest_file_path(&self, _file: u32) -> Option<std::path::PathBuf> {
        None
    }

    /// The directory holding the latest snapshot's files, file `i` of its
    /// meta at [`staged_file`]`(dir, i)`; `None` for stores that are not
    /// files. The directory stays until a newer snapshot replaces it.
    fn latest_dir(&self) -> Option<PathBuf> {
        None
    }

    /// A directory, on the file system of the snapshot directories, under
    /// which a new snapshot may be staged for [`SnapshotStore::save_dir`]
    /// (a staging directory there is moved into place by a rename, never
    /// copied). Names ending in `.tmp` are removed when the store opens.
    /// `None` for stores that are not files: stage anywhere, and
    /// `save_dir` copies the files in.
    fn staging_root(&self) -> Option<PathBuf> {
        None
    }

    /// Makes the snapshot staged in `dir` the latest one, as
    /// [`SnapshotStore::save`] does for files in memory: file `i` of
    /// `meta.files` is [`staged_file`]`(dir, i)`, already durable, with the
    /// size and CRC-32C its meta records. A snapshot not newer than the
    /// latest changes nothing (returns false and leaves `dir` alone).
    ///
    /// A file store checks the sizes (not the checksums: whoever staged
    /// the files computed them while syncing them), adds its meta and
    /// renames `dir` into place, atomically and durably; `dir` must be a
    /// child of [`SnapshotStore::staging_root`]. This default, for stores
    /// held in memory, reads the files in and checks their checksums.
    fn save_dir(&mut self, meta: &SnapshotMeta, dir: &Path) -> Result<bool, StorageError> {
        let mut files = Vec::with_capacity(meta.files.len());
        for (i, f) in meta.files.iter().enumerate() {
            let path = staged_file(dir, i);
            let data = std::fs::read(&path).map_err(|source| StorageError::Io {
                op: "read",
                path: path.clone(),
                source,
            })?;
            if data.len() as u64 != f.size || crate::checksum(&data) != f.crc {
                return Err(StorageError::Invalid(format!(
                    "staged snapshot file {} does not match its size or checksum",
                    path.display()
                )));
            }
            files.push(data);
        }
        self.save(meta, &files)
    }
}

/// Where file `i` (its position in the meta) of a snapshot lives inside a
/// snapshot directory, staged or stored: `<i>.dat`. File names in the meta
/// are the application's and never name files on disk.
pub fn staged_file(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("{i}.dat"))
}

/// Checks a read of `lo..hi` against a log holding `first..=last`, the way
/// every [`LogStore`] must answer it.
pub(crate) fn check_range(first: u64, last: u64, lo: u64, hi: u64) -> Result<(), StorageError> {
    if lo < first || hi > last + 1 || lo > hi {
        return Err(StorageError::Unavailable { lo, hi });
    }
    Ok(())
}

/// Checks an append of `ents` to a log holding `first..=last`: consecutive
/// indexes starting inside `first..=last + 1`.
pub(crate) fn check_append(first: u64, last: u64, ents: &[Entry]) -> Result<(), StorageError> {
    let Some(head) = ents.first() else {
        return Ok(());
    };
    if head.index < first || head.index > last + 1 {
        return Err(StorageError::Invalid(format!(
            "append at {} outside {}..={}",
            head.index,
            first,
            last + 1
        )));
    }
    if let Some((k, e)) = ents
        .iter()
        .enumerate()
        .find(|(k, e)| e.index != head.index + *k as u64)
    {
        return Err(StorageError::Invalid(format!(
            "append of non-consecutive entries: {} at position {k} after {}",
            e.index, head.index
        )));
    }
    Ok(())
}

/// `len` bytes of `data` from `offset` (fewer at the end), as every
/// snapshot store answers a chunk read.
pub(crate) fn chunk_of(data: &[u8], offset: u64, len: u64) -> Result<Vec<u8>, StorageError> {
    let size = data.len() as u64;
    if offset > size {
        return Err(StorageError::Invalid(format!(
            "chunk at {offset} is past the end ({size} bytes)"
        )));
    }
    let end = offset.saturating_add(len).min(size);
    Ok(data[offset as usize..end as usize].to_vec())
}
