//! The order of the work a driver hands to a state machine, checked.
//!
//! [`super::Work`] is the driver's half of the state machine contract
//! (`runtime::state_machine` states the whole): committed entries arrive
//! consecutive and in order, an installed snapshot replaces everything
//! applied before it, every leadership announced is ended before the next
//! one starts, and following a leader is bracketed the same way. A state
//! machine relies on each of these without checking; a driver that broke
//! one would corrupt it quietly. [`WorkCheck`] checks them on every piece
//! of work, deterministically under the simulator and on real time in the
//! runtime, where a violation stops the node.

use super::Work;
use crate::core::NodeId;

/// Checks a stream of [`Work`] against the contract; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct WorkCheck {
    /// The index of the last entry applied or snapshot loaded.
    applied: u64,
    /// The term of the leadership started and not yet stopped.
    leading: Option<u64>,
    /// The leader followed and not yet stopped following, and its term.
    following: Option<(NodeId, u64)>,
    /// The highest term any leadership or following was announced in.
    term: u64,
}

impl WorkCheck {
    /// A check for a state machine that starts from the snapshot at
    /// `applied` (0: from empty).
    pub fn new(applied: u64) -> WorkCheck {
        WorkCheck {
            applied,
            ..WorkCheck::default()
        }
    }

    /// The index of the last entry applied or snapshot loaded so far.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Checks `w`, the next piece of work, and records it.
    pub fn check(&mut self, w: &Work) -> Result<(), String> {
        match w {
            Work::Entries(entries) => {
                for e in entries {
                    if e.index != self.applied + 1 {
                        return Err(format!(
                            "entry {} handed to the state machine after {}: entries must be consecutive",
                            e.index, self.applied
                        ));
                    }
                    self.applied = e.index;
                }
            }
            Work::Load { meta, .. } => {
                // A snapshot older than what was applied would take the
                // state machine back in time.
                if meta.index <= self.applied {
                    return Err(format!(
                        "snapshot at {} loaded after entry {} was applied",
                        meta.index, self.applied
                    ));
                }
                self.applied = meta.index;
            }
            Work::LeaderStart { term, first_index } => {
                if let Some(t) = self.leading {
                    return Err(format!(
                        "leadership of term {term} started before the one of term {t} stopped"
                    ));
                }
                if let Some((l, t)) = self.following {
                    return Err(format!(
                        "leadership of term {term} started while still following {l} (term {t})"
                    ));
                }
                if *term < self.term {
                    return Err(format!(
                        "leadership of term {term} announced after term {}",
                        self.term
                    ));
                }
                if *first_index == 0 {
                    return Err(format!(
                        "leadership of term {term} names entry 0 as its first"
                    ));
                }
                self.leading = Some(*term);
                self.term = *term;
            }
            Work::LeaderStop => {
                if self.leading.take().is_none() {
                    return Err("a leadership stopped that never started".into());
                }
            }
            Work::StartFollowing { leader, term } => {
                if let Some((l, t)) = self.following {
                    return Err(format!(
                        "started following {leader} (term {term}) while still following {l} (term {t})"
                    ));
                }
                if let Some(t) = self.leading {
                    return Err(format!(
                        "started following {leader} (term {term}) while leading term {t}"
                    ));
                }
                if *term < self.term {
                    return Err(format!(
                        "started following {leader} in term {term} after term {}",
                        self.term
                    ));
                }
                self.following = Some((*leader, *term));
                self.term = *term;
            }
            Work::StopFollowing => {
                if self.following.take().is_none() {
                    return Err("stopped following without following anyone".into());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Entry, EntryKind, SnapshotMeta};

    fn entries(lo: u64, hi: u64) -> Work {
        let e = |index| Entry {
            index,
            term: 1,
            kind: EntryKind::Normal,
            data: Default::default(),
        };
        Work::Entries((lo..=hi).map(e).collect())
    }

    #[test]
    fn the_contract_holds_for_an_ordinary_life() {
        let mut c = WorkCheck::new(0);
        let ok = [
            Work::StartFollowing { leader: 2, term: 1 },
            entries(1, 3),
            Work::StopFollowing,
            Work::LeaderStart {
                term: 2,
                first_index: 4,
            },
            entries(4, 4),
            Work::LeaderStop,
            Work::Load {
                meta: SnapshotMeta {
                    index: 9,
                    ..Default::default()
                },
                files: None,
            },
            entries(10, 11),
        ];
        for w in &ok {
            c.check(w).unwrap();
        }
        assert_eq!(c.applied(), 11);
    }

    #[test]
    fn gaps_old_snapshots_and_unbalanced_roles_are_refused() {
        let mut c = WorkCheck::new(5);
        assert!(c.check(&entries(7, 7)).unwrap_err().contains("consecutive"));
        let old = Work::Load {
            meta: SnapshotMeta {
                index: 5,
                ..Default::default()
            },
            files: None,
        };
        assert!(c.check(&old).unwrap_err().contains("loaded after"));
        assert!(c.check(&Work::LeaderStop).is_err());
        assert!(c.check(&Work::StopFollowing).is_err());
        let start = Work::LeaderStart {
            term: 3,
            first_index: 6,
        };
        c.check(&start).unwrap();
        assert!(c.check(&start).unwrap_err().contains("before the one"));
        let follow = Work::StartFollowing { leader: 1, term: 4 };
        assert!(c.check(&follow).unwrap_err().contains("while leading"));
        c.check(&Work::LeaderStop).unwrap();
        let back = Work::StartFollowing { leader: 1, term: 2 };
        assert!(c.check(&back).unwrap_err().contains("after term 3"));
    }
}
