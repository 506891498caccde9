//! Majority rules as pure functions over the voters' votes and match indexes.
//!
//! Every place the core needs "a majority agrees" goes through here, so the
//! rule exists once (and membership change can swap in a joint quorum).

use super::membership::Membership;
use super::message::NodeId;
use std::collections::BTreeMap;

/// The outcome of an election so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteResult {
    /// A majority granted.
    Won,
    /// A majority refused: the election cannot be won.
    Lost,
    /// Neither yet.
    Pending,
}

/// The size of a majority of `n` voters.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// Tallies `votes` (voter -> granted) over `voters`; votes from non-voters
/// are ignored.
pub fn vote_result(voters: &[NodeId], votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    let (mut yes, mut no) = (0, 0);
    for v in voters {
        match votes.get(v) {
            Some(true) => yes += 1,
            Some(false) => no += 1,
            None => {}
        }
    }
    let q = majority(voters.len());
    if yes >= q {
        VoteResult::Won
    } else if no >= q {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

/// Tallies `votes` over a configuration: while joint, the election is won
/// only with a majority of both voter sets, and lost as soon as either set
/// refuses by a majority.
pub fn joint_vote_result(m: &Membership, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    let incoming = vote_result(&m.voters, votes);
    if !m.is_joint() {
        return incoming;
    }
    match (incoming, vote_result(&m.outgoing, votes)) {
        (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
        (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
        _ => VoteResult::Pending,
    }
}

/// The largest value a majority has reached in a configuration: while
/// joint, the smaller of the two sets' values.
pub fn joint_committed_index(m: &Membership, value_of: impl Fn(NodeId) -> u64) -> u64 {
    let incoming = committed_index(&m.voters, &value_of);
    if m.is_joint() {
        incoming.min(committed_index(&m.outgoing, &value_of))
    } else {
        incoming
    }
}

/// The largest value that a majority of voters has reached: given each
/// voter's match index, the highest index a majority holds.
pub fn committed_index(voters: &[NodeId], value_of: impl Fn(NodeId) -> u64) -> u64 {
    if voters.is_empty() {
        return 0;
    }
    let mut vals: Vec<u64> = voters.iter().map(|&v| value_of(v)).collect();
    vals.sort_unstable_by(|a, b| b.cmp(a));
    vals[majority(voters.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_index_is_the_majority_floor() {
        let m = [5u64, 3, 9, 1, 7];
        let voters = [1, 2, 3, 4, 5];
        // Sorted descending: 9 7 5 3 1; the third is held by a majority.
        assert_eq!(committed_index(&voters, |v| m[v as usize - 1]), 5);
        assert_eq!(committed_index(&[1, 2], |v| [4, 2][v as usize - 1]), 2);
        assert_eq!(committed_index(&[1], |_| 8), 8);
    }

    #[test]
    fn vote_result_needs_a_majority_either_way() {
        let voters = [1, 2, 3];
        let mut votes = BTreeMap::new();
        votes.insert(1, true);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Pending);
        votes.insert(9, true); // not a voter
        assert_eq!(vote_result(&voters, &votes), VoteResult::Pending);
        votes.insert(2, false);
        votes.insert(3, false);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Lost);
        votes.insert(3, true);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Won);
    }

    #[test]
    fn joint_decisions_need_both_majorities() {
        let j = Membership {
            voters: vec![3, 4, 5],
            outgoing: vec![1, 2, 3],
            learners: vec![],
        };
        let mut votes = BTreeMap::new();
        for v in [3, 4, 5] {
            votes.insert(v, true);
        }
        assert_eq!(
            joint_vote_result(&j, &votes),
            VoteResult::Pending,
            "C_old has 1 of 3"
        );
        votes.insert(1, true);
        assert_eq!(joint_vote_result(&j, &votes), VoteResult::Won);
        votes.insert(1, false);
        votes.insert(2, false);
        assert_eq!(
            joint_vote_result(&j, &votes),
            VoteResult::Lost,
            "C_old refused"
        );
        let m = [0u64, 9, 9, 1, 1, 1];
        // C_old {1,2,3} reached 9, C_new {3,4,5} only 1.
        assert_eq!(joint_committed_index(&j, |v| m[v as usize]), 1);
    }
}
