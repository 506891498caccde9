//! The block engine: one BlockGroup replica's blocks on disk, with
//! versions.
//!
//! A group holds blocks of many volumes. Each block is cut into slices
//! (the unit of copy-on-write, [`Geometry::slice_size`]) and each slice
//! into 4 KiB sectors (the unit of IO and of checksums). The engine keeps,
//! for every slice, one *entry* per version it was written at: the slot of
//! the slot file that holds its bytes, or nothing for a slice of zeros.
//! What each version reads, and why marking and rolling back copy nothing,
//! is in `versions.rs`.
//!
//! Operations, all applied in Raft order on every replica:
//! - **write** at the head: in place when the head already has its own
//!   copy of the slice; otherwise (first write to the slice, or first
//!   since a mark) a new slot gets the slice as the head sees it with the
//!   write laid over it;
//! - **zero** (TRIM and WRITE_ZEROES): a whole slice becomes a zero entry
//!   and its head slot is freed; a partial one is written with zeros;
//! - **mark**: the head becomes a retained version; nothing is copied;
//! - **drop** a retained version, and **rollback** the head to one: both
//!   are one change to the version tree; entries no live version sees any
//!   more are reclaimed afterwards by [`Engine::gc_step`], a little at a
//!   time, while IO goes on.
//!
//! Durability: the group's Raft log is the write-ahead log. The engine
//! writes without syncing; [`Engine::flush`] makes everything applied so
//! far durable and records the Raft index it reached (the
//! `durable_index`), below which the group may compact its log. After a
//! crash, [`Engine::open`] finds the state as of the last flush, and the
//! group replays its log from `durable_index + 1`; commands at or below
//! the engine's applied index are skipped, so replay is idempotent. Two
//! rules make the replay sound: every write covers whole sectors (a torn
//! sector is rewritten whole by its replay), and a slot freed after the
//! last flush is not reused before the next one (the state recovery
//! returns to may still map it). How the metadata is kept is in
//! `journal.rs`, the sectors' checksums in `slots.rs`, and how a corrupt
//! sector is repaired from another replica in `repair.rs`.

mod error;
mod export;
mod geometry;
mod journal;
mod repair;
mod slots;
mod versions;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use raft_core::storage::fs::{Fs, FsFile, OpenMode};

pub use error::EngineError;
pub use export::{Export, EXPORT_MAGIC};
pub use geometry::{Geometry, DEFAULT_BLOCK_SIZE, DEFAULT_SLICE_SIZE, SECTOR};
pub use journal::SliceKey;
pub use repair::{Repair, SectorCopy, SectorId};
pub use versions::{Version, VersionState};

use journal::{Record, Superblock};
use slots::SlotFile;
use versions::Versions;

/// The slot file's name.
const SLOTS: &str = "slots";
/// The most retained versions an engine keeps; a mark past it is refused.
pub const MAX_RETAINED_VERSIONS: usize = 256;
/// Journal records buffered in memory before they are written out (they
/// are synced only by a flush either way).
const JOURNAL_BUFFER_BYTES: usize = 256 << 10;
/// A flush rewrites the journal as an image of the state once it is past
/// this size and four times the image's (the default of
/// [`Engine::set_journal_compact_bytes`]).
pub const JOURNAL_COMPACT_BYTES: u64 = 4 << 20;

/// A command for the engine, as the group's state machine applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Writes `data` (whole sectors) at `offset` of the block, at the head,
    /// for a writer that opened the volume at `epoch`.
    Write {
        volume: u64,
        block: u64,
        offset: u64,
        data: Bytes,
        epoch: u64,
    },
    /// Makes `len` bytes (whole sectors) at `offset` read as zeros.
    Zero {
        volume: u64,
        block: u64,
        offset: u64,
        len: u64,
        epoch: u64,
    },
    /// Freezes the head as a retained version.
    Mark,
    /// Drops a retained version.
    Drop { version: Version },
    /// Makes the head read as a retained version, at once.
    Rollback { to: Version },
    /// Forgets every slice of a deleted volume, at every version, frees
    /// their slots, and fences every later write to it (volume ids are
    /// never reused).
    Purge { volume: u64 },
    /// Takes `epoch` as the volume's writer epoch here, without writing:
    /// what a new writer sends every group when it opens the volume, so
    /// a stale writer is fenced on every group at once, not only on those
    /// the new one happens to write to first.
    Fence { volume: u64, epoch: u64 },
}

/// What a command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Written,
    Zeroed,
    /// The version the mark froze (readable until dropped).
    Marked {
        version: Version,
    },
    Dropped {
        version: Version,
    },
    /// The head now reads as `to`; writes go to the new head `head`.
    RolledBack {
        to: Version,
        head: Version,
    },
    /// A deleted volume's slices forgotten (`entries` of them).
    /// A `Fence` took: the volume's writer epoch here is at least its.
    Fenced,
    Purged {
        entries: u64,
    },
    /// Already applied (a replay after a crash).
    Skipped,
}

/// Why a valid engine refused a request. Deterministic: every replica
/// refuses the same command the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("bytes {offset}..{end} are outside the {block_size}-byte block")]
    OutOfRange {
        offset: u64,
        end: u64,
        block_size: u64,
    },
    #[error(
        "offset {offset} and length {len} must be multiples of {SECTOR} (and the length not 0)"
    )]
    Misaligned { offset: u64, len: u64 },
    #[error("version {0} is not readable (never made, or dropped)")]
    NoSuchVersion(Version),
    #[error("version {0} is not a retained version")]
    NotRetained(Version),
    #[error("{MAX_RETAINED_VERSIONS} versions are retained already")]
    TooManyVersions,
    /// The volume was opened again since this writer opened it: its
    /// epoch is older than one this group has seen (a stale writer).
    #[error("volume {volume}: writer epoch {epoch} is fenced by epoch {current}")]
    Fenced {
        volume: u64,
        epoch: u64,
        current: u64,
    },
}

/// One version as [`Engine::versions`] lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct VersionInfo {
    pub version: Version,
    pub parent: Option<Version>,
    pub state: VersionState,
}

/// Counters and sizes of an engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EngineStats {
    /// Slots holding a slice, free for reuse, and freed since the last
    /// flush (reusable after the next).
    pub slots_used: u64,
    pub slots_free: u64,
    pub slots_pending_free: u64,
    /// Slice entries over all versions.
    pub entries: u64,
    /// Slots copied on a first write after a mark (copy-on-write).
    pub copies: u64,
    /// Entries reclaimed by the garbage collector.
    pub reclaimed: u64,
    /// Corrupt sectors a copy-on-write carried into a new slot (still
    /// corrupt there, never turned into good bytes).
    pub corrupt_carried: u64,
    /// Corrupt sectors repaired from another replica.
    pub repaired: u64,
    /// Bytes of the current journal.
    pub journal_bytes: u64,
    /// Whether reclaiming is under way.
    pub gc_running: bool,
}

/// A slice's entry at one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    version: Version,
    /// `None`: the slice reads as zeros at this version.
    slot: Option<u64>,
    /// A Raft index at or after the last change to this entry's bytes
    /// (since the engine opened; before that, its durable index): the
    /// bytes are the same at every index from it to the applied one.
    /// Kept in memory only; it is what makes a repair copy safe.
    changed: u64,
}

/// One BlockGroup replica's engine. See the module docs.
pub struct Engine {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    geometry: Geometry,
    slots: SlotFile,
    journal: Box<dyn FsFile>,
    journal_gen: u64,
    /// Bytes written to the journal file (synced or not).
    journal_len: u64,
    /// Records not written to the journal file yet.
    journal_buf: Vec<u8>,
    versions: Versions,
    /// The head and its ancestors, newest first.
    head_lineage: Vec<Version>,
    /// Every slice's entries, oldest version first.
    map: BTreeMap<SliceKey, Vec<Entry>>,
    /// The newest writer epoch per volume.
    epochs: BTreeMap<u64, u64>,
    /// Entries per version (a version with none may be pruned).
    tagged: BTreeMap<Version, u64>,
    next_slot: u64,
    free: BTreeSet<u64>,
    pending_free: Vec<u64>,
    applied: u64,
    durable: u64,
    /// The Raft index of the command being applied.
    applying: u64,
    /// The next slice a running reclaim pass looks at (`None`: no pass).
    gc_cursor: Option<SliceKey>,
    /// A drop or rollback came during the pass: run another after it.
    gc_again: bool,
    stats: EngineStats,
    compact_bytes: u64,
    /// Slots an export is reading: never written in place, never reused
    /// until it ends (`export.rs`).
    pinned: BTreeSet<u64>,
    /// Pinned slots no entry maps any more, freed when the export ends.
    pinned_released: Vec<u64>,
    /// Set by the first storage error: the engine then refuses everything.
    failed: Option<String>,
    /// Injected bug (simulator tests): a flush records its index durable
    /// without syncing the slot file first.
    #[cfg(feature = "bug-injection")]
    bug_skip_slot_sync: bool,
    /// Injected bug: a read serves zeros for a corrupt sector.
    #[cfg(feature = "bug-injection")]
    bug_corrupt_as_zeros: bool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("dir", &self.dir)
            .field("applied", &self.applied)
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Creates an empty engine in `dir` (created if missing; it must not
    /// hold an engine already). Durable on return.
    pub fn create(fs: Arc<dyn Fs>, dir: &Path, geometry: Geometry) -> Result<Engine, EngineError> {
        geometry.validate()?;
        fs.create_dir_all(dir).map_err(EngineError::io(dir))?;
        let sup = journal::file(dir, journal::SUPER);
        if fs.exists(&sup) {
            return Err(EngineError::NotAnEngine {
                path: sup,
                why: "an engine exists here already".into(),
            });
        }
        let mut slots = SlotFile::open(&fs, &dir.join(SLOTS), geometry, true)?;
        slots.sync()?;
        let versions = Versions::default();
        let gen = 1;
        let jpath = dir.join(journal::journal_name(gen));
        let mut bytes = Vec::new();
        Record::Versions(versions.clone()).encode_into(&mut bytes);
        write_synced(&fs, &jpath, &bytes)?;
        let sb = Superblock {
            geometry,
            durable_index: 0,
            journal_gen: gen,
            journal_len: bytes.len() as u64,
        };
        write_superblock(&fs, dir, &sb)?;
        // The directory's own entry, so the engine outlives a crash.
        if let Some(parent) = dir.parent() {
            fs.sync_dir(parent).map_err(EngineError::io(parent))?;
        }
        Engine::open(fs, dir)
    }

    /// Opens the engine in `dir` as of its last flush: everything applied
    /// up to [`Engine::durable_index`] is there; replay the rest.
    pub fn open(fs: Arc<dyn Fs>, dir: &Path) -> Result<Engine, EngineError> {
        let sup = journal::file(dir, journal::SUPER);
        let raw = fs.read(&sup).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                EngineError::NotAnEngine {
                    path: sup.clone(),
                    why: "no engine here (no superblock)".into(),
                }
            } else {
                EngineError::io(&sup)(e)
            }
        })?;
        let sb = Superblock::decode(&sup, &raw)?;
        let jpath = dir.join(journal::journal_name(sb.journal_gen));
        let bytes = fs.read(&jpath).map_err(EngineError::io(&jpath))?;
        let len = usize::try_from(sb.journal_len).unwrap_or(usize::MAX);
        let durable = bytes.get(..len).ok_or_else(|| EngineError::CorruptMeta {
            path: jpath.clone(),
            why: format!(
                "{} bytes, but {} were made durable",
                bytes.len(),
                sb.journal_len
            ),
        })?;
        let records = journal::decode_all(&jpath, durable)?;
        // What follows the durable length belongs to commands the log
        // replays: cut it, so new records follow the durable ones.
        if bytes.len() > len {
            let mut f = fs
                .open(&jpath, OpenMode::Write)
                .map_err(EngineError::io(&jpath))?;
            f.set_len(sb.journal_len)
                .and_then(|()| f.sync_data())
                .map_err(EngineError::io(&jpath))?;
        }
        let journal = fs
            .open(&jpath, OpenMode::Append)
            .map_err(EngineError::io(&jpath))?;
        let slots = SlotFile::open(&fs, &dir.join(SLOTS), sb.geometry, false)?;
        let mut e = Engine {
            fs,
            dir: dir.to_path_buf(),
            geometry: sb.geometry,
            slots,
            journal,
            journal_gen: sb.journal_gen,
            journal_len: sb.journal_len,
            journal_buf: Vec::new(),
            versions: Versions::default(),
            head_lineage: Vec::new(),
            map: BTreeMap::new(),
            tagged: BTreeMap::new(),
            epochs: BTreeMap::new(),
            next_slot: 0,
            free: BTreeSet::new(),
            pending_free: Vec::new(),
            applied: sb.durable_index,
            durable: sb.durable_index,
            applying: sb.durable_index,
            gc_cursor: None,
            gc_again: false,
            stats: EngineStats::default(),
            compact_bytes: JOURNAL_COMPACT_BYTES,
            pinned: BTreeSet::new(),
            pinned_released: Vec::new(),
            failed: None,
            #[cfg(feature = "bug-injection")]
            bug_skip_slot_sync: false,
            #[cfg(feature = "bug-injection")]
            bug_corrupt_as_zeros: false,
        };
        e.rebuild(&jpath, records)?;
        Ok(e)
    }

    /// Replays the journal's records into memory.
    fn rebuild(&mut self, path: &Path, records: Vec<Record>) -> Result<(), EngineError> {
        let corrupt = |why: String| EngineError::CorruptMeta {
            path: path.to_path_buf(),
            why,
        };
        let mut saw_versions = false;
        for r in records {
            match r {
                Record::Versions(v) => {
                    self.versions = v;
                    saw_versions = true;
                }
                Record::Map { key, version, slot } => {
                    self.check_key(&key).map_err(|w| corrupt(w.to_string()))?;
                    let changed = self.durable;
                    self.set_entry(
                        key,
                        Entry {
                            version,
                            slot,
                            changed,
                        },
                    );
                }
                Record::Epoch { volume, epoch } => {
                    self.epochs.insert(volume, epoch);
                }
                Record::Unmap { key, version } => {
                    if self.remove_entry(key, version).is_none() {
                        return Err(corrupt(format!("unmap of {key:?}@{version}, never mapped")));
                    }
                }
            }
        }
        if !saw_versions {
            return Err(corrupt("no version tree".into()));
        }
        let mut used = BTreeSet::new();
        for (key, entries) in &self.map {
            for e in entries {
                if !self.versions.nodes().contains_key(&e.version) {
                    return Err(corrupt(format!(
                        "{key:?} tagged with unknown version {}",
                        e.version
                    )));
                }
                if let Some(s) = e.slot {
                    if !used.insert(s) {
                        return Err(corrupt(format!("slot {s} mapped twice")));
                    }
                }
            }
        }
        self.next_slot = used.last().map_or(0, |s| s + 1);
        self.free = (0..self.next_slot).filter(|s| !used.contains(s)).collect();
        self.head_lineage = self.versions.lineage(self.versions.head());
        // A reclaim pass that a crash interrupted starts over.
        if self
            .versions
            .nodes()
            .values()
            .any(|n| n.state == VersionState::Gone)
        {
            self.gc_cursor = Some(SliceKey::first_of(0));
        }
        Ok(())
    }

    /// The engine's geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The highest Raft index applied (or skipped past).
    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// The highest Raft index whose effects are durable: after a crash the
    /// log must be replayed from the one after it, and may be compacted
    /// up to it.
    pub fn durable_index(&self) -> u64 {
        self.durable
    }

    /// The head version.
    pub fn head(&self) -> Version {
        self.versions.head()
    }

    /// Every version still in the tree, oldest first.
    pub fn versions(&self) -> Vec<VersionInfo> {
        self.versions
            .nodes()
            .iter()
            .map(|(&version, n)| VersionInfo {
                version,
                parent: n.parent,
                state: n.state,
            })
            .collect()
    }

    /// The journal size past which a flush may rewrite it as an image
    /// (also at least four times the image); small values exercise the
    /// rewrite in tests.
    pub fn set_journal_compact_bytes(&mut self, bytes: u64) {
        self.compact_bytes = bytes;
    }

    /// Counters and sizes.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            slots_used: self.next_slot
                - self.free.len() as u64
                - self.pending_free.len() as u64
                - self.pinned_released.len() as u64,
            slots_free: self.free.len() as u64,
            slots_pending_free: self.pending_free.len() as u64,
            entries: self.map.values().map(|v| v.len() as u64).sum(),
            journal_bytes: self.journal_len + self.journal_buf.len() as u64,
            gc_running: self.gc_cursor.is_some(),
            ..self.stats
        }
    }

    fn check_ok(&self) -> Result<(), EngineError> {
        match &self.failed {
            Some(why) => Err(EngineError::Io {
                path: self.dir.clone(),
                source: std::io::Error::other(format!("engine stopped after: {why}")),
            }),
            None => Ok(()),
        }
    }

    /// Records a storage error: from now on every call fails.
    fn fail<T>(&mut self, r: Result<T, EngineError>) -> Result<T, EngineError> {
        if let Err(e) = &r {
            self.failed.get_or_insert_with(|| e.to_string());
        }
        r
    }

    /// Moves the applied index to `index` for a Raft entry that is not an
    /// engine command (a no-op, a membership change), so a flush covers it.
    pub fn skip_to(&mut self, index: u64) {
        self.applied = self.applied.max(index);
    }

    /// Applies `cmd`, the Raft entry at `index`. An `index` at or below
    /// the applied one is skipped (replay). The outer error is the
    /// engine's own failure (the replica must stop); the inner one a
    /// refusal of this command, the same on every replica.
    pub fn apply(
        &mut self,
        index: u64,
        cmd: &Command,
    ) -> Result<Result<Outcome, Refusal>, EngineError> {
        self.check_ok()?;
        if index <= self.applied {
            return Ok(Ok(Outcome::Skipped));
        }
        self.applying = index;
        let r = self.apply_inner(cmd);
        let r = self.fail(r)?;
        self.applied = index;
        Ok(r)
    }

    fn apply_inner(&mut self, cmd: &Command) -> Result<Result<Outcome, Refusal>, EngineError> {
        match cmd {
            Command::Write {
                volume,
                block,
                offset,
                data,
                epoch,
            } => {
                if let Err(r) = self.check_range(*offset, data.len() as u64) {
                    return Ok(Err(r));
                }
                if let Err(r) = self.admit(*volume, *epoch)? {
                    return Ok(Err(r));
                }
                self.write(*volume, *block, *offset, data)?;
                Ok(Ok(Outcome::Written))
            }
            Command::Zero {
                volume,
                block,
                offset,
                len,
                epoch,
            } => {
                if let Err(r) = self.check_range(*offset, *len) {
                    return Ok(Err(r));
                }
                if let Err(r) = self.admit(*volume, *epoch)? {
                    return Ok(Err(r));
                }
                self.zero(*volume, *block, *offset, *len)?;
                Ok(Ok(Outcome::Zeroed))
            }
            Command::Mark => {
                if self.versions.retained().len() >= MAX_RETAINED_VERSIONS {
                    return Ok(Err(Refusal::TooManyVersions));
                }
                let version = self.versions.mark();
                self.versions_changed()?;
                Ok(Ok(Outcome::Marked { version }))
            }
            Command::Drop { version } => {
                if !self.versions.retained().contains(version) {
                    return Ok(Err(Refusal::NotRetained(*version)));
                }
                self.versions.drop_version(*version);
                self.versions_changed()?;
                self.start_gc();
                Ok(Ok(Outcome::Dropped { version: *version }))
            }
            Command::Fence { volume, epoch } => {
                if let Err(r) = self.admit(*volume, *epoch)? {
                    return Ok(Err(r));
                }
                Ok(Ok(Outcome::Fenced))
            }
            Command::Purge { volume } => {
                let entries = self.purge(*volume)?;
                Ok(Ok(Outcome::Purged { entries }))
            }
            Command::Rollback { to } => {
                if !self.versions.retained().contains(to) {
                    return Ok(Err(Refusal::NotRetained(*to)));
                }
                self.versions.rollback(*to);
                self.versions_changed()?;
                self.start_gc();
                Ok(Ok(Outcome::RolledBack {
                    to: *to,
                    head: self.versions.head(),
                }))
            }
        }
    }

    /// Fences stale writers: a write at an epoch older than the volume's
    /// newest seen here is refused; a newer one becomes the volume's.
    fn admit(&mut self, volume: u64, epoch: u64) -> Result<Result<(), Refusal>, EngineError> {
        let current = self.epochs.get(&volume).copied().unwrap_or(0);
        if epoch < current {
            return Ok(Err(Refusal::Fenced {
                volume,
                epoch,
                current,
            }));
        }
        if epoch > current {
            self.epochs.insert(volume, epoch);
            self.journal_record(&Record::Epoch { volume, epoch })?;
        }
        Ok(Ok(()))
    }

    /// Removes every entry of `volume` and fences it for good.
    fn purge(&mut self, volume: u64) -> Result<u64, EngineError> {
        let from = SliceKey::first_of(volume);
        let keys: Vec<SliceKey> = self
            .map
            .range(from..)
            .take_while(|(k, _)| k.volume == volume)
            .map(|(k, _)| *k)
            .collect();
        let mut n = 0;
        for key in keys {
            let versions: Vec<Version> = self.map[&key].iter().map(|e| e.version).collect();
            for version in versions {
                if let Some(Entry { slot: Some(s), .. }) = self.remove_entry(key, version) {
                    self.release(s);
                }
                self.journal_record(&Record::Unmap { key, version })?;
                n += 1;
            }
        }
        self.stats.reclaimed += n;
        // A writer that still holds the volume open is refused from now on.
        self.epochs.insert(volume, u64::MAX);
        self.journal_record(&Record::Epoch {
            volume,
            epoch: u64::MAX,
        })?;
        Ok(n)
    }

    /// Whether any slice of `volume` is held here (at any version).
    pub fn holds_volume(&self, volume: u64) -> bool {
        let from = SliceKey::first_of(volume);
        self.map
            .range(from..)
            .next()
            .is_some_and(|(k, _)| k.volume == volume)
    }

    /// Whether `volume` was purged here.
    pub fn purged(&self, volume: u64) -> bool {
        self.epochs.get(&volume) == Some(&u64::MAX)
    }

    /// The newest writer epoch seen for `volume` (0: none yet).
    pub fn epoch(&self, volume: u64) -> u64 {
        self.epochs.get(&volume).copied().unwrap_or(0)
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<(), Refusal> {
        if len == 0 || !offset.is_multiple_of(SECTOR) || !len.is_multiple_of(SECTOR) {
            return Err(Refusal::Misaligned { offset, len });
        }
        let end = offset.saturating_add(len);
        if end > self.geometry.block_size {
            return Err(Refusal::OutOfRange {
                offset,
                end,
                block_size: self.geometry.block_size,
            });
        }
        Ok(())
    }

    fn check_key(&self, key: &SliceKey) -> Result<(), Refusal> {
        let slices = self.geometry.block_size / self.geometry.slice_size;
        if u64::from(key.slice) >= slices {
            return Err(Refusal::OutOfRange {
                offset: u64::from(key.slice) * self.geometry.slice_size,
                end: u64::from(key.slice + 1) * self.geometry.slice_size,
                block_size: self.geometry.block_size,
            });
        }
        Ok(())
    }

    /// Splits `[offset, offset + len)` of a block into per-slice pieces:
    /// (slice key, first sector in the slice, byte offset into the
    /// request, bytes).
    fn pieces(
        &self,
        volume: u64,
        block: u64,
        offset: u64,
        len: u64,
    ) -> Vec<(SliceKey, u64, usize, usize)> {
        let ss = self.geometry.slice_size;
        let mut out = Vec::new();
        let mut at = offset;
        let end = offset + len;
        while at < end {
            let slice = at / ss;
            let within = at % ss;
            let n = (ss - within).min(end - at);
            out.push((
                SliceKey {
                    volume,
                    block,
                    slice: slice as u32,
                },
                within / SECTOR,
                (at - offset) as usize,
                n as usize,
            ));
            at += n;
        }
        out
    }

    fn write(
        &mut self,
        volume: u64,
        block: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<(), EngineError> {
        for (key, first, from, n) in self.pieces(volume, block, offset, data.len() as u64) {
            self.write_slice(key, first, &data[from..from + n])?;
        }
        Ok(())
    }

    /// Writes whole sectors of one slice at the head.
    fn write_slice(&mut self, key: SliceKey, first: u64, data: &[u8]) -> Result<(), EngineError> {
        let head = self.versions.head();
        let seen = self.resolve(&key, &self.head_lineage);
        let mut replaced = None;
        if let Some(Entry {
            version,
            slot: Some(slot),
            ..
        }) = seen
        {
            if version == head && !self.pinned.contains(&slot) {
                self.touch(key, head);
                return self.slots.write(slot, first, data);
            }
            if version == head {
                // An export is reading this slot: the head moves to a copy.
                replaced = Some(slot);
            }
        }
        let slot = self.alloc_slot();
        if seen.and_then(|e| e.slot).is_none() && self.slots.is_fresh(slot) {
            // A slice of zeros into a slot never written: the hole reads
            // as zeros, so only the written sectors are written.
            self.slots.extend_over(slot)?;
            self.slots.write(slot, first, data)?;
            return self.map_entry(key, head, Some(slot));
        }
        // A new slot: the slice as the head sees it, the write laid over.
        let mut buf = vec![0u8; self.geometry.slice_size as usize];
        // A write of the whole slice replaces it: nothing to copy.
        let whole = data.len() == buf.len();
        let mut bad = Vec::new();
        if let (
            Some(Entry {
                slot: Some(src), ..
            }),
            false,
        ) = (seen, whole)
        {
            bad = self.slots.read_salvage(src, &mut buf)?;
            self.stats.copies += 1;
        }
        let at = (first * SECTOR) as usize;
        buf[at..at + data.len()].copy_from_slice(data);
        self.slots.write(slot, 0, &buf)?;
        // A corrupt sector the write does not cover stays corrupt in the
        // copy: stopping the replica for it would be worse, and copying
        // it as good bytes would serve them.
        let written = first..first + data.len() as u64 / SECTOR;
        for s in bad.into_iter().filter(|s| !written.contains(s)) {
            let from = (s * SECTOR) as usize;
            self.slots
                .write_poisoned(slot, s, &buf[from..from + SECTOR as usize])?;
            self.stats.corrupt_carried += 1;
        }
        if let Some(old) = replaced {
            self.release(old);
        }
        // A new head entry, or the head's entry given a new slot.
        self.map_entry(key, head, Some(slot))
    }

    /// A slot no entry maps any more: reusable after the next flush, or
    /// after the export reading it ends.
    fn release(&mut self, slot: u64) {
        if self.pinned.contains(&slot) {
            self.pinned_released.push(slot);
        } else {
            self.pending_free.push(slot);
        }
    }

    fn zero(&mut self, volume: u64, block: u64, offset: u64, len: u64) -> Result<(), EngineError> {
        let head = self.versions.head();
        for (key, first, _, n) in self.pieces(volume, block, offset, len) {
            if n as u64 != self.geometry.slice_size {
                let zeros = vec![0u8; n];
                self.write_slice(key, first, &zeros)?;
                continue;
            }
            match self.resolve(&key, &self.head_lineage) {
                // Already zeros as the head sees it.
                None | Some(Entry { slot: None, .. }) => {}
                Some(Entry {
                    version,
                    slot: Some(slot),
                    ..
                }) => {
                    if version == head {
                        self.release(slot);
                    }
                    self.map_entry(key, head, None)?;
                }
            }
        }
        Ok(())
    }

    /// The entry version `lineage[0]` sees for `key`: the newest one
    /// tagged with a version of its lineage.
    fn resolve(&self, key: &SliceKey, lineage: &[Version]) -> Option<Entry> {
        let entries = self.map.get(key)?;
        entries
            .iter()
            .rev()
            .find(|e| lineage.binary_search_by(|x| e.version.cmp(x)).is_ok())
            .copied()
    }

    fn alloc_slot(&mut self) -> u64 {
        match self.free.pop_first() {
            Some(s) => s,
            None => {
                self.next_slot += 1;
                self.next_slot - 1
            }
        }
    }

    /// Sets `key`'s entry at `version` and journals it.
    fn map_entry(
        &mut self,
        key: SliceKey,
        version: Version,
        slot: Option<u64>,
    ) -> Result<(), EngineError> {
        let changed = self.applying;
        self.set_entry(
            key,
            Entry {
                version,
                slot,
                changed,
            },
        );
        self.journal_record(&Record::Map { key, version, slot })
    }

    /// Notes that `key`'s entry at `version` changes at the index being
    /// applied.
    fn touch(&mut self, key: SliceKey, version: Version) {
        let applying = self.applying;
        if let Some(e) = self
            .map
            .get_mut(&key)
            .and_then(|es| es.iter_mut().find(|e| e.version == version))
        {
            e.changed = applying;
        }
    }

    fn set_entry(&mut self, key: SliceKey, e: Entry) {
        let entries = self.map.entry(key).or_default();
        match entries.binary_search_by(|x| x.version.cmp(&e.version)) {
            Ok(i) => entries[i] = e,
            Err(i) => {
                entries.insert(i, e);
                *self.tagged.entry(e.version).or_default() += 1;
            }
        }
    }

    fn remove_entry(&mut self, key: SliceKey, version: Version) -> Option<Entry> {
        let entries = self.map.get_mut(&key)?;
        let i = entries.binary_search_by(|x| x.version.cmp(&version)).ok()?;
        let e = entries.remove(i);
        if entries.is_empty() {
            self.map.remove(&key);
        }
        if let Some(n) = self.tagged.get_mut(&version) {
            *n -= 1;
            if *n == 0 {
                self.tagged.remove(&version);
            }
        }
        Some(e)
    }

    fn versions_changed(&mut self) -> Result<(), EngineError> {
        self.head_lineage = self.versions.lineage(self.versions.head());
        self.journal_record(&Record::Versions(self.versions.clone()))
    }

    fn journal_record(&mut self, r: &Record) -> Result<(), EngineError> {
        r.encode_into(&mut self.journal_buf);
        if self.journal_buf.len() >= JOURNAL_BUFFER_BYTES {
            self.write_journal_buf()?;
        }
        Ok(())
    }

    fn write_journal_buf(&mut self) -> Result<(), EngineError> {
        if self.journal_buf.is_empty() {
            return Ok(());
        }
        let path = self.dir.join(journal::journal_name(self.journal_gen));
        self.journal
            .write_all(&self.journal_buf)
            .map_err(EngineError::io(&path))?;
        self.journal_len += self.journal_buf.len() as u64;
        self.journal_buf.clear();
        Ok(())
    }

    /// Reads `buf.len()` bytes (whole sectors) at `offset` of a block as
    /// version `at` sees it (`None`: the head). Slices never written read
    /// as zeros. The outer error is the engine's (a corrupt sector is
    /// never served); the inner one a refusal.
    pub fn read(
        &mut self,
        volume: u64,
        block: u64,
        offset: u64,
        buf: &mut [u8],
        at: Option<Version>,
    ) -> Result<Result<(), Refusal>, EngineError> {
        self.check_ok()?;
        if let Err(r) = self.check_range(offset, buf.len() as u64) {
            return Ok(Err(r));
        }
        let lineage = match at {
            None => self.head_lineage.clone(),
            Some(v) if self.versions.readable(v) => self.versions.lineage(v),
            Some(v) => return Ok(Err(Refusal::NoSuchVersion(v))),
        };
        for (key, first, from, n) in self.pieces(volume, block, offset, buf.len() as u64) {
            let out = &mut buf[from..from + n];
            match self.resolve(&key, &lineage) {
                // A corrupt sector fails this read only: it is not a
                // reason to stop the engine (other slices still serve),
                // and it is never replaced by zeros.
                Some(Entry { slot: Some(s), .. }) => match self.slots.read(s, first, out) {
                    #[cfg(feature = "bug-injection")]
                    Err(EngineError::CorruptSector { .. }) if self.bug_corrupt_as_zeros => {
                        out.fill(0)
                    }
                    r => r?,
                },
                _ => out.fill(0),
            }
        }
        Ok(Ok(()))
    }

    /// Makes everything applied so far durable and returns the new
    /// durable index.
    pub fn flush(&mut self) -> Result<u64, EngineError> {
        self.check_ok()?;
        let r = self.flush_inner();
        self.fail(r)
    }

    /// Injects a bug for the simulator to catch: flushes stop syncing the
    /// slot file, so a crash can lose data the engine calls durable.
    #[cfg(feature = "bug-injection")]
    pub fn inject_skip_slot_sync(&mut self) {
        self.bug_skip_slot_sync = true;
    }

    /// Injects a bug for the simulator to catch: a read serves zeros for
    /// a corrupt sector instead of failing.
    #[cfg(feature = "bug-injection")]
    pub fn inject_corrupt_as_zeros(&mut self) {
        self.bug_corrupt_as_zeros = true;
    }

    fn flush_inner(&mut self) -> Result<u64, EngineError> {
        self.write_journal_buf()?;
        #[cfg(feature = "bug-injection")]
        let skip = self.bug_skip_slot_sync;
        #[cfg(not(feature = "bug-injection"))]
        let skip = false;
        if !skip {
            self.slots.sync()?;
        }
        let jpath = self.dir.join(journal::journal_name(self.journal_gen));
        self.journal.sync_data().map_err(EngineError::io(&jpath))?;
        let sb = Superblock {
            geometry: self.geometry,
            durable_index: self.applied,
            journal_gen: self.journal_gen,
            journal_len: self.journal_len,
        };
        write_superblock(&self.fs, &self.dir, &sb)?;
        self.durable = self.applied;
        // The state recovery returns to no longer maps these.
        self.free.extend(self.pending_free.drain(..));
        let image = self.image_bytes();
        if self.journal_len > self.compact_bytes && self.journal_len > 4 * image {
            self.compact_journal()?;
        }
        Ok(self.durable)
    }

    /// The start of an image of the state: the version tree and the
    /// writer epochs (the entries follow).
    fn image_head(&self, out: &mut Vec<u8>) {
        Record::Versions(self.versions.clone()).encode_into(out);
        for (&volume, &epoch) in &self.epochs {
            Record::Epoch { volume, epoch }.encode_into(out);
        }
    }

    fn image_bytes(&self) -> u64 {
        // A map record is 45 bytes with its frame; versions are few.
        self.map.values().map(|v| v.len() as u64).sum::<u64>() * 45 + 512
    }

    /// Writes the state as a new journal and switches to it. Called right
    /// after a flush, so the state is the durable one.
    fn compact_journal(&mut self) -> Result<(), EngineError> {
        let gen = self.journal_gen + 1;
        let path = self.dir.join(journal::journal_name(gen));
        let mut bytes = Vec::new();
        self.image_head(&mut bytes);
        for (&key, entries) in &self.map {
            for e in entries {
                Record::Map {
                    key,
                    version: e.version,
                    slot: e.slot,
                }
                .encode_into(&mut bytes);
            }
        }
        write_synced(&self.fs, &path, &bytes)?;
        let sb = Superblock {
            geometry: self.geometry,
            durable_index: self.durable,
            journal_gen: gen,
            journal_len: bytes.len() as u64,
        };
        write_superblock(&self.fs, &self.dir, &sb)?;
        let old = self.dir.join(journal::journal_name(self.journal_gen));
        self.journal = self
            .fs
            .open(&path, OpenMode::Append)
            .map_err(EngineError::io(&path))?;
        self.journal_gen = gen;
        self.journal_len = bytes.len() as u64;
        // The superblock no longer names the old journal; a crash before
        // this removal leaves a stray file that changes nothing.
        self.fs.remove_file(&old).map_err(EngineError::io(&old))?;
        Ok(())
    }

    fn start_gc(&mut self) {
        if self.gc_cursor.is_some() {
            self.gc_again = true;
        } else {
            self.gc_cursor = Some(SliceKey::first_of(0));
        }
    }

    /// Reclaims entries no live version sees, looking at up to `slices`
    /// slices. Returns whether a pass is still under way. Freed slots are
    /// reused after the next flush.
    pub fn gc_step(&mut self, slices: usize) -> Result<bool, EngineError> {
        self.check_ok()?;
        let r = self.gc_inner(slices);
        self.fail(r)
    }

    fn gc_inner(&mut self, slices: usize) -> Result<bool, EngineError> {
        let Some(from) = self.gc_cursor else {
            return Ok(false);
        };
        let lineages: Vec<Vec<Version>> = self
            .versions
            .live()
            .map(|v| self.versions.lineage(v))
            .collect();
        let keys: Vec<SliceKey> = self
            .map
            .range(from..)
            .take(slices + 1)
            .map(|(k, _)| *k)
            .collect();
        let done = keys.len() <= slices;
        for key in keys.iter().take(slices) {
            let seen: BTreeSet<Version> = lineages
                .iter()
                .filter_map(|l| self.resolve(key, l))
                .map(|e| e.version)
                .collect();
            let dead: Vec<Entry> = self.map[key]
                .iter()
                .filter(|e| !seen.contains(&e.version))
                .copied()
                .collect();
            for e in dead {
                self.remove_entry(*key, e.version);
                if let Some(s) = e.slot {
                    self.release(s);
                }
                self.stats.reclaimed += 1;
                self.journal_record(&Record::Unmap {
                    key: *key,
                    version: e.version,
                })?;
            }
        }
        if !done {
            self.gc_cursor = keys.last().copied();
            return Ok(true);
        }
        // The pass is over: versions nobody needs leave the tree.
        let tagged = self.tagged.clone();
        if self.versions.prune(|v| tagged.contains_key(&v)) > 0 {
            self.versions_changed()?;
        }
        if std::mem::take(&mut self.gc_again) {
            self.gc_cursor = Some(SliceKey::first_of(0));
            return Ok(true);
        }
        self.gc_cursor = None;
        Ok(false)
    }
}

/// Writes `bytes` as the whole file `path` and syncs it.
fn write_synced(fs: &Arc<dyn Fs>, path: &Path, bytes: &[u8]) -> Result<(), EngineError> {
    let mut f = fs
        .open(path, OpenMode::Create)
        .map_err(EngineError::io(path))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_data())
        .map_err(EngineError::io(path))
}

/// Replaces the superblock atomically and durably.
fn write_superblock(fs: &Arc<dyn Fs>, dir: &Path, sb: &Superblock) -> Result<(), EngineError> {
    let tmp = dir.join("super.tmp");
    write_synced(fs, &tmp, &sb.encode())?;
    let sup = journal::file(dir, journal::SUPER);
    fs.rename(&tmp, &sup).map_err(EngineError::io(&sup))?;
    fs.sync_dir(dir).map_err(EngineError::io(dir))
}
