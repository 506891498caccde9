//! What the page shows: the state of the whole cluster after some prefix
//! of a trace. Every type here serializes to the JSON the page reads, so
//! field names are short and each is documented.
//!
//! Times (`t`, `since`, `reset`, ...) are in the trace's own unit: simulated
//! milliseconds for `source: "sim"` traces, wall-clock microseconds for real
//! nodes' traces (`"node"`, `"merge"`).

use std::collections::BTreeMap;

use raft_core::trace::{ClientOp, Msg, NodeRole};
use raft_core::NodeId;
use serde::{Serialize, Serializer};

use super::runs::Runs;

/// The cluster after the first `event` events of a trace.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClusterState {
    /// `t` of the last applied event; `0` before the first.
    pub t: u64,
    /// How many events are applied (the `n` of `state_at`).
    pub event: usize,
    /// The leader of the highest term that a live (not down) node believes
    /// has a leader, or `null`. Beliefs in a node that has itself reached
    /// that term and is not leader (stepped down, crashed) do not count.
    /// The leader may be paused or cut off: check `nodes` and `blocked`.
    pub leader: Option<NodeId>,
    /// The term `leader` leads (`0` without a leader).
    pub leader_term: u64,
    /// The highest term any node (down ones included) has reached.
    pub max_term: u64,
    /// Every node of the header, by id (JSON object keys are the ids as
    /// strings).
    pub nodes: BTreeMap<NodeId, NodeState>,
    /// Messages sent and not yet received or dropped, by increasing id.
    /// Always empty for real nodes' traces, which record no messages.
    #[serde(serialize_with = "values")]
    pub msgs: BTreeMap<u64, InFlight>,
    /// The cluster's configuration as the page should draw it: the
    /// leader's when there is a leader that has one, otherwise the one with
    /// the highest `index` among live nodes (ties: lowest node id).
    pub config: Option<Config>,
    /// Directed links `[from, to]` currently cut. Each `partition` event
    /// replaces the whole set (the simulator lists every cut link in each),
    /// `heal` empties it.
    pub blocked: Vec<(NodeId, NodeId)>,
    /// Client requests without a reply yet, one per client at most (a
    /// client's new request replaces its previous one, which was abandoned
    /// or retried), by client id.
    #[serde(serialize_with = "values")]
    pub pending: BTreeMap<u64, ClientReq>,
    /// The last [`REPLIES_KEPT`] replies, oldest first.
    pub replies: Vec<ClientReply>,
    /// The last applied event told in one plain sentence (`null` before
    /// the first event).
    pub said: Option<Narration>,
}

/// One event told for a reader: what happened and what it means.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Narration {
    /// The event's index in the trace (0-based).
    pub i: usize,
    /// The node it happened on (`0`: the network).
    pub node: NodeId,
    /// Its `ev`.
    pub ev: &'static str,
    /// The sentence.
    pub text: String,
}

/// Where a node stands in the cluster's configuration (the one
/// [`ClusterState::config`] draws), for its badge.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Member {
    /// The trace has told no configuration yet.
    Unknown,
    /// A voter (in both sets while joint).
    Voter,
    /// A voter of the new set only, while joint.
    Joining,
    /// A voter of the old set only, while joint; or a leader that is in no
    /// set (it appended its own removal and leads until that commits).
    Leaving,
    /// A non-voting member catching up.
    Learner,
    /// Never a member so far: a spare node that may join later.
    Spare,
    /// Was a member, is no longer.
    Removed,
}

/// A snapshot a node is receiving.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SnapIn {
    /// The snapshot's last included index.
    pub index: u64,
    /// The leader that offered it (`0` when no offer was traced and the
    /// node knew no leader).
    pub from: NodeId,
    /// Its size in bytes; `0` when the trace has not said (the offer that
    /// restarted the transfer was a repeated one, which is not traced).
    pub total: u64,
    /// Bytes received and checked so far.
    pub got: u64,
}

/// How many client replies [`ClusterState::replies`] keeps.
pub const REPLIES_KEPT: usize = 8;

/// One node.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeState {
    pub id: NodeId,
    /// `follower`, `precandidate`, `candidate`, `leader`, or `down` (crashed).
    pub role: NodeRole,
    /// Current term. While down: the term it had when it crashed.
    pub term: u64,
    /// The candidate it voted for in `term` (`null`: none).
    pub vote: Option<NodeId>,
    /// The leader it knows of in `term` (itself when leader).
    pub leader: Option<NodeId>,
    /// Commit index. While down: the one it had when it crashed (a restart
    /// may come back with a lower, durable one).
    pub commit: u64,
    /// Last entry applied to its state machine.
    pub applied: u64,
    /// Its durable log.
    pub log: Log,
    /// Crashed (between `crash` and `restart`).
    pub down: bool,
    /// Paused (between `pause` and `resume`; no ticks, no messages).
    pub paused: bool,
    /// The (pre-)campaign it is running, while precandidate or candidate.
    pub campaign: Option<Campaign>,
    /// When its election timer last restarted: a valid append, heartbeat or
    /// snapshot message from a leader of its term, granting a vote, a role
    /// change, a timeout, a restart; `0` at the start of a simulator trace
    /// (every simulated node starts then). `null` before any.
    pub reset: Option<u64>,
    /// When its election timer last fired (`timeout` event).
    pub timeout: Option<u64>,
    /// The range its election timeout is drawn from, `[lo, hi)` in trace
    /// time, scaled by its tick period; `null` when the header does not say
    /// (see `Replay` docs for the meta keys read).
    pub timeout_range: Option<(u64, u64)>,
    /// Its tick period in trace time (header meta `tick`, changed by
    /// `tickrate` events), `null` if unknown.
    pub period: Option<u64>,
    /// The configuration it uses.
    pub config: Option<Config>,
    /// The last event recorded on this node.
    pub last: Option<LastEvent>,
    /// Its place in the cluster's configuration.
    pub member: Member,
    /// The snapshot it is receiving, while a transfer is under way.
    pub snap_in: Option<SnapIn>,
}

/// A node's log, as far as the trace shows it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Log {
    /// The first index held: everything before was compacted away (or
    /// replaced by an installed snapshot). `1` for a log never compacted.
    pub first: u64,
    /// The last index held (`first - 1` when empty; then it is the
    /// snapshot's index if there is one).
    pub last: u64,
    /// The terms of entries `first..=last` as `[first_index, last_index,
    /// term]` runs, by index.
    pub terms: Runs,
    /// Index of its latest snapshot (taken or installed), `0` for none.
    pub snap: u64,
}

/// A (pre-)campaign in progress.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Campaign {
    /// A pre-vote round (no term change yet) rather than an election.
    pub pre: bool,
    /// The term campaigned for (for a pre-vote, the node's term + 1).
    pub term: u64,
    /// When it started.
    pub since: u64,
    /// Nodes that granted their (pre-)vote, itself included, by id.
    pub granted: Vec<NodeId>,
    /// Nodes that refused, by id.
    pub denied: Vec<NodeId>,
}

/// A membership configuration.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Config {
    /// The index of the entry that introduced it (`0` for the initial one).
    pub index: u64,
    /// The voters (C_new while joint).
    pub voters: Vec<NodeId>,
    /// C_old while joint, empty otherwise.
    pub outgoing: Vec<NodeId>,
    /// Non-voting members.
    pub learners: Vec<NodeId>,
    /// The `change` of the event that set it (`loaded`, `joint_entered`,
    /// `voter_added`, ...).
    pub change: String,
}

/// A message on its way.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InFlight {
    /// The trace's message id.
    pub id: u64,
    pub from: NodeId,
    pub to: NodeId,
    /// When it was sent.
    pub t: u64,
    /// The message summary as traced: `type` (e.g. `append`), `term`, and
    /// the fields of its type (see the trace format's message table).
    pub m: Msg,
    /// The message in words (filled in for the page; empty inside replay).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub about: String,
}

/// A client request waiting for its reply.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClientReq {
    pub client: u64,
    pub seq: u64,
    /// `put` or `get`.
    pub op: ClientOp,
    pub key: u64,
    /// The value written (puts).
    pub value: Option<u64>,
    /// The node it was sent to.
    pub node: NodeId,
    /// When it was sent.
    pub t: u64,
}

/// A client reply.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClientReply {
    pub client: u64,
    pub seq: u64,
    pub op: ClientOp,
    pub key: u64,
    /// The value read (gets).
    pub value: Option<u64>,
    /// `ok`, `not_leader`, `timeout`, `transferring`, ...
    pub outcome: String,
    /// The node that replied.
    pub node: NodeId,
    pub t: u64,
}

/// An event, briefly.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LastEvent {
    /// Its index in the trace (0-based; the `record(i)` it is).
    pub i: usize,
    pub t: u64,
    /// Its `ev` (e.g. `recv`).
    pub ev: &'static str,
}

/// Serializes a map's values as a JSON array.
fn values<K, V: Serialize, S: Serializer>(map: &BTreeMap<K, V>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(map.values())
}
