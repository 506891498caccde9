//! Linearizable reads without writing the log (Raft thesis §6.4).
//!
//! ReadIndex: the leader notes its commit index, confirms with a heartbeat
//! round that a quorum still follows it, and then the read may be served
//! once the state machine has applied that index. A lease read skips the
//! round trip while a quorum acknowledged the leader within `lease_tick`
//! ticks; it is only allowed with CheckQuorum, because only then do
//! followers refuse to elect anyone else while they hear from the leader.

use std::collections::VecDeque;

use super::event::Event;
use super::message::NodeId;
use super::quorum;
use super::raft::{Raft, Role};
use crate::storage::Storage;
use crate::ReadError;

/// Most ReadIndex requests a leader holds waiting for confirmation.
pub const MAX_PENDING_READS: usize = 4096;

/// How a read is confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadMode {
    /// A heartbeat round confirms leadership (always safe).
    ReadIndex,
    /// Served at once while the leader's lease holds; falls back to a
    /// ReadIndex round when it does not.
    Lease,
}

/// A read that may be served once the state machine applied `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's tag for the request.
    pub ctx: u64,
    pub index: u64,
}

#[derive(Debug, Clone, Copy)]
struct PendingRead {
    ctx: u64,
    index: u64,
    round: u64,
}

/// The leader's queue of reads awaiting a quorum's confirmation.
#[derive(Debug, Default)]
pub(crate) struct ReadOnly {
    /// The latest heartbeat round; rounds only grow within a leadership.
    pub(crate) round: u64,
    pending: VecDeque<PendingRead>,
}

impl ReadOnly {
    pub(crate) fn clear(&mut self) {
        self.round = 0;
        self.pending.clear();
    }

    /// Whether no read waits for confirmation.
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

impl<S: Storage> Raft<S> {
    /// Asks to read linearizably; on success a [`ReadState`] with `ctx`
    /// appears in a later `Ready` (at once for a valid lease). Refused
    /// unless this node is a leader that committed an entry in its term.
    pub fn read_index(&mut self, ctx: u64, mode: ReadMode) -> Result<(), ReadError> {
        if self.role != Role::Leader {
            return Err(ReadError::NotLeader {
                leader: self.leader,
            });
        }
        if mode == ReadMode::Lease && !self.cfg.check_quorum {
            return Err(ReadError::LeaseNeedsCheckQuorum);
        }
        if self.log.term(self.log.committed) != Some(self.term) {
            return Err(ReadError::NoCommitInTerm);
        }
        self.note_work();
        let index = self.log.committed;
        let alone = !self.membership.is_joint() && self.membership.voters == [self.id];
        if (mode == ReadMode::Lease && self.lease_valid()) || alone {
            self.serve_read(ctx, index, mode == ReadMode::Lease);
            return Ok(());
        }
        if self.reads.pending.len() >= MAX_PENDING_READS {
            return Err(ReadError::TooManyPending {
                limit: MAX_PENDING_READS,
            });
        }
        self.reads.round += 1;
        let round = self.reads.round;
        self.reads
            .pending
            .push_back(PendingRead { ctx, index, round });
        self.bcast_heartbeat();
        Ok(())
    }

    fn serve_read(&mut self, ctx: u64, index: u64, lease: bool) {
        self.events.push(Event::ReadReady { ctx, index, lease });
        self.read_states.push(super::read::ReadState { ctx, index });
    }

    /// Whether a quorum acknowledged messages this leader sent less than
    /// `lease_tick` ticks ago, and nothing voided the lease.
    pub(crate) fn lease_valid(&self) -> bool {
        // A quiescent leader's lease is not being renewed: it serves no
        // lease read (a read wakes it first anyway).
        if self.role != Role::Leader
            || self.lease_revoked
            || self.transfer.is_some()
            || self.quiesce.quiescent
        {
            return false;
        }
        let (id, now) = (self.id, self.ticks);
        let oldest_quorum_ack = quorum::joint_committed_index(&self.membership, |v| {
            if v == id {
                now
            } else {
                self.progress.get(&v).map_or(0, |p| p.lease_ack)
            }
        });
        // Acks are leader ticks, which start at 1 after the first tick;
        // 0 means never acknowledged.
        oldest_quorum_ack > 0 && now < oldest_quorum_ack + self.cfg.lease_tick as u64
    }

    /// Records that `from` answered the heartbeat of `round`, and serves
    /// every read a quorum has now confirmed.
    pub(crate) fn ack_read_round(&mut self, from: NodeId, round: u64) {
        if round == 0 {
            return;
        }
        if let Some(pr) = self.progress.get_mut(&from) {
            pr.read_ack = pr.read_ack.max(round);
        }
        let (id, mine) = (self.id, self.reads.round);
        let confirmed = quorum::joint_committed_index(&self.membership, |v| {
            if v == id {
                mine
            } else {
                self.progress.get(&v).map_or(0, |p| p.read_ack)
            }
        });
        while let Some(r) = self.reads.pending.front().copied() {
            if r.round > confirmed {
                break;
            }
            self.reads.pending.pop_front();
            self.serve_read(r.ctx, r.index, false);
        }
    }
}
