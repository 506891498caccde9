//! What the page tells a reader, checked on real simulator traces: a
//! sentence for every event (every kind, every message type), the
//! membership badges (learner, spare, leaving leader, removed) and the
//! snapshot progress of a receiving node.

use std::collections::BTreeSet;

mod common;

use common::{sim_trace, sim_trace_quiesce};
use raft_core::trace::{Kind, NodeRole};
use viz_wasm::model::{Member, Replay};

/// Every event of a few faulty runs is told: a sentence naming its node,
/// never empty, never a placeholder; and across the runs every event kind
/// and every message type is met (so none is left without words).
#[test]
fn every_event_kind_and_message_type_has_a_sentence() {
    let mut kinds = BTreeSet::new();
    let mut msgs = BTreeSet::new();
    // The last run has quiescent groups: their quiesce and wake events.
    for (seed, reconfig, compact) in [
        (42, true, true),
        (7, false, true),
        (3, true, false),
        (5, false, false),
    ] {
        let text = if seed == 5 {
            sim_trace_quiesce(5, seed, 6000)
        } else {
            sim_trace(5, seed, 6000, reconfig, compact)
        };
        let replay = Replay::parse(&text).unwrap();
        // Checkpoints every 256 events: narrate each event from the state
        // right after it, the way the page gets it.
        for (i, r) in replay.records().iter().enumerate() {
            let said = replay.narration(i).expect("every event is told");
            assert_eq!(said.i, i);
            assert_eq!(said.ev, r.kind.name());
            let t = &said.text;
            assert!(t.len() > 12, "event {i}: {t:?}");
            assert!(!t.contains("{}") && !t.contains("None"), "event {i}: {t:?}");
            if r.node != 0 {
                assert!(
                    t.contains(&format!("n{}", r.node)),
                    "event {i} of n{}: {t:?}",
                    r.node
                );
            }
            kinds.insert(r.kind.name());
            if let Kind::Send { m, .. } = &r.kind {
                msgs.insert(m.name());
            }
        }
    }
    // Every kind the trace format has (raft-core's one list of them).
    for k in Kind::NAMES {
        assert!(kinds.contains(k), "no {k} event met: {kinds:?}");
    }
    for m in [
        "pre_vote",
        "pre_vote_resp",
        "vote",
        "vote_resp",
        "append",
        "append_resp",
        "heartbeat",
        "heartbeat_resp",
        "timeout_now",
        "install_snapshot",
        "snapshot_chunk_request",
        "snapshot_chunk",
    ] {
        assert!(msgs.contains(m), "no {m} message met: {msgs:?}");
    }
}

/// The sentences a student reads at the key moments say what they mean.
#[test]
fn key_moments_are_told_with_their_meaning() {
    let text = sim_trace(5, 42, 5000, false, false);
    let replay = Replay::parse(&text).unwrap();
    let find = |pred: &dyn Fn(&Kind, NodeRole) -> bool| {
        replay
            .records()
            .iter()
            .position(|r| pred(&r.kind, r.role))
            .expect("the run has it")
    };
    let said = |i: usize| replay.narration(i).unwrap().text;

    let t = find(&|k, _| matches!(k, Kind::Timeout { pre_vote: true }));
    let r = &replay.records()[t];
    assert_eq!(
        said(t),
        format!(
            "n{}'s election timer fired (no word from a leader for a whole timeout): it asks the others for pre-votes for term {}",
            r.node,
            r.term + 1
        )
    );
    let c = find(&|k, role| matches!(k, Kind::Commit { .. }) && role == NodeRole::Leader);
    let (node, index) = match replay.records()[c].kind {
        Kind::Commit { index } => (replay.records()[c].node, index),
        _ => unreachable!(),
    };
    assert_eq!(
        said(c),
        format!("n{node} has a majority of the voters (3 of 5) holding index {index}: entries up to {index} are committed and can be applied")
    );
    let l = find(&|k, role| matches!(k, Kind::Role { .. }) && role == NodeRole::Leader);
    assert!(said(l).contains("won the election"), "{}", said(l));
    let p = find(&|k, _| matches!(k, Kind::Partition { .. }));
    assert!(said(p).starts_with("The network splits: "), "{}", said(p));
    // The state's own `said` is the last applied event's sentence.
    let st = replay.state_at(c + 1);
    assert_eq!(st.said.unwrap().text, said(c));
    assert!(replay.state_at(0).said.is_none());
}

/// In `--reconfig` runs the badges follow the configuration: spares before
/// they join, learners while they catch up, a leader that removed itself
/// reads "leaving", and a node taken out reads "removed".
#[test]
fn membership_badges_follow_the_configuration() {
    let mut seen = BTreeSet::new();
    for seed in 1..=40 {
        let text = sim_trace(5, seed, 5000, true, false);
        let replay = Replay::parse(&text).unwrap();
        let voters0: Vec<u64> = replay.header().meta["voters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let spares: Vec<u64> = replay
            .header()
            .nodes
            .iter()
            .copied()
            .filter(|id| !voters0.contains(id))
            .collect();
        for n in (0..=replay.len()).step_by(7) {
            let st = replay.state_at(n);
            let Some(c) = st.config.as_ref() else {
                continue;
            };
            for node in st.nodes.values() {
                let m = node.member;
                // Each badge agrees with the configuration drawn.
                match m {
                    Member::Learner => assert!(c.learners.contains(&node.id)),
                    Member::Voter => assert!(c.voters.contains(&node.id)),
                    Member::Joining => {
                        assert!(c.voters.contains(&node.id) && !c.outgoing.contains(&node.id))
                    }
                    Member::Leaving => assert!(
                        (c.outgoing.contains(&node.id) && !c.voters.contains(&node.id))
                            || (node.role == NodeRole::Leader && !c.voters.contains(&node.id))
                    ),
                    Member::Spare => assert!(spares.contains(&node.id), "seed {seed} at {n}"),
                    Member::Removed => assert!(!c.voters.contains(&node.id)),
                    Member::Unknown => unreachable!("a configuration is known"),
                }
                // A leader outside the voters appended its own removal: it
                // still leads (until that commits), so it is leaving, never
                // removed or spare.
                if node.role == NodeRole::Leader && !node.down {
                    assert!(
                        !matches!(m, Member::Removed | Member::Spare),
                        "seed {seed} at {n}: leader n{} is {m:?}",
                        node.id
                    );
                }
                if m == Member::Leaving && node.role == NodeRole::Leader {
                    seen.insert("leader, leaving");
                }
                seen.insert(match m {
                    Member::Learner => "learner",
                    Member::Spare => "spare",
                    Member::Removed => "removed",
                    Member::Joining => "joining",
                    Member::Leaving => "leaving",
                    _ => "voter",
                });
            }
        }
        if seen.len() >= 7 {
            break;
        }
    }
    for b in [
        "learner",
        "spare",
        "removed",
        "joining",
        "leaving",
        "leader, leaving",
    ] {
        assert!(seen.contains(b), "no {b:?} badge in 40 seeds: {seen:?}");
    }
}

/// A follower receiving a snapshot shows its progress, growing chunk by
/// chunk up to the size offered, and the progress is gone once installed.
#[test]
fn snapshot_progress_grows_until_installed() {
    let text = sim_trace(3, 7, 4000, false, true);
    let replay = Replay::parse(&text).unwrap();
    let mut checked = 0;
    for (i, r) in replay.records().iter().enumerate() {
        let Kind::Snapshot {
            phase,
            index,
            peer,
            bytes,
            ok,
        } = &r.kind
        else {
            continue;
        };
        let st = replay.state_at(i + 1);
        match (phase.as_str(), peer) {
            ("offered", Some(p)) => {
                let s = st.nodes[p]
                    .snap_in
                    .as_ref()
                    .expect("progress after an offer");
                assert_eq!(s.index, *index);
                assert_eq!(s.from, r.node);
                assert_eq!(s.total, *bytes);
            }
            ("chunk_received", _) if *ok => {
                let before = replay.state_at(i).nodes[&r.node].snap_in.clone();
                let after = st.nodes[&r.node].snap_in.clone().expect("still receiving");
                if let Some(b) = before.filter(|b| b.index == *index) {
                    assert!(after.got >= b.got, "progress went back at event {i}");
                    if after.total > 0 {
                        assert!(after.got <= after.total.max(b.got));
                    }
                    checked += 1;
                }
            }
            ("installed", _) => assert!(st.nodes[&r.node].snap_in.is_none()),
            _ => {}
        }
    }
    assert!(checked > 0, "no chunk arrived in this run");
}
