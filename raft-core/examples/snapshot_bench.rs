//! The snapshot benchmark behind `bench/snapshot-2g.sh`: figures, not
//! pass/fail.
//!
//! One process leads a one-node group over the TCP transport; its state
//! machine keeps its state in one file (`--bytes`, 2 GiB by default). It
//! measures put latency at `--clients` concurrent clients without a
//! snapshot, then again while it saves a snapshot (the save's job copies
//! the state file through a 1 MiB buffer: the worst case of a state
//! machine that must write its state; `--link` hard-links it instead),
//! then starts a second process as a new member, which receives the
//! snapshot in chunks over TCP and installs it. Each process reports its
//! peak resident set above its idle figure (`VmHWM` after resetting it
//! through `/proc/self/clear_refs`, minus `VmRSS` at the reset): the page
//! cache is not part of it.
//!
//! ```text
//! snapshot_bench [--bytes N] [--clients N] [--seconds N] [--link] [--dir DIR]
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raft_core::runtime::node::{NodeConfig, NodeHandle, RaftNode};
use raft_core::runtime::state_machine::{Applied, SnapshotJob, SnapshotWriter, StateMachine};
use raft_core::runtime::transport::{Transport, TransportConfig};
use raft_core::{ConfState, NodeId, Role};

const GROUP: u64 = 1;
const CLUSTER: u64 = 77;
const TOKEN: &str = "snapshot-bench";
const BUF: usize = 1 << 20;

/// Keeps its state in `dir/state.dat`, replaced (never written in place)
/// by `make <bytes>`; other commands only count.
struct FileState {
    dir: PathBuf,
    /// Copy the state file in the snapshot job (true) or hard-link it.
    copy: bool,
    applied: u64,
}

impl FileState {
    fn state_file(&self) -> PathBuf {
        self.dir.join("state.dat")
    }

    fn make(&self, bytes: u64) -> std::io::Result<()> {
        let tmp = self.dir.join("state.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        let mut buf = vec![0u8; BUF];
        let mut at = 0u64;
        while at < bytes {
            let n = (BUF as u64).min(bytes - at) as usize;
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = ((at + i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 29) as u8;
            }
            f.write_all(&buf[..n])?;
            at += n as u64;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, self.state_file())
    }
}

impl StateMachine for FileState {
    fn on_apply(&mut self, entries: &mut dyn Iterator<Item = Applied>) {
        for a in entries {
            if let Some(n) = a.data.strip_prefix(b"make ") {
                let bytes = String::from_utf8_lossy(n).parse().unwrap_or(0);
                self.make(bytes).expect("write the state file");
            }
            self.applied += 1;
        }
    }

    fn on_snapshot_save(
        &mut self,
        writer: &mut SnapshotWriter,
    ) -> Result<Option<SnapshotJob>, String> {
        let count = self.applied.to_le_bytes();
        let mut meta = writer.create("count").map_err(|e| e.to_string())?;
        meta.write_all(&count).map_err(|e| e.to_string())?;
        if !self.copy {
            writer
                .link("state", &self.state_file())
                .map_err(|e| e.to_string())?;
            return Ok(None);
        }
        // The state as of this index: the open handle keeps this file even
        // if a later `make` replaces it.
        let mut from = std::fs::File::open(self.state_file()).map_err(|e| e.to_string())?;
        let mut to = writer.create("state").map_err(|e| e.to_string())?;
        Ok(Some(Box::new(move || {
            let mut buf = vec![0u8; BUF];
            loop {
                let n = from.read(&mut buf).map_err(|e| e.to_string())?;
                if n == 0 {
                    return Ok(());
                }
                to.write_all(&buf[..n]).map_err(|e| e.to_string())?;
            }
        })))
    }

    fn on_snapshot_load(&mut self, dir: &Path, files: &[String]) -> Result<(), String> {
        if files != ["count", "state"] {
            return Err(format!("unexpected files {files:?}"));
        }
        let tmp = self.dir.join("state.tmp");
        let _ = std::fs::remove_file(&tmp);
        std::fs::hard_link(dir.join("state"), &tmp).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, self.state_file()).map_err(|e| e.to_string())?;
        let count = std::fs::read(dir.join("count")).map_err(|e| e.to_string())?;
        self.applied = u64::from_le_bytes(count.try_into().map_err(|_| "bad count")?);
        Ok(())
    }
}

fn status_bytes(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resets the peak resident set; returns the resident set now.
fn reset_peak() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
    status_bytes("VmRSS:")
}

fn mib(b: u64) -> f64 {
    b as f64 / f64::from(1 << 20)
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

async fn start_node(
    id: NodeId,
    listen: SocketAddr,
    peers: BTreeMap<NodeId, SocketAddr>,
    root: &Path,
    voters: Vec<NodeId>,
    copy: bool,
) -> NodeHandle {
    let mut tcfg = TransportConfig::new(id, listen, CLUSTER, TOKEN);
    tcfg.peers = peers;
    let (transport, mut inbound) = Transport::start(tcfg).await.expect("transport");
    let mut storage = raft_core::storage::open(&format!(
        "local://{}",
        root.join(format!("raft{id}")).display()
    ))
    .expect("storage");
    if !voters.is_empty() {
        storage
            .set_conf_state(ConfState {
                voters,
                ..ConfState::default()
            })
            .expect("voters");
    }
    let dir = root.join(format!("sm{id}"));
    std::fs::create_dir_all(&dir).expect("state machine dir");
    let mut cfg = NodeConfig::new(id, GROUP);
    cfg.tick = Duration::from_millis(50);
    cfg.snapshot_every = 0;
    cfg.log_margin = 0;
    let sm = FileState {
        dir,
        copy,
        applied: 0,
    };
    let h = RaftNode::start(cfg, storage, Box::new(sm), Arc::new(transport)).expect("node");
    let node = h.clone();
    tokio::spawn(async move {
        while let Some(env) = inbound.recv().await {
            let _ = node.step(env);
        }
    });
    h
}

/// Runs `clients` closed-loop proposers for at least `min` and until
/// `until` resolves; returns every latency, sorted.
async fn load(
    h: &NodeHandle,
    clients: usize,
    min: Duration,
    until: tokio::task::JoinHandle<()>,
) -> Vec<Duration> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lat = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (h, stop, lat) = (h.clone(), stop.clone(), lat.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                if h.propose(format!("put {c} {i}").into_bytes()).await.is_ok() {
                    mine.push(t.elapsed());
                }
                i += 1;
            }
            lat.lock().expect("latencies").extend(mine);
        }));
    }
    tokio::time::sleep(min).await;
    let _ = until.await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let mut all = std::mem::take(&mut *lat.lock().expect("latencies"));
    all.sort();
    all
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("follower") {
        return follower(&args).await;
    }
    let bytes: u64 = arg(&args, "--bytes").map_or(2 << 30, |v| v.parse().expect("--bytes"));
    let clients: usize = arg(&args, "--clients").map_or(64, |v| v.parse().expect("--clients"));
    let seconds: u64 = arg(&args, "--seconds").map_or(10, |v| v.parse().expect("--seconds"));
    let copy = !args.iter().any(|a| a == "--link");
    let tmp = tempfile::Builder::new()
        .prefix("snapshot-bench")
        .tempdir_in(
            arg(&args, "--dir").unwrap_or_else(|| std::env::temp_dir().display().to_string()),
        )
        .expect("temp dir");
    let root = tmp.path().to_path_buf();
    let (a1, a2) = (free_addr(), free_addr());
    let h = start_node(1, a1, BTreeMap::from([(2, a2)]), &root, vec![1], copy).await;
    while !h.status().await.is_ok_and(|s| s.raft.role == Role::Leader) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = Instant::now();
    h.propose(format!("make {bytes}").into_bytes())
        .await
        .expect("make");
    println!(
        "state: {:.0} MiB file written in {:.1} s; save by {}",
        mib(bytes),
        t.elapsed().as_secs_f64(),
        if copy {
            "copy (1 MiB buffer, on the job thread)"
        } else {
            "hard link"
        }
    );
    // Warm up, then the idle figure.
    let none = tokio::spawn(async {});
    load(&h, clients, Duration::from_secs(1), none).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let idle = status_bytes("VmRSS:");
    let none = tokio::spawn(async {});
    let quiet = load(&h, clients, Duration::from_secs(seconds), none).await;
    println!(
        "puts without a snapshot: {} in {seconds} s, p50 {:?}, p99 {:?}, p999 {:?}",
        quiet.len(),
        pct(&quiet, 0.5),
        pct(&quiet, 0.99),
        pct(&quiet, 0.999)
    );

    let base = reset_peak();
    let snap = {
        let h = h.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let index = h.snapshot().await.expect("snapshot");
            println!(
                "snapshot at {index} saved in {:.1} s",
                t.elapsed().as_secs_f64()
            );
        })
    };
    let busy = load(&h, clients, Duration::from_secs(seconds), snap).await;
    println!(
        "puts while saving: {} , p50 {:?}, p99 {:?}, p999 {:?} (p99 ratio {:.2})",
        busy.len(),
        pct(&busy, 0.5),
        pct(&busy, 0.99),
        pct(&busy, 0.999),
        pct(&busy, 0.99).as_secs_f64() / pct(&quiet, 0.99).as_secs_f64().max(1e-9)
    );
    println!(
        "leader while saving under load: resident at reset {:.0} MiB (idle {:.0} MiB), peak {:.0} MiB above the reset",
        mib(base),
        mib(idle),
        mib(status_bytes("VmHWM:").saturating_sub(base))
    );

    let index = h
        .status()
        .await
        .expect("status")
        .raft
        .last_snapshot
        .expect("a snapshot");
    let idle = reset_peak();
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args([
            "follower",
            &root.display().to_string(),
            &a1.to_string(),
            &a2.to_string(),
            &index.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the follower");
    let out = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufReader::new(out).lines();
    let ready = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(ready.starts_with("ready"), "follower: {ready}");
    let t = Instant::now();
    h.add_learner(2).await.expect("add the new member");
    let done = tokio::task::spawn_blocking(move || lines.next().and_then(Result::ok))
        .await
        .expect("follower output")
        .unwrap_or_default();
    println!("{done}");
    println!(
        "sent and installed in {:.1} s; leader peak {:.0} MiB above its idle {:.0} MiB while sending",
        t.elapsed().as_secs_f64(),
        mib(status_bytes("VmHWM:").saturating_sub(idle)),
        mib(idle)
    );
    let _ = child.wait();
    h.shutdown().await;
}

async fn follower(args: &[String]) {
    let root = PathBuf::from(&args[2]);
    let leader: SocketAddr = args[3].parse().expect("leader address");
    let me: SocketAddr = args[4].parse().expect("own address");
    let index: u64 = args[5].parse().expect("index");
    let h = start_node(2, me, BTreeMap::from([(1, leader)]), &root, vec![], true).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = reset_peak();
    println!("ready");
    let _ = std::io::stdout().flush();
    loop {
        let s = h.status().await.expect("status");
        if s.metrics.snapshots_installed >= 1 && s.raft.applied >= index {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "new member: installed the snapshot at {index}; idle {:.0} MiB, peak {:.0} MiB above idle",
        mib(idle),
        mib(status_bytes("VmHWM:").saturating_sub(idle))
    );
    let _ = std::io::stdout().flush();
    h.shutdown().await;
}
