//! A snapshot much larger than any buffer is saved, sent and installed
//! between two real nodes with memory bounded by the named limits, not by
//! the snapshot's size.
//!
//! Two `RaftNode`s in this process (a real tokio runtime, `local://`
//! storage in temporary directories, an in-process router). The state
//! machine keeps its state in a file of [`STATE_BYTES`] (256 MiB) and
//! hard-links it into its snapshots; the leader saves a snapshot, a new
//! member joins and receives it in checksummed chunks, and its state
//! machine loads it by hard-linking it again.
//!
//! What is measured, honestly: the process's peak resident set
//! (`VmHWM` in `/proc/self/status`), reset just before the snapshot is
//! saved (`/proc/self/clear_refs`, 5) and read once the new member has
//! loaded it, minus the resident set at the reset. It counts everything
//! the process touched meanwhile (both nodes, the runtime, the allocator's
//! retained pages), not only snapshot buffers, and never the page cache
//! (file data read or written is not resident memory of the process). A
//! snapshot that passed through memory whole would add at least
//! [`STATE_BYTES`]. This file is its own test binary so that no other test
//! shares the process while it measures.
//!
//! No timing is asserted; every wait is bounded so a hang fails.
#![cfg(all(feature = "runtime", target_os = "linux"))]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft_core::runtime::limits::SNAPSHOT_IO_BUFFER;
use raft_core::runtime::node::{NodeConfig, NodeHandle, RaftNode};
use raft_core::runtime::state_machine::{Applied, SnapshotJob, SnapshotWriter, StateMachine};
use raft_core::runtime::{Envelope, Outbox};
use raft_core::storage::{NodeStorage, VERIFY_CHUNK_BYTES};
use raft_core::{checksum_extend, ConfState, NodeId};

const GROUP: u64 = 3;
const WAIT: Duration = Duration::from_secs(120);
/// The state machine's state: far larger than any buffer on the way.
const STATE_BYTES: u64 = 256 << 20;
/// The core's chunk size for this test (the default, named here).
const CHUNK_BYTES: u64 = 1 << 20;
/// How far the peak resident set may rise while the snapshot is saved,
/// sent and installed: a few dozen of the largest buffers on the way
/// (chunk, streaming buffer, verification read; each 1 MiB), for the
/// chunks in flight in queues, per-thread allocator arenas and the blocking
/// threads' stacks. An eighth of the state.
const ALLOWED_GROWTH: u64 = 32 << 20;

const _: () = {
    assert!(SNAPSHOT_IO_BUFFER as u64 <= CHUNK_BYTES);
    assert!(VERIFY_CHUNK_BYTES <= CHUNK_BYTES);
    assert!(ALLOWED_GROWTH <= 32 * CHUNK_BYTES);
    assert!(ALLOWED_GROWTH * 8 <= STATE_BYTES);
};

// ----- a state machine whose state is a file ---------------------------------

/// Applies `make <bytes> <seed>` by writing a new state file of that many
/// bytes (a deterministic pattern of the seed), through a bounded buffer,
/// and renaming it into place: the state file is never written in place,
/// so it may be hard-linked into snapshots.
struct FileState {
    dir: PathBuf,
    /// (bytes, seed) of the current state file, and commands applied.
    meta: Arc<Mutex<(u64, u64, u64)>>,
}

impl FileState {
    fn state_file(&self) -> PathBuf {
        self.dir.join("state.dat")
    }

    fn make(&self, bytes: u64, seed: u64) -> std::io::Result<()> {
        let tmp = self.dir.join("state.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0u64;
        while at < bytes {
            let n = (buf.len() as u64).min(bytes - at) as usize;
            fill(&mut buf[..n], seed, at);
            f.write_all(&buf[..n])?;
            at += n as u64;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, self.state_file())
    }
}

/// The pattern of byte `at..` of a state file made with `seed`.
fn fill(buf: &mut [u8], seed: u64, at: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        let x = (at + i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed;
        *b = (x >> 29) as u8;
    }
}

impl StateMachine for FileState {
    fn on_apply(&mut self, entries: &mut dyn Iterator<Item = Applied>) {
        for a in entries {
            let text = String::from_utf8_lossy(&a.data).into_owned();
            let mut w = text.split(' ');
            if w.next() == Some("make") {
                let bytes: u64 = w.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                let seed: u64 = w.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                self.make(bytes, seed).expect("write the state file");
                let mut m = self.meta.lock().unwrap();
                *m = (bytes, seed, m.2 + 1);
            } else {
                self.meta.lock().unwrap().2 += 1;
            }
        }
    }

    fn on_snapshot_save(
        &mut self,
        writer: &mut SnapshotWriter,
    ) -> Result<Option<SnapshotJob>, String> {
        // The state already is a file: link it, no byte copied.
        writer
            .link("state", &self.state_file())
            .map_err(|e| e.to_string())?;
        let (bytes, seed, applied) = *self.meta.lock().unwrap();
        let mut f = writer.create("meta").map_err(|e| e.to_string())?;
        // The small file is written by the job, off the apply task.
        Ok(Some(Box::new(move || {
            f.write_all(format!("{bytes} {seed} {applied}").as_bytes())
                .map_err(|e| e.to_string())
        })))
    }

    fn on_snapshot_load(&mut self, dir: &Path, files: &[String]) -> Result<(), String> {
        if files != ["state", "meta"] {
            return Err(format!("unexpected files {files:?}"));
        }
        // Keep the loaded file by linking it (it is never written in
        // place), then rename over the old state.
        let tmp = self.dir.join("state.tmp");
        let _ = std::fs::remove_file(&tmp);
        std::fs::hard_link(dir.join("state"), &tmp).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, self.state_file()).map_err(|e| e.to_string())?;
        let text = std::fs::read_to_string(dir.join("meta")).map_err(|e| e.to_string())?;
        let v: Vec<u64> = text
            .split(' ')
            .map(|w| w.parse().map_err(|_| format!("bad meta {text:?}")))
            .collect::<Result<_, _>>()?;
        let [bytes, seed, applied] = v[..] else {
            return Err(format!("bad meta {text:?}"));
        };
        *self.meta.lock().unwrap() = (bytes, seed, applied);
        Ok(())
    }
}

// ----- the in-process network ------------------------------------------------

#[derive(Default)]
struct Router(Mutex<HashMap<NodeId, NodeHandle>>);

impl Outbox for Router {
    fn send(&self, env: Envelope) {
        let h = self.0.lock().unwrap().get(&env.to()).cloned();
        if let Some(h) = h {
            let _ = h.step(env); // a full inbox drops it: Raft retries
        }
    }
}

// ----- measuring -------------------------------------------------------------

/// A `kB` field of `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = s
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a number of kB");
    kb * 1024
}

/// Resets the peak resident set to the current one; returns it.
fn reset_peak() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM (Linux 4.0+)");
    status_bytes("VmRSS:")
}

/// The CRC-32C and size of a file, read through a bounded buffer.
fn file_crc(path: &Path) -> (u64, u32) {
    let mut f = std::fs::File::open(path).expect("open");
    let mut buf = vec![0u8; 1 << 20];
    let (mut size, mut crc) = (0u64, 0u32);
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            return (size, crc);
        }
        crc = checksum_extend(crc, &buf[..n]);
        size += n as u64;
    }
}

fn config(id: NodeId) -> NodeConfig {
    let mut c = NodeConfig::new(id, GROUP);
    c.tick = Duration::from_millis(10);
    c.snapshot_every = 0;
    // Compact everything behind the snapshot: the new member can only
    // catch up through it.
    c.log_margin = 0;
    c.config.snapshot_chunk_size = CHUNK_BYTES;
    c
}

fn storage(dir: &Path, voters: Vec<NodeId>) -> NodeStorage {
    let mut s = raft_core::storage::open(&format!("local://{}", dir.display()))
        .expect("open local storage");
    if !voters.is_empty() {
        s.set_conf_state(ConfState {
            voters,
            ..ConfState::default()
        })
        .expect("set voters");
    }
    s
}

async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    tokio::time::timeout(WAIT, async {
        while !f().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_far_larger_than_any_buffer_is_saved_sent_and_installed_in_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let start = |id: NodeId, voters: Vec<NodeId>| {
        let sm_dir = tmp.path().join(format!("sm{id}"));
        std::fs::create_dir_all(&sm_dir).unwrap();
        let meta = Arc::new(Mutex::new((0, 0, 0)));
        let sm = FileState {
            dir: sm_dir.clone(),
            meta: meta.clone(),
        };
        let h = RaftNode::start(
            config(id),
            storage(&tmp.path().join(format!("raft{id}")), voters),
            Box::new(sm),
            router.clone(),
        )
        .expect("start");
        router.0.lock().unwrap().insert(id, h.clone());
        (h, sm_dir, meta)
    };

    let (h1, dir1, _) = start(1, vec![1]);
    wait_until("node 1 to lead", || async {
        h1.status()
            .await
            .is_ok_and(|s| s.raft.role == raft_core::Role::Leader)
    })
    .await;
    let made = h1
        .propose(format!("make {STATE_BYTES} 42").into_bytes())
        .await
        .expect("make the state");
    h1.propose(b"tick".to_vec()).await.expect("one more entry");

    let base = reset_peak();
    let index = h1.snapshot().await.expect("snapshot");
    assert!(index > made.index, "the snapshot covers the state");
    let st = h1.status().await.unwrap();
    assert_eq!(st.raft.last_snapshot, Some(index));
    assert!(
        st.raft.first_index > index,
        "the log is compacted behind it"
    );

    let (h2, dir2, meta2) = start(2, vec![]);
    h1.add_learner(2).await.expect("add node 2");
    wait_until("node 2 to install the snapshot", || async {
        h2.status()
            .await
            .is_ok_and(|s| s.metrics.snapshots_installed >= 1 && s.raft.applied >= index)
    })
    .await;
    let peak = status_bytes("VmHWM:");
    let growth = peak.saturating_sub(base);
    eprintln!(
        "resident at reset {} MiB, peak {} MiB, growth {} MiB for a {} MiB snapshot \
         (allowed {} MiB)",
        base >> 20,
        peak >> 20,
        growth >> 20,
        STATE_BYTES >> 20,
        ALLOWED_GROWTH >> 20
    );

    // The new member holds the same state, and got it as a snapshot.
    assert_eq!(*meta2.lock().unwrap(), (STATE_BYTES, 42, 2));
    let want = file_crc(&dir1.join("state.dat"));
    assert_eq!(want.0, STATE_BYTES);
    assert_eq!(file_crc(&dir2.join("state.dat")), want);
    assert!(
        growth < ALLOWED_GROWTH,
        "peak resident set rose by {growth} bytes, above {ALLOWED_GROWTH}: something held \
         the snapshot in memory"
    );

    h2.shutdown().await;
    h1.shutdown().await;
}
