//! The types of an rtrace v1 file, one Rust type per JSON shape.
//!
//! The schema lives in types rather than in ad-hoc `json!` calls so the
//! writer, the checker and later readers (replay, the visualizer) cannot
//! disagree about a field name or type: what one serializes the others
//! deserialize. Field order on output is the declaration order below, which
//! keeps traces byte-identical for identical runs.

use std::fmt;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use crate::core::{Message, MessageBody, NodeId, Role};

/// The value of the header's `format` field.
pub const FORMAT: &str = "rtrace";
/// The format version this crate writes and reads.
pub const VERSION: u32 = 1;
/// The header `source` of one real node's own trace. Its `nodes` are the
/// members the node knew when the file was created; ids of members added
/// later may appear in its events' fields (never as an event's `node`).
pub const NODE_SOURCE: &str = "node";

/// The first line of every trace: what the file is and which nodes it covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`] for traces this crate writes.
    pub v: u32,
    /// What produced the trace, e.g. `"sim"`.
    pub source: String,
    /// The ids of the group's members; every event's `node` is one of them
    /// (or `0` for cluster-wide events).
    pub nodes: Vec<NodeId>,
    /// Free-form facts about the run (seed, flags, config). Keys serialize in
    /// a deterministic order (sorted, or insertion order if serde_json's
    /// `preserve_order` feature is on).
    #[serde(default)]
    pub meta: serde_json::Map<String, serde_json::Value>,
}

impl Header {
    /// A version-1 header for `nodes` with empty `meta`.
    pub fn new(source: impl Into<String>, nodes: Vec<NodeId>) -> Header {
        Header {
            format: FORMAT.to_string(),
            v: VERSION,
            source: source.into(),
            nodes,
            meta: serde_json::Map::new(),
        }
    }

    /// Sets `meta[key] = value`, replacing an earlier value of `key`.
    pub fn with_meta(
        mut self,
        key: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.meta.insert(key.into(), value.into());
        self
    }
}

/// A node's role as traces name it. Unlike [`Role`] it also covers a crashed
/// node (`down`) and the cluster pseudo-node `0` (`none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Follower,
    Precandidate,
    Candidate,
    Leader,
    /// The node is crashed (between `crash` and `restart`).
    Down,
    /// Only for node `0`, the cluster itself.
    None,
}

impl NodeRole {
    /// The name used on the wire.
    pub fn name(self) -> &'static str {
        match self {
            NodeRole::Follower => "follower",
            NodeRole::Precandidate => "precandidate",
            NodeRole::Candidate => "candidate",
            NodeRole::Leader => "leader",
            NodeRole::Down => "down",
            NodeRole::None => "none",
        }
    }
}

impl From<Role> for NodeRole {
    fn from(role: Role) -> NodeRole {
        match role {
            Role::Follower => NodeRole::Follower,
            Role::PreCandidate => NodeRole::Precandidate,
            Role::Candidate => NodeRole::Candidate,
            Role::Leader => NodeRole::Leader,
        }
    }
}

impl fmt::Display for NodeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One event line. Serializes as `t`, `node`, `ev`, `term`, `role`, `commit`
/// followed by the fields of [`Kind`], in that order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Record {
    /// Simulated time units, or wall-clock microseconds for real runs.
    /// Never decreases along a trace.
    pub t: u64,
    /// The node the event happened on; `0` is the cluster itself.
    pub node: NodeId,
    /// The node's term when the event was recorded (`0` for node `0`).
    pub term: u64,
    /// The node's role when the event was recorded.
    pub role: NodeRole,
    /// The node's commit index when the event was recorded.
    pub commit: u64,
    /// What happened; its `ev` tag names the kind.
    #[serde(flatten)]
    pub kind: Kind,
}

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Written by hand so `ev` comes third, where a reader looks for it;
        // a derived `flatten` would put it after `commit`.
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("t", &self.t)?;
        map.serialize_entry("node", &self.node)?;
        map.serialize_entry("ev", self.kind.name())?;
        map.serialize_entry("term", &self.term)?;
        map.serialize_entry("role", &self.role)?;
        map.serialize_entry("commit", &self.commit)?;
        self.kind.serialize_fields(&mut map)?;
        map.end()
    }
}

/// Which step of a leader transfer a `transfer` event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferPhase {
    Start,
    TimeoutNow,
    Abort,
}

/// Whether a `client` event is a request or its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientDir {
    Request,
    Reply,
}

/// The operation of a `client` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientOp {
    Put,
    Get,
}

/// The kind of an event and its kind-specific fields. The variant name in
/// snake_case is the `ev` value.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Kind {
    /// The node changed role; `role` in the record is the new one.
    Role {
        from: NodeRole,
        leader: Option<NodeId>,
    },
    /// The election timer fired.
    Timeout { pre_vote: bool },
    /// The node (a voter) answered a (pre-)vote request from `candidate`.
    Vote {
        candidate: NodeId,
        pre_vote: bool,
        granted: bool,
    },
    /// A leader stepped down for `reason` (e.g. `"check_quorum"`).
    Stepdown { reason: String },
    /// The group went quiescent on this node (`quiescent`), or woke for
    /// `reason` (`message`, `work`, `leader_dead`, `peer_alive`; empty
    /// when it went quiescent).
    Quiesce { quiescent: bool, reason: String },
    /// The node sent `m` to `to`. `id` is unique within the trace.
    Send { id: u64, to: NodeId, m: Msg },
    /// The node received the message of the earlier `send` `id` from `from`.
    Recv { id: u64, from: NodeId, m: Msg },
    /// The message of the earlier `send` `id` to `to` was lost.
    Drop { id: u64, to: NodeId, reason: String },
    /// Entries `first..=last` became durable in the node's log.
    Append {
        first: u64,
        last: u64,
        last_term: u64,
    },
    /// The hard state became durable.
    Persist {
        hs_term: u64,
        vote: Option<NodeId>,
        hs_commit: u64,
    },
    /// The node's commit index advanced to `index`.
    Commit { index: u64 },
    /// Entries `first..=last` were applied to the state machine.
    Apply { first: u64, last: u64 },
    /// The read with context `ctx` became safe to serve at `index`.
    Read { ctx: u64, index: u64, lease: bool },
    /// A step of a leader transfer to `to`.
    Transfer { phase: TransferPhase, to: NodeId },
    /// A client request to, or reply from, the node.
    Client {
        dir: ClientDir,
        client: u64,
        seq: u64,
        op: ClientOp,
        key: u64,
        value: Option<u64>,
        /// `None` for requests; `"ok"`, `"not_leader"`, `"timeout"`, ...
        /// for replies.
        outcome: Option<String>,
    },
    /// The node crashed: it loses everything not durable.
    Crash,
    /// The node restarted from its durable state.
    Restart,
    /// The node stopped taking ticks and messages (it keeps its state).
    Pause,
    /// A paused node continues.
    Resume,
    /// The directed links in `blocked` (`[from, to]` pairs) are cut.
    Partition { blocked: Vec<(NodeId, NodeId)> },
    /// All links are restored.
    Heal,
    /// The node's tick period became `period` time units.
    Tickrate { period: u64 },
    /// Snapshot activity. `phase`: `taken` (the state machine was saved at
    /// `index`), `offered` (leader, phase 1 to `peer`), `chunk_sent`,
    /// `chunk_received` (`ok` false: checksum failed, asked again),
    /// `resumed` (`bytes` already held), `installed`, `discarded`.
    Snapshot {
        phase: String,
        index: u64,
        peer: Option<NodeId>,
        bytes: u64,
        ok: bool,
    },
    /// The log before `upto` (inclusive) was discarded.
    Compact { upto: u64 },
    /// The configuration the node uses changed (it takes effect when its
    /// entry at `index` is appended; a truncation rolls it back, which
    /// shows as the inverse change). `change` says how: `loaded` (at start,
    /// from disk), `learned` (a node with no configuration got its first),
    /// `joint_entered`, `joint_left`, `voter_added`, `voter_removed`,
    /// `learner_added`, `learner_removed`, or `changed`.
    Config {
        change: String,
        index: u64,
        voters: Vec<NodeId>,
        outgoing: Vec<NodeId>,
        learners: Vec<NodeId>,
    },
}

impl Kind {
    /// The node ids this event names besides its own `node`: leaders,
    /// candidates, votes, message peers, transfer targets, configuration
    /// members, snapshot peers, partitioned nodes.
    pub fn named_nodes(&self) -> Vec<NodeId> {
        match self {
            Kind::Role {
                leader: Some(l), ..
            } => vec![*l],
            Kind::Vote { candidate, .. } => vec![*candidate],
            Kind::Send { to, .. } | Kind::Drop { to, .. } => vec![*to],
            Kind::Recv { from, .. } => vec![*from],
            Kind::Persist { vote: Some(v), .. } => vec![*v],
            Kind::Transfer { to, .. } => vec![*to],
            Kind::Config {
                voters,
                outgoing,
                learners,
                ..
            } => voters
                .iter()
                .chain(outgoing)
                .chain(learners)
                .copied()
                .collect(),
            Kind::Snapshot { peer: Some(p), .. } => vec![*p],
            Kind::Partition { blocked } => blocked.iter().flat_map(|&(a, b)| [a, b]).collect(),
            _ => Vec::new(),
        }
    }

    /// Every `ev` value, in declaration order.
    pub const NAMES: &'static [&'static str] = &[
        "role",
        "timeout",
        "vote",
        "stepdown",
        "quiesce",
        "send",
        "recv",
        "drop",
        "append",
        "persist",
        "commit",
        "apply",
        "read",
        "transfer",
        "client",
        "crash",
        "restart",
        "pause",
        "resume",
        "partition",
        "heal",
        "tickrate",
        "config",
        "snapshot",
        "compact",
    ];

    /// The `ev` value of this kind.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Role { .. } => "role",
            Kind::Timeout { .. } => "timeout",
            Kind::Vote { .. } => "vote",
            Kind::Stepdown { .. } => "stepdown",
            Kind::Quiesce { .. } => "quiesce",
            Kind::Send { .. } => "send",
            Kind::Recv { .. } => "recv",
            Kind::Drop { .. } => "drop",
            Kind::Append { .. } => "append",
            Kind::Persist { .. } => "persist",
            Kind::Commit { .. } => "commit",
            Kind::Apply { .. } => "apply",
            Kind::Read { .. } => "read",
            Kind::Transfer { .. } => "transfer",
            Kind::Client { .. } => "client",
            Kind::Crash => "crash",
            Kind::Restart => "restart",
            Kind::Pause => "pause",
            Kind::Resume => "resume",
            Kind::Partition { .. } => "partition",
            Kind::Heal => "heal",
            Kind::Tickrate { .. } => "tickrate",
            Kind::Config { .. } => "config",
            Kind::Snapshot { .. } => "snapshot",
            Kind::Compact { .. } => "compact",
        }
    }

    /// Writes the kind-specific fields (not `ev`) into `map`, in
    /// declaration order. Must name fields exactly as `Deserialize` expects;
    /// the round-trip test over every variant guards that.
    fn serialize_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        match self {
            Kind::Role { from, leader } => {
                map.serialize_entry("from", from)?;
                map.serialize_entry("leader", leader)
            }
            Kind::Timeout { pre_vote } => map.serialize_entry("pre_vote", pre_vote),
            Kind::Vote {
                candidate,
                pre_vote,
                granted,
            } => {
                map.serialize_entry("candidate", candidate)?;
                map.serialize_entry("pre_vote", pre_vote)?;
                map.serialize_entry("granted", granted)
            }
            Kind::Stepdown { reason } => map.serialize_entry("reason", reason),
            Kind::Quiesce { quiescent, reason } => {
                map.serialize_entry("quiescent", quiescent)?;
                map.serialize_entry("reason", reason)
            }
            Kind::Send { id, to, m } => {
                map.serialize_entry("id", id)?;
                map.serialize_entry("to", to)?;
                map.serialize_entry("m", m)
            }
            Kind::Recv { id, from, m } => {
                map.serialize_entry("id", id)?;
                map.serialize_entry("from", from)?;
                map.serialize_entry("m", m)
            }
            Kind::Drop { id, to, reason } => {
                map.serialize_entry("id", id)?;
                map.serialize_entry("to", to)?;
                map.serialize_entry("reason", reason)
            }
            Kind::Append {
                first,
                last,
                last_term,
            } => {
                map.serialize_entry("first", first)?;
                map.serialize_entry("last", last)?;
                map.serialize_entry("last_term", last_term)
            }
            Kind::Persist {
                hs_term,
                vote,
                hs_commit,
            } => {
                map.serialize_entry("hs_term", hs_term)?;
                map.serialize_entry("vote", vote)?;
                map.serialize_entry("hs_commit", hs_commit)
            }
            Kind::Commit { index } => map.serialize_entry("index", index),
            Kind::Apply { first, last } => {
                map.serialize_entry("first", first)?;
                map.serialize_entry("last", last)
            }
            Kind::Read { ctx, index, lease } => {
                map.serialize_entry("ctx", ctx)?;
                map.serialize_entry("index", index)?;
                map.serialize_entry("lease", lease)
            }
            Kind::Transfer { phase, to } => {
                map.serialize_entry("phase", phase)?;
                map.serialize_entry("to", to)
            }
            Kind::Client {
                dir,
                client,
                seq,
                op,
                key,
                value,
                outcome,
            } => {
                map.serialize_entry("dir", dir)?;
                map.serialize_entry("client", client)?;
                map.serialize_entry("seq", seq)?;
                map.serialize_entry("op", op)?;
                map.serialize_entry("key", key)?;
                map.serialize_entry("value", value)?;
                map.serialize_entry("outcome", outcome)
            }
            Kind::Crash | Kind::Restart | Kind::Pause | Kind::Resume | Kind::Heal => Ok(()),
            Kind::Partition { blocked } => map.serialize_entry("blocked", blocked),
            Kind::Tickrate { period } => map.serialize_entry("period", period),
            Kind::Config {
                change,
                index,
                voters,
                outgoing,
                learners,
            } => {
                map.serialize_entry("change", change)?;
                map.serialize_entry("index", index)?;
                map.serialize_entry("voters", voters)?;
                map.serialize_entry("outgoing", outgoing)?;
                map.serialize_entry("learners", learners)
            }
            Kind::Snapshot {
                phase,
                index,
                peer,
                bytes,
                ok,
            } => {
                map.serialize_entry("phase", phase)?;
                map.serialize_entry("index", index)?;
                map.serialize_entry("peer", peer)?;
                map.serialize_entry("bytes", bytes)?;
                map.serialize_entry("ok", ok)
            }
            Kind::Compact { upto } => map.serialize_entry("upto", upto),
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The traced summary of a [`Message`]: its type, term and the fields that
/// matter for reading a run. Entry payloads and lease ticks are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Msg {
    PreVote {
        term: u64,
        last_index: u64,
        last_term: u64,
        transfer: bool,
    },
    Vote {
        term: u64,
        last_index: u64,
        last_term: u64,
        transfer: bool,
    },
    PreVoteResp {
        term: u64,
        granted: bool,
    },
    VoteResp {
        term: u64,
        granted: bool,
    },
    Append {
        term: u64,
        prev_index: u64,
        prev_term: u64,
        /// The number of entries carried.
        entries: u64,
        /// The first and last carried index; both `0` when `entries == 0`.
        first: u64,
        last: u64,
        leader_commit: u64,
    },
    AppendResp {
        term: u64,
        success: bool,
        index: u64,
        hint_index: u64,
        hint_term: u64,
    },
    Heartbeat {
        term: u64,
        commit: u64,
        read_round: u64,
        /// The leader's last heartbeat before quiescence; written only
        /// when true, so traces without quiescence are unchanged.
        #[serde(default, skip_serializing_if = "is_false")]
        quiesce: bool,
    },
    HeartbeatResp {
        term: u64,
        read_round: u64,
    },
    TimeoutNow {
        term: u64,
    },
    /// Phase 1 of a snapshot install: the snapshot's meta.
    InstallSnapshot {
        term: u64,
        index: u64,
        snap_term: u64,
        files: u64,
        bytes: u64,
    },
    SnapshotChunkRequest {
        term: u64,
        index: u64,
        file: u32,
        offset: u64,
        len: u64,
    },
    SnapshotChunk {
        term: u64,
        index: u64,
        file: u32,
        offset: u64,
        len: u64,
        gone: bool,
    },
}

impl Msg {
    /// The `type` value, equal to [`MessageBody::kind_name`] of the source.
    pub fn name(&self) -> &'static str {
        match self {
            Msg::PreVote { .. } => "pre_vote",
            Msg::Vote { .. } => "vote",
            Msg::PreVoteResp { .. } => "pre_vote_resp",
            Msg::VoteResp { .. } => "vote_resp",
            Msg::Append { .. } => "append",
            Msg::AppendResp { .. } => "append_resp",
            Msg::Heartbeat { .. } => "heartbeat",
            Msg::HeartbeatResp { .. } => "heartbeat_resp",
            Msg::TimeoutNow { .. } => "timeout_now",
            Msg::InstallSnapshot { .. } => "install_snapshot",
            Msg::SnapshotChunkRequest { .. } => "snapshot_chunk_request",
            Msg::SnapshotChunk { .. } => "snapshot_chunk",
        }
    }

    /// The message's term.
    pub fn term(&self) -> u64 {
        match *self {
            Msg::PreVote { term, .. }
            | Msg::Vote { term, .. }
            | Msg::PreVoteResp { term, .. }
            | Msg::VoteResp { term, .. }
            | Msg::Append { term, .. }
            | Msg::AppendResp { term, .. }
            | Msg::Heartbeat { term, .. }
            | Msg::HeartbeatResp { term, .. }
            | Msg::TimeoutNow { term }
            | Msg::InstallSnapshot { term, .. }
            | Msg::SnapshotChunkRequest { term, .. }
            | Msg::SnapshotChunk { term, .. } => term,
        }
    }
}

impl From<&Message> for Msg {
    fn from(m: &Message) -> Msg {
        let term = m.term;
        match &m.body {
            &MessageBody::RequestVote {
                pre_vote,
                last_log_index,
                last_log_term,
                leader_transfer,
            } => {
                if pre_vote {
                    Msg::PreVote {
                        term,
                        last_index: last_log_index,
                        last_term: last_log_term,
                        transfer: leader_transfer,
                    }
                } else {
                    Msg::Vote {
                        term,
                        last_index: last_log_index,
                        last_term: last_log_term,
                        transfer: leader_transfer,
                    }
                }
            }
            &MessageBody::RequestVoteResponse { pre_vote, granted } => {
                if pre_vote {
                    Msg::PreVoteResp { term, granted }
                } else {
                    Msg::VoteResp { term, granted }
                }
            }
            MessageBody::Append {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                lease_tick: _,
            } => Msg::Append {
                term,
                prev_index: *prev_log_index,
                prev_term: *prev_log_term,
                entries: entries.len() as u64,
                first: entries.first().map_or(0, |e| e.index),
                last: entries.last().map_or(0, |e| e.index),
                leader_commit: *leader_commit,
            },
            &MessageBody::AppendResponse {
                success,
                index,
                hint_index,
                hint_term,
                lease_tick: _,
            } => Msg::AppendResp {
                term,
                success,
                index,
                hint_index,
                hint_term,
            },
            &MessageBody::Heartbeat {
                commit,
                read_round,
                lease_tick: _,
                quiesce,
            } => Msg::Heartbeat {
                term,
                commit,
                read_round,
                quiesce,
            },
            &MessageBody::HeartbeatResponse {
                read_round,
                lease_tick: _,
            } => Msg::HeartbeatResp { term, read_round },
            MessageBody::TimeoutNow => Msg::TimeoutNow { term },
            MessageBody::InstallSnapshot { meta } => Msg::InstallSnapshot {
                term,
                index: meta.index,
                snap_term: meta.term,
                files: meta.files.len() as u64,
                bytes: meta.total_bytes(),
            },
            &MessageBody::SnapshotChunkRequest {
                index,
                file,
                offset,
                len,
            } => Msg::SnapshotChunkRequest {
                term,
                index,
                file,
                offset,
                len,
            },
            MessageBody::SnapshotChunk {
                index,
                file,
                offset,
                data,
                gone,
                ..
            } => Msg::SnapshotChunk {
                term,
                index: *index,
                file: *file,
                offset: *offset,
                len: data.len() as u64,
                gone: *gone,
            },
        }
    }
}

/// Shorthand for `Msg::from(m)`.
pub fn summarize(m: &Message) -> Msg {
    Msg::from(m)
}
