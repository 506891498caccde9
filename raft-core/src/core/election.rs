//! Elections: pre-vote and vote rounds, and how a voter decides (Raft §5.2,
//! §5.4.1; PreVote and leader stickiness from the Raft thesis §9.6).

use super::bugs::Bug;
use super::event::Event;
use super::message::{Message, MessageBody, NodeId};
use super::quorum::{self, VoteResult};
use super::raft::{Raft, Role};
use crate::storage::Storage;

impl<S: Storage> Raft<S> {
    /// Starts a pre-vote round (when enabled and not forced by a transfer),
    /// or a real election.
    pub(crate) fn campaign(&mut self, leader_transfer: bool) {
        if self.term == u64::MAX {
            // No term is left to run in. Only a peer's term could have
            // brought us here, and `step` refuses such jumps; never wrap to
            // term 0, which would undo every vote ever cast.
            return;
        }
        if self.cfg.pre_vote && !leader_transfer {
            self.become_pre_candidate();
        } else {
            self.become_candidate();
        }
        self.request_votes(leader_transfer);
    }

    fn request_votes(&mut self, leader_transfer: bool) {
        let pre_vote = self.role == Role::PreCandidate;
        // A pre-vote asks about the term we would move to.
        let term = if pre_vote {
            self.term.saturating_add(1)
        } else {
            self.term
        };
        self.votes.clear();
        self.votes.insert(self.id, true);
        if self.tally() {
            return;
        }
        let last_log_index = self.log.last_index();
        let last_log_term = self.log.last_term();
        for peer in self.membership.all_voters() {
            if peer == self.id {
                continue;
            }
            self.send(
                peer,
                term,
                MessageBody::RequestVote {
                    pre_vote,
                    last_log_index,
                    last_log_term,
                    leader_transfer,
                },
            );
        }
    }

    /// Acts on the votes counted so far; returns whether the round ended.
    fn tally(&mut self) -> bool {
        match quorum::joint_vote_result(&self.membership, &self.votes) {
            VoteResult::Won => {
                if self.role == Role::PreCandidate {
                    self.become_candidate();
                    self.request_votes(false);
                } else {
                    self.become_leader();
                }
                true
            }
            VoteResult::Lost => {
                self.become_follower(self.term, None);
                true
            }
            VoteResult::Pending => false,
        }
    }

    pub(crate) fn handle_vote_response(&mut self, from: NodeId, granted: bool) {
        self.votes.insert(from, granted);
        self.tally();
    }

    /// Decides on a (pre-)vote request whose term is not below ours.
    pub(crate) fn handle_vote_request(&mut self, m: Message) {
        let MessageBody::RequestVote {
            pre_vote,
            last_log_index,
            last_log_term,
            ..
        } = m.body
        else {
            return;
        };
        // One vote per term; a pre-vote for a later term binds nothing. Our
        // configuration is not consulted (Raft thesis §4.1): it may be
        // behind the candidate's, whose election may need our vote.
        let can_vote = self.vote == Some(m.from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre_vote && m.term > self.term);
        let up_to_date = self.cfg.bug(Bug::VoteForStaleLog)
            || self.log.is_up_to_date(last_log_index, last_log_term);
        let granted = can_vote && up_to_date;
        if granted && !pre_vote {
            self.vote = Some(m.from);
            self.election_elapsed = 0;
        }
        // A granted pre-vote answers in the candidate's future term so the
        // candidate counts it; refusals carry our term so it can catch up.
        let term = if granted { m.term } else { self.term };
        self.events.push(Event::Voted {
            candidate: m.from,
            pre_vote,
            granted,
        });
        self.send(
            m.from,
            term,
            MessageBody::RequestVoteResponse { pre_vote, granted },
        );
    }
}
