//! The body of a node's `GET /status`: one serde type for the server that
//! writes it, the client and `cdsctl top` that read it, and the
//! simulator's live view, which builds the same picture of a simulated
//! node.
//!
//! Reading is lenient where nodes of another version may differ: a field
//! an older node does not send takes its default (`groups` is 1), a leader
//! of 0 is none, the role is read in any case, and fields this version
//! does not know are ignored. The JSON field names are the API's
//! (`book/src/cluster.md`, "The node's HTTP API"); `match` is
//! [`Status::matched`] here.

use std::collections::BTreeMap;

use raft_core::{NodeId, RaftStatus, Role};
use serde::{Deserialize, Deserializer, Serialize};

/// One node's report of one of its groups, and of its process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The node's id.
    #[serde(default)]
    pub id: NodeId,
    /// The group reported on (the first hosted, unless `?group=` named
    /// another).
    #[serde(default)]
    pub group: u64,
    /// Role in that group, lower case ("leader", "follower", ...; "?" when
    /// a report lacks it).
    #[serde(default = "unknown_role", deserialize_with = "lower_case")]
    pub role: String,
    /// Current term.
    #[serde(default)]
    pub term: u64,
    /// The leader it knows of (a leader of 0 reads as none).
    #[serde(default, deserialize_with = "nonzero_id")]
    pub leader: Option<NodeId>,
    /// Commit index.
    #[serde(default)]
    pub commit: u64,
    /// Applied index.
    #[serde(default)]
    pub applied: u64,
    /// First index held in its log.
    #[serde(default)]
    pub first_index: u64,
    /// Last index in its log.
    #[serde(default)]
    pub last_index: u64,
    /// Voters of its configuration.
    #[serde(default)]
    pub voters: Vec<NodeId>,
    /// The old voters while a joint configuration is in force (else empty).
    #[serde(default)]
    pub outgoing: Vec<NodeId>,
    /// Learners of its configuration.
    #[serde(default)]
    pub learners: Vec<NodeId>,
    /// Leader only: the highest index known to match on each member (JSON
    /// `match`, keyed by id).
    #[serde(rename = "match", default)]
    pub matched: BTreeMap<NodeId, u64>,
    /// Index of its latest snapshot, if any.
    #[serde(default)]
    pub snapshot_index: Option<u64>,
    /// Whether the group is quiescent on this node (no ticks, no
    /// heartbeats).
    #[serde(default)]
    pub quiescent: bool,
    /// Groups the process hosts (1 for a node that does not say).
    #[serde(default = "one")]
    pub groups: u64,
    /// How many of them it leads.
    #[serde(default)]
    pub groups_led: u64,
    /// The process id the node reports (none from the simulator).
    #[serde(default)]
    pub pid: Option<u64>,
    /// Its fault filter; present only while one is set, so a healthy
    /// node's answer has no `filter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
}

/// A node's fault filter (`POST /admin/filter`), as `/status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// Peers it sends nothing to.
    #[serde(default)]
    pub drop_to: Vec<NodeId>,
    /// Peers whose messages it drops.
    #[serde(default)]
    pub drop_from: Vec<NodeId>,
    /// Peers its messages to are delayed, by how many milliseconds.
    #[serde(default)]
    pub delay_to_ms: BTreeMap<NodeId, u64>,
}

impl Filter {
    /// A filter that cuts the node off from `peers` both ways (what a
    /// partition sets).
    pub fn cutting(peers: Vec<NodeId>) -> Filter {
        Filter {
            drop_to: peers.clone(),
            drop_from: peers,
            delay_to_ms: BTreeMap::new(),
        }
    }
}

impl Status {
    /// The report of node `id` from its group's Raft status; the process
    /// fields say one group, led if this node leads it, no pid and no
    /// filter (the server and the simulator set what they know).
    pub fn from_raft(id: NodeId, group: u64, s: RaftStatus) -> Status {
        let leads = s.role == Role::Leader;
        Status {
            id,
            group,
            role: s.role.name().to_owned(),
            term: s.term,
            leader: s.leader,
            commit: s.commit,
            applied: s.applied,
            first_index: s.first_index,
            last_index: s.last_index,
            voters: s.membership.voters,
            outgoing: s.membership.outgoing,
            learners: s.membership.learners,
            matched: s.peer_match,
            snapshot_index: s.last_snapshot,
            quiescent: s.quiescent,
            groups: 1,
            groups_led: u64::from(leads),
            pid: None,
            filter: None,
        }
    }

    /// Whether this node says it leads.
    pub fn is_leader(&self) -> bool {
        self.role == "leader"
    }

    /// The peers its fault filter cuts it off from, either way, ascending.
    pub fn cut(&self) -> Vec<NodeId> {
        let Some(f) = &self.filter else {
            return Vec::new();
        };
        let mut cut: Vec<NodeId> = f.drop_to.iter().chain(&f.drop_from).copied().collect();
        cut.sort_unstable();
        cut.dedup();
        cut
    }

    /// The peers its fault filter delays messages to, ascending.
    pub fn delayed(&self) -> Vec<NodeId> {
        self.filter
            .as_ref()
            .map(|f| f.delay_to_ms.keys().copied().collect())
            .unwrap_or_default()
    }
}

impl Default for Status {
    /// A report with nothing in it: what [`Deserialize`] makes of `{}`.
    fn default() -> Status {
        Status {
            id: 0,
            group: 0,
            role: unknown_role(),
            term: 0,
            leader: None,
            commit: 0,
            applied: 0,
            first_index: 0,
            last_index: 0,
            voters: Vec::new(),
            outgoing: Vec::new(),
            learners: Vec::new(),
            matched: BTreeMap::new(),
            snapshot_index: None,
            quiescent: false,
            groups: one(),
            groups_led: 0,
            pid: None,
            filter: None,
        }
    }
}

fn unknown_role() -> String {
    "?".to_owned()
}

fn one() -> u64 {
    1
}

/// The role in lower case, so a node that spells it "Leader" is understood.
fn lower_case<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    String::deserialize(d).map(|s| s.to_ascii_lowercase())
}

/// A leader id, with 0 (and null) read as none.
fn nonzero_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NodeId>, D::Error> {
    Option::<NodeId>::deserialize(d).map(|l| l.filter(|&l| l != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(v: serde_json::Value) -> Status {
        serde_json::from_value(v).expect("a /status body")
    }

    #[test]
    fn status_is_read_leniently() {
        let s = read(
            serde_json::json!({"id": 2, "role": "Leader", "term": 3, "leader": 2,
            "commit": 10, "applied": 9, "voters": [1, 2, 3], "extra": true}),
        );
        assert!(s.is_leader());
        assert_eq!(
            (s.id, s.term, s.leader, s.commit, s.applied),
            (2, 3, Some(2), 10, 9)
        );
        assert_eq!(s.voters, vec![1, 2, 3]);
        assert_eq!(s.groups, 1, "an older node hosts one group");
        let full = read(serde_json::json!({"role": "leader", "outgoing": [1],
            "learners": [4], "first_index": 5, "last_index": 9, "match": {"1": 9, "2": 7},
            "snapshot_index": 4, "pid": 77}));
        assert_eq!((full.outgoing, full.learners), (vec![1], vec![4]));
        assert_eq!((full.first_index, full.last_index), (5, 9));
        assert_eq!(full.matched.get(&2), Some(&7));
        assert_eq!((full.snapshot_index, full.pid), (Some(4), Some(77)));
        let none = read(serde_json::json!({"role": "follower", "leader": null}));
        assert_eq!(none.leader, None);
        assert!(!none.is_leader());
        assert!(
            none.cut().is_empty() && none.delayed().is_empty(),
            "no filter"
        );
        assert_eq!(read(serde_json::json!({"leader": 0})).leader, None);
        assert_eq!(read(serde_json::json!({})).role, "?");
        let cut = read(serde_json::json!({"filter": {"drop_to": [3, 1],
            "drop_from": [1, 2], "delay_to_ms": {"4": 200}}}));
        assert_eq!((cut.cut(), cut.delayed()), (vec![1, 2, 3], vec![4]));
    }

    /// What the server writes is what the API has always shown: the same
    /// field names, `match` keyed by id, and no `filter` while none is set.
    #[test]
    fn the_wire_names_are_the_apis() {
        let mut s = Status {
            id: 1,
            role: "leader".into(),
            leader: Some(1),
            ..Status::default()
        };
        s.matched.insert(2, 7);
        let v = serde_json::to_value(&s).expect("encode");
        for key in [
            "id",
            "group",
            "role",
            "term",
            "leader",
            "commit",
            "applied",
            "first_index",
            "last_index",
            "voters",
            "outgoing",
            "learners",
            "match",
            "snapshot_index",
            "quiescent",
            "groups",
            "groups_led",
            "pid",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["match"]["2"], 7);
        assert!(v.get("filter").is_none());
        assert_eq!(read(v), s, "round trip");
    }
}
