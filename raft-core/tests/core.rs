//! Unit-level behaviour of the core through its public API: batching and
//! pipelining limits, fast backtracking, reads and their refusals,
//! expected-term proposals, and input validation.

use raft_core::storage::{MemStorage, Storage};
use raft_core::{
    Bytes, Config, Entry, EntryKind, Error, Message, MessageBody, ProposeError, Raft, ReadError,
    ReadMode, Role,
};
use rand_core::SeedableRng;

type Node = Raft<MemStorage>;

fn node(id: u64, voters: &[u64], tweak: impl Fn(&mut Config)) -> Node {
    let mut cfg = Config::new(id);
    tweak(&mut cfg);
    let rng = Box::new(rand_pcg::Pcg64Mcg::seed_from_u64(id));
    Raft::new(cfg, MemStorage::new(voters.to_vec()), rng).expect("valid")
}

/// Handles every node's `Ready` and returns the messages they sent.
fn drain(nodes: &mut [Node]) -> Vec<Message> {
    let mut out = Vec::new();
    for n in nodes.iter_mut() {
        while n.has_ready() {
            let rd = n.ready();
            n.storage_mut().persist(&rd).expect("persist");
            out.extend(rd.messages.iter().cloned());
            n.advance(&rd);
        }
    }
    out
}

/// Delivers messages until none are left, except those `keep` filters out.
fn stabilize(nodes: &mut [Node], keep: impl Fn(&Message) -> bool) {
    let mut msgs = drain(nodes);
    for _ in 0..1000 {
        if msgs.is_empty() {
            return;
        }
        for m in std::mem::take(&mut msgs) {
            if keep(&m) {
                let to = m.to as usize - 1;
                nodes[to].step(m).expect("step");
            }
        }
        msgs = drain(nodes);
    }
    panic!("messages kept flowing");
}

fn cluster(n: u64, tweak: impl Fn(&mut Config) + Copy) -> Vec<Node> {
    let voters: Vec<u64> = (1..=n).collect();
    let mut nodes: Vec<Node> = voters.iter().map(|&id| node(id, &voters, tweak)).collect();
    // Let the restart guard (one election timeout) pass, then elect node 1.
    for n in nodes.iter_mut() {
        for _ in 0..10 {
            n.tick();
        }
    }
    drain(&mut nodes);
    nodes[0].campaign_now();
    stabilize(&mut nodes, |_| true);
    assert_eq!(nodes[0].role(), Role::Leader);
    nodes
}

#[test]
fn appends_respect_entry_and_byte_limits() {
    let mut nodes = cluster(3, |c| {
        c.max_entries_per_msg = 3;
        c.max_bytes_per_msg = 200;
        c.max_inflight_msgs = 1000;
    });
    // Node 3 misses everything for a while.
    for i in 0..20 {
        nodes[0].propose(vec![i; 40], None).expect("leader");
    }
    stabilize(&mut nodes, |m| m.to != 3 && m.from != 3);
    nodes[0].tick();
    let mut biggest = (0, 0);
    let mut msgs = drain(&mut nodes);
    for _ in 0..200 {
        for m in std::mem::take(&mut msgs) {
            if let MessageBody::Append { entries, .. } = &m.body {
                let bytes: u64 = entries.iter().map(Entry::size).sum();
                biggest = (biggest.0.max(entries.len()), biggest.1.max(bytes));
            }
            let to = m.to as usize - 1;
            nodes[to].step(m).expect("step");
        }
        msgs = drain(&mut nodes);
    }
    assert!(biggest.0 <= 3, "{biggest:?}");
    assert!(biggest.1 <= 200, "{biggest:?}");
    assert_eq!(
        nodes[2].raft_log().last_index(),
        nodes[0].raft_log().last_index()
    );
}

#[test]
fn pipelining_is_bounded_by_the_inflight_window() {
    let mut nodes = cluster(3, |c| {
        c.max_entries_per_msg = 1;
        c.max_inflight_msgs = 4;
    });
    for i in 0..20 {
        nodes[0].propose(vec![i], None).expect("leader");
    }
    let appends_to_2 = drain(&mut nodes)
        .iter()
        .filter(|m| {
            m.to == 2
                && matches!(&m.body, MessageBody::Append { entries, .. } if !entries.is_empty())
        })
        .count();
    // Node 2 is in replicate state: 4 messages go out without waiting.
    assert_eq!(appends_to_2, 4);
}

#[test]
fn lost_appends_are_repaired_with_few_rejections() {
    // Node 2 holds 50 entries of a term the leader never had.
    let mut nodes = cluster(3, |c| c.max_inflight_msgs = 1000);
    // Cut node 2 off, write 50 entries it misses, then count how many
    // rejections it takes to repair it.
    for i in 0..50 {
        nodes[0].propose(vec![i], None).expect("leader");
    }
    stabilize(&mut nodes, |m| m.to != 2 && m.from != 2);
    let mut rejections = 0;
    nodes[0].tick();
    let mut msgs = drain(&mut nodes);
    for _ in 0..100 {
        for m in std::mem::take(&mut msgs) {
            if matches!(m.body, MessageBody::AppendResponse { success: false, index, .. } if index > 0)
            {
                rejections += 1;
            }
            let to = m.to as usize - 1;
            nodes[to].step(m).expect("step");
        }
        msgs = drain(&mut nodes);
    }
    assert_eq!(
        nodes[1].raft_log().last_index(),
        nodes[0].raft_log().last_index()
    );
    assert!(
        rejections <= 2,
        "{rejections} rejections to repair a 50-entry gap"
    );
}

/// A leader's `Append`s to its followers, its `Ready` and its committed
/// entries hold the proposal's one buffer: a payload is never copied per
/// follower (`tests/payload_copies.rs` follows it through the codec and a
/// file-backed storage too).
#[test]
fn an_append_to_every_follower_shares_the_proposals_buffer() {
    let mut nodes = cluster(5, |_| {});
    let payload = Bytes::from(vec![7u8; 4096]);
    let index = nodes[0].propose(payload.clone(), None).expect("leader");
    let rd = nodes[0].ready();
    let mut holders = vec![&rd.entries[0].data];
    for m in &rd.messages {
        if let MessageBody::Append { entries, .. } = &m.body {
            holders.extend(entries.iter().filter(|e| e.index == index).map(|e| &e.data));
        }
    }
    assert_eq!(holders.len(), 1 + 4, "the Ready's entry and four Appends");
    for d in holders {
        assert_eq!(d.as_ptr(), payload.as_ptr(), "a copy of the payload");
    }
    nodes[0].storage_mut().persist(&rd).expect("persist");
    nodes[0].advance(&rd);
    stabilize(&mut nodes, |_| true);
    let applied = nodes[0]
        .storage()
        .entries(index, index + 1, u64::MAX)
        .expect("held");
    assert_eq!(applied[0].data.as_ptr(), payload.as_ptr());
}

#[test]
fn proposals_with_a_stale_expected_term_are_refused() {
    let mut nodes = cluster(3, |_| {});
    let term = nodes[0].term();
    assert!(nodes[0].propose(b"a".to_vec(), Some(term)).is_ok());
    assert_eq!(
        nodes[0].propose(b"b".to_vec(), Some(term - 1)),
        Err(ProposeError::TermMismatch {
            expected: term - 1,
            current: term
        })
    );
    assert!(matches!(
        nodes[1].propose(b"c".to_vec(), None),
        Err(ProposeError::NotLeader { leader: Some(1) })
    ));
}

#[test]
fn lease_reads_need_check_quorum() {
    let mut nodes = cluster(3, |c| c.check_quorum = false);
    assert_eq!(
        nodes[0].read_index(1, ReadMode::Lease),
        Err(ReadError::LeaseNeedsCheckQuorum)
    );
    assert!(nodes[0].read_index(2, ReadMode::ReadIndex).is_ok());
}

#[test]
fn a_lease_read_is_served_without_a_round_trip_only_while_the_lease_holds() {
    let mut nodes = cluster(3, |_| {});
    // A heartbeat round gives the leader fresh acknowledgements.
    nodes[0].tick();
    stabilize(&mut nodes, |_| true);
    nodes[0].read_index(1, ReadMode::Lease).expect("leader");
    let rd = nodes[0].ready();
    assert_eq!(rd.read_states.len(), 1, "served at once");
    assert!(rd.messages.is_empty(), "no round trip");
    nodes[0].advance(&rd);
    // Cut the followers off: after lease_tick ticks without answers the
    // lease is gone and a lease read falls back to a ReadIndex round.
    for _ in 0..6 {
        nodes[0].tick();
    }
    drain(&mut nodes);
    nodes[0]
        .read_index(2, ReadMode::Lease)
        .expect("still leader");
    let rd = nodes[0].ready();
    assert!(
        rd.read_states.is_empty(),
        "lease expired: must confirm first"
    );
    assert!(rd
        .messages
        .iter()
        .any(|m| matches!(m.body, MessageBody::Heartbeat { read_round, .. } if read_round > 0)));
}

#[test]
fn read_index_waits_for_a_quorum() {
    let mut nodes = cluster(3, |_| {});
    nodes[0].read_index(9, ReadMode::ReadIndex).expect("leader");
    let rd = nodes[0].ready();
    assert!(rd.read_states.is_empty(), "not before a quorum confirms");
    let beats: Vec<Message> = rd.messages.clone();
    nodes[0].advance(&rd);
    // Only node 2 answers: with the leader itself that is a quorum of 3.
    for m in beats.into_iter().filter(|m| m.to == 2) {
        nodes[1].step(m).expect("step");
    }
    for m in drain(&mut nodes[1..2]) {
        nodes[0].step(m).expect("step");
    }
    let rd = nodes[0].ready();
    assert_eq!(rd.read_states.len(), 1);
    assert_eq!(rd.read_states[0].ctx, 9);
    assert_eq!(rd.read_states[0].index, nodes[0].commit_index());
}

#[test]
fn config_and_input_errors_are_reported() {
    let mut c = Config::new(1);
    c.lease_tick = c.election_tick;
    assert!(matches!(c.validate(), Err(Error::InvalidConfig(_))));
    let mut c = Config::new(0);
    c.election_tick = 10;
    assert!(c.validate().is_err());
    // A snapshot budget per tick below one chunk would never serve one.
    let mut c = Config::new(1);
    c.snapshot_bytes_per_tick = c.snapshot_chunk_size - 1;
    assert!(c.validate().is_err());
    c.snapshot_chunk_size = c.snapshot_bytes_per_tick;
    c.validate().expect("a budget of one chunk a tick");
    // A node with no configuration is a node waiting to be added: it
    // starts, and never campaigns on its own.
    let rng = Box::new(rand_pcg::Pcg64Mcg::seed_from_u64(1));
    let mut blank = Raft::new(Config::new(1), MemStorage::new(vec![]), rng).expect("blank node");
    for _ in 0..100 {
        blank.tick();
    }
    assert_eq!(blank.role(), Role::Follower);
    assert_eq!(blank.term(), 0);

    let mut n = node(1, &[1, 2, 3], |_| {});
    let m = Message {
        from: 2,
        to: 3,
        term: 1,
        body: MessageBody::TimeoutNow,
    };
    assert_eq!(n.step(m), Err(Error::Misrouted { to: 3, me: 1 }));
    // A TimeoutNow from outside the group neither starts an election nor
    // moves the term: only a leader's messages from strangers are heard.
    let m = Message {
        from: 9,
        to: 1,
        term: 5,
        body: MessageBody::TimeoutNow,
    };
    assert_eq!(n.step(m), Ok(()));
    assert_eq!(n.role(), Role::Follower);
    assert_eq!(n.term(), 0);
    assert_eq!(n.status().refused_messages, 1);
}

fn heartbeat(from: u64, to: u64, term: u64) -> Message {
    Message {
        from,
        to,
        term,
        body: MessageBody::Heartbeat {
            commit: 0,
            read_round: 0,
            lease_tick: 0,
            quiesce: false,
        },
    }
}

/// Proposes on the leader (node 1) and checks every node applies it.
fn commits_on_all(nodes: &mut [Node], data: &[u8]) {
    let at = nodes[0]
        .propose(data.to_vec(), None)
        .expect("leader accepts");
    stabilize(nodes, |_| true);
    for n in nodes.iter() {
        assert!(n.commit_index() >= at, "node {} commit", n.id());
    }
}

#[test]
fn a_forged_last_term_is_refused_and_cannot_brick_the_group() {
    let mut nodes = cluster(3, |_| {});
    let term = nodes[0].term();
    // The reported attack: a heartbeat at term 2^64-1, from a stranger and
    // from a member's id, to every node.
    for to in 1..=3u64 {
        for from in [99, 2, 3] {
            if from != to {
                nodes[to as usize - 1]
                    .step(heartbeat(from, to, u64::MAX))
                    .expect("step");
            }
        }
    }
    for n in &nodes {
        assert_eq!(n.term(), term, "node {} moved to a forged term", n.id());
        assert!(n.status().refused_messages >= 2, "node {}", n.id());
    }
    assert_eq!(nodes[0].role(), Role::Leader);
    commits_on_all(&mut nodes, b"after");
    // The largest jump a member may make is still taken (Raft's rule), one
    // past it is not.
    let jump = Config::new(1).max_term_jump;
    nodes[2]
        .step(heartbeat(2, 3, term + jump + 1))
        .expect("step");
    assert_eq!(nodes[2].term(), term);
    nodes[2].step(heartbeat(2, 3, term + jump)).expect("step");
    assert_eq!(nodes[2].term(), term + jump);
    assert_eq!(nodes[2].leader(), Some(2));
}

#[test]
fn strangers_depose_no_healthy_leader() {
    let mut nodes = cluster(3, |_| {});
    let term = nodes[0].term();
    let vote = |from: u64, to: u64, term: u64, leader_transfer: bool| Message {
        from,
        to,
        term,
        body: MessageBody::RequestVote {
            pre_vote: false,
            last_log_index: u64::MAX / 2,
            last_log_term: u64::MAX / 2,
            leader_transfer,
        },
    };
    // A stranger (a removed server, say) with a newer term and a longer
    // log, even claiming a leader transfer (which skips the lease check).
    nodes[1].step(vote(9, 2, term + 1, true)).expect("step");
    // A stranger's answer to something never asked.
    nodes[0]
        .step(Message {
            from: 9,
            to: 1,
            term: term + 1,
            body: MessageBody::HeartbeatResponse {
                read_round: 0,
                lease_tick: 0,
            },
        })
        .expect("step");
    assert_eq!(nodes[0].role(), Role::Leader);
    assert_eq!(nodes[1].term(), term);
    let sent = drain(&mut nodes);
    assert!(
        !sent.iter().any(|m| m.to == 9),
        "nobody answers the stranger: {sent:?}"
    );

    commits_on_all(&mut nodes, b"still leading");
}

#[test]
fn a_leader_our_configuration_does_not_know_yet_is_heard_after_the_lease() {
    // Node 3's configuration may be behind the log: a leader it does not
    // know must still reach it, once its own leader has gone quiet.
    let mut n = node(3, &[1, 2, 3], |_| {});
    n.step(heartbeat(4, 3, 2)).expect("step");
    assert_eq!(
        n.term(),
        0,
        "within the restart guard a stranger is not heard"
    );
    for _ in 0..10 {
        n.tick();
    }
    let _ = drain(std::slice::from_mut(&mut n));
    n.step(heartbeat(4, 3, 2)).expect("step");
    assert_eq!((n.term(), n.leader()), (2, Some(4)));
}

#[test]
fn a_node_at_the_last_term_never_wraps_to_term_zero() {
    let mut s = MemStorage::new(vec![1, 2, 3]);
    s.set_hard_state(raft_core::HardState {
        term: u64::MAX,
        vote: None,
        commit: 0,
    });
    let rng = Box::new(rand_pcg::Pcg64Mcg::seed_from_u64(1));
    let mut n = Raft::new(Config::new(1), s, rng).expect("starts");
    for _ in 0..100 {
        n.tick();
    }
    let _ = drain(std::slice::from_mut(&mut n));
    n.campaign_now();
    assert_eq!(n.term(), u64::MAX);
    assert_eq!(n.role(), Role::Follower);
}

/// Empty normal entries at `indexes`, all of `term`.
fn empty_entries(indexes: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    indexes
        .map(|index| Entry {
            index,
            term,
            kind: EntryKind::Normal,
            data: Bytes::new(),
        })
        .collect()
}

#[test]
fn a_node_whose_log_ends_below_its_snapshot_does_not_start() {
    // What a deleted log segment leaves behind a snapshot: on the old code
    // the node started with its commit index past its log, acknowledged
    // what it could not hold and rejected the rest, for ever.
    let mut s = MemStorage::new(vec![1, 2, 3]);
    s.append(&empty_entries(1..=20, 1)).expect("append");
    let mut meta = snapshot_of(b"x", raft_core::checksum(b"x"));
    meta.index = 30;
    meta.conf.index = 30;
    s.save_snapshot(meta, vec![b"x".to_vec()]).expect("save");
    let rng = Box::new(rand_pcg::Pcg64Mcg::seed_from_u64(1));
    let e = Raft::new(Config::new(1), s, rng).err().expect("refused");
    assert!(
        e.to_string()
            .contains("snapshot at 30 is past the last stored index 20"),
        "{e}"
    );
}

#[test]
fn a_storage_gap_is_an_error_not_a_panic() {
    let mut s = MemStorage::new(vec![1]);
    let e = Entry {
        index: 5,
        term: 1,
        kind: EntryKind::Normal,
        data: Bytes::new(),
    };
    assert!(matches!(s.append(&[e]), Err(Error::Storage(_))));
}

// ----- membership changes -------------------------------------------------

#[test]
fn changes_are_refused_with_a_reason() {
    use raft_core::ChangeError;
    let mut nodes = cluster(3, |_| {});
    assert_eq!(
        nodes[1].change_peers(vec![1, 2]),
        Err(ChangeError::NotLeader { leader: Some(1) }),
        "a follower names the leader"
    );
    assert!(matches!(
        nodes[0].change_peers(vec![]),
        Err(ChangeError::Invalid(_))
    ));
    assert!(matches!(
        nodes[0].change_peers(vec![1, 2, 3]),
        Err(ChangeError::Invalid(_))
    ));
    // A stated limit on the group's size, not a configuration the wire
    // format cannot carry.
    let e = nodes[0].change_peers((1..=5000).collect()).unwrap_err();
    assert!(
        e.to_string().contains(&format!(
            "more than a group may have ({})",
            raft_core::MAX_MEMBERS
        )),
        "{e}"
    );
    let e = nodes[0].reset_peers((1..=5000).collect()).unwrap_err();
    assert!(e.to_string().contains("5000 members"), "{e}");
    // Shrinking to {1, 2} is a single-step removal; while it is in the log
    // uncommitted, nothing else may change, and no transfer may start.
    nodes[0].change_peers(vec![1, 2]).expect("leader");
    assert_eq!(nodes[0].change_peers(vec![1]), Err(ChangeError::InProgress));
    assert_eq!(
        nodes[0].transfer_leader(2),
        Err(raft_core::TransferError::ChangeInProgress)
    );
    stabilize(&mut nodes, |_| true);
    assert_eq!(nodes[0].voters(), &[1, 2]);
    assert_eq!(nodes[1].voters(), &[1, 2]);
    // During a transfer, changes are refused.
    nodes[0].transfer_leader(2).expect("leader");
    assert_eq!(
        nodes[0].change_peers(vec![1]),
        Err(ChangeError::TransferInProgress)
    );
}

#[test]
fn a_new_leader_changes_nothing_before_it_commits_in_its_term() {
    use raft_core::ChangeError;
    let voters = [1, 2, 3];
    let mut nodes: Vec<Node> = voters.iter().map(|&id| node(id, &voters, |_| {})).collect();
    for n in nodes.iter_mut() {
        for _ in 0..10 {
            n.tick();
        }
    }
    drain(&mut nodes);
    nodes[0].campaign_now();
    // Deliver votes but not the no-op's acknowledgements.
    for _ in 0..4 {
        let msgs = drain(&mut nodes);
        for m in msgs {
            if matches!(m.body, MessageBody::Append { .. }) {
                continue;
            }
            let to = m.to as usize - 1;
            nodes[to].step(m).expect("step");
        }
    }
    assert_eq!(nodes[0].role(), Role::Leader);
    assert_eq!(
        nodes[0].change_peers(vec![1, 2]),
        Err(ChangeError::NoCommitInTerm)
    );
}

// ----- snapshots ----------------------------------------------------------

fn install_msg(meta: raft_core::SnapshotMeta) -> Message {
    Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::InstallSnapshot { meta },
    }
}

fn chunk_msg(data: &[u8], crc: u32) -> Message {
    Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::SnapshotChunk {
            index: 10,
            file: 0,
            offset: 0,
            data: data.to_vec().into(),
            crc,
            gone: false,
        },
    }
}

fn snapshot_of(data: &[u8], file_crc: u32) -> raft_core::SnapshotMeta {
    raft_core::SnapshotMeta {
        index: 10,
        term: 1,
        conf: raft_core::ConfState {
            index: 10,
            voters: vec![1, 2],
            ..Default::default()
        },
        files: vec![raft_core::SnapshotFile {
            name: "data".into(),
            size: data.len() as u64,
            crc: file_crc,
        }],
    }
}

/// Handles node `n`'s Readies; returns the messages and events.
fn ready_all(n: &mut Node) -> (Vec<Message>, Vec<raft_core::Event>) {
    let (mut msgs, mut evs) = (Vec::new(), Vec::new());
    while n.has_ready() {
        let rd = n.ready();
        n.storage_mut().persist(&rd).expect("persist");
        msgs.extend(rd.messages.iter().cloned());
        evs.extend(rd.events.iter().cloned());
        n.advance(&rd);
    }
    (msgs, evs)
}

#[test]
fn a_bad_chunk_is_asked_for_again_and_a_good_snapshot_installs() {
    let data = b"0123456789";
    let mut f = node(2, &[1, 2], |_| {});
    f.step(install_msg(snapshot_of(data, raft_core::checksum(data))))
        .expect("step");
    let (msgs, _) = ready_all(&mut f);
    let ask = |m: &Message| matches!(m.body, MessageBody::SnapshotChunkRequest { offset: 0, .. });
    assert!(msgs.iter().any(ask), "phase 2 starts: {msgs:?}");
    // A chunk whose checksum fails is not kept and is asked for again.
    f.step(chunk_msg(b"0123456780", raft_core::checksum(data)))
        .expect("step");
    let (msgs, evs) = ready_all(&mut f);
    assert!(msgs.iter().any(ask), "asked again: {msgs:?}");
    assert!(evs
        .iter()
        .any(|e| matches!(e, raft_core::Event::SnapshotChunkReceived { ok: false, .. })));
    assert_eq!(f.storage().partial_snapshot().map(|p| p.1), Some(vec![0]));
    f.step(chunk_msg(data, raft_core::checksum(data)))
        .expect("step");
    let (msgs, evs) = ready_all(&mut f);
    assert!(evs
        .iter()
        .any(|e| matches!(e, raft_core::Event::SnapshotInstalled { index: 10 })));
    assert!(msgs.iter().any(|m| matches!(
        m.body,
        MessageBody::AppendResponse {
            success: true,
            index: 10,
            ..
        }
    )));
    assert_eq!(f.commit_index(), 10);
    assert_eq!(f.applied_index(), 10);
    assert_eq!(f.raft_log().first_index(), 11);
    use raft_core::storage::Storage;
    assert_eq!(
        f.storage().snapshot_chunk(0, 0, 100).expect("installed"),
        data
    );
}

#[test]
fn a_snapshot_whose_file_checksum_fails_is_discarded_never_loaded() {
    let data = b"0123456789";
    let mut f = node(2, &[1, 2], |_| {});
    // Every chunk checks out, but the whole file does not match the meta.
    f.step(install_msg(snapshot_of(
        data,
        raft_core::checksum(data) ^ 1,
    )))
    .expect("step");
    ready_all(&mut f);
    f.step(chunk_msg(data, raft_core::checksum(data)))
        .expect("step");
    let (_, evs) = ready_all(&mut f);
    assert!(
        evs.iter()
            .any(|e| matches!(e, raft_core::Event::SnapshotDiscarded { index: 10, .. })),
        "{evs:?}"
    );
    assert!(!evs
        .iter()
        .any(|e| matches!(e, raft_core::Event::SnapshotInstalled { .. })));
    use raft_core::storage::Storage;
    assert!(f.storage().snapshot_meta().is_none());
    assert!(f.storage().partial_snapshot().is_none());
    assert_eq!(f.commit_index(), 0);
}

/// Chunk `offset..offset + data.len()` of file 0 of the snapshot at 10.
fn chunk_at(offset: u64, data: &[u8]) -> Message {
    let mut m = chunk_msg(data, raft_core::checksum(data));
    if let MessageBody::SnapshotChunk { offset: o, .. } = &mut m.body {
        *o = offset;
    }
    m
}

/// A follower restarted halfway through a transfer: it resumes from the
/// bytes its storage holds, checksumming them once (a chunk at a time)
/// to continue the file's running checksum, and installs only when the
/// whole file matches its meta.
fn resume_after_restart(first_half: &[u8]) -> (Node, Vec<raft_core::Event>) {
    let data = b"0123456789";
    let meta = snapshot_of(data, raft_core::checksum(data));
    let small = |c: &mut Config| c.snapshot_chunk_size = 5;
    let mut f = node(2, &[1, 2], small);
    f.step(install_msg(meta.clone())).expect("step");
    ready_all(&mut f);
    f.step(chunk_at(0, first_half)).expect("step");
    ready_all(&mut f);
    assert_eq!(f.storage().partial_snapshot().map(|p| p.1), Some(vec![5]));
    // The restart: a new core over what the storage holds.
    let mut cfg = Config::new(2);
    small(&mut cfg);
    let rng = Box::new(rand_pcg::Pcg64Mcg::seed_from_u64(2));
    let mut f = Raft::new(cfg, f.storage().clone(), rng).expect("restart");
    f.step(install_msg(meta)).expect("step");
    let (msgs, evs) = ready_all(&mut f);
    assert!(
        msgs.iter()
            .any(|m| matches!(m.body, MessageBody::SnapshotChunkRequest { offset: 5, .. })),
        "resumes at the bytes held: {msgs:?}"
    );
    assert!(evs
        .iter()
        .any(|e| matches!(e, raft_core::Event::SnapshotResumed { have: 5, .. })));
    f.step(chunk_at(5, &data[5..])).expect("step");
    let (_, evs) = ready_all(&mut f);
    (f, evs)
}

#[test]
fn the_status_shows_how_far_a_snapshot_transfer_has_come() {
    let data = b"0123456789";
    let small = |c: &mut Config| c.snapshot_chunk_size = 5;
    let mut f = node(2, &[1, 2], small);
    assert_eq!(f.status().receiving_snapshot, None);
    f.step(install_msg(snapshot_of(data, raft_core::checksum(data))))
        .expect("step");
    ready_all(&mut f);
    let at = |have| {
        Some(raft_core::core::SnapshotProgress {
            index: 10,
            have_bytes: have,
            total_bytes: 10,
        })
    };
    assert_eq!(f.status().receiving_snapshot, at(0));
    f.step(chunk_at(0, &data[..5])).expect("step");
    ready_all(&mut f);
    assert_eq!(f.status().receiving_snapshot, at(5));
    f.step(chunk_at(5, &data[5..])).expect("step");
    ready_all(&mut f);
    assert_eq!(f.status().receiving_snapshot, None);
    assert_eq!(f.applied_index(), 10);
}

#[test]
fn a_leader_reports_the_members_it_installs_a_snapshot_on() {
    let mut nodes = cluster(3, |_| {});
    // Node 3 hears nothing while entries commit.
    for i in 0..5u8 {
        nodes[0].propose(vec![i], None).expect("leader");
    }
    stabilize(&mut nodes, |m| m.to != 3 && m.from != 3);
    let l = &mut nodes[0];
    let index = l.commit_index();
    let data = vec![1u8; 20];
    let meta = raft_core::SnapshotMeta {
        index,
        term: l.term(),
        conf: raft_core::ConfState {
            index: 0,
            voters: vec![1, 2, 3],
            ..Default::default()
        },
        files: vec![raft_core::SnapshotFile {
            name: "d".into(),
            size: 20,
            crc: raft_core::checksum(&data),
        }],
    };
    l.storage_mut()
        .save_snapshot(meta, vec![data])
        .expect("save");
    l.storage_mut().compact(index).expect("compact");
    assert!(l.status().sending_snapshots.is_empty());
    // A heartbeat round: node 3 answers, the leader finds its entries
    // compacted and installs the snapshot on it.
    for _ in 0..3 {
        nodes[0].tick();
    }
    let mut seen = false;
    let mut msgs = drain(&mut nodes);
    for _ in 0..100 {
        if msgs.is_empty() {
            break;
        }
        for m in std::mem::take(&mut msgs) {
            let to = m.to as usize - 1;
            nodes[to].step(m).expect("step");
        }
        msgs = drain(&mut nodes);
        let st = nodes[0].status();
        seen |= st.sending_snapshots.get(&3) == Some(&index);
        assert!(st.sending_snapshots.keys().all(|&p| p == 3), "{st:?}");
    }
    assert!(seen, "the leader never reported the transfer");
    assert!(nodes[0].status().sending_snapshots.is_empty());
    assert!(nodes[2].applied_index() >= index);
}

#[test]
fn a_transfer_resumed_after_a_restart_checksums_the_bytes_held_before_it() {
    let (f, evs) = resume_after_restart(b"01234");
    assert!(
        evs.iter()
            .any(|e| matches!(e, raft_core::Event::SnapshotInstalled { index: 10 })),
        "{evs:?}"
    );
    assert_eq!(f.applied_index(), 10);
    // Bytes held before the restart that differ from the leader's (each
    // chunk checked out, the file does not) are caught.
    let (f, evs) = resume_after_restart(b"01x34");
    assert!(
        evs.iter()
            .any(|e| matches!(e, raft_core::Event::SnapshotDiscarded { index: 10, .. })),
        "{evs:?}"
    );
    assert_eq!(f.commit_index(), 0);
}

#[test]
fn snapshot_traffic_is_throttled_per_tick() {
    let mut l = node(1, &[1, 2, 3, 4], |c| {
        c.snapshot_chunk_size = 8;
        c.snapshot_bytes_per_tick = 8;
    });
    // Make it leader without peers' help: a single-voter reset.
    l.reset_peers(vec![1]).expect("reset");
    for _ in 0..10 {
        l.tick();
    }
    l.campaign_now();
    ready_all(&mut l);
    assert_eq!(l.role(), Role::Leader);
    let data = vec![7u8; 64];
    let meta = raft_core::SnapshotMeta {
        index: l.commit_index(),
        term: l.term(),
        conf: raft_core::ConfState::default(),
        files: vec![raft_core::SnapshotFile {
            name: "d".into(),
            size: 64,
            crc: raft_core::checksum(&data),
        }],
    };
    let index = meta.index;
    l.storage_mut()
        .save_snapshot(meta, vec![data])
        .expect("save");
    for from in [2, 3, 4] {
        let m = Message {
            from,
            to: 1,
            term: l.term(),
            body: MessageBody::SnapshotChunkRequest {
                index,
                file: 0,
                offset: 0,
                len: 8,
            },
        };
        l.step(m).expect("step");
    }
    let chunks = |msgs: &[Message]| {
        msgs.iter()
            .filter(|m| matches!(m.body, MessageBody::SnapshotChunk { .. }))
            .count()
    };
    assert_eq!(chunks(&ready_all(&mut l).0), 0, "no budget before a tick");
    for _ in 0..3 {
        l.tick();
        assert_eq!(chunks(&ready_all(&mut l).0), 1, "8 bytes a tick: one chunk");
    }
    l.tick();
    assert_eq!(chunks(&ready_all(&mut l).0), 0, "all served");
}

/// `MemStorage` whose reads of terms and entries fail (an I/O error, not
/// "not held") while `failing` is set.
struct FailingStorage {
    inner: MemStorage,
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FailingStorage {
    fn check(&self) -> Result<(), Error> {
        if self.failing.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::Storage("EIO (injected)".into()));
        }
        Ok(())
    }
}

impl raft_core::storage::Storage for FailingStorage {
    fn initial_state(&self) -> Result<(raft_core::HardState, raft_core::ConfState), Error> {
        self.inner.initial_state()
    }
    fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, Error> {
        self.check()?;
        self.inner.entries(lo, hi, max_bytes)
    }
    fn term(&self, index: u64) -> Result<u64, Error> {
        self.check()?;
        self.inner.term(index)
    }
    fn first_index(&self) -> u64 {
        self.inner.first_index()
    }
    fn last_index(&self) -> u64 {
        raft_core::storage::Storage::last_index(&self.inner)
    }
    fn snapshot_meta(&self) -> Option<raft_core::SnapshotMeta> {
        self.inner.snapshot_meta()
    }
    fn snapshot_chunk(&self, file: u32, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        self.check()?;
        self.inner.snapshot_chunk(file, offset, len)
    }
    fn partial_snapshot(&self) -> Option<(raft_core::SnapshotMeta, Vec<u64>)> {
        self.inner.partial_snapshot()
    }
    fn partial_chunk(&self, file: u32, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        self.inner.partial_chunk(file, offset, len)
    }
}

#[test]
fn a_failed_storage_read_stops_the_node_and_no_vote_rests_on_a_defaulted_term() {
    // Node 1 holds entries 1..=5 of term 1, all durable.
    let mut mem = MemStorage::new(vec![1, 2, 3]);
    mem.append(&empty_entries(1..=5, 1)).expect("append");
    mem.set_hard_state(raft_core::HardState {
        term: 1,
        vote: None,
        commit: 0,
    });
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = FailingStorage {
        inner: mem,
        failing: failing.clone(),
    };
    let rng = Box::new(rand_pcg::Pcg64Mcg::seed_from_u64(1));
    let mut n = Raft::new(Config::new(1), s, rng).expect("starts");
    for _ in 0..10 {
        n.tick(); // past the restart guard, no leader heard
    }
    while n.has_ready() {
        let rd = n.ready();
        n.advance(&rd);
    }
    // The disk now fails reads. A candidate whose log is behind ours (its
    // last entry is (3, 1), ours (5, 1)) must not get our vote; with the
    // term of our last entry defaulted to 0 it would.
    failing.store(true, std::sync::atomic::Ordering::Relaxed);
    let e = n
        .step(Message {
            from: 2,
            to: 1,
            term: 2,
            body: MessageBody::RequestVote {
                pre_vote: false,
                last_log_index: 3,
                last_log_term: 1,
                leader_transfer: false,
            },
        })
        .expect_err("a failed read is an error");
    assert!(
        matches!(&e, Error::Storage(m) if m.contains("reading the term of entry 5") && m.contains("EIO")),
        "{e}"
    );
    assert!(!n.has_ready(), "nothing may leave the node");
    assert!(n.storage_failure().is_some());
    // It stays stopped, even once the disk answers again.
    failing.store(false, std::sync::atomic::Ordering::Relaxed);
    assert!(n.step(heartbeat(2, 1, 2)).is_err());
}
