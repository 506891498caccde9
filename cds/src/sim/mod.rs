//! The block store's data path under the deterministic simulator.
//!
//! Nodes host BlockGroup replicas the way a BlockServer does: each group
//! is the shipped Raft core driven by the shipped [`Driver`] over the
//! shipped `local` stores (segmented log, meta), and applies its entries
//! to the shipped [`Engine`] with the same function the BlockServer's
//! state machine calls ([`crate::blockgroup::apply_entry`]). Every node's
//! disk is a [`SimFs`]: a crash loses, keeps or tears what was not synced,
//! chosen by seed. The network delays, drops and partitions messages.
//!
//! Clients run a seeded block workload against one volume: writes, zeros
//! (TRIM), reads, version marks and drops, with a writer epoch that a
//! re-open bumps (the Master's job in a real cluster: here the simulator
//! hands out epochs) so stale writers are fenced. They route each request
//! to the group's leader, follow redirects, retry with a deadline and give
//! up with an unknown outcome, as the client library does.
//!
//! What is checked:
//! - every read returns, for each sector, the last acknowledged write to
//!   it or a write concurrent with it: each sector is a register and the
//!   history is checked for linearizability (the checker of the Raft
//!   simulator, `raft_core::sim::linearizability`);
//! - a sector read back always holds an intact write of that sector (the
//!   pattern of `sectors.rs`), never torn, shifted or corrupt data;
//! - every replica that applies an index gets the same result (the
//!   engine is deterministic), and applies only what its log holds
//!   durably;
//! - after the faults stop and the cluster settles, a final read of every
//!   block sees every acknowledged write, and the replicas' engines hold
//!   the same bytes.
//!
//! What this simulation leaves to the multi-process tests: the
//! BlockServer's TCP framing and its async serve loop (here a model of it
//! answers requests), Raft snapshots of engines (the log is not compacted
//! here), and the Master's own replication (epochs come from the
//! simulator).
//!
//! [`Driver`]: raft_core::driver::Driver
//! [`Engine`]: crate::engine::Engine
//! [`SimFs`]: raft_core::storage::fs::SimFs

pub mod control;
mod master;
mod sectors;
mod snapshots;
mod world;

use std::fmt;

/// Bugs the simulator must catch, injected on purpose (test builds only).
#[cfg(feature = "bug-injection")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bug {
    /// Routing/serving: any replica answers a read from its own engine,
    /// without being the leader or confirming it still leads.
    FollowerRead,
    /// Serving: a leader that steps down tells the clients of its pending
    /// writes that they were applied.
    AckOnStepDown,
    /// Engine: a flush records its index as durable without syncing the
    /// slot file, so a crash loses data the engine called durable.
    SkipSlotSync,
    /// Engine: a read that meets a corrupt sector serves zeros for it
    /// (a storage error turned into a default value).
    CorruptAsZeros,
    /// Engine: a partial write to a slice that a snapshot shares writes
    /// the shared slot in place instead of a copy (copy-on-write
    /// skipped), so the snapshot's content changes.
    SkipCow,
}

#[cfg(feature = "bug-injection")]
impl Bug {
    /// Every bug, for `--inject-bug` help and tests.
    pub const ALL: [Bug; 5] = [
        Bug::FollowerRead,
        Bug::AckOnStepDown,
        Bug::SkipSlotSync,
        Bug::CorruptAsZeros,
        Bug::SkipCow,
    ];

    /// The bug's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Bug::FollowerRead => "follower-read",
            Bug::AckOnStepDown => "ack-on-step-down",
            Bug::SkipSlotSync => "skip-slot-sync",
            Bug::CorruptAsZeros => "corrupt-as-zeros",
            Bug::SkipCow => "skip-cow",
        }
    }
}

#[cfg(feature = "bug-injection")]
impl fmt::Display for Bug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(feature = "bug-injection")]
impl std::str::FromStr for Bug {
    type Err = String;
    fn from_str(s: &str) -> Result<Bug, String> {
        Bug::ALL.into_iter().find(|b| b.name() == s).ok_or_else(|| {
            let names: Vec<_> = Bug::ALL.iter().map(|b| b.name()).collect();
            format!("unknown bug {s:?}; known: {}", names.join(", "))
        })
    }
}

/// What to simulate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    pub seed: u64,
    /// BlockServers; every group has a replica on each (3 or 5).
    pub nodes: usize,
    /// BlockGroups; block `b` of the volume lives in group `b % groups`.
    pub groups: usize,
    /// Blocks of the simulated volume (16 sectors of 4 KiB each).
    pub blocks: u64,
    /// Clients, each with one request in flight.
    pub clients: usize,
    /// Simulated milliseconds of workload under faults, before the quiet
    /// phase (faults healed, final reads, convergence).
    pub millis: u64,
    /// Crashes, partitions and message loss on; off, only the workload.
    pub faults: bool,
    #[cfg(feature = "bug-injection")]
    pub bug: Option<Bug>,
}

impl SimConfig {
    /// The defaults `cdsctl cds sim` uses for `seed`.
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            nodes: 3,
            groups: 4,
            blocks: 8,
            clients: 4,
            millis: 10_000,
            faults: true,
            #[cfg(feature = "bug-injection")]
            bug: None,
        }
    }
}

/// Counts of what a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Writes and zeros acknowledged.
    pub writes_acked: u64,
    /// Reads answered.
    pub reads: u64,
    /// Writes given up on with an unknown outcome.
    pub unknown: u64,
    /// Writes refused because a newer writer had opened the volume.
    pub fenced: u64,
    /// Writes refused as behind a snapshot step and sent again.
    pub stale: u64,
    /// Snapshots every group took, rollbacks done, clones made.
    pub snapshots: u64,
    pub rollbacks: u64,
    pub clones: u64,
    pub crashes: u64,
    pub partitions: u64,
    /// Bits flipped in engines' slot files (bit rot), and corrupt sectors
    /// repaired from another replica.
    pub bit_rot: u64,
    pub repaired: u64,
    /// Entries applied, over every replica.
    pub entries_applied: u64,
    /// Engine flushes (each records a durable index).
    pub flushes: u64,
    /// Sectors checked by the final read.
    pub sectors_checked: u64,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub seed: u64,
    /// Events processed.
    pub events: u64,
    /// Simulated milliseconds.
    pub sim_time: u64,
    pub stats: Stats,
    /// What went wrong, if anything: the check that failed and why.
    pub failure: Option<String>,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        write!(
            f,
            "seed {}: {} ({} events, {} ms simulated, {} writes acked, {} reads, {} unknown, \
             {} fenced, {} snapshots, {} rollbacks, {} clones, {} crashes, {} partitions, {} bits rotted, {} sectors repaired, \
             {} sectors checked at the end)",
            self.seed,
            match &self.failure {
                None => "ok".to_string(),
                Some(why) => format!("FAILED: {why}"),
            },
            self.events,
            self.sim_time,
            s.writes_acked,
            s.reads,
            s.unknown,
            s.fenced,
            s.snapshots,
            s.rollbacks,
            s.clones,
            s.crashes,
            s.partitions,
            s.bit_rot,
            s.repaired,
            s.sectors_checked,
        )
    }
}

/// Runs one simulation to completion. The same config gives the same
/// outcome, event for event.
pub fn run(cfg: &SimConfig) -> Outcome {
    world::run(cfg)
}
