//! A corrupt sector repaired from another replica's engine: only with a
//! copy that holds at the damaged replica's point of the log, and a
//! copy-on-write never turns a corrupt sector into good bytes.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use cds::engine::{Command, Engine, EngineError, Geometry, ReadAt, Repair, SectorId, SECTOR};
use raft_core::storage::fs::{Fs, RealFs};

const G: Geometry = Geometry {
    block_size: 1 << 20,
    slice_size: 64 << 10,
};
/// Bytes of a sector's frame in the slot file.
const FRAME: u64 = SECTOR + 8;

fn write(offset: u64, len: u64, byte: u8) -> Command {
    write_at(1, 0, offset, len, byte)
}

/// A write at head version `head` (based on `base`).
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

fn at(v: Option<u64>) -> ReadAt {
    v.map_or(ReadAt::Head, ReadAt::Version)
}

fn read(e: &mut Engine, offset: u64, v: Option<u64>) -> Result<Vec<u8>, EngineError> {
    let mut buf = vec![0xEE; SECTOR as usize];
    e.read(7, 3, offset, &mut buf, at(v))?
        .expect("read accepted");
    Ok(buf)
}

fn engine(dir: &Path, cmds: &[Command]) -> Engine {
    let fs: Arc<dyn Fs> = Arc::new(RealFs);
    let mut e = Engine::create(fs, dir, G).expect("create");
    for (i, c) in cmds.iter().enumerate() {
        e.apply(i as u64 + 1, c)
            .expect("healthy")
            .expect("accepted");
    }
    e.flush().expect("flush");
    e
}

/// Flips a byte of `slot`'s sector `sector` on disk.
fn rot(dir: &Path, slot: u64, sector: u64) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("slots"))
        .unwrap();
    let slot_bytes = G.slice_size / SECTOR * FRAME;
    f.seek(SeekFrom::Start(slot * slot_bytes + sector * FRAME + 17))
        .unwrap();
    f.write_all(&[0x5A]).unwrap();
    f.sync_all().unwrap();
}

/// The corrupt sector a read at `offset` hits, located in the engine.
fn corrupt_at(e: &mut Engine, offset: u64, at: Option<u64>) -> SectorId {
    match read(e, offset, at) {
        Err(EngineError::CorruptSector { slot, sector, .. }) => {
            e.locate(slot, sector).expect("a mapped slot")
        }
        other => panic!("expected a corrupt sector, got {other:?}"),
    }
}

#[test]
fn a_replica_at_the_same_index_repairs_the_sector() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cmds = [write(0, 4 * SECTOR, 0xAB)];
    let mut a = engine(da.path(), &cmds);
    let mut b = engine(db.path(), &cmds);
    rot(da.path(), 0, 2);
    let id = corrupt_at(&mut a, 2 * SECTOR, None);
    assert_eq!(id.sector, 2);
    let copy = b.copy_sector(id).unwrap().expect("b holds it");
    assert_eq!(a.repair_sector(id, &copy).unwrap(), Repair::Repaired);
    assert_eq!(
        read(&mut a, 2 * SECTOR, None).unwrap(),
        vec![0xAB; SECTOR as usize]
    );
    assert_eq!(a.stats().repaired, 1);
    // Asking again changes nothing.
    assert_eq!(a.repair_sector(id, &copy).unwrap(), Repair::Healthy);
}

#[test]
fn a_copy_from_another_point_of_the_log_waits_until_it_holds() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = engine(da.path(), &[write(0, 4 * SECTOR, 0xAB)]);
    // b is ahead: index 2 rewrote the corrupt sector's slice.
    let mut b = engine(
        db.path(),
        &[write(0, 4 * SECTOR, 0xAB), write(SECTOR, 2 * SECTOR, 0xCD)],
    );
    rot(da.path(), 0, 1);
    let id = corrupt_at(&mut a, SECTOR, None);
    let copy = b.copy_sector(id).unwrap().unwrap();
    assert_eq!((copy.since, copy.at), (2, 2));
    // b's bytes are from index 2; a is at 1, where the sector was 0xAB.
    assert_eq!(a.repair_sector(id, &copy).unwrap(), Repair::Later);
    assert!(read(&mut a, SECTOR, None).is_err(), "still never served");
    // Once a applied index 2 too (not covering sector 1... it does: the
    // write rewrote sectors 1 and 2, healing it), so damage sector 3.
    rot(da.path(), 0, 3);
    a.apply(2, &write(SECTOR, 2 * SECTOR, 0xCD))
        .unwrap()
        .unwrap();
    assert_eq!(
        read(&mut a, SECTOR, None).unwrap(),
        vec![0xCD; SECTOR as usize]
    );
    let id3 = corrupt_at(&mut a, 3 * SECTOR, None);
    let copy3 = b.copy_sector(id3).unwrap().unwrap();
    assert_eq!(a.repair_sector(id3, &copy3).unwrap(), Repair::Repaired);
    assert_eq!(
        read(&mut a, 3 * SECTOR, None).unwrap(),
        vec![0xAB; SECTOR as usize]
    );

    // Now a is ahead of a peer c that has not applied index 2: c's copy
    // is from before a's last change to the slice, so it must wait.
    let dc = tempfile::tempdir().unwrap();
    let mut c = engine(dc.path(), &[write(0, 4 * SECTOR, 0xAB)]);
    rot(da.path(), 0, 2);
    let id2 = corrupt_at(&mut a, 2 * SECTOR, None);
    let old = c.copy_sector(id2).unwrap().unwrap();
    assert_eq!(a.repair_sector(id2, &old).unwrap(), Repair::Later);
    c.apply(2, &write(SECTOR, 2 * SECTOR, 0xCD))
        .unwrap()
        .unwrap();
    let new = c.copy_sector(id2).unwrap().unwrap();
    assert_eq!(a.repair_sector(id2, &new).unwrap(), Repair::Repaired);
    assert_eq!(
        read(&mut a, 2 * SECTOR, None).unwrap(),
        vec![0xCD; SECTOR as usize]
    );
}

#[test]
fn a_peer_behind_serves_a_slice_nobody_changed_since() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = engine(
        da.path(),
        &[
            write(0, 4 * SECTOR, 0xAB),
            write(G.slice_size, SECTOR, 0x11),
        ],
    );
    // b missed index 2, which wrote another slice.
    let mut b = engine(db.path(), &[write(0, 4 * SECTOR, 0xAB)]);
    rot(da.path(), 0, 0);
    let id = corrupt_at(&mut a, 0, None);
    let copy = b.copy_sector(id).unwrap().unwrap();
    assert_eq!(copy.at, 1);
    assert_eq!(a.repair_sector(id, &copy).unwrap(), Repair::Repaired);
    assert_eq!(read(&mut a, 0, None).unwrap(), vec![0xAB; SECTOR as usize]);
}

#[test]
fn a_copy_on_write_carries_a_corrupt_sector_as_corrupt_and_it_is_repaired_later() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mark = Command::Advance {
        volume: 7,
        head: 2,
        base: 1,
    };
    let cmds = [write(0, 4 * SECTOR, 0xAB), mark];
    let mut a = engine(da.path(), &cmds);
    let mut b = engine(db.path(), &cmds);
    rot(da.path(), 0, 2);
    // The first write after the mark copies the slice: the copy must not
    // fail the replica, and must not turn sector 2 into good bytes.
    let w = write_at(2, 1, 0, SECTOR, 0x77);
    a.apply(3, &w).expect("the replica keeps going").unwrap();
    b.apply(3, &w).unwrap().unwrap();
    assert_eq!(a.stats().corrupt_carried, 1);
    assert_eq!(read(&mut a, 0, None).unwrap(), vec![0x77; SECTOR as usize]);
    let head = corrupt_at(&mut a, 2 * SECTOR, None);
    let old = corrupt_at(&mut a, 2 * SECTOR, Some(1));
    assert_ne!(head.version, old.version);
    for id in [head, old] {
        let copy = b.copy_sector(id).unwrap().unwrap();
        assert_eq!(a.repair_sector(id, &copy).unwrap(), Repair::Repaired);
    }
    assert_eq!(
        read(&mut a, 2 * SECTOR, None).unwrap(),
        vec![0xAB; SECTOR as usize]
    );
    assert_eq!(
        read(&mut a, 2 * SECTOR, Some(1)).unwrap(),
        vec![0xAB; SECTOR as usize]
    );
}
