//! `cdsctl kv` against the real binary: argument and cluster-directory
//! handling (no node needed), and a 3-node cluster of real processes taken
//! through a leader crash, a restart and a partition.
//!
//! Every cluster lives in a temp directory behind a guard that runs
//! `kv down` and SIGKILLs any pid left in cluster.json when the test ends,
//! passed or failed, so a failing test never leaks node processes onto the
//! (shared) machine.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod common;
use common::{fails, ok, text, Guard};

/// A cluster.json for `n` nodes that are not running, without going
/// through `up` (which needs working nodes).
fn fake_cluster(dir: &Path, n: u64) {
    let nodes: Vec<serde_json::Value> = (1..=n)
        .map(|id| {
            let data_dir = dir.join(format!("n{id}"));
            std::fs::create_dir_all(&data_dir).unwrap();
            serde_json::json!({
                "id": id, "pid": null,
                "raft_addr": format!("127.0.0.1:{}", 1 + id),
                "http_addr": format!("127.0.0.1:{}", 11 + id),
                "data_dir": data_dir,
            })
        })
        .collect();
    let c = serde_json::json!({"cluster_id": 7, "group": 1, "token": "0123456789abcdef",
        "admin_token": "fedcba9876543210", "nodes": nodes});
    let path = dir.join("cluster.json");
    std::fs::write(&path, c.to_string()).unwrap();
    // It holds the token: commands refuse it while others can read it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn set_pid(dir: &Path, id: u64, pid: u32) {
    let path = dir.join("cluster.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for node in v["nodes"].as_array_mut().unwrap() {
        if node["id"] == id {
            node["pid"] = pid.into();
        }
    }
    std::fs::write(&path, v.to_string()).unwrap();
}

#[test]
fn errors_without_a_cluster_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("none");
    let err = fails(&dir, &["status"]);
    assert!(
        err.contains("no cluster in") && err.contains("kv up"),
        "{err}"
    );
    let err = fails(&dir, &["up", "--nodes", "0"]);
    assert!(err.contains("between 1 and 9"), "{err}");
    let err = fails(&dir, &["get", "k", "--consistency", "bogus"]);
    assert!(err.contains("bogus"), "{err}");
    let err = fails(&dir, &["bench", "--duration", "5h"]);
    assert!(err.contains("unknown unit"), "{err}");

    // A non-empty directory without cluster.json is not written into.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("precious.txt"), "x").unwrap();
    let err = fails(&other, &["up"]);
    assert!(err.contains("not empty"), "{err}");
}

#[test]
fn cluster_directory_handling() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    std::fs::create_dir_all(&dir).unwrap();
    fake_cluster(&dir, 3);
    let _guard = Guard { dir: dir.clone() };

    let err = fails(&dir, &["kill", "9"]);
    assert!(
        err.contains("unknown node id 9") && err.contains("1, 2, 3"),
        "{err}"
    );
    let err = fails(&dir, &["kill", "1"]);
    assert!(err.contains("node 1 is not running"), "{err}");
    let err = fails(&dir, &["partition", "1,2/2,3"]);
    assert!(err.contains("more than one group"), "{err}");
    let err = fails(&dir, &["partition", "1,2,3"]);
    assert!(err.contains("one group"), "{err}");
    let err = fails(&dir, &["partition", "1/2"]);
    assert!(err.contains("node 3 is in no group"), "{err}");
    let err = fails(&dir, &["partition", "1/9,2,3"]);
    assert!(err.contains("unknown node id 9"), "{err}");
    let err = fails(&dir, &["get", "k"]);
    assert!(err.contains("no node of the cluster is running"), "{err}");
    let err = fails(&dir, &["up"]);
    assert!(err.contains("stopped cluster"), "{err}");
    let out = ok(&dir, &["status"]);
    assert_eq!(
        out.lines().filter(|l| l.contains(" down ")).count(),
        3,
        "{out}"
    );

    // A stand-in process whose command line names node 1's config counts as
    // node 1: `up` refuses the directory, pause/resume/kill act on it.
    let config = dir.join("n1").join("config.json");
    // `tail -f` runs until killed and, unlike a shell running `sleep`,
    // leaves no child behind when it is.
    let mut stand_in = Command::new("tail")
        .arg("-f")
        .arg("/dev/null")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Until it has exec'd, its command line is still this test's.
    let cmdline = format!("/proc/{}/cmdline", stand_in.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read(&cmdline)
        .map(|c| String::from_utf8_lossy(&c).contains("config.json"))
        .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "tail did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    set_pid(&dir, 1, stand_in.id());
    let err = fails(&dir, &["up"]);
    assert!(
        err.contains("already holds a running cluster") && err.contains("nodes 1 running"),
        "{err}"
    );
    ok(&dir, &["pause", "1"]);
    let out = ok(&dir, &["status"]);
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("1 ") && l.contains(" paused ")),
        "{out}"
    );
    ok(&dir, &["resume", "1"]);
    let err = fails(&dir, &["restart", "1"]);
    assert!(err.contains("node 1 is up"), "{err}");
    ok(&dir, &["kill", "1"]);
    let _ = stand_in.wait();
    let out = ok(&dir, &["status"]);
    assert_eq!(
        out.lines().filter(|l| l.contains(" down ")).count(),
        3,
        "{out}"
    );

    // A recycled pid (here: this test process) is not mistaken for a node.
    set_pid(&dir, 2, std::process::id());
    let err = fails(&dir, &["kill", "2"]);
    assert!(err.contains("node 2 is not running"), "{err}");
}

/// (id, state, role, leader) of every row of `kv status`.
fn rows(dir: &Path) -> Vec<(u64, String, String, String)> {
    ok(dir, &["status"])
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let id = cols.first()?.parse().ok()?;
            Some((
                id,
                cols.get(2)?.to_string(),
                cols.get(5)?.to_string(),
                cols.get(7)?.to_string(),
            ))
        })
        .collect()
}

/// Polls `kv status` until a leader other than `not` is reported by a node
/// in `among`, for at most 20 s.
fn wait_leader(dir: &Path, among: &[u64], not: Option<u64>) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = rows(dir);
        let leaders: Vec<u64> = r
            .iter()
            .filter(|(id, st, role, _)| {
                st == "up" && role == "leader" && among.contains(id) && Some(*id) != not
            })
            .map(|(id, ..)| *id)
            .collect();
        if let [one] = leaders[..] {
            return one;
        }
        assert!(
            Instant::now() < deadline,
            "no new leader among {among:?}: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn three_nodes_survive_a_crash_a_restart_and_a_partition() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let _guard = Guard { dir: dir.clone() };

    let out = ok(&dir, &["up", "--nodes", "3", "--timeout", "30s"]);
    assert!(out.contains("cluster of 3 up"), "{out}");
    // Config files exist per node with the spec's fields.
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("n1/config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["voters"], serde_json::json!([1, 2, 3]));
    // Every file holding the token is owner-only, in owner-only directories.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700, "the cluster directory");
        assert_eq!(mode(&dir.join("cluster.json")), 0o600, "cluster.json");
        for n in 1..=3 {
            let d = dir.join(format!("n{n}"));
            assert_eq!(mode(&d), 0o700, "{}", d.display());
            assert_eq!(mode(&d.join("config.json")), 0o600, "n{n}/config.json");
        }
        assert_eq!(cfg["token"].as_str().unwrap().len(), 32, "a 128-bit token");
        // The admin token is another 128-bit secret, in cluster.json (for
        // the kv commands) and every node's config.
        let admin = cfg["admin_token"].as_str().unwrap();
        assert_eq!(admin.len(), 32, "a 128-bit admin token");
        assert_ne!(admin, cfg["token"].as_str().unwrap());
        let table: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("cluster.json")).unwrap())
                .unwrap();
        assert_eq!(table["admin_token"].as_str(), Some(admin));
    }
    let err = fails(&dir, &["up"]);
    assert!(err.contains("already holds a running cluster"), "{err}");

    ok(&dir, &["put", "a", "1"]);
    assert_eq!(ok(&dir, &["get", "a"]).trim(), "1");
    let err = fails(&dir, &["get", "missing"]);
    assert!(err.contains("not found"), "{err}");
    // Compare-and-set: swaps on a match, fails (and says why) otherwise.
    ok(&dir, &["put", "swap", "1"]);
    let out = ok(&dir, &["cas", "swap", "2", "--expect", "1"]);
    assert!(out.contains("\"ok\":true"), "{out}");
    let err = fails(&dir, &["cas", "swap", "3", "--expect", "1"]);
    assert!(err.contains("does not hold \"1\""), "{err}");
    let err = fails(&dir, &["cas", "swap", "3", "--absent"]);
    assert!(err.contains("the key exists"), "{err}");
    ok(&dir, &["cas", "fresh", "x", "--absent"]);
    assert_eq!(ok(&dir, &["get", "swap"]).trim(), "2");
    assert_eq!(ok(&dir, &["get", "fresh"]).trim(), "x");

    // Crash the leader: the other two elect one and still serve.
    let all = [1, 2, 3];
    let first = wait_leader(&dir, &all, None);
    ok(&dir, &["kill", &first.to_string()]);
    let second = wait_leader(&dir, &all, Some(first));
    assert_eq!(ok(&dir, &["get", "a", "--timeout", "15s"]).trim(), "1");
    ok(&dir, &["put", "b", "2", "--timeout", "15s"]);

    // Bring it back.
    ok(&dir, &["restart", &first.to_string()]);
    let r = rows(&dir);
    assert!(
        r.iter().all(|(_, st, role, _)| st == "up" && role != "no"),
        "not every node up after restart: {r:?}"
    );

    // Cut the leader off: the majority elects another and keeps serving.
    let others: Vec<u64> = all.iter().copied().filter(|id| *id != second).collect();
    let spec = format!("{second}/{},{}", others[0], others[1]);
    ok(&dir, &["partition", &spec]);
    let third = wait_leader(&dir, &others, None);
    assert_ne!(third, second);
    ok(&dir, &["put", "c", "3", "--timeout", "15s"]);
    ok(&dir, &["heal"]);
    // After healing, the old leader follows and has caught up.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = rows(&dir);
        let leaders: Vec<&String> = r.iter().map(|row| &row.3).collect();
        if leaders.iter().all(|l| **l != "-" && *l == leaders[0]) {
            break;
        }
        assert!(Instant::now() < deadline, "no agreement after heal: {r:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(ok(&dir, &["get", "c", "--timeout", "15s"]).trim(), "3");
    ok(&dir, &["del", "a"]);
    assert!(fails(&dir, &["get", "a"]).contains("not found"));

    let out = ok(&dir, &["down"]);
    assert_eq!(out.lines().count(), 3, "{out}");
    let r = rows(&dir);
    assert!(r.iter().all(|(_, st, ..)| st == "down"), "{r:?}");

    // Every node kept a trace; merged, they tell the cluster's story in
    // one file the simulator's checker accepts.
    let merged = tmp.path().join("merged.rtrace");
    let out = cdsctl(&[
        "trace",
        "merge",
        dir.to_str().unwrap(),
        "-o",
        merged.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = cdsctl(&["trace", "check", merged.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let summary = text(&out);
    assert!(
        summary.contains("restart") && summary.contains("role"),
        "{summary}"
    );
    let trace = std::fs::read_to_string(&merged).unwrap();
    let restarted = trace
        .lines()
        .filter(|l| l.contains("\"ev\":\"restart\""))
        .count();
    assert!(
        restarted >= 4,
        "3 starts and a restart, got {restarted}:\n{trace}"
    );
    let leaders: std::collections::BTreeSet<&str> = trace
        .lines()
        .filter(|l| l.contains("\"role\":\"leader\"") && l.contains("\"ev\":\"role\""))
        .filter_map(|l| l.split("\"node\":").nth(1)?.split(',').next())
        .collect();
    assert!(
        leaders.len() >= 2,
        "a crash and a partition elect anew: {leaders:?}"
    );

    // The same file twice, two files for one node, or a path without
    // traces is refused clearly.
    let n1 = dir.join("n1");
    let n1_trace = n1.join("trace.rtrace");
    let out = cdsctl(&[
        "trace",
        "merge",
        n1.to_str().unwrap(),
        n1_trace.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("given twice"), "{}", text(&out));
    let copy = tmp.path().join("copy.rtrace");
    std::fs::copy(&n1_trace, &copy).unwrap();
    let out = cdsctl(&[
        "trace",
        "merge",
        n1.to_str().unwrap(),
        copy.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("do not come from distinct nodes"),
        "{}",
        text(&out)
    );
    let out = cdsctl(&[
        "trace",
        "merge",
        tmp.path().join("nowhere").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("no such file"), "{}", text(&out));
}

fn cdsctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cdsctl"))
        .args(args)
        .output()
        .expect("cdsctl runs")
}

/// Node `id`'s Prometheus metrics, read from its HTTP address in
/// `cluster.json`.
fn node_metrics(dir: &Path, id: u64) -> String {
    let text = std::fs::read_to_string(dir.join("cluster.json")).unwrap();
    let c: serde_json::Value = serde_json::from_str(&text).unwrap();
    let node = c["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id)
        .unwrap_or_else(|| panic!("no node {id} in {text}"));
    let addr = node["http_addr"].as_str().unwrap();
    if c["tls"] != true {
        return ureq::get(&format!("http://{addr}/metrics"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
    }
    // A --tls cluster's nodes serve HTTPS: trust its CA, and only it.
    common::https_agent(&dir.join("tls/ca.pem"))
        .get(&format!("https://{addr}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap()
}

#[test]
fn leadership_membership_and_load() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let _guard = Guard { dir: dir.clone() };
    ok(&dir, &["up", "--nodes", "3", "--timeout", "30s"]);
    let all = [1, 2, 3];
    let leader = wait_leader(&dir, &all, None);

    // Hand leadership to a follower.
    let target = all.iter().copied().find(|id| *id != leader).unwrap();
    let out = ok(&dir, &["transfer-leader", &target.to_string()]);
    assert!(out.contains(&format!("node {target} leads")), "{out}");
    let err = fails(&dir, &["transfer-leader", "9"]);
    assert!(err.contains("unknown node id 9"), "{err}");

    // A paused follower does not stop the majority.
    let follower = all.iter().copied().find(|id| *id != target).unwrap();
    ok(&dir, &["pause", &follower.to_string()]);
    ok(&dir, &["put", "p", "1", "--timeout", "15s"]);
    ok(&dir, &["resume", &follower.to_string()]);

    // Enough writes that, once every member snapshots on demand, the log
    // no longer starts at 1: a new member can only catch up through a
    // snapshot install.
    ok(
        &dir,
        &[
            "bench",
            "--clients",
            "4",
            "--duration",
            "1s",
            "--value-size",
            "64",
        ],
    );
    for id in all {
        let out = ok(&dir, &["snapshot", &id.to_string()]);
        assert!(out.contains("snapshot_index"), "{out}");
    }

    // Grow to four voters, then remove one of the originals.
    let out = ok(&dir, &["add-node", "--timeout", "20s"]);
    assert!(out.contains("node 4 added"), "{out}");
    let metrics = node_metrics(&dir, 4);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("cds_snapshots_installed_total ") && !l.ends_with(" 0")),
        "node 4 joined without a snapshot install:\n{metrics}"
    );
    let out = ok(
        &dir,
        &["remove-node", &follower.to_string(), "--timeout", "20s"],
    );
    assert!(out.contains("removed"), "{out}");
    let r = rows(&dir);
    assert_eq!(r.len(), 3, "{r:?}");
    assert!(
        r.iter().all(|(id, st, ..)| *id != follower && st == "up"),
        "{r:?}"
    );
    assert_eq!(ok(&dir, &["get", "p", "--timeout", "15s"]).trim(), "1");
    assert_eq!(
        ok(
            &dir,
            &["get", "p", "--consistency", "stale", "--timeout", "15s"]
        )
        .trim(),
        "1"
    );

    // A snapshot on demand, on the node that joined last.
    let out = ok(&dir, &["snapshot", "4"]);
    assert!(out.contains("snapshot_index"), "{out}");

    let out = ok(
        &dir,
        &[
            "bench",
            "--clients",
            "4",
            "--duration",
            "1s",
            "--value-size",
            "64",
        ],
    );
    assert!(out.contains("puts/s") && out.contains("p999"), "{out}");
    ok(&dir, &["down"]);
}

/// Serves one HTTP answer per connection on a free loopback port, in a
/// background thread, for at most `n` connections; returns its address.
fn fake_server(n: usize, answer: String) -> String {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in l.incoming().take(n) {
            let Ok(mut s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(answer.as_bytes());
        }
    });
    addr
}

#[test]
fn a_client_refuses_a_redirect_outside_the_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    std::fs::create_dir_all(&dir).unwrap();
    fake_cluster(&dir, 1);
    // Someone else's server, which would acknowledge the put...
    let body = r#"{"index": 1, "term": 1}"#;
    let evil = fake_server(
        4,
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    // ...and a "node" at node 1's address that redirects there.
    let node = fake_server(
        4,
        format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{evil}/kv/k\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    );
    let path = dir.join("cluster.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["nodes"][0]["http_addr"] = node.clone().into();
    std::fs::write(&path, v.to_string()).unwrap();
    // A process that counts as node 1 running (its command line names the
    // node's config), so the client sends to it.
    let config = dir.join("n1/config.json");
    let mut holder = Command::new("sh")
        .arg("-c")
        .arg("sleep 30")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    set_pid(&dir, 1, holder.id());
    let out = common::kv(&dir, &["put", "k", "v", "--timeout", "2s"]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(
        !out.status.success(),
        "the put was reported done: {}",
        text(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&evil) && err.contains("redirect"), "{err}");
}

#[test]
fn restart_fails_when_another_process_answers_on_the_nodes_address() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    std::fs::create_dir_all(&dir).unwrap();
    fake_cluster(&dir, 1);
    // Something else already serves node 1's HTTP address: the restarted
    // node cannot bind it and exits, and its answers are not ours.
    let body = r#"{"id":1,"role":"leader","term":3,"leader":1,"commit":1,"applied":1,"pid":1}"#;
    let other = fake_server(
        50,
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    let path = dir.join("cluster.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["nodes"][0]["http_addr"] = other.clone().into();
    std::fs::write(&path, v.to_string()).unwrap();
    // A node config that starts (so the node lives long enough for the
    // other server's answer to arrive first), then fails to bind HTTP.
    let raft = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let raft_addr = raft.local_addr().unwrap().to_string();
    drop(raft);
    let n1 = dir.join("n1");
    let cfg = serde_json::json!({
        "id": 1, "cluster_id": 7, "token": "0123456789abcdef",
        "admin_token": "fedcba9876543210",
        "raft_addr": raft_addr, "http_addr": other, "data_dir": n1,
        "peers": {"1": {"raft": raft_addr, "http": other}}, "voters": [1],
    });
    let cfg_path = n1.join("config.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cfg_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = fails(&dir, &["restart", "1", "--timeout", "5s"]);
    assert!(
        err.contains("exited right after restart") && err.contains("another process (pid 1)"),
        "{err}"
    );
    assert!(err.contains("cannot listen for HTTP"), "{err}");
}

/// Reads cluster.json as JSON.
fn cluster_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("cluster.json")).unwrap()).unwrap()
}

/// The value of metric `name` in node `id`'s `/metrics`.
fn metric(dir: &Path, id: u64, name: &str) -> u64 {
    let m = node_metrics(dir, id);
    m.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{m}"))
}

/// `cdsctl cert` makes a private CA and node files; `kv up --tls` runs a
/// cluster whose nodes speak mutual TLS: writes replicate, a node joins,
/// and a plain-TCP client on a Raft port is refused and counted.
#[test]
fn a_tls_cluster_replicates_joins_and_refuses_plain_tcp() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();

    let certs = tmp.path().join("certs");
    let out = cdsctl(&["cert", "--dir", certs.to_str().unwrap(), "--nodes", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&certs), 0o700);
    for f in ["ca.pem", "ca-key.pem", "node-1.pem", "node-2-key.pem"] {
        assert_eq!(mode(&certs.join(f)), 0o600, "{f}");
    }

    let dir = tmp.path().join("cluster");
    let _guard = Guard { dir: dir.clone() };
    ok(&dir, &["up", "--nodes", "3", "--tls", "--timeout", "30s"]);
    assert_eq!(cluster_json(&dir)["tls"], true);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("n1/config.json")).unwrap())
            .unwrap();
    assert!(
        cfg["tls"]["key"]
            .as_str()
            .unwrap()
            .ends_with("tls/node-1-key.pem"),
        "{cfg}"
    );
    assert_eq!(cfg["https"], true, "{cfg}");
    // The CLI speaks HTTPS to them, trusting the cluster CA.
    ok(&dir, &["put", "k", "v1", "--timeout", "15s"]);
    assert_eq!(ok(&dir, &["get", "k", "--timeout", "15s"]).trim(), "v1");
    let status = ok(&dir, &["status"]);
    assert!(status.contains("leader"), "{status}");
    let bench = ok(
        &dir,
        &[
            "bench",
            "--clients",
            "2",
            "--duration",
            "1s",
            "--value-size",
            "16",
        ],
    );
    assert!(bench.contains("puts/s"), "{bench}");
    // Plain HTTP to the API gets no answer: it is HTTPS only.
    let http = cluster_json(&dir)["nodes"][0]["http_addr"]
        .as_str()
        .unwrap()
        .to_owned();
    let plain = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(3)))
        .build()
        .new_agent()
        .get(&format!("http://{http}/status"))
        .call();
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");

    // A joining node gets a certificate of the same CA, and its peers
    // accept it once they are told about it.
    let out = ok(&dir, &["add-node", "--timeout", "20s"]);
    assert!(out.contains("node 4 added"), "{out}");
    ok(&dir, &["put", "k", "v2", "--timeout", "15s"]);
    assert_eq!(ok(&dir, &["get", "k", "--timeout", "15s"]).trim(), "v2");

    // A plain-TCP client on node 1's Raft port: a handshake in clear is
    // refused at TLS and counted in /metrics.
    let raft = cluster_json(&dir)["nodes"][0]["raft_addr"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(metric(&dir, 1, "cds_transport_refused_tls_total"), 0);
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&raft).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(b"\x20\x00\x00\x00hello in clear, not TLS..........");
        let mut sink = [0u8; 256];
        // The node closes the connection (reads end) within the timeout.
        while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&dir, 1, "cds_transport_refused_tls_total") == 0 {
        assert!(Instant::now() < deadline, "plain client not counted");
        std::thread::sleep(Duration::from_millis(100));
    }
    // ... and named in the node's log, in one line per interval at most.
    let log = dir.join("n1/log");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text
            .lines()
            .any(|l| l.contains("transport:") && l.contains("refused_tls +1"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no log line:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    ok(&dir, &["down"]);
}
