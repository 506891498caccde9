//! Background polling: one thread per node, so a node that hangs (paused,
//! or stuck) costs only its own thread a timeout and never the screen.
//!
//! A manager thread re-reads `cluster.json` every period (nodes come and go
//! with `add-node` and `remove-node`, pids change with `restart`), starts a
//! poller for every new node, and tails the nodes' traces. Everything lands
//! in one shared [`Shared`] the UI copies out each frame; no lock is held
//! across a network request.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ureq::Agent;

use super::events::Tailer;
use super::model::{Event, Hist, NodeObs};
use super::now_us;
use cds::devcluster::directory::{ClusterFile, NodeEntry};
use cds::devcluster::process::{self as proc, ProcState};
use cds::status::Status;

/// The longest one status or metrics request may take. Well above a busy
/// node's answer time, so load does not read as a hang; the screen flags a
/// node as not answering after one refresh anyway (see `model::liveness`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// What the pollers share with the UI.
#[derive(Debug, Default)]
pub struct Shared {
    /// The node table as last read from cluster.json.
    entries: BTreeMap<u64, NodeEntry>,
    /// Each node's latest observation.
    obs: BTreeMap<u64, NodeObs>,
    /// Event-log lines from the traces, not yet taken by the UI.
    events: Vec<Event>,
    /// The last error reading cluster.json, if the last read failed.
    cluster_error: Option<String>,
    /// The cluster CA, when the nodes serve HTTPS.
    ca: Option<std::path::PathBuf>,
}

/// The polling threads; they stop when this is dropped.
pub struct Poller {
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A poller that panicked leaves consistent data (every write is one
    // assignment): carry on with it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Poller {
    /// Starts polling the cluster in `dir` every `period`.
    pub fn start(dir: PathBuf, period: Duration) -> Poller {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (shared.clone(), stop.clone());
        // If the thread cannot start, the screen shows no nodes and says so
        // through `cluster_error`; that is better than failing `top`.
        let spawned = std::thread::Builder::new()
            .name("top-manager".into())
            .spawn(move || manage(&dir, period, &s, &st));
        if let Err(e) = spawned {
            lock(&shared).cluster_error = Some(format!("cannot start the poller: {e}"));
        }
        Poller { shared, stop }
    }

    /// The latest observations, and the trace events since the last call.
    pub fn take(&self) -> (Vec<NodeObs>, Vec<Event>, Option<String>) {
        let mut s = lock(&self.shared);
        let obs = s.obs.values().cloned().collect();
        let events = std::mem::take(&mut s.events);
        (obs, events, s.cluster_error.clone())
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn manage(
    dir: &std::path::Path,
    period: Duration,
    shared: &Arc<Mutex<Shared>>,
    stop: &Arc<AtomicBool>,
) {
    let mut running: BTreeSet<u64> = BTreeSet::new();
    let mut tailer = Tailer::default();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        match ClusterFile::load(dir) {
            Ok(c) => {
                let mut s = lock(shared);
                s.cluster_error = None;
                s.ca = c.ca_path();
                s.entries = c.nodes.iter().map(|n| (n.id, n.clone())).collect();
                // Forget removed nodes (their pollers exit on their own).
                let ids: BTreeSet<u64> = s.entries.keys().copied().collect();
                s.obs.retain(|id, _| ids.contains(id));
                drop(s);
                running.retain(|id| ids.contains(id));
                for node in &c.nodes {
                    if running.insert(node.id) {
                        let (id, sh, st) = (node.id, shared.clone(), stop.clone());
                        let spawned = std::thread::Builder::new()
                            .name(format!("top-poll-{id}"))
                            .spawn(move || poll_node(id, period, &sh, &st));
                        if spawned.is_err() {
                            running.remove(&node.id);
                        }
                    }
                }
                let events = tailer.poll(&c.nodes);
                if !events.is_empty() {
                    lock(shared).events.extend(events);
                }
            }
            // Keep showing what we had; say why it is not updating.
            Err(e) => lock(shared).cluster_error = Some(format!("{e:#}")),
        }
        std::thread::sleep(period.saturating_sub(started.elapsed()));
    }
}

/// A poller's client and the URL scheme it speaks.
type Client = (Agent, &'static str);

/// A blocking client with short timeouts, one per poller so a hung node's
/// connection never holds up another's; over HTTPS (a `ca` given) it
/// trusts only the cluster CA. Returns the client and the URL scheme.
fn agent(ca: Option<&std::path::Path>) -> Result<Client, String> {
    let mut config = Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(REQUEST_TIMEOUT));
    let mut scheme = "http";
    if let Some(ca) = ca {
        let tls = cds::tls::http_client_tls(ca)
            .map_err(|e| format!("the cluster CA {}: {e:#}", ca.display()))?;
        config = config.tls_config(tls);
        scheme = "https";
    }
    Ok((config.build().into(), scheme))
}

fn get(client: &Client, addr: &str, path: &str) -> Result<String, String> {
    let url = format!("{}://{addr}{path}", client.1);
    let resp = client
        .0
        .get(&url)
        .call()
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .with_config()
        .limit(1 << 20)
        .read_to_string()
        .map_err(|e| format!("{url}: {e}"))?;
    if status != 200 {
        return Err(format!("{url} answered {status}"));
    }
    Ok(body)
}

fn poll_node(id: u64, period: Duration, shared: &Arc<Mutex<Shared>>, stop: &Arc<AtomicBool>) {
    // The client, and the CA it was built for (None: plain HTTP).
    let mut client: Option<(Option<std::path::PathBuf>, Result<Client, String>)> = None;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let (entry, ca) = {
            let s = lock(shared);
            (s.entries.get(&id).cloned(), s.ca.clone())
        };
        let Some(entry) = entry else {
            return; // removed from the cluster
        };
        // (Re)build the client when the cluster's TLS set-up changes.
        if client.as_ref().is_none_or(|(had, _)| *had != ca) {
            client = Some((ca.clone(), agent(ca.as_deref())));
        }
        let Some((_, built)) = client.as_ref() else {
            continue; // set just above
        };
        let agent = match built {
            Ok(c) => c,
            Err(e) => {
                lock(shared).cluster_error = Some(e.clone());
                std::thread::sleep(period.saturating_sub(started.elapsed()));
                continue;
            }
        };
        let state = proc::state(&entry);
        if state == ProcState::Down {
            reap(&entry);
        }
        let asking = state == ProcState::Up;
        {
            let mut s = lock(shared);
            let o = s.obs.entry(id).or_default();
            o.id = id;
            o.http_addr.clone_from(&entry.http_addr);
            o.raft_addr.clone_from(&entry.raft_addr);
            o.pid = entry.pid;
            o.proc = Some(state);
            // A paused node is not asked: it would only time out.
            o.inflight_since_us = asking.then(now_us);
        }
        if asking {
            let answer = get(agent, &entry.http_addr, "/status").and_then(|body| {
                serde_json::from_str::<Status>(&body)
                    .map_err(|e| format!("/status of node {id}: {e}"))
            });
            // The leader's latency histogram, for the p99 chart.
            let hist = match &answer {
                Ok(st) if st.is_leader() => get(agent, &entry.http_addr, "/metrics")
                    .ok()
                    .and_then(|t| Hist::parse(&t, "propose_seconds")),
                _ => None,
            };
            let mut s = lock(shared);
            let o = s.obs.entry(id).or_default();
            o.inflight_since_us = None;
            match answer {
                Ok(st) => {
                    o.status = Some(st);
                    o.status_at_us = now_us();
                    o.error = None;
                    o.propose_hist = hist;
                }
                Err(e) => o.error = Some(e),
            }
        }
        std::thread::sleep(period.saturating_sub(started.elapsed()));
    }
}

/// Collects a node process that exited while it was our child (`top`
/// restarted or added it), so it does not linger as a zombie. A pid that is
/// not our child is left alone: waitpid only fails with ECHILD.
fn reap(entry: &NodeEntry) {
    if let Some(pid) = entry.pid.and_then(|p| libc::pid_t::try_from(p).ok()) {
        let mut status = 0;
        // SAFETY: non-blocking wait on one pid; touches only `status`.
        unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    }
}
