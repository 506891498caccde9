//! What the console watches and drives: a local cluster of processes
//! ([`super::local`]) or a simulated cluster in this process
//! ([`super::sim`]). The UI loop sees only this interface, so both get
//! the same screen, keys and event log.

use super::keys::Action;
use super::model::{Event, LoadObs, NodeObs};

/// What changed since the last [`Source::update`].
#[derive(Debug, Default)]
pub struct Update {
    /// The source's clock, µs: wall-clock time for a real cluster,
    /// simulated time since the start for a simulated one. Events and
    /// observations carry times on the same clock.
    pub now_us: u64,
    /// Every node's latest observation.
    pub nodes: Vec<NodeObs>,
    /// Event-log lines since the last update.
    pub events: Vec<Event>,
    /// Why the picture may be stale (the cluster file is unreadable, the
    /// simulation stopped), while that lasts.
    pub error: Option<String>,
    /// The load generator's figures, while it runs.
    pub load: Option<LoadObs>,
}

/// A request to act: an action and the node it targets.
#[derive(Debug, Clone)]
pub struct Job {
    /// What to do.
    pub action: Action,
    /// The selected node, if any.
    pub node: Option<u64>,
    /// How the status bar and the log name it: "kill node 2".
    pub what: String,
}

/// The progress of a submitted job, stamped with the source's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The job named so started at `t_us`.
    Started {
        /// When, on the source's clock.
        t_us: u64,
        /// The job's `what`.
        what: String,
    },
    /// The job finished at `t_us`: its message, or the error (already
    /// prefixed with what the job was).
    Finished {
        /// When, on the source's clock.
        t_us: u64,
        /// The message or the error.
        outcome: Result<String, String>,
    },
}

/// A cluster the console can watch and drive.
pub trait Source {
    /// The current picture; for a simulation, also moves simulated time up
    /// to the wall clock.
    fn update(&mut self) -> Update;
    /// Queues an action. Its start and outcome come back, in order, from
    /// [`Source::reports`].
    fn submit(&mut self, job: Job) -> Result<(), String>;
    /// Reports of submitted jobs since the last call, in order.
    fn reports(&mut self) -> Vec<Report>;
}
