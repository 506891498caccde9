//! The replay model on real simulator traces, hand-made real-cluster
//! traces and broken input.

use std::collections::BTreeMap;
use std::time::Instant;

mod common;

use common::sim_trace;
use raft_core::trace::{Header, Kind, NodeRole, Record, TraceWriter};
use raft_core::NodeId;
use viz_wasm::model::{ClusterState, Moment, Replay};

/// A few different runs: plain, with membership changes and snapshots.
fn traces() -> Vec<(&'static str, String)> {
    vec![
        ("5 nodes seed 42", sim_trace(5, 42, 5000, false, false)),
        (
            "5 nodes seed 42 reconfig compact",
            sim_trace(5, 42, 5000, true, true),
        ),
        ("3 nodes seed 7 compact", sim_trace(3, 7, 4000, false, true)),
        (
            "5 nodes seed 3 reconfig",
            sim_trace(5, 3, 4000, true, false),
        ),
    ]
}

#[test]
fn model_new_leader_is_the_leader() {
    for (name, text) in traces() {
        let replay = Replay::parse(&text).expect(name);
        let mut leaders = 0;
        for (i, r) in replay.records().iter().enumerate() {
            if let Kind::Role { .. } = r.kind {
                if r.role == NodeRole::Leader {
                    let st = replay.state_at(i + 1);
                    assert_eq!(st.leader, Some(r.node), "{name}: event {i}");
                    assert_eq!(st.leader_term, r.term, "{name}: event {i}");
                    assert_eq!(st.nodes[&r.node].role, NodeRole::Leader);
                    assert!(st.max_term >= r.term);
                    leaders += 1;
                }
            }
        }
        assert!(leaders > 0, "{name}: no leader elected");
    }
}

/// Every node's term, role and commit are those of its latest record
/// (records made while down carry zeros, and a crash record the role
/// before it).
#[test]
fn model_nodes_follow_their_records() {
    for (name, text) in traces() {
        let replay = Replay::parse(&text).expect(name);
        let mut latest: BTreeMap<NodeId, &Record> = BTreeMap::new();
        let mut down: BTreeMap<NodeId, bool> = BTreeMap::new();
        for (i, r) in replay.records().iter().enumerate() {
            if r.node != 0 && r.role != NodeRole::Down {
                latest.insert(r.node, r);
            }
            match r.kind {
                Kind::Crash => {
                    down.insert(r.node, true);
                }
                Kind::Restart => {
                    down.insert(r.node, false);
                }
                _ => {}
            }
            if i % 53 != 0 && i + 1 != replay.len() {
                continue;
            }
            let st = replay.state_at(i + 1);
            assert_eq!(st.event, i + 1);
            assert_eq!(st.t, r.t);
            for (id, n) in &st.nodes {
                let is_down = down.get(id).copied().unwrap_or(false);
                assert_eq!(n.down, is_down, "{name}: event {i} node {id}");
                let Some(last) = latest.get(id) else {
                    assert_eq!((n.term, n.commit), (0, 0), "{name}: event {i} node {id}");
                    continue;
                };
                assert_eq!(n.commit, last.commit, "{name}: event {i} node {id}");
                assert_eq!(n.term, last.term, "{name}: event {i} node {id}");
                if is_down {
                    assert_eq!(n.role, NodeRole::Down);
                } else {
                    assert_eq!(n.role, last.role, "{name}: event {i} node {id}");
                }
                assert!(
                    n.applied <= n.commit.max(n.log.snap),
                    "{name}: event {i} node {id}"
                );
            }
        }
    }
}

/// The logs replay derives agree where Raft says they must: a committed
/// index has the same term on every node that still holds it, and every
/// `append` record's `last_term` is what replay derived.
#[test]
fn model_logs_are_consistent() {
    for (name, text) in traces() {
        let replay = Replay::parse(&text).expect(name);
        assert_eq!(replay.term_mismatches(), 0, "{name}");
        for n in (0..=replay.len()).step_by(101) {
            let st = replay.state_at(n);
            let mut committed: BTreeMap<u64, (u64, NodeId)> = BTreeMap::new();
            for (id, node) in &st.nodes {
                let log = &node.log;
                assert!(log.first >= 1);
                assert_eq!(
                    log.last,
                    log.terms.last_index().unwrap_or(log.first - 1),
                    "{name}"
                );
                if let Some(f) = log.terms.first_index() {
                    assert!(f >= log.first, "{name}: {log:?}");
                }
                // Terms never decrease along a log.
                for w in log.terms.as_slice().windows(2) {
                    assert!(w[0].2 < w[1].2, "{name}: node {id} at {n}: {log:?}");
                }
                for &(a, b, term) in log.terms.as_slice() {
                    let hi = b.min(node.commit);
                    // Sample the run's ends (terms are constant within).
                    for i in [a, hi] {
                        if a > hi {
                            break;
                        }
                        if let Some(&(t2, other)) = committed.get(&i) {
                            assert_eq!(
                                t2, term,
                                "{name}: after {n} events index {i}: node {id} has term {term}, node {other} {t2}"
                            );
                        } else {
                            committed.insert(i, (term, *id));
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn model_checkpoints_change_nothing() {
    for (name, text) in traces() {
        let replay = Replay::parse(&text).expect(name);
        let every_one = Replay::parse_with_checkpoints(&text, 1).expect(name);
        let len = replay.len();
        let mut ns = vec![
            0,
            1,
            2,
            255,
            256,
            257,
            511,
            512,
            1000,
            len / 2,
            len - 1,
            len,
        ];
        ns.extend((0..len).step_by(977));
        for n in ns {
            let a = replay.state_at(n);
            assert_eq!(a, replay.state_at_from_start(n), "{name}: n = {n}");
            assert_eq!(a, every_one.state_at(n), "{name}: n = {n}");
        }
        // Past the end clamps.
        assert_eq!(replay.state_at(len + 10), replay.state_at(len));
        assert_eq!(replay.state_at(usize::MAX).event, len);
    }
}

/// Messages in flight are the sends without a recv or drop yet.
#[test]
fn model_messages_in_flight() {
    let text = sim_trace(5, 42, 3000, false, false);
    let replay = Replay::parse(&text).expect("valid");
    assert!(replay.has_messages());
    let mut open: BTreeMap<u64, (NodeId, NodeId)> = BTreeMap::new();
    let mut seen_many = false;
    for (i, r) in replay.records().iter().enumerate() {
        match &r.kind {
            Kind::Send { id, to, .. } => {
                open.insert(*id, (r.node, *to));
            }
            Kind::Recv { id, .. } | Kind::Drop { id, .. } => {
                open.remove(id);
            }
            _ => {}
        }
        if i % 37 == 0 {
            let st = replay.state_at(i + 1);
            let got: BTreeMap<u64, (NodeId, NodeId)> =
                st.msgs.values().map(|m| (m.id, (m.from, m.to))).collect();
            assert_eq!(got, open, "event {i}");
            seen_many |= open.len() > 3;
        }
    }
    assert!(seen_many);
}

#[test]
fn model_campaigns_count_votes() {
    let text = sim_trace(5, 42, 5000, false, false);
    let replay = Replay::parse(&text).expect("valid");
    let mut checked = 0;
    let mut was: BTreeMap<NodeId, NodeRole> = BTreeMap::new();
    for (i, r) in replay.records().iter().enumerate() {
        let before = was.insert(r.node, r.role);
        if r.role == NodeRole::Leader && before != Some(NodeRole::Leader) {
            // Just before its first record as leader (its no-op's `append`
            // comes before its `role` record), it held a majority.
            let st = replay.state_at(i);
            let n = &st.nodes[&r.node];
            let c = n.campaign.as_ref().expect("a campaign before winning");
            assert!(!c.pre);
            assert_eq!(c.term, r.term);
            let voters = n.config.as_ref().map_or(5, |c| c.voters.len());
            assert!(c.granted.len() * 2 > voters, "event {i}: {c:?}");
            assert!(c.granted.contains(&r.node));
            checked += 1;
        }
    }
    assert!(checked > 0);
}

#[test]
fn model_find_moments() {
    for (name, text) in traces() {
        let replay = Replay::parse(&text).expect(name);
        let len = replay.len();
        for what in Moment::ALL {
            assert_eq!(Moment::from_name(what.name()), Some(what));
            // A linear scan for reference.
            let mut starts = Vec::new();
            let mut at = 0;
            while let Some(i) = replay.find_next(at, what) {
                assert!(i >= at);
                starts.push(i);
                at = i + 1;
            }
            assert_eq!(starts, replay.moments(what), "{name} {what:?}");
            assert_eq!(replay.find_next(len, what), None);
            assert_eq!(replay.find_prev(0, what), None);
            let mut back = Vec::new();
            let mut at = len;
            while let Some(i) = replay.find_prev(at, what) {
                assert!(i < at);
                back.push(i);
                at = i;
            }
            back.reverse();
            assert_eq!(back, starts, "{name} {what:?}");
            for &i in &starts {
                let r = replay.record(i).expect("in range");
                let ok = match what {
                    Moment::Election => {
                        matches!(r.kind, Kind::Timeout { .. })
                            || matches!(r.kind, Kind::Role { .. })
                                && matches!(
                                    r.role,
                                    NodeRole::Leader | NodeRole::Precandidate | NodeRole::Candidate
                                )
                    }
                    Moment::ConfigChange => {
                        matches!(&r.kind, Kind::Config { change, .. } if change != "loaded")
                    }
                    Moment::Snapshot => matches!(r.kind, Kind::Snapshot { .. }),
                    Moment::Fault => matches!(
                        r.kind,
                        Kind::Crash
                            | Kind::Restart
                            | Kind::Pause
                            | Kind::Resume
                            | Kind::Partition { .. }
                            | Kind::Heal
                            | Kind::Drop { .. }
                            | Kind::Tickrate { .. }
                    ),
                };
                assert!(ok, "{name}: {what:?} at {i}: {r:?}");
            }
        }
        // Every election win and every crash is found.
        for (i, r) in replay.records().iter().enumerate() {
            if matches!(&r.kind, Kind::Role { from, .. } if *from != NodeRole::Leader)
                && r.role == NodeRole::Leader
            {
                assert_eq!(replay.find_next(i, Moment::Election), Some(i), "{name}");
                assert_eq!(replay.find_prev(i + 1, Moment::Election), Some(i), "{name}");
            }
            if matches!(r.kind, Kind::Crash) {
                assert_eq!(replay.find_next(i, Moment::Fault), Some(i), "{name}");
            }
        }
        assert!(!replay.moments(Moment::Election).is_empty(), "{name}");
        assert!(!replay.moments(Moment::Fault).is_empty(), "{name}");
    }
    let (_, reconf) = &traces()[1];
    let replay = Replay::parse(reconf).expect("valid");
    assert!(!replay.moments(Moment::ConfigChange).is_empty());
    assert!(!replay.moments(Moment::Snapshot).is_empty());
}

#[test]
fn model_reconfig_and_snapshots_show() {
    let text = sim_trace(5, 42, 5000, true, true);
    let replay = Replay::parse(&text).expect("valid");
    let end = replay.state_at(replay.len());
    assert_eq!(end.nodes.len(), replay.header().nodes.len());
    let config = end.config.as_ref().expect("a configuration");
    assert!(!config.voters.is_empty());
    // Some node installed or took a snapshot and compacted.
    let mut compacted = false;
    let mut installed = false;
    for (i, r) in replay.records().iter().enumerate() {
        match &r.kind {
            Kind::Compact { upto } => {
                let st = replay.state_at(i + 1);
                let log = &st.nodes[&r.node].log;
                assert_eq!(log.first, upto + 1);
                assert!(log.terms.first_index().is_none_or(|f| f > *upto));
                compacted = true;
            }
            Kind::Snapshot { phase, index, .. } if phase == "installed" => {
                let st = replay.state_at(i + 1);
                let n = &st.nodes[&r.node];
                assert_eq!(n.log.snap, *index);
                assert_eq!(n.log.first, index + 1);
                assert_eq!(n.applied, *index);
                installed = true;
            }
            Kind::Config {
                voters, outgoing, ..
            } => {
                let st = replay.state_at(i + 1);
                let c = st.nodes[&r.node].config.as_ref().expect("just set");
                assert_eq!(&c.voters, voters);
                assert_eq!(&c.outgoing, outgoing);
            }
            _ => {}
        }
    }
    assert!(compacted && installed);
}

#[test]
fn model_partitions_and_clients() {
    let text = sim_trace(5, 42, 5000, false, false);
    let replay = Replay::parse(&text).expect("valid");
    let mut saw_partition = false;
    let mut saw_pending = false;
    for (i, r) in replay.records().iter().enumerate() {
        match &r.kind {
            Kind::Partition { blocked } => {
                assert_eq!(&replay.state_at(i + 1).blocked, blocked);
                saw_partition = true;
            }
            Kind::Heal => assert!(replay.state_at(i + 1).blocked.is_empty()),
            Kind::Client { client, seq, .. } => {
                let st = replay.state_at(i + 1);
                if r.kind_is_request() {
                    let p = &st.pending[client];
                    assert_eq!((p.seq, p.node), (*seq, r.node));
                    saw_pending = true;
                } else {
                    let last = st.replies.last().expect("a reply");
                    assert_eq!((last.client, last.seq, last.node), (*client, *seq, r.node));
                    assert!(st.replies.len() <= viz_wasm::model::REPLIES_KEPT);
                }
            }
            _ => {}
        }
    }
    assert!(saw_partition && saw_pending);
}

trait IsRequest {
    fn kind_is_request(&self) -> bool;
}

impl IsRequest for Record {
    fn kind_is_request(&self) -> bool {
        matches!(
            self.kind,
            Kind::Client {
                dir: raft_core::trace::ClientDir::Request,
                ..
            }
        )
    }
}

// ----- broken input ------------------------------------------------------

fn load_err(text: &str) -> viz_wasm::model::LoadError {
    match Replay::parse(text) {
        Ok(r) => panic!("expected an error, got {} events", r.len()),
        Err(e) => e,
    }
}

#[test]
fn model_rejects_bad_input() {
    for text in ["", "\n", "   "] {
        let e = load_err(text);
        assert_eq!(e.line, 1, "{text:?}: {e}");
    }
    let e = load_err("hello, world\n");
    assert_eq!(e.line, 1);
    assert!(e.reason.contains("not an rtrace file"), "{e}");
    let e = load_err("{\"foo\":1}\n{\"foo\":2}\n");
    assert_eq!(e.line, 1);
    assert!(e.reason.contains("not an rtrace file"), "{e}");
    let e = load_err("{\"format\":\"xtrace\",\"v\":1,\"source\":\"sim\",\"nodes\":[1]}\n");
    assert_eq!(e.line, 1);
    let e = load_err("{\"format\":\"rtrace\",\"v\":2,\"source\":\"sim\",\"nodes\":[1]}\n");
    assert_eq!(e.line, 1);
    assert!(e.reason.contains("unsupported version 2"), "{e}");
    assert_eq!(e.to_string(), format!("line 1: {}", e.reason));
    let json = serde_json::to_string(&e).expect("serializes");
    assert!(json.starts_with("{\"line\":1,\"reason\":"), "{json}");

    let text = sim_trace(3, 1, 500, false, false);
    let lines: Vec<&str> = text.lines().collect();
    // A bad line in the middle.
    let mut bad = lines.clone();
    bad[99] = "{\"t\":1,\"node\":1,\"ev\":\"explode\"}";
    let e = load_err(&(bad.join("\n") + "\n"));
    assert_eq!(e.line, 100, "{e}");
    let mut bad = lines.clone();
    bad[149] = "not json";
    assert_eq!(load_err(&bad.join("\n")).line, 150);
    // A blank line.
    let mut bad = lines.clone();
    bad[9] = "";
    assert_eq!(load_err(&bad.join("\n")).line, 10);
    // Cut mid-line.
    let cut = &text[..text.len() - 20];
    assert_eq!(load_err(cut).line, lines.len());
    // Only the header: valid, no events.
    let r = Replay::parse(lines[0]).expect("a header alone is a trace");
    assert_eq!(r.len(), 0);
    assert!(r.is_empty());
    let st = r.state_at(5);
    assert_eq!(st.event, 0);
    assert_eq!(st.nodes.len(), 3);
    assert_eq!(r.find_next(0, Moment::Fault), None);
    assert_eq!(r.find_prev(9, Moment::Fault), None);
}

/// Random damage to a real trace never panics: it is refused with a line
/// in range, or (if still valid) replays.
#[test]
fn model_never_panics_on_damage() {
    let text = sim_trace(3, 5, 1500, true, true);
    let lines: Vec<&str> = text.lines().collect();
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = |m: usize| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s % m as u64) as usize
    };
    let numbers = [
        "0",
        "1",
        "9",
        "18446744073709551615",
        "-1",
        "1e3",
        "null",
        "\"x\"",
    ];
    for round in 0..400 {
        let mut v: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        for _ in 0..1 + rand(3) {
            let i = rand(v.len());
            match rand(5) {
                0 => {
                    v.remove(i);
                }
                1 => {
                    let j = rand(v.len());
                    v.swap(i, j);
                }
                2 => {
                    // Replace one number by another.
                    let line = v[i].clone();
                    let digits: Vec<usize> = line
                        .char_indices()
                        .filter(|(_, c)| c.is_ascii_digit())
                        .map(|(k, _)| k)
                        .collect();
                    if let Some(&k) = digits.get(rand(digits.len().max(1))) {
                        let end = line[k..]
                            .find(|c: char| !c.is_ascii_digit())
                            .map_or(line.len(), |e| k + e);
                        v[i] = format!(
                            "{}{}{}",
                            &line[..k],
                            numbers[rand(numbers.len())],
                            &line[end..]
                        );
                    }
                }
                3 => {
                    let k = rand(v[i].len().max(1));
                    let mut line = v[i].clone();
                    if k < line.len() && line.is_char_boundary(k) {
                        line.truncate(k);
                    }
                    v[i] = line;
                }
                _ => {
                    let j = rand(v.len());
                    let dup = v[j].clone();
                    v.insert(i, dup);
                }
            }
        }
        let damaged = v.join("\n");
        match Replay::parse(&damaged) {
            Ok(r) => {
                for n in [0, r.len() / 3, r.len()] {
                    let st = r.state_at(n);
                    serde_json::to_string(&st).expect("serializes");
                }
                for what in Moment::ALL {
                    r.find_next(round, what);
                    r.find_prev(round, what);
                }
            }
            Err(e) => assert!(e.line >= 1 && e.line <= v.len() + 1, "{e}"),
        }
    }
}

/// Extreme values that pass the checker replay without panicking.
#[test]
fn model_extreme_values() {
    let max = u64::MAX;
    let h = Header::new("sim", vec![1, 2]);
    let rec = |t, node, role, kind| Record {
        t,
        node,
        term: max,
        role,
        commit: max,
        kind,
    };
    let f = NodeRole::Follower;
    let records = vec![
        rec(
            0,
            1,
            NodeRole::Leader,
            Kind::Append {
                first: 0,
                last: max,
                last_term: max,
            },
        ),
        rec(
            1,
            2,
            f,
            Kind::Append {
                first: max,
                last: 0,
                last_term: 0,
            },
        ),
        rec(
            1,
            2,
            f,
            Kind::Append {
                first: 5,
                last: max,
                last_term: 3,
            },
        ),
        rec(2, 1, f, Kind::Compact { upto: max }),
        rec(
            3,
            2,
            f,
            Kind::Snapshot {
                phase: "installed".into(),
                index: max,
                peer: None,
                bytes: 0,
                ok: true,
            },
        ),
        rec(
            3,
            2,
            f,
            Kind::Append {
                first: max,
                last: max,
                last_term: 1,
            },
        ),
        rec(
            4,
            1,
            f,
            Kind::Apply {
                first: max,
                last: 0,
            },
        ),
        rec(
            5,
            1,
            NodeRole::Precandidate,
            Kind::Role {
                from: f,
                leader: None,
            },
        ),
        rec(
            5,
            1,
            NodeRole::Precandidate,
            Kind::Timeout { pre_vote: true },
        ),
        rec(6, 2, f, Kind::Tickrate { period: max }),
        rec(6, 2, NodeRole::Down, Kind::Crash),
        rec(7, 2, f, Kind::Restart),
        rec(
            8,
            0,
            NodeRole::None,
            Kind::Partition {
                blocked: vec![(1, 2)],
            },
        ),
    ];
    let mut w = TraceWriter::in_memory(&h.with_meta("tick", max).with_meta("election_tick", max));
    for r in &records {
        w.push(r);
    }
    let text = w.into_string();
    let replay = Replay::parse(&text).expect("valid for the checker");
    for n in 0..=replay.len() {
        let st = replay.state_at(n);
        serde_json::to_string(&st).expect("serializes");
    }
}

// ----- traces of real nodes -------------------------------------------------

/// A merged real-cluster trace as `cdsctl trace merge` writes it: wall-clock
/// microseconds, no messages, no appends, votes as the voters saw them.
fn merged_trace() -> String {
    let t0: u64 = 1_760_000_000_000_000;
    let h = Header::new("merge", vec![1, 2, 3]).with_meta("files", vec!["a", "b", "c"]);
    let f = NodeRole::Follower;
    let rec = |dt: u64, node, term, role, commit, kind| Record {
        t: t0 + dt,
        node,
        term,
        role,
        commit,
        kind,
    };
    let config = |change: &str, index| Kind::Config {
        change: change.into(),
        index,
        voters: vec![1, 2, 3],
        outgoing: vec![],
        learners: vec![],
    };
    let mut v = Vec::new();
    for n in 1..=3 {
        v.push(rec(n, n, 0, f, 0, Kind::Restart));
        v.push(rec(n, n, 0, f, 0, config("loaded", 0)));
    }
    let pc = NodeRole::Precandidate;
    let c = NodeRole::Candidate;
    let l = NodeRole::Leader;
    v.extend([
        rec(
            150_000,
            2,
            0,
            pc,
            0,
            Kind::Role {
                from: f,
                leader: None,
            },
        ),
        rec(150_000, 2, 0, pc, 0, Kind::Timeout { pre_vote: true }),
        rec(
            150_300,
            1,
            0,
            f,
            0,
            Kind::Vote {
                candidate: 2,
                pre_vote: true,
                granted: true,
            },
        ),
        rec(
            150_310,
            3,
            0,
            f,
            0,
            Kind::Vote {
                candidate: 2,
                pre_vote: true,
                granted: false,
            },
        ),
        rec(
            150_600,
            2,
            1,
            c,
            0,
            Kind::Role {
                from: pc,
                leader: None,
            },
        ),
        rec(
            150_600,
            2,
            1,
            c,
            0,
            Kind::Persist {
                hs_term: 1,
                vote: Some(2),
                hs_commit: 0,
            },
        ),
        rec(
            150_900,
            1,
            1,
            f,
            0,
            Kind::Persist {
                hs_term: 1,
                vote: Some(2),
                hs_commit: 0,
            },
        ),
        rec(
            150_900,
            1,
            1,
            f,
            0,
            Kind::Vote {
                candidate: 2,
                pre_vote: false,
                granted: true,
            },
        ),
        rec(
            151_200,
            2,
            1,
            l,
            0,
            Kind::Role {
                from: c,
                leader: Some(2),
            },
        ),
        rec(
            151_500,
            1,
            1,
            f,
            0,
            Kind::Role {
                from: f,
                leader: Some(2),
            },
        ),
        rec(
            151_600,
            3,
            1,
            f,
            0,
            Kind::Persist {
                hs_term: 1,
                vote: None,
                hs_commit: 0,
            },
        ),
        rec(
            151_600,
            3,
            1,
            f,
            0,
            Kind::Role {
                from: f,
                leader: Some(2),
            },
        ),
        rec(
            900_000,
            2,
            1,
            l,
            40,
            Kind::Snapshot {
                phase: "taken".into(),
                index: 40,
                peer: None,
                bytes: 300,
                ok: true,
            },
        ),
        rec(900_000, 2, 1, l, 40, Kind::Compact { upto: 30 }),
        rec(2_000_000, 3, 1, f, 0, Kind::Restart),
        rec(2_000_000, 3, 1, f, 0, config("loaded", 0)),
        rec(
            2_500_000,
            2,
            1,
            l,
            50,
            Kind::Stepdown {
                reason: "check_quorum".into(),
            },
        ),
        rec(
            2_500_000,
            2,
            1,
            f,
            50,
            Kind::Role {
                from: l,
                leader: None,
            },
        ),
    ]);
    let mut w = TraceWriter::in_memory(&h);
    for r in &v {
        w.push(r);
    }
    w.into_string()
}

#[test]
fn model_merged_real_cluster_trace() {
    let text = merged_trace();
    let replay = Replay::parse(&text).expect("valid");
    assert!(!replay.has_messages());
    assert_eq!(replay.header().source, "merge");
    let find =
        |pred: &dyn Fn(&Record) -> bool| replay.records().iter().position(pred).expect("present");
    // The pre-campaign counted the voters' answers.
    let i = find(&|r| {
        matches!(
            r.kind,
            Kind::Vote {
                pre_vote: true,
                granted: false,
                ..
            }
        )
    });
    let st = replay.state_at(i + 1);
    let camp = st.nodes[&2].campaign.as_ref().expect("pre-campaign");
    assert!(camp.pre);
    assert_eq!(camp.term, 1);
    assert_eq!(camp.granted, vec![1, 2]);
    assert_eq!(camp.denied, vec![3]);
    // The election.
    let i = find(&|r| {
        matches!(
            r.kind,
            Kind::Vote {
                pre_vote: false,
                ..
            }
        )
    });
    let st = replay.state_at(i + 1);
    let camp = st.nodes[&2].campaign.as_ref().expect("campaign");
    assert!(!camp.pre);
    assert_eq!(camp.granted, vec![1, 2]);
    assert_eq!(st.nodes[&1].vote, Some(2));
    let i = find(&|r| r.role == NodeRole::Leader);
    let st = replay.state_at(i + 1);
    assert_eq!((st.leader, st.leader_term), (Some(2), 1));
    assert!(st.msgs.is_empty());
    assert!(st.nodes[&2].campaign.is_none());
    assert_eq!(
        st.config.as_ref().map(|c| c.voters.clone()),
        Some(vec![1, 2, 3])
    );
    let mid = replay.state_at(find(&|r| matches!(r.kind, Kind::Compact { .. })) + 1);
    assert_eq!(mid.nodes[&2].log.first, 31);
    assert_eq!(mid.nodes[&2].log.snap, 40);
    assert_eq!(mid.nodes[&3].leader, Some(2));
    assert_eq!(replay.find_next(0, Moment::Election), Some(6));
    assert!(replay.find_next(0, Moment::Fault).is_some());
    let end = replay.state_at(replay.len());
    // 1 and 3 still believe in 2, which stepped down.
    assert_eq!(end.nodes[&1].leader, Some(2));
    assert_eq!(end.leader, None);
    assert_eq!(end.max_term, 1);
    assert_eq!(end.nodes[&2].role, NodeRole::Follower);
    assert!(end.t > 1_000_000_000_000_000);
    assert_eq!(
        end.nodes[&3].reset,
        Some(end.nodes[&3].last.as_ref().expect("events").t)
    );
    // A single node's own trace: its events name a member its header
    // does not list.
    let h = Header::new("node", vec![1, 2, 3])
        .with_meta("node", 1)
        .with_meta("clock", "wall_us");
    let mut w = TraceWriter::in_memory(&h);
    w.push(&Record {
        t: 10,
        node: 1,
        term: 4,
        role: NodeRole::Follower,
        commit: 9,
        kind: Kind::Role {
            from: NodeRole::Follower,
            leader: Some(4),
        },
    });
    let replay = Replay::parse(&w.into_string()).expect("valid");
    let st = replay.state_at(1);
    assert_eq!(st.nodes.len(), 3);
    assert_eq!((st.leader, st.leader_term), (Some(4), 4));
    assert_eq!(st.nodes[&1].commit, 9);
}

/// A real trace: `cdsctl kv up --nodes 3`, five puts, `kv kill 1`, `kv
/// restart 1`, `kv snapshot 2`, `kv add-node` (4), `kv partition 1,2/3,4`,
/// `kv heal`, `kv down`, then `cdsctl trace merge`.
const REAL_MERGED: &str = r#"{"format":"rtrace","v":1,"source":"merge","nodes":[1,2,3,4],"meta":{"files":["/tmp/vizcl/n1/trace.rtrace","/tmp/vizcl/n2/trace.rtrace","/tmp/vizcl/n3/trace.rtrace","/tmp/vizcl/n4/trace.rtrace"]}}
{"t":1795676218029110,"node":3,"ev":"restart","term":0,"role":"follower","commit":0}
{"t":1795676218029342,"node":1,"ev":"restart","term":0,"role":"follower","commit":0}
{"t":1795676218031347,"node":2,"ev":"restart","term":0,"role":"follower","commit":0}
{"t":1795676218480632,"node":1,"ev":"timeout","term":0,"role":"precandidate","commit":0,"pre_vote":true}
{"t":1795676218480635,"node":1,"ev":"role","term":0,"role":"precandidate","commit":0,"from":"follower","leader":null}
{"t":1795676218480818,"node":3,"ev":"vote","term":0,"role":"follower","commit":0,"candidate":1,"pre_vote":true,"granted":true}
{"t":1795676218488685,"node":1,"ev":"persist","term":1,"role":"candidate","commit":0,"hs_term":1,"vote":1,"hs_commit":0}
{"t":1795676218488689,"node":1,"ev":"role","term":1,"role":"candidate","commit":0,"from":"precandidate","leader":null}
{"t":1795676218489635,"node":3,"ev":"persist","term":1,"role":"follower","commit":0,"hs_term":1,"vote":1,"hs_commit":0}
{"t":1795676218489638,"node":3,"ev":"vote","term":1,"role":"follower","commit":0,"candidate":1,"pre_vote":false,"granted":true}
{"t":1795676218490463,"node":1,"ev":"role","term":1,"role":"leader","commit":0,"from":"candidate","leader":1}
{"t":1795676218490529,"node":2,"ev":"persist","term":1,"role":"follower","commit":0,"hs_term":1,"vote":1,"hs_commit":0}
{"t":1795676218490540,"node":2,"ev":"vote","term":1,"role":"follower","commit":0,"candidate":1,"pre_vote":false,"granted":true}
{"t":1795676218492796,"node":3,"ev":"role","term":1,"role":"follower","commit":0,"from":"follower","leader":1}
{"t":1795676218497076,"node":2,"ev":"role","term":1,"role":"follower","commit":0,"from":"follower","leader":1}
{"t":1795676221633293,"node":2,"ev":"timeout","term":1,"role":"precandidate","commit":6,"pre_vote":true}
{"t":1795676221633298,"node":2,"ev":"role","term":1,"role":"precandidate","commit":6,"from":"follower","leader":null}
{"t":1795676221781083,"node":3,"ev":"timeout","term":1,"role":"precandidate","commit":6,"pre_vote":true}
{"t":1795676221781087,"node":3,"ev":"role","term":1,"role":"precandidate","commit":6,"from":"follower","leader":null}
{"t":1795676221781268,"node":2,"ev":"vote","term":1,"role":"precandidate","commit":6,"candidate":3,"pre_vote":true,"granted":true}
{"t":1795676221788692,"node":3,"ev":"persist","term":2,"role":"candidate","commit":6,"hs_term":2,"vote":3,"hs_commit":6}
{"t":1795676221788697,"node":3,"ev":"role","term":2,"role":"candidate","commit":6,"from":"precandidate","leader":null}
{"t":1795676221792670,"node":2,"ev":"persist","term":2,"role":"follower","commit":6,"hs_term":2,"vote":3,"hs_commit":6}
{"t":1795676221792675,"node":2,"ev":"vote","term":2,"role":"follower","commit":6,"candidate":3,"pre_vote":false,"granted":true}
{"t":1795676221792676,"node":2,"ev":"role","term":2,"role":"follower","commit":6,"from":"precandidate","leader":null}
{"t":1795676221793118,"node":2,"ev":"role","term":2,"role":"follower","commit":6,"from":"follower","leader":3}
{"t":1795676221793175,"node":3,"ev":"role","term":2,"role":"leader","commit":6,"from":"candidate","leader":3}
{"t":1795676223301231,"node":1,"ev":"restart","term":1,"role":"follower","commit":0}
{"t":1795676223304038,"node":1,"ev":"persist","term":2,"role":"follower","commit":6,"hs_term":2,"vote":null,"hs_commit":6}
{"t":1795676223304041,"node":1,"ev":"role","term":2,"role":"follower","commit":6,"from":"follower","leader":3}
{"t":1795676223304159,"node":1,"ev":"vote","term":2,"role":"follower","commit":6,"candidate":2,"pre_vote":true,"granted":false}
{"t":1795676224412684,"node":2,"ev":"compact","term":2,"role":"follower","commit":7,"upto":0}
{"t":1795676224444810,"node":4,"ev":"restart","term":0,"role":"follower","commit":0}
{"t":1795676224453644,"node":3,"ev":"config","term":2,"role":"leader","commit":7,"change":"learner_added","index":8,"voters":[1,2,3],"outgoing":[],"learners":[4]}
{"t":1795676224453925,"node":2,"ev":"config","term":2,"role":"follower","commit":7,"change":"learner_added","index":8,"voters":[1,2,3],"outgoing":[],"learners":[4]}
{"t":1795676224454218,"node":1,"ev":"config","term":2,"role":"follower","commit":7,"change":"learner_added","index":8,"voters":[1,2,3],"outgoing":[],"learners":[4]}
{"t":1795676224455563,"node":4,"ev":"persist","term":2,"role":"follower","commit":0,"hs_term":2,"vote":null,"hs_commit":0}
{"t":1795676224455565,"node":4,"ev":"role","term":2,"role":"follower","commit":0,"from":"follower","leader":3}
{"t":1795676224456783,"node":4,"ev":"config","term":2,"role":"follower","commit":8,"change":"learned","index":8,"voters":[1,2,3],"outgoing":[],"learners":[4]}
{"t":1795676224480920,"node":4,"ev":"config","term":2,"role":"follower","commit":8,"change":"voter_added","index":9,"voters":[1,2,3,4],"outgoing":[],"learners":[]}
{"t":1795676224481026,"node":2,"ev":"config","term":2,"role":"follower","commit":8,"change":"voter_added","index":9,"voters":[1,2,3,4],"outgoing":[],"learners":[]}
{"t":1795676224481052,"node":3,"ev":"config","term":2,"role":"leader","commit":8,"change":"voter_added","index":9,"voters":[1,2,3,4],"outgoing":[],"learners":[]}
{"t":1795676224481334,"node":1,"ev":"config","term":2,"role":"follower","commit":8,"change":"voter_added","index":9,"voters":[1,2,3,4],"outgoing":[],"learners":[]}
{"t":1795676225936683,"node":2,"ev":"timeout","term":2,"role":"precandidate","commit":9,"pre_vote":true}
{"t":1795676225936687,"node":2,"ev":"role","term":2,"role":"precandidate","commit":9,"from":"follower","leader":null}
{"t":1795676226152769,"node":1,"ev":"timeout","term":2,"role":"precandidate","commit":9,"pre_vote":true}
{"t":1795676226152773,"node":1,"ev":"role","term":2,"role":"precandidate","commit":9,"from":"follower","leader":null}
{"t":1795676226152920,"node":2,"ev":"vote","term":2,"role":"precandidate","commit":9,"candidate":1,"pre_vote":true,"granted":true}
{"t":1795676226280323,"node":3,"ev":"stepdown","term":2,"role":"follower","commit":9,"reason":"check_quorum"}
{"t":1795676226280327,"node":3,"ev":"role","term":2,"role":"follower","commit":9,"from":"leader","leader":null}
{"t":1795676226433151,"node":2,"ev":"timeout","term":2,"role":"precandidate","commit":9,"pre_vote":true}
{"t":1795676226433315,"node":1,"ev":"vote","term":2,"role":"precandidate","commit":9,"candidate":2,"pre_vote":true,"granted":true}
{"t":1795676226695279,"node":4,"ev":"timeout","term":2,"role":"precandidate","commit":9,"pre_vote":true}
{"t":1795676226695283,"node":4,"ev":"role","term":2,"role":"precandidate","commit":9,"from":"follower","leader":null}
{"t":1795676226700726,"node":3,"ev":"vote","term":2,"role":"follower","commit":9,"candidate":4,"pre_vote":true,"granted":true}
{"t":1795676226852296,"node":1,"ev":"timeout","term":2,"role":"precandidate","commit":9,"pre_vote":true}
{"t":1795676226852470,"node":2,"ev":"vote","term":2,"role":"precandidate","commit":9,"candidate":1,"pre_vote":true,"granted":true}
{"t":1795676226932970,"node":2,"ev":"timeout","term":2,"role":"precandidate","commit":9,"pre_vote":true}
{"t":1795676226933114,"node":1,"ev":"vote","term":2,"role":"precandidate","commit":9,"candidate":2,"pre_vote":true,"granted":true}
{"t":1795676227230455,"node":3,"ev":"timeout","term":2,"role":"precandidate","commit":9,"pre_vote":true}
{"t":1795676227230459,"node":3,"ev":"role","term":2,"role":"precandidate","commit":9,"from":"follower","leader":null}
{"t":1795676227230615,"node":4,"ev":"vote","term":2,"role":"precandidate","commit":9,"candidate":3,"pre_vote":true,"granted":true}
{"t":1795676227245808,"node":4,"ev":"timeout","term":2,"role":"precandidate","commit":9,"pre_vote":true}
{"t":1795676227245956,"node":3,"ev":"vote","term":2,"role":"precandidate","commit":9,"candidate":4,"pre_vote":true,"granted":true}
{"t":1795676227433310,"node":2,"ev":"timeout","term":2,"role":"precandidate","commit":9,"pre_vote":true}
{"t":1795676227433467,"node":1,"ev":"vote","term":2,"role":"precandidate","commit":9,"candidate":2,"pre_vote":true,"granted":true}
{"t":1795676227552142,"node":1,"ev":"timeout","term":2,"role":"precandidate","commit":9,"pre_vote":true}
{"t":1795676227552303,"node":2,"ev":"vote","term":2,"role":"precandidate","commit":9,"candidate":1,"pre_vote":true,"granted":true}
{"t":1795676227795336,"node":4,"ev":"timeout","term":2,"role":"precandidate","commit":9,"pre_vote":true}
{"t":1795676227795535,"node":3,"ev":"vote","term":2,"role":"precandidate","commit":9,"candidate":4,"pre_vote":true,"granted":true}
{"t":1795676227795548,"node":2,"ev":"vote","term":2,"role":"precandidate","commit":9,"candidate":4,"pre_vote":true,"granted":true}
{"t":1795676227795631,"node":1,"ev":"vote","term":2,"role":"precandidate","commit":9,"candidate":4,"pre_vote":true,"granted":true}
{"t":1795676227802815,"node":4,"ev":"persist","term":3,"role":"candidate","commit":9,"hs_term":3,"vote":4,"hs_commit":9}
{"t":1795676227802819,"node":4,"ev":"role","term":3,"role":"candidate","commit":9,"from":"precandidate","leader":null}
{"t":1795676227803774,"node":1,"ev":"persist","term":3,"role":"follower","commit":9,"hs_term":3,"vote":4,"hs_commit":9}
{"t":1795676227803776,"node":1,"ev":"vote","term":3,"role":"follower","commit":9,"candidate":4,"pre_vote":false,"granted":true}
{"t":1795676227803777,"node":1,"ev":"role","term":3,"role":"follower","commit":9,"from":"precandidate","leader":null}
{"t":1795676227803957,"node":3,"ev":"persist","term":3,"role":"follower","commit":9,"hs_term":3,"vote":4,"hs_commit":9}
{"t":1795676227803959,"node":3,"ev":"vote","term":3,"role":"follower","commit":9,"candidate":4,"pre_vote":false,"granted":true}
{"t":1795676227803959,"node":3,"ev":"role","term":3,"role":"follower","commit":9,"from":"precandidate","leader":null}
{"t":1795676227804288,"node":1,"ev":"role","term":3,"role":"follower","commit":9,"from":"follower","leader":4}
{"t":1795676227804436,"node":4,"ev":"role","term":3,"role":"leader","commit":9,"from":"candidate","leader":4}
{"t":1795676227804552,"node":3,"ev":"role","term":3,"role":"follower","commit":9,"from":"follower","leader":4}
{"t":1795676227815993,"node":2,"ev":"persist","term":3,"role":"follower","commit":9,"hs_term":3,"vote":4,"hs_commit":9}
{"t":1795676227815999,"node":2,"ev":"vote","term":3,"role":"follower","commit":9,"candidate":4,"pre_vote":false,"granted":true}
{"t":1795676227816000,"node":2,"ev":"role","term":3,"role":"follower","commit":9,"from":"precandidate","leader":null}
{"t":1795676227816372,"node":2,"ev":"role","term":3,"role":"follower","commit":9,"from":"follower","leader":4}
"#;

#[test]
fn model_real_merged_trace() {
    let replay = Replay::parse(REAL_MERGED).expect("valid");
    assert!(!replay.has_messages());
    let mut leaders = 0;
    for (i, r) in replay.records().iter().enumerate() {
        if matches!(&r.kind, Kind::Role { from, .. } if *from != NodeRole::Leader)
            && r.role == NodeRole::Leader
        {
            // Its campaign, counted from the voters' `vote` records, had a
            // majority of its configuration.
            let before = replay.state_at(i);
            let n = &before.nodes[&r.node];
            let c = n.campaign.as_ref().expect("a campaign");
            // Real nodes record no `config` at start: before the first
            // change, the three initial voters.
            let voters = n.config.as_ref().map_or(3, |c| c.voters.len());
            assert!(!c.pre && c.term == r.term, "{c:?}");
            assert!(c.granted.len() * 2 > voters, "event {i}: {c:?}");
            let st = replay.state_at(i + 1);
            assert_eq!((st.leader, st.leader_term), (Some(r.node), r.term));
            assert!(st.msgs.is_empty());
            assert_eq!(replay.find_next(i, Moment::Election), Some(i));
            leaders += 1;
        }
    }
    assert_eq!(leaders, 3);
    // Each start of a (pre-)campaign is one moment, although it is two
    // records (`timeout` then `role`).
    let first = replay.find_next(0, Moment::Election).expect("an election");
    let r = replay.record(first).expect("in range");
    assert!(matches!(r.kind, Kind::Timeout { .. }), "{r:?}");
    let second = replay.find_next(first + 1, Moment::Election).expect("more");
    let r2 = replay.record(second).expect("in range");
    assert_eq!(r2.node, r.node);
    assert!(
        matches!(
            r2.kind,
            Kind::Role {
                from: NodeRole::Precandidate,
                ..
            }
        ),
        "{r2:?}"
    );
    assert_eq!(r2.role, NodeRole::Candidate);
    let end = replay.state_at(replay.len());
    assert_eq!((end.leader, end.leader_term), (Some(4), 3));
    let config = end.config.expect("a configuration");
    assert_eq!(config.voters, vec![1, 2, 3, 4]);
    assert_eq!(end.nodes.len(), 4);
}

// ----- speed ----------------------------------------------------------------

fn state_json(st: &ClusterState) -> String {
    serde_json::to_string(st).expect("serializes")
}

/// Parse and seek times on a ~100,000-event trace (printed, not asserted).
#[test]
fn model_speed_on_a_long_trace() {
    let started = Instant::now();
    let text = sim_trace(5, 42, 88_000, false, false);
    let sim_ms = started.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    let trace = raft_core::trace::parse_str(&text).expect("valid");
    let check_ms = started.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    let _ = Replay::new(
        trace.header,
        trace.records,
        viz_wasm::model::CHECKPOINT_EVERY,
    );
    let build_ms = started.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    let replay = Replay::parse(&text).expect("valid");
    let parse_ms = started.elapsed().as_secs_f64() * 1e3;
    eprintln!(
        "parse: {check_ms:.0} ms checking and reading, {build_ms:.0} ms replaying into checkpoints"
    );
    let len = replay.len();
    let mut worst = 0f64;
    let mut total = 0f64;
    let mut json_bytes = 0;
    let mut json_ms = 0f64;
    let probes = 400;
    let mut s: u64 = 12345;
    for k in 0..probes {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let n = if k % 2 == 0 {
            (s >> 33) as usize % (len + 1)
        } else {
            // The worst spot: just before a checkpoint.
            ((s >> 33) as usize % (len / 256)) * 256 + 255
        };
        let t = Instant::now();
        let st = replay.state_at(n);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        worst = worst.max(ms);
        total += ms;
        let t = Instant::now();
        json_bytes = json_bytes.max(state_json(&st).len());
        json_ms = json_ms.max(t.elapsed().as_secs_f64() * 1e3);
    }
    let t = Instant::now();
    let mut n = 0;
    while n < len {
        std::hint::black_box(replay.state_at(n));
        n += 1;
    }
    let step_us = t.elapsed().as_secs_f64() * 1e6 / len as f64;
    eprintln!(
        "speed: {len} events, {} bytes; sim {sim_ms:.0} ms; parse {parse_ms:.0} ms; \
         state_at mean {:.3} ms, worst {worst:.3} ms over {probes} seeks; \
         stepping through every n: {step_us:.1} us each; \
         largest state JSON {json_bytes} bytes, serialized in at most {json_ms:.3} ms",
        text.len(),
        total / probes as f64
    );
    let end = replay.state_at(len);
    eprintln!(
        "end: leader {:?} term {}, max term {}, {} messages in flight, {} term mismatches",
        end.leader,
        end.leader_term,
        end.max_term,
        end.msgs.len(),
        replay.term_mismatches()
    );
}

/// Prints the state JSON in the middle of a small run (for documentation):
/// `cargo test --release -p viz-wasm --test model -- --ignored --nocapture`.
#[test]
#[ignore]
fn print_example_state() {
    let text = sim_trace(3, 42, 600, false, false);
    let replay = Replay::parse(&text).expect("valid");
    let n = (replay.len() / 2..replay.len())
        .find(|&n| {
            let st = replay.state_at(n);
            st.leader.is_some() && !st.msgs.is_empty() && !st.pending.is_empty()
        })
        .unwrap_or(replay.len());
    let st = replay.state_at(n);
    println!("{}", serde_json::to_string_pretty(&st).expect("serializes"));
}
