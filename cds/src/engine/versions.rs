//! A volume's versions in one group: a tree, so a snapshot and a rollback
//! cost nothing.
//!
//! Each volume has its own tree in every group that holds (or has heard
//! of) it. Version numbers are the Master's: it numbers a volume's
//! versions in the order it makes them, so every group names the same
//! version the same way. The *head* is the version writes go to. A
//! snapshot freezes the head as a retained version and starts a new head
//! whose parent it is. A slice's entry is tagged with the version it was
//! written at, and a version sees the entries of its *lineage* (itself,
//! its parent, its parent's parent...): of those, the one with the
//! highest number is its content. Rolling back to a retained version
//! starts a new head whose parent is that version: from that moment every
//! read at the head sees the target's slices, and the old head's entries,
//! seen by no live version any more, are reclaimed in the background.
//! Dropping a version only stops it being readable; its entries stay
//! while a descendant still sees them.
//!
//! A group learns that the volume moved to a new head either from the
//! SnapshotWorker or from a writer that learned it first: both carry the
//! new head and its *base* (its parent in the Master's tree), and
//! [`VolumeVersions::advance`] works out which step that is here.

use std::collections::BTreeMap;

/// A version number (the Master's; 0 means none).
pub type Version = u64;

/// Where a version stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionState {
    /// The version writes go to (exactly one per volume).
    Head,
    /// Frozen by a snapshot, readable until dropped.
    Retained,
    /// Dropped, or a head abandoned by a rollback: not readable; kept in
    /// the tree while a live version descends from it.
    Gone,
}

/// One version: its parent and state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    pub parent: Option<Version>,
    pub state: VersionState,
}

/// What [`VolumeVersions::advance`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The head is that version already (or a newer one: `Behind`).
    Same,
    /// The old head was frozen as a retained version (a snapshot).
    Marked,
    /// The old head was abandoned for a new one on a retained version.
    RolledBack,
    /// The old head was abandoned for an empty one: the rollback's target
    /// is older than anything this group held of the volume.
    Restarted,
}

/// Why a version step cannot be taken here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepError {
    /// The group's head is newer: the sender must learn it.
    Behind { head: Version, base: Version },
    /// The base is neither the head nor a retained version, and not
    /// older than the volume's first version here.
    UnknownBase { base: Version },
    /// Too many versions retained.
    Full,
}

/// The most retained versions one volume keeps in one group.
pub const MAX_RETAINED_VERSIONS: usize = 256;

/// One volume's version tree in one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeVersions {
    head: Version,
    /// The head's base as the Master named it (its parent in the
    /// Master's tree, 0: none). Not always the head's parent here: a head
    /// started empty (a rollback past this group's first version, or the
    /// group's first word of the volume) has no parent here but a base in
    /// the Master's tree, and it is the Master's base a stale writer must
    /// learn, or it would send it on to a group that holds that base.
    head_base: Version,
    /// The head when this group first heard of the volume: no version
    /// older than it held anything of the volume here.
    born: Version,
    /// For a clone: the volume and version its slices read through to
    /// until written.
    origin: Option<(u64, Version)>,
    nodes: BTreeMap<Version, Node>,
}

impl VolumeVersions {
    /// A volume first heard of at version `head`, whose base in the
    /// Master's tree is `base` (with `origin` for a clone).
    pub fn new(head: Version, base: Version, origin: Option<(u64, Version)>) -> VolumeVersions {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            head,
            Node {
                parent: None,
                state: VersionState::Head,
            },
        );
        VolumeVersions {
            head,
            head_base: base,
            born: head,
            origin,
            nodes,
        }
    }

    /// Rebuilds a tree from its parts, checking it is one: one head (whose
    /// base is older than it and is its parent where it has one), every
    /// parent present and older than its child, nothing older than `born`.
    pub fn from_parts(
        head: Version,
        head_base: Version,
        born: Version,
        origin: Option<(u64, Version)>,
        nodes: BTreeMap<Version, Node>,
    ) -> Result<VolumeVersions, String> {
        let heads = nodes
            .values()
            .filter(|n| n.state == VersionState::Head)
            .count();
        if heads != 1 || nodes.get(&head).map(|n| n.state) != Some(VersionState::Head) {
            return Err(format!("{heads} heads, head said to be {head}"));
        }
        let parent = nodes.get(&head).and_then(|n| n.parent);
        if head_base >= head || parent.is_some_and(|p| p != head_base) {
            return Err(format!(
                "head {head} has base {head_base} but parent {}",
                parent.unwrap_or(0)
            ));
        }
        for (&v, n) in &nodes {
            if v < born || v == 0 {
                return Err(format!("version {v} older than the volume here ({born})"));
            }
            if let Some(p) = n.parent {
                if p >= v || !nodes.contains_key(&p) {
                    return Err(format!("version {v} has a bad parent {p}"));
                }
            }
        }
        Ok(VolumeVersions {
            head,
            head_base,
            born,
            origin,
            nodes,
        })
    }

    pub fn head(&self) -> Version {
        self.head
    }

    /// The head's base in the Master's tree (0: none): its parent here
    /// where it has one.
    pub fn base(&self) -> Version {
        self.head_base
    }

    pub fn born(&self) -> Version {
        self.born
    }

    pub fn origin(&self) -> Option<(u64, Version)> {
        self.origin
    }

    pub fn nodes(&self) -> &BTreeMap<Version, Node> {
        &self.nodes
    }

    /// Whether `v` can be read: the head or a retained version.
    pub fn readable(&self, v: Version) -> bool {
        self.nodes
            .get(&v)
            .is_some_and(|n| n.state != VersionState::Gone)
    }

    /// Whether `v` is a retained version.
    pub fn retained(&self, v: Version) -> bool {
        self.nodes
            .get(&v)
            .is_some_and(|n| n.state == VersionState::Retained)
    }

    /// The readable versions: the retained ones and the head.
    pub fn live(&self) -> impl Iterator<Item = Version> + '_ {
        self.nodes
            .iter()
            .filter(|(_, n)| n.state != VersionState::Gone)
            .map(|(&v, _)| v)
    }

    /// `v` and its ancestors, newest first (empty for an unknown `v`).
    pub fn lineage(&self, v: Version) -> Vec<Version> {
        let mut out = Vec::new();
        let mut at = Some(v);
        while let Some(x) = at {
            let Some(n) = self.nodes.get(&x) else { break };
            out.push(x);
            at = n.parent;
        }
        out
    }

    /// Moves the head to `head`, whose parent in the Master's tree is
    /// `base` (0: none). Idempotent: a head already there is `Same`.
    ///
    /// The Master starts a volume's next version change only once every
    /// group took the previous one, so a group is at most one step
    /// behind: `base` is its head (a snapshot), or a retained version (a
    /// rollback), or older than anything it held (a rollback past its
    /// first version here).
    pub fn advance(&mut self, head: Version, base: Version) -> Result<Step, StepError> {
        if head == self.head {
            return Ok(Step::Same);
        }
        if head < self.head {
            return Err(StepError::Behind {
                head: self.head,
                base: self.base(),
            });
        }
        let old = self.head;
        let (step, parent) = if base == old {
            let retained = self
                .nodes
                .values()
                .filter(|n| n.state == VersionState::Retained)
                .count();
            if retained >= MAX_RETAINED_VERSIONS {
                return Err(StepError::Full);
            }
            self.set_state(old, VersionState::Retained);
            (Step::Marked, Some(old))
        } else if self.retained(base) {
            self.set_state(old, VersionState::Gone);
            (Step::RolledBack, Some(base))
        } else if base < self.born {
            self.set_state(old, VersionState::Gone);
            (Step::Restarted, None)
        } else {
            return Err(StepError::UnknownBase { base });
        };
        self.nodes.insert(
            head,
            Node {
                parent,
                state: VersionState::Head,
            },
        );
        self.head = head;
        self.head_base = base;
        Ok(step)
    }

    /// Makes retained version `v` unreadable; false if it is not retained.
    pub fn drop_version(&mut self, v: Version) -> bool {
        if !self.retained(v) {
            return false;
        }
        self.set_state(v, VersionState::Gone);
        true
    }

    /// Removes gone versions that tag no entry (`tagged` says which do)
    /// and that no remaining version descends from; returns how many.
    pub fn prune(&mut self, tagged: impl Fn(Version) -> bool) -> usize {
        let mut removed = 0;
        loop {
            let parents: std::collections::BTreeSet<Version> =
                self.nodes.values().filter_map(|n| n.parent).collect();
            let leaves: Vec<Version> = self
                .nodes
                .iter()
                .filter(|(v, n)| {
                    n.state == VersionState::Gone && !parents.contains(v) && !tagged(**v)
                })
                .map(|(&v, _)| v)
                .collect();
            if leaves.is_empty() {
                return removed;
            }
            for v in &leaves {
                self.nodes.remove(v);
            }
            removed += leaves.len();
        }
    }

    fn set_state(&mut self, v: Version, state: VersionState) {
        if let Some(n) = self.nodes.get_mut(&v) {
            n.state = state;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_one_step_behind_takes_the_step_the_base_names() {
        let mut t = VolumeVersions::new(1, 0, None);
        assert_eq!(t.advance(2, 1), Ok(Step::Marked));
        assert_eq!(t.advance(2, 1), Ok(Step::Same));
        assert_eq!(t.advance(3, 2), Ok(Step::Marked));
        // Roll back to 1: 3 is abandoned, 4 starts on 1.
        assert_eq!(t.advance(4, 1), Ok(Step::RolledBack));
        assert_eq!(t.lineage(4), vec![4, 1]);
        assert!(!t.readable(3));
        assert!(t.readable(2));
        // An old tag is told the head.
        assert_eq!(t.advance(3, 2), Err(StepError::Behind { head: 4, base: 1 }));
        // A base this group never had and not older than it: refused.
        assert_eq!(t.advance(9, 3), Err(StepError::UnknownBase { base: 3 }));
    }

    #[test]
    fn a_rollback_past_the_first_version_here_starts_empty() {
        let mut t = VolumeVersions::new(5, 0, None);
        assert_eq!(t.advance(6, 5), Ok(Step::Marked));
        assert_eq!(t.advance(8, 3), Ok(Step::Restarted));
        assert_eq!(t.lineage(8), vec![8]);
        assert!(t.readable(5));
        // A stale writer learns the Master's base (3), not the missing
        // parent here: told "base 0", it would carry that to a group that
        // holds 3 and empty the volume there.
        assert_eq!(t.advance(7, 6), Err(StepError::Behind { head: 8, base: 3 }));
    }

    #[test]
    fn a_volume_first_heard_of_at_a_rolled_back_head_keeps_its_base() {
        let mut t = VolumeVersions::new(16, 1, None);
        assert_eq!(t.lineage(16), vec![16]);
        assert_eq!(
            t.advance(15, 14),
            Err(StepError::Behind { head: 16, base: 1 })
        );
    }
}
