//! The simulator as the [`Driver`](crate::driver::Driver)'s host.
//!
//! The driver carries out each `Ready` exactly as a real node does; this is
//! what surrounds it under the simulator: the simulated network, the KV
//! state machine applied inline, and the checks between the driver's
//! stages (the invariants, and the crashes at the moments a power cut
//! hurts most: before the write, after it but before anything is sent, and
//! after the whole `Ready`).

use crate::core::{
    EntryKind, HardState, Message, NodeId, Raft, ReadState, Ready, Role, SnapshotOp,
};
use crate::driver::{Flow, Host, Stage, Work};
use crate::storage::{NodeStorage, Storage};
use crate::trace::schema::Kind;

use super::super::kv::{Kv, Request};
use super::{Failure, Reply, Sim, SNAPSHOT_INTERVAL};

/// A state machine snapshot taken at an index: its files, by name.
pub(super) type Taken = (u64, Vec<(String, Vec<u8>)>);

pub(super) struct SimHost<'a> {
    pub(super) sim: &'a mut Sim,
    /// The node's index in `sim.nodes`, the group's index in its
    /// `groups`, and the node's id.
    pub(super) i: usize,
    pub(super) g: usize,
    pub(super) node: NodeId,
    /// The durable hard state before this `Ready`.
    pub(super) before: HardState,
    /// This `Ready` is an election moment (a crash is likelier then).
    pub(super) moment: bool,
    /// Set when the host crashed the node: the caller crashes it once the
    /// driver is back in place.
    pub(super) crash: bool,
    /// A snapshot of the state machine to store after this `Ready`.
    pub(super) snapshot_at: Option<Taken>,
}

impl SimHost<'_> {
    /// Lets trace records of this node show its state while its driver is
    /// out of `sim.nodes` (it is, for the whole `Ready`).
    fn view(&mut self, raft: &Raft<NodeStorage>) {
        if !self.sim.traces(self.g) {
            return;
        }
        self.sim.viewing = Some((
            self.node,
            raft.term(),
            raft.role().into(),
            raft.commit_index(),
        ));
    }

    /// Whether this `Ready` writes anything durable (only those are crash
    /// points).
    fn durable_write(rd: &Ready) -> bool {
        rd.hard_state.is_some() || !rd.entries.is_empty()
    }

    fn crash_here(&mut self, rd: &Ready, moment: bool) -> Flow {
        if Self::durable_write(rd) && self.sim.crash_point(moment) {
            self.crash = true;
            return Flow::Stop;
        }
        Flow::Go
    }

    /// Before the write: an install must not replace committed entries,
    /// and new entries must not overwrite committed ones.
    fn taken(&mut self, raft: &Raft<NodeStorage>, rd: &Ready) -> Result<Flow, Failure> {
        let (node, g) = (self.node, self.g);
        for op in &rd.snapshot_ops {
            if let SnapshotOp::Install(meta) = op {
                // An install replaces the whole log: it must not hold a
                // committed entry past the snapshot (that one would be lost).
                let disk = raft.storage();
                for index in meta.index + 1..=disk.last_index() {
                    let held = disk.term(index).ok();
                    if held.is_some() && held == self.sim.inv[g].committed_term(index) {
                        let detail = format!(
                            "node {node} installed the snapshot at {} over committed entry {index}",
                            meta.index
                        );
                        return Err(self.sim.fail_in(g, "State Machine Safety", detail));
                    }
                }
            }
        }
        if !rd.entries.is_empty() {
            let disk = raft.storage();
            let check = self.sim.inv[g].on_persist(
                node,
                &rd.entries,
                |i| disk.term(i).ok(),
                raft.raft_log(),
            );
            if let Err(v) = check {
                return Err(self.sim.violated(g, v));
            }
        }
        // A crash before the write lands (only the messages the core let
        // leave early, a leader's appends, are out), half the time in the
        // middle of it: the power goes after a few of the disk's changes,
        // the write fails, and the crash keeps, tears or loses what was not
        // synced. Kept rare: the election moments already crash often after
        // the write.
        if Self::durable_write(rd) && self.sim.crash_point(false) {
            if self.sim.chance(50) {
                let changes = 1 + self.sim.rand(6);
                self.sim.nodes[self.i].fs.cut_power_after(changes);
                return Ok(Flow::Go);
            }
            self.crash = true;
            return Ok(Flow::Stop);
        }
        Ok(Flow::Go)
    }

    /// After the write: trace it, check commits and new leaders, and maybe
    /// crash before anything that depends on it is sent.
    fn persisted(&mut self, raft: &Raft<NodeStorage>, rd: &Ready) -> Result<Flow, Failure> {
        let (node, i, g) = (self.node, self.i, self.g);
        // The write finished before a power cut planned in it took effect.
        self.sim.nodes[i].fs.cancel_power_cut();
        for op in &rd.snapshot_ops {
            if let SnapshotOp::Install(meta) = op {
                // Everything the installed snapshot covers is committed.
                let r = &mut self.sim.nodes[i].groups[g];
                r.commit = r.commit.max(meta.index);
            }
        }
        if let (Some(f), Some(l)) = (rd.entries.first(), rd.entries.last()) {
            let (first, last, last_term) = (f.index, l.index, l.term);
            self.sim.emit_in(
                g,
                node,
                Kind::Append {
                    first,
                    last,
                    last_term,
                },
            );
        }
        if let Some(hs) = rd.hard_state {
            self.sim.emit_in(
                g,
                node,
                Kind::Persist {
                    hs_term: hs.term,
                    vote: hs.vote,
                    hs_commit: hs.commit,
                },
            );
            let old = self.sim.nodes[i].groups[g].commit;
            if hs.commit > old {
                let check =
                    self.sim.inv[g].on_commit(node, hs.term, old, hs.commit, raft.raft_log());
                if let Err(v) = check {
                    return Err(self.sim.violated(g, v));
                }
                self.sim.nodes[i].groups[g].commit = hs.commit;
                self.sim.emit_in(g, node, Kind::Commit { index: hs.commit });
            }
            self.sim.stats.max_term = self.sim.stats.max_term.max(hs.term);
        }
        if let Some(ss) = rd.soft_state {
            if ss.role == Role::Leader {
                if let Err(v) = self.sim.inv[g].on_leader(node, raft.term(), raft.raft_log()) {
                    return Err(self.sim.violated(g, v));
                }
                self.sim.stats.leaders_elected += 1;
                self.sim.nodes[i].groups[g].new_leader = true;
            } else {
                // Reads in flight die with the leadership.
                self.sim.nodes[i].groups[g].reads.clear();
                self.sim.nodes[i].groups[g].ready_reads.clear();
            }
            let from = std::mem::replace(&mut self.sim.nodes[i].groups[g].role, ss.role.into());
            self.sim.emit_in(
                g,
                node,
                Kind::Role {
                    from,
                    leader: ss.leader,
                },
            );
        }
        let leading = raft.role() == Role::Leader;
        for ev in &rd.events {
            self.sim.trace_core_event(node, g, ev, leading);
        }
        // Election moments: a new term or vote written, a new leader (its
        // no-op not yet replicated), or its first commit (the hand-over of
        // the previous terms' entries).
        let before = self.before;
        let first_commit = rd.hard_state.is_some_and(|hs| hs.commit > before.commit)
            && std::mem::take(&mut self.sim.nodes[i].groups[g].new_leader);
        let became_leader = rd.soft_state.is_some_and(|ss| ss.role == Role::Leader);
        self.moment = first_commit
            || became_leader
            || rd
                .hard_state
                .is_some_and(|hs| hs.term != before.term || hs.vote != before.vote);
        // Crash after the write, before any message that depends on it
        // leaves: what was persisted survives, what was about to be said
        // is lost.
        Ok(self.crash_here(rd, self.moment))
    }

    /// After the `Ready`: serve the reads the state machine caught up
    /// with, and maybe crash.
    fn advanced(&mut self, raft: &Raft<NodeStorage>, rd: &Ready) -> Result<Flow, Failure> {
        let (node, i, g) = (self.node, self.i, self.g);
        let applied = raft.applied_index();
        let ready = std::mem::take(&mut self.sim.nodes[i].groups[g].ready_reads);
        for (index, ctx) in ready {
            if index > applied {
                self.sim.nodes[i].groups[g].ready_reads.push((index, ctx));
                continue;
            }
            if let Some((c, seq, key)) = self.sim.nodes[i].groups[g].reads.remove(&ctx) {
                let v = self.sim.nodes[i].groups[g].kv.get(key);
                self.sim.reply(node, c, seq, Reply::Done(v));
            }
        }
        Ok(self.crash_here(rd, self.moment))
    }

    /// An installed snapshot replaces the state machine.
    fn load(&mut self, files: &[Vec<u8>], index: u64, term: u64) -> Result<(), Failure> {
        let (node, i, g) = (self.node, self.i, self.g);
        let kv = match Kv::from_files(files) {
            Ok(kv) => kv,
            Err(why) => {
                return Err(self
                    .sim
                    .fail_in(g, "Core error", format!("node {node}: {why}")))
            }
        };
        let state = kv.fingerprint();
        self.sim.nodes[i].groups[g].kv = kv;
        if let Err(v) = self.sim.inv[g].on_install(node, index, term) {
            return Err(self.sim.violated(g, v));
        }
        if let Err(v) = self.sim.inv[g].on_state(node, index, state) {
            return Err(self.sim.violated(g, v));
        }
        Ok(())
    }

    /// Applies committed entries to the KV and answers their clients.
    fn apply(
        &mut self,
        raft: &Raft<NodeStorage>,
        entries: &[crate::core::Entry],
    ) -> Result<(), Failure> {
        let (node, i, g) = (self.node, self.i, self.g);
        let (Some(f), Some(l)) = (entries.first(), entries.last()) else {
            return Ok(());
        };
        let (first, last) = (f.index, l.index);
        for e in entries {
            if let Err(v) = self.sim.inv[g].on_apply(node, e) {
                return Err(self.sim.violated(g, v));
            }
            // A node applies only what it holds durably: a state machine
            // that writes its own files (the block store's) must never be
            // ahead of the log that replays it after a crash.
            if raft.storage().term(e.index).ok() != Some(e.term) {
                let detail = format!(
                    "node {node} applied entry {} (term {}) before it was durable in its log",
                    e.index, e.term
                );
                return Err(self.sim.fail_in(g, "Durable Apply", detail));
            }
            if e.kind == EntryKind::Normal {
                let req = match Request::decode(&e.data) {
                    Ok(r) => r,
                    Err(why) => return Err(self.sim.fail_in(g, "Core error", why)),
                };
                let result = self.sim.nodes[i].groups[g].kv.apply(&req);
                let c = req.client as usize - 1;
                if self.sim.nodes[i].groups[g].proposals.get(&c) == Some(&req.seq) {
                    self.sim.nodes[i].groups[g].proposals.remove(&c);
                    self.sim.reply(node, c, req.seq, Reply::Done(result));
                }
            }
            if self.sim.cfg.compact && e.index % SNAPSHOT_INTERVAL == 0 {
                // The state exactly at this index, on every replica.
                self.snapshot_at = Some((e.index, self.sim.nodes[i].groups[g].kv.to_files()));
            }
        }
        self.sim.emit_in(g, node, Kind::Apply { first, last });
        let state = self.sim.nodes[i].groups[g].kv.fingerprint();
        if let Err(v) = self.sim.inv[g].on_state(node, last, state) {
            return Err(self.sim.violated(g, v));
        }
        Ok(())
    }
}

impl Host for SimHost<'_> {
    type Error = Failure;

    fn send(&mut self, raft: &Raft<NodeStorage>, msg: Message) {
        self.view(raft);
        self.sim.send(self.g, msg);
    }

    fn work(&mut self, raft: &Raft<NodeStorage>, work: Work) -> Result<(), Failure> {
        self.view(raft);
        if let Err(why) = self.sim.nodes[self.i].groups[self.g].contract.check(&work) {
            let (node, g) = (self.node, self.g);
            return Err(self.sim.fail_in(
                g,
                "State Machine Contract",
                format!("node {node}: {why}"),
            ));
        }
        match work {
            Work::Load {
                meta,
                files: Some(files),
            } => self.load(&files, meta.index, meta.term),
            Work::Load { meta, files: None } => Err(self.sim.fail(
                "Core error",
                format!(
                    "node {}: snapshot {} handed over without its files",
                    self.node, meta.index
                ),
            )),
            Work::Entries(entries) => self.apply(raft, &entries),
            // The KV has no leader-only work.
            Work::LeaderStart { .. }
            | Work::LeaderStop
            | Work::StartFollowing { .. }
            | Work::StopFollowing => Ok(()),
        }
    }

    fn snapshot_in_memory(&self) -> bool {
        true // the simulated KV loads from bytes
    }

    fn read_ready(&mut self, _raft: &Raft<NodeStorage>, rs: ReadState) {
        self.sim.nodes[self.i].groups[self.g]
            .ready_reads
            .push((rs.index, rs.ctx));
    }

    fn at(&mut self, raft: &Raft<NodeStorage>, stage: Stage, rd: &Ready) -> Result<Flow, Failure> {
        self.view(raft);
        match stage {
            Stage::Taken => self.taken(raft, rd),
            Stage::Persisted => self.persisted(raft, rd),
            Stage::Advanced => self.advanced(raft, rd),
        }
    }
}
