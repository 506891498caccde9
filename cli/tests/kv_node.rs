//! End-to-end tests of `cdsctl node`: three real node processes on free
//! ports, talking HTTP and Raft over TCP, with a leader killed (SIGKILL) and
//! restarted from its data directory.
//!
//! The processes are owned by a guard that kills them on drop, so a failing
//! assertion never leaves nodes running. Every wait has a deadline.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;

/// How long a cluster gets to elect a leader or catch a node up.
const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);
/// The admin token of every test node (`admin_token` in its config).
const ADMIN_TOKEN: &str = "an-admin-token-of-32-characters-";
/// The peer token of every test node.
const PEER_TOKEN: &str = "a-test-token-of-32-characters-xx";

/// `n` distinct free addresses. The listeners are held until all are
/// chosen, so one call never hands out the same port twice.
fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    ls.iter()
        .map(|l| l.local_addr().expect("local addr"))
        .collect()
}

/// A cluster of node processes; kills them all on drop.
struct Cluster {
    dir: tempfile::TempDir,
    http: BTreeMap<u64, SocketAddr>,
    children: BTreeMap<u64, Child>,
    agent: ureq::Agent,
    /// The `peers` table of the configs, for nodes added later.
    peers: Value,
    /// The config every node got, for nodes added later.
    template: Value,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, mut c) in std::mem::take(&mut self.children) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Vec<u8>,
    location: Option<String>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl Cluster {
    fn new(n: u64) -> Cluster {
        Cluster::with(n, |_| {})
    }

    /// A cluster whose node configs `tweak` may change before the start.
    fn with(n: u64, tweak: impl Fn(&mut Value)) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ids: Vec<u64> = (1..=n).collect();
        let free = free_addrs(2 * ids.len());
        let addrs: BTreeMap<u64, (SocketAddr, SocketAddr)> = ids
            .iter()
            .zip(free.chunks(2))
            .map(|(&i, a)| (i, (a[0], a[1])))
            .collect();
        let peers: serde_json::Map<String, Value> = addrs
            .iter()
            .map(|(i, (r, h))| {
                (
                    i.to_string(),
                    json!({"raft": r.to_string(), "http": h.to_string()}),
                )
            })
            .collect();
        let peers = Value::Object(peers);
        let mut template = Value::Null;
        for (&id, (raft, http)) in &addrs {
            let data = dir.path().join(format!("n{id}"));
            std::fs::create_dir_all(&data).expect("node dir");
            let mut cfg = json!({
                "id": id, "group": 1, "cluster_id": 7, "token": PEER_TOKEN, "admin_token": ADMIN_TOKEN,
                "raft_addr": raft.to_string(), "http_addr": http.to_string(),
                "data_dir": data, "peers": peers, "voters": ids,
                "tick_ms": 50, "election_tick": 10, "heartbeat_tick": 2,
                "snapshot_every": 1000, "log_margin": 100
            });
            tweak(&mut cfg);
            template = cfg.clone();
            write_config(&data, &cfg);
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let mut c = Cluster {
            dir,
            http: addrs.iter().map(|(&i, &(_, h))| (i, h)).collect(),
            children: BTreeMap::new(),
            agent,
            peers,
            template,
        };
        for id in ids {
            c.start(id);
        }
        c
    }

    /// Writes the config of a new node `id` that joins later (voters
    /// []), and returns its raft and HTTP addresses. Does not start it.
    fn add_node_config(&mut self, id: u64) -> (SocketAddr, SocketAddr) {
        let free = free_addrs(2);
        let (raft, http) = (free[0], free[1]);
        self.peers[id.to_string()] = json!({"raft": raft.to_string(), "http": http.to_string()});
        let data = self.node_dir(id);
        std::fs::create_dir_all(&data).expect("node dir");
        let mut cfg = self.template.clone();
        cfg["id"] = json!(id);
        cfg["raft_addr"] = json!(raft.to_string());
        cfg["http_addr"] = json!(http.to_string());
        cfg["data_dir"] = json!(data);
        cfg["peers"] = self.peers.clone();
        cfg["voters"] = json!([]);
        write_config(&data, &cfg);
        // Like `cdsctl kv add-node`: every member's config learns the new
        // peer (a node accepts `/admin/peer` only for what its config lists).
        for &other in self.http.keys() {
            let path = self.node_dir(other).join("config.json");
            let mut cfg: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("read config"))
                    .expect("parse config");
            cfg["peers"] = self.peers.clone();
            write_config(&self.node_dir(other), &cfg);
        }
        self.http.insert(id, http);
        (raft, http)
    }

    fn node_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("n{id}"))
    }

    fn start(&mut self, id: u64) {
        let d = self.node_dir(id);
        let log = File::options()
            .create(true)
            .append(true)
            .open(d.join("log"))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_cdsctl"))
            .arg("node")
            .arg("--config")
            .arg(d.join("config.json"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn cdsctl node");
        self.children.insert(id, child);
    }

    fn kill9(&mut self, id: u64) {
        let mut c = self.children.remove(&id).expect("node is running");
        c.kill().expect("SIGKILL");
        c.wait().expect("reap");
    }

    fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.node_dir(id).join("log")).unwrap_or_default()
    }

    fn logs(&self) -> String {
        self.http
            .keys()
            .map(|&i| format!("--- node {i} ---\n{}", self.log(i)))
            .collect()
    }

    /// One request, no redirect followed; `None` when the node cannot be
    /// reached. POST bodies are declared JSON, and `/admin/*` requests
    /// carry the admin token, as `cdsctl kv` sends them.
    fn request(&self, method: &str, url: &str, body: &[u8]) -> Option<Answer> {
        self.request_with(method, url, body, None)
    }

    /// [`Cluster::request`] with a client session's headers, if given
    /// (client id, seq).
    fn request_with(
        &self,
        method: &str,
        url: &str,
        body: &[u8],
        session: Option<(u64, u64)>,
    ) -> Option<Answer> {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let admin = url.contains("/admin/");
        let mut headers = Vec::new();
        if let Some((client, seq)) = session {
            headers.push(("X-Client-Id", client.to_string()));
            headers.push(("X-Client-Seq", seq.to_string()));
        }
        macro_rules! with_headers {
            ($req:expr) => {{
                let mut req = $req;
                for (k, v) in &headers {
                    req = req.header(*k, v);
                }
                req
            }};
        }
        let r = match method {
            "GET" => with_headers!(self.agent.get(url)).call(),
            "DELETE" => with_headers!(self.agent.delete(url)).call(),
            "PUT" => with_headers!(self.agent.put(url)).send(body),
            "POST" if admin => with_headers!(self.agent.post(url))
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .send(body),
            "POST" => with_headers!(self.agent.post(url))
                .header("content-type", "application/json")
                .send(body),
            m => panic!("unsupported method {m}"),
        };
        let resp = r.ok()?;
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.into_body().read_to_vec().ok()?;
        Some(Answer {
            status,
            body,
            location,
        })
    }

    /// Sends to node `id`, following up to 5 redirects; returns the final
    /// answer and how many redirects were followed.
    fn send(&self, id: u64, method: &str, path: &str, body: &[u8]) -> Option<(Answer, usize)> {
        self.send_with(id, method, path, body, None)
    }

    /// [`Cluster::send`] with a client session's headers, if given.
    fn send_with(
        &self,
        id: u64,
        method: &str,
        path: &str,
        body: &[u8],
        session: Option<(u64, u64)>,
    ) -> Option<(Answer, usize)> {
        let mut url = format!("http://{}{path}", self.http[&id]);
        for hops in 0..=5 {
            let a = self.request_with(method, &url, body, session)?;
            match (a.status, &a.location) {
                (307, Some(loc)) => url = loc.clone(),
                _ => return Some((a, hops)),
            }
        }
        None
    }

    /// Like `send`, retrying (until `WAIT`) while the answer is 503 or the
    /// node is unreachable: the normal state during an election.
    fn send_retrying(&self, id: u64, method: &str, path: &str, body: &[u8]) -> (Answer, usize) {
        self.send_retrying_with(id, method, path, body, None)
    }

    /// [`Cluster::send_retrying`] with a client session's headers, if
    /// given: with them a retry is safe for any write.
    fn send_retrying_with(
        &self,
        id: u64,
        method: &str,
        path: &str,
        body: &[u8],
        session: Option<(u64, u64)>,
    ) -> (Answer, usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.send_with(id, method, path, body, session) {
                Some((a, hops)) if a.status != 503 => return (a, hops),
                other if Instant::now() > deadline => {
                    panic!("{method} {path} via {id}: still {other:?}\n{}", self.logs())
                }
                _ => sleep(POLL),
            }
        }
    }

    fn status(&self, id: u64) -> Option<Value> {
        let a = self.request("GET", &format!("http://{}/status", self.http[&id]), b"")?;
        (a.status == 200).then(|| a.json())
    }

    /// Waits until one running node leads and every running node follows
    /// it; returns its id.
    fn wait_leader(&self) -> u64 {
        let ids: Vec<u64> = self.children.keys().copied().collect();
        self.wait_leader_among(&ids)
    }

    /// Waits until one of `ids` leads and all of `ids` follow it.
    fn wait_leader_among(&self, ids: &[u64]) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let st: Vec<Value> = ids.iter().filter_map(|&i| self.status(i)).collect();
            if st.len() == ids.len() {
                let leaders: Vec<u64> = st
                    .iter()
                    .filter(|s| s["role"] == "leader")
                    .filter_map(|s| s["id"].as_u64())
                    .collect();
                if let [l] = leaders[..] {
                    if st.iter().all(|s| s["leader"].as_u64() == Some(l)) {
                        return l;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no single leader within {WAIT:?}: {st:?}\n{}",
                self.logs()
            );
            sleep(POLL);
        }
    }
}

fn get_ok(c: &Cluster, via: u64, path: &str) -> Vec<u8> {
    let (a, _) = c.send_retrying(via, "GET", path, b"");
    assert_eq!(a.status, 200, "GET {path} via {via}: {a:?}");
    a.body
}

#[test]
fn writes_survive_a_killed_leader_and_a_restarted_node_catches_up() {
    let mut c = Cluster::new(3);
    let leader = c.wait_leader();
    let follower = *c.http.keys().find(|&&i| i != leader).expect("a follower");

    // A write through a follower is redirected to the leader.
    let (a, hops) = c.send_retrying(follower, "PUT", "/kv/alpha", b"one");
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(hops, 1, "the follower redirects once");
    assert!(a.json()["index"].as_u64().is_some_and(|i| i > 0), "{a:?}");
    assert!(a.json()["term"].as_u64().is_some(), "{a:?}");

    // A follower redirects a linearizable read, serves a stale one itself.
    let raw = c
        .request(
            "GET",
            &format!("http://{}/kv/alpha", c.http[&follower]),
            b"",
        )
        .expect("follower reachable");
    assert_eq!(raw.status, 307, "{raw:?}");
    let leader_http = c.http[&leader];
    assert_eq!(
        raw.location.as_deref(),
        Some(format!("http://{leader_http}/kv/alpha").as_str())
    );
    assert_eq!(get_ok(&c, follower, "/kv/alpha"), b"one");
    assert_eq!(get_ok(&c, leader, "/kv/alpha?consistency=lease"), b"one");
    let (missing, _) = c.send_retrying(follower, "GET", "/kv/nope", b"");
    assert_eq!(missing.status, 404, "{missing:?}");
    let (bad, _) = c.send_retrying(leader, "GET", "/kv/alpha?consistency=bogus", b"");
    assert_eq!(bad.status, 400, "{bad:?}");

    // CAS and DELETE go through the log like PUT.
    let (cas, _) = c.send_retrying(
        follower,
        "POST",
        "/kv/gamma/cas",
        json!({"expect": null, "value": "g1"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(cas.status, 200, "{cas:?}");
    assert_eq!(cas.json()["ok"], true, "{cas:?}");
    let (cas, _) = c.send_retrying(
        follower,
        "POST",
        "/kv/gamma/cas",
        json!({"expect": "wrong", "value": "g2"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(cas.json()["ok"], false, "{cas:?}");
    let (del, _) = c.send_retrying(follower, "DELETE", "/kv/gamma", b"");
    assert_eq!(del.status, 200, "{del:?}");
    let (gone, _) = c.send_retrying(leader, "GET", "/kv/gamma", b"");
    assert_eq!(gone.status, 404, "{gone:?}");

    // Kill the leader without warning: another one takes over, with the
    // committed value, and takes new writes.
    c.kill9(leader);
    let new_leader = c.wait_leader();
    assert_ne!(new_leader, leader);
    let survivor = *c.children.keys().next().expect("a running node");
    assert_eq!(get_ok(&c, survivor, "/kv/alpha"), b"one");
    let (a, _) = c.send_retrying(survivor, "PUT", "/kv/beta", b"two");
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(get_ok(&c, survivor, "/kv/beta"), b"two");

    // The killed node restarts from its data directory and catches up.
    c.start(leader);
    let deadline = Instant::now() + WAIT;
    loop {
        let got = c
            .send(leader, "GET", "/kv/beta?consistency=stale", b"")
            .map(|(a, _)| (a.status, a.body));
        if got == Some((200, b"two".to_vec())) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {leader} did not catch up: {got:?}\n{}",
            c.logs()
        );
        sleep(POLL);
    }
    let (a, _) = c.send_retrying(leader, "GET", "/kv/alpha?consistency=stale", b"");
    assert_eq!((a.status, a.body.as_slice()), (200, b"one".as_slice()));
    let st = c.status(leader).expect("status of the restarted node");
    for field in ["role", "term", "commit", "applied", "voters", "pid"] {
        assert!(!st[field].is_null(), "status lacks {field}: {st}");
    }
}

#[test]
fn sigterm_stops_a_node_cleanly_and_removes_its_pid_file() {
    let mut c = Cluster::new(3);
    c.wait_leader();
    let id = 2;
    let pid_file = c.node_dir(id).join("pid");
    let deadline = Instant::now() + WAIT;
    while !pid_file.exists() {
        assert!(Instant::now() < deadline, "no pid file");
        sleep(POLL);
    }
    let mut child = c.children.remove(&id).expect("node 2 runs");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid");
    assert_eq!(pid as u32, child.id());
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("node did not stop on SIGTERM\n{}", c.log(id));
        }
        sleep(POLL);
    };
    assert!(status.success(), "exit {status:?}\n{}", c.log(id));
    assert!(!pid_file.exists(), "pid file left behind");
    assert!(c.log(id).contains("stopped cleanly"), "{}", c.log(id));
}

#[test]
fn a_bad_config_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |path: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_cdsctl"))
            .arg("node")
            .arg("--config")
            .arg(path)
            .output()
            .expect("run cdsctl");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = run(&dir.path().join("absent.json"));
    assert!(missing.contains("cannot read the config file"), "{missing}");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"id": 0}"#).expect("write");
    // Others can read it (0644 under the usual umask): refused before its
    // content is even looked at, since it would hold the token.
    let shared = run(&bad);
    assert!(
        shared.contains("open to other users") && shared.contains("chmod 600"),
        "{shared}"
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let err = run(&bad);
    assert!(err.contains("invalid config file"), "{err}");
}

/// Sets node `id`'s fault filter.
fn filter(c: &Cluster, id: u64, drop: &[u64]) {
    let body = json!({"drop_to": drop, "drop_from": drop}).to_string();
    let a = c
        .request(
            "POST",
            &format!("http://{}/admin/filter", c.http[&id]),
            body.as_bytes(),
        )
        .expect("node reachable");
    assert_eq!(a.status, 200, "{a:?}");
}

fn wait_until(c: &Cluster, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out: {what}\n{}", c.logs());
        sleep(POLL);
    }
}

fn stale(c: &Cluster, id: u64, key: &str) -> Option<Vec<u8>> {
    let url = format!("http://{}/kv/{key}?consistency=stale", c.http[&id]);
    c.request("GET", &url, b"")
        .filter(|a| a.status == 200)
        .map(|a| a.body)
}

#[test]
fn a_write_retried_with_its_session_is_applied_once_even_after_a_snapshot_and_a_restart() {
    // No log kept behind a snapshot: after one, the sessions exist only in
    // the snapshot.
    let mut c = Cluster::with(3, |cfg| cfg["log_margin"] = json!(0));
    let leader = c.wait_leader();
    let follower = *c.http.keys().find(|&&i| i != leader).expect("a follower");
    let (a_id, b_id) = (0xA11CE, u64::MAX);
    let w = |c: &Cluster, via: u64, method: &str, path: &str, body: &str, s: (u64, u64)| {
        c.send_retrying_with(via, method, path, body.as_bytes(), Some(s))
            .0
    };
    let cas = |expect: &str, value: &str| json!({"expect": expect, "value": value}).to_string();

    // A PUT, then another client's write, then the PUT's retry (its
    // answer was "lost"): the retry is answered from the cache, with the
    // first entry's index, and the other write stays.
    let first = w(&c, leader, "PUT", "/kv/k", "a", (a_id, 1));
    assert_eq!(first.status, 200, "{first:?}");
    assert!(first.json().get("replayed").is_none(), "{first:?}");
    let (other, _) = c.send_retrying(leader, "PUT", "/kv/k", b"b");
    assert_eq!(other.status, 200, "{other:?}");
    let retry = w(&c, follower, "PUT", "/kv/k", "a", (a_id, 1));
    assert_eq!(retry.status, 200, "{retry:?}");
    assert_eq!(retry.json()["replayed"], true, "{retry:?}");
    assert_eq!(retry.json()["index"], first.json()["index"], "{retry:?}");
    assert_eq!(get_ok(&c, follower, "/kv/k"), b"b");

    // A CAS retried after it succeeded succeeds again (applied again it
    // would fail: the key no longer holds what it expects).
    let swap = w(&c, leader, "POST", "/kv/k/cas", &cas("b", "c"), (b_id, 1));
    assert_eq!(
        (swap.status, &swap.json()["ok"]),
        (200, &json!(true)),
        "{swap:?}"
    );
    let retry = w(&c, follower, "POST", "/kv/k/cas", &cas("b", "c"), (b_id, 1));
    assert_eq!(retry.json()["ok"], true, "{retry:?}");
    assert_eq!(retry.json()["replayed"], true, "{retry:?}");
    let (plain, _) = c.send_retrying(leader, "POST", "/kv/k/cas", cas("b", "c").as_bytes());
    assert_eq!(
        plain.json()["ok"],
        false,
        "without a session it applies: {plain:?}"
    );
    assert_eq!(get_ok(&c, leader, "/kv/k"), b"c");

    // A DELETE too: the retry still says the key existed.
    let del = w(&c, leader, "DELETE", "/kv/k", "", (b_id, 2));
    assert_eq!(del.json()["existed"], true, "{del:?}");
    let retry = w(&c, leader, "DELETE", "/kv/k", "", (b_id, 2));
    assert_eq!(
        (&retry.json()["existed"], &retry.json()["replayed"]),
        (&json!(true), &json!(true)),
        "{retry:?}"
    );

    // An older seq is stale; a seq above 1 without a session is refused;
    // neither is applied.
    let stale_cas = w(&c, leader, "POST", "/kv/k/cas", &cas("b", "c"), (b_id, 1));
    assert_eq!(stale_cas.status, 409, "{stale_cas:?}");
    assert_eq!(stale_cas.json()["last_seq"], 2, "{stale_cas:?}");
    let unknown = w(&c, leader, "PUT", "/kv/k", "z", (7, 2));
    assert_eq!(unknown.status, 410, "{unknown:?}");
    assert!(
        unknown.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown session")),
        "{unknown:?}"
    );
    let (gone, _) = c.send_retrying(leader, "GET", "/kv/k", b"");
    assert_eq!(gone.status, 404, "{gone:?}");
    // Half a session, or seq 0, is a bad request.
    let url = format!("http://{}/kv/k", c.http[&leader]);
    let a = c
        .request_with("PUT", &url, b"x", Some((1, 0)))
        .expect("reachable");
    assert_eq!(a.status, 400, "{a:?}");
    let metrics = c
        .request("GET", &format!("http://{}/metrics", c.http[&leader]), b"")
        .expect("reachable");
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    for line in [
        "cds_kv_sessions 2",
        "cds_kv_session_replays_total 3",
        "cds_kv_session_stale_total 1",
        "cds_kv_session_unknown_total 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no {line:?} in
{text}"
        );
    }

    // Every node snapshots (and drops its whole log behind it) once it has
    // applied everything, then all crash and restart: the sessions come
    // back from the snapshots.
    let commit = c.status(leader).and_then(|s| s["commit"].as_u64());
    wait_until(&c, "every node applies what the leader committed", || {
        [1, 2, 3]
            .iter()
            .all(|&id| c.status(id).and_then(|s| s["applied"].as_u64()) >= commit)
    });
    let del_index = del.json()["index"].as_u64().expect("an index");
    for id in [1, 2, 3] {
        let (a, _) = c.send_retrying(id, "POST", "/admin/snapshot", b"");
        assert_eq!(a.status, 200, "{a:?}");
        let snap = a.json()["snapshot_index"].as_u64().expect("an index");
        assert!(
            snap >= del_index,
            "node {id}: snapshot {snap}, delete at {del_index}"
        );
    }
    for id in [1, 2, 3] {
        c.kill9(id);
    }
    for id in [1, 2, 3] {
        c.start(id);
    }
    let leader = c.wait_leader();
    let st = c.status(leader).expect("status");
    assert!(
        st["first_index"].as_u64().is_some_and(|f| f > del_index),
        "the log still holds the delete: {st}"
    );
    let retry = w(&c, leader, "DELETE", "/kv/k", "", (b_id, 2));
    assert_eq!(
        (&retry.json()["existed"], &retry.json()["replayed"]),
        (&json!(true), &json!(true)),
        "{retry:?}"
    );
    let retry = w(&c, leader, "PUT", "/kv/k", "a", (a_id, 1));
    assert_eq!(retry.json()["replayed"], true, "{retry:?}");
    let (gone, _) = c.send_retrying(leader, "GET", "/kv/k", b"");
    assert_eq!(gone.status, 404, "nothing was applied again: {gone:?}");
    let next = w(&c, leader, "PUT", "/kv/k", "d", (a_id, 2));
    assert!(next.json().get("replayed").is_none(), "{next:?}");
    assert_eq!(get_ok(&c, leader, "/kv/k"), b"d");
}

#[test]
fn leadership_moves_on_request_and_a_partitioned_leader_is_replaced() {
    let c = Cluster::new(3);
    let first = c.wait_leader();
    let target = *c.http.keys().find(|&&i| i != first).expect("a follower");
    let other = *c
        .http
        .keys()
        .find(|&&i| i != first && i != target)
        .expect("a third node");

    // Transfer: refused without a target, redirected from a follower,
    // started on the leader.
    let bad = c
        .request(
            "POST",
            &format!("http://{}/admin/transfer", c.http[&first]),
            b"",
        )
        .expect("reachable");
    assert_eq!(bad.status, 400, "{bad:?}");
    let path = format!("/admin/transfer?to={target}");
    let via_follower = c
        .request("POST", &format!("http://{}{path}", c.http[&other]), b"")
        .expect("reachable");
    assert_eq!(via_follower.status, 307, "{via_follower:?}");
    let (a, _) = c.send_retrying(first, "POST", &path, b"");
    assert_eq!(a.status, 200, "{a:?}");
    wait_until(&c, "the transfer target leads", || {
        c.status(target).is_some_and(|s| s["role"] == "leader")
    });
    assert_eq!(c.wait_leader(), target);

    // Partition the leader from both others: they elect one of themselves
    // and take writes the old leader does not see.
    let rest = [first, other];
    filter(&c, target, &rest);
    for &i in &rest {
        filter(&c, i, &[target]);
    }
    let new_leader = c.wait_leader_among(&rest);
    assert_ne!(new_leader, target);
    // `/status` shows the filter while it is set (and `top` reads it).
    let st = c.status(target).expect("the cut node answers");
    let mut want = rest.to_vec();
    want.sort_unstable();
    assert_eq!(st["filter"]["drop_to"], json!(want), "{st}");
    assert_eq!(st["filter"]["drop_from"], json!(want), "{st}");
    let (a, _) = c.send_retrying(new_leader, "PUT", "/kv/during", b"split");
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(stale(&c, target, "during"), None);
    // The isolated node cannot serve a linearizable read.
    let cut = c
        .request("GET", &format!("http://{}/kv/during", c.http[&target]), b"")
        .expect("reachable");
    assert!(cut.status == 503 || cut.status == 307, "{cut:?}");

    // Heal: the old leader catches up.
    for id in [target, first, other] {
        filter(&c, id, &[]);
    }
    let st = c.status(target).expect("the healed node answers");
    assert!(st.get("filter").is_none(), "no filter, no field: {st}");
    wait_until(&c, "the healed node catches up", || {
        stale(&c, target, "during").as_deref() == Some(b"split".as_slice())
    });
    c.wait_leader();
}

#[test]
fn a_node_far_behind_catches_up_from_a_snapshot_and_restarts_from_its_own() {
    let mut c = Cluster::with(3, |cfg| {
        cfg["snapshot_every"] = json!(10);
        cfg["log_margin"] = json!(2);
    });
    let leader = c.wait_leader();
    let behind = *c.http.keys().find(|&&i| i != leader).expect("a follower");
    c.kill9(behind);
    for i in 0..40 {
        let (a, _) = c.send_retrying(
            leader,
            "PUT",
            &format!("/kv/k{i}"),
            format!("v{i}").as_bytes(),
        );
        assert_eq!(a.status, 200, "{a:?}");
    }
    let (a, _) = c.send_retrying(leader, "DELETE", "/kv/k0", b"");
    assert_eq!(a.status, 200, "{a:?}");
    let st = c.status(leader).expect("leader status");
    assert!(
        st["snapshot_index"].as_u64().is_some_and(|i| i >= 10),
        "{st}"
    );
    assert!(st["first_index"].as_u64().is_some_and(|i| i > 5), "{st}");

    c.start(behind);
    wait_until(&c, "the node catches up", || {
        stale(&c, behind, "k39").as_deref() == Some(b"v39".as_slice())
    });
    let metrics = c
        .request("GET", &format!("http://{}/metrics", c.http[&behind]), b"")
        .expect("reachable");
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        text.lines()
            .any(|l| l.starts_with("cds_snapshots_installed_total ") && !l.ends_with(" 0")),
        "expected a snapshot install:\n{text}"
    );
    for i in 1..40 {
        assert_eq!(
            stale(&c, behind, &format!("k{i}")),
            Some(format!("v{i}").into_bytes())
        );
    }
    assert_eq!(stale(&c, behind, "k0"), None);

    // Restarted again, it rebuilds the map from its own snapshot and log.
    c.kill9(behind);
    c.start(behind);
    wait_until(&c, "the node serves again after a restart", || {
        stale(&c, behind, "k39").as_deref() == Some(b"v39".as_slice())
    });
    for i in 1..40 {
        assert_eq!(
            stale(&c, behind, &format!("k{i}")),
            Some(format!("v{i}").into_bytes())
        );
    }
    assert_eq!(stale(&c, behind, "k0"), None);
}

#[test]
fn a_node_added_later_joins_through_admin_requests_and_can_be_removed() {
    let mut c = Cluster::new(3);
    let leader = c.wait_leader();
    let (a, _) = c.send_retrying(leader, "PUT", "/kv/before", b"b");
    assert_eq!(a.status, 200, "{a:?}");

    let (raft, http) = c.add_node_config(4);
    c.start(4);
    let peer = json!({"id": 4, "raft": raft.to_string(), "http": http.to_string()}).to_string();
    for id in [1, 2, 3] {
        let a = c
            .request(
                "POST",
                &format!("http://{}/admin/peer", c.http[&id]),
                peer.as_bytes(),
            )
            .expect("reachable");
        assert_eq!(a.status, 200, "{a:?}");
    }
    let change = json!({"voters": [1, 2, 3, 4]}).to_string();
    let (a, _) = c.send_retrying(1, "POST", "/admin/change", change.as_bytes());
    assert_eq!(a.status, 200, "{a:?}");
    wait_until(&c, "node 4 becomes a voter and catches up", || {
        stale(&c, 4, "before").as_deref() == Some(b"b".as_slice())
            && c.status(4)
                .is_some_and(|s| s["voters"] == json!([1, 2, 3, 4]))
    });
    let leader = c.wait_leader();
    let (a, _) = c.send_retrying(4, "PUT", "/kv/after", b"a");
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(get_ok(&c, 4, "/kv/after"), b"a");

    // Remove a follower other than node 4.
    let gone = *[1, 2, 3]
        .iter()
        .find(|&&i| i != leader)
        .expect("a follower");
    let rest: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|&i| i != gone).collect();
    let change = json!({ "voters": rest }).to_string();
    let (a, _) = c.send_retrying(4, "POST", "/admin/change", change.as_bytes());
    assert_eq!(a.status, 200, "{a:?}");
    wait_until(&c, "the removal is applied", || {
        c.status(leader).is_some_and(|s| s["voters"] == json!(rest))
    });
    c.kill9(gone);
    let (a, _) = c.send_retrying(4, "PUT", "/kv/last", b"l");
    assert_eq!(a.status, 200, "{a:?}");
}

#[test]
fn a_single_node_answers_errors_as_json() {
    let c = Cluster::new(1);
    assert_eq!(c.wait_leader(), 1);
    let url = |path: &str| format!("http://{}{path}", c.http[&1]);
    let is_json_error = |a: &Answer| a.json()["error"].is_string();

    let big = vec![b'x'; (1 << 20) + 1];
    let a = c.request("PUT", &url("/kv/big"), &big).expect("reachable");
    assert_eq!(a.status, 413, "{a:?}");
    assert!(is_json_error(&a), "{a:?}");
    let a = c.request("GET", &url("/nope"), b"").expect("reachable");
    assert_eq!(a.status, 404, "{a:?}");
    assert!(is_json_error(&a), "{a:?}");
    let a = c
        .request("POST", &url("/admin/snapshot"), b"")
        .expect("reachable");
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.json()["snapshot_index"].as_u64().is_some(), "{a:?}");
    let a = c
        .request("POST", &url("/kv/k/cas"), b"{\"value\": 3}")
        .expect("reachable");
    assert_eq!(a.status, 400, "{a:?}");
    assert!(is_json_error(&a), "{a:?}");
    let a = c
        .request("POST", &url("/admin/filter"), b"not json")
        .expect("reachable");
    assert_eq!(a.status, 400, "{a:?}");
    // A misspelt field is refused, not ignored (which would clear the
    // filter); delays are set in milliseconds, within a limit.
    let a = c
        .request(
            "POST",
            &url("/admin/filter"),
            b"{\"delay_to\": {\"2\": 50}}",
        )
        .expect("reachable");
    assert_eq!(a.status, 400, "{a:?}");
    assert!(
        a.json()["error"]
            .as_str()
            .unwrap()
            .contains("unknown field"),
        "{a:?}"
    );
    let a = c
        .request(
            "POST",
            &url("/admin/filter"),
            b"{\"delay_to_ms\": {\"2\": 50}}",
        )
        .expect("reachable");
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["delay_to_ms"]["2"], 50, "{a:?}");
    let a = c
        .request(
            "POST",
            &url("/admin/filter"),
            b"{\"delay_to_ms\": {\"2\": 600000}}",
        )
        .expect("reachable");
    assert_eq!(a.status, 400, "{a:?}");
    let a = c
        .request("POST", &url("/admin/filter"), b"{}")
        .expect("reachable");
    assert_eq!(a.status, 200, "{a:?}");

    // A value at the limit is accepted, and bytes come back unchanged.
    let value: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
    let (a, _) = c.send_retrying(1, "PUT", "/kv/bin%2Fary", &value);
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(get_ok(&c, 1, "/kv/bin%2Fary"), value);

    let m = c.request("GET", &url("/metrics"), b"").expect("reachable");
    let text = String::from_utf8_lossy(&m.body).into_owned();
    assert!(text.contains("cds_role{role=\"leader\"} 1"), "{text}");
    assert!(text.contains("cds_proposals_total 1"), "{text}");
    assert!(text.contains("cds_propose_seconds_count 1"), "{text}");
    assert!(
        text.contains("cds_log_sync_seconds_bucket{le=\"+Inf\"}"),
        "{text}"
    );
    assert!(text.contains("cds_peer_match_index{peer=\"1\"}"), "{text}");
    // The queues' byte bounds: drops and levels.
    for name in [
        "cds_transport_dropped_queue_bytes_total 0",
        "cds_transport_queued_bytes ",
        "cds_transport_inbound_bytes ",
        "cds_inbox_bytes ",
        "cds_proposal_queue_bytes ",
    ] {
        assert!(text.contains(name), "{name}: {text}");
    }

    // axum's own answers are JSON too: a path or query that is not
    // UTF-8, a method a route does not take.
    for path in [
        "/kv/%FF%FE",
        "/kv/k?consistency=%FF",
        "/admin/transfer?to=%FF",
    ] {
        let a = c
            .request(
                if path.starts_with("/admin") {
                    "POST"
                } else {
                    "GET"
                },
                &url(path),
                b"",
            )
            .expect("reachable");
        assert_eq!(a.status, 400, "{path}: {a:?}");
        assert!(is_json_error(&a), "{path}: {a:?}");
    }
    let a = c
        .request("DELETE", &url("/status"), b"")
        .expect("reachable");
    assert_eq!(a.status, 405, "{a:?}");
    assert!(is_json_error(&a), "{a:?}");
    let a = c.request("PUT", &url("/metrics"), b"x").expect("reachable");
    assert_eq!(a.status, 405, "{a:?}");
    assert!(is_json_error(&a), "{a:?}");
}

/// Writes a node's config owner-only, as a node requires of a file that
/// holds the token.
fn write_config(data: &std::path::Path, cfg: &Value) {
    use std::os::unix::fs::PermissionsExt;
    let path = data.join("config.json");
    std::fs::write(&path, cfg.to_string()).expect("write config");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

/// What a hand-written HTTP exchange got back.
#[derive(Debug)]
struct Raw {
    /// The answer's status, 0 if none came.
    status: u16,
    /// Everything read, head and body.
    text: String,
    /// Whether the node closed the connection (EOF or reset) in time.
    closed: bool,
}

impl Raw {
    /// The JSON body of the answer (after the blank line).
    fn json(&self) -> Value {
        let body = self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body).unwrap_or(Value::Null)
    }

    fn is_json_error(&self) -> bool {
        self.json()["error"].is_string()
    }
}

/// Reads from `s` until the node closes the connection or `deadline`.
fn read_until_closed(s: &mut std::net::TcpStream, deadline: Instant) -> Raw {
    use std::io::Read;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        s.set_read_timeout(Some(left)).expect("set_read_timeout");
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break true,
        }
    };
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Raw {
        status,
        text,
        closed,
    }
}

/// Sends `request` as is on a new connection and reads the answer until
/// the node closes (requests say `Connection: close`), at most 5 s.
fn raw(addr: SocketAddr, request: &str) -> Raw {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.write_all(request.as_bytes()).expect("send");
    read_until_closed(&mut s, Instant::now() + Duration::from_secs(5))
}

/// A request with the given head lines (each ending in CRLF) and body.
fn req(method: &str, path: &str, lines: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\n{lines}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn the_admin_api_wants_the_admin_token_a_local_host_and_json() {
    let c = Cluster::new(1);
    assert_eq!(c.wait_leader(), 1);
    let addr = c.http[&1];
    let port = addr.port();
    let host = format!("Host: 127.0.0.1:{port}\r\n");
    let auth = format!("Authorization: Bearer {ADMIN_TOKEN}\r\n");
    let json = "Content-Type: application/json\r\n";

    // The admin token, and only it, opens /admin/*.
    for lines in [
        host.clone(),
        format!("{host}Authorization: Bearer {PEER_TOKEN}\r\n"),
        format!(
            "{host}Authorization: Bearer {}\r\n",
            "x".repeat(ADMIN_TOKEN.len())
        ),
        format!("{host}Authorization: Basic {ADMIN_TOKEN}\r\n"),
        format!("{host}Authorization: Bearer {ADMIN_TOKEN}x\r\n"),
    ] {
        let a = raw(addr, &req("POST", "/admin/snapshot", &lines, ""));
        assert_eq!(a.status, 401, "{lines:?}: {a:?}");
        assert!(a.is_json_error(), "{a:?}");
    }
    let a = raw(
        addr,
        &req("POST", "/admin/snapshot", &format!("{host}{auth}"), ""),
    );
    assert_eq!(a.status, 200, "{a:?}");

    // A body must say it is JSON (a form's text/plain is refused), on the
    // admin API and on CAS, the other JSON request.
    for ctype in ["Content-Type: text/plain\r\n", ""] {
        let a = raw(
            addr,
            &req(
                "POST",
                "/admin/filter",
                &format!("{host}{auth}{ctype}"),
                "{}",
            ),
        );
        assert_eq!(a.status, 415, "{ctype:?}: {a:?}");
        assert!(a.is_json_error(), "{a:?}");
    }
    let a = raw(
        addr,
        &req(
            "POST",
            "/kv/k/cas",
            &format!("{host}Content-Type: text/plain\r\n"),
            r#"{"expect": null, "value": "v"}"#,
        ),
    );
    assert_eq!(a.status, 415, "{a:?}");
    let a = raw(
        addr,
        &req(
            "POST",
            "/admin/filter",
            &format!("{host}{auth}Content-Type: application/json; charset=utf-8\r\n"),
            "{}",
        ),
    );
    assert_eq!(a.status, 200, "{a:?}");

    // A Host that is not this node's address is refused on every route (a
    // page that rebinds its name to 127.0.0.1 must not read /kv or /status).
    for (method, path, lines, body) in [
        ("POST", "/admin/filter", format!("{auth}{json}"), "{}"),
        ("GET", "/kv/k", String::new(), ""),
        ("GET", "/status", String::new(), ""),
    ] {
        for bad in [
            format!("Host: attacker.example:{port}\r\n"),
            format!("Host: localhost:{}\r\n", port + 1),
            String::new(),
        ] {
            let a = raw(addr, &req(method, path, &format!("{bad}{lines}"), body));
            assert!(
                a.status == 421 || a.status == 400,
                "{method} {path} {bad:?}: {a:?}"
            );
            assert!(a.is_json_error(), "{a:?}");
        }
    }
    for good in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("LocalHost:{port}"),
        format!("[::1]:{port}"),
    ] {
        let a = raw(
            addr,
            &req("GET", "/status", &format!("Host: {good}\r\n"), ""),
        );
        assert_eq!(a.status, 200, "{good}: {a:?}");
    }

    // Open reads reveal no secret.
    for path in ["/status", "/metrics"] {
        let a = raw(addr, &req("GET", path, &host, ""));
        assert_eq!(a.status, 200, "{a:?}");
        assert!(
            !a.text.contains(ADMIN_TOKEN) && !a.text.contains(PEER_TOKEN),
            "{path} shows a token: {a:?}"
        );
    }

    // Membership and fault requests are logged with who asked and what.
    let change = r#"{"voters": [1]}"#;
    raw(
        addr,
        &req(
            "POST",
            "/admin/change",
            &format!("{host}{auth}{json}"),
            change,
        ),
    );
    raw(
        addr,
        &req("POST", "/admin/learner?add=9", &format!("{host}{auth}"), ""),
    );
    raw(
        addr,
        &req("POST", "/admin/transfer?to=1", &format!("{host}{auth}"), ""),
    );
    let log = c.log(1);
    for what in [
        "/admin/filter",
        "/admin/change",
        "/admin/learner",
        "/admin/transfer",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(what) && l.contains("from 127.0.0.1:")),
            "no log line for {what}:\n{log}"
        );
    }
    assert!(log.contains("voters [1]"), "{log}");
    assert!(!log.contains(ADMIN_TOKEN), "the log shows the admin token");
}

#[test]
fn admin_peer_takes_only_the_addresses_the_nodes_config_lists() {
    let mut c = Cluster::new(1);
    assert_eq!(c.wait_leader(), 1);
    let url = format!("http://{}/admin/peer", c.http[&1]);
    let elsewhere = free_addrs(2);
    let body = |raft: SocketAddr, http: SocketAddr| {
        json!({"id": 2, "raft": raft.to_string(), "http": http.to_string()}).to_string()
    };
    // Not in the node's config: refused.
    let a = c
        .request("POST", &url, body(elsewhere[0], elsewhere[1]).as_bytes())
        .expect("reachable");
    assert_eq!(a.status, 409, "{a:?}");
    assert!(
        a.json()["error"].as_str().unwrap().contains("config"),
        "{a:?}"
    );
    // Once its config lists node 2 (as `kv add-node` writes it), exactly
    // those addresses are accepted, and no other.
    let (raft, http) = c.add_node_config(2);
    let a = c
        .request("POST", &url, body(raft, http).as_bytes())
        .expect("reachable");
    assert_eq!(a.status, 200, "{a:?}");
    let a = c
        .request("POST", &url, body(raft, elsewhere[1]).as_bytes())
        .expect("reachable");
    assert_eq!(a.status, 409, "{a:?}");
    // Nor can the node's own address be moved.
    let me = json!({"id": 1, "raft": elsewhere[0].to_string(), "http": elsewhere[1].to_string()});
    let a = c
        .request("POST", &url, me.to_string().as_bytes())
        .expect("reachable");
    assert_eq!(a.status, 409, "{a:?}");
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn partial_headers_and_stalled_bodies_are_cut_off_and_their_memory_returned() {
    use std::io::Write;
    let c = Cluster::new(1);
    assert_eq!(c.wait_leader(), 1);
    let addr = c.http[&1];
    let pid = c.children[&1].id();
    let host = format!("Host: 127.0.0.1:{}\r\n", addr.port());
    let before = rss_kib(pid);
    let started = Instant::now();

    // Headers that never end.
    let mut partial = std::net::TcpStream::connect(addr).expect("connect");
    partial
        .write_all(format!("GET /status HTTP/1.1\r\n{host}").as_bytes())
        .expect("send");
    // Bodies that stall: 1 MiB announced, half of it sent, 200 times.
    let head = format!(
        "PUT /kv/stalled HTTP/1.1\r\n{host}Content-Length: {}\r\n\r\n",
        1 << 20
    );
    let half = vec![b'x'; 1 << 19];
    let mut stalled = Vec::new();
    for _ in 0..200 {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        // A connection the node refused (past a limit) may be closed
        // before the whole half is in: that is fine.
        let _ = s
            .write_all(head.as_bytes())
            .and_then(|()| s.write_all(&half));
        stalled.push(s);
    }
    let during = rss_kib(pid);

    // Both are cut off within their bounds (10 s), with room for a loaded
    // machine, and not before the bound (a client gets its time).
    let bound = Instant::now() + Duration::from_secs(16);
    let a = read_until_closed(&mut partial, bound);
    assert!(
        a.closed,
        "partial headers still open after {:?}: {a:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    for s in &mut stalled {
        let b = read_until_closed(s, bound);
        assert!(
            b.closed,
            "a stalled body still open after {:?}: {b:?}",
            started.elapsed()
        );
        assert!(b.status == 0 || b.status == 408 || b.status == 503, "{b:?}");
    }
    drop(stalled);
    // The node serves, and gave back what the bodies held.
    let ok = raw(addr, &req("GET", "/status", &host, ""));
    assert_eq!(ok.status, 200, "{ok:?}");
    sleep(Duration::from_millis(500));
    let after = rss_kib(pid);
    eprintln!(
        "node RSS: {before} KiB before, {during} KiB with 200 stalled bodies, {after} KiB after"
    );
    assert!(
        after < before + 32 * 1024,
        "RSS {before} KiB before, {during} KiB during, {after} KiB after the stalled bodies"
    );
}

#[test]
fn past_the_connection_cap_a_new_connection_gets_503_and_closing_frees_the_slots() {
    use std::io::Write;
    const CAP: usize = 4;
    let c = Cluster::with(1, |cfg| cfg["http_max_connections"] = json!(CAP));
    let addr = c.http[&1];
    let host = format!("Host: 127.0.0.1:{}\r\n", addr.port());
    let status = req("GET", "/status", &host, "");
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(addr).is_err() || raw(addr, &status).status != 200 {
        assert!(
            Instant::now() < deadline,
            "the node never answered\n{}",
            c.logs()
        );
        sleep(POLL);
    }
    // Let the node finish closing those probes (each held a slot).
    sleep(Duration::from_millis(300));
    // Hold connections open (a keep-alive request answered on each) until
    // one is refused: at most CAP are served at once.
    let keep = format!("GET /status HTTP/1.1\r\n{host}\r\n");
    let mut held = Vec::new();
    let refused = loop {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        let _ = s.write_all(keep.as_bytes());
        let mut buf = [0u8; 12];
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        use std::io::Read;
        let n = s.read(&mut buf).unwrap_or(0);
        let head = String::from_utf8_lossy(&buf[..n]).into_owned();
        if head.contains(" 503") {
            let rest = read_until_closed(&mut s, Instant::now() + Duration::from_secs(5));
            break (held.len(), head, rest);
        }
        assert!(head.contains(" 200"), "connection {}: {head:?}", held.len());
        held.push(s);
        assert!(
            held.len() <= CAP,
            "{} connections served at once, cap {CAP}",
            held.len()
        );
    };
    let (served, head, rest) = refused;
    assert_eq!(served, CAP, "refused after {served} connections");
    assert!(
        rest.closed,
        "the refused connection is closed: {head}{}",
        rest.text
    );
    assert!(
        rest.text.contains("\"error\""),
        "a JSON error: {head}{}",
        rest.text
    );
    // Closing them frees the slots.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let a = raw(addr, &status);
        if a.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still refused after closing: {a:?}"
        );
        sleep(POLL);
    }
}

/// A node with `"https": true` serves its API over HTTPS with its TLS
/// certificate: a client that trusts the cluster CA writes and reads; a
/// plain-HTTP request gets no answer.
#[test]
fn https_serves_clients_that_trust_the_ca() {
    let certs = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_cdsctl"))
        .args(["cert", "--nodes", "1", "--dir"])
        .arg(certs.path().join("tls"))
        .output()
        .expect("cdsctl cert");
    assert!(out.status.success(), "{out:?}");
    let tls = certs.path().join("tls");
    let c = Cluster::with(1, |cfg| {
        cfg["tls"] = json!({
            "ca": tls.join("ca.pem"),
            "cert": tls.join("node-1.pem"),
            "key": tls.join("node-1-key.pem"),
        });
        cfg["https"] = json!(true);
    });
    let agent = common::https_agent(&tls.join("ca.pem"));
    let base = format!("https://{}", c.http[&1]);
    // Wait for the single node to lead, over HTTPS.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = agent
            .get(&format!("{base}/status"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .and_then(|t| serde_json::from_str::<Value>(&t).ok());
        if st.as_ref().is_some_and(|s| s["role"] == "leader") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no leader over HTTPS:\n{}",
            c.logs()
        );
        sleep(Duration::from_millis(100));
    }
    agent
        .put(&format!("{base}/kv/k"))
        .send("over tls")
        .expect("PUT over HTTPS");
    let got = agent
        .get(&format!("{base}/kv/k"))
        .call()
        .expect("GET over HTTPS")
        .body_mut()
        .read_to_string()
        .expect("body");
    assert_eq!(got, "over tls");
    // Plain HTTP to the HTTPS port: no HTTP answer.
    let plain = c.request("GET", &format!("http://{}/status", c.http[&1]), b"");
    assert!(plain.is_none(), "plain HTTP was answered");
}
