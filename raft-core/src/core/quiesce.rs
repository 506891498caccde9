//! Quiescent groups: an idle group stops ticking-driven work.
//!
//! A process holding hundreds of groups cannot afford a heartbeat per group
//! per tick when most of them are idle. Once a leader's group has been idle
//! for [`Config::quiesce_after_ticks`](super::Config) ticks (every member
//! holds the whole log, all of it committed and applied, and no client,
//! transfer, membership or snapshot work waits) the leader sends one last
//! heartbeat carrying `quiesce` and stops heartbeating and checking its
//! quorum. A follower that gets it from its leader, in its term, with its
//! log ending exactly at the leader's last index, stops its election timer
//! and does not answer; a follower whose log differs answers as for any
//! heartbeat, and that answer wakes the leader.
//!
//! Anything that needs Raft wakes the node: any message (other than the
//! quiesce heartbeat itself, on a follower), a proposal, a read, a transfer,
//! a membership change, a forced election. A woken leader heartbeats at
//! once, which wakes its followers. A follower cannot hear that its leader
//! died, since a quiescent leader sends nothing: its host runs node-level
//! liveness (one heartbeat per peer *process*, for all groups) and reports
//! it with [`Raft::set_peer_alive`]. A quiescent follower whose leader's
//! node is reported dead wakes with a fresh election timer, so it campaigns
//! after a normal randomized election timeout.
//!
//! Why this is safe: quiescence only stops actions driven by the clock
//! (heartbeats, elections, check-quorum). It never changes a term, a vote,
//! a log or the commit rule, so Election Safety, Log Matching, Leader
//! Completeness and State Machine Safety rest on the same code as before. A
//! quiescent follower refuses (pre-)votes as one that just heard from its
//! leader does (`in_lease`), and after waking it refuses them for another
//! election timeout: it is never more willing to vote than a follower of a
//! non-quiescent group, so a leader's lease is never shortened. A quiescent
//! leader serves no lease read (its lease is not being renewed); a read
//! wakes it and goes through a ReadIndex round or a renewed lease.
//!
//! Why it stays live: a quiescent follower wakes on any message and when
//! its host's liveness declares its leader's node dead, which a host must
//! do within a bounded time after the node stops (its timeout at least an
//! election timeout, so a merely slow leader is not deposed more often than
//! without quiescence). A leader that comes back to a group that moved on
//! is deposed by the first answer carrying a higher term, as usual.

use std::collections::{BTreeMap, BTreeSet};

use super::event::Event;
use super::message::{MessageBody, NodeId};
use super::raft::{Raft, Role};
use crate::storage::Storage;

/// A node's quiescence: whether its group sleeps, and what its host's
/// node-level liveness reported.
#[derive(Debug, Default)]
pub(crate) struct Quiescence {
    /// The group is quiescent on this node: no heartbeats (leader), no
    /// election timer (follower).
    pub(crate) quiescent: bool,
    /// Leader: consecutive ticks the group has been idle.
    idle_ticks: u32,
    /// Leader: the tick its quiesce heartbeats carry. Answers to them come
    /// only from followers that refused to quiesce, and wake it; answers
    /// to earlier heartbeats (still in flight when it quiesced) do not.
    quiesced_at: u64,
    /// Peers whose node the host reported dead (at most `MAX_MEMBERS`
    /// that matter; entries for others are harmless and bounded by the
    /// host's own peer list).
    dead: BTreeSet<NodeId>,
}

/// Why a quiescent node woke, for traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WakeReason {
    /// A message arrived (other than the quiesce heartbeat).
    Message,
    /// Client work: a proposal, a read, a transfer, a membership change
    /// or a forced election.
    Work,
    /// The host's node liveness reported the leader's node dead.
    LeaderDead,
    /// The host's node liveness reported a peer's node alive again.
    PeerAlive,
}

impl WakeReason {
    /// A short, stable name for traces.
    pub fn name(self) -> &'static str {
        match self {
            WakeReason::Message => "message",
            WakeReason::Work => "work",
            WakeReason::LeaderDead => "leader_dead",
            WakeReason::PeerAlive => "peer_alive",
        }
    }
}

impl<S: Storage> Raft<S> {
    /// Whether this node's group is quiescent here (see the module docs).
    pub fn is_quiescent(&self) -> bool {
        self.quiesce.quiescent
    }

    /// Node-level liveness from the host: whether `peer`'s node is alive.
    /// A quiescent follower whose leader's node is reported dead wakes and
    /// campaigns after a randomized election timeout; a quiescent leader
    /// wakes when a peer's node comes back, so the peer hears from it
    /// without first timing out. Peers start alive.
    pub fn set_peer_alive(&mut self, peer: NodeId, alive: bool) {
        let was_dead = if alive {
            self.quiesce.dead.remove(&peer)
        } else {
            self.quiesce.dead.insert(peer);
            false
        };
        if !self.quiesce.quiescent {
            return;
        }
        if !alive
            && self.role != Role::Leader
            && self.leader == Some(peer)
            && !self.cfg.bug(super::bugs::Bug::QuiescentIgnoresDeadLeader)
        {
            self.wake(WakeReason::LeaderDead);
        } else if alive && was_dead && self.role == Role::Leader {
            self.wake(WakeReason::PeerAlive);
        }
    }

    /// Whether the host reported `peer`'s node dead.
    pub fn peer_dead(&self, peer: NodeId) -> bool {
        self.quiesce.dead.contains(&peer)
    }

    /// Called by every entry point that needs Raft (client work): the
    /// group is not idle.
    pub(crate) fn note_work(&mut self) {
        self.quiesce.idle_ticks = 0;
        if self.quiesce.quiescent {
            self.wake(WakeReason::Work);
        }
    }

    /// Called for each message before it is handled: anything but the
    /// quiesce heartbeat (on a follower), a late answer to an earlier
    /// heartbeat (on a leader), or a message from a node outside the
    /// configuration wakes the node. A stranger (a removed voter that never
    /// learned it) would otherwise keep waking the group with its
    /// pre-votes, which Raft ignores anyway (`refuses_term`).
    pub(crate) fn wake_for(&mut self, from: NodeId, body: &MessageBody) {
        if !self.quiesce.quiescent || !self.knows(from) {
            return;
        }
        let stays = match body {
            MessageBody::Heartbeat { quiesce: true, .. } => self.role != Role::Leader,
            MessageBody::HeartbeatResponse {
                read_round: 0,
                lease_tick,
            } => self.role == Role::Leader && *lease_tick != self.quiesce.quiesced_at,
            _ => false,
        };
        if !stays {
            self.wake(WakeReason::Message);
        }
    }

    /// Leaves quiescence. A follower restarts its election timer from
    /// zero (so it refuses votes for another election timeout, as after
    /// hearing from its leader); a leader gives every peer one election
    /// timeout of grace before check-quorum and heartbeats at once, which
    /// wakes its followers.
    pub(crate) fn wake(&mut self, reason: WakeReason) {
        self.quiesce.quiescent = false;
        self.quiesce.idle_ticks = 0;
        self.election_elapsed = 0;
        self.events.push(Event::Woke { reason });
        if self.role == Role::Leader {
            self.heartbeat_elapsed = 0;
            for pr in self.progress.values_mut() {
                pr.recent_active = true;
            }
            self.bcast_heartbeat();
        } else {
            self.reset_randomized_timeout();
        }
    }

    /// Leader, once per tick while awake, before its heartbeat: counts
    /// idle ticks and quiesces the group after `quiesce_after_ticks` of
    /// them. Returns whether it did (the quiesce heartbeats replace this
    /// tick's heartbeat, so no other heartbeat carries this tick).
    pub(crate) fn tick_quiesce(&mut self) -> bool {
        if self.cfg.quiesce_after_ticks == 0 || self.quiesce.quiescent {
            return false;
        }
        if !self.group_idle() {
            self.quiesce.idle_ticks = 0;
            return false;
        }
        self.quiesce.idle_ticks += 1;
        if self.quiesce.idle_ticks < self.cfg.quiesce_after_ticks {
            return false;
        }
        self.quiesce.quiescent = true;
        self.quiesce.quiesced_at = self.ticks;
        self.events.push(Event::Quiesced);
        let commit = self.log.committed;
        for peer in self.peers() {
            self.send(
                peer,
                self.term,
                MessageBody::Heartbeat {
                    commit,
                    read_round: 0,
                    lease_tick: self.ticks,
                    quiesce: true,
                },
            );
        }
        true
    }

    /// Leader, awake: the ticks until the one that would quiesce the
    /// group, if it stays idle; `None` when quiescence is off or the group
    /// is busy (it becomes idle only through some input, after which the
    /// driver asks again).
    pub(crate) fn ticks_until_quiesce(&self) -> Option<u64> {
        if self.cfg.quiesce_after_ticks == 0 || self.quiesce.quiescent || !self.group_idle() {
            return None;
        }
        let left = self
            .cfg
            .quiesce_after_ticks
            .saturating_sub(self.quiesce.idle_ticks);
        Some(u64::from(left).max(1))
    }

    /// Whether this leader's group has nothing to do: every member (and
    /// every member being removed) holds the whole log, which is committed
    /// and applied, and no read, transfer, change or snapshot work waits.
    fn group_idle(&self) -> bool {
        let last = self.log.last_index();
        self.role == Role::Leader
            && self.log.committed == last
            && self.log.applied == last
            && self.log.term(last) == Some(self.term)
            && self.progress.values().all(|p| p.matched == last)
            && self.transfer.is_none()
            && self.change.is_none()
            && !self.membership.is_joint()
            && self.pending_conf_state.is_none()
            && self.reads.is_empty()
            && self.snap.idle()
    }

    /// Follower: a quiesce heartbeat from the leader of this term arrived
    /// (and was handled as a heartbeat). Returns whether the node went
    /// quiescent, in which case it sends no answer.
    pub(crate) fn accept_quiesce(&mut self, commit: u64) -> bool {
        let last = self.log.last_index();
        let matches = last == commit
            && self.log.committed == last
            && self.log.term(last) == Some(self.term)
            && self.snap.idle();
        if matches {
            self.quiesce.quiescent = true;
            self.election_elapsed = 0;
            self.events.push(Event::Quiesced);
        }
        matches
    }

    /// An awake member that cannot campaign (a learner) whose election
    /// timer ran out: if quiescence is on and it knows a leader, it
    /// re-acknowledges its log to it. A voter in that state campaigns,
    /// and its (pre-)vote request wakes a sleeping leader; a learner has
    /// no such request, so a learner that missed the quiesce heartbeat
    /// would otherwise stay awake forever beside a sleeping group. The
    /// acknowledgement wakes the leader, which heartbeats and, once idle
    /// again, quiesces the whole group, the learner included. Harmless to
    /// an awake leader: it acknowledges entries the leader already knows
    /// it holds.
    pub(crate) fn nudge_quiescent_leader(&mut self) {
        // Once per election timeout past the first. The timer itself keeps
        // running: resetting it would make this node look as if it had
        // heard from its leader (`in_lease`) and refuse votes it would
        // otherwise grant.
        let past = self.election_elapsed - self.randomized_timeout;
        if self.cfg.quiesce_after_ticks == 0
            || self.role != Role::Follower
            || !past.is_multiple_of(self.cfg.election_tick)
        {
            return;
        }
        let Some(leader) = self.leader else { return };
        let index = self.log.last_index();
        self.send(
            leader,
            self.term,
            MessageBody::AppendResponse {
                success: true,
                index,
                hint_index: 0,
                hint_term: 0,
                lease_tick: 0,
            },
        );
    }

    /// Forgets quiescence (a role change: a new term, an election).
    pub(crate) fn reset_quiescence(&mut self) {
        self.quiesce.quiescent = false;
        self.quiesce.idle_ticks = 0;
    }
}

/// Node-level liveness as a host keeps it: when each peer process was last
/// heard from, and which ones it has declared dead. The one rule of both
/// the runtime's host and the simulator's: a peer silent for more than
/// `timeout` (in the caller's unit of time) is dead, and alive again as
/// soon as it is heard.
#[derive(Debug, Clone, Default)]
pub struct PeerLiveness {
    heard: BTreeMap<NodeId, u64>,
    dead: BTreeSet<NodeId>,
}

impl PeerLiveness {
    /// Records that `peer` was heard at `now` (a new peer is watched from
    /// then on).
    pub fn heard(&mut self, peer: NodeId, now: u64) {
        self.heard.insert(peer, now);
    }

    /// The peers watched, ascending.
    pub fn peers(&self) -> Vec<NodeId> {
        self.heard.keys().copied().collect()
    }

    /// The peers declared dead, ascending.
    pub fn dead(&self) -> Vec<NodeId> {
        self.dead.iter().copied().collect()
    }

    /// Judges every peer at `now` and returns the changes, `(peer,
    /// alive)`, ascending by peer; each is recorded.
    pub fn judge(&mut self, now: u64, timeout: u64) -> Vec<(NodeId, bool)> {
        let flips: Vec<(NodeId, bool)> = self
            .heard
            .iter()
            .filter_map(|(&p, &t)| {
                let dead = now.saturating_sub(t) > timeout;
                (dead != self.dead.contains(&p)).then_some((p, !dead))
            })
            .collect();
        for &(p, alive) in &flips {
            if alive {
                self.dead.remove(&p);
            } else {
                self.dead.insert(p);
            }
        }
        flips
    }
}

#[cfg(test)]
mod tests {
    use super::PeerLiveness;

    #[test]
    fn a_silent_peer_is_dead_after_the_timeout_and_alive_once_heard() {
        let mut l = PeerLiveness::default();
        l.heard(2, 0);
        l.heard(3, 0);
        assert!(l.judge(10, 10).is_empty(), "silent for exactly the timeout");
        l.heard(3, 8);
        assert_eq!(l.judge(11, 10), vec![(2, false)]);
        assert_eq!(l.dead(), vec![2]);
        assert!(l.judge(12, 10).is_empty(), "a change is reported once");
        l.heard(2, 13);
        assert_eq!(l.judge(13, 10), vec![(2, true)]);
        assert!(l.dead().is_empty());
        assert_eq!(l.peers(), vec![2, 3]);
    }
}
