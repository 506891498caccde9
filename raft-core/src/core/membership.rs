//! Group membership: who votes, who only listens, and how it changes.
//!
//! A configuration takes effect on a node as soon as its entry is appended
//! to the node's log, committed or not (Raft thesis §4.1, and braft). A node
//! therefore always uses the latest configuration in its log, and when a
//! conflicting suffix is truncated the configuration rolls back with it.
//! Using it at append time (rather than at commit, as etcd does) means a
//! leader counts a new voter's acknowledgements for the very entry that adds
//! it, which is what makes the joint-consensus argument of the paper hold
//! as written.
//!
//! Each configuration entry carries the change *and* the whole resulting
//! configuration (as braft's entries do), so a node that joins with no
//! configuration of its own learns the full membership from the first
//! configuration entry it receives.
//!
//! Changes of more than one voter go through joint consensus: `EnterJoint`
//! makes C_old,new (decisions need a majority of both sets), and `LeaveJoint`
//! makes C_new alone. Adding or removing a single voter may go in one step.
//! Learners receive the log but never vote and never count toward a quorum.

use std::collections::BTreeSet;

use super::message::NodeId;

/// Most members (voters of both sets and learners) a group may have. Every
/// member costs the leader a heartbeat per interval and a progress entry,
/// and every configuration entry and snapshot carries the whole list: a
/// production group has 3 or 5. Well below what the wire format accepts
/// (`runtime::codec::MAX_CONF_NODES`, 4096), so a configuration the core
/// accepts can always be sent.
pub const MAX_MEMBERS: usize = 1024;
/// The members of a group at one point of its log.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Membership {
    /// The voters (C_new while joint), sorted.
    pub voters: Vec<NodeId>,
    /// The outgoing voters (C_old) while joint, sorted; empty otherwise.
    pub outgoing: Vec<NodeId>,
    /// Non-voting members that receive the log, sorted.
    pub learners: Vec<NodeId>,
}

/// One configuration change, as carried by a `ConfChange` log entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConfChange {
    /// Add learners (nodes that receive the log and do not vote).
    AddLearners(Vec<NodeId>),
    /// Remove learners.
    RemoveLearners(Vec<NodeId>),
    /// Single-step change: make `id` a voter (a learner is promoted).
    AddVoter(NodeId),
    /// Single-step change: remove voter `id` (it leaves the group).
    RemoveVoter(NodeId),
    /// Enter joint consensus from the current voters to `voters`; `learners`
    /// is the learner set afterwards.
    EnterJoint {
        voters: Vec<NodeId>,
        learners: Vec<NodeId>,
    },
    /// Leave joint consensus: only the incoming voters remain.
    LeaveJoint,
}

fn sorted(ids: impl IntoIterator<Item = NodeId>) -> Vec<NodeId> {
    let set: BTreeSet<NodeId> = ids.into_iter().collect();
    set.into_iter().collect()
}

impl Membership {
    /// A plain (not joint) configuration of `voters`.
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership {
            voters: sorted(voters),
            outgoing: Vec::new(),
            learners: Vec::new(),
        }
    }

    /// Whether decisions need majorities of two voter sets.
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Whether `id` votes (in either set while joint).
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.outgoing.contains(&id)
    }

    /// Whether `id` is a learner.
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id)
    }

    /// Whether `id` belongs to the group in any role.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Whether it has no member at all (a node that has not learned its
    /// configuration yet).
    pub fn is_empty(&self) -> bool {
        self.voters.is_empty() && self.outgoing.is_empty() && self.learners.is_empty()
    }

    /// Every voter of either set, sorted.
    pub fn all_voters(&self) -> Vec<NodeId> {
        sorted(self.voters.iter().chain(&self.outgoing).copied())
    }

    /// Every member (voters of both sets and learners), sorted.
    pub fn members(&self) -> Vec<NodeId> {
        sorted(
            self.voters
                .iter()
                .chain(&self.outgoing)
                .chain(&self.learners)
                .copied(),
        )
    }

    /// Refuses a configuration with more than [`MAX_MEMBERS`] members.
    pub fn check_size(&self) -> Result<(), String> {
        let n = self.members().len();
        if n > MAX_MEMBERS {
            return Err(format!(
                "{n} members is more than a group may have ({MAX_MEMBERS})"
            ));
        }
        Ok(())
    }

    /// The configuration after `change`, or why the change does not apply
    /// to this configuration (including a result past [`MAX_MEMBERS`]).
    pub fn apply(&self, change: &ConfChange) -> Result<Membership, String> {
        let mut m = self.clone();
        match change {
            ConfChange::AddLearners(ids) => {
                for &id in ids {
                    if self.contains(id) {
                        return Err(format!("node {id} is already a member"));
                    }
                }
                m.learners = sorted(m.learners.iter().chain(ids).copied());
            }
            ConfChange::RemoveLearners(ids) => {
                for id in ids {
                    if !self.is_learner(*id) {
                        return Err(format!("node {id} is not a learner"));
                    }
                }
                m.learners.retain(|l| !ids.contains(l));
            }
            ConfChange::AddVoter(id) => {
                if self.is_joint() {
                    return Err("a single-step change cannot run while joint".into());
                }
                if self.voters.contains(id) {
                    return Err(format!("node {id} is already a voter"));
                }
                m.learners.retain(|l| l != id);
                m.voters = sorted(m.voters.iter().chain([id]).copied());
            }
            ConfChange::RemoveVoter(id) => {
                if self.is_joint() {
                    return Err("a single-step change cannot run while joint".into());
                }
                if !self.voters.contains(id) {
                    return Err(format!("node {id} is not a voter"));
                }
                if self.voters.len() == 1 {
                    return Err("cannot remove the last voter".into());
                }
                m.voters.retain(|v| v != id);
            }
            ConfChange::EnterJoint { voters, learners } => {
                if self.is_joint() {
                    return Err("already joint".into());
                }
                if voters.is_empty() {
                    return Err("the new voter set is empty".into());
                }
                if voters.iter().any(|v| learners.contains(v)) {
                    return Err("a node cannot be both voter and learner".into());
                }
                m.outgoing = self.voters.clone();
                m.voters = sorted(voters.iter().copied());
                m.learners = sorted(learners.iter().copied());
            }
            ConfChange::LeaveJoint => {
                if !self.is_joint() {
                    return Err("not joint".into());
                }
                m.outgoing.clear();
            }
        }
        m.check_size()?;
        Ok(m)
    }
}

impl Membership {
    /// How `self` differs from `before`, as one word for traces:
    /// `learned` (a node without a configuration got its first),
    /// `joint_entered`, `joint_left`, `voter_added`, `voter_removed`,
    /// `learner_added`, `learner_removed`, or `changed`.
    pub fn change_from(&self, before: &Membership) -> &'static str {
        if before == &Membership::default() {
            "learned"
        } else if self.is_joint() && !before.is_joint() {
            "joint_entered"
        } else if !self.is_joint() && before.is_joint() {
            "joint_left"
        } else if self.voters.len() > before.voters.len() {
            "voter_added"
        } else if self.voters.len() < before.voters.len() {
            "voter_removed"
        } else if self.learners.len() > before.learners.len() {
            "learner_added"
        } else if self.learners.len() < before.learners.len() {
            "learner_removed"
        } else {
            "changed"
        }
    }
}

/// What a `ConfChange` log entry holds: the change and its result.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConfEntry {
    pub change: ConfChange,
    /// The configuration once the change took effect.
    pub result: Membership,
}

fn put_list(out: &mut Vec<u8>, ids: &[NodeId]) {
    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
}

/// Reads a length-prefixed id list at `*pos`.
fn get_list(data: &[u8], pos: &mut usize) -> Result<Vec<NodeId>, String> {
    let n = data
        .get(*pos..*pos + 4)
        .ok_or("truncated configuration entry")?;
    let n = u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize;
    *pos += 4;
    let mut ids = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let b = data
            .get(*pos..*pos + 8)
            .ok_or("truncated configuration entry")?;
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        ids.push(u64::from_le_bytes(w));
        *pos += 8;
    }
    Ok(ids)
}

impl ConfEntry {
    /// The bytes stored in a `ConfChange` entry.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.change.encode();
        put_list(&mut out, &self.result.voters);
        put_list(&mut out, &self.result.outgoing);
        put_list(&mut out, &self.result.learners);
        out
    }

    /// Parses bytes made by [`ConfEntry::encode`].
    pub fn decode(data: &[u8]) -> Result<ConfEntry, String> {
        let (change, mut pos) = ConfChange::decode_at(data)?;
        let voters = get_list(data, &mut pos)?;
        let outgoing = get_list(data, &mut pos)?;
        let learners = get_list(data, &mut pos)?;
        if pos != data.len() {
            return Err("trailing bytes after configuration entry".into());
        }
        Ok(ConfEntry {
            change,
            result: Membership {
                voters,
                outgoing,
                learners,
            },
        })
    }
}

impl ConfChange {
    /// The bytes of the change alone.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let list = put_list;
        match self {
            ConfChange::AddLearners(ids) => {
                out.push(1);
                list(&mut out, ids);
            }
            ConfChange::RemoveLearners(ids) => {
                out.push(2);
                list(&mut out, ids);
            }
            ConfChange::AddVoter(id) => {
                out.push(3);
                list(&mut out, &[*id]);
            }
            ConfChange::RemoveVoter(id) => {
                out.push(4);
                list(&mut out, &[*id]);
            }
            ConfChange::EnterJoint { voters, learners } => {
                out.push(5);
                list(&mut out, voters);
                list(&mut out, learners);
            }
            ConfChange::LeaveJoint => out.push(6),
        }
        out
    }

    /// Parses bytes made by [`ConfChange::encode`].
    pub fn decode(data: &[u8]) -> Result<ConfChange, String> {
        let (c, pos) = ConfChange::decode_at(data)?;
        if pos != data.len() {
            return Err("trailing bytes after configuration change".into());
        }
        Ok(c)
    }

    /// Parses a change at the start of `data`; returns it and where it ends.
    fn decode_at(data: &[u8]) -> Result<(ConfChange, usize), String> {
        let mut pos = 1;
        let mut list = || get_list(data, &mut pos);
        let one = |ids: Vec<NodeId>| -> Result<NodeId, String> {
            match ids[..] {
                [id] => Ok(id),
                _ => Err("expected one node id".into()),
            }
        };
        let change = match data.first() {
            Some(1) => ConfChange::AddLearners(list()?),
            Some(2) => ConfChange::RemoveLearners(list()?),
            Some(3) => ConfChange::AddVoter(one(list()?)?),
            Some(4) => ConfChange::RemoveVoter(one(list()?)?),
            Some(5) => {
                let voters = list()?;
                let learners = list()?;
                ConfChange::EnterJoint { voters, learners }
            }
            Some(6) => ConfChange::LeaveJoint,
            Some(t) => return Err(format!("unknown configuration change tag {t}")),
            None => return Err("empty configuration change".into()),
        };
        Ok((change, pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        let all = [
            ConfChange::AddLearners(vec![4, 5]),
            ConfChange::RemoveLearners(vec![4]),
            ConfChange::AddVoter(4),
            ConfChange::RemoveVoter(2),
            ConfChange::EnterJoint {
                voters: vec![1, 4, 5],
                learners: vec![6],
            },
            ConfChange::LeaveJoint,
        ];
        for c in all {
            assert_eq!(ConfChange::decode(&c.encode()), Ok(c.clone()));
            let bytes = c.encode();
            if bytes.len() > 1 {
                assert!(ConfChange::decode(&bytes[..bytes.len() - 1]).is_err());
            }
        }
        assert!(ConfChange::decode(&[]).is_err());
        assert!(ConfChange::decode(&[9]).is_err());
        let e = ConfEntry {
            change: ConfChange::AddVoter(4),
            result: Membership::new([1, 2, 3, 4]),
        };
        assert_eq!(ConfEntry::decode(&e.encode()), Ok(e.clone()));
        let bytes = e.encode();
        assert!(ConfEntry::decode(&bytes[..bytes.len() - 3]).is_err());
    }

    #[test]
    fn joint_changes_go_through_both_steps() {
        let m = Membership::new([1, 2, 3]);
        let j = m
            .apply(&ConfChange::EnterJoint {
                voters: vec![3, 4, 5],
                learners: vec![],
            })
            .unwrap();
        assert!(j.is_joint());
        assert_eq!(j.all_voters(), vec![1, 2, 3, 4, 5]);
        assert!(
            j.apply(&ConfChange::AddVoter(6)).is_err(),
            "one change at a time"
        );
        let n = j.apply(&ConfChange::LeaveJoint).unwrap();
        assert_eq!(n, Membership::new([3, 4, 5]));
    }

    #[test]
    fn single_steps_and_learners() {
        let m = Membership::new([1, 2, 3]);
        let m = m.apply(&ConfChange::AddLearners(vec![4])).unwrap();
        assert!(m.is_learner(4) && !m.is_voter(4));
        assert!(m.apply(&ConfChange::AddLearners(vec![4])).is_err());
        let m = m.apply(&ConfChange::AddVoter(4)).unwrap();
        assert!(m.is_voter(4) && !m.is_learner(4), "promoted");
        let m = m.apply(&ConfChange::RemoveVoter(1)).unwrap();
        assert_eq!(m.voters, vec![2, 3, 4]);
        assert!(Membership::new([1])
            .apply(&ConfChange::RemoveVoter(1))
            .is_err());
    }
}
