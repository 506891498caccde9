//! The block data path measured in one process: three BlockServers on
//! loopback (each a real Raft host with its own directory, fsyncing its
//! logs), `--groups` BlockGroups, and a closed loop of `--qd` requests of
//! `--bs` bytes at random sectors through the group client, for
//! `--seconds`. Prints IOPS, MB/s and latency percentiles.
//!
//!   cargo run --release -p cds --example blockpath -- \
//!       [--pattern randwrite|randread] [--bs 4096] [--qd 32] [--groups 8] [--seconds 10] [--dir DIR]
//!
//! `bench/blockpath.sh` runs it beside `fio` on a local file of the same
//! disk (the physical floor).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cds::blockclient::{GroupClient, WriterTag};
use cds::blockserver::{BlockServer, BlockServerConfig, PeerAddrs};
use cds::engine::{ReadAt, SECTOR};

const CLUSTER: u64 = 1;
const TOKEN: &str = "blockpath-bench";
const BLOCKS_PER_GROUP: u64 = 4;
/// Writes as the volume's first writer at its first version.
const TAG: WriterTag = WriterTag {
    epoch: 1,
    head: 1,
    base: 0,
};

struct Args {
    pattern: String,
    bs: u64,
    qd: usize,
    groups: u64,
    seconds: u64,
    dir: Option<std::path::PathBuf>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        pattern: "randwrite".into(),
        bs: 4096,
        qd: 32,
        groups: 8,
        seconds: 10,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--pattern" => a.pattern = value()?,
            "--bs" => a.bs = num(value()?)?,
            "--qd" => a.qd = num(value()?)? as usize,
            "--groups" => a.groups = num(value()?)?,
            "--seconds" => a.seconds = num(value()?)?,
            "--dir" => a.dir = Some(value()?.into()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !matches!(a.pattern.as_str(), "randwrite" | "randread") {
        return Err("--pattern is randwrite or randread".into());
    }
    if a.bs == 0 || !a.bs.is_multiple_of(SECTOR) || a.bs > 1 << 20 {
        return Err(format!("--bs must be a multiple of {SECTOR} up to 1 MiB"));
    }
    if a.qd == 0 || a.groups == 0 || a.seconds == 0 {
        return Err("--qd, --groups and --seconds must be positive".into());
    }
    Ok(a)
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// A tiny deterministic generator (splitmix64) for offsets.
fn next(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("blockpath: {e}");
            std::process::exit(2);
        }
    };
    let tmp = tempfile::tempdir_in(a.dir.clone().unwrap_or_else(std::env::temp_dir)).expect("dir");
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
    for (&id, p) in &addrs {
        let mut cfg =
            BlockServerConfig::new(id, CLUSTER, TOKEN, &tmp.path().join(format!("s{id}")));
        cfg.raft_listen = p.raft;
        cfg.data_listen = p.data;
        cfg.peers = addrs
            .iter()
            .filter(|(&q, _)| q != id)
            .map(|(&q, a)| (q, *a))
            .collect();
        let s = BlockServer::start(cfg).await.expect("server");
        for g in 1..=a.groups {
            s.create_group(g, vec![1, 2, 3], None).expect("group");
        }
        servers.push(s);
    }
    let data = addrs.iter().map(|(&id, p)| (id, p.data)).collect();
    let client = Arc::new(GroupClient::new(
        CLUSTER,
        TOKEN,
        data,
        Duration::from_secs(30),
    ));
    let replicas = [1u64, 2, 3];
    let block = cds::engine::DEFAULT_BLOCK_SIZE;
    let span = a.groups * BLOCKS_PER_GROUP;
    let slots = block / a.bs;
    // Blocks are written once first, so reads read data and writes after
    // it are overwrites (as a used volume's are).
    let fill = Bytes::from(vec![0x5A; 1 << 20]);
    for b in 0..span {
        let g = 1 + b % a.groups;
        for off in (0..block).step_by(1 << 20) {
            client
                .write(g, &replicas, 1, b, off, TAG, fill.clone())
                .await
                .expect("fill");
        }
    }
    let payload = Bytes::from(vec![0xA5; a.bs as usize]);
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..a.qd {
        let (client, payload, write) = (client.clone(), payload.clone(), a.pattern == "randwrite");
        let (groups, bs) = (a.groups, a.bs);
        tasks.spawn(async move {
            let mut seed = w as u64 + 1;
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let b = next(&mut seed) % span;
                let off = (next(&mut seed) % slots) * bs;
                let g = 1 + b % groups;
                let t = Instant::now();
                let r = if write {
                    client
                        .write(g, &replicas, 1, b, off, TAG, payload.clone())
                        .await
                        .map(drop)
                } else {
                    client
                        .read(g, &replicas, 1, b, off, bs, ReadAt::Head)
                        .await
                        .map(drop)
                };
                r.expect("io");
                lat.push(t.elapsed());
            }
            lat
        });
    }
    let mut all = Vec::new();
    while let Some(l) = tasks.join_next().await {
        all.extend(l.expect("worker"));
    }
    all.sort();
    let n = all.len() as f64;
    let pct = |p: f64| all[((n * p) as usize).min(all.len() - 1)].as_secs_f64() * 1e3;
    println!(
        "{} bs={} qd={} groups={}: {:.0} IOPS, {:.1} MB/s, p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms",
        a.pattern,
        a.bs,
        a.qd,
        a.groups,
        n / a.seconds as f64,
        n * a.bs as f64 / a.seconds as f64 / 1e6,
        pct(0.50),
        pct(0.99),
        pct(0.999)
    );
    for s in servers {
        let (syncs, requests) = s
            .sync_stats()
            .iter()
            .fold((0, 0), |(a, b), x| (a + x.syncs, b + x.requests));
        eprintln!(
            "  server {}: {syncs} log syncs for {requests} group log syncs",
            s.id()
        );
        s.shutdown().await;
    }
}
