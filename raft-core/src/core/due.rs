//! When the clock next matters: how many ticks may pass before one of them
//! makes the core do something.
//!
//! A host of a thousand groups on a 50 ms tick would wake twenty thousand
//! group tasks a second only to count: most ticks change nothing but
//! counters (a follower's election timer has seconds to run, a leader
//! heartbeats every other tick). A driver that knows the next tick that
//! matters can sleep until then and deliver the ticks it skipped in one
//! burst, right before anything else reaches the core, as it already does
//! for a quiescent group. The core sees the same sequence of ticks and
//! inputs either way, so nothing it decides changes; only the real time of
//! a clock-driven action does, and that moves only if the answer here is
//! too large. The simulator checks it is not: a tick that this answer says
//! is not due never leaves work for a `Ready` (`sim::invariants`).

use super::progress::ProgressState;
use super::raft::{Raft, Role};
use crate::storage::Storage;

impl<S: Storage> Raft<S> {
    /// How many more [`Raft::tick`] calls may come before one of them can
    /// produce work (a message, an event, a state change a `Ready`
    /// carries): the ticks before it change only counters. `Some(1)`: the
    /// very next tick may act. `None`: no tick acts until some other input
    /// (a message, a proposal, a read, `set_peer_alive`) reaches the core,
    /// as for a quiescent group.
    ///
    /// The answer holds until the next input; ask again after each one.
    /// A driver that delivers skipped ticks before every input may tick
    /// the core only when this many ticks have come due.
    pub fn ticks_until_due(&self) -> Option<u64> {
        let mut due = self.snapshot_due();
        if self.quiesce.quiescent {
            return due;
        }
        let mut soonest = |d: u64| due = Some(due.map_or(d, |cur| cur.min(d)));
        if self.role == Role::Leader {
            if self.transfer.is_some() || self.change.is_some() {
                // Both advance and may act on any tick.
                return Some(1);
            }
            let until = |limit: u32, elapsed: u32| u64::from(limit.saturating_sub(elapsed)).max(1);
            // The check-quorum boundary resets a counter on every leader,
            // and acts when check-quorum is on: deliver it on time.
            soonest(until(self.cfg.election_tick, self.election_elapsed));
            soonest(until(self.cfg.heartbeat_tick, self.heartbeat_elapsed));
            if let Some(q) = self.ticks_until_quiesce() {
                soonest(q);
            }
        } else if self.election_elapsed < self.randomized_timeout {
            soonest(u64::from(self.randomized_timeout - self.election_elapsed));
        } else {
            // Past its timeout and unable to campaign (a learner): it may
            // nudge its leader on any of the ticks that follow.
            soonest(1);
        }
        due
    }

    /// Snapshot work the clock drives: a throttled leader's budget, a
    /// follower's silent snapshot slot, a receiver's chunk timeout.
    fn snapshot_due(&self) -> Option<u64> {
        let busy = if self.role == Role::Leader {
            !self.snap.idle()
                || self
                    .progress
                    .values()
                    .any(|p| matches!(p.state, ProgressState::Snapshot { .. }))
        } else {
            self.snap.receiving.is_some()
        };
        busy.then_some(1)
    }
}
