//! An entry's payload on its way through a real node's parts, counted by
//! where its bytes live: propose -> the leader's log and `Ready` -> the
//! `Append` to each follower -> the leader's storage (the entry cache) ->
//! encode -> (wire) -> decode -> the follower's log, storage and cache ->
//! the committed entries handed to apply, on both sides.
//!
//! Each step must hand on the same buffer (pointer equality), except the two
//! that serialize: the leader's encode (one copy per follower, into the
//! frame) and the log store's write (one copy per node, into its record
//! buffer). So the leader holds the payload once however many followers it
//! has, and a follower holds the frame it received.
#![cfg(feature = "runtime")]

use raft_core::runtime::codec;
use raft_core::runtime::Envelope;
use raft_core::storage::{open, NodeStorage, Storage};
use raft_core::{Bytes, Config, Entry, Message, MessageBody, Raft, Ready, Role};
use rand_core::SeedableRng;

type Node = Raft<NodeStorage>;

fn node(id: u64, dir: &std::path::Path) -> Node {
    let path = dir.join(format!("n{id}"));
    let mut storage = open(&format!("local://{}", path.display())).expect("local storage");
    storage
        .set_conf_state(raft_core::ConfState {
            voters: vec![1, 2, 3],
            ..Default::default()
        })
        .expect("voters");
    let rng = Box::new(rand_pcg::Pcg64Mcg::seed_from_u64(id));
    Raft::new(Config::new(id), storage, rng).expect("valid")
}

/// Persists and acknowledges one `Ready` the way the runtime does.
fn handle(n: &mut Node) -> Ready {
    let rd = n.ready();
    n.storage_mut().persist(&rd).expect("persist");
    n.advance(&rd);
    rd
}

/// Handles every pending `Ready`, returning their messages.
fn drain(n: &mut Node) -> Vec<Message> {
    let mut out = Vec::new();
    while n.has_ready() {
        out.extend(handle(n).messages);
    }
    out
}

/// Elects node 1 among three, delivering in memory.
fn elect(nodes: &mut [Node]) {
    for n in nodes.iter_mut() {
        for _ in 0..10 {
            n.tick();
        }
    }
    nodes[0].campaign_now();
    let mut msgs: Vec<Message> = nodes.iter_mut().flat_map(drain).collect();
    for _ in 0..100 {
        if msgs.is_empty() {
            break;
        }
        for m in std::mem::take(&mut msgs) {
            nodes[m.to as usize - 1].step(m).expect("step");
        }
        msgs = nodes.iter_mut().flat_map(drain).collect();
    }
    assert_eq!(nodes[0].role(), Role::Leader);
}

/// The data of the one entry at `index` in `entries`.
fn data_at(entries: &[Entry], index: u64) -> &Bytes {
    &entries
        .iter()
        .find(|e| e.index == index)
        .unwrap_or_else(|| panic!("entry {index} in {entries:?}"))
        .data
}

/// Whether `inner` lies within `outer`'s memory.
fn within(inner: &Bytes, outer: &Bytes) -> bool {
    let o = outer.as_ptr() as usize;
    let i = inner.as_ptr() as usize;
    i >= o && i + inner.len() <= o + outer.len()
}

#[test]
fn a_payload_is_shared_from_propose_to_apply_on_leader_and_followers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes: Vec<Node> = (1..=3).map(|id| node(id, dir.path())).collect();
    elect(&mut nodes);

    let payload = Bytes::from(vec![0x5A; 64 << 10]);
    let index = nodes[0].propose(payload.clone(), None).expect("leader");
    let same = |b: &Bytes| b.as_ptr() == payload.as_ptr() && b.len() == payload.len();

    // The leader's Ready: its entries to persist and an Append per follower
    // all hold the proposal's own buffer.
    let rd = handle(&mut nodes[0]);
    assert!(
        same(data_at(&rd.entries, index)),
        "the Ready's entry copied"
    );
    let appends: Vec<&Message> = rd
        .messages
        .iter()
        .filter(|m| matches!(&m.body, MessageBody::Append { entries, .. } if !entries.is_empty()))
        .collect();
    assert_eq!(appends.len(), 2, "one Append per follower: {rd:?}");
    for m in &appends {
        let MessageBody::Append { entries, .. } = &m.body else {
            unreachable!()
        };
        assert!(
            same(data_at(entries, index)),
            "the Append to {} copied",
            m.to
        );
    }
    // Persisted: the entry cache serves the same buffer (what a later
    // Append or the apply hand-off reads).
    let cached = nodes[0]
        .storage()
        .entries(index, index + 1, u64::MAX)
        .expect("cached");
    assert!(same(&cached[0].data), "the entry cache copied");

    // Over the wire: one copy per follower into its frame, none out of it.
    let mut received = Vec::new();
    for m in rd.messages.iter().cloned() {
        let mut frame = Vec::new();
        codec::encode(&Envelope { group: 1, msg: m }, &mut frame);
        let frame = Bytes::from(frame);
        let env = codec::decode_shared(&frame).expect("decodes");
        if let MessageBody::Append { entries, .. } = &env.msg.body {
            if !entries.is_empty() {
                let data = data_at(entries, index);
                assert!(within(data, &frame), "decode copied the payload");
                received.push((env.msg.to, data.clone()));
            }
        }
        let to = env.msg.to as usize - 1;
        nodes[to].step(env.msg).expect("step");
    }
    assert_eq!(received.len(), 2);

    // Each follower persists, caches and acknowledges the frame's slice.
    let mut acks = Vec::new();
    for (to, data) in &received {
        let f = &mut nodes[*to as usize - 1];
        let rd = handle(f);
        let at = |b: &Bytes| b.as_ptr() == data.as_ptr();
        assert!(
            at(data_at(&rd.entries, index)),
            "follower {to}'s log copied"
        );
        let cached = f
            .storage()
            .entries(index, index + 1, u64::MAX)
            .expect("cached");
        assert!(at(&cached[0].data), "follower {to}'s cache copied");
        acks.extend(rd.messages);
        acks.extend(drain(f));
    }
    for m in acks {
        nodes[0].step(m).expect("step");
    }

    // Committed: the leader applies its proposal's buffer.
    let mut commit_msgs = Vec::new();
    let mut applied = None;
    while nodes[0].has_ready() {
        let rd = handle(&mut nodes[0]);
        if let Some(e) = rd.committed_entries.iter().find(|e| e.index == index) {
            applied = Some(e.data.clone());
        }
        commit_msgs.extend(rd.messages);
    }
    assert!(
        applied.as_ref().is_some_and(same),
        "the leader's apply hand-off copied"
    );

    // The followers learn the commit (through the codec too) and apply
    // the slice of the frame they received.
    nodes[0].tick();
    commit_msgs.extend(drain(&mut nodes[0]));
    for m in commit_msgs {
        let mut frame = Vec::new();
        codec::encode(&Envelope { group: 1, msg: m }, &mut frame);
        let env = codec::decode_shared(&Bytes::from(frame)).expect("decodes");
        let to = env.msg.to as usize - 1;
        nodes[to].step(env.msg).expect("step");
    }
    for (to, data) in &received {
        let f = &mut nodes[*to as usize - 1];
        let mut applied = None;
        while f.has_ready() {
            let rd = handle(f);
            if let Some(e) = rd.committed_entries.iter().find(|e| e.index == index) {
                applied = Some(e.data.clone());
            }
        }
        let applied = applied.unwrap_or_else(|| panic!("follower {to} applied {index}"));
        assert_eq!(
            applied.as_ptr(),
            data.as_ptr(),
            "follower {to}'s apply hand-off copied"
        );
    }
}
