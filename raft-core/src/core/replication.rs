//! Log replication and commitment (Raft §5.3, §5.4.2): what a leader sends
//! each follower, how a follower answers, and when an index commits.

use super::bugs::Bug;
use super::message::{Entry, MessageBody, NodeId};
use super::progress::ProgressState;
use super::quorum;
use super::raft::Raft;
use crate::storage::Storage;
use crate::Error;

impl<S: Storage> Raft<S> {
    /// Sends `to` the next batch of entries if its progress allows, or an
    /// empty `Append` (carrying the commit index) when `allow_empty`.
    /// Returns whether a message went out.
    pub(crate) fn send_append(&mut self, to: NodeId, allow_empty: bool) -> bool {
        let last = self.log.last_index();
        let Some(pr) = self.progress.get(&to) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        let next = pr.next;
        let prev_log_index = next - 1;
        let Some(prev_log_term) = self.log.term(prev_log_index) else {
            // The entries it needs were compacted: it needs the snapshot.
            return self.send_snapshot(to);
        };
        let entries: Vec<Entry> = if next <= last {
            let hi = (last + 1).min(next + self.cfg.max_entries_per_msg as u64);
            match self.log.slice_checked(next, hi, self.cfg.max_bytes_per_msg) {
                Some(entries) => entries,
                // Not held (compacted since `prev_log_term` was read):
                // the snapshot; unreadable: nothing (the node stops).
                None if self.log.failure().is_none() => return self.send_snapshot(to),
                None => return false,
            }
        } else {
            Vec::new()
        };
        if entries.is_empty() && !allow_empty {
            return false;
        }
        let n = entries.len();
        let sent_last = entries.last().map_or(prev_log_index, |e| e.index);
        let pr = self.progress.get_mut(&to).expect("checked above");
        pr.sent(sent_last, n);
        self.send(
            to,
            self.term,
            MessageBody::Append {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit: self.log.committed,
                lease_tick: self.ticks,
            },
        );
        true
    }

    /// Sends every follower what it is missing, filling each in-flight
    /// window (pipelining), and at least an empty `Append` each.
    pub(crate) fn bcast_append(&mut self) {
        for peer in self.peers() {
            if self.send_append(peer, true) {
                while self.send_append(peer, false) {}
            }
        }
    }

    pub(crate) fn bcast_heartbeat(&mut self) {
        let round = self.reads.round;
        for peer in self.peers() {
            let matched = self.progress.get(&peer).map_or(0, |p| p.matched);
            self.send(
                peer,
                self.term,
                MessageBody::Heartbeat {
                    commit: matched.min(self.log.committed),
                    read_round: round,
                    lease_tick: self.ticks,
                    quiesce: false,
                },
            );
        }
    }

    /// Records that `peer` answered in this term.
    pub(crate) fn note_peer_alive(&mut self, peer: NodeId, lease_tick: u64) {
        if let Some(pr) = self.progress.get_mut(&peer) {
            pr.recent_active = true;
            if lease_tick > 0 {
                pr.lease_ack = pr.lease_ack.max(lease_tick);
            }
        }
    }

    pub(crate) fn quorum_recently_active(&self) -> bool {
        let id = self.id;
        let active = quorum::joint_committed_index(&self.membership, |v| {
            let heard = v == id || self.progress.get(&v).is_some_and(|p| p.recent_active);
            heard as u64
        });
        active == 1
    }

    /// Commits the highest index a majority holds, if it is of this term.
    /// Returns whether the commit index moved.
    pub(crate) fn maybe_commit(&mut self) -> bool {
        let persisted = self.log.persisted_index();
        let id = self.id;
        let matched = |v: NodeId| {
            if v == id {
                persisted
            } else {
                self.progress.get(&v).map_or(0, |p| p.matched)
            }
        };
        let idx = if self.cfg.bug(Bug::CountRemovedMember) {
            // The bug: whoever the leader still tracks counts, removed
            // voters included, against the new majority size.
            let mut counted: Vec<NodeId> = self
                .progress
                .keys()
                .copied()
                .filter(|v| !self.membership.is_learner(*v))
                .collect();
            counted.sort_unstable();
            let mut vals: Vec<u64> = counted.iter().map(|&v| matched(v)).collect();
            vals.sort_unstable_by(|a, b| b.cmp(a));
            let q = quorum::majority(self.membership.voters.len());
            let plain = quorum::joint_committed_index(&self.membership, matched);
            vals.get(q - 1).copied().unwrap_or(0).max(plain)
        } else {
            quorum::joint_committed_index(&self.membership, matched)
        };
        if idx <= self.log.committed {
            return false;
        }
        // Raft §5.4.2: counting replicas commits only entries of the
        // leader's own term; earlier ones commit with them.
        if self.cfg.bug(Bug::CommitOldTermByCount) || self.log.term(idx) == Some(self.term) {
            let moved = self.log.commit_to(idx);
            if moved {
                self.after_commit();
            }
            moved
        } else {
            false
        }
    }

    pub(crate) fn handle_append_response(
        &mut self,
        from: NodeId,
        success: bool,
        index: u64,
        hint_index: u64,
        hint_term: u64,
    ) {
        let Some(pr) = self.progress.get(&from) else {
            return;
        };
        if !success {
            if index == 0 {
                return; // a term notice, not an answer to an append
            }
            // Skip past every entry of a term the follower cannot match.
            let next_probe = if hint_term > 0 {
                self.log.find_conflict_by_term(hint_index, hint_term)
            } else {
                hint_index
            };
            let pr = self.progress.get_mut(&from).expect("checked above");
            if pr.maybe_decr_to(index, next_probe) {
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
                self.send_append(from, true);
            }
            return;
        }
        let was_probe = pr.state != ProgressState::Replicate;
        let pr = self.progress.get_mut(&from).expect("checked above");
        if !pr.maybe_update(index) {
            return;
        }
        if was_probe {
            pr.become_replicate();
        } else {
            pr.inflights.free_to(index);
        }
        if self.maybe_commit() {
            self.bcast_append();
        } else {
            while self.send_append(from, false) {}
        }
        self.maybe_send_timeout_now(from);
        if !self.membership.contains(from) {
            // A removed member acknowledged more: it may be done with us.
            self.sync_progress();
        }
    }

    pub(crate) fn handle_heartbeat_response(&mut self, from: NodeId, read_round: u64) {
        let last = self.log.last_index();
        if self
            .progress
            .get(&from)
            .is_some_and(|p| matches!(p.state, ProgressState::Snapshot { .. }))
        {
            self.reoffer_snapshot(from);
        } else if let Some(pr) = self.progress.get_mut(&from) {
            pr.probe_sent = false;
            if pr.state == ProgressState::Replicate && pr.inflights.full() {
                pr.inflights.free_first();
            }
            if pr.matched < last {
                // Even with nothing new to send: if appends were lost, the
                // follower rejects this one and replication resumes from
                // where it really is, instead of waiting for a proposal.
                self.send_append(from, true);
            }
        }
        self.ack_read_round(from, read_round);
    }

    /// A follower's side of `Append` (Raft §5.3, with fast backtracking).
    pub(crate) fn handle_append(
        &mut self,
        from: NodeId,
        prev_log_index: u64,
        prev_log_term: u64,
        entries: Vec<Entry>,
        leader_commit: u64,
        lease_tick: u64,
    ) -> Result<(), Error> {
        let reply = |success, index, hint_index, hint_term| MessageBody::AppendResponse {
            success,
            index,
            hint_index,
            hint_term,
            lease_tick,
        };
        if prev_log_index < self.log.committed {
            // Everything up to our commit index matches any leader's log.
            let c = self.log.committed;
            self.send(from, self.term, reply(true, c, 0, 0));
            return Ok(());
        }
        if self.log.match_term(prev_log_index, prev_log_term) {
            let last_new = if self.cfg.bug(Bug::TruncateOnAppend) && !entries.is_empty() {
                self.log.append(&entries);
                self.note_appended(&entries);
                prev_log_index + entries.len() as u64
            } else {
                let (last_new, from) = self.log.maybe_append(prev_log_index, &entries)?;
                if let Some(from) = from {
                    self.note_appended(&entries[from..]);
                }
                last_new
            };
            self.log.commit_to(leader_commit.min(last_new));
            self.send(from, self.term, reply(true, last_new, 0, 0));
        } else {
            let probe = prev_log_index.min(self.log.last_index());
            let hint_index = self.log.find_conflict_by_term(probe, prev_log_term);
            let hint_term = self.log.term(hint_index).unwrap_or(0);
            self.send(
                from,
                self.term,
                reply(false, prev_log_index, hint_index, hint_term),
            );
        }
        Ok(())
    }

    pub(crate) fn handle_heartbeat(
        &mut self,
        from: NodeId,
        commit: u64,
        read_round: u64,
        lease_tick: u64,
        quiesce: bool,
    ) {
        // The leader never sends a commit index past what we acknowledged.
        self.log.commit_to(commit.min(self.log.last_index()));
        if quiesce && self.accept_quiesce(commit) {
            // Unanswered: an answer would wake the leader.
            return;
        }
        self.send(
            from,
            self.term,
            MessageBody::HeartbeatResponse {
                read_round,
                lease_tick,
            },
        );
    }

    /// Called when the leader's own log became durable up to `index`.
    pub(crate) fn leader_persisted(&mut self, index: u64) {
        let id = self.id;
        if let Some(pr) = self.progress.get_mut(&id) {
            pr.maybe_update(index);
        }
        if self.maybe_commit() {
            self.bcast_append();
        }
    }
}
