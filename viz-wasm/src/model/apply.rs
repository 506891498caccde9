//! Applying one trace record to the replay state.
//!
//! [`Machine`] is the visible [`ClusterState`] plus what replay needs and the
//! page does not: which entries' terms a received `append` message carried,
//! and which node last sent each node entries. Checkpoints clone a whole
//! `Machine`, so replaying from one gives exactly what replaying from the
//! start gives.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use raft_core::trace::{ClientDir, Header, Kind, Msg, NodeRole, Record};
use raft_core::NodeId;

use super::runs::{Run, Runs};
use super::state::{
    Campaign, ClientReply, ClientReq, ClusterState, Config, InFlight, LastEvent, Log, Member,
    NodeState, SnapIn, REPLIES_KEPT,
};

/// What replay takes from the header, fixed for a whole trace.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ctx {
    /// The trace records messages (`send`); without them, campaigns count
    /// the voters' `vote` events instead of the responses received.
    pub has_msgs: bool,
    /// Nominal tick period (meta `tick`).
    pub tick: Option<u64>,
    /// Election timeout in ticks, drawn from `[e, 2e)` (meta
    /// `election_tick`).
    pub election_tick: Option<u64>,
    /// Election timeout range in trace time at the nominal tick (meta
    /// `election_timeout`: `[lo, hi]`).
    pub election_timeout: Option<(u64, u64)>,
}

impl Ctx {
    pub fn new(header: &Header, records: &[Record]) -> Ctx {
        let meta = &header.meta;
        let u = |k: &str| meta.get(k).and_then(|v| v.as_u64());
        let election_timeout = meta
            .get("election_timeout")
            .and_then(|v| v.as_array())
            .filter(|a| a.len() == 2)
            .and_then(|a| Some((a[0].as_u64()?, a[1].as_u64()?)));
        Ctx {
            has_msgs: records.iter().any(|r| matches!(r.kind, Kind::Send { .. })),
            tick: u("tick").filter(|&t| t > 0),
            election_tick: u("election_tick").filter(|&e| e > 0),
            election_timeout,
        }
    }

    /// The election timeout range of a node ticking every `period`.
    fn timeout_range(&self, period: Option<u64>) -> Option<(u64, u64)> {
        if let (Some(e), Some(p)) = (self.election_tick, period) {
            return Some((e.saturating_mul(p), e.saturating_mul(2).saturating_mul(p)));
        }
        let (lo, hi) = self.election_timeout?;
        match (self.tick, period) {
            (Some(tick), Some(p)) if p != tick => {
                let scale = |x: u64| (x as u128 * p as u128 / tick as u128).min(u64::MAX as u128);
                Some((scale(lo) as u64, scale(hi) as u64))
            }
            _ => Some((lo, hi)),
        }
    }
}

/// Replay's private per-node state.
#[derive(Debug, Clone, Default, PartialEq)]
struct Aux {
    /// Terms of entries received in `append` messages and not yet appended.
    inbound: Runs,
    /// The sender of the last `append` message received.
    append_from: Option<NodeId>,
    /// The index of the node's previous record.
    prev: Option<usize>,
    /// The record that started its current campaign, and whether it was a
    /// `timeout` (else a `role` change).
    campaign_start: Option<(usize, bool)>,
}

impl Aux {
    /// Whether a campaign start at this record (a `timeout` if `timeout`,
    /// else a `role` change) only completes the one its previous record
    /// (`prev`) started: the simulator records `role` then `timeout`, real nodes
    /// `timeout` then `role`, for one start.
    fn same_start(&self, prev: Option<usize>, timeout: bool) -> bool {
        matches!(
            (prev, self.campaign_start),
            (Some(p), Some((s, was_timeout))) if p == s && was_timeout != timeout
        )
    }
}

/// The replay state after some prefix of a trace.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Machine {
    pub state: ClusterState,
    aux: BTreeMap<NodeId, Aux>,
    /// Terms of the entries each in-flight `append` message carries, by
    /// message id (taken from the sender's log when sent).
    carried: HashMap<u64, Vec<Run>>,
    /// Follower `append` events whose `last_term` disagreed with the terms
    /// replay derived (then `last_term` wins for the last entry).
    pub mismatches: usize,
    /// Every node some `config` event named as a member (voter, outgoing
    /// voter or learner): outside the configuration, these are removed
    /// rather than spare.
    ever_member: BTreeSet<NodeId>,
}

impl Machine {
    /// Nothing applied yet: every header node a follower in term 0.
    pub fn new(header: &Header, ctx: &Ctx) -> Machine {
        let nodes = header
            .nodes
            .iter()
            .map(|&id| {
                let n = NodeState {
                    id,
                    role: NodeRole::Follower,
                    term: 0,
                    vote: None,
                    leader: None,
                    commit: 0,
                    applied: 0,
                    log: Log {
                        first: 1,
                        last: 0,
                        terms: Runs::new(),
                        snap: 0,
                    },
                    down: false,
                    paused: false,
                    campaign: None,
                    // Simulated nodes all start at time 0 with a fresh timer;
                    // a real node's start is its `restart` record.
                    reset: (header.source == "sim").then_some(0),
                    timeout: None,
                    timeout_range: ctx.timeout_range(ctx.tick),
                    period: ctx.tick,
                    config: None,
                    last: None,
                    member: Member::Unknown,
                    snap_in: None,
                };
                (id, n)
            })
            .collect();
        Machine {
            state: ClusterState {
                t: 0,
                event: 0,
                leader: None,
                leader_term: 0,
                max_term: 0,
                nodes,
                msgs: BTreeMap::new(),
                config: None,
                blocked: Vec::new(),
                pending: BTreeMap::new(),
                replies: Vec::new(),
                said: None,
            },
            aux: header
                .nodes
                .iter()
                .map(|&id| (id, Aux::default()))
                .collect(),
            carried: HashMap::new(),
            mismatches: 0,
            ever_member: BTreeSet::new(),
        }
    }

    /// Applies record `i`.
    pub fn apply(&mut self, ctx: &Ctx, i: usize, r: &Record) {
        let st = &mut self.state;
        st.t = r.t;
        st.event = i + 1;
        match &r.kind {
            Kind::Partition { blocked } => {
                st.blocked = blocked.clone();
                return;
            }
            Kind::Heal => {
                st.blocked.clear();
                return;
            }
            _ => {}
        }
        let t = r.t;
        let id = r.node;
        let aux = self.aux.entry(id).or_default();
        let prev = aux.prev.replace(i);
        {
            let Some(n) = st.nodes.get_mut(&id) else {
                return; // node 0 with another kind: the checker refuses it
            };
            n.last = Some(LastEvent {
                i,
                t,
                ev: r.kind.name(),
            });
            // Records made while down carry no state (term and commit 0).
            if r.role != NodeRole::Down {
                if r.term > n.term {
                    // A new term: no vote and no leader in it yet.
                    n.vote = None;
                    n.leader = None;
                }
                n.term = r.term;
                n.commit = r.commit;
                n.role = r.role;
                n.down = false;
                if !matches!(n.role, NodeRole::Precandidate | NodeRole::Candidate) {
                    n.campaign = None;
                }
            }
        }

        match &r.kind {
            Kind::Role { from, leader } => {
                let n = st.nodes.get_mut(&id).expect("checked above");
                n.leader = match (r.role, leader) {
                    (NodeRole::Leader, None) => Some(id),
                    (_, l) => *l,
                };
                n.reset = Some(t);
                let campaigning = matches!(r.role, NodeRole::Precandidate | NodeRole::Candidate);
                if campaigning && *from != r.role {
                    let aux = self.aux.entry(id).or_default();
                    let new = new_campaign(id, r, t);
                    if !(aux.same_start(prev, false) && same_round(&n.campaign, &new)) {
                        n.campaign = Some(new);
                    }
                    aux.campaign_start = Some((i, false));
                }
            }
            Kind::Timeout { pre_vote } => {
                let n = st.nodes.get_mut(&id).expect("checked above");
                n.timeout = Some(t);
                n.reset = Some(t);
                // Each timeout starts a new round, with or without a role
                // change (a precandidate's next pre-vote, a candidate's
                // next election without pre-vote).
                let want = if *pre_vote {
                    NodeRole::Precandidate
                } else {
                    NodeRole::Candidate
                };
                if r.role == want {
                    let aux = self.aux.entry(id).or_default();
                    let new = new_campaign(id, r, t);
                    if !(aux.same_start(prev, true) && same_round(&n.campaign, &new)) {
                        n.campaign = Some(new);
                    }
                    aux.campaign_start = Some((i, true));
                }
            }
            Kind::Vote {
                candidate,
                pre_vote,
                granted,
            } => {
                let n = st.nodes.get_mut(&id).expect("checked above");
                if *granted && !*pre_vote {
                    n.vote = Some(*candidate);
                    n.reset = Some(t);
                }
                if !ctx.has_msgs {
                    // A granted vote is in the candidate's term (the voter
                    // moved to it); a pre-vote leaves the voter's term alone.
                    let camp = st
                        .nodes
                        .get_mut(candidate)
                        .and_then(|c| c.campaign.as_mut())
                        .filter(|camp| camp.pre == *pre_vote);
                    if let Some(camp) = camp {
                        if *granted && (*pre_vote || r.term == camp.term) {
                            add(&mut camp.granted, id);
                        } else if !*granted {
                            add(&mut camp.denied, id);
                        }
                    }
                }
            }
            Kind::Stepdown { .. } => {}
            Kind::Send { id: mid, to, m } => {
                if let Msg::Append {
                    entries,
                    first,
                    last,
                    term,
                    ..
                } = m
                {
                    if *entries > 0 && first <= last {
                        let n = &st.nodes[&id];
                        let mut runs = Runs(n.log.terms.slice(*first, *last));
                        if r.role == NodeRole::Leader {
                            // Entries it has not traced as appended yet are
                            // its own, of its term.
                            for (a, b) in runs.gaps(*first, *last) {
                                runs.assign(a, b, *term);
                            }
                        }
                        self.carried.insert(*mid, runs.0);
                    }
                }
                st.msgs.insert(
                    *mid,
                    InFlight {
                        id: *mid,
                        from: id,
                        to: *to,
                        t,
                        m: m.clone(),
                        about: String::new(),
                    },
                );
            }
            Kind::Recv { id: mid, from, m } => {
                st.msgs.remove(mid);
                let carried = self.carried.remove(mid);
                self.recv(id, *from, m, carried, t);
            }
            Kind::Drop { id: mid, .. } => {
                st.msgs.remove(mid);
                self.carried.remove(mid);
            }
            Kind::Append {
                first,
                last,
                last_term,
            } => self.append(id, r, *first, *last, *last_term),
            Kind::Persist { vote, .. } => {
                let n = st.nodes.get_mut(&id).expect("checked above");
                n.vote = *vote;
            }
            Kind::Commit { .. } => {}
            Kind::Apply { last, .. } => {
                let n = st.nodes.get_mut(&id).expect("checked above");
                n.applied = *last;
            }
            Kind::Read { .. } | Kind::Transfer { .. } => {}
            Kind::Client {
                dir,
                client,
                seq,
                op,
                key,
                value,
                outcome,
            } => match dir {
                ClientDir::Request => {
                    let req = ClientReq {
                        client: *client,
                        seq: *seq,
                        op: *op,
                        key: *key,
                        value: *value,
                        node: id,
                        t,
                    };
                    st.pending.insert(*client, req);
                }
                ClientDir::Reply => {
                    if st.pending.get(client).is_some_and(|p| p.seq == *seq) {
                        st.pending.remove(client);
                    }
                    if st.replies.len() >= REPLIES_KEPT {
                        st.replies.remove(0);
                    }
                    st.replies.push(ClientReply {
                        client: *client,
                        seq: *seq,
                        op: *op,
                        key: *key,
                        value: *value,
                        outcome: outcome.clone().unwrap_or_default(),
                        node: id,
                        t,
                    });
                }
            },
            Kind::Crash => {
                let n = st.nodes.get_mut(&id).expect("checked above");
                n.role = NodeRole::Down;
                n.down = true;
                n.paused = false;
                n.leader = None;
                n.campaign = None;
                self.aux.insert(
                    id,
                    Aux {
                        prev: Some(i),
                        ..Aux::default()
                    },
                );
            }
            Kind::Restart => {
                // Back from durable state: its log (every `append` is
                // durable), snapshot, term and vote (`persist`) stay; the
                // state machine restarts from the snapshot.
                let n = st.nodes.get_mut(&id).expect("checked above");
                n.down = false;
                n.paused = false;
                n.leader = None;
                n.campaign = None;
                n.applied = n.log.snap;
                n.reset = Some(t);
                self.aux.insert(
                    id,
                    Aux {
                        prev: Some(i),
                        ..Aux::default()
                    },
                );
            }
            Kind::Pause => st.nodes.get_mut(&id).expect("checked above").paused = true,
            Kind::Resume => st.nodes.get_mut(&id).expect("checked above").paused = false,
            Kind::Partition { .. } | Kind::Heal => {}
            Kind::Tickrate { period } => {
                let n = st.nodes.get_mut(&id).expect("checked above");
                n.period = Some(*period);
                n.timeout_range = ctx.timeout_range(n.period);
            }
            Kind::Config {
                change,
                index,
                voters,
                outgoing,
                learners,
            } => {
                self.ever_member
                    .extend(voters.iter().chain(outgoing).chain(learners));
                let n = st.nodes.get_mut(&id).expect("checked above");
                n.config = Some(Config {
                    index: *index,
                    voters: voters.clone(),
                    outgoing: outgoing.clone(),
                    learners: learners.clone(),
                    change: change.clone(),
                });
            }
            // Quiescence changes no Raft state the views draw; the
            // narration says what it means.
            Kind::Quiesce { .. } => {}
            Kind::Snapshot {
                phase,
                index,
                peer,
                bytes,
                ok,
            } => {
                if let ("offered", Some(p)) = (phase.as_str(), peer) {
                    // The leader's offer starts (or restarts) the peer's
                    // transfer; a repeated offer of the same snapshot keeps
                    // what the peer already has.
                    if let Some(to) = st.nodes.get_mut(p) {
                        match to.snap_in.as_mut().filter(|s| s.index == *index) {
                            Some(s) => {
                                s.from = id;
                                s.total = *bytes;
                            }
                            None => {
                                to.snap_in = Some(SnapIn {
                                    index: *index,
                                    from: id,
                                    total: *bytes,
                                    got: 0,
                                })
                            }
                        }
                    }
                }
                let n = st.nodes.get_mut(&id).expect("checked above");
                match phase.as_str() {
                    "taken" => n.log.snap = *index,
                    // A follower's progress without an offer seen (a
                    // repeated offer is not traced, so a transfer can restart
                    // without one): its size is then unknown (0).
                    "chunk_received" | "resumed" if *ok => {
                        let resumed = phase == "resumed";
                        match n.snap_in.as_mut().filter(|s| s.index == *index) {
                            Some(s) if resumed => s.got = *bytes,
                            Some(s) if s.total > 0 => {
                                s.got = s.got.saturating_add(*bytes).min(s.total.max(s.got))
                            }
                            Some(s) => s.got = s.got.saturating_add(*bytes),
                            None => {
                                n.snap_in = Some(SnapIn {
                                    index: *index,
                                    from: n.leader.unwrap_or(0),
                                    total: 0,
                                    got: *bytes,
                                })
                            }
                        }
                    }
                    "discarded" => n.snap_in = None,
                    "installed" => {
                        n.snap_in = None;
                        // The snapshot replaces the whole log.
                        n.log.snap = *index;
                        n.log.terms = Runs::new();
                        n.log.first = index.saturating_add(1);
                        n.log.last = *index;
                        n.applied = *index;
                        if let Some(a) = self.aux.get_mut(&id) {
                            a.inbound.remove_upto(*index);
                        }
                    }
                    _ => {}
                }
            }
            Kind::Compact { upto } => {
                let n = st.nodes.get_mut(&id).expect("checked above");
                let log = &mut n.log;
                log.terms.remove_upto(*upto);
                log.first = log.first.max(upto.saturating_add(1));
                fix_last(log);
            }
        }
    }

    /// `to` received `m` (message `mid`) from `from`.
    fn recv(&mut self, to: NodeId, from: NodeId, m: &Msg, carried: Option<Vec<Run>>, t: u64) {
        let st = &mut self.state;
        let Some(n) = st.nodes.get(&to) else {
            return;
        };
        let (term, leader_msg) = match *m {
            Msg::Append { term, .. }
            | Msg::Heartbeat { term, .. }
            | Msg::InstallSnapshot { term, .. }
            | Msg::SnapshotChunk { term, .. } => (term, true),
            _ => (m.term(), false),
        };
        let valid = term >= n.term && n.role != NodeRole::Leader;
        match *m {
            Msg::PreVoteResp { term, granted } | Msg::VoteResp { term, granted } => {
                let pre = matches!(m, Msg::PreVoteResp { .. });
                let n = st.nodes.get_mut(&to).expect("checked above");
                if let Some(c) = n.campaign.as_mut().filter(|c| c.pre == pre) {
                    if granted && term == c.term {
                        add(&mut c.granted, from);
                    } else if !granted && term >= c.term {
                        add(&mut c.denied, from);
                    }
                }
            }
            Msg::Append {
                entries,
                first,
                last,
                ..
            } if entries > 0 && first <= last => {
                // The entries' terms: as carried, else from the sender's
                // log now (Log Matching makes them the same).
                let runs = carried.unwrap_or_else(|| match st.nodes.get(&from) {
                    Some(s) => s.log.terms.slice(first, last),
                    None => Vec::new(),
                });
                if let Some(a) = self.aux.get_mut(&to) {
                    a.inbound.assign_runs(&runs, first, last);
                    a.append_from = Some(from);
                }
            }
            _ => {}
        }
        if leader_msg && valid {
            if let Some(n) = st.nodes.get_mut(&to) {
                n.reset = Some(t);
            }
        }
    }

    /// Entries `first..=last` became durable on `id`.
    fn append(&mut self, id: NodeId, r: &Record, first: u64, last: u64, last_term: u64) {
        let st = &mut self.state;
        if first > last {
            return;
        }
        let mut terms = Runs::new();
        if r.role == NodeRole::Leader {
            // A leader only appends entries of its own term.
            terms.assign(first, last, r.term);
        } else {
            let aux = self.aux.get(&id);
            if let Some(a) = aux {
                terms.assign_runs(&a.inbound.slice(first, last), first, last);
            }
            if let Some(src) = aux.and_then(|a| a.append_from) {
                if let Some(s) = st.nodes.get(&src) {
                    for (a, b) in terms.gaps(first, last) {
                        terms.assign_runs(&s.log.terms.slice(a, b), a, b);
                    }
                }
            }
            for (a, b) in terms.gaps(first, last) {
                terms.assign(a, b, last_term);
            }
            if terms.term_at(last) != Some(last_term) {
                self.mismatches += 1;
                terms.assign(last, last, last_term);
            }
        }
        if let Some(a) = self.aux.get_mut(&id) {
            a.inbound.remove_upto(last);
        }
        let Some(n) = st.nodes.get_mut(&id) else {
            return;
        };
        let log = &mut n.log;
        // A durable append replaces everything from `first` on.
        log.terms.truncate_from(first);
        let from = first.max(log.first);
        log.terms.assign_runs(terms.as_slice(), from, last);
        fix_last(log);
    }

    /// Fills in the cluster-wide summaries (leader, terms, configuration).
    pub fn summarize(&mut self) {
        let st = &mut self.state;
        st.max_term = st.nodes.values().map(|n| n.term).max().unwrap_or(0);
        // A belief is void when the believed node itself is known to have
        // reached that term and is not leading (it stepped down, crashed).
        let nodes = &st.nodes;
        let void = |term: u64, l: NodeId| {
            nodes
                .get(&l)
                .is_some_and(|n| n.term >= term && n.role != NodeRole::Leader)
        };
        let best = nodes
            .values()
            .filter(|n| !n.down)
            .filter_map(|n| n.leader.map(|l| (n.term, l)))
            .filter(|&(term, l)| !void(term, l))
            .max_by_key(|&(term, l)| (term, std::cmp::Reverse(l)));
        (st.leader, st.leader_term) = match best {
            Some((term, l)) => (Some(l), term),
            None => (None, 0),
        };
        let ever = &self.ever_member;
        let leader_config = st
            .leader
            .and_then(|l| st.nodes.get(&l))
            .and_then(|n| n.config.clone());
        st.config = leader_config.or_else(|| {
            st.nodes
                .values()
                .filter(|n| !n.down)
                .filter_map(|n| n.config.as_ref())
                .fold(None::<&Config>, |best, c| match best {
                    Some(b) if b.index >= c.index => Some(b),
                    _ => Some(c),
                })
                .cloned()
        });
        for n in st.nodes.values_mut() {
            n.member = member(st.config.as_ref(), n, ever.contains(&n.id));
        }
    }
}

/// Where `n` stands in `config` (see [`Member`]); `was` tells whether any
/// configuration ever named it.
fn member(config: Option<&Config>, n: &NodeState, was: bool) -> Member {
    let Some(c) = config else {
        return Member::Unknown;
    };
    let new = c.voters.contains(&n.id);
    let old = c.outgoing.contains(&n.id);
    let joint = !c.outgoing.is_empty();
    match (new, old) {
        (true, true) => Member::Voter,
        (true, false) if joint => Member::Joining,
        (true, false) => Member::Voter,
        (false, true) => Member::Leaving,
        (false, false) if c.learners.contains(&n.id) => Member::Learner,
        // A leader outside its configuration appended its own removal: it
        // leads until that entry commits, then steps down.
        (false, false) if n.role == NodeRole::Leader && !n.down => Member::Leaving,
        (false, false) if was => Member::Removed,
        (false, false) => Member::Spare,
    }
}

fn new_campaign(id: NodeId, r: &Record, t: u64) -> Campaign {
    let pre = r.role == NodeRole::Precandidate;
    Campaign {
        pre,
        term: if pre {
            r.term.saturating_add(1)
        } else {
            r.term
        },
        since: t,
        granted: vec![id],
        denied: Vec::new(),
    }
}

/// Whether `old` is the same round as `new` (a pre-vote or not, for one
/// term).
fn same_round(old: &Option<Campaign>, new: &Campaign) -> bool {
    old.as_ref()
        .is_some_and(|c| c.pre == new.pre && c.term == new.term)
}

/// Adds `id` to the sorted set `v`.
fn add(v: &mut Vec<NodeId>, id: NodeId) {
    if let Err(k) = v.binary_search(&id) {
        v.insert(k, id);
    }
}

fn fix_last(log: &mut Log) {
    log.last = log
        .terms
        .last_index()
        .unwrap_or_else(|| log.first.saturating_sub(1));
}
