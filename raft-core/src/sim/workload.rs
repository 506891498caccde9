//! The simulated clients: each runs one operation at a time against the
//! cluster, retries on refusal or timeout, and records what it saw for the
//! linearizability checker.

use super::linearizability::{Op, OpKind};
use crate::core::NodeId;

/// How a client's read is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPath {
    /// Through the log, like a write.
    Log,
    /// ReadIndex: a heartbeat round confirms leadership.
    ReadIndex,
    /// Leader lease.
    Lease,
}

/// An operation a client wants done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientOp {
    Put { key: u64, value: u64 },
    Get { key: u64, path: ReadPath },
}

/// The operation a client is waiting on.
#[derive(Debug, Clone)]
pub struct Pending {
    pub seq: u64,
    pub op: ClientOp,
    /// When the client first sent it (its invocation time).
    pub invoke: u64,
    /// Bumped on every retry so stale timers are ignored.
    pub attempt: u64,
}

/// One simulated client.
#[derive(Debug)]
pub struct Client {
    pub id: u64,
    pub next_seq: u64,
    pub pending: Option<Pending>,
    /// The node the client will try next.
    pub target: NodeId,
    pub history: Vec<Op>,
}

impl Client {
    pub fn new(id: u64, target: NodeId) -> Client {
        Client {
            id,
            next_seq: 1,
            pending: None,
            target,
            history: Vec::new(),
        }
    }

    /// Records the reply to the pending operation.
    pub fn complete(&mut self, now: u64, result: Option<u64>) {
        let Some(p) = self.pending.take() else {
            return;
        };
        let kind = match p.op {
            ClientOp::Put { key, value } => OpKind::Put { key, value },
            ClientOp::Get { key, .. } => OpKind::Get { key, result },
        };
        self.history.push(Op {
            client: self.id,
            invoke: p.invoke,
            complete: Some(now),
            kind,
        });
    }

    /// Records the operation still pending when the run ended: a write may
    /// or may not have happened.
    pub fn abandon(&mut self) {
        if let Some(p) = self.pending.take() {
            if let ClientOp::Put { key, value } = p.op {
                self.history.push(Op {
                    client: self.id,
                    invoke: p.invoke,
                    complete: None,
                    kind: OpKind::Put { key, value },
                });
            }
        }
    }
}
