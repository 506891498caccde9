//! `cdsctl top` end to end: a real 3-node cluster, `top` running in a tmux
//! pane, the screen read with `capture-pane`, keys sent with `send-keys`.
//! Selecting the leader and pressing the kill key must bring a new leader
//! onto the screen within a bound.
//!
//! tmux runs on a private socket (`-L`), so the test neither sees nor
//! touches anyone's sessions, and a guard kills that server and the
//! cluster whatever happens.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{kv, Guard};

const BIN: &str = env!("CARGO_BIN_EXE_cdsctl");

/// A tmux server of our own; killed (with `top` in it) when dropped.
struct Tmux {
    socket: String,
    session: String,
}

impl Tmux {
    /// Runs `command` in a detached 120x40 session on a private server.
    fn start(tmp: &Path, command: &str) -> Tmux {
        let name =
            format!("cds-top-{}-{}", std::process::id(), tmp.display()).replace(['/', '.'], "-");
        let tmux = Tmux {
            socket: name.clone(),
            session: name,
        };
        let out = tmux.cmd(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            &tmux.session,
            "-x",
            "120",
            "-y",
            "40",
            command,
        ]);
        assert!(out.status.success(), "tmux new-session failed: {out:?}");
        tmux
    }

    fn cmd(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running tmux")
    }

    fn screen(&self) -> String {
        let out = self.cmd(&["capture-pane", "-p", "-t", &self.session]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        let out = self.cmd(&["send-keys", "-t", &self.session, "-l", keys]);
        assert!(out.status.success(), "send-keys {keys:?} failed: {out:?}");
    }

    fn alive(&self) -> bool {
        self.cmd(&["has-session", "-t", &self.session])
            .status
            .success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

/// The leader the title line names ("leader n2 term 3"), if any.
fn leader_on(screen: &str) -> Option<u64> {
    let first = screen.lines().next()?;
    let rest = &first[first.find("leader n")? + "leader n".len()..];
    rest.split(' ').next()?.parse().ok()
}

/// The load generator's rate the charts' title shows ("· load 655/s").
fn load_rate(screen: &str) -> Option<u64> {
    let rest = &screen[screen.find("· load ")? + "· load ".len()..];
    rest.split("/s").next()?.parse().ok()
}

/// Whether the node table's selection marker is on node `id`.
fn selected_on(screen: &str, id: u64) -> bool {
    screen.lines().any(|l| l.starts_with(&format!("│▶ {id} ")))
}

/// Polls the screen until `done` holds, for at most `bound`.
fn wait_for<T>(
    tmux: &Tmux,
    err_file: &Path,
    bound: Duration,
    what: &str,
    done: impl Fn(&str) -> Option<T>,
) -> T {
    let started = Instant::now();
    loop {
        let screen = tmux.screen();
        if let Some(v) = done(&screen) {
            return v;
        }
        if started.elapsed() > bound || !tmux.alive() {
            panic!(
                "no {what} on screen within {bound:?} (top alive: {}); screen:\n{screen}\n\
                 top's stderr:\n{}",
                tmux.alive(),
                std::fs::read_to_string(err_file).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn killing_the_leader_from_top_shows_a_new_leader() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("cluster");
    let _cluster = Guard { dir: dir.clone() };
    let up = kv(&dir, &["up", "--nodes", "3"]);
    assert!(up.status.success(), "kv up failed: {up:?}");

    let err_file = tmp.path().join("top.stderr");
    // Single quotes: the temp paths hold no quote.
    let command = format!(
        "'{BIN}' top --dir '{}' 2>'{}'",
        dir.display(),
        err_file.display()
    );
    let tmux = Tmux::start(tmp.path(), &command);
    let (old, new, took) = kill_the_leader(&tmux, &err_file, Duration::from_secs(20));
    eprintln!("kill key to new leader n{new} on screen: {took:?}");
    let screen = tmux.screen();
    eprintln!("screen:\n{screen}");
    assert!(
        screen.contains(&format!("node {old} killed")),
        "no kill outcome in the status bar or log:\n{screen}"
    );
    wait_for(&tmux, &err_file, Duration::from_secs(5), "down node", |s| {
        s.lines()
            .any(|l| l.contains(&format!(" {old}   down")))
            .then_some(())
    });

    quit(&tmux, &err_file);
}

/// Waits for a leader on screen, selects it by its id (the 1-9 key) and
/// kills it with `x`; returns the old and the new leader, and the time from
/// the kill key to the new leader on screen (at most `bound`).
fn kill_the_leader(tmux: &Tmux, err_file: &Path, bound: Duration) -> (u64, u64, Duration) {
    let started = Instant::now();
    let old = wait_for(tmux, err_file, Duration::from_secs(15), "leader", leader_on);
    eprintln!(
        "top shows leader n{old} {:?} after start",
        started.elapsed()
    );
    tmux.keys(&old.to_string());
    wait_for(tmux, err_file, Duration::from_secs(5), "selection", |s| {
        selected_on(s, old).then_some(())
    });
    let pressed = Instant::now();
    tmux.keys("x");
    let new = wait_for(tmux, err_file, bound, "new leader", |s| {
        leader_on(s).filter(|l| *l != old)
    });
    (old, new, pressed.elapsed())
}

/// Presses q, and checks that `top` ends and restored the terminal.
fn quit(tmux: &Tmux, err_file: &Path) -> String {
    // q quits and the pane (and so the session) ends.
    tmux.keys("q");
    let deadline = Instant::now() + Duration::from_secs(5);
    while tmux.alive() {
        assert!(Instant::now() < deadline, "top did not quit on q");
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = std::fs::read_to_string(err_file).unwrap_or_default();
    eprintln!("top's stderr: {}", err.trim());
    assert!(err.contains("frames in"), "top did not exit cleanly: {err}");
    err
}

/// `top --sim`: the same screen over a simulated cluster in the process.
/// Killing its leader from the keyboard brings a new one within a bound,
/// the load generator's figures appear, and the seed is on screen and
/// printed at exit.
#[test]
fn top_sim_runs_a_simulated_cluster_in_process() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let err_file = tmp.path().join("top.stderr");
    let trace = tmp.path().join("session.rtrace");
    let command = format!(
        "'{BIN}' top --sim --seed 11 --nodes 5 --trace '{}' 2>'{}'",
        trace.display(),
        err_file.display()
    );
    let tmux = Tmux::start(tmp.path(), &command);
    wait_for(
        &tmux,
        &err_file,
        Duration::from_secs(15),
        "leader",
        leader_on,
    );
    let screen = tmux.screen();
    assert!(screen.contains("simulated, seed 11"), "{screen}");
    for id in 1..=5 {
        assert!(
            screen.lines().any(|l| l.starts_with(&format!("│  {id} "))
                || l.starts_with(&format!("│▶ {id} "))),
            "no row for node {id}:\n{screen}"
        );
    }
    let (old, new, took) = kill_the_leader(&tmux, &err_file, Duration::from_secs(10));
    eprintln!("sim: kill key to new leader n{new} on screen: {took:?}");
    assert!(tmux.screen().contains(&format!("node {old} killed")));

    tmux.keys("l");
    let rate = wait_for(
        &tmux,
        &err_file,
        Duration::from_secs(10),
        "load figures",
        |s| load_rate(s).filter(|r| *r > 0),
    );
    eprintln!("sim: load generator at {rate} puts/s");
    let err = quit(&tmux, &err_file);
    assert!(err.contains("seed 11"), "{err}");
    let text = std::fs::read_to_string(&trace).expect("the session's trace");
    let check = Command::new(BIN)
        .args(["trace", "check"])
        .arg(&trace)
        .output()
        .expect("running trace check");
    assert!(
        check.status.success(),
        "trace check failed on the session's trace ({} bytes): {check:?}",
        text.len()
    );
}

/// Wrong arguments are refused with a message before the terminal is
/// touched (no alternate screen, no raw mode left behind).
#[test]
fn bad_arguments_fail_before_the_screen_opens() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let no_dir = tmp.path().join("none");
    let bad_trace = tmp.path().join("no/such/dir/t.rtrace");
    let no_dir = no_dir.to_str().expect("utf-8 path");
    let bad_trace = bad_trace.to_str().expect("utf-8 path");
    for (args, want) in [
        (vec!["--nodes", "5"], "--sim"),
        (vec!["--sim", "--dir", no_dir], "cannot be used with"),
        (vec!["--sim", "--value-size", "64"], "cannot be used with"),
        (vec!["--sim", "--nodes", "9"], "3 to 7 nodes, not 9"),
        (vec!["--sim", "--speed", "0"], "outside 0.01 to 100"),
        (vec!["--sim", "--speed", "fast"], "is not a number"),
        (
            vec!["--sim", "--trace", bad_trace],
            "creating the trace file",
        ),
        (vec!["--dir", no_dir], "none"),
    ] {
        let out = Command::new(BIN)
            .arg("top")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("running cdsctl top");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(
            !out.stdout.windows(8).any(|w| w == b"\x1b[?1049h"),
            "{args:?} opened the alternate screen"
        );
    }
}
