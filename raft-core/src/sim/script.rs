//! Scenario scripts: small, readable programs that put a cluster of real
//! cores through an exact sequence of events (the situations the Raft paper
//! draws) and check the outcome.
//!
//! One command a line; `#` starts a comment. Nothing happens unless a
//! command says so: messages wait in a queue until `deliver` or `stabilize`,
//! time moves only with `tick`. After every command each node's `Ready` is
//! handled (persist, queue messages, apply) and the simulator's invariant
//! checks run, so a script can never silently break safety.
//!
//! ```text
//! nodes 3                  # first line: cluster size, then options:
//!                          #   prevote=off checkquorum=off batch=N spare=K
//!                          #   (batch: most entries per Append; spare: K
//!                          #   more nodes start outside the group)
//! campaign 1               # node 1's election timer fires
//! stabilize                # deliver messages until none are left
//! expect role 1 leader
//! propose 1 hello          # a client command at node 1
//! deliver 1->2             # deliver only the queued messages from 1 to 2
//! drop                     # discard every queued message
//! partition 1 2 | 3        # cut every link between the groups; `heal`
//! isolate 3                # shorthand for `partition 3 | everyone else`
//! crash 2 / restart 2      # lose what is not durable / start from disk
//! tick 3 12                # 12 ticks on node 3 (`tick all 12` for all)
//! transfer 1 2             # ask leader 1 to hand over to 2
//! read 1 7                 # ReadIndex with context 7 at node 1
//! read 1 8 lease           # a lease read (falls back to ReadIndex when
//!                          # the lease does not hold)
//! change 1 1 2 4           # leader 1: make the voters {1, 2, 4}
//! learner 1 add 5          # leader 1: add (or `remove`) learner 5
//! reset 2 2 3              # node 2: reset_peers to {2, 3} (disaster recovery)
//! log 3 1 1 2 2            # (node down) replace node 3's log by entries
//!                          # of terms 1 1 2 2, and its term by the last
//!                          # (or by T with a trailing `term=T`)
//! expect role|term|commit|log|leader|error|read ...   (see `expect`)
//! ```

use std::collections::{BTreeSet, VecDeque};
use std::fmt::Write as _;

use rand_core::SeedableRng;
use rand_pcg::Pcg64Mcg;

use super::invariants::Invariants;
use crate::core::{
    BugSet, Config, Entry, EntryKind, HardState, Message, NodeId, Raft, ReadMode, Role,
};
use crate::driver::{Driver, DriverError, Flow, Host, Stage, Work};
use crate::storage::{NodeStorage, Storage};

/// A script that could not run, or whose expectation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ScriptError {
    /// 1-based line of the offending command.
    pub line: usize,
    pub reason: String,
    /// What the script printed before it stopped.
    pub transcript: String,
}

struct Node {
    id: NodeId,
    /// The running node: the shipped driver over the shipped storage.
    driver: Option<Driver>,
    /// What a crash left, while down (reopened at the start).
    disk: Option<NodeStorage>,
    commit: u64,
    read_states: Vec<(u64, u64)>,
    /// The state machine: the data of every applied entry, one a line.
    sm: Vec<u8>,
}

struct Scenario {
    nodes: Vec<Node>,
    queue: VecDeque<Message>,
    blocked: BTreeSet<(NodeId, NodeId)>,
    inv: Invariants,
    pre_vote: bool,
    check_quorum: bool,
    max_entries_per_msg: usize,
    catchup_timeout: u32,
    chunk: u64,
    bugs: BugSet,
    last_error: Option<String>,
    out: String,
}

/// Runs `text` and returns its transcript: each command followed by what
/// it caused (role changes, commits, refusals).
pub fn run_script(text: &str) -> Result<String, ScriptError> {
    run_script_with_bugs(text, BugSet::default())
}

/// Runs `text` with `bugs` injected into every node (they only take effect
/// in builds with the `bug-injection` feature).
pub fn run_script_with_bugs(text: &str, bugs: BugSet) -> Result<String, ScriptError> {
    let mut sc: Option<Scenario> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let cmd = raw.split('#').next().unwrap_or("").trim();
        if cmd.is_empty() {
            continue;
        }
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let out = sc.as_ref().map(|s| s.out.clone()).unwrap_or_default();
        let err = |reason: String| ScriptError {
            line,
            reason,
            transcript: out.clone(),
        };
        match sc.as_mut() {
            None => {
                if words[0] != "nodes" {
                    return Err(err("a script starts with `nodes N`".into()));
                }
                sc = Some(Scenario::new(&words[1..], bugs).map_err(err)?);
            }
            Some(s) => {
                let _ = writeln!(s.out, "> {cmd}");
                if let Err(reason) = s.command(&words) {
                    return Err(ScriptError {
                        line,
                        reason,
                        transcript: s.out.clone(),
                    });
                }
            }
        }
    }
    match sc {
        Some(s) => Ok(s.out),
        None => Err(ScriptError {
            line: 1,
            reason: "empty script".into(),
            transcript: String::new(),
        }),
    }
}

/// `voters [1, 2, 3]`, plus the old set while joint and the learners.
fn describe(m: &crate::core::Membership) -> String {
    let mut s = format!("voters {:?}", m.voters);
    if m.is_joint() {
        s += &format!(" and old voters {:?} (joint)", m.outgoing);
    }
    if !m.learners.is_empty() {
        s += &format!(", learners {:?}", m.learners);
    }
    s
}

fn parse_id(s: &str, n: usize) -> Result<NodeId, String> {
    let id: NodeId = s.parse().map_err(|_| format!("'{s}' is not a node id"))?;
    if id == 0 || id as usize > n {
        return Err(format!("no node {id} (nodes are 1..={n})"));
    }
    Ok(id)
}

fn parse_num(s: &str) -> Result<u64, String> {
    s.parse().map_err(|_| format!("'{s}' is not a number"))
}

fn parse_link(s: &str, n: usize) -> Result<(NodeId, NodeId), String> {
    let (a, b) = s
        .split_once("->")
        .ok_or_else(|| format!("'{s}' is not a link like 1->2"))?;
    Ok((parse_id(a, n)?, parse_id(b, n)?))
}

impl Scenario {
    fn new(args: &[&str], bugs: BugSet) -> Result<Scenario, String> {
        let n = args
            .first()
            .ok_or("`nodes` needs a count")?
            .parse::<usize>()
            .map_err(|_| "`nodes` needs a count".to_string())?;
        if !(1..=9).contains(&n) {
            return Err(format!("{n} nodes: a script runs 1 to 9"));
        }
        let mut spare = 0usize;
        let mut sc = Scenario {
            nodes: Vec::new(),
            queue: VecDeque::new(),
            blocked: BTreeSet::new(),
            inv: Invariants::default(),
            pre_vote: true,
            check_quorum: true,
            max_entries_per_msg: 64,
            catchup_timeout: 100,
            chunk: 1 << 20,
            bugs,
            last_error: None,
            out: String::new(),
        };
        for opt in &args[1..] {
            match *opt {
                "prevote=off" => sc.pre_vote = false,
                "prevote=on" => sc.pre_vote = true,
                "checkquorum=off" => sc.check_quorum = false,
                "checkquorum=on" => sc.check_quorum = true,
                o if o.starts_with("spare=") => {
                    spare = o[6..]
                        .parse()
                        .map_err(|_| format!("bad option '{o}': spare=K needs a count"))?;
                }
                o if o.starts_with("catchup=") => {
                    sc.catchup_timeout = o[8..]
                        .parse()
                        .ok()
                        .filter(|&t| t > 0)
                        .ok_or(format!("bad option '{o}': catchup=TICKS needs TICKS >= 1"))?;
                }
                o if o.starts_with("chunk=") => {
                    sc.chunk = o[6..]
                        .parse()
                        .ok()
                        .filter(|&c| c > 0)
                        .ok_or(format!("bad option '{o}': chunk=BYTES needs BYTES >= 1"))?;
                }
                o if o.starts_with("batch=") => {
                    sc.max_entries_per_msg = o[6..]
                        .parse()
                        .ok()
                        .filter(|&b| b > 0)
                        .ok_or(format!("bad option '{o}': batch=N needs N >= 1"))?;
                }
                o => return Err(format!("unknown option '{o}'")),
            }
        }
        if n + spare > 9 {
            return Err(format!(
                "{} nodes with spares: a script runs at most 9",
                n + spare
            ));
        }
        let ids: Vec<NodeId> = (1..=n as u64).collect();
        for id in 1..=(n + spare) as u64 {
            let voters = if id as usize <= n {
                ids.clone()
            } else {
                Vec::new()
            };
            sc.nodes.push(Node {
                id,
                driver: None,
                disk: Some(NodeStorage::memory(voters)),
                commit: 0,
                read_states: Vec::new(),
                sm: Vec::new(),
            });
            sc.start(id)?;
        }
        Ok(sc)
    }

    fn config(&self, id: NodeId) -> Config {
        let mut c = Config::new(id);
        c.pre_vote = self.pre_vote;
        c.check_quorum = self.check_quorum;
        c.max_entries_per_msg = self.max_entries_per_msg;
        c.catchup_timeout = self.catchup_timeout;
        c.snapshot_chunk_size = self.chunk;
        #[cfg(feature = "bug-injection")]
        {
            c.bugs = self.bugs;
        }
        #[cfg(not(feature = "bug-injection"))]
        let _ = self.bugs;
        c
    }

    fn start(&mut self, id: NodeId) -> Result<(), String> {
        let cfg = self.config(id);
        let n = &mut self.nodes[id as usize - 1];
        let disk = n.disk.take().ok_or(format!("node {id} is running"))?;
        let disk = disk
            .reopen()
            .map_err(|e| format!("node {id}: reopening: {e}"))?;
        n.commit = disk.hard_state().commit;
        n.sm = disk
            .snapshot_files()
            .map_err(|e| format!("node {id}: {e}"))?
            .and_then(|(_, f)| f.into_iter().next())
            .unwrap_or_default();
        let rng = Box::new(Pcg64Mcg::seed_from_u64(id));
        let raft = Raft::new(cfg, disk, rng).map_err(|e| e.to_string())?;
        n.driver = Some(Driver::new(raft));
        Ok(())
    }

    fn raft(&mut self, id: NodeId) -> Result<&mut Raft<NodeStorage>, String> {
        self.nodes[id as usize - 1]
            .driver
            .as_mut()
            .map(Driver::raft_mut)
            .ok_or(format!("node {id} is down"))
    }

    fn command(&mut self, w: &[&str]) -> Result<(), String> {
        let n = self.nodes.len();
        if w[0] != "expect" {
            self.last_error = None;
        }
        match w {
            ["campaign", id] => {
                let id = parse_id(id, n)?;
                self.raft(id)?.campaign_now();
            }
            ["tick", who] | ["tick", who, _] => {
                let count = w.get(2).map_or(Ok(1), |c| parse_num(c))?;
                let ids: Vec<NodeId> = if *who == "all" {
                    self.nodes
                        .iter()
                        .filter(|x| x.driver.is_some())
                        .map(|x| x.id)
                        .collect()
                } else {
                    vec![parse_id(who, n)?]
                };
                for _ in 0..count {
                    for &id in &ids {
                        self.raft(id)?.tick();
                        self.process(id)?;
                    }
                }
            }
            ["propose", id, data @ ..] => {
                let id = parse_id(id, n)?;
                let data = data.join(" ").into_bytes();
                if let Err(e) = self.raft(id)?.propose(data, None) {
                    self.refused(e.to_string());
                }
            }
            ["read", id, ctx] | ["read", id, ctx, "lease"] => {
                let (id, ctx) = (parse_id(id, n)?, parse_num(ctx)?);
                let mode = if w.len() == 4 {
                    ReadMode::Lease
                } else {
                    ReadMode::ReadIndex
                };
                if let Err(e) = self.raft(id)?.read_index(ctx, mode) {
                    self.refused(e.to_string());
                }
            }
            ["transfer", id, to] => {
                let (id, to) = (parse_id(id, n)?, parse_id(to, n)?);
                if let Err(e) = self.raft(id)?.transfer_leader(to) {
                    self.refused(e.to_string());
                }
            }
            ["deliver"] => self.deliver(None)?,
            ["deliver", link] => {
                let link = parse_link(link, n)?;
                self.deliver(Some(link))?;
            }
            ["stabilize"] => {
                let mut rounds = 0;
                while !self.queue.is_empty() {
                    rounds += 1;
                    if rounds > 1000 {
                        return Err("stabilize: messages still flowing after 1000 rounds".into());
                    }
                    self.deliver(None)?;
                }
            }
            ["drop"] => self.queue.clear(),
            ["drop", link] => {
                let (a, b) = parse_link(link, n)?;
                self.queue.retain(|m| (m.from, m.to) != (a, b));
            }
            ["partition", rest @ ..] => {
                let text = rest.join(" ");
                let mut groups = Vec::new();
                for g in text.split('|') {
                    let ids: Result<Vec<_>, _> =
                        g.split_whitespace().map(|x| parse_id(x, n)).collect();
                    groups.push(ids?);
                }
                self.partition(&groups);
            }
            ["isolate", id] => {
                let id = parse_id(id, n)?;
                let rest: Vec<NodeId> = (1..=n as u64).filter(|&x| x != id).collect();
                self.partition(&[vec![id], rest]);
            }
            ["heal"] => self.blocked.clear(),
            ["crash", id] => {
                let id = parse_id(id, n)?;
                let node = &mut self.nodes[id as usize - 1];
                let driver = node.driver.take().ok_or(format!("node {id} is down"))?;
                node.disk = Some(driver.into_raft().into_storage());
                node.read_states.clear();
                self.queue.retain(|m| m.to != id);
            }
            ["restart", id] => {
                let id = parse_id(id, n)?;
                self.start(id)?;
            }
            ["log", id, terms @ ..] => {
                let id = parse_id(id, n)?;
                self.set_log(id, terms)?;
            }
            ["change", id, voters @ ..] => {
                let id = parse_id(id, n)?;
                let voters: Result<Vec<NodeId>, String> =
                    voters.iter().map(|v| parse_id(v, n)).collect();
                if let Err(e) = self.raft(id)?.change_peers(voters?) {
                    self.refused(e.to_string());
                }
            }
            ["learner", id, op @ ("add" | "remove"), x] => {
                let (id, x) = (parse_id(id, n)?, parse_id(x, n)?);
                let r = self.raft(id)?;
                let res = if *op == "add" {
                    r.add_learner(x)
                } else {
                    r.remove_learner(x)
                };
                if let Err(e) = res {
                    self.refused(e.to_string());
                }
            }
            ["snapshot", id] => {
                let id = parse_id(id, n)?;
                self.snapshot(id)?;
            }
            ["reset", id, voters @ ..] => {
                let id = parse_id(id, n)?;
                let voters: Result<Vec<NodeId>, String> =
                    voters.iter().map(|v| parse_id(v, n)).collect();
                if let Err(e) = self.raft(id)?.reset_peers(voters?) {
                    self.refused(e.to_string());
                }
            }
            ["expect", what @ ..] => self.expect(what)?,
            _ => return Err(format!("unknown command '{}'", w.join(" "))),
        }
        for id in 1..=n as u64 {
            self.process(id)?;
        }
        Ok(())
    }

    /// Node `id` saves its state machine as a snapshot at its applied index
    /// and compacts its whole log up to it.
    fn snapshot(&mut self, id: NodeId) -> Result<(), String> {
        let i = id as usize - 1;
        let data = self.nodes[i].sm.clone();
        let r = self.raft(id)?;
        let index = r.applied_index();
        let (term, conf) = r
            .snapshot_point(index)
            .ok_or(format!("node {id} cannot snapshot at {index}"))?;
        let meta = crate::core::SnapshotMeta {
            index,
            term,
            conf,
            files: vec![crate::core::SnapshotFile {
                name: "applied".into(),
                size: data.len() as u64,
                crc: crate::core::checksum(&data),
            }],
        };
        let disk = r.storage_mut();
        disk.save_snapshot(meta, vec![data])
            .map_err(|e| e.to_string())?;
        disk.compact(index).map_err(|e| e.to_string())?;
        let _ = writeln!(self.out, "  node {id}: snapshot at {index}, log compacted");
        Ok(())
    }

    fn refused(&mut self, e: String) {
        let _ = writeln!(self.out, "  refused: {e}");
        self.last_error = Some(e);
    }

    fn partition(&mut self, groups: &[Vec<NodeId>]) {
        self.blocked.clear();
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i != j {
                    for &x in a {
                        for &y in b {
                            self.blocked.insert((x, y));
                        }
                    }
                }
            }
        }
    }

    fn set_log(&mut self, id: NodeId, terms: &[&str]) -> Result<(), String> {
        let node = &mut self.nodes[id as usize - 1];
        let disk = node
            .disk
            .as_mut()
            .ok_or(format!("`log` needs node {id} down (crash it first)"))?;
        let mut entries = Vec::new();
        let mut last = 0;
        let mut hs_term = None;
        for (i, t) in terms.iter().enumerate() {
            if let Some(v) = t.strip_prefix("term=") {
                hs_term = Some(parse_num(v)?);
                continue;
            }
            let term = parse_num(t)?;
            if term < last {
                return Err("log terms must not decrease".into());
            }
            last = term;
            entries.push(Entry {
                index: i as u64 + 1,
                term,
                kind: EntryKind::Normal,
                // Same (index, term), same entry: as if one leader made it.
                data: format!("t{term}-i{}", i + 1).into(),
            });
        }
        let voters = disk.initial_state().map_err(|e| e.to_string())?.1.voters;
        let term = hs_term.unwrap_or(last);
        if term < last {
            return Err(format!("term={term} is below the last entry's term {last}"));
        }
        let hard_state = HardState {
            term,
            vote: None,
            commit: 0,
        };
        // Written as a node writes: one persisted Ready.
        let mut fresh = NodeStorage::memory(voters.clone());
        fresh
            .persist(&crate::core::Ready {
                entries: entries.clone(),
                hard_state: Some(hard_state),
                ..Default::default()
            })
            .map_err(|e| e.to_string())?;
        *disk = fresh;
        node.commit = 0;
        // Hand-made logs are outside the invariants' knowledge; register
        // them so later checks compare against what the script built.
        let mut view = crate::storage::MemStorage::new(voters);
        view.append(&entries).map_err(|e| e.to_string())?;
        let log = crate::core::log::RaftLog::new(view, 0, 0);
        self.inv
            .on_persist(id, &entries, |_| None, &log)
            .map_err(|v| format!("{}: {}", v.property, v.detail))?;
        Ok(())
    }

    fn deliver(&mut self, only: Option<(NodeId, NodeId)>) -> Result<(), String> {
        let batch: Vec<Message> = std::mem::take(&mut self.queue).into();
        for m in batch {
            if only.is_some_and(|l| l != (m.from, m.to)) {
                self.queue.push_back(m);
                continue;
            }
            if self.blocked.contains(&(m.from, m.to)) {
                continue;
            }
            let to = m.to;
            let Some(r) = self.nodes[to as usize - 1]
                .driver
                .as_mut()
                .map(Driver::raft_mut)
            else {
                continue;
            };
            r.step(m).map_err(|e| format!("node {to}: {e}"))?;
            self.process(to)?;
        }
        Ok(())
    }

    /// Runs node `id`'s `Ready`s through the shipped driver.
    fn process(&mut self, id: NodeId) -> Result<(), String> {
        let i = id as usize - 1;
        let Some(mut driver) = self.nodes[i].driver.take() else {
            return Ok(());
        };
        let mut host = ScriptHost { sc: self, id };
        let handled = driver.handle_all(&mut host);
        self.nodes[i].driver = Some(driver);
        match handled {
            Ok(_) => Ok(()),
            Err(DriverError::Host(e)) => Err(e),
            Err(e) => Err(format!("node {id}: {e}")),
        }
    }

    /// `expect snapshot N INDEX` (N's latest snapshot), `expect first N I`
    /// (N's first log index), `expect sm N a b c` (the data N applied),
    /// `expect voters N v1 v2 ...`, `expect old N v1 ...` (the outgoing set
    /// while joint; `expect old N` alone: not joint), `expect learners N ...`,
    /// `expect role N leader|follower|candidate|precandidate|down`,
    /// `expect leader N` (N leads and nobody else does in its term),
    /// `expect term N T`, `expect commit N C`, `expect log N t1 t2 ...`
    /// (the terms of N's whole log), `expect error TEXT` (the last command
    /// was refused with a message containing TEXT), `expect read N CTX IDX`.
    fn expect(&mut self, w: &[&str]) -> Result<(), String> {
        let n = self.nodes.len();
        match w {
            ["role", id, role] => {
                let id = parse_id(id, n)?;
                let got = self.nodes[id as usize - 1]
                    .driver
                    .as_ref()
                    .map_or("down", |d| d.raft().role().name());
                if got != *role {
                    return Err(format!("node {id} is {got}, expected {role}"));
                }
            }
            ["leader", id] => {
                let id = parse_id(id, n)?;
                let r = self.raft(id)?;
                if r.role() != Role::Leader {
                    return Err(format!("node {id} is {}, expected leader", r.role().name()));
                }
                let term = r.term();
                let rival = self.nodes.iter().find(|x| {
                    x.id != id
                        && x.driver
                            .as_ref()
                            .map(Driver::raft)
                            .is_some_and(|r| r.role() == Role::Leader && r.term() == term)
                });
                if let Some(x) = rival {
                    return Err(format!("nodes {id} and {} both lead term {term}", x.id));
                }
            }
            ["term", id, t] => {
                let (id, t) = (parse_id(id, n)?, parse_num(t)?);
                let got = self.raft(id)?.term();
                if got != t {
                    return Err(format!("node {id} is in term {got}, expected {t}"));
                }
            }
            ["commit", id, c] => {
                let (id, c) = (parse_id(id, n)?, parse_num(c)?);
                let got = self.raft(id)?.commit_index();
                if got != c {
                    return Err(format!("node {id} has commit {got}, expected {c}"));
                }
            }
            ["log", id, terms @ ..] => {
                let id = parse_id(id, n)?;
                let want: Result<Vec<u64>, _> = terms.iter().map(|t| parse_num(t)).collect();
                let want = want?;
                let r = self.raft(id)?;
                let log = r.raft_log();
                let got: Vec<u64> = (1..=log.last_index())
                    .map(|i| log.term(i).unwrap_or(0))
                    .collect();
                if got != want {
                    return Err(format!("node {id} log terms {got:?}, expected {want:?}"));
                }
            }
            ["snapshot", id, index] => {
                let (id, index) = (parse_id(id, n)?, parse_num(index)?);
                let got = self.raft(id)?.storage().snapshot_meta().map(|m| m.index);
                if got != Some(index) {
                    return Err(format!("node {id} has snapshot {got:?}, expected {index}"));
                }
            }
            ["first", id, index] => {
                let (id, index) = (parse_id(id, n)?, parse_num(index)?);
                let got = self.raft(id)?.raft_log().first_index();
                if got != index {
                    return Err(format!("node {id}'s log starts at {got}, expected {index}"));
                }
            }
            ["sm", id, items @ ..] => {
                let id = parse_id(id, n)?;
                self.raft(id)?;
                let got = String::from_utf8_lossy(&self.nodes[id as usize - 1].sm).into_owned();
                let want: String = items.iter().map(|x| format!("{x}\n")).collect();
                if got != want {
                    return Err(format!("node {id} applied {got:?}, expected {want:?}"));
                }
            }
            ["voters" | "old" | "learners", id, ids @ ..] => {
                let id = parse_id(id, n)?;
                let want: Result<Vec<NodeId>, String> =
                    ids.iter().map(|v| parse_id(v, n)).collect();
                let mut want = want?;
                want.sort_unstable();
                let m = self.raft(id)?.membership();
                let got = match w[0] {
                    "voters" => &m.voters,
                    "old" => &m.outgoing,
                    _ => &m.learners,
                };
                if *got != want {
                    return Err(format!("node {id} has {} {got:?}, expected {want:?}", w[0]));
                }
            }
            ["error", text @ ..] => {
                let text = text.join(" ");
                match &self.last_error {
                    Some(e) if e.contains(&text) => {}
                    Some(e) => return Err(format!("refused with '{e}', expected '{text}'")),
                    None => return Err(format!("nothing was refused, expected '{text}'")),
                }
            }
            ["read", id, ctx, index] => {
                let (id, ctx, index) = (parse_id(id, n)?, parse_num(ctx)?, parse_num(index)?);
                let rs = &self.nodes[id as usize - 1].read_states;
                if !rs.contains(&(ctx, index)) {
                    return Err(format!(
                        "node {id} has reads {rs:?}, expected ({ctx}, {index})"
                    ));
                }
            }
            _ => return Err(format!("unknown expectation '{}'", w.join(" "))),
        }
        Ok(())
    }
}

/// The scenario as the driver's host: a message queue the script delivers
/// by hand, a state machine that records what it applies, invariant checks
/// and a transcript line for everything worth reading.
struct ScriptHost<'a> {
    sc: &'a mut Scenario,
    id: NodeId,
}

fn broken(v: super::invariants::Violation) -> String {
    format!("{}: {}", v.property, v.detail)
}

impl Host for ScriptHost<'_> {
    type Error = String;

    fn send(&mut self, _raft: &Raft<NodeStorage>, msg: Message) {
        self.sc.queue.push_back(msg);
    }

    fn snapshot_in_memory(&self) -> bool {
        true // a script's state machine is bytes
    }

    fn work(&mut self, _raft: &Raft<NodeStorage>, work: Work) -> Result<(), String> {
        let (id, i) = (self.id, self.id as usize - 1);
        match work {
            Work::Load { meta, files } => {
                self.sc
                    .inv
                    .on_install(id, meta.index, meta.term)
                    .map_err(broken)?;
                let files = files.ok_or_else(|| {
                    format!("snapshot {} handed over without its files", meta.index)
                })?;
                // A script's snapshot is one file, or none for an empty
                // state machine.
                self.sc.nodes[i].sm = files.into_iter().next().unwrap_or_default();
                let _ = writeln!(
                    self.sc.out,
                    "  node {id}: snapshot {} installed",
                    meta.index
                );
            }
            Work::Entries(entries) => {
                for e in &entries {
                    self.sc.inv.on_apply(id, e).map_err(broken)?;
                    if e.kind == EntryKind::Normal {
                        let sm = &mut self.sc.nodes[i].sm;
                        sm.extend_from_slice(&e.data);
                        sm.push(b'\n');
                    }
                }
            }
            Work::LeaderStart { .. }
            | Work::LeaderStop
            | Work::StartFollowing { .. }
            | Work::StopFollowing => {}
        }
        Ok(())
    }

    fn read_ready(&mut self, _raft: &Raft<NodeStorage>, rs: crate::core::ReadState) {
        let id = self.id;
        self.sc.nodes[id as usize - 1]
            .read_states
            .push((rs.ctx, rs.index));
        let _ = writeln!(
            self.sc.out,
            "  node {id}: read {} ready at index {}",
            rs.ctx, rs.index
        );
    }

    fn at(
        &mut self,
        r: &Raft<NodeStorage>,
        stage: Stage,
        rd: &crate::core::Ready,
    ) -> Result<Flow, String> {
        let (id, i) = (self.id, self.id as usize - 1);
        match stage {
            Stage::Taken => {
                if !rd.entries.is_empty() {
                    let disk = r.storage();
                    self.sc
                        .inv
                        .on_persist(id, &rd.entries, |x| disk.term(x).ok(), r.raft_log())
                        .map_err(broken)?;
                }
            }
            Stage::Persisted => {
                for op in &rd.snapshot_ops {
                    if let crate::core::SnapshotOp::Install(meta) = op {
                        let n = &mut self.sc.nodes[i];
                        n.commit = n.commit.max(meta.index);
                    }
                }
                if let Some(hs) = rd.hard_state {
                    let old = self.sc.nodes[i].commit;
                    if hs.commit > old {
                        self.sc
                            .inv
                            .on_commit(id, hs.term, old, hs.commit, r.raft_log())
                            .map_err(broken)?;
                        self.sc.nodes[i].commit = hs.commit;
                        let _ = writeln!(self.sc.out, "  node {id}: commit {}", hs.commit);
                    }
                }
                if let Some(ss) = rd.soft_state {
                    if ss.role == Role::Leader {
                        self.sc
                            .inv
                            .on_leader(id, r.term(), r.raft_log())
                            .map_err(broken)?;
                    }
                    let leader = match ss.leader {
                        Some(l) if l != id => format!(", leader {l}"),
                        _ => String::new(),
                    };
                    let _ = writeln!(
                        self.sc.out,
                        "  node {id}: {} in term {}{leader}",
                        ss.role.name(),
                        r.term()
                    );
                }
                for ev in &rd.events {
                    let note = match ev {
                        crate::core::Event::ElectionTimeout { pre_vote } => {
                            format!(
                                "election timeout ({})",
                                if *pre_vote { "pre-vote" } else { "vote" }
                            )
                        }
                        crate::core::Event::CheckQuorumStepDown => {
                            "no quorum heard: steps down".into()
                        }
                        crate::core::Event::TransferStarted { to } => {
                            format!("transfer to {to} started")
                        }
                        crate::core::Event::TimeoutNowSent { to } => {
                            format!("TimeoutNow sent to {to}")
                        }
                        crate::core::Event::TransferAborted { to } => {
                            format!("transfer to {to} abandoned")
                        }
                        crate::core::Event::MembershipChanged { index, membership } => {
                            format!("config at {index}: {}", describe(membership))
                        }
                        crate::core::Event::ChangeDone { membership } => {
                            format!("change done: {}", describe(membership))
                        }
                        crate::core::Event::ChangeFailed { reason } => {
                            format!("change failed: {reason}")
                        }
                        crate::core::Event::SnapshotOffered { to, index, bytes } => {
                            format!("offers snapshot {index} ({bytes} bytes) to {to}")
                        }
                        crate::core::Event::SnapshotChunkReceived {
                            file,
                            offset,
                            len,
                            ok,
                            ..
                        } => format!(
                            "chunk {file}@{offset}+{len} {}",
                            if *ok {
                                "verified"
                            } else {
                                "bad checksum, asked again"
                            }
                        ),
                        crate::core::Event::SnapshotResumed { index, have } => {
                            format!("resumes snapshot {index} with {have} bytes already held")
                        }
                        crate::core::Event::SnapshotDiscarded { index, reason } => {
                            format!("discards snapshot {index}: {reason}")
                        }
                        _ => continue,
                    };
                    let _ = writeln!(self.sc.out, "  node {id}: {note}");
                }
            }
            Stage::Advanced => {}
        }
        Ok(Flow::Go)
    }
}
