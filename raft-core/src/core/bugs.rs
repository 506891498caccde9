//! Classic Raft bugs, kept behind a switch to prove the simulator catches them.
//!
//! Each bug is one `if` at the exact place where the correct rule lives, so
//! the correct rule and its broken twin read side by side. Outside builds
//! with the `bug-injection` feature, [`Config::bug`](super::Config) is always
//! `false` and the compiler removes the broken branch.

use std::fmt;
use std::str::FromStr;

/// One injectable bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bug {
    /// A leader commits an entry of an earlier term once a majority holds
    /// it (Raft paper, Figure 8): the entry can later be overwritten.
    CommitOldTermByCount,
    /// A voter grants its vote without checking that the candidate's log is
    /// at least as up to date as its own: a leader can miss committed entries.
    VoteForStaleLog,
    /// A voter replies to a vote request without making the vote durable:
    /// after a crash it can vote again in the same term, electing two leaders.
    VoteNotPersisted,
    /// A follower truncates its log after every `Append`'s entries, even
    /// when they all match: a delayed, duplicated `Append` deletes newer
    /// (possibly committed) entries.
    TruncateOnAppend,
    /// A change of several voters switches straight from C_old to C_new,
    /// without joint consensus: two disjoint majorities can decide.
    SkipJoint,
    /// The leader keeps counting a removed voter's acknowledgements toward
    /// the (smaller) new majority.
    CountRemovedMember,
    /// Driver: every `Ready`'s messages leave before its write is durable,
    /// not only a leader's appends: a follower acknowledges entries (or a
    /// voter grants a vote) that a crash then takes back.
    SendBeforePersist,
    /// Driver: committed entries that arrive in the same `Ready` as their
    /// commit index are applied before they are persisted: the state
    /// machine runs ahead of the node's own log (for a durable state
    /// machine, past what the log can replay after a crash).
    ApplyUnpersisted,
    /// A quiescent follower ignores its host's report that its leader's
    /// node died: with the leader gone nothing ever wakes it, and the
    /// group never elects another leader.
    QuiescentIgnoresDeadLeader,
}

impl Bug {
    /// Every injectable bug.
    pub const ALL: [Bug; 9] = [
        Bug::CommitOldTermByCount,
        Bug::VoteForStaleLog,
        Bug::VoteNotPersisted,
        Bug::TruncateOnAppend,
        Bug::SkipJoint,
        Bug::CountRemovedMember,
        Bug::SendBeforePersist,
        Bug::ApplyUnpersisted,
        Bug::QuiescentIgnoresDeadLeader,
    ];

    /// The bug's name on command lines.
    pub fn name(self) -> &'static str {
        match self {
            Bug::CommitOldTermByCount => "commit-old-term-by-count",
            Bug::VoteForStaleLog => "vote-for-stale-log",
            Bug::VoteNotPersisted => "vote-not-persisted",
            Bug::TruncateOnAppend => "truncate-on-append",
            Bug::SkipJoint => "skip-joint",
            Bug::CountRemovedMember => "count-removed-member",
            Bug::SendBeforePersist => "send-before-persist",
            Bug::ApplyUnpersisted => "apply-unpersisted",
            Bug::QuiescentIgnoresDeadLeader => "quiescent-ignores-dead-leader",
        }
    }
}

impl fmt::Display for Bug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Bug {
    type Err = String;
    fn from_str(s: &str) -> Result<Bug, String> {
        Bug::ALL.into_iter().find(|b| b.name() == s).ok_or_else(|| {
            let names: Vec<_> = Bug::ALL.iter().map(|b| b.name()).collect();
            format!("unknown bug '{s}' (known: {})", names.join(", "))
        })
    }
}

/// A set of switched-on bugs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct BugSet(u32);

impl BugSet {
    /// The set holding only `bug`.
    pub fn only(bug: Bug) -> BugSet {
        BugSet(1 << bug as u32)
    }
    /// Whether `bug` is switched on.
    pub fn has(self, bug: Bug) -> bool {
        self.0 & (1 << bug as u32) != 0
    }
}
