//! The Raft safety properties (Raft paper, Figure 3), checked incrementally
//! after every simulated step.
//!
//! Each check looks only at what the step changed, so checking costs about
//! as much as the step itself:
//! - Election Safety: at most one leader per term, ever.
//! - Log Matching: every `(index, term)` ever made durable anywhere names the
//!   same entry and the same predecessor term. Since a predecessor is itself
//!   an `(index, term)` pair, two logs that share an entry share the whole
//!   prefix before it.
//! - Leader Completeness: a new leader holds every entry known committed.
//! - State Machine Safety: every node commits and applies, at each index,
//!   the same entry; and no durable log ever overwrites a committed entry
//!   (no committed entry is lost).
//! - State machine agreement: replicas that applied the same prefix hold
//!   the same state, whether they got there entry by entry or by
//!   installing a snapshot.

use std::collections::{BTreeMap, HashMap};

use crate::core::{Entry, EntryKind, NodeId};
use crate::log::RaftLog;
use crate::storage::Storage;

/// A broken safety property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The property's name, e.g. "Election Safety".
    pub property: &'static str,
    pub detail: String,
}

fn violation<T>(property: &'static str, detail: String) -> Result<T, Violation> {
    Err(Violation { property, detail })
}

/// What the checker has learned about the whole cluster so far.
#[derive(Debug, Default)]
pub struct Invariants {
    leaders: BTreeMap<u64, NodeId>,
    /// (index, term) -> (content fingerprint, term of index - 1)
    entries: HashMap<(u64, u64), (u64, u64)>,
    /// committed[i - 1] is (the term of the entry committed at index
    /// committed_base + i, the lowest term in which any node saw it
    /// committed). The second is the term of the leader that committed it:
    /// that leader is the first to know. It never decreases along the log.
    committed: Vec<(u64, u64)>,
    /// Indexes `1..=committed_base` were forgotten by
    /// [`Invariants::forget_below`]: `committed[0]` is index
    /// `committed_base + 1`.
    committed_base: u64,
    /// applied index -> fingerprint of the state machine there.
    states: HashMap<u64, u64>,
}

fn fingerprint(e: &Entry) -> u64 {
    // FNV-1a: stable across runs and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let kind = match e.kind {
        EntryKind::Normal => 1u8,
        EntryKind::Noop => 2u8,
        EntryKind::ConfChange => 3u8,
    };
    for b in std::iter::once(kind).chain(e.data.iter().copied()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Invariants {
    /// Forgets the entries below index `entries_floor`, and the
    /// state-machine fingerprints and committed terms below index
    /// `states_floor`, so a long session does not remember its whole
    /// history. The caller picks floors no node can persist an entry below,
    /// nor commit, apply or reach a state below, again (see
    /// `Sim::forget_settled_history`). Forgetting can only skip a check,
    /// never report a violation: an unknown entry or state is recorded,
    /// not compared, and a forgotten committed index is not checked.
    pub fn forget_below(&mut self, entries_floor: u64, states_floor: u64) {
        self.entries.retain(|&(index, _), _| index >= entries_floor);
        self.states.retain(|&index, _| index >= states_floor);
        let drop = states_floor
            .saturating_sub(1)
            .saturating_sub(self.committed_base)
            .min(self.committed.len() as u64);
        self.committed.drain(..drop as usize);
        self.committed_base += drop;
    }

    /// How many entries, state fingerprints and committed terms are
    /// remembered (tests).
    #[cfg(test)]
    pub fn remembered(&self) -> (usize, usize, usize) {
        (self.entries.len(), self.states.len(), self.committed.len())
    }

    /// Whether `index` is committed but forgotten: nothing can be checked
    /// against it.
    fn forgotten(&self, index: u64) -> bool {
        index <= self.committed_base
    }

    /// The highest index known committed anywhere.
    pub fn committed_index(&self) -> u64 {
        self.committed_base + self.committed.len() as u64
    }

    /// The term of the entry committed at `index`, if known (`None` also
    /// when it was forgotten).
    pub fn committed_term(&self, index: u64) -> Option<u64> {
        index
            .checked_sub(self.committed_base + 1)
            .and_then(|i| self.committed.get(i as usize).map(|c| c.0))
    }

    /// `node` became leader of `term` holding `log`: it must hold every entry
    /// committed in an earlier term. (Entries committed in later terms need
    /// not be there: a delayed vote can crown a stale leader after newer
    /// terms committed things; it will fail to commit anything itself.)
    pub fn on_leader(
        &mut self,
        node: NodeId,
        term: u64,
        log: &RaftLog<impl Storage>,
    ) -> Result<(), Violation> {
        if let Some(&other) = self.leaders.get(&term) {
            if other != node {
                return violation(
                    "Election Safety",
                    format!("nodes {other} and {node} are both leaders of term {term}"),
                );
            }
        }
        self.leaders.insert(term, node);
        // Entries compacted into the leader's snapshot are checked through
        // the state fingerprints instead.
        let first = log.first_index().saturating_sub(1).max(1);
        for (i, &(t, commit_term)) in self.committed.iter().enumerate() {
            if commit_term >= term {
                break;
            }
            let index = self.committed_base + i as u64 + 1;
            if index < first {
                continue;
            }
            let mine = log.term(index);
            if mine != Some(t) {
                let held = mine.map_or("no entry".to_string(), |m| format!("an entry of term {m}"));
                return violation(
                    "Leader Completeness",
                    format!(
                        "node {node} leads term {term} but holds {held} at index {index}, \
                         where an entry of term {t} was committed"
                    ),
                );
            }
        }
        Ok(())
    }

    /// `node` is about to make `entries` durable. `durable_term` reads its
    /// durable log as it is before the write; `log` is its log with the new
    /// entries.
    ///
    /// Holding a different entry at a committed index is allowed (a stale
    /// leader appends at indexes a newer leader has committed); replacing
    /// the committed entry itself is not.
    pub fn on_persist(
        &mut self,
        node: NodeId,
        entries: &[Entry],
        durable_term: impl Fn(u64) -> Option<u64>,
        log: &RaftLog<impl Storage>,
    ) -> Result<(), Violation> {
        for e in entries {
            if let Some(t) = self.committed_term(e.index) {
                if t != e.term && durable_term(e.index) == Some(t) {
                    return violation(
                        "State Machine Safety",
                        format!(
                            "node {node} overwrote committed entry {} (term {t}) with term {}: \
                             a committed entry was lost",
                            e.index, e.term
                        ),
                    );
                }
            }
            let prev_term = log.term(e.index - 1).unwrap_or(0);
            let fp = fingerprint(e);
            match self.entries.get(&(e.index, e.term)) {
                Some(&(f, p)) if f != fp || p != prev_term => {
                    return violation(
                        "Log Matching",
                        format!(
                            "node {node} holds a different entry {} of term {} \
                             (content or predecessor term {prev_term} vs {p} differ)",
                            e.index, e.term
                        ),
                    )
                }
                Some(_) => {}
                None => {
                    self.entries.insert((e.index, e.term), (fp, prev_term));
                }
            }
        }
        Ok(())
    }

    /// `node`, in `term`, saw its commit index move from `from` to `to`.
    pub fn on_commit(
        &mut self,
        node: NodeId,
        term: u64,
        from: u64,
        to: u64,
        log: &RaftLog<impl Storage>,
    ) -> Result<(), Violation> {
        for index in from + 1..=to {
            if self.forgotten(index) {
                continue;
            }
            let Some(term_at) = log.term(index) else {
                return violation(
                    "State Machine Safety",
                    format!("node {node} committed index {index}, which it does not hold"),
                );
            };
            match self.committed_term(index) {
                Some(t) if t != term_at => {
                    return violation(
                        "State Machine Safety",
                        format!(
                            "node {node} committed term {term_at} at index {index}, \
                             where another node committed term {t}"
                        ),
                    )
                }
                Some(_) => {
                    let c = &mut self.committed[(index - self.committed_base) as usize - 1].1;
                    *c = (*c).min(term);
                }
                None => {
                    debug_assert_eq!(index, self.committed_index() + 1);
                    if index != self.committed_index() + 1 {
                        return violation(
                            "State Machine Safety",
                            format!("node {node} committed index {index} out of order"),
                        );
                    }
                    self.committed.push((term_at, term));
                }
            }
        }
        Ok(())
    }

    /// `node`'s state machine, having applied everything up to `index`,
    /// has fingerprint `state`.
    pub fn on_state(&mut self, node: NodeId, index: u64, state: u64) -> Result<(), Violation> {
        match self.states.get(&index) {
            Some(&s) if s != state => violation(
                "State Machine Safety",
                format!(
                    "node {node}'s state after applying {index} differs from another replica's"
                ),
            ),
            Some(_) => Ok(()),
            None => {
                self.states.insert(index, state);
                Ok(())
            }
        }
    }

    /// `node` installed a snapshot whose last entry is `(index, term)`:
    /// that entry must be the committed one, and its commit index jumps.
    pub fn on_install(&mut self, node: NodeId, index: u64, term: u64) -> Result<(), Violation> {
        if self.forgotten(index) {
            return Ok(());
        }
        match self.committed_term(index) {
            Some(t) if t == term => Ok(()),
            other => violation(
                "State Machine Safety",
                format!(
                    "node {node} installed a snapshot ending at {index} (term {term}), \
                     but the committed entry there has term {other:?}"
                ),
            ),
        }
    }

    /// `node` applied `e` to its state machine.
    pub fn on_apply(&self, node: NodeId, e: &Entry) -> Result<(), Violation> {
        if self.forgotten(e.index) {
            return Ok(());
        }
        match self.committed_term(e.index) {
            Some(t) if t == e.term => Ok(()),
            other => violation(
                "State Machine Safety",
                format!(
                    "node {node} applied entry {} of term {}, but the committed term there is {other:?}",
                    e.index, e.term
                ),
            ),
        }
    }
}
