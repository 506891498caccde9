//! What the operations on a local cluster did, for the caller to print:
//! the text of each lives here, once, for `cdsctl kv` and `cdsctl top`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use raft_core::NodeId;

/// What an operation on one node or on the cluster did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The node got SIGKILL and is gone.
    Killed(NodeId),
    /// The node got SIGSTOP.
    Paused(NodeId),
    /// The node got SIGCONT.
    Resumed(NodeId),
    /// The node runs again and answers `/status`.
    Restarted {
        /// The node.
        id: NodeId,
        /// Its new process.
        pid: u32,
        /// Its role when it first answered.
        role: String,
        /// Its term then.
        term: u64,
    },
    /// The nodes were cut into these groups.
    Partitioned(Vec<Vec<NodeId>>),
    /// Every running node's filter was removed.
    Healed,
    /// The node already led; nothing was asked.
    AlreadyLeads(NodeId),
    /// The node leads after a transfer.
    Leads {
        /// The node.
        id: NodeId,
        /// The term it leads in.
        term: u64,
    },
    /// The node took a snapshot; `answer` is its reply.
    Snapshot {
        /// The node.
        id: NodeId,
        /// The node's answer (JSON with the snapshot index).
        answer: String,
    },
    /// A new node runs and is a voter.
    Added {
        /// The new node.
        id: NodeId,
        /// Its process.
        pid: u32,
        /// The voters after the change.
        voters: Vec<NodeId>,
    },
    /// The node is no longer a voter and was stopped.
    Removed {
        /// The node.
        id: NodeId,
        /// How its process ended.
        stop: NodeStop,
        /// Where its data stays.
        data_dir: PathBuf,
    },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Killed(id) => write!(f, "node {id} killed"),
            Outcome::Paused(id) => write!(f, "node {id} paused"),
            Outcome::Resumed(id) => write!(f, "node {id} resumed"),
            Outcome::Restarted {
                id,
                pid,
                role,
                term,
            } => write!(f, "node {id} restarted (pid {pid}), {role} in term {term}"),
            Outcome::Partitioned(groups) => {
                let text: Vec<String> = groups
                    .iter()
                    .map(|g| {
                        let ids: Vec<String> = g.iter().map(u64::to_string).collect();
                        format!("{{{}}}", ids.join(","))
                    })
                    .collect();
                write!(f, "partitioned: {}", text.join(" | "))
            }
            Outcome::Healed => f.write_str("healed"),
            Outcome::AlreadyLeads(id) => write!(f, "node {id} already leads"),
            Outcome::Leads { id, term } => write!(f, "node {id} leads (term {term})"),
            Outcome::Snapshot { id, answer } => write!(f, "node {id} snapshot: {answer}"),
            Outcome::Added { id, pid, voters } => {
                write!(f, "node {id} added (pid {pid}); voters {voters:?}")
            }
            Outcome::Removed { id, stop, data_dir } => write!(
                f,
                "node {id} removed from the voters ({stop}); its data stays in {}",
                data_dir.display()
            ),
        }
    }
}

/// How a node's process ended when it was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeStop {
    /// It was not running.
    NotRunning,
    /// It exited after SIGTERM.
    Stopped,
    /// It had not exited this long after SIGTERM, and got SIGKILL.
    Killed {
        /// How long it had after SIGTERM.
        grace: Duration,
    },
}

impl fmt::Display for NodeStop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeStop::NotRunning => f.write_str("not running"),
            NodeStop::Stopped => f.write_str("stopped"),
            NodeStop::Killed { grace } => write!(f, "killed (SIGTERM timed out after {grace:?})"),
        }
    }
}
