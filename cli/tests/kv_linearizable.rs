//! Linearizability of the replicated KV, end to end: a 3-node cluster of
//! real `cdsctl node` processes, several HTTP clients running for the whole
//! test, and faults injected through `cdsctl kv` while they run (the leader
//! killed with SIGKILL and restarted, a follower paused, the leader cut off
//! by a partition, every node killed and restarted).
//!
//! Every client operation is recorded with its invocation and reply times
//! (microseconds from one `Instant`), in the history format of
//! `raft_core::sim::linearizability`, and the history is checked at the end
//! with the same checker the simulator uses. What the clients saw must be
//! explainable by a single copy of the map: no acknowledged write may be
//! lost (not even across a restart of every node), no read may be stale.
//!
//! Every PUT goes with its client's session (`X-Client-Id`, and
//! `X-Client-Seq` new for each PUT), so the cluster applies it at most
//! once however often it is sent. A client retries a PUT whose outcome it
//! does not know (a timeout, a connection reset, a `503` of any kind, a
//! `500` "unknown outcome") with the same session, seq, key and value,
//! until it gets a definite answer; and, to be sure retries of writes that
//! did commit happen often, a client sometimes drops a `200` as if the
//! network had lost it, and retries that too. Such a retry must be
//! answered from the session's cache (`"replayed": true`): a retry of an
//! acknowledged PUT that is applied again is an anomaly, reported as such.
//!
//! Recording rules, which the checker's soundness depends on:
//! * A PUT and all its retries are one operation: invoked when the first
//!   attempt is sent, complete when a `200` is kept (the cluster applied
//!   the write once, somewhere in between). A PUT given up (the client is
//!   told to stop, or no definite answer within [`RECOVERY`]) is recorded
//!   with `complete: None`: it may or may not have taken effect, at any
//!   time after its invocation. The client's next PUT takes the next seq,
//!   so an attempt of the abandoned one arriving late is refused as stale,
//!   never applied after it.
//! * Every PUT writes a value no other PUT writes, so a read names the
//!   write it saw.
//! * A GET is done on `200` (the value) or `404` (absent); anything else is
//!   recorded with `complete: None` and the checker ignores it. GETs are
//!   not retried.
//! * `307` redirects are followed by hand (a redirecting follower has not
//!   proposed anything, so following stays within one attempt).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use raft_core::sim::linearizability::{check, Op, OpKind};

mod common;
use common::{ok, Guard};

/// Client threads running for the whole test.
const CLIENTS: u64 = 6;
/// Keys `0..KEYS`; few, so that reads and writes of a key overlap often.
const KEYS: u64 = 5;
/// Bound on one HTTP exchange (a paused or cut-off node never answers).
const HTTP_TIMEOUT: Duration = Duration::from_millis(1500);
/// Redirects followed within one operation.
const MAX_HOPS: usize = 3;
/// Pause between two operations of a client, so six clients do not starve
/// three nodes of CPU on a small machine.
const THINK: Duration = Duration::from_millis(2);
/// Pause before retrying an attempt without a definite answer (elections
/// take a few hundred ms; don't spin meanwhile).
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// One PUT in this many (a power of two) has its `200` dropped by the
/// client, as if lost on the way back, and is retried.
const LOSE_REPLY_ONE_IN: u64 = 8;
const _: () = assert!(LOSE_REPLY_ONE_IN.is_power_of_two());
/// Longest pause before retrying a PUT whose `200` was dropped, so that
/// other clients' operations on the key come in between.
const LOST_REPLY_PAUSE_MS: u64 = 40;
/// Bound on every wait for a leader or for progress after a fault.
const RECOVERY: Duration = Duration::from_secs(15);
/// Acknowledged writes required after each fault before the next one.
const PROGRESS: u64 = 20;
/// Steady load between the end of one fault and the start of the next.
const SETTLE: Duration = Duration::from_secs(1);

// ------------------------------------------------------------ cdsctl kv

/// Tells the client threads to stop when dropped, so a panicking test does
/// not leave them hammering a cluster that is being torn down.
struct StopClients(Arc<Shared>);

impl Drop for StopClients {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::SeqCst);
    }
}

// ------------------------------------------------------------ HTTP

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// A PUT: its body and its session (client id, seq), sent as headers.
#[derive(Debug, Clone, Copy)]
struct Put<'a> {
    body: &'a [u8],
    client: u64,
    seq: u64,
}

/// One exchange, no redirect followed: status, Location, body.
fn send_once(
    agent: &ureq::Agent,
    url: &str,
    put: Option<Put>,
) -> Result<(u16, Option<String>, Vec<u8>), String> {
    let resp = match put {
        Some(p) => agent
            .put(url)
            .header("X-Client-Id", p.client.to_string())
            .header("X-Client-Seq", p.seq.to_string())
            .send(p.body),
        None => agent.get(url).call(),
    }
    .map_err(|e| format!("no answer: {e}"))?;
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp
        .into_body()
        .read_to_vec()
        .map_err(|e| format!("reading the body: {e}"))?;
    Ok((status, location, body))
}

/// Sends a request to `addr` and follows up to [`MAX_HOPS`] redirects.
/// Returns the final status and body, and the address that gave them.
fn exchange(
    agent: &ureq::Agent,
    addr: &str,
    path: &str,
    put: Option<Put>,
) -> Result<(u16, Vec<u8>, String), String> {
    let mut url = format!("http://{addr}{path}");
    for _ in 0..=MAX_HOPS {
        let (status, location, body) = send_once(agent, &url, put)?;
        match (status, location) {
            (307, Some(loc)) => url = loc,
            (307, None) => return Err("307 without Location".into()),
            _ => {
                let host = url
                    .trim_start_matches("http://")
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                return Ok((status, body, host));
            }
        }
    }
    Err(format!("more than {MAX_HOPS} redirects"))
}

/// The `error` field of a JSON error body, or the body as text.
fn error_text(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned())
}

/// (role, term, leader) from one node's `/status`, if it answers.
fn node_status(agent: &ureq::Agent, addr: &str) -> Option<(String, u64, Option<u64>)> {
    let (status, _, body) = send_once(agent, &format!("http://{addr}/status"), None).ok()?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    Some((
        v["role"].as_str()?.to_ascii_lowercase(),
        v["term"].as_u64()?,
        v["leader"].as_u64().filter(|l| *l != 0),
    ))
}

// ------------------------------------------------------------ clients

/// What the test thread and the clients share.
struct Shared {
    /// Microseconds are counted from here, by every thread.
    origin: Instant,
    /// HTTP addresses, index `id - 1`.
    nodes: Vec<String>,
    stop: AtomicBool,
    /// PUTs acknowledged so far, over all clients (progress after faults).
    acked: AtomicU64,
    /// The next value to write; never reused.
    next_value: AtomicU64,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    /// A timeline line on stderr, stamped with the history's clock.
    fn note(&self, msg: &str) {
        eprintln!("[{:8.3}s] {msg}", self.origin.elapsed().as_secs_f64());
    }
}

/// One client's record.
#[derive(Default)]
struct ClientLog {
    ops: Vec<Op>,
    /// Answers it could not make sense of (e.g. a value that is not a
    /// number, a 404 that is not "not found", a retry of an acknowledged
    /// PUT applied again): each is a bug.
    anomalies: Vec<String>,
    /// Why attempts got no definite answer, by reason.
    failures: BTreeMap<String, u64>,
    /// PUTs acknowledged after at least one retry.
    puts_retried: u64,
    /// PUTs acknowledged from their session's cache (`"replayed": true`).
    replayed: u64,
    /// `200`s dropped on purpose (each then retried).
    replies_dropped: u64,
    /// PUTs given up without a definite answer.
    puts_given_up: u64,
}

/// SplitMix64: enough randomness to mix keys and operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A short name for a failure, so the summary groups them.
fn reason(e: &str) -> String {
    let e = e.to_ascii_lowercase();
    for (needle, name) in [
        ("timeout", "timeout"),
        ("timed out", "timeout"),
        ("refused", "connection refused"),
        ("reset", "connection reset"),
        ("redirect", "too many redirects"),
    ] {
        if e.contains(needle) {
            return name.into();
        }
    }
    e.chars().take(60).collect()
}

/// The `200` of a PUT: whether it came from the session's cache.
fn replayed(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|v| v["replayed"] == serde_json::Value::Bool(true))
}

/// Where a client sends: the last node that answered, else the next one.
struct Target {
    addr: String,
    next: usize,
}

impl Target {
    /// Moves on to the next node after one that gave no definite answer.
    fn rotate(&mut self, shared: &Shared) {
        self.next = (self.next + 1) % shared.nodes.len();
        self.addr = shared.nodes[self.next].clone();
    }
}

/// One PUT with its session's `seq`, retried with the same seq, key and
/// value until a definite answer (see the module's recording rules).
#[allow(clippy::too_many_arguments)]
fn put(
    agent: &ureq::Agent,
    shared: &Shared,
    rng: &mut Rng,
    log: &mut ClientLog,
    target: &mut Target,
    (id, session, seq): (u64, u64, u64),
    key: u64,
    value: u64,
) -> Op {
    let path = format!("/kv/{key}");
    let body = value.to_string();
    let request = Put {
        body: body.as_bytes(),
        client: session,
        seq,
    };
    let invoke = shared.now_us();
    let give_up = Instant::now() + RECOVERY;
    let mut drop_reply = rng.next() & (LOSE_REPLY_ONE_IN - 1) == 0;
    // Set once a `200` was dropped: the write is known to be applied.
    let mut acknowledged_before = false;
    let mut retries = 0u64;
    let complete = loop {
        let answer = exchange(agent, &target.addr, &path, Some(request));
        let done = shared.now_us();
        let failure = match answer {
            Ok((200, body, from)) => {
                let from_cache = replayed(&body);
                if acknowledged_before && !from_cache {
                    log.anomalies.push(format!(
                        "client {id}: PUT {key}={value} (session {session} seq {seq}) was \
                         acknowledged, and its retry from {from} at {done}us was applied again \
                         instead of answered from the session's cache"
                    ));
                }
                log.replayed += u64::from(from_cache);
                target.addr = from;
                if drop_reply {
                    // As if the answer were lost on the way back.
                    drop_reply = false;
                    acknowledged_before = true;
                    log.replies_dropped += 1;
                    retries += 1;
                    std::thread::sleep(Duration::from_millis(
                        rng.next() % (LOST_REPLY_PAUSE_MS + 1),
                    ));
                    continue;
                }
                break Some(done);
            }
            Ok((status @ (409 | 410), body, from)) => {
                // One PUT at a time per session, never idle for long: a
                // stale seq or a lost session is a bug.
                log.anomalies.push(format!(
                    "client {id}: PUT {key}={value} (session {session} seq {seq}) from {from}: \
                     {status} {}",
                    error_text(&body)
                ));
                break None;
            }
            Ok((status, body, from)) if status < 500 => {
                log.anomalies.push(format!(
                    "client {id}: PUT {key}={value} from {from}: {status} {}",
                    error_text(&body)
                ));
                break None;
            }
            Ok((status, body, _)) => format!("{status} {}", error_text(&body)),
            Err(e) => e,
        };
        *log.failures
            .entry(format!("put: {}", reason(&failure)))
            .or_default() += 1;
        if shared.stop.load(Ordering::SeqCst) || Instant::now() >= give_up {
            log.puts_given_up += 1;
            break None;
        }
        retries += 1;
        target.rotate(shared);
        std::thread::sleep(RETRY_PAUSE);
    };
    if complete.is_some() {
        shared.acked.fetch_add(1, Ordering::SeqCst);
        log.puts_retried += u64::from(retries > 0);
    }
    Op {
        client: id,
        invoke,
        complete,
        kind: OpKind::Put { key, value },
    }
}

/// One GET, not retried: `complete: None` unless the answer is definite.
fn get(
    agent: &ureq::Agent,
    shared: &Shared,
    log: &mut ClientLog,
    target: &mut Target,
    id: u64,
    key: u64,
) -> Op {
    let invoke = shared.now_us();
    let answer = exchange(agent, &target.addr, &format!("/kv/{key}"), None);
    let done = shared.now_us();
    let outcome: Result<(Option<u64>, String), String> = match answer {
        Ok((200, body, from)) => match std::str::from_utf8(&body).ok().and_then(|s| s.parse().ok())
        {
            Some(v) => Ok((Some(v), from)),
            None => {
                log.anomalies.push(format!(
                    "client {id}: GET {key} from {from} at {invoke}us \
                     returned {:?}, which no client wrote",
                    String::from_utf8_lossy(&body)
                ));
                Err("unparsable value".into())
            }
        },
        Ok((404, body, from)) => {
            if error_text(&body) == "not found" {
                Ok((None, from))
            } else {
                log.anomalies.push(format!(
                    "client {id}: GET {key} from {from}: 404 {}",
                    error_text(&body)
                ));
                Err("unexpected 404".into())
            }
        }
        Ok((status, body, _)) => Err(format!("{status} {}", error_text(&body))),
        Err(e) => Err(e),
    };
    match outcome {
        Ok((result, from)) => {
            // Keep talking to whoever answered (after redirects: the
            // leader).
            target.addr = from;
            Op {
                client: id,
                invoke,
                complete: Some(done),
                kind: OpKind::Get { key, result },
            }
        }
        Err(e) => {
            // A GET without an answer constrains nothing.
            *log.failures
                .entry(format!("get: {}", reason(&e)))
                .or_default() += 1;
            target.rotate(shared);
            std::thread::sleep(RETRY_PAUSE);
            Op {
                client: id,
                invoke,
                complete: None,
                kind: OpKind::Get { key, result: None },
            }
        }
    }
}

fn client(id: u64, seed: u64, shared: Arc<Shared>) -> ClientLog {
    let agent = agent(HTTP_TIMEOUT);
    let mut rng = Rng(seed ^ id.wrapping_mul(0xa076_1d64_78bd_642f));
    // The session: an id no other client of this run has (the high bits
    // from the seed, the low ones the client's number), seqs from 1.
    let session = (rng.next() << 8) | id;
    let mut seq = 0;
    let mut log = ClientLog::default();
    let n = shared.nodes.len();
    let mut target = Target {
        addr: shared.nodes[id as usize % n].clone(),
        next: id as usize % n,
    };
    while !shared.stop.load(Ordering::SeqCst) {
        let key = rng.next() % KEYS;
        let op = if rng.next() & 1 == 0 {
            seq += 1;
            let value = shared.next_value.fetch_add(1, Ordering::SeqCst);
            put(
                &agent,
                &shared,
                &mut rng,
                &mut log,
                &mut target,
                (id, session, seq),
                key,
                value,
            )
        } else {
            get(&agent, &shared, &mut log, &mut target, id, key)
        };
        log.ops.push(op);
        std::thread::sleep(THINK);
    }
    log
}

// ------------------------------------------------------------ the driver

/// The node among `among` (ids) that reports itself leader with the
/// highest term, other than `not`; polls for at most [`RECOVERY`].
fn wait_leader(shared: &Shared, among: &[u64], not: Option<u64>) -> u64 {
    let agent = agent(Duration::from_millis(500));
    let deadline = Instant::now() + RECOVERY;
    loop {
        let best = among
            .iter()
            .filter(|id| Some(**id) != not)
            .filter_map(|&id| {
                let (role, term, _) = node_status(&agent, &shared.nodes[id as usize - 1])?;
                (role == "leader").then_some((term, id))
            })
            .max();
        if let Some((term, id)) = best {
            shared.note(&format!("node {id} leads (term {term})"));
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "no leader among {among:?} (not {not:?}) within {RECOVERY:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until every node in `ids` answers and names the same leader.
fn wait_agreement(shared: &Shared, ids: &[u64]) -> u64 {
    let agent = agent(Duration::from_millis(500));
    let deadline = Instant::now() + RECOVERY;
    loop {
        let seen: Vec<Option<u64>> = ids
            .iter()
            .map(|&id| node_status(&agent, &shared.nodes[id as usize - 1]).and_then(|s| s.2))
            .collect();
        if let Some(Some(l)) = seen.first() {
            if seen.iter().all(|s| *s == Some(*l)) {
                shared.note(&format!("nodes {ids:?} agree that node {l} leads"));
                return *l;
            }
        }
        assert!(
            Instant::now() < deadline,
            "nodes {ids:?} do not agree on a leader within {RECOVERY:?}: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the clients have had [`PROGRESS`] more writes acknowledged,
/// for at most [`RECOVERY`].
fn wait_progress(shared: &Shared, after: &str) {
    let start = Instant::now();
    let base = shared.acked.load(Ordering::SeqCst);
    loop {
        let now = shared.acked.load(Ordering::SeqCst);
        if now >= base + PROGRESS {
            shared.note(&format!(
                "{PROGRESS} writes acknowledged {:.0} ms after {after}",
                start.elapsed().as_secs_f64() * 1e3
            ));
            return;
        }
        assert!(
            start.elapsed() < RECOVERY,
            "only {} writes acknowledged within {RECOVERY:?} after {after}",
            now - base
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `cdsctl kv ARGS`, noted on the timeline.
fn fault(shared: &Shared, dir: &Path, args: &[&str]) {
    shared.note(&format!("cdsctl kv {}", args.join(" ")));
    ok(dir, args);
}

/// A final linearizable read of `key` by the test thread, retried (reads
/// have no effect, so retrying stays one operation) for at most
/// [`RECOVERY`].
fn final_read(shared: &Shared, key: u64) -> Op {
    let agent = agent(HTTP_TIMEOUT);
    let invoke = shared.now_us();
    let deadline = Instant::now() + RECOVERY;
    let mut i = 0;
    loop {
        let addr = &shared.nodes[i % shared.nodes.len()];
        let answer = exchange(&agent, addr, &format!("/kv/{key}"), None);
        let done = shared.now_us();
        let result = match &answer {
            Ok((200, body, _)) => Some(Some(
                std::str::from_utf8(body)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("final GET {key}: value {body:?}")),
            )),
            Ok((404, body, _)) if error_text(body) == "not found" => Some(None),
            _ => None,
        };
        if let Some(result) = result {
            return Op {
                client: CLIENTS,
                invoke,
                complete: Some(done),
                kind: OpKind::Get { key, result },
            };
        }
        assert!(
            Instant::now() < deadline,
            "final GET {key}: no answer within {RECOVERY:?}: {answer:?}"
        );
        i += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Acknowledged writes whose effect the final read of their key cannot
/// explain: the final value comes from a write that completed before an
/// acknowledged one began (or the key reads absent although a write was
/// acknowledged). The checker finds these too; this names them plainly.
fn lost_writes(history: &[Op], finals: &[Op]) -> Vec<String> {
    let mut lost = Vec::new();
    for f in finals {
        let OpKind::Get { key, result } = f.kind else {
            continue;
        };
        let acked = history.iter().filter(|op| {
            op.complete.is_some() && matches!(op.kind, OpKind::Put { key: k, .. } if k == key)
        });
        // When the write the final read saw completed (None: never
        // acknowledged, so it may have taken effect at any time).
        let source_done: Option<u64> = match result {
            None => Some(0),
            Some(v) => history
                .iter()
                .find(|op| op.kind == OpKind::Put { key, value: v })
                .and_then(|op| op.complete),
        };
        if let Some(t) = source_done {
            for a in acked {
                if a.invoke > t {
                    lost.push(format!(
                        "key {key}: acknowledged {a:?} is lost: the final read returned {result:?}"
                    ));
                }
            }
        }
    }
    lost
}

/// On failure: copy the history and the node logs where they outlive the
/// temp directory, and say where.
fn keep_evidence(dir: &Path, history: &[Op]) -> String {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "kv_linearizable-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    ));
    if std::fs::create_dir_all(&out).is_err() {
        return "(could not keep the evidence)".into();
    }
    let mut sorted = history.to_vec();
    sorted.sort_by_key(|op| (op.kind.key(), op.invoke));
    let lines: Vec<String> = sorted.iter().map(|op| format!("{op:?}")).collect();
    let _ = std::fs::write(out.join("history.txt"), lines.join("\n"));
    for id in 1..=3 {
        let _ = std::fs::copy(
            dir.join(format!("n{id}")).join("log"),
            out.join(format!("n{id}.log")),
        );
    }
    format!("history and node logs kept in {}", out.display())
}

#[test]
fn clients_see_a_linearizable_kv_through_crashes_pauses_partitions_and_restarts() {
    let started = Instant::now();
    let seed = std::env::var("KV_LIN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("kv_linearizable: seed {seed} (KV_LIN_SEED={seed} repeats the operation mix)");

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let _guard = Guard { dir: dir.clone() };
    ok(&dir, &["up", "--nodes", "3", "--timeout", "30s"]);
    let table: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cluster.json")).unwrap()).unwrap();
    let nodes: Vec<String> = (1..=3u64)
        .map(|id| {
            table["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["id"] == id)
                .and_then(|n| n["http_addr"].as_str())
                .unwrap_or_else(|| panic!("node {id} in cluster.json: {table}"))
                .to_owned()
        })
        .collect();

    let shared = Arc::new(Shared {
        origin: Instant::now(),
        nodes,
        stop: AtomicBool::new(false),
        acked: AtomicU64::new(0),
        next_value: AtomicU64::new(1),
    });
    let stop_clients = StopClients(shared.clone());
    let clients: Vec<JoinHandle<ClientLog>> = (0..CLIENTS)
        .map(|id| {
            let shared = shared.clone();
            std::thread::spawn(move || client(id, seed, shared))
        })
        .collect();
    shared.note(&format!("{CLIENTS} clients started on keys 0..{KEYS}"));
    let all = [1u64, 2, 3];
    let others = |id: u64| -> Vec<u64> { all.iter().copied().filter(|x| *x != id).collect() };
    wait_progress(&shared, "start");
    std::thread::sleep(SETTLE);

    // 1. The leader crashes (SIGKILL), the others elect a new one; it comes
    //    back with what it had persisted.
    let leader = wait_leader(&shared, &all, None);
    fault(&shared, &dir, &["kill", &leader.to_string()]);
    wait_leader(&shared, &others(leader), Some(leader));
    wait_progress(&shared, "killing the leader");
    fault(&shared, &dir, &["restart", &leader.to_string()]);
    wait_progress(&shared, "restarting the old leader");
    std::thread::sleep(SETTLE);

    // 2. A follower stops for two seconds (a GC pause, a hung VM).
    let leader = wait_leader(&shared, &all, None);
    let follower = others(leader)[0];
    fault(&shared, &dir, &["pause", &follower.to_string()]);
    let paused = Instant::now();
    wait_progress(&shared, "pausing a follower");
    std::thread::sleep(Duration::from_secs(2).saturating_sub(paused.elapsed()));
    fault(&shared, &dir, &["resume", &follower.to_string()]);
    wait_progress(&shared, "resuming the follower");
    std::thread::sleep(SETTLE);

    // 3. The leader is cut off from the other two (clients can still reach
    //    it: its writes must not commit, its reads must not be served).
    let leader = wait_leader(&shared, &all, None);
    let rest = others(leader);
    let spec = format!("{leader}/{},{}", rest[0], rest[1]);
    fault(&shared, &dir, &["partition", &spec]);
    let cut = Instant::now();
    wait_leader(&shared, &rest, Some(leader));
    wait_progress(&shared, "partitioning the leader away");
    std::thread::sleep(Duration::from_secs(3).saturating_sub(cut.elapsed()));
    fault(&shared, &dir, &["heal"]);
    wait_agreement(&shared, &all);
    wait_progress(&shared, "healing");
    std::thread::sleep(SETTLE);

    // 4. Every node crashes; all restart from their disks.
    for id in all {
        fault(&shared, &dir, &["kill", &id.to_string()]);
    }
    for id in all {
        fault(&shared, &dir, &["restart", &id.to_string()]);
    }
    wait_leader(&shared, &all, None);
    wait_progress(&shared, "restarting every node");
    std::thread::sleep(SETTLE);

    // Stop the clients (each finishes its operation in flight, which is
    // bounded by the HTTP timeout and the redirect limit).
    drop(stop_clients);
    let mut history = Vec::new();
    let mut anomalies = Vec::new();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let (mut puts_retried, mut replayed, mut replies_dropped, mut puts_given_up) = (0, 0, 0, 0);
    for c in clients {
        let log = c.join().expect("a client thread panicked");
        history.extend(log.ops);
        anomalies.extend(log.anomalies);
        for (k, v) in log.failures {
            *failures.entry(k).or_default() += v;
        }
        puts_retried += log.puts_retried;
        replayed += log.replayed;
        replies_dropped += log.replies_dropped;
        puts_given_up += log.puts_given_up;
    }
    shared.note("clients stopped");

    // One more read of every key, once nothing else runs: whatever was
    // acknowledged must be there after the restart of every node.
    let finals: Vec<Op> = (0..KEYS).map(|key| final_read(&shared, key)).collect();
    shared.note(&format!(
        "final reads: {:?}",
        finals
            .iter()
            .map(|op| match op.kind {
                OpKind::Get { key, result } => (key, result),
                OpKind::Put { .. } => unreachable!(),
            })
            .collect::<Vec<_>>()
    ));
    let lost = lost_writes(&history, &finals);
    history.extend(finals.iter().copied());

    let puts = history
        .iter()
        .filter(|op| matches!(op.kind, OpKind::Put { .. }))
        .count();
    let acked = history
        .iter()
        .filter(|op| op.complete.is_some() && matches!(op.kind, OpKind::Put { .. }))
        .count();
    let gets_done = history
        .iter()
        .filter(|op| op.complete.is_some() && matches!(op.kind, OpKind::Get { .. }))
        .count();
    let open = history.iter().filter(|op| op.complete.is_none()).count();
    let check_started = Instant::now();
    let verdict = check(&history);
    let check_time = check_started.elapsed();
    eprintln!(
        "kv_linearizable: {} ops ({puts} puts, {acked} acknowledged; {gets_done} gets answered; \
         {open} without a definite outcome), test {:.1} s, check {:.0} ms: {}",
        history.len(),
        started.elapsed().as_secs_f64(),
        check_time.as_secs_f64() * 1e3,
        match &verdict {
            Ok(stats) => format!(
                "linearizable ({} ops checked, {} states)",
                stats.ops, stats.states_explored
            ),
            Err(v) => format!("NOT linearizable: {v}"),
        }
    );
    eprintln!("kv_linearizable: attempts without a definite answer, by reason: {failures:?}");
    eprintln!(
        "kv_linearizable: {puts_retried} puts acknowledged after a retry ({replies_dropped} of \
         them after a 200 dropped on purpose), {replayed} answered from the session's cache, \
         {puts_given_up} given up"
    );

    let problems = !anomalies.is_empty() || !lost.is_empty() || verdict.is_err();
    let evidence = if problems {
        keep_evidence(&dir, &history)
    } else {
        String::new()
    };
    assert!(
        anomalies.is_empty(),
        "answers no correct node gives: {anomalies:#?}\n{evidence}"
    );
    assert!(
        lost.is_empty(),
        "acknowledged writes lost: {lost:#?}\n{evidence}"
    );
    let stats = verdict.unwrap_or_else(|v| panic!("{v}\n(seed {seed})\n{evidence}"));
    assert!(
        acked as u64 >= 8 * PROGRESS,
        "too few acknowledged writes to mean anything: {acked}"
    );
    // Retries happened, and some were of writes that had committed (each
    // dropped `200` is one, and its retry was answered from the cache, or
    // it is among the anomalies above).
    assert!(
        replies_dropped > 0 && replayed >= replies_dropped,
        "no retry of a committed write was exercised: {replies_dropped} replies dropped, \
         {replayed} replayed"
    );
    assert_eq!(stats.keys as u64, KEYS);

    // The checker is not vacuous on this history: a read, after the final
    // reads, of a value acknowledged earlier but since overwritten must be
    // refused.
    let stale = history.iter().find_map(|op| match op.kind {
        OpKind::Put { key, value } if op.complete.is_some() => {
            let fin = finals.iter().find(|f| f.kind.key() == key)?;
            (fin.kind
                != OpKind::Get {
                    key,
                    result: Some(value),
                })
            .then_some((key, value))
        }
        _ => None,
    });
    let (key, value) = stale.expect("some key was written more than once");
    let end = history
        .iter()
        .filter_map(|op| op.complete)
        .max()
        .unwrap_or(0);
    let mut lie = history.clone();
    lie.push(Op {
        client: CLIENTS + 1,
        invoke: end + 1,
        complete: Some(end + 2),
        kind: OpKind::Get {
            key,
            result: Some(value),
        },
    });
    assert!(
        check(&lie).is_err(),
        "a stale read of {value} on key {key} after the end was accepted"
    );
}
