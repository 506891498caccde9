//! The user's state machine and the contract the runtime keeps with it
//! (braft's `StateMachine`).
//!
//! Raft decides *what* is applied and in which order; the state machine
//! decides what applying means. This module is the seam between the two.
//! Every callback runs on the node's apply task, one at a time and in log
//! order, so an implementation needs no locking of its own and sees a
//! single, totally ordered history of commands, snapshot loads and role
//! changes.
//!
//! The rules, each relied on by the runtime and tested in
//! `raft-core/tests/runtime_node.rs`:
//!
//! 1. **Determinism.** [`StateMachine::on_apply`] must compute its new state
//!    from its old state and the entry alone: no clock, no randomness, no
//!    node-local input. Every replica applies the same entries in the same
//!    order and must reach the same state, or snapshots and reads disagree.
//! 2. **Consume every entry.** `on_apply` must pull every entry from the
//!    iterator. An entry is applied once the iterator has yielded it;
//!    entries left in the iterator when `on_apply` returns are a broken
//!    contract: the runtime reports it through [`StateMachine::on_error`]
//!    and stops the node.
//! 3. **Results go to their proposer alone.** [`Applied::respond`] hands a
//!    result to the client that proposed exactly this entry (same index and
//!    same term) on this node; on other replicas, or for an entry proposed
//!    elsewhere, it does nothing. A result must not change the state: it is
//!    a reply, the state is what `on_apply` did.
//! 4. **Snapshots are the state exactly at an index.**
//!    [`StateMachine::on_snapshot_save`] is called between two batches and
//!    must capture everything applied so far and nothing else: the files
//!    it creates through the [`SnapshotWriter`] (and the job it may hand
//!    back, which runs later on a blocking thread while entries keep being
//!    applied) must hold the state as of [`SnapshotWriter::index`], never
//!    a later one. Whatever the job needs it must capture at the call (an
//!    immutable copy, or files that will not change).
//! 5. **Loading starts from empty.** [`StateMachine::on_snapshot_load`]
//!    replaces the whole state: nothing applied before survives it.
//!    Snapshot files are immutable: a file created through the writer, a
//!    file hard-linked into a snapshot ([`SnapshotWriter::link`]) and a
//!    loaded file (hard links to the stored snapshot, which the node may
//!    be sending to a follower) must never be written in place again;
//!    replace a file by writing a new one and renaming it.
//! 6. **Leader-only work follows the callbacks.**
//!    [`StateMachine::on_leader_start`] comes once this leader's first entry
//!    is applied (so every entry committed before its term is applied too);
//!    [`StateMachine::on_leader_stop`] comes when that leadership ends, and
//!    leader-only work must stop then. Each start is followed by exactly one
//!    stop before the next start.
//! 7. **Following is bracketed too.** [`StateMachine::on_start_following`]
//!    and [`StateMachine::on_stop_following`] come in pairs, one pair per
//!    leader followed.
//! 8. **Shutdown is last.** [`StateMachine::on_shutdown`] is the final call,
//!    made exactly once when the node stops, whatever the reason.

use std::path::{Path, PathBuf};

use tokio::sync::oneshot;

use crate::core::{Bytes, Membership};
use crate::NodeId;

use super::node::{NodeError, ProposeOutcome};
use super::snapshot_file::{SharedTally, SnapshotFileWriter};

/// Where a proposal's outcome goes: the one client that proposed it.
pub(crate) type Reply = oneshot::Sender<Result<ProposeOutcome, NodeError>>;

/// One committed command handed to [`StateMachine::on_apply`].
///
/// Guarantees: `(index, term)` identifies the entry in the group's log; the
/// same entries reach every replica in the same order. If this node's
/// client proposed exactly this entry, [`Applied::respond`] answers it;
/// when the state machine does not respond, the client gets an empty
/// result once the entry is applied.
#[derive(Debug)]
pub struct Applied {
    /// The entry's log index.
    pub index: u64,
    /// The term the entry was proposed in.
    pub term: u64,
    /// The command, as proposed: the buffer the proposal arrived in (on
    /// the leader) or the received frame (on a follower), shared, never
    /// copied on its way here.
    pub data: Bytes,
    reply: Option<Reply>,
    /// Set when the iterator handed this entry to the state machine: only
    /// then does dropping it without a result count as success.
    yielded: bool,
}

impl Applied {
    pub(crate) fn new(index: u64, term: u64, data: Bytes, reply: Option<Reply>) -> Applied {
        Applied {
            index,
            term,
            data,
            reply,
            yielded: false,
        }
    }

    /// Whether a client on this node waits for this entry's result. The
    /// state machine must not behave differently because of it (rule 1); it
    /// may only skip building a result nobody reads.
    pub fn has_waiter(&self) -> bool {
        self.reply.is_some()
    }

    /// Hands `result` to the client that proposed this entry, if it waits on
    /// this node; otherwise does nothing. Only the first call counts.
    pub fn respond(&mut self, result: Vec<u8>) {
        if let Some(tx) = self.reply.take() {
            // The client may have stopped waiting: that is its choice.
            let _ = tx.send(Ok(ProposeOutcome {
                index: self.index,
                term: self.term,
                result,
            }));
        }
    }

    /// Fails the waiting client instead: used by the runtime for entries the
    /// state machine did not consume.
    pub(crate) fn fail(&mut self, err: NodeError) {
        if let Some(tx) = self.reply.take() {
            let _ = tx.send(Err(err));
        }
    }
}

impl Drop for Applied {
    fn drop(&mut self) {
        if self.yielded && !std::thread::panicking() {
            // Consumed and applied without an explicit result: the command
            // succeeded, with nothing to say. (Dropped while the state
            // machine panics, it was not applied: the branch below.)
            self.respond(Vec::new());
        } else {
            // Never handed to the state machine (it stopped early or
            // panicked): never report success for it.
            self.fail(NodeError::Failed(
                "the state machine did not apply the entry".into(),
            ));
        }
    }
}

/// The iterator `on_apply` receives: marks each entry as handed over.
pub(crate) struct Batch(pub(crate) std::vec::IntoIter<Applied>);

impl Iterator for Batch {
    type Item = Applied;

    fn next(&mut self) -> Option<Applied> {
        let mut a = self.0.next()?;
        a.yielded = true;
        Some(a)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

/// A replicated state machine, driven by a [`super::node::RaftNode`].
///
/// Every method runs on the node's apply task, in log order; see the module
/// docs for the rules an implementation must keep.
pub trait StateMachine: Send + 'static {
    /// Applies committed commands in log order (rules 1 to 3). Must consume
    /// the whole iterator. Entries that carry no command (a leader's no-op,
    /// membership changes) are not passed here.
    fn on_apply(&mut self, entries: &mut dyn Iterator<Item = Applied>);

    /// Saves the state, exactly as of the last applied entry
    /// ([`SnapshotWriter::index`], rule 4), as named files created through
    /// `writer` (written in pieces, or hard-linked from files already on
    /// disk). What is slow may be handed back as a [`SnapshotJob`]: the
    /// runtime runs it on a blocking thread while entries keep being
    /// applied and replicated, and the snapshot is complete when it
    /// returns `Ok`. The runtime then syncs the files, checksums them by
    /// streaming, and stores them; it may send them to other nodes, whose
    /// state machines get them in `on_snapshot_load`.
    ///
    /// An `Err` (here or from the job) skips this snapshot: the node goes
    /// on, counts it (`NodeMetrics::snapshots_failed`), and a caller of
    /// `NodeHandle::snapshot` gets the error.
    fn on_snapshot_save(
        &mut self,
        writer: &mut SnapshotWriter,
    ) -> Result<Option<SnapshotJob>, String>;

    /// Replaces the whole state by the snapshot in `dir`, starting from
    /// empty (rule 5): `files` are the names `on_snapshot_save` gave, in
    /// order, each at `dir.join(name)`. Called at start when storage holds
    /// a snapshot, and when a snapshot from the leader is installed. The
    /// files were checked against their checksums. They are hard links to
    /// the stored snapshot (or copies, for a store in memory): read them,
    /// or hard-link them to keep them, but never write them (rule 5). The
    /// directory is removed when this returns. An `Err` means they cannot
    /// be understood, and stops the node.
    fn on_snapshot_load(&mut self, dir: &Path, files: &[String]) -> Result<(), String>;

    /// This node leads `term`, and everything committed before its term is
    /// applied (rule 6). Leader-only work may start.
    fn on_leader_start(&mut self, _term: u64) {}

    /// The leadership that `on_leader_start` announced ended; leader-only
    /// work must stop (rule 6).
    fn on_leader_stop(&mut self) {}

    /// A membership change committed and is applied: `membership` is the
    /// group's configuration from now on (also called after a snapshot
    /// load, with the snapshot's configuration).
    fn on_configuration_committed(&mut self, _membership: &Membership) {}

    /// This node follows `leader` in `term` (rule 7).
    fn on_start_following(&mut self, _leader: NodeId, _term: u64) {}

    /// This node no longer follows the leader of the last
    /// `on_start_following` (rule 7).
    fn on_stop_following(&mut self) {}

    /// Asked after every `on_apply`: `Some(why)` when the state machine
    /// cannot go on (its own storage failed, say). The node then stops
    /// with `why`, as for a broken contract: nothing after the batch is
    /// applied, and `on_error` and `on_shutdown` follow. A state machine
    /// that fails mid-batch must stop taking entries from the iterator
    /// (the runtime fails those left to their proposers) and answer the
    /// entry it failed on with an error of its own: an entry taken and
    /// not answered counts as applied.
    fn failure(&mut self) -> Option<String> {
        None
    }

    /// The node hit an error it cannot continue from (storage failure, a
    /// broken contract); it stops, and `on_shutdown` follows.
    fn on_error(&mut self, _error: &str) {}

    /// The node stopped; nothing is called after this (rule 8).
    fn on_shutdown(&mut self) {}
}

/// Work a state machine hands back from
/// [`StateMachine::on_snapshot_save`] to finish its snapshot off the apply
/// task: the runtime runs it once on a blocking thread (apply and
/// replication go on meanwhile) and stores the snapshot when it returns
/// `Ok`. The runtime does not wait for a running job when the node stops.
pub type SnapshotJob = Box<dyn FnOnce() -> Result<(), String> + Send + 'static>;

/// Most files a snapshot may hold (the wire's limit).
pub const MAX_SNAPSHOT_FILES: usize = super::limits::MAX_SNAPSHOT_FILES;

/// Longest snapshot file name accepted, in bytes: names become file names
/// when a snapshot is loaded, so they must fit a file system's.
pub const MAX_SNAPSHOT_FILE_NAME: usize = 255;

/// Why a snapshot file could not be created or linked.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Names become file names in the directory `on_snapshot_load` gets:
    /// only ASCII letters, digits, `.`, `_` and `-`, not starting with `.`,
    /// at most [`MAX_SNAPSHOT_FILE_NAME`] bytes.
    #[error("bad snapshot file name {name:?}: {why}")]
    BadName { name: String, why: &'static str },
    /// Two files of one snapshot with the same name.
    #[error("snapshot file {0:?} created twice")]
    Duplicate(String),
    /// More than [`MAX_SNAPSHOT_FILES`] files.
    #[error("a snapshot holds at most {MAX_SNAPSHOT_FILES} files")]
    TooMany,
    /// The operating system refused.
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Checks that `name` may name a snapshot file (see
/// [`SnapshotError::BadName`]). Applied when saving and again when loading:
/// a received meta's names come from another node.
pub fn check_file_name(name: &str) -> Result<(), SnapshotError> {
    let bad = |why| {
        Err(SnapshotError::BadName {
            name: name.chars().take(64).collect(),
            why,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_SNAPSHOT_FILE_NAME {
        return bad("too long");
    }
    if name.starts_with('.') {
        return bad("starts with a dot");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// Where [`StateMachine::on_snapshot_save`] puts a snapshot's files: a
/// fresh directory under the node's snapshot store (for a store on disk),
/// so storing the finished snapshot is a rename, never a copy.
///
/// Guarantees: each file created or linked here is part of the snapshot,
/// in the order created, under its name; nothing else is. A created file
/// counts its size and checksum as it is written (see
/// [`SnapshotFileWriter`]); the runtime reads only linked files back, and
/// syncs every file once the save (and its job, if any) finished: the
/// state machine only writes.
#[derive(Debug)]
pub struct SnapshotWriter {
    index: u64,
    dir: PathBuf,
    /// The files so far, in order: each name with the tally of a created
    /// file (its writer counts size and checksum as it writes), none for a
    /// linked one.
    files: Vec<StagedName>,
}

/// A staged snapshot file: its name and, if it was created through a
/// [`SnapshotFileWriter`], what its writer counted.
pub(crate) type StagedName = (String, Option<SharedTally>);

impl SnapshotWriter {
    /// A writer into `dir`, which must exist and be empty.
    pub(crate) fn new(index: u64, dir: PathBuf) -> SnapshotWriter {
        SnapshotWriter {
            index,
            dir,
            files: Vec::new(),
        }
    }

    /// The applied index the snapshot must capture: the state after this
    /// entry, and nothing applied later.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Checks `name` and reserves the next position for it.
    fn reserve(&mut self, name: &str) -> Result<PathBuf, SnapshotError> {
        check_file_name(name)?;
        if self.files.iter().any(|(n, _)| n == name) {
            return Err(SnapshotError::Duplicate(name.to_string()));
        }
        if self.files.len() >= MAX_SNAPSHOT_FILES {
            return Err(SnapshotError::TooMany);
        }
        Ok(crate::storage::staged_file(&self.dir, self.files.len()))
    }

    /// Creates the snapshot file `name`, empty, and returns it open for
    /// writing from start to end. Write it here or move it into the
    /// [`SnapshotJob`]; it must be complete when the save (and its job)
    /// returns, and written through this writer alone (the runtime checks
    /// the file's length against what went through it). No need to sync
    /// it: the runtime does.
    pub fn create(&mut self, name: &str) -> Result<SnapshotFileWriter, SnapshotError> {
        let path = self.reserve(name)?;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| SnapshotError::Io {
                op: "create",
                path: path.clone(),
                source,
            })?;
        let (w, tally) = SnapshotFileWriter::new(f);
        self.files.push((name.to_string(), Some(tally)));
        Ok(w)
    }

    /// Makes the existing file `existing` the snapshot file `name` by a
    /// hard link: no byte is copied, whatever its size. `existing` must be
    /// on the same file system as the node's storage, and must never be
    /// written in place again (it now also is the snapshot; see rule 5 of
    /// the module docs).
    pub fn link(&mut self, name: &str, existing: &Path) -> Result<(), SnapshotError> {
        let path = self.reserve(name)?;
        std::fs::hard_link(existing, &path).map_err(|source| SnapshotError::Io {
            op: "link",
            path: existing.to_path_buf(),
            source,
        })?;
        self.files.push((name.to_string(), None));
        Ok(())
    }

    /// The directory and the files, in order.
    pub(crate) fn into_parts(self) -> (PathBuf, Vec<StagedName>) {
        (self.dir, self.files)
    }
}

#[cfg(test)]
mod tests {
    use super::{check_file_name, SnapshotError, SnapshotWriter};

    #[test]
    fn snapshot_file_names_are_safe_file_names_and_unique() {
        for ok in ["kv", "sessions", "chunk-0001.dat", "A_b.c"] {
            check_file_name(ok).unwrap();
        }
        let long = "x".repeat(256);
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "../x",
            "a b",
            "é",
            long.as_str(),
        ] {
            assert!(
                matches!(check_file_name(bad), Err(SnapshotError::BadName { .. })),
                "{bad:?}"
            );
        }
        let tmp = tempfile::tempdir().unwrap();
        let mut w = SnapshotWriter::new(7, tmp.path().to_path_buf());
        assert_eq!(w.index(), 7);
        w.create("a").unwrap();
        assert!(matches!(w.create("a"), Err(SnapshotError::Duplicate(_))));
        assert!(matches!(
            w.create("../a"),
            Err(SnapshotError::BadName { .. })
        ));
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, b"on disk already").unwrap();
        w.link("b", &outside).unwrap();
        let missing = tmp.path().join("missing");
        assert!(matches!(
            w.link("c", &missing),
            Err(SnapshotError::Io { .. })
        ));
        let (dir, files) = w.into_parts();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(files[0].1.is_some() && files[1].1.is_none());
        // Stored by position, never by the application's name.
        assert_eq!(
            std::fs::read(crate::storage::staged_file(&dir, 1)).unwrap(),
            b"on disk already"
        );
    }
}
