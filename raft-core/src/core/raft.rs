//! One Raft node: its state, its role transitions, its clock, and the
//! dispatch of each message to the code of the role that handles it.
//!
//! Term rules that apply to every role (a higher term makes us a follower, a
//! lower one is answered or ignored) are applied once, in `step`, before a
//! role sees the message; `step_leader`, `step_candidate` and
//! `step_follower` then hold everything one role does with a message.

use std::collections::BTreeMap;

use rand_core::RngCore;

use super::config::Config;
use super::event::Event;
use super::log::RaftLog;
use super::membership::Membership;
use super::message::{Bytes, ConfState, Entry, EntryKind, HardState, Message, MessageBody, NodeId};
use super::progress::Progress;
use super::quiesce::Quiescence;
use super::read::{ReadOnly, ReadState};
use super::ready::SoftState;
use super::reconfig::ChangeInProgress;
use super::snapshot::SnapshotState;
use super::transfer::Transfer;
use crate::storage::Storage;
use crate::{Error, ProposeError};

/// The role a node plays in its current term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    /// Running a pre-vote round: asking whether it could win, without
    /// bumping its term.
    PreCandidate,
    Candidate,
    Leader,
}

impl Role {
    /// A short, stable name for traces.
    pub fn name(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::PreCandidate => "precandidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        }
    }
}

/// A Raft node as a pure state machine (see the crate docs for the contract).
pub struct Raft<S: Storage> {
    pub(crate) cfg: Config,
    pub(crate) id: NodeId,
    pub(crate) term: u64,
    pub(crate) vote: Option<NodeId>,
    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    pub(crate) log: RaftLog<S>,
    /// The configuration in use: the latest in the log.
    pub(crate) membership: Membership,
    /// The configuration recorded outside the log, in effect as of its index.
    pub(crate) conf_base: (u64, Membership),
    /// Configuration entries in the log after the base: (index, result).
    pub(crate) conf_log: Vec<(u64, Membership)>,
    /// The voter change this leader is driving.
    pub(crate) change: Option<ChangeInProgress>,
    /// A new membership base for the driver to persist (`reset_peers`).
    pub(crate) pending_conf_state: Option<ConfState>,
    /// Snapshot transfers, sending and receiving.
    pub(crate) snap: SnapshotState,
    /// Per-peer progress; filled only while leader.
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    /// Votes received in the current (pre-)election.
    pub(crate) votes: BTreeMap<NodeId, bool>,
    pub(crate) election_elapsed: u32,
    pub(crate) heartbeat_elapsed: u32,
    pub(crate) randomized_timeout: u32,
    /// Ticks since this node (re)started: its local clock for leases.
    pub(crate) ticks: u64,
    pub(crate) transfer: Option<Transfer>,
    /// Set once this leader told someone to time out: its lease is void
    /// for the rest of the term, because the target's election ignores it.
    pub(crate) lease_revoked: bool,
    pub(crate) reads: ReadOnly,
    pub(crate) msgs: Vec<Message>,
    pub(crate) events: Vec<Event>,
    pub(crate) read_states: Vec<ReadState>,
    pub(crate) prev_hard: HardState,
    pub(crate) prev_soft: SoftState,
    /// Messages dropped by [`Raft::refuses_term`] since start.
    pub(crate) refused_messages: u64,
    /// Whether the group sleeps here, and the host's node liveness.
    pub(crate) quiesce: Quiescence,
    rng: Box<dyn RngCore + Send>,
}

impl<S: Storage> Raft<S> {
    /// Starts a node from what `storage` holds. `rng` is the node's only
    /// source of randomness (election timeouts): seed it for reproducibility.
    pub fn new(cfg: Config, storage: S, rng: Box<dyn RngCore + Send>) -> Result<Raft<S>, Error> {
        cfg.validate()?;
        let (hs, cs) = storage.initial_state()?;
        if hs.commit > storage.last_index() {
            return Err(Error::Storage(format!(
                "hard state commit {} is past the last stored index {}",
                hs.commit,
                storage.last_index()
            )));
        }
        // The driver loads the latest snapshot into the state machine at
        // start: everything up to it is applied.
        let snap_index = storage.snapshot_meta().map_or(0, |m| m.index);
        if snap_index > storage.last_index() {
            // Committed would run past the log: the node would acknowledge
            // a leader's appends it cannot hold and reject the next ones,
            // for ever (a livelock seen with a deleted log segment).
            return Err(Error::Storage(format!(
                "the latest snapshot at {snap_index} is past the last stored index {}",
                storage.last_index()
            )));
        }
        let mut r = Raft {
            id: cfg.id,
            term: hs.term,
            vote: hs.vote,
            role: Role::Follower,
            leader: None,
            log: RaftLog::new(storage, hs.commit.max(snap_index), snap_index),
            membership: Membership::default(),
            conf_base: (0, Membership::default()),
            conf_log: Vec::new(),
            change: None,
            pending_conf_state: None,
            snap: SnapshotState::default(),
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_timeout: cfg.election_tick,
            ticks: 0,
            transfer: None,
            lease_revoked: false,
            reads: ReadOnly::default(),
            msgs: Vec::new(),
            events: Vec::new(),
            read_states: Vec::new(),
            prev_hard: hs,
            prev_soft: SoftState {
                leader: None,
                role: Role::Follower,
            },
            refused_messages: 0,
            quiesce: Quiescence::default(),
            rng,
            cfg,
        };
        r.load_membership(cs)?;
        r.reset_randomized_timeout();
        Ok(r)
    }

    // ----- read-only accessors -------------------------------------------

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }
    /// The current term.
    pub fn term(&self) -> u64 {
        self.term
    }
    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// The leader this node follows (itself when leader), if known.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    /// The vote cast in the current term.
    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }
    /// The highest index known committed.
    pub fn commit_index(&self) -> u64 {
        self.log.committed
    }
    /// The highest index handed to the state machine.
    pub fn applied_index(&self) -> u64 {
        self.log.applied
    }
    /// The log (stable and unstable parts).
    pub fn raft_log(&self) -> &RaftLog<S> {
        &self.log
    }
    /// The storage, for the driver to persist a `Ready` into.
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.log.storage
    }
    /// Stops the node and returns its storage: what survives a crash.
    pub fn into_storage(self) -> S {
        self.log.storage
    }
    /// The storage.
    pub fn storage(&self) -> &S {
        &self.log.storage
    }
    /// The voters of the configuration in use (C_new while joint), sorted.
    pub fn voters(&self) -> &[NodeId] {
        &self.membership.voters
    }
    /// The config this node runs with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    /// The leader's view of `peer`'s replication (leader only).
    pub fn progress(&self, peer: NodeId) -> Option<&Progress> {
        self.progress.get(&peer)
    }
    /// Leader only: the highest index known to match on each member,
    /// itself included; empty on other roles.
    pub fn peer_match(&self) -> std::collections::BTreeMap<NodeId, u64> {
        if self.role != Role::Leader {
            return std::collections::BTreeMap::new();
        }
        self.membership
            .members()
            .into_iter()
            .filter_map(|p| self.progress(p).map(|pr| (p, pr.matched)))
            .collect()
    }
    /// Leader only: the members installing a snapshot from it, with the
    /// snapshot's index.
    pub fn sending_snapshots(&self) -> std::collections::BTreeMap<NodeId, u64> {
        if self.role != Role::Leader {
            return std::collections::BTreeMap::new();
        }
        self.progress
            .iter()
            .filter_map(|(&p, pr)| match pr.state {
                super::progress::ProgressState::Snapshot { index } => Some((p, index)),
                _ => None,
            })
            .collect()
    }

    /// The peer leadership is being handed to, if a transfer is under way.
    pub fn transferee(&self) -> Option<NodeId> {
        self.transfer.as_ref().map(|t| t.to)
    }

    /// Who gets the log from this leader: every member, and members being
    /// removed until their removal commits (see `sync_progress`).
    pub(crate) fn peers(&self) -> Vec<NodeId> {
        self.progress
            .keys()
            .copied()
            .filter(|&v| v != self.id)
            .collect()
    }

    pub(crate) fn send(&mut self, to: NodeId, term: u64, body: MessageBody) {
        self.msgs.push(Message {
            from: self.id,
            to,
            term,
            body,
        });
    }

    // ----- time ----------------------------------------------------------

    /// Advances the node's clock by one tick.
    pub fn tick(&mut self) {
        self.ticks += 1;
        self.tick_snapshot();
        if self.quiesce.quiescent {
            // Nothing is driven by the clock in a quiescent group: no
            // heartbeats, no check-quorum, no election timer.
            return;
        }
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.tick_election();
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed < self.randomized_timeout {
            return;
        }
        if self.can_campaign() {
            self.election_elapsed = 0;
            self.events.push(Event::ElectionTimeout {
                pre_vote: self.cfg.pre_vote,
            });
            self.campaign(false);
        } else {
            // A learner cannot campaign; with quiescence it must still be
            // able to wake a leader that went to sleep without it.
            self.nudge_quiescent_leader();
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        self.tick_transfer();
        self.tick_change();
        if self.election_elapsed >= self.cfg.election_tick {
            self.election_elapsed = 0;
            if self.cfg.check_quorum {
                if !self.quorum_recently_active() {
                    self.events.push(Event::CheckQuorumStepDown);
                    self.become_follower(self.term, None);
                    return;
                }
                for pr in self.progress.values_mut() {
                    pr.recent_active = false;
                }
            }
        }
        if self.tick_quiesce() {
            return;
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            self.bcast_heartbeat();
        }
    }

    pub(crate) fn reset_randomized_timeout(&mut self) {
        let e = self.cfg.election_tick as u64;
        self.randomized_timeout = (e + self.rng.next_u64() % e) as u32;
    }

    /// Whether this node honours a leader's lease and so ignores (pre-)vote
    /// requests that were not caused by a leader transfer. A restarted node
    /// honours it for its first election timeout: it may have acknowledged a
    /// leader just before it crashed.
    pub(crate) fn in_lease(&self) -> bool {
        self.cfg.check_quorum
            && self.role != Role::Candidate
            && self.role != Role::PreCandidate
            && ((self.leader.is_some() && self.election_elapsed < self.cfg.election_tick)
                || self.ticks < self.cfg.election_tick as u64)
    }

    // ----- role transitions ----------------------------------------------

    fn reset(&mut self, term: u64) {
        if term != self.term {
            self.term = term;
            self.vote = None;
        }
        self.leader = None;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.reset_randomized_timeout();
        self.progress.clear();
        self.votes.clear();
        self.transfer = None;
        self.lease_revoked = false;
        self.reads.clear();
        self.reset_quiescence();
        if self.change.take().is_some() {
            self.events.push(Event::ChangeFailed {
                reason: "leadership lost before the change completed".into(),
            });
        }
    }

    /// Becomes a follower in `term`, following `leader` if known.
    pub(crate) fn become_follower(&mut self, term: u64, leader: Option<NodeId>) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
    }

    pub(crate) fn become_pre_candidate(&mut self) {
        // Neither term nor vote changes: a pre-vote round is only a question.
        self.votes.clear();
        self.progress.clear();
        self.leader = None;
        self.reset_quiescence();
        self.role = Role::PreCandidate;
    }

    pub(crate) fn become_candidate(&mut self) {
        debug_assert!(self.role != Role::Leader, "a leader cannot campaign");
        // `campaign` never gets here at the last term.
        self.reset(self.term.saturating_add(1));
        self.vote = Some(self.id);
        self.role = Role::Candidate;
    }

    pub(crate) fn become_leader(&mut self) {
        debug_assert!(self.role == Role::Candidate, "only a candidate can win");
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader = Some(self.id);
        let next = self.log.last_index() + 1;
        // Members being removed by an uncommitted change still get the log.
        let mut all = self.membership.members();
        all.extend(self.committed_membership().members());
        all.sort_unstable();
        all.dedup();
        for v in all {
            let mut pr = Progress::new(next, self.cfg.max_inflight_msgs);
            if v == self.id {
                pr.matched = self.log.persisted_index();
                pr.recent_active = true;
            }
            self.progress.insert(v, pr);
        }
        // Entries of earlier terms commit only once an entry of this term
        // does (Raft §5.4.2): append one right away.
        let noop = Entry {
            index: next,
            term: self.term,
            kind: EntryKind::Noop,
            data: Bytes::new(),
        };
        self.log.append(&[noop]);
        self.bcast_append();
    }

    // ----- input ---------------------------------------------------------

    /// Whether a message with a term above ours must not move us to it
    /// (it is dropped, never answered):
    ///
    /// - its term is more than [`Config::max_term_jump`] ahead: one forged
    ///   message must not use up the term space (at `u64::MAX` no election
    ///   could ever win again);
    /// - its sender is outside our configuration (and we have one) and it
    ///   is not a leader's message or a vote request, or it is one but we
    ///   heard from our leader within an election timeout. Nobody answers
    ///   a stranger's question, so its answers are forged; a removed
    ///   server must not depose a healthy group (Raft thesis §4.2.3), even
    ///   by claiming a leader transfer. Raft still hears a leader or a
    ///   candidate it does not know once its own leader went quiet: our
    ///   configuration may simply be behind the log (thesis §4.1).
    ///
    /// A node that has no configuration yet (joining, learning it from the
    /// log) hears everyone.
    fn refuses_term(&self, m: &Message) -> bool {
        if m.term - self.term > self.cfg.max_term_jump {
            return true;
        }
        if self.knows(m.from) {
            return false;
        }
        match m.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. }
            | MessageBody::SnapshotChunk { .. }
            | MessageBody::RequestVote { .. } => self.in_lease(),
            _ => true,
        }
    }

    /// Whether `id` belongs to our configuration (latest or committed), or
    /// we have none to judge by.
    pub(crate) fn knows(&self, id: NodeId) -> bool {
        self.unconfigured()
            || self.membership.contains(id)
            || self.committed_membership().contains(id)
    }

    /// Whether this node has no configuration yet (it joins, and learns
    /// one from the leader's log).
    pub(crate) fn unconfigured(&self) -> bool {
        self.membership.is_empty()
    }

    /// Handles a message from a peer.
    ///
    /// Errors only for a misrouted message or a broken invariant; stale
    /// messages are ignored. Senders outside the configuration are heard
    /// when they lead (a node being added learns of its membership from the
    /// leader's log), within the limits of [`Raft::refuses_term`].
    ///
    /// A storage read that failed while handling it (or earlier) is an
    /// error too ([`Raft::storage_failure`]): what the node decided may
    /// rest on a wrong answer, so nothing of it may leave the node.
    pub fn step(&mut self, m: Message) -> Result<(), Error> {
        self.check_storage()?;
        let r = self.step_message(m);
        self.check_storage()?;
        r
    }

    /// The first storage read that failed (for another reason than "not
    /// held"), if any. Once set it stays set: [`Raft::step`] errors,
    /// [`Raft::has_ready`] is false, and the driver must stop the node
    /// instead of acting on anything it decided (a vote granted from a
    /// defaulted term, say). Drivers check it after [`Raft::tick`] and the
    /// other calls that return no error.
    pub fn storage_failure(&self) -> Option<&str> {
        self.log.failure()
    }

    fn check_storage(&self) -> Result<(), Error> {
        match self.log.failure() {
            Some(f) => Err(Error::Storage(f.to_owned())),
            None => Ok(()),
        }
    }

    fn step_message(&mut self, m: Message) -> Result<(), Error> {
        if m.to != self.id {
            return Err(Error::Misrouted {
                to: m.to,
                me: self.id,
            });
        }
        self.wake_for(m.from, &m.body);
        if m.term > self.term {
            if self.refuses_term(&m) {
                self.refused_messages += 1;
                return Ok(());
            }
            match &m.body {
                MessageBody::RequestVote {
                    pre_vote,
                    leader_transfer,
                    ..
                } => {
                    if !leader_transfer && self.in_lease() {
                        // We heard from a leader recently: this candidate
                        // cannot be needed. Do not even bump the term.
                        return Ok(());
                    }
                    if !pre_vote {
                        self.become_follower(m.term, None);
                    }
                }
                MessageBody::RequestVoteResponse {
                    pre_vote: true,
                    granted: true,
                } => {
                    // A granted pre-vote carries the term we would run in.
                }
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. }
                | MessageBody::SnapshotChunk { .. } => {
                    self.become_follower(m.term, Some(m.from));
                }
                _ => self.become_follower(m.term, None),
            }
        } else if m.term < self.term {
            match m.body {
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. } => {
                    // A stale leader: tell it our term so it steps down
                    // (without this, CheckQuorum and PreVote could leave it
                    // stuck, since we would never vote it out).
                    self.send(
                        m.from,
                        self.term,
                        MessageBody::AppendResponse {
                            success: false,
                            index: 0,
                            hint_index: 0,
                            hint_term: 0,
                            lease_tick: 0,
                        },
                    );
                }
                MessageBody::RequestVote { pre_vote, .. } => {
                    // Refuse with our term (Raft §5.1), so a candidate that
                    // fell behind in term catches up. Silence would leave a
                    // candidate that needs our vote campaigning in terms we
                    // always outrun (seen without PreVote: a voter whose
                    // configuration lags its candidate's).
                    self.send(
                        m.from,
                        self.term,
                        MessageBody::RequestVoteResponse {
                            pre_vote,
                            granted: false,
                        },
                    );
                }
                _ => {}
            }
            return Ok(());
        }

        if let MessageBody::RequestVote { .. } = m.body {
            self.handle_vote_request(m);
            return Ok(());
        }
        match self.role {
            Role::Leader => self.step_leader(m),
            Role::Candidate | Role::PreCandidate => self.step_candidate(m),
            Role::Follower => self.step_follower(m),
        }
    }

    fn step_leader(&mut self, m: Message) -> Result<(), Error> {
        match m.body {
            MessageBody::AppendResponse {
                success,
                index,
                hint_index,
                hint_term,
                lease_tick,
            } => {
                self.note_peer_alive(m.from, lease_tick);
                self.handle_append_response(m.from, success, index, hint_index, hint_term);
            }
            MessageBody::HeartbeatResponse {
                read_round,
                lease_tick,
            } => {
                self.note_peer_alive(m.from, lease_tick);
                self.handle_heartbeat_response(m.from, read_round);
            }
            MessageBody::SnapshotChunkRequest {
                index,
                file,
                offset,
                len,
            } => {
                self.note_peer_alive(m.from, 0);
                self.handle_chunk_request(m.from, index, file, offset, len);
            }
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                return Err(Error::Invariant(format!(
                    "two leaders in term {}: {} and {}",
                    self.term, self.id, m.from
                )));
            }
            _ => {}
        }
        Ok(())
    }

    fn step_candidate(&mut self, m: Message) -> Result<(), Error> {
        match m.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                // Someone won this term.
                self.become_follower(self.term, Some(m.from));
                self.step_follower(m)
            }
            MessageBody::RequestVoteResponse { pre_vote, granted } => {
                if pre_vote == (self.role == Role::PreCandidate) {
                    self.handle_vote_response(m.from, granted);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn step_follower(&mut self, m: Message) -> Result<(), Error> {
        match m.body {
            MessageBody::Append {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                lease_tick,
            } => {
                self.election_elapsed = 0;
                self.leader = Some(m.from);
                self.handle_append(
                    m.from,
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit,
                    lease_tick,
                )?;
            }
            MessageBody::Heartbeat {
                commit,
                read_round,
                lease_tick,
                quiesce,
            } => {
                self.election_elapsed = 0;
                self.leader = Some(m.from);
                self.handle_heartbeat(m.from, commit, read_round, lease_tick, quiesce);
            }
            MessageBody::InstallSnapshot { meta } => {
                self.election_elapsed = 0;
                self.leader = Some(m.from);
                self.handle_install_snapshot(m.from, meta);
            }
            MessageBody::SnapshotChunk {
                index,
                file,
                offset,
                data,
                crc,
                gone,
            } => {
                self.election_elapsed = 0;
                self.handle_chunk(index, file, offset, data, crc, gone);
            }
            // Only the leader we follow may hand us leadership.
            MessageBody::TimeoutNow if self.leader == Some(m.from) && self.can_campaign() => {
                self.campaign(true)
            }
            _ => {}
        }
        Ok(())
    }

    /// Appends a client command to the log (leader only) and returns the
    /// index it will commit at, if it commits.
    ///
    /// `expected_term`, when given, must equal the current term: a client
    /// that learned of the leader in term `t` will not have its command
    /// appended by a later incarnation it has not seen.
    ///
    /// `data` becomes the entry's shared buffer: a `Vec<u8>` or a [`Bytes`]
    /// is taken without a copy, and every follower's `Append`, the
    /// `Ready` and the driver's cache then share it.
    pub fn propose(
        &mut self,
        data: impl Into<Bytes>,
        expected_term: Option<u64>,
    ) -> Result<u64, ProposeError> {
        let data = data.into();
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        self.note_work();
        if let Some(expected) = expected_term {
            if expected != self.term {
                return Err(ProposeError::TermMismatch {
                    expected,
                    current: self.term,
                });
            }
        }
        if let Some(t) = &self.transfer {
            return Err(ProposeError::TransferInProgress { to: t.to });
        }
        let last = self.log.last_index();
        if last - self.log.committed >= self.cfg.max_uncommitted_entries {
            return Err(ProposeError::TooManyUncommitted {
                limit: self.cfg.max_uncommitted_entries,
            });
        }
        let e = Entry {
            index: last + 1,
            term: self.term,
            kind: EntryKind::Normal,
            data,
        };
        self.log.append(&[e]);
        self.bcast_append();
        Ok(last + 1)
    }

    /// Starts an election now, as if the election timer had fired.
    pub fn campaign_now(&mut self) {
        if self.role != Role::Leader && self.can_campaign() {
            self.note_work();
            self.campaign(false);
        }
    }

    /// Fires the election timer now, exactly as [`Raft::tick`] does when it
    /// runs out: an [`Event::ElectionTimeout`], then a pre-vote round (or an
    /// election without PreVote). Unlike [`Raft::campaign_now`] the timeout
    /// is reported, so a trace shows it. Returns `false` and does nothing
    /// on a leader or a node that may not campaign (not a voter).
    pub fn election_timeout_now(&mut self) -> bool {
        if self.role == Role::Leader || !self.can_campaign() {
            return false;
        }
        self.note_work();
        self.election_elapsed = 0;
        self.events.push(Event::ElectionTimeout {
            pre_vote: self.cfg.pre_vote,
        });
        self.campaign(false);
        true
    }
}
