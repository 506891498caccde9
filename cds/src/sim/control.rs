//! The control plane under a seeded simulation (`cdsctl cds sim --control`).
//!
//! What runs is the shipped code of the control plane: the Master's state
//! machine ([`MasterState::apply`]), its scheduler ([`schedule::plan`]),
//! the GC order rule ([`gc_order`]), a group leader's move step
//! ([`decide`]) and a server's GC check ([`obsolete`]). What is modelled
//! is what they act on: each group's Raft configuration and log position
//! (a configuration change takes effect only with a quorum of live
//! replicas, joint configurations need both; a leader is elected among
//! live voters with a quorum; a new replica catches up over a few rounds),
//! the servers' heartbeats (lost by chance) and the Master's soft state
//! built from them (thrown away when the Master's leadership changes).
//! The data path under faults is the other simulation's (`world.rs`).
//!
//! Faults, by seed, every 500 ms round: servers crash and come back,
//! servers are lost for good, disks fail, servers join, servers are
//! drained and undrained, the Master's leader changes, heartbeats are
//! lost. Faults are drawn so that faults alone never leave a group without
//! a live majority (that case is reported, not repaired, by design).
//!
//! Servers have two disks in two pools (a "fast" and a "bulk" one); some
//! that join have both disks in the fast pool, so the bulk pool's groups
//! must never be placed on them. Half the groups are in each pool.
//!
//! Checked every round: a round of control actions never takes a live
//! quorum from a group that had one; replica GC never removes a replica
//! the group's configuration lists; every replica is on a disk of its
//! group's pool. At the end, once faults stop: every group has three
//! voters on live servers in distinct zones (as many as the live servers
//! of its pool span), the Master records them, no move or learner is
//! left, and the scheduler has nothing left to do (balance reached within
//! each pool).

use std::collections::{BTreeMap, BTreeSet};

use raft_core::{Membership, NodeId};
use rand_core::{RngCore, SeedableRng};
use rand_pcg::Pcg64Mcg;

use super::master::{Report, SimMaster, GRACE};
use crate::blockserver::gc::obsolete;
use crate::blockserver::moves::{decide, MoveStep};
use crate::master::api::ConfReport;
use crate::master::moves::MoveCommand;
use crate::master::state::{Location, MasterCommand, MasterReply, Server};

/// What to simulate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    pub seed: u64,
    /// Servers at the start, over three zones.
    pub servers: usize,
    pub groups: u64,
    /// Rounds (500 ms each) of faults before the quiet phase.
    pub rounds: u64,
}

impl ControlConfig {
    pub fn new(seed: u64) -> ControlConfig {
        ControlConfig {
            seed,
            servers: 6,
            groups: 12,
            rounds: 400,
        }
    }
}

/// Counts of what a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ControlStats {
    pub moves_started: u64,
    pub moves_finished: u64,
    pub moves_abandoned: u64,
    pub crashes: u64,
    pub losses: u64,
    pub disk_failures: u64,
    pub additions: u64,
    pub drains: u64,
    pub master_changes: u64,
    pub replicas_collected: u64,
    /// Configurations recorded from a leader's report with no move
    /// (a move abandoned as its joint configuration went in).
    pub recorded: u64,
    /// Rounds the quiet phase took to settle.
    pub settle_rounds: u64,
}

/// How one seed went.
#[derive(Debug, Clone)]
pub struct ControlOutcome {
    pub seed: u64,
    pub stats: ControlStats,
    pub failure: Option<String>,
}

/// Most rounds the quiet phase may take to settle.
const QUIET_BOUND: u64 = 2_000;

/// The pools of the simulation.
const FAST: &str = "fast";
const BULK: &str = "bulk";

struct SimServer {
    zone: usize,
    up: bool,
    /// Lost for good.
    gone: bool,
    disks_failed: [bool; 2],
    /// Each disk's pool.
    pools: [&'static str; 2],
    /// Groups it was given but could not start a replica of (no working
    /// disk of the group's pool): reported failed, as a BlockServer
    /// reports a replica it marked lost, until a GC order forgets them.
    lost: BTreeSet<u64>,
}

impl SimServer {
    /// Its first working disk of `pool`.
    fn disk_in(&self, pool: &str) -> Option<usize> {
        (0..2).find(|&d| self.pools[d] == pool && !self.disks_failed[d])
    }
}

#[derive(Debug, Clone)]
struct SimReplica {
    disk: usize,
    /// The configuration (and its index) its log holds.
    conf: Membership,
    conf_index: u64,
    /// How far its log matches the leader's.
    matched: u64,
    /// Its disk failed.
    lost: bool,
}

struct SimGroup {
    conf: Membership,
    conf_index: u64,
    last_index: u64,
    leader: Option<NodeId>,
    replicas: BTreeMap<NodeId, SimReplica>,
}

struct Ctl {
    rng: Pcg64Mcg,
    round: u64,
    master: SimMaster,
    servers: BTreeMap<NodeId, SimServer>,
    groups: BTreeMap<u64, SimGroup>,
    stats: ControlStats,
    /// Rounds until each crashed server comes back.
    back_at: BTreeMap<NodeId, u64>,
}

/// Runs one seed.
pub fn run(cfg: &ControlConfig) -> ControlOutcome {
    let mut c = Ctl::new(cfg);
    let failure = c.run_all(cfg).err();
    ControlOutcome {
        seed: cfg.seed,
        stats: c.stats,
        failure,
    }
}

fn quorum(voters: &[NodeId], alive: &impl Fn(NodeId) -> bool) -> bool {
    voters.is_empty() || voters.iter().filter(|&&v| alive(v)).count() * 2 > voters.len()
}

impl Ctl {
    fn new(cfg: &ControlConfig) -> Ctl {
        let mut c = Ctl {
            rng: Pcg64Mcg::seed_from_u64(cfg.seed),
            round: 0,
            master: SimMaster::default(),
            servers: BTreeMap::new(),
            groups: BTreeMap::new(),
            stats: ControlStats::default(),
            back_at: BTreeMap::new(),
        };
        for i in 0..cfg.servers {
            c.add_server(i % 3, [FAST, BULK]);
        }
        let mut groups = Vec::new();
        for (pool, count) in [(FAST, cfg.groups.div_ceil(2)), (BULK, cfg.groups / 2)] {
            let r = c.master.apply(MasterCommand::CreateGroups {
                count,
                replication: 3,
                pool: pool.to_string(),
            });
            let MasterReply::Groups { groups: made } = r else {
                panic!("the simulation's groups cannot be placed: {r:?}");
            };
            groups.extend(made);
        }
        for g in groups {
            let conf = Membership::new(g.replicas.clone());
            let replicas = g
                .replicas
                .iter()
                .map(|&s| {
                    (
                        s,
                        SimReplica {
                            disk: c.servers[&s].disk_in(&g.pool).expect("placed in its pool"),
                            conf: conf.clone(),
                            conf_index: 0,
                            matched: 0,
                            lost: false,
                        },
                    )
                })
                .collect();
            c.groups.insert(
                g.id,
                SimGroup {
                    conf,
                    conf_index: 0,
                    last_index: 0,
                    leader: None,
                    replicas,
                },
            );
        }
        c
    }

    fn rand(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n.max(1)
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.rand(1000) < per_mille
    }

    fn add_server(&mut self, zone: usize, pools: [&'static str; 2]) -> NodeId {
        let id = self.servers.keys().max().copied().unwrap_or(0) + 1;
        self.servers.insert(
            id,
            SimServer {
                zone,
                up: true,
                gone: false,
                disks_failed: [false; 2],
                pools,
                lost: BTreeSet::new(),
            },
        );
        let r = self.master.apply(MasterCommand::RegisterServer {
            server: Server {
                id,
                raft_addr: format!("10.0.0.{id}:1"),
                data_addr: format!("10.0.0.{id}:2"),
                location: Location {
                    region: "r".into(),
                    zone: format!("z{}", zone + 1),
                    rack: format!("k{id}"),
                },
                disks: vec![1 << 40, 1 << 40],
                drained: false,
                pools: pools.iter().map(|p| p.to_string()).collect(),
            },
        });
        assert_eq!(r, MasterReply::Ok);
        id
    }

    /// Whether server `s`'s replica of `g` is alive (server up, replica
    /// there and not lost).
    fn replica_alive(&self, g: &SimGroup, s: NodeId) -> bool {
        self.servers.get(&s).is_some_and(|x| x.up) && g.replicas.get(&s).is_some_and(|r| !r.lost)
    }

    fn has_quorum(&self, g: &SimGroup) -> bool {
        let alive = |s| self.replica_alive(g, s);
        quorum(&g.conf.voters, &alive) && quorum(&g.conf.outgoing, &alive)
    }

    fn run_all(&mut self, cfg: &ControlConfig) -> Result<(), String> {
        for _ in 0..cfg.rounds {
            self.faults();
            self.step()?;
        }
        // Quiet: crashed servers back, no new faults; every group must
        // settle.
        for s in self.servers.values_mut() {
            if !s.gone {
                s.up = true;
            }
        }
        self.back_at.clear();
        for n in 0..QUIET_BOUND {
            self.step()?;
            if n > GRACE * 2 && self.unsettled().is_none() {
                self.stats.settle_rounds = n;
                return Ok(());
            }
        }
        let p = self.master.plan(self.round, 0);
        Err(format!(
            "not settled {QUIET_BOUND} rounds after the faults stopped ({}; the scheduler would do {:?}; stuck {:?}): {}",
            self.unsettled().unwrap_or_default(),
            p.commands,
            p.stuck,
            self.describe()
        ))
    }

    fn describe(&self) -> String {
        let gs: Vec<String> = self
            .groups
            .iter()
            .map(|(id, g)| {
                let m = &self.master.state.groups[id];
                let reps: Vec<String> = g
                    .replicas
                    .iter()
                    .map(|(s, r)| format!("{s}:{}@{}{}", r.matched, r.conf_index, if r.lost { "lost" } else { "" }))
                    .collect();
                format!(
                    "g{id} conf {:?}/{:?}/{:?} at {} last {} leader {:?} record {:?} moving {:?} replicas {}",
                    g.conf.voters,
                    g.conf.outgoing,
                    g.conf.learners,
                    g.conf_index,
                    g.last_index,
                    g.leader,
                    m.replicas,
                    m.moving,
                    reps.join(" ")
                )
            })
            .collect();
        let ss: Vec<String> = self
            .servers
            .iter()
            .map(|(id, s)| {
                format!(
                    "s{id} z{} up {} gone {} disks {:?} failed {:?} drained {}",
                    s.zone + 1,
                    s.up,
                    s.gone,
                    s.pools,
                    s.disks_failed,
                    self.master.state.servers.get(id).is_some_and(|x| x.drained)
                )
            })
            .collect();
        format!("{}; {}", ss.join(", "), gs.join("; "))
    }

    /// Why the cluster is not settled yet (every group whole, the
    /// scheduler idle), if it is not.
    fn unsettled(&self) -> Option<String> {
        // The servers that can hold a replica of each pool.
        let usable_in = |pool: &str| -> Vec<NodeId> {
            self.servers
                .iter()
                .filter(|(id, s)| {
                    s.up && !s.gone
                        && s.disk_in(pool).is_some()
                        && self
                            .master
                            .state
                            .servers
                            .get(id)
                            .is_some_and(|x| !x.drained)
                })
                .map(|(&id, _)| id)
                .collect()
        };
        for (id, g) in &self.groups {
            let m = &self.master.state.groups[id];
            let usable = usable_in(&m.pool);
            let zones: BTreeSet<usize> = usable.iter().map(|s| self.servers[s].zone).collect();
            if m.moving.is_some() || !g.conf.outgoing.is_empty() || !g.conf.learners.is_empty() || {
                let mut r = m.replicas.clone();
                r.sort_unstable();
                r != g.conf.voters
            } {
                return Some(format!("group {id} is changing"));
            }
            if g.conf.voters.len() != 3
                || g.conf
                    .voters
                    .iter()
                    .any(|v| !usable.contains(v) || !self.replica_alive(g, *v))
            {
                return Some(format!("group {id} has a voter missing or unusable"));
            }
            let z: BTreeSet<usize> = g.conf.voters.iter().map(|v| self.servers[v].zone).collect();
            if z.len() < zones.len().min(3) {
                return Some(format!(
                    "group {id} spans {} zones of {}",
                    z.len(),
                    zones.len()
                ));
            }
        }
        // The scheduler has nothing left to do.
        let p = self.master.plan(self.round, 0);
        (!p.commands.is_empty()).then(|| format!("the scheduler would do {:?}", p.commands))
    }

    fn alive_servers(&self) -> Vec<NodeId> {
        self.servers
            .iter()
            .filter(|(_, s)| s.up)
            .map(|(&id, _)| id)
            .collect()
    }

    /// Whether every group would keep a live majority with server `s`
    /// down too (and no group is short of a replica somewhere else).
    fn safe_to_take(&self, s: NodeId) -> bool {
        self.groups.values().all(|g| {
            let alive = |x: NodeId| x != s && self.replica_alive(g, x);
            quorum(&g.conf.voters, &alive) && quorum(&g.conf.outgoing, &alive)
        })
    }

    /// Whether each pool keeps at least four servers (not lost, not
    /// drained) with a working disk of it if server `s` loses disk `disk`
    /// (`None`: is lost or drained): faults alone must leave every pool
    /// room for its groups' three replicas, with one to spare for a crash.
    fn pools_keep_room(&self, s: NodeId, disk: Option<usize>) -> bool {
        [FAST, BULK].iter().all(|&pool| {
            let members = self
                .servers
                .iter()
                .filter(|(&id, x)| {
                    let working = (0..2).any(|d| {
                        x.pools[d] == pool
                            && !x.disks_failed[d]
                            && !(id == s && disk.is_none_or(|f| f == d))
                    });
                    !x.gone
                        && working
                        && self
                            .master
                            .state
                            .servers
                            .get(&id)
                            .is_some_and(|m| !m.drained)
                })
                .count();
            members >= 4
        })
    }

    /// Whether no group lacks a live replica now.
    fn all_whole(&self) -> bool {
        self.groups
            .values()
            .all(|g| g.conf.voters.iter().all(|&v| self.replica_alive(g, v)))
    }

    fn faults(&mut self) {
        let now = self.round;
        let due: Vec<NodeId> = self
            .back_at
            .iter()
            .filter(|(_, &r)| r <= now)
            .map(|(&s, _)| s)
            .collect();
        for s in due {
            self.back_at.remove(&s);
            if let Some(x) = self.servers.get_mut(&s) {
                x.up = true;
            }
        }
        let alive = self.alive_servers();
        if alive.is_empty() {
            return;
        }
        let pick = alive[self.rand(alive.len() as u64) as usize];
        match self.rand(1000) {
            // A crash: back in 1 to 30 rounds.
            0..=9 if self.safe_to_take(pick) => {
                self.servers.get_mut(&pick).expect("server").up = false;
                let back = now + 1 + self.rand(30);
                self.back_at.insert(pick, back);
                self.stats.crashes += 1;
            }
            // Lost for good, when nothing else is missing.
            10..=12
                if self.all_whole()
                    && self.safe_to_take(pick)
                    && alive.len() > 4
                    && self.pools_keep_room(pick, None) =>
            {
                let s = self.servers.get_mut(&pick).expect("server");
                s.up = false;
                s.gone = true;
                self.stats.losses += 1;
            }
            // A disk fails.
            13..=15 if self.all_whole() => {
                let d = self.rand(2) as usize;
                let on_it: Vec<u64> = self
                    .groups
                    .iter()
                    .filter(|(_, g)| g.replicas.get(&pick).is_some_and(|r| r.disk == d))
                    .map(|(&id, _)| id)
                    .collect();
                let safe = on_it.iter().all(|id| {
                    let g = &self.groups[id];
                    let alive = |x: NodeId| x != pick && self.replica_alive(g, x);
                    quorum(&g.conf.voters, &alive) && quorum(&g.conf.outgoing, &alive)
                });
                // A server may lose both disks: its heartbeats then say so
                // and the Master offers it no replica.
                if safe
                    && !self.servers[&pick].disks_failed[d]
                    && self.pools_keep_room(pick, Some(d))
                {
                    self.servers.get_mut(&pick).expect("server").disks_failed[d] = true;
                    for id in on_it {
                        if let Some(r) = self
                            .groups
                            .get_mut(&id)
                            .and_then(|g| g.replicas.get_mut(&pick))
                        {
                            r.lost = true;
                        }
                    }
                    self.stats.disk_failures += 1;
                }
            }
            // A server joins; one in three has no bulk disk.
            16..=19 if self.servers.len() < 12 => {
                let zone = self.rand(3) as usize;
                let pools = if self.rand(3) == 0 {
                    [FAST, FAST]
                } else {
                    [FAST, BULK]
                };
                self.add_server(zone, pools);
                self.stats.additions += 1;
            }
            // A drain, or an undrain.
            20..=23 => {
                let drained = self
                    .master
                    .state
                    .servers
                    .get(&pick)
                    .is_some_and(|s| s.drained);
                let undrained_live = self
                    .master
                    .state
                    .servers
                    .iter()
                    .filter(|(id, s)| !s.drained && self.servers.get(id).is_some_and(|x| !x.gone))
                    .count();
                if drained || undrained_live > 5 && self.pools_keep_room(pick, None) {
                    let r = self.master.apply(MasterCommand::Move(MoveCommand::Drain {
                        server: pick,
                        drained: !drained,
                    }));
                    if r == MasterReply::Ok && !drained {
                        self.stats.drains += 1;
                    }
                }
            }
            // The Master's leader changes: its soft state starts afresh.
            24..=27 => {
                self.master.new_leader(now);
                self.stats.master_changes += 1;
            }
            _ => {}
        }
    }

    /// One round: leaders elected, logs and configurations replicated,
    /// heartbeats and their answers (replica creation, GC, move steps),
    /// the Executor's round; then the checks.
    fn step(&mut self) -> Result<(), String> {
        self.round += 1;
        let now = self.round;
        let before: BTreeMap<u64, bool> = self
            .groups
            .iter()
            .map(|(&id, g)| (id, self.has_quorum(g)))
            .collect();
        self.raft_round();
        // Heartbeats (5% lost), in server order.
        let servers: Vec<NodeId> = self.alive_servers();
        for s in servers {
            if self.chance(50) {
                continue;
            }
            self.heartbeat(s)?;
        }
        // The Executor.
        for c in self.master.execute(now, now) {
            match c {
                MoveCommand::Start { .. } => self.stats.moves_started += 1,
                MoveCommand::Finish { .. } => self.stats.moves_finished += 1,
                MoveCommand::Abandon { .. } => self.stats.moves_abandoned += 1,
                MoveCommand::Record { .. } => self.stats.recorded += 1,
                _ => {}
            }
        }
        // Checks.
        for (id, g) in &self.groups {
            let pool = &self.master.state.groups[id].pool;
            for (s, r) in &g.replicas {
                let on = self.servers[s].pools[r.disk];
                if on != pool {
                    return Err(format!(
                        "round {now}: group {id} of pool {pool} has a replica on server {s}'s disk {} of pool {on}",
                        r.disk
                    ));
                }
            }
            if before[id] && !self.has_quorum(g) {
                return Err(format!(
                    "round {now}: group {id} lost its live quorum to a control action: {}",
                    self.describe()
                ));
            }
        }
        Ok(())
    }

    /// Leaders, log growth, replication of entries and configurations.
    fn raft_round(&mut self) {
        let ids: Vec<u64> = self.groups.keys().copied().collect();
        for id in ids {
            let quorum_ok = self.has_quorum(&self.groups[&id]);
            let g = &self.groups[&id];
            let leader_ok = g.leader.is_some_and(|l| {
                self.replica_alive(g, l)
                    && (g.conf.voters.contains(&l) || g.conf.outgoing.contains(&l))
            });
            let new_leader = if leader_ok || !quorum_ok {
                if leader_ok {
                    g.leader
                } else {
                    None
                }
            } else {
                g.conf
                    .voters
                    .iter()
                    .chain(&g.conf.outgoing)
                    .copied()
                    .filter(|&v| self.replica_alive(g, v) && g.replicas[&v].matched >= g.last_index)
                    .min()
                    .or_else(|| {
                        g.conf
                            .voters
                            .iter()
                            .copied()
                            .filter(|&v| self.replica_alive(g, v))
                            .min()
                    })
            };
            let alive: BTreeSet<NodeId> = g
                .replicas
                .keys()
                .copied()
                .filter(|&s| self.replica_alive(g, s))
                .collect();
            let g = self.groups.get_mut(&id).expect("group");
            g.leader = new_leader;
            if g.leader.is_none() {
                continue;
            }
            // A write per round.
            g.last_index += 1;
            let (conf, conf_index, last) = (g.conf.clone(), g.conf_index, g.last_index);
            for (&s, r) in g.replicas.iter_mut() {
                if !alive.contains(&s) || !conf.contains(s) {
                    continue;
                }
                // A replica behind catches up 100 entries a round (a
                // snapshot install, then the log).
                r.matched = (r.matched + 100).min(last);
                r.conf = conf.clone();
                r.conf_index = conf_index;
            }
        }
    }

    /// Appends a configuration change to group `id` if it has a quorum
    /// under both its current and its new configuration; the members
    /// alive (the ones leaving included) learn it.
    fn change_conf(&mut self, id: u64, new: Membership) -> bool {
        let g = &self.groups[&id];
        let alive = |s: NodeId| self.replica_alive(g, s);
        let ok = quorum(&g.conf.voters, &alive)
            && quorum(&g.conf.outgoing, &alive)
            && quorum(&new.voters, &alive)
            && quorum(&new.outgoing, &alive);
        if !ok {
            return false;
        }
        let told: Vec<NodeId> = g
            .replicas
            .keys()
            .copied()
            .filter(|&s| alive(s) && (g.conf.contains(s) || new.contains(s)))
            .collect();
        let g = self.groups.get_mut(&id).expect("group");
        g.last_index += 1;
        g.conf = new;
        g.conf_index = g.last_index;
        for s in told {
            if let Some(r) = g.replicas.get_mut(&s) {
                r.conf = g.conf.clone();
                r.conf_index = g.conf_index;
            }
        }
        true
    }

    /// Server `s`'s heartbeat and what the Master's answer makes it do.
    fn heartbeat(&mut self, s: NodeId) -> Result<(), String> {
        let now = self.round;
        if !self.master.state.servers.contains_key(&s) {
            return Ok(());
        }
        // The report.
        let mut replicas = Vec::new();
        for (&id, g) in &self.groups {
            let Some(r) = g.replicas.get(&s) else {
                continue;
            };
            let leader = !r.lost && g.leader == Some(s);
            replicas.push(super::master::ReplicaReport {
                group: id,
                leader,
                term: 0,
                conf: leader.then(|| ConfReport {
                    voters: g.conf.voters.clone(),
                    outgoing: g.conf.outgoing.clone(),
                    learners: g.conf.learners.clone(),
                    index: g.conf_index,
                    committed: true,
                }),
                failed: r.lost,
            });
        }
        for &id in &self.servers[&s].lost {
            replicas.push(super::master::ReplicaReport {
                group: id,
                leader: false,
                term: 0,
                conf: None,
                failed: true,
            });
        }
        let answer = self.master.hear(
            now,
            &Report {
                server: s,
                replicas,
                usable: self.servers[&s].disks_failed.iter().map(|f| !f).collect(),
            },
        );
        // The answer: the groups it must host.
        let assigned = answer.groups;
        for mg in &assigned {
            if self.groups[&mg.id].replicas.contains_key(&s) {
                continue;
            }
            // Its replica goes to a working disk of the group's pool; with
            // none, the replica is lost before it starts.
            let server = self.servers.get_mut(&s).expect("server");
            let Some(disk) = server.disk_in(&mg.pool) else {
                server.lost.insert(mg.id);
                continue;
            };
            let g = self.groups.get_mut(&mg.id).expect("group");
            // A replica given by a move starts with no configuration.
            let conf = if mg.epoch == 0 && mg.replicas.contains(&s) {
                Membership::new(mg.replicas.clone())
            } else {
                Membership::default()
            };
            g.replicas.insert(
                s,
                SimReplica {
                    disk,
                    conf,
                    conf_index: 0,
                    matched: 0,
                    lost: false,
                },
            );
        }
        // GC orders.
        for o in answer.gc {
            let id = o.group;
            if self.servers.get_mut(&s).expect("server").lost.remove(&id) {
                continue;
            }
            let g = self.groups.get_mut(&id).expect("group");
            let Some(r) = g.replicas.get(&s) else {
                continue;
            };
            if !r.lost && !obsolete(s, &r.conf, r.conf_index, o.epoch) {
                continue;
            }
            if g.conf.contains(s) {
                return Err(format!(
                    "round {now}: replica GC removes server {s}'s replica of group {id}, which its configuration {:?} lists",
                    g.conf
                ));
            }
            g.replicas.remove(&s);
            self.stats.replicas_collected += 1;
        }
        // Move steps of the groups it leads.
        for mg in &assigned {
            let g = &self.groups[&mg.id];
            if g.leader != Some(s) {
                continue;
            }
            let peer_match: BTreeMap<NodeId, u64> = g
                .replicas
                .iter()
                .filter(|(&x, r)| !r.lost && self.servers[&x].up && g.conf.contains(x))
                .map(|(&x, r)| (x, r.matched))
                .collect();
            let step = decide(s, &g.conf, &peer_match, g.last_index, mg);
            let mut c = g.conf.clone();
            match step {
                MoveStep::Nothing => {
                    // Leave a joint configuration once it is in.
                    if !c.outgoing.is_empty() {
                        c.outgoing.clear();
                        self.change_conf(mg.id, c);
                    }
                }
                MoveStep::RemoveLearner(l) => {
                    c.learners.retain(|&x| x != l);
                    self.change_conf(mg.id, c);
                }
                MoveStep::AddLearner(l) => {
                    c.learners.push(l);
                    c.learners.sort_unstable();
                    self.change_conf(mg.id, c);
                }
                MoveStep::TransferLeader(to) => {
                    if self.replica_alive(g, to) {
                        self.groups.get_mut(&mg.id).expect("group").leader = Some(to);
                    }
                }
                MoveStep::ChangePeers(target) => {
                    // Joint first: C_old,new (the learner promoted).
                    let joint = Membership {
                        outgoing: c.voters.clone(),
                        learners: c
                            .learners
                            .iter()
                            .copied()
                            .filter(|l| !target.contains(l))
                            .collect(),
                        voters: target,
                    };
                    self.change_conf(mg.id, joint);
                }
            }
        }
        Ok(())
    }
}
