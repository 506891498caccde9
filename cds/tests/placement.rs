//! Placement over random topologies: the rules of `cds::placement` hold
//! for every group, and the load and scatter width come out balanced. The
//! last test prints the figures for a few topologies.

use std::collections::{BTreeMap, BTreeSet};

use cds::placement::{place, spread, spread_level, Candidate, Level, PlacementError, Slot};
use proptest::prelude::*;

/// A topology as counts: per region, per zone, per rack, nodes; each
/// node with `disks` disks when placing on disks.
fn build(shape: &[Vec<Vec<u8>>], disks: Option<u32>) -> Vec<Candidate> {
    let mut out = Vec::new();
    let mut node = 0u64;
    for (r, zones) in shape.iter().enumerate() {
        for (z, racks) in zones.iter().enumerate() {
            for (k, &nodes) in racks.iter().enumerate() {
                for _ in 0..nodes {
                    node += 1;
                    let ds: Vec<Option<u32>> = match disks {
                        None => vec![None],
                        Some(d) => (0..d).map(Some).collect(),
                    };
                    for disk in ds {
                        out.push(Candidate {
                            region: format!("r{r}"),
                            zone: format!("z{z}"),
                            rack: format!("k{k}"),
                            node,
                            disk,
                        });
                    }
                }
            }
        }
    }
    out
}

fn shapes() -> impl Strategy<Value = Vec<Vec<Vec<u8>>>> {
    prop::collection::vec(
        prop::collection::vec(prop::collection::vec(1u8..=3, 1..=3), 1..=4),
        1..=2,
    )
}

/// Places `groups` groups of 3, checking each against the rules.
fn place_all(
    c: &[Candidate],
    groups: usize,
    allow_disks: bool,
) -> Result<Vec<Vec<Slot>>, TestCaseError> {
    let level = match spread_level(c, 3, allow_disks) {
        Ok(l) => l,
        Err(e) => {
            let nodes: BTreeSet<u64> = c.iter().map(|x| x.node).collect();
            prop_assert!(nodes.len() < 3 || allow_disks, "refused with 3 nodes: {e}");
            prop_assert!(place(c, &[], 3, allow_disks).is_err());
            return Ok(Vec::new());
        }
    };
    // The level is the highest with 3 members.
    for higher in Level::ALL.iter().filter(|&&l| l < level) {
        let m: BTreeSet<Vec<String>> = c.iter().map(|x| x.member(*higher)).collect();
        prop_assert!(
            m.len() < 3,
            "{higher:?} has {} members above {level:?}",
            m.len()
        );
    }
    let mut placed = Vec::new();
    for _ in 0..groups {
        let p =
            place(c, &placed, 3, allow_disks).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(p.len(), 3);
        let members: BTreeSet<Vec<String>> = p.iter().map(|x| x.member(level)).collect();
        prop_assert_eq!(members.len(), 3, "two replicas in one {:?}: {:?}", level, p);
        if level <= Level::Node {
            let nodes: BTreeSet<u64> = p.iter().map(|x| x.node).collect();
            prop_assert_eq!(nodes.len(), 3, "two replicas on one node: {:?}", p);
        }
        placed.push(p.iter().map(|x| (x.node, x.disk)).collect());
    }
    // Within each member of the level, the nodes' loads differ by at most
    // one: the least loaded node of a member is always the one picked.
    let mut by_member: BTreeMap<Vec<String>, BTreeMap<u64, usize>> = BTreeMap::new();
    for x in c {
        by_member
            .entry(x.member(level))
            .or_default()
            .insert(x.node, 0);
    }
    for g in &placed {
        for &(n, _) in g {
            let x = c.iter().find(|x| x.node == n).expect("a placed node");
            *by_member
                .get_mut(&x.member(level))
                .expect("member")
                .get_mut(&n)
                .expect("node") += 1;
        }
    }
    if level < Level::Node {
        for (m, loads) in &by_member {
            let (lo, hi) = (
                loads.values().min().copied().unwrap_or(0),
                loads.values().max().copied().unwrap_or(0),
            );
            prop_assert!(hi - lo <= 1, "{m:?}: node loads {loads:?}");
        }
    }
    Ok(placed)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn replicas_follow_the_failure_domain_rules(shape in shapes(), groups in 1usize..64) {
        let c = build(&shape, None);
        place_all(&c, groups, false)?;
    }

    #[test]
    fn disks_are_a_last_resort(shape in shapes(), disks in 1u32..=3, groups in 1usize..32) {
        let c = build(&shape, Some(disks));
        let placed = place_all(&c, groups, true)?;
        let nodes: BTreeSet<u64> = c.iter().map(|x| x.node).collect();
        if nodes.len() >= 3 {
            for g in &placed {
                let n: BTreeSet<u64> = g.iter().map(|&(n, _)| n).collect();
                prop_assert_eq!(n.len(), 3, "disk level used with 3 nodes: {:?}", g);
            }
        }
    }
}

#[test]
fn a_production_pool_with_two_nodes_is_refused() {
    let c = build(&[vec![vec![2]]], Some(4));
    assert_eq!(
        place(&c, &[], 3, false),
        Err(PlacementError::NotEnoughNodes {
            replicas: 3,
            nodes: 2
        })
    );
    assert!(place(&c, &[], 3, true).is_ok());
}

/// Prints load and scatter width for a few topologies (`--nocapture`).
#[test]
fn figures_for_some_topologies() {
    let cases: Vec<(&str, Vec<Vec<Vec<u8>>>)> = vec![
        ("6 nodes, 3 zones x 2 racks", vec![vec![vec![1, 1]; 3]]),
        ("12 nodes, 3 zones x 2 racks x 2", vec![vec![vec![2, 2]; 3]]),
        ("9 nodes, 1 zone x 3 racks x 3", vec![vec![vec![3, 3, 3]]]),
        (
            "7 nodes, zones of 1, 3, 3",
            vec![vec![vec![1], vec![3], vec![3]]],
        ),
    ];
    println!("| topology | groups | level | replicas per node (min/max/mean) | scatter width (min/mean) |");
    println!("|---|---|---|---|---|");
    for (name, shape) in cases {
        let c = build(&shape, None);
        let level = spread_level(&c, 3, false).unwrap();
        let mut placed = Vec::new();
        for _ in 0..96 {
            let p = place(&c, &placed, 3, false).unwrap();
            placed.push(p.iter().map(|x| (x.node, x.disk)).collect::<Vec<_>>());
        }
        let nodes: BTreeSet<u64> = c.iter().map(|x| x.node).collect();
        let s = spread(&nodes, &placed);
        println!(
            "| {name} | 96 | {level:?} | {}/{}/{:.1} | {}/{:.1} |",
            s.min_replicas, s.max_replicas, s.mean_replicas, s.min_scatter, s.mean_scatter
        );
        // Every node that can take replicas shares groups with every node
        // it may share one with (a full scatter width) when there are
        // enough groups.
        if name.starts_with("6 nodes") {
            assert_eq!((s.min_replicas, s.max_replicas), (48, 48));
            assert_eq!(s.min_scatter, 4);
        }
    }
}
