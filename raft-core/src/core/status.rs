//! One node's state as operators and consoles read it.
//!
//! The runtime's `NodeStatus`, the simulator's live sessions and, through
//! the KV node's `/status`, `cdsctl top` all show the same picture of a
//! node; [`RaftStatus`] is that picture, taken from the core between two
//! steps.

use std::collections::BTreeMap;

use super::{Membership, NodeId, Raft, Role};
use crate::storage::Storage;

/// A node's role, log and configuration at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftStatus {
    /// Its role in `term`.
    pub role: Role,
    /// Its current term.
    pub term: u64,
    /// The leader it follows (itself when leader), if known.
    pub leader: Option<NodeId>,
    /// The highest index it knows committed.
    pub commit: u64,
    /// The highest index its state machine applied (as the core knows it;
    /// the runtime reports its apply task's, which may be behind).
    pub applied: u64,
    /// The first index its log holds (past its compaction point; an empty
    /// log has `last_index + 1 == first_index`).
    pub first_index: u64,
    /// The last index of its log.
    pub last_index: u64,
    /// The configuration it uses (the latest in its log).
    pub membership: Membership,
    /// The log index of the entry that set `membership` (0: the initial
    /// configuration, or one installed with a snapshot at that index is
    /// reported as the snapshot's index). A later configuration always has
    /// a higher index, so this orders a group's configurations: a control
    /// plane uses it as the configuration's epoch.
    pub conf_index: u64,
    /// Leader only: the highest index known to match on each member,
    /// itself included; empty on other roles.
    pub peer_match: BTreeMap<NodeId, u64>,
    /// The index of its latest snapshot in storage, if any.
    pub last_snapshot: Option<u64>,
    /// Messages dropped since start because their term was too far ahead
    /// or their sender outside the configuration (see
    /// [`crate::Config::max_term_jump`]).
    pub refused_messages: u64,
    /// Whether its group is quiescent here (no heartbeats or election
    /// timer until something wakes it; `core/quiesce.rs`).
    pub quiescent: bool,
    /// The snapshot it is receiving from a leader, if a transfer is under
    /// way here.
    pub receiving_snapshot: Option<SnapshotProgress>,
    /// Leader only: the members it is installing a snapshot on, with that
    /// snapshot's index.
    pub sending_snapshots: BTreeMap<NodeId, u64>,
}

/// How far a snapshot transfer to this node has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotProgress {
    /// The snapshot's last included index.
    pub index: u64,
    /// Bytes verified and handed to storage so far.
    pub have_bytes: u64,
    /// The snapshot's size: the sum of its files'.
    pub total_bytes: u64,
}

impl<S: Storage> Raft<S> {
    /// This node's state now.
    pub fn status(&self) -> RaftStatus {
        RaftStatus {
            role: self.role(),
            term: self.term(),
            leader: self.leader(),
            commit: self.commit_index(),
            applied: self.applied_index(),
            first_index: self.raft_log().first_index(),
            last_index: self.raft_log().last_index(),
            membership: self.membership().clone(),
            conf_index: self.conf_log.last().map_or(self.conf_base.0, |(i, _)| *i),
            peer_match: self.peer_match(),
            last_snapshot: self.storage().snapshot_meta().map(|m| m.index),
            refused_messages: self.refused_messages,
            quiescent: self.is_quiescent(),
            receiving_snapshot: self.snap.progress(),
            sending_snapshots: self.sending_snapshots(),
        }
    }
}
