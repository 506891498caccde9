//! The apply task: where committed entries meet the user's state machine.
//!
//! It runs apart from the node task so a slow state machine delays neither
//! ticks nor replication: the node task hands over committed batches,
//! snapshot loads and role changes through one bounded queue, in the order
//! it learned of them, and this task calls the [`StateMachine`] in that
//! order. It also decides the fate of each waiting proposal (success only
//! for an applied entry with the proposal's index *and* term) and takes
//! snapshots every `snapshot_every` applied entries: the state machine
//! writes them through a [`SnapshotWriter`] and may hand back a job, which
//! runs on a blocking thread while this task goes on applying (one save
//! at a time; see [`super::snapshot`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::core::{ConfEntry, Entry, EntryKind, Membership, NodeId, SnapshotMeta};

use super::node::NodeError;
use super::snapshot::{finish_staged, remove_quietly, Staged, Staging};
use super::state_machine::{
    Applied, Batch, Reply, SnapshotJob, SnapshotWriter, StagedName, StateMachine,
};

/// Most batches queued between the node task and the apply task (each at
/// most the core's `max_apply_bytes`, or one entry, so the queue's bytes
/// are bounded by both). When it is full the node task waits: a state
/// machine that falls behind slows the node instead of growing memory.
///
/// Snapshots waiting for the node task to store them: one is enough (a
/// newer snapshot makes a waiting one useless, so a full queue skips it).
///
/// Both are named in [`super::limits`].
pub use super::limits::{APPLY_QUEUE, SNAPSHOT_QUEUE};

/// A proposal waiting for its entry: the term it was appended in, and where
/// its outcome goes.
pub(crate) struct Waiter {
    pub(crate) term: u64,
    pub(crate) reply: Reply,
}

/// Proposals waiting to be applied, by index. The node task adds one when
/// the core accepts a proposal (before the entry can commit) and fails them
/// all when it loses leadership; the apply task completes or fails each
/// when its index is applied. Its size is bounded by the core's
/// `max_uncommitted_entries`.
pub(crate) type Waiters = Arc<Mutex<BTreeMap<u64, Waiter>>>;

/// Fails every waiter at or below `upto` (all when `None`) with `err()`.
pub(crate) fn fail_waiters(waiters: &Waiters, upto: Option<u64>, err: impl Fn(u64) -> NodeError) {
    let failed: Vec<(u64, Waiter)> = {
        let mut w = waiters.lock().expect("waiters lock");
        match upto {
            None => std::mem::take(&mut *w).into_iter().collect(),
            Some(i) => {
                let rest = w.split_off(&(i + 1));
                std::mem::replace(&mut *w, rest).into_iter().collect()
            }
        }
    };
    for (index, w) in failed {
        let _ = w.reply.send(Err(err(index)));
    }
}

/// Work for the apply task, in the order the node task produced it.
#[derive(Debug)]
pub(crate) enum ApplyMsg {
    /// Committed entries, consecutive, in log order.
    Entries(Vec<Entry>),
    /// A snapshot was installed: load it from `dir` (hard links to its
    /// files under their names, removed after the load; the state machine
    /// starts from empty) and continue after `meta.index`.
    Load {
        meta: SnapshotMeta,
        dir: PathBuf,
    },
    /// This node leads `term`; its first entry is at `first_index`.
    LeaderStart {
        term: u64,
        first_index: u64,
    },
    LeaderStop,
    StartFollowing {
        leader: NodeId,
        term: u64,
    },
    StopFollowing,
    /// The node stops because of this error.
    Error(String),
    /// Take a snapshot now; the node task answers once it is stored.
    Snapshot(oneshot::Sender<Result<u64, NodeError>>),
}

/// A snapshot of the state machine as of `index`, for the node task to store.
pub(crate) struct TakenSnapshot {
    pub(crate) index: u64,
    /// The staged, synced files; `Ok(None)` when nothing was applied since
    /// the latest snapshot (only an on-demand request sends that, to get
    /// its answer); `Err` when the state machine or the staging failed.
    pub(crate) outcome: Result<Option<Staged>, String>,
    /// Who asked for it, for a snapshot taken on demand.
    pub(crate) reply: Option<oneshot::Sender<Result<u64, NodeError>>>,
}

pub(crate) struct ApplyTask {
    pub(crate) sm: Box<dyn StateMachine>,
    pub(crate) waiters: Waiters,
    pub(crate) applied: u64,
    pub(crate) applied_tx: watch::Sender<u64>,
    pub(crate) snapshot_every: u64,
    /// The index of the latest snapshot taken or loaded.
    pub(crate) last_snapshot: u64,
    pub(crate) snapshot_tx: mpsc::Sender<TakenSnapshot>,
    /// Where snapshots are staged.
    pub(crate) staging: Arc<Staging>,
    /// The save in flight (its job and the hand-over to the node task).
    pub(crate) saving: Option<JoinHandle<()>>,
    /// The index of the latest snapshot this task saved successfully (set
    /// by the save's task, once its files are durable).
    pub(crate) saved_through: Arc<AtomicU64>,
    /// A leadership announced but not started: its first entry is not
    /// applied yet.
    pub(crate) leader_pending: Option<(u64, u64)>,
    pub(crate) leading: bool,
    pub(crate) following: bool,
    /// After a broken contract nothing more is applied.
    pub(crate) failed: bool,
    /// Tells the node task that applying failed, so the node stops.
    pub(crate) fatal: watch::Sender<Option<String>>,
}

impl Drop for ApplyTask {
    fn drop(&mut self) {
        // Dropped while unwinding: the state machine (or this task) panicked.
        // The node must stop, and nobody may wait for entries this task will
        // never apply: without this the node would only notice at its next
        // hand-over, and proposals queued meanwhile would wait forever.
        if std::thread::panicking() && !self.failed {
            self.failed = true;
            let error = "the state machine panicked while applying".to_string();
            self.fatal.send_replace(Some(error.clone()));
            fail_waiters(&self.waiters, None, |_| NodeError::Failed(error.clone()));
        }
    }
}

impl ApplyTask {
    /// Runs until the node task closes the queue, then calls `on_shutdown`.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<ApplyMsg>) {
        while let Some(msg) = rx.recv().await {
            if self.failed {
                continue;
            }
            if let ApplyMsg::Snapshot(reply) = msg {
                self.snapshot_now(reply).await;
                continue;
            }
            self.handle(msg);
        }
        if let Some(h) = self.saving.take() {
            // Not waited for: its hand-over could wait forever on a node
            // task that is gone. A job already running finishes on its
            // thread; its staging directory is removed at the next open.
            h.abort();
        }
        if self.leading {
            self.sm.on_leader_stop();
        }
        if self.following {
            self.sm.on_stop_following();
        }
        fail_waiters(&self.waiters, None, |_| NodeError::Stopped);
        self.sm.on_shutdown();
    }

    fn handle(&mut self, msg: ApplyMsg) {
        match msg {
            ApplyMsg::Entries(entries) => {
                self.apply(entries);
                self.maybe_snapshot();
            }
            ApplyMsg::Load { meta, dir } => self.load(meta, dir),
            ApplyMsg::LeaderStart { term, first_index } => {
                self.leader_pending = Some((term, first_index));
            }
            ApplyMsg::LeaderStop => {
                self.leader_pending = None;
                if std::mem::take(&mut self.leading) {
                    self.sm.on_leader_stop();
                }
            }
            ApplyMsg::StartFollowing { leader, term } => {
                self.following = true;
                self.sm.on_start_following(leader, term);
            }
            ApplyMsg::StopFollowing => {
                if std::mem::take(&mut self.following) {
                    self.sm.on_stop_following();
                }
            }
            ApplyMsg::Error(e) => self.fail(&e),
            ApplyMsg::Snapshot(_) => unreachable!("handled in run, which may wait"),
        }
    }

    fn fail(&mut self, error: &str) {
        if std::mem::replace(&mut self.failed, true) {
            return;
        }
        self.sm.on_error(error);
        self.fatal.send_replace(Some(error.to_string()));
        fail_waiters(&self.waiters, None, |_| {
            NodeError::Failed(error.to_string())
        });
    }

    /// Loads an installed snapshot (or the one storage holds at start)
    /// from `dir`, which is removed afterwards.
    pub(crate) fn load(&mut self, meta: SnapshotMeta, dir: PathBuf) {
        let names: Vec<String> = meta.files.iter().map(|f| f.name.clone()).collect();
        let loaded = self.sm.on_snapshot_load(&dir, &names);
        remove_quietly(&dir);
        if let Err(e) = loaded {
            self.fail(&format!("loading the snapshot at {}: {e}", meta.index));
            return;
        }
        // Proposals at or below the snapshot cannot be told apart from
        // entries of other terms any more: their outcome is unknown.
        fail_waiters(&self.waiters, Some(meta.index), |index| {
            NodeError::LeadershipLost { index }
        });
        self.applied = meta.index;
        self.last_snapshot = meta.index;
        // The store holds this one: asking for a snapshot now has nothing
        // newer to save.
        self.saved_through.fetch_max(meta.index, Ordering::AcqRel);
        let conf = &meta.conf;
        self.sm.on_configuration_committed(&Membership {
            voters: conf.voters.clone(),
            outgoing: conf.outgoing.clone(),
            learners: conf.learners.clone(),
        });
        self.applied_tx.send_replace(self.applied);
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        let mut run: Vec<Applied> = Vec::new();
        for e in entries {
            if e.index <= self.applied {
                continue; // covered by a snapshot loaded meanwhile
            }
            let index = e.index;
            match e.kind {
                EntryKind::Normal => {
                    let reply = self.take_waiter(index, e.term);
                    run.push(Applied::new(index, e.term, e.data, reply));
                }
                EntryKind::Noop | EntryKind::ConfChange => {
                    self.flush(&mut run);
                    if self.failed {
                        return;
                    }
                    // Nobody proposed this entry through `propose`.
                    self.take_waiter(index, e.term);
                    if e.kind == EntryKind::ConfChange {
                        match ConfEntry::decode(&e.data) {
                            Ok(c) => self.sm.on_configuration_committed(&c.result),
                            Err(why) => {
                                self.fail(&format!("configuration entry {index}: {why}"));
                                return;
                            }
                        }
                    }
                    self.applied = index;
                }
            }
            if let Some((term, first)) = self.leader_pending {
                if index >= first {
                    self.leader_pending = None;
                    if index == first && e.term == term {
                        // Every entry before this leader's first is applied.
                        if !run.is_empty() {
                            self.flush(&mut run);
                        }
                        self.leading = true;
                        self.sm.on_leader_start(term);
                    }
                }
            }
        }
        self.flush(&mut run);
    }

    /// The waiter for the entry `(index, term)`: `Some` only when a client
    /// here proposed exactly that entry. A waiter for the same index and
    /// another term proposed an entry that did not commit: it fails.
    fn take_waiter(&mut self, index: u64, term: u64) -> Option<Reply> {
        let w = self.waiters.lock().expect("waiters lock").remove(&index)?;
        if w.term == term {
            Some(w.reply)
        } else {
            let _ = w.reply.send(Err(NodeError::NotCommitted { index }));
            None
        }
    }

    /// Applies a run of commands in one `on_apply` call.
    fn flush(&mut self, run: &mut Vec<Applied>) {
        if run.is_empty() || self.failed {
            return;
        }
        let last = run.last().map_or(self.applied, |a| a.index);
        let mut it = Batch(std::mem::take(run).into_iter());
        self.sm.on_apply(&mut it);
        // Entries not handed over fail their waiters when dropped.
        let left = it.0.len();
        drop(it);
        if let Some(why) = self.sm.failure() {
            self.fail(&format!("the state machine failed: {why}"));
            return;
        }
        if left > 0 {
            self.fail(&format!(
                "on_apply left {left} entries unconsumed (the contract requires all)"
            ));
            return;
        }
        self.applied = last;
        self.applied_tx.send_replace(self.applied);
    }

    fn maybe_snapshot(&mut self) {
        self.applied_tx.send_replace(self.applied);
        if self.failed
            || self.snapshot_every == 0
            || self.applied < self.last_snapshot + self.snapshot_every
        {
            return;
        }
        if self.saving.as_ref().is_some_and(|h| !h.is_finished()) {
            // One save at a time: the next interval tries again.
            return;
        }
        self.last_snapshot = self.applied;
        self.start_snapshot(None);
    }

    /// Takes a snapshot on request. Unlike the periodic one it waits for a
    /// save in flight first: someone is waiting for this one.
    async fn snapshot_now(&mut self, reply: oneshot::Sender<Result<u64, NodeError>>) {
        if let Some(h) = self.saving.take() {
            // Its result is queued before ours (or it panicked: the node
            // task answers with the latest stored snapshot).
            let _ = h.await;
        }
        if self.applied > self.saved_through.load(Ordering::Acquire) {
            self.last_snapshot = self.last_snapshot.max(self.applied);
            self.start_snapshot(Some(reply));
            return;
        }
        let snap = TakenSnapshot {
            index: self.applied,
            outcome: Ok(None),
            reply: Some(reply),
        };
        if let Err(mpsc::error::SendError(s)) = self.snapshot_tx.send(snap).await {
            if let Some(r) = s.reply {
                let _ = r.send(Err(NodeError::Stopped));
            }
        }
    }

    /// Asks the state machine for a snapshot as of the applied index (on
    /// this task: rule 4), then finishes it on a blocking thread and hands
    /// it to the node task, without waiting: applying goes on.
    fn start_snapshot(&mut self, reply: Option<oneshot::Sender<Result<u64, NodeError>>>) {
        let index = self.applied;
        let prepared = self.prepare_snapshot(index);
        let tx = self.snapshot_tx.clone();
        let saved_through = self.saved_through.clone();
        self.saving = Some(tokio::spawn(async move {
            let outcome = match prepared {
                Err(e) => Err(e),
                Ok((dir, names, job)) => {
                    let at = dir.clone();
                    let done =
                        tokio::task::spawn_blocking(move || finish_staged(&at, &names, job)).await;
                    match done {
                        Ok(Ok(staged)) => {
                            saved_through.fetch_max(index, Ordering::AcqRel);
                            Ok(Some(staged))
                        }
                        Ok(Err(e)) => {
                            remove_quietly(&dir);
                            Err(e)
                        }
                        Err(e) => {
                            remove_quietly(&dir);
                            Err(format!("the snapshot job did not finish: {e}"))
                        }
                    }
                }
            };
            let snap = TakenSnapshot {
                index,
                outcome,
                reply,
            };
            if let Err(mpsc::error::SendError(s)) = tx.send(snap).await {
                if let Ok(Some(staged)) = &s.outcome {
                    remove_quietly(&staged.dir);
                }
                if let Some(r) = s.reply {
                    let _ = r.send(Err(NodeError::Stopped));
                }
            }
        }));
    }

    /// A fresh staging directory and what the state machine wrote there.
    fn prepare_snapshot(
        &mut self,
        index: u64,
    ) -> Result<(PathBuf, Vec<StagedName>, Option<SnapshotJob>), String> {
        let dir = self.staging.fresh_dir("save", index)?;
        let mut writer = SnapshotWriter::new(index, dir.clone());
        match self.sm.on_snapshot_save(&mut writer) {
            Ok(job) => {
                let (dir, names) = writer.into_parts();
                Ok((dir, names, job))
            }
            Err(e) => {
                remove_quietly(&dir);
                Err(format!(
                    "the state machine could not save a snapshot at {index}: {e}"
                ))
            }
        }
    }
}
