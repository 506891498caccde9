//! The node driver: one Raft group's core running on tokio.
//!
//! The core is sans-IO; something must own it, feed it time, messages and
//! client work, and carry out each `Ready` in the contract's order. That is
//! [`RaftNode`]: one task owns the [`Raft`] and nothing else touches it, so
//! the core needs no locks and every decision it makes is serialised.
//!
//! The node task loops: wait for a tick, a message, a proposal or a request;
//! then drain everything else already queued (group commit: every proposal
//! waiting at that moment goes into the same `Ready`, so one log sync makes
//! them all durable); then handle `Ready`s until none is left: persist
//! (one fsync), send, hand committed entries to the apply task
//! ([`super::apply`]), answer reads, advance. A leader whose term and vote
//! are already durable sends its appends *before* its own sync, so its disk
//! write overlaps the followers' (the core counts the leader toward a
//! commit only for what it persisted).
//!
//! Proposals are answered from the apply task: a waiter succeeds only when
//! the entry at its index is applied with its term, and fails when another
//! term's entry is applied there or when this node stops leading (then the
//! outcome is unknown: it may still commit). Role changes reach the state
//! machine through the same ordered queue as the entries.
//!
//! Every queue between clients and the node has a named limit
//! ([`super::limits`]), in items and, where items carry payloads (the inbox,
//! the proposals), in bytes too; a full queue answers [`NodeError::Busy`]
//! instead of growing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;

use crate::core::{
    Bytes, Config, Event, Message, NodeId, Raft, RaftStatus, ReadMode, ReadState, Ready, Role,
};
use crate::driver::{self, Begin, Driver, Host, Stage, Work, WorkCheck};
use crate::storage::{NodeStorage, Storage};
use crate::{ChangeError, ProposeError, ReadError, TransferError};

use super::apply::{
    fail_waiters, ApplyMsg, ApplyTask, TakenSnapshot, Waiter, Waiters, APPLY_QUEUE, SNAPSHOT_QUEUE,
};
use super::codec;
use super::host::HostLiveness;
use super::limits::{ByteBudget, HeldBytes};
use super::snapshot::{prepare_load, remove_quietly, Staged, Staging};
use super::state_machine::StateMachine;
use super::status::{Histogram, NodeMetrics, NodeStatus};
use super::trace::NodeTracer;
use super::{Envelope, GroupId, Outbox};

/// The node's queue limits, named (and related to each other) in
/// [`super::limits`].
pub use super::limits::{
    CONTROL_QUEUE, DEFAULT_INBOX_BYTES, DEFAULT_PROPOSAL_BYTES, DEFAULT_PROPOSAL_QUEUE,
    INBOX_QUEUE, MAX_DEFERRED_READS,
};

/// How a node runs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id; must equal `config.id`.
    pub id: NodeId,
    /// The group this node belongs to; stamped on every envelope it sends.
    pub group: GroupId,
    /// The core's tunables (ticks, batch limits, ...).
    pub config: Config,
    /// Real time per core tick: `config.election_tick * tick` is the
    /// election timeout.
    pub tick: Duration,
    /// Take a snapshot every this many applied entries (0: never).
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, so a follower slightly
    /// behind catches up from the log rather than from a snapshot.
    pub log_margin: u64,
    /// Most proposals queued for the node task; a full queue answers
    /// [`NodeError::Busy`]. At least 1.
    pub proposal_queue: usize,
    /// Most bytes of proposals queued for the node task; past it a
    /// proposal is answered [`NodeError::Busy`]. At least
    /// [`codec::MAX_DATA_BYTES`] (the largest proposal accepted).
    pub proposal_bytes: usize,
    /// Most bytes of inbound messages ([`codec::encoded_len`]) queued for
    /// the node task; past it (or past [`INBOX_QUEUE`] messages)
    /// [`NodeHandle::step`] drops the message. At least
    /// [`codec::MAX_ENVELOPE_BYTES`].
    pub inbox_bytes: usize,
    /// Where this node appends its rtrace events (see [`NodeTracer`]);
    /// `None`: no trace.
    pub trace: Option<PathBuf>,
    /// The host's clock, when this node is one group of a
    /// [`super::host::GroupHost`]: the host's one timer nudges a group
    /// only on the ticks its core said are due (`Raft::ticks_until_due`),
    /// never a quiescent one. `None`: the node runs its own timer of
    /// period [`NodeConfig::tick`].
    pub(crate) clock: Option<GroupClock>,
}

/// One group's view of its host: the count of ticks since the host
/// started, the host tick at which the group wants its next nudge, the
/// nudge itself, and the host's node-level liveness. A group catches up
/// every tick it did not see (it slept, was slow, or had nothing due)
/// before it handles anything, so its leases and timers follow real time
/// even when the host skipped it; it takes the liveness view at the same
/// moment whenever the host changed it (the host nudges every group then,
/// and a nudge is a stored permit, so no change is missed).
#[derive(Debug, Clone)]
pub(crate) struct GroupClock {
    pub(crate) ticks: Arc<AtomicU64>,
    /// The host tick from which the host nudges this group at every
    /// tick; `u64::MAX`: only an input wakes it. Written by the group
    /// after each `Ready`.
    pub(crate) due: Arc<AtomicU64>,
    pub(crate) wake: Arc<Notify>,
    pub(crate) liveness: Arc<HostLiveness>,
}

impl NodeConfig {
    /// Defaults for node `id` of `group`: the core's defaults, a 100 ms tick,
    /// a snapshot every 10 000 entries keeping 1 000 behind it, and the
    /// queue limits of [`super::limits`].
    pub fn new(id: NodeId, group: GroupId) -> NodeConfig {
        NodeConfig {
            id,
            group,
            config: Config::new(id),
            tick: Duration::from_millis(100),
            snapshot_every: 10_000,
            log_margin: 1_000,
            proposal_queue: DEFAULT_PROPOSAL_QUEUE,
            proposal_bytes: DEFAULT_PROPOSAL_BYTES,
            inbox_bytes: DEFAULT_INBOX_BYTES,
            trace: None,
            clock: None,
        }
    }
}

/// A committed proposal's outcome, delivered to its proposer alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposeOutcome {
    /// Where the command sits in the log.
    pub index: u64,
    /// The term it was proposed (and committed) in.
    pub term: u64,
    /// What the state machine answered ([`super::state_machine::Applied::respond`]);
    /// empty when it answered nothing.
    pub result: Vec<u8>,
}

/// Why the node could not do what was asked.
///
/// For proposals: `Ok` means the command committed and was applied; an
/// error other than [`NodeError::LeadershipLost`], [`NodeError::Stopped`]
/// and [`NodeError::Failed`] means it was not appended or certainly did not
/// commit. Those three mean the outcome is unknown: it may have committed,
/// or still commit, on the other members.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// A queue is full: try again later (backpressure). `queue` names the
    /// queue and, for a byte limit, says so ("proposal bytes").
    #[error("busy: the {queue} queue is full (limit {limit})")]
    Busy { queue: &'static str, limit: usize },
    /// The proposal is larger than the wire carries
    /// ([`codec::MAX_DATA_BYTES`]): it could never be replicated.
    #[error("proposal of {len} bytes is over the limit of {limit}")]
    TooLarge { len: usize, limit: usize },
    /// This node is not the leader; `leader` is the one it knows of.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// The core refused the proposal (not appended).
    #[error("proposal refused: {0}")]
    Propose(ProposeError),
    /// The core refused the read.
    #[error("read refused: {0}")]
    Read(ReadError),
    /// The core refused the membership change.
    #[error("membership change refused: {0}")]
    Change(ChangeError),
    /// The core refused the leader transfer.
    #[error("leader transfer refused: {0}")]
    Transfer(TransferError),
    /// This node lost leadership before the proposal at `index` was
    /// applied. Outcome unknown: it may still commit under a new leader.
    #[error("leadership lost before entry {index} was applied (it may still commit)")]
    LeadershipLost { index: u64 },
    /// Another entry was committed at `index`: the proposal did not commit.
    #[error("entry {index} was replaced by another leader's entry: not committed")]
    NotCommitted { index: u64 },
    /// Leadership was lost before the read was confirmed.
    #[error("leadership lost before the read was confirmed")]
    ReadLost,
    /// The node stopped (shut down or failed) before answering.
    #[error("the node stopped")]
    Stopped,
    /// The node hit an error it cannot continue from and stopped. For a
    /// proposal the outcome is unknown (the entry may have committed).
    #[error("the node failed: {0}")]
    Failed(String),
    /// Starting the node failed.
    #[error("cannot start the node: {0}")]
    Start(String),
    /// The state machine could not save the snapshot asked for (its
    /// `on_snapshot_save` or its job failed, or the staging directory
    /// could not be written). The node goes on.
    #[error("snapshot not saved: {0}")]
    Snapshot(String),
}

/// What the handle reads without asking the node task: enough to refuse a
/// proposal at once on a follower.
#[derive(Debug, Clone, Copy)]
struct Soft {
    role: Role,
    leader: Option<NodeId>,
}

struct Proposal {
    data: Bytes,
    reply: oneshot::Sender<Result<ProposeOutcome, NodeError>>,
    /// Its bytes of the proposal budget, given back when the node task
    /// takes it (drops it).
    _held: HeldBytes,
}

/// An inbound message and its bytes of the inbox budget, given back when
/// the node task takes it.
type Inboxed = (Envelope, HeldBytes);

enum Control {
    Read(ReadMode, oneshot::Sender<Result<u64, NodeError>>),
    Snapshot(oneshot::Sender<Result<u64, NodeError>>),
    Transfer(NodeId, oneshot::Sender<Result<(), NodeError>>),
    ElectionTimeout(oneshot::Sender<bool>),
    ChangePeers(Vec<NodeId>, oneshot::Sender<Result<(), NodeError>>),
    AddLearner(NodeId, oneshot::Sender<Result<(), NodeError>>),
    RemoveLearner(NodeId, oneshot::Sender<Result<(), NodeError>>),
    Status(oneshot::Sender<NodeStatus>),
    Shutdown,
}

/// The queues into the node task. Only handles hold them, so the node
/// stops by itself once every handle is dropped.
struct Senders {
    proposals: mpsc::Sender<Proposal>,
    inbox: mpsc::Sender<Inboxed>,
    control: mpsc::Sender<Control>,
}

/// What handles and the node task both see.
struct Shared {
    id: NodeId,
    group: GroupId,
    /// Whether the group is quiescent on this node (as of its last
    /// `Ready`): its host skips it when ticking.
    quiescent: AtomicBool,
    proposal_queue: usize,
    /// Bytes of queued proposals ([`NodeConfig::proposal_bytes`]).
    proposal_budget: Arc<ByteBudget>,
    proposal_bytes: usize,
    /// Bytes of queued inbound messages ([`NodeConfig::inbox_bytes`]).
    inbox_budget: Arc<ByteBudget>,
    inbox_bytes: usize,
    soft: Mutex<Soft>,
    applied: watch::Receiver<u64>,
    busy_refusals: AtomicU64,
    dropped_messages: AtomicU64,
    propose_latency: Mutex<Histogram>,
    /// Why the node stopped, when an error stopped it.
    failure: Mutex<Option<String>>,
    /// Becomes true once the node task finished (state machine shut down,
    /// storage dropped).
    stopped: watch::Receiver<bool>,
}

/// A cheap, cloneable handle to a running node: the only way to reach it.
#[derive(Clone)]
pub struct NodeHandle {
    shared: Arc<Shared>,
    tx: Arc<Senders>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("id", &self.shared.id)
            .field("group", &self.shared.group)
            .finish_non_exhaustive()
    }
}

/// Starts nodes; see the module docs.
pub struct RaftNode;

impl RaftNode {
    /// Starts a node over `storage` on the current tokio runtime (a
    /// multi-thread runtime lets log syncs block without stalling other
    /// tasks). The state machine is first loaded from the latest snapshot
    /// in storage, if any; committed entries after it are applied again.
    ///
    /// Fails when the config is invalid or the storage cannot be read.
    pub fn start(
        cfg: NodeConfig,
        storage: NodeStorage,
        sm: Box<dyn StateMachine>,
        outbox: Arc<dyn Outbox>,
    ) -> Result<NodeHandle, NodeError> {
        if cfg.id != cfg.config.id {
            return Err(NodeError::Start(format!(
                "node id {} differs from config id {}",
                cfg.id, cfg.config.id
            )));
        }
        if cfg.proposal_queue == 0 {
            return Err(NodeError::Start("proposal_queue must be at least 1".into()));
        }
        if cfg.proposal_bytes < codec::MAX_DATA_BYTES {
            return Err(NodeError::Start(format!(
                "proposal_bytes must be at least MAX_DATA_BYTES ({})",
                codec::MAX_DATA_BYTES
            )));
        }
        if cfg.inbox_bytes < codec::MAX_ENVELOPE_BYTES {
            return Err(NodeError::Start(format!(
                "inbox_bytes must be at least MAX_ENVELOPE_BYTES ({})",
                codec::MAX_ENVELOPE_BYTES
            )));
        }
        let staging =
            Arc::new(Staging::for_storage(&storage, cfg.id, cfg.group).map_err(NodeError::Start)?);
        // Checked by streaming (memory stays bounded whatever its size),
        // then handed to the state machine as a directory of hard links.
        let initial = match storage
            .verify_snapshot()
            .map_err(|e| NodeError::Start(e.to_string()))?
        {
            Some(meta) => {
                let dir = prepare_load(&storage, &staging, &meta).map_err(NodeError::Start)?;
                Some((meta, dir))
            }
            None => None,
        };
        let seed = seed_for(cfg.id);
        let raft = Raft::new(cfg.config.clone(), storage, Box::new(SplitMix64(seed)))
            .map_err(|e| NodeError::Start(e.to_string()))?;
        let raft_hs = raft.storage().hard_state();
        let tracer = match &cfg.trace {
            None => None,
            Some(path) => {
                let mut t =
                    NodeTracer::open(path, cfg.id, &raft.membership().members()).map_err(|e| {
                        NodeError::Start(format!("opening the trace {}: {e}", path.display()))
                    })?;
                t.started(raft.term(), raft.commit_index(), raft.membership());
                Some(t)
            }
        };

        let (prop_tx, prop_rx) = mpsc::channel(cfg.proposal_queue);
        let (inbox_tx, inbox_rx) = mpsc::channel(INBOX_QUEUE);
        let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let (apply_tx, apply_rx) = mpsc::channel(APPLY_QUEUE);
        let (snap_tx, snap_rx) = mpsc::channel(SNAPSHOT_QUEUE);
        let start_index = initial.as_ref().map_or(0, |(m, _)| m.index);
        let (applied_tx, applied_rx) = watch::channel(start_index);
        let waiters: Waiters = Arc::default();
        let (stopped_tx, stopped_rx) = watch::channel(false);
        let (fatal_tx, fatal_rx) = watch::channel(None);

        let mut apply = ApplyTask {
            sm,
            waiters: waiters.clone(),
            applied: start_index,
            applied_tx,
            snapshot_every: cfg.snapshot_every,
            last_snapshot: start_index,
            snapshot_tx: snap_tx,
            staging: staging.clone(),
            saving: None,
            saved_through: Arc::new(AtomicU64::new(start_index)),
            leader_pending: None,
            leading: false,
            following: false,
            failed: false,
            fatal: fatal_tx,
        };
        if let Some((meta, dir)) = initial {
            apply.load(meta, dir);
            if apply.failed {
                apply.sm.on_shutdown();
                return Err(NodeError::Start(
                    "the state machine could not load the snapshot in storage".into(),
                ));
            }
        }

        let shared = Arc::new(Shared {
            id: cfg.id,
            group: cfg.group,
            quiescent: AtomicBool::new(false),
            proposal_queue: cfg.proposal_queue,
            proposal_budget: ByteBudget::new(cfg.proposal_bytes),
            proposal_bytes: cfg.proposal_bytes,
            inbox_budget: ByteBudget::new(cfg.inbox_bytes),
            inbox_bytes: cfg.inbox_bytes,
            soft: Mutex::new(Soft {
                role: Role::Follower,
                leader: None,
            }),
            applied: applied_rx,
            busy_refusals: AtomicU64::new(0),
            dropped_messages: AtomicU64::new(0),
            propose_latency: Mutex::default(),
            failure: Mutex::default(),
            stopped: stopped_rx,
        });
        let apply_task = tokio::spawn(apply.run(apply_rx));
        let cfg_clock = cfg.clock.clone();
        let node = NodeTask {
            driver: Driver::new(raft),
            cfg,
            outbox,
            shared: shared.clone(),
            waiters,
            apply_tx,
            reads: BTreeMap::new(),
            deferred_reads: Vec::new(),
            next_read: 0,
            metrics: NodeMetrics::default(),
            stopped: stopped_tx,
            prev_hs: (raft_hs.term, raft_hs.vote),
            tracer,
            traced_role: (Role::Follower, None),
            contract: WorkCheck::new(start_index),
            seen_ticks: cfg_clock_now(&cfg_clock),
            seen_liveness: 0,
            told_dead: Vec::new(),
            staging,
        };
        tokio::spawn(node.run(prop_rx, inbox_rx, control_rx, snap_rx, fatal_rx, apply_task));
        let tx = Arc::new(Senders {
            proposals: prop_tx,
            inbox: inbox_tx,
            control: control_tx,
        });
        Ok(NodeHandle { shared, tx })
    }
}

impl NodeHandle {
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// The group this node belongs to.
    pub fn group(&self) -> GroupId {
        self.shared.group
    }

    /// Proposes `data` and waits until it is applied here.
    ///
    /// Guarantees: `Ok` only when the entry this call appended (its index
    /// *and* term) was committed and applied; the result is what the state
    /// machine answered for it, and goes to this caller alone. Refused at
    /// once with [`NodeError::NotLeader`] (and the leader's id, if known)
    /// on a non-leader, and with [`NodeError::Busy`] when the proposal
    /// queue is full. A proposal that races a leader change may fail with
    /// [`NodeError::LeadershipLost`] although it committed; it never
    /// succeeds when it did not.
    ///
    /// `data` (a `Vec<u8>`, a [`Bytes`], ...) is taken without a copy: the
    /// log, every follower's `Append` and the state machine's
    /// [`super::state_machine::Applied::data`] share it. Refused with
    /// [`NodeError::TooLarge`] past [`codec::MAX_DATA_BYTES`], and with
    /// [`NodeError::Busy`] when queued proposals hold
    /// [`NodeConfig::proposal_bytes`].
    pub async fn propose(&self, data: impl Into<Bytes>) -> Result<ProposeOutcome, NodeError> {
        let data = data.into();
        if *self.shared.stopped.borrow() {
            return Err(NodeError::Stopped);
        }
        if data.len() > codec::MAX_DATA_BYTES {
            return Err(NodeError::TooLarge {
                len: data.len(),
                limit: codec::MAX_DATA_BYTES,
            });
        }
        let soft = *self.shared.soft.lock().expect("soft lock");
        if soft.role != Role::Leader {
            return Err(NodeError::NotLeader {
                leader: soft.leader,
            });
        }
        let started = Instant::now();
        let Some(held) = self.shared.proposal_budget.try_take(data.len()) else {
            self.shared.busy_refusals.fetch_add(1, Ordering::Relaxed);
            return Err(NodeError::Busy {
                queue: "proposal bytes",
                limit: self.shared.proposal_bytes,
            });
        };
        let (tx, rx) = oneshot::channel();
        let p = Proposal {
            data,
            reply: tx,
            _held: held,
        };
        match self.tx.proposals.try_send(p) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.shared.busy_refusals.fetch_add(1, Ordering::Relaxed);
                return Err(NodeError::Busy {
                    queue: "proposal",
                    limit: self.shared.proposal_queue,
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(NodeError::Stopped),
        }
        let outcome = rx.await.unwrap_or(Err(NodeError::Stopped));
        if outcome.is_ok() {
            let mut h = self.shared.propose_latency.lock().expect("latency lock");
            h.record(started.elapsed());
        }
        outcome
    }

    /// A linearizable read point: confirms leadership with a heartbeat
    /// round (ReadIndex), then waits until this node's state machine has
    /// applied the commit index noted when the read arrived, and returns
    /// that index. A read of the state machine made after this returns
    /// reflects every write that completed before `read` was called.
    /// Leader only; a leader that has not yet committed an entry of its
    /// term holds the read until it has. Fails with
    /// [`NodeError::ReadLost`] when leadership is lost first.
    pub async fn read(&self) -> Result<u64, NodeError> {
        self.read_with(ReadMode::ReadIndex).await
    }

    /// Like [`NodeHandle::read`], but served without a heartbeat round
    /// while the leader's lease holds (a quorum acknowledged it within
    /// `lease_tick` ticks; Raft thesis §6.4.1); otherwise it falls back to
    /// a ReadIndex round. Safe only if clocks do not drift by more than
    /// the gap between `lease_tick` and the election timeout; needs
    /// CheckQuorum (refused with [`NodeError::Read`] without it).
    pub async fn read_lease(&self) -> Result<u64, NodeError> {
        self.read_with(ReadMode::Lease).await
    }

    async fn read_with(&self, mode: ReadMode) -> Result<u64, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.control(Control::Read(mode, tx))?;
        let index = rx.await.unwrap_or(Err(NodeError::Stopped))?;
        let mut applied = self.shared.applied.clone();
        applied
            .wait_for(|&a| a >= index)
            .await
            .map_err(|_| NodeError::Stopped)?;
        Ok(index)
    }

    /// Asks the leader to hand leadership to `to`. `Ok` means the transfer
    /// started, not that it completed.
    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), NodeError> {
        let (tx, rx) = oneshot::channel();
        self.control(Control::Transfer(to, tx))?;
        rx.await.unwrap_or(Err(NodeError::Stopped))
    }

    /// Fires this node's election timer now (a pre-vote round first, so
    /// a leader its peers still hear is not deposed): for a control plane
    /// that knows a quiescent group's leader is gone while the leader's
    /// process lives on (its replica stopped), which node-level liveness
    /// cannot tell the followers. Returns whether a campaign started (not
    /// on a leader or a node that may not campaign).
    pub async fn election_timeout_now(&self) -> Result<bool, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.control(Control::ElectionTimeout(tx))?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Asks the leader to make `voters` the voter set (one step or joint
    /// consensus, as the core decides). `Ok` means the change started;
    /// [`StateMachine::on_configuration_committed`] reports its commit.
    pub async fn change_peers(&self, voters: Vec<NodeId>) -> Result<(), NodeError> {
        let (tx, rx) = oneshot::channel();
        self.control(Control::ChangePeers(voters, tx))?;
        rx.await.unwrap_or(Err(NodeError::Stopped))
    }

    /// Asks the leader to add a learner. `Ok` means the change started.
    pub async fn add_learner(&self, id: NodeId) -> Result<(), NodeError> {
        let (tx, rx) = oneshot::channel();
        self.control(Control::AddLearner(id, tx))?;
        rx.await.unwrap_or(Err(NodeError::Stopped))
    }

    /// Asks the leader to remove a learner. `Ok` means the change started.
    pub async fn remove_learner(&self, id: NodeId) -> Result<(), NodeError> {
        let (tx, rx) = oneshot::channel();
        self.control(Control::RemoveLearner(id, tx))?;
        rx.await.unwrap_or(Err(NodeError::Stopped))
    }

    /// Takes a snapshot of the state machine now (instead of waiting for
    /// `snapshot_every` entries), stores it and compacts the log behind it,
    /// keeping `log_margin` entries. Returns the index the stored snapshot
    /// covers: the latest one's when nothing was applied since. Works on
    /// any member, leader or not.
    pub async fn snapshot(&self) -> Result<u64, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.control(Control::Snapshot(tx))?;
        rx.await.unwrap_or(Err(NodeError::Stopped))
    }

    /// The node's current status, taken between two `Ready`s.
    pub async fn status(&self) -> Result<NodeStatus, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.control(Control::Status(tx))?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// The error that stopped the node, once it stopped because of one
    /// (`None` while it runs, and after a requested shutdown).
    pub fn failure(&self) -> Option<String> {
        self.shared.failure.lock().expect("failure lock").clone()
    }

    /// The highest index the state machine has applied (no round trip).
    pub fn applied(&self) -> u64 {
        *self.shared.applied.borrow()
    }

    /// Delivers a message from a peer. Never blocks: a full inbox (in
    /// messages or in bytes, [`NodeConfig::inbox_bytes`]) drops it (counted
    /// in [`NodeMetrics::dropped_messages`]) and answers `Busy`; Raft
    /// retries whatever matters. Messages for another group or node are
    /// dropped too.
    pub fn step(&self, env: Envelope) -> Result<(), NodeError> {
        let Some(held) = self.shared.inbox_budget.try_take(codec::encoded_len(&env)) else {
            self.shared.dropped_messages.fetch_add(1, Ordering::Relaxed);
            return Err(NodeError::Busy {
                queue: "inbox bytes",
                limit: self.shared.inbox_bytes,
            });
        };
        match self.tx.inbox.try_send((env, held)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.shared.dropped_messages.fetch_add(1, Ordering::Relaxed);
                Err(NodeError::Busy {
                    queue: "inbox",
                    limit: INBOX_QUEUE,
                })
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(NodeError::Stopped),
        }
    }

    /// The node's role and the leader it knows, as of its last `Ready`
    /// (cheap: no round trip to the node task).
    pub fn role(&self) -> (Role, Option<NodeId>) {
        let s = self.shared.soft.lock().expect("soft lock");
        (s.role, s.leader)
    }

    /// Whether the group was quiescent on this node after its last `Ready`
    /// (see `core/quiesce.rs`).
    pub fn is_quiescent(&self) -> bool {
        self.shared.quiescent.load(Ordering::Acquire)
    }

    /// Stops the node and waits until it stopped: proposals and reads still
    /// waiting fail with [`NodeError::Stopped`], the state machine gets
    /// `on_shutdown` (after `on_leader_stop` / `on_stop_following` as
    /// needed), and the storage is closed, so it may be reopened at once.
    /// Idempotent; also returns once a node that failed has stopped.
    pub async fn shutdown(&self) {
        // A full control queue still sees the request: wait for room.
        let _ = self.tx.control.send(Control::Shutdown).await;
        let mut stopped = self.shared.stopped.clone();
        // An error means the task is gone (it panicked): stopped too.
        let _ = stopped.wait_for(|&s| s).await;
    }

    fn control(&self, c: Control) -> Result<(), NodeError> {
        match self.tx.control.try_send(c) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(NodeError::Busy {
                queue: "control",
                limit: CONTROL_QUEUE,
            }),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(NodeError::Stopped),
        }
    }
}

/// Whether the node task goes on after an event.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    /// Shut down as asked.
    Stop,
    /// Stop because of an error the node cannot continue from.
    Fail(String),
}

struct NodeTask {
    /// The core and the contract's order (shared with the simulator).
    driver: Driver,
    cfg: NodeConfig,
    outbox: Arc<dyn Outbox>,
    shared: Arc<Shared>,
    waiters: Waiters,
    apply_tx: mpsc::Sender<ApplyMsg>,
    /// Reads waiting for leadership confirmation, by context. Bounded by the
    /// core's `MAX_PENDING_READS` (it refuses beyond).
    reads: BTreeMap<u64, oneshot::Sender<Result<u64, NodeError>>>,
    /// Reads waiting for this new leader's first commit in its term.
    deferred_reads: Vec<(ReadMode, oneshot::Sender<Result<u64, NodeError>>)>,
    next_read: u64,
    metrics: NodeMetrics,
    stopped: watch::Sender<bool>,
    tracer: Option<NodeTracer>,
    /// The role and leader last written to the trace.
    traced_role: (Role, Option<NodeId>),
    /// Term and vote last written to the trace.
    prev_hs: (u64, Option<NodeId>),
    /// The order of the work handed to the state machine, checked on real
    /// time as the simulator checks it; a violation stops the node.
    contract: WorkCheck,
    /// With a host clock: the host tick this node has caught up to, the
    /// host's liveness epoch it took, and the peers it told its core dead.
    seen_ticks: u64,
    seen_liveness: u64,
    told_dead: Vec<NodeId>,
    /// Where snapshots are staged (shared with the apply task).
    staging: Arc<Staging>,
}

impl NodeTask {
    async fn run(
        mut self,
        mut proposals: mpsc::Receiver<Proposal>,
        mut inbox: mpsc::Receiver<Inboxed>,
        mut control: mpsc::Receiver<Control>,
        mut snapshots: mpsc::Receiver<TakenSnapshot>,
        mut fatal: watch::Receiver<Option<String>>,
        apply_task: JoinHandle<()>,
    ) {
        // The timer and the catch-up below share one origin, so a firing is
        // never a hair early for the tick it stands for.
        let mut next_tick = tokio::time::Instant::now();
        let mut ticker = tokio::time::interval_at(next_tick, self.cfg.tick);
        // Leases are measured in ticks, so a stalled node (paused, or starved
        // of CPU) must catch its clock up before it acts on any waiting
        // message: when the timer fires late, every tick that came due is
        // delivered at once, before the inbox is drained. The timer's own
        // late firings then find nothing due.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        // A group of a host is ticked by the host's one timer instead.
        let own_clock = self.cfg.clock.is_none();
        let wake = self.cfg.clock.as_ref().map(|c| c.wake.clone());
        let mut error = None;
        loop {
            let flow = tokio::select! {
                biased;
                // A permit stored while the task was busy is taken at
                // once: no host tick is missed, only merged.
                () = async {
                    match &wake {
                        Some(w) => w.notified().await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.catch_up_host();
                    self.flush_trace();
                    Flow::Continue
                }
                _ = ticker.tick(), if own_clock => {
                    let now = tokio::time::Instant::now();
                    while next_tick <= now {
                        self.driver.raft_mut().tick();
                        next_tick += self.cfg.tick;
                    }
                    self.flush_trace();
                    Flow::Continue
                }
                c = control.recv() => match c {
                    Some(c) => self.control(c),
                    None => Flow::Stop, // every handle is gone
                },
                Some((env, _held)) = inbox.recv() => self.step(env),
                Ok(()) = fatal.changed() => {
                    // The apply task already told the state machine.
                    Flow::Fail(fatal.borrow().clone().unwrap_or_default())
                }
                Some(s) = snapshots.recv() => self.save_snapshot(s),
                Some(p) = proposals.recv() => {
                    self.propose(p);
                    Flow::Continue
                }
            };
            match flow {
                Flow::Continue => {}
                Flow::Stop => break,
                Flow::Fail(e) => {
                    error = Some(e);
                    break;
                }
            }
            // Group commit: take everything already queued before the next
            // `Ready`, so all of it shares one persist (one log sync). The
            // queues are bounded, and so is each drain.
            let mut flow = Flow::Continue;
            for _ in 0..INBOX_QUEUE {
                let Ok((env, _held)) = inbox.try_recv() else {
                    break;
                };
                flow = self.step(env);
                if flow != Flow::Continue {
                    break;
                }
            }
            if let Flow::Fail(e) = flow {
                error = Some(e);
                break;
            }
            for _ in 0..self.cfg.proposal_queue {
                let Ok(p) = proposals.try_recv() else { break };
                self.propose(p);
            }
            self.retry_deferred_reads();
            // A storage read failed somewhere above (a tick, a proposal, a
            // read): stop before anything decided on it leaves the node.
            if let Some(f) = self.driver.raft().storage_failure() {
                error = Some(format!("storage: {f}"));
                break;
            }
            if let Err(e) = self.handle_ready().await {
                error = Some(e);
                break;
            }
        }
        *self.shared.soft.lock().expect("soft lock") = Soft {
            role: Role::Follower,
            leader: None,
        };
        // A gone apply task is a symptom; when it panicked, its own report
        // (sent while it unwinds, possibly a moment after its queue closed)
        // is the cause the node should give. Bounded: a task that ended
        // without a report is not waited for long.
        if error.is_some() && fatal.borrow().is_none() {
            let _ = tokio::time::timeout(FATAL_REPORT_WAIT, fatal.changed()).await;
        }
        if let (Some(_), Some(cause)) = (&error, fatal.borrow().clone()) {
            error = Some(cause);
        }
        let stop = match error {
            Some(e) => {
                *self.shared.failure.lock().expect("failure lock") = Some(e.clone());
                let _ = self.apply_tx.send(ApplyMsg::Error(e.clone())).await;
                NodeError::Failed(e)
            }
            None => NodeError::Stopped,
        };
        for (_, r) in std::mem::take(&mut self.reads) {
            let _ = r.send(Err(stop.clone()));
        }
        for (_, r) in std::mem::take(&mut self.deferred_reads) {
            let _ = r.send(Err(stop.clone()));
        }
        fail_waiters(&self.waiters, None, |_| stop.clone());
        // Closing the apply queue lets the apply task finish what is queued
        // and call `on_shutdown`.
        drop(self.apply_tx);
        let _ = apply_task.await;
        // The core, and with it the storage, is dropped before waiters of
        // `shutdown` are released, so the storage may be reopened at once.
        drop(self.driver);
        self.stopped.send_replace(true);
        // Requests that arrived meanwhile learn that the node stopped when
        // their reply senders drop with the queue.
        drop(control);
    }

    fn step(&mut self, env: Envelope) -> Flow {
        self.catch_up_host();
        if env.group != self.cfg.group || env.msg.to != self.cfg.id {
            self.metrics.dropped_messages += 1;
            return Flow::Continue;
        }
        // Only a misrouted message (excluded above) or a broken invariant
        // errors; the latter means this node must stop.
        if let Err(e) = self.driver.raft_mut().step(env.msg) {
            return Flow::Fail(format!("stepping a message: {e}"));
        }
        Flow::Continue
    }

    fn propose(&mut self, p: Proposal) {
        self.catch_up_host();
        match self.driver.raft_mut().propose(p.data, None) {
            Ok(index) => {
                self.metrics.proposals += 1;
                let w = Waiter {
                    term: self.driver.raft().term(),
                    reply: p.reply,
                };
                self.waiters.lock().expect("waiters lock").insert(index, w);
            }
            Err(ProposeError::NotLeader { leader }) => {
                let _ = p.reply.send(Err(NodeError::NotLeader { leader }));
            }
            Err(e) => {
                let _ = p.reply.send(Err(NodeError::Propose(e)));
            }
        }
    }

    /// Starts a ReadIndex round. A leader that has not committed an entry
    /// of its term yet cannot know the commit index is current: the read
    /// waits (up to [`MAX_DEFERRED_READS`]) until it has, instead of failing.
    fn read(&mut self, mode: ReadMode, reply: oneshot::Sender<Result<u64, NodeError>>) {
        let ctx = self.next_read;
        self.next_read += 1;
        match self.driver.raft_mut().read_index(ctx, mode) {
            Ok(()) => {
                self.reads.insert(ctx, reply);
            }
            Err(ReadError::NoCommitInTerm) if self.deferred_reads.len() < MAX_DEFERRED_READS => {
                self.deferred_reads.push((mode, reply));
            }
            Err(ReadError::NotLeader { leader }) => {
                let _ = reply.send(Err(NodeError::NotLeader { leader }));
            }
            Err(e) => {
                let _ = reply.send(Err(NodeError::Read(e)));
            }
        }
    }

    /// Retries deferred reads once this leader committed in its term.
    fn retry_deferred_reads(&mut self) {
        let log = self.driver.raft().raft_log();
        if self.deferred_reads.is_empty()
            || self.driver.raft().role() != Role::Leader
            || log.term(log.committed) != Some(self.driver.raft().term())
        {
            return;
        }
        for (mode, reply) in std::mem::take(&mut self.deferred_reads) {
            self.read(mode, reply);
        }
    }

    fn control(&mut self, c: Control) -> Flow {
        self.catch_up_host();
        match c {
            Control::Read(mode, reply) => self.read(mode, reply),
            Control::Snapshot(reply) => {
                if let Err(mpsc::error::TrySendError::Full(ApplyMsg::Snapshot(reply))) =
                    self.apply_tx.try_send(ApplyMsg::Snapshot(reply))
                {
                    let _ = reply.send(Err(NodeError::Busy {
                        queue: "apply",
                        limit: APPLY_QUEUE,
                    }));
                }
            }
            Control::Transfer(to, reply) => {
                let r = self
                    .driver
                    .raft_mut()
                    .transfer_leader(to)
                    .map_err(|e| match e {
                        TransferError::NotLeader { leader } => NodeError::NotLeader { leader },
                        e => NodeError::Transfer(e),
                    });
                let _ = reply.send(r);
            }
            Control::ElectionTimeout(reply) => {
                let _ = reply.send(self.driver.raft_mut().election_timeout_now());
            }
            Control::ChangePeers(voters, reply) => {
                let _ = reply.send(change_result(self.driver.raft_mut().change_peers(voters)));
            }
            Control::AddLearner(id, reply) => {
                let _ = reply.send(change_result(self.driver.raft_mut().add_learner(id)));
            }
            Control::RemoveLearner(id, reply) => {
                let _ = reply.send(change_result(self.driver.raft_mut().remove_learner(id)));
            }
            Control::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Control::Shutdown => return Flow::Stop,
        }
        Flow::Continue
    }

    fn status(&self) -> NodeStatus {
        let r = self.driver.raft();
        let mut metrics = self.metrics;
        metrics.busy_refusals = self.shared.busy_refusals.load(Ordering::Relaxed);
        metrics.inbox_bytes = self.shared.inbox_budget.held();
        metrics.proposal_bytes = self.shared.proposal_budget.held();
        metrics.dropped_messages += self.shared.dropped_messages.load(Ordering::Relaxed);
        metrics.propose_latency = *self.shared.propose_latency.lock().expect("latency lock");
        NodeStatus {
            id: r.id(),
            group: self.cfg.group,
            raft: RaftStatus {
                applied: *self.shared.applied.borrow(),
                ..r.status()
            },
            metrics,
        }
    }

    /// Stores a snapshot the apply task took and compacts the log behind
    /// it, keeping `log_margin` entries. A snapshot the state machine
    /// failed to write is counted and skipped; failing to store one stops
    /// the node (a storage failure).
    fn save_snapshot(&mut self, mut s: TakenSnapshot) -> Flow {
        let reply = s.reply.take();
        let (outcome, flow) = match s.outcome {
            Err(e) => {
                self.metrics.snapshots_failed += 1;
                (Err(NodeError::Snapshot(e)), Flow::Continue)
            }
            Ok(staged) => match self.store_snapshot(s.index, staged) {
                Ok(index) => (Ok(index), Flow::Continue),
                Err(e) => (Err(NodeError::Failed(e.clone())), Flow::Fail(e)),
            },
        };
        if let Some(r) = reply {
            let _ = r.send(outcome);
        }
        flow
    }

    /// Stores the snapshot staged as `staged` at `index` unless one at
    /// least as new is stored already (its directory is then removed);
    /// returns the index of the latest stored snapshot after that. On the
    /// node task: a meta write and a rename, whatever the files' sizes.
    fn store_snapshot(&mut self, index: u64, staged: Option<Staged>) -> Result<u64, String> {
        let Some(staged) = staged else {
            return Ok(self
                .driver
                .raft()
                .storage()
                .snapshot_meta()
                .map_or(0, |m| m.index));
        };
        let (driver, keep) = (&mut self.driver, self.cfg.log_margin);
        let saved = blocking(|| driver.save_snapshot_dir(index, &staged.dir, staged.files, keep));
        // Renamed into place when stored in files; otherwise (refused, or
        // copied into a store in memory) no longer needed.
        remove_quietly(&staged.dir);
        let saved = saved.map_err(|e| format!("saving a snapshot: {e}"))?;
        if saved.stored {
            self.metrics.snapshots_saved += 1;
            if let Some(t) = self.tracer.as_mut() {
                let r = self.driver.raft();
                let upto = index.saturating_sub(keep);
                t.compacted(r.term(), r.role(), r.commit_index(), upto);
            }
        }
        Ok(saved.index)
    }

    /// Handles every pending `Ready` through the shared [`Driver`] (the
    /// code the simulator checks). An error is fatal: the node stops.
    async fn handle_ready(&mut self) -> Result<(), String> {
        while self.driver.has_work() {
            let mut host = RuntimeHost {
                group: self.cfg.group,
                outbox: &*self.outbox,
                metrics: &mut self.metrics,
                tracer: self.tracer.as_mut(),
                traced_role: &mut self.traced_role,
                prev_hs: &mut self.prev_hs,
                reads: &mut self.reads,
                deferred_reads: &mut self.deferred_reads,
                waiters: &self.waiters,
                contract: &mut self.contract,
                staging: &self.staging,
                to_apply: Vec::new(),
                started: Instant::now(),
            };
            let driver = &mut self.driver;
            let handled = match driver.take_ready(&mut host) {
                Ok(Begin::Taken(taken)) => {
                    // Persisting may hold a thread on the disk (a sync of
                    // the group's own, a meta save, snapshot work): only
                    // then is it moved off the async workers, a hand-off
                    // that costs more than the work itself for the small
                    // `Ready`s of a host of many groups. The host-wide log
                    // sync is waited for here, the task asleep, the thread
                    // free for other groups.
                    let persisted = if driver.persist_may_block(&taken) {
                        blocking(|| driver.persist(taken))
                    } else {
                        driver.persist(taken)
                    };
                    match persisted {
                        Ok(p) => {
                            let outcome = match p.pending() {
                                Some(sync) => Some(sync.wait().await),
                                None => None,
                            };
                            driver.finish_ready(&mut host, p, outcome)
                        }
                        Err(e) => Err(e),
                    }
                }
                Ok(Begin::Idle) => Ok(driver::Flow::Go),
                Ok(Begin::Stop) => Ok(driver::Flow::Stop),
                Err(e) => Err(e),
            };
            let work = std::mem::take(&mut host.to_apply);
            handled.map_err(|e| e.to_string())?;
            // The apply task's queue is bounded: a slow state machine
            // holds the node here instead of growing memory.
            for w in work {
                to_apply(&self.apply_tx, w).await?;
            }
        }
        self.shared
            .quiescent
            .store(self.driver.raft().is_quiescent(), Ordering::Release);
        self.publish_due();
        let mut soft = self.shared.soft.lock().expect("soft lock");
        soft.role = self.driver.raft().role();
        soft.leader = self.driver.raft().leader();
        Ok(())
    }

    /// With a host clock: delivers every host tick this node has not seen
    /// yet, before anything else is handled (a quiescent group is skipped
    /// by the host; the ticks it slept through still count for leases and
    /// for the snapshot throttle), then the host's liveness view if it
    /// changed (`Raft::set_peer_alive` for each peer whose state differs
    /// from what the core was told). Without one: nothing.
    fn catch_up_host(&mut self) {
        let Some(c) = &self.cfg.clock else { return };
        let now = c.ticks.load(Ordering::Acquire);
        while self.seen_ticks < now {
            self.driver.raft_mut().tick();
            self.seen_ticks += 1;
        }
        let Some((epoch, dead)) = c.liveness.changed_since(self.seen_liveness) else {
            return;
        };
        self.seen_liveness = epoch;
        let raft = self.driver.raft_mut();
        for &p in self.told_dead.iter().filter(|p| !dead.contains(p)) {
            raft.set_peer_alive(p, true);
        }
        for &p in dead.iter().filter(|p| !self.told_dead.contains(p)) {
            raft.set_peer_alive(p, false);
        }
        self.told_dead = dead;
    }

    /// With a host clock: tells the host the first tick on which this
    /// group has something to do (its core's deadline; the next tick while
    /// trace lines wait to be written). If that tick already came while
    /// this `Ready` ran, the group nudges itself, so it is never late by
    /// more than the time to run.
    fn publish_due(&self) {
        let Some(c) = &self.cfg.clock else { return };
        let mut wait = self.driver.raft().ticks_until_due();
        if self.tracer.as_ref().is_some_and(|t| t.is_dirty()) {
            wait = Some(1);
        }
        let due = wait.map_or(u64::MAX, |w| self.seen_ticks.saturating_add(w));
        c.due.store(due, Ordering::Release);
        if c.ticks.load(Ordering::Acquire) >= due {
            c.wake.notify_one();
        }
    }

    /// Hands buffered trace lines to the file (every tick and at stop).
    fn flush_trace(&mut self) {
        if let Some(t) = self.tracer.as_mut() {
            if t.flush().is_err() {
                self.metrics.trace_errors += 1;
            }
        }
    }
}

/// The runtime's side of the [`Driver`]: the transport's outbox, the apply
/// task's queue (filled here, drained asynchronously after each `Ready`),
/// the node's reads and waiters, metrics and trace.
struct RuntimeHost<'a> {
    group: GroupId,
    outbox: &'a dyn Outbox,
    metrics: &'a mut NodeMetrics,
    tracer: Option<&'a mut NodeTracer>,
    traced_role: &'a mut (Role, Option<NodeId>),
    prev_hs: &'a mut (u64, Option<NodeId>),
    reads: &'a mut BTreeMap<u64, oneshot::Sender<Result<u64, NodeError>>>,
    deferred_reads: &'a mut Vec<(ReadMode, oneshot::Sender<Result<u64, NodeError>>)>,
    waiters: &'a Waiters,
    contract: &'a mut WorkCheck,
    staging: &'a Staging,
    to_apply: Vec<ApplyMsg>,
    /// When the current `Ready` was taken, for the log sync latency.
    started: Instant,
}

impl Host for RuntimeHost<'_> {
    type Error = String;

    fn send(&mut self, _raft: &Raft<NodeStorage>, msg: Message) {
        self.outbox.send(Envelope {
            group: self.group,
            msg,
        });
    }

    fn work(&mut self, raft: &Raft<NodeStorage>, work: Work) -> Result<(), String> {
        self.contract
            .check(&work)
            .map_err(|why| format!("state machine contract broken: {why}"))?;
        let msg = match work {
            Work::LeaderStop => {
                // Entries proposed here may still commit under the next
                // leader: their outcome is unknown, never reported as
                // success. Reads die with the leadership.
                fail_waiters(self.waiters, None, |index| NodeError::LeadershipLost {
                    index,
                });
                for (_, r) in std::mem::take(self.reads) {
                    let _ = r.send(Err(NodeError::ReadLost));
                }
                for (_, r) in std::mem::take(self.deferred_reads) {
                    let _ = r.send(Err(NodeError::ReadLost));
                }
                ApplyMsg::LeaderStop
            }
            Work::StopFollowing => ApplyMsg::StopFollowing,
            Work::StartFollowing { leader, term } => ApplyMsg::StartFollowing { leader, term },
            Work::LeaderStart { term, first_index } => ApplyMsg::LeaderStart { term, first_index },
            Work::Load { meta, .. } => {
                // Hard links, taken now: a newer snapshot may replace this
                // one in the store before the apply task loads it.
                let dir = prepare_load(raft.storage(), self.staging, &meta)
                    .map_err(|e| format!("handing over the snapshot at {}: {e}", meta.index))?;
                self.metrics.snapshots_installed += 1;
                ApplyMsg::Load { meta, dir }
            }
            Work::Entries(entries) => ApplyMsg::Entries(entries),
        };
        self.to_apply.push(msg);
        Ok(())
    }

    fn read_ready(&mut self, _raft: &Raft<NodeStorage>, rs: ReadState) {
        if let Some(reply) = self.reads.remove(&rs.ctx) {
            self.metrics.reads += 1;
            let _ = reply.send(Ok(rs.index));
        }
    }

    fn at(
        &mut self,
        raft: &Raft<NodeStorage>,
        stage: Stage,
        rd: &Ready,
    ) -> Result<driver::Flow, String> {
        match stage {
            Stage::Taken => self.started = Instant::now(),
            Stage::Persisted => {
                self.metrics.ready_batches += 1;
                if !rd.entries.is_empty() {
                    self.metrics.log_syncs += 1;
                    self.metrics.log_sync_latency.record(self.started.elapsed());
                }
                self.trace_ready(raft, rd);
            }
            Stage::Advanced => {
                for e in &rd.events {
                    if let Event::ReadReady { lease: true, .. } = e {
                        self.metrics.lease_reads += 1;
                    }
                }
            }
        }
        Ok(driver::Flow::Go)
    }
}

impl RuntimeHost<'_> {
    /// Writes what `rd` shows to the node's trace: durable term or vote
    /// changes, the core's events, a new role.
    fn trace_ready(&mut self, raft: &Raft<NodeStorage>, rd: &Ready) {
        let Some(t) = self.tracer.as_deref_mut() else {
            return;
        };
        let (term, role, commit) = (raft.term(), raft.role(), raft.commit_index());
        if let Some(hs) = rd.hard_state {
            if (hs.term, hs.vote) != (self.prev_hs.0, self.prev_hs.1) {
                *self.prev_hs = (hs.term, hs.vote);
                t.persisted(hs.term, role, commit, hs.vote);
            }
        }
        for e in &rd.events {
            t.event(term, role, commit, e);
        }
        let leader = raft.leader();
        if (role, leader) != *self.traced_role {
            let (from, _) = std::mem::replace(self.traced_role, (role, leader));
            t.role(term, from, role, commit, leader);
        }
    }
}

/// How long a failing node waits for the apply task's own report of why it
/// stopped, once its queue is found closed.
const FATAL_REPORT_WAIT: Duration = Duration::from_millis(200);

/// Queues work for the apply task, waiting while its queue is full. A free
/// function so the node task's future borrows only the sender across the
/// wait (the core's storage is `Send`, not `Sync`).
async fn to_apply(tx: &mpsc::Sender<ApplyMsg>, msg: ApplyMsg) -> Result<(), String> {
    tx.send(msg)
        .await
        .map_err(|_| "the apply task stopped".to_string())
}

fn change_result(r: Result<(), ChangeError>) -> Result<(), NodeError> {
    r.map_err(|e| match e {
        ChangeError::NotLeader { leader } => NodeError::NotLeader { leader },
        e => NodeError::Change(e),
    })
}

/// Runs storage IO that may block (fsync) without stalling the runtime's
/// other tasks, where the runtime allows it.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// A seed that differs per node and per start, so nodes started together
/// draw different election timeouts.
fn seed_for(id: NodeId) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// SplitMix64: a small, fast generator for election timeouts (the core
/// needs randomness, not secrecy).
struct SplitMix64(u64);

impl rand_core::RngCore for SplitMix64 {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// The host tick a new node starts from (0 without a host clock).
fn cfg_clock_now(c: &Option<GroupClock>) -> u64 {
    c.as_ref().map_or(0, |c| c.ticks.load(Ordering::Acquire))
}
