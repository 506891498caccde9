//! Local multi-process clusters: what `cdsctl kv` and `cdsctl top` do to
//! the node processes of a cluster directory.
//!
//! Each operation is short-lived: [`up`] spawns detached node processes
//! and returns, and every later operation finds them again through the
//! cluster directory (`DIR/cluster.json`, [`directory`]). That keeps the
//! operations usable from a shell, a test or a demo script alike, and
//! leaves the nodes as ordinary processes that can be killed, paused and
//! partitioned like real servers ([`process`]). Every wait is bounded, so
//! no operation hangs on a broken cluster.
//!
//! The operations return what they did ([`Outcome`], [`Started`],
//! [`NodeStop`], [`NodeReport`]) for the caller to print; problems that do
//! not stop an operation (a node that is not running is skipped) go to a
//! [`Warn`] callback.

pub mod directory;
mod faults;
mod lifecycle;
mod membership;
mod outcome;
pub mod process;
mod reach;

pub use faults::{heal, parse_groups, partition, snapshot, transfer_leader};
pub use lifecycle::{down, kill, pause, reports, restart, resume, up, NodeReport, Started};
pub use membership::{add_node, remove_node};
pub use outcome::{NodeStop, Outcome};
pub use process::NodeProgram;
pub use reach::{find_leader, live_http};

/// Where an operation reports a problem that does not stop it (a node
/// that is not running is skipped): stderr for the CLI, the status bar in
/// `top`.
pub type Warn<'a> = &'a mut dyn FnMut(String);
