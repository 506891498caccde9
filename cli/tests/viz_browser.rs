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
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cdsctl"));
        cmd.arg("viz")
            .arg(trace)
            .arg("--page")
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
