//! What a running node reports about itself.
//!
//! Operators and tests need one consistent picture of a node (its role, its
//! log, its peers, how well group commit works) without reaching into the
//! task that owns the core; [`NodeStatus`] is that picture, taken by the
//! node task between two `Ready`s.

use std::collections::BTreeMap;

use crate::core::{Membership, NodeId, Role};

use super::GroupId;

/// A snapshot of one node's state, consistent as of one moment of its task
/// (except `applied`, which the apply task advances concurrently and which
/// is never ahead of `commit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node's id.
    pub id: NodeId,
    /// The group it belongs to.
    pub group: GroupId,
    /// Its role in `term`.
    pub role: Role,
    /// Its current term.
    pub term: u64,
    /// The leader this node follows (itself when leader), if known.
    pub leader: Option<NodeId>,
    /// The highest index known committed.
    pub commit: u64,
    /// The highest index the state machine has applied.
    pub applied: u64,
    /// The first and last index of the log (`first_index` is past the
    /// compaction point; an empty log has `last_index + 1 == first_index`).
    pub first_index: u64,
    /// See `first_index`.
    pub last_index: u64,
    /// The configuration in use (the latest in the log).
    pub membership: Membership,
    /// Leader only: the highest index known to match on each member,
    /// itself included. Empty on other roles.
    pub peer_match: BTreeMap<NodeId, u64>,
    /// The index of the latest snapshot in storage.
    pub last_snapshot: Option<u64>,
    /// Counters since the node started.
    pub metrics: NodeMetrics,
}

/// Counters since the node started. `log_syncs` against `proposals` shows
/// group commit at work: many proposals share one log sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeMetrics {
    /// `Ready`s handled (each persisted with at most one log sync).
    pub ready_batches: u64,
    /// `Ready`s that appended entries: one log sync (fsync) each.
    pub log_syncs: u64,
    /// Proposals appended to the log by this node as leader.
    pub proposals: u64,
    /// Proposals refused because the proposal queue was full.
    pub busy_refusals: u64,
    /// Inbound messages dropped because the inbox was full (Raft retries).
    pub dropped_messages: u64,
    /// Snapshots of the state machine saved by this node.
    pub snapshots_saved: u64,
    /// Snapshots received from a leader and loaded.
    pub snapshots_installed: u64,
}
