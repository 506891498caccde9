//! The Raft log, split in two: what storage holds durably (`stable`) and what
//! the core has appended but the driver has not yet persisted (`unstable`).
//!
//! Entries move from unstable to stable only through `stable_to`, called when
//! the driver acknowledges a `Ready`, so the durability of every entry is
//! visible in which half holds it.

use super::message::Entry;
use crate::storage::Storage;
use crate::Error;

/// Entries not yet persisted, starting at `offset`.
#[derive(Debug, Default)]
struct Unstable {
    offset: u64,
    entries: Vec<Entry>,
}

impl Unstable {
    fn last_index(&self) -> Option<u64> {
        self.entries.last().map(|e| e.index)
    }

    fn term(&self, index: u64) -> Option<u64> {
        if index < self.offset {
            return None;
        }
        self.entries
            .get((index - self.offset) as usize)
            .map(|e| e.term)
    }

    /// Appends `ents`, replacing whatever unstable entries they overlap.
    fn truncate_and_append(&mut self, ents: &[Entry]) {
        let first = ents[0].index;
        if self.entries.is_empty() || first < self.offset {
            // Everything unstable is replaced (and possibly part of stable,
            // which storage drops when these entries are persisted).
            self.offset = first;
            self.entries.clear();
        } else {
            let keep = (first - self.offset) as usize;
            self.entries.truncate(keep);
        }
        self.entries.extend_from_slice(ents);
    }
}

/// The whole log as the core sees it.
#[derive(Debug)]
pub struct RaftLog<S: Storage> {
    pub(crate) storage: S,
    unstable: Unstable,
    /// Highest index known committed.
    pub committed: u64,
    /// Highest index handed to the state machine.
    pub applied: u64,
    /// Highest index durable in storage (the stable part's end).
    persisted: u64,
    /// The last snapshot installed by this log (index, term): everything up
    /// to it is gone, even before storage has caught up with the install.
    restored: Option<(u64, u64)>,
    /// The first storage read that failed for another reason than "not
    /// held" (compacted away, or past the end). Reads return what they
    /// would for an index not held, so the caller's code stays simple, but
    /// once this is set every decision since may rest on a wrong answer:
    /// the node must stop before anything it decided leaves it
    /// ([`crate::Raft::storage_failure`]). Never cleared.
    failure: std::cell::OnceCell<String>,
}

impl<S: Storage> RaftLog<S> {
    /// A log over `storage`, with `committed` and `applied` as given.
    pub fn new(storage: S, committed: u64, applied: u64) -> RaftLog<S> {
        let persisted = storage.last_index();
        RaftLog {
            unstable: Unstable {
                offset: persisted + 1,
                entries: Vec::new(),
            },
            storage,
            committed,
            applied,
            persisted,
            restored: None,
            failure: std::cell::OnceCell::new(),
        }
    }

    /// The first storage read that failed, if any (see `failure`).
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// Records a storage failure found by a check of the caller's (the
    /// first one recorded is kept).
    pub(crate) fn record_failure(&self, why: String) {
        let _ = self.failure.set(why);
    }

    /// Keeps `r`'s value; a failure other than "not held" is recorded
    /// (the first one wins) and reads as "not held".
    fn checked<T>(&self, what: impl FnOnce() -> String, r: Result<T, Error>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(Error::Unavailable { .. }) => None,
            Err(e) => {
                let _ = self.failure.set(format!("{}: {e}", what()));
                None
            }
        }
    }

    /// The first index still held (entries before it are in a snapshot).
    pub fn first_index(&self) -> u64 {
        let restored = self.restored.map_or(0, |(i, _)| i + 1);
        self.storage.first_index().max(restored)
    }

    /// Replaces the whole log by a snapshot ending at `(index, term)`: the
    /// log is empty after it, and everything up to it is committed and
    /// applied (the driver loads the snapshot into the state machine).
    pub fn restore(&mut self, index: u64, term: u64) {
        self.restored = Some((index, term));
        self.unstable = Unstable {
            offset: index + 1,
            entries: Vec::new(),
        };
        self.persisted = index;
        self.committed = self.committed.max(index);
        self.applied = index;
    }

    /// The last index held, stable or not.
    pub fn last_index(&self) -> u64 {
        self.unstable.last_index().unwrap_or(self.persisted)
    }

    /// The last durable index.
    pub fn persisted_index(&self) -> u64 {
        self.persisted
    }

    /// The term of the last entry.
    pub fn last_term(&self) -> u64 {
        self.term(self.last_index()).unwrap_or(0)
    }

    /// The term at `index`, or `None` when the index is past the end (or
    /// compacted away).
    pub fn term(&self, index: u64) -> Option<u64> {
        if let Some((ri, rt)) = self.restored {
            if index == ri {
                return Some(rt);
            }
            if index < ri {
                return None;
            }
        }
        // Invariant: `unstable.offset == persisted + 1`.
        if index > self.persisted {
            return self.unstable.term(index);
        }
        self.checked(
            || format!("reading the term of entry {index}"),
            self.storage.term(index),
        )
    }

    /// Whether the entry at `index` has term `term`.
    pub fn match_term(&self, index: u64, term: u64) -> bool {
        self.term(index) == Some(term)
    }

    /// Whether a log ending at `(last_index, last_term)` is at least as up to
    /// date as this one (Raft §5.4.1).
    pub fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        let my_term = self.last_term();
        last_term > my_term || (last_term == my_term && last_index >= self.last_index())
    }

    /// The largest index `<= index` whose term is `<= term`. A follower and
    /// a leader use it to skip a whole term of mismatching entries at once.
    pub fn find_conflict_by_term(&self, index: u64, term: u64) -> u64 {
        let mut i = index.min(self.last_index());
        while i > 0 {
            match self.term(i) {
                Some(t) if t > term => i -= 1,
                _ => break,
            }
        }
        i
    }

    /// Appends `ents` from a leader after `(prev_index, prev_term)` matched.
    /// Skips entries already held, truncates at the first conflict. Returns
    /// the last index now known to match the leader and the offset in `ents`
    /// from which entries were actually appended, or an error if the
    /// conflict is at or below the commit index (that would lose a committed
    /// entry: a broken invariant, never a normal event).
    pub fn maybe_append(
        &mut self,
        prev_index: u64,
        ents: &[Entry],
    ) -> Result<(u64, Option<usize>), Error> {
        let last_new = prev_index + ents.len() as u64;
        let conflict = ents
            .iter()
            .find(|e| !self.match_term(e.index, e.term))
            .map(|e| e.index);
        if let Some(ci) = conflict {
            if ci <= self.committed {
                return Err(Error::Invariant(format!(
                    "entry {ci} conflicts with committed prefix up to {}",
                    self.committed
                )));
            }
            let start = (ci - ents[0].index) as usize;
            self.append(&ents[start..]);
            return Ok((last_new, Some(start)));
        }
        Ok((last_new, None))
    }

    /// Appends entries at the tail (or over a conflicting suffix).
    pub fn append(&mut self, ents: &[Entry]) {
        if ents.is_empty() {
            return;
        }
        if ents[0].index <= self.persisted {
            // The conflicting stable suffix is no longer durable-and-valid.
            self.persisted = ents[0].index - 1;
        }
        self.unstable.truncate_and_append(ents);
    }

    /// Entries `lo..hi`, limited to `max_bytes` (at least one is returned).
    pub fn slice(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, Error> {
        if lo > hi || hi > self.last_index() + 1 || lo < self.first_index() {
            return Err(Error::Unavailable { lo, hi });
        }
        let mut out = Vec::new();
        if lo < self.unstable.offset {
            let stable_hi = hi.min(self.unstable.offset);
            out = self.storage.entries(lo, stable_hi, max_bytes)?;
            if (out.len() as u64) < stable_hi - lo {
                return Ok(out);
            }
        }
        if hi > self.unstable.offset {
            let mut bytes: u64 = out.iter().map(Entry::size).sum();
            let from = lo.max(self.unstable.offset);
            for e in &self.unstable.entries
                [(from - self.unstable.offset) as usize..(hi - self.unstable.offset) as usize]
            {
                bytes += e.size();
                if !out.is_empty() && bytes > max_bytes {
                    break;
                }
                out.push(e.clone());
            }
        }
        Ok(out)
    }

    /// Raises the commit index (never lowers it).
    pub fn commit_to(&mut self, index: u64) -> bool {
        if index > self.committed {
            debug_assert!(index <= self.last_index(), "commit past the log");
            self.committed = index;
            true
        } else {
            false
        }
    }

    /// The entries not yet persisted.
    pub fn unstable_entries(&self) -> &[Entry] {
        &self.unstable.entries
    }

    /// Marks entries up to `(index, term)` durable, unless they were
    /// replaced since the `Ready` that carried them was taken.
    pub fn stable_to(&mut self, index: u64, term: u64) {
        if self.unstable.term(index) != Some(term) {
            return;
        }
        let n = (index + 1 - self.unstable.offset) as usize;
        self.unstable.entries.drain(..n);
        self.unstable.offset = index + 1;
        self.persisted = index;
    }

    /// Committed, durable entries not yet applied, limited to `max_bytes`.
    pub fn next_to_apply(&self, max_bytes: u64) -> Vec<Entry> {
        let hi = self.committed.min(self.persisted);
        if hi <= self.applied {
            return Vec::new();
        }
        let lo = self.applied + 1;
        self.checked(
            || format!("reading entries {lo}..={hi} to apply"),
            self.slice(lo, hi + 1, max_bytes),
        )
        .unwrap_or_default()
    }

    /// `len` bytes of file `file` of the latest snapshot from `offset`, or
    /// `None` when they cannot be read (a failure is recorded).
    pub fn checked_chunk(&self, file: u32, offset: u64, len: u64) -> Option<Vec<u8>> {
        self.checked(
            || format!("reading {len} bytes at {offset} of snapshot file {file}"),
            self.storage.snapshot_chunk(file, offset, len),
        )
    }

    /// Up to `len` bytes of file `file` of the partial snapshot from
    /// `offset`, or `None` when they could not be read (recorded: the node
    /// stops rather than deciding anything on a guess).
    pub fn checked_partial_chunk(&self, file: u32, offset: u64, len: u64) -> Option<Vec<u8>> {
        self.checked(
            || format!("reading {len} bytes at {offset} of partial snapshot file {file}"),
            self.storage.partial_chunk(file, offset, len),
        )
    }

    /// Entries `lo..hi` as [`RaftLog::slice`] gives them, or `None` when
    /// they are not held or could not be read (a failure is recorded).
    pub fn slice_checked(&self, lo: u64, hi: u64, max_bytes: u64) -> Option<Vec<Entry>> {
        self.checked(
            || format!("reading entries {lo}..{hi}"),
            self.slice(lo, hi, max_bytes),
        )
    }

    /// Whether `next_to_apply` would return anything.
    pub fn has_next_to_apply(&self) -> bool {
        self.committed.min(self.persisted) > self.applied
    }

    /// Records that entries up to `index` were handed to the state machine.
    pub fn applied_to(&mut self, index: u64) {
        debug_assert!(index <= self.committed && index >= self.applied);
        self.applied = self.applied.max(index);
    }
}
