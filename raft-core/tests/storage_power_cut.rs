//! Power cuts and disk damage for `local://` storage.
//!
//! A log is written in batches of random sizes (each synced, as a `Ready`
//! is), then damaged the way a crash or a bad disk would: the last segment
//! cut at every offset or at random ones, single bits flipped anywhere,
//! meta and snapshot files garbled, leftovers of interrupted writes lying
//! around. Reopening must keep exactly the records that are intact, report
//! the torn tail it cut, and refuse damage in the middle with an error that
//! names the file and the byte offset of the bad record. The expected
//! outcome is computed from the documented on-disk format. Every random
//! choice comes from a fixed seed.
#![cfg(feature = "local")]

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use raft_core::storage::local::{self, LocalMeta, LocalOptions, LocalSnapshots, SegmentedLog};
use raft_core::storage::{LogStore, MetaStore, NodeStorage, RecoveryReport, Storage, StorageError};
use raft_core::{
    checksum, Bytes, ConfState, Entry, EntryKind, HardState, Ready, SnapshotFile, SnapshotMeta,
    SnapshotOp,
};

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

const OPTS: LocalOptions = LocalOptions { segment_bytes: 512 };

fn open(dir: &Path) -> Result<NodeStorage, StorageError> {
    local::open(dir, &OPTS)
}

/// Writes `batches` synced batches of 1..=8 entries with 0..120 bytes of
/// random data each. Returns every entry written.
fn build(dir: &Path, seed: u64, batches: usize) -> Vec<Entry> {
    build_batches(dir, seed, batches).0
}

/// [`build`], also returning the first index of each batch.
fn build_batches(dir: &Path, seed: u64, batches: usize) -> (Vec<Entry>, Vec<u64>) {
    let mut rng = Rng(seed);
    let mut s = open(dir).unwrap();
    s.set_conf_state(ConfState {
        voters: vec![1, 2, 3],
        ..ConfState::default()
    })
    .unwrap();
    let mut all: Vec<Entry> = Vec::new();
    let mut starts = Vec::new();
    let mut term = 1;
    for _ in 0..batches {
        starts.push(all.len() as u64 + 1);
        if rng.below(5) == 0 {
            term += 1;
        }
        let n = 1 + rng.below(8);
        let batch: Vec<Entry> = (0..n)
            .map(|k| Entry {
                index: all.len() as u64 + 1 + k,
                term,
                kind: EntryKind::Normal,
                data: (0..rng.below(120)).map(|_| rng.next() as u8).collect(),
            })
            .collect();
        all.extend(batch.iter().cloned());
        s.persist(&Ready {
            entries: batch,
            hard_state: Some(HardState {
                term,
                vote: Some(1),
                commit: 0,
            }),
            ..Ready::default()
        })
        .unwrap();
    }
    (all, starts)
}

/// A segment file and where each of its records lies, from the format.
#[derive(Debug)]
struct Seg {
    path: PathBuf,
    first: u64,
    /// `(start, end)` byte range of each record.
    records: Vec<(u64, u64)>,
}

fn segments(dir: &Path, all: &[Entry]) -> Vec<Seg> {
    let mut names: Vec<(u64, PathBuf)> = fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .map(|p| {
            let first = p.file_stem().unwrap().to_str().unwrap().parse().unwrap();
            (first, p)
        })
        .collect();
    names.sort();
    let mut out = Vec::new();
    for (k, (first, path)) in names.iter().enumerate() {
        let last = names.get(k + 1).map_or(all.len() as u64, |n| n.0 - 1);
        let mut at = local::SEGMENT_HEADER_BYTES;
        let records = (*first..=last)
            .map(|i| {
                let start = at;
                at += local::record_len(all[i as usize - 1].data.len());
                (start, at)
            })
            .collect();
        assert_eq!(
            fs::metadata(path).unwrap().len(),
            at,
            "{path:?} matches the format"
        );
        out.push(Seg {
            path: path.clone(),
            first: *first,
            records,
        });
    }
    out
}

/// The log holds exactly `all[..last]`.
fn assert_holds(s: &NodeStorage, all: &[Entry], last: u64) {
    assert_eq!(s.last_index(), last);
    let got = s.entries(1, last + 1, u64::MAX).unwrap();
    assert_eq!(got, all[..last as usize]);
}

fn corrupt_at(e: &StorageError) -> (PathBuf, u64) {
    match e {
        StorageError::Corrupt { file, offset, .. } => (file.clone(), *offset),
        other => panic!("expected a corruption naming a file and offset, got {other}"),
    }
}

/// Cutting the last segment anywhere keeps every record that lies wholly
/// before the cut, reports the rest, and the log works on afterwards.
fn truncate_last_segment_at(dir: &Path, all: &[Entry], segs: &[Seg], cut: u64) {
    let last_seg = segs.last().unwrap();
    let original = fs::read(&last_seg.path).unwrap();
    fs::write(&last_seg.path, &original[..cut as usize]).unwrap();
    let s = open(dir).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
    let report = s.recovery().clone();
    if cut < local::SEGMENT_HEADER_BYTES {
        // Even the header is incomplete: the segment goes.
        assert_holds(&s, all, last_seg.first - 1);
        let torn = report.torn_tail.expect("reported");
        assert_eq!(
            (torn.file, torn.offset, torn.dropped_bytes),
            (last_seg.path.clone(), 0, cut)
        );
        assert!(!last_seg.path.exists());
    } else {
        let kept = last_seg.records.iter().filter(|r| r.1 <= cut).count() as u64;
        let boundary = last_seg.records.get(kept as usize).map_or(cut, |r| r.0);
        assert_holds(&s, all, last_seg.first + kept - 1);
        match report.torn_tail {
            None => assert_eq!(
                boundary, cut,
                "cut at {cut}: a cut between records drops nothing"
            ),
            Some(torn) => {
                assert_eq!(torn.file, last_seg.path);
                assert_eq!(torn.offset, boundary, "cut at {cut}");
                assert_eq!(torn.dropped_bytes, cut - boundary);
                assert_eq!(torn.dropped_records, 1);
                assert_eq!(torn.first_lost_index, last_seg.first + kept);
                assert_eq!(fs::metadata(&last_seg.path).unwrap().len(), boundary);
            }
        }
    }
    // The repaired log takes new entries and reopens clean.
    let mut s = s;
    let next = s.last_index() + 1;
    s.persist(&Ready {
        entries: vec![Entry {
            index: next,
            term: 99,
            kind: EntryKind::Noop,
            data: Bytes::new(),
        }],
        ..Ready::default()
    })
    .unwrap();
    drop(s);
    let s = open(dir).unwrap();
    assert!(s.recovery().is_clean(), "{:?}", s.recovery());
    assert_eq!(s.last_index(), next);
    drop(s);
    // Put the damaged segment back as it was for the next cut.
    let now = segments_paths(dir);
    for p in now {
        if p > last_seg.path {
            fs::remove_file(p).unwrap();
        }
    }
    fs::write(&last_seg.path, &original).unwrap();
}

fn segments_paths(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_cut_at_every_offset_of_the_last_segment_keeps_every_intact_record() {
    let dir = tempfile::tempdir().unwrap();
    let all = build(dir.path(), 1, 40);
    let segs = segments(dir.path(), &all);
    assert!(segs.len() >= 3, "the log spans segments: {}", segs.len());
    let len = segs.last().unwrap().records.last().unwrap().1;
    for cut in 0..=len {
        truncate_last_segment_at(dir.path(), &all, &segs, cut);
    }
}

#[test]
fn cuts_at_random_offsets_for_many_seeds() {
    for seed in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let all = build(dir.path(), 100 + seed, 10 + (seed as usize * 7) % 50);
        let segs = segments(dir.path(), &all);
        let len = fs::metadata(&segs.last().unwrap().path).unwrap().len();
        let mut rng = Rng(seed);
        for _ in 0..10 {
            truncate_last_segment_at(dir.path(), &all, &segs, rng.below(len + 1));
        }
    }
}

#[test]
fn a_cut_in_the_last_synced_batch_keeps_every_earlier_batch() {
    // The batch being written when the power failed had not been synced;
    // every batch before it had, and all of them survive any cut of it.
    let dir = tempfile::tempdir().unwrap();
    let before = build(dir.path(), 7, 25);
    let mut s = open(dir.path()).unwrap();
    let first_new = before.len() as u64 + 1;
    let batch: Vec<Entry> = (first_new..first_new + 6)
        .map(|i| Entry {
            index: i,
            term: 50,
            kind: EntryKind::Normal,
            data: vec![i as u8; 70].into(),
        })
        .collect();
    s.persist(&Ready {
        entries: batch.clone(),
        ..Ready::default()
    })
    .unwrap();
    drop(s);
    let mut all = before.clone();
    all.extend(batch);
    let segs = segments(dir.path(), &all);
    let last = segs.last().unwrap();
    let batch_start = if last.first > first_new {
        local::SEGMENT_HEADER_BYTES
    } else {
        last.records[(first_new - last.first) as usize].0
    };
    let len = last.records.last().unwrap().1;
    for cut in batch_start..len {
        let original = fs::read(&last.path).unwrap();
        fs::write(&last.path, &original[..cut as usize]).unwrap();
        let s = open(dir.path()).unwrap();
        assert!(s.last_index() >= before.len() as u64);
        assert_eq!(
            s.entries(1, before.len() as u64 + 1, u64::MAX).unwrap(),
            before,
            "every synced batch survives a cut at {cut}"
        );
        drop(s);
        fs::write(&last.path, &original).unwrap();
    }
}

/// A flipped bit is a torn tail only in the last stretch written since a
/// sync (the last batch, or its part in the last segment when it rolled
/// over): damage there cannot be told from a crash during the write.
/// Anywhere else it is refused, naming the file and the record's offset.
#[test]
fn a_flipped_bit_is_a_torn_tail_only_in_the_last_synced_stretch() {
    let mut torn = 0;
    let mut refused = 0;
    for seed in 0..60 {
        let dir = tempfile::tempdir().unwrap();
        let (all, starts) = build_batches(dir.path(), 1000 + seed, 30);
        let segs = segments(dir.path(), &all);
        // A segment roll syncs, so a new segment starts a new stretch.
        let last_stretch = (*starts.last().unwrap()).max(segs.last().unwrap().first);
        let mut rng = Rng(seed);
        for _ in 0..8 {
            let k = rng.below(segs.len() as u64) as usize;
            let seg = &segs[k];
            let original = fs::read(&seg.path).unwrap();
            let pos = rng.below(original.len() as u64);
            let mut bytes = original.clone();
            bytes[pos as usize] ^= 1 << rng.below(8);
            fs::write(&seg.path, &bytes).unwrap();
            let result = catch_unwind(AssertUnwindSafe(|| open(dir.path())))
                .unwrap_or_else(|_| panic!("seed {seed}: open panicked on a flip at {pos}"));
            let is_last_seg = k + 1 == segs.len();
            if pos < local::SEGMENT_HEADER_BYTES {
                let e = result.expect_err("a damaged header is never a torn tail");
                let want = if pos < 8 { 0 } else { 20 };
                assert_eq!(
                    corrupt_at(&e),
                    (seg.path.clone(), want),
                    "seed {seed} pos {pos}"
                );
                refused += 1;
            } else {
                let r = seg
                    .records
                    .iter()
                    .position(|r| r.0 <= pos && pos < r.1)
                    .unwrap();
                let (start, _) = seg.records[r];
                if is_last_seg && seg.first + r as u64 >= last_stretch {
                    let s = result.unwrap_or_else(|e| panic!("seed {seed} pos {pos}: {e}"));
                    let t = s.recovery().torn_tail.clone().expect("reported");
                    assert_eq!((t.file, t.offset), (seg.path.clone(), start));
                    assert_holds(&s, &all, seg.first + r as u64 - 1);
                    torn += 1;
                } else {
                    let e = result.expect_err("damage in the middle is refused");
                    assert_eq!(
                        corrupt_at(&e),
                        (seg.path.clone(), start),
                        "seed {seed}: flip at {pos} in record {r} of {:?}",
                        seg.path
                    );
                    assert!(e.to_string().contains(&seg.path.display().to_string()));
                    refused += 1;
                }
            }
            fs::write(&seg.path, &original).unwrap();
        }
    }
    assert!(
        torn > 0 && refused > 100,
        "both outcomes exercised: {torn} {refused}"
    );
}

/// The file system may persist the pages of an unsynced write in any
/// order: a hole of zeros with intact records after it is a torn write when
/// it lies in the last stretch, and damage when a later sync follows it.
#[test]
fn a_hole_in_the_last_unsynced_write_is_torn_but_refused_before_a_later_sync() {
    let big = LocalOptions {
        segment_bytes: 1 << 20,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut s = local::open(dir.path(), &big).unwrap();
    let mut all = Vec::new();
    for b in 0..3u64 {
        let batch: Vec<Entry> = (1..=8)
            .map(|k| Entry {
                index: b * 8 + k,
                term: 1,
                kind: EntryKind::Normal,
                data: vec![0xAB; 700].into(),
            })
            .collect();
        all.extend(batch.iter().cloned());
        s.persist(&Ready {
            entries: batch,
            ..Ready::default()
        })
        .unwrap();
    }
    drop(s);
    let segs = segments(dir.path(), &all);
    assert_eq!(segs.len(), 1);
    let seg = &segs[0];
    let original = fs::read(&seg.path).unwrap();
    let page = |from: u64| {
        let start = from.next_multiple_of(512) as usize;
        let mut bytes = original.clone();
        bytes[start..start + 512].fill(0);
        fs::write(&seg.path, &bytes).unwrap();
        seg.records.iter().position(|r| r.1 > start as u64).unwrap()
    };
    // A hole inside the last batch (records 17..=24), intact records after.
    let r = page(seg.records[18].0);
    let s = local::open(dir.path(), &big).unwrap();
    let t = s.recovery().torn_tail.clone().expect("reported");
    assert_eq!(t.offset, seg.records[r].0);
    assert_eq!(s.last_index(), r as u64);
    assert!(t.dropped_records >= 1);
    drop(s);
    fs::write(&seg.path, &original).unwrap();
    // The same hole in the second batch, which a later sync followed.
    let r = page(seg.records[10].0);
    let e = local::open(dir.path(), &big).unwrap_err();
    assert_eq!(corrupt_at(&e), (seg.path.clone(), seg.records[r].0));
    assert!(e.to_string().contains("later sync"), "{e}");
}

#[test]
fn a_missing_middle_segment_is_an_index_gap() {
    let dir = tempfile::tempdir().unwrap();
    let all = build(dir.path(), 3, 40);
    let segs = segments(dir.path(), &all);
    fs::remove_file(&segs[1].path).unwrap();
    let e = open(dir.path()).unwrap_err();
    let (file, offset) = corrupt_at(&e);
    assert_eq!((file, offset), (segs[2].path.clone(), 0));
    assert!(e.to_string().contains("index gap"), "{e}");
}

#[test]
fn a_log_ending_below_the_commit_index_or_the_snapshot_is_refused() {
    // The last segment deleted: the log now ends below the commit index.
    let dir = tempfile::tempdir().unwrap();
    let all = build(dir.path(), 21, 40);
    let mut s = open(dir.path()).unwrap();
    let hs = HardState {
        commit: all.len() as u64,
        ..s.hard_state()
    };
    s.set_hard_state(hs).unwrap();
    drop(s);
    let segs = segments(dir.path(), &all);
    fs::remove_file(&segs.last().unwrap().path).unwrap();
    let e = open(dir.path()).unwrap_err();
    assert!(matches!(e, StorageError::Inconsistent(_)), "{e:?}");
    assert!(
        e.to_string().contains("below the saved commit index") && e.to_string().contains("missing"),
        "{e}"
    );

    // Every segment deleted behind a snapshot: the log ends at its
    // compaction point, below the snapshot.
    let dir = tempfile::tempdir().unwrap();
    let all = build(dir.path(), 22, 40);
    let files = vec![vec![1u8; 10]];
    let mut s = open(dir.path()).unwrap();
    s.save_snapshot(snapshot_meta(30, all[29].term, &files), files)
        .unwrap();
    s.compact(20).unwrap();
    drop(s);
    for seg in segments_paths(dir.path()) {
        fs::remove_file(seg).unwrap();
    }
    let e = open(dir.path()).unwrap_err();
    assert!(
        e.to_string()
            .contains("the log ends at 20, below the latest snapshot at 30"),
        "{e}"
    );
}

fn meta_path(dir: &Path) -> PathBuf {
    dir.join("meta")
}

#[test]
fn an_interrupted_meta_save_leaves_the_previous_meta() {
    let mut rng = Rng(9);
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let all = build(dir.path(), 500 + round, 5);
        let hs = open(dir.path()).unwrap().hard_state();
        // A save cut short: a temp file of garbage, or nothing at all.
        let tmp = dir.path().join("meta.tmp");
        let garbage: Vec<u8> = (0..rng.below(200)).map(|_| rng.next() as u8).collect();
        if round % 4 != 0 {
            fs::write(&tmp, &garbage).unwrap();
        }
        let s = open(dir.path()).unwrap();
        assert_eq!(s.hard_state(), hs);
        assert_eq!(s.conf_state().voters, vec![1, 2, 3]);
        assert_holds(&s, &all, all.len() as u64);
        assert_eq!(s.recovery().removed.contains(&tmp), round % 4 != 0);
        assert!(!tmp.exists());
    }
}

#[test]
fn a_damaged_meta_file_is_refused_naming_it() {
    let mut rng = Rng(11);
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 12, 5);
    let path = meta_path(dir.path());
    let original = fs::read(&path).unwrap();
    for i in 0..100 {
        let mut bytes = original.clone();
        if i % 3 == 0 {
            bytes.truncate(rng.below(bytes.len() as u64) as usize);
        } else {
            let pos = rng.below(bytes.len() as u64) as usize;
            bytes[pos] ^= 1 << rng.below(8);
        }
        fs::write(&path, &bytes).unwrap();
        let e = open(dir.path()).unwrap_err();
        assert_eq!(corrupt_at(&e).0, path, "{e}");
    }
    fs::write(&path, &original).unwrap();
    open(dir.path()).unwrap();
}

#[test]
fn a_damaged_compaction_point_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let all = build(dir.path(), 13, 20);
    let mut s = open(dir.path()).unwrap();
    s.save_snapshot(snapshot_meta(10, all[9].term, &[]), vec![])
        .unwrap();
    s.compact(10).unwrap();
    drop(s);
    let path = dir.path().join("log").join("compacted");
    let mut bytes = fs::read(&path).unwrap();
    bytes[14] ^= 4;
    fs::write(&path, &bytes).unwrap();
    let e = open(dir.path()).unwrap_err();
    assert_eq!(corrupt_at(&e).0, path);
}

fn snapshot_meta(index: u64, term: u64, files: &[Vec<u8>]) -> SnapshotMeta {
    SnapshotMeta {
        index,
        term,
        conf: ConfState {
            index,
            voters: vec![1, 2],
            ..ConfState::default()
        },
        files: files
            .iter()
            .enumerate()
            .map(|(i, f)| SnapshotFile {
                name: format!("f{i}"),
                size: f.len() as u64,
                crc: checksum(f),
            })
            .collect(),
    }
}

fn snapshot_dir(dir: &Path) -> PathBuf {
    fs::read_dir(dir.join("snap"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().contains('-'))
        .unwrap()
}

#[test]
fn damaged_snapshots_are_refused_and_leftovers_removed() {
    let dir = tempfile::tempdir().unwrap();
    let all = build(dir.path(), 14, 20);
    let files = vec![vec![5u8; 100], b"second".to_vec()];
    let mut s = open(dir.path()).unwrap();
    s.save_snapshot(snapshot_meta(12, all[11].term, &files), files.clone())
        .unwrap();
    drop(s);
    // Leftovers of a save and of a begin that a crash cut short.
    let snap = dir.path().join("snap");
    for tmp in ["save.tmp", "partial.tmp"] {
        fs::create_dir(snap.join(tmp)).unwrap();
        fs::write(snap.join(tmp).join("0.dat"), b"half").unwrap();
    }
    let s = open(dir.path()).unwrap();
    assert_eq!(s.recovery().removed.len(), 2, "{:?}", s.recovery());
    assert_eq!(s.snapshot_files().unwrap().unwrap().1, files);
    drop(s);

    let complete = snapshot_dir(dir.path());
    let meta_file = complete.join("META");
    let original = fs::read(&meta_file).unwrap();
    let mut bytes = original.clone();
    bytes[20] ^= 0x10;
    fs::write(&meta_file, &bytes).unwrap();
    assert_eq!(corrupt_at(&open(dir.path()).unwrap_err()).0, meta_file);
    fs::write(&meta_file, &original).unwrap();

    let data = complete.join("0.dat");
    fs::write(&data, vec![5u8; 60]).unwrap();
    assert_eq!(
        corrupt_at(&open(dir.path()).unwrap_err()),
        (data.clone(), 60)
    );
    // Same size, other bytes: found when the files are read, and named.
    let mut flipped = vec![5u8; 100];
    flipped[42] ^= 1;
    fs::write(&data, &flipped).unwrap();
    let e = open(dir.path()).unwrap().snapshot_files().unwrap_err();
    assert_eq!(corrupt_at(&e), (data.clone(), 0), "{e}");
    assert!(e.to_string().contains("CRC-32C"), "{e}");
    fs::write(&data, vec![5u8; 100]).unwrap();
    open(dir.path()).unwrap();
}

#[test]
fn a_torn_snapshot_chunk_resumes_from_what_reached_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 15, 5);
    let files = vec![vec![8u8; 1000]];
    let meta = snapshot_meta(200, 9, &files);
    let mut s = open(dir.path()).unwrap();
    s.persist(&Ready {
        snapshot_ops: vec![
            SnapshotOp::Begin(meta.clone()),
            SnapshotOp::Chunk {
                file: 0,
                offset: 0,
                data: files[0][..600].to_vec().into(),
            },
        ],
        ..Ready::default()
    })
    .unwrap();
    drop(s);
    // The last chunk reached the disk only in part.
    let data = dir.path().join("snap/partial/0.dat");
    fs::write(&data, &files[0][..437]).unwrap();
    let mut s = open(dir.path()).unwrap();
    assert_eq!(s.partial_snapshot(), Some((meta.clone(), vec![437])));
    s.persist(&Ready {
        snapshot_ops: vec![
            SnapshotOp::Chunk {
                file: 0,
                offset: 437,
                data: files[0][437..].to_vec().into(),
            },
            SnapshotOp::Install(meta.clone()),
        ],
        ..Ready::default()
    })
    .unwrap();
    assert_eq!(s.snapshot_files().unwrap(), Some((meta, files)));
}

/// Sets up a fully received snapshot at 80 over a log of 1..=40, ready to
/// install; returns its meta.
fn ready_to_install(dir: &Path) -> SnapshotMeta {
    build(dir, 16, 8);
    let files = vec![b"the state at 80".to_vec()];
    let meta = snapshot_meta(80, 7, &files);
    let mut s = open(dir).unwrap();
    s.persist(&Ready {
        snapshot_ops: vec![
            SnapshotOp::Begin(meta.clone()),
            SnapshotOp::Chunk {
                file: 0,
                offset: 0,
                data: files[0].clone().into(),
            },
        ],
        ..Ready::default()
    })
    .unwrap();
    meta
}

#[test]
fn an_install_cut_short_is_completed_on_open() {
    // The install's durable steps are: reset the log, save the meta, move
    // the snapshot into place. Crash after the first and after the second.
    for steps in 1..=2 {
        let dir = tempfile::tempdir().unwrap();
        let meta = ready_to_install(dir.path());
        let mut report = RecoveryReport::default();
        let mut log = SegmentedLog::open(&dir.path().join("log"), 512, &mut report).unwrap();
        log.reset(meta.index, meta.term).unwrap();
        if steps == 2 {
            let (mut m, _) = LocalMeta::open(dir.path(), &mut report).unwrap();
            let (mut hs, _) = m.load();
            hs.commit = 80;
            m.save(&hs, &meta.conf).unwrap();
        }
        drop(log);
        let s = open(dir.path()).unwrap();
        assert_eq!(s.recovery().install_completed, Some(80));
        assert_eq!((s.first_index(), s.last_index()), (81, 80));
        assert_eq!(s.snapshot_meta(), Some(meta.clone()));
        assert_eq!(s.partial_snapshot(), None);
        assert_eq!(s.conf_state(), &meta.conf);
        assert_eq!(s.hard_state().commit, 80);
        drop(s);
        assert!(open(dir.path()).unwrap().recovery().is_clean());
    }
}

#[test]
fn an_install_not_yet_begun_leaves_the_received_snapshot_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let meta = ready_to_install(dir.path());
    let s = open(dir.path()).unwrap();
    assert!(s.recovery().is_clean());
    assert_eq!(s.partial_snapshot().map(|p| p.0), Some(meta));
    assert!(s.snapshot_meta().is_none());
}

#[test]
fn a_log_compacted_past_every_snapshot_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), 17, 10);
    let mut report = RecoveryReport::default();
    let mut log = SegmentedLog::open(&dir.path().join("log"), 512, &mut report).unwrap();
    log.reset(90, 9).unwrap();
    drop(log);
    let e = open(dir.path()).unwrap_err();
    assert!(matches!(e, StorageError::Inconsistent(_)), "{e}");
    // The pieces open on their own; only their combination is refused.
    LocalSnapshots::open(&dir.path().join("snap"), &mut report).unwrap();
}

#[test]
fn a_leftover_segment_being_created_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let all = build(dir.path(), 18, 10);
    let tmp = dir.path().join("log").join(format!(
        "{}.tmp",
        local::segment_file_name(all.len() as u64 + 1)
    ));
    fs::write(&tmp, b"CDSR").unwrap();
    let s = open(dir.path()).unwrap();
    assert_eq!(s.recovery().removed, vec![tmp]);
    assert_holds(&s, &all, all.len() as u64);
}

/// Every file of the store, for random damage.
fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn random_damage_anywhere_never_panics_and_never_passes_silently() {
    for seed in 0..150 {
        let dir = tempfile::tempdir().unwrap();
        let all = build(dir.path(), 2000 + seed, 20);
        let mut s = open(dir.path()).unwrap();
        let files = vec![vec![seed as u8; 300]];
        let at = 5 + seed % 10;
        s.save_snapshot(snapshot_meta(at, all[at as usize - 1].term, &files), files)
            .unwrap();
        s.compact(at - 2).unwrap();
        let partial = vec![1u8; 100];
        let meta = snapshot_meta(500, 40, std::slice::from_ref(&partial));
        s.persist(&Ready {
            snapshot_ops: vec![
                SnapshotOp::Begin(meta),
                SnapshotOp::Chunk {
                    file: 0,
                    offset: 0,
                    data: partial[..50].to_vec().into(),
                },
            ],
            ..Ready::default()
        })
        .unwrap();
        drop(s);
        let mut rng = Rng(seed);
        let targets = all_files(dir.path());
        let target = &targets[rng.below(targets.len() as u64) as usize];
        let mut bytes = fs::read(target).unwrap();
        let before = bytes.clone();
        match rng.below(3) {
            0 if !bytes.is_empty() => {
                let pos = rng.below(bytes.len() as u64) as usize;
                bytes[pos] ^= 1 << rng.below(8);
            }
            1 => bytes.truncate(rng.below(bytes.len() as u64 + 1) as usize),
            _ => bytes.extend((0..1 + rng.below(64)).map(|_| rng.next() as u8)),
        }
        fs::write(target, &bytes).unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let s = open(dir.path())?;
            // Whatever opened must read back, or refuse to, without panicking.
            s.entries(s.first_index(), s.last_index() + 1, u64::MAX)
                .map_err(|e| StorageError::Inconsistent(e.to_string()))?;
            s.snapshot_files()?;
            Ok::<RecoveryReport, StorageError>(s.recovery().clone())
        }))
        .unwrap_or_else(|_| panic!("seed {seed}: panicked after damaging {target:?}"));
        if let Ok(report) = outcome {
            // Accepted damage is either harmless (bytes that mean nothing,
            // like a partial snapshot's unsynced end) or reported.
            let partial_data = target.ends_with("partial/0.dat");
            assert!(
                bytes == before || partial_data || !report.is_clean(),
                "seed {seed}: damage to {target:?} passed silently"
            );
        }
    }
}
