//! Observations the core reports to its driver for tracing and metrics.
//!
//! They change nothing: a driver may drop them. Role, term and commit
//! changes are visible in `Ready` itself (soft and hard state).

use super::membership::Membership;
use super::message::NodeId;
use super::quiesce::WakeReason;

/// Something the core decided that is not otherwise visible in a `Ready`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The election timer fired; `pre_vote` tells which round starts.
    ElectionTimeout { pre_vote: bool },
    /// The leader had not heard from a quorum within an election timeout.
    CheckQuorumStepDown,
    /// A leader transfer to `to` began.
    TransferStarted { to: NodeId },
    /// `to` is caught up and was told to campaign now.
    TimeoutNowSent { to: NodeId },
    /// The transfer to `to` was given up (it took an election timeout).
    TransferAborted { to: NodeId },
    /// A read became safe to serve at `index` (`lease`: without a round trip).
    ReadReady { ctx: u64, index: u64, lease: bool },
    /// `from` asked for a vote (pre-vote or real) and was answered.
    Voted {
        candidate: NodeId,
        pre_vote: bool,
        granted: bool,
    },
    /// The configuration in use changed: the entry at `index` was appended
    /// (or a truncation rolled back to the one at `index`).
    MembershipChanged { index: u64, membership: Membership },
    /// A change started with `change_peers` completed (leader only).
    ChangeDone { membership: Membership },
    /// A change could not complete and was abandoned (leader only).
    ChangeFailed { reason: String },
    /// Phase 1: the snapshot at `index` was offered to `to` (leader).
    SnapshotOffered { to: NodeId, index: u64, bytes: u64 },
    /// A chunk went to `to` (leader).
    SnapshotChunkSent {
        to: NodeId,
        index: u64,
        file: u32,
        offset: u64,
        len: u64,
    },
    /// A chunk arrived (follower); `ok` is false when its checksum failed and
    /// it is asked for again.
    SnapshotChunkReceived {
        index: u64,
        file: u32,
        offset: u64,
        len: u64,
        ok: bool,
    },
    /// A transfer continues from a partial copy (`have` bytes already held).
    SnapshotResumed { index: u64, have: u64 },
    /// The snapshot at `index` was verified and installed (follower).
    SnapshotInstalled { index: u64 },
    /// The group went quiescent on this node (`core/quiesce.rs`): a leader
    /// sent its quiesce heartbeats, a follower accepted one.
    Quiesced,
    /// This quiescent node woke up.
    Woke { reason: WakeReason },
    /// The partial snapshot at `index` was thrown away (follower).
    SnapshotDiscarded { index: u64, reason: String },
}
