//! The Master's state machine behind a real Raft group: three replicas
//! in one process over TCP on loopback. Commands commit and every replica
//! reaches the same state; the state survives the leader's loss and a
//! replica that was away catches up by snapshot.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use cds::master::state_machine::{decode_reply, encode, MasterSm, SharedState};
use cds::master::{Location, MasterCommand, MasterReply, MasterState, Server};
use raft_core::runtime::host::{GroupHost, HostConfig};
use raft_core::runtime::node::{NodeConfig, NodeHandle};
use raft_core::runtime::transport::{Transport, TransportConfig, TransportHandle};
use raft_core::storage::local::{open, LocalOptions};
use raft_core::{ConfState, Role};

const TICK: Duration = Duration::from_millis(20);
const WAIT: Duration = Duration::from_secs(30);

struct Replica {
    host: GroupHost,
    transport: TransportHandle,
    dir: tempfile::TempDir,
    state: SharedState,
}

impl Replica {
    fn start_group(&mut self) -> NodeHandle {
        let mut storage =
            open(&self.dir.path().join("raft"), &LocalOptions::default()).expect("storage");
        if storage.conf_state().voters.is_empty() {
            storage
                .set_conf_state(ConfState {
                    voters: vec![1, 2, 3],
                    ..ConfState::default()
                })
                .expect("voters");
        }
        let mut cfg = NodeConfig::new(self.host.id(), 1);
        cfg.tick = TICK;
        cfg.config.heartbeat_tick = 2;
        cfg.snapshot_every = 10;
        cfg.log_margin = 2;
        // A fresh state: a restart rebuilds it from the snapshot and log.
        self.state = Arc::new(RwLock::new(MasterState::default()));
        let sm = MasterSm::new(self.state.clone());
        self.host
            .create_group(cfg, storage, Box::new(sm))
            .expect("group")
    }
}

async fn start() -> Vec<Replica> {
    let mut started = Vec::new();
    for id in 1..=3u64 {
        let cfg = TransportConfig::new(id, "127.0.0.1:0".parse().unwrap(), 3, "master-token");
        let (t, inbound) = Transport::start(cfg).await.expect("transport");
        started.push((id, t, inbound));
    }
    let addrs: Vec<_> = started
        .iter()
        .map(|(id, t, _)| (*id, t.local_addr()))
        .collect();
    let mut out = Vec::new();
    for (id, t, inbound) in started {
        for &(p, a) in &addrs {
            t.set_peer(p, a);
        }
        let mut hc = HostConfig::new(id, (1..=3).filter(|&p| p != id).collect());
        hc.tick = TICK;
        let host = GroupHost::start(hc, t.clone(), inbound).expect("host");
        let mut r = Replica {
            host,
            transport: t,
            dir: tempfile::tempdir().expect("tempdir"),
            state: Arc::default(),
        };
        r.start_group();
        out.push(r);
    }
    out
}

async fn leader(rs: &[Replica], not: Option<usize>) -> (usize, NodeHandle) {
    let start = Instant::now();
    loop {
        for (i, r) in rs.iter().enumerate() {
            if Some(i) == not {
                continue;
            }
            if let Some(n) = r.host.group(1) {
                if n.status().await.is_ok_and(|s| s.raft.role == Role::Leader) {
                    return (i, n);
                }
            }
        }
        assert!(start.elapsed() < WAIT, "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run(n: &NodeHandle, cmd: MasterCommand) -> MasterReply {
    let out = tokio::time::timeout(WAIT, n.propose(encode(&cmd)))
        .await
        .expect("in time")
        .expect("committed");
    decode_reply(&out.result).expect("a reply")
}

async fn applied(r: &Replica, index: u64) {
    let n = r.host.group(1).expect("group");
    let start = Instant::now();
    while n.applied() < index {
        assert!(start.elapsed() < WAIT, "stuck at {}", n.applied());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn server(id: u64) -> Server {
    Server {
        id,
        raft_addr: format!("127.0.0.1:{}", 7000 + id),
        data_addr: format!("127.0.0.1:{}", 8000 + id),
        location: Location {
            region: "r".into(),
            zone: format!("z{id}"),
            rack: "k".into(),
        },
        disks: vec![1 << 40],
        drained: false,
        pools: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_state_is_replicated_survives_its_leader_and_catches_a_replica_up() {
    let mut rs = start().await;
    let (li, l) = leader(&rs, None).await;
    for id in 1..=3 {
        assert_eq!(
            run(&l, MasterCommand::RegisterServer { server: server(id) }).await,
            MasterReply::Ok
        );
    }
    let r = run(
        &l,
        MasterCommand::CreateGroups {
            count: 4,
            replication: 3,
            pool: "default".into(),
        },
    )
    .await;
    assert!(
        matches!(r, MasterReply::Groups { ref groups } if groups.len() == 4),
        "{r:?}"
    );
    let create = MasterCommand::CreateVolume {
        name: "vol".into(),
        size: 1 << 30,
        block_size: None,
        owner: "me".into(),
        pool: "default".into(),
    };
    assert!(matches!(
        run(&l, create.clone()).await,
        MasterReply::Volume { .. }
    ));
    let r = run(&l, create).await;
    assert!(
        matches!(r, MasterReply::Error { .. }),
        "a second volume of one name: {r:?}"
    );
    let index = l.read().await.expect("read point");
    for r in &rs {
        applied(r, index).await;
    }
    let first = rs[0].state.read().unwrap().clone();
    for r in &rs {
        assert_eq!(*r.state.read().unwrap(), first, "replicas differ");
    }

    // The leader goes; the state stays, and epochs keep counting.
    rs[li].host.remove_group(1).await.expect("remove");
    let (_, l2) = leader(&rs, Some(li)).await;
    let open = MasterCommand::OpenVolume { name: "vol".into() };
    for want in 1..=12u64 {
        match run(&l2, open.clone()).await {
            MasterReply::Volume { volume } => assert_eq!(volume.epoch, want),
            other => panic!("{other:?}"),
        }
    }
    // The old leader comes back with an empty state; the log moved past
    // what it holds and was compacted, so it installs a snapshot.
    let n = rs[li].start_group();
    let index = l2.read().await.expect("read point");
    applied(&rs[li], index).await;
    assert!(
        n.status().await.unwrap().metrics.snapshots_installed >= 1,
        "no snapshot installed"
    );
    let back = rs[li].state.read().unwrap().clone();
    assert_eq!(back.volumes["vol"].epoch, 12);
    assert_eq!(back.groups, first.groups);
    for r in &rs {
        r.host.shutdown().await;
        r.transport.shutdown().await;
    }
}
