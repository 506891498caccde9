//! One simulated run: a cluster of real cores, a seeded scheduler, a network
//! with injected faults, clients, invariant checks after every step and a
//! linearizability check at the end.
//!
//! Time is in simulated milliseconds. A node ticks every `period` ms (10 by
//! default; the `tickrate` fault changes it by up to 10%). A run has two
//! phases: `steps` events with faults, then a quiet phase in which every
//! fault is healed and the cluster must elect a leader and finish every
//! pending client operation within [`LIVENESS_BOUND_MS`].

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;

use rand_core::{RngCore, SeedableRng};
use rand_pcg::Pcg64Mcg;

mod host;
mod liveness;

use self::host::SimHost;
use super::faults::{FaultKind, FaultSet};
use super::invariants::{Invariants, Violation};
use super::kv::{Command, Kv, Request};
use super::linearizability;
use super::workload::{Client, ClientOp, Pending, ReadPath};
use crate::core::{Config, Event, Membership, Message, MessageBody, NodeId, Raft, ReadMode, Role};
use crate::driver::{Driver, DriverError, WorkCheck};
use crate::storage::fs::{Fault, Fs, SimFs, SimFsConfig};
use crate::storage::host_sync::HostSync;
use crate::storage::local::{self, LocalOptions};
use crate::storage::{NodeStorage, Storage, StorageError};
use crate::trace::events::event_kind;
use crate::trace::schema::{ClientDir, ClientOp as TraceOp, Header, Kind, NodeRole, Record};
use crate::trace::writer::TraceWriter;
use crate::{ProposeError, ReadError};

/// Simulated milliseconds between a node's ticks, before `tickrate` faults.
pub const TICK_MS: u64 = 10;
/// How long after faults stop the cluster has to elect a leader and finish
/// every pending client operation.
pub const LIVENESS_BOUND_MS: u64 = 10_000;
/// A client gives up on a node after this long and tries another.
const CLIENT_TIMEOUT_MS: u64 = 300;
/// With `compact`: a snapshot at every multiple of this index (the same
/// indexes on every node, so every replica's snapshot is byte-identical and
/// a transfer can resume from a new leader).
pub const SNAPSHOT_INTERVAL: u64 = 16;
/// With `compact`: entries kept behind a snapshot for slow followers.
pub const LOG_MARGIN: u64 = 4;
/// Nodes that start outside the group when membership changes are on.
pub const SPARE_NODES: usize = 2;
/// Where a node's stores live on its simulated disk.
const DISK_DIR: &str = "/raft";

/// The `local` stores' options in the simulator: small log segments, so
/// runs roll, purge and recover many segment files.
fn disk_options() -> LocalOptions {
    LocalOptions {
        segment_bytes: 16 << 10,
    }
}
/// Hard cap on quiet-phase steps, so a livelock cannot spin forever.
const MAX_QUIET_STEPS: u64 = 2_000_000;

/// With `--quiesce`: idle leader ticks before a group quiesces (50 ms,
/// so groups quiesce between the clients' bursts as well as at the end).
pub const QUIESCE_AFTER_TICKS: u32 = 5;
/// With `--quiesce`: how long the quiet phase waits, once the cluster
/// settled, for the whole group to be quiescent.
pub const QUIESCE_BOUND_MS: u64 = 5_000;

/// What to simulate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    pub nodes: usize,
    pub seed: u64,
    /// Events processed while faults are injected.
    pub steps: u64,
    pub faults: FaultSet,
    /// Record a trace (costs time; off for sweeps).
    pub trace: bool,
    pub clients: usize,
    pub pre_vote: bool,
    pub check_quorum: bool,
    /// Inject random membership changes; `SPARE_NODES` extra nodes start
    /// outside the group and can be added.
    pub reconfig: bool,
    /// Snapshot every `SNAPSHOT_INTERVAL` entries and compact the log
    /// behind, with tiny throttled chunks, so installs happen often and get
    /// interrupted; 5% of chunks are corrupted in flight.
    pub compact: bool,
    /// Quiescent groups: the leader of an idle group stops heartbeating
    /// and its followers stop their election timers; a node-level liveness
    /// layer (`cluster/liveness.rs`) wakes followers whose leader's node
    /// it declares dead. The quiet phase then also waits for the group to
    /// quiesce, crashes its leader and waits for a new one.
    pub quiesce: bool,
    /// Raft groups hosted by every node (1: today's single-group run).
    /// Every group has a replica on each node, sharing what a real host
    /// shares: the node's disk (each group's stores in their own
    /// directory, the logs synced through one `HostSync` when there are
    /// several), its faults (a crash, pause or partition hits every group
    /// at once) and its node-level liveness. `steps` is per group: the
    /// fault phase runs `steps * groups` events, so each group sees about
    /// as much simulated time as a single-group run.
    pub groups: usize,
    /// The group a trace follows when there are several (0-based): its
    /// messages, client operations and events, with the node-level ones
    /// (crashes, pauses, partitions) every group shares. A trace names
    /// nodes, not groups, so it holds one group. Must be below
    /// [`SimConfig::group_count`]: a run is refused (a panic naming both)
    /// otherwise, as for any misbuilt config.
    pub trace_group: usize,
    /// Bugs to inject into every node (test builds only).
    #[cfg(feature = "bug-injection")]
    pub bugs: crate::core::BugSet,
}

impl SimConfig {
    /// A run with production defaults (PreVote and CheckQuorum on), three
    /// clients, no trace.
    pub fn new(nodes: usize, seed: u64, steps: u64, faults: FaultSet) -> SimConfig {
        SimConfig {
            nodes,
            seed,
            steps,
            faults,
            trace: false,
            clients: 3,
            pre_vote: true,
            check_quorum: true,
            reconfig: false,
            compact: false,
            quiesce: false,
            groups: 1,
            trace_group: 0,
            #[cfg(feature = "bug-injection")]
            bugs: Default::default(),
        }
    }

    /// Groups per node, at least one.
    pub fn group_count(&self) -> usize {
        self.groups.max(1)
    }

    /// Simulated clients: the configured count, at least one per group
    /// (client `c` works on group `c % groups`).
    pub fn client_count(&self) -> usize {
        if self.group_count() == 1 {
            // Live sessions start with none and add their own.
            return self.clients;
        }
        self.clients.max(self.group_count())
    }

    /// Every node the run starts: the initial voters, then the spares.
    pub fn all_nodes(&self) -> usize {
        self.nodes + if self.reconfig { SPARE_NODES } else { 0 }
    }

    /// The config of node `id`. Batching and pipelining limits vary with
    /// the seed (they change timing, never safety), so a sweep covers
    /// one-entry probes as well as long pipelines.
    pub(crate) fn node_config(&self, id: NodeId) -> Config {
        let mut c = Config::new(id);
        let v = self.seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32;
        c.election_tick = 10;
        c.heartbeat_tick = 3;
        c.lease_tick = 5;
        c.pre_vote = self.pre_vote;
        c.check_quorum = self.check_quorum;
        c.max_entries_per_msg = [1, 2, 8, 64][(v & 3) as usize];
        c.max_inflight_msgs = [1, 2, 4, 32][(v >> 2 & 3) as usize];
        // A learner must be close to the leader to be promoted, and gets
        // half a second (50 ticks) to get there.
        c.catchup_margin = 8;
        c.catchup_timeout = 50;
        if self.quiesce {
            c.quiesce_after_ticks = QUIESCE_AFTER_TICKS;
        }
        if self.compact {
            c.snapshot_chunk_size = 16;
            c.snapshot_bytes_per_tick = 48;
            c.max_snapshot_sends = 1;
        }
        #[cfg(feature = "bug-injection")]
        {
            c.bugs = self.bugs;
        }
        c
    }
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The step at which it was detected.
    pub step: u64,
    /// Simulated time then.
    pub time: u64,
    /// The broken property: an invariant's name, "Liveness",
    /// "Linearizability" or "Core error".
    pub property: String,
    pub detail: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} violated at step {} (t={}ms): {}",
            self.property, self.step, self.time, self.detail
        )
    }
}

/// Counters of what happened in a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub leaders_elected: u64,
    pub max_term: u64,
    pub committed: u64,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub client_ops: u64,
    pub crashes: u64,
    pub pauses: u64,
    pub partitions: u64,
    pub transfers: u64,
    pub lease_reads: u64,
    pub read_index_reads: u64,
    pub log_reads: u64,
    /// Membership changes proposed, by path.
    pub joint_changes: u64,
    pub single_adds: u64,
    pub single_removes: u64,
    pub leader_removals: u64,
    pub learners_added: u64,
    pub learners_removed: u64,
    /// Changes that completed, and that failed (a learner too slow, or the
    /// leader lost).
    pub changes_done: u64,
    pub changes_failed: u64,
    /// Snapshot activity.
    pub snapshots_taken: u64,
    pub snapshots_offered: u64,
    pub snapshots_installed: u64,
    pub snapshots_resumed: u64,
    pub snapshots_discarded: u64,
    pub chunks_sent: u64,
    pub chunks_rejected: u64,
    /// Disk faults injected (EIO or a full disk, on one node for a while).
    pub disk_faults: u64,
    /// Nodes stopped by a storage error under an injected disk fault or a
    /// power cut in the middle of a write.
    pub disk_stops: u64,
    /// Unsynced writes crashes dropped, and kept a torn part of.
    pub disk_writes_lost: u64,
    pub disk_writes_torn: u64,
    /// Quiescence (`--quiesce`): times a leader quiesced its group, times
    /// a quiescent node woke (of them, because its leader's node was
    /// declared dead), node-level pings sent and peers declared dead.
    pub quiesced: u64,
    pub wakes: u64,
    pub wakes_leader_dead: u64,
    pub liveness_pings: u64,
    pub peers_declared_dead: u64,
    /// Leaders crashed while their group was quiescent (quiet phase) and
    /// replaced.
    pub quiescent_leader_crashes: u64,
    /// Many groups per node (`groups > 1`): node restarts after the start;
    /// group replicas stopped by their node's crash and started again with
    /// it (each `groups` times the node figure when every crash and
    /// restart reaches every group); whole-disk log syncs (`HostSync`)
    /// and the group log syncs they served; and, at the end of each run,
    /// the groups each node leads (index: node id - 1), summed over runs.
    pub restarts: u64,
    pub group_crashes: u64,
    pub group_restarts: u64,
    pub host_syncs: u64,
    pub host_sync_requests: u64,
    pub groups_led: Vec<u64>,
}

impl Stats {
    /// Adds `o`'s counters to these (`max_term` takes the larger).
    pub fn add(&mut self, o: &Stats) {
        self.leaders_elected += o.leaders_elected;
        self.max_term = self.max_term.max(o.max_term);
        self.committed += o.committed;
        self.messages_sent += o.messages_sent;
        self.messages_dropped += o.messages_dropped;
        self.client_ops += o.client_ops;
        self.crashes += o.crashes;
        self.pauses += o.pauses;
        self.partitions += o.partitions;
        self.transfers += o.transfers;
        self.lease_reads += o.lease_reads;
        self.read_index_reads += o.read_index_reads;
        self.log_reads += o.log_reads;
        self.joint_changes += o.joint_changes;
        self.single_adds += o.single_adds;
        self.single_removes += o.single_removes;
        self.leader_removals += o.leader_removals;
        self.learners_added += o.learners_added;
        self.learners_removed += o.learners_removed;
        self.changes_done += o.changes_done;
        self.changes_failed += o.changes_failed;
        self.snapshots_taken += o.snapshots_taken;
        self.snapshots_offered += o.snapshots_offered;
        self.snapshots_installed += o.snapshots_installed;
        self.snapshots_resumed += o.snapshots_resumed;
        self.snapshots_discarded += o.snapshots_discarded;
        self.chunks_sent += o.chunks_sent;
        self.chunks_rejected += o.chunks_rejected;
        self.disk_faults += o.disk_faults;
        self.disk_stops += o.disk_stops;
        self.disk_writes_lost += o.disk_writes_lost;
        self.disk_writes_torn += o.disk_writes_torn;
        self.quiesced += o.quiesced;
        self.wakes += o.wakes;
        self.wakes_leader_dead += o.wakes_leader_dead;
        self.liveness_pings += o.liveness_pings;
        self.peers_declared_dead += o.peers_declared_dead;
        self.quiescent_leader_crashes += o.quiescent_leader_crashes;
        self.restarts += o.restarts;
        self.group_crashes += o.group_crashes;
        self.group_restarts += o.group_restarts;
        self.host_syncs += o.host_syncs;
        self.host_sync_requests += o.host_sync_requests;
        if self.groups_led.len() < o.groups_led.len() {
            self.groups_led.resize(o.groups_led.len(), 0);
        }
        for (a, b) in self.groups_led.iter_mut().zip(&o.groups_led) {
            *a += b;
        }
    }
}

/// The result of one run.
#[derive(Debug)]
pub struct Outcome {
    pub seed: u64,
    /// Every event processed, both phases.
    pub steps: u64,
    /// Simulated milliseconds at the end.
    pub sim_time: u64,
    pub failure: Option<Failure>,
    pub stats: Stats,
    /// The trace, when asked for.
    pub trace: Option<Vec<u8>>,
}

#[derive(Debug)]
pub(crate) enum Ev {
    Tick {
        node: usize,
        inc: u64,
    },
    /// A message of group `group` (an index into `SimNode::groups`)
    /// arrives; every other event is node-, client- or run-level, and a
    /// client's group is fixed (`Sim::group_of`).
    Deliver {
        id: u64,
        group: usize,
        /// Boxed: the event queue is a heap of `Scheduled`s moved on every
        /// push and pop, and a message is much larger than the others.
        msg: Box<Message>,
    },
    /// A node-level liveness ping (`--quiesce`).
    Ping {
        from: NodeId,
        to: NodeId,
    },
    ClientArrive {
        node: usize,
        client: usize,
        seq: u64,
        op: ClientOp,
    },
    ClientReply {
        client: usize,
        seq: u64,
        result: Reply,
    },
    ClientTimer {
        client: usize,
        seq: u64,
        attempt: u64,
    },
    ClientStart {
        client: usize,
    },
    Fault,
    Transfer,
    Reconfig,
    Restart {
        node: usize,
    },
    Resume {
        node: usize,
    },
    /// A disk fault on a node ends.
    DiskHeal {
        node: usize,
        epoch: u64,
    },
    Heal {
        epoch: u64,
    },
    WeatherEnd {
        kind: FaultKind,
        epoch: u64,
    },
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Reply {
    Done(Option<u64>),
    Refused {
        hint: Option<NodeId>,
        why: &'static str,
    },
}

pub(crate) struct Scheduled {
    pub(crate) time: u64,
    seq: u64,
    pub(crate) ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.time, self.seq) == (o.time, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    // Reversed: BinaryHeap is a max-heap and we want the earliest first.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.time, o.seq).cmp(&(self.time, self.seq))
    }
}

/// A simulated node: one host process with its disk, clock and
/// node-level liveness, hosting one replica of every group.
///
/// Why a `Vec` of replicas inside the node rather than G independent
/// single-group simulations: what the multi-group host shares must be
/// shared here too, or the simulator would test something the runtime is
/// not. A crash drops every replica's unsynced writes in one `SimFs`
/// crash; a disk fault reaches every group's stores; a pause stops every
/// group's clock and messages; one liveness view reports to every core.
/// Everything per group (driver, state machine, client bookkeeping) sits
/// in [`Replica`], indexed by group; the events that concern one group's
/// replica carry the group index (`Ev::Deliver`), the rest stay
/// node-level. With one group this is exactly the former one-node layout.
pub(crate) struct SimNode {
    pub(crate) id: NodeId,
    /// Whether the node (every replica on it) is running.
    up: bool,
    /// The node's replicas, one per group.
    pub(crate) groups: Vec<Replica>,
    /// The node's disk: survives crashes, loses what was not synced.
    fs: SimFs,
    /// With several groups: the one log sync their stores share in this
    /// incarnation (a failed sync is final, so each recovery gets a new
    /// one, as a restarted process would).
    host_sync: Option<Arc<HostSync>>,
    /// A disk fault was injected since the node last started: a storage
    /// error stops the node (as it would a process) instead of failing
    /// the run.
    disk_faulted: bool,
    /// The epoch of the disk fault active on the node, if any.
    disk_fault: Option<u64>,
    /// Incarnation: bumped on restart so the old one's ticks are ignored.
    inc: u64,
    period: u64,
    pub(crate) paused: bool,
    missed_ticks: u64,
    /// Messages that arrived while paused: (id, group, message).
    inbox: Vec<(u64, usize, Message)>,
    /// Node-level liveness of its peers (`--quiesce`), shared by every
    /// group on the node.
    liveness: liveness::PeerLiveness,
}

/// One group's replica on a node.
pub(crate) struct Replica {
    /// The running replica: the shipped driver over the shipped storage
    /// (the `local` stores on the node's disk).
    pub(crate) driver: Option<Box<Driver>>,
    /// The replica's storage while the node is down, opened again
    /// (recovered) right after the crash; `None` when that failed (an
    /// injected disk fault), and the restart tries again.
    disk: Option<NodeStorage>,
    pub(crate) kv: Kv,
    /// The driver's work for `kv`, checked against the state machine
    /// contract.
    contract: WorkCheck,
    /// client -> seq of the proposal this replica accepted for it.
    proposals: BTreeMap<usize, u64>,
    /// read ctx -> (client, seq, key), awaiting confirmation.
    reads: BTreeMap<u64, (usize, u64, u64)>,
    /// Confirmed reads awaiting apply: (index, ctx).
    ready_reads: Vec<(u64, u64)>,
    /// Commit index last seen, for the invariant checks.
    commit: u64,
    /// Role last reported, for `role` trace events.
    role: NodeRole,
    /// Leader that has not yet seen its commit index move.
    new_leader: bool,
    /// Configuration last reported, for `config` trace events.
    membership: crate::core::Membership,
}

impl Replica {
    fn new() -> Replica {
        Replica {
            driver: None,
            disk: None,
            kv: Kv::default(),
            contract: WorkCheck::default(),
            proposals: BTreeMap::new(),
            reads: BTreeMap::new(),
            ready_reads: Vec::new(),
            commit: 0,
            role: NodeRole::Follower,
            new_leader: false,
            membership: Default::default(),
        }
    }

    /// The running replica's core.
    pub(crate) fn raft(&self) -> Option<&Raft<NodeStorage>> {
        self.driver.as_deref().map(Driver::raft)
    }
}

impl SimNode {
    /// Whether the node is running (not crashed or stopped).
    pub(crate) fn is_up(&self) -> bool {
        self.up
    }

    /// The core of group `g`'s replica, when the node runs.
    pub(crate) fn raft(&self, g: usize) -> Option<&Raft<NodeStorage>> {
        self.groups[g].raft()
    }

    /// The core of group `g`'s replica, for ticks, messages and client
    /// work (`Ready`s go through the driver only).
    pub(crate) fn raft_mut(&mut self, g: usize) -> Option<&mut Raft<NodeStorage>> {
        self.groups[g].driver.as_deref_mut().map(Driver::raft_mut)
    }
}

/// Weather: message-level faults active until a deadline.
#[derive(Default)]
struct Weather {
    active: BTreeMap<FaultKind, u64>,
}

pub(crate) struct Sim {
    cfg: SimConfig,
    rng: Pcg64Mcg,
    pub(crate) now: u64,
    pub(crate) step: u64,
    seq: u64,
    pub(crate) queue: BinaryHeap<Scheduled>,
    pub(crate) nodes: Vec<SimNode>,
    pub(crate) clients: Vec<Client>,
    pub(crate) blocked: BTreeSet<(NodeId, NodeId)>,
    pub(crate) partition_epoch: u64,
    weather: Weather,
    weather_epoch: u64,
    pub(crate) quiet: bool,
    next_msg_id: u64,
    next_ctx: u64,
    pub(crate) next_value: u64,
    /// The invariant checks, one per group.
    inv: Vec<Invariants>,
    pub(crate) stats: Stats,
    pub(crate) trace: Option<TraceWriter<Vec<u8>>>,
    /// The node whose traced group's driver is out of `nodes` handling a
    /// `Ready`, with its term, role and commit index, for trace records.
    viewing: Option<(NodeId, u64, NodeRole, u64)>,
}

/// Runs one simulation to completion.
pub fn run(cfg: &SimConfig) -> Outcome {
    let mut sim = Sim::new(cfg.clone());
    let failure = sim.run_all().err();
    let trace = sim.trace.take().map(|w| w.into_string().into_bytes());
    sim.stats.committed = sim.inv.iter().map(Invariants::committed_index).sum();
    sim.finish_host_stats();
    Outcome {
        seed: cfg.seed,
        steps: sim.step,
        sim_time: sim.now,
        failure,
        stats: sim.stats,
        trace,
    }
}

fn node_rng(seed: u64, node: NodeId, inc: u64, group: usize) -> Box<dyn RngCore + Send> {
    // Distinct, reproducible streams per node, incarnation and group
    // (group 0's is the single-group stream, unchanged).
    let s = seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(node.wrapping_mul(0xbf58_476d_1ce4_e5b9))
        .wrapping_add(inc.wrapping_mul(0x94d0_49bb_1331_11eb))
        .wrapping_add((group as u64).wrapping_mul(0xd6e8_feb8_6659_fd93));
    Box::new(Pcg64Mcg::seed_from_u64(s))
}

impl Sim {
    pub(crate) fn new(cfg: SimConfig) -> Sim {
        let ids: Vec<NodeId> = (1..=cfg.all_nodes() as u64).collect();
        let voters: Vec<NodeId> = (1..=cfg.nodes as u64).collect();
        let mut rng = Pcg64Mcg::seed_from_u64(cfg.seed);
        let groups = cfg.group_count();
        assert!(
            cfg.trace_group < groups,
            "trace_group {} is not one of the run's {groups} groups",
            cfg.trace_group
        );
        // Traces name nodes, not groups: a trace follows one group.
        let trace = cfg.trace.then(|| {
            let mut header = Header::new("sim", ids.clone())
                .with_meta("seed", cfg.seed)
                .with_meta("steps", cfg.steps)
                .with_meta("faults", cfg.faults.to_string())
                .with_meta("clients", cfg.clients as u64)
                .with_meta("pre_vote", cfg.pre_vote)
                .with_meta("check_quorum", cfg.check_quorum)
                .with_meta("reconfig", cfg.reconfig)
                .with_meta("compact", cfg.compact)
                .with_meta("voters", voters.clone())
                .with_meta("tick", TICK_MS)
                .with_meta("election_tick", cfg.node_config(1).election_tick)
                .with_meta("time_unit", "ms");
            if cfg.quiesce {
                // Only then: traces of runs without it stay byte-identical.
                header = header.with_meta("quiesce", true);
            }
            if groups > 1 {
                header = header
                    .with_meta("groups", groups as u64)
                    .with_meta("traced_group", cfg.trace_group as u64);
            }
            TraceWriter::in_memory(&header)
        });
        let nodes = ids
            .iter()
            .map(|&id| SimNode {
                id,
                up: false,
                groups: (0..groups).map(|_| Replica::new()).collect(),
                fs: SimFs::new(SimFsConfig {
                    seed: cfg.seed ^ id.wrapping_mul(0x2545_f491_4f6c_dd1d),
                    ..SimFsConfig::default()
                }),
                host_sync: None,
                disk_faulted: false,
                disk_fault: None,
                inc: 0,
                period: TICK_MS,
                paused: false,
                missed_ticks: 0,
                inbox: Vec::new(),
                liveness: Default::default(),
            })
            .collect();
        let clients = (0..cfg.client_count())
            .map(|c| Client::new(c as u64 + 1, 1 + rng.next_u64() % cfg.all_nodes() as u64))
            .collect();
        Sim {
            cfg,
            rng,
            now: 0,
            step: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            clients,
            blocked: BTreeSet::new(),
            partition_epoch: 0,
            weather: Weather::default(),
            weather_epoch: 0,
            quiet: false,
            next_msg_id: 1,
            next_ctx: 1,
            next_value: 1,
            inv: (0..groups).map(|_| Invariants::default()).collect(),
            stats: Stats::default(),
            trace,
            viewing: None,
        }
    }

    pub(crate) fn rand(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.rand(100) < percent
    }

    fn schedule(&mut self, delay: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Scheduled {
            time: self.now + delay,
            seq: self.seq,
            ev,
        });
    }

    fn fail(&self, property: &str, detail: String) -> Failure {
        Failure {
            step: self.step,
            time: self.now,
            property: property.to_string(),
            detail,
        }
    }

    /// A failure in group `g`, named in the detail when there are several.
    fn fail_in(&self, g: usize, property: &str, detail: String) -> Failure {
        self.fail(property, format!("{}{detail}", self.group_label(g)))
    }

    fn violated(&self, g: usize, v: Violation) -> Failure {
        self.fail_in(g, v.property, v.detail)
    }

    /// "group G: " with several groups, "" with one (single-group
    /// messages stay as they were).
    fn group_label(&self, g: usize) -> String {
        if self.groups() > 1 {
            format!("group {g}: ")
        } else {
            String::new()
        }
    }

    /// Groups per node.
    pub(crate) fn groups(&self) -> usize {
        self.cfg.group_count()
    }

    /// The group client `c` works on.
    pub(crate) fn group_of(&self, c: usize) -> usize {
        c % self.groups()
    }

    /// A group to act on (a transfer, a membership change, the leader to
    /// crash): drawn only when there are several, so single-group runs
    /// draw the same random numbers as before.
    fn pick_group(&mut self) -> usize {
        match self.groups() {
            1 => 0,
            n => self.rand(n as u64) as usize,
        }
    }

    /// Totals a run ends with: what the nodes' `HostSync`s did and who
    /// leads which group (several groups only).
    fn finish_host_stats(&mut self) {
        if self.groups() == 1 {
            return;
        }
        let mut led = vec![0; self.nodes.len()];
        for g in 0..self.groups() {
            if let Some(i) = self.leader_index(g) {
                led[i] += 1;
            }
        }
        self.stats.groups_led = led;
        for n in &self.nodes {
            if let Some(h) = &n.host_sync {
                let s = h.stats();
                self.stats.host_syncs += s.syncs;
                self.stats.host_sync_requests += s.requests;
            }
        }
    }

    // ----- tracing -------------------------------------------------------

    /// Whether group `g`'s events go into the trace.
    pub(crate) fn traces(&self, g: usize) -> bool {
        self.trace.is_some() && g == self.cfg.trace_group
    }

    /// Traces an event of group `g` (dropped for the groups the trace does
    /// not follow).
    pub(crate) fn emit_in(&mut self, g: usize, node: NodeId, kind: Kind) {
        if g == self.cfg.trace_group {
            self.emit(node, kind);
        }
    }

    /// Traces a node-level event (or one of a run's only group).
    pub(crate) fn emit(&mut self, node: NodeId, kind: Kind) {
        if self.trace.is_none() {
            return;
        }
        let (term, role, commit) = if node == 0 {
            (0, NodeRole::None, 0)
        } else if let Some((_, t, r, c)) = self.viewing.filter(|v| v.0 == node) {
            (t, r, c)
        } else {
            match self.nodes[node as usize - 1].raft(self.cfg.trace_group) {
                Some(r) => (r.term(), r.role().into(), r.commit_index()),
                None => (0, NodeRole::Down, 0),
            }
        };
        let rec = Record {
            t: self.now,
            node,
            term,
            role,
            commit,
            kind,
        };
        if let Some(w) = self.trace.as_mut() {
            w.push(&rec);
        }
    }

    // ----- the run -------------------------------------------------------

    fn run_all(&mut self) -> Result<(), Failure> {
        for i in 0..self.nodes.len() {
            self.restart(i)?;
        }
        for c in 0..self.clients.len() {
            let d = self.rand(20);
            self.schedule(d, Ev::ClientStart { client: c });
        }
        if !self.cfg.faults.is_empty() {
            let d = 50 + self.rand(200);
            self.schedule(d, Ev::Fault);
        }
        let d = 300 + self.rand(700);
        self.schedule(d, Ev::Transfer);
        if self.cfg.reconfig {
            let d = 100 + self.rand(400);
            self.schedule(d, Ev::Reconfig);
        }

        // Steps are per group: G groups make about G times the events
        // in the same simulated time.
        let groups = self.groups() as u64;
        while self.step < self.cfg.steps.saturating_mul(groups) {
            self.next_event()?;
        }
        self.begin_quiet()?;
        let quiet_start = (self.now, self.step);
        loop {
            if self.cluster_settled() {
                break;
            }
            if self.now > quiet_start.0 + LIVENESS_BOUND_MS
                || self.step > quiet_start.1 + MAX_QUIET_STEPS.saturating_mul(groups)
            {
                return Err(self.liveness_failure());
            }
            self.next_event()?;
        }
        if self.cfg.quiesce {
            self.check_quiescent_leader_crash()?;
        }
        for c in &mut self.clients {
            c.abandon();
        }
        // Each group is its own linearizable object: its clients' history
        // is checked alone.
        for g in 0..self.groups() {
            let history: Vec<_> = (0..self.clients.len())
                .filter(|&c| self.group_of(c) == g)
                .flat_map(|c| self.clients[c].history.iter().cloned())
                .collect();
            if let Err(v) = linearizability::check(&history) {
                return Err(self.fail_in(g, "Linearizability", v.to_string()));
            }
        }
        Ok(())
    }

    /// Every group has a leader and no client waits.
    fn cluster_settled(&self) -> bool {
        let leaders = (0..self.groups()).all(|g| {
            self.nodes
                .iter()
                .any(|n| n.raft(g).is_some_and(|r| r.role() == Role::Leader))
        });
        leaders && self.clients.iter().all(|c| c.pending.is_none())
    }

    /// With `--quiesce`, once the quiet phase settled: every group must
    /// quiesce within [`QUIESCE_BOUND_MS`]; then the node leading group 0
    /// crashes, and every group it led must elect another leader within
    /// [`LIVENESS_BOUND_MS`], which only node-level liveness can bring
    /// about (nothing else wakes a quiescent follower). With many groups
    /// one node failure thus wakes many quiescent groups at once.
    fn check_quiescent_leader_crash(&mut self) -> Result<(), Failure> {
        let start = self.now;
        let leader = loop {
            let leaders: Option<Vec<usize>> = (0..self.groups())
                .map(|g| self.quiescent_group_leader(g))
                .collect();
            if let Some(l) = leaders {
                break l[0];
            }
            if self.now > start + QUIESCE_BOUND_MS {
                let g = (0..self.groups())
                    .find(|&g| self.quiescent_group_leader(g).is_none())
                    .unwrap_or(0);
                let d = format!(
                    "the group did not quiesce within {QUIESCE_BOUND_MS}ms of settling: {}",
                    self.quiescence_picture(g)
                );
                return Err(self.fail_in(g, "Liveness", d));
            }
            self.next_event()?;
        };
        let old_id = self.nodes[leader].id;
        // The groups the node leads: (group, term, voters).
        let led: Vec<(usize, u64, usize)> = (0..self.groups())
            .filter_map(|g| {
                let r = self.nodes[leader].raft(g)?;
                (r.role() == Role::Leader).then(|| (g, r.term(), r.membership().voters.len()))
            })
            .collect();
        // One or two voters cannot survive losing the leader.
        let led: Vec<(usize, u64)> = led
            .into_iter()
            .filter(|&(_, _, voters)| voters >= 3)
            .map(|(g, term, _)| (g, term))
            .collect();
        if led.is_empty() {
            return Ok(());
        }
        self.crash(leader);
        let start = self.now;
        loop {
            // A later term's leader, on any node: a restart the faults
            // scheduled earlier may bring the old leader back to win.
            let waiting = led.iter().find(|&&(g, old_term)| {
                !self.nodes.iter().any(|n| {
                    n.raft(g)
                        .is_some_and(|r| r.role() == Role::Leader && r.term() > old_term)
                })
            });
            let Some(&(g, _)) = waiting else {
                self.stats.quiescent_leader_crashes += led.len() as u64;
                return Ok(());
            };
            if self.now > start + LIVENESS_BOUND_MS {
                let d = format!(
                    "no new leader {LIVENESS_BOUND_MS}ms after leader {old_id} crashed while its group was quiescent: {}",
                    self.quiescence_picture(g)
                );
                return Err(self.fail_in(g, "Liveness", d));
            }
            self.next_event()?;
        }
    }

    /// The leader of group `g` whose whole group (every running member of
    /// its configuration) is quiescent, if any.
    fn quiescent_group_leader(&self, g: usize) -> Option<usize> {
        let i = self.nodes.iter().position(|n| {
            n.raft(g)
                .is_some_and(|r| r.role() == Role::Leader && r.is_quiescent())
        })?;
        let r = self.nodes[i].raft(g)?;
        let all = r.membership().members().into_iter().all(|m| {
            self.nodes[m as usize - 1]
                .raft(g)
                .is_none_or(|p| p.is_quiescent() && p.term() == r.term())
        });
        all.then_some(i)
    }

    fn quiescence_picture(&self, g: usize) -> String {
        // Learners of the leader's configuration are marked: they never
        // campaign, so only their leader's heartbeats change them.
        let learners = self
            .leader_index(g)
            .and_then(|l| self.nodes[l].raft(g))
            .map(|r| r.membership().learners.clone())
            .unwrap_or_default();
        let v: Vec<String> = self
            .nodes
            .iter()
            .map(|n| match n.raft(g) {
                Some(r) => format!(
                    "{}:{}{}@{}{}",
                    n.id,
                    r.role().name(),
                    if learners.contains(&n.id) {
                        " (learner)"
                    } else {
                        ""
                    },
                    r.term(),
                    match (r.is_quiescent(), r.leader()) {
                        (true, _) => " quiescent".to_string(),
                        (false, _) if r.role() == Role::Leader => String::new(),
                        (false, Some(l)) => format!(" awake, leader {l}"),
                        (false, None) => " awake, no leader".to_string(),
                    }
                ),
                None => format!("{}:down", n.id),
            })
            .collect();
        format!("[{}]", v.join(", "))
    }

    /// The quiet phase did not settle: the first group without a leader
    /// (or group 0), its nodes, and the clients still waiting.
    fn liveness_failure(&self) -> Failure {
        let g = (0..self.groups())
            .find(|&g| {
                !self
                    .nodes
                    .iter()
                    .any(|n| n.raft(g).is_some_and(|r| r.role() == Role::Leader))
            })
            .unwrap_or(0);
        let roles: Vec<String> = self
            .nodes
            .iter()
            .map(|n| match n.raft(g) {
                Some(r) => {
                    let m = r.membership();
                    let conf = if self.cfg.reconfig {
                        format!(
                            " voters{:?}{}{}",
                            m.voters,
                            if m.is_joint() {
                                format!(" old{:?}", m.outgoing)
                            } else {
                                String::new()
                            },
                            if m.learners.is_empty() {
                                String::new()
                            } else {
                                format!(" learners{:?}", m.learners)
                            }
                        )
                    } else {
                        String::new()
                    };
                    let log = r.raft_log();
                    format!(
                        "{}:{}@{} last {}/{} commit {}{conf}",
                        n.id,
                        r.role().name(),
                        r.term(),
                        log.last_index(),
                        log.last_term(),
                        r.commit_index()
                    )
                }
                None => format!("{}:down", n.id),
            })
            .collect();
        let pending: Vec<String> = self
            .clients
            .iter()
            .filter_map(|c| {
                c.pending
                    .as_ref()
                    .map(|p| format!("client {} seq {}", c.id, p.seq))
            })
            .collect();
        self.fail_in(
            g,
            "Liveness",
            format!(
                "{LIVENESS_BOUND_MS}ms after faults stopped: nodes [{}], pending [{}]",
                roles.join(", "),
                pending.join(", ")
            ),
        )
    }

    fn begin_quiet(&mut self) -> Result<(), Failure> {
        self.quiet = true;
        if !self.blocked.is_empty() {
            self.blocked.clear();
            self.emit(0, Kind::Heal);
        }
        self.weather.active.clear();
        for i in 0..self.nodes.len() {
            self.heal_disk(i, None);
        }
        for i in 0..self.nodes.len() {
            if !self.nodes[i].up {
                self.restart(i)?;
            } else if self.nodes[i].paused {
                self.resume(i)?;
            }
        }
        Ok(())
    }

    pub(crate) fn next_event(&mut self) -> Result<(), Failure> {
        let Some(s) = self.queue.pop() else {
            return Err(self.fail("Liveness", "no events left to run".into()));
        };
        self.now = s.time;
        self.step += 1;
        match s.ev {
            Ev::Tick { node, inc } => self.on_tick(node, inc),
            Ev::Deliver { id, group, msg } => self.on_deliver(id, group, *msg),
            Ev::Ping { from, to } => {
                self.on_ping(from, to);
                Ok(())
            }
            Ev::ClientArrive {
                node,
                client,
                seq,
                op,
            } => self.on_client_arrive(node, client, seq, op),
            Ev::ClientReply {
                client,
                seq,
                result,
            } => {
                self.on_client_reply(client, seq, result);
                Ok(())
            }
            Ev::ClientTimer {
                client,
                seq,
                attempt,
            } => {
                self.on_client_timer(client, seq, attempt);
                Ok(())
            }
            Ev::ClientStart { client } => {
                self.on_client_start(client);
                Ok(())
            }
            Ev::Fault => self.on_fault(),
            Ev::Transfer => self.on_transfer(),
            Ev::Reconfig => self.on_reconfig(),
            Ev::Restart { node } => {
                if !self.nodes[node].up {
                    self.restart(node)?;
                }
                Ok(())
            }
            Ev::DiskHeal { node, epoch } => {
                self.heal_disk(node, Some(epoch));
                Ok(())
            }
            Ev::Resume { node } => {
                if self.nodes[node].paused {
                    self.resume(node)
                } else {
                    Ok(())
                }
            }
            Ev::Heal { epoch } => {
                if epoch == self.partition_epoch && !self.blocked.is_empty() {
                    self.blocked.clear();
                    self.emit(0, Kind::Heal);
                }
                Ok(())
            }
            Ev::WeatherEnd { kind, epoch } => {
                if self.weather.active.get(&kind) == Some(&epoch) {
                    self.weather.active.remove(&kind);
                }
                Ok(())
            }
        }
    }

    // ----- nodes ---------------------------------------------------------

    /// Where group `g`'s stores live on a node's disk: the single group
    /// keeps `/raft`; with several, each has its directory under it (the
    /// `HostSync` syncs the whole disk).
    fn group_dir(&self, g: usize) -> std::path::PathBuf {
        let root = std::path::Path::new(DISK_DIR);
        if self.groups() == 1 {
            root.to_path_buf()
        } else {
            root.join(format!("g{g}"))
        }
    }

    /// Opens group `g`'s storage on node `i`'s disk, as the process does
    /// at start: the `local` stores recover (a torn log tail is cut,
    /// leftovers of interrupted operations removed) and `NodeStorage`
    /// checks what they hold. A founding voter's brand-new store gets the
    /// initial voters. With several groups the log syncs through the
    /// node's `HostSync` (`local::open_in_host`, as the runtime's host).
    fn open_disk(&self, i: usize, g: usize) -> Result<NodeStorage, StorageError> {
        let n = &self.nodes[i];
        let fs = Arc::new(n.fs.clone());
        let dir = self.group_dir(g);
        let mut disk = local::open_in_host(fs, &dir, &disk_options(), n.host_sync.clone())?;
        let fresh = disk.conf_state().voters.is_empty()
            && disk.hard_state() == Default::default()
            && disk.last_index() == 0
            && disk.snapshot_meta().is_none();
        // Spares start with no configuration: they learn theirs from the
        // leader's log once added.
        if fresh && n.id as usize <= self.cfg.nodes {
            let voters = (1..=self.cfg.nodes as u64).collect();
            disk.set_conf_state(crate::core::ConfState {
                voters,
                ..Default::default()
            })?;
        }
        Ok(disk)
    }

    /// Node `i`'s stores after a crash or at the first start: with several
    /// groups a new `HostSync` first (the old one's failure, if any, was
    /// final for that incarnation), then every group's storage. `None`
    /// for a group whose store could not be opened (a disk fault).
    fn recover_disks(&mut self, i: usize) -> Result<(), StorageError> {
        if self.groups() > 1 {
            self.retire_host_sync(i);
            let fs: Arc<dyn Fs> = Arc::new(self.nodes[i].fs.clone());
            let root = std::path::Path::new(DISK_DIR);
            // The directory every group's stores live under must exist
            // (durably) before the whole-disk sync can name it.
            fs.create_dir_all(root)
                .and_then(|()| fs.sync_dir(std::path::Path::new("/")))
                .map_err(|e| StorageError::io("create", root, e))?;
            self.nodes[i].host_sync = Some(HostSync::new(fs, root));
        }
        for g in 0..self.groups() {
            let disk = self.open_disk(i, g).ok();
            self.nodes[i].groups[g].disk = disk;
        }
        Ok(())
    }

    /// Adds what node `i`'s `HostSync` did to the stats, and drops it.
    fn retire_host_sync(&mut self, i: usize) {
        if let Some(h) = self.nodes[i].host_sync.take() {
            let s = h.stats();
            self.stats.host_syncs += s.syncs;
            self.stats.host_sync_requests += s.requests;
        }
    }

    /// Starts node `i`: every group's replica, from its recovered storage
    /// (opening what is missing). A storage error in any group keeps the
    /// whole node down, as it would stop the process.
    pub(crate) fn restart(&mut self, i: usize) -> Result<(), Failure> {
        let node = self.nodes[i].id;
        let groups = self.groups();
        if self.nodes[i].groups.iter().any(|r| r.disk.is_none()) {
            if groups == 1 {
                match self.open_disk(i, 0) {
                    Ok(d) => self.nodes[i].groups[0].disk = Some(d),
                    Err(e) => return self.disk_stopped(i, &e.to_string()),
                }
            } else {
                // Reopen all, so every group's log shares one new HostSync.
                if let Err(e) = self.recover_disks(i) {
                    return self.disk_stopped(i, &e.to_string());
                }
                let missing = self.nodes[i].groups.iter().position(|r| r.disk.is_none());
                if let Some(g) = missing {
                    let why = match self.open_disk(i, g) {
                        Err(e) => e.to_string(),
                        Ok(_) => "the store opened on a second try".to_string(),
                    };
                    let why = format!("{}{why}", self.group_label(g));
                    return self.disk_stopped(i, &why);
                }
            }
        }
        // Every replica's state machine starts from its latest snapshot,
        // if any; the core replays the log after it.
        let mut started = Vec::with_capacity(groups);
        for g in 0..groups {
            let Some(disk) = self.nodes[i].groups[g].disk.take() else {
                // Opened above: only reachable if that changed.
                return self.disk_stopped(i, "a store vanished while starting");
            };
            let (kv, from) = match disk.snapshot_files() {
                Ok(None) => (Kv::default(), 0),
                Ok(Some((meta, files))) => match Kv::from_files(&files) {
                    Ok(kv) => (kv, meta.index),
                    Err(why) => {
                        return Err(self.fail_in(g, "Core error", format!("node {node}: {why}")))
                    }
                },
                Err(e) => {
                    let why = format!("{}{e}", self.group_label(g));
                    return self.disk_stopped(i, &why);
                }
            };
            started.push((disk, kv, from));
        }
        if self.nodes[i].disk_fault.is_none() {
            self.nodes[i].disk_faulted = false;
        }
        let n = &mut self.nodes[i];
        n.inc += 1;
        let (id, inc) = (n.id, n.inc);
        let mut rafts = Vec::with_capacity(groups);
        for (g, (disk, kv, from)) in started.into_iter().enumerate() {
            let r = &mut self.nodes[i].groups[g];
            r.kv = kv;
            r.contract = WorkCheck::new(from);
            r.role = NodeRole::Follower;
            r.new_leader = false;
            let cfg = self.cfg.node_config(id);
            let rng = node_rng(self.cfg.seed, id, inc, g);
            match Raft::new(cfg, disk, rng) {
                Ok(raft) => rafts.push(raft),
                Err(e) => {
                    let why = format!("{}starting: {e}", self.group_label(g));
                    return self.disk_stopped(i, &why);
                }
            }
        }
        for (g, raft) in rafts.into_iter().enumerate() {
            let r = &mut self.nodes[i].groups[g];
            // What the replica knows is committed: the saved commit index
            // (which may lag, see `NodeStorage::persist`) or its snapshot's.
            r.commit = raft.commit_index();
            r.driver = Some(Box::new(Driver::new(raft)));
        }
        self.nodes[i].up = true;
        let period = self.nodes[i].period;
        if self.step > 0 {
            self.emit(id, Kind::Restart);
            self.stats.restarts += 1;
            self.stats.group_restarts += groups as u64;
        }
        for g in 0..groups {
            let m = self.nodes[i]
                .raft(g)
                .expect("just started")
                .membership()
                .clone();
            self.trace_config(g, id, "loaded", 0, &m);
            self.nodes[i].groups[g].membership = m;
        }
        self.liveness_start(i);
        let d = 1 + self.rand(period);
        self.schedule(d, Ev::Tick { node: i, inc });
        Ok(())
    }

    /// Node `i` loses power: every replica stops at once, and the disk
    /// they share loses (or keeps part of, or tears) what none of them
    /// had synced.
    pub(crate) fn crash(&mut self, i: usize) {
        let id = self.nodes[i].id;
        self.emit(id, Kind::Crash);
        let n = &mut self.nodes[i];
        let mut stopped = 0;
        for r in &mut n.groups {
            if r.driver.take().is_some() {
                stopped += 1;
            }
        }
        n.up = false;
        // The power goes: what the disk had not synced is lost, or partly
        // kept, or torn. The stores are opened again at once (recovery),
        // as a restarting process would, unless a disk fault prevents it.
        let fs = n.fs.clone();
        fs.cancel_power_cut();
        let report = fs.crash(&mut self.rng);
        self.stats.disk_writes_lost += report.writes_lost;
        self.stats.disk_writes_torn += report.writes_torn;
        if self.groups() == 1 {
            let disk = self.open_disk(i, 0).ok();
            self.nodes[i].groups[0].disk = disk;
        } else if self.recover_disks(i).is_err() {
            // The root could not be made: the restart tries again.
            for r in &mut self.nodes[i].groups {
                r.disk = None;
            }
        }
        let n = &mut self.nodes[i];
        n.paused = false;
        n.missed_ticks = 0;
        n.inbox.clear();
        for r in &mut n.groups {
            r.proposals.clear();
            r.reads.clear();
            r.ready_reads.clear();
        }
        self.stats.crashes += 1;
        self.stats.group_crashes += stopped;
    }

    /// Node `i`'s storage failed under an injected disk fault (or a power
    /// cut in the middle of a write): the node stops, every group with it,
    /// as the process would, and is restarted later. Without an injected
    /// fault, a storage error is a bug.
    fn disk_stopped(&mut self, i: usize, error: &str) -> Result<(), Failure> {
        let n = &self.nodes[i];
        if !n.disk_faulted && !n.fs.is_powered_off() {
            let id = n.id;
            return Err(self.fail("Core error", format!("node {id}: {error}")));
        }
        self.stats.disk_stops += 1;
        if self.nodes[i].up {
            self.crash(i);
        } else {
            // Stopped while starting: drop what was opened, so the
            // restart recovers every store afresh.
            for r in &mut self.nodes[i].groups {
                r.driver = None;
                r.disk = None;
            }
        }
        let d = 20 + self.rand(300);
        self.schedule(d, Ev::Restart { node: i });
        Ok(())
    }

    /// Stalls running node `i` (a SIGSTOP): its ticks are counted, not
    /// run, and messages to it wait in its inbox until [`Sim::resume`].
    pub(crate) fn pause(&mut self, i: usize) {
        self.nodes[i].paused = true;
        self.stats.pauses += 1;
        let id = self.nodes[i].id;
        self.emit(id, Kind::Pause);
    }

    pub(crate) fn resume(&mut self, i: usize) -> Result<(), Failure> {
        let id = self.nodes[i].id;
        self.nodes[i].paused = false;
        self.emit(id, Kind::Resume);
        // A stalled process finds its clock moved on: the missed ticks come
        // first, before any message that waited (a lease must not outlive
        // the real time that passed).
        let missed = std::mem::take(&mut self.nodes[i].missed_ticks);
        for _ in 0..missed {
            for g in 0..self.groups() {
                if let Some(r) = self.nodes[i].raft_mut(g) {
                    r.tick();
                }
                self.handle_ready(i, g)?;
            }
        }
        let inbox = std::mem::take(&mut self.nodes[i].inbox);
        for (id, g, msg) in inbox {
            self.step_node(i, g, id, msg)?;
        }
        Ok(())
    }

    /// The node's one timer: every group's core ticks (a quiescent core's
    /// tick drives nothing, as the runtime host skips it), then the
    /// node-level liveness, then each group's `Ready`.
    fn on_tick(&mut self, i: usize, inc: u64) -> Result<(), Failure> {
        let n = &mut self.nodes[i];
        if !n.up || n.inc != inc {
            return Ok(());
        }
        let period = n.period;
        if n.paused {
            n.missed_ticks += 1;
        } else {
            let mut early = None;
            for (g, r) in n.groups.iter_mut().enumerate() {
                if let Some(d) = r.driver.as_mut() {
                    let raft = d.raft_mut();
                    let due = raft.ticks_until_due();
                    let had_work = raft.has_ready();
                    raft.tick();
                    if !had_work && early.is_none() {
                        early = tick_before_due(due, raft).map(|why| (g, why));
                    }
                }
            }
            if let Some((g, why)) = early {
                return Err(self.fail_in(g, "Tick deadline", why));
            }
            self.liveness_tick(i);
            for g in 0..self.groups() {
                if !self.nodes[i].up {
                    // A group's Ready crashed the node. The next tick is
                    // still scheduled (and ignored, its incarnation over),
                    // as it always was: single-group runs stay identical.
                    break;
                }
                self.handle_ready(i, g)?;
            }
        }
        self.schedule(period, Ev::Tick { node: i, inc });
        Ok(())
    }

    fn on_deliver(&mut self, id: u64, g: usize, msg: Message) -> Result<(), Failure> {
        let to = msg.to;
        let i = to as usize - 1;
        if !self.nodes[i].up {
            self.drop_msg(g, to, id, to, "down");
            return Ok(());
        }
        if self.blocked.contains(&(msg.from, msg.to)) {
            self.drop_msg(g, to, id, to, "partition");
            return Ok(());
        }
        if self.nodes[i].paused {
            self.nodes[i].inbox.push((id, g, msg));
            return Ok(());
        }
        self.step_node(i, g, id, msg)
    }

    /// Counts and traces the loss of message `id` to `to`, as seen by `at`
    /// (the sender when it never left, the receiver when it arrived).
    pub(crate) fn drop_msg(&mut self, g: usize, at: NodeId, id: u64, to: NodeId, reason: &str) {
        self.stats.messages_dropped += 1;
        if self.traces(g) {
            let reason = reason.to_string();
            self.emit(at, Kind::Drop { id, to, reason });
        }
    }

    fn step_node(&mut self, i: usize, g: usize, id: u64, msg: Message) -> Result<(), Failure> {
        let node = self.nodes[i].id;
        if self.traces(g) {
            self.emit(
                node,
                Kind::Recv {
                    id,
                    from: msg.from,
                    m: (&msg).into(),
                },
            );
        }
        let Some(r) = self.nodes[i].raft_mut(g) else {
            return Ok(());
        };
        if let Err(e) = r.step(msg) {
            if r.storage_failure().is_some() {
                // A read the message needed failed: the node stops.
                let why = format!("{}{e}", self.group_label(g));
                return self.disk_stopped(i, &why);
            }
            return Err(self.fail_in(g, "Core error", format!("node {node}: {e}")));
        }
        self.handle_ready(i, g)
    }

    /// Sends group `g`'s `msg` through the simulated network.
    fn send(&mut self, g: usize, msg: Message) {
        let id = self.next_msg_id;
        self.next_msg_id += 1;
        self.stats.messages_sent += 1;
        if self.traces(g) {
            self.emit(
                msg.from,
                Kind::Send {
                    id,
                    to: msg.to,
                    m: (&msg).into(),
                },
            );
        }
        if self.blocked.contains(&(msg.from, msg.to)) {
            self.drop_msg(g, msg.from, id, msg.to, "partition");
            return;
        }
        let w = |k| self.weather.active.contains_key(&k);
        let (drop, dup, delay, reorder) = (
            w(FaultKind::Drop),
            w(FaultKind::Duplicate),
            w(FaultKind::Delay),
            w(FaultKind::Reorder),
        );
        if drop && self.chance(15) {
            self.drop_msg(g, msg.from, id, msg.to, "fault");
            return;
        }
        let mut latency = 1 + self.rand(3);
        if reorder {
            latency = 1 + self.rand(40);
        }
        if delay && self.chance(25) {
            latency += 20 + self.rand(180);
        }
        let mut msg = msg;
        if self.cfg.compact && self.chance(5) {
            if let MessageBody::SnapshotChunk { data, .. } = &mut msg.body {
                let mut bad = data.to_vec();
                if let Some(b) = bad.first_mut() {
                    *b ^= 0xff; // the receiver's checksum must catch this
                }
                *data = bad.into();
            }
        }
        if dup && self.chance(10) {
            let extra = self.rand(30);
            self.schedule(
                latency + extra,
                Ev::Deliver {
                    id,
                    group: g,
                    msg: Box::new(msg.clone()),
                },
            );
        }
        self.schedule(
            latency,
            Ev::Deliver {
                id,
                group: g,
                msg: Box::new(msg),
            },
        );
    }

    /// Runs the `Ready`s of group `g`'s replica on node `i` through the
    /// shipped [`Driver`], with the simulator as its host: the network,
    /// the KV state machine, the invariant checks between the stages, and
    /// crashes (of the whole node) at the moments a power cut hurts most.
    pub(crate) fn handle_ready(&mut self, i: usize, g: usize) -> Result<(), Failure> {
        loop {
            let node = self.nodes[i].id;
            let Some(mut driver) = self.nodes[i].groups[g].driver.take() else {
                return Ok(());
            };
            if !driver.has_work() {
                self.nodes[i].groups[g].driver = Some(driver);
                return Ok(());
            }
            let mut host = SimHost {
                sim: self,
                i,
                g,
                node,
                before: driver.raft().storage().hard_state(),
                moment: false,
                crash: false,
                snapshot_at: None,
            };
            let handled = driver.handle_ready(&mut host);
            let (crash, snapshot_at) = (host.crash, host.snapshot_at.take());
            self.viewing = None;
            self.nodes[i].groups[g].driver = Some(driver);
            match handled {
                Ok(_) => {}
                Err(DriverError::Host(f)) => return Err(f),
                // A storage error stops the node; a bug unless the disk
                // was made to fail.
                Err(e) => {
                    let why = format!("{}{e}", self.group_label(g));
                    return self.disk_stopped(i, &why);
                }
            }
            if crash {
                self.crash_and_schedule_restart(i);
                return Ok(());
            }
            if let Some((index, files)) = snapshot_at {
                self.take_snapshot(i, g, index, files)?;
            }
        }
    }

    /// Node `i` saves its state machine (`files`, as of `index`) as a
    /// snapshot and compacts its log behind it, keeping `LOG_MARGIN` entries.
    /// Lets the invariant checker forget the history below what every node
    /// still holds: entries below the lowest first index of any node with
    /// a log or a snapshot (running, or its disk while stopped), and state
    /// fingerprints and committed terms below the lowest snapshot index of
    /// those nodes (every node commits and applies past its snapshot). An
    /// empty node can only ever receive entries or a snapshot some other
    /// node holds, so it does not hold the floors down. Entries in messages
    /// still in flight may come from below the floors; they are then
    /// recorded instead of compared (a weaker check, never a false alarm).
    pub(crate) fn forget_settled_history(&mut self, g: usize) {
        let mut entries_floor = u64::MAX;
        let mut states_floor = u64::MAX;
        for n in &self.nodes {
            let r = &n.groups[g];
            let store = match (r.raft(), &r.disk) {
                (Some(r), _) => r.storage(),
                (None, Some(disk)) => disk,
                (None, None) => continue,
            };
            let snapshot = store.snapshot_meta().map_or(0, |m| m.index);
            if store.last_index() == 0 && snapshot == 0 {
                continue;
            }
            entries_floor = entries_floor.min(store.first_index());
            states_floor = states_floor.min(snapshot);
        }
        if entries_floor == u64::MAX {
            return;
        }
        let states_floor = states_floor.min(entries_floor.saturating_sub(1));
        self.inv[g].forget_below(entries_floor, states_floor);
    }

    #[cfg(test)]
    pub(crate) fn invariants(&self, g: usize) -> &Invariants {
        &self.inv[g]
    }

    /// Node `i` saves its state machine (`files`, as of `index`) as a
    /// snapshot through its driver and compacts its log behind it, keeping
    /// `LOG_MARGIN` entries.
    pub(crate) fn take_snapshot(
        &mut self,
        i: usize,
        g: usize,
        index: u64,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<(), Failure> {
        let node = self.nodes[i].id;
        let bytes: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();
        let driver = self.nodes[i].groups[g].driver.as_mut().expect("running");
        match driver.save_snapshot(index, files, LOG_MARGIN) {
            Ok(saved) if saved.stored => {
                self.stats.snapshots_taken += 1;
                self.emit_in(
                    g,
                    node,
                    Kind::Snapshot {
                        phase: "taken".into(),
                        index,
                        peer: None,
                        bytes,
                        ok: true,
                    },
                );
                if saved.compacted_to > 0 {
                    self.emit_in(
                        g,
                        node,
                        Kind::Compact {
                            upto: saved.compacted_to,
                        },
                    );
                }
                Ok(())
            }
            // Already compacted past it (an install overtook it).
            Ok(_) => Ok(()),
            Err(e) => {
                let why = format!("{}snapshot at {index}: {e}", self.group_label(g));
                self.disk_stopped(i, &why)
            }
        }
    }

    fn trace_config(
        &mut self,
        g: usize,
        node: NodeId,
        change: &str,
        index: u64,
        m: &crate::core::Membership,
    ) {
        if !self.traces(g) {
            return;
        }
        self.emit(
            node,
            Kind::Config {
                change: change.to_string(),
                index,
                voters: m.voters.clone(),
                outgoing: m.outgoing.clone(),
                learners: m.learners.clone(),
            },
        );
    }

    fn trace_core_event(&mut self, node: NodeId, g: usize, ev: &Event, leader: bool) {
        match ev {
            Event::MembershipChanged { index, membership } => {
                let i = node as usize - 1;
                let prev =
                    std::mem::replace(&mut self.nodes[i].groups[g].membership, membership.clone());
                let leaving: Vec<NodeId> = prev
                    .voters
                    .iter()
                    .copied()
                    .filter(|v| !membership.voters.contains(v))
                    .collect();
                if leader
                    && !leaving.is_empty()
                    && !self.quiet
                    && self.cfg.faults.has(FaultKind::Partition)
                    && self.chance(50)
                {
                    // Voters are often replaced because they became
                    // unreachable: half the time, the leaving ones are cut
                    // off just as the change that removes them is appended.
                    self.cut_off(&leaving);
                }
                let change = membership.change_from(&prev);
                self.trace_config(g, node, change, *index, membership);
                return;
            }
            Event::ChangeDone { .. } => {
                self.stats.changes_done += 1;
                return;
            }
            Event::ChangeFailed { .. } => {
                self.stats.changes_failed += 1;
                return;
            }
            _ => {}
        }
        match ev {
            Event::ReadReady { lease: true, .. } => self.stats.lease_reads += 1,
            Event::ReadReady { lease: false, .. } => self.stats.read_index_reads += 1,
            Event::SnapshotOffered { .. } => self.stats.snapshots_offered += 1,
            Event::SnapshotChunkSent { .. } => self.stats.chunks_sent += 1,
            Event::SnapshotChunkReceived { ok: false, .. } => self.stats.chunks_rejected += 1,
            Event::SnapshotResumed { .. } => self.stats.snapshots_resumed += 1,
            Event::SnapshotInstalled { .. } => self.stats.snapshots_installed += 1,
            Event::SnapshotDiscarded { .. } => self.stats.snapshots_discarded += 1,
            Event::Quiesced if leader => self.stats.quiesced += 1,
            Event::Woke { reason } => {
                self.stats.wakes += 1;
                if *reason == crate::core::WakeReason::LeaderDead {
                    self.stats.wakes_leader_dead += 1;
                }
            }
            _ => {}
        }
        // Configuration changes were traced above, with their predecessor.
        let Some(kind) = event_kind(ev, &Membership::default()) else {
            return;
        };
        self.emit_in(g, node, kind);
    }

    // ----- clients -------------------------------------------------------

    fn on_client_start(&mut self, c: usize) {
        if self.quiet || self.clients[c].pending.is_some() {
            return;
        }
        let key = self.rand(5);
        let op = if self.chance(50) {
            let value = self.next_value;
            self.next_value += 1;
            ClientOp::Put { key, value }
        } else {
            let roll = self.rand(100);
            let path = if roll < 35 {
                ReadPath::ReadIndex
            } else if roll < 70 && self.cfg.check_quorum {
                ReadPath::Lease
            } else {
                ReadPath::Log
            };
            ClientOp::Get { key, path }
        };
        let client = &mut self.clients[c];
        let seq = client.next_seq;
        client.next_seq += 1;
        client.pending = Some(Pending {
            seq,
            op,
            invoke: self.now,
            attempt: 0,
        });
        self.client_send(c);
    }

    pub(crate) fn client_send(&mut self, c: usize) {
        let client = &mut self.clients[c];
        let Some(p) = client.pending.as_mut() else {
            return;
        };
        p.attempt += 1;
        let (seq, attempt, op) = (p.seq, p.attempt, p.op);
        let node = client.target as usize - 1;
        let d = 1 + self.rand(3);
        self.schedule(
            d,
            Ev::ClientArrive {
                node,
                client: c,
                seq,
                op,
            },
        );
        self.schedule(
            CLIENT_TIMEOUT_MS,
            Ev::ClientTimer {
                client: c,
                seq,
                attempt,
            },
        );
    }

    fn on_client_arrive(
        &mut self,
        i: usize,
        c: usize,
        seq: u64,
        op: ClientOp,
    ) -> Result<(), Failure> {
        let node = self.nodes[i].id;
        let g = self.group_of(c);
        if self.nodes[i].paused {
            return Ok(()); // the client will time out
        }
        let client_id = self.clients[c].id;
        let (op_name, key, value) = match op {
            ClientOp::Put { key, value } => (TraceOp::Put, key, Some(value)),
            ClientOp::Get { key, .. } => (TraceOp::Get, key, None),
        };
        if !self.nodes[i].up {
            return Ok(());
        }
        self.emit_in(
            g,
            node,
            Kind::Client {
                dir: ClientDir::Request,
                client: client_id,
                seq,
                op: op_name,
                key,
                value,
                outcome: None,
            },
        );
        let r = self.nodes[i].raft_mut(g).expect("checked");
        let refused = match op {
            ClientOp::Put { .. }
            | ClientOp::Get {
                path: ReadPath::Log,
                ..
            } => {
                let cmd = match op {
                    ClientOp::Put { key, value } => Command::Put { key, value },
                    ClientOp::Get { key, .. } => Command::Get { key },
                };
                let req = Request {
                    client: client_id,
                    seq,
                    cmd,
                };
                let term = r.term();
                match r.propose(req.encode(), Some(term)) {
                    Ok(_) => {
                        if matches!(op, ClientOp::Get { .. }) {
                            self.stats.log_reads += 1;
                        }
                        self.nodes[i].groups[g].proposals.insert(c, seq);
                        None
                    }
                    Err(ProposeError::NotLeader { leader }) => Some((leader, "not_leader")),
                    Err(ProposeError::TransferInProgress { .. }) => Some((None, "transferring")),
                    Err(ProposeError::TooManyUncommitted { .. }) => Some((Some(node), "busy")),
                    Err(ProposeError::TermMismatch { .. }) => Some((None, "term_changed")),
                }
            }
            ClientOp::Get { key, path } => {
                let ctx = self.next_ctx;
                self.next_ctx += 1;
                let mode = if path == ReadPath::Lease {
                    ReadMode::Lease
                } else {
                    ReadMode::ReadIndex
                };
                match r.read_index(ctx, mode) {
                    Ok(()) => {
                        self.nodes[i].groups[g].reads.insert(ctx, (c, seq, key));
                        None
                    }
                    Err(ReadError::NotLeader { leader }) => Some((leader, "not_leader")),
                    Err(ReadError::NoCommitInTerm) => Some((Some(node), "not_ready")),
                    Err(ReadError::TooManyPending { .. }) => Some((Some(node), "busy")),
                    Err(ReadError::LeaseNeedsCheckQuorum) => Some((None, "no_lease")),
                }
            }
        };
        if let Some((hint, why)) = refused {
            self.reply(node, c, seq, Reply::Refused { hint, why });
        }
        self.handle_ready(i, g)
    }

    fn reply(&mut self, node: NodeId, c: usize, seq: u64, result: Reply) {
        if self.traces(self.group_of(c)) {
            let outcome = match result {
                Reply::Done(_) => "ok",
                Reply::Refused { why, .. } => why,
            };
            let value = match result {
                Reply::Done(v) => v,
                Reply::Refused { .. } => None,
            };
            // The client may have moved on; then only the seq identifies it.
            let op = self.clients[c]
                .pending
                .as_ref()
                .filter(|p| p.seq == seq)
                .map(|p| p.op);
            let (op, key) = match op {
                Some(ClientOp::Put { key, .. }) => (TraceOp::Put, key),
                Some(ClientOp::Get { key, .. }) => (TraceOp::Get, key),
                None => (TraceOp::Get, 0),
            };
            let client = self.clients[c].id;
            self.emit(
                node,
                Kind::Client {
                    dir: ClientDir::Reply,
                    client,
                    seq,
                    op,
                    key,
                    value,
                    outcome: Some(outcome.into()),
                },
            );
        }
        let d = 1 + self.rand(3);
        self.schedule(
            d,
            Ev::ClientReply {
                client: c,
                seq,
                result,
            },
        );
    }

    fn on_client_reply(&mut self, c: usize, seq: u64, result: Reply) {
        if self.clients[c].pending.as_ref().map(|p| p.seq) != Some(seq) {
            return; // a late answer to an operation already finished
        }
        match result {
            Reply::Done(v) => {
                let now = self.now;
                self.clients[c].complete(now, v);
                self.stats.client_ops += 1;
                let d = self.rand(20);
                self.schedule(d, Ev::ClientStart { client: c });
            }
            Reply::Refused { hint, .. } => {
                let n = self.nodes.len() as u64;
                // Hints can be stale (a removed node still names the leader
                // it last knew) and can form cycles: follow them usually,
                // not always.
                let follow = self.chance(75);
                let next = match hint {
                    Some(h) if h != self.clients[c].target && follow => h,
                    _ => 1 + self.rand(n),
                };
                self.clients[c].target = next;
                // Back off a little so a leaderless cluster is not flooded.
                let d = 5 + self.rand(20);
                let attempt = self.clients[c].pending.as_ref().map_or(0, |p| p.attempt);
                self.schedule(
                    d,
                    Ev::ClientTimer {
                        client: c,
                        seq,
                        attempt,
                    },
                );
            }
        }
    }

    fn on_client_timer(&mut self, c: usize, seq: u64, attempt: u64) {
        let Some(p) = self.clients[c].pending.as_ref() else {
            return;
        };
        if p.seq != seq || p.attempt != attempt {
            return;
        }
        let n = self.nodes.len() as u64;
        let t = self.clients[c].target;
        if self.rand(2) == 0 {
            self.clients[c].target = t % n + 1;
        }
        self.client_send(c);
    }

    // ----- faults --------------------------------------------------------

    /// Whether to crash right after a durable hard-state write. Writes of a
    /// new term or vote are rarer and matter more, so they draw more crashes.
    ///
    /// The odds are per node, not per group: with G groups each group's
    /// write draws 1/G of them, or a node hosting many groups would crash
    /// G times as often and hardly make progress.
    fn crash_point(&mut self, election_write: bool) -> bool {
        if self.quiet || !self.cfg.faults.has(FaultKind::Crash) {
            return false;
        }
        let per_mille = self.groups() as u64 * 1000;
        self.rand(per_mille) < if election_write { 100 } else { 5 }
    }

    /// The node leading group `g`, if any (the first, during a term
    /// change).
    fn leader_index(&self, g: usize) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.raft(g).is_some_and(|r| r.role() == Role::Leader))
    }

    /// Crashes node `i` and restarts it later: often at once (a supervisor
    /// restarting a process), otherwise after up to 0.8 s.
    fn crash_and_schedule_restart(&mut self, i: usize) {
        self.crash(i);
        let d = if self.chance(30) {
            1 + self.rand(30)
        } else {
            50 + self.rand(750)
        };
        self.schedule(d, Ev::Restart { node: i });
    }

    fn on_transfer(&mut self) -> Result<(), Failure> {
        if self.quiet {
            return Ok(());
        }
        let d = 300 + self.rand(700);
        self.schedule(d, Ev::Transfer);
        let g = self.pick_group();
        let leader = self
            .nodes
            .iter()
            .position(|n| !n.paused && n.raft(g).is_some_and(|r| r.role() == Role::Leader));
        let Some(i) = leader else {
            return Ok(());
        };
        let n = self.nodes.len() as u64;
        let to = 1 + self.rand(n);
        let r = self.nodes[i].raft_mut(g).expect("leader runs");
        if r.transfer_leader(to).is_ok() {
            self.stats.transfers += 1;
        }
        self.handle_ready(i, g)
    }

    /// A random membership change at the current leader, if any.
    fn on_reconfig(&mut self) -> Result<(), Failure> {
        if self.quiet {
            return Ok(());
        }
        let d = 50 + self.rand(300);
        self.schedule(d, Ev::Reconfig);
        let g = self.pick_group();
        let Some(i) = self.leader_index(g).filter(|&i| !self.nodes[i].paused) else {
            return Ok(());
        };
        let all: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let r = self.nodes[i].raft(g).expect("leader runs");
        let (leader, m) = (r.id(), r.membership().clone());
        let outsiders: Vec<NodeId> = all.iter().copied().filter(|x| !m.is_voter(*x)).collect();
        let roll = self.rand(100);
        let pick = |sim: &mut Sim, from: &[NodeId]| from[sim.rand(from.len() as u64) as usize];
        enum Action {
            Voters(Vec<NodeId>),
            AddLearner(NodeId),
            RemoveLearner(NodeId),
        }
        let action = if roll < 40 {
            // Any set to any set (joint consensus unless one voter differs).
            let k = 2 + self.rand(4) as usize;
            let mut pool = all.clone();
            let mut target = Vec::new();
            while target.len() < k.min(pool.len()) {
                let j = self.rand(pool.len() as u64) as usize;
                target.push(pool.swap_remove(j));
            }
            Action::Voters(target)
        } else if roll < 50 && !outsiders.is_empty() {
            let x = pick(self, &outsiders);
            let mut t = m.voters.clone();
            t.push(x);
            Action::Voters(t)
        } else if roll < 70 && m.voters.len() > 1 {
            let x = pick(self, &m.voters);
            Action::Voters(m.voters.iter().copied().filter(|&v| v != x).collect())
        } else if roll < 85 {
            let candidates: Vec<NodeId> = all.iter().copied().filter(|x| !m.contains(*x)).collect();
            if candidates.is_empty() {
                return Ok(());
            }
            Action::AddLearner(pick(self, &candidates))
        } else if !m.learners.is_empty() {
            Action::RemoveLearner(pick(self, &m.learners))
        } else {
            return Ok(());
        };
        let r = self.nodes[i].raft_mut(g).expect("leader runs");
        match action {
            Action::Voters(target) => {
                let mut t = target.clone();
                t.sort_unstable();
                t.dedup();
                let added = t.iter().filter(|x| !m.voters.contains(x)).count();
                let removed = m.voters.iter().filter(|x| !t.contains(x)).count();
                if r.change_peers(t.clone()).is_ok() {
                    match (added, removed) {
                        (1, 0) => self.stats.single_adds += 1,
                        (0, 1) => self.stats.single_removes += 1,
                        _ => self.stats.joint_changes += 1,
                    }
                    if !t.contains(&leader) {
                        self.stats.leader_removals += 1;
                    }
                }
            }
            Action::AddLearner(x) => {
                if r.add_learner(x).is_ok() {
                    self.stats.learners_added += 1;
                }
            }
            Action::RemoveLearner(x) => {
                if r.remove_learner(x).is_ok() {
                    self.stats.learners_removed += 1;
                }
            }
        }
        self.handle_ready(i, g)
    }

    /// Cuts `group` off from every other node until a heal (a partition
    /// fault of its own).
    fn cut_off(&mut self, group: &[NodeId]) {
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let mut blocked = BTreeSet::new();
        for &a in group {
            for &b in ids.iter().filter(|b| !group.contains(b)) {
                blocked.insert((a, b));
                blocked.insert((b, a));
            }
        }
        self.blocked = blocked;
        self.partition_epoch += 1;
        self.stats.partitions += 1;
        let pairs: Vec<(u64, u64)> = self.blocked.iter().copied().collect();
        self.emit(0, Kind::Partition { blocked: pairs });
        let d = 100 + self.rand(1400);
        let epoch = self.partition_epoch;
        self.schedule(d, Ev::Heal { epoch });
    }

    fn on_fault(&mut self) -> Result<(), Failure> {
        if self.quiet {
            return Ok(());
        }
        let d = 50 + self.rand(200);
        self.schedule(d, Ev::Fault);
        let kinds = self.cfg.faults.kinds();
        let kind = kinds[self.rand(kinds.len() as u64) as usize];
        let n = self.nodes.len();
        match kind {
            k if k.is_network_weather() => {
                self.weather_epoch += 1;
                let epoch = self.weather_epoch;
                self.weather.active.insert(k, epoch);
                let d = 100 + self.rand(900);
                self.schedule(d, Ev::WeatherEnd { kind: k, epoch });
            }
            FaultKind::Partition | FaultKind::Asymmetric => {
                let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
                let mut blocked = BTreeSet::new();
                if kind == FaultKind::Partition {
                    // A random split into two non-empty sides.
                    let mask = 1 + self.rand((1 << n) - 2);
                    for &a in &ids {
                        for &b in &ids {
                            let side = |x: NodeId| mask >> (x - 1) & 1;
                            if side(a) != side(b) {
                                blocked.insert((a, b));
                            }
                        }
                    }
                } else {
                    // Cut one to three directed links.
                    for _ in 0..1 + self.rand(3) {
                        let a = ids[self.rand(n as u64) as usize];
                        let b = ids[self.rand(n as u64) as usize];
                        if a != b {
                            blocked.insert((a, b));
                        }
                    }
                }
                self.blocked = blocked;
                self.partition_epoch += 1;
                self.stats.partitions += 1;
                let pairs: Vec<(u64, u64)> = self.blocked.iter().copied().collect();
                self.emit(0, Kind::Partition { blocked: pairs });
                let d = 100 + self.rand(1400);
                let epoch = self.partition_epoch;
                self.schedule(d, Ev::Heal { epoch });
            }
            FaultKind::Crash => {
                // Half the time the leader (of some group): losing it is
                // what Raft is for.
                let g = self.pick_group();
                let leader = self.leader_index(g);
                let i = match leader {
                    Some(l) if self.chance(50) => l,
                    _ => self.rand(n as u64) as usize,
                };
                if self.nodes[i].up {
                    self.crash_and_schedule_restart(i);
                }
            }
            FaultKind::Pause => {
                let i = self.rand(n as u64) as usize;
                if self.nodes[i].up && !self.nodes[i].paused {
                    self.pause(i);
                    let d = 20 + self.rand(480);
                    self.schedule(d, Ev::Resume { node: i });
                }
            }
            FaultKind::TickRate => {
                let i = self.rand(n as u64) as usize;
                let period = TICK_MS - 1 + self.rand(3);
                self.nodes[i].period = period;
                let id = self.nodes[i].id;
                self.emit(id, Kind::Tickrate { period });
            }
            FaultKind::Disk => {
                let i = self.rand(n as u64) as usize;
                self.weather_epoch += 1;
                let epoch = self.weather_epoch;
                let full = self.chance(40);
                let fs = self.nodes[i].fs.clone();
                let room = self.rand(64 << 10);
                let used = fs.used_bytes();
                fs.configure(|c| {
                    if full {
                        c.capacity = Some(used + room);
                        c.short_writes = true;
                    } else {
                        c.read_eio = Fault::Chance(0.01);
                        c.write_eio = Fault::Chance(0.02);
                        c.sync_eio = Fault::Chance(0.03);
                        c.meta_eio = Fault::Chance(0.02);
                    }
                });
                let node = &mut self.nodes[i];
                node.disk_fault = Some(epoch);
                node.disk_faulted = true;
                self.stats.disk_faults += 1;
                let d = 100 + self.rand(900);
                self.schedule(d, Ev::DiskHeal { node: i, epoch });
            }
            _ => unreachable!("every kind is handled above"),
        }
        Ok(())
    }

    /// Ends the disk fault `epoch` on node `i` (a later one stays).
    pub(crate) fn heal_disk(&mut self, i: usize, epoch: Option<u64>) {
        if epoch.is_some() && self.nodes[i].disk_fault != epoch {
            return;
        }
        self.nodes[i].disk_fault = None;
        self.nodes[i].fs.configure(|c| {
            c.capacity = None;
            c.read_eio = Fault::Never;
            c.write_eio = Fault::Never;
            c.sync_eio = Fault::Never;
            c.meta_eio = Fault::Never;
        });
    }
}

/// Checks one tick against the deadline the core gave before it
/// (`Raft::ticks_until_due`), which a host relies on to skip ticks: a
/// tick that was not due must leave no work, and may bring the deadline
/// at most one tick closer. Returns what went wrong.
fn tick_before_due<S: crate::storage::Storage>(
    due: Option<u64>,
    raft: &crate::core::Raft<S>,
) -> Option<String> {
    if due == Some(1) {
        return None;
    }
    let said = match due {
        Some(d) => format!("due in {d} ticks"),
        None => "not due until an input".to_string(),
    };
    if raft.has_ready() {
        return Some(format!(
            "node {} ({:?}) said it was {said}, but the next tick produced work",
            raft.id(),
            raft.role()
        ));
    }
    let after = raft.ticks_until_due();
    let closer = match (due, after) {
        (None, Some(_)) => true,
        (Some(d), Some(a)) => a + 1 < d,
        _ => false,
    };
    closer.then(|| {
        format!(
            "node {} ({:?}) said it was {said}; one tick later it said {after:?}",
            raft.id(),
            raft.role()
        )
    })
}
