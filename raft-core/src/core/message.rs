//! The data the core exchanges with the world: log entries, the durable hard
//! state, and the messages peers send each other.
//!
//! Messages are a closed enum, one variant per RPC, so a reader sees every
//! field a message can carry in one place and the compiler checks that each
//! role handles each kind.
//!
//! Payloads (an entry's data, a snapshot chunk's bytes) are [`Bytes`]: a
//! shared, immutable buffer. The leader's log, the `Append` it sends each
//! follower, the entry cache and the apply hand-off all hold the one buffer
//! a proposal arrived in; cloning an entry or a message counts a reference
//! instead of copying the payload.

pub use bytes::Bytes;

/// Identifies one member of a Raft group. `0` is never a valid id.
pub type NodeId = u64;

/// What an entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Client data, handed to the state machine on apply.
    Normal,
    /// The empty entry a new leader appends to commit its predecessors'
    /// entries; the state machine skips it.
    Noop,
    /// A membership change ([`super::ConfChange`], encoded). It takes effect
    /// when appended; the state machine is told when it commits.
    ConfChange,
}

/// One log entry. `(index, term)` identifies it uniquely within a group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    pub index: u64,
    pub term: u64,
    pub kind: EntryKind,
    /// Shared, not copied, by every clone of the entry.
    pub data: Bytes,
}

impl Entry {
    /// Bytes this entry counts for in message and apply batching limits.
    pub fn size(&self) -> u64 {
        // A fixed overhead stands for the index, term and framing.
        24 + self.data.len() as u64
    }
}

/// The state that must be durable before any message that depends on it is
/// sent: the current term, the vote cast in it, and the commit index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct HardState {
    pub term: u64,
    pub vote: Option<NodeId>,
    pub commit: u64,
}

/// The membership recorded outside the log: the configuration in effect as
/// of log index `index` (a snapshot's, or one forced by `reset_peers`).
/// Configuration entries in the log after `index` apply on top of it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct ConfState {
    pub index: u64,
    pub voters: Vec<NodeId>,
    /// The outgoing voters while joint; empty otherwise.
    pub outgoing: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

/// One file of a snapshot, with what a receiver needs to check it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SnapshotFile {
    pub name: String,
    pub size: u64,
    /// CRC-32C of the whole file.
    pub crc: u32,
}

/// What identifies a snapshot: the last entry it includes, the
/// configuration as of that entry, and its files. Two snapshots with equal
/// metas hold the same bytes, so a receiver can resume one from another
/// sender (a new leader).
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct SnapshotMeta {
    pub index: u64,
    pub term: u64,
    pub conf: ConfState,
    pub files: Vec<SnapshotFile>,
}

impl SnapshotMeta {
    /// Bytes in all files.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// CRC-32C (Castagnoli) of `data`: the checksum of snapshot chunks and
/// files, log records, wire frames and engine sectors. The `crc32c` crate
/// uses the CPU's CRC instruction where there is one (SSE 4.2, ARMv8):
/// every 4 KiB a replica writes or serves is checksummed several times,
/// and a table-driven CRC was the largest single cost of a served read.
pub fn checksum(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// The CRC-32C of `a` followed by `data`, given `crc == checksum(a)`:
/// `checksum_extend(checksum(a), b) == checksum(a ++ b)`, and
/// `checksum_extend(0, b) == checksum(b)`. This is how a file's checksum
/// is computed piece by piece (as chunks arrive, or as a file streams
/// through a bounded buffer) without holding the file.
pub fn checksum_extend(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

/// A message between two members of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    /// The sender's term; for a pre-vote request, the term the sender would
    /// campaign in (its own term plus one).
    pub term: u64,
    pub body: MessageBody,
}

/// The payload of a [`Message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageBody {
    /// A (pre-)vote request. `leader_transfer` marks a campaign started by
    /// `TimeoutNow`, which voters honour even while they hear from a leader.
    RequestVote {
        pre_vote: bool,
        last_log_index: u64,
        last_log_term: u64,
        leader_transfer: bool,
    },
    /// The answer to a (pre-)vote request.
    RequestVoteResponse { pre_vote: bool, granted: bool },
    /// Replicates `entries`, which follow `(prev_log_index, prev_log_term)`.
    Append {
        prev_log_index: u64,
        prev_log_term: u64,
        entries: Vec<Entry>,
        leader_commit: u64,
        /// The leader's tick clock when it sent this; echoed back for leases.
        lease_tick: u64,
    },
    /// The answer to an `Append`. On success `index` is the last index the
    /// follower now holds that matches the leader; on rejection it is the
    /// `prev_log_index` that did not match, and `hint_index`/`hint_term`
    /// name the follower's last entry that might match (fast backtracking).
    AppendResponse {
        success: bool,
        index: u64,
        hint_index: u64,
        hint_term: u64,
        lease_tick: u64,
    },
    /// Keeps followers from timing out and confirms leadership for reads.
    Heartbeat {
        /// `min(follower's match, leader commit)`: never past the follower's log.
        commit: u64,
        /// The ReadIndex round this heartbeat confirms (0: none).
        read_round: u64,
        lease_tick: u64,
        /// The leader's last heartbeat before its group goes quiescent
        /// (`quiesce.rs`): a follower whose log ends at `commit`, in this
        /// term, stops its election timer and does not answer.
        quiesce: bool,
    },
    /// The answer to a heartbeat, echoing its round and lease tick.
    HeartbeatResponse { read_round: u64, lease_tick: u64 },
    /// Tells a caught-up follower to campaign at once (leader transfer).
    TimeoutNow,
    /// Phase 1 of a snapshot install: what the snapshot is. The follower
    /// then pulls the data (phase 2), resuming any partial copy it holds.
    InstallSnapshot { meta: SnapshotMeta },
    /// A follower asks for `len` bytes of file `file` at `offset` of the
    /// leader's snapshot at `index`.
    SnapshotChunkRequest {
        index: u64,
        file: u32,
        offset: u64,
        len: u64,
    },
    /// The bytes asked for, with their CRC-32C; `gone` when the leader no
    /// longer has the snapshot at `index` (the follower starts over).
    SnapshotChunk {
        index: u64,
        file: u32,
        offset: u64,
        data: Bytes,
        crc: u32,
        gone: bool,
    },
}

impl MessageBody {
    /// A short, stable name for traces and logs.
    pub fn kind_name(&self) -> &'static str {
        match self {
            MessageBody::RequestVote { pre_vote: true, .. } => "pre_vote",
            MessageBody::RequestVote {
                pre_vote: false, ..
            } => "vote",
            MessageBody::RequestVoteResponse { pre_vote: true, .. } => "pre_vote_resp",
            MessageBody::RequestVoteResponse {
                pre_vote: false, ..
            } => "vote_resp",
            MessageBody::Append { .. } => "append",
            MessageBody::AppendResponse { .. } => "append_resp",
            MessageBody::Heartbeat { .. } => "heartbeat",
            MessageBody::HeartbeatResponse { .. } => "heartbeat_resp",
            MessageBody::TimeoutNow => "timeout_now",
            MessageBody::InstallSnapshot { .. } => "install_snapshot",
            MessageBody::SnapshotChunkRequest { .. } => "snapshot_chunk_request",
            MessageBody::SnapshotChunk { .. } => "snapshot_chunk",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{checksum, checksum_extend};

    #[test]
    fn a_checksum_extended_piece_by_piece_equals_the_whole() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        assert_eq!(checksum(b""), 0);
        assert_eq!(checksum_extend(0, &data), checksum(&data));
        for cut in [0, 1, 15, 16, 17, 4096, 9_999, 10_000] {
            let (a, b) = data.split_at(cut);
            assert_eq!(
                checksum_extend(checksum(a), b),
                checksum(&data),
                "cut {cut}"
            );
        }
        // The standard check value of CRC-32C.
        assert_eq!(checksum(b"123456789"), 0xE306_9283);
    }
}
