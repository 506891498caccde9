//! Membership changes as a node lives them: tracking the configuration of
//! its log (`membership`), and, on a leader, driving a change from request
//! to completion.
//!
//! A change of voters runs in stages, one change at a time:
//! 1. new members join as learners (`AddLearners`) and the leader waits
//!    until each is within `catchup_margin` entries of its log; if that takes
//!    longer than `catchup_timeout` ticks the change fails and the learners
//!    are removed again, so a member that cannot keep up never stalls the
//!    group;
//! 2. the voter change is appended: one `AddVoter`/`RemoveVoter` when a
//!    single voter changes, otherwise `EnterJoint` (C_old,new);
//! 3. when `EnterJoint` commits, the leader appends `LeaveJoint` (C_new);
//! 4. when the last step commits the change is done; a leader that is not a
//!    voter of C_new steps down.

use super::event::Event;
use super::membership::{ConfChange, ConfEntry, Membership};
use super::message::{ConfState, Entry, EntryKind, NodeId};
use super::progress::Progress;
use super::raft::{Raft, Role};
use crate::storage::Storage;
use crate::ChangeError;

/// The leader's record of a voter change it is driving.
#[derive(Debug, Clone)]
pub(crate) struct ChangeInProgress {
    /// The voter set asked for.
    target: Vec<NodeId>,
    /// Members that must catch up before they vote.
    joining: Vec<NodeId>,
    /// The learners this change added (removed again if it fails).
    added_learners: Vec<NodeId>,
    /// Leader ticks spent waiting for `joining` to catch up.
    elapsed: u32,
    /// Whether the voter change itself is in the log yet.
    voting: bool,
}

impl<S: Storage> Raft<S> {
    /// The configuration this node uses now (the latest in its log).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Whether a configuration change is under way on this leader.
    pub fn change_in_progress(&self) -> bool {
        self.change.is_some()
    }

    /// Whether a configuration entry is appended but not committed.
    fn conf_pending(&self) -> bool {
        self.conf_log
            .last()
            .is_some_and(|(i, _)| *i > self.log.committed)
    }

    /// The latest configuration whose entry is committed.
    pub(crate) fn committed_membership(&self) -> &Membership {
        self.conf_log
            .iter()
            .rev()
            .find(|(i, _)| *i <= self.log.committed)
            .map_or(&self.conf_base.1, |(_, m)| m)
    }

    /// Whether this node may start an election: it is a voter of its latest
    /// configuration, or of the latest committed one. The second case
    /// matters when a change that removes this node is appended but not
    /// committed: if its leader is gone, this node may hold the only copy
    /// of that entry, and must be able to lead (under the new
    /// configuration) long enough to commit it, then step down.
    pub(crate) fn can_campaign(&self) -> bool {
        self.membership.is_voter(self.id) || self.committed_membership().is_voter(self.id)
    }

    /// Keeps the configuration in step with the log after `ents` were
    /// appended (possibly over a truncated suffix).
    pub(crate) fn note_appended(&mut self, ents: &[Entry]) {
        let Some(first) = ents.first() else {
            return;
        };
        let before = self.conf_log.len();
        self.conf_log.retain(|(i, _)| *i < first.index);
        let mut changed = self.conf_log.len() != before;
        for e in ents.iter().filter(|e| e.kind == EntryKind::ConfChange) {
            // The leader validated the change; an entry that does not parse
            // is corrupt and is skipped identically on every node.
            if let Ok(c) = ConfEntry::decode(&e.data) {
                self.conf_log.push((e.index, c.result));
                changed = true;
            }
        }
        if changed {
            let now = self
                .conf_log
                .last()
                .map_or(&self.conf_base.1, |(_, m)| m)
                .clone();
            self.set_membership(now);
        }
    }

    /// Rebuilds the configuration from the base and the stable log (start).
    pub(crate) fn load_membership(&mut self, cs: ConfState) -> Result<(), crate::Error> {
        // The base is whichever is newer: the recorded one, or the
        // configuration of the latest snapshot (the log before it is gone).
        let cs = match self.log.storage.snapshot_meta() {
            Some(meta) if meta.conf.index > cs.index => meta.conf,
            _ => cs,
        };
        let base = Membership {
            voters: Membership::new(cs.voters).voters,
            outgoing: Membership::new(cs.outgoing).voters,
            learners: Membership::new(cs.learners).voters,
        };
        self.conf_base = (cs.index, base.clone());
        self.membership = base;
        let lo = (cs.index + 1).max(self.log.storage.first_index());
        let hi = self.log.last_index() + 1;
        if lo < hi {
            let ents = self.log.slice(lo, hi, u64::MAX)?;
            let confs: Vec<Entry> = ents
                .into_iter()
                .filter(|e| e.kind == EntryKind::ConfChange)
                .collect();
            self.note_appended_from_start(&confs);
        }
        Ok(())
    }

    fn note_appended_from_start(&mut self, confs: &[Entry]) {
        for e in confs {
            if let Ok(c) = ConfEntry::decode(&e.data) {
                self.conf_log.push((e.index, c.result));
            }
        }
        if let Some((_, m)) = self.conf_log.last() {
            self.membership = m.clone();
        }
    }

    pub(crate) fn set_membership(&mut self, m: Membership) {
        if m == self.membership {
            return;
        }
        // A node that joins (again) starts from a fresh progress. One
        // removed while it was down keeps its old progress (its removal is
        // never acknowledged); back, perhaps with its disk replaced, its
        // old match would make the leader ignore its rejections as stale
        // and never send it the log. A lower match is always safe.
        let before = self.membership.members();
        for id in m.members() {
            if id != self.id && !before.contains(&id) {
                self.progress.remove(&id);
            }
        }
        self.membership = m;
        let index = self.conf_log.last().map_or(self.conf_base.0, |(i, _)| *i);
        self.events.push(Event::MembershipChanged {
            index,
            membership: self.membership.clone(),
        });
        if self.role == Role::Leader {
            self.sync_progress();
        }
    }

    /// Gives every member a progress entry and drops those of non-members.
    ///
    /// A removed member keeps its progress until the removal is committed
    /// and it has acknowledged the entry: it still gets the log, so it
    /// learns of its removal, then one last heartbeat carrying the commit
    /// index (so it knows the removal committed and never campaigns).
    pub(crate) fn sync_progress(&mut self) {
        let members = self.membership.members();
        let mut keep = members.clone();
        keep.extend(self.committed_membership().members());
        let next = self.log.last_index() + 1;
        let keep_removed = self.cfg.bug(super::bugs::Bug::CountRemovedMember);
        let removal = self.conf_log.last().map_or(0, |(i, _)| *i);
        let dropped: Vec<NodeId> = self
            .progress
            .iter()
            .filter(|(id, p)| !keep.contains(id) && **id != self.id && p.matched >= removal)
            .map(|(id, _)| *id)
            .collect();
        for id in dropped {
            let matched = self.progress.get(&id).map_or(0, |p| p.matched);
            self.send(
                id,
                self.term,
                super::message::MessageBody::Heartbeat {
                    commit: matched.min(self.log.committed),
                    read_round: 0,
                    lease_tick: self.ticks,
                    quiesce: false,
                },
            );
            if !keep_removed {
                self.progress.remove(&id);
            }
        }
        for id in members {
            self.progress.entry(id).or_insert_with(|| {
                let mut pr = Progress::new(next, self.cfg.max_inflight_msgs);
                pr.recent_active = true; // a new member gets one timeout's grace
                pr
            });
        }
        let id = self.id;
        let persisted = self.log.persisted_index();
        if let Some(pr) = self.progress.get_mut(&id) {
            pr.matched = pr.matched.max(persisted);
        }
    }

    fn check_can_change(&self) -> Result<(), ChangeError> {
        if self.role != Role::Leader {
            return Err(ChangeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transfer.is_some() {
            return Err(ChangeError::TransferInProgress);
        }
        // A new leader must commit an entry of its term first: otherwise a
        // single-step change could overlap an uncommitted change of an
        // earlier leader (the bug in the original single-server algorithm).
        if self.log.term(self.log.committed) != Some(self.term) {
            return Err(ChangeError::NoCommitInTerm);
        }
        if self.change.is_some() || self.conf_pending() || self.membership.is_joint() {
            return Err(ChangeError::InProgress);
        }
        Ok(())
    }

    /// Appends `change` (valid against the current configuration).
    fn propose_conf(&mut self, change: ConfChange) -> u64 {
        let mut result = match self.membership.apply(&change) {
            Ok(m) => m,
            Err(why) => {
                debug_assert!(false, "proposed an invalid change: {why}");
                return 0;
            }
        };
        if self.cfg.bug(super::bugs::Bug::SkipJoint) {
            // The bug: C_old -> C_new in one step for any change.
            result.outgoing.clear();
        }
        let index = self.log.last_index() + 1;
        let e = Entry {
            index,
            term: self.term,
            kind: EntryKind::ConfChange,
            data: ConfEntry { change, result }.encode().into(),
        };
        self.log.append(std::slice::from_ref(&e));
        self.note_appended(std::slice::from_ref(&e));
        self.bcast_append();
        index
    }

    /// Changes the voters to `voters` (any set to any set). New members
    /// join as learners first and vote only once caught up; one voter in or
    /// out goes in a single step, anything else through joint consensus.
    /// The outcome is reported as an [`Event`] (`ChangeDone` or
    /// `ChangeFailed`).
    pub fn change_peers(&mut self, voters: Vec<NodeId>) -> Result<(), ChangeError> {
        self.check_can_change()?;
        self.note_work();
        let target = Membership::new(voters).voters;
        if target.is_empty() {
            return Err(ChangeError::Invalid("the new voter set is empty".into()));
        }
        if target.contains(&0) {
            return Err(ChangeError::Invalid("0 is not a node id".into()));
        }
        if target == self.membership.voters {
            return Err(ChangeError::Invalid("the voters are already these".into()));
        }
        Membership::new(target.iter().chain(&self.membership.learners).copied())
            .check_size()
            .map_err(ChangeError::Invalid)?;
        let joining: Vec<NodeId> = target
            .iter()
            .copied()
            .filter(|v| !self.membership.voters.contains(v))
            .collect();
        let new_learners: Vec<NodeId> = joining
            .iter()
            .copied()
            .filter(|v| !self.membership.is_learner(*v))
            .collect();
        self.change = Some(ChangeInProgress {
            target,
            joining,
            added_learners: new_learners.clone(),
            elapsed: 0,
            voting: false,
        });
        if !new_learners.is_empty() {
            self.propose_conf(ConfChange::AddLearners(new_learners));
        }
        self.advance_change();
        Ok(())
    }

    /// Adds `id` as a learner: it receives the log and never votes.
    pub fn add_learner(&mut self, id: NodeId) -> Result<(), ChangeError> {
        self.check_can_change()?;
        self.note_work();
        let change = ConfChange::AddLearners(vec![id]);
        self.membership
            .apply(&change)
            .map_err(ChangeError::Invalid)?;
        self.propose_conf(change);
        Ok(())
    }

    /// Removes learner `id`.
    pub fn remove_learner(&mut self, id: NodeId) -> Result<(), ChangeError> {
        self.check_can_change()?;
        self.note_work();
        let change = ConfChange::RemoveLearners(vec![id]);
        self.membership
            .apply(&change)
            .map_err(ChangeError::Invalid)?;
        self.propose_conf(change);
        Ok(())
    }

    /// Moves a change forward when it can: catch-up done, then the voter
    /// change. Called on every leader tick and commit.
    fn advance_change(&mut self) {
        let Some(c) = &self.change else {
            return;
        };
        if c.voting {
            return;
        }
        let pending = self.conf_pending();
        let last = self.log.last_index();
        let margin = self.cfg.catchup_margin;
        // Caught up: it has acknowledged an append (its log matches ours,
        // so it is replicating) and is within the margin of our last entry.
        let caught_up = c.joining.iter().all(|id| {
            self.progress.get(id).is_some_and(|p| {
                p.state == super::progress::ProgressState::Replicate && p.matched + margin >= last
            })
        });
        if pending || !caught_up {
            return;
        }
        let current = self.membership.voters.clone();
        let target = c.target.clone();
        let joining = c.joining.clone();
        let removed: Vec<NodeId> = current
            .iter()
            .copied()
            .filter(|v| !target.contains(v))
            .collect();
        let change = match (&joining[..], &removed[..]) {
            ([id], []) => ConfChange::AddVoter(*id),
            ([], [id]) => ConfChange::RemoveVoter(*id),
            _ => ConfChange::EnterJoint {
                learners: self
                    .membership
                    .learners
                    .iter()
                    .copied()
                    .filter(|l| !target.contains(l))
                    .collect(),
                voters: target,
            },
        };
        if let Some(c) = self.change.as_mut() {
            c.voting = true;
        }
        self.propose_conf(change);
    }

    /// Counts a leader tick against a change waiting for its learners.
    pub(crate) fn tick_change(&mut self) {
        self.advance_change();
        let limit = self.cfg.catchup_timeout;
        let pending = self.conf_pending();
        let Some(c) = self.change.as_mut() else {
            return;
        };
        if c.voting {
            return;
        }
        c.elapsed += 1;
        // Past the limit, wait still while the entry that added the
        // learners is uncommitted: the removal can only follow it.
        if c.elapsed < limit || pending {
            return;
        }
        let added = c.added_learners.clone();
        let slow: Vec<NodeId> = c.joining.clone();
        self.change = None;
        self.events.push(Event::ChangeFailed {
            reason: format!(
                "learners {slow:?} did not catch up within {limit} ticks; they were removed"
            ),
        });
        let still: Vec<NodeId> = added
            .into_iter()
            .filter(|l| self.membership.is_learner(*l))
            .collect();
        if !still.is_empty() && !self.conf_pending() {
            self.propose_conf(ConfChange::RemoveLearners(still));
        }
    }

    /// Reacts to the commit index moving on a leader: leaves joint
    /// consensus, finishes a change, steps down when no longer a voter.
    pub(crate) fn after_commit(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let committed = self.log.committed;
        let Some(&(last_conf, _)) = self.conf_log.last() else {
            self.advance_change();
            return;
        };
        if last_conf > committed {
            return;
        }
        // Members removed by the configuration just committed stop
        // getting the log.
        self.sync_progress();
        if self.membership.is_joint() {
            // C_old,new is committed: C_new can follow (also after a leader
            // change in the middle of a joint change).
            self.propose_conf(ConfChange::LeaveJoint);
            return;
        }
        if self.change.as_ref().is_some_and(|c| c.voting) {
            self.change = None;
            self.events.push(Event::ChangeDone {
                membership: self.membership.clone(),
            });
        } else {
            self.advance_change();
        }
        if !self.membership.is_voter(self.id) {
            // Removed: let the remaining voters elect a leader among them.
            self.become_follower(self.term, None);
        }
    }

    /// Disaster recovery: makes `voters` this node's configuration at once,
    /// without the log, when a majority is lost for good.
    ///
    /// # Safety (of the data, not of memory)
    ///
    /// This bypasses Raft's guarantees:
    /// - A committed entry survives only if every majority of `voters`
    ///   contains a survivor that holds it; otherwise a survivor without it
    ///   can be elected and the entry is lost (even if one survivor held it).
    /// - If the "lost" nodes come back, or two groups of survivors each
    ///   reset to themselves, two leaders can commit different entries at
    ///   the same index.
    /// - The reset lives outside the log, at this node's last index. A
    ///   configuration entry past that index, held by another survivor,
    ///   replaces it if that survivor leads and replicates it: reset every
    ///   survivor, and prefer electing the one with the longest log.
    ///
    /// Use it only when the lost nodes are gone for good and on one side
    /// only, with the same `voters` on every survivor. The driver must
    /// persist `Ready::conf_state`.
    pub fn reset_peers(&mut self, voters: Vec<NodeId>) -> Result<(), ChangeError> {
        self.note_work();
        let m = Membership::new(voters);
        if m.voters.is_empty() || m.voters.contains(&0) {
            return Err(ChangeError::Invalid(
                "reset_peers needs a non-empty voter set".into(),
            ));
        }
        m.check_size().map_err(ChangeError::Invalid)?;
        let index = self.log.last_index();
        self.conf_base = (index, m.clone());
        self.conf_log.clear();
        self.pending_conf_state = Some(ConfState {
            index,
            voters: m.voters.clone(),
            outgoing: Vec::new(),
            learners: Vec::new(),
        });
        self.set_membership(m);
        if self.role != Role::Follower {
            self.become_follower(self.term, None);
        }
        Ok(())
    }
}
