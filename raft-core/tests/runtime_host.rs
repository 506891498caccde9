//! The multi-group host end to end: three hosts in one process, each with
//! its own TCP transport on loopback, hosting the same groups, each group
//! on its own local storage in a temporary directory, all of a host's logs
//! synced through one `HostSync`.
//!
//! Every wait is bounded; every host is shut down at the end of its test.
#![cfg(feature = "runtime")]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raft_core::runtime::host::{GroupHost, HostConfig, HostError, HOST_GROUP};
use raft_core::runtime::node::{NodeConfig, NodeHandle};
use raft_core::runtime::state_machine::{Applied, SnapshotJob, SnapshotWriter, StateMachine};
use raft_core::runtime::transport::{Transport, TransportConfig, TransportHandle};
use raft_core::runtime::GroupId;
use raft_core::storage::fs::{Fs, RealFs};
use raft_core::storage::host_sync::HostSync;
use raft_core::storage::local::{open_in_host, LocalOptions};
use raft_core::storage::NodeStorage;
use raft_core::{ConfState, Role};

const TICK: Duration = Duration::from_millis(20);
const WAIT: Duration = Duration::from_secs(30);
const CLUSTER: u64 = 77;
const TOKEN: &str = "host-test-token";

/// Counts applied commands per group.
#[derive(Clone, Default)]
struct Counter(Arc<Mutex<Vec<Vec<u8>>>>);

impl StateMachine for Counter {
    fn on_apply(&mut self, entries: &mut dyn Iterator<Item = Applied>) {
        let mut v = self.0.lock().unwrap();
        for a in entries {
            v.push(a.data.to_vec());
        }
    }
    fn on_snapshot_save(
        &mut self,
        writer: &mut SnapshotWriter,
    ) -> Result<Option<SnapshotJob>, String> {
        let n = self.0.lock().unwrap().len() as u64;
        let mut f = writer.create("n").map_err(|e| e.to_string())?;
        f.write_all(&n.to_le_bytes()).map_err(|e| e.to_string())?;
        Ok(None)
    }
    fn on_snapshot_load(&mut self, _dir: &Path, _files: &[String]) -> Result<(), String> {
        Ok(())
    }
}

struct TestHost {
    host: GroupHost,
    transport: TransportHandle,
    dir: tempfile::TempDir,
    sync: Arc<HostSync>,
    seen: BTreeMap<GroupId, Counter>,
}

impl TestHost {
    fn storage(&self, group: GroupId) -> NodeStorage {
        let path = self.dir.path().join(format!("g{group}"));
        let fs: Arc<dyn Fs> = Arc::new(RealFs);
        let mut s = open_in_host(fs, &path, &LocalOptions::default(), Some(self.sync.clone()))
            .expect("open group storage");
        if s.conf_state().voters.is_empty() {
            s.set_conf_state(ConfState {
                voters: vec![1, 2, 3],
                ..ConfState::default()
            })
            .expect("initial voters");
        }
        s
    }

    fn create(&mut self, group: GroupId) -> Result<NodeHandle, HostError> {
        let mut cfg = NodeConfig::new(self.host.id(), group);
        cfg.tick = TICK;
        cfg.config.heartbeat_tick = 2;
        cfg.snapshot_every = 0;
        let storage = self.storage(group);
        let sm = Counter::default();
        let node = self.host.create_group(cfg, storage, Box::new(sm.clone()))?;
        self.seen.insert(group, sm);
        Ok(node)
    }
}

async fn start_hosts(n: u64) -> Vec<TestHost> {
    start_hosts_quiescing_after(n, 10).await
}

/// `n` hosts whose groups quiesce after `quiesce` idle ticks (0: never).
async fn start_hosts_quiescing_after(n: u64, quiesce: u32) -> Vec<TestHost> {
    let mut started = Vec::new();
    for id in 1..=n {
        let cfg = TransportConfig::new(id, "127.0.0.1:0".parse().unwrap(), CLUSTER, TOKEN);
        let (t, inbound) = Transport::start(cfg).await.expect("transport");
        started.push((id, t, inbound));
    }
    let addrs: Vec<_> = started
        .iter()
        .map(|(id, t, _)| (*id, t.local_addr()))
        .collect();
    let mut hosts = Vec::new();
    for (id, t, inbound) in started {
        for &(p, a) in &addrs {
            t.set_peer(p, a);
        }
        let mut hc = HostConfig::new(id, (1..=n).filter(|&p| p != id).collect());
        hc.tick = TICK;
        hc.quiesce_after_ticks = quiesce;
        let host = GroupHost::start(hc, t.clone(), inbound).expect("host");
        let dir = tempfile::tempdir().expect("tempdir");
        let sync = HostSync::new(Arc::new(RealFs), dir.path());
        hosts.push(TestHost {
            host,
            transport: t,
            dir,
            sync,
            seen: BTreeMap::new(),
        });
    }
    hosts
}

async fn stop_all(hosts: &[TestHost]) {
    for h in hosts {
        h.host.shutdown().await;
        h.transport.shutdown().await;
    }
}

/// Waits until `f` holds, or fails the test after `WAIT` with `what`.
async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The leader of `group` among `hosts` (by the nodes' own view).
async fn leader_of(hosts: &[TestHost], group: GroupId) -> Option<(usize, NodeHandle)> {
    for (i, h) in hosts.iter().enumerate() {
        if let Some(n) = h.host.group(group) {
            if let Ok(s) = n.status().await {
                if s.raft.role == Role::Leader {
                    return Some((i, n));
                }
            }
        }
    }
    None
}

async fn wait_leader(hosts: &[TestHost], group: GroupId, not_on: Option<usize>) -> NodeHandle {
    let start = Instant::now();
    loop {
        if let Some((i, n)) = leader_of(hosts, group).await {
            if Some(i) != not_on {
                return n;
            }
        }
        assert!(
            start.elapsed() < WAIT,
            "group {group}: no leader within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_groups_share_a_host_elect_replicate_sleep_and_survive_a_host_crash() {
    const GROUPS: u64 = 32;
    let mut hosts = start_hosts(3).await;
    for h in &mut hosts {
        for g in 1..=GROUPS {
            h.create(g).expect("create group");
        }
    }
    // Every group elects a leader and commits a command on all three.
    for g in 1..=GROUPS {
        let l = wait_leader(&hosts, g, None).await;
        let out = tokio::time::timeout(WAIT, l.propose(format!("g{g}").into_bytes()))
            .await
            .expect("propose in time")
            .expect("proposal committed");
        assert!(out.index > 0);
    }
    wait_for("every command applied on every host", || {
        hosts.iter().all(|h| {
            h.seen
                .iter()
                .all(|(g, c)| c.0.lock().unwrap().contains(&format!("g{g}").into_bytes()))
        })
    })
    .await;

    // The groups' log syncs were shared: fewer whole-disk syncs than
    // log syncs asked for.
    for h in &hosts {
        let s = h.sync.stats();
        assert!(s.requests > 0 && s.syncs < s.requests, "{s:?}");
    }

    // Idle, every group goes quiescent everywhere: the host's timer then
    // nudges no group at all.
    wait_for("every group quiescent on every host", || {
        hosts.iter().all(|h| h.host.metrics().quiescent == GROUPS)
    })
    .await;
    let before = hosts[0].host.metrics();
    tokio::time::sleep(TICK * 10).await;
    let after = hosts[0].host.metrics();
    assert!(after.ticks >= before.ticks + 5, "{before:?} {after:?}");
    assert_eq!(
        after.group_ticks, before.group_ticks,
        "quiescent groups were ticked"
    );

    // A write wakes its group and commits.
    let l = wait_leader(&hosts, 5, None).await;
    tokio::time::timeout(WAIT, l.propose(b"wake".to_vec()))
        .await
        .expect("in time")
        .expect("committed after a wake");

    // Crash the host that leads the most groups (its transport too, as a
    // kill would): node-level liveness on the others declares it dead and
    // every group it led elects a new leader, although they were asleep.
    let mut led: Vec<Vec<GroupId>> = vec![Vec::new(); hosts.len()];
    for g in 1..=GROUPS {
        if let Some((i, _)) = leader_of(&hosts, g).await {
            led[i].push(g);
        }
    }
    let victim = (0..hosts.len()).max_by_key(|&i| led[i].len()).unwrap();
    assert!(!led[victim].is_empty());
    let victim_id = hosts[victim].host.id();
    hosts[victim].host.shutdown().await;
    hosts[victim].transport.shutdown().await;
    let survivors: Vec<usize> = (0..hosts.len()).filter(|&i| i != victim).collect();
    wait_for("the crashed host declared dead", || {
        survivors
            .iter()
            .all(|&i| hosts[i].host.dead_peers().contains(&victim_id))
    })
    .await;
    for &g in &led[victim] {
        let l = wait_leader(&hosts, g, Some(victim)).await;
        tokio::time::timeout(WAIT, l.propose(b"after".to_vec()))
            .await
            .expect("in time")
            .expect("committed by the new leader");
    }
    stop_all(&hosts).await;
}

/// Awake groups with nothing to do are nudged only on the ticks their
/// cores said are due (a leader's heartbeat every other tick, a
/// follower's election timeout), not on every tick, and the groups stay
/// as they were: no follower times out for want of the skipped ticks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awake_groups_are_nudged_only_on_the_ticks_that_are_due() {
    const GROUPS: u64 = 16;
    let mut hosts = start_hosts_quiescing_after(3, 0).await;
    for h in &mut hosts {
        for g in 1..=GROUPS {
            h.create(g).expect("create group");
        }
    }
    let mut terms = BTreeMap::new();
    for g in 1..=GROUPS {
        let l = wait_leader(&hosts, g, None).await;
        tokio::time::timeout(WAIT, l.propose(b"x".to_vec()))
            .await
            .expect("propose in time")
            .expect("committed");
        terms.insert(g, l.status().await.expect("status").raft.term);
    }
    let before: Vec<_> = hosts.iter().map(|h| h.host.metrics()).collect();
    tokio::time::sleep(TICK * 40).await;
    let (mut ticks, mut nudges) = (0, 0);
    for (h, b) in hosts.iter().zip(&before) {
        let a = h.host.metrics();
        ticks += a.ticks - b.ticks;
        nudges += a.group_ticks - b.group_ticks;
    }
    assert!(ticks >= 3 * 20, "the timers barely ran: {ticks} ticks");
    // Every tick to every group would be GROUPS per host tick; leaders
    // (one per group) are due every other tick and followers about once
    // an election timeout: about a fifth of that.
    assert!(
        nudges * 2 < ticks * GROUPS,
        "{nudges} nudges in {ticks} host ticks of {GROUPS} awake groups"
    );
    for g in 1..=GROUPS {
        let (_, l) = leader_of(&hosts, g).await.expect("still led");
        let term = l.status().await.expect("status").raft.term;
        assert_eq!(term, terms[&g], "group {g} held an election");
    }
    stop_all(&hosts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_created_and_removed_at_run_time_and_unknown_groups_are_dropped() {
    let mut hosts = start_hosts(3).await;
    for h in &mut hosts {
        h.create(1).expect("group 1");
    }
    wait_leader(&hosts, 1, None).await;
    // The reserved id, a duplicate, a foreign node id: refused, clearly.
    let h0 = &mut hosts[0];
    let mut reserved = NodeConfig::new(1, HOST_GROUP);
    reserved.tick = TICK;
    let st = h0.storage(99);
    assert!(matches!(
        h0.host
            .create_group(reserved, st, Box::new(Counter::default())),
        Err(HostError::Reserved)
    ));
    assert!(matches!(h0.create(1), Err(HostError::Exists(1))));
    let mut other = NodeConfig::new(2, 3);
    other.tick = TICK;
    let st = h0.storage(3);
    assert!(matches!(
        h0.host
            .create_group(other, st, Box::new(Counter::default())),
        Err(HostError::WrongNode { got: 2, want: 1 })
    ));

    // Group 2 appears on every host at run time and works.
    for h in &mut hosts {
        h.create(2).expect("group 2");
    }
    let l = wait_leader(&hosts, 2, None).await;
    tokio::time::timeout(WAIT, l.propose(b"two".to_vec()))
        .await
        .expect("in time")
        .expect("committed");

    // Removed on one host, its peers' messages for it are dropped and
    // counted, and it is gone from the host's list.
    hosts[0].host.remove_group(2).await.expect("remove");
    assert_eq!(hosts[0].host.groups(), vec![1]);
    assert!(matches!(
        hosts[0].host.remove_group(2).await,
        Err(HostError::Unknown(2))
    ));
    wait_for("messages for the removed group dropped", || {
        hosts[0].host.metrics().dropped_unknown_group > 0
    })
    .await;
    // Its storage is closed: it can be opened again at once.
    let again: NodeStorage = hosts[0].storage(2);
    drop(again);
    assert!(Path::new(&hosts[0].dir.path().join("g2")).exists());
    let m = hosts[0].host.metrics();
    assert_eq!((m.groups_created, m.groups_removed, m.groups), (2, 1, 1));
    stop_all(&hosts).await;
}

#[test]
fn host_config_is_checked() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cfg = TransportConfig::new(1, "127.0.0.1:0".parse().unwrap(), CLUSTER, TOKEN);
        let (t, inbound) = Transport::start(cfg).await.unwrap();
        let mut hc = HostConfig::new(1, vec![2]);
        hc.peer_timeout = 1;
        let e = GroupHost::start(hc, t.clone(), inbound).unwrap_err();
        assert!(e.to_string().contains("peer_timeout"), "{e}");
        t.shutdown().await;
    });
}
