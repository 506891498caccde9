//! Moments worth jumping to, and where they start in a trace.

use std::collections::HashMap;

use raft_core::trace::{Kind, NodeRole, Record};
use raft_core::NodeId;
use serde::{Deserialize, Serialize};

/// A kind of moment the page can jump to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Moment {
    /// A node starts a (pre-)campaign (a `timeout`, or a `role` change to
    /// precandidate or candidate; when one start is recorded as both, right
    /// after each other on that node, only the first counts), or becomes
    /// leader (`role` change to leader).
    Election,
    /// A `config` event other than `loaded` (a node's configuration
    /// changed: appended, rolled back, installed from a snapshot).
    ConfigChange,
    /// A `snapshot` event that is not a chunk (`taken`, `offered`,
    /// `resumed`, `installed`, `discarded`).
    Snapshot,
    /// `crash`, `restart`, `pause`, `resume`, `partition`, `heal`, `drop`
    /// or `tickrate`.
    Fault,
}

impl Moment {
    /// Every moment, in declaration order.
    pub const ALL: [Moment; 4] = [
        Moment::Election,
        Moment::ConfigChange,
        Moment::Snapshot,
        Moment::Fault,
    ];

    /// The name used in JSON: `election`, `config_change`, `snapshot`,
    /// `fault`.
    pub fn name(self) -> &'static str {
        match self {
            Moment::Election => "election",
            Moment::ConfigChange => "config_change",
            Moment::Snapshot => "snapshot",
            Moment::Fault => "fault",
        }
    }

    /// The moment called `name` (see [`Moment::name`]).
    pub fn from_name(name: &str) -> Option<Moment> {
        Moment::ALL.into_iter().find(|m| m.name() == name)
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// For each moment, the sorted indices of the events that start one.
#[derive(Debug, Clone, Default)]
pub(crate) struct Moments {
    starts: [Vec<usize>; 4],
    /// Per node: its last record.
    last_of: HashMap<NodeId, usize>,
    /// Per node: the last campaign start counted (index, was a timeout, was
    /// a pre-vote). One start shows as two records, `role` then `timeout`
    /// in the simulator, `timeout` then `role` from real nodes: the second
    /// of such a pair is not counted again.
    counted: HashMap<NodeId, (usize, bool, bool)>,
}

impl Moments {
    pub fn new(records: &[Record]) -> Moments {
        let mut m = Moments::default();
        for (i, r) in records.iter().enumerate() {
            m.push(i, r);
        }
        m
    }

    /// Takes in record `i`, the one after those already taken.
    pub fn push(&mut self, i: usize, r: &Record) {
        let prev = self.last_of.insert(r.node, i);
        let counted = &mut self.counted;
        // `pre`: a pre-vote round.
        let mut start = |timeout: bool, pre: bool| {
            let pair = matches!(
                (prev, counted.get(&r.node)),
                (Some(p), Some(&(c, was_timeout, was_pre)))
                    if p == c && was_timeout != timeout && was_pre == pre
            );
            if pair {
                counted.remove(&r.node);
                false
            } else {
                counted.insert(r.node, (i, timeout, pre));
                true
            }
        };
        let election = |yes: bool| -> &[Moment] {
            if yes {
                &[Moment::Election]
            } else {
                &[]
            }
        };
        let kinds: &[Moment] = match &r.kind {
            Kind::Role { from, .. } if *from != r.role => match r.role {
                NodeRole::Precandidate => election(start(false, true)),
                NodeRole::Candidate => election(start(false, false)),
                NodeRole::Leader => &[Moment::Election],
                _ => &[],
            },
            Kind::Timeout { pre_vote } => election(start(true, *pre_vote)),
            Kind::Config { change, .. } if change != "loaded" => &[Moment::ConfigChange],
            Kind::Snapshot { phase, .. }
                if !matches!(phase.as_str(), "chunk_sent" | "chunk_received") =>
            {
                &[Moment::Snapshot]
            }
            Kind::Crash
            | Kind::Restart
            | Kind::Pause
            | Kind::Resume
            | Kind::Partition { .. }
            | Kind::Heal
            | Kind::Drop { .. }
            | Kind::Tickrate { .. } => &[Moment::Fault],
            _ => &[],
        };
        for k in kinds {
            self.starts[k.slot()].push(i);
        }
    }

    /// The first start of `what` at or after `from`.
    pub fn next(&self, from: usize, what: Moment) -> Option<usize> {
        let v = &self.starts[what.slot()];
        v.get(v.partition_point(|&i| i < from)).copied()
    }

    /// The last start of `what` before `from`.
    pub fn prev(&self, from: usize, what: Moment) -> Option<usize> {
        let v = &self.starts[what.slot()];
        let k = v.partition_point(|&i| i < from);
        k.checked_sub(1).map(|k| v[k])
    }

    /// Every start of `what`.
    pub fn all(&self, what: Moment) -> &[usize] {
        &self.starts[what.slot()]
    }
}
