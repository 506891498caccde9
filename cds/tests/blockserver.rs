//! BlockServers end to end, in one process over TCP on loopback: the
//! binary data path, groups found and followed by the client, pipelined
//! IO to two groups, a leader server shut down under writes, a fenced
//! writer, a wrong token and a garbage frame.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cds::blockclient::{Conn, GroupClient, IoError, WriterTag};
use cds::blockserver::{BlockServer, BlockServerConfig, PeerAddrs};
use cds::engine::{Geometry, ReadAt, SECTOR};
use raft_core::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLUSTER: u64 = 9;
const TOKEN: &str = "block-test-token";
const WAIT: Duration = Duration::from_secs(30);

/// A writer at `epoch`, at the volume's first version.
fn tag(epoch: u64) -> WriterTag {
    WriterTag {
        epoch,
        head: 1,
        base: 0,
    }
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

struct Cluster {
    servers: Vec<Option<BlockServer>>,
    data: BTreeMap<u64, SocketAddr>,
    _dirs: Vec<tempfile::TempDir>,
}

async fn start(groups: &[u64]) -> Cluster {
    let addrs: BTreeMap<u64, PeerAddrs> = (1..=3)
        .map(|id| {
            (
                id,
                PeerAddrs {
                    raft: free_addr(),
                    data: free_addr(),
                },
            )
        })
        .collect();
    let mut servers = Vec::new();
    let mut dirs = Vec::new();
    for (&id, a) in &addrs {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = BlockServerConfig::new(id, CLUSTER, TOKEN, dir.path());
        cfg.raft_listen = a.raft;
        cfg.data_listen = a.data;
        cfg.tick = Duration::from_millis(20);
        cfg.geometry = Geometry {
            block_size: 1 << 20,
            slice_size: 64 << 10,
        };
        cfg.peers = addrs
            .iter()
            .filter(|(&p, _)| p != id)
            .map(|(&p, a)| (p, *a))
            .collect();
        let s = BlockServer::start(cfg).await.expect("start");
        for &g in groups {
            s.create_group(g, vec![1, 2, 3], None).expect("group");
        }
        servers.push(Some(s));
        dirs.push(dir);
    }
    Cluster {
        servers,
        data: addrs.iter().map(|(&id, a)| (id, a.data)).collect(),
        _dirs: dirs,
    }
}

impl Cluster {
    async fn leader(&self, group: u64) -> usize {
        let start = Instant::now();
        loop {
            for (i, s) in self.servers.iter().enumerate() {
                let Some(n) = s.as_ref().and_then(|s| s.group(group)) else {
                    continue;
                };
                if n.status()
                    .await
                    .is_ok_and(|st| st.raft.role == Role::Leader)
                {
                    return i;
                }
            }
            assert!(start.elapsed() < WAIT, "group {group}: no leader");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(&mut self) {
        for s in self.servers.iter_mut().filter_map(Option::take) {
            s.shutdown().await;
        }
    }
}

fn sector(tag: u64) -> Bytes {
    Bytes::from(
        (0..SECTOR)
            .map(|i| (tag.wrapping_mul(131) + i / 16) as u8)
            .collect::<Vec<u8>>(),
    )
}

const REPLICAS: [u64; 3] = [1, 2, 3];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_are_written_and_read_through_leaders_that_move() {
    let mut c = start(&[1, 2]).await;
    let client = Arc::new(GroupClient::new(
        CLUSTER,
        TOKEN,
        c.data.clone(),
        Duration::from_secs(15),
    ));

    // Pipelined writes to two groups at once.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..64u64 {
        let cl = client.clone();
        set.spawn(async move {
            let g = 1 + i % 2;
            cl.write(g, &REPLICAS, 1, i / 2, (i % 8) * SECTOR, tag(1), sector(i))
                .await
        });
    }
    tokio::time::timeout(WAIT, async {
        while let Some(r) = set.join_next().await {
            r.expect("task").expect("write");
        }
    })
    .await
    .expect("pipelined writes in time");
    for i in 0..64u64 {
        let g = 1 + i % 2;
        let got = client
            .read(
                g,
                &REPLICAS,
                1,
                i / 2,
                (i % 8) * SECTOR,
                SECTOR,
                ReadAt::Head,
            )
            .await
            .expect("read");
        assert!(got == sector(i), "write {i} did not read back");
    }

    // The leader of group 1 goes away: writes stall, then go on.
    let li = c.leader(1).await;
    let dead = c.servers[li].take().expect("running");
    tokio::time::timeout(WAIT, dead.shutdown())
        .await
        .expect("the leader's server stopped in time");
    for i in 100..120u64 {
        tokio::time::timeout(
            WAIT,
            client.write(1, &REPLICAS, 1, 0, (i % 16) * SECTOR, tag(1), sector(i)),
        )
        .await
        .expect("write after failover in time")
        .expect("write after failover");
    }
    for i in 104..120u64 {
        let got = client
            .read(1, &REPLICAS, 1, 0, (i % 16) * SECTOR, SECTOR, ReadAt::Head)
            .await
            .expect("read");
        assert!(
            got == sector(i),
            "write {i} after failover did not read back"
        );
    }
    // Writes acknowledged before the failover are all there.
    for i in (1..64u64).step_by(2).filter(|i| i / 2 != 0) {
        let got = client
            .read(
                2,
                &REPLICAS,
                1,
                i / 2,
                (i % 8) * SECTOR,
                SECTOR,
                ReadAt::Head,
            )
            .await
            .expect("read");
        assert!(got == sector(i), "write {i} lost");
    }

    // A newer writer fences an older one.
    client
        .write(2, &REPLICAS, 1, 0, 0, tag(5), sector(1))
        .await
        .expect("epoch 5");
    let r = client.write(2, &REPLICAS, 1, 0, 0, tag(4), sector(2)).await;
    assert_eq!(
        r,
        Err(IoError::Fenced {
            volume: 1,
            epoch: 4,
            current: 5
        })
    );
    // Bad requests are refused, not retried.
    let r = client
        .write(2, &REPLICAS, 1, 0, 100, tag(5), sector(3))
        .await;
    assert!(matches!(r, Err(IoError::Refused(_))), "{r:?}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_or_a_garbage_frame_is_turned_away_and_the_server_goes_on() {
    let mut c = start(&[1]).await;
    let addr = c.data[&1];
    assert!(
        Conn::connect(addr, CLUSTER, "wrong").await.is_err(),
        "a wrong token was accepted"
    );
    assert!(
        Conn::connect(addr, CLUSTER + 1, TOKEN).await.is_err(),
        "a wrong cluster was accepted"
    );
    // Garbage instead of a hello: the server closes the connection.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0x42; 64]).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "garbage got an answer");
    // A hello larger than a hello may be is not even read.
    let big = cds::wire::Request::Hello {
        cluster_id: CLUSTER,
        token: "x".repeat(8192),
    };
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&big.encode(1)).await.unwrap();
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "an oversized hello got an answer");
    // A group is hosted once.
    let again = c.servers[0]
        .as_ref()
        .unwrap()
        .create_group(1, vec![1, 2, 3], None);
    assert!(again.is_err(), "a group was created twice");
    // A good client after a good hello, then garbage: closed too.
    let conn = Conn::connect(addr, CLUSTER, TOKEN)
        .await
        .expect("good hello");
    drop(conn);
    let client = GroupClient::new(CLUSTER, TOKEN, c.data.clone(), Duration::from_secs(15));
    client
        .write(1, &REPLICAS, 3, 0, 0, tag(1), sector(7))
        .await
        .expect("served after the garbage");
    c.stop().await;
}

/// Flips a byte of slot 0's sector `sector` in group 1's engine on the
/// disk of server `i` (slot 0 holds the first slice written).
fn rot(c: &Cluster, i: usize, sector: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let path = c._dirs[i].path().join("groups/1/engine/slots");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("slot file");
    f.seek(SeekFrom::Start(sector * (SECTOR + 8) + 99)).unwrap();
    let mut b = [0u8; 1];
    std::io::Read::read_exact(&mut f, &mut b).unwrap();
    f.seek(SeekFrom::Start(sector * (SECTOR + 8) + 99)).unwrap();
    f.write_all(&[b[0] ^ 0x40]).unwrap();
    f.sync_all().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_sector_is_repaired_from_a_replica_and_never_served() {
    let mut c = start(&[1]).await;
    let client = GroupClient::new(CLUSTER, TOKEN, c.data.clone(), Duration::from_secs(15));
    // One whole 64 KiB slice: slot 0 on every replica.
    let slice: Bytes = (0..16)
        .flat_map(|s| sector(s).to_vec())
        .collect::<Vec<u8>>()
        .into();
    client
        .write(1, &REPLICAS, 1, 0, 0, tag(1), slice.clone())
        .await
        .expect("write");
    let li = c.leader(1).await;
    // Bit rot on the leader: the read is answered with the right bytes.
    rot(&c, li, 3);
    let got = client
        .read(1, &REPLICAS, 1, 0, 0, slice.len() as u64, ReadAt::Head)
        .await
        .expect("read of a repaired slice");
    assert!(got == slice, "the slice read back wrong after a repair");
    let stats = c.servers[li]
        .as_ref()
        .unwrap()
        .engine_stats(1)
        .expect("stats");
    assert_eq!(stats.repaired, 1, "{stats:?}");

    // Rot on a follower, then its leader goes: whichever replica leads
    // next serves the sector right.
    let fi = (li + 1) % 3;
    rot(&c, fi, 9);
    let dead = c.servers[li].take().expect("running");
    dead.shutdown().await;
    let got = client
        .read(1, &REPLICAS, 1, 0, 9 * SECTOR, SECTOR, ReadAt::Head)
        .await
        .expect("read after failover");
    assert!(got == sector(9), "sector 9 read back wrong");

    // The same sector rotten on both live replicas: no good copy is left,
    // and the read fails rather than serve bad bytes.
    let others: Vec<usize> = (0..3).filter(|&i| i != li).collect();
    for &i in &others {
        rot(&c, i, 12);
    }
    let short = GroupClient::new(CLUSTER, TOKEN, c.data.clone(), Duration::from_secs(3));
    let r = short
        .read(1, &REPLICAS, 1, 0, 12 * SECTOR, SECTOR, ReadAt::Head)
        .await;
    assert!(r.is_err(), "a sector corrupt everywhere was served: {r:?}");
    c.stop().await;
}
