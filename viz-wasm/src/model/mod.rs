//! The replay model: an rtrace trace, and the state of the whole cluster
//! after any prefix of it, fast enough to scrub through.
//!
//! [`Replay::parse`] validates a trace with raft-core's checker, replays it
//! once and keeps a checkpoint (a full clone of the replay state) every
//! [`CHECKPOINT_EVERY`] events; [`Replay::state_at`] clones the checkpoint
//! at or before `n` and applies the few records after it.
//!
//! What the model derives, and from which events (see [`ClusterState`] for
//! the fields):
//!
//! - term, role and commit of a node come from every record of that node
//!   (each carries them), except records made while it was down (they
//!   carry `0`s): a down node keeps showing what it had when it crashed;
//! - `crash` makes it `down`; `restart` keeps what is durable: its log
//!   (`append` records are durability), its snapshot and its term and vote
//!   (`persist`), takes the commit index the restart record carries and
//!   restarts its state machine from the snapshot (`applied` = snapshot
//!   index, then `apply` records move it);
//! - a leader's `append` entries are of its term; a follower's get their
//!   terms from the `append` messages it received (each `send` copies the
//!   terms of the carried range out of the sender's log, Log Matching makes
//!   them the follower's), else from the log of the node that last sent it
//!   entries, else the record's `last_term`; `last_term` always wins for the
//!   last entry ([`Replay::term_mismatches`] counts when it had to);
//! - a snapshot `installed` replaces the log (empty, first index after the
//!   snapshot); `taken` only moves the snapshot index; `compact` drops the
//!   prefix;
//! - votes of a campaign: from the granted/refused `pre_vote_resp` and
//!   `vote_resp` messages it received, or, in traces without messages (real
//!   nodes'), from the voters' `vote` records;
//! - the election timer restarts on a valid append, heartbeat or snapshot
//!   message from a leader of the node's term, a granted vote, a role
//!   change, a timeout and a restart. The range of the timeout comes from
//!   the header meta: `election_tick` (ticks; the core draws from `[e, 2e)`)
//!   times the node's tick period (meta `tick`, then `tickrate` events), or
//!   `election_timeout` (`[lo, hi]` in trace time); otherwise `null`.
//!
//! What the trace cannot tell, so the model shows approximately:
//!
//! - a message the network duplicated is received twice under one id: it
//!   leaves `msgs` at its first `recv`;
//! - messages a paused node had queued are lost without a `drop` if it then
//!   crashes (they stay in `msgs`);
//! - a `partition` event is taken as the whole set of cut links (as the
//!   simulator writes it), not as links added to the earlier ones;
//! - real nodes' traces (`node`, `merge`) have no messages, appends,
//!   commits or applies: no in-flight messages, no log terms, followers'
//!   timers restart only on role changes, votes and timeouts; votes are
//!   counted when the voter records them (clocks of different machines
//!   may order them before the candidacy, then they are missed); a killed
//!   node records no `crash` (it shows as running until its `restart`);
//!   and no `config` is recorded at start, so configurations are `null`
//!   until the first change.

mod apply;
pub mod moment;
pub mod narrate;
pub mod runs;
pub mod state;

use std::fmt;

use raft_core::trace::{parse_str, Header, Kind, Record};
use serde::Serialize;

use apply::{Ctx, Machine};
use moment::Moments;

pub use moment::Moment;
pub use runs::{Run, Runs};
pub use state::{
    Campaign, ClientReply, ClientReq, ClusterState, Config, InFlight, LastEvent, Log, Member,
    Narration, NodeState, SnapIn, REPLIES_KEPT,
};

/// Events between two checkpoints.
pub const CHECKPOINT_EVERY: usize = 256;

/// Why a trace could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadError {
    /// The 1-based line of the problem (the header is line 1).
    pub line: usize,
    /// What is wrong there.
    pub reason: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for LoadError {}

/// A loaded trace, ready to be scrubbed through.
#[derive(Debug, Clone)]
pub struct Replay {
    header: Header,
    records: Vec<Record>,
    ctx: Ctx,
    /// `checkpoints[k]` is the state after `k * every` events.
    checkpoints: Vec<Machine>,
    every: usize,
    /// The state after every record (for [`Replay::push`] and
    /// [`Replay::last_state`]).
    tip: Machine,
    moments: Moments,
    mismatches: usize,
}

impl Replay {
    /// Parses and validates `text` (an rtrace v1 file). On error, the
    /// 1-based line and why. Never panics.
    pub fn parse(text: &str) -> Result<Replay, LoadError> {
        Replay::parse_with_checkpoints(text, CHECKPOINT_EVERY)
    }

    /// [`Replay::parse`] with a checkpoint every `every` events (at least
    /// 1); a huge `every` keeps only the empty state.
    pub fn parse_with_checkpoints(text: &str, every: usize) -> Result<Replay, LoadError> {
        let trace = parse_str(text).map_err(|e| LoadError {
            line: e.line,
            reason: e.reason,
        })?;
        Ok(Replay::new(trace.header, trace.records, every))
    }

    /// A replay of records that are already parsed (valid ones, as
    /// `raft_core::trace::parse_str` returns them; records of nodes not in
    /// the header are ignored), with a checkpoint every `every` events.
    pub fn new(header: Header, records: Vec<Record>, every: usize) -> Replay {
        let every = every.max(1);
        let ctx = Ctx::new(&header, &records);
        let mut m = Machine::new(&header, &ctx);
        let mut checkpoints = vec![m.clone()];
        for (i, r) in records.iter().enumerate() {
            m.apply(&ctx, i, r);
            if (i + 1) % every == 0 {
                checkpoints.push(m.clone());
            }
        }
        Replay {
            moments: Moments::new(&records),
            mismatches: m.mismatches,
            header,
            records,
            ctx,
            checkpoints,
            every,
            tip: m,
        }
    }

    /// Appends `record` to the trace and replays it: the trace grows as
    /// the live mode runs. `record` must be valid after the records so far
    /// (as `raft_core::trace::check_str` would accept it). The result is
    /// the same as parsing the longer trace.
    pub fn push(&mut self, record: Record) {
        if !self.ctx.has_msgs && matches!(record.kind, Kind::Send { .. }) {
            // The first message changes how campaigns are counted from the
            // start (responses instead of voters' records): replay again.
            let mut records = std::mem::take(&mut self.records);
            records.push(record);
            *self = Replay::new(self.header.clone(), records, self.every);
            return;
        }
        let i = self.records.len();
        self.tip.apply(&self.ctx, i, &record);
        // `checkpoints[k]` is the state after `k * every` events.
        if i + 1 == self.checkpoints.len() * self.every {
            self.checkpoints.push(self.tip.clone());
        }
        self.moments.push(i, &record);
        self.mismatches = self.tip.mismatches;
        self.records.push(record);
    }

    /// The state after every event: [`Replay::state_at`] of `len()`,
    /// without replaying anything.
    pub fn last_state(&self) -> ClusterState {
        let mut m = self.tip.clone();
        m.summarize();
        self.tell(m.state)
    }

    /// `state` with its `said` filled in: the last event it applied, told.
    fn tell(&self, mut state: ClusterState) -> ClusterState {
        state.said = state
            .event
            .checked_sub(1)
            .and_then(|i| Some((i, self.records.get(i)?)))
            .map(|(i, r)| narrate::narrate(i, r, &state));
        for m in state.msgs.values_mut() {
            m.about = narrate::message(&m.m);
        }
        state
    }

    /// Event `i` told in one sentence, in the state right after it.
    pub fn narration(&self, i: usize) -> Option<Narration> {
        self.record(i)?;
        self.state_at(i + 1).said
    }

    /// The number of events (lines after the header).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the trace has no events.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The header line.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Event `i` (0-based; line `i + 2` of the file).
    pub fn record(&self, i: usize) -> Option<&Record> {
        self.records.get(i)
    }

    /// Every event.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// The state after the first `n` events (`n` clamped to `len`): `0` is
    /// before anything happened, `len()` the end. To show event `i`
    /// happening, show `state_at(i + 1)`.
    pub fn state_at(&self, n: usize) -> ClusterState {
        let n = n.min(self.records.len());
        let k = (n / self.every).min(self.checkpoints.len() - 1);
        let mut m = self.checkpoints[k].clone();
        for i in k * self.every..n {
            m.apply(&self.ctx, i, &self.records[i]);
        }
        m.summarize();
        self.tell(m.state)
    }

    /// [`Replay::state_at`] computed from the start, without checkpoints
    /// (slow; a reference for tests).
    pub fn state_at_from_start(&self, n: usize) -> ClusterState {
        let n = n.min(self.records.len());
        let mut m = self.checkpoints[0].clone();
        for i in 0..n {
            m.apply(&self.ctx, i, &self.records[i]);
        }
        m.summarize();
        self.tell(m.state)
    }

    /// The index of the first event at or after `from` that starts a
    /// moment of kind `what`.
    pub fn find_next(&self, from: usize, what: Moment) -> Option<usize> {
        self.moments.next(from, what)
    }

    /// The index of the last event before `from` that starts a moment of
    /// kind `what`.
    pub fn find_prev(&self, from: usize, what: Moment) -> Option<usize> {
        self.moments.prev(from, what)
    }

    /// Every event index that starts a moment of kind `what`, ascending
    /// (for marks on the timeline).
    pub fn moments(&self, what: Moment) -> &[usize] {
        self.moments.all(what)
    }

    /// Whether the trace records messages (simulator traces do, real
    /// nodes' do not).
    pub fn has_messages(&self) -> bool {
        self.ctx.has_msgs
    }

    /// How many follower `append` records named a `last_term` that
    /// differed from the term replay had derived for that entry (`0` when
    /// the log view is exact as far as the trace can tell).
    pub fn term_mismatches(&self) -> usize {
        self.mismatches
    }
}
