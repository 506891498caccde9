//! What a running node reports about itself.
//!
//! Operators and tests need one consistent picture of a node (its role, its
//! log, its peers, how well group commit works) without reaching into the
//! task that owns the core; [`NodeStatus`] is that picture, taken by the
//! node task between two `Ready`s.

use crate::core::{NodeId, RaftStatus};

use super::GroupId;

/// A snapshot of one node's state, consistent as of one moment of its task
/// (except `raft.applied`, which the apply task advances concurrently and
/// which is never ahead of `raft.commit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node's id.
    pub id: NodeId,
    /// The group it belongs to.
    pub group: GroupId,
    /// Its role, log and configuration, with `applied` the apply task's.
    pub raft: RaftStatus,
    /// Counters since the node started.
    pub metrics: NodeMetrics,
}

/// Counters since the node started. `log_syncs` against `proposals` shows
/// group commit at work: many proposals share one log sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeMetrics {
    /// `Ready`s handled (each persisted with at most one log sync).
    pub ready_batches: u64,
    /// `Ready`s that appended entries: one log sync (fsync) each.
    pub log_syncs: u64,
    /// Proposals appended to the log by this node as leader.
    pub proposals: u64,
    /// Proposals refused because the proposal queue was full (in
    /// proposals or in bytes).
    pub busy_refusals: u64,
    /// Inbound messages dropped because the inbox was full (in messages or
    /// in bytes; Raft retries).
    pub dropped_messages: u64,
    /// Bytes of inbound messages queued for the node task now.
    pub inbox_bytes: u64,
    /// Bytes of proposals queued for the node task now.
    pub proposal_bytes: u64,
    /// Snapshots of the state machine saved by this node.
    pub snapshots_saved: u64,
    /// Snapshots received from a leader and loaded.
    pub snapshots_installed: u64,
    /// Snapshots the state machine failed to write (skipped; the node
    /// goes on).
    pub snapshots_failed: u64,
    /// Linearizable reads confirmed by this node as leader (both kinds).
    pub reads: u64,
    /// Of those, reads served by the leader's lease, without a round.
    pub lease_reads: u64,
    /// Failed writes of the node's trace (tracing stops at the first).
    pub trace_errors: u64,
    /// How long each log sync (a `Ready` with entries) took to persist.
    pub log_sync_latency: Histogram,
    /// How long successful proposals took, from `propose` to the reply.
    pub propose_latency: Histogram,
}

/// Upper bounds of [`Histogram`]'s buckets, in microseconds: 50 µs to 5 s,
/// about three per decade, which covers an fsync on a fast SSD up to a
/// proposal stuck behind an election.
pub const HISTOGRAM_BOUNDS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000,
];

/// A latency histogram with fixed buckets ([`HISTOGRAM_BOUNDS_US`]), in the
/// shape Prometheus expects: cumulative counts are derived on export.
/// Fixed-size, so recording never allocates and the metrics stay `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Histogram {
    /// Observations per bucket: `buckets[i]` counts values at most
    /// `HISTOGRAM_BOUNDS_US[i]` and above the previous bound; the last slot
    /// counts values above every bound.
    pub buckets: [u64; HISTOGRAM_BOUNDS_US.len() + 1],
    /// Number of observations.
    pub count: u64,
    /// Sum of all observations, in microseconds.
    pub sum_us: u64,
}

impl Histogram {
    /// Records one observation.
    pub fn record(&mut self, d: std::time::Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = HISTOGRAM_BOUNDS_US.partition_point(|&b| b < us);
        self.buckets[i] += 1;
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// The smallest bucket bound below which at least `q` (0..=1) of the
    /// observations fall, in microseconds; `None` when empty or when the
    /// quantile lies past the last bound.
    pub fn quantile_bound_us(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let want = (q * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= want {
                return HISTOGRAM_BOUNDS_US.get(i).copied();
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn observations_land_in_their_bucket() {
        let mut h = Histogram::default();
        h.record(Duration::from_micros(50)); // on a bound: that bucket
        h.record(Duration::from_micros(51));
        h.record(Duration::from_micros(700));
        h.record(Duration::from_secs(60)); // past every bound
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[1], 1);
        assert_eq!(h.buckets[4], 1);
        assert_eq!(h.buckets[HISTOGRAM_BOUNDS_US.len()], 1);
        assert_eq!(h.count, 4);
        assert_eq!(h.sum_us, 50 + 51 + 700 + 60_000_000);
        assert_eq!(h.quantile_bound_us(0.5), Some(100));
        assert_eq!(h.quantile_bound_us(0.75), Some(1_000));
        assert_eq!(h.quantile_bound_us(1.0), None);
        assert_eq!(Histogram::default().quantile_bound_us(0.5), None);
    }
}
