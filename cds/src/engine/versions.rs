//! The engine's versions: a tree, so a rollback costs nothing.
//!
//! Versions are numbered in the order they were created. The *head* is
//! the version writes go to. Marking freezes the head as a retained
//! version and starts a new head whose parent it is. A slice's entry is
//! tagged with the version it was written at, and a version sees the
//! entries of its *lineage* (itself, its parent, its parent's parent...):
//! of those, the one with the highest number is its content. Rolling back
//! to a retained version starts a new head whose parent is that version:
//! from that moment every read at the head sees the target's slices, and
//! the old head's entries, seen by no live version any more, are reclaimed
//! in the background. Dropping a version only stops it being readable;
//! its entries stay while a descendant still sees them.

use std::collections::BTreeMap;

/// A version number.
pub type Version = u64;

/// Where a version stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionState {
    /// The version writes go to (exactly one).
    Head,
    /// Frozen by a mark, readable until dropped.
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

/// The version tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versions {
    head: Version,
    /// The number the next version gets.
    next: Version,
    nodes: BTreeMap<Version, Node>,
}

impl Default for Versions {
    /// A new engine: version 1 is the head, with no parent.
    fn default() -> Versions {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            1,
            Node {
                parent: None,
                state: VersionState::Head,
            },
        );
        Versions {
            head: 1,
            next: 2,
            nodes,
        }
    }
}

impl Versions {
    /// Rebuilds a tree from its parts, checking it is one: one head, every
    /// parent present and older than its child, `next` above every number.
    pub fn from_parts(
        head: Version,
        next: Version,
        nodes: BTreeMap<Version, Node>,
    ) -> Result<Versions, String> {
        let heads = nodes
            .values()
            .filter(|n| n.state == VersionState::Head)
            .count();
        if heads != 1 || nodes.get(&head).map(|n| n.state) != Some(VersionState::Head) {
            return Err(format!("{heads} heads, head said to be {head}"));
        }
        for (&v, n) in &nodes {
            if v >= next {
                return Err(format!("version {v} not below next {next}"));
            }
            if let Some(p) = n.parent {
                if p >= v || !nodes.contains_key(&p) {
                    return Err(format!("version {v} has a bad parent {p}"));
                }
            }
        }
        Ok(Versions { head, next, nodes })
    }

    pub fn head(&self) -> Version {
        self.head
    }

    pub fn next(&self) -> Version {
        self.next
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

    /// The retained versions, oldest first.
    pub fn retained(&self) -> Vec<Version> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.state == VersionState::Retained)
            .map(|(&v, _)| v)
            .collect()
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

    /// Freezes the head as a retained version and starts a new head on
    /// it. Returns the frozen version.
    pub fn mark(&mut self) -> Version {
        let frozen = self.head;
        self.set_state(frozen, VersionState::Retained);
        self.start_head(frozen);
        frozen
    }

    /// Abandons the head and starts a new one on retained version `to`.
    /// The caller checked `to` is retained.
    pub fn rollback(&mut self, to: Version) {
        let old = self.head;
        self.set_state(old, VersionState::Gone);
        self.start_head(to);
    }

    /// Makes retained version `v` unreadable. The caller checked it is
    /// retained.
    pub fn drop_version(&mut self, v: Version) {
        self.set_state(v, VersionState::Gone);
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

    fn start_head(&mut self, parent: Version) {
        let v = self.next;
        self.next += 1;
        self.nodes.insert(
            v,
            Node {
                parent: Some(parent),
                state: VersionState::Head,
            },
        );
        self.head = v;
    }
}
