//! The live mode natively: a session driven action by action is
//! deterministic, recovers from a stopped leader, writes a trace that
//! replays to exactly the state the page showed live, and every action
//! works or fails with a clear error.

use std::time::Instant;

use raft_core::sim::live::LiveCluster;
use raft_core::trace::check_str;
use raft_core::NodeId;
use viz_wasm::live::Live;
use viz_wasm::model::Replay;

/// Advances in 10 ms steps until `done` holds or `max_ms` passed; returns
/// the time it took, or `None`.
fn advance_until(
    live: &mut Live,
    max_ms: u64,
    mut done: impl FnMut(&LiveCluster) -> bool,
) -> Option<u64> {
    let start = live.cluster().now();
    while live.cluster().now() - start <= max_ms {
        if done(live.cluster()) {
            return Some(live.cluster().now() - start);
        }
        live.cluster_mut().advance(10).unwrap();
    }
    None
}

fn leader_of(live: &mut Live) -> NodeId {
    advance_until(live, 3_000, |c| c.leader().is_some()).expect("a leader within 3 s");
    live.cluster().leader().unwrap()
}

/// The same scripted session: every action once.
fn session(seed: u64) -> Live {
    let mut live = Live::new(5, seed).unwrap();
    let l = leader_of(&mut live);
    let c = live.cluster_mut();
    c.client_request(None).unwrap();
    c.advance(200).unwrap();
    c.stop(l).unwrap();
    c.advance(1_500).unwrap();
    c.restart(l).unwrap();
    c.advance(300).unwrap();
    let other = c
        .node_ids()
        .into_iter()
        .find(|&n| Some(n) != c.leader())
        .unwrap();
    c.timeout(other).unwrap();
    c.advance(3).unwrap();
    if let Some(&(id, ..)) = c.in_flight().first() {
        c.drop_message(id).unwrap();
    }
    c.advance(500).unwrap();
    c.partition(2).unwrap();
    c.advance(800).unwrap();
    c.heal().unwrap();
    c.advance(800).unwrap();
    for _ in 0..5 {
        if c.leader().is_some() {
            c.client_request(None).unwrap();
        }
        c.advance(100).unwrap();
    }
    c.client_request(Some(1)).unwrap();
    c.advance(500).unwrap();
    let added = live.cluster_mut().add_node();
    live.cluster_mut().advance(2_000).unwrap();
    if added.is_ok() {
        let _ = live.cluster_mut().remove_node(3);
        live.cluster_mut().advance(1_000).unwrap();
    }
    if let Some(l) = live.cluster().leader() {
        let _ = live.cluster_mut().snapshot(l);
    }
    live.cluster_mut().advance(500).unwrap();
    live
}

#[test]
fn the_same_seed_and_actions_give_the_same_trace() {
    let a = session(7).trace_text();
    let b = session(7).trace_text();
    assert!(
        a.lines().count() > 1_000,
        "a short session: {}",
        a.lines().count()
    );
    assert!(a == b, "two sessions of seed 7 differ");
    assert_ne!(a, session(8).trace_text(), "seeds 7 and 8 gave one trace");
    let first = a.lines().next().unwrap();
    assert!(first.contains("\"live\":true"), "{first}");
    assert!(first.contains("\"seed\":7"), "{first}");
}

#[test]
fn stopping_the_leader_elects_another_within_bounded_time() {
    let mut worst = 0;
    for seed in 0..20 {
        let mut live = Live::new(3 + (seed as usize % 5), seed).unwrap();
        let old = leader_of(&mut live);
        live.cluster_mut().stop(old).unwrap();
        let took = advance_until(&mut live, 2_000, |c| c.leader().is_some_and(|l| l != old))
            .unwrap_or_else(|| panic!("seed {seed}: no new leader 2 s after n{old} stopped"));
        worst = worst.max(took);
        // The page's view agrees.
        let st = live.state();
        assert!(
            st.leader.is_some_and(|l| l != old),
            "seed {seed}: {:?}",
            st.leader
        );
        assert!(st.nodes[&old].down);
    }
    eprintln!("new leader after the old one stopped: at most {worst} ms");
}

#[test]
fn the_trace_replays_to_the_live_state() {
    for seed in [1, 7, 42] {
        let mut live = session(seed);
        let text = live.trace_text();
        check_str(&text).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let parsed = Replay::parse(&text).unwrap();
        let state = live.state();
        assert_eq!(parsed.len(), live.replay().len());
        assert_eq!(parsed.state_at(parsed.len()), state, "seed {seed}");
        // The incrementally built replay scrubs like the parsed one.
        let n = parsed.len();
        for k in [0, 1, n / 3, n / 2, n - 1, n] {
            assert_eq!(
                live.replay().state_at(k),
                parsed.state_at(k),
                "seed {seed} at {k}"
            );
        }
        for m in viz_wasm::model::Moment::ALL {
            assert_eq!(live.replay().moments(m), parsed.moments(m), "{m:?}");
        }
    }
}

/// The events of the trace after the first `from`, as `ev` names.
fn events_since(live: &Live, from: usize) -> Vec<serde_json::Value> {
    live.trace_text()
        .lines()
        .skip(1 + from)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn has(evs: &[serde_json::Value], pred: impl Fn(&serde_json::Value) -> bool) -> bool {
    evs.iter().any(pred)
}

#[test]
fn every_action_works_and_invalid_ones_are_refused() {
    let mut live = Live::new(3, 5).unwrap();
    let c = live.cluster_mut();
    // Before any leader.
    assert!(LiveCluster::new(2, 1).unwrap_err().contains("3 to 7"));
    assert!(LiveCluster::new(8, 1).is_err());
    assert!(c.client_request(None).unwrap_err().contains("no leader"));
    assert!(c.add_node().unwrap_err().contains("no leader"));
    assert!(c.snapshot(1).unwrap_err().contains("applied nothing"));
    assert!(c.heal().unwrap_err().contains("nothing to heal"));
    assert!(c.stop(0).unwrap_err().contains("no node n0"));
    assert!(c.stop(6).unwrap_err().contains("no node n6"));
    assert!(c.restart(1).unwrap_err().contains("already running"));
    assert!(c.drop_message(12345).unwrap_err().contains("not in flight"));
    // Spares have no configuration: they may not campaign.
    assert!(c.timeout(4).unwrap_err().contains("may not campaign"));
    assert_eq!(c.node_ids(), vec![1, 2, 3, 4, 5]);

    // Right after the start every node honours a leader lease it may have
    // granted before (a restart): a time out changes nothing yet.
    let mark = live.cluster().events() as usize;
    live.cluster_mut().timeout(2).unwrap();
    let evs = events_since(&live, mark);
    assert!(
        has(&evs, |e| e["ev"] == "timeout" && e["node"] == 2),
        "{evs:?}"
    );
    let first = leader_of(&mut live);
    let c = live.cluster_mut();
    assert!(c.timeout(first).unwrap_err().contains("is the leader"));
    // With a leader, a follower timing out is refused its pre-votes
    // (CheckQuorum's lease): no new term.
    let f = if first == 1 { 2 } else { 1 };
    let term = live.state().max_term;
    live.cluster_mut().timeout(f).unwrap();
    live.cluster_mut().advance(50).unwrap();
    assert_eq!(live.cluster().leader(), Some(first));
    assert_eq!(
        live.state().max_term,
        term,
        "a pre-vote round disrupted the leader"
    );
    // Once the leader is gone and its lease over, a time out elects at once.
    live.cluster_mut().stop(first).unwrap();
    live.cluster_mut().advance(100).unwrap();
    live.cluster_mut().timeout(f).unwrap();
    advance_until(&mut live, 50, |c| c.leader() == Some(f)).expect("the timed-out node leads");
    live.cluster_mut().restart(first).unwrap();
    live.cluster_mut().advance(300).unwrap();
    assert_eq!(live.cluster().leader(), Some(f));

    // A client put through the leader is answered.
    let c = live.cluster_mut();
    let mark = c.events() as usize;
    c.client_request(None).unwrap();
    c.client_request(Some(1)).unwrap(); // a follower: redirected
    c.advance(500).unwrap();
    let evs = events_since(&live, mark);
    let ok = evs
        .iter()
        .filter(|e| e["ev"] == "client" && e["dir"] == "reply" && e["outcome"] == "ok")
        .count();
    assert_eq!(ok, 2, "{evs:?}");
    assert_eq!(live.state().pending.len(), 0);

    // Drop a message in flight.
    let c = live.cluster_mut();
    let mut dropped = None;
    for _ in 0..100 {
        if let Some(&(id, ..)) = c.in_flight().first() {
            dropped = Some(id);
            break;
        }
        c.advance(1).unwrap();
    }
    let id = dropped.expect("a message in flight within 100 ms");
    let mark = c.events() as usize;
    c.drop_message(id).unwrap();
    assert!(c.drop_message(id).is_err());
    let evs = events_since(&live, mark);
    assert!(has(&evs, |e| e["ev"] == "drop"
        && e["id"] == id
        && e["reason"] == "user"));
    assert!(!live.state().msgs.contains_key(&id));

    // Partition the leader away: the others elect a new one; heal.
    let c = live.cluster_mut();
    c.partition(f).unwrap();
    assert!(c.partition(f).unwrap_err().contains("already partitioned"));
    assert_eq!(live.state().blocked.len(), 2 * 4);
    advance_until(&mut live, 3_000, |c| c.leader().is_some_and(|l| l != f))
        .expect("a new leader on the majority side");
    let c = live.cluster_mut();
    c.heal().unwrap();
    assert!(live.state().blocked.is_empty());
    live.cluster_mut().advance(500).unwrap();
    let leader = live.cluster().leader().expect("a leader after the heal");

    // Stop and restart a follower.
    let f = [1, 2, 3].into_iter().find(|&n| n != leader).unwrap();
    let c = live.cluster_mut();
    c.stop(f).unwrap();
    assert!(c.stop(f).unwrap_err().contains("is stopped"));
    assert!(c.timeout(f).unwrap_err().contains("is stopped"));
    assert!(live.state().nodes[&f].down);
    // While it is down, the others move on, snapshot and compact.
    let c = live.cluster_mut();
    for _ in 0..12 {
        c.client_request(None).unwrap();
        c.advance(60).unwrap();
    }
    let mark = c.events() as usize;
    let index = c.snapshot(leader).unwrap();
    assert!(c.snapshot(leader).unwrap_err().contains("already"));
    let evs = events_since(&live, mark);
    assert!(has(&evs, |e| e["ev"] == "snapshot"
        && e["phase"] == "taken"
        && e["index"] == index));
    assert!(has(&evs, |e| e["ev"] == "compact"));
    let c = live.cluster_mut();
    c.restart(f).unwrap();
    assert!(live.state().nodes[&f].role != raft_core::trace::NodeRole::Down);
    // It is behind the leader's compacted log: it gets the snapshot.
    let mark = live.cluster().events() as usize;
    advance_until(&mut live, 3_000, |_| false);
    let evs = events_since(&live, mark);
    assert!(
        has(&evs, |e| e["ev"] == "snapshot"
            && e["phase"] == "installed"
            && e["node"] == f),
        "n{f} never installed the snapshot at {index}"
    );

    // Add the spares one by one, then remove a voter.
    let c = live.cluster_mut();
    let x = c.add_node().unwrap();
    assert_eq!(x, 4);
    assert!(
        c.add_node().unwrap_err().contains("refused"),
        "one at a time"
    );
    advance_until(&mut live, 3_000, |c| c.voters().contains(&4)).expect("n4 a voter");
    live.cluster_mut().advance(300).unwrap(); // the change commits
    let y = live.cluster_mut().add_node().unwrap();
    assert_eq!(y, 5);
    advance_until(&mut live, 3_000, |c| c.voters().len() == 5).expect("n5 a voter");
    live.cluster_mut().advance(300).unwrap();
    let c = live.cluster_mut();
    assert!(c.add_node().unwrap_err().contains("every node is a voter"));
    assert!(c.remove_node(9).unwrap_err().contains("no node"));
    c.remove_node(4).unwrap();
    advance_until(&mut live, 3_000, |c| !c.voters().contains(&4)).expect("n4 removed");
    assert!(live
        .cluster_mut()
        .remove_node(4)
        .unwrap_err()
        .contains("not a voter"));
    let config = live.state().config.unwrap();
    assert!(!config.voters.contains(&4), "{config:?}");

    // No invariant broke, and the trace is valid.
    assert!(live.cluster().failure().is_none());
    check_str(&live.trace_text()).unwrap();
}

#[test]
fn state_updates_stay_fast_on_long_sessions() {
    // A busy 7-node session: a client put every 20 ms for 3 simulated minutes.
    let mut live = Live::new(7, 11).unwrap();
    leader_of(&mut live);
    let start = Instant::now();
    for k in 0..9_000 {
        let c = live.cluster_mut();
        if k % 2 == 0 && c.leader().is_some() {
            c.client_request(None).unwrap();
        }
        c.advance(20).unwrap();
    }
    let sim = start.elapsed();
    let events = live.replay().len();
    assert!(events > 30_000, "{events} events");
    // What the page does 10 times a second: take in new events, serialize.
    let t = Instant::now();
    let mut bytes = 0;
    for _ in 0..20 {
        live.cluster_mut().advance(100).unwrap();
        bytes += live.state_json().len();
    }
    let per_update = t.elapsed() / 20;
    eprintln!(
        "{events} events simulated in {sim:?}; an update (100 ms of sim + state) takes {per_update:?}, {} bytes of JSON",
        bytes / 20
    );
    assert!(per_update.as_millis() < 50, "{per_update:?} per update");
}
