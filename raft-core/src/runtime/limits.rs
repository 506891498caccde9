//! Every limit of the runtime, in one place, with the relations between
//! them asserted at the bottom (a compile-time check: a change that breaks
//! one does not build).
//!
//! A node takes input from peers it does not control and from clients it
//! does not control; each queue between them and the core holds that input
//! until the node gets to it. A queue bounded only in items is bounded in
//! memory only by items times the largest item (4096 envelopes of up to
//! 64 MiB is 256 GiB), so every queue here that holds payloads is bounded
//! in **bytes** as well as in items, and refuses (drops and counts, or
//! answers busy) at whichever limit it reaches first.
//!
//! What counts as an item's bytes: for an envelope, its encoded length
//! ([`super::codec::encoded_len`], at most [`MAX_ENVELOPE_BYTES`]); for a
//! proposal, its data. Payloads are shared ([`crate::core::Bytes`]): an
//! `Append` queued for five peers is one buffer counted in five queues, so
//! each queue's count bounds what that queue alone keeps alive.
//!
//! The limits an operator may want to tune are fields of the config
//! structs ([`super::transport::TransportConfig`], [`super::node::NodeConfig`])
//! whose defaults are here; their `validate` checks the same relations at
//! start. Limits that are not the runtime's own live with their owners and
//! are only related to these here: the core's batches and windows in
//! [`crate::Config`], the entry cache's size in
//! [`crate::storage::DEFAULT_ENTRY_CACHE_BYTES`], the local log's largest
//! record in [`crate::storage::local::MAX_ENTRY_DATA_BYTES`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

// ----- the wire (codec) ------------------------------------------------------

/// Most entries one `Append` may carry on the wire.
pub const MAX_ENTRIES_PER_MESSAGE: usize = 1 << 16;
/// Largest data an entry or a snapshot chunk may carry on the wire, in
/// bytes. A proposal above it is refused ([`super::node::NodeError::TooLarge`]):
/// it could never be replicated.
pub const MAX_DATA_BYTES: usize = 16 << 20;
/// Most node ids in each list of a configuration on the wire.
pub const MAX_CONF_NODES: usize = 1 << 12;
/// Most files a snapshot meta may list on the wire.
pub const MAX_SNAPSHOT_FILES: usize = 1 << 12;
/// Longest snapshot file name on the wire, in bytes.
pub const MAX_FILE_NAME_BYTES: usize = 1 << 12;
/// Largest encoded envelope, in bytes: the transport refuses frames above
/// it, and a sender drops (counts) an envelope past it instead of sending.
pub const MAX_ENVELOPE_BYTES: usize = 64 << 20;

// ----- the transport ---------------------------------------------------------

/// Largest frame body (version, kind, envelope) accepted after a handshake.
pub const MAX_FRAME_BYTES: usize = MAX_ENVELOPE_BYTES + 2;
/// Largest frame body accepted before a handshake completes: an
/// unauthenticated client can make a node allocate at most this much.
pub const MAX_HANDSHAKE_FRAME_BYTES: usize = 1024;
/// Longest cluster token, in bytes.
pub const MAX_TOKEN_BYTES: usize = 256;
/// Events a transport keeps for its stats; older ones are discarded.
pub const MAX_EVENTS: usize = 256;
/// Sources whose last refusal a transport remembers (to log one event per
/// source and reason); the memory is cleared when it fills.
pub const MAX_REFUSAL_SOURCES: usize = 1024;
/// A writer gathers at most this many bytes of frames into one write
/// (one frame may pass it: a frame is never split).
pub const WRITE_BATCH_BYTES: usize = 256 << 10;
/// Default `TransportConfig::queue_limit`: envelopes waiting to be written
/// to one peer.
pub const DEFAULT_QUEUE_LIMIT: usize = 4096;
/// Default `TransportConfig::queue_bytes`: bytes of envelopes waiting to
/// be written to one peer. Two of the largest envelopes (one being
/// written, one waiting); at 1 MiB `Append`s (the core's default batch)
/// that is 128 of them, four times the core's in-flight window.
pub const DEFAULT_QUEUE_BYTES: usize = 2 * MAX_ENVELOPE_BYTES;
/// Default `TransportConfig::inbound_limit`: received envelopes waiting
/// for the receiver.
pub const DEFAULT_INBOUND_LIMIT: usize = 4096;
/// Default `TransportConfig::inbound_bytes`: bytes of received envelopes
/// waiting for the receiver, over all peers. Past it, readers stop reading
/// (TCP pushes back to the senders, whose queues then drop).
pub const DEFAULT_INBOUND_BYTES: usize = 2 * MAX_ENVELOPE_BYTES;
/// Default `TransportConfig::max_inbound_connections`.
pub const DEFAULT_MAX_INBOUND_CONNECTIONS: usize = 1024;
/// Default `TransportConfig::max_buffered_bytes`: four frames of the
/// largest size, so a few peers can send a large frame at once while a
/// node's frame buffers never hold more than 256 MiB.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 4 * MAX_FRAME_BYTES;
/// A frame's body is read in pieces of at most this many bytes: memory for
/// a frame is allocated as its bytes arrive, never on the word of a header.
pub const READ_CHUNK_BYTES: usize = 64 << 10;
/// A connection keeps a read buffer of at most this capacity between
/// frames (a handshake's); a larger one is given back. An envelope frame's
/// buffer leaves with the envelope it holds (its entries share it).
pub const RETAINED_READ_BUFFER_BYTES: usize = 256 << 10;
/// Default `TransportConfig::idle_timeout`: far longer than any heartbeat
/// interval or election timeout a node is configured with (tens to hundreds
/// of milliseconds), so a live peer always sends something before it; the
/// node raises it when its own ticks are unusually slow.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `TransportConfig::stall_timeout`: a frame that has begun must
/// make progress this often. Like `TransportConfig::write_timeout` on the
/// sending side, it only has to outlast a congested link, not an idle one.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(10);

// ----- the node (one group) --------------------------------------------------

/// Most inbound messages queued for a node's task. A full inbox drops the
/// message (`NodeHandle::step` answers `Busy`); Raft retries.
pub const INBOX_QUEUE: usize = 4096;
/// Default `NodeConfig::inbox_bytes`: bytes of inbound messages queued for
/// a node's task; past it, like past [`INBOX_QUEUE`], a message is dropped.
pub const DEFAULT_INBOX_BYTES: usize = 2 * MAX_ENVELOPE_BYTES;
/// Most requests (reads, transfers, membership changes, status, shutdown)
/// queued for a node's task. They carry no payload.
pub const CONTROL_QUEUE: usize = 1024;
/// Most reads a new leader holds until it has committed an entry of its
/// term (before that it cannot serve any); beyond, reads are refused.
pub const MAX_DEFERRED_READS: usize = 4096;
/// Default `NodeConfig::proposal_queue`: proposals queued for a node's task.
pub const DEFAULT_PROPOSAL_QUEUE: usize = 4096;
/// Default `NodeConfig::proposal_bytes`: bytes of proposals queued for a
/// node's task; past it a proposal is answered `Busy`.
pub const DEFAULT_PROPOSAL_BYTES: usize = 4 * MAX_DATA_BYTES;
/// Batches of committed entries (each at most the core's
/// `Config::max_apply_bytes`, or one entry) queued for the apply task.
/// Full, the node task waits: the state machine's pace bounds the group's.
pub const APPLY_QUEUE: usize = 64;
/// Snapshots taken by the apply task waiting for the node task to store.
pub const SNAPSHOT_QUEUE: usize = 1;
/// The buffer a snapshot file streams through in the runtime (checksumming
/// a saved snapshot's files, copying a snapshot out of a store held in
/// memory), in bytes: with the core's `snapshot_chunk_size` per chunk in
/// flight, what saving, sending and installing a snapshot of any size
/// holds in memory.
pub const SNAPSHOT_IO_BUFFER: usize = 1 << 20;

// ----- the relations the limits above rely on --------------------------------

const _: () = {
    // Every configuration the core accepts fits the wire format.
    assert!(crate::core::MAX_MEMBERS <= MAX_CONF_NODES);
    // An entry of the largest size fits an envelope, with room for its
    // header and the message's.
    assert!(MAX_DATA_BYTES + 1024 <= MAX_ENVELOPE_BYTES);
    // ...and the local log can store every entry the wire carries.
    assert!(MAX_DATA_BYTES as u64 <= crate::storage::local::MAX_ENTRY_DATA_BYTES);
    // A frame is an envelope plus version and kind.
    assert!(MAX_FRAME_BYTES == MAX_ENVELOPE_BYTES + 2);
    // One envelope of the largest size always fits an empty peer queue, an
    // empty inbound queue and an empty inbox (else it could never pass).
    assert!(DEFAULT_QUEUE_BYTES >= MAX_ENVELOPE_BYTES);
    assert!(DEFAULT_INBOUND_BYTES >= MAX_ENVELOPE_BYTES);
    assert!(DEFAULT_INBOX_BYTES >= MAX_ENVELOPE_BYTES);
    // One proposal of the largest size always fits an empty proposal queue.
    assert!(DEFAULT_PROPOSAL_BYTES >= MAX_DATA_BYTES);
    // One frame of the largest size always fits the frame buffers.
    assert!(DEFAULT_MAX_BUFFERED_BYTES >= MAX_FRAME_BYTES);
    assert!(READ_CHUNK_BYTES <= RETAINED_READ_BUFFER_BYTES);
    assert!(MAX_HANDSHAKE_FRAME_BYTES <= READ_CHUNK_BYTES);
    // The inbound byte count is a semaphore of u32-sized acquisitions.
    assert!(MAX_FRAME_BYTES <= u32::MAX as usize);
    // The node drains its inbox in one pass of at most INBOX_QUEUE.
    assert!(INBOX_QUEUE >= 1 && CONTROL_QUEUE >= 1 && APPLY_QUEUE >= 1);
};

// ----- byte budgets ----------------------------------------------------------

/// Bytes held by one queue against its limit: taken by whoever queues an
/// item, given back when the item leaves (through [`HeldBytes`], so an
/// item dropped on any path gives its bytes back). Lock-free, shared by the
/// queue's ends.
#[derive(Debug)]
pub(crate) struct ByteBudget {
    limit: u64,
    held: AtomicU64,
    peak: AtomicU64,
}

impl ByteBudget {
    pub(crate) fn new(limit: usize) -> Arc<ByteBudget> {
        Arc::new(ByteBudget {
            limit: limit as u64,
            held: AtomicU64::new(0),
            peak: AtomicU64::new(0),
        })
    }

    /// Takes `n` bytes if they fit under the limit, else takes nothing and
    /// returns `None`.
    pub(crate) fn try_take(self: &Arc<ByteBudget>, n: usize) -> Option<HeldBytes> {
        let n = n as u64;
        let mut held = self.held.load(Ordering::Relaxed);
        loop {
            let next = held.checked_add(n).filter(|&t| t <= self.limit)?;
            match self
                .held
                .compare_exchange_weak(held, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.peak.fetch_max(next, Ordering::Relaxed);
                    return Some(HeldBytes {
                        budget: self.clone(),
                        n,
                    });
                }
                Err(now) => held = now,
            }
        }
    }

    /// Bytes held now.
    pub(crate) fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// The most bytes held at once since the budget was made.
    pub(crate) fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

/// Bytes taken from a [`ByteBudget`]; dropping this gives them back.
#[derive(Debug)]
pub(crate) struct HeldBytes {
    budget: Arc<ByteBudget>,
    n: u64,
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::ByteBudget;

    #[test]
    fn a_budget_refuses_past_its_limit_and_gets_bytes_back_on_drop() {
        let b = ByteBudget::new(100);
        let first = b.try_take(60).expect("fits");
        assert!(b.try_take(41).is_none(), "60 + 41 > 100");
        assert_eq!(b.held(), 60, "a refusal takes nothing");
        let second = b.try_take(40).expect("exactly the limit fits");
        assert_eq!(b.held(), 100);
        drop(first);
        assert_eq!(b.held(), 40);
        drop(second);
        assert_eq!((b.held(), b.peak()), (0, 100));
        assert!(b.try_take(101).is_none(), "larger than the whole budget");
        assert!(b.try_take(usize::MAX).is_none(), "no overflow");
    }
}
