//! The core's events as trace records.

use crate::core::{Event, Membership};

use super::schema::{Kind, TransferPhase};

/// The trace record kind for `ev`, or `None` for events that have no record
/// of their own (`ChangeDone` and `ChangeFailed`: the `config` record of the
/// configuration that follows shows the outcome). `prev` is the node's
/// configuration before `ev`, which names a `config` record's change.
pub fn event_kind(ev: &Event, prev: &Membership) -> Option<Kind> {
    let snap = |phase: &str, index, peer, bytes, ok| Kind::Snapshot {
        phase: phase.to_string(),
        index,
        peer,
        bytes,
        ok,
    };
    let kind = match ev {
        Event::ElectionTimeout { pre_vote } => Kind::Timeout {
            pre_vote: *pre_vote,
        },
        Event::CheckQuorumStepDown => Kind::Stepdown {
            reason: "check_quorum".into(),
        },
        Event::TransferStarted { to } => Kind::Transfer {
            phase: TransferPhase::Start,
            to: *to,
        },
        Event::TimeoutNowSent { to } => Kind::Transfer {
            phase: TransferPhase::TimeoutNow,
            to: *to,
        },
        Event::TransferAborted { to } => Kind::Transfer {
            phase: TransferPhase::Abort,
            to: *to,
        },
        Event::ReadReady { ctx, index, lease } => Kind::Read {
            ctx: *ctx,
            index: *index,
            lease: *lease,
        },
        Event::Voted {
            candidate,
            pre_vote,
            granted,
        } => Kind::Vote {
            candidate: *candidate,
            pre_vote: *pre_vote,
            granted: *granted,
        },
        Event::MembershipChanged { index, membership } => Kind::Config {
            change: membership.change_from(prev).to_string(),
            index: *index,
            voters: membership.voters.clone(),
            outgoing: membership.outgoing.clone(),
            learners: membership.learners.clone(),
        },
        Event::ChangeDone { .. } | Event::ChangeFailed { .. } => return None,
        Event::Quiesced => Kind::Quiesce {
            quiescent: true,
            reason: String::new(),
        },
        Event::Woke { reason } => Kind::Quiesce {
            quiescent: false,
            reason: reason.name().to_string(),
        },
        Event::SnapshotOffered { to, index, bytes } => {
            snap("offered", *index, Some(*to), *bytes, true)
        }
        Event::SnapshotChunkSent { to, index, len, .. } => {
            snap("chunk_sent", *index, Some(*to), *len, true)
        }
        Event::SnapshotChunkReceived { index, len, ok, .. } => {
            snap("chunk_received", *index, None, *len, *ok)
        }
        Event::SnapshotResumed { index, have } => snap("resumed", *index, None, *have, true),
        Event::SnapshotInstalled { index } => snap("installed", *index, None, 0, true),
        Event::SnapshotDiscarded { index, .. } => snap("discarded", *index, None, 0, false),
    };
    Some(kind)
}
