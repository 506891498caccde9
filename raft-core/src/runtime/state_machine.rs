//! The user's state machine and the contract the runtime keeps with it
//! (braft's `StateMachine`).
//!
//! Raft decides *what* is applied and in which order; the state machine
//! decides what applying means. This module is the seam between the two.
//! Every callback runs on the node's apply task, one at a time and in log
//! order, so an implementation needs no locking of its own and sees a
//! single, totally ordered history of commands, snapshot loads and role
//! changes.
//!
//! The rules, each relied on by the runtime and tested in
//! `raft-core/tests/runtime_node.rs`:
//!
//! 1. **Determinism.** [`StateMachine::on_apply`] must compute its new state
//!    from its old state and the entry alone: no clock, no randomness, no
//!    node-local input. Every replica applies the same entries in the same
//!    order and must reach the same state, or snapshots and reads disagree.
//! 2. **Consume every entry.** `on_apply` must pull every entry from the
//!    iterator. An entry is applied once the iterator has yielded it;
//!    entries left in the iterator when `on_apply` returns are a broken
//!    contract: the runtime reports it through [`StateMachine::on_error`]
//!    and stops the node.
//! 3. **Results go to their proposer alone.** [`Applied::respond`] hands a
//!    result to the client that proposed exactly this entry (same index and
//!    same term) on this node; on other replicas, or for an entry proposed
//!    elsewhere, it does nothing. A result must not change the state: it is
//!    a reply, the state is what `on_apply` did.
//! 4. **Snapshots are the state exactly at an index.**
//!    [`StateMachine::on_snapshot_save`] is called between two batches and
//!    must capture everything applied so far and nothing else.
//! 5. **Loading starts from empty.** [`StateMachine::on_snapshot_load`]
//!    replaces the whole state: nothing applied before survives it.
//! 6. **Leader-only work follows the callbacks.**
//!    [`StateMachine::on_leader_start`] comes once this leader's first entry
//!    is applied (so every entry committed before its term is applied too);
//!    [`StateMachine::on_leader_stop`] comes when that leadership ends, and
//!    leader-only work must stop then. Each start is followed by exactly one
//!    stop before the next start.
//! 7. **Following is bracketed too.** [`StateMachine::on_start_following`]
//!    and [`StateMachine::on_stop_following`] come in pairs, one pair per
//!    leader followed.
//! 8. **Shutdown is last.** [`StateMachine::on_shutdown`] is the final call,
//!    made exactly once when the node stops, whatever the reason.

use tokio::sync::oneshot;

use crate::core::{Bytes, Membership};
use crate::NodeId;

use super::node::{NodeError, ProposeOutcome};

/// Where a proposal's outcome goes: the one client that proposed it.
pub(crate) type Reply = oneshot::Sender<Result<ProposeOutcome, NodeError>>;

/// One committed command handed to [`StateMachine::on_apply`].
///
/// Guarantees: `(index, term)` identifies the entry in the group's log; the
/// same entries reach every replica in the same order. If this node's
/// client proposed exactly this entry, [`Applied::respond`] answers it;
/// when the state machine does not respond, the client gets an empty
/// result once the entry is applied.
#[derive(Debug)]
pub struct Applied {
    /// The entry's log index.
    pub index: u64,
    /// The term the entry was proposed in.
    pub term: u64,
    /// The command, as proposed: the buffer the proposal arrived in (on
    /// the leader) or the received frame (on a follower), shared, never
    /// copied on its way here.
    pub data: Bytes,
    reply: Option<Reply>,
    /// Set when the iterator handed this entry to the state machine: only
    /// then does dropping it without a result count as success.
    yielded: bool,
}

impl Applied {
    pub(crate) fn new(index: u64, term: u64, data: Bytes, reply: Option<Reply>) -> Applied {
        Applied {
            index,
            term,
            data,
            reply,
            yielded: false,
        }
    }

    /// Whether a client on this node waits for this entry's result. The
    /// state machine must not behave differently because of it (rule 1); it
    /// may only skip building a result nobody reads.
    pub fn has_waiter(&self) -> bool {
        self.reply.is_some()
    }

    /// Hands `result` to the client that proposed this entry, if it waits on
    /// this node; otherwise does nothing. Only the first call counts.
    pub fn respond(&mut self, result: Vec<u8>) {
        if let Some(tx) = self.reply.take() {
            // The client may have stopped waiting: that is its choice.
            let _ = tx.send(Ok(ProposeOutcome {
                index: self.index,
                term: self.term,
                result,
            }));
        }
    }

    /// Fails the waiting client instead: used by the runtime for entries the
    /// state machine did not consume.
    pub(crate) fn fail(&mut self, err: NodeError) {
        if let Some(tx) = self.reply.take() {
            let _ = tx.send(Err(err));
        }
    }
}

impl Drop for Applied {
    fn drop(&mut self) {
        if self.yielded && !std::thread::panicking() {
            // Consumed and applied without an explicit result: the command
            // succeeded, with nothing to say. (Dropped while the state
            // machine panics, it was not applied: the branch below.)
            self.respond(Vec::new());
        } else {
            // Never handed to the state machine (it stopped early or
            // panicked): never report success for it.
            self.fail(NodeError::Failed(
                "the state machine did not apply the entry".into(),
            ));
        }
    }
}

/// The iterator `on_apply` receives: marks each entry as handed over.
pub(crate) struct Batch(pub(crate) std::vec::IntoIter<Applied>);

impl Iterator for Batch {
    type Item = Applied;

    fn next(&mut self) -> Option<Applied> {
        let mut a = self.0.next()?;
        a.yielded = true;
        Some(a)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

/// A replicated state machine, driven by a [`super::node::RaftNode`].
///
/// Every method runs on the node's apply task, in log order; see the module
/// docs for the rules an implementation must keep.
pub trait StateMachine: Send + 'static {
    /// Applies committed commands in log order (rules 1 to 3). Must consume
    /// the whole iterator. Entries that carry no command (a leader's no-op,
    /// membership changes) are not passed here.
    fn on_apply(&mut self, entries: &mut dyn Iterator<Item = Applied>);

    /// Returns the state as named files, exactly as of the last applied
    /// entry (rule 4). The runtime stores them with a checksum and may send
    /// them to other nodes, which pass them to `on_snapshot_load`.
    fn on_snapshot_save(&mut self) -> Vec<(String, Vec<u8>)>;

    /// Replaces the whole state by a snapshot's `files` (as returned by
    /// `on_snapshot_save`, names included), starting from empty (rule 5).
    /// Called at start when storage holds a snapshot, and when a snapshot
    /// from the leader is installed. The files were checked against their
    /// checksums; an `Err` means they cannot be understood, and stops the
    /// node.
    fn on_snapshot_load(&mut self, files: Vec<(String, Vec<u8>)>) -> Result<(), String>;

    /// This node leads `term`, and everything committed before its term is
    /// applied (rule 6). Leader-only work may start.
    fn on_leader_start(&mut self, _term: u64) {}

    /// The leadership that `on_leader_start` announced ended; leader-only
    /// work must stop (rule 6).
    fn on_leader_stop(&mut self) {}

    /// A membership change committed and is applied: `membership` is the
    /// group's configuration from now on (also called after a snapshot
    /// load, with the snapshot's configuration).
    fn on_configuration_committed(&mut self, _membership: &Membership) {}

    /// This node follows `leader` in `term` (rule 7).
    fn on_start_following(&mut self, _leader: NodeId, _term: u64) {}

    /// This node no longer follows the leader of the last
    /// `on_start_following` (rule 7).
    fn on_stop_following(&mut self) {}

    /// The node hit an error it cannot continue from (storage failure, a
    /// broken contract); it stops, and `on_shutdown` follows.
    fn on_error(&mut self, _error: &str) {}

    /// The node stopped; nothing is called after this (rule 8).
    fn on_shutdown(&mut self) {}
}
