//! The sans-IO Raft state machine and the pure pieces it is made of.
//!
//! Each Raft rule lives in exactly one place: elections in `election`,
//! replication and commitment in `replication`, reads in `read`, leader
//! transfer in `transfer`, quiescent groups in `quiesce`, majorities in `quorum`, follower progress in
//! `progress`, the stable/unstable log in `log`, the driver contract in
//! `ready`. `raft` holds the node's state, its role transitions and the
//! dispatch of messages to the role that handles them.

pub mod bugs;
mod config;
mod due;
mod election;
mod event;
pub mod log;
pub mod membership;
mod message;
pub mod progress;
mod quiesce;
pub mod quorum;
mod raft;
mod read;
mod ready;
mod reconfig;
mod replication;
mod snapshot;
mod status;
mod transfer;

pub use bugs::{Bug, BugSet};
pub use config::Config;
pub use event::Event;
pub use membership::{ConfChange, ConfEntry, Membership, MAX_MEMBERS};
pub use message::{
    checksum, checksum_extend, Bytes, ConfState, Entry, EntryKind, HardState, Message, MessageBody,
    NodeId, SnapshotFile, SnapshotMeta,
};
pub use quiesce::{PeerLiveness, WakeReason};
pub use raft::{Raft, Role};
pub use read::{ReadMode, ReadState};
pub use ready::{Ready, SnapshotOp, SoftState};
pub use status::{RaftStatus, SnapshotProgress};
