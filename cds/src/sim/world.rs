//! The simulated cluster: nodes, network, clients and the event loop.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use raft_core::core::{ConfState, Config, EntryKind, Message, NodeId, Raft, ReadMode, Role};
use raft_core::driver::{Driver, DriverError, Flow, Host, Stage, Work};
use raft_core::sim::linearizability::{self, Op, OpKind};
use raft_core::storage::fs::{Fs, SimFs, SimFsConfig};
use raft_core::storage::local::{self, LocalOptions};
use raft_core::storage::{NodeStorage, Storage};
use raft_core::{ProposeError, ReadError};
use rand_core::{RngCore, SeedableRng};
use rand_pcg::Pcg64Mcg;

use super::sectors;
use super::snapshots::VolumeRecord;
#[cfg(feature = "bug-injection")]
use super::Bug;
use super::{Outcome, SimConfig, Stats};
use crate::blockgroup::command::{encode, encode_result, Applied};
use crate::blockgroup::{after_batch, apply_entry};
use crate::engine::{
    Command, Engine, EngineError, Geometry, Outcome as EngineOutcome, ReadAt, Refusal, Repair,
    SectorCopy, SectorId, VersionState, SECTOR,
};

/// Milliseconds per Raft tick.
const TICK_MS: u64 = 10;
/// Sectors per simulated block (a 64 KiB block of four 16 KiB slices, so
/// writes cover partial slices, whole slices and slice boundaries).
const SECTORS: u64 = 16;
const GEOMETRY: Geometry = Geometry {
    block_size: SECTORS * SECTOR,
    slice_size: 4 * SECTOR,
};
/// The simulated volume's id.
const VOLUME: u64 = 1;
/// The clone of one of its snapshots, once made. In bodies and keys its
/// blocks come after the source's: block `b` of the clone is `blocks + b`.
const CLONE: u64 = 2;

/// The volume and its block for a body's block number (see [`CLONE`]).
fn locate(block: u64, blocks: u64) -> (u64, u64) {
    if block >= blocks {
        (CLONE, block - blocks)
    } else {
        (VOLUME, block)
    }
}
/// A client tries another node after this long without an answer.
const CLIENT_TIMEOUT_MS: u64 = 150;
/// A client gives up on a request after this long: a write's outcome is
/// then unknown.
const GIVE_UP_MS: u64 = 2_000;
/// After the faults stop, the cluster must finish the clients' requests,
/// the final reads and catch every replica up within this long.
const QUIET_BOUND_MS: u64 = 30_000;

/// Runs one simulation.
pub(super) fn run(cfg: &SimConfig) -> Outcome {
    let mut sim = Sim::new(cfg.clone());
    let failure = sim.run_all().err();
    (sim.stats.snapshots, sim.stats.rollbacks, sim.stats.clones) = sim.vol.finished();
    Outcome {
        seed: cfg.seed,
        events: sim.events,
        sim_time: sim.now,
        stats: sim.stats,
        failure,
    }
}

/// A client request's body.
#[derive(Debug, Clone)]
pub(super) enum Body {
    /// Sectors `sector..sector + count` of `block`, each filled with
    /// `value` (see `sectors.rs`).
    Write {
        block: u64,
        sector: u64,
        count: u64,
        value: u64,
        /// The head version the writer believes in, and its base.
        tag: (u64, u64),
    },
    Zero {
        block: u64,
        sector: u64,
        count: u64,
        tag: (u64, u64),
    },
    Read {
        block: u64,
        sector: u64,
        count: u64,
        /// 0: the head; else a snapshot's version.
        at: u64,
    },
    /// A SnapshotWorker's step of a volume's version change on one
    /// group: the head moves to `head`, based on `base` (a snapshot when
    /// `base` is the old head, a rollback when it is a snapshot).
    Advance {
        group: usize,
        head: u64,
        base: u64,
    },
    Drop {
        group: usize,
        version: u64,
    },
    /// A SnapshotWorker's step of a clone: the group learns that the
    /// clone reads through to the volume's `version`.
    Clone {
        group: usize,
        version: u64,
    },
}

impl Body {
    fn block(&self) -> Option<u64> {
        match *self {
            Body::Write { block, .. } | Body::Zero { block, .. } | Body::Read { block, .. } => {
                Some(block)
            }
            Body::Advance { .. } | Body::Drop { .. } | Body::Clone { .. } => None,
        }
    }

    /// The engine command a leader proposes for it (`None`: a read), for
    /// a volume of `blocks` blocks.
    fn command(&self, epoch: u64, blocks: u64) -> Option<Command> {
        Some(match *self {
            Body::Write {
                block,
                sector,
                count,
                value,
                tag,
            } => {
                let mut data = vec![0u8; (count * SECTOR) as usize];
                for (i, s) in data.chunks_exact_mut(SECTOR as usize).enumerate() {
                    sectors::fill(s, sectors::key(block, sector + i as u64), value);
                }
                let (volume, block) = locate(block, blocks);
                Command::Write {
                    volume,
                    block,
                    offset: sector * SECTOR,
                    data: Bytes::from(data),
                    epoch,
                    head: tag.0,
                    base: tag.1,
                }
            }
            Body::Zero {
                block,
                sector,
                count,
                tag,
            } => {
                let (volume, block) = locate(block, blocks);
                Command::Zero {
                    volume,
                    block,
                    offset: sector * SECTOR,
                    len: count * SECTOR,
                    epoch,
                    head: tag.0,
                    base: tag.1,
                }
            }
            Body::Advance { head, base, .. } => Command::Advance {
                volume: VOLUME,
                head,
                base,
            },
            Body::Drop { version, .. } => Command::Drop {
                volume: VOLUME,
                version,
            },
            Body::Clone { version, .. } => Command::Clone {
                volume: CLONE,
                from: VOLUME,
                version,
            },
            Body::Read { .. } => return None,
        })
    }
}

/// What a server answers.
#[derive(Debug, Clone)]
enum Reply {
    Applied(Applied),
    Data(Vec<u8>),
    NotLeader(Option<NodeId>),
    /// Try again (the leader stepped down, or its entry was replaced).
    Retry,
}

#[derive(Debug)]
enum Ev {
    Tick {
        node: usize,
        inc: u64,
    },
    Raft {
        group: usize,
        to: usize,
        msg: Message,
    },
    Request {
        node: usize,
        group: usize,
        client: usize,
        op: u64,
        epoch: u64,
        body: Body,
    },
    Reply {
        client: usize,
        op: u64,
        reply: Reply,
    },
    ClientTimeout {
        client: usize,
        op: u64,
        attempt: u32,
    },
    Resend {
        client: usize,
        op: u64,
    },
    ClientNext {
        client: usize,
    },
    Restart {
        node: usize,
    },
    /// A replica's copy of a sector reaches the replica repairing it.
    RepairCopy {
        node: usize,
        inc: u64,
        group: usize,
        id: SectorId,
        copy: SectorCopy,
    },
    Heal {
        epoch: u64,
    },
    LossEnd {
        epoch: u64,
    },
    Fault,
}

struct Queued {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    // Earliest first from a max-heap.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// A proposal a leader answers once its entry applies.
struct Proposal {
    term: u64,
    client: usize,
    op: u64,
}

/// A read waiting for its ReadIndex confirmation and the apply.
struct PendingRead {
    client: usize,
    op: u64,
    block: u64,
    sector: u64,
    count: u64,
    at: u64,
}

#[derive(Default)]
struct Replica {
    driver: Option<Box<Driver>>,
    engine: Option<Engine>,
    pending: BTreeMap<u64, Proposal>,
    reads: BTreeMap<u64, PendingRead>,
    /// Confirmed reads: (index, ctx).
    ready_reads: Vec<(u64, u64)>,
}

struct Node {
    id: NodeId,
    fs: SimFs,
    up: bool,
    /// Incarnation: ticks of an earlier one are ignored.
    inc: u64,
    groups: Vec<Replica>,
}

/// The request a client has in flight.
struct Current {
    id: u64,
    group: usize,
    body: Body,
    invoke: u64,
    attempt: u32,
    /// The history entries of a write (one per sector).
    hist: Vec<usize>,
}

struct Client {
    epoch: u64,
    /// The volume's head version (and its base) as this client knows it.
    tag: (u64, u64),
    /// The node believed to lead each group.
    guess: Vec<Option<usize>>,
    cur: Option<Current>,
    next_op: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Faults,
    /// Faults healed; clients finish, then the final reads.
    Quiet,
    /// Final reads done; waiting for every replica to catch up.
    Converge,
}

struct Sim {
    cfg: SimConfig,
    rng: Pcg64Mcg,
    now: u64,
    seq: u64,
    events: u64,
    queue: BinaryHeap<Queued>,
    nodes: Vec<Node>,
    clients: Vec<Client>,
    /// Every client operation, one per sector; `None`: a write known not
    /// to have happened (fenced on its only attempt).
    history: Vec<Option<Op>>,
    /// Blocked links, as (lower, higher) node indexes.
    blocked: BTreeSet<(usize, usize)>,
    partition_epoch: u64,
    loss_pct: u64,
    loss_epoch: u64,
    phase: Phase,
    /// The newest writer epoch handed out (the Master's counter).
    epoch: u64,
    /// Per group: index -> (term, encoded result) of the first replica
    /// to apply it; every other replica must get the same.
    results: Vec<BTreeMap<u64, (u64, Vec<u8>)>>,
    /// The volume's versions as the Master records them, and the
    /// snapshot task under way (see `snapshots.rs`).
    vol: VolumeRecord,
    /// Blocks still to read in the final pass.
    /// The final pass's reads, (block, version; 0 the head), made once
    /// the clients and the snapshot task are done.
    final_reads: Option<Vec<(u64, u64)>>,
    next_ctx: u64,
    flush_every: u64,
    read_mode: ReadMode,
    stats: Stats,
    failure: Option<String>,
}

impl Sim {
    fn new(cfg: SimConfig) -> Sim {
        let mut rng = Pcg64Mcg::seed_from_u64(cfg.seed);
        let nodes = (0..cfg.nodes)
            .map(|i| Node {
                id: i as u64 + 1,
                fs: SimFs::new(SimFsConfig {
                    seed: cfg.seed ^ (i as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d),
                    ..SimFsConfig::default()
                }),
                up: false,
                inc: 0,
                groups: (0..cfg.groups).map(|_| Replica::default()).collect(),
            })
            .collect();
        // Every client opened the volume once: each holds its own epoch
        // (a volume has one writer at a time; a group that has seen a
        // newer epoch refuses the older writers).
        let clients = (0..cfg.clients)
            .map(|c| Client {
                epoch: c as u64 + 1,
                tag: (1, 0),
                guess: vec![None; cfg.groups],
                cur: None,
                next_op: 1,
            })
            .collect();
        // Seed-chosen: how often engines flush (1 exercises a flush per
        // batch; 64 long replays after a crash) and how reads confirm.
        let flush_every = [1, 4, 16, 64][(rng.next_u64() % 4) as usize];
        let read_mode = if rng.next_u64() % 2 == 0 {
            ReadMode::Lease
        } else {
            ReadMode::ReadIndex
        };
        // Every sector starts as zeros: a write of 0 before anything.
        let mut history = Vec::new();
        for block in 0..cfg.blocks {
            for s in 0..SECTORS {
                history.push(Some(Op {
                    client: 0,
                    invoke: 0,
                    complete: Some(0),
                    kind: OpKind::Put {
                        key: sectors::key(block, s),
                        value: 0,
                    },
                }));
            }
        }
        let newest_epoch = cfg.clients as u64;
        Sim {
            results: vec![BTreeMap::new(); cfg.groups],
            vol: VolumeRecord::default(),
            cfg,
            rng,
            now: 0,
            seq: 0,
            events: 0,
            queue: BinaryHeap::new(),
            nodes,
            clients,
            history,
            blocked: BTreeSet::new(),
            partition_epoch: 0,
            loss_pct: 0,
            loss_epoch: 0,
            phase: Phase::Faults,
            epoch: newest_epoch,
            final_reads: None,
            next_ctx: 1,
            flush_every,
            read_mode,
            stats: Stats::default(),
            failure: None,
        }
    }

    fn bug(&self, _b: &str) -> bool {
        #[cfg(feature = "bug-injection")]
        {
            return self.cfg.bug.is_some_and(|b| b.name() == _b);
        }
        #[allow(unreachable_code)]
        false
    }

    fn rand(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n.max(1)
    }

    fn chance(&mut self, pct: u64) -> bool {
        self.rand(100) < pct
    }

    fn schedule(&mut self, delay: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Queued {
            at: self.now + delay,
            seq: self.seq,
            ev,
        });
    }

    fn fail(&mut self, why: String) {
        self.failure.get_or_insert(why);
    }

    fn run_all(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            self.start(i);
        }
        for c in 0..self.clients.len() {
            let d = self.rand(20);
            self.schedule(d, Ev::ClientNext { client: c });
        }
        if self.cfg.faults {
            let d = 200 + self.rand(300);
            self.schedule(d, Ev::Fault);
        }
        while let Some(q) = self.queue.pop() {
            self.now = q.at;
            self.events += 1;
            self.handle(q.ev);
            if let Some(why) = self.failure.take() {
                return Err(why);
            }
            match self.phase {
                Phase::Faults if self.now >= self.cfg.millis => self.quiet(),
                Phase::Quiet
                    if self.clients.iter().all(|c| c.cur.is_none()) && self.vol.task.is_none() =>
                {
                    let reads = self
                        .final_reads
                        .get_or_insert_with(|| self.vol.final_reads(self.cfg.blocks));
                    if reads.is_empty() {
                        self.phase = Phase::Converge;
                    } else {
                        self.next_final_read();
                    }
                }
                Phase::Converge if self.converged() => break,
                _ => {}
            }
            if self.phase != Phase::Faults && self.now > self.cfg.millis + QUIET_BOUND_MS {
                return Err(format!(
                    "no progress: {} ms after the faults stopped the cluster has not {}",
                    QUIET_BOUND_MS,
                    match self.phase {
                        Phase::Converge => "caught every replica up",
                        _ => "answered every request and the final reads",
                    }
                ));
            }
        }
        self.compare_replicas()?;
        self.check_reclaimed()?;
        self.check_history()
    }

    /// Ends the fault phase: heal everything, restart what is down, let
    /// the clients finish, then read every block.
    fn quiet(&mut self) {
        self.phase = Phase::Quiet;
        self.blocked.clear();
        self.loss_pct = 0;
        for i in 0..self.nodes.len() {
            if !self.nodes[i].up {
                self.start(i);
            }
        }
        // Idle clients take up what is left of the snapshot task.
        for c in 0..self.clients.len() {
            if self.clients[c].cur.is_none() {
                self.schedule(1, Ev::ClientNext { client: c });
            }
        }
    }

    fn next_final_read(&mut self) {
        let Some((block, at)) = self.final_reads.as_mut().and_then(Vec::pop) else {
            return;
        };
        self.begin(
            0,
            Body::Read {
                block,
                sector: 0,
                count: SECTORS,
                at,
            },
        );
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Tick { node, inc } => {
                if !self.nodes[node].up || self.nodes[node].inc != inc {
                    return;
                }
                for g in 0..self.cfg.groups {
                    if let Some(d) = self.nodes[node].groups[g].driver.as_mut() {
                        d.raft_mut().tick();
                    }
                    self.drive(node, g);
                    if !self.nodes[node].up {
                        return;
                    }
                }
                self.schedule(TICK_MS, Ev::Tick { node, inc });
            }
            Ev::Raft { group, to, msg } => {
                if !self.nodes[to].up {
                    return;
                }
                let Some(d) = self.nodes[to].groups[group].driver.as_mut() else {
                    return;
                };
                if let Err(e) = d.raft_mut().step(msg) {
                    self.fail(format!("node {} group {group}: step: {e}", to + 1));
                    return;
                }
                self.drive(to, group);
            }
            Ev::Request {
                node,
                group,
                client,
                op,
                epoch,
                body,
            } => self.serve(node, group, client, op, epoch, body),
            Ev::Reply { client, op, reply } => self.on_reply(client, op, reply),
            Ev::ClientTimeout {
                client,
                op,
                attempt,
            } => {
                let Some(cur) = self.clients[client].cur.as_ref() else {
                    return;
                };
                if cur.id != op || cur.attempt != attempt {
                    return;
                }
                let (g, invoke) = (cur.group, cur.invoke);
                self.clients[client].guess[g] = None;
                if self.now >= invoke + GIVE_UP_MS {
                    self.give_up(client);
                } else {
                    self.send(client);
                }
            }
            Ev::Resend { client, op } => {
                if self.clients[client]
                    .cur
                    .as_ref()
                    .is_some_and(|c| c.id == op)
                {
                    self.send(client);
                }
            }
            Ev::ClientNext { client } => self.next_op(client),
            Ev::Restart { node } => {
                if !self.nodes[node].up {
                    self.start(node);
                }
            }
            Ev::Heal { epoch } => {
                if epoch == self.partition_epoch {
                    self.blocked.clear();
                }
            }
            Ev::LossEnd { epoch } => {
                if epoch == self.loss_epoch {
                    self.loss_pct = 0;
                }
            }
            Ev::Fault => self.inject_fault(),
            Ev::RepairCopy {
                node,
                inc,
                group,
                id,
                copy,
            } => self.take_copy(node, inc, group, id, &copy),
        }
    }

    // ----- faults ----------------------------------------------------------

    fn inject_fault(&mut self) {
        if self.phase != Phase::Faults {
            return;
        }
        let n = self.nodes.len();
        match self.rand(5) {
            0 | 1 => {
                let i = self.rand(n as u64) as usize;
                if self.nodes[i].up {
                    self.crash(i);
                    let d = 20 + self.rand(500);
                    self.schedule(d, Ev::Restart { node: i });
                }
            }
            2 => {
                // Cut one node off from the others (the old leader, half
                // the time, so stale leaders are common).
                let i = self.rand(n as u64) as usize;
                self.blocked.clear();
                for j in 0..n {
                    if j != i {
                        self.blocked.insert((i.min(j), i.max(j)));
                    }
                }
                self.partition_epoch += 1;
                self.stats.partitions += 1;
                let d = 100 + self.rand(1_000);
                let epoch = self.partition_epoch;
                self.schedule(d, Ev::Heal { epoch });
            }
            3 => self.rot_a_bit(),
            _ => {
                self.loss_pct = 5 + self.rand(25);
                self.loss_epoch += 1;
                let d = 100 + self.rand(800);
                let epoch = self.loss_epoch;
                self.schedule(d, Ev::LossEnd { epoch });
            }
        }
        let d = 100 + self.rand(400);
        self.schedule(d, Ev::Fault);
    }

    /// Bit rot: one bit of a random replica's slot file flips on the
    /// medium (in a sector's bytes or checksum, or in unused space).
    fn rot_a_bit(&mut self) {
        let i = self.rand(self.nodes.len() as u64) as usize;
        let g = self.rand(self.cfg.groups as u64) as usize;
        let path = PathBuf::from(format!("/bs/g{g}/engine/slots"));
        let fs = self.nodes[i].fs.clone();
        let Ok(len) = fs.metadata(&path).map(|m| m.len) else {
            return;
        };
        if len == 0 {
            return;
        }
        let (at, bit) = (self.rand(len), self.rand(8) as u8);
        if fs.flip_bit(&path, at, bit) {
            self.stats.bit_rot += 1;
        }
    }

    /// Node `i` loses power: every replica stops, the disk loses, keeps
    /// or tears what was not synced.
    fn crash(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.up = false;
        n.inc += 1;
        for r in &mut n.groups {
            *r = Replica::default();
        }
        let fs = n.fs.clone();
        fs.crash(&mut self.rng);
        self.stats.crashes += 1;
    }

    /// Starts (or restarts) node `i`: every group's Raft stores and engine
    /// opened from its disk, as the BlockServer does at start.
    fn start(&mut self, i: usize) {
        let id = self.nodes[i].id;
        let fs: Arc<dyn Fs> = Arc::new(self.nodes[i].fs.clone());
        self.nodes[i].inc += 1;
        let inc = self.nodes[i].inc;
        for g in 0..self.cfg.groups {
            match self.open_replica(&fs, id, inc, g) {
                Ok((driver, engine)) => {
                    let r = &mut self.nodes[i].groups[g];
                    r.driver = Some(Box::new(driver));
                    r.engine = Some(engine);
                }
                Err(why) => {
                    return self.fail(format!("node {id} group {g}: starting: {why}"));
                }
            }
        }
        self.nodes[i].up = true;
        let d = 1 + self.rand(TICK_MS);
        self.schedule(d, Ev::Tick { node: i, inc });
    }

    fn open_replica(
        &mut self,
        fs: &Arc<dyn Fs>,
        id: NodeId,
        inc: u64,
        g: usize,
    ) -> Result<(Driver, Engine), String> {
        let dir = PathBuf::from(format!("/bs/g{g}"));
        let opts = LocalOptions {
            segment_bytes: 64 << 10,
        };
        let mut disk: NodeStorage = local::open_in_host(fs.clone(), &dir.join("raft"), &opts, None)
            .map_err(|e| e.to_string())?;
        if disk.conf_state().voters.is_empty() && disk.last_index() == 0 {
            let voters = (1..=self.cfg.nodes as u64).collect();
            disk.set_conf_state(ConfState {
                voters,
                ..Default::default()
            })
            .map_err(|e| e.to_string())?;
        }
        let edir = dir.join("engine");
        // An engine whose directory a crash lost is made again: the log
        // (never compacted here) replays everything into it.
        #[cfg_attr(not(feature = "bug-injection"), allow(unused_mut))]
        let mut engine = match Engine::open(fs.clone(), &edir) {
            Ok(e) => e,
            Err(_) if !fs.exists(&edir.join("super")) => {
                Engine::create(fs.clone(), &edir, GEOMETRY).map_err(|e| e.to_string())?
            }
            Err(e) => return Err(format!("engine: {e}")),
        };
        #[cfg(feature = "bug-injection")]
        if self.cfg.bug == Some(Bug::SkipSlotSync) {
            engine.inject_skip_slot_sync();
        }
        #[cfg(feature = "bug-injection")]
        if self.cfg.bug == Some(Bug::CorruptAsZeros) {
            engine.inject_corrupt_as_zeros();
        }
        #[cfg(feature = "bug-injection")]
        if self.cfg.bug == Some(Bug::SkipCow) {
            engine.inject_skip_cow();
        }
        let mut c = Config::new(id);
        c.election_tick = 10;
        c.heartbeat_tick = 3;
        c.lease_tick = 5;
        c.pre_vote = true;
        c.check_quorum = true;
        let seed = self
            .cfg
            .seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(id.wrapping_mul(0xbf58_476d_1ce4_e5b9))
            .wrapping_add(inc.wrapping_mul(0x94d0_49bb_1331_11eb))
            .wrapping_add((g as u64).wrapping_mul(0xd6e8_feb8_6659_fd93));
        let raft = Raft::new(c, disk, Box::new(Pcg64Mcg::seed_from_u64(seed)))
            .map_err(|e| e.to_string())?;
        Ok((Driver::new(raft), engine))
    }

    // ----- the server ------------------------------------------------------

    /// Hands node `i`'s group `g` its pending `Ready`s.
    fn drive(&mut self, i: usize, g: usize) {
        let Some(mut driver) = self.nodes[i].groups[g].driver.take() else {
            return;
        };
        let mut host = SimHost {
            sim: self,
            i,
            g,
            crash: false,
        };
        let r = driver.handle_all(&mut host);
        let crash = host.crash;
        match r {
            Ok(_) if crash => {
                self.crash(i);
                let d = 20 + self.rand(500);
                self.schedule(d, Ev::Restart { node: i });
                return;
            }
            Ok(_) => {}
            Err(DriverError::Host(why)) => return self.fail(why),
            Err(e) => {
                let id = self.nodes[i].id;
                return self.fail(format!("node {id} group {g}: {e}"));
            }
        }
        self.nodes[i].groups[g].driver = Some(driver);
        self.serve_ready_reads(i, g);
    }

    fn serve_ready_reads(&mut self, i: usize, g: usize) {
        let r = &mut self.nodes[i].groups[g];
        let Some(applied) = r.engine.as_ref().map(Engine::applied_index) else {
            return;
        };
        let ready = std::mem::take(&mut r.ready_reads);
        let mut later = Vec::new();
        for (index, ctx) in ready {
            if index > applied {
                later.push((index, ctx));
                continue;
            }
            if let Some(p) = self.nodes[i].groups[g].reads.remove(&ctx) {
                let reply = self.read_local(i, g, p.block, p.sector, p.count, p.at);
                self.reply(p.client, p.op, reply);
            }
        }
        self.nodes[i].groups[g].ready_reads = later;
    }

    fn read_local(
        &mut self,
        i: usize,
        g: usize,
        block: u64,
        sector: u64,
        count: u64,
        at: u64,
    ) -> Reply {
        let Some(e) = self.nodes[i].groups[g].engine.as_mut() else {
            return Reply::Retry;
        };
        let mut buf = vec![0u8; (count * SECTOR) as usize];
        let at = match at {
            0 => ReadAt::Head,
            v => ReadAt::Version(v),
        };
        let (volume, block) = locate(block, self.cfg.blocks);
        match e.read(volume, block, sector * SECTOR, &mut buf, at) {
            Ok(Ok(())) => Reply::Data(buf),
            Ok(Err(r)) => Reply::Applied(Applied::Refused(r)),
            // Never served: the replicas are asked for copies, and the
            // client tries again (as the BlockServer's read does).
            Err(EngineError::CorruptSector { slot, sector, .. }) => {
                if let Some(id) = e.locate(slot, sector) {
                    self.ask_for_copies(i, g, id);
                }
                Reply::Retry
            }
            Err(e) => Reply::Applied(Applied::Failed(e.to_string())),
        }
    }

    /// Node `i` asks the other replicas of group `g` it can reach for
    /// their copy of sector `id`; each copy is taken now and arrives
    /// after a network delay (both sides apply meanwhile).
    fn ask_for_copies(&mut self, i: usize, g: usize, id: SectorId) {
        let inc = self.nodes[i].inc;
        for j in 0..self.nodes.len() {
            if j == i || !self.nodes[j].up || self.blocked.contains(&(i.min(j), i.max(j))) {
                continue;
            }
            let Some(e) = self.nodes[j].groups[g].engine.as_mut() else {
                continue;
            };
            // A peer whose own copy is corrupt (or gone) has none to give.
            if let Ok(Some(copy)) = e.copy_sector(id) {
                let d = 2 + self.rand(8);
                self.schedule(
                    d,
                    Ev::RepairCopy {
                        node: i,
                        inc,
                        group: g,
                        id,
                        copy,
                    },
                );
            }
        }
    }

    fn take_copy(&mut self, i: usize, inc: u64, g: usize, id: SectorId, copy: &SectorCopy) {
        if !self.nodes[i].up || self.nodes[i].inc != inc {
            return;
        }
        let Some(e) = self.nodes[i].groups[g].engine.as_mut() else {
            return;
        };
        match e.repair_sector(id, copy) {
            Ok(Repair::Repaired) => self.stats.repaired += 1,
            Ok(Repair::Healthy | Repair::Gone | Repair::Later) => {}
            Err(e) => {
                let id = self.nodes[i].id;
                self.fail(format!("node {id} group {g}: repairing a sector: {e}"));
            }
        }
    }

    /// Repairs every corrupt sector of block `block` on every replica of
    /// group `g` from the others (the cluster has converged: every copy
    /// holds), as a scrub would. Fails the run if one cannot be.
    fn scrub(&mut self, g: usize, volume: u64, block: u64) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            // Each round repairs at least one sector or ends.
            for _ in 0..=SECTORS {
                let Some(e) = self.nodes[i].groups[g].engine.as_mut() else {
                    break;
                };
                let mut buf = vec![0u8; (SECTORS * SECTOR) as usize];
                let id = match e.read(volume, block, 0, &mut buf, ReadAt::Head) {
                    Err(EngineError::CorruptSector { slot, sector, .. }) => e.locate(slot, sector),
                    _ => None,
                };
                let Some(id) = id else { break };
                let mut fixed = false;
                for j in (0..self.nodes.len()).filter(|&j| j != i) {
                    let copy = match self.nodes[j].groups[g].engine.as_mut() {
                        Some(p) => p.copy_sector(id),
                        None => continue,
                    };
                    let Ok(Some(copy)) = copy else { continue };
                    let Some(e) = self.nodes[i].groups[g].engine.as_mut() else {
                        break;
                    };
                    match e.repair_sector(id, &copy) {
                        Ok(Repair::Repaired) => {
                            self.stats.repaired += 1;
                            fixed = true;
                            break;
                        }
                        Ok(_) => {}
                        Err(e) => return Err(format!("repairing {id:?}: {e}")),
                    }
                }
                if !fixed {
                    return Err(format!(
                        "node {}: {id:?} of block {block} is corrupt and no replica's copy repairs it",
                        self.nodes[i].id
                    ));
                }
            }
        }
        Ok(())
    }

    fn serve(&mut self, i: usize, g: usize, client: usize, op: u64, epoch: u64, body: Body) {
        if !self.nodes[i].up {
            return;
        }
        if let (
            Body::Read {
                block,
                sector,
                count,
                at,
            },
            true,
        ) = (&body, self.bug("follower-read"))
        {
            let reply = self.read_local(i, g, *block, *sector, *count, *at);
            return self.reply(client, op, reply);
        }
        let Some(d) = self.nodes[i].groups[g].driver.as_mut() else {
            return;
        };
        let raft = d.raft_mut();
        if raft.role() != Role::Leader {
            let hint = raft.leader();
            return self.reply(client, op, Reply::NotLeader(hint));
        }
        match body.command(epoch, self.cfg.blocks) {
            Some(cmd) => match raft.propose(encode(&cmd), None) {
                Ok(index) => {
                    let term = raft.term();
                    self.nodes[i].groups[g]
                        .pending
                        .insert(index, Proposal { term, client, op });
                }
                Err(ProposeError::NotLeader { leader }) => {
                    return self.reply(client, op, Reply::NotLeader(leader))
                }
                Err(_) => return self.reply(client, op, Reply::Retry),
            },
            None => {
                let Body::Read {
                    block,
                    sector,
                    count,
                    at,
                } = body
                else {
                    return;
                };
                let ctx = self.next_ctx;
                self.next_ctx += 1;
                match raft.read_index(ctx, self.read_mode) {
                    Ok(()) => {
                        self.nodes[i].groups[g].reads.insert(
                            ctx,
                            PendingRead {
                                client,
                                op,
                                block,
                                sector,
                                count,
                                at,
                            },
                        );
                    }
                    Err(ReadError::NotLeader { leader }) => {
                        return self.reply(client, op, Reply::NotLeader(leader))
                    }
                    Err(_) => return self.reply(client, op, Reply::Retry),
                }
            }
        }
        self.drive(i, g);
    }

    fn reply(&mut self, client: usize, op: u64, reply: Reply) {
        let d = 1 + self.rand(3);
        self.schedule(d, Ev::Reply { client, op, reply });
    }

    fn send_raft(&mut self, g: usize, msg: Message) {
        let (from, to) = (msg.from as usize - 1, msg.to as usize - 1);
        if to >= self.nodes.len() || self.blocked.contains(&(from.min(to), from.max(to))) {
            return;
        }
        if self.loss_pct > 0 && self.chance(self.loss_pct) {
            return;
        }
        let d = 1 + self.rand(4);
        self.schedule(d, Ev::Raft { group: g, to, msg });
    }

    /// Applies committed entries on node `i`'s replica of group `g`.
    fn apply(
        &mut self,
        raft: &Raft<NodeStorage>,
        i: usize,
        g: usize,
        entries: &[raft_core::core::Entry],
    ) -> Result<(), String> {
        let id = self.nodes[i].id;
        for e in entries {
            if raft.storage().term(e.index).ok() != Some(e.term) {
                return Err(format!(
                    "node {id} group {g} applied entry {} (term {}) before it was durable in its log",
                    e.index, e.term
                ));
            }
            let Some(engine) = self.nodes[i].groups[g].engine.as_mut() else {
                return Err(format!("node {id} group {g}: applying without an engine"));
            };
            let result = if e.kind == EntryKind::Normal {
                let r = apply_entry(engine, e.index, &e.data)
                    .map_err(|err| format!("node {id} group {g}: engine: {err}"))?;
                Some(r)
            } else {
                engine.skip_to(e.index);
                None
            };
            self.stats.entries_applied += 1;
            // A replay after a restart skips what the engine holds durably
            // already: nothing to compare.
            let replayed = matches!(result, Some(Applied::Done(EngineOutcome::Skipped)));
            if let Some(r) = result.as_ref().filter(|_| !replayed) {
                let bytes = encode_result(r);
                match self.results[g].get(&e.index) {
                    None => {
                        self.results[g].insert(e.index, (e.term, bytes));
                    }
                    Some((t, b)) if *t == e.term && *b == bytes => {}
                    Some((t, b)) => {
                        return Err(format!(
                            "group {g}: entry {} (term {}) applied as {b:?} (term {t}) on one \
                             replica and as {bytes:?} on node {id}",
                            e.index, e.term
                        ))
                    }
                }
            }
            if let Some(p) = self.nodes[i].groups[g].pending.remove(&e.index) {
                let reply = match result {
                    Some(r) if p.term == e.term => Reply::Applied(r),
                    _ => Reply::Retry,
                };
                self.reply(p.client, p.op, reply);
            }
        }
        let Some(engine) = self.nodes[i].groups[g].engine.as_mut() else {
            return Ok(());
        };
        let durable = engine.durable_index();
        after_batch(engine, self.flush_every)
            .map_err(|err| format!("node {id} group {g}: engine: {err}"))?;
        if engine.durable_index() != durable {
            self.stats.flushes += 1;
        }
        Ok(())
    }

    /// The leader of node `i`'s group `g` stepped down: its clients must
    /// retry (their writes may still commit under the next leader).
    fn leader_stop(&mut self, i: usize, g: usize) {
        let pending = std::mem::take(&mut self.nodes[i].groups[g].pending);
        for p in pending.into_values() {
            let reply = if self.bug("ack-on-step-down") {
                Reply::Applied(Applied::Done(EngineOutcome::Written))
            } else {
                Reply::Retry
            };
            self.reply(p.client, p.op, reply);
        }
        let reads = std::mem::take(&mut self.nodes[i].groups[g].reads);
        self.nodes[i].groups[g].ready_reads.clear();
        for p in reads.into_values() {
            self.reply(p.client, p.op, Reply::Retry);
        }
    }

    // ----- clients ---------------------------------------------------------

    fn next_op(&mut self, c: usize) {
        if self.clients[c].cur.is_some() {
            return;
        }
        // A SnapshotWorker's step first: it never gives up on a task, so
        // it goes on after the faults stop.
        if let Some(body) = self.vol.next_step(self.cfg.groups) {
            return self.begin(c, body);
        }
        if self.phase != Phase::Faults {
            return;
        }
        if self.chance(2) {
            // The client opens the volume again: the Master hands it a
            // newer epoch (every older writer is fenced from then on) and
            // the volume's head version.
            self.epoch += 1;
            self.clients[c].epoch = self.epoch;
            self.clients[c].tag = (self.vol.head, self.vol.base);
        }
        // Once the clone is made, some IO goes to it (at its own head,
        // which never moves here).
        let on_clone = self.vol.clone_ready() && self.chance(30);
        let block = self.rand(self.cfg.blocks) + if on_clone { self.cfg.blocks } else { 0 };
        let sector = self.rand(SECTORS);
        let count = (1 + self.rand(4)).min(SECTORS - sector);
        let tag = if on_clone {
            (1, 0)
        } else {
            self.clients[c].tag
        };
        let read = Body::Read {
            block,
            sector,
            count,
            at: 0,
        };
        let body = match self.rand(100) {
            0..=44 => {
                let op = self.clients[c].next_op;
                Body::Write {
                    block,
                    sector,
                    count,
                    value: (c as u64 + 1) << 40 | op,
                    tag,
                }
            }
            45..=54 => Body::Zero {
                block,
                sector,
                count,
                tag,
            },
            55..=88 => read,
            89..=95 if on_clone => read,
            89..=95 => match self.vol.readable_snapshot(self.rng.next_u64() as usize) {
                Some(at) => Body::Read {
                    block,
                    sector,
                    count,
                    at,
                },
                None => read,
            },
            _ => {
                let (pick, kind) = (self.rand(1 << 20) as usize, self.rand(10));
                // The task's steps go out as clients pick them up.
                self.vol.start_task(kind, pick, self.now, self.cfg.groups);
                read
            }
        };
        self.begin(c, body);
    }

    /// Starts request `body` for client `c`.
    fn begin(&mut self, c: usize, body: Body) {
        let id = self.clients[c].next_op;
        self.clients[c].next_op += 1;
        let group = match (&body, body.block()) {
            (
                Body::Advance { group, .. } | Body::Drop { group, .. } | Body::Clone { group, .. },
                _,
            ) => *group,
            (_, Some(b)) => (locate(b, self.cfg.blocks).1 % self.cfg.groups as u64) as usize,
            (_, None) => self.rand(self.cfg.groups as u64) as usize,
        };
        let mut hist = Vec::new();
        let put = match body {
            Body::Write {
                block,
                sector,
                count,
                value,
                ..
            } => Some((block, sector, count, value)),
            Body::Zero {
                block,
                sector,
                count,
                ..
            } => Some((block, sector, count, 0)),
            _ => None,
        };
        if let Some((block, sector, count, value)) = put {
            for s in sector..sector + count {
                hist.push(self.history.len());
                self.history.push(Some(Op {
                    client: c as u64 + 1,
                    invoke: self.now,
                    complete: None,
                    kind: OpKind::Put {
                        key: sectors::key(block, s),
                        value,
                    },
                }));
            }
        }
        self.clients[c].cur = Some(Current {
            id,
            group,
            body,
            invoke: self.now,
            attempt: 0,
            hist,
        });
        self.send(c);
    }

    /// Sends client `c`'s request (again) to the node it believes leads.
    fn send(&mut self, c: usize) {
        let n = self.nodes.len() as u64;
        let Some(cur) = self.clients[c].cur.as_mut() else {
            return;
        };
        cur.attempt += 1;
        let (op, attempt, group, body) = (cur.id, cur.attempt, cur.group, cur.body.clone());
        let node = match self.clients[c].guess[group] {
            Some(node) => node,
            None => (self.rng.next_u64() % n) as usize,
        };
        let epoch = self.clients[c].epoch;
        let d = 1 + self.rand(3);
        self.schedule(
            d,
            Ev::Request {
                node,
                group,
                client: c,
                op,
                epoch,
                body,
            },
        );
        self.schedule(
            CLIENT_TIMEOUT_MS,
            Ev::ClientTimeout {
                client: c,
                op,
                attempt,
            },
        );
    }

    fn finish(&mut self, c: usize) {
        self.clients[c].cur = None;
        let d = self.rand(5);
        self.schedule(d, Ev::ClientNext { client: c });
    }

    /// The request's deadline passed: a write's outcome is unknown (its
    /// history entries stay without a completion), a read is dropped.
    fn give_up(&mut self, c: usize) {
        let Some(cur) = self.clients[c].cur.as_ref() else {
            return;
        };
        match cur.body {
            Body::Write { .. } | Body::Zero { .. } => self.stats.unknown += 1,
            // A version step is sent until it takes (a SnapshotWorker
            // never gives up on a task).
            Body::Advance { .. } | Body::Drop { .. } | Body::Clone { .. } => return self.send(c),
            // A read begun once the faults stopped must be answered; one
            // begun under them may time out in an election that follows.
            Body::Read { .. } if self.phase != Phase::Faults && cur.invoke >= self.cfg.millis => {
                return self.fail(format!(
                    "client {} gave up on a read after the faults stopped",
                    c + 1
                ));
            }
            _ => {}
        }
        self.finish(c);
    }

    fn on_reply(&mut self, c: usize, op: u64, reply: Reply) {
        let Some(cur) = self.clients[c].cur.as_ref() else {
            return;
        };
        if cur.id != op {
            return; // an answer to a request given up on
        }
        let (group, attempt) = (cur.group, cur.attempt);
        match reply {
            Reply::NotLeader(hint) => {
                let hint = hint.map(|id| id as usize - 1);
                let same = self.clients[c].guess[group] == hint;
                self.clients[c].guess[group] = hint;
                if hint.is_some() && !same {
                    self.send(c);
                } else {
                    self.clients[c].guess[group] = None;
                    self.schedule(10, Ev::Resend { client: c, op });
                }
            }
            Reply::Retry => {
                self.clients[c].guess[group] = None;
                self.schedule(10, Ev::Resend { client: c, op });
            }
            Reply::Data(data) => self.on_data(c, &data),
            Reply::Applied(Applied::Done(o)) => {
                let Some(cur) = self.clients[c].cur.as_ref() else {
                    return;
                };
                match (&cur.body, o) {
                    (Body::Write { .. } | Body::Zero { .. }, _) => {
                        for &h in &cur.hist {
                            if let Some(op) = self.history[h].as_mut() {
                                op.complete = Some(self.now);
                            }
                        }
                        self.stats.writes_acked += 1;
                    }
                    (Body::Advance { .. }, EngineOutcome::Advanced { .. })
                    | (Body::Drop { .. }, EngineOutcome::Dropped { .. } | EngineOutcome::Skipped)
                    | (Body::Clone { .. }, EngineOutcome::Cloned | EngineOutcome::Skipped) => {
                        let now = self.now;
                        self.vol.step_done(group, now);
                    }
                    _ => {}
                }
                self.finish(c);
            }
            Reply::Applied(Applied::Refused(Refusal::Fenced { .. })) => {
                let Some(cur) = self.clients[c].cur.as_ref() else {
                    return;
                };
                // One attempt refused: the write never happened. After
                // several, an earlier one may have applied: unknown.
                if attempt == 1 {
                    for &h in &cur.hist {
                        self.history[h] = None;
                    }
                }
                self.stats.fenced += 1;
                // The client learns it was fenced and opens the volume
                // again: a newer epoch, which fences every other writer.
                self.epoch += 1;
                self.clients[c].epoch = self.epoch;
                self.finish(c);
            }
            Reply::Applied(Applied::Refused(Refusal::NotRetained(_)))
                if matches!(
                    self.clients[c].cur.as_ref().map(|c| &c.body),
                    Some(Body::Drop { .. })
                ) =>
            {
                // A drop retried after it applied.
                let now = self.now;
                self.vol.step_done(group, now);
                self.finish(c);
            }
            Reply::Applied(Applied::Refused(Refusal::NoSuchVersion(v)))
                if self.vol.deleting(v)
                    && matches!(
                        self.clients[c].cur.as_ref().map(|c| &c.body),
                        Some(Body::Read { at, .. }) if *at == v
                    ) =>
            {
                // A read of a snapshot being deleted: refused, as it may be.
                self.finish(c);
            }
            Reply::Applied(Applied::Refused(Refusal::TooManyVersions)) => {
                if let Some(Body::Advance { .. }) = self.clients[c].cur.as_ref().map(|c| &c.body) {
                    return self.fail(format!("group {group}: too many versions"));
                }
                self.finish(c)
            }
            Reply::Applied(Applied::Refused(Refusal::Stale { head, base, .. })) => {
                // A write behind a version change: the client learns the
                // head the group named and sends it again there (it never
                // applied at the old one).
                if head > self.clients[c].tag.0 {
                    self.clients[c].tag = (head, base);
                }
                let Some(cur) = self.clients[c].cur.as_mut() else {
                    return;
                };
                match &mut cur.body {
                    Body::Write { tag, .. } | Body::Zero { tag, .. } => *tag = (head, base),
                    Body::Advance { head: h, .. } if head >= *h => {
                        // The group is past this step already.
                        let now = self.now;
                        self.vol.step_done(group, now);
                        return self.finish(c);
                    }
                    other => {
                        let other = other.clone();
                        return self.fail(format!("client {}: stale {other:?}", c + 1));
                    }
                }
                self.stats.stale += 1;
                self.send(c);
            }
            Reply::Applied(other) => {
                self.fail(format!("client {}: unexpected answer {other:?}", c + 1));
            }
        }
    }

    fn on_data(&mut self, c: usize, data: &[u8]) {
        let Some(cur) = self.clients[c].cur.as_ref() else {
            return;
        };
        let Body::Read {
            block,
            sector,
            count,
            at,
        } = cur.body
        else {
            return self.fail(format!("client {}: data for a write", c + 1));
        };
        if data.len() as u64 != count * SECTOR {
            return self.fail(format!(
                "client {}: a read of {count} sectors got {} bytes",
                c + 1,
                data.len()
            ));
        }
        // A snapshot's read is a read of the volume at the snapshot's
        // cut: somewhere between the moment the Master took it and the
        // moment every group had.
        let (invoke, complete) = match at {
            0 => (cur.invoke, self.now),
            v => match self.vol.cut_of(v) {
                Some(cut) => cut,
                None => return self.fail(format!("a read of unknown snapshot version {v}")),
            },
        };
        let blocks = self.cfg.blocks;
        for (i, s) in data.chunks_exact(SECTOR as usize).enumerate() {
            let key = sectors::key(block, sector + i as u64);
            // A clone's sector it never wrote is its source's, as written
            // there (the register is still the clone's).
            let decoded = sectors::decode(s, key).or_else(|why| match locate(block, blocks) {
                (CLONE, b) => sectors::decode(s, sectors::key(b, sector + i as u64)),
                _ => Err(why),
            });
            match decoded {
                Ok(v) => {
                    if at != 0 {
                        if let Err(why) = self.vol.saw(at, key, v) {
                            return self.fail(why);
                        }
                    }
                    self.history.push(Some(Op {
                        client: c as u64 + 1,
                        invoke,
                        complete: Some(complete),
                        kind: OpKind::Get {
                            key,
                            result: Some(v),
                        },
                    }))
                }
                Err(why) => return self.fail(format!("client {} read wrong data: {why}", c + 1)),
            }
        }
        self.stats.reads += 1;
        if self.phase != Phase::Faults {
            self.stats.sectors_checked += count;
        }
        self.finish(c);
    }

    // ----- the end -----------------------------------------------------------

    /// Every replica up, and each group's replicas applied all its leader
    /// committed.
    fn converged(&self) -> bool {
        (0..self.cfg.groups).all(|g| {
            let mut commit = 0;
            let mut leader = false;
            for n in &self.nodes {
                let Some(d) = n.groups[g].driver.as_ref() else {
                    return false;
                };
                commit = commit.max(d.raft().commit_index());
                leader |= d.raft().role() == Role::Leader;
            }
            leader
                && self.nodes.iter().all(|n| {
                    n.groups[g]
                        .engine
                        .as_ref()
                        .is_some_and(|e| e.applied_index() >= commit)
                })
        })
    }

    /// After convergence every replica's engine holds the same bytes.
    fn compare_replicas(&mut self) -> Result<(), String> {
        let vblocks = self.cfg.blocks * if self.vol.clone_ready() { 2 } else { 1 };
        for vblock in 0..vblocks {
            let (volume, block) = locate(vblock, self.cfg.blocks);
            let g = (block % self.cfg.groups as u64) as usize;
            self.scrub(g, volume, block)?;
            let mut first: Option<(NodeId, Vec<u8>)> = None;
            for n in &mut self.nodes {
                let Some(e) = n.groups[g].engine.as_mut() else {
                    return Err(format!("node {} has no engine for group {g}", n.id));
                };
                let mut buf = vec![0u8; (SECTORS * SECTOR) as usize];
                match e.read(volume, block, 0, &mut buf, ReadAt::Head) {
                    Ok(Ok(())) => {}
                    other => {
                        return Err(format!("node {}: reading block {block}: {other:?}", n.id))
                    }
                }
                match &first {
                    None => first = Some((n.id, buf)),
                    Some((id, b)) if *b != buf => {
                        let s = b
                            .chunks(SECTOR as usize)
                            .zip(buf.chunks(SECTOR as usize))
                            .position(|(x, y)| x != y)
                            .unwrap_or(0);
                        return Err(format!(
                            "replicas diverge: volume {volume} block {block} sector {s} differs \
                             between nodes {id} and {}",
                            n.id
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }

    /// Once every replica caught up and reclaiming ran to its end, no
    /// tree keeps a version nobody can read or descends from: deleted
    /// snapshots and abandoned heads are gone, and their slots with them.
    fn check_reclaimed(&mut self) -> Result<(), String> {
        let deleted = self.vol.deleted_versions();
        for n in &mut self.nodes {
            for (g, r) in n.groups.iter_mut().enumerate() {
                let Some(e) = r.engine.as_mut() else { continue };
                while e
                    .gc_step(1024)
                    .map_err(|err| format!("reclaiming: {err}"))?
                {}
                let rows = e.versions(VOLUME);
                for row in &rows {
                    let has_child = rows.iter().any(|o| o.parent == Some(row.version));
                    if row.state == VersionState::Gone && !has_child {
                        return Err(format!(
                            "node {} group {g}: version {} is gone but still kept ({} slots)",
                            n.id, row.version, row.slots
                        ));
                    }
                    if deleted.contains(&row.version) && row.state != VersionState::Gone {
                        return Err(format!(
                            "node {} group {g}: deleted snapshot version {} is {:?}",
                            n.id, row.version, row.state
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn check_history(&self) -> Result<(), String> {
        let mut ops: Vec<Op> = self.history.iter().flatten().copied().collect();
        self.vol.check_cuts(&ops)?;
        // A rollback writes every sector with the snapshot's value,
        // somewhere between its start and the moment every group took it.
        ops.extend(self.vol.rollback_writes());
        // The clone starts as its snapshot's content.
        ops.extend(self.vol.clone_writes(self.cfg.blocks));
        linearizability::check(&ops).map(drop).map_err(|v| {
            let (block, sector) = sectors::split_key(v.key);
            let block = match locate(block, self.cfg.blocks) {
                (CLONE, b) => format!("the clone's block {b}"),
                (_, b) => format!("block {b}"),
            };
            format!(
                "per-sector linearizability: {block} sector {sector}: {}",
                v.reason
            )
        })
    }
}

/// The simulator as the driver's host for one replica.
struct SimHost<'a> {
    sim: &'a mut Sim,
    i: usize,
    g: usize,
    crash: bool,
}

impl Host for SimHost<'_> {
    type Error = String;

    fn send(&mut self, _raft: &Raft<NodeStorage>, msg: Message) {
        self.sim.send_raft(self.g, msg);
    }

    fn work(&mut self, raft: &Raft<NodeStorage>, work: Work) -> Result<(), String> {
        match work {
            Work::Entries(entries) => self.sim.apply(raft, self.i, self.g, &entries),
            Work::LeaderStop => {
                self.sim.leader_stop(self.i, self.g);
                Ok(())
            }
            Work::Load { meta, .. } => Err(format!(
                "node {} group {}: a snapshot at {} was installed, but this simulation never \
                 compacts its logs",
                self.sim.nodes[self.i].id, self.g, meta.index
            )),
            Work::LeaderStart { .. } | Work::StartFollowing { .. } | Work::StopFollowing => Ok(()),
        }
    }

    fn read_ready(&mut self, _raft: &Raft<NodeStorage>, rs: raft_core::core::ReadState) {
        self.sim.nodes[self.i].groups[self.g]
            .ready_reads
            .push((rs.index, rs.ctx));
    }

    fn at(
        &mut self,
        _raft: &Raft<NodeStorage>,
        stage: Stage,
        rd: &raft_core::core::Ready,
    ) -> Result<Flow, String> {
        // Power cuts at the moments they hurt: before a durable write, and
        // after it before anything depending on it is sent.
        let durable = rd.hard_state.is_some() || !rd.entries.is_empty();
        if self.sim.phase == Phase::Faults
            && durable
            && stage != Stage::Advanced
            && self.sim.rand(1_000) < 3
        {
            self.crash = true;
            return Ok(Flow::Stop);
        }
        Ok(Flow::Go)
    }
}
