//! Node-level liveness in the simulator: what a multi-group host runs so
//! that quiescent groups (`core/quiesce.rs`) notice a dead leader.
//! One view per node, whatever the number of groups it hosts: a change
//! is reported to every group's core.
//!
//! With `--quiesce`, every running node pings every other node every
//! [`PING_EVERY_TICKS`] of its own ticks, through the simulated network:
//! pings are lost to partitions, drops, crashed and paused nodes like any
//! message, and delayed or reordered by the same weather. A node that has
//! not heard a ping from a peer for [`PEER_TIMEOUT_MS`] (two election
//! timeouts) declares the peer's node dead, and alive again at the next
//! ping; each change goes to the core through `Raft::set_peer_alive`.
//! This is failure detection, not an oracle: a partition makes a live
//! node look dead, a pause makes its peers look dead to it.

use super::{Ev, Sim};
use crate::core::NodeId;
use crate::sim::faults::FaultKind;

/// A node pings its peers every this many of its ticks.
pub const PING_EVERY_TICKS: u64 = 2;
/// Silence after which a peer's node is declared dead: two (minimum)
/// election timeouts, so a slow leader is not declared dead before its
/// followers would have timed out without quiescence.
pub const PEER_TIMEOUT_MS: u64 = 2 * 10 * super::TICK_MS;

/// One node's view of its peers' nodes.
#[derive(Debug, Default)]
pub(crate) struct PeerLiveness {
    /// Peer -> simulated time its last ping arrived (or this node
    /// started), and the peers declared dead (and told to the cores): the
    /// runtime host's rule, shared.
    view: crate::core::PeerLiveness,
    /// Ticks since start, for the ping period.
    ticks: u64,
}

impl Sim {
    /// Node `i` (re)started: every peer gets a full timeout's grace.
    pub(crate) fn liveness_start(&mut self, i: usize) {
        if !self.cfg.quiesce {
            return;
        }
        let now = self.now;
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let me = self.nodes[i].id;
        let l = &mut self.nodes[i].liveness;
        *l = PeerLiveness::default();
        for id in ids.into_iter().filter(|&p| p != me) {
            l.view.heard(id, now);
        }
    }

    /// One tick of running node `i`: pings out, peers judged, changes
    /// reported to the core. The caller runs the node's `Ready` after.
    pub(crate) fn liveness_tick(&mut self, i: usize) {
        if !self.cfg.quiesce {
            return;
        }
        let me = self.nodes[i].id;
        self.nodes[i].liveness.ticks += 1;
        if self.nodes[i]
            .liveness
            .ticks
            .is_multiple_of(PING_EVERY_TICKS)
        {
            let peers = self.nodes[i].liveness.view.peers();
            for to in peers {
                self.send_ping(me, to);
            }
        }
        let now = self.now;
        let changes = self.nodes[i].liveness.view.judge(now, PEER_TIMEOUT_MS);
        for (p, alive) in changes {
            if !alive {
                self.stats.peers_declared_dead += 1;
            }
            // One view of the peer's node, told to every group's core.
            for g in 0..self.groups() {
                if let Some(r) = self.nodes[i].raft_mut(g) {
                    r.set_peer_alive(p, alive);
                }
            }
        }
    }

    fn send_ping(&mut self, from: NodeId, to: NodeId) {
        self.stats.liveness_pings += 1;
        if self.blocked.contains(&(from, to)) {
            return;
        }
        let w = |k| self.weather.active.contains_key(&k);
        let (drop, delay, reorder) = (
            w(FaultKind::Drop),
            w(FaultKind::Delay),
            w(FaultKind::Reorder),
        );
        if drop && self.chance(15) {
            return;
        }
        let mut latency = 1 + self.rand(3);
        if reorder {
            latency = 1 + self.rand(40);
        }
        if delay && self.chance(25) {
            latency += 20 + self.rand(180);
        }
        self.schedule(latency, Ev::Ping { from, to });
    }

    /// A ping arrives: heard only by a running, unpaused node, across no
    /// partition.
    pub(crate) fn on_ping(&mut self, from: NodeId, to: NodeId) {
        let i = to as usize - 1;
        let n = &self.nodes[i];
        if !n.is_up() || n.paused || self.blocked.contains(&(from, to)) {
            return;
        }
        let now = self.now;
        self.nodes[i].liveness.view.heard(from, now);
    }
}
