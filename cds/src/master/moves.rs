//! Replica moves: how the Master changes where a group's replicas live.
//!
//! A move takes one replica of a group off a server (`from`) and gives one
//! to another (`to`). Repair (`from` is dead), drain (`from` is being
//! emptied) and capacity balance (`from` holds more than its share) are all
//! moves; they differ only in why the scheduler (`schedule.rs`) starts
//! them.
//!
//! The plan is recorded here, in the Master's replicated state, so a Master
//! restart or a new leading Master carries on with it; the steps are taken
//! by the group itself. The Master is the Executor (a component of the
//! leading Master, not a process of its own): the leader BlockServer of the
//! group hears of the move in its heartbeat answer and brings the group's
//! Raft configuration one step closer each time (add `to` as a learner;
//! once it caught up, change the voters from `replicas` to the target, one
//! joint-consensus change). Each step is decided from the group's own
//! configuration, so repeating one after a restart of anybody is harmless.
//! When a leader reports the target configuration committed, the Master
//! records it (`Finish`): `replicas` becomes the target and `epoch` the
//! configuration's log index. A move whose `to` died before it became a
//! voter is abandoned; one that reached the log is always finished.

use serde::{Deserialize, Serialize};

use super::api::{ConfReport, GcOrder};
use super::state::{Group, MasterError, MasterReply, MasterState};

/// Why a replica moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveReason {
    /// `from` is dead (not heard for the grace period) or its disk failed.
    Repair,
    /// `from` is being drained.
    Drain,
    /// `from` holds more replicas than its share.
    Balance,
    /// The group shares a failure domain it could leave (after a repair
    /// that had to fall back to a lower level, or new servers).
    Spread,
}

impl MoveReason {
    pub fn as_str(self) -> &'static str {
        match self {
            MoveReason::Repair => "repair",
            MoveReason::Drain => "drain",
            MoveReason::Balance => "balance",
            MoveReason::Spread => "spread",
        }
    }
}

/// A move under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub from: u64,
    pub to: u64,
    pub reason: MoveReason,
    /// When the Master started it (ms since the Unix epoch, from the
    /// proposing leader's clock: for reports only, never for decisions).
    #[serde(default)]
    pub started_ms: u64,
}

/// A change to moves and server states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "move", rename_all = "snake_case")]
pub enum MoveCommand {
    /// Starts moving `group`'s replica on `from` to `to`.
    Start { group: u64, mv: Move },
    /// The group's leader reported `voters` committed at `conf_index`:
    /// the move is done.
    Finish {
        group: u64,
        voters: Vec<u64>,
        conf_index: u64,
    },
    /// Gives up a move whose `to` never became a voter.
    Abandon { group: u64 },
    /// With no move under way, records the voters the group's leader
    /// reported committed at `conf_index` (newer than the record).
    Record {
        group: u64,
        voters: Vec<u64>,
        conf_index: u64,
    },
    /// Starts (or stops) draining a server.
    Drain { server: u64, drained: bool },
    /// Forgets a server that holds no replica and is in no move.
    RemoveServer { server: u64 },
}

impl MasterState {
    pub(super) fn apply_move(&mut self, c: &MoveCommand) -> Result<MasterReply, MasterError> {
        match c {
            MoveCommand::Start { group, mv } => {
                if !self.servers.contains_key(&mv.to) {
                    return Err(MasterError::NoServer { id: mv.to });
                }
                let g = self.group_mut(*group)?;
                let bad = |why: &str| {
                    Err(MasterError::BadMove {
                        group: *group,
                        why: why.to_string(),
                    })
                };
                if g.moving.is_some() {
                    return bad("a move is under way");
                }
                if !g.replicas.contains(&mv.from) {
                    return bad("the source holds no replica");
                }
                if g.replicas.contains(&mv.to) {
                    return bad("the target holds a replica already");
                }
                g.moving = Some(mv.clone());
                Ok(MasterReply::Ok)
            }
            MoveCommand::Finish {
                group,
                voters,
                conf_index,
            } => {
                let g = self.group_mut(*group)?;
                if g.moving.is_none() || g.target() != *voters || *conf_index < g.epoch {
                    return Err(MasterError::BadMove {
                        group: *group,
                        why: format!("{voters:?} at {conf_index} is not the move's target"),
                    });
                }
                g.replicas = voters.clone();
                g.epoch = *conf_index;
                g.moving = None;
                Ok(MasterReply::Ok)
            }
            MoveCommand::Abandon { group } => {
                self.group_mut(*group)?.moving = None;
                Ok(MasterReply::Ok)
            }
            MoveCommand::Record {
                group,
                voters,
                conf_index,
            } => {
                let g = self.group_mut(*group)?;
                if g.moving.is_some() || *conf_index <= g.epoch || voters.is_empty() {
                    return Err(MasterError::BadMove {
                        group: *group,
                        why: format!("{voters:?} at {conf_index} is not newer than the record"),
                    });
                }
                g.replicas = voters.clone();
                g.epoch = *conf_index;
                Ok(MasterReply::Ok)
            }
            MoveCommand::Drain { server, drained } => {
                let s = self
                    .servers
                    .get_mut(server)
                    .ok_or(MasterError::NoServer { id: *server })?;
                s.drained = *drained;
                Ok(MasterReply::Ok)
            }
            MoveCommand::RemoveServer { server } => {
                if !self.servers.contains_key(server) {
                    return Err(MasterError::NoServer { id: *server });
                }
                let held = self.groups.values().filter(|g| g.involves(*server)).count();
                let source = self
                    .groups
                    .values()
                    .filter(|g| g.moving.as_ref().is_some_and(|m| m.from == *server))
                    .count();
                if held > 0 || source > 0 {
                    return Err(MasterError::ServerBusy {
                        id: *server,
                        why: format!("{held} replicas, {source} moves from it"),
                    });
                }
                self.servers.remove(server);
                Ok(MasterReply::Ok)
            }
        }
    }

    fn group_mut(&mut self, id: u64) -> Result<&mut Group, MasterError> {
        self.groups.get_mut(&id).ok_or(MasterError::NoGroup { id })
    }
}

/// The replica GC order for `server`'s replica of `g`, if it should go:
/// the Master's record gives the server no replica of the group (nor one
/// being moved to it), and the group's leader, as it last reported its
/// configuration (`conf`), has committed one that lists the server in no
/// role (a learner whose files vanished would keep its old match at the
/// leader), at an index at least the record's epoch. The order carries
/// that configuration's index: the server removes its replica only if its
/// own configuration is older, or leaves it out too (`blockserver/gc.rs`).
pub fn gc_order(server: u64, g: &Group, conf: Option<&ConfReport>) -> Option<GcOrder> {
    let conf = conf?;
    let listed = conf.voters.contains(&server)
        || conf.outgoing.contains(&server)
        || conf.learners.contains(&server);
    let ok = !g.involves(server) && !listed && conf.committed && conf.index >= g.epoch;
    ok.then_some(GcOrder {
        group: g.id,
        epoch: conf.index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::state::{MasterCommand, Server};

    fn state() -> MasterState {
        let mut st = MasterState::default();
        for id in 1..=4 {
            st.apply(&MasterCommand::RegisterServer {
                server: Server {
                    id,
                    raft_addr: format!("127.0.0.1:{}", 1000 + id),
                    data_addr: format!("127.0.0.1:{}", 2000 + id),
                    location: Default::default(),
                    disks: vec![1 << 30],
                    drained: false,
                    pools: Vec::new(),
                },
            });
        }
        st.groups.insert(
            7,
            Group {
                id: 7,
                replicas: vec![1, 2, 3],
                epoch: 0,
                moving: None,
                pool: crate::pool::default_pool(),
            },
        );
        st
    }

    fn mv(from: u64, to: u64) -> MasterCommand {
        MasterCommand::Move(MoveCommand::Start {
            group: 7,
            mv: Move {
                from,
                to,
                reason: MoveReason::Repair,
                started_ms: 0,
            },
        })
    }

    #[test]
    fn a_move_finishes_only_at_its_target() {
        let mut st = state();
        assert_eq!(st.apply(&mv(3, 4)), MasterReply::Ok);
        // One move at a time.
        assert!(matches!(st.apply(&mv(2, 4)), MasterReply::Error { .. }));
        let finish = |voters: Vec<u64>, conf_index| {
            MasterCommand::Move(MoveCommand::Finish {
                group: 7,
                voters,
                conf_index,
            })
        };
        assert!(matches!(
            st.apply(&finish(vec![1, 2, 3], 9)),
            MasterReply::Error { .. }
        ));
        assert_eq!(st.apply(&finish(vec![1, 2, 4], 9)), MasterReply::Ok);
        let g = &st.groups[&7];
        assert_eq!(
            (g.replicas.clone(), g.epoch, g.moving.clone()),
            (vec![1, 2, 4], 9, None)
        );
    }

    #[test]
    fn a_server_is_removed_only_when_it_holds_nothing() {
        let mut st = state();
        let rm = |server| MasterCommand::Move(MoveCommand::RemoveServer { server });
        assert!(matches!(st.apply(&rm(3)), MasterReply::Error { .. }));
        assert_eq!(st.apply(&mv(1, 4)), MasterReply::Ok);
        // 4 is being given a replica: not removable either.
        assert!(matches!(st.apply(&rm(4)), MasterReply::Error { .. }));
        assert!(matches!(st.apply(&rm(9)), MasterReply::Error { .. }));
        st.groups.get_mut(&7).expect("group").moving = None;
        assert_eq!(st.apply(&rm(4)), MasterReply::Ok);
        assert!(!st.servers.contains_key(&4));
    }
}
