//! Leader balancing: which leaderships a server should hand over so that
//! every live server leads about as many groups as the others (a leader
//! serves its group's reads and proposes its writes, so leader counts are
//! IO load). Pure: the Master's heartbeat handler calls it with what the
//! heartbeats told it and sends the moves back in the answer; the server
//! carries them out by Raft leader transfer.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::state::Group;

/// Hand the leadership of `group` to server `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderMove {
    pub group: u64,
    pub to: u64,
}

/// Up to `max` moves of `server`'s leaderships, each to a live replica of
/// the group that leads at least two fewer groups (so a move never just
/// swaps the imbalance), the one leading the fewest first (lowest id on a
/// tie). `leaders` maps every group to its leader; with any group's
/// leader unknown (a Master that just took over, an election under way)
/// nothing is moved. Groups in `skip` (moved a moment ago) are left, and
/// so are groups with a replica move under way: the move step hands the
/// leadership away from the replica leaving, and balancing could hand it
/// straight back, again and again, so the move never advanced.
pub fn leader_moves(
    server: u64,
    groups: &[Group],
    leaders: &BTreeMap<u64, u64>,
    live: &BTreeSet<u64>,
    skip: &BTreeSet<u64>,
    max: usize,
) -> Vec<LeaderMove> {
    if !live.contains(&server) || groups.iter().any(|g| !leaders.contains_key(&g.id)) {
        return Vec::new();
    }
    let mut count: BTreeMap<u64, usize> = live.iter().map(|&s| (s, 0)).collect();
    for s in leaders.values() {
        if let Some(c) = count.get_mut(s) {
            *c += 1;
        }
    }
    let mut out = Vec::new();
    for g in groups {
        if out.len() >= max {
            break;
        }
        if leaders.get(&g.id) != Some(&server) || skip.contains(&g.id) || g.moving.is_some() {
            continue;
        }
        let mine = count[&server];
        let Some(to) = g
            .replicas
            .iter()
            .copied()
            .filter(|r| *r != server && live.contains(r))
            .min_by_key(|r| (count[r], *r))
        else {
            continue;
        };
        if mine >= count[&to] + 2 {
            *count.get_mut(&server).expect("live") -= 1;
            *count.get_mut(&to).expect("live") += 1;
            out.push(LeaderMove { group: g.id, to });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(n: u64) -> Vec<Group> {
        (1..=n)
            .map(|id| Group {
                id,
                replicas: vec![1, 2, 3],
                epoch: 0,
                moving: None,
                pool: crate::pool::default_pool(),
            })
            .collect()
    }

    #[test]
    fn a_server_with_two_more_leaders_hands_some_over_and_stops_within_one() {
        let g = groups(12);
        // 2 leads 6, 3 leads 6, 1 leads none (it restarted).
        let mut leaders: BTreeMap<u64, u64> = (1..=12).map(|id| (id, 2 + id % 2)).collect();
        let live: BTreeSet<u64> = [1, 2, 3].into();
        let none = BTreeSet::new();
        let mut moved = 0;
        for _round in 0..10 {
            for s in [1, 2, 3] {
                for m in leader_moves(s, &g, &leaders, &live, &none, 1) {
                    leaders.insert(m.group, m.to);
                    moved += 1;
                }
            }
        }
        let mut c = BTreeMap::<u64, usize>::new();
        for s in leaders.values() {
            *c.entry(*s).or_default() += 1;
        }
        assert_eq!(c.values().copied().collect::<Vec<_>>(), vec![4, 4, 4]);
        assert_eq!(moved, 4, "no move beyond what balance needs");
    }

    #[test]
    fn nothing_moves_while_a_leader_is_unknown_or_to_a_dead_server() {
        let g = groups(4);
        let mut leaders: BTreeMap<u64, u64> = (1..=4).map(|id| (id, 2)).collect();
        let live: BTreeSet<u64> = [2, 3].into();
        let none = BTreeSet::new();
        let m = leader_moves(2, &g, &leaders, &live, &none, 8);
        assert!(m.iter().all(|m| m.to == 3), "{m:?}");
        leaders.remove(&4);
        assert!(leader_moves(2, &g, &leaders, &live, &none, 8).is_empty());
    }

    #[test]
    fn a_group_whose_replica_moves_keeps_its_leadership_where_the_move_put_it() {
        // Server 1 leads nothing; server 2 leads all 4 groups, one of them
        // (group 1) moving its replica off server 1: its leadership must
        // not go back to the replica leaving.
        let mut g = groups(4);
        g[0].moving = Some(crate::master::moves::Move {
            from: 1,
            to: 4,
            reason: crate::master::moves::MoveReason::Drain,
            started_ms: 0,
        });
        let leaders: BTreeMap<u64, u64> = (1..=4).map(|id| (id, 2)).collect();
        let live: BTreeSet<u64> = [1, 2, 3, 4].into();
        let m = leader_moves(2, &g, &leaders, &live, &BTreeSet::new(), 8);
        assert!(!m.is_empty());
        assert!(m.iter().all(|m| m.group != 1), "{m:?}");
    }
}
