//! The storage conformance suite: one generic function per behaviour, run
//! against every backend (`memory://`, `local://` with tiny segments so
//! every test crosses segment boundaries, the same stores on a simulated
//! disk (`SimFs`), once reopened cleanly and once after a crash before
//! every reopen, and `local://` through its URI with the default segment
//! size). Behaviours that need a restart run only where the backend can be
//! reopened. A differential test drives random
//! `Ready`s through each backend and through `MemStorage`, the simulator's
//! reference, and compares everything the core can read.
#![cfg(feature = "local")]

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use raft_core::storage::fs::{Fs, RealFs, SimFs};
use raft_core::storage::local::{self, LocalOptions};
use raft_core::storage::{self, MemStorage, NodeStorage, Storage, StorageError, StorageUri};
use raft_core::{
    checksum, ConfState, Entry, EntryKind, Error, HardState, Ready, SnapshotFile, SnapshotMeta,
    SnapshotOp,
};

/// A place a `NodeStorage` lives: opened fresh once, reopened after a
/// simulated restart where the backend survives one.
trait Backend {
    fn open(&self) -> NodeStorage;
    fn reopen(&self) -> Option<NodeStorage>;
}

struct Memory;

impl Backend for Memory {
    fn open(&self) -> NodeStorage {
        storage::open("memory://").unwrap()
    }
    fn reopen(&self) -> Option<NodeStorage> {
        None
    }
}

/// The `local` stores with tiny segments, on the real disk or a simulated
/// one.
struct Local {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    /// The simulated disk, which crashes before each reopen if `crash`.
    sim: Option<SimFs>,
    crash: bool,
    crashes: Cell<u64>,
    _tmp: Option<tempfile::TempDir>,
    opts: LocalOptions,
}

impl Local {
    const OPTS: LocalOptions = LocalOptions { segment_bytes: 200 };

    fn small_segments() -> Local {
        let tmp = tempfile::tempdir().unwrap();
        Local {
            fs: Arc::new(RealFs),
            dir: tmp.path().to_path_buf(),
            sim: None,
            crash: false,
            crashes: Cell::new(0),
            _tmp: Some(tmp),
            opts: Local::OPTS,
        }
    }

    /// On a `SimFs`, reopened after a clean shutdown.
    fn sim_small_segments() -> Local {
        let fs = SimFs::default();
        Local {
            fs: Arc::new(fs.clone()),
            dir: PathBuf::from("/data/node"),
            sim: Some(fs),
            crash: false,
            crashes: Cell::new(0),
            _tmp: None,
            opts: Local::OPTS,
        }
    }

    /// On a `SimFs` that crashes before every reopen: a `persist` returns
    /// only once all of it is durable, so the crash may only redo what
    /// opening repairs (removals it undid), never lose anything.
    fn sim_crashing() -> Local {
        Local {
            crash: true,
            ..Local::sim_small_segments()
        }
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

impl Backend for Local {
    fn open(&self) -> NodeStorage {
        local::open_with(self.fs.clone(), &self.dir, &self.opts).unwrap()
    }
    fn reopen(&self) -> Option<NodeStorage> {
        if let (Some(sim), true) = (&self.sim, self.crash) {
            let n = self.crashes.get();
            self.crashes.set(n + 1);
            sim.crash_seeded(n);
            return Some(self.open());
        }
        let s = self.open();
        assert!(
            s.recovery().is_clean(),
            "a clean shutdown leaves nothing to repair: {:?}",
            s.recovery()
        );
        Some(s)
    }
}

/// `local://PATH` opened through its URI (default segment size).
struct LocalUri(tempfile::TempDir);

impl LocalUri {
    fn new() -> LocalUri {
        LocalUri(tempfile::tempdir().unwrap())
    }
}

impl Backend for LocalUri {
    fn open(&self) -> NodeStorage {
        storage::open(&format!("local://{}", self.0.path().display())).unwrap()
    }
    fn reopen(&self) -> Option<NodeStorage> {
        let s = self.open();
        assert!(s.recovery().is_clean(), "{:?}", s.recovery());
        Some(s)
    }
}

fn ent(index: u64, term: u64) -> Entry {
    let len = (index * 7 % 23) as usize;
    Entry {
        index,
        term,
        kind: match index % 3 {
            0 => EntryKind::Normal,
            1 => EntryKind::Noop,
            _ => EntryKind::ConfChange,
        },
        data: (0..len)
            .map(|i| (index as u8).wrapping_add(i as u8))
            .collect(),
    }
}

fn ents(lo: u64, hi: u64, term: u64) -> Vec<Entry> {
    (lo..=hi).map(|i| ent(i, term)).collect()
}

fn append(s: &mut NodeStorage, entries: Vec<Entry>) {
    s.persist(&Ready {
        entries,
        ..Ready::default()
    })
    .unwrap();
}

fn snap_meta(index: u64, term: u64, voters: &[u64], files: &[Vec<u8>]) -> SnapshotMeta {
    SnapshotMeta {
        index,
        term,
        conf: ConfState {
            index,
            voters: voters.to_vec(),
            ..ConfState::default()
        },
        files: files
            .iter()
            .enumerate()
            .map(|(i, f)| SnapshotFile {
                name: format!("file-{i}"),
                size: f.len() as u64,
                crc: checksum(f),
            })
            .collect(),
    }
}

fn ops(ops: Vec<SnapshotOp>) -> Ready {
    Ready {
        snapshot_ops: ops,
        ..Ready::default()
    }
}

fn chunk(file: u32, offset: u64, data: &[u8]) -> SnapshotOp {
    SnapshotOp::Chunk {
        file,
        offset,
        data: data.to_vec().into(),
    }
}

/// Every entry the storage holds, read back one range at a time.
fn held(s: &dyn Storage) -> Vec<Entry> {
    s.entries(s.first_index(), s.last_index() + 1, u64::MAX)
        .unwrap()
}

/// How many of `all` a read with `max_bytes` returns: at least one, then
/// as many as fit.
fn fitting(all: &[Entry], max_bytes: u64) -> usize {
    let mut bytes = 0;
    for (n, e) in all.iter().enumerate() {
        bytes += e.size();
        if n > 0 && bytes > max_bytes {
            return n;
        }
    }
    all.len()
}

/// Runs `check` on `s`, and again on the reopened storage where there is
/// one (what is checked must survive a restart).
fn check_and_reopen<B: Backend>(b: &B, s: NodeStorage, check: impl Fn(&NodeStorage)) {
    check(&s);
    drop(s);
    if let Some(s) = b.reopen() {
        check(&s);
    }
}

fn append_and_read<B: Backend>(b: &B) {
    let mut s = b.open();
    let mut all = ents(1, 10, 1);
    append(&mut s, all.clone());
    append(&mut s, ents(11, 40, 2));
    all.extend(ents(11, 40, 2));
    check_and_reopen(b, s, |s| {
        assert_eq!((s.first_index(), s.last_index()), (1, 40));
        assert_eq!(held(s), all);
        for e in &all {
            assert_eq!(s.term(e.index).unwrap(), e.term);
        }
        assert_eq!(s.term(0).unwrap(), 0);
        for max in [0, 1, 30, 60, 100, 300, 1000] {
            for lo in [1, 7, 11, 39] {
                let got = s.entries(lo, 41, max).unwrap();
                let want = &all[lo as usize - 1..];
                assert_eq!(got, want[..fitting(want, max)], "lo {lo} max {max}");
            }
        }
        assert_eq!(s.entries(5, 5, 0).unwrap(), vec![]);
    });
}

fn overwrite_suffix<B: Backend>(b: &B) {
    let mut s = b.open();
    append(&mut s, ents(1, 30, 1));
    append(&mut s, ents(12, 15, 2)); // drops 12..=30
    let mut want = ents(1, 11, 1);
    want.extend(ents(12, 15, 2));
    assert_eq!(held(&s), want);
    append(&mut s, ents(16, 20, 2));
    want.extend(ents(16, 20, 2));
    append(&mut s, ents(3, 3, 3)); // drops almost everything
    want.truncate(2);
    want.push(ent(3, 3));
    let e = s
        .persist(&Ready {
            entries: ents(5, 6, 3),
            ..Ready::default()
        })
        .unwrap_err();
    assert!(matches!(e, StorageError::Invalid(_)), "a gap: {e}");
    let e = s
        .persist(&Ready {
            entries: vec![ent(4, 3), ent(6, 3)],
            ..Ready::default()
        })
        .unwrap_err();
    assert!(
        matches!(e, StorageError::Invalid(_)),
        "not consecutive: {e}"
    );
    check_and_reopen(b, s, |s| {
        assert_eq!(s.last_index(), 3);
        assert_eq!(held(s), want);
        assert_eq!(s.term(3).unwrap(), 3);
        assert!(s.term(4).is_err());
    });
    let mut s = b.reopen().unwrap_or_else(|| {
        let mut s = b.open();
        append(&mut s, want.clone());
        s
    });
    append(&mut s, ents(1, 50, 4)); // everything replaced
    assert_eq!(held(&s), ents(1, 50, 4));
}

fn compaction<B: Backend>(b: &B) {
    let mut s = b.open();
    append(&mut s, ents(1, 30, 1));
    append(&mut s, ents(31, 60, 2));
    assert!(s.compact(10).is_err(), "no snapshot covers it");
    let files = vec![b"state at 40".to_vec()];
    s.save_snapshot(snap_meta(40, 2, &[1], &files), files)
        .unwrap();
    assert_eq!(s.compact(10).unwrap(), 10);
    assert_eq!(s.compact(5).unwrap(), 0, "already compacted");
    assert!(s.compact(41).is_err(), "past the snapshot");
    assert_eq!(s.compact(25).unwrap(), 15);
    check_and_reopen(b, s, |s| {
        assert_eq!((s.first_index(), s.last_index()), (26, 60));
        assert_eq!(
            s.term(25).unwrap(),
            1,
            "the compaction point keeps its term"
        );
        assert!(matches!(s.term(24), Err(Error::Unavailable { .. })));
        assert!(matches!(
            s.entries(25, 30, u64::MAX),
            Err(Error::Unavailable { .. })
        ));
        let mut want = ents(26, 30, 1);
        want.extend(ents(31, 60, 2));
        assert_eq!(held(s), want);
    });
    let mut s = b.reopen().unwrap_or_else(|| {
        let mut s = b.open();
        append(&mut s, ents(1, 30, 1));
        append(&mut s, ents(31, 60, 2));
        let files = vec![b"state at 40".to_vec()];
        s.save_snapshot(snap_meta(40, 2, &[1], &files), files)
            .unwrap();
        s.compact(25).unwrap();
        s
    });
    assert!(
        s.persist(&Ready {
            entries: ents(20, 21, 3),
            ..Ready::default()
        })
        .is_err(),
        "below the compaction point"
    );
    assert_eq!(s.compact(40).unwrap(), 15);
    append(&mut s, ents(41, 45, 3)); // overwrite right after the point
    check_and_reopen(b, s, |s| {
        assert_eq!((s.first_index(), s.last_index()), (41, 45));
        assert_eq!(s.term(40).unwrap(), 2);
        assert_eq!(held(s), ents(41, 45, 3));
    });
}

fn compaction_of_the_whole_log<B: Backend>(b: &B) {
    let mut s = b.open();
    append(&mut s, ents(1, 20, 1));
    s.save_snapshot(snap_meta(20, 1, &[1], &[]), vec![])
        .unwrap();
    assert_eq!(s.compact(20).unwrap(), 20);
    check_and_reopen(b, s, |s| {
        assert_eq!((s.first_index(), s.last_index()), (21, 20));
        assert_eq!(s.term(20).unwrap(), 1);
        assert_eq!(s.entries(21, 21, 0).unwrap(), vec![]);
    });
    let mut s = b.reopen().unwrap_or_else(|| {
        let mut s = b.open();
        append(&mut s, ents(1, 20, 1));
        s.save_snapshot(snap_meta(20, 1, &[1], &[]), vec![])
            .unwrap();
        s.compact(20).unwrap();
        s
    });
    append(&mut s, ents(21, 25, 2));
    check_and_reopen(b, s, |s| assert_eq!(held(s), ents(21, 25, 2)));
}

fn snapshot_save_and_read<B: Backend>(b: &B) {
    let mut s = b.open();
    append(&mut s, ents(1, 10, 1));
    let files = vec![b"hello snapshot".to_vec(), vec![], vec![7u8; 1000]];
    let meta = snap_meta(8, 1, &[1, 2, 3], &files);
    s.save_snapshot(meta.clone(), files.clone()).unwrap();
    let older = vec![b"old".to_vec()];
    s.save_snapshot(snap_meta(5, 1, &[1], &older), older)
        .unwrap(); // ignored: not newer
    let bad = vec![b"x".to_vec()];
    let mut wrong = snap_meta(9, 1, &[1], &bad);
    assert!(
        s.save_snapshot(wrong.clone(), vec![]).is_err(),
        "file count"
    );
    wrong.files[0].crc ^= 1;
    assert!(s.save_snapshot(wrong, bad).is_err(), "checksum");
    check_and_reopen(b, s, |s| {
        assert_eq!(s.snapshot_meta(), Some(meta.clone()));
        assert_eq!(s.snapshot_chunk(0, 0, 5).unwrap(), b"hello");
        assert_eq!(s.snapshot_chunk(0, 6, 100).unwrap(), b"snapshot");
        assert_eq!(s.snapshot_chunk(0, 14, 100).unwrap(), b"");
        assert!(s.snapshot_chunk(0, 15, 1).is_err(), "past the end");
        assert_eq!(s.snapshot_chunk(1, 0, 10).unwrap(), b"");
        assert_eq!(s.snapshot_chunk(2, 990, 100).unwrap(), vec![7u8; 10]);
        assert!(s.snapshot_chunk(3, 0, 1).is_err(), "no such file");
        assert_eq!(
            s.snapshot_files().unwrap(),
            Some((meta.clone(), files.clone()))
        );
    });
    let mut s = b.reopen().unwrap_or_else(|| {
        let mut s = b.open();
        append(&mut s, ents(1, 10, 1));
        s.save_snapshot(meta.clone(), files.clone()).unwrap();
        s
    });
    let newer = vec![b"newer".to_vec()];
    let newer_meta = snap_meta(10, 1, &[1], &newer);
    s.save_snapshot(newer_meta.clone(), newer.clone()).unwrap();
    check_and_reopen(b, s, |s| {
        assert_eq!(
            s.snapshot_files().unwrap(),
            Some((newer_meta.clone(), newer.clone()))
        );
    });
}

fn partial_snapshot_and_install<B: Backend>(b: &B) {
    let mut s = b.open();
    append(&mut s, ents(1, 10, 1));
    s.set_hard_state(HardState {
        term: 2,
        vote: Some(1),
        commit: 4,
    })
    .unwrap();
    let files = vec![b"0123456789abcdef".to_vec(), b"xyz".to_vec()];
    let meta = snap_meta(30, 3, &[1, 2], &files);
    s.persist(&ops(vec![
        SnapshotOp::Begin(meta.clone()),
        chunk(0, 0, &files[0][..4]),
        chunk(1, 0, &files[1]),
    ]))
    .unwrap();
    assert!(s.persist(&ops(vec![chunk(0, 9, b"9")])).is_err(), "a gap");
    assert!(
        s.persist(&ops(vec![chunk(2, 0, b"9")])).is_err(),
        "no such file"
    );
    assert_eq!(s.partial_snapshot(), Some((meta.clone(), vec![4, 3])));
    assert_eq!(s.partial_chunk(0, 1, 2).unwrap(), b"12");
    assert!(
        s.persist(&ops(vec![SnapshotOp::Install(meta.clone())]))
            .is_err(),
        "incomplete"
    );
    let mut other = meta.clone();
    other.term = 4;
    assert!(
        s.persist(&ops(vec![SnapshotOp::Install(other)])).is_err(),
        "not the snapshot received"
    );
    // The install and what follows it in one Ready, in the contract's order.
    s.persist(&Ready {
        snapshot_ops: vec![
            chunk(0, 4, &files[0][4..]),
            SnapshotOp::Install(meta.clone()),
        ],
        entries: ents(31, 33, 3),
        ..Ready::default()
    })
    .unwrap();
    check_and_reopen(b, s, |s| {
        assert_eq!((s.first_index(), s.last_index()), (31, 33));
        assert_eq!(s.term(30).unwrap(), 3);
        assert_eq!(held(s), ents(31, 33, 3));
        assert_eq!(s.partial_snapshot(), None);
        assert_eq!(
            s.snapshot_files().unwrap(),
            Some((meta.clone(), files.clone()))
        );
        let (hs, cs) = s.initial_state().unwrap();
        assert_eq!(
            hs,
            HardState {
                term: 2,
                vote: Some(1),
                commit: 30
            }
        );
        assert_eq!(cs, meta.conf);
    });
}

fn install_over_a_longer_log<B: Backend>(b: &B) {
    let mut s = b.open();
    append(&mut s, ents(1, 50, 1));
    let files = vec![b"abc".to_vec()];
    let meta = snap_meta(20, 2, &[1], &files);
    s.persist(&Ready {
        snapshot_ops: vec![
            SnapshotOp::Begin(meta.clone()),
            chunk(0, 0, &files[0]),
            SnapshotOp::Install(meta.clone()),
        ],
        hard_state: Some(HardState {
            term: 3,
            vote: Some(1),
            commit: 20,
        }),
        ..Ready::default()
    })
    .unwrap();
    check_and_reopen(b, s, |s| {
        assert_eq!(
            (s.first_index(), s.last_index()),
            (21, 20),
            "nothing after the snapshot"
        );
        assert_eq!(s.term(20).unwrap(), 2);
        assert!(s.term(21).is_err());
        assert_eq!(
            s.hard_state(),
            HardState {
                term: 3,
                vote: Some(1),
                commit: 20
            },
            "the Ready's hard state comes after the install"
        );
    });
}

fn abort_partial<B: Backend>(b: &B) {
    let mut s = b.open();
    let files = vec![b"abcdef".to_vec()];
    let meta = snap_meta(9, 1, &[1], &files);
    s.persist(&ops(vec![
        SnapshotOp::Begin(meta.clone()),
        chunk(0, 0, b"abc"),
    ]))
    .unwrap();
    s.persist(&ops(vec![SnapshotOp::Abort])).unwrap();
    s.persist(&ops(vec![SnapshotOp::Abort])).unwrap(); // nothing to abort is fine
    assert!(s.persist(&ops(vec![chunk(0, 3, b"def")])).is_err());
    assert!(s
        .persist(&ops(vec![SnapshotOp::Install(meta.clone())]))
        .is_err());
    // A new Begin drops a partial snapshot in progress.
    let files2 = vec![b"123".to_vec(), b"45".to_vec()];
    let meta2 = snap_meta(12, 2, &[1], &files2);
    s.persist(&ops(vec![
        SnapshotOp::Begin(meta.clone()),
        chunk(0, 0, b"ab"),
    ]))
    .unwrap();
    s.persist(&ops(vec![
        SnapshotOp::Begin(meta2.clone()),
        chunk(1, 0, b"4"),
    ]))
    .unwrap();
    check_and_reopen(b, s, |s| {
        assert_eq!(s.partial_snapshot(), Some((meta2.clone(), vec![0, 1])));
        assert!(s.partial_chunk(0, 1, 1).is_err(), "past what is held");
        assert!(s.snapshot_meta().is_none());
    });
}

fn resume_after_reopen<B: Backend>(b: &B) {
    let mut s = b.open();
    let files = vec![vec![1u8; 300], vec![2u8; 50]];
    let meta = snap_meta(100, 5, &[1, 2, 3], &files);
    s.persist(&ops(vec![
        SnapshotOp::Begin(meta.clone()),
        chunk(0, 0, &files[0][..120]),
        chunk(1, 0, &files[1][..50]),
    ]))
    .unwrap();
    drop(s);
    let Some(mut s) = b.reopen() else {
        return; // nothing survives a restart in memory
    };
    assert_eq!(s.partial_snapshot(), Some((meta.clone(), vec![120, 50])));
    assert_eq!(s.partial_chunk(0, 0, 1000).unwrap(), files[0][..120]);
    s.persist(&ops(vec![chunk(0, 120, &files[0][120..])]))
        .unwrap();
    drop(s);
    let mut s = b.reopen().unwrap();
    assert_eq!(s.partial_snapshot(), Some((meta.clone(), vec![300, 50])));
    s.persist(&ops(vec![SnapshotOp::Install(meta.clone())]))
        .unwrap();
    check_and_reopen(b, s, |s| {
        assert_eq!(
            s.snapshot_files().unwrap(),
            Some((meta.clone(), files.clone()))
        );
        assert_eq!(s.first_index(), 101);
    });
}

fn hard_and_conf_state_round_trip<B: Backend>(b: &B) {
    let mut s = b.open();
    assert_eq!(
        s.initial_state().unwrap(),
        (HardState::default(), ConfState::default())
    );
    let cs = ConfState {
        index: 0,
        voters: vec![1, 2, 3],
        outgoing: vec![],
        learners: vec![],
    };
    s.set_conf_state(cs.clone()).unwrap();
    append(&mut s, ents(1, 3, 1));
    let hs = HardState {
        term: 7,
        vote: Some(3),
        commit: 3,
    };
    let joint = ConfState {
        index: 3,
        voters: vec![1, 2, 4],
        outgoing: vec![1, 2, 3],
        learners: vec![5, 6],
    };
    s.persist(&Ready {
        hard_state: Some(hs),
        conf_state: Some(joint.clone()),
        ..Ready::default()
    })
    .unwrap();
    check_and_reopen(b, s, |s| {
        assert_eq!(s.initial_state().unwrap(), (hs, joint.clone()));
    });
    let mut s = b.reopen().unwrap_or_else(|| b.open());
    let hs2 = HardState {
        term: 8,
        vote: None,
        commit: 0,
    };
    s.persist(&Ready {
        hard_state: Some(hs2),
        ..Ready::default()
    })
    .unwrap();
    check_and_reopen(b, s, |s| assert_eq!(s.hard_state(), hs2));
}

fn out_of_range_reads<B: Backend>(b: &B) {
    let mut s = b.open();
    assert_eq!((s.first_index(), s.last_index()), (1, 0));
    assert_eq!(s.entries(1, 1, 0).unwrap(), vec![]);
    assert!(matches!(s.entries(0, 1, 0), Err(Error::Unavailable { .. })));
    assert!(matches!(s.entries(1, 2, 0), Err(Error::Unavailable { .. })));
    assert!(matches!(s.term(1), Err(Error::Unavailable { .. })));
    assert!(s.snapshot_chunk(0, 0, 1).is_err(), "no snapshot");
    assert!(s.partial_chunk(0, 0, 1).is_err(), "no partial snapshot");
    assert!(s.snapshot_files().unwrap().is_none());
    append(&mut s, ents(1, 10, 1));
    assert!(matches!(s.entries(5, 3, 0), Err(Error::Unavailable { .. })));
    assert!(matches!(
        s.entries(1, 12, 0),
        Err(Error::Unavailable { .. })
    ));
    assert!(matches!(s.entries(0, 3, 0), Err(Error::Unavailable { .. })));
    assert!(matches!(s.term(11), Err(Error::Unavailable { .. })));
    assert!(matches!(
        s.term(u64::MAX - 1),
        Err(Error::Unavailable { .. })
    ));
    assert!(s.entries(u64::MAX - 1, u64::MAX, 0).is_err());
    assert_eq!(s.entries(11, 11, 0).unwrap(), vec![]);
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
}

/// Everything the core can read from `a` and `b` is the same.
fn assert_same(step: usize, a: &dyn Storage, b: &dyn Storage) {
    let ctx = format!("step {step}");
    assert_eq!(
        a.initial_state().unwrap(),
        b.initial_state().unwrap(),
        "{ctx}"
    );
    assert_eq!(a.first_index(), b.first_index(), "{ctx}");
    assert_eq!(a.last_index(), b.last_index(), "{ctx}");
    assert_eq!(held(a), held(b), "{ctx}");
    for i in a.first_index().saturating_sub(2)..=a.last_index() + 1 {
        assert_eq!(a.term(i).ok(), b.term(i).ok(), "{ctx}: term {i}");
    }
    let lo = a.first_index();
    for max in [0, 50, 200] {
        assert_eq!(
            a.entries(lo, a.last_index() + 1, max).unwrap(),
            b.entries(lo, b.last_index() + 1, max).unwrap(),
            "{ctx}: max {max}"
        );
    }
    assert_eq!(a.snapshot_meta(), b.snapshot_meta(), "{ctx}");
    assert_eq!(a.partial_snapshot(), b.partial_snapshot(), "{ctx}");
    if let Some(m) = a.snapshot_meta() {
        for (i, f) in m.files.iter().enumerate() {
            assert_eq!(
                a.snapshot_chunk(i as u32, 0, f.size).unwrap(),
                b.snapshot_chunk(i as u32, 0, f.size).unwrap(),
                "{ctx}"
            );
        }
    }
}

/// Random `Ready`s (appends over random suffixes, hard and conf states,
/// snapshots received in chunks and installed, local snapshots and
/// compaction) applied to `MemStorage` and to the backend give the same
/// reads after every step, and after restarts.
fn same_as_memstorage<B: Backend>(b: &B) {
    let mut rng = Rng(0x5eed);
    let mut reference = MemStorage::new(vec![]);
    let mut s = b.open();
    let mut term = 1;
    for step in 0..300 {
        let mut rd = Ready::default();
        match rng.below(10) {
            0..=4 => {
                let first = reference.first_index();
                let next = reference.last_index() + 1;
                let lo = next - rng.below((next - first + 1).min(8));
                if rng.below(4) == 0 {
                    term += 1;
                }
                let n = 1 + rng.below(12);
                rd.entries = (lo..lo + n)
                    .map(|i| Entry {
                        index: i,
                        term,
                        kind: EntryKind::Normal,
                        data: vec![step as u8; rng.below(40) as usize].into(),
                    })
                    .collect();
                rd.hard_state = Some(HardState {
                    term,
                    vote: Some(1 + rng.below(3)),
                    commit: reference.first_index() - 1 + rng.below(2),
                });
            }
            5 => {
                rd.conf_state = Some(ConfState {
                    index: reference.last_index(),
                    voters: (1..=1 + rng.below(5)).collect(),
                    ..ConfState::default()
                });
            }
            6 => {
                // A snapshot of the state machine, then compaction.
                let (first, last) = (reference.first_index(), reference.last_index());
                if last >= first {
                    let at = first + rng.below(last - first + 1);
                    let files = vec![vec![at as u8; rng.below(300) as usize]];
                    let meta = snap_meta(at, reference.term(at).unwrap(), &[1], &files);
                    reference
                        .save_snapshot(meta.clone(), files.clone())
                        .unwrap();
                    s.save_snapshot(meta, files).unwrap();
                    let upto = first - 1 + rng.below(at - first + 2);
                    assert_eq!(reference.compact(upto).unwrap(), s.compact(upto).unwrap());
                }
            }
            _ => {
                // A snapshot from a leader, received over several Readies.
                let at = reference.last_index() + rng.below(20);
                term += 1;
                let files = vec![vec![3u8; rng.below(500) as usize], vec![4u8; 10]];
                let meta = snap_meta(at, term, &[1, 2], &files);
                rd.snapshot_ops.push(SnapshotOp::Begin(meta.clone()));
                let cut = rng.below(files[0].len() as u64 + 1) as usize;
                rd.snapshot_ops.push(chunk(0, 0, &files[0][..cut]));
                reference.persist(&rd).unwrap();
                s.persist(&rd).unwrap();
                assert_same(step, &reference, &s);
                rd = Ready::default();
                rd.snapshot_ops = vec![
                    chunk(0, cut as u64, &files[0][cut..]),
                    chunk(1, 0, &files[1]),
                    SnapshotOp::Install(meta),
                ];
                rd.entries = vec![ent(at + 1, term)];
            }
        }
        reference.persist(&rd).unwrap();
        s.persist(&rd).unwrap();
        assert_same(step, &reference, &s);
        if step % 37 == 0 {
            drop(s);
            s = match b.reopen() {
                Some(s) => s,
                None => return, // the memory backend starts over: stop here
            };
            assert_same(step, &reference, &s);
        }
    }
}

macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            #[test]
            fn append_and_read() {
                super::append_and_read(&$make);
            }
            #[test]
            fn overwrite_suffix() {
                super::overwrite_suffix(&$make);
            }
            #[test]
            fn compaction() {
                super::compaction(&$make);
            }
            #[test]
            fn compaction_of_the_whole_log() {
                super::compaction_of_the_whole_log(&$make);
            }
            #[test]
            fn snapshot_save_and_read() {
                super::snapshot_save_and_read(&$make);
            }
            #[test]
            fn partial_snapshot_and_install() {
                super::partial_snapshot_and_install(&$make);
            }
            #[test]
            fn install_over_a_longer_log() {
                super::install_over_a_longer_log(&$make);
            }
            #[test]
            fn abort_partial() {
                super::abort_partial(&$make);
            }
            #[test]
            fn resume_after_reopen() {
                super::resume_after_reopen(&$make);
            }
            #[test]
            fn hard_and_conf_state_round_trip() {
                super::hard_and_conf_state_round_trip(&$make);
            }
            #[test]
            fn out_of_range_reads() {
                super::out_of_range_reads(&$make);
            }
            #[test]
            fn same_as_memstorage() {
                super::same_as_memstorage(&$make);
            }
        }
    };
}

conformance!(memory, Memory);
conformance!(local_small_segments, Local::small_segments());
conformance!(simfs_small_segments, Local::sim_small_segments());
conformance!(simfs_crash_before_reopen, Local::sim_crashing());
conformance!(local_uri, LocalUri::new());

#[test]
fn uris_are_parsed_or_refused_clearly() {
    assert_eq!(StorageUri::parse("memory://").unwrap(), StorageUri::Memory);
    assert_eq!(
        StorageUri::parse("local:///var/lib/n1").unwrap(),
        StorageUri::Local("/var/lib/n1".into())
    );
    assert_eq!(
        StorageUri::parse("local://data/n1").unwrap(),
        StorageUri::Local("data/n1".into())
    );
    for (uri, says) in [
        ("s3://bucket/x", "unknown scheme \"s3\""),
        ("local://", "needs a directory"),
        ("memory://x", "takes no path"),
        ("/var/lib/n1", "expected SCHEME://"),
        ("", "expected SCHEME://"),
    ] {
        let e = storage::open(uri).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, StorageError::Uri { .. }), "{uri}: {text}");
        assert!(text.contains(says), "{uri}: {text}");
    }
}

#[test]
fn a_new_local_store_creates_its_directory_and_a_meta() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/node");
    let s = storage::open(&format!("local://{}", path.display())).unwrap();
    assert!(s.recovery().is_clean());
    assert!(path.join("meta").is_file());
    drop(s);
    // A meta that vanished while the log holds entries is refused.
    let mut s = storage::open(&format!("local://{}", path.display())).unwrap();
    append(&mut s, ents(1, 3, 1));
    drop(s);
    std::fs::remove_file(path.join("meta")).unwrap();
    let e = storage::open(&format!("local://{}", path.display())).unwrap_err();
    assert!(matches!(e, StorageError::Inconsistent(_)), "{e}");
}

fn segments_roll_truncate_and_compact_as_files(b: Local) {
    let segs = |b: &Local| {
        let mut v: Vec<String> =
            b.fs.read_dir(&b.path().join("log"))
                .unwrap()
                .into_iter()
                .filter(|n| n.ends_with(".seg"))
                .collect();
        v.sort();
        v
    };
    let mut s = b.open();
    for i in 0..10 {
        append(&mut s, ents(i * 10 + 1, i * 10 + 10, 1));
    }
    let many = segs(&b);
    assert!(many.len() > 5, "{many:?}");
    assert_eq!(many[0], local::segment_file_name(1));
    // Overwriting from index 15 removes every later segment.
    append(&mut s, ents(15, 16, 2));
    let after = segs(&b);
    assert!(after.len() < many.len(), "{after:?}");
    assert!(after.iter().all(|n| n <= &local::segment_file_name(16)));
    for i in 2..10 {
        append(&mut s, ents(i * 10 - 3, i * 10 + 6, 2 + i));
    }
    let last = s.last_index();
    s.save_snapshot(
        snap_meta(last - 5, s.term(last - 5).unwrap(), &[1], &[]),
        vec![],
    )
    .unwrap();
    let before = segs(&b).len();
    s.compact(last - 5).unwrap();
    assert!(segs(&b).len() < before, "compaction deletes whole segments");
    let want = held(&s);
    drop(s);
    let s = b.reopen().unwrap();
    assert_eq!(held(&s), want);
    if !b.crash {
        assert!(s.recovery().is_clean(), "{:?}", s.recovery());
    }
}

#[test]
fn segments_roll_truncate_and_compact_as_files_on_disk() {
    segments_roll_truncate_and_compact_as_files(Local::small_segments());
}

#[test]
fn segments_roll_truncate_and_compact_as_files_on_simfs() {
    segments_roll_truncate_and_compact_as_files(Local::sim_small_segments());
}

/// A crash undoes the unsynced removal of the compacted segments; opening
/// removes them again and says so.
#[test]
fn segments_roll_truncate_and_compact_as_files_on_simfs_with_a_crash() {
    segments_roll_truncate_and_compact_as_files(Local::sim_crashing());
}

#[test]
fn node_storage_can_move_to_another_thread() {
    fn send<T: Send>() {}
    send::<NodeStorage>();
}

/// Opening a store in directories that do not exist yet creates each of
/// them durably: a crash right after the first persist keeps everything
/// (the entry of every new directory is synced in its parent, not only the
/// last one's).
#[test]
fn a_store_in_new_nested_directories_survives_a_crash() {
    let fs = SimFs::default();
    let dir = Path::new("/a/b/node");
    let mut s = local::open_with(Arc::new(fs.clone()), dir, &Local::OPTS).unwrap();
    append(&mut s, ents(1, 5, 1));
    s.set_hard_state(HardState {
        term: 1,
        vote: Some(1),
        commit: 0,
    })
    .unwrap();
    drop(s);
    fs.crash_seeded(1);
    let s = local::open_with(Arc::new(fs), dir, &Local::OPTS).unwrap();
    assert_eq!(held(&s), ents(1, 5, 1));
    assert_eq!(s.hard_state().vote, Some(1));
}

// ----- snapshots staged in a directory ------------------------------------------

/// Writes `files` as a staged snapshot in `root/name` (file `i` at
/// `staged_file(dir, i)`), on the real disk.
fn stage(root: &Path, name: &str, files: &[Vec<u8>]) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for (i, f) in files.iter().enumerate() {
        std::fs::write(storage::staged_file(&dir, i), f).unwrap();
    }
    dir
}

#[test]
fn a_snapshot_staged_in_a_directory_is_renamed_into_place_or_copied_into_memory() {
    let files = vec![b"staged bytes".to_vec(), vec![], vec![9u8; 3000]];
    let meta = snap_meta(8, 1, &[1], &files);
    let tmp = tempfile::tempdir().unwrap();
    let uri = format!("local://{}", tmp.path().join("node").display());
    let mut s = storage::open(&uri).unwrap();
    append(&mut s, ents(1, 10, 1));
    let root = s
        .snapshot_staging_root()
        .expect("a file store stages in its own directory");

    // Refused, nothing changed: staged elsewhere (a rename could cross
    // file systems), not named for cleanup, sizes that differ.
    let elsewhere = stage(tmp.path(), "save-8-0.tmp", &files);
    let invalid = |r: Result<bool, StorageError>| matches!(r, Err(StorageError::Invalid(_)));
    assert!(invalid(s.save_snapshot_dir(&meta, &elsewhere)), "elsewhere");
    let unnamed = stage(&root, "save-8-0", &files);
    assert!(invalid(s.save_snapshot_dir(&meta, &unnamed)), "no .tmp");
    let short = stage(&root, "save-8-1.tmp", &files[..2]);
    std::fs::write(storage::staged_file(&short, 2), b"short").unwrap();
    assert!(invalid(s.save_snapshot_dir(&meta, &short)), "sizes");
    assert!(s.snapshot_meta().is_none());

    let dir = stage(&root, "save-8-2.tmp", &files);
    assert!(s.save_snapshot_dir(&meta, &dir).unwrap());
    assert!(!dir.exists(), "renamed into place, not copied");
    let (m, stored) = s.latest_snapshot_dir().expect("a directory");
    assert_eq!(m, meta);
    assert_eq!(
        std::fs::read(storage::staged_file(&stored, 2)).unwrap(),
        files[2]
    );
    assert_eq!(s.verify_snapshot().unwrap(), Some(meta.clone()));
    // Not newer: not stored, and the staged directory is the caller's.
    let older = stage(&root, "save-5-3.tmp", &files);
    assert!(!s
        .save_snapshot_dir(&snap_meta(5, 1, &[1], &files), &older)
        .unwrap());
    assert!(older.exists());
    drop(s);

    // Durable, and the leftovers of staging are removed on open.
    let s = storage::open(&uri).unwrap();
    assert_eq!(
        s.snapshot_files().unwrap(),
        Some((meta.clone(), files.clone()))
    );
    assert!(!older.exists() && !short.exists(), "*.tmp removed on open");
    // A byte changed on disk: the streaming check names the file.
    let (_, stored) = s.latest_snapshot_dir().unwrap();
    let mut bytes = std::fs::read(storage::staged_file(&stored, 2)).unwrap();
    bytes[2999] ^= 1;
    std::fs::write(storage::staged_file(&stored, 2), bytes).unwrap();
    let e = s.verify_snapshot().unwrap_err();
    assert!(
        matches!(&e, StorageError::Corrupt { file, .. } if file.ends_with("2.dat")),
        "{e}"
    );

    // A store in memory has no directory: the staged files are copied in,
    // checked against their checksums.
    let mut m = storage::open("memory://").unwrap();
    append(&mut m, ents(1, 10, 1));
    assert!(m.snapshot_staging_root().is_none());
    let mut bad = meta.clone();
    bad.files[0].crc ^= 1;
    let staged = stage(tmp.path(), "mem", &files);
    assert!(invalid(m.save_snapshot_dir(&bad, &staged)), "checksum");
    assert!(m.save_snapshot_dir(&meta, &staged).unwrap());
    assert_eq!(m.snapshot_files().unwrap(), Some((meta.clone(), files)));
    assert!(m.latest_snapshot_dir().is_none());
    assert_eq!(m.verify_snapshot().unwrap(), Some(meta));
}
