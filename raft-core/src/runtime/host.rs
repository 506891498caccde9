//! A host of many Raft groups in one process: one transport, one timer,
//! node-level liveness, groups created and removed at run time.
//!
//! A BlockServer holds hundreds of group replicas. Run as independent
//! [`RaftNode`]s, each would keep its own timer, heartbeat its peers every
//! heartbeat interval and wake its task every tick whether or not anything
//! happens. [`GroupHost`] instead:
//!
//! - **routes** every inbound envelope to its group by the group id it
//!   carries (one connection per peer process, whatever the group count;
//!   envelopes for a group this host does not hold are dropped and
//!   counted, since the Master may have just removed it);
//! - **ticks from one timer**: each tick bumps one shared counter and
//!   nudges only the groups for which that tick is due: each group says,
//!   after each `Ready`, how many ticks may pass before one makes its core
//!   act (`Raft::ticks_until_due`: a follower's election timeout, a
//!   leader's next heartbeat), and a quiescent group (`core/quiesce.rs`)
//!   wants none. A group catches up the ticks it was not nudged for the
//!   moment something reaches it, before anything else;
//! - **runs node-level liveness**: one ping per peer process every
//!   [`HostConfig::ping_every`] ticks for all groups, on the reserved group
//!   [`HOST_GROUP`]; a peer silent for [`HostConfig::peer_timeout`] ticks is
//!   reported dead to every group (`Raft::set_peer_alive`, through the
//!   view each group takes when it runs: see `GroupClock`), which is what
//!   lets a quiescent follower notice that its leader's node died. The
//!   argument for why this keeps groups safe and live is in
//!   `ARCHITECTURE.md` ("Quiescent groups").
//!
//! Group storage is the caller's: each group gets its own `NodeStorage`
//! (see `storage::sync` for the host-wide log sync that batches the
//! groups' fsyncs).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::core::{Message, MessageBody, NodeId, PeerLiveness};
use crate::storage::NodeStorage;

use super::node::{GroupClock, NodeConfig, NodeError, NodeHandle, RaftNode};
use super::state_machine::StateMachine;
use super::transport::{Inbound, TransportHandle};
use super::{Envelope, GroupId, Outbox};

/// The group id reserved for the host's own liveness pings; no Raft group
/// may use it.
pub const HOST_GROUP: GroupId = 0;

/// The most groups one host holds (each costs two tasks, its queues and
/// its storage's open files); creating one more is refused.
pub const MAX_GROUPS: usize = 4096;

/// How a host runs.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// This process's node id (every group's member id here).
    pub id: NodeId,
    /// Real time per tick, for every group.
    pub tick: Duration,
    /// The peer processes to ping (node ids other than `id`); a peer
    /// added later is watched from its first ping.
    pub peers: Vec<NodeId>,
    /// Ping every peer every this many ticks.
    pub ping_every: u64,
    /// Declare a peer's node dead after this many ticks without a ping from
    /// it. Must be at least the groups' election timeout (a merely slow
    /// leader must not be deposed more often than without quiescence) and
    /// several ping periods (one lost ping is not a death).
    pub peer_timeout: u64,
    /// Idle leader ticks before a group quiesces, applied to every group
    /// created here whose own setting is 0 (`Config::quiesce_after_ticks`);
    /// 0 keeps every group awake.
    pub quiesce_after_ticks: u32,
}

impl HostConfig {
    /// Defaults for node `id` with `peers`: a 100 ms tick, a ping every 2
    /// ticks, peers declared dead after 20 ticks (two default election
    /// timeouts), groups quiescent after 20 idle ticks.
    pub fn new(id: NodeId, peers: Vec<NodeId>) -> HostConfig {
        HostConfig {
            id,
            tick: Duration::from_millis(100),
            peers,
            ping_every: 2,
            peer_timeout: 20,
            quiesce_after_ticks: 20,
        }
    }
}

/// Why the host refused something.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("group {0} is already hosted here")]
    Exists(GroupId),
    #[error("group {0} is not hosted here")]
    Unknown(GroupId),
    #[error("group id {HOST_GROUP} is reserved for the host's liveness pings")]
    Reserved,
    #[error("this host already holds {MAX_GROUPS} groups")]
    Full,
    #[error("the group's node id {got} is not this host's id {want}")]
    WrongNode { got: NodeId, want: NodeId },
    #[error("the group's tick {got:?} differs from the host's {want:?}")]
    WrongTick { got: Duration, want: Duration },
    #[error("host config: {0}")]
    Config(String),
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// Counters of a host since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct HostMetrics {
    /// Groups hosted now, and how many of them are quiescent.
    pub groups: u64,
    pub quiescent: u64,
    /// Host ticks, and group nudges they caused (only groups for which
    /// the tick was due).
    pub ticks: u64,
    pub group_ticks: u64,
    /// Liveness pings sent and received.
    pub pings_sent: u64,
    pub pings_received: u64,
    /// Peers currently declared dead, and declarations so far.
    pub peers_dead: u64,
    pub peers_declared_dead: u64,
    /// Envelopes for a group this host does not hold.
    pub dropped_unknown_group: u64,
    /// Envelopes a group's full inbox refused.
    pub dropped_busy: u64,
    /// Groups created and removed.
    pub groups_created: u64,
    pub groups_removed: u64,
}

#[derive(Default)]
struct Counters {
    ticks: AtomicU64,
    group_ticks: AtomicU64,
    pings_sent: AtomicU64,
    pings_received: AtomicU64,
    peers_declared_dead: AtomicU64,
    dropped_unknown_group: AtomicU64,
    dropped_busy: AtomicU64,
    groups_created: AtomicU64,
    groups_removed: AtomicU64,
}

struct Group {
    node: NodeHandle,
    /// The host tick from which the group wants nudges (`GroupClock::due`).
    due: Arc<AtomicU64>,
    wake: Arc<Notify>,
}

/// The host's node-level liveness as its groups read it: the view, and an
/// epoch bumped at each change so a group takes the view only when it
/// changed.
#[derive(Debug)]
pub(crate) struct HostLiveness {
    epoch: AtomicU64,
    view: Mutex<PeerLiveness>,
}

impl HostLiveness {
    /// The peers declared dead, ascending.
    pub(crate) fn dead(&self) -> Vec<NodeId> {
        lock(&self.view).dead()
    }

    /// The current epoch and dead peers, if the epoch is not `seen`.
    pub(crate) fn changed_since(&self, seen: u64) -> Option<(u64, Vec<NodeId>)> {
        if self.epoch.load(Ordering::Acquire) == seen {
            return None;
        }
        // Read both under the lock, where they change together.
        let view = lock(&self.view);
        Some((self.epoch.load(Ordering::Acquire), view.dead()))
    }
}

struct Inner {
    cfg: HostConfig,
    transport: TransportHandle,
    clock: Arc<AtomicU64>,
    groups: RwLock<BTreeMap<GroupId, Group>>,
    /// Peer -> host tick of its last ping (or of the host's start), and
    /// the peers declared dead, as the groups read it.
    liveness: Arc<HostLiveness>,
    counters: Counters,
}

/// A running host; cheap to clone. See the module docs.
#[derive(Clone)]
pub struct GroupHost {
    inner: Arc<Inner>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for GroupHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupHost")
            .field("id", &self.inner.cfg.id)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl GroupHost {
    /// Starts the host's timer and router over a started transport (its
    /// `Inbound` is the host's from now on). Must run within a tokio
    /// runtime.
    pub fn start(
        cfg: HostConfig,
        transport: TransportHandle,
        inbound: Inbound,
    ) -> Result<GroupHost, HostError> {
        if cfg.tick.is_zero() || cfg.ping_every == 0 {
            return Err(HostError::Config("tick and ping_every must be > 0".into()));
        }
        if cfg.peer_timeout < 2 * cfg.ping_every {
            return Err(HostError::Config(
                "peer_timeout must be at least two ping periods".into(),
            ));
        }
        let mut liveness = PeerLiveness::default();
        for &p in cfg.peers.iter().filter(|&&p| p != cfg.id) {
            liveness.heard(p, 0);
        }
        let inner = Arc::new(Inner {
            cfg,
            transport,
            clock: Arc::new(AtomicU64::new(0)),
            groups: RwLock::new(BTreeMap::new()),
            liveness: Arc::new(HostLiveness {
                epoch: AtomicU64::new(0),
                view: Mutex::new(liveness),
            }),
            counters: Counters::default(),
        });
        let timer = tokio::spawn(run_timer(inner.clone()));
        let router = tokio::spawn(run_router(inner.clone(), inbound));
        Ok(GroupHost {
            inner,
            tasks: Arc::new(Mutex::new(vec![timer, router])),
        })
    }

    /// This host's node id.
    pub fn id(&self) -> NodeId {
        self.inner.cfg.id
    }

    /// The transport every group sends through.
    pub fn transport(&self) -> &TransportHandle {
        &self.inner.transport
    }

    /// Starts group `cfg.group` over `storage` with `sm` and routes its
    /// messages from now on. The group is ticked by the host (its
    /// `cfg.tick` must equal the host's) and learns the peers the host
    /// currently believes dead.
    pub fn create_group(
        &self,
        mut cfg: NodeConfig,
        storage: NodeStorage,
        sm: Box<dyn StateMachine>,
    ) -> Result<NodeHandle, HostError> {
        let hc = &self.inner.cfg;
        if cfg.group == HOST_GROUP {
            return Err(HostError::Reserved);
        }
        if cfg.id != hc.id {
            return Err(HostError::WrongNode {
                got: cfg.id,
                want: hc.id,
            });
        }
        if cfg.tick != hc.tick {
            return Err(HostError::WrongTick {
                got: cfg.tick,
                want: hc.tick,
            });
        }
        if cfg.config.quiesce_after_ticks == 0 {
            cfg.config.quiesce_after_ticks = hc.quiesce_after_ticks;
        }
        // Hold the write lock across the start so two creations of one
        // group cannot race.
        let mut groups = self.inner.groups.write().unwrap_or_else(|e| e.into_inner());
        if groups.contains_key(&cfg.group) {
            return Err(HostError::Exists(cfg.group));
        }
        if groups.len() >= MAX_GROUPS {
            return Err(HostError::Full);
        }
        let wake = Arc::new(Notify::new());
        // Nudged from the first tick until its first `Ready` says otherwise.
        let due = Arc::new(AtomicU64::new(0));
        cfg.clock = Some(GroupClock {
            ticks: self.inner.clock.clone(),
            due: due.clone(),
            wake: wake.clone(),
            liveness: self.inner.liveness.clone(),
        });
        let group = cfg.group;
        let outbox: Arc<dyn Outbox> = Arc::new(self.inner.transport.clone());
        let node = RaftNode::start(cfg, storage, sm, outbox)?;
        groups.insert(
            group,
            Group {
                node: node.clone(),
                due,
                wake,
            },
        );
        self.inner
            .counters
            .groups_created
            .fetch_add(1, Ordering::Relaxed);
        Ok(node)
    }

    /// Stops group `group` and forgets it; its messages are dropped from
    /// now on. Its storage is closed when this returns (the caller may
    /// delete it).
    pub async fn remove_group(&self, group: GroupId) -> Result<(), HostError> {
        let g = self
            .inner
            .groups
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&group)
            .ok_or(HostError::Unknown(group))?;
        g.node.shutdown().await;
        self.inner
            .counters
            .groups_removed
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The handle of group `group`, if hosted.
    pub fn group(&self, group: GroupId) -> Option<NodeHandle> {
        self.read_groups().get(&group).map(|g| g.node.clone())
    }

    /// Every hosted group's id, ascending.
    pub fn groups(&self) -> Vec<GroupId> {
        self.read_groups().keys().copied().collect()
    }

    /// Counters since start.
    pub fn metrics(&self) -> HostMetrics {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (groups, quiescent) = {
            let g = self.read_groups();
            let q = g.values().filter(|g| g.node.is_quiescent()).count();
            (g.len() as u64, q as u64)
        };
        HostMetrics {
            groups,
            quiescent,
            ticks: get(&c.ticks),
            group_ticks: get(&c.group_ticks),
            pings_sent: get(&c.pings_sent),
            pings_received: get(&c.pings_received),
            peers_dead: self.inner.liveness.dead().len() as u64,
            peers_declared_dead: get(&c.peers_declared_dead),
            dropped_unknown_group: get(&c.dropped_unknown_group),
            dropped_busy: get(&c.dropped_busy),
            groups_created: get(&c.groups_created),
            groups_removed: get(&c.groups_removed),
        }
    }

    /// Watches `peer` from now on (pings it, and declares it dead after
    /// `peer_timeout` of silence), as if it had been listed in
    /// [`HostConfig::peers`]: for a host that learns its peers while it
    /// runs (a BlockServer told of new groups by its Master). A peer
    /// watched already is left as it is.
    pub fn add_peer(&self, peer: NodeId) {
        if peer == self.inner.cfg.id {
            return;
        }
        let now = self.inner.clock.load(Ordering::Relaxed);
        let mut view = lock(&self.inner.liveness.view);
        if !view.peers().contains(&peer) {
            view.heard(peer, now);
        }
    }

    /// Peers this host currently believes dead.
    pub fn dead_peers(&self) -> Vec<NodeId> {
        self.inner.liveness.dead()
    }

    /// Stops every group, then the timer and the router (not the
    /// transport, which the caller started).
    pub async fn shutdown(&self) {
        let nodes: Vec<NodeHandle> =
            std::mem::take(&mut *self.inner.groups.write().unwrap_or_else(|e| e.into_inner()))
                .into_values()
                .map(|g| g.node)
                .collect();
        for n in nodes {
            n.shutdown().await;
        }
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
    }

    fn read_groups(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<GroupId, Group>> {
        self.inner.groups.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// The one timer: bumps the clock, nudges the groups for which this tick
/// is due, pings peers and judges their liveness.
async fn run_timer(inner: Arc<Inner>) {
    let mut ticker = tokio::time::interval(inner.cfg.tick);
    // A late timer delivers each missed tick (the groups catch up from the
    // counter anyway; bursting keeps the liveness clock honest too).
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    loop {
        ticker.tick().await;
        let now = inner.clock.fetch_add(1, Ordering::AcqRel) + 1;
        inner.counters.ticks.fetch_add(1, Ordering::Relaxed);
        let mut nudged = 0;
        {
            let groups = inner.groups.read().unwrap_or_else(|e| e.into_inner());
            for g in groups.values() {
                if g.due.load(Ordering::Acquire) <= now {
                    g.wake.notify_one();
                    nudged += 1;
                }
            }
        }
        inner
            .counters
            .group_ticks
            .fetch_add(nudged, Ordering::Relaxed);
        if now.is_multiple_of(inner.cfg.ping_every) {
            ping_peers(&inner);
        }
        judge_peers(&inner, now);
    }
}

fn ping_peers(inner: &Inner) {
    let me = inner.cfg.id;
    let peers = lock(&inner.liveness.view).peers();
    for to in peers {
        inner.transport.send(Envelope {
            group: HOST_GROUP,
            msg: Message {
                from: me,
                to,
                term: 0,
                body: MessageBody::Heartbeat {
                    commit: 0,
                    read_round: 0,
                    lease_tick: 0,
                    quiesce: false,
                },
            },
        });
        inner.counters.pings_sent.fetch_add(1, Ordering::Relaxed);
    }
}

/// Declares peers dead or alive again; on any change, publishes a new
/// liveness epoch and nudges every group, quiescent or not, so each takes
/// the new view the next time it runs (`GroupClock`). A nudge is a stored
/// permit: unlike a queued message, it cannot be dropped.
fn judge_peers(inner: &Inner, now: u64) {
    let changes = {
        let mut view = lock(&inner.liveness.view);
        let changes = view.judge(now, inner.cfg.peer_timeout);
        if !changes.is_empty() {
            inner.liveness.epoch.fetch_add(1, Ordering::AcqRel);
        }
        changes
    };
    if changes.is_empty() {
        return;
    }
    let dead = changes.iter().filter(|(_, alive)| !alive).count() as u64;
    inner
        .counters
        .peers_declared_dead
        .fetch_add(dead, Ordering::Relaxed);
    let groups = inner.groups.read().unwrap_or_else(|e| e.into_inner());
    for g in groups.values() {
        g.wake.notify_one();
    }
}

/// Routes inbound envelopes: pings to liveness, the rest to their group.
async fn run_router(inner: Arc<Inner>, mut inbound: Inbound) {
    while let Some(env) = inbound.recv().await {
        if env.group == HOST_GROUP {
            let now = inner.clock.load(Ordering::Acquire);
            let from = env.msg.from;
            if from == inner.cfg.id || from == 0 {
                continue;
            }
            // The transport authenticated the sender as a configured peer;
            // a peer added since this host started (a node that joined)
            // is watched from its first ping on, and pinged back.
            lock(&inner.liveness.view).heard(from, now);
            inner
                .counters
                .pings_received
                .fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let node = {
            let groups = inner.groups.read().unwrap_or_else(|e| e.into_inner());
            groups.get(&env.group).map(|g| g.node.clone())
        };
        match node {
            Some(n) => {
                if n.step(env).is_err() {
                    inner.counters.dropped_busy.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                inner
                    .counters
                    .dropped_unknown_group
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
