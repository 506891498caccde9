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
//! - **advance** a volume's head to a new version: a snapshot (the old
//!   head becomes a retained version) or a rollback (a new head on a
//!   retained one); nothing is copied either way;
//! - **drop** a retained version: one change to the version tree; entries
//!   no live version sees any more are reclaimed afterwards by
//!   [`Engine::gc_step`], a little at a time, while IO goes on;
//! - **clone**: a new volume whose slices read through to another's
//!   retained version until written (a write copies the slice first).
//!
//! Every write and zero carries the head version its writer believes in
//! (and that version's base): a writer behind the group is refused with
//! the group's head ([`Refusal::Stale`]) and retries at it, and a writer
//! ahead moves the group's head first. That is what makes a snapshot a
//! crash-consistent cut across groups (see `versions.rs` and the book).
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
pub use versions::{Step, Version, VersionState, VolumeVersions, MAX_RETAINED_VERSIONS};

use journal::{Record, Superblock};
use slots::SlotFile;
use versions::StepError;

/// The slot file's name.
const SLOTS: &str = "slots";
/// The longest chain of clones a read follows (a clone of a clone...).
pub const MAX_CLONE_DEPTH: usize = 16;
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
    /// Writes `data` (whole sectors) at `offset` of the block, at head
    /// version `head` (whose base is `base`), for a writer that opened the
    /// volume at `epoch`.
    Write {
        volume: u64,
        block: u64,
        offset: u64,
        data: Bytes,
        epoch: u64,
        head: Version,
        base: Version,
    },
    /// Makes `len` bytes (whole sectors) at `offset` read as zeros.
    Zero {
        volume: u64,
        block: u64,
        offset: u64,
        len: u64,
        epoch: u64,
        head: Version,
        base: Version,
    },
    /// Moves the volume's head to `head`, whose base (parent in the
    /// Master's tree) is `base`: a snapshot when `base` is the head here,
    /// a rollback when it is a retained version (see `versions.rs`).
    Advance {
        volume: u64,
        head: Version,
        base: Version,
    },
    /// Drops a retained version of a volume.
    Drop { volume: u64, version: Version },
    /// Makes `volume` a clone of `from` at retained version `version`:
    /// its slices read through to it until written.
    Clone {
        volume: u64,
        from: u64,
        version: Version,
    },
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
    /// The volume's head is `head` (`step` says how it got there).
    Advanced {
        head: Version,
        step: Step,
    },
    Dropped {
        version: Version,
    },
    /// A clone's origin is recorded.
    Cloned,
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
    /// The request's head version is older than this group's: retry at
    /// `head` (whose base is `base`).
    #[error("volume {volume}: version {asked} is stale, the head is {head} (base {base})")]
    Stale {
        volume: u64,
        asked: Version,
        head: Version,
        base: Version,
    },
    /// The base of a new head is unknown here (the group missed a step).
    #[error("volume {volume}: base version {base} is unknown here")]
    UnknownBase { volume: u64, base: Version },
    /// A clone still reads through to this version.
    #[error("version {version} is the origin of clone volume {clone}")]
    InUse { version: Version, clone: u64 },
    /// The volume exists here already with another origin.
    #[error("volume {volume} exists here already, not as that clone")]
    CloneConflict { volume: u64 },
    #[error("a clone chain deeper than {MAX_CLONE_DEPTH}")]
    CloneTooDeep,
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
    /// Slots whose entries are tagged with this version: the space the
    /// version holds that no older one shares.
    pub slots: u64,
}

/// Which version of a volume a read sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAt {
    /// The volume's head here, whatever it is.
    Head,
    /// The head as a client that believes it is `head` (based on `base`)
    /// sees it: where this group has not taken that step yet, what the
    /// step will make the head read (the head itself for a snapshot, the
    /// rollback's target for a rollback).
    Tagged { head: Version, base: Version },
    /// A retained version (a snapshot).
    Version(Version),
}

/// What a read or write sees of a volume: its own lineage, then for a
/// clone its origin's lineage at the origin version, and so on.
#[derive(Debug, Clone, Default)]
struct View {
    layers: Vec<(u64, Vec<Version>)>,
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
    /// Each volume's version tree here.
    volumes: BTreeMap<u64, VolumeVersions>,
    /// Every slice's entries, oldest version first.
    map: BTreeMap<SliceKey, Vec<Entry>>,
    /// The newest writer epoch per volume.
    epochs: BTreeMap<u64, u64>,
    /// Entries per (volume, version) (a version with none may be pruned).
    tagged: BTreeMap<(u64, Version), u64>,
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
    #[cfg(feature = "bug-injection")]
    bug_skip_cow: bool,
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
        let gen = 1;
        let jpath = dir.join(journal::journal_name(gen));
        let bytes = Vec::new();
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
            volumes: BTreeMap::new(),
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
            #[cfg(feature = "bug-injection")]
            bug_skip_cow: false,
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
        for r in records {
            match r {
                Record::Volume { volume, tree } => {
                    self.volumes.insert(volume, tree);
                }
                Record::Forget { volume } => {
                    self.volumes.remove(&volume);
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
        let mut used = BTreeSet::new();
        for (key, entries) in &self.map {
            for e in entries {
                let known = self
                    .volumes
                    .get(&key.volume)
                    .is_some_and(|t| t.nodes().contains_key(&e.version));
                if !known {
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
        // A reclaim pass that a crash interrupted starts over.
        if self
            .volumes
            .values()
            .any(|t| t.nodes().values().any(|n| n.state == VersionState::Gone))
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

    /// `volume`'s head version here (`None`: never heard of).
    pub fn head(&self, volume: u64) -> Option<Version> {
        self.volumes.get(&volume).map(|t| t.head())
    }

    /// `volume`'s version tree here.
    pub fn volume_versions(&self, volume: u64) -> Option<&VolumeVersions> {
        self.volumes.get(&volume)
    }

    /// Every version of `volume` still in its tree here, oldest first,
    /// with the slots each holds.
    pub fn versions(&self, volume: u64) -> Vec<VersionInfo> {
        let mut slots: BTreeMap<Version, u64> = BTreeMap::new();
        let from = SliceKey::first_of(volume);
        for (_, entries) in self
            .map
            .range(from..)
            .take_while(|(k, _)| k.volume == volume)
        {
            for e in entries.iter().filter(|e| e.slot.is_some()) {
                *slots.entry(e.version).or_default() += 1;
            }
        }
        self.volumes.get(&volume).map_or_else(Vec::new, |t| {
            t.nodes()
                .iter()
                .map(|(&version, n)| VersionInfo {
                    version,
                    parent: n.parent,
                    state: n.state,
                    slots: slots.get(&version).copied().unwrap_or(0),
                })
                .collect()
        })
    }

    /// The volumes with a version tree here.
    pub fn volume_ids(&self) -> Vec<u64> {
        self.volumes.keys().copied().collect()
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
                head,
                base,
            } => {
                if let Err(r) = self.check_range(*offset, data.len() as u64) {
                    return Ok(Err(r));
                }
                if let Err(r) = self.admit(*volume, *epoch)? {
                    return Ok(Err(r));
                }
                if let Err(r) = self.at_head(*volume, *head, *base)? {
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
                head,
                base,
            } => {
                if let Err(r) = self.check_range(*offset, *len) {
                    return Ok(Err(r));
                }
                if let Err(r) = self.admit(*volume, *epoch)? {
                    return Ok(Err(r));
                }
                if let Err(r) = self.at_head(*volume, *head, *base)? {
                    return Ok(Err(r));
                }
                self.zero(*volume, *block, *offset, *len)?;
                Ok(Ok(Outcome::Zeroed))
            }
            Command::Advance { volume, head, base } => Ok(self
                .advance(*volume, *head, *base)?
                .map(|step| Outcome::Advanced { head: *head, step })),
            Command::Drop { volume, version } => {
                let Some(tree) = self.volumes.get(volume) else {
                    // Never held here: nothing to drop.
                    return Ok(Ok(Outcome::Skipped));
                };
                if !tree.nodes().contains_key(version) && *version < tree.born() {
                    return Ok(Ok(Outcome::Skipped));
                }
                if !tree.retained(*version) {
                    return Ok(Err(Refusal::NotRetained(*version)));
                }
                if let Some((&clone, _)) = self
                    .volumes
                    .iter()
                    .find(|(_, t)| t.origin() == Some((*volume, *version)))
                {
                    return Ok(Err(Refusal::InUse {
                        version: *version,
                        clone,
                    }));
                }
                let mut tree = tree.clone();
                tree.drop_version(*version);
                self.set_volume(*volume, tree)?;
                self.start_gc();
                Ok(Ok(Outcome::Dropped { version: *version }))
            }
            Command::Clone {
                volume,
                from,
                version,
            } => {
                let origin = Some((*from, *version));
                match self.volumes.get(volume) {
                    Some(t) if t.origin() == origin => return Ok(Ok(Outcome::Skipped)),
                    Some(_) => return Ok(Err(Refusal::CloneConflict { volume: *volume })),
                    None => {}
                }
                if let Some(src) = self.volumes.get(from) {
                    if !src.readable(*version) && *version >= src.born() {
                        return Ok(Err(Refusal::NoSuchVersion(*version)));
                    }
                }
                // A clone's own versions start at 1.
                self.set_volume(*volume, VolumeVersions::new(1, 0, origin))?;
                Ok(Ok(Outcome::Cloned))
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
        }
    }

    /// Moves `volume`'s head to `head` (based on `base`); a volume never
    /// heard of here starts at `head`.
    fn advance(
        &mut self,
        volume: u64,
        head: Version,
        base: Version,
    ) -> Result<Result<Step, Refusal>, EngineError> {
        if head == 0 {
            return Ok(Err(Refusal::NoSuchVersion(0)));
        }
        if base >= head {
            // No version is based on itself or a newer one.
            return Ok(Err(Refusal::UnknownBase { volume, base }));
        }
        let Some(tree) = self.volumes.get(&volume) else {
            self.set_volume(volume, VolumeVersions::new(head, base, None))?;
            return Ok(Ok(Step::Same));
        };
        let mut tree = tree.clone();
        match tree.advance(head, base) {
            Ok(Step::Same) => Ok(Ok(Step::Same)),
            Ok(step) => {
                self.set_volume(volume, tree)?;
                if step != Step::Marked {
                    self.start_gc();
                }
                Ok(Ok(step))
            }
            Err(StepError::Behind { head: h, base: b }) => Ok(Err(Refusal::Stale {
                volume,
                asked: head,
                head: h,
                base: b,
            })),
            Err(StepError::UnknownBase { base }) => Ok(Err(Refusal::UnknownBase { volume, base })),
            Err(StepError::Full) => Ok(Err(Refusal::TooManyVersions)),
        }
    }

    /// A write's version check: the head must be `head` here, moving to
    /// it if the group is behind.
    fn at_head(
        &mut self,
        volume: u64,
        head: Version,
        base: Version,
    ) -> Result<Result<(), Refusal>, EngineError> {
        Ok(self.advance(volume, head, base)?.map(|_| ()))
    }

    /// Replaces `volume`'s tree and journals it.
    fn set_volume(&mut self, volume: u64, tree: VolumeVersions) -> Result<(), EngineError> {
        self.journal_record(&Record::Volume {
            volume,
            tree: tree.clone(),
        })?;
        self.volumes.insert(volume, tree);
        Ok(())
    }

    /// What `volume` at `version` (`None`: the head) sees, through its
    /// clone origins.
    fn view(&self, volume: u64, version: Option<Version>) -> Result<View, Refusal> {
        let mut view = View::default();
        let (mut vol, mut at) = (volume, version);
        loop {
            let Some(tree) = self.volumes.get(&vol) else {
                return Ok(view);
            };
            let v = at.unwrap_or(tree.head());
            if !tree.readable(v) {
                if v < tree.born() {
                    // Older than anything held here: zeros.
                    return Ok(view);
                }
                return Err(Refusal::NoSuchVersion(v));
            }
            view.layers.push((vol, tree.lineage(v)));
            let Some((from, fv)) = tree.origin() else {
                return Ok(view);
            };
            if view.layers.len() > MAX_CLONE_DEPTH {
                return Err(Refusal::CloneTooDeep);
            }
            (vol, at) = (from, Some(fv));
        }
    }

    /// The view a read at `at` gets.
    fn read_view(&self, volume: u64, at: ReadAt) -> Result<View, Refusal> {
        match at {
            ReadAt::Head => self.view(volume, None),
            ReadAt::Version(v) => self.view(volume, Some(v)),
            ReadAt::Tagged { head, base } => {
                let Some(tree) = self.volumes.get(&volume) else {
                    return self.view(volume, None);
                };
                if head <= tree.head() || base == tree.head() {
                    // The reader is behind (the head here is the truth),
                    // or a snapshot not taken here yet (the head reads
                    // the same either way).
                    self.view(volume, None)
                } else if tree.retained(base) {
                    // A rollback not taken here yet: its target is what
                    // the new head reads.
                    self.view(volume, Some(base))
                } else if base < tree.born() {
                    Ok(View::default())
                } else {
                    Err(Refusal::UnknownBase { volume, base })
                }
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
        if self.volumes.remove(&volume).is_some() {
            self.journal_record(&Record::Forget { volume })?;
        }
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

    /// The head version of `volume` and what the head sees (the version
    /// step taken before any write makes sure the tree exists).
    fn head_view(&self, volume: u64) -> Result<(Version, View), EngineError> {
        let head = self.volumes.get(&volume).map(|t| t.head());
        match (head, self.view(volume, None)) {
            (Some(h), Ok(v)) => Ok((h, v)),
            (_, Err(r)) => Err(EngineError::Invariant(format!(
                "volume {volume}: the head's view: {r}"
            ))),
            (None, _) => Err(EngineError::Invariant(format!(
                "volume {volume}: a write before its version tree"
            ))),
        }
    }

    /// Writes whole sectors of one slice at the head.
    fn write_slice(&mut self, key: SliceKey, first: u64, data: &[u8]) -> Result<(), EngineError> {
        let (head, view) = self.head_view(key.volume)?;
        let seen = self.resolve(&key, &view);
        #[cfg(feature = "bug-injection")]
        let skip_cow = self.bug_skip_cow && (data.len() as u64) < self.geometry.slice_size;
        #[cfg(not(feature = "bug-injection"))]
        let skip_cow = false;
        let mut replaced = None;
        if let Some((
            Entry {
                version,
                slot: Some(slot),
                ..
            },
            true,
        )) = seen
        {
            if (version == head || skip_cow) && !self.pinned.contains(&slot) {
                self.touch(key, head);
                return self.slots.write(slot, first, data);
            }
            if version == head {
                // An export is reading this slot: the head moves to a copy.
                replaced = Some(slot);
            }
        }
        let seen = seen.map(|(e, _)| e);
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
        let (head, view) = self.head_view(volume)?;
        for (key, first, _, n) in self.pieces(volume, block, offset, len) {
            if n as u64 != self.geometry.slice_size {
                let zeros = vec![0u8; n];
                self.write_slice(key, first, &zeros)?;
                continue;
            }
            match self.resolve(&key, &view) {
                // Already zeros as the head sees it.
                None | Some((Entry { slot: None, .. }, _)) => {}
                Some((
                    Entry {
                        version,
                        slot: Some(slot),
                        ..
                    },
                    own,
                )) => {
                    if own && version == head {
                        self.release(slot);
                    }
                    self.map_entry(key, head, None)?;
                }
            }
        }
        Ok(())
    }

    /// The entry `view` sees for `key` (a slice of the view's volume):
    /// in the first layer that has one, the newest tagged with a version
    /// of the layer's lineage; `true` when it is the volume's own (not
    /// read through to a clone's origin).
    fn resolve(&self, key: &SliceKey, view: &View) -> Option<(Entry, bool)> {
        for (i, (volume, lineage)) in view.layers.iter().enumerate() {
            let k = SliceKey {
                volume: *volume,
                ..*key
            };
            if let Some(e) = self.resolve_in(&k, lineage) {
                return Some((e, i == 0));
            }
        }
        None
    }

    /// The newest entry of `key` tagged with a version of `lineage`.
    fn resolve_in(&self, key: &SliceKey, lineage: &[Version]) -> Option<Entry> {
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
                *self.tagged.entry((key.volume, e.version)).or_default() += 1;
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
        if let Some(n) = self.tagged.get_mut(&(key.volume, version)) {
            *n -= 1;
            if *n == 0 {
                self.tagged.remove(&(key.volume, version));
            }
        }
        Some(e)
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
    /// `at` sees it. Slices never written read as zeros (a clone's read
    /// through to its origin). The outer error is the engine's (a corrupt
    /// sector is never served); the inner one a refusal.
    pub fn read(
        &mut self,
        volume: u64,
        block: u64,
        offset: u64,
        buf: &mut [u8],
        at: ReadAt,
    ) -> Result<Result<(), Refusal>, EngineError> {
        self.check_ok()?;
        if let Err(r) = self.check_range(offset, buf.len() as u64) {
            return Ok(Err(r));
        }
        let view = match self.read_view(volume, at) {
            Ok(v) => v,
            Err(r) => return Ok(Err(r)),
        };
        for (key, first, from, n) in self.pieces(volume, block, offset, buf.len() as u64) {
            let out = &mut buf[from..from + n];
            match self.resolve(&key, &view).map(|(e, _)| e) {
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

    /// Injects a bug for the simulator to catch: a partial write to a
    /// slice a retained version shares is written in place instead of
    /// into a copy, so the snapshot changes under it.
    #[cfg(feature = "bug-injection")]
    pub fn inject_skip_cow(&mut self) {
        self.bug_skip_cow = true;
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
        for (&volume, tree) in &self.volumes {
            Record::Volume {
                volume,
                tree: tree.clone(),
            }
            .encode_into(out);
        }
        for (&volume, &epoch) in &self.epochs {
            Record::Epoch { volume, epoch }.encode_into(out);
        }
    }

    fn image_bytes(&self) -> u64 {
        // A map record is 45 bytes with its frame; versions are few.
        self.map.values().map(|v| v.len() as u64).sum::<u64>() * 45
            + self.volumes.len() as u64 * 512
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
        let mut lineages: BTreeMap<u64, Vec<Vec<Version>>> = BTreeMap::new();
        let keys: Vec<SliceKey> = self
            .map
            .range(from..)
            .take(slices + 1)
            .map(|(k, _)| *k)
            .collect();
        let done = keys.len() <= slices;
        for key in keys.iter().take(slices) {
            let lineages = lineages.entry(key.volume).or_insert_with(|| {
                self.volumes
                    .get(&key.volume)
                    .map_or_else(Vec::new, |t| t.live().map(|v| t.lineage(v)).collect())
            });
            let seen: BTreeSet<Version> = lineages
                .iter()
                .filter_map(|l| self.resolve_in(key, l))
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
        // The pass is over: versions nobody needs leave the trees.
        let mut pruned = Vec::new();
        for (&volume, tree) in &self.volumes {
            let mut t = tree.clone();
            if t.prune(|v| self.tagged.contains_key(&(volume, v))) > 0 {
                pruned.push((volume, t));
            }
        }
        for (volume, t) in pruned {
            self.set_volume(volume, t)?;
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
