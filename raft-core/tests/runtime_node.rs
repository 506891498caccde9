//! The tokio node driver end to end: three nodes in one process, connected
//! by an in-process router, each with a recording state machine.
//!
//! Every wait is bounded by a timeout and every node is shut down at the end
//! of its test.
#![cfg(feature = "runtime")]

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use raft_core::runtime::node::{NodeConfig, NodeError, NodeHandle, ProposeOutcome, RaftNode};
use raft_core::runtime::state_machine::{Applied, SnapshotJob, SnapshotWriter, StateMachine};
use raft_core::runtime::{codec, Envelope, Outbox};
use raft_core::storage::NodeStorage;
use raft_core::{
    Bytes, ConfState, Entry, EntryKind, Membership, Message, MessageBody, NodeId, Role,
};

const GROUP: u64 = 7;
const WAIT: Duration = Duration::from_secs(20);

// ----- the recording state machine -----------------------------------------

/// What a test can see of one node's state machine.
#[derive(Default, Debug)]
struct Seen {
    /// The applied commands: (index, data).
    history: Vec<(u64, Vec<u8>)>,
    /// Where each applied command's bytes live (to tell a shared buffer
    /// from a copy).
    buffers: Vec<usize>,
    /// How many applied entries had a waiting proposer on this node.
    waited: usize,
    /// Callbacks other than `on_apply`, in order.
    calls: Vec<String>,
    /// Break the contract: return from `on_apply` without consuming.
    lazy: bool,
    /// Fail as a state machine whose disk died: answer the next entry
    /// with an error, take no more, and report the failure.
    broken: Option<String>,
    /// What `failure` reports: set only once an entry was refused, so a
    /// failure set between two batches never fails the batch before it.
    failed: Option<String>,
}

struct Recorder(Arc<Mutex<Seen>>);

impl StateMachine for Recorder {
    fn on_apply(&mut self, entries: &mut dyn Iterator<Item = Applied>) {
        let mut s = self.0.lock().unwrap();
        if s.lazy {
            return;
        }
        if s.broken.is_some() {
            if let Some(mut a) = entries.next() {
                a.respond(b"error: disk".to_vec());
                s.failed = s.broken.clone();
            }
            return;
        }
        for mut a in entries {
            if a.has_waiter() {
                s.waited += 1;
            }
            s.history.push((a.index, a.data.to_vec()));
            s.buffers.push(a.data.as_ptr() as usize);
            // The result names the command, so a proposer can tell that the
            // answer is its own.
            let mut result = b"done:".to_vec();
            result.extend_from_slice(&a.data);
            a.respond(result);
        }
    }

    fn on_snapshot_save(
        &mut self,
        writer: &mut SnapshotWriter,
    ) -> Result<Option<SnapshotJob>, String> {
        let s = self.0.lock().unwrap();
        let mut out = Vec::new();
        for (i, d) in &s.history {
            out.extend_from_slice(&i.to_le_bytes());
            out.extend_from_slice(&(d.len() as u32).to_le_bytes());
            out.extend_from_slice(d);
        }
        // Small: written at once, no job.
        let mut f = writer.create("history").map_err(|e| e.to_string())?;
        f.write_all(&out).map_err(|e| e.to_string())?;
        Ok(None)
    }

    fn on_snapshot_load(&mut self, dir: &Path, files: &[String]) -> Result<(), String> {
        let mut s = self.0.lock().unwrap();
        s.history.clear(); // starts from empty
        s.calls.push("snapshot_load".into());
        let [name] = files else {
            return Err("expected one file".into());
        };
        if name != "history" {
            return Err(format!("unexpected file {name}"));
        }
        let data = std::fs::read(dir.join(name)).map_err(|e| e.to_string())?;
        let mut pos = 0;
        while pos < data.len() {
            let i = u64::from_le_bytes(data[pos..pos + 8].try_into().unwrap());
            let n = u32::from_le_bytes(data[pos + 8..pos + 12].try_into().unwrap()) as usize;
            s.history.push((i, data[pos + 12..pos + 12 + n].to_vec()));
            pos += 12 + n;
        }
        Ok(())
    }

    fn failure(&mut self) -> Option<String> {
        self.0.lock().unwrap().failed.clone()
    }

    fn on_leader_start(&mut self, term: u64) {
        self.0
            .lock()
            .unwrap()
            .calls
            .push(format!("leader_start {term}"));
    }
    fn on_leader_stop(&mut self) {
        self.0.lock().unwrap().calls.push("leader_stop".into());
    }
    fn on_configuration_committed(&mut self, m: &Membership) {
        self.0
            .lock()
            .unwrap()
            .calls
            .push(format!("configuration {:?}", m.voters));
    }
    fn on_start_following(&mut self, leader: NodeId, term: u64) {
        self.0
            .lock()
            .unwrap()
            .calls
            .push(format!("start_following {leader} {term}"));
    }
    fn on_stop_following(&mut self) {
        self.0.lock().unwrap().calls.push("stop_following".into());
    }
    fn on_error(&mut self, e: &str) {
        self.0.lock().unwrap().calls.push(format!("error {e}"));
    }
    fn on_shutdown(&mut self) {
        self.0.lock().unwrap().calls.push("shutdown".into());
    }
}

// ----- the in-process network ----------------------------------------------

/// Routes envelopes to nodes by id; nodes in `cut` neither send nor receive.
#[derive(Default)]
struct Router {
    nodes: Mutex<HashMap<NodeId, NodeHandle>>,
    cut: Mutex<HashSet<NodeId>>,
}

impl Outbox for Router {
    fn send(&self, env: Envelope) {
        {
            let cut = self.cut.lock().unwrap();
            if cut.contains(&env.msg.from) || cut.contains(&env.to()) {
                return;
            }
        }
        let h = self.nodes.lock().unwrap().get(&env.to()).cloned();
        if let Some(h) = h {
            let _ = h.step(env); // a full inbox drops it: Raft retries
        }
    }
}

// ----- the cluster ----------------------------------------------------------

struct Cluster {
    router: Arc<Router>,
    handles: HashMap<NodeId, NodeHandle>,
    seen: HashMap<NodeId, Arc<Mutex<Seen>>>,
    ids: Vec<NodeId>,
    tune: fn(&mut NodeConfig),
    /// `local://` directories, when the cluster runs on files.
    dirs: Option<tempfile::TempDir>,
}

fn node_config(id: NodeId) -> NodeConfig {
    let mut c = NodeConfig::new(id, GROUP);
    c.tick = Duration::from_millis(10);
    c.snapshot_every = 0;
    c.log_margin = 5;
    c
}

fn no_tuning(_: &mut NodeConfig) {}

impl Cluster {
    /// Starts `n` nodes on memory storage (or `local://` in a temporary
    /// directory when `local`).
    fn start(n: u64, local: bool, tune: fn(&mut NodeConfig)) -> Cluster {
        let ids: Vec<NodeId> = (1..=n).collect();
        let mut c = Cluster {
            router: Arc::default(),
            handles: HashMap::new(),
            seen: HashMap::new(),
            ids: ids.clone(),
            tune,
            dirs: local.then(|| tempfile::tempdir().unwrap()),
        };
        for id in ids {
            c.start_node(id, Arc::default());
        }
        c
    }

    /// `id`'s storage: a member of the initial group knows its voters; a
    /// joining node knows nothing and learns its membership from the log.
    fn storage(&self, id: NodeId) -> NodeStorage {
        let voters = if self.ids.contains(&id) {
            self.ids.clone()
        } else {
            Vec::new()
        };
        match &self.dirs {
            None => NodeStorage::memory(voters),
            Some(d) => {
                let path = d.path().join(format!("n{id}"));
                let mut s = raft_core::storage::open(&format!("local://{}", path.display()))
                    .expect("open local storage");
                if s.conf_state().voters.is_empty() && !voters.is_empty() {
                    s.set_conf_state(ConfState {
                        voters,
                        ..ConfState::default()
                    })
                    .unwrap();
                }
                s
            }
        }
    }

    fn start_node(&mut self, id: NodeId, seen: Arc<Mutex<Seen>>) {
        let mut cfg = node_config(id);
        (self.tune)(&mut cfg);
        let h = RaftNode::start(
            cfg,
            self.storage(id),
            Box::new(Recorder(seen.clone())),
            self.router.clone(),
        )
        .expect("start");
        self.router.nodes.lock().unwrap().insert(id, h.clone());
        self.handles.insert(id, h);
        self.seen.insert(id, seen);
    }

    fn h(&self, id: NodeId) -> &NodeHandle {
        &self.handles[&id]
    }

    /// Waits until one node leads and every other running node not cut
    /// off follows it in the same term; returns its id.
    async fn leader(&self) -> NodeId {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(l) = self.agreed_leader().await {
                    return l;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("no leader elected in time")
    }

    async fn agreed_leader(&self) -> Option<NodeId> {
        let cut = self.router.cut.lock().unwrap().clone();
        let mut view = Vec::new();
        for (id, h) in &self.handles {
            if cut.contains(id) {
                continue;
            }
            let s = h.status().await.ok()?;
            view.push((s.raft.role, s.raft.leader, s.raft.term));
        }
        let (_, leader, term) = *view.iter().find(|v| v.0 == Role::Leader)?;
        view.iter()
            .all(|v| v.1 == leader && v.2 == term)
            .then_some(leader?)
    }

    fn follower(&self, leader: NodeId) -> NodeId {
        *self.ids.iter().find(|&&i| i != leader).unwrap()
    }

    fn history(&self, id: NodeId) -> Vec<(u64, Vec<u8>)> {
        self.seen[&id].lock().unwrap().history.clone()
    }

    fn calls(&self, id: NodeId) -> Vec<String> {
        self.seen[&id].lock().unwrap().calls.clone()
    }

    /// Waits until `ids` hold `n` applied commands each.
    async fn applied_everywhere(&self, ids: &[NodeId], n: usize) {
        tokio::time::timeout(WAIT, async {
            while ids.iter().any(|&i| self.history(i).len() < n) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            let lens: Vec<usize> = ids.iter().map(|&i| self.history(i).len()).collect();
            panic!("not applied everywhere in time: {lens:?} of {n}")
        });
    }

    async fn shutdown(self) {
        for h in self.handles.values() {
            tokio::time::timeout(WAIT, h.shutdown())
                .await
                .expect("shutdown in time");
        }
        for id in &self.ids {
            let calls = self.calls(*id);
            assert_eq!(
                calls.last().map(String::as_str),
                Some("shutdown"),
                "{calls:?}"
            );
        }
    }
}

async fn propose(h: &NodeHandle, data: &[u8]) -> Result<ProposeOutcome, NodeError> {
    tokio::time::timeout(WAIT, h.propose(data.to_vec()))
        .await
        .expect("proposal answered in time")
}

/// Proposes `n` commands concurrently on `h`; returns each data with its
/// outcome.
async fn propose_many(
    h: &NodeHandle,
    prefix: &str,
    n: usize,
) -> Vec<(Vec<u8>, Result<ProposeOutcome, NodeError>)> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let h = h.clone();
        let data = format!("{prefix}{i}").into_bytes();
        tasks.spawn(async move {
            let r = tokio::time::timeout(WAIT, h.propose(data.clone()))
                .await
                .expect("proposal answered in time");
            (data, r)
        });
    }
    let mut out = Vec::new();
    while let Some(r) = tasks.join_next().await {
        out.push(r.unwrap());
    }
    out
}

// ----- tests -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_commit_and_apply_in_the_same_order_on_every_node() {
    let c = Cluster::start(3, false, no_tuning);
    let leader = c.leader().await;
    let outcomes = propose_many(c.h(leader), "cmd", 50).await;
    for (data, r) in &outcomes {
        let out = r.as_ref().expect("committed");
        // The result is the one the state machine built for this command.
        let mut want = b"done:".to_vec();
        want.extend_from_slice(data);
        assert_eq!(out.result, want);
    }
    c.applied_everywhere(&c.ids, 50).await;
    let reference = c.history(leader);
    for &id in &c.ids {
        assert_eq!(c.history(id), reference, "node {id} applied another order");
    }
    // Results go to the proposer alone: only the leader had waiters.
    for &id in &c.ids {
        let waited = c.seen[&id].lock().unwrap().waited;
        assert_eq!(waited, if id == leader { 50 } else { 0 }, "node {id}");
    }
    // Role callbacks: the leader started leading, the others follow it.
    let term = c.h(leader).status().await.unwrap().raft.term;
    assert!(c.calls(leader).contains(&format!("leader_start {term}")));
    for &id in &c.ids {
        if id != leader {
            let want = format!("start_following {leader} {term}");
            assert!(c.calls(id).contains(&want), "{id}: {:?}", c.calls(id));
        }
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_refuses_a_proposal_with_the_leader_hint() {
    let c = Cluster::start(3, false, no_tuning);
    let leader = c.leader().await;
    let f = c.follower(leader);
    let r = propose(c.h(f), b"x").await;
    assert_eq!(
        r,
        Err(NodeError::NotLeader {
            leader: Some(leader)
        })
    );
    let r = tokio::time::timeout(WAIT, c.h(f).read()).await.unwrap();
    assert_eq!(
        r,
        Err(NodeError::NotLeader {
            leader: Some(leader)
        })
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_proposals_share_log_syncs() {
    let c = Cluster::start(3, true, no_tuning);
    let leader = c.leader().await;
    let before = c.h(leader).status().await.unwrap().metrics;
    let outcomes = propose_many(c.h(leader), "g", 400).await;
    assert!(outcomes.iter().all(|(_, r)| r.is_ok()));
    let after = c.h(leader).status().await.unwrap().metrics;
    let proposals = after.proposals - before.proposals;
    let syncs = after.log_syncs - before.log_syncs;
    assert_eq!(proposals, 400);
    assert!(
        syncs * 4 <= proposals,
        "group commit: {syncs} log syncs for {proposals} proposals"
    );
    eprintln!("group commit: {syncs} log syncs for {proposals} proposals");
    c.shutdown().await;
}

/// Polls `f` once: the proposal is queued (or refused) synchronously.
fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    std::pin::Pin::new(f).poll(&mut cx)
}

// A single-threaded runtime, so the node task cannot drain the queue
// while the test fills it.
#[tokio::test(flavor = "current_thread")]
async fn a_full_proposal_queue_answers_busy() {
    fn small_queue(c: &mut NodeConfig) {
        c.proposal_queue = 8;
    }
    let c = Cluster::start(3, false, small_queue);
    let leader = c.leader().await;
    let h = c.h(leader).clone();
    let mut pending = Vec::new();
    let mut busy = 0;
    for i in 0..100u32 {
        let mut f = Box::pin(h.propose(i.to_le_bytes().to_vec()));
        match poll_once(&mut f) {
            Poll::Ready(Err(NodeError::Busy { queue, limit })) => {
                assert_eq!((queue, limit), ("proposal", 8));
                busy += 1;
            }
            Poll::Ready(other) => panic!("unexpected {other:?}"),
            Poll::Pending => pending.push(f),
        }
    }
    assert_eq!(pending.len(), 8, "exactly the queue's limit was accepted");
    assert_eq!(busy, 92);
    for f in pending {
        let r = tokio::time::timeout(WAIT, f).await.expect("answered");
        assert!(r.is_ok(), "{r:?}");
    }
    let m = h.status().await.unwrap().metrics;
    assert_eq!(m.busy_refusals, 92);
    c.shutdown().await;
}

// Single-threaded, as above: the node task cannot drain while the test
// fills the queue.
#[tokio::test(flavor = "current_thread")]
async fn proposals_queued_in_bytes_answer_busy_past_the_byte_limit() {
    fn small_bytes(c: &mut NodeConfig) {
        c.proposal_bytes = codec::MAX_DATA_BYTES; // the least allowed
    }
    let c = Cluster::start(3, false, small_bytes);
    let leader = c.leader().await;
    let h = c.h(leader).clone();
    let payload = Bytes::from(vec![0xC3; 1 << 20]);
    let fit = codec::MAX_DATA_BYTES / payload.len();
    let mut pending = Vec::new();
    let mut busy = 0;
    for _ in 0..40 {
        let mut f = Box::pin(h.propose(payload.clone()));
        match poll_once(&mut f) {
            Poll::Ready(Err(NodeError::Busy { queue, limit })) => {
                assert_eq!((queue, limit), ("proposal bytes", codec::MAX_DATA_BYTES));
                busy += 1;
            }
            Poll::Ready(other) => panic!("unexpected {other:?}"),
            Poll::Pending => pending.push(f),
        }
    }
    assert_eq!(pending.len(), fit, "exactly the byte limit was accepted");
    assert_eq!(busy, 40 - fit);
    assert_eq!(h.status().await.unwrap().metrics.busy_refusals, busy as u64);
    for f in pending {
        let r = tokio::time::timeout(WAIT, f).await.expect("answered");
        assert!(r.is_ok(), "{r:?}");
    }
    // Taken by the node task: the bytes are back.
    assert_eq!(h.status().await.unwrap().metrics.proposal_bytes, 0);
    // The leader applied the proposal's own buffer, never a copy.
    let buffers = c.seen[&leader].lock().unwrap().buffers.clone();
    assert_eq!(buffers.len(), fit);
    assert!(buffers.iter().all(|&p| p == payload.as_ptr() as usize));
    // A proposal the wire could not carry is refused at once.
    let huge = Bytes::from(vec![0; codec::MAX_DATA_BYTES + 1]);
    assert_eq!(
        h.propose(huge).await,
        Err(NodeError::TooLarge {
            len: codec::MAX_DATA_BYTES + 1,
            limit: codec::MAX_DATA_BYTES
        })
    );
    c.shutdown().await;
}

/// A byte limit that could not take one proposal (or message) of the
/// largest size is refused at start.
#[tokio::test(flavor = "current_thread")]
async fn byte_limits_below_one_item_are_refused_at_start() {
    let start = |tune: fn(&mut NodeConfig)| {
        let mut cfg = node_config(1);
        tune(&mut cfg);
        RaftNode::start(
            cfg,
            NodeStorage::memory(vec![1]),
            Box::new(Recorder(Arc::default())),
            Arc::new(Nowhere),
        )
    };
    let r = start(|c| c.proposal_bytes = codec::MAX_DATA_BYTES - 1);
    assert!(matches!(r, Err(NodeError::Start(_))), "{r:?}");
    let r = start(|c| c.inbox_bytes = codec::MAX_ENVELOPE_BYTES - 1);
    assert!(matches!(r, Err(NodeError::Start(_))), "{r:?}");
    let h = start(|_| {}).expect("the defaults start");
    h.shutdown().await;
}

// Single-threaded: the node task cannot drain the inbox while the test
// fills it.
#[tokio::test(flavor = "current_thread")]
async fn the_inbox_drops_messages_past_its_byte_limit() {
    let mut cfg = node_config(1);
    cfg.inbox_bytes = codec::MAX_ENVELOPE_BYTES; // the least allowed
    let h = RaftNode::start(
        cfg,
        NodeStorage::memory(vec![1]),
        Box::new(Recorder(Arc::default())),
        Arc::new(Nowhere),
    )
    .expect("start");
    // 1 MiB Appends for another group: the node drops them once taken, so
    // nothing but the inbox holds them.
    let payload = Bytes::from(vec![1; 1 << 20]);
    let append = Envelope {
        group: GROUP + 1,
        msg: Message {
            from: 2,
            to: 1,
            term: 1,
            body: MessageBody::Append {
                prev_log_index: 0,
                prev_log_term: 0,
                entries: vec![Entry {
                    index: 1,
                    term: 1,
                    kind: EntryKind::Normal,
                    data: payload,
                }],
                leader_commit: 0,
                lease_tick: 0,
            },
        },
    };
    let fit = codec::MAX_ENVELOPE_BYTES / codec::encoded_len(&append);
    let mut busy = 0;
    for _ in 0..100 {
        match h.step(append.clone()) {
            Ok(()) => {}
            Err(NodeError::Busy { queue, limit }) => {
                assert_eq!((queue, limit), ("inbox bytes", codec::MAX_ENVELOPE_BYTES));
                busy += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(busy, 100 - fit, "exactly the byte limit was queued");
    // Once the node task took them, the bytes are back and the inbox takes
    // messages again; every message was dropped somewhere, and counted.
    tokio::time::timeout(WAIT, async {
        loop {
            let m = h.status().await.unwrap().metrics;
            if m.inbox_bytes == 0 && m.dropped_messages == 100 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the inbox drained");
    assert_eq!(h.step(append), Ok(()));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_stops_and_fails_its_pending_proposals() {
    let c = Cluster::start(3, false, no_tuning);
    let old = c.leader().await;
    propose(c.h(old), b"before").await.expect("committed");
    // Cut the leader off: what it appends now cannot commit.
    c.router.cut.lock().unwrap().insert(old);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..5 {
        let h = c.h(old).clone();
        tasks.spawn(async move { h.propose(format!("lost{i}").into_bytes()).await });
    }
    let (mut failed, mut lost) = (0, 0);
    while let Some(r) = tokio::time::timeout(WAIT, tasks.join_next())
        .await
        .expect("answered in time")
    {
        match r.unwrap() {
            Ok(o) => panic!("a proposal that cannot commit succeeded: {o:?}"),
            Err(NodeError::LeadershipLost { .. }) => {
                lost += 1;
                failed += 1;
            }
            Err(NodeError::NotLeader { .. }) => failed += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(failed, 5);
    assert!(lost >= 1, "no proposal was appended before the step-down");
    // CheckQuorum made it step down; leader-only work was stopped. The
    // apply task hears of the step-down after the proposals were failed.
    tokio::time::timeout(WAIT, async {
        while !c.calls(old).iter().any(|s| s == "leader_stop") {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("on_leader_stop in time");
    let calls = c.calls(old);
    let start = calls.iter().position(|s| s.starts_with("leader_start"));
    let stop = calls.iter().position(|s| s == "leader_stop");
    assert!(
        matches!((start, stop), (Some(a), Some(b)) if a < b),
        "{calls:?}"
    );
    // The others elect a new leader; after healing the old one follows it
    // and none of the lost commands was applied anywhere.
    c.router.cut.lock().unwrap().clear();
    let new = c.leader().await;
    propose(c.h(new), b"after").await.expect("committed");
    c.applied_everywhere(&c.ids, 2).await;
    for &id in &c.ids {
        let h = c.history(id);
        assert!(
            h.iter().all(|(_, d)| !d.starts_with(b"lost")),
            "{id}: {h:?}"
        );
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_index_read_sees_a_completed_write() {
    let c = Cluster::start(3, false, no_tuning);
    let leader = c.leader().await;
    // A read before any write: served once the leader's no-op commits.
    tokio::time::timeout(WAIT, c.h(leader).read())
        .await
        .unwrap()
        .expect("read");
    let w = propose(c.h(leader), b"written").await.expect("committed");
    let index = tokio::time::timeout(WAIT, c.h(leader).read())
        .await
        .unwrap()
        .expect("read");
    assert!(
        index >= w.index,
        "read index {index} before the write {}",
        w.index
    );
    assert!(c.h(leader).applied() >= index);
    assert!(c
        .history(leader)
        .iter()
        .any(|(i, d)| *i == w.index && d == b"written"));
    c.shutdown().await;
}

fn snapshot_often(c: &mut NodeConfig) {
    c.snapshot_every = 20;
    c.log_margin = 5;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_compact_the_log_and_a_restarted_node_recovers() {
    let mut c = Cluster::start(3, true, snapshot_often);
    let leader = c.leader().await;
    for (_, r) in propose_many(c.h(leader), "s", 70).await {
        r.expect("committed");
    }
    c.applied_everywhere(&c.ids, 70).await;
    let f = c.follower(leader);
    // Wait for the follower's snapshot and compaction.
    let st = tokio::time::timeout(WAIT, async {
        loop {
            let s = c.h(f).status().await.unwrap();
            if s.raft.last_snapshot.is_some() && s.raft.first_index > 1 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("a snapshot in time");
    assert!(st.metrics.snapshots_saved >= 1);
    assert!(
        st.raft.first_index + 5 > st.raft.last_snapshot.unwrap(),
        "{st:?}"
    );

    // Restart the follower from its files with an empty state machine: it
    // loads the snapshot, replays the log after it and catches up.
    let h = c.handles.remove(&f).unwrap();
    tokio::time::timeout(WAIT, h.shutdown()).await.unwrap();
    assert_eq!(c.calls(f).last().map(String::as_str), Some("shutdown"));
    let before = c.history(f);
    c.start_node(f, Arc::default());
    assert!(c.calls(f).contains(&"snapshot_load".to_string()));
    let leader = c.leader().await;
    propose(c.h(leader), b"after restart")
        .await
        .expect("committed");
    c.applied_everywhere(&c.ids, 71).await;
    assert_eq!(c.history(f)[..70], before[..]);
    assert_eq!(c.history(f), c.history(leader));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_follower_catches_up_through_a_snapshot_install() {
    let c = Cluster::start(3, false, snapshot_often);
    let leader = c.leader().await;
    let f = c.follower(leader);
    c.router.cut.lock().unwrap().insert(f);
    for (_, r) in propose_many(c.h(leader), "i", 60).await {
        r.expect("committed");
    }
    // The leader compacts past what the follower holds.
    tokio::time::timeout(WAIT, async {
        while c.h(leader).status().await.unwrap().raft.first_index <= 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("compaction in time");
    c.router.cut.lock().unwrap().clear();
    c.applied_everywhere(&c.ids, 60).await;
    assert_eq!(c.history(f), c.history(leader));
    assert!(
        c.calls(f).contains(&"snapshot_load".to_string()),
        "{:?}",
        c.calls(f)
    );
    let st = c.h(f).status().await.unwrap();
    assert!(st.metrics.snapshots_installed >= 1, "{st:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_on_demand_compacts_and_serves_a_lagging_follower() {
    // No periodic snapshots: every snapshot here is asked for.
    let c = Cluster::start(3, true, no_tuning);
    let leader = c.leader().await;
    let f = c.follower(leader);
    c.router.cut.lock().unwrap().insert(f);
    for (_, r) in propose_many(c.h(leader), "d", 30).await {
        r.expect("committed");
    }
    let others: Vec<NodeId> = c.ids.iter().copied().filter(|&i| i != f).collect();
    c.applied_everywhere(&others, 30).await;
    let applied = c.h(leader).applied();
    let index = tokio::time::timeout(WAIT, c.h(leader).snapshot())
        .await
        .unwrap()
        .expect("snapshot");
    assert_eq!(index, applied, "a snapshot covers what was applied");
    let st = c.h(leader).status().await.unwrap();
    assert_eq!(st.raft.last_snapshot, Some(index));
    assert_eq!(st.metrics.snapshots_saved, 1);
    assert_eq!(
        st.raft.first_index,
        index - 5 + 1,
        "compacted, keeping the margin"
    );
    // Nothing applied since: the same snapshot, none stored again.
    let again = c.h(leader).snapshot().await.expect("snapshot");
    assert_eq!(again, index);
    assert_eq!(
        c.h(leader).status().await.unwrap().metrics.snapshots_saved,
        1
    );
    // A follower asked works too, and does not need the leader.
    let other = others.iter().copied().find(|&i| i != leader).unwrap();
    assert!(c.h(other).snapshot().await.expect("snapshot") >= index);

    // The cut follower is behind the compaction point: it needs the
    // snapshot, and catches up through it.
    c.router.cut.lock().unwrap().clear();
    c.applied_everywhere(&c.ids, 30).await;
    assert_eq!(c.history(f), c.history(leader));
    assert!(c.calls(f).contains(&"snapshot_load".to_string()));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_read_skips_the_heartbeat_round_while_the_lease_holds() {
    let c = Cluster::start(3, false, no_tuning);
    let leader = c.leader().await;
    let w = propose(c.h(leader), b"leased").await.expect("committed");
    // Acknowledgements of the heartbeats renew the lease within a few
    // ticks; then reads are answered without waiting for a round.
    let index = tokio::time::timeout(WAIT, async {
        loop {
            let before = c.h(leader).status().await.unwrap().metrics.lease_reads;
            let index = c.h(leader).read_lease().await.expect("lease read");
            if c.h(leader).status().await.unwrap().metrics.lease_reads > before {
                return index;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("a read served by the lease");
    assert!(
        index >= w.index,
        "lease read at {index} before the write {}",
        w.index
    );
    assert!(c.h(leader).applied() >= index);

    // With the followers unreachable the lease runs out and a lease read
    // falls back to a round that cannot complete: it is never served from
    // an expired lease.
    for &f in c.ids.iter().filter(|&&i| i != leader) {
        c.router.cut.lock().unwrap().insert(f);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = c.h(leader).status().await.unwrap().metrics.lease_reads;
    let r = tokio::time::timeout(Duration::from_millis(300), c.h(leader).read_lease()).await;
    assert!(
        !matches!(r, Ok(Ok(_))),
        "a read served without a quorum: {r:?}"
    );
    assert_eq!(
        c.h(leader)
            .status()
            .await
            .map(|s| s.metrics.lease_reads)
            .unwrap_or(before),
        before
    );
    c.router.cut.lock().unwrap().clear();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_transfer_moves_the_role_callbacks() {
    let c = Cluster::start(3, false, no_tuning);
    let old = c.leader().await;
    propose(c.h(old), b"first").await.expect("committed");
    let to = c.follower(old);
    tokio::time::timeout(WAIT, c.h(old).transfer_leader(to))
        .await
        .unwrap()
        .expect("transfer started");
    tokio::time::timeout(WAIT, async {
        while c.agreed_leader().await != Some(to) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("transfer completed in time");
    propose(c.h(to), b"second").await.expect("committed");
    c.applied_everywhere(&c.ids, 2).await;
    let term = c.h(to).status().await.unwrap().raft.term;
    // The new leader stopped following and started leading; the old one
    // stopped leading and follows the new one.
    let calls = c.calls(to);
    let stop_following = calls.iter().rposition(|s| s == "stop_following");
    let start = calls
        .iter()
        .position(|s| *s == format!("leader_start {term}"));
    assert!(
        matches!((stop_following, start), (Some(a), Some(b)) if a < b),
        "{calls:?}"
    );
    let calls = c.calls(old);
    let stop = calls.iter().position(|s| s == "leader_stop");
    let follow = calls
        .iter()
        .position(|s| *s == format!("start_following {to} {term}"));
    assert!(
        matches!((stop, follow), (Some(a), Some(b)) if a < b),
        "{calls:?}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_membership_change_is_reported_when_committed() {
    let mut c = Cluster::start(3, false, no_tuning);
    let leader = c.leader().await;
    propose(c.h(leader), b"before").await.expect("committed");
    // A new node starts empty and learns the group from the log.
    c.start_node(4, Arc::default());
    c.ids.push(4);
    tokio::time::timeout(WAIT, c.h(leader).change_peers(vec![1, 2, 3, 4]))
        .await
        .unwrap()
        .expect("change started");
    let want = "configuration [1, 2, 3, 4]".to_string();
    tokio::time::timeout(WAIT, async {
        while c.ids.iter().any(|&i| !c.calls(i).contains(&want)) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not committed everywhere: {:?}", c.calls(4)));
    let leader = c.leader().await;
    propose(c.h(leader), b"after").await.expect("committed");
    c.applied_everywhere(&c.ids, 2).await;
    assert_eq!(c.history(4), c.history(leader));
    let st = c.h(leader).status().await.unwrap();
    assert_eq!(st.raft.membership.voters, vec![1, 2, 3, 4]);
    assert_eq!(st.raft.peer_match.len(), 4, "{st:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_machine_that_skips_entries_stops_its_node() {
    let c = Cluster::start(3, false, no_tuning);
    let leader = c.leader().await;
    propose(c.h(leader), b"fine").await.expect("committed");
    c.applied_everywhere(&c.ids, 1).await;
    for id in &c.ids {
        c.seen[id].lock().unwrap().lazy = true;
    }
    let r = propose(c.h(leader), b"skipped").await;
    assert!(matches!(r, Err(NodeError::Failed(_))), "{r:?}");
    // The node stops: it answers nothing more, and told its state machine.
    tokio::time::timeout(WAIT, async {
        while c.h(leader).status().await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the node stopped");
    let calls = c.calls(leader);
    let error = calls.iter().position(|s| s.starts_with("error "));
    assert!(error.is_some(), "{calls:?}");
    assert_eq!(calls.last().map(String::as_str), Some("shutdown"));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_machine_that_reports_a_failure_stops_its_node_with_the_cause() {
    let c = Cluster::start(3, false, no_tuning);
    let leader = c.leader().await;
    propose(c.h(leader), b"fine").await.expect("committed");
    c.applied_everywhere(&c.ids, 1).await;
    c.seen[&leader].lock().unwrap().broken = Some("the disk is gone".into());
    // The entry it failed on gets its error, never a success.
    let r = propose(c.h(leader), b"lost").await.expect("answered");
    assert_eq!(r.result, b"error: disk");
    tokio::time::timeout(WAIT, async {
        while c.h(leader).status().await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the node stopped");
    let calls = c.calls(leader);
    assert!(
        calls
            .iter()
            .any(|s| s.starts_with("error ") && s.contains("the disk is gone")),
        "{calls:?}"
    );
    assert_eq!(calls.last().map(String::as_str), Some("shutdown"));
    c.shutdown().await;
}

/// Drops everything a single-node group sends (it has no peers).
/// Proposes `data` on a single node as soon as it has elected itself.
async fn propose_once_elected(h: &NodeHandle, data: &[u8]) -> ProposeOutcome {
    tokio::time::timeout(WAIT, async {
        loop {
            match h.propose(data.to_vec()).await {
                Err(NodeError::NotLeader { .. }) => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                r => return r,
            }
        }
    })
    .await
    .expect("elected in time")
    .expect("committed")
}

struct Nowhere;

impl Outbox for Nowhere {
    fn send(&self, _: Envelope) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_serves_alone_and_stops_when_its_handles_are_dropped() {
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let h = RaftNode::start(
        node_config(1),
        NodeStorage::memory(vec![1]),
        Box::new(Recorder(seen.clone())),
        Arc::new(Nowhere),
    )
    .expect("start");
    let out = propose_once_elected(&h, b"alone").await;
    assert_eq!(out.result, b"done:alone");
    let index = tokio::time::timeout(WAIT, h.read())
        .await
        .unwrap()
        .expect("read");
    assert!(index >= out.index);
    drop(h);
    tokio::time::timeout(WAIT, async {
        while !seen.lock().unwrap().calls.contains(&"shutdown".to_string()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the node stopped once its last handle was dropped");
    let calls = seen.lock().unwrap().calls.clone();
    assert_eq!(
        calls.last().map(String::as_str),
        Some("shutdown"),
        "{calls:?}"
    );
    assert!(calls.contains(&"leader_stop".to_string()), "{calls:?}");
}

/// Panics on the command `boom`, answers every other one.
struct Fragile;

impl StateMachine for Fragile {
    fn on_apply(&mut self, entries: &mut dyn Iterator<Item = Applied>) {
        for mut a in entries {
            assert!(a.data != b"boom"[..], "the state machine cannot apply boom");
            a.respond(a.data.to_vec());
        }
    }
    fn on_snapshot_save(&mut self, _: &mut SnapshotWriter) -> Result<Option<SnapshotJob>, String> {
        Ok(None)
    }
    fn on_snapshot_load(&mut self, _dir: &Path, _files: &[String]) -> Result<(), String> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_on_apply_never_reports_success_and_stops_the_node() {
    let h = RaftNode::start(
        node_config(1),
        NodeStorage::memory(vec![1]),
        Box::new(Fragile),
        Arc::new(Nowhere),
    )
    .expect("start");
    propose_once_elected(&h, b"fine").await;
    // The panic unwinds through the entry being applied: its proposer
    // must not hear "success".
    // A proposal queued right behind it is answered too (the node fails
    // it) instead of waiting for an apply that will never come.
    let (r, behind) = tokio::time::timeout(WAIT, async {
        tokio::join!(h.propose(b"boom".to_vec()), h.propose(b"behind".to_vec()))
    })
    .await
    .expect("both answered in time");
    assert!(
        r.is_err(),
        "a command whose apply panicked succeeded: {r:?}"
    );
    assert!(
        behind.is_err(),
        "applied by a state machine that panicked: {behind:?}"
    );
    // Without its apply task the node cannot go on: it stops, and says why.
    let failure = tokio::time::timeout(WAIT, async {
        loop {
            // A proposal racing the panic must not wait forever either.
            let _ =
                tokio::time::timeout(Duration::from_secs(1), h.propose(b"after".to_vec())).await;
            if let Some(f) = h.failure() {
                return f;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the node stops in time");
    assert!(failure.contains("panicked"), "{failure}");
    tokio::time::timeout(WAIT, h.shutdown()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_last_term_neither_bricks_the_group_nor_survives_a_restart() {
    // The reported attack, at the driver: a heartbeat at term 2^64-1 to
    // every node, from a stranger and from each member's id.
    let mut c = Cluster::start(3, true, no_tuning);
    let leader = c.leader().await;
    let term = c.h(leader).status().await.unwrap().raft.term;
    for &to in &c.ids {
        for from in [99, 1, 2, 3] {
            if from == to {
                continue;
            }
            let forged = raft_core::Message {
                from,
                to,
                term: u64::MAX,
                body: raft_core::MessageBody::Heartbeat {
                    commit: 0,
                    read_round: 0,
                    lease_tick: 0,
                    quiesce: false,
                },
            };
            c.h(to)
                .step(Envelope {
                    group: GROUP,
                    msg: forged,
                })
                .expect("inbox");
        }
    }
    propose(c.h(leader), b"after the forgery")
        .await
        .expect("committed");
    for &id in &c.ids {
        let s = c.h(id).status().await.unwrap();
        assert_eq!(s.raft.term, term, "node {id}");
        assert!(s.raft.refused_messages >= 2, "node {id}: {s:?}");
    }
    // Nothing of it reached the disk: a restarted node is still in the
    // group's term and follows the same leader.
    let f = c.follower(leader);
    c.h(f).shutdown().await;
    c.start_node(f, Arc::default());
    assert_eq!(c.leader().await, leader);
    assert_eq!(c.h(f).status().await.unwrap().raft.term, term);
    propose(c.h(leader), b"after the restart")
        .await
        .expect("committed");
    c.shutdown().await;
}

// ----- snapshots finished off the apply task -----------------------------------

/// What the test hands a [`Gated`] snapshot job: it waits for one result
/// and returns it.
type Gate = Arc<Mutex<Option<std::sync::mpsc::Receiver<Result<(), String>>>>>;

/// Counts applied commands. Its snapshot is the count as of the save,
/// written by a job that first waits for the test's word through `gate`.
struct Gated {
    count: u64,
    /// Tells the test the index of each save, once its files exist.
    saves: tokio::sync::mpsc::UnboundedSender<u64>,
    gate: Gate,
    /// The count each snapshot load found.
    loaded: Arc<Mutex<Vec<u64>>>,
}

impl StateMachine for Gated {
    fn on_apply(&mut self, entries: &mut dyn Iterator<Item = Applied>) {
        for _ in entries {
            self.count += 1;
        }
    }

    fn on_snapshot_save(
        &mut self,
        writer: &mut SnapshotWriter,
    ) -> Result<Option<SnapshotJob>, String> {
        let count = self.count; // the state as of the save (rule 4)
        let mut f = writer.create("count").map_err(|e| e.to_string())?;
        let gate = self.gate.lock().unwrap().take();
        let _ = self.saves.send(writer.index());
        Ok(Some(Box::new(move || {
            if let Some(rx) = gate {
                rx.recv().map_err(|e| e.to_string())??;
            }
            f.write_all(&count.to_le_bytes()).map_err(|e| e.to_string())
        })))
    }

    fn on_snapshot_load(&mut self, dir: &Path, files: &[String]) -> Result<(), String> {
        let data = std::fs::read(dir.join(&files[0])).map_err(|e| e.to_string())?;
        let bytes: [u8; 8] = data.try_into().map_err(|_| "not a count".to_string())?;
        self.count = u64::from_le_bytes(bytes);
        self.loaded.lock().unwrap().push(self.count);
        Ok(())
    }
}

struct GatedNode {
    h: NodeHandle,
    saves: tokio::sync::mpsc::UnboundedReceiver<u64>,
    gate: Gate,
    loaded: Arc<Mutex<Vec<u64>>>,
}

fn start_gated(storage: NodeStorage) -> GatedNode {
    let (tx, saves) = tokio::sync::mpsc::unbounded_channel();
    let gate: Gate = Arc::default();
    let loaded: Arc<Mutex<Vec<u64>>> = Arc::default();
    let sm = Gated {
        count: 0,
        saves: tx,
        gate: gate.clone(),
        loaded: loaded.clone(),
    };
    let h =
        RaftNode::start(node_config(1), storage, Box::new(sm), Arc::new(Nowhere)).expect("start");
    GatedNode {
        h,
        saves,
        gate,
        loaded,
    }
}

impl GatedNode {
    /// Closes the gate for the next save; returns its key.
    fn close_gate(&self) -> std::sync::mpsc::Sender<Result<(), String>> {
        let (tx, rx) = std::sync::mpsc::channel();
        *self.gate.lock().unwrap() = Some(rx);
        tx
    }

    /// Asks for a snapshot and waits until the state machine saved it
    /// (its job may still be waiting); returns the request and the index.
    async fn start_snapshot(&mut self) -> (tokio::task::JoinHandle<Result<u64, NodeError>>, u64) {
        let h = self.h.clone();
        let request = tokio::spawn(async move { h.snapshot().await });
        let index = tokio::time::timeout(WAIT, self.saves.recv())
            .await
            .expect("the save in time")
            .expect("a save");
        (request, index)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_job_runs_while_entries_keep_being_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let uri = format!("local://{}", tmp.path().display());
    let open = || {
        let mut s = raft_core::storage::open(&uri).unwrap();
        if s.conf_state().voters.is_empty() {
            s.set_conf_state(ConfState {
                voters: vec![1],
                ..ConfState::default()
            })
            .unwrap();
        }
        s
    };
    let mut n = start_gated(open());
    propose_once_elected(&n.h, b"1").await;
    for c in [b"2", b"3"] {
        propose(&n.h, c).await.expect("propose");
    }
    let key = n.close_gate();
    let (request, at) = n.start_snapshot().await;
    // The job waits; applying does not: these complete only once applied.
    let mut last = 0;
    for c in [b"4", b"5", b"6", b"7", b"8"] {
        last = propose(&n.h, c)
            .await
            .expect("applied while the job waits")
            .index;
    }
    assert!(last > at);
    let st = n.h.status().await.unwrap();
    assert_eq!(
        st.raft.last_snapshot, None,
        "not stored before its job ends"
    );
    // (Each proposal above completed only once its entry was applied; the
    // status's applied index may trail the replies by a moment, so it is
    // not compared.)
    key.send(Ok(())).unwrap();
    let index = tokio::time::timeout(WAIT, request)
        .await
        .unwrap()
        .unwrap()
        .expect("stored");
    assert_eq!(index, at, "the snapshot is of the index at the save");
    assert_eq!(n.h.status().await.unwrap().raft.last_snapshot, Some(at));
    n.h.shutdown().await;

    // What it holds is the state at the save: three commands, the five
    // after it come from the log.
    let n = start_gated(open());
    assert_eq!(*n.loaded.lock().unwrap(), vec![3]);
    n.h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_snapshot_job_is_reported_and_the_node_goes_on() {
    let mut n = start_gated(NodeStorage::memory(vec![1]));
    propose_once_elected(&n.h, b"1").await;
    let key = n.close_gate();
    let (request, _) = n.start_snapshot().await;
    key.send(Err("disk full (injected)".into())).unwrap();
    let e = tokio::time::timeout(WAIT, request)
        .await
        .unwrap()
        .unwrap()
        .expect_err("the job failed");
    assert!(
        matches!(&e, NodeError::Snapshot(m) if m.contains("disk full (injected)")),
        "{e}"
    );
    let st = n.h.status().await.unwrap();
    assert_eq!(st.metrics.snapshots_failed, 1);
    assert_eq!(st.metrics.snapshots_saved, 0);
    assert_eq!(st.raft.last_snapshot, None);
    // The node goes on, and the next snapshot succeeds.
    let out = propose(&n.h, b"2").await.expect("still serving");
    let (request, at) = n.start_snapshot().await;
    assert_eq!(at, out.index);
    let index = tokio::time::timeout(WAIT, request)
        .await
        .unwrap()
        .unwrap()
        .expect("stored");
    assert_eq!(index, at);
    n.h.shutdown().await;
}
