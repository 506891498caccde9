//! The apply task: where committed entries meet the user's state machine.
//!
//! It runs apart from the node task so a slow state machine delays neither
//! ticks nor replication: the node task hands over committed batches,
//! snapshot loads and role changes through one bounded queue, in the order
//! it learned of them, and this task calls the [`StateMachine`] in that
//! order. It also decides the fate of each waiting proposal (success only
//! for an applied entry with the proposal's index *and* term) and takes
//! snapshots every `snapshot_every` applied entries.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};

use crate::core::{ConfEntry, Entry, EntryKind, Membership, NodeId, SnapshotMeta};

use super::node::NodeError;
use super::state_machine::{Applied, Batch, Reply, StateMachine};

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
    /// A snapshot was installed: load it (the state machine starts from
    /// empty) and continue after `meta.index`.
    Load {
        meta: SnapshotMeta,
        files: Vec<Vec<u8>>,
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
    /// `None` when nothing was applied since the latest snapshot (only an
    /// on-demand request sends that, to get its answer).
    pub(crate) files: Option<Vec<(String, Vec<u8>)>>,
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
            ApplyMsg::Load { meta, files } => self.load(meta, files),
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

    /// Loads an installed snapshot (or the one storage holds at start).
    pub(crate) fn load(&mut self, meta: SnapshotMeta, files: Vec<Vec<u8>>) {
        let named = meta
            .files
            .iter()
            .map(|f| f.name.clone())
            .zip(files)
            .collect();
        if let Err(e) = self.sm.on_snapshot_load(named) {
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
        let files = self.sm.on_snapshot_save();
        let snap = TakenSnapshot {
            index: self.applied,
            files: Some(files),
            reply: None,
        };
        // A full queue holds an older snapshot the node task has not stored
        // yet; this one is skipped and the next interval tries again.
        if self.snapshot_tx.try_send(snap).is_ok() {
            self.last_snapshot = self.applied;
        }
    }

    /// Takes a snapshot on request. Unlike the periodic one it waits for
    /// room in the queue: someone is waiting for this one.
    async fn snapshot_now(&mut self, reply: oneshot::Sender<Result<u64, NodeError>>) {
        let files = (self.applied > self.last_snapshot).then(|| self.sm.on_snapshot_save());
        let snap = TakenSnapshot {
            index: self.applied,
            files,
            reply: Some(reply),
        };
        match self.snapshot_tx.send(snap).await {
            Ok(()) => self.last_snapshot = self.last_snapshot.max(self.applied),
            Err(mpsc::error::SendError(s)) => {
                if let Some(r) = s.reply {
                    let _ = r.send(Err(NodeError::Stopped));
                }
            }
        }
    }
}
