//! What a leader knows about each follower: how far it matches, what to send
//! next, and how much may be in flight.
//!
//! A follower is in one of two states. In `Probe` the leader does not know
//! where the logs agree: it sends one `Append` and waits for the answer (or
//! the next heartbeat) before sending another. In `Replicate` the logs agree
//! up to `matched`: the leader streams batches optimistically, bounded by the
//! in-flight window.

use std::collections::VecDeque;

/// Replication state of one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    /// Finding the point where the logs agree, one message at a time.
    Probe,
    /// Streaming entries, up to the in-flight window.
    Replicate,
    /// The entries it needs were compacted: it is installing the snapshot
    /// at `index` and gets no appends meanwhile.
    Snapshot { index: u64 },
}

/// A bounded window of the last indexes of `Append`s in flight.
#[derive(Debug, Clone)]
pub struct Inflights {
    cap: usize,
    last_indexes: VecDeque<u64>,
}

impl Inflights {
    /// A window of at most `cap` messages.
    pub fn new(cap: usize) -> Inflights {
        Inflights {
            cap,
            last_indexes: VecDeque::with_capacity(cap),
        }
    }
    /// Whether no more messages may be sent.
    pub fn full(&self) -> bool {
        self.last_indexes.len() >= self.cap
    }
    /// Records a message whose last entry is `last`.
    pub fn add(&mut self, last: u64) {
        debug_assert!(!self.full());
        self.last_indexes.push_back(last);
    }
    /// Frees every message whose entries are all acknowledged by `index`.
    pub fn free_to(&mut self, index: u64) {
        while self.last_indexes.front().is_some_and(|&l| l <= index) {
            self.last_indexes.pop_front();
        }
    }
    /// Frees the oldest message (a heartbeat answer proves the link works).
    pub fn free_first(&mut self) {
        self.last_indexes.pop_front();
    }
    /// Forgets everything in flight.
    pub fn reset(&mut self) {
        self.last_indexes.clear();
    }
    /// Messages in flight.
    pub fn count(&self) -> usize {
        self.last_indexes.len()
    }
}

/// The leader's view of one peer.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Highest index known to match the leader's log.
    pub matched: u64,
    /// Next index to send.
    pub next: u64,
    pub state: ProgressState,
    /// In `Probe`: a message is out, wait before sending the next.
    pub probe_sent: bool,
    pub inflights: Inflights,
    /// Heard from since the last CheckQuorum round.
    pub recent_active: bool,
    /// Highest leader tick this peer has acknowledged (lease reads).
    pub lease_ack: u64,
    /// Highest ReadIndex round this peer has acknowledged.
    pub read_ack: u64,
    /// Leader ticks since this peer last asked for a snapshot chunk.
    pub snapshot_idle: u32,
}

impl Progress {
    /// A fresh view of a peer, probing from `next`.
    pub fn new(next: u64, max_inflight: usize) -> Progress {
        Progress {
            matched: 0,
            next,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights: Inflights::new(max_inflight),
            recent_active: false,
            lease_ack: 0,
            read_ack: 0,
            snapshot_idle: 0,
        }
    }

    /// Switches to installing the snapshot at `index`.
    pub fn become_snapshot(&mut self, index: u64) {
        self.state = ProgressState::Snapshot { index };
        self.probe_sent = false;
        self.snapshot_idle = 0;
        self.inflights.reset();
    }

    /// Switches to probing from `matched + 1`.
    pub fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.next = self.matched + 1;
        self.probe_sent = false;
        self.inflights.reset();
    }

    /// Switches to streaming after `matched`.
    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next = self.matched + 1;
        self.probe_sent = false;
        self.inflights.reset();
    }

    /// Whether the leader must hold back sending entries.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot { .. } => true,
        }
    }

    /// Records that an `Append` ending at `last` (with `n` entries) was sent.
    pub fn sent(&mut self, last: u64, n: usize) {
        match self.state {
            ProgressState::Replicate => {
                if n > 0 {
                    self.next = last + 1;
                    self.inflights.add(last);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot { .. } => {}
        }
    }

    /// Records a successful answer up to `index`; returns whether it told
    /// the leader anything new.
    pub fn maybe_update(&mut self, index: u64) -> bool {
        let updated = index > self.matched;
        if updated {
            self.matched = index;
            self.probe_sent = false;
        }
        self.next = self.next.max(index + 1);
        updated
    }

    /// Handles a rejection of the `Append` after `rejected`, where the peer
    /// suggests that its log may match up to `hint`. Returns false if the
    /// rejection is stale (answers an older message) and must be ignored.
    pub fn maybe_decr_to(&mut self, rejected: u64, hint: u64) -> bool {
        match self.state {
            ProgressState::Replicate => {
                if rejected <= self.matched {
                    return false;
                }
                self.next = self.matched + 1;
                true
            }
            ProgressState::Probe => {
                if self.next == 0 || self.next - 1 != rejected {
                    return false;
                }
                let next = rejected.min(hint + 1).max(self.matched + 1);
                if next == self.next {
                    // The follower refuses what it acknowledged before (its
                    // log went backwards): there is nothing lower to try.
                    // Stay paused until the next heartbeat answer instead
                    // of sending the same append back at network speed.
                    return false;
                }
                self.next = next;
                self.probe_sent = false;
                true
            }
            // No appends are out while a snapshot installs.
            ProgressState::Snapshot { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflight_window_bounds_replication() {
        let mut p = Progress::new(1, 2);
        p.become_replicate();
        p.sent(5, 5);
        assert!(!p.is_paused());
        p.sent(9, 4);
        assert!(p.is_paused(), "two messages fill a window of two");
        assert_eq!(p.next, 10);
        assert!(p.maybe_update(5));
        p.inflights.free_to(5);
        assert!(!p.is_paused());
    }

    #[test]
    fn stale_rejections_are_ignored() {
        let mut p = Progress::new(11, 4);
        // Probe: only the answer to the message after next-1 counts.
        assert!(!p.maybe_decr_to(7, 3));
        assert!(p.maybe_decr_to(10, 3));
        assert_eq!(p.next, 4, "jumps straight to the hint");
        p.matched = 3;
        p.become_replicate();
        assert!(!p.maybe_decr_to(2, 0), "at or below match: stale");
    }

    #[test]
    fn a_follower_refusing_what_it_acknowledged_is_not_probed_at_network_speed() {
        let mut p = Progress::new(1, 4);
        assert!(p.maybe_update(10));
        p.become_probe();
        p.sent(10, 0);
        assert_eq!(p.next, 11);
        // It answers "no match at 10, try 5": but 10 matched before.
        assert!(!p.maybe_decr_to(10, 5), "nothing lower to try: wait");
        assert!(p.is_paused(), "until a heartbeat answer unpauses it");
        assert_eq!(p.next, 11);
    }
}
