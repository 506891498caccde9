//! The contract between the core and its driver.
//!
//! The driver loops: `if raft.has_ready() { let rd = raft.ready(); ... }`
//! and, for each `Ready`, in this order:
//! 1. persists `entries` (appending over any conflicting suffix) and
//!    `hard_state` durably;
//! 2. sends `messages` (they may depend on step 1: a vote or an
//!    acknowledgement must never leave before what it promises is durable).
//!    When [`Ready::send_before_persist`] is set the messages promise
//!    nothing about this node's disk and may leave before step 1, so a
//!    leader's own log write overlaps its followers' (Raft thesis 10.2.1);
//! 3. applies `committed_entries` to the state machine, and serves
//!    `read_states` once the applied index reaches theirs;
//! 4. calls `advance(&rd)`.
//!
//! One `Ready` at a time: take the next only after advancing this one (a
//! `Ready` hands out every unpersisted entry, so two outstanding ones would
//! overlap).

use super::bugs::Bug;
use super::event::Event;
use super::message::{ConfState, Entry, HardState, Message, NodeId, SnapshotMeta};
use super::raft::{Raft, Role};
use super::read::ReadState;
use crate::storage::Storage;

/// Volatile state worth reporting when it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftState {
    pub leader: Option<NodeId>,
    pub role: Role,
}

/// Snapshot work for the driver, done in order and durably in step 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotOp {
    /// Start receiving the snapshot `meta` (drop any other partial copy).
    Begin(SnapshotMeta),
    /// Append verified bytes to file `file` of the partial snapshot.
    Chunk {
        file: u32,
        offset: u64,
        /// The received chunk's buffer, shared (not copied).
        data: crate::core::Bytes,
    },
    /// Drop the partial snapshot.
    Abort,
    /// The partial snapshot `meta` is complete and verified: make it the
    /// node's snapshot, replace the log by it (empty after `meta.index`),
    /// and load it into the state machine, which starts from empty.
    Install(SnapshotMeta),
}

/// Work for the driver; see the module docs for the order.
#[derive(Debug, Default)]
pub struct Ready {
    /// The hard state to persist, when it changed.
    pub hard_state: Option<HardState>,
    /// Snapshot work, before the entries.
    pub snapshot_ops: Vec<SnapshotOp>,
    /// Entries to append to stable storage.
    pub entries: Vec<Entry>,
    /// A new membership base to persist with the hard state (after
    /// `reset_peers`).
    pub conf_state: Option<ConfState>,
    /// Messages to send once the above is durable (or before, when
    /// `send_before_persist`).
    pub messages: Vec<Message>,
    /// The core's ruling that `messages` depend on nothing this `Ready`
    /// persists: set only for a leader whose term, vote and membership are
    /// already durable and that has no snapshot work. Its appends carry
    /// entries it may not have synced yet, which is safe because the core
    /// counts the leader toward a commit only for entries it persisted
    /// (`advance`); a vote, an acknowledgement or a new term always waits.
    pub send_before_persist: bool,
    /// Committed, durable entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// Reads confirmed since the last `Ready`.
    pub read_states: Vec<ReadState>,
    /// The new role and leader, when they changed.
    pub soft_state: Option<SoftState>,
    /// Observations for tracing.
    pub events: Vec<Event>,
}

impl<S: Storage> Raft<S> {
    fn hard_state(&self) -> HardState {
        let mut vote = self.vote;
        if self.cfg.bug(Bug::VoteNotPersisted) && self.role != Role::Leader {
            vote = None;
        }
        HardState {
            term: self.term,
            vote,
            commit: self.log.committed,
        }
    }

    fn soft_state(&self) -> SoftState {
        SoftState {
            leader: self.leader,
            role: self.role,
        }
    }

    /// Whether there is anything for the driver to do.
    pub fn has_ready(&self) -> bool {
        // After a failed storage read nothing may leave the node.
        self.log.failure().is_none() && self.has_ready_unchecked()
    }

    /// Whether the next `Ready` holds work for the disk: entries to append,
    /// a term, vote or membership to save, or snapshot work. A driver may
    /// run a `Ready` without it on an async task instead of a blocking
    /// thread (applying reads entries, normally from the entry cache).
    /// Only a performance hint: a wrong answer never changes what is done.
    pub fn ready_writes_disk(&self) -> bool {
        let hs = self.hard_state();
        !self.log.unstable_entries().is_empty()
            || (hs.term, hs.vote) != (self.prev_hard.term, self.prev_hard.vote)
            || self.pending_conf_state.is_some()
            || !self.snap.ops.is_empty()
    }

    fn has_ready_unchecked(&self) -> bool {
        !self.msgs.is_empty()
            || !self.log.unstable_entries().is_empty()
            || self.hard_state() != self.prev_hard
            || self.soft_state() != self.prev_soft
            || self.log.has_next_to_apply()
            || !self.read_states.is_empty()
            || !self.events.is_empty()
            || self.pending_conf_state.is_some()
            || !self.snap.ops.is_empty()
    }

    /// Takes the pending work. Call `advance` with it once it is handled.
    pub fn ready(&mut self) -> Ready {
        let hs = self.hard_state();
        let ss = self.soft_state();
        let snapshot_ops = std::mem::take(&mut self.snap.ops);
        let conf_state = self.pending_conf_state.take();
        // `prev_hard` is what the previous Ready handed out, durable by now
        // (one Ready at a time, advanced after its persist).
        let send_before_persist = self.role == Role::Leader
            && snapshot_ops.is_empty()
            && conf_state.is_none()
            && (hs.term, hs.vote) == (self.prev_hard.term, self.prev_hard.vote);
        let rd = Ready {
            hard_state: (hs != self.prev_hard).then_some(hs),
            snapshot_ops,
            entries: self.log.unstable_entries().to_vec(),
            conf_state,
            messages: std::mem::take(&mut self.msgs),
            send_before_persist,
            committed_entries: self.log.next_to_apply(self.cfg.max_apply_bytes),
            read_states: std::mem::take(&mut self.read_states),
            soft_state: (ss != self.prev_soft).then_some(ss),
            events: std::mem::take(&mut self.events),
        };
        self.prev_hard = hs;
        self.prev_soft = ss;
        rd
    }

    /// Acknowledges that `rd` was handled: its entries are durable and its
    /// committed entries applied.
    pub fn advance(&mut self, rd: &Ready) {
        if let Some(e) = rd.entries.last() {
            self.log.stable_to(e.index, e.term);
            if self.role == Role::Leader {
                self.leader_persisted(self.log.persisted_index());
            }
        }
        if let Some(e) = rd.committed_entries.last() {
            self.log.applied_to(e.index);
        }
        if self.snap.verify_pending {
            // The last chunks are durable now: check the files whole.
            self.snap.verify_pending = false;
            self.verify_received_snapshot();
        }
    }
}
