//! The block engine on the real disk: damage is detected and never
//! served, unsynced bytes are cut on reopen, bad requests are refused,
//! copy-on-write copies only what it must, and reclaimed slots are reused.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use cds::engine::{
    Command, Engine, EngineError, Geometry, Outcome, ReadAt, Refusal, Step, VersionState,
    MAX_RETAINED_VERSIONS, SECTOR,
};
use raft_core::storage::fs::{Fs, RealFs};

const G: Geometry = Geometry {
    block_size: 1 << 20,
    slice_size: 64 << 10,
};

fn fs() -> Arc<dyn Fs> {
    Arc::new(RealFs)
}

/// A write to volume 7 at head version `head` (based on `base`).
fn write_at(head: u64, base: u64, offset: u64, len: u64, byte: u8) -> Command {
    Command::Write {
        volume: 7,
        block: 3,
        offset,
        data: Bytes::from(vec![byte; len as usize]),
        epoch: 1,
        head,
        base,
    }
}

/// A write to volume 7 at its first version.
fn write(offset: u64, len: u64, byte: u8) -> Command {
    write_at(1, 0, offset, len, byte)
}

/// A snapshot of volume 7: head `head - 1` frozen, `head` started on it.
fn mark(head: u64) -> Command {
    Command::Advance {
        volume: 7,
        head,
        base: head - 1,
    }
}

/// A rollback of volume 7 to retained version `to`, as new head `head`.
fn rollback(head: u64, to: u64) -> Command {
    Command::Advance {
        volume: 7,
        head,
        base: to,
    }
}

fn at(v: Option<u64>) -> ReadAt {
    v.map_or(ReadAt::Head, ReadAt::Version)
}

fn read(e: &mut Engine, offset: u64, len: u64, v: Option<u64>) -> Result<Vec<u8>, EngineError> {
    let mut buf = vec![0xEE; len as usize];
    e.read(7, 3, offset, &mut buf, at(v))?
        .expect("read accepted");
    Ok(buf)
}

/// Applies `cmds` from index 1 and flushes.
fn engine_with(dir: &Path, cmds: &[Command]) -> Engine {
    let mut e = Engine::create(fs(), dir, G).expect("create");
    for (i, c) in cmds.iter().enumerate() {
        e.apply(i as u64 + 1, c)
            .expect("healthy")
            .expect("accepted");
    }
    e.flush().expect("flush");
    e
}

#[test]
fn a_flipped_bit_in_a_sector_is_detected_and_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine_with(
        dir.path(),
        &[
            write(0, 2 * SECTOR, 0xAB),
            write(G.slice_size, SECTOR, 0xCD),
        ],
    );
    drop(e);
    // The first slot's second sector: frames are a sector and 8 bytes.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.path().join("slots"))
        .unwrap();
    f.seek(SeekFrom::Start((SECTOR + 8) + 100)).unwrap();
    f.write_all(&[0x00]).unwrap();
    drop(f);
    e = Engine::open(fs(), dir.path()).expect("reopen");
    assert_eq!(
        read(&mut e, 0, SECTOR, None).unwrap(),
        vec![0xAB; SECTOR as usize]
    );
    match read(&mut e, SECTOR, SECTOR, None) {
        Err(EngineError::CorruptSector {
            slot: 0, sector: 1, ..
        }) => {}
        other => panic!("a corrupt sector was not reported: {other:?}"),
    }
    // Other slices still serve, and the engine still takes writes.
    assert_eq!(
        read(&mut e, G.slice_size, SECTOR, None).unwrap(),
        vec![0xCD; SECTOR as usize]
    );
    e.apply(3, &write(0, SECTOR, 1)).unwrap().unwrap();
}

#[test]
fn damage_within_the_durable_journal_is_reported_and_a_tail_past_it_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with(
        dir.path(),
        &[write(0, SECTOR, 1), mark(2), write_at(2, 1, 0, SECTOR, 2)],
    );
    assert_eq!(e.durable_index(), 3);
    drop(e);
    let journal = dir.path().join("journal.1");
    let good = std::fs::read(&journal).unwrap();

    // Garbage after the durable length: a crash while records of later
    // commands were being written. Cut, and the state is the flushed one.
    let mut torn = good.clone();
    torn.extend_from_slice(&[0x5A; 37]);
    std::fs::write(&journal, &torn).unwrap();
    let mut e = Engine::open(fs(), dir.path()).expect("reopen past a torn tail");
    assert_eq!(e.durable_index(), 3);
    assert_eq!(
        read(&mut e, 0, SECTOR, None).unwrap(),
        vec![2; SECTOR as usize]
    );
    assert_eq!(
        read(&mut e, 0, SECTOR, Some(1)).unwrap(),
        vec![1; SECTOR as usize]
    );
    drop(e);
    assert_eq!(
        std::fs::read(&journal).unwrap(),
        good,
        "the tail was not cut"
    );

    // A flipped byte inside the durable part is corruption.
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 0x40;
    std::fs::write(&journal, &bad).unwrap();
    match Engine::open(fs(), dir.path()) {
        Err(EngineError::CorruptMeta { .. }) => {}
        other => panic!("damage was not reported: {other:?}"),
    }
    // So is a journal shorter than the superblock says.
    std::fs::write(&journal, &good[..good.len() - 1]).unwrap();
    assert!(matches!(
        Engine::open(fs(), dir.path()),
        Err(EngineError::CorruptMeta { .. })
    ));
    // And a damaged superblock, or none.
    std::fs::write(&journal, &good).unwrap();
    let sup = dir.path().join("super");
    let mut s = std::fs::read(&sup).unwrap();
    s[20] ^= 1;
    std::fs::write(&sup, &s).unwrap();
    assert!(matches!(
        Engine::open(fs(), dir.path()),
        Err(EngineError::CorruptMeta { .. })
    ));
    std::fs::remove_file(&sup).unwrap();
    assert!(matches!(
        Engine::open(fs(), dir.path()),
        Err(EngineError::NotAnEngine { .. })
    ));
}

#[test]
fn bad_requests_are_refused_the_same_way_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine_with(dir.path(), &[write(0, SECTOR, 9)]);
    let mut i = 1;
    let mut refused = |e: &mut Engine, c: Command| {
        i += 1;
        e.apply(i, &c).expect("healthy").expect_err("refused")
    };
    assert!(matches!(
        refused(&mut e, write(100, SECTOR, 1)),
        Refusal::Misaligned { .. }
    ));
    assert!(matches!(
        refused(&mut e, write(0, 100, 1)),
        Refusal::Misaligned { .. }
    ));
    assert!(matches!(
        refused(&mut e, write(G.block_size - SECTOR, 2 * SECTOR, 1)),
        Refusal::OutOfRange { .. }
    ));
    assert!(matches!(
        refused(
            &mut e,
            Command::Zero {
                volume: 7,
                block: 3,
                offset: u64::MAX - 4095,
                len: 8192,
                epoch: 1,
                head: 1,
                base: 0,
            }
        ),
        Refusal::OutOfRange { .. }
    ));
    assert_eq!(
        refused(
            &mut e,
            Command::Drop {
                volume: 7,
                version: 1
            }
        ),
        Refusal::NotRetained(1)
    );
    assert_eq!(
        refused(&mut e, rollback(10, 9)),
        Refusal::UnknownBase { volume: 7, base: 9 }
    );
    // A writer behind the head is told where it is.
    let mut buf = vec![0; SECTOR as usize];
    assert_eq!(
        e.read(7, 3, 0, &mut buf, ReadAt::Version(5)).unwrap(),
        Err(Refusal::NoSuchVersion(5))
    );
    // Nothing changed, and the refused commands still count as applied.
    assert_eq!(
        read(&mut e, 0, SECTOR, None).unwrap(),
        vec![9; SECTOR as usize]
    );
    assert_eq!(e.applied_index(), 7);
    // Versions are bounded.
    let mut idx = 100;
    for h in 2..MAX_RETAINED_VERSIONS as u64 + 2 {
        idx += 1;
        e.apply(idx, &mark(h)).unwrap().unwrap();
    }
    assert_eq!(
        e.apply(idx + 1, &mark(MAX_RETAINED_VERSIONS as u64 + 2))
            .unwrap(),
        Err(Refusal::TooManyVersions)
    );
    // A write at an older head is refused with the head it must use.
    assert_eq!(
        e.apply(idx + 2, &write(0, SECTOR, 1)).unwrap().unwrap_err(),
        Refusal::Stale {
            volume: 7,
            asked: 1,
            head: MAX_RETAINED_VERSIONS as u64 + 1,
            base: MAX_RETAINED_VERSIONS as u64,
        }
    );
}

#[test]
fn a_mark_copies_nothing_and_the_first_write_after_it_copies_one_slice() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine_with(dir.path(), &[write(0, G.slice_size * 4, 1)]);
    let used = e.stats().slots_used;
    assert_eq!(used, 4);
    let Outcome::Advanced {
        head: 2,
        step: Step::Marked,
    } = e.apply(2, &mark(2)).unwrap().unwrap()
    else {
        panic!("not marked")
    };
    let version = 1;
    assert_eq!(
        (e.stats().copies, e.stats().slots_used),
        (0, 4),
        "a mark copied"
    );
    e.apply(3, &write_at(2, 1, SECTOR, SECTOR, 2))
        .unwrap()
        .unwrap();
    e.apply(4, &write_at(2, 1, 2 * SECTOR, SECTOR, 3))
        .unwrap()
        .unwrap();
    assert_eq!((e.stats().copies, e.stats().slots_used), (1, 5));
    let head = read(&mut e, 0, 3 * SECTOR, None).unwrap();
    assert_eq!(head[..SECTOR as usize], vec![1; SECTOR as usize][..]);
    assert_eq!(
        head[SECTOR as usize..2 * SECTOR as usize],
        vec![2; SECTOR as usize][..]
    );
    assert_eq!(
        read(&mut e, 0, 3 * SECTOR, Some(version)).unwrap(),
        vec![1; 3 * SECTOR as usize]
    );
}

#[test]
fn a_rollback_is_immediate_and_reclaiming_reuses_the_abandoned_slots() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine_with(dir.path(), &[write(0, G.block_size, 1), mark(2)]);
    // The head rewrites the whole block: 16 new slots.
    e.apply(3, &write_at(2, 1, 0, G.block_size, 2))
        .unwrap()
        .unwrap();
    assert_eq!(e.stats().slots_used, 32);
    let head = 3;
    assert_eq!(
        e.apply(4, &rollback(head, 1)).unwrap(),
        Ok(Outcome::Advanced {
            head,
            step: Step::RolledBack
        })
    );
    // Whole slices written over are not copied first.
    assert_eq!(e.stats().copies, 0);
    // At once, before any reclaiming: the head reads the snapshot.
    assert_eq!(
        read(&mut e, 0, G.block_size, None).unwrap(),
        vec![1; G.block_size as usize]
    );
    assert_eq!(e.head(7), Some(head));
    // Writes after the rollback land on top of it.
    e.apply(5, &write_at(head, 1, 0, SECTOR, 3))
        .unwrap()
        .unwrap();
    assert_eq!(
        read(&mut e, 0, SECTOR, None).unwrap(),
        vec![3; SECTOR as usize]
    );
    assert_eq!(
        read(&mut e, SECTOR, SECTOR, None).unwrap(),
        vec![1; SECTOR as usize]
    );
    // Reclaiming, a few slices at a time, frees the abandoned head's 16
    // slots; after a flush they are reused instead of growing the file.
    let mut steps = 0;
    while e.gc_step(4).unwrap() {
        steps += 1;
    }
    assert!(steps >= 3, "reclaiming did not go in steps: {steps}");
    assert_eq!(e.stats().slots_pending_free, 16);
    e.flush().unwrap();
    assert_eq!((e.stats().slots_free, e.stats().slots_used), (16, 17));
    let len = std::fs::metadata(dir.path().join("slots")).unwrap().len();
    e.apply(6, &write_at(head, 1, 0, G.block_size, 4))
        .unwrap()
        .unwrap();
    assert_eq!(
        std::fs::metadata(dir.path().join("slots")).unwrap().len(),
        len
    );
    // Dropping the snapshot, the abandoned head leaves the version tree.
    e.apply(
        7,
        &Command::Drop {
            volume: 7,
            version: 1,
        },
    )
    .unwrap()
    .unwrap();
    while e.gc_step(64).unwrap() {}
    e.flush().unwrap();
    let states: Vec<_> = e.versions(7).iter().map(|v| (v.version, v.state)).collect();
    assert!(
        !states.iter().any(|(v, _)| *v == 2),
        "the abandoned head is still in the tree: {states:?}"
    );
    assert!(states.contains(&(head, VersionState::Head)), "{states:?}");
    assert_eq!(e.stats().slots_used, 16);
    // And all of it survives a reopen.
    drop(e);
    let mut e = Engine::open(fs(), dir.path()).unwrap();
    assert_eq!(
        read(&mut e, 0, G.block_size, None).unwrap(),
        vec![4; G.block_size as usize]
    );
    assert_eq!(e.stats().slots_used, 16);
}

#[test]
fn an_export_imports_elsewhere_and_a_damaged_or_hostile_stream_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine_with(
        dir.path(),
        &[
            write(0, 3 * SECTOR, 5),
            mark(2),
            write_at(2, 1, SECTOR, SECTOR, 6),
        ],
    );
    let x = e.begin_export().unwrap();
    assert!(matches!(e.begin_export(), Err(EngineError::ExportBusy)));
    // Writes go on beside the export, and do not reach it.
    e.apply(4, &write_at(2, 1, 0, SECTOR, 7)).unwrap().unwrap();
    let mut stream = Vec::new();
    x.write_to(&mut stream).unwrap();
    e.end_export();
    let target = dir.path().join("copy");
    let mut copy = Engine::import(fs(), &target, &mut stream.as_slice()).unwrap();
    assert_eq!(copy.durable_index(), 3);
    let head = read(&mut copy, 0, 2 * SECTOR, None).unwrap();
    assert_eq!(head[..SECTOR as usize], vec![5; SECTOR as usize][..]);
    assert_eq!(head[SECTOR as usize..], vec![6; SECTOR as usize][..]);
    assert_eq!(
        read(&mut copy, SECTOR, SECTOR, Some(1)).unwrap(),
        vec![5; SECTOR as usize]
    );
    drop(copy);

    let refused = |bytes: &[u8], what: &str| {
        let r = Engine::import(fs(), &target, &mut &bytes[..]);
        assert!(matches!(r, Err(EngineError::BadExport(_))), "{what}: {r:?}");
    };
    refused(b"not an export at all, just text", "wrong magic");
    refused(&stream[..stream.len() - 1], "cut short");
    let mut longer = stream.clone();
    longer.push(0);
    refused(&longer, "trailing bytes");
    let mut flipped = stream.clone();
    flipped[20] ^= 1;
    refused(&flipped, "header bit flip");
    // A header claiming a huge image (with a good checksum) is refused
    // before anything is allocated.
    let mut huge = stream[..52].to_vec();
    huge[32..40].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    let crc = raft_core::checksum(&huge[..48]);
    huge[48..52].copy_from_slice(&crc.to_le_bytes());
    refused(&huge, "huge image");
    // A refused import left the earlier copy in place, and nothing staged.
    assert!(!dir.path().join("copy.import").exists());
    let mut copy = Engine::open(fs(), &target).unwrap();
    assert_eq!(
        read(&mut copy, 0, SECTOR, None).unwrap(),
        vec![5; SECTOR as usize]
    );
}

#[test]
fn a_writer_of_an_older_epoch_is_fenced_across_reopen_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let at = |epoch: u64, byte: u8| Command::Write {
        volume: 7,
        block: 3,
        offset: 0,
        data: Bytes::from(vec![byte; SECTOR as usize]),
        epoch,
        head: 1,
        base: 0,
    };
    let mut e = engine_with(dir.path(), &[at(1, 1), at(2, 2)]);
    let fenced = Refusal::Fenced {
        volume: 7,
        epoch: 1,
        current: 2,
    };
    assert_eq!(e.apply(3, &at(1, 3)).unwrap(), Err(fenced.clone()));
    assert_eq!(
        read(&mut e, 0, SECTOR, None).unwrap(),
        vec![2; SECTOR as usize]
    );
    // Other volumes have their own epochs.
    let other = Command::Write {
        volume: 8,
        block: 3,
        offset: 0,
        data: Bytes::from(vec![4; SECTOR as usize]),
        epoch: 1,
        head: 1,
        base: 0,
    };
    assert_eq!(e.apply(4, &other).unwrap(), Ok(Outcome::Written));
    e.flush().unwrap();
    drop(e);
    let mut e = Engine::open(fs(), dir.path()).unwrap();
    assert_eq!(e.epoch(7), 2);
    assert_eq!(e.apply(5, &at(1, 3)).unwrap(), Err(fenced.clone()));
    let x = e.begin_export().unwrap();
    let mut stream = Vec::new();
    x.write_to(&mut stream).unwrap();
    e.end_export();
    let mut copy = Engine::import(fs(), &dir.path().join("copy"), &mut stream.as_slice()).unwrap();
    assert_eq!(copy.apply(6, &at(1, 3)).unwrap(), Err(fenced));
    assert_eq!(copy.apply(7, &at(3, 3)).unwrap(), Ok(Outcome::Written));
}

#[test]
fn a_fence_takes_the_new_epoch_without_writing_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let write = |epoch: u64| Command::Write {
        volume: 7,
        block: 3,
        offset: 0,
        data: Bytes::from(vec![epoch as u8; SECTOR as usize]),
        epoch,
        head: 1,
        base: 0,
    };
    let mut e = engine_with(dir.path(), &[write(1)]);
    // A new writer's open: the old one is refused from now on, though
    // the new one has written nothing here.
    let fence = |epoch| Command::Fence { volume: 7, epoch };
    assert_eq!(e.apply(2, &fence(2)).unwrap(), Ok(Outcome::Fenced));
    let stale = Refusal::Fenced {
        volume: 7,
        epoch: 1,
        current: 2,
    };
    assert_eq!(e.apply(3, &write(1)).unwrap(), Err(stale.clone()));
    assert_eq!(
        read(&mut e, 0, SECTOR, None).unwrap(),
        vec![1; SECTOR as usize]
    );
    // An older fence is refused like an older write.
    assert_eq!(e.apply(4, &fence(1)).unwrap(), Err(stale.clone()));
    e.flush().unwrap();
    drop(e);
    let mut e = Engine::open(fs(), dir.path()).unwrap();
    assert_eq!(e.apply(5, &write(1)).unwrap(), Err(stale));
    assert_eq!(e.apply(6, &write(2)).unwrap(), Ok(Outcome::Written));
    // The entry round-trips through its Raft payload.
    let payload = cds::blockgroup::command::encode(&fence(9));
    assert_eq!(cds::blockgroup::command::decode(&payload), Ok(fence(9)));
}

#[test]
fn a_purge_forgets_one_volume_at_every_version_and_fences_its_writers() {
    let dir = tempfile::tempdir().unwrap();
    let other = |offset: u64, byte: u8, head: u64| Command::Write {
        volume: 8,
        block: 3,
        offset,
        data: Bytes::from(vec![byte; SECTOR as usize]),
        epoch: 1,
        head,
        base: head - 1,
    };
    let mut e = engine_with(
        dir.path(),
        &[
            write(0, 2 * SECTOR, 0xAB),
            other(0, 0x11, 1),
            mark(2),
            write_at(2, 1, 0, SECTOR, 0xCD),
            // Volume 8's snapshot, taken by its first write at version 2.
            other(0, 0x22, 2),
        ],
    );
    let used = e.stats().slots_used;
    assert!(e.holds_volume(7));
    let r = e.apply(6, &Command::Purge { volume: 7 }).unwrap().unwrap();
    assert_eq!(r, Outcome::Purged { entries: 2 });
    assert!(!e.holds_volume(7) && e.purged(7));
    // Volume 7 reads as zeros at the head and at the retained version;
    // volume 8 is untouched at both.
    assert_eq!(
        read(&mut e, 0, SECTOR, None).unwrap(),
        vec![0; SECTOR as usize]
    );
    assert_eq!(
        read(&mut e, 0, SECTOR, Some(1)).unwrap(),
        vec![0; SECTOR as usize]
    );
    let mut b = vec![0; SECTOR as usize];
    e.read(8, 3, 0, &mut b, ReadAt::Head).unwrap().unwrap();
    assert_eq!(b, vec![0x22; SECTOR as usize]);
    e.read(8, 3, 0, &mut b, ReadAt::Version(1))
        .unwrap()
        .unwrap();
    assert_eq!(b, vec![0x11; SECTOR as usize]);
    // A writer that still holds volume 7 open is fenced.
    match e.apply(7, &write_at(2, 1, 0, SECTOR, 1)).unwrap() {
        Err(Refusal::Fenced { volume: 7, .. }) => {}
        other => panic!("a write to a purged volume: {other:?}"),
    }
    // Its slots are free after a flush, and all of it survives a reopen.
    e.flush().unwrap();
    assert_eq!(e.stats().slots_used, used - 2, "{:?}", e.stats());
    drop(e);
    let mut e = Engine::open(fs(), dir.path()).unwrap();
    assert!(e.purged(7) && !e.holds_volume(7));
    e.read(8, 3, 0, &mut b, ReadAt::Head).unwrap().unwrap();
    assert_eq!(b, vec![0x22; SECTOR as usize]);
}
