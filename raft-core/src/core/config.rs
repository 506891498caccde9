//! Tunables of one Raft node, with their validation.

use super::message::NodeId;
use crate::Error;

/// How a node behaves; every queue and batch the core keeps has its limit here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This node's id (non-zero).
    pub id: NodeId,
    /// Ticks without hearing from a leader before a follower campaigns. The
    /// actual timeout is drawn at random from `[election_tick, 2 * election_tick)`.
    pub election_tick: u32,
    /// Ticks between leader heartbeats. Must be smaller than `election_tick`.
    pub heartbeat_tick: u32,
    /// Run a pre-vote round before a real election, so a node that was cut
    /// off cannot disrupt a healthy leader by bumping the term.
    pub pre_vote: bool,
    /// A leader steps down when it has not heard from a quorum within an
    /// election timeout; followers that hear from a leader ignore (pre-)votes
    /// for an election timeout. Required for lease reads.
    pub check_quorum: bool,
    /// Ticks for which a quorum's acknowledgement keeps a leader's read lease
    /// valid. Must be well below `election_tick` to absorb clock-rate drift
    /// between nodes; the default is half of it.
    pub lease_tick: u32,
    /// Most entries one `Append` carries.
    pub max_entries_per_msg: usize,
    /// Most entry bytes one `Append` carries (at least one entry is always sent).
    pub max_bytes_per_msg: u64,
    /// Most `Append` messages in flight to one follower in replicate state.
    pub max_inflight_msgs: usize,
    /// Most entry bytes handed to the state machine in one `Ready`.
    pub max_apply_bytes: u64,
    /// Most entries a leader holds uncommitted before refusing proposals.
    pub max_uncommitted_entries: u64,
    /// A joining member is caught up (and may become a voter) once it is
    /// within this many entries of the leader's log.
    pub catchup_margin: u64,
    /// Leader ticks a change waits for its joining members to catch up
    /// before it fails (and removes them again).
    pub catchup_timeout: u32,
    /// Most bytes of snapshot data in one chunk.
    pub snapshot_chunk_size: u64,
    /// Snapshot bytes a leader serves per tick, over all followers
    /// (0: unlimited). Chunk requests beyond it wait for later ticks.
    pub snapshot_bytes_per_tick: u64,
    /// Most followers a leader sends snapshots to at once.
    pub max_snapshot_sends: usize,
    /// Ticks a follower waits for a requested chunk before asking again.
    pub snapshot_request_timeout: u32,
    /// Largest step a message may move this node's term forward by. A
    /// message whose term is further ahead is dropped and counted
    /// ([`crate::RaftStatus::refused_messages`]): no real history makes
    /// that many elections happen while a node is away (one every
    /// millisecond for 49 days, by default), but one forged message with
    /// term `u64::MAX` would otherwise leave the group unable to ever
    /// elect a leader again (no term is left above it).
    pub max_term_jump: u64,
    /// Leader ticks a group must stay idle (every member holds the whole
    /// log, all of it committed and applied, no client or membership work
    /// waiting) before the leader quiesces it: no more heartbeats, no
    /// check-quorum, followers' election timers stopped until something
    /// wakes it (see `core/quiesce.rs`). 0 turns quiescence off, the
    /// default: a quiescent follower relies on its host's node-level
    /// liveness ([`crate::Raft::set_peer_alive`]) to notice that its
    /// leader's node died, and a host that does not report it must not
    /// turn this on.
    pub quiesce_after_ticks: u32,
    /// Injected bugs (test builds only): see [`crate::core::bugs`].
    #[cfg(feature = "bug-injection")]
    pub bugs: super::bugs::BugSet,
}

impl Config {
    /// Defaults that suit a 100 ms tick: 1 s election timeout, 100 ms heartbeats.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_tick: 10,
            heartbeat_tick: 1,
            pre_vote: true,
            check_quorum: true,
            lease_tick: 5,
            max_entries_per_msg: 64,
            max_bytes_per_msg: 1 << 20,
            max_inflight_msgs: 32,
            max_apply_bytes: 4 << 20,
            max_uncommitted_entries: 4096,
            catchup_margin: 64,
            catchup_timeout: 100,
            snapshot_chunk_size: 1 << 20,
            snapshot_bytes_per_tick: 0,
            max_snapshot_sends: 2,
            snapshot_request_timeout: 3,
            max_term_jump: 1 << 32,
            quiesce_after_ticks: 0,
            #[cfg(feature = "bug-injection")]
            bugs: Default::default(),
        }
    }

    /// Checks the relations between fields that the core relies on.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |why: &str| Err(Error::InvalidConfig(why.to_string()));
        if self.id == 0 {
            return bad("id must be non-zero");
        }
        if self.heartbeat_tick == 0 {
            return bad("heartbeat_tick must be at least 1");
        }
        if self.election_tick <= self.heartbeat_tick {
            return bad("election_tick must be greater than heartbeat_tick");
        }
        if self.lease_tick == 0 || self.lease_tick >= self.election_tick {
            return bad("lease_tick must be in 1..election_tick");
        }
        if self.max_entries_per_msg == 0 || self.max_bytes_per_msg == 0 {
            return bad("message batch limits must be non-zero");
        }
        if self.max_inflight_msgs == 0 {
            return bad("max_inflight_msgs must be at least 1");
        }
        if self.catchup_timeout == 0 {
            return bad("catchup_timeout must be at least 1");
        }
        if self.snapshot_chunk_size == 0 || self.max_snapshot_sends == 0 {
            return bad("snapshot chunk size and concurrent sends must be non-zero");
        }
        if self.snapshot_bytes_per_tick > 0
            && self.snapshot_bytes_per_tick < self.snapshot_chunk_size
        {
            // A chunk is served whole from one tick's budget: a budget
            // below the chunk size would never serve one.
            return bad("snapshot_bytes_per_tick must be 0 or at least snapshot_chunk_size");
        }
        if self.max_term_jump == 0 {
            return bad("max_term_jump must be at least 1");
        }
        if self.snapshot_request_timeout == 0 {
            return bad("snapshot_request_timeout must be at least 1");
        }
        if self.max_apply_bytes == 0 || self.max_uncommitted_entries == 0 {
            return bad("apply and uncommitted limits must be non-zero");
        }
        if self.quiesce_after_ticks != 0 && self.quiesce_after_ticks < self.heartbeat_tick {
            // A group idle for less than a heartbeat is only between two
            // proposals: quiescing it would cost a wake per proposal.
            return bad("quiesce_after_ticks must be 0 (off) or at least heartbeat_tick");
        }
        Ok(())
    }

    pub(crate) fn bug(&self, _bug: super::bugs::Bug) -> bool {
        #[cfg(feature = "bug-injection")]
        {
            self.bugs.has(_bug)
        }
        #[cfg(not(feature = "bug-injection"))]
        {
            false
        }
    }
}
