//! The TCP transport over real sockets on 127.0.0.1: delivery of every
//! message kind both ways, many groups on one connection, refusal of wrong
//! tokens and clusters, garbage clients, a peer that is down (bounded queue,
//! reconnect), and the fault filter.
//!
//! Every wait is bounded. Tasks stop on `shutdown` at the end of each test;
//! if a test fails first, dropping its handles aborts every task.
#![cfg(feature = "runtime")]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use raft_core::runtime::transport::{
    FaultFilter, Inbound, Refusal, Transport, TransportConfig, TransportEventKind, TransportHandle,
    TransportStats,
};
use raft_core::runtime::{Envelope, Outbox};
use raft_core::{
    Bytes, ConfState, Entry, EntryKind, Message, MessageBody, SnapshotFile, SnapshotMeta,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, Instant};

const TEST_LIMIT: Duration = Duration::from_secs(30);
const QUIET: Duration = Duration::from_millis(300);

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("literal address")
}

fn config(id: u64, token: &str) -> TransportConfig {
    let mut cfg = TransportConfig::new(id, any_port(), 7, token);
    cfg.backoff_min = Duration::from_millis(10);
    cfg.backoff_max = Duration::from_millis(200);
    cfg.handshake_timeout = Duration::from_secs(2);
    cfg
}

async fn start(cfg: TransportConfig) -> (TransportHandle, Inbound) {
    Transport::start(cfg).await.expect("transport starts")
}

/// Two transports, 1 and 2, that know each other.
async fn pair() -> (TransportHandle, Inbound, TransportHandle, Inbound) {
    let (a, rx_a) = start(config(1, "secret")).await;
    let (b, rx_b) = start(config(2, "secret")).await;
    a.set_peer(2, b.local_addr());
    b.set_peer(1, a.local_addr());
    (a, rx_a, b, rx_b)
}

fn bodies() -> Vec<MessageBody> {
    vec![
        MessageBody::RequestVote {
            pre_vote: true,
            last_log_index: 1,
            last_log_term: 2,
            leader_transfer: true,
        },
        MessageBody::RequestVoteResponse {
            pre_vote: false,
            granted: true,
        },
        MessageBody::Append {
            prev_log_index: 3,
            prev_log_term: 4,
            entries: vec![
                Entry {
                    index: 4,
                    term: 4,
                    kind: EntryKind::Normal,
                    data: vec![7; 1000].into(),
                },
                Entry {
                    index: 5,
                    term: 4,
                    kind: EntryKind::Noop,
                    data: Bytes::new(),
                },
                Entry {
                    index: 6,
                    term: 4,
                    kind: EntryKind::ConfChange,
                    data: vec![1, 2].into(),
                },
            ],
            leader_commit: 3,
            lease_tick: 9,
        },
        MessageBody::AppendResponse {
            success: false,
            index: 5,
            hint_index: 6,
            hint_term: 7,
            lease_tick: 8,
        },
        MessageBody::Heartbeat {
            commit: 1,
            read_round: 2,
            lease_tick: 3,
            quiesce: false,
        },
        MessageBody::HeartbeatResponse {
            read_round: 4,
            lease_tick: 5,
        },
        MessageBody::TimeoutNow,
        MessageBody::InstallSnapshot {
            meta: SnapshotMeta {
                index: 10,
                term: 2,
                conf: ConfState {
                    index: 9,
                    voters: vec![1, 2, 3],
                    outgoing: vec![],
                    learners: vec![4],
                },
                files: vec![SnapshotFile {
                    name: "data".into(),
                    size: 5,
                    crc: 6,
                }],
            },
        },
        MessageBody::SnapshotChunkRequest {
            index: 10,
            file: 0,
            offset: 0,
            len: 4096,
        },
        MessageBody::SnapshotChunk {
            index: 10,
            file: 0,
            offset: 0,
            data: vec![3; 4096].into(),
            crc: 11,
            gone: false,
        },
    ]
}

fn envelope(group: u64, from: u64, to: u64, term: u64, body: MessageBody) -> Envelope {
    Envelope {
        group,
        msg: Message {
            from,
            to,
            term,
            body,
        },
    }
}

fn heartbeat(group: u64, from: u64, to: u64, seq: u64) -> Envelope {
    envelope(
        group,
        from,
        to,
        1,
        MessageBody::Heartbeat {
            commit: seq,
            read_round: seq,
            lease_tick: seq,
            quiesce: false,
        },
    )
}

/// Receives exactly `n` envelopes within `within`, or fails naming how many
/// arrived.
async fn recv_n(rx: &mut Inbound, n: usize, within: Duration) -> Vec<Envelope> {
    let mut got = Vec::with_capacity(n);
    let deadline = Instant::now() + within;
    while got.len() < n {
        match timeout(
            deadline.saturating_duration_since(Instant::now()),
            rx.recv(),
        )
        .await
        {
            Ok(Some(e)) => got.push(e),
            Ok(None) => panic!("receiver ended after {} of {n}", got.len()),
            Err(_) => panic!("only {} of {n} envelopes arrived", got.len()),
        }
    }
    got
}

/// Asserts nothing arrives for `QUIET`.
async fn expect_nothing(rx: &mut Inbound) {
    if let Ok(Some(e)) = timeout(QUIET, rx.recv()).await {
        panic!("unexpected envelope {e:?}");
    }
}

/// Polls `stats()` until `pred` holds, for at most 10 s.
async fn wait_for(h: &TransportHandle, what: &str, pred: impl Fn(&TransportStats) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = h.stats();
        if pred(&s) {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}: {s:#?}");
        }
        sleep(Duration::from_millis(10)).await;
    }
}

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    timeout(TEST_LIMIT, f).await.expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_travels_both_ways() {
    bounded(async {
        let (a, mut rx_a, b, mut rx_b) = pair().await;
        let to_b: Vec<Envelope> = bodies()
            .into_iter()
            .enumerate()
            .map(|(i, body)| envelope(i as u64 + 100, 1, 2, 5, body))
            .collect();
        let to_a: Vec<Envelope> = bodies()
            .into_iter()
            .enumerate()
            .map(|(i, body)| envelope(i as u64 + 200, 2, 1, 6, body))
            .collect();
        for e in &to_b {
            a.send(e.clone());
        }
        for e in &to_a {
            b.send(e.clone());
        }
        assert_eq!(
            recv_n(&mut rx_b, to_b.len(), Duration::from_secs(10)).await,
            to_b
        );
        assert_eq!(
            recv_n(&mut rx_a, to_a.len(), Duration::from_secs(10)).await,
            to_a
        );
        // `sent` counts after the write returns, which may be just after
        // the peer read it.
        wait_for(&a, "sends counted", |s| (s.sent, s.received) == (10, 10)).await;
        a.shutdown().await;
        b.shutdown().await;
        // The receivers end once the transports are shut down.
        assert!(matches!(timeout(QUIET * 10, rx_a.recv()).await, Ok(None)));
        // Sends after shutdown are dropped and counted.
        a.send(heartbeat(1, 1, 2, 1));
        assert_eq!(a.stats().dropped_shutdown, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_groups_share_one_connection_in_order() {
    bounded(async {
        let (a, mut rx_a, b, mut rx_b) = pair().await;
        const GROUPS: u64 = 200;
        const PER_GROUP: u64 = 10;
        for seq in 0..PER_GROUP {
            for g in 0..GROUPS {
                a.send(heartbeat(g, 1, 2, seq));
                b.send(heartbeat(g, 2, 1, seq));
            }
        }
        let n = (GROUPS * PER_GROUP) as usize;
        for got in [
            recv_n(&mut rx_b, n, Duration::from_secs(10)).await,
            recv_n(&mut rx_a, n, Duration::from_secs(10)).await,
        ] {
            let mut next = BTreeMap::new();
            for e in got {
                let MessageBody::Heartbeat { commit, .. } = e.msg.body else {
                    panic!("not a heartbeat")
                };
                let expect = next.entry(e.group).or_insert(0u64);
                assert_eq!(commit, *expect, "group {} out of order", e.group);
                *expect += 1;
            }
            assert_eq!(next.len() as u64, GROUPS);
        }
        for h in [&a, &b] {
            let s = h.stats();
            assert_eq!(s.connects, 1, "{s:#?}");
            let accepted = s
                .events
                .iter()
                .filter(|e| matches!(e.kind, TransportEventKind::InboundAccepted { .. }))
                .count();
            assert_eq!(accepted, 1, "{s:#?}");
            assert_eq!(s.dropped_queue_full, 0);
        }
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_or_cluster_is_refused_and_counted() {
    bounded(async {
        let (a, mut rx_a) = start(config(1, "secret")).await;
        let (bad_token, _rx_c) = start(config(3, "guess")).await;
        let mut other = config(4, "secret");
        other.cluster_id = 8;
        let (bad_cluster, _rx_d) = start(other).await;
        for h in [&bad_token, &bad_cluster] {
            h.set_peer(1, a.local_addr());
        }
        // Keep sending so the refused nodes keep retrying.
        for i in 0..30 {
            bad_token.send(heartbeat(1, 3, 1, i));
            bad_cluster.send(heartbeat(1, 4, 1, i));
            sleep(Duration::from_millis(10)).await;
        }
        wait_for(&a, "refusals", |s| s.refused_inbound >= 4).await;
        wait_for(&bad_token, "retries", |s| s.refused_outbound >= 3).await;
        wait_for(&bad_cluster, "retries", |s| s.refused_outbound >= 3).await;
        expect_nothing(&mut rx_a).await;
        let s = a.stats();
        assert_eq!(s.received, 0);
        let refusals: BTreeSet<_> = s
            .events
            .iter()
            .filter_map(|e| match e.kind {
                TransportEventKind::InboundRefused { refusal, .. } => Some(format!("{refusal:?}")),
                _ => None,
            })
            .collect();
        assert!(
            refusals.contains("Token") && refusals.contains("Cluster"),
            "{s:#?}"
        );
        // Many refusals, one event per source and reason.
        let events = s
            .events
            .iter()
            .filter(|e| matches!(e.kind, TransportEventKind::InboundRefused { .. }))
            .count();
        assert_eq!(events, 2, "{s:#?}");
        // The refused side logs the refusal once, not once per retry.
        for (h, why) in [
            (&bad_token, Refusal::Token),
            (&bad_cluster, Refusal::Cluster),
        ] {
            let s = h.stats();
            let events: Vec<_> = s
                .events
                .iter()
                .filter(|e| matches!(e.kind, TransportEventKind::PeerRefused { .. }))
                .collect();
            assert_eq!(events.len(), 1, "{s:#?}");
            assert_eq!(
                events[0].kind,
                TransportEventKind::PeerRefused {
                    peer: 1,
                    refusal: why
                }
            );
            assert_eq!(s.connects, 0);
            assert_eq!(s.sent, 0);
        }
        a.shutdown().await;
        bad_token.shutdown().await;
        bad_cluster.shutdown().await;
    })
    .await;
}

/// A fixed-seed linear congruential generator.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// Writes `bytes` to `addr` and waits until the server closes the
/// connection; true if it did within the limit.
async fn garbage_is_dropped(addr: SocketAddr, bytes: &[u8]) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return false;
    };
    // The server may close before everything is written.
    let _ = s.write_all(bytes).await;
    let mut sink = vec![0u8; 4096];
    let closed = async {
        loop {
            match s.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    timeout(Duration::from_secs(5), closed).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_clients_are_dropped_without_hurting_a_good_peer() {
    bounded(async {
        let (a, mut rx_a, b, mut rx_b) = pair().await;
        // A good link first.
        b.send(heartbeat(1, 2, 1, 0));
        recv_n(&mut rx_a, 1, Duration::from_secs(10)).await;

        let mut rng = Lcg(7);
        let mut inputs: Vec<Vec<u8>> = (0..20)
            .map(|_| {
                let len = 1 + (rng.next() % 5000) as usize;
                (0..len).map(|_| rng.next() as u8).collect()
            })
            .collect();
        // A header claiming a huge frame, and one with a small length and
        // a wrong checksum.
        inputs.push([u32::MAX.to_le_bytes(), [0; 4]].concat());
        inputs.push([10u32.to_le_bytes().to_vec(), vec![0; 14]].concat());
        for (i, bytes) in inputs.iter().enumerate() {
            assert!(
                garbage_is_dropped(a.local_addr(), bytes).await,
                "garbage client {i} was not dropped"
            );
            // The good peer keeps working meanwhile, both ways.
            b.send(heartbeat(1, 2, 1, i as u64 + 1));
            a.send(heartbeat(1, 1, 2, i as u64 + 1));
        }
        let got = recv_n(&mut rx_a, inputs.len(), Duration::from_secs(10)).await;
        assert_eq!(got.last(), Some(&heartbeat(1, 2, 1, inputs.len() as u64)));
        recv_n(&mut rx_b, inputs.len(), Duration::from_secs(10)).await;
        let s = a.stats();
        assert!(s.bad_frames >= inputs.len() as u64 - 1, "{s:#?}");
        assert_eq!(b.stats().connects, 1, "the good link never dropped");
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_peer_costs_a_bounded_queue_and_reconnects() {
    bounded(async {
        // A port nobody listens on yet.
        let addr_b = {
            let l = std::net::TcpListener::bind(any_port()).expect("bind");
            l.local_addr().expect("addr")
        };
        const LIMIT: usize = 16;
        let mut cfg_a = config(1, "secret");
        cfg_a.queue_limit = LIMIT;
        cfg_a.peers.insert(2, addr_b);
        let (a, _rx_a) = start(cfg_a).await;
        wait_for(&a, "failed connects", |s| s.connect_failures >= 3).await;
        for i in 0..100 {
            a.send(heartbeat(1, 1, 2, i));
        }
        let s = a.stats();
        assert_eq!(s.dropped_queue_full, 100 - LIMIT as u64, "{s:#?}");
        // Many failed attempts, one event.
        let down = s
            .events
            .iter()
            .filter(|e| matches!(e.kind, TransportEventKind::PeerDown { .. }))
            .count();
        assert_eq!(down, 1, "{s:#?}");

        // The peer comes up; the queued envelopes and new ones arrive.
        let mut cfg_b = config(2, "secret");
        cfg_b.listen = addr_b;
        cfg_b.peers.insert(1, a.local_addr());
        let (b, mut rx_b) = start(cfg_b).await;
        let queued = recv_n(&mut rx_b, LIMIT, Duration::from_secs(10)).await;
        let expected: Vec<_> = (0..LIMIT as u64).map(|i| heartbeat(1, 1, 2, i)).collect();
        assert_eq!(queued, expected);
        a.send(heartbeat(1, 1, 2, 1000));
        assert_eq!(
            recv_n(&mut rx_b, 1, Duration::from_secs(10)).await,
            vec![heartbeat(1, 1, 2, 1000)]
        );
        let s = a.stats();
        assert!(
            s.events
                .iter()
                .any(|e| matches!(e.kind, TransportEventKind::PeerConnected { peer: 2, .. })),
            "{s:#?}"
        );

        // The peer goes down again and comes back: the link recovers.
        b.shutdown().await;
        wait_for(&a, "loss noticed", |s| {
            s.events
                .iter()
                .filter(|e| matches!(e.kind, TransportEventKind::PeerDown { .. }))
                .count()
                >= 2
        })
        .await;
        let mut cfg_b = config(2, "secret");
        cfg_b.listen = addr_b;
        cfg_b.peers.insert(1, a.local_addr());
        let (b, mut rx_b) = start(cfg_b).await;
        // Keep sending until something arrives (envelopes written into the
        // dying connection may be lost; Raft retries).
        let mut got = None;
        for i in 0..200 {
            a.send(heartbeat(1, 1, 2, 2000 + i));
            if let Ok(Some(e)) = timeout(Duration::from_millis(50), rx_b.recv()).await {
                got = Some(e);
                break;
            }
        }
        assert!(
            got.is_some(),
            "no delivery after the restart: {:#?}",
            a.stats()
        );
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_filter_partitions_and_heals() {
    bounded(async {
        let (a, mut rx_a, b, mut rx_b) = pair().await;
        // Establish both links.
        a.send(heartbeat(1, 1, 2, 0));
        b.send(heartbeat(1, 2, 1, 0));
        recv_n(&mut rx_b, 1, Duration::from_secs(10)).await;
        recv_n(&mut rx_a, 1, Duration::from_secs(10)).await;

        // Partition 1 from 2: drop what 1 sends to 2 and what 1 hears from 2.
        let partition = FaultFilter {
            drop_to: [2].into(),
            drop_from: [2].into(),
            ..FaultFilter::default()
        };
        a.set_filter(partition.clone());
        assert_eq!(a.filter(), partition);
        for i in 1..=5 {
            a.send(heartbeat(1, 1, 2, i));
            b.send(heartbeat(1, 2, 1, i));
        }
        expect_nothing(&mut rx_b).await;
        expect_nothing(&mut rx_a).await;
        assert_eq!(a.stats().dropped_filter, 10);

        // Heal.
        a.set_filter(FaultFilter::default());
        a.send(heartbeat(1, 1, 2, 6));
        b.send(heartbeat(1, 2, 1, 6));
        assert_eq!(
            recv_n(&mut rx_b, 1, Duration::from_secs(10)).await,
            vec![heartbeat(1, 1, 2, 6)]
        );
        assert_eq!(
            recv_n(&mut rx_a, 1, Duration::from_secs(10)).await,
            vec![heartbeat(1, 2, 1, 6)]
        );

        // Delay: envelopes to 2 arrive no sooner than the delay, in order.
        let delay = Duration::from_millis(200);
        a.set_filter(FaultFilter {
            delay_to: [(2, delay)].into(),
            ..FaultFilter::default()
        });
        let sent_at = Instant::now();
        for i in 7..10 {
            a.send(heartbeat(1, 1, 2, i));
        }
        let got = recv_n(&mut rx_b, 3, Duration::from_secs(10)).await;
        assert!(sent_at.elapsed() >= delay);
        assert_eq!(
            got,
            (7..10).map(|i| heartbeat(1, 1, 2, i)).collect::<Vec<_>>()
        );

        // Loss: about the chance asked for is dropped, the rest arrives.
        let before = a.stats().dropped_filter;
        a.set_filter(FaultFilter {
            loss_to: [(2, 50)].into(),
            ..FaultFilter::default()
        });
        for i in 10..410 {
            a.send(heartbeat(1, 1, 2, i));
        }
        let dropped = a.stats().dropped_filter - before;
        assert!(
            (120..=280).contains(&dropped),
            "{dropped} of 400 dropped at 50%"
        );
        let got = recv_n(&mut rx_b, (400 - dropped) as usize, Duration::from_secs(10)).await;
        assert_eq!(got.len() as u64, 400 - dropped);
        a.set_filter(FaultFilter::default());

        // Unknown peers are counted, not queued.
        a.send(heartbeat(1, 1, 9, 0));
        assert_eq!(a.stats().dropped_unknown_peer, 1);
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}

/// One frame as the transport's module documentation lays it out.
fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![raft_core::runtime::transport::PROTOCOL_VERSION, kind];
    body.extend_from_slice(payload);
    let mut f = (body.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(&raft_core::checksum(&body).to_le_bytes());
    f.extend_from_slice(&body);
    f
}

/// A hand-written client that completes a valid handshake as node `from`.
async fn raw_client(addr: SocketAddr, from: u64, to: u64, token: &str) -> (TcpStream, u8) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut hello = Vec::new();
    hello.extend_from_slice(&7u64.to_le_bytes());
    hello.extend_from_slice(&from.to_le_bytes());
    hello.extend_from_slice(&to.to_le_bytes());
    hello.extend_from_slice(&(token.len() as u16).to_le_bytes());
    hello.extend_from_slice(token.as_bytes());
    s.write_all(&frame(1, &hello)).await.expect("hello");
    let mut ack = [0u8; 8 + 2 + 9];
    s.read_exact(&mut ack).await.expect("ack");
    assert_eq!(
        &ack[..8],
        &frame(2, &ack[10..])[..8],
        "ack is a valid frame"
    );
    assert_eq!(ack[9], 2, "hello-ack kind");
    (s, ack[10])
}

fn encoded(e: &Envelope) -> Vec<u8> {
    let mut out = Vec::new();
    raft_core::runtime::codec::encode(e, &mut out);
    out
}

/// Waits until the server closes `s`; true if it did within 5 s.
async fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut sink = [0u8; 64];
    timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_after_a_valid_handshake_close_only_that_connection() {
    bounded(async {
        let (a, mut rx_a) = start(config_with_peers([5])).await;
        let addr = a.local_addr();

        // The wire format as documented: a valid envelope is delivered, one
        // for another node is dropped and counted without closing.
        let (mut s, status) = raw_client(addr, 5, 1, "secret").await;
        assert_eq!(status, 0, "accepted");
        s.write_all(&frame(3, &encoded(&heartbeat(4, 5, 99, 0))))
            .await
            .expect("write");
        s.write_all(&frame(3, &encoded(&heartbeat(4, 5, 1, 1))))
            .await
            .expect("write");
        assert_eq!(
            recv_n(&mut rx_a, 1, Duration::from_secs(10)).await,
            vec![heartbeat(4, 5, 1, 1)]
        );
        assert_eq!(a.stats().dropped_misaddressed, 1);

        // Each of these closes the connection it arrives on.
        let mut bad_crc = frame(3, &encoded(&heartbeat(4, 5, 1, 2)));
        bad_crc[5] ^= 1;
        let mut bad: Vec<(&str, Vec<u8>)> = vec![
            ("bad checksum", bad_crc),
            ("undecodable", frame(3, &[1, 2, 3])),
            ("spoofed sender", frame(3, &encoded(&heartbeat(4, 6, 1, 2)))),
            ("wrong kind", frame(1, &[])),
            ("over the frame limit", u32::MAX.to_le_bytes().repeat(2)),
        ];
        // The first reuses the accepted connection above.
        let mut first = Some(s);
        let mut closed = 0;
        for (what, bytes) in bad.drain(..) {
            let mut s = match first.take() {
                Some(s) => s,
                None => {
                    let (s, status) = raw_client(addr, 5, 1, "secret").await;
                    assert_eq!(status, 0);
                    s
                }
            };
            let _ = s.write_all(&bytes).await;
            assert!(closed_by_server(&mut s).await, "{what}: not closed");
            closed += 1;
        }
        wait_for(&a, "bad frames counted", |s| s.bad_frames == closed).await;
        expect_nothing(&mut rx_a).await;

        // A refused hand-written hello gets a refusal status.
        let (_s, status) = raw_client(addr, 5, 1, "nope").await;
        assert_ne!(status, 0);
        let (_s, status) = raw_client(addr, 5, 2, "secret").await;
        assert_ne!(status, 0, "hello meant for another node");
        a.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_can_move_and_be_removed() {
    bounded(async {
        let (a, _rx_a) = start(config(1, "secret")).await;
        // Both know node 1: a hello from an unknown id is refused.
        let knows_a = || {
            let mut cfg = config(2, "secret");
            cfg.peers.insert(1, a.local_addr());
            cfg
        };
        let (b1, mut rx_b1) = start(knows_a()).await;
        let (b2, mut rx_b2) = start(knows_a()).await;
        a.set_peer(2, b1.local_addr());
        a.send(heartbeat(1, 1, 2, 0));
        recv_n(&mut rx_b1, 1, Duration::from_secs(10)).await;

        // Node 2 moves: the next envelopes go to its new address.
        a.set_peer(2, b2.local_addr());
        let mut got = None;
        for i in 1..200 {
            a.send(heartbeat(1, 1, 2, i));
            if let Ok(Some(e)) = timeout(Duration::from_millis(50), rx_b2.recv()).await {
                got = Some(e);
                break;
            }
        }
        assert!(got.is_some(), "nothing reached the new address");

        a.remove_peer(2);
        a.send(heartbeat(1, 1, 2, 999));
        assert_eq!(a.stats().dropped_unknown_peer, 1);
        expect_nothing(&mut rx_b2).await;
        // Only what was sent before the move reached the old address.
        while let Ok(e) = rx_b1.try_recv() {
            let MessageBody::Heartbeat { commit, .. } = e.msg.body else {
                panic!("not a heartbeat")
            };
            assert!(commit < 200);
        }
        for h in [&a, &b1, &b2] {
            h.shutdown().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_back_off_and_log_once() {
    bounded(async {
        // A server that accepts and at once closes: every attempt fails the
        // same way.
        let listener = tokio::net::TcpListener::bind(any_port())
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepts = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = accepts.clone();
        let server = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                drop(s);
            }
        });
        let mut cfg = config(1, "secret");
        cfg.peers.insert(2, addr);
        let (a, _rx) = start(cfg).await;
        sleep(Duration::from_millis(1500)).await;
        let attempts = accepts.load(std::sync::atomic::Ordering::Relaxed);
        // 10 ms doubling to a 200 ms cap, minus up to 50% jitter: at most
        // about 15 attempts in 1.5 s; without backoff there would be
        // hundreds.
        assert!((3..=20).contains(&attempts), "{attempts} attempts");
        let s = a.stats();
        let down = s
            .events
            .iter()
            .filter(|e| matches!(e.kind, TransportEventKind::PeerDown { .. }))
            .count();
        assert_eq!(down, 1, "{s:#?}");
        a.shutdown().await;
        server.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_does_not_read_costs_bounded_memory() {
    bounded(async {
        let mut cfg_a = config(1, "secret");
        cfg_a.queue_limit = 64;
        let (a, _rx_a) = start(cfg_a).await;
        let mut cfg_b = config(2, "secret");
        cfg_b.inbound_limit = 8;
        cfg_b.peers.insert(1, a.local_addr());
        // B's receiver is never read.
        let (b, mut rx_b) = start(cfg_b).await;
        a.set_peer(2, b.local_addr());
        let big = envelope(
            1,
            1,
            2,
            1,
            MessageBody::SnapshotChunk {
                index: 1,
                file: 0,
                offset: 0,
                data: vec![0; 64 << 10].into(),
                crc: 0,
                gone: false,
            },
        );
        // Far more than socket buffers hold: the queue must fill and drop.
        for _ in 0..4000 {
            a.send(big.clone());
            tokio::task::yield_now().await;
        }
        wait_for(&a, "drops", |s| s.dropped_queue_full > 0).await;
        let s = a.stats();
        assert!(s.sent < 4000, "{s:#?}");
        // Once the receiver drains, delivery goes on.
        let drained = recv_n(&mut rx_b, 8, Duration::from_secs(10)).await;
        assert_eq!(drained[0], big);
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}

/// An `Append` from 1 to 2 carrying one entry with `payload`.
fn append_with(i: u64, payload: &Bytes) -> Envelope {
    envelope(
        1,
        1,
        2,
        1,
        MessageBody::Append {
            prev_log_index: i,
            prev_log_term: 1,
            entries: vec![Entry {
                index: i + 1,
                term: 1,
                kind: EntryKind::Normal,
                data: payload.clone(),
            }],
            leader_commit: 0,
            lease_tick: 0,
        },
    )
}

/// A peer that is down: its queue holds at most `queue_bytes` of envelopes
/// (1 MiB `Append`s here, far fewer than `queue_limit`), the rest are
/// dropped and counted; once the peer is up the queued ones are written and
/// their bytes given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_peer_holds_at_most_its_byte_budget() {
    use raft_core::runtime::codec::{encoded_len, MAX_ENVELOPE_BYTES};
    bounded(async {
        let addr_b = {
            let l = std::net::TcpListener::bind(any_port()).expect("bind");
            l.local_addr().expect("addr")
        };
        let budget = MAX_ENVELOPE_BYTES; // the least a config may set
        let mut cfg_a = config(1, "secret");
        cfg_a.queue_bytes = budget;
        cfg_a.peers.insert(2, addr_b);
        let (a, _rx_a) = start(cfg_a).await;
        wait_for(&a, "a failed connect", |s| s.connect_failures >= 1).await;

        let payload = Bytes::from(vec![9u8; 1 << 20]);
        let each = encoded_len(&append_with(0, &payload)) as u64;
        let fit = budget as u64 / each;
        assert!(fit < 100, "the budget, not the item limit, must bind");
        for i in 0..200 {
            a.send(append_with(i, &payload));
        }
        let s = a.stats();
        assert_eq!(s.dropped_queue_bytes, 200 - fit, "{s:#?}");
        assert_eq!(s.dropped_queue_full, 0, "{s:#?}");
        assert_eq!(s.queued_bytes, fit * each, "{s:#?}");
        assert!(s.peak_queued_bytes <= budget as u64, "{s:#?}");

        // The peer comes up: what was queued arrives, and its bytes are
        // given back once written.
        let mut cfg_b = config(2, "secret");
        cfg_b.listen = addr_b;
        cfg_b.peers.insert(1, a.local_addr());
        let (b, mut rx_b) = start(cfg_b).await;
        let got = recv_n(&mut rx_b, fit as usize, Duration::from_secs(20)).await;
        assert_eq!(got[0], append_with(0, &payload));
        wait_for(&a, "the queue's bytes given back", |s| s.queued_bytes == 0).await;
        a.send(append_with(1000, &payload));
        assert_eq!(
            recv_n(&mut rx_b, 1, Duration::from_secs(10)).await,
            vec![append_with(1000, &payload)]
        );
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}

/// A peer whose receiver takes nothing: what it holds for its receiver
/// stays within `inbound_bytes` (readers stop reading), the sender's queue
/// within `queue_bytes`, and the sender drops and counts the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_does_not_read_holds_at_most_its_inbound_bytes() {
    use raft_core::runtime::codec::{encoded_len, MAX_ENVELOPE_BYTES};
    bounded(async {
        let mut cfg_a = config(1, "secret");
        cfg_a.queue_bytes = MAX_ENVELOPE_BYTES;
        let (a, _rx_a) = start(cfg_a).await;
        let mut cfg_b = config(2, "secret");
        cfg_b.inbound_bytes = MAX_ENVELOPE_BYTES;
        cfg_b.peers.insert(1, a.local_addr());
        let (b, mut rx_b) = start(cfg_b).await;
        a.set_peer(2, b.local_addr());
        // The link is up before the load starts, and the load is paced, so
        // the receiver's bound (not the sender's queue) is what fills first.
        a.send(heartbeat(1, 1, 2, 0));
        recv_n(&mut rx_b, 1, Duration::from_secs(10)).await;
        wait_for(&b, "the first envelope taken", |s| s.inbound_bytes == 0).await;
        let base = b.stats().received;
        let payload = Bytes::from(vec![3u8; 1 << 20]);
        for i in 0..400 {
            a.send(append_with(i, &payload));
            sleep(Duration::from_millis(1)).await;
        }
        // Settled: what the receiver was handed stops growing.
        let mut handed = 0;
        for _ in 0..100 {
            sleep(QUIET).await;
            let now = b.stats().received - base;
            if now > 0 && now == handed {
                break;
            }
            handed = now;
        }
        let (sa, sb) = (a.stats(), b.stats());
        let each = encoded_len(&append_with(0, &payload)) as u64;
        // Counted independently of the transport's own gauge: every
        // envelope handed over since `base` still waits in the receiver.
        let waiting = sb.received - base;
        assert!(waiting * each <= MAX_ENVELOPE_BYTES as u64, "{sb:#?}");
        // The gauge counts those, and what the next reader waits for has
        // been promised (tokio's semaphore hands permits to a waiter as
        // they free up): never past the budget.
        assert!(sb.inbound_bytes >= waiting * each, "{sb:#?}");
        assert!(sb.inbound_bytes <= MAX_ENVELOPE_BYTES as u64, "{sb:#?}");
        assert!(sa.dropped_queue_bytes > 0, "{sa:#?}");
        assert!(sa.peak_queued_bytes <= MAX_ENVELOPE_BYTES as u64, "{sa:#?}");
        assert_eq!(sa.dropped_queue_full, 0, "{sa:#?}");
        // Taking envelopes gives their bytes back, and delivery goes on.
        let drained = recv_n(&mut rx_b, 8, Duration::from_secs(10)).await;
        assert_eq!(drained[0], append_with(0, &payload));
        // Once everything queued was written and taken, every byte is back.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            while rx_b.try_recv().is_ok() {}
            let (sa, sb) = (a.stats(), b.stats());
            if sa.queued_bytes == 0 && sb.inbound_bytes == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "bytes held: {sa:#?} {sb:#?}");
            sleep(Duration::from_millis(10)).await;
        }
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}

/// A byte budget that could not take one envelope of the largest size
/// would refuse it forever: such a config is refused at start.
#[test]
fn byte_budgets_below_one_envelope_are_refused() {
    use raft_core::runtime::codec::MAX_ENVELOPE_BYTES;
    let ok = config(1, "secret");
    assert!(ok.validate().is_ok());
    let mut c = ok.clone();
    c.queue_bytes = MAX_ENVELOPE_BYTES - 1;
    assert!(c.validate().is_err());
    let mut c = ok;
    c.inbound_bytes = MAX_ENVELOPE_BYTES - 1;
    assert!(c.validate().is_err());
}

/// A config for node 1 that knows peers `ids` (at a port nobody listens
/// on: its own connections to them fail, which these tests do not need).
fn config_with_peers(ids: impl IntoIterator<Item = u64>) -> TransportConfig {
    let nobody = {
        let l = std::net::TcpListener::bind(any_port()).expect("bind");
        l.local_addr().expect("addr")
    };
    let mut cfg = config(1, "secret");
    for id in ids {
        cfg.peers.insert(id, nobody);
    }
    cfg
}

/// A header that declares a frame of the largest size, then a few bytes of
/// it, on each of five authenticated connections: what the transport holds
/// grows with what arrived, not with what the headers promised (the old
/// reader allocated 64 MiB per header, 320 MiB for five).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_header_does_not_buy_memory() {
    use raft_core::runtime::transport::MAX_FRAME_BYTES;
    bounded(async {
        let (a, _rx_a) = start(config_with_peers(2..=6)).await;
        let mut conns = Vec::new();
        for id in 2..=6 {
            let (mut s, status) = raw_client(a.local_addr(), id, 1, "secret").await;
            assert_eq!(status, 0, "node {id} accepted");
            let mut header = (MAX_FRAME_BYTES as u32).to_le_bytes().to_vec();
            header.extend_from_slice(&[0; 4]);
            header.extend_from_slice(&[1, 3]);
            header.extend_from_slice(&[0xAB; 100]);
            s.write_all(&header).await.expect("write");
            conns.push(s);
        }
        sleep(QUIET).await;
        let s = a.stats();
        // Five pieces of at most READ_CHUNK_BYTES, with room for the
        // allocator's rounding.
        let bound = 5 * 2 * raft_core::runtime::transport::READ_CHUNK_BYTES as u64;
        assert!(
            s.peak_buffered_bytes > 0 && s.peak_buffered_bytes <= bound,
            "peak {} bytes buffered for 5 x 110 bytes received (bound {bound})",
            s.peak_buffered_bytes
        );
        // Closing the connections gives everything back.
        drop(conns);
        wait_for(&a, "buffers released", |s| s.buffered_bytes == 0).await;
        a.shutdown().await;
    })
    .await;
}

/// All inbound connections together hold at most `max_buffered_bytes`: a
/// connection whose next piece would pass it is closed and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_bytes_have_a_budget() {
    use raft_core::runtime::transport::MAX_FRAME_BYTES;
    bounded(async {
        let mut cfg = config_with_peers(2..=3);
        cfg.max_buffered_bytes = MAX_FRAME_BYTES;
        let (a, _rx_a) = start(cfg).await;
        // Node 2 sends most of a frame of the largest size and stalls.
        let (mut s2, status) = raw_client(a.local_addr(), 2, 1, "secret").await;
        assert_eq!(status, 0);
        let mut head = (MAX_FRAME_BYTES as u32).to_le_bytes().to_vec();
        head.extend_from_slice(&[0; 4]);
        s2.write_all(&head).await.expect("write");
        let piece = vec![0u8; 1 << 20];
        for _ in 0..(MAX_FRAME_BYTES >> 20) - 1 {
            s2.write_all(&piece).await.expect("write");
        }
        wait_for(&a, "node 2's frame buffered", |s| {
            s.buffered_bytes >= (MAX_FRAME_BYTES - (1 << 20)) as u64
        })
        .await;
        // Node 3's frame does not fit beside it: node 3 is cut off.
        let (mut s3, status) = raw_client(a.local_addr(), 3, 1, "secret").await;
        assert_eq!(status, 0);
        let _ = s3.write_all(&head).await;
        let _ = s3.write_all(&piece).await;
        assert!(closed_by_server(&mut s3).await, "over budget: not closed");
        let s = a.stats();
        assert_eq!(s.closed_over_budget, 1, "{s:#?}");
        assert!(s.peak_buffered_bytes <= MAX_FRAME_BYTES as u64, "{s:#?}");
        a.shutdown().await;
    })
    .await;
}

/// After the handshake, a connection that sends nothing, or half a frame
/// and then nothing, is closed within the configured timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_stalled_connections_are_closed() {
    bounded(async {
        let mut cfg = config_with_peers(2..=3);
        cfg.idle_timeout = Duration::from_millis(600);
        cfg.stall_timeout = Duration::from_millis(300);
        let (a, _rx_a) = start(cfg).await;

        let t0 = Instant::now();
        let (mut idle, status) = raw_client(a.local_addr(), 2, 1, "secret").await;
        assert_eq!(status, 0);
        assert!(closed_by_server(&mut idle).await, "idle: not closed");
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(500) && waited < Duration::from_secs(3),
            "idle connection closed after {waited:?}"
        );

        let (mut stalled, status) = raw_client(a.local_addr(), 3, 1, "secret").await;
        assert_eq!(status, 0);
        let whole = frame(3, &encoded(&heartbeat(1, 3, 1, 0)));
        stalled
            .write_all(&whole[..whole.len() / 2])
            .await
            .expect("write");
        let t0 = Instant::now();
        assert!(closed_by_server(&mut stalled).await, "stalled: not closed");
        let waited = t0.elapsed();
        assert!(
            waited < Duration::from_millis(1500),
            "stalled frame closed after {waited:?} (stall timeout 300 ms)"
        );
        wait_for(&a, "timeouts counted", |s| s.inbound_timeouts == 2).await;
        a.shutdown().await;
    })
    .await;
}

/// A hello from a node id this node does not know is refused before any
/// envelope is read, counted, and named once in the events; a peer added
/// later (a node joining) is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_from_an_unknown_node_is_refused_and_counted() {
    bounded(async {
        let (a, mut rx_a) = start(config_with_peers([2])).await;
        let addr = a.local_addr();
        for _ in 0..3 {
            let (mut s, status) = raw_client(addr, 9, 1, "secret").await;
            assert_ne!(status, 0, "node 9 is not a peer");
            // Whatever it sends next is never read.
            let _ = s
                .write_all(&frame(3, &encoded(&heartbeat(1, 9, 1, 0))))
                .await;
            assert!(closed_by_server(&mut s).await);
        }
        let s = a.stats();
        assert_eq!(s.refused_unknown_peer, 3, "{s:#?}");
        assert_eq!(s.refused_inbound, 3, "{s:#?}");
        let named: Vec<_> = s
            .events
            .iter()
            .filter(|e| {
                matches!(
                    e.kind,
                    TransportEventKind::InboundRefused {
                        refusal: Refusal::UnknownPeer,
                        ..
                    }
                )
            })
            .collect();
        assert_eq!(named.len(), 1, "{s:#?}");
        expect_nothing(&mut rx_a).await;

        // A configured peer is accepted; so is node 9 once it is added.
        let (_s2, status) = raw_client(addr, 2, 1, "secret").await;
        assert_eq!(status, 0);
        a.set_peer(9, addr);
        let (mut s9, status) = raw_client(addr, 9, 1, "secret").await;
        assert_eq!(status, 0, "node 9 joined");
        s9.write_all(&frame(3, &encoded(&heartbeat(1, 9, 1, 1))))
            .await
            .expect("write");
        assert_eq!(
            recv_n(&mut rx_a, 1, Duration::from_secs(10)).await,
            vec![heartbeat(1, 9, 1, 1)]
        );
        a.shutdown().await;
    })
    .await;
}

/// A test CA: issues node certificates.
struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    der: rustls::pki_types::CertificateDer<'static>,
}

use raft_core::runtime::transport::{node_cert_name, rustls, TransportTls};

fn test_ca(name: &str) -> TestCa {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, name.to_owned());
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = p.self_signed(&key).expect("self-signed");
    TestCa {
        der: cert.der().clone(),
        issuer: rcgen::Issuer::new(p, key),
    }
}

/// TLS for a transport whose certificate, signed by `ca`, names node
/// `named` (a node's own id, unless a test lies).
fn node_tls(ca: &TestCa, named: u64) -> TransportTls {
    let p = rcgen::CertificateParams::new(vec![node_cert_name(named)]).expect("params");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, &ca.issuer).expect("signed");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    TransportTls::new(std::slice::from_ref(&ca.der), vec![cert.der().clone()], key)
        .expect("TLS config")
}

fn tls_config(id: u64, tls: TransportTls) -> TransportConfig {
    let mut cfg = config(id, "secret");
    cfg.tls = Some(tls);
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_peers_exchange_every_kind() {
    bounded(async {
        let ca = test_ca("cluster CA");
        let (a, mut rx_a) = start(tls_config(1, node_tls(&ca, 1))).await;
        let (b, mut rx_b) = start(tls_config(2, node_tls(&ca, 2))).await;
        a.set_peer(2, b.local_addr());
        b.set_peer(1, a.local_addr());
        let sent: Vec<_> = bodies()
            .into_iter()
            .enumerate()
            .map(|(i, body)| envelope(1, 1, 2, i as u64 + 1, body))
            .collect();
        for e in &sent {
            a.send(e.clone());
        }
        assert_eq!(
            recv_n(&mut rx_b, sent.len(), Duration::from_secs(10)).await,
            sent
        );
        b.send(heartbeat(1, 2, 1, 7));
        assert_eq!(
            recv_n(&mut rx_a, 1, Duration::from_secs(10)).await,
            vec![heartbeat(1, 2, 1, 7)]
        );
        for h in [&a, &b] {
            let s = h.stats();
            assert_eq!((s.refused_inbound, s.bad_frames), (0, 0), "{s:#?}");
        }
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}

/// A peer with the right token but a certificate of another CA, one whose
/// certificate names another node, and a client without TLS: all refused,
/// counted, nothing delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refuses_other_cas_other_names_and_plain_clients() {
    bounded(async {
        let ca = test_ca("cluster CA");
        let mut cfg = tls_config(1, node_tls(&ca, 1));
        cfg.peers.insert(2, any_port());
        let (a, mut rx_a) = start(cfg).await;

        // Another CA, the right token.
        let rogue_ca = test_ca("rogue CA");
        let (rogue, _rx) = start(tls_config(2, node_tls(&rogue_ca, 2))).await;
        rogue.set_peer(1, a.local_addr());
        for i in 0..20 {
            rogue.send(heartbeat(1, 2, 1, i));
            sleep(Duration::from_millis(10)).await;
        }
        wait_for(&a, "TLS refusals", |s| s.refused_tls >= 1).await;
        assert_eq!(rogue.stats().connects, 0);
        rogue.shutdown().await;

        // The cluster's CA, but a certificate naming node 3 for node 2.
        let (liar, _rx) = start(tls_config(2, node_tls(&ca, 3))).await;
        liar.set_peer(1, a.local_addr());
        for i in 0..20 {
            liar.send(heartbeat(1, 2, 1, i));
            sleep(Duration::from_millis(10)).await;
        }
        wait_for(&liar, "refused", |s| s.refused_outbound >= 1).await;
        let s = liar.stats();
        assert!(
            s.events.iter().any(|e| e.kind
                == TransportEventKind::PeerRefused {
                    peer: 1,
                    refusal: Refusal::Certificate
                }),
            "{s:#?}"
        );
        liar.shutdown().await;

        // Plain TCP: a valid hello in clear is never read.
        let before = a.stats().refused_tls;
        let mut hello = Vec::new();
        hello.extend_from_slice(&7u64.to_le_bytes());
        hello.extend_from_slice(&2u64.to_le_bytes());
        hello.extend_from_slice(&1u64.to_le_bytes());
        hello.extend_from_slice(&6u16.to_le_bytes());
        hello.extend_from_slice(b"secret");
        assert!(garbage_is_dropped(a.local_addr(), &frame(1, &hello)).await);
        wait_for(&a, "plain client refused", |s| s.refused_tls > before).await;

        expect_nothing(&mut rx_a).await;
        let s = a.stats();
        assert_eq!(s.received, 0, "{s:#?}");
        assert!(
            s.events.iter().any(|e| matches!(
                e.kind,
                TransportEventKind::InboundRefused {
                    refusal: Refusal::Tls,
                    ..
                }
            )),
            "{s:#?}"
        );
        a.shutdown().await;
    })
    .await;
}
