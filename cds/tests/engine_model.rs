//! The block engine against a reference model: random writes, zeros,
//! snapshots, drops, rollbacks and clones of each volume, reclaiming,
//! flushes and crashes (on the simulated disk, which loses and tears
//! unsynced writes), with every crash followed by the group's replay of
//! its log. After every step the engine must read, for every volume at
//! its head and at every retained version, exactly what the model holds.
//! proptest shrinks a failure to a short sequence.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use cds::engine::{Command, Engine, Export, Geometry, Outcome, ReadAt, Version, SECTOR};
use proptest::prelude::*;
use raft_core::storage::fs::{Fs, SimFs, SimFsConfig};

const GEOMETRY: Geometry = Geometry {
    block_size: 64 << 10,
    slice_size: 16 << 10,
};
/// Volumes 0 and 1 are written from the start; volume 2 is a clone of a
/// snapshot of volume 0, made by a `Clone` step.
const VOLUMES: u64 = 3;
const CLONE: u64 = 2;
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
    Mark(u64),
    Drop(u64, usize),
    Rollback(u64, usize),
    /// Clones volume 0 at one of its retained versions as volume 2.
    Clone(usize),
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
        2 => (0..VOLUMES).prop_map(Step::Mark),
        1 => (0..VOLUMES, any::<usize>()).prop_map(|(v, i)| Step::Drop(v, i)),
        1 => (0..VOLUMES, any::<usize>()).prop_map(|(v, i)| Step::Rollback(v, i)),
        1 => any::<usize>().prop_map(Step::Clone),
        2 => (1usize..6).prop_map(Step::Gc),
        1 => Just(Step::Flush),
        1 => any::<u64>().prop_map(Step::Crash),
        1 => Just(Step::BeginExport),
        1 => Just(Step::FinishExport),
    ]
}

/// A volume's blocks' bytes.
type Image = BTreeMap<u64, Vec<u8>>;

/// One volume in the model: its head version and base, the head's
/// image and each retained version's.
#[derive(Debug, Clone)]
struct Vol {
    head: Version,
    base: Version,
    image: Image,
    retained: BTreeMap<Version, Image>,
}

impl Vol {
    fn new(image: Image) -> Vol {
        Vol {
            head: 1,
            base: 0,
            image,
            retained: BTreeMap::new(),
        }
    }
}

/// The model: every volume that exists, and the numbers versions get.
#[derive(Debug, Clone)]
struct Model {
    vols: BTreeMap<u64, Vol>,
    next: Version,
    /// The clone's origin (volume 0's version), once made.
    origin: Option<Version>,
}

fn zeros() -> Image {
    (0..BLOCKS)
        .map(|b| (b, vec![0; GEOMETRY.block_size as usize]))
        .collect()
}

impl Model {
    fn new() -> Model {
        Model {
            vols: (0..CLONE).map(|v| (v, Vol::new(zeros()))).collect(),
            next: 2,
            origin: None,
        }
    }

    /// A new version number (the Master's counter).
    fn number(&mut self) -> Version {
        self.next += 1;
        self.next - 1
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
    let mut views: Vec<(u64, ReadAt, &Image)> = Vec::new();
    for (&vol, m) in &model.vols {
        views.push((vol, ReadAt::Head, &m.image));
        views.extend(
            m.retained
                .iter()
                .map(|(v, i)| (vol, ReadAt::Version(*v), i)),
        );
    }
    for (vol, at, image) in views {
        for (&block, want) in image {
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
                Step::Write { vol, block, sector, n } if model.vols.contains_key(&vol) => {
                    let (offset, len) = (sector * SECTOR, n * SECTOR);
                    let data = pattern(index, offset, len);
                    let m = model.vols.get_mut(&vol).unwrap();
                    m.image.get_mut(&block).unwrap()[offset as usize..(offset + len) as usize]
                        .copy_from_slice(&data);
                    Some(Command::Write {
                        volume: vol, block, offset, data, epoch: 1, head: m.head, base: m.base,
                    })
                }
                Step::Zero { vol, block, sector, n } if model.vols.contains_key(&vol) => {
                    let (offset, len) = (sector * SECTOR, n * SECTOR);
                    let m = model.vols.get_mut(&vol).unwrap();
                    m.image.get_mut(&block).unwrap()[offset as usize..(offset + len) as usize]
                        .fill(0);
                    Some(Command::Zero {
                        volume: vol, block, offset, len, epoch: 1, head: m.head, base: m.base,
                    })
                }
                Step::Write { .. } | Step::Zero { .. } => None,
                Step::Mark(vol) if model.vols.contains_key(&vol) => {
                    let head = model.number();
                    let m = model.vols.get_mut(&vol).unwrap();
                    m.retained.insert(m.head, m.image.clone());
                    let base = m.head;
                    (m.head, m.base) = (head, base);
                    Some(Command::Advance { volume: vol, head, base })
                }
                Step::Drop(vol, i) if model.vols.get(&vol).is_some_and(|m| !m.retained.is_empty()) => {
                    let m = &model.vols[&vol];
                    let v = *m.retained.keys().nth(i % m.retained.len()).unwrap();
                    if vol == 0 && model.origin == Some(v) {
                        // The clone reads through to it: refused.
                        let out = engine
                            .apply(index, &Command::Drop { volume: vol, version: v })
                            .expect("engine healthy");
                        prop_assert!(
                            // Refused; or nothing to drop: the version is
                            // older than anything of volume 0 held here.
                            matches!(
                                out,
                                Err(cds::engine::Refusal::InUse { .. }) | Ok(Outcome::Skipped)
                            ),
                            "a clone's origin dropped: {:?}", out
                        );
                        log.push((index, Command::Drop { volume: vol, version: v }));
                        check(&mut engine, &model)?;
                        continue;
                    }
                    model.vols.get_mut(&vol).unwrap().retained.remove(&v);
                    Some(Command::Drop { volume: vol, version: v })
                }
                Step::Rollback(vol, i) if model.vols.get(&vol).is_some_and(|m| !m.retained.is_empty()) => {
                    let head = model.number();
                    let m = model.vols.get_mut(&vol).unwrap();
                    let v = *m.retained.keys().nth(i % m.retained.len()).unwrap();
                    m.image = m.retained[&v].clone();
                    (m.head, m.base) = (head, v);
                    Some(Command::Advance { volume: vol, head, base: v })
                }
                Step::Clone(i) if model.origin.is_none() && !model.vols[&0].retained.is_empty() => {
                    let src = &model.vols[&0];
                    let v = *src.retained.keys().nth(i % src.retained.len()).unwrap();
                    let image = src.retained[&v].clone();
                    model.vols.insert(CLONE, Vol::new(image));
                    model.origin = Some(v);
                    Some(Command::Clone { volume: CLONE, from: 0, version: v })
                }
                Step::Mark(_) | Step::Drop(..) | Step::Rollback(..) | Step::Clone(_) => None,
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
                        for (&vol, m) in &then.vols {
                            prop_assert_eq!(copy.head(vol).unwrap_or(1), m.head);
                        }
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
                        // Refused commands (a clone's origin dropped) are
                        // refused again; the reads below check the rest.
                        let _ = engine.apply(*i, c).expect("replay");
                    }
                    None
                }
            };
            if let Some(cmd) = cmd {
                let out = engine.apply(index, &cmd).expect("engine healthy").expect("accepted");
                // A volume never heard of here starts at the new head; a
                // snapshot freezes the head; a rollback starts on its
                // target (or empty, past the volume's first version here).
                if let (Command::Advance { head, .. }, Outcome::Advanced { head: h, .. }) = (&cmd, out) {
                    prop_assert_eq!(*head, h);
                }
                for (&vol, m) in &model.vols {
                    prop_assert_eq!(engine.head(vol).unwrap_or(1), m.head);
                }
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
