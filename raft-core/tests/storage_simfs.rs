//! The shipped `local` stores on a simulated disk (`SimFs`): power cuts in
//! the middle of any operation, torn writes, EIO and a full disk.
//!
//! The sweep drives random `NodeStorage` work (appends, suffix overwrites,
//! hard states, snapshots saved and received, compaction) and, at random
//! steps, cuts the power after a random number of disk changes, injects
//! EIO into one kind of call, or fills the disk. After each failure the
//! store is reopened (after a crash, or for failures that leave the disk
//! trustworthy, after a process restart alone) and checked against what it
//! held before the operation and what it would hold after it, computed on
//! a fork of the disk: everything synced before is there, every entry held
//! was written by someone, and nothing unsynced is reported as committed.
//! The dedicated tests pin single behaviours: a failed sync fails the
//! persist, a full disk names the file, a torn last record is cut and
//! reported. Every random choice comes from the seed.
#![cfg(feature = "local")]

use std::path::Path;
use std::sync::Arc;

use raft_core::storage::fs::{Fault, SimFs, SimFsConfig};
use raft_core::storage::local::{self, LocalOptions};
use raft_core::storage::{NodeStorage, Storage, StorageError};
use raft_core::{
    checksum, ConfState, Entry, EntryKind, HardState, Ready, SnapshotFile, SnapshotMeta, SnapshotOp,
};

const DIR: &str = "/srv/node";
/// Tiny segments, so every run rolls, truncates and compacts files.
const OPTS: LocalOptions = LocalOptions { segment_bytes: 512 };

fn open(fs: &SimFs) -> Result<NodeStorage, StorageError> {
    local::open_with(Arc::new(fs.clone()), Path::new(DIR), &OPTS)
}

/// A tiny deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// A number in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
    fn bytes(&mut self, max: u64) -> Vec<u8> {
        (0..self.below(max + 1))
            .map(|_| self.next() as u8)
            .collect()
    }
}

/// Everything a reopened store is judged on.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    first: u64,
    entries: Vec<Entry>,
    term: u64,
    vote: Option<u64>,
    commit: u64,
    conf: ConfState,
    snapshot: Option<SnapshotMeta>,
    partial: Option<(SnapshotMeta, Vec<u64>)>,
}

impl Seen {
    fn of(s: &NodeStorage) -> Seen {
        let (first, last) = (s.first_index(), s.last_index());
        let entries = if last >= first {
            s.entries(first, last + 1, u64::MAX).unwrap()
        } else {
            Vec::new()
        };
        // The snapshot's files read back whole and match their meta.
        let snapshot = s.snapshot_files().unwrap().map(|(m, _)| m);
        let hs = s.hard_state();
        Seen {
            first,
            entries,
            term: hs.term,
            vote: hs.vote,
            commit: hs.commit,
            conf: s.conf_state().clone(),
            snapshot,
            partial: s.partial_snapshot(),
        }
    }

    fn last(&self) -> u64 {
        self.first + self.entries.len() as u64 - 1
    }

    fn get(&self, index: u64) -> Option<&Entry> {
        let k = index.checked_sub(self.first)?;
        self.entries.get(usize::try_from(k).ok()?)
    }

    /// What a crash must keep of an acknowledged state: all of it, except
    /// that the commit index may come back older.
    fn assert_kept(&self, want: &Seen, ctx: &str) {
        let strip = |s: &Seen| Seen {
            commit: 0,
            ..s.clone()
        };
        assert_eq!(strip(self), strip(want), "{ctx}");
        assert!(
            self.commit <= want.commit,
            "{ctx}: commit {} > {}",
            self.commit,
            want.commit
        );
    }

    /// What may be left after `op` failed midway, between `before` and
    /// `after` (what `op` would have left had it succeeded).
    fn assert_between(&self, before: &Seen, after: &Seen, op: &Op, ctx: &str) {
        // The meta is one file replaced atomically; an install saves it
        // twice (its configuration first, then the Ready's hard state).
        let installs = op.changes_log_from() == 0;
        let meta = |s: &Seen| (s.term, s.vote, s.conf.clone());
        let between = (before.term, before.vote, after.conf.clone());
        assert!(
            meta(self) == meta(before)
                || meta(self) == meta(after)
                || (installs && meta(self) == between),
            "{ctx}: meta {:?} is neither {:?} nor {:?}",
            meta(self),
            meta(before),
            meta(after)
        );
        assert!(
            self.commit <= before.commit.max(after.commit),
            "{ctx}: commit {} was never persisted",
            self.commit
        );
        assert!(
            self.snapshot == before.snapshot || self.snapshot == after.snapshot,
            "{ctx}: snapshot {:?}",
            self.snapshot
        );
        assert!(
            self.first == before.first || self.first == after.first,
            "{ctx}: first index {} is neither {} nor {}",
            self.first,
            before.first,
            after.first
        );
        // Every synced entry the operation leaves alone is still there.
        let from = op.changes_log_from();
        let lo = before.first.max(after.first).max(self.first);
        let hi = before.last().min(from.saturating_sub(1));
        for i in lo..=hi {
            assert_eq!(self.get(i), before.get(i), "{ctx}: entry {i}");
        }
        // Every entry held was written: what was there before, then, once
        // that differs, what the operation wrote.
        let mut differs = false;
        for e in &self.entries {
            differs |= before.get(e.index) != Some(e);
            if differs {
                assert_eq!(Some(e), after.get(e.index), "{ctx}: entry {}", e.index);
            }
        }
        match &self.partial {
            None => {}
            Some(p) if before.partial.as_ref() == Some(p) => {}
            Some((m, held)) => {
                let was = |s: &Seen| s.partial.as_ref().filter(|(pm, _)| pm == m).cloned();
                let (b, a) = (was(before), was(after));
                assert!(
                    b.is_some() || a.is_some() || op.begins(m),
                    "{ctx}: partial {m:?}"
                );
                for (i, f) in m.files.iter().enumerate() {
                    assert!(held[i] <= f.size, "{ctx}: file {i} holds {}", held[i]);
                    if let Some((_, bh)) = &b {
                        if !op.restarts_partial() {
                            assert!(held[i] >= bh[i], "{ctx}: file {i} lost synced bytes");
                        }
                    }
                }
            }
        }
    }
}

/// One piece of work on a `NodeStorage`.
#[derive(Debug)]
enum Op {
    Persist(Ready),
    SaveSnapshot(SnapshotMeta, Vec<Vec<u8>>),
    Compact(u64),
}

impl Op {
    fn run(&self, s: &mut NodeStorage) -> Result<(), StorageError> {
        match self {
            Op::Persist(rd) => s.persist(rd),
            Op::SaveSnapshot(meta, files) => s.save_snapshot(meta.clone(), files.clone()),
            Op::Compact(upto) => s.compact(*upto).map(drop),
        }
    }

    /// The first index whose entry the operation may change or drop
    /// (`u64::MAX` if none; compaction only moves the first index).
    fn changes_log_from(&self) -> u64 {
        let Op::Persist(rd) = self else {
            return u64::MAX;
        };
        if rd
            .snapshot_ops
            .iter()
            .any(|o| matches!(o, SnapshotOp::Install(_)))
        {
            return 0;
        }
        rd.entries.first().map_or(u64::MAX, |e| e.index)
    }

    /// Whether it begins receiving the snapshot `m`.
    fn begins(&self, m: &SnapshotMeta) -> bool {
        matches!(self, Op::Persist(rd) if rd.snapshot_ops.contains(&SnapshotOp::Begin(m.clone())))
    }

    /// Whether it starts or drops a partial snapshot.
    fn restarts_partial(&self) -> bool {
        matches!(self, Op::Persist(rd) if rd.snapshot_ops.iter().any(|o| matches!(o, SnapshotOp::Begin(_) | SnapshotOp::Abort | SnapshotOp::Install(_))))
    }
}

/// The contents of file `j` of a snapshot at `(index, term)`: a function
/// of those, so a transfer resumed after a crash sends the same bytes.
fn snap_file(index: u64, term: u64, j: u64) -> Vec<u8> {
    let mut r = Rng(index.wrapping_mul(1_000_003) ^ term.wrapping_mul(7919) ^ j);
    let len = r.below(300);
    (0..len).map(|_| r.next() as u8).collect()
}

fn snap_meta(index: u64, term: u64, conf: &ConfState, nfiles: u64) -> SnapshotMeta {
    SnapshotMeta {
        index,
        term,
        conf: ConfState {
            index,
            ..conf.clone()
        },
        files: (0..nfiles)
            .map(|j| {
                let data = snap_file(index, term, j);
                SnapshotFile {
                    name: format!("f{j}"),
                    size: data.len() as u64,
                    crc: checksum(&data),
                }
            })
            .collect(),
    }
}

/// `bytes` as whatever owned buffer a payload field holds.
fn owned<T: FromIterator<u8>>(bytes: &[u8]) -> T {
    bytes.iter().copied().collect()
}

fn entries(rng: &mut Rng, from: u64, n: u64, term: u64) -> Vec<Entry> {
    (from..from + n)
        .map(|index| Entry {
            index,
            term,
            kind: EntryKind::Normal,
            data: rng.bytes(100).into_iter().collect(),
        })
        .collect()
}

/// Random work that a Raft node could ask of its storage in state `s`.
fn next_op(rng: &mut Rng, s: &NodeStorage) -> Op {
    let (first, last) = (s.first_index(), s.last_index());
    let hs = s.hard_state();
    let last_term = s.term(last).unwrap_or(hs.term);
    let snap_index = s.snapshot_meta().map_or(0, |m| m.index);
    // What is committed (a snapshot is, even where the saved commit index
    // came back older) may not change; entries after it may.
    let floor = hs.commit.max(snap_index).max(first - 1);
    let roll = rng.below(100);
    if roll < 10 {
        let mut term = hs.term;
        let mut vote = hs.vote;
        if rng.percent(60) {
            term += 1;
            vote = Some(rng.range(1, 3));
        }
        let commit = rng.range(hs.commit, last.max(hs.commit));
        return Op::Persist(Ready {
            hard_state: Some(HardState { term, vote, commit }),
            ..Ready::default()
        });
    }
    if roll < 20 && snap_index < hs.commit.min(last) && hs.commit.min(last) >= first {
        let at = rng.range(snap_index.max(first - 1) + 1, hs.commit.min(last));
        let term = s.term(at).unwrap();
        let meta = snap_meta(at, term, s.conf_state(), rng.below(3));
        let files = (0..meta.files.len() as u64)
            .map(|j| snap_file(at, term, j))
            .collect();
        return Op::SaveSnapshot(meta, files);
    }
    if roll < 28 && snap_index >= first {
        return Op::Compact(rng.range(first, snap_index));
    }
    if roll < 40 {
        return receive_snapshot(rng, s, last, last_term);
    }
    // Append, now and then over an uncommitted suffix with a new term.
    let overwrite = last > floor && rng.percent(20);
    let at = if overwrite {
        rng.range(floor + 1, last)
    } else {
        last + 1
    };
    let mut term = hs.term.max(last_term);
    let mut vote = hs.vote;
    if overwrite || rng.percent(15) {
        term += 1;
        vote = Some(rng.range(1, 3));
    }
    let n = rng.range(1, 6);
    let commit = rng.range(hs.commit, (at + n - 1).max(hs.commit));
    Op::Persist(Ready {
        entries: entries(rng, at, n, term),
        hard_state: Some(HardState { term, vote, commit }),
        ..Ready::default()
    })
}

/// The next step of receiving a snapshot: begin one, send more chunks,
/// install it once whole (with entries after it), or abort it.
fn receive_snapshot(rng: &mut Rng, s: &NodeStorage, last: u64, last_term: u64) -> Op {
    let hs = s.hard_state();
    let mut ops = Vec::new();
    // The core installs only a snapshot past everything it holds.
    let newer = |m: &SnapshotMeta| {
        m.index > last && m.index > hs.commit && s.snapshot_meta().is_none_or(|l| l.index < m.index)
    };
    let (meta, mut held) = match s.partial_snapshot() {
        Some(p) if newer(&p.0) && !rng.percent(10) => p,
        Some(_) if rng.percent(50) => {
            return Op::Persist(Ready {
                snapshot_ops: vec![SnapshotOp::Abort],
                ..Ready::default()
            })
        }
        _ => {
            let term = hs.term.max(last_term) + rng.below(2);
            let at = last.max(hs.commit) + rng.range(1, 5);
            let meta = snap_meta(at, term, s.conf_state(), rng.range(1, 3));
            ops.push(SnapshotOp::Begin(meta.clone()));
            let held = vec![0; meta.files.len()];
            (meta, held)
        }
    };
    for _ in 0..rng.range(0, 4) {
        let j = rng.below(meta.files.len() as u64) as usize;
        let size = meta.files[j].size;
        if held[j] == size {
            continue;
        }
        let n = rng.range(1, size - held[j]);
        let data = snap_file(meta.index, meta.term, j as u64);
        ops.push(SnapshotOp::Chunk {
            file: j as u32,
            offset: held[j],
            data: owned(&data[held[j] as usize..(held[j] + n) as usize]),
        });
        held[j] += n;
    }
    let whole = meta.files.iter().zip(&held).all(|(f, &h)| h == f.size);
    let mut rd = Ready::default();
    if whole && newer(&meta) && rng.percent(70) {
        ops.push(SnapshotOp::Install(meta.clone()));
        let term = hs.term.max(meta.term);
        rd.hard_state = Some(HardState {
            term,
            vote: hs.vote,
            commit: hs.commit.max(meta.index),
        });
        if rng.percent(50) {
            let n = rng.range(1, 3);
            rd.entries = entries(rng, meta.index + 1, n, term);
        }
    }
    rd.snapshot_ops = ops;
    Op::Persist(rd)
}

/// How one step's operation is made to fail.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Trouble {
    None,
    /// The power goes after this many disk changes.
    PowerCut(u64),
    /// Every call of one kind fails with this probability.
    Eio(usize, f64),
    /// The disk holds this many bytes more, writing short or nothing.
    Full(u64, bool),
}

/// Counts of what a sweep did, so it can check it did something.
#[derive(Debug, Default)]
struct Tally {
    ops: u64,
    failed: u64,
    power_cuts: u64,
    eio: u64,
    full: u64,
    crashes: u64,
    restarts: u64,
    torn_tails: u64,
    removed_leftovers: u64,
    installs_completed: u64,
    kept_after: u64,
    kept_before: u64,
    in_between: u64,
    installs: u64,
    compactions: u64,
    overwrites: u64,
}

fn set_trouble(fs: &SimFs, t: Trouble) {
    fs.configure(|c| {
        c.read_eio = Fault::Never;
        c.write_eio = Fault::Never;
        c.sync_eio = Fault::Never;
        c.meta_eio = Fault::Never;
        c.capacity = None;
        c.short_writes = false;
        match t {
            Trouble::None | Trouble::PowerCut(_) => {}
            Trouble::Eio(kind, p) => {
                *[
                    &mut c.read_eio,
                    &mut c.write_eio,
                    &mut c.sync_eio,
                    &mut c.meta_eio,
                ][kind] = Fault::Chance(p)
            }
            Trouble::Full(_, short) => c.short_writes = short,
        }
    });
    fs.cancel_power_cut();
    match t {
        Trouble::PowerCut(n) => fs.cut_power_after(n),
        Trouble::Full(room, _) => {
            let used = fs.used_bytes();
            fs.configure(|c| c.capacity = Some(used + room));
        }
        _ => {}
    }
}

/// One seed: `steps` operations, some failing, each failure followed by a
/// reopen and the checks of [`Seen::assert_between`].
fn sweep_one(seed: u64, steps: u64, tally: &mut Tally) {
    let fs = SimFs::new(SimFsConfig {
        seed,
        ..SimFsConfig::default()
    });
    let mut rng = Rng(seed);
    let mut s = open(&fs).unwrap();
    s.set_conf_state(ConfState {
        voters: vec![1, 2, 3],
        ..ConfState::default()
    })
    .unwrap();
    for step in 0..steps {
        let ctx = format!("seed {seed} step {step}");
        let op = next_op(&mut rng, &s);
        let before = Seen::of(&s);
        let trouble = match rng.below(100) {
            0..=11 => Trouble::PowerCut(rng.below(25)),
            12..=17 => Trouble::Eio(rng.below(4) as usize, 0.3),
            18..=21 => Trouble::Full(rng.below(400), rng.percent(50)),
            _ => Trouble::None,
        };
        // What the operation would leave, on a copy of the disk.
        let after = (trouble != Trouble::None).then(|| {
            let copy = fs.fork();
            let mut t = open(&copy).unwrap();
            op.run(&mut t)
                .unwrap_or_else(|e| panic!("{ctx}: {op:?} on a fork: {e}"));
            Seen::of(&t)
        });
        set_trouble(&fs, trouble);
        let stats = fs.stats();
        let r = op.run(&mut s);
        let eio = fs.stats().eio > stats.eio;
        let sync_failed = eio && matches!(trouble, Trouble::Eio(2, _));
        let powered_off = fs.is_powered_off();
        set_trouble(&fs, Trouble::None);
        if std::env::var("SIMFS_TRACE").is_ok_and(|v| v == seed.to_string()) {
            eprintln!(
                "{step}: {trouble:?} {r:?} first {} last {} snap {:?} commit {} op {op:?}",
                s.first_index(),
                s.last_index(),
                s.snapshot_meta().map(|m| m.index),
                s.hard_state().commit
            );
        }
        tally.ops += 1;
        if r.is_ok() {
            match &op {
                Op::Compact(_) => tally.compactions += 1,
                Op::Persist(_) if op.changes_log_from() == 0 => tally.installs += 1,
                Op::Persist(rd) if op.changes_log_from() <= before.last() => {
                    tally.overwrites += u64::from(!rd.entries.is_empty())
                }
                _ => {}
            }
        }
        if eio || powered_off {
            // An injected failure is never swallowed.
            assert!(r.is_err(), "{ctx}: {op:?} succeeded through a failure");
        }
        match r {
            Ok(()) => {
                // Now and then a crash between operations: nothing is lost.
                if rng.percent(8) {
                    let want = Seen::of(&s);
                    drop(s);
                    fs.crash_seeded(rng.next());
                    tally.crashes += 1;
                    s = open(&fs).unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
                    note_recovery(&s, tally);
                    Seen::of(&s).assert_kept(&want, &ctx);
                }
            }
            Err(e) => {
                tally.failed += 1;
                match trouble {
                    Trouble::PowerCut(_) => tally.power_cuts += 1,
                    Trouble::Eio(..) => tally.eio += 1,
                    Trouble::Full(..) => tally.full += 1,
                    Trouble::None => panic!("{ctx}: {op:?} failed without trouble: {e}"),
                }
                if let Trouble::Full(..) = trouble {
                    assert!(
                        e.to_string().contains("no space left on device"),
                        "{ctx}: {e}"
                    );
                }
                drop(s);
                // After a failed sync only a power cycle makes the disk
                // trustworthy again (the page cache holds writes that will
                // never reach it); other failures may also be followed by a
                // restart of the process alone.
                if powered_off || sync_failed || rng.percent(50) {
                    fs.crash_seeded(rng.next());
                    tally.crashes += 1;
                } else {
                    tally.restarts += 1;
                }
                s = open(&fs).unwrap_or_else(|e| panic!("{ctx}: reopen after {op:?}: {e}"));
                note_recovery(&s, tally);
                let rec = Seen::of(&s);
                let after = after.unwrap_or_else(|| before.clone());
                rec.assert_between(&before, &after, &op, &ctx);
                if rec.entries == after.entries && rec.first == after.first {
                    tally.kept_after += 1;
                } else if rec.entries == before.entries && rec.first == before.first {
                    tally.kept_before += 1;
                } else {
                    tally.in_between += 1;
                }
            }
        }
    }
}

fn note_recovery(s: &NodeStorage, tally: &mut Tally) {
    let r = s.recovery();
    tally.torn_tails += u64::from(r.torn_tail.is_some());
    tally.removed_leftovers += r.removed.len() as u64;
    tally.installs_completed += u64::from(r.install_completed.is_some());
}

#[test]
fn random_work_through_power_cuts_eio_and_a_full_disk_keeps_what_was_synced() {
    let mut tally = Tally::default();
    for seed in 0..150 {
        sweep_one(seed, 120, &mut tally);
    }
    eprintln!("{tally:#?}");
    // The sweep did what it is for.
    assert!(tally.power_cuts > 300, "{tally:?}");
    assert!(tally.eio > 100, "{tally:?}");
    assert!(tally.full > 50, "{tally:?}");
    assert!(tally.restarts > 20, "{tally:?}");
    assert!(tally.torn_tails > 20, "{tally:?}");
    assert!(tally.removed_leftovers > 50, "{tally:?}");
    assert!(tally.installs_completed > 0, "{tally:?}");
    assert!(tally.in_between > 20, "{tally:?}");
    assert!(tally.kept_after > 20 && tally.kept_before > 20, "{tally:?}");
    assert!(
        tally.installs > 50 && tally.compactions > 50 && tally.overwrites > 50,
        "{tally:?}"
    );
}

/// A process that dies between a write and its sync leaves the write in
/// the page cache. The next process to open the store sees it, and may
/// acknowledge it (a log entry, a snapshot chunk, a vote): opening must
/// make durable what it finds, or a power cut after the restart loses
/// what the new process reported as held.
#[test]
fn what_a_restarted_process_finds_is_durable_before_it_is_reported() {
    use raft_core::storage::local::{LocalSnapshots, SegmentedLog};
    use raft_core::storage::{LogStore, RecoveryReport, SnapshotStore};
    let fs = SimFs::new(SimFsConfig {
        crash_keep: 0.0,
        crash_tear: 0.0,
        ..SimFsConfig::default()
    });
    let mut s = open(&fs).unwrap();
    s.set_conf_state(ConfState {
        voters: vec![1, 2, 3],
        ..ConfState::default()
    })
    .unwrap();
    let mut rng = Rng(5);
    s.persist(&Ready {
        entries: entries(&mut rng, 1, 5, 1),
        hard_state: Some(HardState {
            term: 1,
            vote: Some(1),
            commit: 0,
        }),
        ..Ready::default()
    })
    .unwrap();
    let meta = snap_meta(20, 1, s.conf_state(), 1);
    s.persist(&Ready {
        snapshot_ops: vec![SnapshotOp::Begin(meta.clone())],
        ..Ready::default()
    })
    .unwrap();
    drop(s);
    // The dying process: entries written, a chunk appended, neither synced.
    let shared: Arc<dyn raft_core::storage::fs::Fs> = Arc::new(fs.clone());
    let mut report = RecoveryReport::default();
    let dir = Path::new(DIR);
    let mut log =
        SegmentedLog::open_with(shared.clone(), &dir.join("log"), 512, &mut report).unwrap();
    log.append(&entries(&mut rng, 6, 3, 1)).unwrap();
    let mut snaps = LocalSnapshots::open_with(shared, &dir.join("snap"), &mut report).unwrap();
    let chunk = snap_file(20, 1, 0)[..10].to_vec();
    snaps.append_partial(0, 0, &chunk).unwrap();
    drop((log, snaps));
    // The next process reports what it finds; a power cut must keep it.
    let s = open(&fs).unwrap();
    let reported = Seen::of(&s);
    assert_eq!(reported.last(), 8);
    assert_eq!(reported.partial.as_ref().map(|p| p.1[0]), Some(10));
    drop(s);
    fs.crash_seeded(1);
    let s = open(&fs).unwrap();
    Seen::of(&s).assert_kept(&reported, "after the power cut");
}

fn no_faults(c: &mut SimFsConfig) {
    c.read_eio = Fault::Never;
    c.write_eio = Fault::Never;
    c.sync_eio = Fault::Never;
    c.meta_eio = Fault::Never;
    c.capacity = None;
}

/// Replays the random work of `seed` (the same on every call, since the
/// store evolves the same way) with the fault `arm` sets, until an
/// operation hits it. That operation must fail; the store is then
/// reopened after a crash and checked. Returns its error, or `None` if no
/// operation hit the fault.
fn fail_once(seed: u64, steps: u64, arm: impl Fn(&SimFs), what: &str) -> Option<StorageError> {
    let fs = SimFs::new(SimFsConfig {
        seed,
        ..SimFsConfig::default()
    });
    let mut rng = Rng(seed);
    let mut s = open(&fs).unwrap();
    s.set_conf_state(ConfState {
        voters: vec![1, 2, 3],
        ..ConfState::default()
    })
    .unwrap();
    arm(&fs);
    for step in 0..steps {
        let ctx = format!("{what}, step {step}");
        let op = next_op(&mut rng, &s);
        let before = Seen::of(&s);
        let copy = fs.fork();
        copy.configure(no_faults);
        let mut t = open(&copy).unwrap();
        op.run(&mut t).unwrap();
        let after = Seen::of(&t);
        let was = fs.stats();
        let r = op.run(&mut s);
        let now = fs.stats();
        if now.eio == was.eio && now.enospc == was.enospc {
            r.unwrap_or_else(|e| panic!("{ctx}: {op:?} failed without a fault: {e}"));
            continue;
        }
        let Err(e) = r else {
            panic!("{ctx}: {op:?} succeeded through a fault");
        };
        drop(s);
        fs.configure(no_faults);
        fs.crash_seeded(seed ^ step);
        let s = open(&fs).unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
        Seen::of(&s).assert_between(&before, &after, &op, &ctx);
        return Some(e);
    }
    None
}

/// A file's name with its numbers left out (`N.seg`, `N-N`, `N.dat`).
fn file_kind(path: &Path) -> String {
    let name = path.file_name().unwrap().to_string_lossy();
    let mut out = String::new();
    for c in name.chars() {
        if !c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('N') {
            out.push('N');
        }
    }
    out
}

/// The file an IO error names, checking the message names it too.
fn io_file(e: &StorageError, kind: std::io::ErrorKind, says: &str) -> std::path::PathBuf {
    let StorageError::Io { path, source, .. } = e else {
        panic!("not an IO error: {e}");
    };
    assert_eq!(source.kind(), kind, "{e}");
    let text = e.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains(says), "{text}");
    assert!(path.starts_with(DIR), "{text}");
    path.clone()
}

#[test]
fn an_eio_at_any_write_sync_or_directory_call_fails_that_operation() {
    for kind in ["write", "sync", "directory"] {
        let mut n = 1;
        let mut files = std::collections::BTreeSet::new();
        loop {
            let what = format!("EIO at {kind} call {n}");
            let arm = |fs: &SimFs| {
                fs.configure(|c| match kind {
                    "write" => c.write_eio = Fault::Nth(n),
                    "sync" => c.sync_eio = Fault::Nth(n),
                    _ => c.meta_eio = Fault::Nth(n),
                })
            };
            let Some(e) = fail_once(11, 60, arm, &what) else {
                break;
            };
            let file = io_file(&e, std::io::ErrorKind::Other, "input/output error");
            files.insert(file_kind(&file));
            n += 1;
        }
        eprintln!("{kind}: {n} calls, failed on {files:?}");
        assert!(n > 40, "{kind}: only {n} calls");
        assert!(files.len() >= 4, "{kind}: {files:?}");
    }
}

#[test]
fn a_full_disk_fails_the_operation_naming_the_file() {
    for short in [false, true] {
        let mut files = std::collections::BTreeSet::new();
        for room in (0..4000).step_by(53) {
            let what = format!("{room} bytes free, short writes {short}");
            let arm = |fs: &SimFs| {
                let used = fs.used_bytes();
                fs.configure(|c| {
                    c.capacity = Some(used + room);
                    c.short_writes = short;
                })
            };
            let e = fail_once(12, 60, arm, &what)
                .unwrap_or_else(|| panic!("{what}: the disk never filled"));
            let file = io_file(
                &e,
                std::io::ErrorKind::StorageFull,
                "no space left on device",
            );
            files.insert(file_kind(&file));
        }
        eprintln!("short writes {short}: failed on {files:?}");
        assert!(files.contains("N.seg") && files.len() >= 4, "{files:?}");
    }
}

/// A batch written but not synced when the power goes may reach the disk
/// in part; opening cuts the torn record off and reports exactly what it
/// cut.
#[test]
fn a_torn_last_record_is_cut_and_reported() {
    let opts = LocalOptions::default();
    let mut torn = 0;
    for seed in 0..60 {
        let fs = SimFs::new(SimFsConfig {
            crash_keep: 0.0,
            crash_tear: 1.0,
            ..SimFsConfig::default()
        });
        let open = || local::open_with(Arc::new(fs.clone()), Path::new(DIR), &opts).unwrap();
        let mut rng = Rng(seed);
        let mut s = open();
        let acked = entries(&mut rng, 1, 10, 1);
        s.persist(&Ready {
            entries: acked.clone(),
            ..Ready::default()
        })
        .unwrap();
        let seg = Path::new(DIR).join("log").join(local::segment_file_name(1));
        let synced = fs.used_bytes();
        let synced_len = fs.durable_contents(&seg).unwrap().len() as u64;
        // The batch is written; the power goes at its sync.
        fs.cut_power_after(1);
        let batch = entries(&mut rng, 11, 3, 1);
        let e = s
            .persist(&Ready {
                entries: batch.clone(),
                ..Ready::default()
            })
            .unwrap_err();
        assert!(e.to_string().contains("lost power"), "{e}");
        assert!(fs.used_bytes() > synced);
        drop(s);
        fs.crash_seeded(seed);
        let left = fs.durable_contents(&seg).unwrap().len() as u64;
        // Where each record of the batch ends, from the format.
        let mut ends = vec![synced_len];
        for e in &batch {
            ends.push(ends.last().unwrap() + local::record_len(e.data.len()));
        }
        let whole = ends.iter().rposition(|&end| end <= left).unwrap();
        let s = open();
        let mut want = acked.clone();
        want.extend_from_slice(&batch[..whole]);
        assert_eq!(s.last_index(), 10 + whole as u64, "seed {seed}");
        assert_eq!(
            s.entries(1, s.last_index() + 1, u64::MAX).unwrap(),
            want,
            "seed {seed}"
        );
        match &s.recovery().torn_tail {
            None => assert_eq!(left, ends[whole], "seed {seed}: no record cut short"),
            Some(t) => {
                torn += 1;
                assert_eq!(t.file, seg, "seed {seed}");
                assert_eq!(t.offset, ends[whole], "seed {seed}");
                assert_eq!(t.dropped_bytes, left - ends[whole], "seed {seed}");
                assert_eq!(t.first_lost_index, 11 + whole as u64, "seed {seed}");
                assert_eq!(t.dropped_records, 1, "seed {seed}");
            }
        }
        // The cut is durable: a second crash changes nothing.
        drop(s);
        fs.crash_seeded(seed + 1);
        let s = open();
        assert!(s.recovery().is_clean(), "seed {seed}: {:?}", s.recovery());
        assert_eq!(s.last_index(), 10 + whole as u64);
    }
    assert!(torn > 40, "{torn} of 60 seeds tore a record");
}

/// A read that fails is an error naming the file, never a default: the
/// log read, the snapshot read and the open.
#[test]
fn a_failed_read_is_an_error_naming_the_file() {
    let fs = SimFs::default();
    let mut s = open(&fs).unwrap();
    s.set_entry_cache_bytes(0);
    let mut rng = Rng(1);
    s.persist(&Ready {
        entries: entries(&mut rng, 1, 20, 1),
        ..Ready::default()
    })
    .unwrap();
    let meta = snap_meta(10, 1, s.conf_state(), 2);
    let files = (0..2).map(|j| snap_file(10, 1, j)).collect();
    s.save_snapshot(meta, files).unwrap();
    fs.configure(|c| c.read_eio = Fault::Chance(1.0));
    let e = s.entries(1, 21, u64::MAX).unwrap_err();
    assert!(e.to_string().contains("input/output error"), "{e}");
    assert!(e.to_string().contains(".seg"), "{e}");
    let e = s.snapshot_files().unwrap_err();
    io_file(&e, std::io::ErrorKind::Other, "input/output error");
    drop(s);
    let e = open(&fs).unwrap_err();
    io_file(&e, std::io::ErrorKind::Other, "input/output error");
    fs.configure(|c| c.read_eio = Fault::Never);
    let s = open(&fs).unwrap();
    assert_eq!(s.last_index(), 20);
}
