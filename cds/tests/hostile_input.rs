//! Damaged and hostile bytes never panic: the data path's frames, an
//! engine export stream, and an engine's journal each either decode or
//! give an error, whatever the bytes.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use cds::engine::{Command, Engine, Geometry, ReadAt, SECTOR};
use cds::wire::{read_request, read_response, Request};
use proptest::prelude::*;
use raft_core::storage::fs::{Fs, OpenMode, SimFs, SimFsConfig};

const G: Geometry = Geometry {
    block_size: 256 << 10,
    slice_size: 64 << 10,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

/// A small engine with a mark, a rollback and writes, flushed, on `fs`.
fn engine(fs: &Arc<dyn Fs>, dir: &Path) -> Engine {
    let mut e = Engine::create(fs.clone(), dir, G).expect("create");
    let w = |off: u64, b: u8, head: u64, base: u64| Command::Write {
        volume: 1,
        block: 2,
        offset: off,
        data: Bytes::from(vec![b; SECTOR as usize]),
        epoch: 3,
        head,
        base,
    };
    let advance = |head, base| Command::Advance {
        volume: 1,
        head,
        base,
    };
    let cmds = [
        w(0, 1, 1, 0),
        advance(2, 1),
        w(SECTOR, 2, 2, 1),
        advance(3, 2),
        w(0, 3, 3, 2),
        advance(4, 1),
    ];
    for (i, c) in cmds.iter().enumerate() {
        e.apply(i as u64 + 1, c)
            .expect("healthy")
            .expect("accepted");
    }
    e.flush().expect("flush");
    e
}

/// Flips bytes of `bytes` at the positions and with the masks given.
fn damage(mut bytes: Vec<u8>, flips: &[(usize, u8)]) -> Vec<u8> {
    if bytes.is_empty() {
        return bytes;
    }
    for &(at, mask) in flips {
        let i = at % bytes.len();
        bytes[i] ^= mask.max(1);
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_on_the_data_path_are_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        runtime().block_on(async {
            let _ = read_request(&mut bytes.as_slice(), 1 << 20).await;
            let _ = read_response(&mut bytes.as_slice()).await;
        });
    }

    #[test]
    fn damaged_frames_are_an_error_or_the_same_request(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cut in any::<usize>(),
    ) {
        let req = Request::Write { group: 1, volume: 2, block: 3, offset: 4096, epoch: 5, head: 6, base: 5, data: Bytes::from(vec![7u8; 4096]) };
        let frame = req.encode(42).to_vec();
        let bad = damage(frame.clone(), &flips);
        let got = runtime().block_on(async { read_request(&mut bad.as_slice(), 1 << 20).await });
        // A checksum covers every byte: damage is never a different request.
        if let Ok((id, r)) = got {
            prop_assert_eq!((id, r), (42, req.clone()));
        }
        let short = &frame[..cut % frame.len()];
        let got = runtime().block_on(async { read_request(&mut &short[..], 1 << 20).await });
        prop_assert!(got.is_err());
    }

    #[test]
    fn a_damaged_export_stream_is_refused_or_imports_the_same_engine(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        let fs: Arc<dyn Fs> = Arc::new(SimFs::new(SimFsConfig::default()));
        let mut e = engine(&fs, Path::new("/a"));
        let x = e.begin_export().expect("export");
        let mut stream = Vec::new();
        x.write_to(&mut stream).expect("write");
        e.end_export();
        let bad = damage(stream.clone(), &flips);
        // Header, records and slot data are all checksummed: damage is
        // refused, unless the flips cancelled out.
        let r = Engine::import(fs.clone(), Path::new("/b"), &mut bad.as_slice());
        if r.is_ok() {
            prop_assert_eq!(bad, stream);
        }
    }

    #[test]
    fn a_damaged_journal_or_superblock_is_reported_not_a_panic(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        which in 0usize..2,
    ) {
        let fs: Arc<dyn Fs> = Arc::new(SimFs::new(SimFsConfig::default()));
        let dir = Path::new("/e");
        drop(engine(&fs, dir));
        let name = ["journal.1", "super"][which];
        let path = dir.join(name);
        let bytes = fs.read(&path).expect("read");
        let bad = damage(bytes.clone(), &flips);
        let mut f = fs.open(&path, OpenMode::Create).expect("open");
        f.write_all(&bad).expect("write");
        f.sync_data().expect("sync");
        drop(f);
        match Engine::open(fs.clone(), dir) {
            Err(_) => {}
            // Only when the flips cancelled out.
            Ok(_) => prop_assert_eq!(bad, bytes),
        }
    }
}

#[test]
fn a_full_disk_stops_the_engine_with_a_clear_error_and_loses_nothing_flushed() {
    let sim = SimFs::new(SimFsConfig::default());
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let dir = Path::new("/full");
    let mut e = engine(&fs, dir);
    let durable = e.durable_index();
    // The disk fills up: a little room left, then none.
    let used = sim.used_bytes();
    sim.configure(|c| {
        c.capacity = Some(used + 3 * (64 << 10));
        c.short_writes = true;
    });
    let mut index = durable;
    let failure = loop {
        index += 1;
        assert!(index < durable + 100, "the disk never filled");
        let w = Command::Write {
            volume: 9,
            block: (index % 4),
            offset: 0,
            data: Bytes::from(vec![index as u8; 64 << 10]),
            epoch: 3,
            head: 1,
            base: 0,
        };
        match e.apply(index, &w) {
            Ok(r) => {
                r.expect("accepted");
            }
            Err(err) => break err,
        }
        if let Err(err) = e.flush() {
            break err;
        }
    };
    let text = failure.to_string();
    assert!(text.contains("/full/"), "the error names no file: {text}");
    assert!(
        text.contains("no space left"),
        "the error does not say the disk is full: {text}"
    );
    // Nothing more is accepted once the engine failed.
    let mut buf = vec![0; SECTOR as usize];
    assert!(e.read(1, 2, 0, &mut buf, ReadAt::Head).is_err() || e.flush().is_err());
    assert!(e.flush().is_err(), "a failed engine flushed");
    drop(e);
    // With room again, the engine opens as of its last good flush, with
    // everything flushed before the disk filled.
    sim.configure(|c| c.capacity = None);
    let mut e = Engine::open(fs.clone(), dir).expect("reopen");
    assert!(e.durable_index() >= durable);
    let mut buf = vec![0; SECTOR as usize];
    e.read(1, 2, 0, &mut buf, ReadAt::Version(1))
        .expect("healthy")
        .expect("read");
    assert_eq!(buf, vec![1; SECTOR as usize]);
}

#[test]
fn a_sector_copy_request_and_answer_round_trip_and_a_short_copy_is_refused() {
    use cds::wire::Response;
    let req = Request::CopySector {
        group: 3,
        volume: 4,
        block: 5,
        slice: 6,
        version: 7,
        sector: 8,
    };
    let frame = req.encode(9).to_vec();
    let got = runtime().block_on(async { read_request(&mut frame.as_slice(), 1 << 20).await });
    assert_eq!(got.expect("decodes"), (9, req));
    let resp = Response::SectorCopy {
        since: 10,
        at: 12,
        data: Bytes::from(vec![0xAB; 4096]),
    };
    let frame = resp.encode(9).to_vec();
    let got = runtime().block_on(async { read_response(&mut frame.as_slice()).await });
    assert_eq!(got.expect("decodes"), (9, resp));
    // A copy of the wrong length is never taken by the engine.
    let fs: Arc<dyn Fs> = Arc::new(SimFs::new(SimFsConfig::default()));
    let mut e = engine(&fs, Path::new("/r"));
    let id = cds::engine::SectorId {
        key: cds::engine::SliceKey {
            volume: 1,
            block: 2,
            slice: 0,
        },
        version: e.head(1).expect("volume 1 is here"),
        sector: 0,
    };
    let short = cds::engine::SectorCopy {
        data: vec![1; 100],
        since: 0,
        at: e.applied_index(),
    };
    assert_eq!(
        e.repair_sector(id, &short).unwrap(),
        cds::engine::Repair::Gone
    );
}
