//! The visualizer in a real browser: `cdsctl viz` serves the built page,
//! headless Chromium loads it, and what the page shows is compared with what
//! the trace says.
//!
//! Needs the page built (`viz-wasm/build.sh`, which `.ci/run` runs before
//! the tests) and `chromium` on PATH (`.ci/run` installs it). Missing either
//! is a failure with instructions, never a skip. Screenshots are kept in
//! `target/viz-test/` for a person to look at.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use viz_wasm::model::Replay;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn page_dir() -> PathBuf {
    let dir = repo().join("target/viz");
    assert!(
        dir.join("index.html").is_file() && dir.join("pkg/viz_wasm_bg.wasm").is_file(),
        "the visualizer page is not built in {}: run viz-wasm/build.sh first (.ci/run does)",
        dir.display()
    );
    dir
}

fn artifacts() -> PathBuf {
    let d = repo().join("target/viz-test");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `cdsctl viz`, killed when dropped (also when the test fails).
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(trace: &Path, at: Option<usize>) -> Server {
        Server::spawn(Some(trace), at)
    }

    /// The page alone, no trace (for the live mode).
    fn page_only() -> Server {
        Server::spawn(None, None)
    }

    fn spawn(trace: Option<&Path>, at: Option<usize>) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cdsctl"));
        cmd.arg("viz");
        if let Some(trace) = trace {
            cmd.arg(trace);
        }
        cmd.arg("--page")
            .arg(page_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(n) = at {
            cmd.arg("--at").arg(n.to_string());
        }
        let mut child = cmd.spawn().expect("cdsctl viz starts");
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        // The first line is the address; a bounded read through a thread.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
        });
        let url = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) if l.starts_with("http://") => l.trim().to_string(),
            other => {
                let _ = child.kill();
                panic!("cdsctl viz printed no address: {other:?}");
            }
        };
        Server { child, url }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium(args: &[&str], url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1050,820",
        "--virtual-time-budget=8000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args)
    .arg(url)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let child = cmd
        .spawn()
        .expect("chromium must be installed (.ci/run installs it: apt-get install chromium)");
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(90)) {
        Ok(out) => {
            let out = out.expect("chromium ran");
            assert!(out.status.success(), "chromium failed: {:?}", out.status);
            eprintln!("chromium {args:?} took {:?}", started.elapsed());
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
        Err(_) => {
            // SAFETY: plain syscall on our own child's pid.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("chromium ran for more than 90 s");
        }
    }
}

fn dom(url: &str) -> String {
    chromium(&["--dump-dom"], url)
}

fn screenshot(url: &str, name: &str) {
    let path = artifacts().join(format!("{name}.png"));
    chromium(&[&format!("--screenshot={}", path.display())], url);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot {} is {size} bytes",
        path.display()
    );
}

/// The text of the element with `id` (no nested tags in those we read).
fn text_of(dom: &str, id: &str) -> String {
    let open = format!("id=\"{id}\"");
    let at = dom
        .find(&open)
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    let start = at + dom[at..].find('>').unwrap() + 1;
    let end = start + dom[start..].find('<').unwrap();
    dom[start..end].replace("&gt;", ">").replace("&amp;", "&")
}

/// `(role, term, commit)` per node from the page's node table.
fn node_rows(dom: &str) -> Vec<(u64, String, u64, u64)> {
    let mut rows = Vec::new();
    for part in dom.split("<tr").skip(1) {
        let Some(id) = part
            .strip_prefix(" data-node=\"")
            .or_else(|| part.strip_prefix(" class=\"sel\" data-node=\""))
        else {
            continue;
        };
        let id: u64 = id[..id.find('"').unwrap()].parse().unwrap();
        let cell = |class: &str| {
            let k = format!("class=\"{class}\">");
            let s = part.find(&k).unwrap() + k.len();
            part[s..s + part[s..].find('<').unwrap()].to_string()
        };
        rows.push((
            id,
            cell("role"),
            cell("term").parse().unwrap(),
            cell("commit").parse().unwrap(),
        ));
    }
    rows
}

fn sim_trace(dir: &Path) -> PathBuf {
    let path = dir.join("seed42.rtrace");
    let out = Command::new(env!("CARGO_BIN_EXE_cdsctl"))
        .args([
            "raft", "sim", "--nodes", "5", "--seed", "42", "--steps", "5000",
        ])
        .args(["--faults", "all", "--reconfig", "--compact", "--trace"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    path
}

#[test]
fn the_page_shows_what_the_trace_says_at_any_event() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = sim_trace(tmp.path());
    let text = std::fs::read_to_string(&trace).unwrap();
    let replay = Replay::parse(&text).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Moments worth checking: just after the first and the last election
    // won, mid-trace, and the end.
    let wins: Vec<usize> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r["ev"] == "role" && r["role"] == "leader")
        .map(|(i, _)| i + 1)
        .collect();
    assert!(wins.len() >= 2, "the run elected fewer than two leaders");
    let points = [
        wins[0],
        records.len() / 2,
        *wins.last().unwrap(),
        records.len(),
    ];
    for (k, &n) in points.iter().enumerate() {
        let server = Server::start(&trace, Some(n));
        let page = dom(&server.url);
        let status = text_of(&page, "status");
        let want = replay.state_at(n);
        assert!(
            status.starts_with(&format!("event {n} / {} ·", records.len())),
            "{status}"
        );
        match want.leader {
            Some(l) => assert!(
                status.contains(&format!("leader n{l} · term {}", want.leader_term)),
                "at {n}: page says {status:?}, the trace says n{l} leads term {}",
                want.leader_term
            ),
            None => assert!(status.contains("no leader"), "at {n}: {status}"),
        }
        // Every node's term and commit index as its own latest record
        // before event n states them.
        let rows = node_rows(&page);
        assert_eq!(rows.len(), replay.header().nodes.len(), "{page}");
        for (id, role, term, commit) in rows {
            let last = records[..n].iter().rev().find(|r| r["node"] == id);
            if let Some(r) = last {
                if r["role"] == "down" {
                    // Events about a crashed node (messages dropped at it)
                    // carry no term or commit; the page keeps the last ones.
                    assert_eq!(role, "down", "n{id} at {n}");
                    continue;
                }
                assert_eq!(commit, r["commit"].as_u64().unwrap(), "n{id} at {n}");
                assert_eq!(term, r["term"].as_u64().unwrap(), "n{id} at {n}");
                let expect = if r["ev"] == "crash" {
                    "down"
                } else {
                    r["role"].as_str().unwrap()
                };
                assert!(
                    role == expect || role == format!("{expect} (paused)"),
                    "n{id} at {n}: page {role}, trace {expect}"
                );
            }
        }
        if k == 0 || k == 2 {
            screenshot(&server.url, &format!("replay-at-{n}"));
        }
    }
}

#[test]
fn a_malformed_trace_is_named_by_line_not_a_blank_page() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = sim_trace(tmp.path());
    let text = std::fs::read_to_string(&trace).unwrap();
    let mut lines: Vec<&str> = text.lines().take(10).collect();
    lines[2] = "{\"t\": 5, \"node\": 1, \"ev\": \"teleport\"}";
    let bad = tmp.path().join("bad.rtrace");
    std::fs::write(&bad, lines.join("\n") + "\n").unwrap();
    let server = Server::start(&bad, None);
    let page = dom(&server.url);
    let error = text_of(&page, "error");
    assert!(error.contains("line 3"), "{error}");
    assert!(error.contains("bad.rtrace"), "{error}");
    screenshot(&server.url, "malformed");

    // Not a trace at all.
    let other = tmp.path().join("other.json");
    std::fs::write(&other, "{\"foo\": 1}\n").unwrap();
    let server = Server::start(&other, None);
    let error = text_of(&dom(&server.url), "error");
    assert!(error.contains("line 1"), "{error}");
}

/// Runs the DevTools driver (`viz-wasm/tools/cdp.mjs`) on `url` with
/// `steps`; returns the values its `print:` steps printed, one per step.
fn cdp(url: &str, steps: &[&str]) -> Vec<serde_json::Value> {
    let started = Instant::now();
    let child = Command::new("node")
        .arg("--experimental-websocket")
        .arg(repo().join("viz-wasm/tools/cdp.mjs"))
        .arg(url)
        .args(steps)
        .env("CDP_WAIT_MS", "30000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node must be installed (Node 20 or later)");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(150)) {
        Ok(out) => out.expect("node ran"),
        Err(_) => {
            // SAFETY: plain syscall on our own child's pid.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("the DevTools driver ran for more than 150 s");
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "cdp.mjs failed ({:?}): {stderr}",
        out.status
    );
    eprintln!("cdp.mjs took {:?}", started.elapsed());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `(events, total, leader)` from `#status` text
/// (`event N / M · t=… · leader nX · term T`).
fn parse_status(status: &str) -> (usize, usize, Option<u64>) {
    let parts: Vec<&str> = status.split(" · ").collect();
    assert_eq!(parts.len(), 4, "{status}");
    let (n, m) = parts[0]
        .strip_prefix("event ")
        .and_then(|x| x.split_once(" / "))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(parts[1].starts_with("t="), "{status}");
    assert!(parts[3].starts_with("term "), "{status}");
    let leader = parts[2]
        .strip_prefix("leader n")
        .map(|l| l.parse().unwrap());
    (n.parse().unwrap(), m.parse().unwrap(), leader)
}

#[test]
fn live_mode_elects_a_new_leader_when_the_leader_is_stopped() {
    let server = Server::page_only();
    let url = format!("{}?live=1&nodes=5&seed=3", server.url);
    let shot = artifacts().join("live-new-leader.png");
    let _ = std::fs::remove_file(&shot);
    let status = r#"document.getElementById("status").textContent"#;
    let leader_re = r#"/leader n(\d+)/.exec(document.getElementById("status").textContent)"#;
    let select_leader = format!(
        r#"eval:(() => {{ const l = {leader_re}[1]; window.__old = l; document.querySelector(`#nodetable tr[data-node="${{l}}"]`).click(); }})()"#
    );
    let new_leader = format!(
        r#"wait:(() => {{ const m = {leader_re}; return m && m[1] !== window.__old; }})()"#
    );
    let shot_step = format!("shot:{}", shot.display());
    let out = cdp(
        &url,
        &[
            &format!("wait:{leader_re}"),
            &format!("print:{status}"),
            &select_leader,
            "click:#live-stop",
            r#"print:[window.__old, document.getElementById("livemsg").textContent, document.getElementById("error").textContent]"#,
            &new_leader,
            &shot_step,
            // Pause, then download the trace (the link's click is caught:
            // a headless browser would save the file in ~/Downloads).
            "click:#play",
            // The click is an input event: wait until the page handled it,
            // then for one more frame, before reading what it shows.
            r#"wait:document.getElementById("play").textContent === "▶""#,
            "wait:new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))",
            &format!("print:{status}"),
            r#"eval:HTMLAnchorElement.prototype.click = function () { window.__download = this.download; }"#,
            "click:#live-download",
            r#"print:[window.__download, document.getElementById("error").textContent]"#,
            r#"print:fetch(document.getElementById("viz").dataset.download).then((r) => r.text())"#,
        ],
    );
    assert_eq!(out.len(), 5, "{out:?}");
    let first = out[0].as_str().unwrap();
    let (n, m, l1) = parse_status(first);
    assert_eq!(n, m, "a live session shows its last event: {first}");
    let old: u64 = out[1][0].as_str().unwrap().parse().unwrap();
    assert_eq!(l1, Some(old));
    assert_eq!(out[1][1], format!("n{old} stopped (crashed)"), "{out:?}");
    assert_eq!(out[1][2], "", "an error after stop: {out:?}");
    let paused = out[2].as_str().unwrap();
    let (events, _, leader) = parse_status(paused);
    let leader = leader.unwrap_or_else(|| panic!("no leader: {paused}"));
    assert_ne!(leader, old, "{paused}");
    assert_eq!(out[3][0], "live-seed-3.rtrace", "{out:?}");
    assert_eq!(out[3][1], "", "{out:?}");

    // The downloaded trace replays to what the page showed.
    let text = out[4].as_str().unwrap();
    let replay = Replay::parse(text).unwrap_or_else(|e| panic!("the download: {e}"));
    assert_eq!(replay.header().meta["live"], true);
    assert_eq!(replay.header().meta["seed"], 3);
    assert_eq!(replay.len(), events, "{paused}");
    let end = replay.state_at(events);
    assert_eq!(end.leader, Some(leader), "{paused}");
    assert!(end.nodes[&old].down, "n{old} was stopped");
    assert!(
        text.lines().any(|l| l.contains("\"ev\":\"crash\"")),
        "no crash event"
    );
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot {} is {size} bytes",
        shot.display()
    );
}
