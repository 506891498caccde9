//! The Master as both control-plane simulations run it: the shipped state
//! machine ([`MasterState::apply`]), scheduler ([`schedule::plan`]) and GC
//! rule ([`gc_order`]) over the soft state a Master leader builds from
//! heartbeats, with time counted in rounds (one heartbeat period each).
//!
//! The soft state follows the HTTP handler's rules (`master/http.rs`): a
//! leader's report replaces an older term's, a failed replica leads no
//! more, GC is ordered only once this leader has heard a full round, and
//! a new leader starts with nothing heard.

use std::collections::{BTreeMap, BTreeSet};

use raft_core::NodeId;

use crate::master::api::{ConfReport, GcOrder};
use crate::master::moves::{gc_order, MoveCommand};
use crate::master::schedule::{self, Heard, Limits, Plan, View};
use crate::master::state::{Group, MasterCommand, MasterReply, MasterState};

/// Rounds a server may go unheard before it is dead (the grace period).
pub(super) const GRACE: u64 = 10;
/// Rounds a server counts as live after its last heartbeat.
pub(super) const LIVE: u64 = 4;
/// Rounds a new Master leader waits before ordering GC.
pub(super) const GC_SETTLED: u64 = 6;

/// One replica in a heartbeat.
#[derive(Debug, Clone)]
pub(super) struct ReplicaReport {
    pub group: u64,
    pub leader: bool,
    pub term: u64,
    /// The configuration its log holds (a leader's is recorded).
    pub conf: Option<ConfReport>,
    /// Its disk failed, or it could not be started.
    pub failed: bool,
}

/// A server's heartbeat.
#[derive(Debug, Clone)]
pub(super) struct Report {
    pub server: NodeId,
    pub replicas: Vec<ReplicaReport>,
    /// Which of its disks can take a replica.
    pub usable: Vec<bool>,
}

/// The Master's answer to a heartbeat.
#[derive(Debug, Clone, Default)]
pub(super) struct Answer {
    /// Every group that lists the server (it creates a replica of those it
    /// lacks; the ones it leads take their move's next step).
    pub groups: Vec<Group>,
    /// Replicas it holds that no group lists any more.
    pub gc: Vec<GcOrder>,
}

#[derive(Default)]
struct Soft {
    /// The round this leader started leading.
    since: u64,
    heard: BTreeMap<NodeId, u64>,
    /// Each group's leader as reported, with its term.
    leaders: BTreeMap<u64, (NodeId, u64)>,
    confs: BTreeMap<u64, ConfReport>,
    hosted: BTreeMap<NodeId, BTreeSet<u64>>,
    failed: BTreeMap<NodeId, BTreeSet<u64>>,
    usable: BTreeMap<NodeId, Vec<bool>>,
}

/// The replicated state and the current leader's soft state.
#[derive(Default)]
pub(super) struct SimMaster {
    pub state: MasterState,
    soft: Soft,
}

impl SimMaster {
    /// The Master's leadership changes at round `now`: what was heard is
    /// forgotten (the replicated state stays).
    pub fn new_leader(&mut self, now: u64) {
        self.soft = Soft {
            since: now,
            ..Soft::default()
        };
    }

    /// Applies a command to the replicated state.
    pub fn apply(&mut self, cmd: MasterCommand) -> MasterReply {
        self.state.apply(&cmd)
    }

    /// Hears `r` at round `now` and answers it.
    pub fn hear(&mut self, now: u64, r: &Report) -> Answer {
        if !self.state.servers.contains_key(&r.server) {
            return Answer::default();
        }
        let s = r.server;
        let soft = &mut self.soft;
        soft.heard.insert(s, now);
        soft.hosted
            .insert(s, r.replicas.iter().map(|x| x.group).collect());
        soft.usable.insert(s, r.usable.clone());
        let mut failed = BTreeSet::new();
        for x in &r.replicas {
            let known = soft.leaders.get(&x.group).copied();
            if x.failed {
                failed.insert(x.group);
                if known.is_some_and(|(l, _)| l == s) {
                    soft.leaders.remove(&x.group);
                }
            } else if x.leader && known.is_none_or(|(_, t)| t <= x.term) {
                soft.leaders.insert(x.group, (s, x.term));
                if let Some(c) = &x.conf {
                    soft.confs.insert(x.group, c.clone());
                }
            } else if !x.leader && known.is_some_and(|(l, t)| l == s && t <= x.term) {
                soft.leaders.remove(&x.group);
            }
        }
        soft.failed.insert(s, failed);
        let groups: Vec<Group> = self
            .state
            .groups
            .values()
            .filter(|g| g.involves(s))
            .cloned()
            .collect();
        let gc = if now >= self.soft.since + GC_SETTLED {
            r.replicas
                .iter()
                .filter_map(|x| {
                    let g = self.state.groups.get(&x.group)?;
                    gc_order(s, g, self.soft.confs.get(&x.group))
                })
                .collect()
        } else {
            Vec::new()
        };
        Answer { groups, gc }
    }

    /// The scheduler's view at round `now`.
    pub fn view(&self, now: u64) -> View {
        let led_long = now >= self.soft.since + GRACE;
        let heard = |s: u64| self.soft.heard.get(&s).copied();
        let live = |s: u64| heard(s).is_some_and(|r| now < r + LIVE);
        let dead = |s: u64| led_long && heard(s).is_none_or(|r| now >= r + GRACE);
        View::from_heard(
            &self.state,
            &Heard {
                live: &live,
                dead: &dead,
                failed: &self.soft.failed,
                hosted: &self.soft.hosted,
                confs: &self.soft.confs,
                usable: &self.soft.usable,
            },
        )
    }

    /// What the scheduler would do at round `now` (`now_ms` stamps the
    /// moves it starts).
    pub fn plan(&self, now: u64, now_ms: u64) -> Plan {
        schedule::plan(&self.state, &self.view(now), Limits::default(), now_ms)
    }

    /// The Executor's round: the plan's commands proposed in order; the
    /// ones the state machine took.
    pub fn execute(&mut self, now: u64, now_ms: u64) -> Vec<MoveCommand> {
        let plan = self.plan(now, now_ms);
        plan.commands
            .into_iter()
            .filter(|c| self.state.apply(&MasterCommand::Move(c.clone())) == MasterReply::Ok)
            .collect()
    }
}
