//! The scheduler: which replica moves the Master starts, finishes or
//! abandons, given its replicated state and what heartbeats told it.
//!
//! Pure and deterministic (no clock, no IO; ties broken by id), so the
//! leading Master's scheduler task and the simulator call the same code.
//! Its rules, in the order it applies them:
//!
//! 1. **Finish** a move once the group's leader reports the target voters
//!    committed (no joint configuration left); **abandon** one whose target
//!    died before it became a voter.
//! 2. **Repair**: a group with a replica on a dead server (or reported
//!    failed, a disk lost) and a majority alive gets a new replica placed
//!    by the rules of [`crate::placement`] among live servers, then loses
//!    the dead one. A group with only a minority alive is reported
//!    (`stuck`), never touched: only its dead replicas' return can save
//!    what they alone hold, and changing its configuration needs a quorum
//!    anyway.
//! 3. **Drain**: a healthy group with a replica on a drained server moves
//!    it elsewhere.
//! 4. **Capacity balance**, only when nothing else is moving: one replica
//!    from the server holding the most to the one holding the fewest, if
//!    they differ by more than 5% of the mean and by at least two, keeping
//!    the group on distinct members of the placement level.
//!
//! Everything happens within a group's pool ([`crate::pool`]): a replica
//! only goes to a server with a working disk in the group's pool, spread
//! and balance count the pool's servers and replicas only (a server in two
//! pools is balanced in each), and a server whose disks of one pool all
//! failed or filled up still takes replicas of its other pools.
//!
//! Every move counts against both its servers: at most
//! [`Limits::per_server`] moves touch a server at once, at most
//! [`Limits::total`] run in the cluster.

use std::collections::{BTreeMap, BTreeSet};

use super::api::ConfReport;
use super::moves::{Move, MoveCommand, MoveReason};
use super::state::{Group, MasterState, Server};
use crate::placement::{self, Candidate, Slot};

/// What the leading Master knows beyond its replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// Servers heard from recently: the only ones given replicas.
    pub live: BTreeSet<u64>,
    /// Servers not heard from for the grace period, counted from when this
    /// Master started leading (a new leader hears a round before it calls
    /// anybody dead).
    pub dead: BTreeSet<u64>,
    /// Replicas their server reported failed (a disk lost): (group, server).
    pub failed: BTreeSet<(u64, u64)>,
    /// Each group's configuration as its leader reported it.
    pub confs: BTreeMap<u64, ConfReport>,
    /// Replicas servers reported hosting: (group, server).
    pub hosted: BTreeSet<(u64, u64)>,
    /// (server, pool) pairs where none of the server's disks of the pool
    /// can take a replica (every one failed or full): given no new
    /// replica of that pool (see [`no_room`]).
    pub no_room: BTreeSet<(u64, String)>,
}

/// What the leading Master heard from heartbeats, as it keeps it: the
/// input of [`View::from_heard`]. The Executor and the control
/// simulation keep it alike (their clocks differ: `live` and `dead` say
/// what each server's last heartbeat means now).
pub struct Heard<'a> {
    /// Whether the server was heard recently enough to take replicas.
    pub live: &'a dyn Fn(u64) -> bool,
    /// Whether it is dead: unheard for the grace period, counted from
    /// when this Master started leading.
    pub dead: &'a dyn Fn(u64) -> bool,
    /// Groups each server reported failed (its latest heartbeat's).
    pub failed: &'a BTreeMap<u64, BTreeSet<u64>>,
    /// Groups each server reported hosting.
    pub hosted: &'a BTreeMap<u64, BTreeSet<u64>>,
    /// Each group's configuration as its latest leader reported it.
    pub confs: &'a BTreeMap<u64, ConfReport>,
    /// Which of each server's disks can take a replica.
    pub usable: &'a BTreeMap<u64, Vec<bool>>,
}

impl View {
    /// The scheduler's view of the registered servers from what was
    /// heard.
    pub fn from_heard(state: &MasterState, h: &Heard<'_>) -> View {
        let pairs = |m: &BTreeMap<u64, BTreeSet<u64>>| -> BTreeSet<(u64, u64)> {
            m.iter()
                .flat_map(|(&s, gs)| gs.iter().map(move |&g| (g, s)))
                .collect()
        };
        View {
            live: state
                .servers
                .keys()
                .copied()
                .filter(|&s| (h.live)(s))
                .collect(),
            dead: state
                .servers
                .keys()
                .copied()
                .filter(|&s| (h.dead)(s))
                .collect(),
            failed: pairs(h.failed),
            confs: h.confs.clone(),
            hosted: pairs(h.hosted),
            no_room: no_room(&state.servers, h.usable),
        }
    }

    /// Whether `s` may be given a new replica of a group of `pool`:
    /// heard, not dead, not drained, with a disk of the pool that takes
    /// one.
    pub fn takes(&self, s: &Server, pool: &str) -> bool {
        self.live.contains(&s.id)
            && !self.dead.contains(&s.id)
            && !s.drained
            && s.in_pool(pool)
            && !self.no_room.contains(&(s.id, pool.to_string()))
    }
}

/// The (server, pool) pairs where no disk of the pool can take a replica,
/// from each server's latest report of which of its disks can
/// (`usable[server][disk]`). A server that reported nothing is left out:
/// it is not known to lack room.
pub fn no_room(
    servers: &BTreeMap<u64, Server>,
    usable: &BTreeMap<u64, Vec<bool>>,
) -> BTreeSet<(u64, String)> {
    let mut out = BTreeSet::new();
    for (id, disks) in usable {
        let Some(s) = servers.get(id) else { continue };
        if disks.is_empty() {
            continue;
        }
        for pool in s.pool_names() {
            let room = (0..disks.len()).any(|i| s.pool_of(i) == pool && disks[i]);
            if !room {
                out.insert((*id, pool.to_string()));
            }
        }
    }
    out
}

/// Concurrency limits of moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Moves touching one server (as source or target) at once.
    pub per_server: usize,
    /// Moves under way in the cluster.
    pub total: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_server: 2,
            total: 16,
        }
    }
}

/// What the scheduler decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Commands to propose, in order.
    pub commands: Vec<MoveCommand>,
    /// Groups with a minority of replicas alive: reported, not repaired.
    pub stuck: Vec<u64>,
    /// Groups with a dead or failed replica (repair started or waiting).
    pub degraded: Vec<u64>,
}

/// Candidate balance moves one round examines at most (each costs a
/// placement over every group).
const MAX_BALANCE_TRIES: usize = 256;

/// How many distinct regions, zones and racks `servers` span.
fn spread_vector(state: &MasterState, servers: &[u64]) -> Vec<usize> {
    let cands: Vec<Candidate> = servers
        .iter()
        .filter_map(|s| state.servers.get(s).map(Server::candidate))
        .collect();
    [
        placement::Level::Region,
        placement::Level::Zone,
        placement::Level::Rack,
    ]
    .into_iter()
    .map(|l| {
        cands
            .iter()
            .map(|c| c.member(l))
            .collect::<BTreeSet<_>>()
            .len()
    })
    .collect()
}

/// Replicas of `pool`'s groups per server with a disk in the pool,
/// counting the targets of moves under way (what each server will hold).
pub fn load(state: &MasterState, pool: &str) -> BTreeMap<u64, usize> {
    let mut load: BTreeMap<u64, usize> = state
        .servers
        .values()
        .filter(|s| s.in_pool(pool))
        .map(|s| (s.id, 0))
        .collect();
    for g in state.groups.values().filter(|g| g.pool == pool) {
        for s in g.target() {
            *load.entry(s).or_default() += 1;
        }
    }
    load
}

/// Every pool named by a server's disk or a group, each once.
pub fn pools(state: &MasterState) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = state.groups.values().map(|g| g.pool.clone()).collect();
    for s in state.servers.values() {
        out.extend(s.pool_names().into_iter().map(str::to_string));
    }
    out
}

/// Whether `counts` (replicas per server) are balanced: every server
/// within 5% of the mean, or within one replica of it.
pub fn balanced(counts: &[usize]) -> bool {
    if counts.is_empty() {
        return true;
    }
    let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
    let slack = (mean * 0.05).max(1.0);
    counts.iter().all(|&c| (c as f64 - mean).abs() <= slack)
}

/// Decides what to start, finish and abandon now.
pub fn plan(state: &MasterState, view: &View, limits: Limits, now_ms: u64) -> Plan {
    let mut out = Plan::default();
    let mut busy: BTreeMap<u64, usize> = BTreeMap::new();
    let mut running = 0usize;
    for g in state.groups.values() {
        let conf = view.confs.get(&g.id);
        let Some(m) = &g.moving else {
            // The group's own configuration is the truth: one its leader
            // reports committed, newer than the record and with other
            // voters (a move abandoned while its leader was entering the
            // joint configuration) is recorded as it is.
            if let Some(c) = conf {
                if c.committed
                    && c.outgoing.is_empty()
                    && c.index > g.epoch
                    && c.voters != {
                        let mut r = g.replicas.clone();
                        r.sort_unstable();
                        r
                    }
                {
                    out.commands.push(MoveCommand::Record {
                        group: g.id,
                        voters: c.voters.clone(),
                        conf_index: c.index,
                    });
                }
            }
            continue;
        };
        if let Some(c) = conf {
            if c.committed && c.outgoing.is_empty() && c.index > g.epoch && c.voters == g.target() {
                out.commands.push(MoveCommand::Finish {
                    group: g.id,
                    voters: c.voters.clone(),
                    conf_index: c.index,
                });
                continue;
            }
        }
        let target_gone = view.dead.contains(&m.to)
            || view.failed.contains(&(g.id, m.to))
            || !state.servers.contains_key(&m.to);
        let reached_log =
            conf.is_none_or(|c| c.voters.contains(&m.to) || c.outgoing.contains(&m.to));
        if target_gone && !reached_log {
            out.commands.push(MoveCommand::Abandon { group: g.id });
            continue;
        }
        running += 1;
        *busy.entry(m.from).or_default() += 1;
        *busy.entry(m.to).or_default() += 1;
    }

    // The groups placed so far, by pool: placement weighs load and
    // scatter width among a pool's groups only.
    let mut placed: BTreeMap<String, Vec<Vec<Slot>>> = BTreeMap::new();
    for g in state.groups.values() {
        placed
            .entry(g.pool.clone())
            .or_default()
            .push(g.target().into_iter().map(|s| (s, None)).collect());
    }
    let is_down = |g: &Group, s: u64| view.dead.contains(&s) || view.failed.contains(&(g.id, s));
    let mut started = 0usize;
    let mut start = |out: &mut Plan,
                     busy: &mut BTreeMap<u64, usize>,
                     placed: &mut BTreeMap<String, Vec<Vec<Slot>>>,
                     g: &Group,
                     from: u64,
                     reason: MoveReason,
                     only_to: Option<u64>|
     -> bool {
        let level_floor = reason == MoveReason::Balance;
        // Balance never costs the group a failure domain at any level
        // (a move the spread rule would then undo, forever).
        if let (MoveReason::Balance, Some(to)) = (reason, only_to) {
            let after: Vec<u64> = g
                .replicas
                .iter()
                .copied()
                .filter(|&r| r != from)
                .chain([to])
                .collect();
            if spread_vector(state, &after) < spread_vector(state, &g.replicas) {
                return false;
            }
        }
        if running + started >= limits.total
            || busy.get(&from).copied().unwrap_or(0) >= limits.per_server
                && reason != MoveReason::Repair
        {
            return false;
        }
        let keep: Vec<Candidate> = g
            .replicas
            .iter()
            .filter(|&&r| r != from)
            .filter_map(|r| state.servers.get(r).map(Server::candidate))
            .collect();
        let eligible: Vec<Candidate> = state
            .servers
            .values()
            .filter(|s| {
                view.takes(s, &g.pool)
                    && !g.replicas.contains(&s.id)
                    && only_to.is_none_or(|t| t == s.id)
            })
            .map(Server::candidate)
            .collect();
        let n = g.replicas.len();
        // The level is chosen before the busy servers are set aside: a
        // busy zone peer makes a repair wait, not go to a worse place.
        let Some(level) = placement::more_level(&eligible, &keep, n, false) else {
            return false;
        };
        if level_floor {
            // Balance keeps the group where a fresh placement would put it
            // (on the live servers, the one leaving included).
            let all: Vec<Candidate> = state
                .servers
                .values()
                .filter(|s| view.takes(s, &g.pool))
                .map(Server::candidate)
                .collect();
            if placement::spread_level(&all, n, false).ok() != Some(level) {
                return false;
            }
        }
        // Only a group whose leader reported its configuration moves, and
        // not to a server that configuration still lists (a learner of a
        // move abandoned, not yet removed: it must leave before it joins
        // anew). Like a busy one, such a server makes the move wait.
        let Some(conf) = view.confs.get(&g.id) else {
            return false;
        };
        let free: Vec<Candidate> = eligible
            .into_iter()
            .filter(|c| {
                busy.get(&c.node).copied().unwrap_or(0) < limits.per_server
                    && !conf.voters.contains(&c.node)
                    && !conf.outgoing.contains(&c.node)
                    && !conf.learners.contains(&c.node)
                    // A server still holding an old replica of the group
                    // (a node back after its repair) gets a new one only
                    // once replica GC removed the old: reusing it would
                    // race the GC order already sent.
                    && !view.hosted.contains(&(g.id, c.node))
            })
            .collect();
        let pool_placed = placed.entry(g.pool.clone()).or_default();
        let chosen = placement::place_more(&free, pool_placed, &keep, n, level)
            .ok()
            .and_then(|v| v.into_iter().next());
        let Some(to) = chosen else { return false };
        out.commands.push(MoveCommand::Start {
            group: g.id,
            mv: Move {
                from,
                to: to.node,
                reason,
                started_ms: now_ms,
            },
        });
        started += 1;
        *busy.entry(from).or_default() += 1;
        *busy.entry(to.node).or_default() += 1;
        pool_placed.push(
            keep.iter()
                .map(|c| (c.node, None))
                .chain([(to.node, None)])
                .collect(),
        );
        true
    };

    // Repair.
    for g in state.groups.values() {
        let down: Vec<u64> = g
            .replicas
            .iter()
            .copied()
            .filter(|&r| is_down(g, r))
            .collect();
        if down.is_empty() {
            continue;
        }
        out.degraded.push(g.id);
        if g.replicas.len() - down.len() <= g.replicas.len() / 2 {
            out.stuck.push(g.id);
            continue;
        }
        if g.moving.is_none() {
            start(
                &mut out,
                &mut busy,
                &mut placed,
                g,
                down[0],
                MoveReason::Repair,
                None,
            );
        }
    }
    // Drain.
    for g in state.groups.values() {
        if g.moving.is_some() || g.replicas.iter().any(|&r| is_down(g, r)) {
            continue;
        }
        let drained = g
            .replicas
            .iter()
            .copied()
            .find(|r| state.servers.get(r).is_some_and(|s| s.drained));
        if let Some(from) = drained {
            start(
                &mut out,
                &mut busy,
                &mut placed,
                g,
                from,
                MoveReason::Drain,
                None,
            );
        }
    }
    // Spread: a healthy group whose replicas share a failure domain the
    // live servers would let them leave (a repair that had to fall back
    // to a lower level, servers that joined since) moves one replica to a
    // server on a domain it does not use yet, the least loaded first.
    let mut usable: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    let mut load_now: BTreeMap<String, BTreeMap<u64, usize>> = BTreeMap::new();
    for pool in pools(state) {
        let here = state
            .servers
            .values()
            .filter(|s| view.takes(s, &pool))
            .map(Server::candidate)
            .collect();
        usable.insert(pool.clone(), here);
        load_now.insert(pool.clone(), load(state, &pool));
    }
    for g in state.groups.values() {
        let usable = &usable[&g.pool];
        let load_now = &load_now[&g.pool];
        let healthy = g.replicas.iter().all(|&r| {
            !is_down(g, r)
                && view.live.contains(&r)
                && state.servers.get(&r).is_some_and(|s| !s.drained)
        });
        if g.moving.is_some() || !healthy {
            continue;
        }
        let n = g.replicas.len();
        let mine: Vec<(u64, Candidate)> = g
            .replicas
            .iter()
            .filter_map(|&r| state.servers.get(&r).map(|s| (r, s.candidate())))
            .collect();
        // The highest level where the group uses fewer members than it
        // could (as many as it has replicas, or as the live servers span).
        let deficient = placement::Level::ALL
            .into_iter()
            .filter(|&l| l <= placement::Level::Node)
            .find(|&l| {
                let used: BTreeSet<Vec<String>> = mine.iter().map(|(_, c)| c.member(l)).collect();
                let there: BTreeSet<Vec<String>> = usable.iter().map(|c| c.member(l)).collect();
                used.len() < n.min(there.len())
            });
        let Some(level) = deficient else {
            continue;
        };
        let used: BTreeSet<Vec<String>> = mine.iter().map(|(_, c)| c.member(level)).collect();
        // The replica to move: one sharing its domain with another.
        let Some(from) = mine
            .iter()
            .filter(|(_, c)| {
                mine.iter()
                    .filter(|(_, d)| d.member(level) == c.member(level))
                    .count()
                    > 1
            })
            .map(|(r, _)| *r)
            .max()
        else {
            continue;
        };
        let mut targets: Vec<&Candidate> = usable
            .iter()
            .filter(|c| !used.contains(&c.member(level)))
            .collect();
        targets.sort_by_key(|c| (load_now.get(&c.node).copied().unwrap_or(0), c.node));
        for t in targets {
            if start(
                &mut out,
                &mut busy,
                &mut placed,
                g,
                from,
                MoveReason::Spread,
                Some(t.node),
            ) {
                break;
            }
        }
    }
    // Capacity balance: one move at a time, when nothing else moves.
    let moving_now = out
        .commands
        .iter()
        .any(|c| matches!(c, MoveCommand::Start { .. }));
    if running == 0 && !moving_now {
        let mut tries = 0usize;
        'pools: for pool in pools(state) {
            let members: Vec<(u64, usize)> = load(state, &pool)
                .into_iter()
                .filter(|(s, _)| state.servers.get(s).is_some_and(|s| view.takes(s, &pool)))
                .collect();
            let counts: Vec<usize> = members.iter().map(|&(_, n)| n).collect();
            if balanced(&counts) {
                continue;
            }
            // The fullest server that can give a replica to the emptiest
            // one that can take it, keeping every group where a fresh
            // placement would put it (with three zones, a new node in one
            // zone takes replicas from its zone peers only).
            let mut by_load = members;
            by_load.sort_by_key(|&(s, n)| (std::cmp::Reverse(n), s));
            for &(from, hi) in &by_load {
                for &(to, lo) in by_load.iter().rev() {
                    if hi < lo + 2 {
                        break;
                    }
                    for g in state.groups.values() {
                        if g.pool != pool
                            || g.moving.is_some()
                            || !g.replicas.contains(&from)
                            || g.replicas.contains(&to)
                            || g.replicas
                                .iter()
                                .any(|&r| is_down(g, r) || !view.live.contains(&r))
                        {
                            continue;
                        }
                        tries += 1;
                        if tries > MAX_BALANCE_TRIES
                            || start(
                                &mut out,
                                &mut busy,
                                &mut placed,
                                g,
                                from,
                                MoveReason::Balance,
                                Some(to),
                            )
                        {
                            break 'pools;
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::state::{Location, MasterCommand, MasterReply};

    fn server(id: u64, zone: &str) -> Server {
        Server {
            id,
            raft_addr: format!("127.0.0.1:{}", 1000 + id),
            data_addr: format!("127.0.0.1:{}", 2000 + id),
            location: Location {
                region: "r".into(),
                zone: zone.into(),
                rack: format!("rack-{id}"),
            },
            disks: vec![1 << 30],
            drained: false,
            pools: Vec::new(),
        }
    }

    /// Six servers in three zones, `groups` groups placed by the Master.
    fn cluster(groups: u64) -> MasterState {
        let mut st = MasterState::default();
        for id in 1..=6 {
            let zone = ["a", "b", "c"][(id as usize - 1) / 2];
            st.apply(&MasterCommand::RegisterServer {
                server: server(id, zone),
            });
        }
        let r = st.apply(&MasterCommand::CreateGroups {
            count: groups,
            replication: 3,
            pool: crate::pool::default_pool(),
        });
        assert!(matches!(r, MasterReply::Groups { .. }));
        st
    }

    fn view(st: &MasterState, dead: &[u64]) -> View {
        let mut v = View {
            live: st
                .servers
                .keys()
                .copied()
                .filter(|s| !dead.contains(s))
                .collect(),
            dead: dead.iter().copied().collect(),
            ..View::default()
        };
        settled(st, &mut v);
        v
    }

    /// Every group's leader reports its recorded configuration.
    fn settled(st: &MasterState, v: &mut View) {
        v.confs = st
            .groups
            .values()
            .map(|g| {
                (
                    g.id,
                    ConfReport {
                        voters: g.replicas.clone(),
                        outgoing: vec![],
                        learners: vec![],
                        index: g.epoch,
                        committed: true,
                    },
                )
            })
            .collect();
    }

    fn apply_all(st: &mut MasterState, p: &Plan) {
        for c in &p.commands {
            assert_eq!(
                st.apply(&MasterCommand::Move(c.clone())),
                MasterReply::Ok,
                "{c:?}"
            );
        }
    }

    /// Finishes every move as if each group's leader had reported its
    /// target committed.
    fn finish_all(st: &mut MasterState, v: &mut View) {
        for g in st.groups.values() {
            if g.moving.is_some() {
                v.confs.insert(
                    g.id,
                    ConfReport {
                        voters: g.target(),
                        outgoing: vec![],
                        learners: vec![],
                        index: g.epoch + 5,
                        committed: true,
                    },
                );
            }
        }
        let p = plan(st, v, Limits::default(), 0);
        let finishes: Vec<_> = p
            .commands
            .iter()
            .filter(|c| matches!(c, MoveCommand::Finish { .. }))
            .cloned()
            .collect();
        for c in finishes {
            assert_eq!(st.apply(&MasterCommand::Move(c)), MasterReply::Ok);
        }
        settled(st, v);
    }

    #[test]
    fn a_dead_server_replicas_go_to_its_zone_peer_within_the_limits() {
        let st = cluster(12);
        let v = view(&st, &[1]);
        let p = plan(&st, &v, Limits::default(), 0);
        let on_1 = st
            .groups
            .values()
            .filter(|g| g.replicas.contains(&1))
            .count();
        assert!(on_1 > 2, "{on_1}");
        assert_eq!(p.degraded.len(), on_1);
        // Server 2 is zone a's other node: every repair goes there, at most
        // two at once (the per-server limit).
        let starts: Vec<&Move> = p
            .commands
            .iter()
            .filter_map(|c| match c {
                MoveCommand::Start { mv, .. } => Some(mv),
                _ => None,
            })
            .collect();
        assert_eq!(starts.len(), 2, "{p:?}");
        assert!(starts
            .iter()
            .all(|m| m.from == 1 && m.to == 2 && m.reason == MoveReason::Repair));
    }

    #[test]
    fn repair_restores_three_zones_and_balance_follows() {
        let mut st = cluster(12);
        let mut v = view(&st, &[1]);
        for _ in 0..50 {
            let p = plan(&st, &v, Limits::default(), 0);
            apply_all(&mut st, &p);
            finish_all(&mut st, &mut v);
        }
        for g in st.groups.values() {
            assert!(!g.replicas.contains(&1), "{g:?}");
            let zones: BTreeSet<&str> = g
                .replicas
                .iter()
                .map(|r| st.servers[r].location.zone.as_str())
                .collect();
            assert_eq!(zones.len(), 3, "{g:?}");
        }
        // A new empty server in zone a: balance moves replicas to it.
        st.apply(&MasterCommand::RegisterServer {
            server: server(7, "a"),
        });
        v.live.insert(7);
        for _ in 0..50 {
            let p = plan(&st, &v, Limits::default(), 0);
            apply_all(&mut st, &p);
            finish_all(&mut st, &mut v);
        }
        let load = load(&st, crate::pool::DEFAULT_POOL);
        let counts: Vec<usize> = load
            .iter()
            .filter(|(s, _)| **s != 1)
            .map(|(_, &n)| n)
            .collect();
        assert!(balanced(&counts), "{load:?}");
        assert!(load[&7] > 0);
    }

    #[test]
    fn each_pool_is_placed_repaired_and_balanced_on_its_own_disks() {
        let two = |id, zone| Server {
            pools: vec!["fast".into(), "bulk".into()],
            disks: vec![1 << 30, 1 << 30],
            ..server(id, zone)
        };
        let mut st = MasterState::default();
        for id in 1..=6 {
            let zone = ["a", "b", "c"][(id as usize - 1) / 2];
            st.apply(&MasterCommand::RegisterServer {
                server: two(id, zone),
            });
        }
        for pool in ["fast", "bulk"] {
            let r = st.apply(&MasterCommand::CreateGroups {
                count: 12,
                replication: 3,
                pool: pool.into(),
            });
            assert!(matches!(r, MasterReply::Groups { .. }), "{r:?}");
        }
        // Three servers join, one per zone, with fast disks only.
        for (id, zone) in [(7, "a"), (8, "b"), (9, "c")] {
            st.apply(&MasterCommand::RegisterServer {
                server: Server {
                    pools: vec!["fast".into(), "fast".into()],
                    disks: vec![1 << 30, 1 << 30],
                    ..server(id, zone)
                },
            });
        }
        let mut v = view(&st, &[]);
        // Server 2's bulk disk fails: it keeps taking fast replicas only.
        v.no_room = no_room(&st.servers, &[(2, vec![true, false])].into_iter().collect());
        assert_eq!(
            v.no_room,
            [(2, "bulk".to_string())]
                .into_iter()
                .collect::<BTreeSet<_>>()
        );
        for _ in 0..200 {
            let p = plan(&st, &v, Limits::default(), 0);
            apply_all(&mut st, &p);
            finish_all(&mut st, &mut v);
        }
        for g in st.groups.values() {
            for r in &g.replicas {
                assert!(st.servers[r].in_pool(&g.pool), "{g:?} on {r}");
            }
        }
        // Balanced within each pool: fast over all nine servers, bulk over
        // the six with bulk disks; the new servers took only fast ones.
        let fast = load(&st, "fast");
        let bulk = load(&st, "bulk");
        assert_eq!(fast.len(), 9);
        assert_eq!(bulk.len(), 6);
        assert!(
            balanced(&fast.values().copied().collect::<Vec<_>>()),
            "{fast:?}"
        );
        assert!(fast[&7] > 0 && fast[&8] > 0 && fast[&9] > 0, "{fast:?}");
        // Server 2 gave nothing up and took no new bulk replica.
        assert_eq!(bulk[&2], 6, "{bulk:?}");
        assert!(
            balanced(&bulk.values().copied().collect::<Vec<_>>()),
            "{bulk:?}"
        );
        // Server 1 dies: its replicas are rebuilt in their own pools.
        v.live.remove(&1);
        v.dead.insert(1);
        for _ in 0..200 {
            let p = plan(&st, &v, Limits::default(), 0);
            apply_all(&mut st, &p);
            finish_all(&mut st, &mut v);
        }
        for g in st.groups.values() {
            assert!(!g.replicas.contains(&1), "{g:?}");
            for r in &g.replicas {
                assert!(st.servers[r].in_pool(&g.pool), "{g:?} on {r}");
            }
        }
        assert_eq!(load(&st, "bulk")[&2], 6);
    }

    #[test]
    fn a_group_with_one_survivor_is_reported_not_touched() {
        let st = cluster(6);
        let g = st.groups.values().next().expect("group").clone();
        let dead = [g.replicas[0], g.replicas[1]];
        let p = plan(&st, &view(&st, &dead), Limits::default(), 0);
        assert!(p.stuck.contains(&g.id));
        assert!(p
            .commands
            .iter()
            .all(|c| !matches!(c, MoveCommand::Start { group, .. } if *group == g.id)));
    }

    #[test]
    fn a_move_whose_target_died_is_abandoned_unless_it_reached_the_log() {
        let mut st = cluster(1);
        let g = st.groups[&1].clone();
        let to = (1..=6).find(|s| !g.replicas.contains(s)).expect("spare");
        st.groups.get_mut(&1).expect("g").moving = Some(Move {
            from: g.replicas[0],
            to,
            reason: MoveReason::Drain,
            started_ms: 0,
        });
        let mut v = view(&st, &[to]);
        v.confs.insert(
            1,
            ConfReport {
                voters: g.replicas.clone(),
                outgoing: vec![],
                learners: vec![to],
                index: 3,
                committed: true,
            },
        );
        let p = plan(&st, &v, Limits::default(), 0);
        assert_eq!(p.commands, vec![MoveCommand::Abandon { group: 1 }]);
        // Joint with the target voting: carried on, never abandoned.
        let c = v.confs.get_mut(&1).expect("conf");
        c.outgoing = c.voters.clone();
        c.voters = st.groups[&1].target();
        let p = plan(&st, &v, Limits::default(), 0);
        assert!(p.commands.is_empty(), "{p:?}");
    }

    #[test]
    fn a_server_still_listed_or_holding_an_old_replica_is_not_a_target() {
        let st = cluster(1);
        let g = st.groups[&1].clone();
        let zone_peer = |s: u64| if s % 2 == 1 { s + 1 } else { s - 1 };
        let dead = g.replicas[0];
        let mut v = view(&st, &[dead]);
        v.confs.get_mut(&1).expect("conf").learners = vec![zone_peer(dead)];
        let p = plan(&st, &v, Limits::default(), 0);
        assert!(
            p.commands.is_empty(),
            "the zone peer must leave the configuration first: {p:?}"
        );
        v.confs.get_mut(&1).expect("conf").learners.clear();
        // Nor while it still reports an old replica of the group.
        v.hosted.insert((1, zone_peer(dead)));
        let p = plan(&st, &v, Limits::default(), 0);
        assert!(p.commands.is_empty(), "{p:?}");
        v.hosted.clear();
        let p = plan(&st, &v, Limits::default(), 0);
        assert_eq!(p.commands.len(), 1, "{p:?}");
    }

    #[test]
    fn a_configuration_the_record_missed_is_recorded() {
        let st = cluster(1);
        let g = st.groups[&1].clone();
        let mut v = view(&st, &[]);
        let spare = (1..=6).find(|s| !g.replicas.contains(s)).expect("spare");
        let mut voters = g.replicas.clone();
        voters[2] = spare;
        voters.sort_unstable();
        let c = v.confs.get_mut(&1).expect("conf");
        c.voters = voters.clone();
        c.index = 40;
        let p = plan(&st, &v, Limits::default(), 0);
        assert_eq!(
            p.commands,
            vec![MoveCommand::Record {
                group: 1,
                voters,
                conf_index: 40
            }]
        );
        // Not from a report older than the record.
        v.confs.get_mut(&1).expect("conf").index = 0;
        assert!(plan(&st, &v, Limits::default(), 0).commands.is_empty());
    }

    #[test]
    fn drain_empties_a_server() {
        let mut st = cluster(12);
        st.servers.get_mut(&3).expect("s").drained = true;
        let mut v = view(&st, &[]);
        for _ in 0..50 {
            let p = plan(&st, &v, Limits::default(), 0);
            apply_all(&mut st, &p);
            finish_all(&mut st, &mut v);
        }
        assert_eq!(load(&st, crate::pool::DEFAULT_POOL)[&3], 0);
        assert!(st.groups.values().all(|g| g.replicas.len() == 3));
    }

    #[test]
    fn balance_counts() {
        assert!(balanced(&[10, 11, 9]));
        assert!(!balanced(&[10, 12, 8]));
        assert!(balanced(&[100, 104, 96]));
        assert!(!balanced(&[100, 107, 93]));
    }
}
