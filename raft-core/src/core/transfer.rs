//! Leader transfer (Raft thesis §3.10): the leader stops taking proposals,
//! brings the target up to date, then tells it to campaign at once. The
//! attempt is abandoned after an election timeout.

use super::event::Event;
use super::message::{MessageBody, NodeId};
use super::raft::{Raft, Role};
use crate::storage::Storage;
use crate::TransferError;

/// A transfer under way.
#[derive(Debug, Clone)]
pub(crate) struct Transfer {
    pub(crate) to: NodeId,
    /// Leader ticks since the transfer began.
    elapsed: u32,
    /// Whether `TimeoutNow` went out already.
    timeout_now_sent: bool,
}

impl<S: Storage> Raft<S> {
    /// Hands leadership to `to`. Proposals are refused until the transfer
    /// ends: `to` wins an election, or an election timeout passes.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader: self.leader,
            });
        }
        self.note_work();
        if to == self.id {
            return Err(TransferError::ToSelf);
        }
        if !self.membership.voters.contains(&to) {
            return Err(TransferError::UnknownPeer(to));
        }
        if self.change.is_some() || self.membership.is_joint() {
            return Err(TransferError::ChangeInProgress);
        }
        if let Some(t) = &self.transfer {
            if t.to == to {
                return Ok(());
            }
            let old = t.to;
            self.events.push(Event::TransferAborted { to: old });
        }
        self.transfer = Some(Transfer {
            to,
            elapsed: 0,
            timeout_now_sent: false,
        });
        self.events.push(Event::TransferStarted { to });
        if !self.maybe_send_timeout_now(to) {
            self.send_append(to, true);
        }
        Ok(())
    }

    /// Sends `TimeoutNow` if `peer` is the transfer target and caught up.
    pub(crate) fn maybe_send_timeout_now(&mut self, peer: NodeId) -> bool {
        let last = self.log.last_index();
        let caught_up = self.progress.get(&peer).is_some_and(|p| p.matched == last);
        match &mut self.transfer {
            Some(t) if t.to == peer && !t.timeout_now_sent && caught_up => {
                t.timeout_now_sent = true;
                // The target's election ignores leases: ours ends here.
                self.lease_revoked = true;
                self.events.push(Event::TimeoutNowSent { to: peer });
                self.send(peer, self.term, MessageBody::TimeoutNow);
                true
            }
            _ => false,
        }
    }

    /// Counts a leader tick against the transfer, abandoning it after an
    /// election timeout.
    pub(crate) fn tick_transfer(&mut self) {
        let limit = self.cfg.election_tick;
        let Some(t) = &mut self.transfer else {
            return;
        };
        t.elapsed += 1;
        if t.elapsed >= limit {
            let to = t.to;
            self.transfer = None;
            self.events.push(Event::TransferAborted { to });
        }
    }
}
