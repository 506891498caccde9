//! What the core reads from durable storage, and the stores that hold it.
//!
//! The core never writes storage itself: the driver persists what a `Ready`
//! hands it and then calls `advance`. The core only reads the stable log and
//! the snapshots through [`Storage`], which keeps the persistence contract
//! visible in the types: everything the core holds beyond storage is in its
//! unstable log.
//!
//! Two families implement it:
//! - [`MemStorage`], one value holding everything: the simulator's "disk".
//! - [`NodeStorage`], composed of a [`LogStore`], a [`MetaStore`] and a
//!   [`SnapshotStore`] chosen by URI ([`open`]): `memory://`, or
//!   `local://PATH` (feature `local`: a segmented, checksummed, fsynced log,
//!   atomic meta, snapshots renamed into place; see `local`). Its
//!   `persist` applies a `Ready` with one log fsync (group commit). The
//!   `local` stores do their IO through `fs::Fs`: the real disk, or the
//!   simulator's `fs::SimFs`, which crashes and fails by seed.

use crate::core::{ConfState, Entry, HardState, Ready, SnapshotMeta, SnapshotOp};
use crate::Error;

mod cache;
mod error;
#[cfg(any(feature = "sim", feature = "local"))]
pub mod fs;
#[cfg(any(feature = "sim", feature = "local"))]
pub mod host_sync;
#[cfg(any(feature = "sim", feature = "local"))]
pub mod local;
mod memory;
mod node;
mod traits;
mod uri;

pub use cache::DEFAULT_ENTRY_CACHE_BYTES;
pub use error::{RecoveryReport, StorageError, TornTail};
pub use memory::{MemoryLog, MemoryMeta, MemorySnapshots};
pub use node::{NodeStorage, SnapshotContents, VERIFY_CHUNK_BYTES};
pub use traits::{staged_file, LogStore, MetaStore, SnapshotStore};
pub use uri::{open, StorageUri};

#[cfg(any(feature = "sim", feature = "local"))]
pub use host_sync::PendingSync;

/// Without a file system there is no host-wide sync, so no log sync is
/// ever pending ([`LogStore::begin_shared_sync`] returns `None`).
#[cfg(not(any(feature = "sim", feature = "local")))]
#[derive(Debug)]
pub enum PendingSync {}

#[cfg(not(any(feature = "sim", feature = "local")))]
impl PendingSync {
    /// Never called: no value of this type exists.
    pub fn wait_blocking(&self) -> std::io::Result<()> {
        match *self {}
    }
}

/// Read access to the durable part of a node's state.
///
/// Indexes start at 1. `first_index()..=last_index()` is the range that can
/// be read; entries outside it are an error, never a panic. Entries before
/// `first_index()` were compacted into a snapshot.
pub trait Storage {
    /// The hard state and membership the node starts from.
    fn initial_state(&self) -> Result<(HardState, ConfState), Error>;
    /// Entries `lo..hi`; returns at least one entry (when the range is not
    /// empty) and stops once `max_bytes` would be exceeded.
    fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, Error>;
    /// The term of the entry at `index`; index 0 has term 0, and the index
    /// just before `first_index()` (the compaction point) still has its term.
    fn term(&self, index: u64) -> Result<u64, Error>;
    /// The first index still held.
    fn first_index(&self) -> u64;
    /// The last index held (`first_index() - 1` when empty).
    fn last_index(&self) -> u64;
    /// The latest complete snapshot, if any.
    fn snapshot_meta(&self) -> Option<SnapshotMeta>;
    /// `len` bytes (fewer at the end) of file `file` of the latest snapshot.
    fn snapshot_chunk(&self, file: u32, offset: u64, len: u64) -> Result<Vec<u8>, Error>;
    /// A snapshot being received: its meta and, per file, how many bytes
    /// are durably held (a transfer resumes from there).
    fn partial_snapshot(&self) -> Option<(SnapshotMeta, Vec<u64>)>;
    /// Bytes of file `file` of the partial snapshot.
    fn partial_chunk(&self, file: u32, offset: u64, len: u64) -> Result<Vec<u8>, Error>;
}

/// A complete or partial snapshot held in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct HeldSnapshot {
    meta: SnapshotMeta,
    files: Vec<Vec<u8>>,
}

/// An in-memory [`Storage`]: durable only for as long as the value lives,
/// which is exactly what the simulator needs to model crashes.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    hard_state: HardState,
    /// The commit index a crash keeps: the one saved with the latest term,
    /// vote or snapshot install (see [`MemStorage::set_hard_state`]).
    durable_commit: u64,
    conf_state: ConfState,
    /// Index and term of the last compacted entry.
    offset: u64,
    offset_term: u64,
    entries: Vec<Entry>,
    snapshot: Option<HeldSnapshot>,
    partial: Option<HeldSnapshot>,
}

fn chunk_of(data: &[u8], offset: u64, len: u64) -> Result<Vec<u8>, Error> {
    let start = offset as usize;
    if start > data.len() {
        return Err(Error::Storage(format!(
            "chunk at {offset} is past the end ({} bytes)",
            data.len()
        )));
    }
    let end = (start + len as usize).min(data.len());
    Ok(data[start..end].to_vec())
}

impl MemStorage {
    /// Empty storage for a new group with the given voters.
    pub fn new(voters: Vec<u64>) -> MemStorage {
        MemStorage {
            conf_state: ConfState {
                voters,
                ..ConfState::default()
            },
            ..MemStorage::default()
        }
    }

    /// Records `hs`. Term and vote become durable at once; the commit index
    /// only together with them (or with a snapshot install), as
    /// [`NodeStorage::persist`] does on disk: a commit index is knowledge
    /// the cluster holds, not a promise this node made, so writing it on
    /// every advance would cost a sync for nothing. [`MemStorage::crash`]
    /// drops the part that was not saved.
    pub fn set_hard_state(&mut self, hs: HardState) {
        if (hs.term, hs.vote) != (self.hard_state.term, self.hard_state.vote) {
            self.durable_commit = hs.commit;
        }
        self.hard_state = hs;
    }

    /// The hard state as last recorded (its commit index may be ahead of
    /// what a crash keeps).
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// What a crash leaves: the commit index falls back to the last one
    /// saved with a term, vote or snapshot install.
    pub fn crash(&mut self) {
        self.hard_state.commit = self.durable_commit;
    }

    /// Makes `cs` the durable membership base.
    pub fn set_conf_state(&mut self, cs: ConfState) {
        self.conf_state = cs;
    }

    /// Step 1 of the `Ready` contract: makes `rd`'s snapshot work, entries
    /// and hard state durable (here: part of this value).
    pub fn persist(&mut self, rd: &Ready) -> Result<(), Error> {
        for op in &rd.snapshot_ops {
            self.apply_snapshot_op(op)?;
        }
        self.append(&rd.entries)?;
        if let Some(hs) = rd.hard_state {
            self.set_hard_state(hs);
        }
        if let Some(cs) = &rd.conf_state {
            self.conf_state = cs.clone();
        }
        Ok(())
    }

    /// Appends `ents`, first dropping every held entry at or after
    /// `ents[0].index` (they conflict with the new ones). Returns how many
    /// entries were dropped.
    pub fn append(&mut self, ents: &[Entry]) -> Result<usize, Error> {
        let Some(first) = ents.first() else {
            return Ok(0);
        };
        let next = self.last_index() + 1;
        if first.index > next || first.index <= self.offset {
            return Err(Error::Storage(format!(
                "append at {} outside {}..={}",
                first.index,
                self.offset + 1,
                next
            )));
        }
        let keep = (first.index - 1 - self.offset) as usize;
        let dropped = self.entries.len() - keep;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(ents);
        Ok(dropped)
    }

    /// Every held entry (after the compaction point).
    pub fn all_entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Makes a snapshot of the state machine the latest one. `files` are its
    /// contents, in the order of `meta.files`.
    pub fn save_snapshot(&mut self, meta: SnapshotMeta, files: Vec<Vec<u8>>) -> Result<(), Error> {
        if files.len() != meta.files.len() {
            return Err(Error::Storage(
                "snapshot files do not match their meta".into(),
            ));
        }
        if self
            .snapshot
            .as_ref()
            .is_some_and(|s| s.meta.index >= meta.index)
        {
            return Ok(()); // an older or equal snapshot changes nothing
        }
        self.snapshot = Some(HeldSnapshot { meta, files });
        Ok(())
    }

    /// The contents of the latest snapshot's files.
    pub fn snapshot_files(&self) -> Option<(&SnapshotMeta, &[Vec<u8>])> {
        self.snapshot.as_ref().map(|s| (&s.meta, &s.files[..]))
    }

    /// Discards entries up to `upto` (which must be covered by the latest
    /// snapshot). Returns how many entries were dropped.
    pub fn compact(&mut self, upto: u64) -> Result<usize, Error> {
        let covered = self.snapshot.as_ref().map_or(0, |s| s.meta.index);
        if upto > covered {
            return Err(Error::Storage(format!(
                "compaction to {upto} is past the latest snapshot ({covered})"
            )));
        }
        if upto <= self.offset {
            return Ok(0);
        }
        let upto = upto.min(self.last_index());
        let term = self.term(upto)?;
        let n = (upto - self.offset) as usize;
        self.entries.drain(..n);
        self.offset = upto;
        self.offset_term = term;
        Ok(n)
    }

    /// Applies `Ready::snapshot_ops`, in order (part of [`MemStorage::persist`]).
    pub fn persist_snapshot_ops(&mut self, ops: &[SnapshotOp]) -> Result<(), Error> {
        for op in ops {
            self.apply_snapshot_op(op)?;
        }
        Ok(())
    }

    fn apply_snapshot_op(&mut self, op: &SnapshotOp) -> Result<(), Error> {
        match op {
            SnapshotOp::Begin(meta) => {
                self.partial = Some(HeldSnapshot {
                    meta: meta.clone(),
                    files: vec![Vec::new(); meta.files.len()],
                });
            }
            SnapshotOp::Chunk { file, offset, data } => {
                let p = self
                    .partial
                    .as_mut()
                    .ok_or_else(|| Error::Storage("chunk without a partial snapshot".into()))?;
                let f = p
                    .files
                    .get_mut(*file as usize)
                    .ok_or_else(|| Error::Storage(format!("no file {file} in the snapshot")))?;
                if *offset != f.len() as u64 {
                    return Err(Error::Storage(format!(
                        "chunk at {offset} of file {file}, which holds {} bytes",
                        f.len()
                    )));
                }
                f.extend_from_slice(data);
            }
            SnapshotOp::Abort => self.partial = None,
            SnapshotOp::Install(meta) => {
                let p = self
                    .partial
                    .take()
                    .filter(|p| p.meta == *meta)
                    .ok_or_else(|| Error::Storage("install of a snapshot not received".into()))?;
                self.entries.clear();
                self.offset = meta.index;
                self.offset_term = meta.term;
                self.conf_state = meta.conf.clone();
                self.hard_state.commit = self.hard_state.commit.max(meta.index);
                self.durable_commit = self.hard_state.commit;
                self.snapshot = Some(p);
            }
        }
        Ok(())
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<(HardState, ConfState), Error> {
        Ok((self.hard_state, self.conf_state.clone()))
    }

    fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, Error> {
        if lo <= self.offset || hi > self.last_index() + 1 || lo > hi {
            return Err(Error::Unavailable { lo, hi });
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        let base = self.offset + 1;
        for e in &self.entries[(lo - base) as usize..(hi - base) as usize] {
            bytes += e.size();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, index: u64) -> Result<u64, Error> {
        if index == self.offset {
            return Ok(self.offset_term);
        }
        if index < self.offset {
            return Err(Error::Unavailable {
                lo: index,
                hi: index + 1,
            });
        }
        self.entries
            .get((index - self.offset - 1) as usize)
            .map(|e| e.term)
            .ok_or(Error::Unavailable {
                lo: index,
                hi: index + 1,
            })
    }

    fn first_index(&self) -> u64 {
        self.offset + 1
    }

    fn last_index(&self) -> u64 {
        self.offset + self.entries.len() as u64
    }

    fn snapshot_meta(&self) -> Option<SnapshotMeta> {
        self.snapshot.as_ref().map(|s| s.meta.clone())
    }

    fn snapshot_chunk(&self, file: u32, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        let s = self
            .snapshot
            .as_ref()
            .ok_or_else(|| Error::Storage("no snapshot".into()))?;
        let f = s
            .files
            .get(file as usize)
            .ok_or_else(|| Error::Storage(format!("no file {file} in the snapshot")))?;
        chunk_of(f, offset, len)
    }

    fn partial_snapshot(&self) -> Option<(SnapshotMeta, Vec<u64>)> {
        self.partial.as_ref().map(|p| {
            (
                p.meta.clone(),
                p.files.iter().map(|f| f.len() as u64).collect(),
            )
        })
    }

    fn partial_chunk(&self, file: u32, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        let p = self
            .partial
            .as_ref()
            .ok_or_else(|| Error::Storage("no partial snapshot".into()))?;
        let f = p
            .files
            .get(file as usize)
            .ok_or_else(|| Error::Storage(format!("no file {file} in the snapshot")))?;
        chunk_of(f, offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{EntryKind, SnapshotFile};

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal,
            data: crate::core::Bytes::new(),
        }
    }

    #[test]
    fn compaction_keeps_the_boundary_term_and_refuses_the_rest() {
        let mut s = MemStorage::new(vec![1]);
        s.append(&(1..=10).map(|i| ent(i, 1 + i / 5)).collect::<Vec<_>>())
            .unwrap();
        assert!(s.compact(4).is_err(), "no snapshot covers it");
        let meta = SnapshotMeta {
            index: 6,
            term: 2,
            ..Default::default()
        };
        s.save_snapshot(meta, vec![]).unwrap();
        assert_eq!(s.compact(4).unwrap(), 4);
        assert_eq!(s.first_index(), 5);
        assert_eq!(s.term(4).unwrap(), 1, "the compaction point keeps its term");
        assert!(s.term(3).is_err());
        assert!(s.entries(3, 6, u64::MAX).is_err());
        assert_eq!(s.entries(5, 7, u64::MAX).unwrap().len(), 2);
        assert!(
            s.append(&[ent(3, 9)]).is_err(),
            "below the compaction point"
        );
    }

    #[test]
    fn a_partial_snapshot_is_built_in_order_and_installed_whole() {
        let data = b"hello snapshot".to_vec();
        let meta = SnapshotMeta {
            index: 7,
            term: 3,
            conf: ConfState {
                index: 7,
                voters: vec![1, 2],
                ..Default::default()
            },
            files: vec![SnapshotFile {
                name: "kv".into(),
                size: data.len() as u64,
                crc: crate::core::checksum(&data),
            }],
        };
        let mut s = MemStorage::new(vec![1, 2]);
        s.append(&[ent(1, 1)]).unwrap();
        s.apply_snapshot_op(&SnapshotOp::Begin(meta.clone()))
            .unwrap();
        let chunk = |offset: u64, d: &[u8]| SnapshotOp::Chunk {
            file: 0,
            offset,
            data: d.to_vec().into(),
        };
        s.apply_snapshot_op(&chunk(0, &data[..5])).unwrap();
        assert!(s.apply_snapshot_op(&chunk(9, &data[9..])).is_err(), "gap");
        assert_eq!(s.partial_snapshot().unwrap().1, vec![5]);
        s.apply_snapshot_op(&chunk(5, &data[5..])).unwrap();
        s.apply_snapshot_op(&SnapshotOp::Install(meta.clone()))
            .unwrap();
        assert_eq!(s.first_index(), 8);
        assert_eq!(s.term(7).unwrap(), 3);
        assert_eq!(s.snapshot_chunk(0, 0, 100).unwrap(), data);
        assert!(s.partial_snapshot().is_none());
        assert_eq!(s.initial_state().unwrap().1.voters, vec![1, 2]);
    }
}
