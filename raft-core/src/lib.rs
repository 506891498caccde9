//! `raft-core`: a sans-IO Raft library.
//!
//! The core ([`core::Raft`]) is a pure, deterministic state machine: time
//! arrives as [`tick`](core::Raft::tick), messages as
//! [`step`](core::Raft::step), client work as
//! [`propose`](core::Raft::propose) and [`read_index`](core::Raft::read_index).
//! The caller takes a [`Ready`](core::Ready) (entries and hard state to
//! persist, messages to send, committed entries to apply) and acknowledges it
//! with [`advance`](core::Raft::advance). Randomness comes from a seeded
//! generator the caller injects. There is no clock, thread or IO inside, so
//! the same code runs under the seeded simulator ([`sim`]), in real processes
//! and in the browser.
//!
//! Features: `sim` (default) adds the simulator and the trace format;
//! `bug-injection` adds switches for classic Raft bugs, used only to prove
//! that the simulator catches them.

pub mod core;
pub mod driver;
pub mod storage;

#[cfg(feature = "runtime")]
pub mod runtime;
#[cfg(feature = "sim")]
pub mod sim;
#[cfg(feature = "trace")]
pub mod trace;

pub use crate::core::*;

/// Failures of the core and its storage. Refusals of client work (not the
/// leader, wrong term, ...) have their own types: [`ProposeError`],
/// [`ReadError`], [`TransferError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A [`Config`] whose fields contradict each other.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// Log entries in `lo..hi` are not held.
    #[error("log entries {lo}..{hi} are unavailable")]
    Unavailable { lo: u64, hi: u64 },
    /// Storage failed or holds something impossible.
    #[error("storage: {0}")]
    Storage(String),
    /// A message addressed to another node.
    #[error("message for node {to} delivered to node {me}")]
    Misrouted { to: NodeId, me: NodeId },
    /// A Raft safety invariant would break; the node must stop.
    #[error("invariant broken: {0}")]
    Invariant(String),
}

fn leader_hint(leader: &Option<NodeId>) -> String {
    match leader {
        Some(l) => format!("the leader is {l}"),
        None => "leader unknown".to_string(),
    }
}

/// Why a proposal was refused. A refused proposal was not appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader ({})", leader_hint(.leader))]
    NotLeader { leader: Option<NodeId> },
    #[error("term changed: expected {expected}, now {current}")]
    TermMismatch { expected: u64, current: u64 },
    #[error("leadership is being transferred to {to}")]
    TransferInProgress { to: NodeId },
    #[error("too many uncommitted entries (limit {limit})")]
    TooManyUncommitted { limit: u64 },
}

/// Why a linearizable read was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("not the leader ({})", leader_hint(.leader))]
    NotLeader { leader: Option<NodeId> },
    /// A new leader must commit an entry of its own term before it knows
    /// the commit index is current.
    #[error("the leader has not committed an entry in its term yet")]
    NoCommitInTerm,
    #[error("lease reads need check_quorum")]
    LeaseNeedsCheckQuorum,
    #[error("too many pending reads (limit {limit})")]
    TooManyPending { limit: usize },
}

/// Why a membership change was refused. A refused change changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("not the leader ({})", leader_hint(.leader))]
    NotLeader { leader: Option<NodeId> },
    #[error("another membership change is in progress")]
    InProgress,
    /// A new leader must commit an entry of its own term first.
    #[error("the leader has not committed an entry in its term yet")]
    NoCommitInTerm,
    #[error("a leader transfer is in progress")]
    TransferInProgress,
    #[error("invalid change: {0}")]
    Invalid(String),
}

/// Why a leader transfer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("not the leader ({})", leader_hint(.leader))]
    NotLeader { leader: Option<NodeId> },
    #[error("already the leader")]
    ToSelf,
    #[error("{0} is not a voter of this group")]
    UnknownPeer(NodeId),
    #[error("a membership change is in progress")]
    ChangeInProgress,
}
