//! The simulator driven by a person instead of a fault schedule: the
//! visualizer's live mode (RaftScope-style).
//!
//! A [`LiveCluster`] is a simulated cluster of real cores with no random
//! faults and no random clients. Simulated time moves only when
//! [`LiveCluster::advance`] is called; in between, the user acts on a node
//! or on the cluster (stop, restart, pause, resume, time out, drop a
//! message, partition, heal, client request, transfer leadership, add or
//! remove a node, snapshot). Each action is recorded as the trace events
//! the simulator already writes (`crash`, `restart`, `pause`, `resume`,
//! `timeout`, `drop`, `partition`, `heal`, `client`, `transfer`, `config`,
//! `snapshot`, ...), so the trace of a session replays like any other.
//! Both the visualizer's live mode and `cdsctl top --sim` drive it.
//!
//! Everything random still comes from the seed, so the same seed and the
//! same sequence of (time, action) give the same trace, byte for byte. The
//! simulator's invariant checks run after every step as in a normal run:
//! a violation (a real Raft bug) stops the session and is returned by every
//! later call.
//!
//! Node ids are `1..=nodes` (the initial voters) plus [`SPARE_NODES`](super::cluster::SPARE_NODES) spares
//! `nodes+1..`, running from the start without a configuration, that
//! [`LiveCluster::add_node`] brings in through the same membership change
//! the simulator's `--reconfig` uses.

use std::collections::{BTreeSet, BinaryHeap};

use super::cluster::{Ev, Failure, Sim, SimConfig, TICK_MS};
use super::faults::FaultSet;
use super::workload::{Client, ClientOp, Pending};
use crate::core::{NodeId, RaftStatus, Role};
use crate::trace::schema::{Header, Kind};
use crate::trace::writer::TraceWriter;

/// The smallest cluster a session starts with.
pub const MIN_NODES: usize = 3;
/// The largest cluster a session starts with (spares not counted).
pub const MAX_NODES: usize = 7;
/// Keys client requests write to (`0..CLIENT_KEYS`).
const CLIENT_KEYS: u64 = 5;

/// A simulated cluster driven action by action. See the module docs.
pub struct LiveCluster {
    sim: Sim,
    seed: u64,
    /// Nodes cut off from every other node by [`LiveCluster::partition`].
    isolated: BTreeSet<NodeId>,
    failure: Option<Failure>,
}

impl std::fmt::Debug for LiveCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCluster")
            .field("seed", &self.seed)
            .field("now", &self.sim.now)
            .field("events", &self.events())
            .field("failure", &self.failure)
            .finish()
    }
}

impl LiveCluster {
    /// A cluster of `nodes` voters (`MIN_NODES..=MAX_NODES`) plus
    /// [`SPARE_NODES`](super::cluster::SPARE_NODES) spares, at time 0, every node started, PreVote and
    /// CheckQuorum on. Nothing happens until [`LiveCluster::advance`].
    pub fn new(nodes: usize, seed: u64) -> Result<LiveCluster, String> {
        LiveCluster::build(nodes, seed, |_| {})
    }

    /// [`LiveCluster::new`] with `bugs` injected into every node, to see
    /// the invariant checks catch them (test builds only).
    #[cfg(feature = "bug-injection")]
    pub fn with_bugs(
        nodes: usize,
        seed: u64,
        bugs: crate::core::BugSet,
    ) -> Result<LiveCluster, String> {
        LiveCluster::build(nodes, seed, |cfg| cfg.bugs = bugs)
    }

    fn build(
        nodes: usize,
        seed: u64,
        tweak: impl FnOnce(&mut SimConfig),
    ) -> Result<LiveCluster, String> {
        if !(MIN_NODES..=MAX_NODES).contains(&nodes) {
            return Err(format!(
                "a live cluster has {MIN_NODES} to {MAX_NODES} nodes, not {nodes}"
            ));
        }
        let mut cfg = SimConfig::new(nodes, seed, 0, FaultSet::default());
        cfg.trace = true;
        cfg.clients = 0;
        // Spare nodes, ready to be added.
        cfg.reconfig = true;
        tweak(&mut cfg);
        let ids: Vec<NodeId> = (1..=cfg.all_nodes() as u64).collect();
        let voters: Vec<NodeId> = (1..=nodes as u64).collect();
        let header = Header::new("sim", ids)
            .with_meta("live", true)
            .with_meta("seed", seed)
            .with_meta("pre_vote", cfg.pre_vote)
            .with_meta("check_quorum", cfg.check_quorum)
            .with_meta("voters", voters)
            .with_meta("tick", TICK_MS)
            .with_meta("election_tick", cfg.node_config(1).election_tick)
            .with_meta("time_unit", "ms");
        let mut sim = Sim::new(cfg);
        sim.trace = Some(TraceWriter::in_memory(&header));
        // Quiet: no random faults, crash points, transfers, membership
        // changes or new client operations; only the user acts.
        sim.quiet = true;
        for i in 0..sim.nodes.len() {
            sim.restart(i).map_err(|f| f.to_string())?;
        }
        Ok(LiveCluster {
            sim,
            seed,
            isolated: BTreeSet::new(),
            failure: None,
        })
    }

    /// The seed the session started from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Simulated milliseconds since the start.
    pub fn now(&self) -> u64 {
        self.sim.now
    }

    /// Every node id, spares included.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.sim.nodes.iter().map(|n| n.id).collect()
    }

    /// Whether node `id` is running (not stopped).
    pub fn is_running(&self, id: NodeId) -> bool {
        self.node_index(id).is_ok_and(|i| self.sim.nodes[i].is_up())
    }

    /// The running leader of the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader_index().map(|i| self.sim.nodes[i].id)
    }

    /// The voters of the leader's configuration (of the highest-term
    /// running node's without a leader).
    pub fn voters(&self) -> Vec<NodeId> {
        let i = self.leader_index().or_else(|| {
            (0..self.sim.nodes.len())
                .filter(|&i| self.sim.nodes[i].is_up())
                .max_by_key(|&i| self.sim.nodes[i].raft(0).map(|r| r.term()))
        });
        i.and_then(|i| self.sim.nodes[i].raft(0))
            .map(|r| r.membership().voters.clone())
            .unwrap_or_default()
    }

    /// Messages in flight: `(id, from, to, due)` by id, `due` the time it
    /// will be delivered (or dropped, if its link is cut by then).
    pub fn in_flight(&self) -> Vec<(u64, NodeId, NodeId, u64)> {
        let mut v: Vec<_> = self
            .sim
            .queue
            .iter()
            .filter_map(|s| match &s.ev {
                Ev::Deliver { id, msg, .. } => Some((*id, msg.from, msg.to, s.time)),
                _ => None,
            })
            .collect();
        v.sort_unstable();
        v.dedup_by_key(|m| m.0);
        v
    }

    /// What running node `id` looks like now; `None` when it is stopped or
    /// there is no such node.
    pub fn status(&self, id: NodeId) -> Option<RaftStatus> {
        let i = self.node_index(id).ok()?;
        self.sim.nodes[i].raft(0).map(|r| r.status())
    }

    /// The nodes whose links with node `id` are cut by
    /// [`LiveCluster::partition`] (both directions are cut together).
    pub fn cut_off(&self, id: NodeId) -> Vec<NodeId> {
        self.sim
            .blocked
            .iter()
            .filter(|&&(a, _)| a == id)
            .map(|&(_, b)| b)
            .collect()
    }

    /// Client requests sent and not yet answered (each client retries
    /// until its put is applied).
    pub fn pending_requests(&self) -> usize {
        self.sim
            .clients
            .iter()
            .filter(|c| c.pending.is_some())
            .count()
    }

    /// When each client request not answered yet was first sent
    /// (simulated ms), in client order: with the time now, how long each
    /// has waited so far.
    pub fn pending_since(&self) -> Vec<u64> {
        self.sim
            .clients
            .iter()
            .filter_map(|c| c.pending.as_ref().map(|p| p.invoke))
            .collect()
    }

    /// The latencies (simulated ms, from first send to the reply) of the
    /// client requests answered since the last call. The session keeps no
    /// client history after this, so a long session does not grow with
    /// its load.
    pub fn take_latencies(&mut self) -> Vec<u64> {
        let mut out = Vec::new();
        for c in &mut self.sim.clients {
            out.extend(
                c.history
                    .drain(..)
                    .filter_map(|op| Some(op.complete?.saturating_sub(op.invoke))),
            );
        }
        out
    }

    /// The trace written since the last call (the first call starts with
    /// the header line), whole lines. After a call, [`LiveCluster::trace_text`]
    /// holds only what was written since, so a long session can stream its
    /// trace to a file instead of holding it in memory.
    pub fn take_trace(&mut self) -> Vec<u8> {
        self.sim
            .trace
            .as_mut()
            .expect("a live cluster always traces")
            .take_written()
    }

    /// The invariant violation that stopped the session, if one did.
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// Trace events written so far (the header not counted).
    pub fn events(&self) -> u64 {
        self.writer().events()
    }

    /// The trace so far as bytes: the header line, then one line per event.
    pub fn trace_bytes(&self) -> &[u8] {
        self.writer().get_ref()
    }

    /// The complete trace so far (header and every event), valid rtrace.
    pub fn trace_text(&self) -> String {
        String::from_utf8_lossy(self.trace_bytes()).into_owned()
    }

    /// Runs simulated time forward by `ms` milliseconds: every event due
    /// until then (ticks, deliveries, client retries) happens.
    pub fn advance(&mut self, ms: u64) -> Result<(), String> {
        self.check_failed()?;
        let end = self.sim.now.saturating_add(ms);
        while self.sim.queue.peek().is_some_and(|s| s.time <= end) {
            let r = self.sim.next_event();
            self.record(r)?;
        }
        self.sim.now = end;
        Ok(())
    }

    /// Stops (crashes) node `id`: it loses everything not durable (its
    /// volatile state, its queued messages); its disk survives.
    pub fn stop(&mut self, id: NodeId) -> Result<(), String> {
        let i = self.running(id)?;
        self.begin();
        self.sim.crash(i);
        Ok(())
    }

    /// Restarts stopped node `id` from its disk (term, vote, log,
    /// snapshot), as a follower.
    pub fn restart(&mut self, id: NodeId) -> Result<(), String> {
        self.check_failed()?;
        let i = self.node_index(id)?;
        if self.sim.nodes[i].is_up() {
            return Err(format!("n{id} is already running"));
        }
        self.begin();
        let res = self.sim.restart(i);
        self.record(res)
    }

    /// Pauses running node `id` (a SIGSTOP): it keeps its state but does
    /// nothing, and messages to it wait, until [`LiveCluster::resume`].
    pub fn pause(&mut self, id: NodeId) -> Result<(), String> {
        let i = self.running(id)?;
        if self.sim.nodes[i].paused {
            return Err(format!("n{id} is already paused"));
        }
        self.begin();
        self.sim.pause(i);
        Ok(())
    }

    /// Resumes paused node `id`: the ticks it missed run first, then the
    /// messages that waited for it.
    pub fn resume(&mut self, id: NodeId) -> Result<(), String> {
        let i = self.running(id)?;
        if !self.sim.nodes[i].paused {
            return Err(format!("n{id} is not paused"));
        }
        self.begin();
        let res = self.sim.resume(i);
        self.record(res)
    }

    /// Whether node `id` is paused.
    pub fn is_paused(&self, id: NodeId) -> bool {
        self.node_index(id)
            .is_ok_and(|i| self.sim.nodes[i].is_up() && self.sim.nodes[i].paused)
    }

    /// Fires node `id`'s election timer now: it starts a pre-vote round
    /// (PreVote is on), and an election if that wins.
    pub fn timeout(&mut self, id: NodeId) -> Result<(), String> {
        let i = self.running(id)?;
        let r = self.sim.nodes[i].raft_mut(0).expect("running");
        if r.role() == Role::Leader {
            return Err(format!("n{id} is the leader: it has no election timer"));
        }
        if !r.election_timeout_now() {
            return Err(format!(
                "n{id} may not campaign: it is not a voter in its configuration"
            ));
        }
        self.begin();
        let res = self.sim.handle_ready(i, 0);
        self.record(res)
    }

    /// Loses message `msg_id` in flight (recorded as a `drop`, reason
    /// `user`).
    pub fn drop_message(&mut self, msg_id: u64) -> Result<(), String> {
        self.check_failed()?;
        let Some((_, from, to, _)) = self.in_flight().into_iter().find(|m| m.0 == msg_id) else {
            return Err(format!("message {msg_id} is not in flight"));
        };
        self.begin();
        let queue = std::mem::take(&mut self.sim.queue).into_vec();
        self.sim.queue = queue
            .into_iter()
            .filter(|s| !matches!(&s.ev, Ev::Deliver { id, .. } if *id == msg_id))
            .collect::<BinaryHeap<_>>();
        // A live cluster runs one group.
        self.sim.drop_msg(0, from, msg_id, to, "user");
        Ok(())
    }

    /// Cuts node `id` off from every other node (both directions) until
    /// [`LiveCluster::heal`]; nodes already cut off stay so.
    pub fn partition(&mut self, id: NodeId) -> Result<(), String> {
        self.check_failed()?;
        self.node_index(id)?;
        if self.isolated.contains(&id) {
            return Err(format!("n{id} is already partitioned away"));
        }
        self.begin();
        self.isolated.insert(id);
        let ids = self.node_ids();
        let mut blocked = BTreeSet::new();
        for &a in &self.isolated {
            for &b in ids.iter().filter(|&&b| b != a) {
                blocked.insert((a, b));
                blocked.insert((b, a));
            }
        }
        self.sim.blocked = blocked;
        self.sim.partition_epoch += 1;
        self.sim.stats.partitions += 1;
        let pairs: Vec<(NodeId, NodeId)> = self.sim.blocked.iter().copied().collect();
        self.sim.emit(0, Kind::Partition { blocked: pairs });
        Ok(())
    }

    /// Restores every link.
    pub fn heal(&mut self) -> Result<(), String> {
        self.check_failed()?;
        if self.sim.blocked.is_empty() {
            return Err("nothing to heal: no node is partitioned".into());
        }
        self.begin();
        self.isolated.clear();
        self.sim.blocked.clear();
        self.sim.partition_epoch += 1;
        self.sim.emit(0, Kind::Heal);
        Ok(())
    }

    /// A client sends a put (of a new value to one of a few keys) to node
    /// `to`, or to the current leader when `None`. Like the simulator's
    /// clients, it follows `not_leader` hints and retries on timeouts until
    /// the put is committed and applied. Returns the client's id.
    pub fn client_request(&mut self, to: Option<NodeId>) -> Result<u64, String> {
        self.check_failed()?;
        let target = match to {
            Some(id) => {
                self.node_index(id)?;
                id
            }
            None => self
                .leader()
                .ok_or("no leader to send the request to (pick a node)")?,
        };
        self.begin();
        let c = match self.sim.clients.iter().position(|c| c.pending.is_none()) {
            Some(c) => c,
            None => {
                let id = self.sim.clients.len() as u64 + 1;
                self.sim.clients.push(Client::new(id, target));
                self.sim.clients.len() - 1
            }
        };
        let key = self.sim.rand(CLIENT_KEYS);
        let value = self.sim.next_value;
        self.sim.next_value += 1;
        let now = self.sim.now;
        let client = &mut self.sim.clients[c];
        client.target = target;
        let seq = client.next_seq;
        client.next_seq += 1;
        client.pending = Some(Pending {
            seq,
            op: ClientOp::Put { key, value },
            invoke: now,
            attempt: 0,
        });
        self.sim.client_send(c);
        Ok(self.sim.clients[c].id)
    }

    /// Asks the leader to add a node as a voter: the lowest id not in its
    /// configuration (a spare, or a node removed earlier). The core adds it
    /// as a learner first and promotes it once caught up (or gives up, if
    /// it does not catch up in time). Returns the node's id.
    pub fn add_node(&mut self) -> Result<NodeId, String> {
        self.check_failed()?;
        let l = self
            .leader_index()
            .ok_or("no leader to change the configuration")?;
        let m = self.sim.nodes[l]
            .raft(0)
            .expect("leader runs")
            .membership()
            .clone();
        let Some(x) = self
            .node_ids()
            .into_iter()
            .find(|&x| !m.voters.contains(&x) && !m.outgoing.contains(&x))
        else {
            return Err(format!(
                "every node is a voter already (at most {} nodes)",
                self.sim.nodes.len()
            ));
        };
        let mut voters = m.voters.clone();
        voters.push(x);
        self.change_voters(l, voters)?;
        Ok(x)
    }

    /// Asks the leader to remove voter `id` (the leader itself too: it
    /// steps down once the change commits).
    pub fn remove_node(&mut self, id: NodeId) -> Result<(), String> {
        self.check_failed()?;
        self.node_index(id)?;
        let l = self
            .leader_index()
            .ok_or("no leader to change the configuration")?;
        let m = self.sim.nodes[l]
            .raft(0)
            .expect("leader runs")
            .membership()
            .clone();
        if !m.voters.contains(&id) {
            return Err(format!("n{id} is not a voter"));
        }
        let voters: Vec<NodeId> = m.voters.iter().copied().filter(|&v| v != id).collect();
        self.change_voters(l, voters)
    }

    /// Asks the leader to hand leadership to voter `id` (it sends
    /// `TimeoutNow` once `id` has caught up).
    pub fn transfer_leader(&mut self, id: NodeId) -> Result<(), String> {
        self.check_failed()?;
        self.node_index(id)?;
        let l = self.leader_index().ok_or("no leader to transfer from")?;
        let r = self.sim.nodes[l].raft_mut(0).expect("leader runs");
        let leader = r.id();
        r.transfer_leader(id)
            .map_err(|e| format!("leader n{leader} refused the transfer: {e}"))?;
        self.begin();
        let res = self.sim.handle_ready(l, 0);
        self.record(res)
    }

    /// Node `id` snapshots its state machine at its applied index and
    /// compacts its log behind it (keeping a few entries), as the
    /// simulator's `--compact` does. Followers too far behind then get the
    /// snapshot from the leader. Returns the snapshot's index.
    pub fn snapshot(&mut self, id: NodeId) -> Result<u64, String> {
        let i = self.running(id)?;
        let r = self.sim.nodes[i].raft(0).expect("running");
        let index = r.applied_index();
        if index == 0 {
            return Err(format!("n{id} has applied nothing to snapshot"));
        }
        let have = crate::storage::Storage::snapshot_meta(r.storage()).map_or(0, |m| m.index);
        if have >= index {
            return Err(format!("n{id} has a snapshot at {have} already"));
        }
        self.begin();
        let files = self.sim.nodes[i].groups[0].kv.to_files();
        let taken = self.sim.stats.snapshots_taken;
        let res = self.sim.take_snapshot(i, 0, index, files);
        self.record(res)?;
        if self.sim.stats.snapshots_taken == taken {
            return Err(format!("n{id} cannot snapshot at {index}"));
        }
        // Compaction is when history becomes unreachable: let the checker
        // forget it, so a long session's memory follows its logs.
        self.sim.forget_settled_history(0);
        Ok(index)
    }

    // ----- helpers -------------------------------------------------------

    fn writer(&self) -> &TraceWriter<Vec<u8>> {
        self.sim
            .trace
            .as_ref()
            .expect("a live cluster always traces")
    }

    /// A user action counts as a step (so a failure names when it was
    /// found, and a restart at the very start is still traced as one).
    fn begin(&mut self) {
        self.sim.step += 1;
    }

    fn check_failed(&self) -> Result<(), String> {
        match &self.failure {
            Some(f) => Err(format!("the session stopped: {f}")),
            None => Ok(()),
        }
    }

    fn record(&mut self, r: Result<(), Failure>) -> Result<(), String> {
        r.map_err(|f| {
            let msg = f.to_string();
            self.failure = Some(f);
            msg
        })
    }

    fn node_index(&self, id: NodeId) -> Result<usize, String> {
        let n = self.sim.nodes.len() as u64;
        if id == 0 || id > n {
            return Err(format!("no node n{id} (nodes are n1..n{n})"));
        }
        Ok(id as usize - 1)
    }

    fn running(&self, id: NodeId) -> Result<usize, String> {
        self.check_failed()?;
        let i = self.node_index(id)?;
        if !self.sim.nodes[i].is_up() {
            return Err(format!("n{id} is stopped"));
        }
        Ok(i)
    }

    fn leader_index(&self) -> Option<usize> {
        (0..self.sim.nodes.len())
            .filter(|&i| {
                self.sim.nodes[i]
                    .raft(0)
                    .is_some_and(|r| r.role() == Role::Leader)
            })
            .max_by_key(|&i| self.sim.nodes[i].raft(0).map(|r| r.term()))
    }

    fn change_voters(&mut self, l: usize, voters: Vec<NodeId>) -> Result<(), String> {
        let r = self.sim.nodes[l].raft_mut(0).expect("leader runs");
        let leader = r.id();
        r.change_peers(voters)
            .map_err(|e| format!("leader n{leader} refused the change: {e}"))?;
        self.begin();
        let res = self.sim.handle_ready(l, 0);
        self.record(res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::check_str;

    fn until_leader(c: &mut LiveCluster) -> NodeId {
        for _ in 0..300 {
            if let Some(l) = c.leader() {
                return l;
            }
            c.advance(10).unwrap();
        }
        panic!("no leader within 3 s");
    }

    fn script(seed: u64) -> String {
        let mut c = LiveCluster::new(3, seed).unwrap();
        let l = until_leader(&mut c);
        c.client_request(None).unwrap();
        c.advance(100).unwrap();
        c.stop(l).unwrap();
        c.partition(l % 3 + 1).unwrap();
        c.advance(700).unwrap();
        c.heal().unwrap();
        c.restart(l).unwrap();
        c.advance(700).unwrap();
        c.trace_text()
    }

    #[test]
    fn a_session_is_deterministic_and_its_trace_valid() {
        let a = script(3);
        assert_eq!(a, script(3));
        let summary = check_str(&a).unwrap();
        assert_eq!(summary.header.meta["live"], true);
        assert_eq!(summary.header.meta["seed"], 3);
        for ev in ["crash", "restart", "partition", "heal", "client", "timeout"] {
            assert!(
                summary.kinds.contains_key(ev),
                "no {ev}: {:?}",
                summary.kinds
            );
        }
    }

    #[test]
    fn invalid_actions_are_errors_not_panics() {
        let mut c = LiveCluster::new(3, 1).unwrap();
        assert!(c.stop(0).is_err());
        assert!(c.stop(99).is_err());
        assert!(c.restart(1).is_err());
        assert!(c.remove_node(1).is_err()); // no leader yet
        c.stop(1).unwrap();
        assert!(c.stop(1).unwrap_err().contains("stopped"));
        assert!(c.snapshot(1).is_err());
        assert!(c.timeout(1).is_err());
        c.restart(1).unwrap();
        assert!(c.drop_message(0).is_err());
        assert!(c.heal().is_err());
        assert!(c.advance(0).is_ok());
    }

    #[test]
    fn status_transfer_load_and_a_streamed_trace() {
        let mut c = LiveCluster::new(3, 5).unwrap();
        let mut streamed = c.take_trace();
        let l = until_leader(&mut c);
        let st = c.status(l).unwrap();
        assert_eq!(st.role, Role::Leader);
        assert_eq!(st.leader, Some(l));
        assert_eq!(st.membership.voters, [1, 2, 3]);
        assert_eq!(st.peer_match.len(), 3, "{st:?}");
        assert!(c.status(4).is_some_and(|s| s.membership.voters.is_empty()));
        assert!(c.status(9).is_none());

        for _ in 0..4 {
            c.client_request(None).unwrap();
        }
        assert_eq!(c.pending_requests(), 4);
        c.advance(200).unwrap();
        assert_eq!(c.pending_requests(), 0);
        let lat = c.take_latencies();
        assert_eq!(lat.len(), 4, "{lat:?}");
        assert!(lat.iter().all(|&ms| ms > 0 && ms < 200), "{lat:?}");
        assert!(c.take_latencies().is_empty(), "drained");
        let commit = c.status(l).unwrap().commit;
        assert!(commit >= 5, "4 puts and the leader's no-op: {commit}");

        let to = l % 3 + 1;
        assert!(c.transfer_leader(l).unwrap_err().contains("refused"));
        assert!(c.cut_off(l).is_empty());
        c.partition(l).unwrap();
        let others: Vec<NodeId> = c.node_ids().into_iter().filter(|&p| p != l).collect();
        assert_eq!(c.cut_off(l), others);
        assert_eq!(c.cut_off(to), [l]);
        c.heal().unwrap();
        c.advance(300).unwrap();
        let l = until_leader(&mut c);
        let to = l % 3 + 1;
        c.transfer_leader(to).unwrap();
        c.advance(300).unwrap();
        assert_eq!(c.leader(), Some(to));
        assert!(c.transfer_leader(9).is_err());

        assert!(c.resume(l).unwrap_err().contains("not paused"));
        c.pause(to).unwrap();
        assert!(c.is_paused(to) && c.pause(to).is_err());
        c.advance(1000).unwrap();
        assert_ne!(c.leader(), Some(to), "a paused leader is replaced");
        c.resume(to).unwrap();
        assert!(!c.is_paused(to));
        c.advance(300).unwrap();
        assert!(c.status(to).is_some_and(|s| s.role != Role::Leader));

        c.stop(l).unwrap();
        assert!(c.status(l).is_none(), "stopped");
        streamed.extend(c.take_trace());
        let text = String::from_utf8(streamed).unwrap();
        let summary = check_str(&text).unwrap();
        assert_eq!(summary.events as u64, c.events());
        for ev in ["transfer", "pause", "resume"] {
            assert!(summary.kinds.contains_key(ev), "{ev}: {:?}", summary.kinds);
        }
    }

    /// Once every node has snapshotted, the invariant checker forgets the
    /// history behind the snapshots; a stopped node's old disk holds the
    /// floor down until it restarts and catches up.
    #[test]
    fn snapshots_let_the_checker_forget_settled_history() {
        let mut c = LiveCluster::new(3, 8).unwrap();
        let l = until_leader(&mut c);
        let (f1, f2) = (l % 3 + 1, (l + 1) % 3 + 1);
        let put = |c: &mut LiveCluster, n: usize| {
            for _ in 0..n {
                c.client_request(None).unwrap();
                c.advance(5).unwrap();
            }
            c.advance(100).unwrap();
        };
        put(&mut c, 300);
        let before = c.sim.invariants(0).remembered();
        assert!(
            before.0 > 300 && before.1 > 300 && before.2 > 300,
            "{before:?}"
        );
        c.stop(f2).unwrap();
        put(&mut c, 100);
        c.snapshot(l).unwrap();
        c.snapshot(f1).unwrap();
        let held = c.sim.invariants(0).remembered();
        assert!(held.0 > 400, "n{f2}'s disk still holds the log: {held:?}");
        c.restart(f2).unwrap();
        put(&mut c, 10);
        c.snapshot(f2).unwrap();
        let after = c.sim.invariants(0).remembered();
        assert!(
            after.0 < 50 && after.1 < 50 && after.2 < 50,
            "{before:?} -> {after:?}"
        );
        // The session goes on, checked as before.
        put(&mut c, 50);
        assert!(c.failure().is_none());
    }

    /// Sessions that keep snapshotting (and so forgetting) while nodes
    /// crash, restart, pause and get cut off raise no false alarm.
    #[test]
    fn forgetting_history_raises_no_false_alarm() {
        for seed in 0..12u64 {
            let n = 3 + (seed % 3) * 2;
            let mut c = LiveCluster::new(n as usize, seed).unwrap();
            for round in 0..120u64 {
                // A deterministic mix of faults, chosen from the round.
                let node = (seed + round) % n + 1;
                let fault = if round % 3 == 0 {
                    (seed * 7 + round / 3) % 11
                } else {
                    8
                };
                let _ = match fault {
                    0 => c.stop(node),
                    1 | 2 => c.restart(node),
                    3 => c.partition(node),
                    4 => c.heal(),
                    5 => c.pause(node),
                    6 => c.resume(node),
                    7 => c.snapshot(node).map(|_| ()),
                    _ => c.client_request(None).map(|_| ()),
                };
                if round % 10 == 9 {
                    for id in 1..=n {
                        let _ = c.resume(id);
                        let _ = c.snapshot(id);
                    }
                }
                for _ in 0..4 {
                    let _ = c.client_request(None);
                }
                if let Err(e) = c.advance(40) {
                    panic!("seed {seed}, round {round}: {e}");
                }
            }
            // Everyone back and snapshotted: little is left to remember.
            let _ = c.heal();
            for id in 1..=n {
                let _ = c.restart(id);
                let _ = c.resume(id);
            }
            c.advance(1_000).unwrap();
            for id in 1..=n {
                let _ = c.snapshot(id);
            }
            let kept = c.sim.invariants(0).remembered();
            let committed = c.sim.invariants(0).committed_index();
            assert!(committed > 300, "seed {seed}: {committed} committed");
            assert!(
                kept.2 < committed as usize / 2,
                "seed {seed}: {kept:?} of {committed}"
            );
        }
    }

    /// A voter that grants votes to stale logs (an injected bug) lets a
    /// node missing committed entries lead: the session stops with the
    /// violated property, and stays stopped.
    #[cfg(feature = "bug-injection")]
    #[test]
    fn an_invariant_violation_stops_the_session() {
        use crate::core::{Bug, BugSet};
        let mut caught = 0;
        for seed in 0..20 {
            let mut c =
                LiveCluster::with_bugs(3, seed, BugSet::only(Bug::VoteForStaleLog)).unwrap();
            let l = until_leader(&mut c);
            let f = l % 3 + 1;
            // Some history, snapshotted everywhere and so forgotten by the
            // checker first: what it forgot must not blind it to the bug.
            for _ in 0..20 {
                c.client_request(None).unwrap();
                c.advance(10).unwrap();
            }
            c.advance(100).unwrap();
            for id in 1..=3 {
                c.snapshot(id).unwrap();
            }
            assert!(c.sim.invariants(0).remembered().2 < 10);
            c.partition(f).unwrap();
            for _ in 0..3 {
                c.client_request(None).unwrap();
                c.advance(50).unwrap();
            }
            c.stop(l).unwrap();
            c.heal().unwrap();
            let mut result = Ok(());
            for _ in 0..40 {
                result = c.advance(5).and_then(|_| match c.timeout(f) {
                    Err(e) if e.contains("violated") => Err(e),
                    _ => Ok(()),
                });
                if result.is_err() || c.leader().is_some() {
                    break;
                }
            }
            if let Err(e) = result {
                assert!(e.contains("Leader Completeness violated"), "{e}");
                assert!(c.failure().is_some());
                assert!(c.advance(10).unwrap_err().contains("the session stopped"));
                assert!(c.stop(l % 3 + 2).is_err());
                caught += 1;
            }
        }
        eprintln!("caught in {caught} of 20 sessions");
        assert!(caught > 0, "the injected bug was never caught");
    }
}
