//! A BlockGroup: one Raft group whose replicated state is a block engine.
//!
//! Every replica holds an [`crate::engine::Engine`]; the group's Raft log
//! is the engine's write-ahead log. Writes, zeros and version operations
//! are proposed as entries ([`command`]) and applied in log order on every
//! replica ([`BlockGroupSm`]); each result goes back to its proposer.
//! Reads are served from the leader's engine once the leader has
//! confirmed it still leads (its lease, or a ReadIndex round): the engine
//! then holds every write acknowledged before the read began.
//!
//! A group's Raft snapshot is an export of its engine (`engine::export`),
//! written beside the applying and streamed to a new or lagging replica,
//! which imports it; a restarted replica whose engine already holds the
//! snapshot's index keeps its engine and replays the log from where the
//! engine is durable.

pub mod command;
mod state_machine;

pub use state_machine::{
    after_batch, apply_entry, lock, BlockGroupSm, SharedEngine, FLUSH_EVERY_ENTRIES,
    GC_SLICES_PER_BATCH, SNAPSHOT_FILE,
};
