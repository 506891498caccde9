//! A group leader's side of a replica move (the plan is the Master's,
//! `master/moves.rs`): each heartbeat answer names the group's target
//! voters, and [`step`] brings the group's Raft configuration one step
//! closer, decided from the configuration alone so a repeated or
//! interrupted step is harmless:
//!
//! 1. the target's new member is added as a learner (it receives the
//!    engine's files by snapshot install, then the log);
//! 2. once its log is within [`MOVE_CATCHUP_MARGIN`] entries of the
//!    leader's, the voters change to the target (one joint-consensus
//!    change; the core leaves the joint configuration by itself);
//! 3. a leader that is itself the replica leaving hands its leadership to
//!    a caught-up voter first, so the group is never without a leader
//!    while it changes.
//!
//! With no move under way, learners the Master does not list (a move
//! abandoned) are removed.

use raft_core::runtime::node::{NodeError, NodeHandle};
use raft_core::{NodeId, Role};

use super::limits::MOVE_CATCHUP_MARGIN;
use crate::master::Group;

/// Takes the next step of `g`'s move on this server's replica, if it leads;
/// returns what it did.
pub(crate) async fn step(
    me: NodeId,
    node: &NodeHandle,
    g: &Group,
) -> Result<Option<String>, NodeError> {
    let st = node.status().await?.raft;
    if st.role != Role::Leader {
        return Ok(None);
    }
    let m = &st.membership;
    let caught_up = |id: NodeId| {
        st.peer_match
            .get(&id)
            .is_some_and(|&i| i + MOVE_CATCHUP_MARGIN >= st.last_index)
    };
    let Some(mv) = &g.moving else {
        for &l in &m.learners {
            if !g.replicas.contains(&l) {
                node.remove_learner(l).await?;
                return Ok(Some(format!("learner {l} removed (no move lists it)")));
            }
        }
        return Ok(None);
    };
    let target = g.target();
    if m.voters == target && m.outgoing.is_empty() {
        return Ok(None);
    }
    if !m.outgoing.is_empty() {
        // Joint: the core leaves it by itself once the entry commits.
        return Ok(None);
    }
    if mv.from == me {
        let Some(to) = target
            .iter()
            .copied()
            .filter(|&v| {
                v != me && m.voters.contains(&v) && st.peer_match.get(&v) == Some(&st.last_index)
            })
            .min()
        else {
            return Ok(None);
        };
        node.transfer_leader(to).await?;
        return Ok(Some(format!("leadership handed to {to} before leaving")));
    }
    if !m.contains(mv.to) {
        node.add_learner(mv.to).await?;
        return Ok(Some(format!("{} added as a learner", mv.to)));
    }
    if m.learners.contains(&mv.to) && caught_up(mv.to) {
        node.change_peers(target.clone()).await?;
        return Ok(Some(format!("voters changing to {target:?}")));
    }
    Ok(None)
}
