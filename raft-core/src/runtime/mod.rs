//! The runtime (feature `runtime`): what turns the sans-IO core into a
//! running node. `codec` puts messages on the wire, `transport` carries them
//! over TCP between processes (many groups over one connection per peer),
//! `node` drives one group's core on a tokio task (ticks, group commit,
//! pipelined replication) and applies committed entries on another, through
//! the user's `StateMachine`, whose snapshots `snapshot` stages, checksums
//! and hands over as directories. Every limit of these parts (queues in items
//! and bytes, wire sizes, timeouts' defaults) is named in `limits`.

pub mod apply;
pub mod codec;
pub mod host;
pub mod limits;
pub mod node;
mod snapshot;
pub mod snapshot_file;
pub mod state_machine;
pub mod status;
pub mod trace;
pub mod transport;

use crate::core::{Message, NodeId};

/// Identifies one Raft group within a process (a process hosts many).
pub type GroupId = u64;

/// A message with the group it belongs to: what travels between processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub group: GroupId,
    pub msg: Message,
}

impl Envelope {
    /// The node the message is for.
    pub fn to(&self) -> NodeId {
        self.msg.to
    }
}

/// Where a node hands the messages it sends. `send` never blocks: an
/// implementation with a full queue drops the message (Raft retries) and
/// counts the drop.
pub trait Outbox: Send + Sync + 'static {
    fn send(&self, env: Envelope);
}
