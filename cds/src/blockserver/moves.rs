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

use std::collections::BTreeMap;

use raft_core::runtime::node::{NodeError, NodeHandle};
use raft_core::{Membership, NodeId, Role};

use super::limits::MOVE_CATCHUP_MARGIN;
use crate::master::Group;

/// The next step a group's leader takes for the Master's plan of `g`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveStep {
    Nothing,
    /// A learner no move lists (a move abandoned).
    RemoveLearner(NodeId),
    /// The leader is the replica leaving: hand leadership over first.
    TransferLeader(NodeId),
    AddLearner(NodeId),
    /// The learner caught up: change the voters to the target.
    ChangePeers(Vec<NodeId>),
}

/// Decides the next step from the group's configuration `m` on its leader
/// `me`, the leader's match of each member and its last index. Pure: the
/// BlockServer ([`step`]) and the control-plane simulation call it.
pub fn decide(
    me: NodeId,
    m: &Membership,
    peer_match: &BTreeMap<NodeId, u64>,
    last_index: u64,
    g: &Group,
) -> MoveStep {
    let caught_up = |id: NodeId| {
        peer_match
            .get(&id)
            .is_some_and(|&i| i + MOVE_CATCHUP_MARGIN >= last_index)
    };
    let Some(mv) = &g.moving else {
        return match m.learners.iter().find(|l| !g.replicas.contains(l)) {
            Some(&l) => MoveStep::RemoveLearner(l),
            None => MoveStep::Nothing,
        };
    };
    let target = g.target();
    // Done (the Master records it), or joint (the core leaves it by itself
    // once the entry commits).
    if (m.voters == target && m.outgoing.is_empty()) || !m.outgoing.is_empty() {
        return MoveStep::Nothing;
    }
    if mv.from == me {
        return match target
            .iter()
            .copied()
            .filter(|&v| {
                v != me && m.voters.contains(&v) && peer_match.get(&v) == Some(&last_index)
            })
            .min()
        {
            Some(to) => MoveStep::TransferLeader(to),
            None => MoveStep::Nothing,
        };
    }
    if !m.contains(mv.to) {
        return MoveStep::AddLearner(mv.to);
    }
    if m.learners.contains(&mv.to) && caught_up(mv.to) {
        return MoveStep::ChangePeers(target);
    }
    MoveStep::Nothing
}

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
    Ok(
        match decide(me, &st.membership, &st.peer_match, st.last_index, g) {
            MoveStep::Nothing => None,
            MoveStep::RemoveLearner(l) => {
                node.remove_learner(l).await?;
                Some(format!("learner {l} removed (no move lists it)"))
            }
            MoveStep::TransferLeader(to) => {
                node.transfer_leader(to).await?;
                Some(format!("leadership handed to {to} before leaving"))
            }
            MoveStep::AddLearner(to) => {
                node.add_learner(to).await?;
                Some(format!("{to} added as a learner"))
            }
            MoveStep::ChangePeers(target) => {
                node.change_peers(target.clone()).await?;
                Some(format!("voters changing to {target:?}"))
            }
        },
    )
}
