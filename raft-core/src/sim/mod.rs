//! The deterministic simulator: whole clusters of the real core in one
//! process, under a seeded scheduler that injects network and node faults,
//! drives a client workload, checks the Raft invariants after every step and
//! the clients' history for linearizability at the end.
//!
//! Everything random comes from the run's seed, so a seed and the flags
//! reproduce a run exactly, trace included.

pub mod cluster;
pub mod faults;
pub mod invariants;
pub mod kv;
pub mod linearizability;
pub mod live;
pub mod script;
pub mod sweep;
mod workload;

pub use cluster::{run, Failure, Outcome, SimConfig};
pub use faults::{FaultKind, FaultSet};
