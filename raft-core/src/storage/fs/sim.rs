//! [`SimFs`]: a deterministic in-memory disk that fails the way real ones
//! do, for running the shipped `local` stores inside the simulator.
//!
//! The model (what a crash keeps, how faults fail) is documented on
//! [`SimFs`].

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, ErrorKind};
use std::path::{Component, Path};
use std::sync::{Arc, Mutex, MutexGuard};

use rand_core::RngCore;

use super::{Fs, FsFile, Metadata, OpenMode};

/// A kind of operation, for fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsOp {
    /// `read`, `read_exact_at`.
    Read,
    /// A file's `write_all`, `set_len`.
    Write,
    /// A file's `sync_data`, `sync_all`, and `sync_dir`.
    Sync,
    /// `create_dir_all`, `read_dir`, `open`, `rename`, `remove_file`,
    /// `remove_dir_all`.
    Meta,
}

impl FsOp {
    fn slot(self) -> usize {
        match self {
            FsOp::Read => 0,
            FsOp::Write => 1,
            FsOp::Sync => 2,
            FsOp::Meta => 3,
        }
    }
}

/// When calls of one kind fail with EIO.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Fault {
    #[default]
    Never,
    /// Each call fails with this probability (0.0 to 1.0).
    Chance(f64),
    /// The Nth call (1-based) from when the fault was set fails, once.
    Nth(u64),
}

/// How a [`SimFs`] fails.
#[derive(Debug, Clone, PartialEq)]
pub struct SimFsConfig {
    /// Seeds the generator behind [`Fault::Chance`].
    pub seed: u64,
    pub read_eio: Fault,
    pub write_eio: Fault,
    pub sync_eio: Fault,
    pub meta_eio: Fault,
    /// Bytes the disk holds at most (`None`: unlimited).
    pub capacity: Option<u64>,
    /// A write past the capacity writes what fits before failing (instead
    /// of nothing).
    pub short_writes: bool,
    /// At a crash, the probability that a file keeps a random prefix of
    /// its unsynced writes.
    pub crash_keep: f64,
    /// At a crash, the probability that the first unsynced write a file
    /// loses is torn (keeps a random prefix of its bytes).
    pub crash_tear: f64,
}

impl Default for SimFsConfig {
    /// No faults, no capacity; crashes keep and tear unsynced writes half
    /// of the time each.
    fn default() -> SimFsConfig {
        SimFsConfig {
            seed: 0,
            read_eio: Fault::Never,
            write_eio: Fault::Never,
            sync_eio: Fault::Never,
            meta_eio: Fault::Never,
            capacity: None,
            short_writes: false,
            crash_keep: 0.5,
            crash_tear: 0.5,
        }
    }
}

impl SimFsConfig {
    fn fault(&self, op: FsOp) -> Fault {
        match op {
            FsOp::Read => self.read_eio,
            FsOp::Write => self.write_eio,
            FsOp::Sync => self.sync_eio,
            FsOp::Meta => self.meta_eio,
        }
    }
}

/// What a [`SimFs`] has done since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimFsStats {
    pub reads: u64,
    pub read_bytes: u64,
    pub writes: u64,
    pub written_bytes: u64,
    /// File syncs (`sync_data`, `sync_all`).
    pub file_syncs: u64,
    pub dir_syncs: u64,
    /// Whole-disk syncs (`sync_fs`).
    pub fs_syncs: u64,
    /// Directory operations, opens included.
    pub meta_ops: u64,
    /// Calls failed with an injected EIO.
    pub eio: u64,
    /// Calls failed for lack of space.
    pub enospc: u64,
    pub crashes: u64,
    /// Unsynced writes and length changes crashes dropped (torn ones
    /// included) or failed syncs left out of durability.
    pub writes_lost: u64,
    /// Unsynced writes crashes kept a part of.
    pub writes_torn: u64,
}

/// What one crash did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrashReport {
    /// Unsynced writes and length changes that reached the disk anyway.
    pub writes_kept: u64,
    /// Unsynced writes and length changes lost (torn ones included).
    pub writes_lost: u64,
    /// Writes of which a prefix reached the disk.
    pub writes_torn: u64,
    /// Directories whose unsynced changes were undone.
    pub dirs_reverted: u64,
}

type Ino = u64;
const ROOT: Ino = 0;

/// A change to a file not yet synced.
#[derive(Debug, Clone, Copy)]
enum Pending {
    /// `len` bytes at `offset`, kept in the journal from `start`.
    Write {
        offset: u64,
        start: usize,
        len: usize,
    },
    SetLen(u64),
}

#[derive(Debug, Clone, Default)]
struct FileNode {
    /// What reads see.
    data: Vec<u8>,
    /// What a crash keeps at least.
    durable: Vec<u8>,
    /// Changes since the last sync, in order.
    pending: Vec<Pending>,
    /// The bytes of the pending writes.
    journal: Vec<u8>,
    /// Open handles (a removed file lives on while one is open).
    handles: u32,
}

impl FileNode {
    /// Makes the pending changes durable.
    fn sync(&mut self) {
        for p in &self.pending {
            apply(&mut self.durable, &self.journal, *p, usize::MAX);
        }
        self.pending.clear();
        self.journal.clear();
    }
}

/// Applies `p` to `v`, at most `limit` bytes of it if it is a write.
fn apply(v: &mut Vec<u8>, journal: &[u8], p: Pending, limit: usize) {
    match p {
        Pending::Write { offset, start, len } => {
            let bytes = &journal[start..start + len.min(limit)];
            write_into(v, offset as usize, bytes);
        }
        Pending::SetLen(n) => v.resize(n as usize, 0),
    }
}

/// Writes `bytes` at `offset` of `v`, filling any gap with zeros.
fn write_into(v: &mut Vec<u8>, offset: usize, bytes: &[u8]) {
    if offset > v.len() {
        v.resize(offset, 0);
    }
    let overlap = bytes.len().min(v.len() - offset);
    v[offset..offset + overlap].copy_from_slice(&bytes[..overlap]);
    v.extend_from_slice(&bytes[overlap..]);
}

#[derive(Debug, Clone, Default)]
struct DirNode {
    /// What lookups see.
    entries: BTreeMap<String, Ino>,
    /// What a crash keeps.
    durable: BTreeMap<String, Ino>,
    /// Whether `entries` differs from `durable`.
    dirty: bool,
}

#[derive(Debug, Clone)]
enum Node {
    File(FileNode),
    Dir(DirNode),
}

/// splitmix64: small, fast and good enough for fault decisions.
#[derive(Debug, Clone)]
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl RngCore for SplitMix {
    fn next_u32(&mut self) -> u32 {
        (self.next() >> 32) as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.next()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn chance<R: RngCore + ?Sized>(rng: &mut R, p: f64) -> bool {
    p > 0.0 && ((rng.next_u64() >> 11) as f64) * (1.0 / (1u64 << 53) as f64) < p
}

/// A number in `0..=n`.
fn upto<R: RngCore + ?Sized>(rng: &mut R, n: u64) -> u64 {
    rng.next_u64() % (n + 1)
}

fn eio() -> io::Error {
    io::Error::other("input/output error (simulated)")
}

fn enospc() -> io::Error {
    io::Error::new(
        ErrorKind::StorageFull,
        "no space left on device (simulated)",
    )
}

fn powered_off() -> io::Error {
    io::Error::other("the simulated machine has lost power")
}

fn too_large() -> io::Error {
    io::Error::new(ErrorKind::FileTooLarge, "file too large (simulated)")
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidInput, why.to_string())
}

/// Largest file a `SimFs` holds, so a wild offset fails instead of
/// allocating.
const MAX_FILE_BYTES: u64 = 1 << 40;

#[derive(Debug, Clone)]
struct State {
    nodes: BTreeMap<Ino, Node>,
    next_ino: Ino,
    /// Bumped by each crash; handles from an earlier epoch are dead.
    epoch: u64,
    config: SimFsConfig,
    rng: SplitMix,
    /// Calls of each kind since its fault was set (for [`Fault::Nth`]).
    since_set: [u64; 4],
    /// Changes left before the power goes.
    power_cut_in: Option<u64>,
    powered_off: bool,
    /// Bytes held: the sum of every file's length.
    used: u64,
    /// Whether some inode may have become unreachable.
    maybe_garbage: bool,
    stats: SimFsStats,
}

/// A deterministic in-memory file system with crashes and faults.
///
/// # The model
///
/// One `SimFs` is one machine's disk. Clones share it (an `Arc<Mutex>`), so
/// it outlives the stores that were opened on it: drop them, call
/// [`SimFs::crash`], open them again.
///
/// Files are inodes; directories map names to inodes. Each file holds what
/// reads see and what a crash keeps (its *durable* contents); between the
/// two lie its *unsynced* writes and length changes, in order.
/// [`super::FsFile::sync_data`] and `sync_all` make them durable (the two
/// are the same here: a file's length is part of its data).
///
/// Directory entries follow the conservative reading of POSIX (and of ext4
/// with `data=ordered` when one assumes nothing about journal commits):
/// a creation, rename or removal in a directory is durable only once that
/// directory is synced ([`super::Fs::sync_dir`]). A file fsynced under a
/// name whose entry was never synced is lost at a crash; a removal a crash
/// undoes brings the file back with its durable contents. A rename across
/// directories is two changes, each made durable by its own directory's
/// sync. (Real ext4 commits all metadata in one journal and would keep
/// more; a store correct here is correct there.)
///
/// # A crash
///
/// [`SimFs::crash`] is a power cut: every directory goes back to its
/// durable entries, and every file to its durable contents, except that,
/// chosen by the generator passed in:
/// - with probability [`SimFsConfig::crash_keep`] a file keeps a random
///   prefix of its sequence of unsynced writes (the disk wrote some of the
///   queue, in order), and
/// - with probability [`SimFsConfig::crash_tear`] the first write it did
///   not keep is torn: a random prefix of its bytes reached the disk.
///
/// Files no directory reaches any more are dropped. Handles opened before
/// the crash fail from then on.
///
/// [`SimFs::cut_power_after`] stops the machine in the middle of an
/// operation: after that many more changes (writes, length changes, syncs,
/// creations, renames, removals) every call fails, until the crash.
///
/// # Faults
///
/// Per kind of operation ([`FsOp`]: reads, writes, syncs, directory
/// operations) a [`Fault`] makes calls fail with an EIO error (kind
/// `Other`, "input/output error (simulated)"): never, with a probability
/// drawn from the disk's own generator (seeded by [`SimFsConfig::seed`]),
/// or exactly the Nth call counted from when the fault was set.
/// - A failed read or write changes nothing.
/// - A failed sync drops the file's unsynced writes from durability while
///   reads still see them, as Linux does after a writeback error (a later
///   sync succeeds and the writes are still lost at the next crash). A
///   store must therefore never retry a failed sync and go on; ours stop.
/// - A failed directory sync leaves the directory's changes unsynced.
/// - `metadata` (and so [`super::Fs::exists`]) never fails, except after a
///   power cut.
///
/// With [`SimFsConfig::capacity`] set, a write or extension that would take
/// the bytes held (the lengths of all files, as reads see them) past it
/// fails with `StorageFull` ("no space left on device"). It writes nothing,
/// or with [`SimFsConfig::short_writes`] whatever fits first (a short
/// write, which `write_all` reports as an error all the same).
///
/// # Speed
///
/// The simulator runs millions of steps a second, so a write is an append
/// to two `Vec`s (the contents and the unsynced journal) and a sync replays
/// the journal onto the durable contents; paths are looked up one
/// component at a time in `BTreeMap`s, and only when opening, reading or
/// changing directories, never on a handle's write or sync.
#[derive(Debug, Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl Default for SimFs {
    fn default() -> SimFs {
        SimFs::new(SimFsConfig::default())
    }
}

impl SimFs {
    /// An empty disk (the root directory `/` alone) failing as `config`
    /// says. Relative paths are taken from the root.
    pub fn new(config: SimFsConfig) -> SimFs {
        let mut nodes = BTreeMap::new();
        nodes.insert(ROOT, Node::Dir(DirNode::default()));
        SimFs {
            state: Arc::new(Mutex::new(State {
                nodes,
                next_ino: ROOT + 1,
                epoch: 0,
                rng: SplitMix(config.seed),
                config,
                since_set: [0; 4],
                power_cut_in: None,
                powered_off: false,
                used: 0,
                maybe_garbage: false,
                stats: SimFsStats::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a consistent state: every
        // change is made after its checks.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the configuration; the counts behind [`Fault::Nth`] start
    /// again from zero.
    pub fn configure(&self, f: impl FnOnce(&mut SimFsConfig)) {
        let mut st = self.lock();
        f(&mut st.config);
        st.since_set = [0; 4];
    }

    /// The current configuration.
    pub fn config(&self) -> SimFsConfig {
        self.lock().config.clone()
    }

    /// What the disk has done so far.
    pub fn stats(&self) -> SimFsStats {
        self.lock().stats
    }

    /// Bytes held (what [`SimFsConfig::capacity`] is compared with).
    pub fn used_bytes(&self) -> u64 {
        self.lock().used
    }

    /// The power goes after `changes` more changes: the next one and every
    /// call after it fail, until [`SimFs::crash`].
    pub fn cut_power_after(&self, changes: u64) {
        self.lock().power_cut_in = Some(changes);
    }

    /// Calls off a [`SimFs::cut_power_after`] that has not taken effect.
    pub fn cancel_power_cut(&self) {
        self.lock().power_cut_in = None;
    }

    /// Whether a [`SimFs::cut_power_after`] has taken effect.
    pub fn is_powered_off(&self) -> bool {
        self.lock().powered_off
    }

    /// A power cut and restart: unsynced directory changes are undone and
    /// unsynced writes lost, except what `rng` lets survive (see
    /// [`SimFs`]). Open handles die; the power is back.
    pub fn crash<R: RngCore + ?Sized>(&self, rng: &mut R) -> CrashReport {
        self.lock().crash(rng)
    }

    /// [`SimFs::crash`] with a generator seeded by `seed`.
    pub fn crash_seeded(&self, seed: u64) -> CrashReport {
        self.crash(&mut SplitMix(seed))
    }

    /// An independent copy of the disk as it is now: contents, unsynced
    /// writes, configuration, power and counters, but no open handles (a
    /// removed file kept alive by one is gone from the copy). For asking
    /// what an operation would do without doing it.
    pub fn fork(&self) -> SimFs {
        let mut copy = self.lock().clone();
        for node in copy.nodes.values_mut() {
            if let Node::File(f) = node {
                f.handles = 0;
            }
        }
        copy.collect_garbage();
        SimFs {
            state: Arc::new(Mutex::new(copy)),
        }
    }

    /// Bit rot: flips bit `bit % 8` of the byte at `offset` of the file at
    /// `path`, both in what reads see and in what is durable (the medium
    /// changed under the file). A write still pending over that byte
    /// overwrites it as it would on a disk. Returns whether the file
    /// holds that byte.
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) -> bool {
        let mut st = self.lock();
        let Ok(ino) = st.resolve(path, false) else {
            return false;
        };
        let Some(Node::File(f)) = st.nodes.get_mut(&ino) else {
            return false;
        };
        let Ok(at) = usize::try_from(offset) else {
            return false;
        };
        let mask = 1u8 << (bit % 8);
        let Some(b) = f.data.get_mut(at) else {
            return false;
        };
        *b ^= mask;
        if let Some(d) = f.durable.get_mut(at) {
            *d ^= mask;
        }
        true
    }

    /// The durable contents of the file at `path` as a crash with nothing
    /// kept would leave them (for tests), `None` if no durable entry
    /// reaches it.
    pub fn durable_contents(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.lock();
        let ino = st.resolve(path, true).ok()?;
        match st.nodes.get(&ino)? {
            Node::File(f) => Some(f.durable.clone()),
            Node::Dir(_) => None,
        }
    }
}

impl State {
    /// Counts a call and decides whether it fails: after a power cut,
    /// when it is the change the cut falls on, or by its fault.
    fn gate(&mut self, op: FsOp, changes: bool) -> io::Result<()> {
        if self.powered_off {
            return Err(powered_off());
        }
        if changes {
            if let Some(n) = self.power_cut_in.as_mut() {
                if *n == 0 {
                    self.powered_off = true;
                    return Err(powered_off());
                }
                *n -= 1;
            }
        }
        let slot = op.slot();
        self.since_set[slot] += 1;
        let fail = match self.config.fault(op) {
            Fault::Never => false,
            Fault::Chance(p) => chance(&mut self.rng, p),
            Fault::Nth(n) => self.since_set[slot] == n,
        };
        if fail {
            self.stats.eio += 1;
            return Err(eio());
        }
        Ok(())
    }

    /// The inode at `path`, through the durable entries if `durable`.
    fn resolve(&self, path: &Path, durable: bool) -> io::Result<Ino> {
        let mut ino = ROOT;
        for c in path.components() {
            let name = match c {
                Component::Prefix(_) | Component::RootDir | Component::CurDir => continue,
                Component::ParentDir => return Err(invalid("`..` in a simulated path")),
                Component::Normal(n) => n.to_str().ok_or_else(|| invalid("non-UTF-8 path"))?,
            };
            let dir = match self.nodes.get(&ino) {
                Some(Node::Dir(d)) => d,
                _ => return Err(ErrorKind::NotADirectory.into()),
            };
            let entries = if durable { &dir.durable } else { &dir.entries };
            ino = *entries.get(name).ok_or(ErrorKind::NotFound)?;
        }
        Ok(ino)
    }

    /// The directory holding `path`, and the name of `path` in it.
    fn resolve_parent<'p>(&self, path: &'p Path) -> io::Result<(Ino, &'p str)> {
        let name = match path.components().next_back() {
            Some(Component::Normal(n)) => n.to_str().ok_or_else(|| invalid("non-UTF-8 path"))?,
            _ => return Err(invalid("the path names no entry")),
        };
        let parent = path.parent().unwrap_or(Path::new(""));
        let dir = self.resolve(parent, false)?;
        match self.nodes.get(&dir) {
            Some(Node::Dir(_)) => Ok((dir, name)),
            _ => Err(ErrorKind::NotADirectory.into()),
        }
    }

    fn dir_mut(&mut self, ino: Ino) -> io::Result<&mut DirNode> {
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir(d)) => Ok(d),
            Some(Node::File(_)) => Err(ErrorKind::NotADirectory.into()),
            None => Err(ErrorKind::NotFound.into()),
        }
    }

    fn file_mut(&mut self, ino: Ino) -> io::Result<&mut FileNode> {
        match self.nodes.get_mut(&ino) {
            Some(Node::File(f)) => Ok(f),
            Some(Node::Dir(_)) => Err(ErrorKind::IsADirectory.into()),
            None => Err(ErrorKind::NotFound.into()),
        }
    }

    fn new_node(&mut self, node: Node) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        ino
    }

    /// Sets `name` in `dir` to `ino` (not durable until `dir` is synced).
    fn link(&mut self, dir: Ino, name: &str, ino: Ino) -> io::Result<()> {
        let d = self.dir_mut(dir)?;
        d.dirty = true;
        if d.entries.insert(name.to_string(), ino).is_some() {
            self.maybe_garbage = true;
        }
        Ok(())
    }

    fn unlink(&mut self, dir: Ino, name: &str) -> io::Result<()> {
        let d = self.dir_mut(dir)?;
        d.entries.remove(name).ok_or(ErrorKind::NotFound)?;
        d.dirty = true;
        self.maybe_garbage = true;
        Ok(())
    }

    /// Writes `buf` at `offset` of file `ino`, within the capacity.
    /// Returns how many bytes were written, which only a full disk with
    /// short writes makes more than zero on an error.
    fn write(&mut self, ino: Ino, offset: u64, buf: &[u8]) -> (usize, io::Result<()>) {
        let Some(end) = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= MAX_FILE_BYTES)
        else {
            return (0, Err(too_large()));
        };
        let (used, capacity, short) = (self.used, self.config.capacity, self.config.short_writes);
        let f = match self.file_mut(ino) {
            Ok(f) => f,
            Err(e) => return (0, Err(e)),
        };
        let old_len = f.data.len() as u64;
        let mut n = buf.len();
        let mut full = false;
        if let Some(cap) = capacity {
            let room = cap.saturating_sub(used);
            if end.saturating_sub(old_len) > room {
                full = true;
                // Overwritten bytes need no room; new ones do.
                let fits = old_len.saturating_sub(offset).saturating_add(room);
                n = if short { n.min(fits as usize) } else { 0 };
            }
        }
        if n > 0 {
            let start = f.journal.len();
            f.journal.extend_from_slice(&buf[..n]);
            f.pending.push(Pending::Write {
                offset,
                start,
                len: n,
            });
            write_into(&mut f.data, offset as usize, &buf[..n]);
        }
        let new_len = f.data.len() as u64;
        self.used = self.used - old_len + new_len;
        self.stats.writes += 1;
        self.stats.written_bytes += n as u64;
        if full {
            self.stats.enospc += 1;
            return (n, Err(enospc()));
        }
        (n, Ok(()))
    }

    /// Fills `buf` from file `ino` at `offset` (what any handle wrote,
    /// synced or not); `UnexpectedEof` past its end.
    fn read_range(&mut self, ino: Ino, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let data = &self.file_mut(ino)?.data;
        let from = usize::try_from(offset).unwrap_or(usize::MAX);
        let src = from
            .checked_add(buf.len())
            .and_then(|end| data.get(from..end))
            .ok_or(ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        self.stats.reads += 1;
        self.stats.read_bytes += buf.len() as u64;
        Ok(())
    }

    fn set_len(&mut self, ino: Ino, len: u64) -> io::Result<()> {
        if len > MAX_FILE_BYTES {
            return Err(too_large());
        }
        let old_len = self.file_mut(ino)?.data.len() as u64;
        if let Some(cap) = self.config.capacity {
            if len > old_len && len - old_len > cap.saturating_sub(self.used) {
                self.stats.enospc += 1;
                return Err(enospc());
            }
        }
        let f = self.file_mut(ino)?;
        f.data.resize(len as usize, 0);
        f.pending.push(Pending::SetLen(len));
        self.used = self.used - old_len + len;
        self.stats.writes += 1;
        Ok(())
    }

    fn sync_file(&mut self, ino: Ino) -> io::Result<()> {
        let gate = self.gate(FsOp::Sync, true);
        if let Err(e) = gate {
            if !self.powered_off {
                // A writeback error: the pages are marked clean, the
                // writes never reach the disk.
                let f = self.file_mut(ino)?;
                let lost = f.pending.len() as u64;
                f.pending.clear();
                f.journal.clear();
                self.stats.writes_lost += lost;
            }
            return Err(e);
        }
        self.file_mut(ino)?.sync();
        self.stats.file_syncs += 1;
        Ok(())
    }

    /// Drops the inodes no entry (current or durable) and no handle reaches.
    fn collect_garbage(&mut self) {
        self.maybe_garbage = false;
        let mut live = BTreeSet::new();
        let mut stack = vec![ROOT];
        while let Some(ino) = stack.pop() {
            if !live.insert(ino) {
                continue;
            }
            if let Some(Node::Dir(d)) = self.nodes.get(&ino) {
                stack.extend(d.entries.values().chain(d.durable.values()));
            }
        }
        let mut freed = 0;
        self.nodes.retain(|ino, n| {
            let keep = live.contains(ino) || matches!(n, Node::File(f) if f.handles > 0);
            if !keep {
                if let Node::File(f) = n {
                    freed += f.data.len() as u64;
                }
            }
            keep
        });
        self.used -= freed;
    }

    fn crash<R: RngCore + ?Sized>(&mut self, rng: &mut R) -> CrashReport {
        let mut report = CrashReport::default();
        let (keep_p, tear_p) = (self.config.crash_keep, self.config.crash_tear);
        for node in self.nodes.values_mut() {
            match node {
                Node::Dir(d) => {
                    if d.dirty {
                        d.entries.clone_from(&d.durable);
                        d.dirty = false;
                        report.dirs_reverted += 1;
                    }
                }
                Node::File(f) => {
                    f.handles = 0;
                    let n = f.pending.len();
                    let keep = if n > 0 && chance(rng, keep_p) {
                        upto(rng, n as u64) as usize
                    } else {
                        0
                    };
                    for p in &f.pending[..keep] {
                        apply(&mut f.durable, &f.journal, *p, usize::MAX);
                    }
                    if let Some(&p @ Pending::Write { len, .. }) = f.pending.get(keep) {
                        if chance(rng, tear_p) {
                            let part = upto(rng, len.saturating_sub(1) as u64) as usize;
                            apply(&mut f.durable, &f.journal, p, part);
                            report.writes_torn += 1;
                        }
                    }
                    report.writes_kept += keep as u64;
                    report.writes_lost += (n - keep) as u64;
                    f.pending.clear();
                    f.journal.clear();
                    f.data.clone_from(&f.durable);
                }
            }
        }
        self.epoch += 1;
        self.powered_off = false;
        self.power_cut_in = None;
        self.collect_garbage();
        self.used = self
            .nodes
            .values()
            .map(|n| match n {
                Node::File(f) => f.data.len() as u64,
                Node::Dir(_) => 0,
            })
            .sum();
        self.stats.crashes += 1;
        self.stats.writes_lost += report.writes_lost;
        self.stats.writes_torn += report.writes_torn;
        report
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.gate(FsOp::Meta, true)?;
        st.stats.meta_ops += 1;
        let mut ino = ROOT;
        for c in dir.components() {
            let name = match c {
                Component::Prefix(_) | Component::RootDir | Component::CurDir => continue,
                Component::ParentDir => return Err(invalid("`..` in a simulated path")),
                Component::Normal(n) => n.to_str().ok_or_else(|| invalid("non-UTF-8 path"))?,
            };
            let next = st.dir_mut(ino)?.entries.get(name).copied();
            ino = match next {
                Some(child) => child,
                None => {
                    let child = st.new_node(Node::Dir(DirNode::default()));
                    st.link(ino, name, child)?;
                    child
                }
            };
        }
        st.dir_mut(ino).map(drop)
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut st = self.lock();
        st.gate(FsOp::Meta, false)?;
        st.stats.meta_ops += 1;
        let ino = st.resolve(dir, false)?;
        Ok(st.dir_mut(ino)?.entries.keys().cloned().collect())
    }

    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        let st = self.lock();
        if st.powered_off {
            return Err(powered_off());
        }
        let ino = st.resolve(path, false)?;
        Ok(match st.nodes.get(&ino) {
            Some(Node::File(f)) => Metadata {
                len: f.data.len() as u64,
                is_dir: false,
            },
            Some(Node::Dir(_)) => Metadata {
                len: 0,
                is_dir: true,
            },
            None => return Err(ErrorKind::NotFound.into()),
        })
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FsFile>> {
        let mut st = self.lock();
        st.gate(FsOp::Meta, mode == OpenMode::Create)?;
        st.stats.meta_ops += 1;
        let ino = match mode {
            OpenMode::Create => {
                let (dir, name) = st.resolve_parent(path)?;
                match st.dir_mut(dir)?.entries.get(name).copied() {
                    Some(ino) => {
                        st.set_len(ino, 0)?;
                        ino
                    }
                    None => {
                        let ino = st.new_node(Node::File(FileNode::default()));
                        st.link(dir, name, ino)?;
                        ino
                    }
                }
            }
            OpenMode::Write | OpenMode::Append => {
                let ino = st.resolve(path, false)?;
                st.file_mut(ino)?;
                ino
            }
        };
        st.file_mut(ino)?.handles += 1;
        Ok(Box::new(SimFile {
            fs: self.clone(),
            ino,
            epoch: st.epoch,
            pos: 0,
            append: mode == OpenMode::Append,
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut st = self.lock();
        st.gate(FsOp::Read, false)?;
        let ino = st.resolve(path, false)?;
        let data = st.file_mut(ino)?.data.clone();
        st.stats.reads += 1;
        st.stats.read_bytes += data.len() as u64;
        Ok(data)
    }

    fn read_exact_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut st = self.lock();
        st.gate(FsOp::Read, false)?;
        let ino = st.resolve(path, false)?;
        st.read_range(ino, offset, buf)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.gate(FsOp::Meta, true)?;
        st.stats.meta_ops += 1;
        let (from_dir, from_name) = st.resolve_parent(from)?;
        let ino = *st
            .dir_mut(from_dir)?
            .entries
            .get(from_name)
            .ok_or(ErrorKind::NotFound)?;
        let (to_dir, to_name) = st.resolve_parent(to)?;
        let is_dir = matches!(st.nodes.get(&ino), Some(Node::Dir(_)));
        if is_dir && to.starts_with(from) {
            return Err(invalid("cannot move a directory into itself"));
        }
        if let Some(old) = st.dir_mut(to_dir)?.entries.get(to_name).copied() {
            if old == ino {
                return Ok(());
            }
            match (st.nodes.get(&old), is_dir) {
                (Some(Node::Dir(d)), true) if d.entries.is_empty() => {}
                (Some(Node::Dir(_)), true) => return Err(ErrorKind::DirectoryNotEmpty.into()),
                (Some(Node::Dir(_)), false) => return Err(ErrorKind::IsADirectory.into()),
                (_, true) => return Err(ErrorKind::NotADirectory.into()),
                (_, false) => {}
            }
        }
        st.unlink(from_dir, from_name)?;
        st.link(to_dir, to_name, ino)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.gate(FsOp::Meta, true)?;
        st.stats.meta_ops += 1;
        let (dir, name) = st.resolve_parent(path)?;
        let ino = *st
            .dir_mut(dir)?
            .entries
            .get(name)
            .ok_or(ErrorKind::NotFound)?;
        st.file_mut(ino)?;
        st.unlink(dir, name)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.gate(FsOp::Meta, true)?;
        st.stats.meta_ops += 1;
        let (dir, name) = st.resolve_parent(path)?;
        let top = *st
            .dir_mut(dir)?
            .entries
            .get(name)
            .ok_or(ErrorKind::NotFound)?;
        st.dir_mut(top)?;
        // Every entry below goes too, each removal in its own directory.
        let mut stack = vec![top];
        while let Some(ino) = stack.pop() {
            if let Some(Node::Dir(d)) = st.nodes.get_mut(&ino) {
                if !d.entries.is_empty() {
                    stack.extend(d.entries.values());
                    d.entries.clear();
                    d.dirty = true;
                }
            }
        }
        st.unlink(dir, name)
    }

    fn sync_fs(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        if let Err(e) = st.gate(FsOp::Sync, true) {
            if !st.powered_off {
                // A writeback error: as for one file's sync, the pages are
                // marked clean and what they held never reaches the disk,
                // here for every file with unsynced writes.
                let mut lost = 0;
                for node in st.nodes.values_mut() {
                    if let Node::File(f) = node {
                        lost += f.pending.len() as u64;
                        f.pending.clear();
                        f.journal.clear();
                    }
                }
                st.stats.writes_lost += lost;
            }
            return Err(e);
        }
        st.resolve(dir, false)?;
        // One flush of the whole disk: every file's pending writes and
        // every directory's entries become durable.
        for node in st.nodes.values_mut() {
            match node {
                Node::File(f) => f.sync(),
                Node::Dir(d) => {
                    if d.dirty {
                        d.durable.clone_from(&d.entries);
                        d.dirty = false;
                    }
                }
            }
        }
        st.stats.fs_syncs += 1;
        if st.maybe_garbage {
            st.collect_garbage();
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.gate(FsOp::Sync, true)?;
        let ino = st.resolve(dir, false)?;
        let d = st.dir_mut(ino)?;
        if d.dirty {
            d.durable.clone_from(&d.entries);
            d.dirty = false;
        }
        st.stats.dir_syncs += 1;
        if st.maybe_garbage {
            st.collect_garbage();
        }
        Ok(())
    }
}

/// An open file of a [`SimFs`].
#[derive(Debug)]
struct SimFile {
    fs: SimFs,
    ino: Ino,
    /// The crash epoch the handle was opened in.
    epoch: u64,
    pos: u64,
    append: bool,
}

/// The disk of a handle opened in `epoch`, if the handle is still alive.
fn live(fs: &SimFs, epoch: u64) -> io::Result<MutexGuard<'_, State>> {
    let st = fs.lock();
    if st.epoch != epoch {
        return Err(io::Error::other("a file handle from before a crash"));
    }
    Ok(st)
}

impl FsFile for SimFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut st = live(&self.fs, self.epoch)?;
        st.gate(FsOp::Write, true)?;
        if self.append {
            self.pos = st.file_mut(self.ino)?.data.len() as u64;
        }
        let (n, r) = st.write(self.ino, self.pos, buf);
        self.pos += n as u64;
        r
    }

    fn seek(&mut self, pos: u64) -> io::Result<()> {
        drop(live(&self.fs, self.epoch)?);
        self.pos = pos;
        Ok(())
    }

    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut st = live(&self.fs, self.epoch)?;
        st.gate(FsOp::Read, false)?;
        let ino = self.ino;
        st.read_range(ino, offset, buf)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let mut st = live(&self.fs, self.epoch)?;
        st.gate(FsOp::Write, true)?;
        st.set_len(self.ino, len)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        live(&self.fs, self.epoch)?.sync_file(self.ino)
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.sync_data()
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut st = self.fs.lock();
        if st.epoch != self.epoch {
            return;
        }
        if let Ok(f) = st.file_mut(self.ino) {
            f.handles = f.handles.saturating_sub(1);
            if f.handles == 0 {
                st.maybe_garbage = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs_with(keep: f64, tear: f64) -> SimFs {
        SimFs::new(SimFsConfig {
            crash_keep: keep,
            crash_tear: tear,
            ..SimFsConfig::default()
        })
    }

    fn p(s: &str) -> &Path {
        Path::new(s)
    }

    /// `/d/f` holding `synced` durably (entries included) and `unsynced`
    /// after it, not synced; returns the open handle.
    fn file(fs: &SimFs, synced: &[u8], unsynced: &[&[u8]]) -> Box<dyn FsFile> {
        fs.create_dir_all(p("/d")).unwrap();
        fs.sync_dir(p("/")).unwrap();
        let mut f = fs.open(p("/d/f"), OpenMode::Create).unwrap();
        f.write_all(synced).unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(p("/d")).unwrap();
        for w in unsynced {
            f.write_all(w).unwrap();
        }
        f
    }

    #[test]
    fn a_crash_keeps_synced_writes_and_loses_unsynced_ones() {
        let fs = fs_with(0.0, 0.0);
        let f = file(&fs, b"synced", &[b"-lost"]);
        assert_eq!(fs.read(p("/d/f")).unwrap(), b"synced-lost");
        drop(f);
        let r = fs.crash_seeded(7);
        assert_eq!(r.writes_lost, 1);
        assert_eq!(fs.read(p("/d/f")).unwrap(), b"synced");
        assert_eq!(fs.used_bytes(), 6);
    }

    #[test]
    fn directory_changes_are_durable_only_after_the_directory_sync() {
        let fs = fs_with(0.0, 0.0);
        drop(file(&fs, b"x", &[]));
        // A new file, fsynced, but its entry not: gone after a crash.
        let mut g = fs.open(p("/d/g"), OpenMode::Create).unwrap();
        g.write_all(b"g").unwrap();
        g.sync_all().unwrap();
        drop(g);
        // A rename and a removal, unsynced: undone.
        fs.rename(p("/d/f"), p("/d/h")).unwrap();
        fs.create_dir_all(p("/d/sub/deeper")).unwrap();
        assert_eq!(fs.read_dir(p("/d")).unwrap(), ["g", "h", "sub"]);
        fs.crash_seeded(1);
        assert_eq!(fs.read_dir(p("/d")).unwrap(), ["f"]);
        assert_eq!(fs.read(p("/d/f")).unwrap(), b"x");
        fs.remove_file(p("/d/f")).unwrap();
        assert!(!fs.exists(p("/d/f")));
        fs.crash_seeded(2);
        assert_eq!(fs.read(p("/d/f")).unwrap(), b"x");
        // Synced, they stay.
        fs.rename(p("/d/f"), p("/d/h")).unwrap();
        fs.sync_dir(p("/d")).unwrap();
        fs.crash_seeded(3);
        assert_eq!(fs.read_dir(p("/d")).unwrap(), ["h"]);
        // A removed directory comes back whole until its parent is synced.
        fs.remove_dir_all(p("/d")).unwrap();
        assert!(!fs.exists(p("/d/h")));
        fs.crash_seeded(4);
        assert_eq!(fs.read(p("/d/h")).unwrap(), b"x");
        fs.remove_dir_all(p("/d")).unwrap();
        fs.sync_dir(p("/")).unwrap();
        fs.crash_seeded(5);
        assert!(!fs.exists(p("/d")));
        assert_eq!(fs.used_bytes(), 0);
        assert_eq!(fs.lock().nodes.len(), 1, "only the root is left");
    }

    #[test]
    fn a_crash_may_keep_a_prefix_of_the_unsynced_writes_and_tear_the_next() {
        let writes: [&[u8]; 3] = [b"aaaa", b"bbbb", b"cccc"];
        let mut kept = BTreeSet::new();
        let mut torn = 0;
        for seed in 0..200 {
            let fs = fs_with(0.5, 0.5);
            drop(file(&fs, b"s", &writes));
            let r = fs.crash_seeded(seed);
            let got = fs.read(p("/d/f")).unwrap();
            let all = b"saaaabbbbcccc";
            assert!(all.starts_with(&got), "{seed}: {got:?}");
            assert_eq!(r.writes_kept + r.writes_lost, 3);
            // Whole writes kept, plus a strict part of the next if torn.
            let whole = 1 + 4 * r.writes_kept as usize;
            assert!(got.len() >= whole && got.len() < whole + 4, "{seed}");
            if r.writes_torn == 0 {
                assert_eq!(got.len(), whole, "{seed}");
            } else {
                torn += 1;
            }
            kept.insert(got.len());
        }
        assert!(torn > 20, "tears happen: {torn}");
        assert!(kept.len() > 6, "many outcomes: {kept:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_crash() {
        let run = |seed| {
            let fs = SimFs::default();
            drop(file(&fs, b"s", &[b"1234567", b"89", b"abcdef"]));
            fs.crash_seeded(seed);
            fs.read(p("/d/f")).unwrap()
        };
        for seed in 0..20 {
            assert_eq!(run(seed), run(seed));
        }
    }

    #[test]
    fn the_nth_sync_fails_and_its_writes_never_become_durable() {
        let fs = fs_with(0.0, 0.0);
        let mut f = file(&fs, b"s", &[b"-lost"]);
        fs.configure(|c| c.sync_eio = Fault::Nth(2));
        f.sync_data().unwrap();
        f.write_all(b"-also").unwrap();
        let e = f.sync_data().unwrap_err();
        assert!(e.to_string().contains("input/output error"), "{e}");
        // A later sync succeeds, as on Linux, but the writes are gone.
        f.sync_data().unwrap();
        assert_eq!(fs.read(p("/d/f")).unwrap(), b"s-lost-also");
        drop(f);
        fs.crash_seeded(1);
        assert_eq!(fs.read(p("/d/f")).unwrap(), b"s-lost");
        assert_eq!(fs.stats().eio, 1);
    }

    #[test]
    fn faults_by_chance_fail_about_that_often() {
        let fs = SimFs::new(SimFsConfig {
            seed: 3,
            read_eio: Fault::Chance(0.25),
            ..SimFsConfig::default()
        });
        drop(file(&fs, b"data", &[]));
        let failed = (0..4000).filter(|_| fs.read(p("/d/f")).is_err()).count();
        assert!((800..1200).contains(&failed), "{failed}");
        let mut buf = [0u8; 2];
        fs.configure(|c| c.read_eio = Fault::Never);
        fs.read_exact_at(p("/d/f"), 1, &mut buf).unwrap();
        assert_eq!(&buf, b"at");
        let e = fs.read_exact_at(p("/d/f"), 3, &mut buf).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_full_disk_refuses_writes_whole_or_writes_what_fits() {
        let fs = SimFs::new(SimFsConfig {
            capacity: Some(10),
            ..SimFsConfig::default()
        });
        let mut f = file(&fs, b"12345678", &[]);
        let e = f.write_all(b"abc").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::StorageFull);
        assert_eq!(fs.read(p("/d/f")).unwrap(), b"12345678");
        // Overwriting needs no room.
        f.seek(0).unwrap();
        f.write_all(b"AB").unwrap();
        fs.configure(|c| c.short_writes = true);
        f.seek(8).unwrap();
        let e = f.write_all(b"abc").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::StorageFull);
        assert_eq!(fs.read(p("/d/f")).unwrap(), b"AB345678ab");
        assert_eq!(fs.used_bytes(), 10);
        assert!(f.set_len(11).is_err());
        f.set_len(4).unwrap();
        f.seek(4).unwrap();
        f.write_all(b"xyz").unwrap();
        assert_eq!(fs.read(p("/d/f")).unwrap(), b"AB34xyz");
        assert_eq!(fs.stats().enospc, 3);
    }

    #[test]
    fn a_power_cut_stops_every_call_until_the_crash() {
        let fs = fs_with(0.0, 0.0);
        let mut f = file(&fs, b"s", &[]);
        fs.cut_power_after(2);
        f.write_all(b"1").unwrap();
        f.write_all(b"2").unwrap();
        assert!(f.write_all(b"3").is_err());
        assert!(fs.is_powered_off());
        assert!(fs.read(p("/d/f")).is_err());
        assert!(f.sync_data().is_err());
        fs.crash_seeded(0);
        assert!(!fs.is_powered_off());
        assert_eq!(fs.read(p("/d/f")).unwrap(), b"s");
        // Handles from before the crash are dead.
        let e = f.write_all(b"4").unwrap_err();
        assert!(e.to_string().contains("before a crash"), "{e}");
        drop(f);
        let mut g = fs.open(p("/d/f"), OpenMode::Append).unwrap();
        g.write_all(b"5").unwrap();
        assert_eq!(fs.read(p("/d/f")).unwrap(), b"s5");
    }

    #[test]
    fn renames_replace_files_and_refuse_what_posix_refuses() {
        let fs = SimFs::default();
        fs.create_dir_all(p("/x/y")).unwrap();
        drop(fs.open(p("/x/a"), OpenMode::Create).unwrap());
        let mut b = fs.open(p("/x/b"), OpenMode::Create).unwrap();
        b.write_all(b"b").unwrap();
        fs.rename(p("/x/b"), p("/x/a")).unwrap();
        assert_eq!(fs.read(p("/x/a")).unwrap(), b"b");
        // The handle follows the file, not the name.
        b.write_all(b"!").unwrap();
        assert_eq!(fs.read(p("/x/a")).unwrap(), b"b!");
        assert_eq!(
            fs.rename(p("/x/a"), p("/x/y")).unwrap_err().kind(),
            ErrorKind::IsADirectory
        );
        assert!(fs.rename(p("/x"), p("/x/y/z")).is_err());
        assert_eq!(
            fs.open(p("/x/nope"), OpenMode::Write).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            fs.remove_file(p("/x/y")).unwrap_err().kind(),
            ErrorKind::IsADirectory
        );
        fs.rename(p("/x/y"), p("/w")).unwrap();
        assert!(fs.metadata(p("/w")).unwrap().is_dir);
    }
}
