//! The block engine against a reference model: random writes, zeros,
//! marks, drops, rollbacks, reclaiming, flushes and crashes (on the
//! simulated disk, which loses and tears unsynced writes), with every
//! crash followed by the group's replay of its log. After every step the
//! engine must read, at the head and at every retained version, exactly
//! what the model holds. proptest shrinks a failure to a short sequence.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use cds::engine::{Command, Engine, Export, Geometry, Outcome, Version, SECTOR};
use proptest::prelude::*;
use raft_core::storage::fs::{Fs, SimFs, SimFsConfig};

const GEOMETRY: Geometry = Geometry {
    block_size: 64 << 10,
    slice_size: 16 << 10,
};
const VOLUMES: u64 = 2;
const BLOCKS: u64 = 2;
const SECTORS: u64 = GEOMETRY.block_size / SECTOR;

#[derive(Debug, Clone)]
enum Step {
    Write {
        vol: u64,
        block: u64,
        sector: u64,
        n: u64,
    },
    Zero {
        vol: u64,
        block: u64,
        sector: u64,
        n: u64,
    },
    Mark,
    Drop(usize),
    Rollback(usize),
    Gc(usize),
    Flush,
    Crash(u64),
    /// Starts an export (a Raft snapshot) that later steps run beside.
    BeginExport,
    /// Writes the export's stream, imports it elsewhere and checks it
    /// holds the state as of the export's start.
    FinishExport,
}

fn step() -> impl Strategy<Value = Step> {
    let range = (0..VOLUMES, 0..BLOCKS, 0..SECTORS)
        .prop_flat_map(|(v, b, s)| (Just(v), Just(b), Just(s), 1..=(SECTORS - s).min(9)));
    prop_oneof![
        6 => range.clone().prop_map(|(vol, block, sector, n)| Step::Write { vol, block, sector, n }),
        2 => range.prop_map(|(vol, block, sector, n)| Step::Zero { vol, block, sector, n }),
        2 => Just(Step::Mark),
        1 => any::<usize>().prop_map(Step::Drop),
        1 => any::<usize>().prop_map(Step::Rollback),
        2 => (1usize..6).prop_map(Step::Gc),
        1 => Just(Step::Flush),
        1 => any::<u64>().prop_map(Step::Crash),
        1 => Just(Step::BeginExport),
        1 => Just(Step::FinishExport),
    ]
}

/// Every block's bytes.
type Image = BTreeMap<(u64, u64), Vec<u8>>;

/// The model: the head's image and each retained version's.
#[derive(Debug, Clone)]
struct Model {
    head: Version,
    next: Version,
    image: Image,
    retained: BTreeMap<Version, Image>,
}

impl Model {
    fn new() -> Model {
        let mut image = Image::new();
        for v in 0..VOLUMES {
            for b in 0..BLOCKS {
                image.insert((v, b), vec![0; GEOMETRY.block_size as usize]);
            }
        }
        Model {
            head: 1,
            next: 2,
            image,
            retained: BTreeMap::new(),
        }
    }
}

/// Bytes a write at raft index `index` puts at `offset`: distinct per
/// write and per position.
fn pattern(index: u64, offset: u64, len: u64) -> Bytes {
    (0..len)
        .map(|i| ((index * 31 + (offset + i) / 7) % 251) as u8 + 1)
        .collect::<Vec<u8>>()
        .into()
}

/// The engine in `dir`, with a journal small enough to be rewritten
/// often.
fn open_or_create(fs: &Arc<dyn Fs>, dir: &Path) -> Engine {
    let mut e = if fs.exists(&dir.join("super")) {
        Engine::open(fs.clone(), dir).expect("reopen")
    } else {
        Engine::create(fs.clone(), dir, GEOMETRY).expect("create")
    };
    e.set_journal_compact_bytes(512);
    e
}

fn check(engine: &mut Engine, model: &Model) -> Result<(), TestCaseError> {
    let mut views: Vec<(Option<Version>, &Image)> = vec![(None, &model.image)];
    views.extend(model.retained.iter().map(|(v, i)| (Some(*v), i)));
    for (at, image) in views {
        for (&(vol, block), want) in image {
            let mut got = vec![0xEE; want.len()];
            engine
                .read(vol, block, 0, &mut got, at)
                .expect("engine healthy")
                .expect("read accepted");
            if &got != want {
                let first = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
                return Err(TestCaseError::fail(format!(
                    "volume {vol} block {block} at {at:?}: first difference at byte {first} \
                     (sector {}): got {} want {}",
                    first as u64 / SECTOR,
                    got[first],
                    want[first]
                )));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_reads_what_the_model_holds_through_versions_and_crashes(
        steps in proptest::collection::vec(step(), 1..80)
    ) {
        let sim = SimFs::new(SimFsConfig::default());
        let fs: Arc<dyn Fs> = Arc::new(sim.clone());
        let dir = Path::new("/engine");
        let mut engine = open_or_create(&fs, dir);
        let mut model = Model::new();
        // The group's Raft log: every command, by index.
        let mut log: Vec<(u64, Command)> = Vec::new();
        let mut export: Option<(Export, Model)> = None;
        for s in steps {
            let index = log.len() as u64 + 1;
            let cmd = match s {
                Step::Write { vol, block, sector, n } => {
                    let (offset, len) = (sector * SECTOR, n * SECTOR);
                    let data = pattern(index, offset, len);
                    model.image.get_mut(&(vol, block)).unwrap()[offset as usize..(offset + len) as usize]
                        .copy_from_slice(&data);
                    Some(Command::Write { volume: vol, block, offset, data, epoch: 1 })
                }
                Step::Zero { vol, block, sector, n } => {
                    let (offset, len) = (sector * SECTOR, n * SECTOR);
                    model.image.get_mut(&(vol, block)).unwrap()[offset as usize..(offset + len) as usize]
                        .fill(0);
                    Some(Command::Zero { volume: vol, block, offset, len, epoch: 1 })
                }
                Step::Mark => {
                    model.retained.insert(model.head, model.image.clone());
                    model.head = model.next;
                    model.next += 1;
                    Some(Command::Mark)
                }
                Step::Drop(i) if !model.retained.is_empty() => {
                    let v = *model.retained.keys().nth(i % model.retained.len()).unwrap();
                    model.retained.remove(&v);
                    Some(Command::Drop { version: v })
                }
                Step::Rollback(i) if !model.retained.is_empty() => {
                    let v = *model.retained.keys().nth(i % model.retained.len()).unwrap();
                    model.image = model.retained[&v].clone();
                    model.head = model.next;
                    model.next += 1;
                    Some(Command::Rollback { to: v })
                }
                Step::Drop(_) | Step::Rollback(_) => None,
                Step::Gc(n) => {
                    engine.gc_step(n).expect("gc");
                    None
                }
                Step::Flush => {
                    let d = engine.flush().expect("flush");
                    prop_assert_eq!(d, engine.applied_index());
                    None
                }
                Step::BeginExport => {
                    if export.is_none() {
                        let x = engine.begin_export().expect("begin export");
                        prop_assert_eq!(x.index(), engine.applied_index());
                        export = Some((x, model.clone()));
                    }
                    None
                }
                Step::FinishExport => {
                    if let Some((x, then)) = export.take() {
                        let mut stream = Vec::new();
                        x.write_to(&mut stream).expect("export");
                        prop_assert_eq!(stream.len() as u64, x.len());
                        engine.end_export();
                        let other: Arc<dyn Fs> = Arc::new(SimFs::new(SimFsConfig::default()));
                        let mut copy = Engine::import(other, Path::new("/copy"), &mut stream.as_slice())
                            .expect("import");
                        prop_assert_eq!(copy.durable_index(), x.index());
                        prop_assert_eq!(copy.head(), then.head);
                        check(&mut copy, &then)?;
                    }
                    None
                }
                Step::Crash(seed) => {
                    // An export dies with its process.
                    export = None;
                    let durable = engine.durable_index();
                    drop(engine);
                    sim.crash_seeded(seed);
                    engine = open_or_create(&fs, dir);
                    prop_assert_eq!(engine.durable_index(), durable);
                    // The group replays its log; what the engine holds
                    // already is skipped.
                    for (i, c) in &log {
                        engine.apply(*i, c).expect("replay").expect("accepted");
                    }
                    None
                }
            };
            if let Some(cmd) = cmd {
                let out = engine.apply(index, &cmd).expect("engine healthy").expect("accepted");
                match (&cmd, out) {
                    (Command::Mark, Outcome::Marked { version }) => {
                        prop_assert!(model.retained.contains_key(&version));
                    }
                    (Command::Rollback { .. }, Outcome::RolledBack { head, .. }) => {
                        prop_assert_eq!(head, model.head);
                    }
                    _ => {}
                }
                prop_assert_eq!(engine.head(), model.head);
                log.push((index, cmd));
            }
            check(&mut engine, &model)?;
        }
        // Reclaiming finishes, and then every slot in use is seen by a
        // live version.
        while engine.gc_step(64).expect("gc") {}
        check(&mut engine, &model)?;
    }
}
