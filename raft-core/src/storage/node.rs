//! `NodeStorage`: one log, meta and snapshot store composed into what the
//! core reads and what the driver writes.
//!
//! The Raft rules about storage live here, once, whatever the stores are:
//! the order in which a `Ready` is made durable (snapshot work, entries with
//! one log sync, then term, vote and membership in one atomic meta write;
//! the commit index is saved only along with them),
//! what a snapshot install does to the log and the hard state (as
//! [`super::MemStorage`] does it), that compaction never passes the latest
//! snapshot, and how an install interrupted by a crash is completed on the
//! next open.

use crate::core::{ConfState, Entry, HardState, Ready, SnapshotMeta, SnapshotOp};
use crate::Error;

use super::cache::{EntryCache, DEFAULT_ENTRY_CACHE_BYTES};
use super::{
    LogStore, MemoryLog, MemoryMeta, MemorySnapshots, MetaStore, PendingSync, RecoveryReport,
    SnapshotStore, Storage, StorageError,
};

/// A snapshot's meta and the contents of its files, in the order of
/// `meta.files`.
pub type SnapshotContents = (SnapshotMeta, Vec<Vec<u8>>);

/// The largest read [`NodeStorage::verify_snapshot`] makes: what checking
/// a snapshot of any size holds in memory at once.
pub const VERIFY_CHUNK_BYTES: u64 = 1 << 20;

/// A node's durable state: a [`LogStore`], a [`MetaStore`] and a
/// [`SnapshotStore`] behind one [`Storage`].
///
/// Guarantees, for every implementation of the three stores:
/// - [`NodeStorage::persist`] makes a `Ready` durable in the contract's
///   order and returns only once all of it is durable;
/// - the compaction point never passes the latest snapshot;
/// - a crash at any point of an install leaves a state the next open
///   either keeps as it was or completes ([`RecoveryReport::install_completed`]).
///
/// After an error other than [`StorageError::Invalid`] or
/// [`StorageError::Unavailable`] the node must stop and reopen its storage.
pub struct NodeStorage {
    log: Box<dyn LogStore>,
    meta: Box<dyn MetaStore>,
    snapshots: Box<dyn SnapshotStore>,
    /// What `meta` holds, so reads need no IO, except that the commit index
    /// may be ahead of the saved one (see [`NodeStorage::persist`]).
    hard_state: HardState,
    conf_state: ConfState,
    report: RecoveryReport,
    /// The log's latest entries, so replication and apply read memory.
    cache: EntryCache,
}

impl std::fmt::Debug for NodeStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeStorage")
            .field("first_index", &self.log.first_index())
            .field("last_index", &self.log.last_index())
            .field("hard_state", &self.hard_state)
            .field("conf_state", &self.conf_state)
            .field("snapshot", &self.snapshots.latest().map(|m| m.index))
            .finish_non_exhaustive()
    }
}

impl NodeStorage {
    /// Composes three stores. `report` is what opening them repaired; any
    /// install a crash interrupted is completed here and added to it.
    pub fn new(
        log: Box<dyn LogStore>,
        meta: Box<dyn MetaStore>,
        snapshots: Box<dyn SnapshotStore>,
        report: RecoveryReport,
    ) -> Result<NodeStorage, StorageError> {
        let (hard_state, conf_state) = meta.load();
        let mut s = NodeStorage {
            log,
            meta,
            snapshots,
            hard_state,
            conf_state,
            report,
            cache: EntryCache::new(DEFAULT_ENTRY_CACHE_BYTES),
        };
        s.complete_interrupted_install()?;
        s.check_log_reaches_what_was_promised()?;
        Ok(s)
    }

    /// Refuses a log that ends below the latest snapshot or below the
    /// saved commit index. Neither can come from a crash: entries are
    /// synced before the meta that commits them is saved, and a snapshot
    /// is taken of applied entries (an installed one resets the log to its
    /// index first). A log that ends short lost records some other way (a
    /// deleted or truncated segment file): starting on it would make this
    /// node answer reads without acknowledged writes and fail to accept
    /// what its leader sends, so it stops with the indexes instead.
    fn check_log_reaches_what_was_promised(&self) -> Result<(), StorageError> {
        let last = self.log.last_index();
        let fix = "entries are missing (a deleted or truncated log segment?); \
                   restore the node's data directory, or remove it and add the node \
                   back as a new member";
        if let Some(snap) = self.snapshots.latest() {
            if last < snap.index {
                return Err(StorageError::Inconsistent(format!(
                    "the log ends at {last}, below the latest snapshot at {}: {fix}",
                    snap.index
                )));
            }
        }
        if last < self.hard_state.commit {
            return Err(StorageError::Inconsistent(format!(
                "the log ends at {last}, below the saved commit index {}: {fix}",
                self.hard_state.commit
            )));
        }
        Ok(())
    }

    /// Empty in-memory storage (`memory://`) for a group with `voters`
    /// (saved in the meta store, so [`NodeStorage::reopen`] keeps them).
    pub fn memory(voters: Vec<u64>) -> NodeStorage {
        let conf_state = ConfState {
            voters,
            ..ConfState::default()
        };
        NodeStorage {
            log: Box::new(MemoryLog::new()),
            meta: Box::new(MemoryMeta::with_members(conf_state.clone())),
            snapshots: Box::new(MemorySnapshots::new()),
            hard_state: HardState::default(),
            conf_state,
            report: RecoveryReport::default(),
            // The log is memory already.
            cache: EntryCache::new(0),
        }
    }

    /// What a crash leaves: the stores reopened as they are, every value
    /// held only in memory gone (the entry cache, a commit index newer than
    /// the saved one). What the stores lose at a crash is theirs to model:
    /// the memory stores keep everything, the `local` stores over a
    /// simulated file system lose what was not synced.
    pub fn reopen(self) -> Result<NodeStorage, StorageError> {
        let cache = self.cache.max_bytes();
        let mut s = NodeStorage::new(
            self.log,
            self.meta,
            self.snapshots,
            RecoveryReport::default(),
        )?;
        s.cache = EntryCache::new(cache);
        Ok(s)
    }

    /// Keeps at most `bytes` of the latest entries in memory (default
    /// [`DEFAULT_ENTRY_CACHE_BYTES`]; 0 turns the cache off). Reads of
    /// anything older go to the log store.
    pub fn set_entry_cache_bytes(&mut self, bytes: u64) {
        self.cache = EntryCache::new(bytes);
    }

    /// What opening this storage found and repaired.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.report
    }

    /// The hard state: term and vote as durable, the commit index as last
    /// persisted by a `Ready` (a reopen may find an older one).
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The durable membership base.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Makes `hs` the durable hard state (atomically, with the membership).
    pub fn set_hard_state(&mut self, hs: HardState) -> Result<(), StorageError> {
        let cs = self.conf_state.clone();
        self.save_meta(hs, cs)
    }

    /// Makes `cs` the durable membership base, e.g. the voters of a new
    /// group before its first `Ready`.
    pub fn set_conf_state(&mut self, cs: ConfState) -> Result<(), StorageError> {
        self.save_meta(self.hard_state, cs)
    }

    /// The log store, for reads with the storage's own error type.
    pub fn log(&self) -> &dyn LogStore {
        &*self.log
    }

    /// Step 1 of the `Ready` contract: makes `rd`'s snapshot work, entries,
    /// hard state and membership durable, in that order. The log is synced
    /// once for all of `rd.entries` (group commit) and the meta written
    /// once, atomically, when term, vote or membership changed (a new
    /// commit index alone is not worth a sync: a restarted node may come
    /// back with an older one and learns the rest from the leader). Returns only when everything is durable: the
    /// driver may then send `rd.messages`.
    pub fn persist(&mut self, rd: &Ready) -> Result<(), StorageError> {
        if let Some(pending) = self.persist_start(rd)? {
            let outcome = pending.wait_blocking();
            self.persist_end(outcome)?;
        }
        Ok(())
    }

    /// [`NodeStorage::persist`] in two halves, for a caller that waits for
    /// the log sync without holding a thread: everything but that wait
    /// happens here, and when the log's sync is the host's shared one
    /// ([`LogStore::begin_shared_sync`]) its request is returned instead
    /// of waited for. Nothing is durable until the request is waited for
    /// and its outcome given to [`NodeStorage::persist_end`]; nothing else
    /// may touch this storage in between. A `Ready` that saves term, vote
    /// or membership is persisted whole here (its log sync must come
    /// before the meta it promises), as is one without a shared sync.
    pub fn persist_start(&mut self, rd: &Ready) -> Result<Option<PendingSync>, StorageError> {
        self.persist_snapshot_ops(&rd.snapshot_ops)?;
        let hs = rd.hard_state.unwrap_or(self.hard_state);
        let cs = rd.conf_state.as_ref().unwrap_or(&self.conf_state).clone();
        let meta = self.meta_changes(rd);
        let mut pending = None;
        if !rd.entries.is_empty() {
            self.log.append(&rd.entries)?;
            self.cache.append(&rd.entries);
            pending = if meta {
                None
            } else {
                self.log.begin_shared_sync()?
            };
            if pending.is_none() {
                self.log.sync()?;
            }
        }
        // Term, vote and membership are promises and must be durable before
        // any message that depends on them leaves. The commit index is not:
        // it only records what a quorum already holds, and a restarted node
        // learns it again from the leader. Saving it on every advance would
        // add a file replacement (two syncs) to nearly every Ready, so it
        // rides along with the next term, vote or membership save.
        if meta {
            self.save_meta(hs, cs)?;
        } else {
            self.hard_state.commit = hs.commit;
        }
        Ok(pending)
    }

    /// Ends [`NodeStorage::persist_start`] with the outcome of waiting for
    /// its request: on success the `Ready` is durable.
    pub fn persist_end(&mut self, outcome: std::io::Result<()>) -> Result<(), StorageError> {
        self.log.end_shared_sync(outcome)
    }

    /// Whether [`NodeStorage::persist_start`] of `rd` could hold the
    /// calling thread on the disk (snapshot work, a meta save, a log sync
    /// of its own, a truncation or new segment). Only a hint for where to
    /// run it: a wrong answer never changes what is done.
    pub fn persist_may_block(&self, rd: &Ready) -> bool {
        !rd.snapshot_ops.is_empty()
            || self.meta_changes(rd)
            || (!rd.entries.is_empty() && self.log.append_may_block(&rd.entries))
    }

    /// Whether `rd` changes term, vote or membership.
    fn meta_changes(&self, rd: &Ready) -> bool {
        let hs = rd.hard_state.unwrap_or(self.hard_state);
        (hs.term, hs.vote) != (self.hard_state.term, self.hard_state.vote)
            || rd
                .conf_state
                .as_ref()
                .is_some_and(|cs| *cs != self.conf_state)
    }

    /// Applies `Ready::snapshot_ops` in order and makes them durable (the
    /// first part of [`NodeStorage::persist`]).
    pub fn persist_snapshot_ops(&mut self, ops: &[SnapshotOp]) -> Result<(), StorageError> {
        for op in ops {
            match op {
                SnapshotOp::Begin(meta) => self.snapshots.begin_partial(meta)?,
                SnapshotOp::Chunk { file, offset, data } => {
                    self.snapshots.append_partial(*file, *offset, data)?
                }
                SnapshotOp::Abort => self.snapshots.abort_partial()?,
                SnapshotOp::Install(meta) => self.install(meta)?,
            }
        }
        if !ops.is_empty() {
            self.snapshots.sync()?;
        }
        Ok(())
    }

    /// Installs the received snapshot `meta`: the log is replaced by it
    /// (empty after `meta.index`), the membership base becomes its
    /// configuration and the commit index reaches it.
    ///
    /// Three durable steps, ordered so that a crash between any two is
    /// recognised on open (the compaction point passes the latest complete
    /// snapshot, which never happens otherwise) and completed from the
    /// partial snapshot, which is moved into place last.
    fn install(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        let Some((held_meta, held)) = self.snapshots.partial().filter(|(m, _)| m == meta) else {
            return Err(StorageError::Invalid(
                "install of a snapshot not received".into(),
            ));
        };
        if held_meta.files.iter().zip(&held).any(|(f, &n)| n != f.size) {
            return Err(StorageError::Invalid(
                "install of a snapshot not completely received".into(),
            ));
        }
        self.snapshots.sync()?;
        self.log.reset(meta.index, meta.term)?;
        self.cache.clear();
        self.finish_install(meta)
    }

    /// The steps of an install after the log reset; idempotent.
    fn finish_install(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        let mut hs = self.hard_state;
        hs.commit = hs.commit.max(meta.index);
        self.save_meta(hs, meta.conf.clone())?;
        self.snapshots.install_partial(meta)
    }

    /// Completes an install a crash interrupted after the log reset: the
    /// log is compacted past the latest snapshot, and the partial snapshot
    /// is the one the log was reset to.
    fn complete_interrupted_install(&mut self) -> Result<(), StorageError> {
        let point = self.log.first_index() - 1;
        let covered = self.snapshots.latest().map_or(0, |m| m.index);
        if point <= covered {
            return Ok(());
        }
        let point_term = self.log.term(point)?;
        match self.snapshots.partial() {
            Some((meta, _)) if meta.index == point && meta.term == point_term => {
                self.finish_install(&meta)?;
                self.report.install_completed = Some(point);
                Ok(())
            }
            _ => Err(StorageError::Inconsistent(format!(
                "the log is compacted to {point} but the latest snapshot covers only {covered}, \
                 and no received snapshot at {point} is waiting to be installed"
            ))),
        }
    }

    fn save_meta(&mut self, hs: HardState, cs: ConfState) -> Result<(), StorageError> {
        self.meta.save(&hs, &cs)?;
        self.hard_state = hs;
        self.conf_state = cs;
        Ok(())
    }

    /// Makes a snapshot of the state machine the latest one. `files` are
    /// its contents in the order of `meta.files`; each must have the size
    /// and CRC-32C its meta announces (receivers check them). A snapshot not
    /// newer than the latest changes nothing.
    pub fn save_snapshot(
        &mut self,
        meta: SnapshotMeta,
        files: Vec<Vec<u8>>,
    ) -> Result<(), StorageError> {
        if files.len() != meta.files.len() {
            return Err(StorageError::Invalid(
                "snapshot files do not match their meta".into(),
            ));
        }
        if let Some((f, _)) = meta
            .files
            .iter()
            .zip(&files)
            .find(|(f, data)| f.size != data.len() as u64 || f.crc != crate::checksum(data))
        {
            return Err(StorageError::Invalid(format!(
                "snapshot file {} does not match its size or checksum",
                f.name
            )));
        }
        self.snapshots.save(&meta, &files)?;
        Ok(())
    }

    /// The latest snapshot's meta and the contents of its files, in
    /// memory: the simulator's and the tests' way to load a state machine
    /// (the runtime loads from [`NodeStorage::latest_snapshot_dir`]
    /// instead, after [`NodeStorage::verify_snapshot`]). Each file is
    /// checked against the size and CRC-32C in the meta: a state machine
    /// never loads bytes that changed on disk.
    pub fn snapshot_files(&self) -> Result<Option<SnapshotContents>, StorageError> {
        let Some(meta) = self.snapshots.latest() else {
            return Ok(None);
        };
        let mut files = Vec::with_capacity(meta.files.len());
        for (i, f) in meta.files.iter().enumerate() {
            let data = self.snapshots.read_chunk(i as u32, 0, f.size)?;
            let crc = crate::checksum(&data);
            if data.len() as u64 != f.size || crc != f.crc {
                return Err(self.mismatch(&meta, i, data.len() as u64, crc));
            }
            files.push(data);
        }
        Ok(Some((meta, files)))
    }

    /// Checks every file of the latest snapshot against the size and
    /// CRC-32C of its meta, streaming each through a buffer of at most
    /// [`VERIFY_CHUNK_BYTES`]: memory stays bounded whatever the files'
    /// sizes. Returns the meta checked (`None`: no snapshot).
    pub fn verify_snapshot(&self) -> Result<Option<SnapshotMeta>, StorageError> {
        let Some(meta) = self.snapshots.latest() else {
            return Ok(None);
        };
        for (i, f) in meta.files.iter().enumerate() {
            let (mut at, mut crc) = (0u64, 0u32);
            while at < f.size {
                let data =
                    self.snapshots
                        .read_chunk(i as u32, at, VERIFY_CHUNK_BYTES.min(f.size - at))?;
                if data.is_empty() {
                    break; // shorter than its meta: reported below
                }
                crc = crate::checksum_extend(crc, &data);
                at += data.len() as u64;
            }
            if at != f.size || crc != f.crc {
                return Err(self.mismatch(&meta, i, at, crc));
            }
        }
        Ok(Some(meta))
    }

    /// The error for file `i` of the snapshot `meta` found holding `held`
    /// bytes with checksum `crc`.
    fn mismatch(&self, meta: &SnapshotMeta, i: usize, held: u64, crc: u32) -> StorageError {
        let f = &meta.files[i];
        let reason = format!(
            "file {i} ({}) of the snapshot at {} holds {held} bytes with CRC-32C {crc:#010x}; \
             its meta records {} bytes with CRC-32C {:#010x}",
            f.name, meta.index, f.size, f.crc
        );
        match self.snapshots.latest_file_path(i as u32) {
            Some(file) => StorageError::Corrupt {
                file,
                offset: 0,
                reason,
            },
            None => StorageError::Inconsistent(reason),
        }
    }

    /// The latest snapshot's meta and the directory holding its files
    /// (file `i` at [`super::staged_file`]`(dir, i)`); `None` when there is
    /// no snapshot or the store keeps it in memory.
    pub fn latest_snapshot_dir(&self) -> Option<(SnapshotMeta, std::path::PathBuf)> {
        Some((self.snapshots.latest()?, self.snapshots.latest_dir()?))
    }

    /// Where a new snapshot may be staged for
    /// [`NodeStorage::save_snapshot_dir`] (see
    /// [`SnapshotStore::staging_root`]); `None` for a store in memory.
    pub fn snapshot_staging_root(&self) -> Option<std::path::PathBuf> {
        self.snapshots.staging_root()
    }

    /// Makes the snapshot staged in `dir` (file `i` of `meta` at
    /// [`super::staged_file`]`(dir, i)`, durable, with the sizes and
    /// checksums of `meta`) the latest one; see [`SnapshotStore::save_dir`].
    /// For a file store this is a rename: its cost does not depend on the
    /// files' sizes. Returns whether it was stored (false: one at least as
    /// new is; `dir` is left for the caller to remove).
    pub fn save_snapshot_dir(
        &mut self,
        meta: &SnapshotMeta,
        dir: &std::path::Path,
    ) -> Result<bool, StorageError> {
        self.snapshots.save_dir(meta, dir)
    }

    /// Drops the log entries up to `upto`, which the latest snapshot must
    /// cover (clamped to the last entry). Returns how many were dropped.
    pub fn compact(&mut self, upto: u64) -> Result<usize, StorageError> {
        let covered = self.snapshots.latest().map_or(0, |m| m.index);
        if upto > covered {
            return Err(StorageError::Invalid(format!(
                "compaction to {upto} is past the latest snapshot ({covered})"
            )));
        }
        if upto < self.log.first_index() {
            return Ok(0);
        }
        let upto = upto.min(self.log.last_index());
        self.cache.compact(upto);
        self.log.compact(upto)
    }
}

impl Storage for NodeStorage {
    fn initial_state(&self) -> Result<(HardState, ConfState), Error> {
        Ok((self.hard_state, self.conf_state.clone()))
    }

    fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, Error> {
        if let Some(ents) = self.cache.entries(lo, hi, max_bytes) {
            return Ok(ents);
        }
        Ok(self.log.entries(lo, hi, max_bytes)?)
    }

    fn term(&self, index: u64) -> Result<u64, Error> {
        if let Some(term) = self.cache.term(index) {
            return Ok(term);
        }
        Ok(self.log.term(index)?)
    }

    fn first_index(&self) -> u64 {
        self.log.first_index()
    }

    fn last_index(&self) -> u64 {
        self.log.last_index()
    }

    fn snapshot_meta(&self) -> Option<SnapshotMeta> {
        self.snapshots.latest()
    }

    fn snapshot_chunk(&self, file: u32, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        Ok(self.snapshots.read_chunk(file, offset, len)?)
    }

    fn partial_snapshot(&self) -> Option<(SnapshotMeta, Vec<u64>)> {
        self.snapshots.partial()
    }

    fn partial_chunk(&self, file: u32, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        Ok(self.snapshots.read_partial_chunk(file, offset, len)?)
    }
}
