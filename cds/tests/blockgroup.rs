//! A BlockGroup end to end: three hosts in one process over TCP on
//! loopback, each holding a replica (Raft storage and block engine in a
//! temporary directory). Writes go through Raft into every engine; reads
//! come from the leader's engine after a read point; a stale writer is
//! fenced; a malformed entry is refused by every replica alike; a replica
//! that was away while the log was compacted catches up by importing the
//! leader's engine export, and a restarted one keeps its own engine.
//!
//! Every wait is bounded; every host is shut down at the end.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cds::blockgroup::command::{decode_result, encode, Applied};
use cds::blockgroup::{lock, BlockGroupSm, SharedEngine};
use cds::engine::{Command, Engine, Geometry, Outcome, ReadAt, Refusal, Step, SECTOR};
use raft_core::runtime::host::{GroupHost, HostConfig};
use raft_core::runtime::node::{NodeConfig, NodeHandle};
use raft_core::runtime::transport::{Transport, TransportConfig, TransportHandle};
use raft_core::storage::fs::{Fs, RealFs};
use raft_core::storage::host_sync::HostSync;
use raft_core::storage::local::{open_in_host, LocalOptions};
use raft_core::storage::NodeStorage;
use raft_core::{ConfState, Role};

const TICK: Duration = Duration::from_millis(20);
const WAIT: Duration = Duration::from_secs(30);
const GROUP: u64 = 1;
const G: Geometry = Geometry {
    block_size: 1 << 20,
    slice_size: 64 << 10,
};

struct Replica {
    host: GroupHost,
    transport: TransportHandle,
    sync: Arc<HostSync>,
    dir: tempfile::TempDir,
    engine: Option<SharedEngine>,
}

impl Replica {
    fn raft_dir(&self) -> PathBuf {
        self.dir.path().join("raft")
    }

    fn engine_dir(&self) -> PathBuf {
        self.dir.path().join("engine")
    }

    /// Opens (or creates) this replica's engine and storage and starts its
    /// group on the host.
    fn start_group(&mut self) -> NodeHandle {
        let fs: Arc<dyn Fs> = Arc::new(RealFs);
        let edir = self.engine_dir();
        let engine = if edir.join("super").exists() {
            Engine::open(fs.clone(), &edir).expect("open engine")
        } else {
            Engine::create(fs.clone(), &edir, G).expect("create engine")
        };
        let engine: SharedEngine = Arc::new(Mutex::new(engine));
        let mut storage: NodeStorage = open_in_host(
            fs.clone(),
            &self.raft_dir(),
            &LocalOptions::default(),
            Some(self.sync.clone()),
        )
        .expect("open storage");
        if storage.conf_state().voters.is_empty() {
            storage
                .set_conf_state(ConfState {
                    voters: vec![1, 2, 3],
                    ..ConfState::default()
                })
                .expect("voters");
        }
        let mut cfg = NodeConfig::new(self.host.id(), GROUP);
        cfg.tick = TICK;
        cfg.config.heartbeat_tick = 2;
        // Small, so compaction and snapshot installs happen in the test.
        cfg.snapshot_every = 40;
        cfg.log_margin = 5;
        let sm = BlockGroupSm::new(fs, &edir, engine.clone());
        let node = self
            .host
            .create_group(cfg, storage, Box::new(sm))
            .expect("create group");
        self.engine = Some(engine);
        node
    }

    fn engine(&self) -> &SharedEngine {
        self.engine.as_ref().expect("group started")
    }
}

async fn start() -> Vec<Replica> {
    let mut started = Vec::new();
    for id in 1..=3u64 {
        let cfg = TransportConfig::new(id, "127.0.0.1:0".parse().unwrap(), 5, "bg-token");
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
        let dir = tempfile::tempdir().expect("tempdir");
        let sync = HostSync::new(Arc::new(RealFs), dir.path());
        let mut r = Replica {
            host,
            transport: t,
            sync,
            dir,
            engine: None,
        };
        r.start_group();
        out.push(r);
    }
    out
}

async fn leader(rs: &[Replica]) -> (usize, NodeHandle) {
    let start = Instant::now();
    loop {
        for (i, r) in rs.iter().enumerate() {
            if let Some(n) = r.host.group(GROUP) {
                if n.status().await.is_ok_and(|s| s.raft.role == Role::Leader) {
                    return (i, n);
                }
            }
        }
        assert!(start.elapsed() < WAIT, "no leader within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn apply(n: &NodeHandle, cmd: &Command) -> Applied {
    let out = tokio::time::timeout(WAIT, n.propose(encode(cmd)))
        .await
        .expect("in time")
        .expect("committed");
    decode_result(&out.result).expect("a result")
}

fn write(offset: u64, byte: u8, epoch: u64) -> Command {
    write_at(offset, byte, epoch, 1, 0)
}

/// A write at head version `head` (based on `base`).
fn write_at(offset: u64, byte: u8, epoch: u64, head: u64, base: u64) -> Command {
    Command::Write {
        volume: 1,
        block: 0,
        offset,
        data: Bytes::from(vec![byte; SECTOR as usize]),
        epoch,
        head,
        base,
    }
}

fn read(e: &SharedEngine, offset: u64) -> Vec<u8> {
    let mut buf = vec![0; SECTOR as usize];
    lock(e)
        .read(1, 0, offset, &mut buf, ReadAt::Head)
        .expect("healthy")
        .expect("accepted");
    buf
}

async fn wait_applied(r: &Replica, index: u64) {
    let n = r.host.group(GROUP).expect("group");
    let start = Instant::now();
    while n.applied() < index {
        assert!(
            start.elapsed() < WAIT,
            "replica stuck at {} < {index}",
            n.applied()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stop(rs: &[Replica]) {
    for r in rs {
        r.host.shutdown().await;
        r.transport.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_group_replicates_reads_fences_and_catches_a_replica_up_by_export() {
    let mut rs = start().await;
    let (li, l) = leader(&rs).await;

    // Writes go through Raft into every engine.
    assert_eq!(
        apply(&l, &write(0, 0xA1, 1)).await,
        Applied::Done(Outcome::Written)
    );
    let index = l.read().await.expect("read point");
    assert_eq!(read(rs[li].engine(), 0), vec![0xA1; SECTOR as usize]);
    for r in &rs {
        wait_applied(r, index).await;
        assert_eq!(read(r.engine(), 0), vec![0xA1; SECTOR as usize]);
    }

    // A newer writer fences the older one, on every replica alike.
    assert_eq!(
        apply(&l, &write(0, 0xB2, 2)).await,
        Applied::Done(Outcome::Written)
    );
    assert_eq!(
        apply(&l, &write(0, 0xC3, 1)).await,
        Applied::Refused(Refusal::Fenced {
            volume: 1,
            epoch: 1,
            current: 2
        })
    );
    // A payload no replica understands is refused, and the group goes on.
    let out = l
        .propose(Bytes::from_static(b"\x01\x63garbage"))
        .await
        .expect("committed");
    assert!(matches!(
        decode_result(&out.result),
        Ok(Applied::Malformed(_))
    ));
    l.read().await.expect("read point");
    assert_eq!(read(rs[li].engine(), 0), vec![0xB2; SECTOR as usize]);

    // A follower goes away; the log moves on and is compacted behind
    // snapshots; when the follower comes back, it installs the leader's
    // engine export.
    let fi = (li + 1) % 3;
    rs[fi].host.remove_group(GROUP).await.expect("remove");
    for i in 0..120u64 {
        let c = write((i % 200) * SECTOR, i as u8, 2);
        assert_eq!(apply(&l, &c).await, Applied::Done(Outcome::Written));
    }
    let mark = Command::Advance {
        volume: 1,
        head: 2,
        base: 1,
    };
    assert_eq!(
        apply(&l, &mark).await,
        Applied::Done(Outcome::Advanced {
            head: 2,
            step: Step::Marked
        })
    );
    assert_eq!(
        apply(&l, &write_at(0, 0xEE, 2, 2, 1)).await,
        Applied::Done(Outcome::Written)
    );
    let index = l.read().await.expect("read point");
    let first = l.status().await.expect("status").raft.first_index;
    assert!(
        first > 10,
        "the log was not compacted (first index {first})"
    );
    let n = rs[fi].start_group();
    wait_applied(&rs[fi], index).await;
    let m = n.status().await.expect("status").metrics;
    assert_eq!(
        m.snapshots_installed, 1,
        "caught up without a snapshot install"
    );
    let (lead, back) = (rs[li].engine().clone(), rs[fi].engine().clone());
    for s in 0..200u64 {
        assert!(
            read(&back, s * SECTOR) == read(&lead, s * SECTOR),
            "sector {s} differs"
        );
    }
    let mut old = vec![0; SECTOR as usize];
    lock(&back)
        .read(1, 0, 0, &mut old, ReadAt::Version(1))
        .unwrap()
        .unwrap();
    assert!(
        old == vec![0; SECTOR as usize],
        "the retained version did not come over"
    );
    lock(&back)
        .read(1, 0, 118 * SECTOR, &mut old, ReadAt::Version(1))
        .unwrap()
        .unwrap();
    assert!(
        old == vec![118; SECTOR as usize],
        "the retained version did not come over"
    );
    assert_eq!(lock(&back).epoch(1), 2, "the writer epoch came over");

    // A restarted replica keeps its own engine (it is ahead of the stored
    // snapshot) and replays the rest of the log.
    let durable = lock(&back).durable_index();
    rs[fi].host.remove_group(GROUP).await.expect("remove");
    rs[fi].engine = None;
    assert_eq!(
        apply(&l, &write_at(SECTOR, 0x77, 2, 2, 1)).await,
        Applied::Done(Outcome::Written)
    );
    let index = l.read().await.expect("read point");
    rs[fi].start_group();
    wait_applied(&rs[fi], index).await;
    assert!(lock(rs[fi].engine()).durable_index() >= durable);
    assert_eq!(read(rs[fi].engine(), SECTOR), vec![0x77; SECTOR as usize]);
    stop(&rs).await;
}
