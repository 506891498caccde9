//! The node's log lines about its Raft transport: refusals, bad frames,
//! timeouts and budget closures, as the transport counts them.
//!
//! The transport itself never writes to stderr (it is a library, and an
//! attacker who can make it refuse connections could otherwise flood the
//! log). This task reads its counters every [`LOG_EVERY`] and, only when a
//! counter that signals misbehaviour rose, prints one line with the
//! increases and at most [`EVENTS_PER_LINE`] of the newest events. So the
//! log grows by at most one bounded line per interval, whatever the peer
//! or stranger does, and `/metrics` shows the same counters
//! ([`TransportStats::defense_metrics`]).

use std::fmt::Write as _;
use std::time::Duration;

use raft_core::runtime::transport::{
    TransportEventKind, TransportHandle, TransportMetric, TransportStats,
};
use raft_core::NodeId;

/// How often the counters are compared: at most one line per interval.
pub const LOG_EVERY: Duration = Duration::from_secs(5);
/// Events named in one line, newest last.
pub const EVENTS_PER_LINE: usize = 3;

/// Watches `transport` until the task is aborted.
pub async fn run(id: NodeId, transport: TransportHandle) {
    let mut last = transport.stats();
    loop {
        tokio::time::sleep(LOG_EVERY).await;
        let now = transport.stats();
        if let Some(line) = report(id, &last, &now) {
            eprintln!("{line}");
        }
        last = now;
    }
}

/// The line to log for the change from `before` to `after`, if an alarm
/// counter rose.
fn report(id: NodeId, before: &TransportStats, after: &TransportStats) -> Option<String> {
    let rises: Vec<(TransportMetric, u64)> = before
        .defense_metrics()
        .iter()
        .zip(after.defense_metrics())
        .filter(|(_, a)| a.alarm)
        .filter_map(|(b, a)| {
            let d = a.value.saturating_sub(b.value);
            (d > 0).then_some((a, d))
        })
        .collect();
    if rises.is_empty() {
        return None;
    }
    let mut line = format!("node {id}: transport:");
    for (m, d) in &rises {
        let name = m
            .name
            .trim_start_matches("transport_")
            .trim_end_matches("_total");
        let _ = write!(line, " {name} +{d}");
    }
    let since = before.events.last().map(|e| e.at);
    let fresh: Vec<_> = after
        .events
        .iter()
        .filter(|e| since.is_none_or(|t| e.at > t))
        .filter(|e| {
            !matches!(
                e.kind,
                TransportEventKind::PeerConnected { .. }
                    | TransportEventKind::InboundAccepted { .. }
            )
        })
        .collect();
    if !fresh.is_empty() {
        line.push_str("; latest:");
        for e in fresh.iter().rev().take(EVENTS_PER_LINE).rev() {
            let _ = write!(line, " [{:?}]", e.kind);
        }
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::runtime::transport::{Refusal, TransportEvent};

    #[test]
    fn one_bounded_line_only_when_an_alarm_counter_rises() {
        let before = TransportStats::default();
        let mut after = TransportStats {
            sent: 100,
            received: 100,
            ..TransportStats::default()
        };
        assert_eq!(report(1, &before, &after), None, "traffic is not an alarm");
        after.refused_inbound = 1000;
        after.refused_unknown_peer = 1000;
        after.events = (0..100)
            .map(|i| TransportEvent {
                at: Duration::from_millis(i),
                kind: TransportEventKind::InboundRefused {
                    addr: "127.0.0.1:9".parse().unwrap(),
                    refusal: Refusal::UnknownPeer,
                },
            })
            .collect();
        let line = report(1, &before, &after).expect("a line");
        assert!(
            line.starts_with("node 1: transport: refused_inbound +1000 refused_unknown_peer +1000"),
            "{line}"
        );
        assert_eq!(
            line.matches("UnknownPeer").count(),
            EVENTS_PER_LINE,
            "{line}"
        );
    }
}
