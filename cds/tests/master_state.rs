//! The Master's state machine: placement rules over random topologies,
//! volume commands and their refusals, block allocation, determinism.

use std::collections::{BTreeMap, BTreeSet};

use cds::master::{place, Location, MasterCommand, MasterError, MasterReply, MasterState, Server};
use proptest::prelude::*;

fn server(id: u64, zone: u8, rack: u8) -> Server {
    Server {
        id,
        raft_addr: format!("127.0.0.1:{}", 7000 + id),
        data_addr: format!("127.0.0.1:{}", 8000 + id),
        location: Location {
            region: "r1".into(),
            zone: format!("z{zone}"),
            rack: format!("k{rack}"),
        },
        disks: vec![1 << 40, 1 << 40],
        drained: false,
        pools: Vec::new(),
    }
}

proptest! {
    #[test]
    fn replicas_go_to_distinct_nodes_spread_over_zones_then_racks(
        topo in proptest::collection::vec((0u8..4, 0u8..3), 1..12),
        n in 1usize..5,
        groups in 1u64..30,
    ) {
        let servers: BTreeMap<u64, Server> = topo
            .iter()
            .enumerate()
            .map(|(i, &(z, r))| (i as u64 + 1, server(i as u64 + 1, z, r)))
            .collect();
        let zones: BTreeSet<_> = servers.values().map(|s| s.location.zone.clone()).collect();
        let racks: BTreeSet<_> = servers.values().map(|s| (s.location.zone.clone(), s.location.rack.clone())).collect();
        let mut st = MasterState::default();
        for s in servers.values() {
            st.apply(&MasterCommand::RegisterServer { server: s.clone() });
        }
        let r = st.apply(&MasterCommand::CreateGroups { count: groups, replication: n, pool: "default".into() });
        if servers.len() < n {
            let refused = matches!(r, MasterReply::Error { error: MasterError::NotEnoughServers { .. } });
            prop_assert!(refused, "{:?}", r);
            return Ok(());
        }
        let MasterReply::Groups { groups: made } = r else { panic!("{r:?}") };
        for g in &made {
            let nodes: BTreeSet<_> = g.replicas.iter().collect();
            prop_assert_eq!(nodes.len(), n, "two replicas on one node: {:?}", g);
            let gz: BTreeSet<_> = g.replicas.iter().map(|r| servers[r].location.zone.clone()).collect();
            let gr: BTreeSet<_> = g.replicas.iter().map(|r| (servers[r].location.zone.clone(), servers[r].location.rack.clone())).collect();
            prop_assert_eq!(gz.len(), n.min(zones.len()), "zones not spread: {:?}", g);
            prop_assert!(gr.len() >= n.min(racks.len()).min(gz.len().max(1)), "racks not spread: {:?}", g);
        }
        // With one zone and one rack, load is even: replica counts differ
        // by at most one.
        if zones.len() == 1 && racks.len() == 1 {
            let mut load: BTreeMap<u64, usize> = servers.keys().map(|&s| (s, 0)).collect();
            for g in &made {
                for r in &g.replicas {
                    *load.get_mut(r).unwrap() += 1;
                }
            }
            let (lo, hi) = (load.values().min().unwrap(), load.values().max().unwrap());
            prop_assert!(hi - lo <= 1, "uneven: {:?}", load);
        }
    }
}

fn volume(reply: MasterReply) -> cds::master::Volume {
    match reply {
        MasterReply::Volume { volume } => volume,
        other => panic!("not a volume: {other:?}"),
    }
}

#[test]
fn volumes_are_created_opened_grown_allocated_and_deleted_with_clear_refusals() {
    let mut st = MasterState::default();
    for id in 1..=3 {
        st.apply(&MasterCommand::RegisterServer {
            server: server(id, id as u8, 0),
        });
    }
    let create = |name: &str, size: u64| MasterCommand::CreateVolume {
        name: name.into(),
        size,
        block_size: None,
        owner: "alice".into(),
        pool: "default".into(),
    };
    let refused = |r: MasterReply| match r {
        MasterReply::Error { error } => error,
        other => panic!("accepted: {other:?}"),
    };
    let v = volume(st.apply(&create("vol1", 10 << 30)));
    assert_eq!((v.id, v.epoch, v.block_size), (1, 0, 16 << 20));
    assert!(matches!(
        refused(st.apply(&create("vol1", 1 << 30))),
        MasterError::VolumeExists { .. }
    ));
    assert!(matches!(
        refused(st.apply(&create("bad name", 1 << 30))),
        MasterError::BadVolume { .. }
    ));
    assert!(matches!(
        refused(st.apply(&create("odd", 1000))),
        MasterError::BadVolume { .. }
    ));
    assert!(matches!(
        refused(st.apply(&create("huge", 1 << 50))),
        MasterError::BadVolume { .. }
    ));
    // Blocks need groups.
    let alloc = |blocks: Vec<u64>| MasterCommand::AllocateBlocks {
        name: "vol1".into(),
        blocks,
    };
    assert_eq!(
        refused(st.apply(&alloc(vec![0]))),
        MasterError::NoGroups {
            pool: "default".into()
        }
    );
    st.apply(&MasterCommand::CreateGroups {
        count: 4,
        replication: 3,
        pool: "default".into(),
    });
    let v = volume(st.apply(&alloc((0..8).collect())));
    let mut per_group: BTreeMap<u64, usize> = BTreeMap::new();
    for g in v.blocks.values() {
        *per_group.entry(*g).or_default() += 1;
    }
    assert_eq!(
        per_group.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2, 2]
    );
    // Allocating again changes nothing; past the end is refused.
    assert_eq!(volume(st.apply(&alloc(vec![0, 1]))).blocks, v.blocks);
    assert!(matches!(
        refused(st.apply(&alloc(vec![640]))),
        MasterError::BlockOutOfRange { block: 640, .. }
    ));
    // Each open is a new epoch.
    let open = MasterCommand::OpenVolume {
        name: "vol1".into(),
    };
    assert_eq!(volume(st.apply(&open)).epoch, 1);
    assert_eq!(volume(st.apply(&open)).epoch, 2);
    // Growing is allowed, shrinking is not.
    let resize = |size| MasterCommand::ResizeVolume {
        name: "vol1".into(),
        size,
    };
    assert_eq!(volume(st.apply(&resize(20 << 30))).size, 20 << 30);
    assert!(matches!(
        refused(st.apply(&resize(1 << 30))),
        MasterError::BadVolume { .. }
    ));
    st.apply(&MasterCommand::DeleteVolume {
        name: "vol1".into(),
    });
    assert!(matches!(
        refused(st.apply(&open)),
        MasterError::NoVolume { .. }
    ));
}

#[test]
fn the_same_commands_give_the_same_state_and_survive_json() {
    let cmds = vec![
        MasterCommand::RegisterServer {
            server: server(1, 0, 0),
        },
        MasterCommand::RegisterServer {
            server: server(2, 1, 0),
        },
        MasterCommand::RegisterServer {
            server: server(3, 2, 0),
        },
        MasterCommand::CreateGroups {
            count: 3,
            replication: 3,
            pool: "default".into(),
        },
        MasterCommand::CreateVolume {
            name: "a".into(),
            size: 1 << 30,
            block_size: Some(4 << 20),
            owner: "o".into(),
            pool: "default".into(),
        },
        MasterCommand::AllocateBlocks {
            name: "a".into(),
            blocks: vec![5, 1, 9],
        },
        MasterCommand::OpenVolume { name: "a".into() },
    ];
    let mut one = MasterState::default();
    let mut two = MasterState::default();
    for c in &cmds {
        let text = serde_json::to_string(c).unwrap();
        let back: MasterCommand = serde_json::from_str(&text).unwrap();
        assert_eq!(&back, c);
        assert_eq!(one.apply(c), two.apply(&back));
    }
    assert_eq!(one, two);
    let saved = serde_json::to_vec(&one).unwrap();
    let loaded: MasterState = serde_json::from_slice(&saved).unwrap();
    assert_eq!(loaded, one);
    // Placement itself refuses what cannot be done.
    assert!(place(&one.servers, &one.groups, "default", 4).is_err());
}
