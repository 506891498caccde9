//! Where a BlockGroup's replicas go: five levels of failure domains,
//! Region > Zone > Rack > Node > Disk.
//!
//! The rule: a group's replicas go to distinct members of the *highest*
//! level that has at least as many members as the group has replicas
//! (3 regions: one replica per region; else 3 zones: one per zone; else
//! racks; else nodes). Two replicas never share a node unless the caller
//! allows the disk level for a test pool with fewer nodes than replicas;
//! a production pool is refused instead. Distinct members of a level are
//! distinct at every level below it too.
//!
//! Among the placements the rule allows, each replica goes (one at a
//! time) to the candidate that shares the fewest higher-level domains
//! with the replicas already chosen (so a group of more replicas than
//! zones still uses every zone), then whose node holds the fewest replicas, then the
//! one whose node shares the fewest groups with the replicas already
//! chosen (which spreads each node's groups over many peers: a higher
//! *scatter width*, so a lost node's groups are repaired from many nodes
//! at once), then the disk holding the fewest replicas, then the lowest
//! ids. Everything is deterministic: the Master's replicas must agree.
//!
//! The Master places at node level today (a BlockServer picks the disk
//! of each replica it hosts), so [`Candidate::disk`] is `None` there;
//! with disks named, the same rules place on disks.

use std::collections::{BTreeMap, BTreeSet};

/// Where one replica is: a node and, where placing on disks, its disk.
pub type Slot = (u64, Option<u32>);

/// A failure-domain level, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Region,
    Zone,
    Rack,
    Node,
    Disk,
}

impl Level {
    pub const ALL: [Level; 5] = [
        Level::Region,
        Level::Zone,
        Level::Rack,
        Level::Node,
        Level::Disk,
    ];
}

/// A place a replica can go: a node (with its region, zone and rack) and,
/// where the caller places on disks, one of its disks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Candidate {
    pub region: String,
    pub zone: String,
    pub rack: String,
    pub node: u64,
    pub disk: Option<u32>,
}

impl Candidate {
    /// The member of `level` this candidate belongs to, as a path from
    /// the top (so two racks named alike in two zones differ).
    pub fn member(&self, level: Level) -> Vec<String> {
        let mut path = vec![self.region.clone()];
        if level >= Level::Zone {
            path.push(self.zone.clone());
        }
        if level >= Level::Rack {
            path.push(self.rack.clone());
        }
        if level >= Level::Node {
            path.push(self.node.to_string());
        }
        if level >= Level::Disk {
            path.push(self.disk.map_or_else(|| "-".to_string(), |d| d.to_string()));
        }
        path
    }

    fn slot(&self) -> Slot {
        (self.node, self.disk)
    }
}

/// Why a group cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("{replicas} replicas need {replicas} nodes; the pool has {nodes}")]
    NotEnoughNodes { replicas: usize, nodes: usize },
    #[error("{replicas} replicas need {replicas} disks; the pool has {disks}")]
    NotEnoughDisks { replicas: usize, disks: usize },
    #[error("a group needs at least one replica")]
    NoReplicas,
}

/// The highest level with at least `n` members among `candidates`, not
/// below `Node` unless `allow_disks`.
pub fn spread_level(
    candidates: &[Candidate],
    n: usize,
    allow_disks: bool,
) -> Result<Level, PlacementError> {
    if n == 0 {
        return Err(PlacementError::NoReplicas);
    }
    for level in Level::ALL {
        if level == Level::Disk && !allow_disks {
            break;
        }
        let members: BTreeSet<Vec<String>> = candidates.iter().map(|c| c.member(level)).collect();
        if members.len() >= n {
            return Ok(level);
        }
    }
    let nodes: BTreeSet<u64> = candidates.iter().map(|c| c.node).collect();
    if allow_disks {
        Err(PlacementError::NotEnoughDisks {
            replicas: n,
            disks: candidates.len(),
        })
    } else {
        Err(PlacementError::NotEnoughNodes {
            replicas: n,
            nodes: nodes.len(),
        })
    }
}

/// Places `n` replicas of a new group among `candidates`, given the
/// groups placed so far (each a list of (node, disk) slots). See the
/// module docs for the rule and the order of preference.
pub fn place(
    candidates: &[Candidate],
    groups: &[Vec<Slot>],
    n: usize,
    allow_disks: bool,
) -> Result<Vec<Candidate>, PlacementError> {
    let level = spread_level(candidates, n, allow_disks)?;
    choose(candidates, groups, &[], n, level)
}

/// The level at which a group keeping `keep` should get its next replica
/// among `candidates` (which should not hold the ones leaving): the
/// highest level where the kept replicas sit on distinct members and a
/// candidate sits on yet another one. With three zones and the replicas of
/// two kept, the third zone; when that zone has no candidate (its nodes
/// dead), a rack or node elsewhere; `None` when not even a node is left.
pub fn more_level(
    candidates: &[Candidate],
    keep: &[Candidate],
    n: usize,
    allow_disks: bool,
) -> Option<Level> {
    let mut all: Vec<Candidate> = candidates.to_vec();
    all.extend(keep.iter().cloned());
    let top = spread_level(&all, n.max(1), allow_disks).unwrap_or(Level::Node);
    let last = if allow_disks {
        Level::Disk
    } else {
        Level::Node
    };
    Level::ALL
        .into_iter()
        .filter(|&l| l >= top && l <= last)
        .find(|&level| {
            let members: BTreeSet<Vec<String>> = keep.iter().map(|c| c.member(level)).collect();
            members.len() == keep.len()
                && candidates.iter().any(|c| {
                    !members.contains(&c.member(level)) && keep.iter().all(|k| k.slot() != c.slot())
                })
        })
}

/// Picks replicas to join `keep` (a group's replicas that stay) until the
/// group has `n`, each on a member of `level` (see [`more_level`]) that
/// no other replica is on, by `place`'s order of preference. Returns the
/// new replicas only.
pub fn place_more(
    candidates: &[Candidate],
    groups: &[Vec<Slot>],
    keep: &[Candidate],
    n: usize,
    level: Level,
) -> Result<Vec<Candidate>, PlacementError> {
    if n <= keep.len() {
        return Ok(Vec::new());
    }
    let mut chosen = choose(candidates, groups, keep, n, level)?;
    Ok(chosen.split_off(keep.len()))
}

/// `keep` followed by the candidates chosen to make `n`, each at a member
/// of `level` distinct from the others'.
fn choose(
    candidates: &[Candidate],
    groups: &[Vec<Slot>],
    keep: &[Candidate],
    n: usize,
    level: Level,
) -> Result<Vec<Candidate>, PlacementError> {
    let mut node_load: BTreeMap<u64, usize> = BTreeMap::new();
    let mut slot_load: BTreeMap<Slot, usize> = BTreeMap::new();
    // Groups each pair of nodes shares.
    let mut shared: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    for g in groups {
        for &(node, disk) in g {
            *node_load.entry(node).or_default() += 1;
            *slot_load.entry((node, disk)).or_default() += 1;
        }
        let nodes: BTreeSet<u64> = g.iter().map(|&(n, _)| n).collect();
        for &a in &nodes {
            for &b in &nodes {
                if a != b {
                    *shared.entry((a, b)).or_default() += 1;
                }
            }
        }
    }
    let mut chosen: Vec<Candidate> = keep.to_vec();
    while chosen.len() < n {
        let best = candidates
            .iter()
            .filter(|c| {
                chosen
                    .iter()
                    .all(|x| x.member(level) != c.member(level) && x.slot() != c.slot())
            })
            .min_by_key(|c| {
                let peers: usize = chosen
                    .iter()
                    .map(|x| shared.get(&(c.node, x.node)).copied().unwrap_or(0))
                    .sum();
                // Above the level, spread as far as it goes: with 4
                // replicas and 3 zones, each zone before any twice.
                let crowding: Vec<usize> = Level::ALL
                    .iter()
                    .filter(|&&h| h < level)
                    .map(|&h| chosen.iter().filter(|x| x.member(h) == c.member(h)).count())
                    .collect();
                (
                    crowding,
                    node_load.get(&c.node).copied().unwrap_or(0),
                    peers,
                    slot_load.get(&c.slot()).copied().unwrap_or(0),
                    c.node,
                    c.disk,
                )
            })
            .cloned()
            // `place`: the level has n members, one is always left;
            // `place_more`: none may be left when the free ones are busy.
            .ok_or(PlacementError::NotEnoughNodes {
                replicas: n,
                nodes: candidates.len(),
            })?;
        chosen.push(best);
    }
    Ok(chosen)
}

/// How well a set of groups is spread, for reports and tests.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Spread {
    /// Replicas per node: fewest, most, mean.
    pub min_replicas: usize,
    pub max_replicas: usize,
    pub mean_replicas: f64,
    /// Scatter width (distinct other nodes a node shares a group with):
    /// lowest and mean over the nodes holding replicas.
    pub min_scatter: usize,
    pub mean_scatter: f64,
}

/// The spread of `groups` over `nodes`.
pub fn spread(nodes: &BTreeSet<u64>, groups: &[Vec<Slot>]) -> Spread {
    let mut load: BTreeMap<u64, usize> = nodes.iter().map(|&n| (n, 0)).collect();
    let mut peers: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for g in groups {
        for &(a, _) in g {
            *load.entry(a).or_default() += 1;
            for &(b, _) in g {
                if a != b {
                    peers.entry(a).or_default().insert(b);
                }
            }
        }
    }
    let counts: Vec<usize> = load.values().copied().collect();
    let scatter: Vec<usize> = peers.values().map(BTreeSet::len).collect();
    let mean = |v: &[usize]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<usize>() as f64 / v.len() as f64
        }
    };
    Spread {
        min_replicas: counts.iter().copied().min().unwrap_or(0),
        max_replicas: counts.iter().copied().max().unwrap_or(0),
        mean_replicas: mean(&counts),
        min_scatter: scatter.iter().copied().min().unwrap_or(0),
        mean_scatter: mean(&scatter),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(zone: &str, rack: &str, node: u64) -> Candidate {
        Candidate {
            region: "r".into(),
            zone: zone.into(),
            rack: rack.into(),
            node,
            disk: None,
        }
    }

    #[test]
    fn three_zones_get_one_replica_each_and_load_spreads() {
        let c: Vec<Candidate> = (1..=6)
            .map(|i| {
                node(
                    &format!("z{}", (i - 1) % 3),
                    &format!("k{}", (i - 1) / 3),
                    i,
                )
            })
            .collect();
        let mut groups: Vec<Vec<Slot>> = Vec::new();
        for _ in 0..12 {
            let p = place(&c, &groups, 3, false).unwrap();
            let zones: BTreeSet<&str> = p.iter().map(|x| x.zone.as_str()).collect();
            assert_eq!(zones.len(), 3, "{p:?}");
            groups.push(p.iter().map(Candidate::slot).collect());
        }
        let s = spread(&(1..=6).collect(), &groups);
        assert_eq!((s.min_replicas, s.max_replicas), (6, 6), "{s:?}");
        // Each node shares groups with every node of the other zones.
        assert_eq!(s.min_scatter, 4, "{s:?}");
    }

    #[test]
    fn two_zones_fall_back_to_racks_and_never_two_on_a_node() {
        let c = vec![
            node("a", "1", 1),
            node("a", "2", 2),
            node("b", "1", 3),
            node("b", "1", 4),
        ];
        assert_eq!(spread_level(&c, 3, false), Ok(Level::Rack));
        let p = place(&c, &[], 3, false).unwrap();
        let racks: BTreeSet<Vec<String>> = p.iter().map(|x| x.member(Level::Rack)).collect();
        assert_eq!(racks.len(), 3);
        let two = vec![node("a", "1", 1), node("a", "1", 2)];
        assert_eq!(
            place(&two, &[], 3, false),
            Err(PlacementError::NotEnoughNodes {
                replicas: 3,
                nodes: 2
            })
        );
    }

    #[test]
    fn disks_only_as_a_last_resort_when_allowed() {
        let mut c = Vec::new();
        for n in 1..=2 {
            for d in 0..2 {
                c.push(Candidate {
                    disk: Some(d),
                    ..node("a", "1", n)
                });
            }
        }
        assert!(place(&c, &[], 3, false).is_err());
        let p = place(&c, &[], 3, true).unwrap();
        let slots: BTreeSet<Slot> = p.iter().map(Candidate::slot).collect();
        assert_eq!(slots.len(), 3);
    }
}
