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

use raft_core::trace::NodeRole;
use viz_wasm::model::{Member, Moment, Replay};

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
/// An exception thrown in the page fails the test (a broken button throws
/// rather than shows anything).
fn cdp(url: &str, steps: &[&str]) -> Vec<serde_json::Value> {
    cdp_sized(url, "1050,820", steps)
}

/// [`cdp`] in a window of `size` (`W,H`).
fn cdp_sized(url: &str, size: &str, steps: &[&str]) -> Vec<serde_json::Value> {
    let started = Instant::now();
    let child = Command::new("node")
        .arg("--experimental-websocket")
        .arg(repo().join("viz-wasm/tools/cdp.mjs"))
        .arg(url)
        .args(steps)
        .env("CDP_WAIT_MS", "30000")
        .env("CDP_WINDOW", size)
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
    assert!(
        !stderr.contains("page exception"),
        "the page threw: {stderr}"
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

const READY: &str = "wait:document.getElementById('viz').dataset.ready";
const STATUS: &str = r#"document.getElementById("status").textContent"#;
const SAID: &str = r#"document.getElementById("said").textContent"#;

/// `cdsctl raft sim` with `args`, its trace written to `path`.
fn sim_to(path: &Path, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_cdsctl"))
        .args(["raft", "sim"])
        .args(args)
        .arg("--trace")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// The narration line as the page prints it for the state after `at` events.
fn said_at(replay: &Replay, at: usize) -> String {
    let st = replay.state_at(at);
    let s = st.said.expect("an event was applied");
    format!("{}. {}.", s.i + 1, s.text)
}

/// Where each jump of `plan` lands in `replay` (the view right after the
/// moment's first event), or `None` when the trace lacks one of them.
fn plan_targets(replay: &Replay, plan: &[(&str, Moment, bool)]) -> Option<Vec<usize>> {
    let mut at = 0usize;
    let mut targets = Vec::new();
    for &(_, m, back) in plan {
        let i = if back {
            replay.find_prev(at.checked_sub(1)?, m)
        } else {
            replay.find_next(at, m)
        }?;
        assert!(replay.moments(m).contains(&i));
        at = i + 1;
        targets.push(at);
    }
    Some(targets)
}

#[test]
fn every_jump_button_and_key_moves_to_the_right_kind_of_event() {
    let tmp = tempfile::tempdir().unwrap();
    // Each button and key, and whether it looks back.
    let plan = [
        ("click:[data-jump=election]", Moment::Election, false),
        ("click:[data-jump=config]", Moment::ConfigChange, false),
        ("click:[data-jump=snapshot]", Moment::Snapshot, false),
        ("click:[data-jump=fault]", Moment::Fault, false),
        ("key:e", Moment::Election, false),
        ("key:c", Moment::ConfigChange, false),
        ("key:s", Moment::Snapshot, false),
        ("key:f", Moment::Fault, false),
        ("key:E", Moment::Election, true),
        ("key:C", Moment::ConfigChange, true),
        ("key:S", Moment::Snapshot, true),
        ("key:F", Moment::Fault, true),
    ];
    // The first seed from 42 whose run has every jump of the plan (which
    // moments follow which depends on the run).
    let (trace, replay, targets) = (42..52)
        .find_map(|seed| {
            let path = tmp.path().join(format!("seed{seed}.rtrace"));
            let seed = seed.to_string();
            sim_to(
                &path,
                &[
                    "--nodes",
                    "5",
                    "--seed",
                    &seed,
                    "--steps",
                    "5000",
                    "--faults",
                    "all",
                    "--reconfig",
                    "--compact",
                ],
            );
            let replay = Replay::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let targets = plan_targets(&replay, &plan)?;
            Some((path, replay, targets))
        })
        .expect("a seed in 42..52 whose run has every jump of the plan");
    let server = Server::start(&trace, None);
    let mut steps = vec![READY.to_string()];
    let mut want = Vec::new();
    for ((step, _, _), at) in plan.iter().zip(targets) {
        want.push((*step, at));
        steps.push(step.to_string());
        steps.push(format!("wait:{STATUS}.startsWith('event {at} /')"));
        steps.push(format!("print:[{STATUS}, {SAID}]"));
    }
    let steps: Vec<&str> = steps.iter().map(|s| s.as_str()).collect();
    let out = cdp(&server.url, &steps);
    assert_eq!(out.len(), want.len());
    for ((step, at), got) in want.iter().zip(&out) {
        let status = got[0].as_str().unwrap();
        assert!(
            status.starts_with(&format!("event {at} / ")),
            "{step}: {status}"
        );
        assert_eq!(got[1].as_str().unwrap(), said_at(&replay, *at), "{step}");
    }
}

/// Copies the built page to `dir`.
fn copy_page(dir: &Path) {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let dst = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &dst);
            } else {
                std::fs::copy(e.path(), dst).unwrap();
            }
        }
    }
    copy(&page_dir(), dir);
}

/// The book's way: the page and a tour opened from disk (`file://`, where
/// browsers refuse modules and fetch). Each stop's caption shows at its
/// event; `]` plays on to the next stop and `[` goes back. A bare trace
/// from disk is explained, with the command that serves it.
#[test]
fn a_tour_opened_from_disk_shows_each_caption_at_its_event() {
    let tmp = tempfile::tempdir().unwrap();
    copy_page(&tmp.path().join("viz"));
    let trace = sim_trace(tmp.path());
    let text = std::fs::read_to_string(&trace).unwrap();
    let replay = Replay::parse(&text).unwrap();
    let first = |m: Moment| replay.moments(m)[0] + 1;
    let mut ats = vec![
        first(Moment::Election),
        first(Moment::ConfigChange),
        first(Moment::Snapshot),
    ];
    ats.sort();
    ats.dedup();
    let stops: Vec<serde_json::Value> = ats
        .iter()
        .enumerate()
        .map(|(k, at)| {
            serde_json::json!({"at": at, "caption": format!("Stop number {} is here.", k + 1), "look": "the log"})
        })
        .collect();
    let tour =
        serde_json::json!({"name": "t", "title": "a test tour", "trace": text, "stops": stops});
    std::fs::create_dir_all(tmp.path().join("tours")).unwrap();
    std::fs::write(tmp.path().join("tours/t.js"), format!("vizTour({tour});\n")).unwrap();
    let page = tmp.path().join("viz/index.html");
    let url = format!("file://{}?tour=../tours/t.js&speed=100", page.display());
    let caption = r#"document.getElementById("caption").textContent"#;
    let mut steps = vec![
        READY.to_string(),
        format!("print:[{caption}, {STATUS}, document.getElementById('error').textContent]"),
    ];
    for k in 2..=ats.len() {
        steps.push("key:]".into());
        steps.push(format!(
            "wait:document.getElementById('viz').dataset.stop === '{k}'"
        ));
        steps.push(format!("print:[{caption}, {STATUS}]"));
    }
    steps.push("key:[".into());
    steps.push(format!(
        "wait:document.getElementById('viz').dataset.stop === '{}'",
        ats.len() - 1
    ));
    steps.push(format!("print:[{caption}, {STATUS}]"));
    let steps: Vec<&str> = steps.iter().map(|s| s.as_str()).collect();
    let out = cdp(&url, &steps);
    assert_eq!(out.len(), ats.len() + 1, "{out:?}");
    assert_eq!(out[0][2], "", "an error from disk: {out:?}");
    for (k, at) in ats.iter().enumerate() {
        assert_eq!(out[k][0], format!("Stop number {} is here.", k + 1));
        let status = out[k][1].as_str().unwrap();
        assert!(
            status.starts_with(&format!("event {at} / ")),
            "stop {}: {status}",
            k + 1
        );
    }
    let back = &out[ats.len()];
    assert_eq!(back[0], format!("Stop number {} is here.", ats.len() - 1));

    // A script that is not a tour is named, not waited for forever.
    std::fs::write(tmp.path().join("tours/bad.js"), "var notATour = 1;\n").unwrap();
    let url = format!("file://{}?tour=../tours/bad.js", page.display());
    let out = cdp(
        &url,
        &[
            "wait:document.getElementById('error').textContent",
            "print:document.getElementById('error').textContent",
        ],
    );
    let err = out[0].as_str().unwrap();
    assert!(err.contains("bad.js is not a tour"), "{err}");
    // A tour whose stops are out of order (or not numbers) is refused too.
    let bad_stops = serde_json::json!({"trace": text, "stops": [{"at": 9, "caption": "b"}, {"at": 3, "caption": "a"}]});
    std::fs::write(
        tmp.path().join("tours/stops.js"),
        format!("vizTour({bad_stops});\n"),
    )
    .unwrap();
    let url = format!("file://{}?tour=../tours/stops.js&stop=abc", page.display());
    let out = cdp(
        &url,
        &[
            "wait:document.getElementById('error').textContent",
            "print:document.getElementById('error').textContent",
        ],
    );
    let err = out[0].as_str().unwrap();
    assert!(err.contains("stops.js is not a tour"), "{err}");

    // A bare trace from disk cannot be read: the page says why and how.
    std::fs::copy(&trace, tmp.path().join("viz/t.rtrace")).unwrap();
    let url = format!("file://{}?trace=t.rtrace", page.display());
    let out = cdp(
        &url,
        &[
            "wait:document.getElementById('error').textContent",
            "print:document.getElementById('error').textContent",
        ],
    );
    let err = out[0].as_str().unwrap();
    assert!(
        err.contains("Serve it instead: cdsctl viz t.rtrace"),
        "{err}"
    );
}

/// `(role, member)` of node `id` in the page's node table.
fn member_of(dom_rows: &str, id: u64) -> (String, String) {
    let open = format!("data-node=\"{id}\">");
    let at = dom_rows
        .find(&open)
        .unwrap_or_else(|| panic!("no row for n{id}"));
    let row = &dom_rows[at..];
    let cell = |class: &str| {
        let k = format!("class=\"{class}\">");
        let s = row.find(&k).unwrap() + k.len();
        row[s..s + row[s..].find('<').unwrap()].to_string()
    };
    (cell("role"), cell("member"))
}

/// In `--reconfig` runs: a learner, a spare and a leader that removed
/// itself carry their badges where the model says they are.
#[test]
fn learner_spare_and_leaving_leader_carry_their_badges() {
    let tmp = tempfile::tempdir().unwrap();
    let mut found: Vec<(&str, PathBuf, usize, u64)> = Vec::new();
    for seed in 1..=40 {
        let path = tmp.path().join(format!("r{seed}.rtrace"));
        sim_to(
            &path,
            &[
                "--nodes",
                "5",
                "--seed",
                &seed.to_string(),
                "--steps",
                "5000",
                "--faults",
                "all",
                "--reconfig",
            ],
        );
        let replay = Replay::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for n in (1..=replay.len()).step_by(5) {
            let st = replay.state_at(n);
            let joint = st.config.as_ref().is_some_and(|c| !c.outgoing.is_empty());
            for node in st.nodes.values() {
                let what = match node.member {
                    Member::Learner => "learner",
                    Member::Spare => "spare",
                    Member::Leaving if node.role == NodeRole::Leader && !joint => "leader, leaving",
                    _ => continue,
                };
                if !found.iter().any(|f| f.0 == what) {
                    found.push((what, path.clone(), n, node.id));
                }
            }
        }
        if found.len() == 3 {
            break;
        }
    }
    assert_eq!(
        found.len(),
        3,
        "40 seeds did not show every badge: {found:?}"
    );
    for (what, path, n, id) in found {
        let server = Server::start(&path, Some(n));
        let out = cdp(
            &server.url,
            &[
                READY,
                "print:document.getElementById('nodetable').innerHTML",
            ],
        );
        let (role, member) = member_of(out[0].as_str().unwrap(), id);
        match what {
            "learner" => assert_eq!(member, "learner", "n{id} at {n} ({role})"),
            "spare" => assert_eq!(member, "spare", "n{id} at {n}"),
            _ => {
                assert_eq!(role, "leader", "n{id} at {n}");
                assert_eq!(member, "leaving", "n{id} at {n}");
            }
        }
    }
}

/// What a person sees, checked at 1400x900 and at the book's frame width:
/// the narration line says the event, the legend opens with `g`, and each
/// log cell shows its index and its term as the model has them.
#[test]
fn screenshots_show_narration_legend_and_labelled_cells() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = sim_trace(tmp.path());
    let replay = Replay::parse(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let n = replay.moments(Moment::Snapshot)[0] + 1;
    let st = replay.state_at(n);
    for (size, name) in [
        ("1400,900", "teach-1400x900"),
        ("760,1000", "teach-book-frame"),
    ] {
        let server = Server::start(&trace, Some(n));
        let shot = artifacts().join(format!("{name}.png"));
        let legend_shot = artifacts().join(format!("{name}-legend.png"));
        let out = cdp_sized(
            &server.url,
            size,
            &[
                READY,
                &format!("print:{SAID}"),
                // Every cell of every row: its index, its label, its title.
                r#"print:[...document.querySelectorAll('#logs .lrow')].map((r) => [Number(r.dataset.node), [...r.querySelectorAll('.cell:not(.gap):not(.pad)')].map((c) => [c.querySelector('i').textContent, c.querySelector('b').textContent, c.className])])"#,
                &format!("shot:{}", shot.display()),
                "key:g",
                "print:[document.getElementById('legendbox').hidden, document.getElementById('legendbox').textContent]",
                &format!("shot:{}", legend_shot.display()),
            ],
        );
        assert_eq!(out[0].as_str().unwrap(), said_at(&replay, n), "{size}");
        let rows = out[1].as_array().unwrap();
        assert_eq!(rows.len(), st.nodes.len(), "{size}");
        let mut labelled = 0;
        for row in rows {
            let id = row[0].as_u64().unwrap();
            let node = &st.nodes[&id];
            for cell in row[1].as_array().unwrap() {
                let index: u64 = cell[0].as_str().unwrap().parse().unwrap();
                let label = cell[1].as_str().unwrap();
                let class = cell[2].as_str().unwrap();
                if index >= node.log.first && index <= node.log.last {
                    let term = node.log.terms.term_at(index).expect("a term");
                    assert_eq!(label, format!("t{term}"), "{size}: n{id} entry {index}");
                    assert_eq!(
                        class.contains(" cm"),
                        index <= node.commit,
                        "{size}: n{id} {index} {class}"
                    );
                    assert_eq!(
                        class.contains(" ap"),
                        index <= node.applied,
                        "{size}: n{id} {index} {class}"
                    );
                    labelled += 1;
                } else if index < node.log.first {
                    assert!(class.contains("gone"), "{size}: n{id} {index} {class}");
                } else {
                    assert!(class.contains("empty"), "{size}: n{id} {index} {class}");
                }
            }
        }
        assert!(labelled > 10, "{size}: only {labelled} labelled cells");
        assert_eq!(out[2][0], false, "{size}: the legend did not open");
        let legend = out[2][1].as_str().unwrap();
        for words in [
            "How to read this page",
            "election timer",
            "hollow dot: a reply",
            "committed",
            "cut one way only",
        ] {
            assert!(legend.contains(words), "{size}: legend lacks {words:?}");
        }
        for p in [&shot, &legend_shot] {
            let size = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            assert!(size > 10_000, "screenshot {} is {size} bytes", p.display());
        }
    }
}
