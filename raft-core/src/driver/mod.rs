//! One group's `Ready` loop: the code that carries out the core's decisions,
//! the same under the seeded simulator and in real processes.
//!
//! The core decides; something must make its decisions durable, send its
//! messages, hand committed entries to the state machine and advance it, in
//! the contract's order (see [`Ready`]). Getting that order
//! wrong loses acknowledged writes while every Raft rule in the core holds,
//! so it lives here once: the tokio runtime ([`crate::runtime`]) and the
//! simulator ([`crate::sim`]) both call [`Driver::handle_ready`], and the
//! millions of seeded steps the simulator checks run this code over the
//! shipped [`NodeStorage`].
//!
//! For each `Ready`, [`Driver::handle_ready`]:
//! 1. sends the messages first if the core ruled they promise nothing about
//!    this node's disk ([`Ready::send_before_persist`]: a leader's appends);
//! 2. persists it with [`NodeStorage::persist`] (snapshot work, entries and
//!    one log sync, term/vote/membership);
//! 3. sends the messages now, if it did not in step 1;
//! 4. tells the state machine about role changes ([`Work::LeaderStop`] and
//!    friends), then hands it an installed snapshot ([`Work::Load`]) and the
//!    committed entries ([`Work::Entries`]), in that order, and the
//!    confirmed reads;
//! 5. advances the core.
//!
//! [`Driver::handle_ready`] does all five on the calling thread. A host
//! that must not hold a thread on the disk calls the same steps in three
//! parts: [`Driver::take_ready`] (step 1), [`Driver::persist`] (step 2,
//! which leaves the host-wide log sync pending, see [`PendingSync`]) and,
//! once the host has waited for that sync however it waits,
//! [`Driver::finish_ready`] (steps 3 to 5). The order of the steps is the
//! same either way: the split only moves the wait.
//!
//! What the driver does not own, its [`Host`] does: the network (`send` may
//! drop: Raft retries), the state machine (in the runtime it runs on its own
//! task, in the simulator inline), and observation: the host sees the
//! `Ready` between the stages ([`Stage`]) and may stop there, which is
//! where the simulator checks its invariants and crashes nodes.
//!
//! Everything here is synchronous and deterministic: no clock, no thread.

mod contract;

pub use contract::WorkCheck;

use crate::core::bugs::Bug;
use crate::core::{
    Entry, Message, NodeId, Raft, ReadState, Ready, Role, SnapshotFile, SnapshotMeta, SnapshotOp,
};
use crate::storage::{NodeStorage, PendingSync, Storage, StorageError};

/// Work for the state machine, in the order it must be done.
#[derive(Debug)]
pub enum Work {
    /// The leadership announced by the last [`Work::LeaderStart`] ended.
    /// Entries proposed there may still commit under the next leader.
    LeaderStop,
    /// The leader announced by the last [`Work::StartFollowing`] is no
    /// longer followed.
    StopFollowing,
    /// This node follows `leader` in `term`.
    StartFollowing { leader: NodeId, term: u64 },
    /// This node leads `term`; its first entry of the term (the no-op) is
    /// at `first_index`.
    LeaderStart { term: u64, first_index: u64 },
    /// A snapshot was installed: the state machine starts over from it.
    /// `files` holds its contents, checked against the meta, only for a
    /// host that asks for them in memory ([`Host::snapshot_in_memory`]:
    /// the simulator); other hosts load from the store's directory
    /// ([`NodeStorage::latest_snapshot_dir`]), whose files the core
    /// checked chunk by chunk as they arrived.
    Load {
        meta: SnapshotMeta,
        files: Option<Vec<Vec<u8>>>,
    },
    /// Committed entries this node holds durably, consecutive, in order.
    Entries(Vec<Entry>),
}

/// Where the driver is in a `Ready`, shown to [`Host::at`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Taken from the core; nothing persisted yet (early messages, if
    /// any, already left).
    Taken,
    /// Durable; the remaining messages not sent, nothing applied.
    Persisted,
    /// Handled and advanced.
    Advanced,
}

/// What the host wants after a [`Stage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on.
    Go,
    /// Stop at once and handle nothing more (the simulator's crash): the
    /// driver leaves the `Ready` half done, as a power cut would.
    Stop,
}

/// What surrounds the driver: network, state machine, observers.
pub trait Host {
    /// The host's own failure, passed through [`DriverError::Host`].
    type Error;

    /// Sends one message. May drop it (a full queue, a dead link): Raft
    /// retries.
    fn send(&mut self, raft: &Raft<NodeStorage>, msg: Message);

    /// Hands work to the state machine, in order.
    fn work(&mut self, raft: &Raft<NodeStorage>, work: Work) -> Result<(), Self::Error>;

    /// A read confirmed at `rs.index`: it may be served once the state
    /// machine has applied that index.
    fn read_ready(&mut self, raft: &Raft<NodeStorage>, rs: ReadState);

    /// Whether [`Work::Load`] should carry the snapshot's contents in
    /// memory (read whole and checked against the meta). The default, no,
    /// suits hosts whose state machines load from a directory; the
    /// simulator's in-memory KV says yes.
    fn snapshot_in_memory(&self) -> bool {
        false
    }

    /// Shows `rd` at `stage`. The default goes on.
    fn at(
        &mut self,
        raft: &Raft<NodeStorage>,
        stage: Stage,
        rd: &Ready,
    ) -> Result<Flow, Self::Error> {
        let _ = (raft, stage, rd);
        Ok(Flow::Go)
    }
}

/// What [`Driver::take_ready`] found.
// Returned once per `Ready` and moved straight into `persist`, never
// stored: boxing the large variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Begin {
    /// No `Ready`: nothing to do.
    Idle,
    /// The host stopped at [`Stage::Taken`] (the `Ready` is left half done).
    Stop,
    /// A `Ready` to persist next.
    Taken(Taken),
}

/// A `Ready` taken from the core, its early messages sent, nothing
/// persisted.
#[derive(Debug)]
pub struct Taken {
    rd: Ready,
    /// The messages still to send (after the `Ready` is durable).
    messages: Vec<Message>,
}

/// A `Ready` being persisted: durable once its pending log sync, if any,
/// has ended well.
#[derive(Debug)]
pub struct Persisting {
    taken: Taken,
    pending: Option<PendingSync>,
}

impl Persisting {
    /// The host-wide log sync this `Ready` waits for, if any.
    pub fn pending(&self) -> Option<&PendingSync> {
        self.pending.as_ref()
    }
}

/// Why the driver stopped the group. Every one is fatal for the group: it
/// must stop, and its storage be reopened before it runs again.
#[derive(Debug, thiserror::Error)]
pub enum DriverError<E> {
    /// A storage read the core made failed (never read as a default).
    #[error("storage: {0}")]
    StorageRead(String),
    /// Making a `Ready` durable failed.
    #[error("persisting a Ready: {0}")]
    Persist(StorageError),
    /// The snapshot just installed cannot be read back for the state
    /// machine.
    #[error("reading the installed snapshot: {0}")]
    InstalledSnapshot(String),
    /// The host failed.
    #[error("{0}")]
    Host(E),
}

/// A snapshot the driver stored with [`Driver::save_snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saved {
    /// The latest stored snapshot's index after the call.
    pub index: u64,
    /// Whether this call stored it (false when a snapshot at least as new
    /// was stored already, or the log was compacted past `index`).
    pub stored: bool,
    /// The log was compacted up to here (0 when nothing was dropped).
    pub compacted_to: u64,
}

/// One group's driver: owns the core and what the state machine was told.
pub struct Driver {
    raft: Raft<NodeStorage>,
    /// The term this node leads in, as last told to the state machine.
    leading: Option<u64>,
    /// The leader and term this node follows, as last told.
    following: Option<(NodeId, u64)>,
    /// Entries applied ahead of the core by the `ApplyUnpersisted` bug,
    /// skipped when the core hands them out again.
    #[cfg(feature = "bug-injection")]
    eagerly_applied: u64,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("id", &self.raft.id())
            .field("term", &self.raft.term())
            .field("role", &self.raft.role())
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// Drives `raft`. The state machine is assumed to have been told
    /// nothing yet (no leader, no following).
    pub fn new(raft: Raft<NodeStorage>) -> Driver {
        Driver {
            raft,
            leading: None,
            following: None,
            #[cfg(feature = "bug-injection")]
            eagerly_applied: 0,
        }
    }

    /// The core.
    pub fn raft(&self) -> &Raft<NodeStorage> {
        &self.raft
    }

    /// The core, for ticks, messages and client work. `Ready`s must be
    /// handled through [`Driver::handle_ready`], never taken directly.
    pub fn raft_mut(&mut self) -> &mut Raft<NodeStorage> {
        &mut self.raft
    }

    /// Gives the core back (the simulator's crash takes its storage).
    pub fn into_raft(self) -> Raft<NodeStorage> {
        self.raft
    }

    fn bug(&self, bug: Bug) -> bool {
        self.raft.config().bug(bug)
    }

    /// Whether [`Driver::handle_ready`] has anything to do (or a failure to
    /// report).
    pub fn has_work(&self) -> bool {
        self.raft.storage_failure().is_some() || self.raft.has_ready()
    }

    /// Handles every pending `Ready`; see [`Driver::handle_ready`].
    pub fn handle_all<H: Host>(&mut self, host: &mut H) -> Result<Flow, DriverError<H::Error>> {
        while self.has_work() {
            if self.handle_ready(host)? == Flow::Stop {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Go)
    }

    /// Handles one `Ready`, if there is one, in the contract's order (see
    /// the module docs). An error means the group must stop; so does a
    /// failed storage read recorded by the core (nothing decided on it
    /// leaves the node).
    ///
    /// The same steps one at a time, for a host that waits for the log
    /// sync without holding a thread: [`Driver::take_ready`],
    /// [`Driver::persist`], then [`Driver::finish_ready`] with the outcome
    /// of waiting for [`Persisting::pending`].
    pub fn handle_ready<H: Host>(&mut self, host: &mut H) -> Result<Flow, DriverError<H::Error>> {
        match self.take_ready(host)? {
            Begin::Idle => Ok(Flow::Go),
            Begin::Stop => Ok(Flow::Stop),
            Begin::Taken(taken) => {
                let persisting = self.persist(taken)?;
                self.finish_ready(host, persisting, None)
            }
        }
    }

    /// Step 1: takes the next `Ready` from the core and sends the messages
    /// that may leave before it is durable.
    pub fn take_ready<H: Host>(&mut self, host: &mut H) -> Result<Begin, DriverError<H::Error>> {
        if let Some(f) = self.raft.storage_failure() {
            return Err(DriverError::StorageRead(f.to_owned()));
        }
        if !self.raft.has_ready() {
            return Ok(Begin::Idle);
        }
        let rd = self.raft.ready();
        let mut taken = Taken {
            messages: Vec::new(),
            rd,
        };
        taken.messages = std::mem::take(&mut taken.rd.messages);
        // The rule is the core's; the bug is a driver that ignores it.
        let early = taken.rd.send_before_persist || self.bug(Bug::SendBeforePersist);
        if early {
            for m in taken.messages.drain(..) {
                host.send(&self.raft, m);
            }
        }
        if host
            .at(&self.raft, Stage::Taken, &taken.rd)
            .map_err(DriverError::Host)?
            == Flow::Stop
        {
            return Ok(Begin::Stop);
        }
        #[cfg(feature = "bug-injection")]
        self.apply_unpersisted(host, &taken.rd)?;
        Ok(Begin::Taken(taken))
    }

    /// Whether [`Driver::persist`] of `taken` could hold the calling
    /// thread on the disk (see [`NodeStorage::persist_may_block`]).
    pub fn persist_may_block(&self, taken: &Taken) -> bool {
        self.raft.storage().persist_may_block(&taken.rd)
    }

    /// Step 2: persists the `Ready` ([`NodeStorage::persist_start`]); a
    /// log sync left to the host's shared sync is returned pending.
    pub fn persist<E>(&mut self, taken: Taken) -> Result<Persisting, DriverError<E>> {
        let pending = self
            .raft
            .storage_mut()
            .persist_start(&taken.rd)
            .map_err(DriverError::Persist)?;
        Ok(Persisting { taken, pending })
    }

    /// Step 3: once the `Ready` is durable (`outcome`: how waiting for
    /// [`Persisting::pending`] ended; `None` waits here, on this thread),
    /// sends the remaining messages, hands work to the state machine and
    /// advances the core.
    pub fn finish_ready<H: Host>(
        &mut self,
        host: &mut H,
        persisting: Persisting,
        outcome: Option<std::io::Result<()>>,
    ) -> Result<Flow, DriverError<H::Error>> {
        let Persisting { taken, pending } = persisting;
        if let Some(p) = pending {
            let outcome = outcome.unwrap_or_else(|| p.wait_blocking());
            self.raft
                .storage_mut()
                .persist_end(outcome)
                .map_err(DriverError::Persist)?;
        }
        let Taken { mut rd, messages } = taken;
        if host
            .at(&self.raft, Stage::Persisted, &rd)
            .map_err(DriverError::Host)?
            == Flow::Stop
        {
            return Ok(Flow::Stop);
        }
        for m in messages {
            host.send(&self.raft, m);
        }

        // Role changes before this Ready's entries: the state machine sees
        // them in the order the log decided them.
        self.note_role(host)?;
        for op in &rd.snapshot_ops {
            if let SnapshotOp::Install(meta) = op {
                let missing = || {
                    DriverError::InstalledSnapshot(format!(
                        "the snapshot at {} is missing from storage",
                        meta.index
                    ))
                };
                let (meta, files) = if host.snapshot_in_memory() {
                    let (meta, files) = self
                        .raft
                        .storage()
                        .snapshot_files()
                        .map_err(|e| DriverError::InstalledSnapshot(e.to_string()))?
                        .filter(|(m, _)| m.index == meta.index)
                        .ok_or_else(missing)?;
                    (meta, Some(files))
                } else {
                    let meta = self
                        .raft
                        .storage()
                        .snapshot_meta()
                        .filter(|m| m.index == meta.index)
                        .ok_or_else(missing)?;
                    (meta, None)
                };
                host.work(&self.raft, Work::Load { meta, files })
                    .map_err(DriverError::Host)?;
            }
        }
        if !rd.committed_entries.is_empty() {
            let entries = self.not_yet_applied(&rd.committed_entries);
            if !entries.is_empty() {
                host.work(&self.raft, Work::Entries(entries))
                    .map_err(DriverError::Host)?;
            }
        }
        for rs in std::mem::take(&mut rd.read_states) {
            host.read_ready(&self.raft, rs);
        }
        self.raft.advance(&rd);
        host.at(&self.raft, Stage::Advanced, &rd)
            .map_err(DriverError::Host)
    }

    #[cfg(not(feature = "bug-injection"))]
    fn not_yet_applied(&self, entries: &[Entry]) -> Vec<Entry> {
        entries.to_vec()
    }

    #[cfg(feature = "bug-injection")]
    fn not_yet_applied(&self, entries: &[Entry]) -> Vec<Entry> {
        let after = self.eagerly_applied;
        entries
            .iter()
            .filter(|e| e.index > after)
            .cloned()
            .collect()
    }

    /// The `ApplyUnpersisted` bug: entries of this Ready already known
    /// committed go to the state machine before they are durable here.
    #[cfg(feature = "bug-injection")]
    fn apply_unpersisted<H: Host>(
        &mut self,
        host: &mut H,
        rd: &Ready,
    ) -> Result<(), DriverError<H::Error>> {
        if !self.bug(Bug::ApplyUnpersisted) {
            return Ok(());
        }
        let commit = self.raft.commit_index();
        let from = self
            .eagerly_applied
            .max(self.raft.applied_index())
            .max(rd.committed_entries.last().map_or(0, |e| e.index));
        let early: Vec<Entry> = rd
            .committed_entries
            .iter()
            .chain(rd.entries.iter())
            .filter(|e| e.index > from && e.index <= commit)
            .cloned()
            .collect();
        if let Some(last) = early.last() {
            // The entries the core hands out now come first, in order.
            let mut all: Vec<Entry> = rd.committed_entries.clone();
            all.retain(|e| e.index > self.eagerly_applied);
            self.eagerly_applied = last.index;
            all.extend(early);
            host.work(&self.raft, Work::Entries(all))
                .map_err(DriverError::Host)?;
        }
        Ok(())
    }

    /// Turns role changes into [`Work`]. Compares the core's role, leader
    /// and term with what the state machine was last told, rather than
    /// relying on `Ready::soft_state` alone: a leader re-elected in a later
    /// term, or the same leader followed in a new term, is a new
    /// leadership.
    fn note_role<H: Host>(&mut self, host: &mut H) -> Result<(), DriverError<H::Error>> {
        let term = self.raft.term();
        let lead = (self.raft.role() == Role::Leader).then_some(term);
        if self.leading.is_some() && self.leading != lead {
            self.leading = None;
            host.work(&self.raft, Work::LeaderStop)
                .map_err(DriverError::Host)?;
        }
        let follow = match self.raft.leader() {
            Some(l) if lead.is_none() => Some((l, term)),
            _ => None,
        };
        if self.following.is_some() && self.following != follow {
            self.following = None;
            host.work(&self.raft, Work::StopFollowing)
                .map_err(DriverError::Host)?;
        }
        if let Some((leader, term)) = follow {
            if self.following.is_none() {
                self.following = follow;
                host.work(&self.raft, Work::StartFollowing { leader, term })
                    .map_err(DriverError::Host)?;
            }
        }
        if lead.is_some() && self.leading.is_none() {
            self.leading = lead;
            let first_index = self.first_entry_of_term(term);
            host.work(&self.raft, Work::LeaderStart { term, first_index })
                .map_err(DriverError::Host)?;
        }
        Ok(())
    }

    /// The index of the first entry of `term` in the log (the new leader's
    /// no-op).
    fn first_entry_of_term(&self, term: u64) -> u64 {
        let log = self.raft.raft_log();
        let mut i = log.last_index();
        while i > log.first_index() && log.term(i - 1) == Some(term) {
            i -= 1;
        }
        i
    }

    /// Stores a snapshot of the state machine taken exactly at `index`
    /// (`files`: name and contents, in memory: the simulator's path)
    /// unless one at least as new is stored, then compacts the log up to
    /// `index - keep` (the entries kept let a slightly lagging follower
    /// catch up from the log instead of a snapshot).
    pub fn save_snapshot(
        &mut self,
        index: u64,
        files: Vec<(String, Vec<u8>)>,
        keep: u64,
    ) -> Result<Saved, StorageError> {
        let described = files
            .iter()
            .map(|(name, data)| SnapshotFile {
                name: name.clone(),
                size: data.len() as u64,
                crc: crate::checksum(data),
            })
            .collect();
        self.save_with(index, described, keep, |disk, meta| {
            disk.save_snapshot(meta, files.into_iter().map(|(_, d)| d).collect())
                .map(|()| true)
        })
    }

    /// Stores a snapshot of the state machine taken exactly at `index`
    /// whose files were written into `dir` and made durable beforehand
    /// (file `i` of `files` at [`crate::storage::staged_file`]`(dir, i)`,
    /// with the size and CRC-32C `files[i]` records), as
    /// [`Driver::save_snapshot`] does for files in memory. With a file
    /// store this is a meta write and a rename: its cost does not depend
    /// on the files' sizes. When it is not stored (`Saved::stored` false),
    /// `dir` is left for the caller to remove.
    pub fn save_snapshot_dir(
        &mut self,
        index: u64,
        dir: &std::path::Path,
        files: Vec<SnapshotFile>,
        keep: u64,
    ) -> Result<Saved, StorageError> {
        self.save_with(index, files, keep, |disk, meta| {
            disk.save_snapshot_dir(&meta, dir)
        })
    }

    /// The rules both saves share: nothing older than the latest, the
    /// term and configuration as of `index`, compaction behind it.
    fn save_with(
        &mut self,
        index: u64,
        files: Vec<SnapshotFile>,
        keep: u64,
        store: impl FnOnce(&mut NodeStorage, SnapshotMeta) -> Result<bool, StorageError>,
    ) -> Result<Saved, StorageError> {
        let latest = self.raft.storage().snapshot_meta().map_or(0, |m| m.index);
        let unchanged = Saved {
            index: latest,
            stored: false,
            compacted_to: 0,
        };
        if index <= latest {
            return Ok(unchanged);
        }
        let Some((term, conf)) = self.raft.snapshot_point(index) else {
            return Ok(unchanged); // compacted past it meanwhile (an install)
        };
        let meta = SnapshotMeta {
            index,
            term,
            conf,
            files,
        };
        let upto = index.saturating_sub(keep);
        let disk = self.raft.storage_mut();
        if !store(disk, meta)? {
            return Ok(unchanged);
        }
        let dropped = disk.compact(upto)?;
        Ok(Saved {
            index,
            stored: true,
            compacted_to: if dropped > 0 { upto } else { 0 },
        })
    }
}
