//! The Master: the cluster's metadata, replicated by its own Raft group.
//!
//! It knows the BlockServers (their addresses, locations and disks), the
//! BlockGroups and where their replicas are, and the volumes with their
//! block maps and writer epochs. [`state`] is the deterministic state
//! machine: every Master replica applies the same [`MasterCommand`]s in
//! log order; [`state_machine::MasterSm`] applies them from the Master's
//! Raft log and snapshots the state as one JSON file. [`http`] serves the
//! HTTP/JSON API of [`api`], [`process::run`] is one Master process, and
//! [`client::MasterClient`] finds the leading Master and calls it.
//! Placement follows [`crate::placement`]; [`balance`] plans leader
//! transfers that keep leader counts even; repair and capacity balancing
//! come with the rest of the control plane.

pub mod api;
pub mod balance;
pub mod client;
pub mod executor;
pub mod http;
pub mod moves;
pub mod process;
pub mod schedule;
pub mod snapshot;
pub mod state;
pub mod state_machine;

pub use snapshot::{Origin, Snapshot, SnapshotCommand, SnapshotState, Task, TaskKind, TaskState};
pub use state::{
    place, Group, Location, MasterCommand, MasterError, MasterReply, MasterState, Server, Volume,
};
