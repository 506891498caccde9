//! `cdsctl cds fault` against real processes while `volume verify` runs:
//! network faults (delay, drop, partition) through the Raft transport's
//! filter, disk faults (slow, full, errors) through the servers' disk
//! layer, SIGSTOP and kill with a restart, CPU and memory hogs; each
//! undone after its `--for`, even when the command that set it is killed;
//! bad arguments refused; the verify passes with zero errors and the
//! cluster ends whole.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cds::{
    cluster_view, fails, log_lines_with, log_of, ok, process, up_six, verify_through, Guard,
};

fn log_has(dir: &Path, name: &str, needle: &str) -> bool {
    log_of(dir, name).contains(needle)
}

/// The number printed right after `marker` in a command's output.
fn number_after<T: std::str::FromStr>(out: &str, marker: &str) -> T {
    out.split(marker)
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no number after {marker:?}: {out}"))
}

/// The pid `cds status --json` gives process `name`.
fn pid_of(dir: &Path, name: &str) -> u64 {
    let p = process(dir, name);
    p["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no pid for {name}: {p:#}"))
}

/// The state letter of /proc/PID/stat (R, S, T, ...).
fn proc_state(pid: u64) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(')')
        .next()
        .and_then(|rest| rest.trim().chars().next())
        .unwrap_or('?')
}

fn wait_for(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{what}: not after {secs} s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_fault_kind_happens_and_is_undone_while_verify_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let _g = Guard { dir: dir.clone() };
    up_six(&dir, &[]);
    ok(&dir, &["volume", "create", "v", "--size", "64MiB"]);

    // Bad arguments are refused with the reason, and nothing is left.
    for (args, why) in [
        (vec!["delay", "b1", "--ms", "0"], "1 to"),
        (vec!["drop", "b1", "--pct", "101"], "1 to 100"),
        (vec!["disk-error", "m1", "1"], "not a BlockServer"),
        (vec!["disk-slow", "b1", "3", "--ms", "5"], "disks 1 to 2"),
        (vec!["partition", "b1", "--peers", "m1"], "not a Raft peer"),
        (vec!["cpu", "b1"], "needs --for"),
        (
            vec!["memory", "b1", "--mib", "99999999", "--for", "1s"],
            "available",
        ),
        (vec!["kill", "b9", "--for", "1s"], "b9"),
    ] {
        let mut a = vec!["cds", "fault"];
        a.extend(args.iter());
        let err = fails(&dir, &a);
        assert!(err.contains(why), "{args:?}: {err}");
    }
    assert!(ok(&dir, &["cds", "fault", "list"]).contains("no fault in force"));

    let out = verify_through(&dir, 45, Duration::from_secs(2), || {
        // Network: a delay listed while in force, gone after.
        let d = dir.clone();
        let delay = std::thread::spawn(move || {
            ok(
                &d,
                &["cds", "fault", "delay", "b1", "--ms", "20", "--for", "2s"],
            )
        });
        wait_for(5, "the delay listed", || {
            ok(&dir, &["cds", "fault", "list"]).contains("ms late")
        });
        let said = delay.join().expect("delay");
        assert!(said.contains("20 ms late undone"), "{said}");
        assert!(log_has(&dir, "b1", "faults in force: delay"));
        ok(
            &dir,
            &["cds", "fault", "drop", "b2", "--pct", "50", "--for", "2s"],
        );
        ok(
            &dir,
            &[
                "cds",
                "fault",
                "partition",
                "b3",
                "--peers",
                "b1,b5",
                "--for",
                "2s",
            ],
        );
        assert!(log_has(&dir, "b3", "cut: Raft links to [1, 5] cut"));

        // SIGSTOP: the process is stopped during, running after.
        let pid = pid_of(&dir, "b4");
        let d = dir.clone();
        let stop =
            std::thread::spawn(move || ok(&d, &["cds", "fault", "stop", "b4", "--for", "2s"]));
        wait_for(5, "b4 stopped", || proc_state(pid) == 'T');
        stop.join().expect("stop");
        assert_ne!(proc_state(pid), 'T', "b4 continued");

        // Disks: slow and full for a while; a replica stopped by the full
        // disk starts again (or was replaced) once it has room.
        ok(
            &dir,
            &[
                "cds",
                "fault",
                "disk-slow",
                "b5",
                "1",
                "--ms",
                "2",
                "--for",
                "2s",
            ],
        );
        ok(
            &dir,
            &["cds", "fault", "disk-full", "b6", "1", "--for", "2s"],
        );
        assert!(log_has(&dir, "b6", "disk1-full: disk 1 full"));

        // Hogs: the command burns CPU on b1's CPUs, then holds memory.
        let cpu = ok(
            &dir,
            &["cds", "fault", "cpu", "b1", "--threads", "1", "--for", "2s"],
        );
        let spent: f64 = number_after(&cpu, "after ");
        // It competes with the cluster for 2 cores: it must have run,
        // not necessarily for all its time.
        assert!(
            spent >= 0.3,
            "a 2 s hog of one thread used {spent} s: {cpu}"
        );
        let mem = ok(
            &dir,
            &["cds", "fault", "memory", "b1", "--mib", "64", "--for", "1s"],
        );
        let rss: u64 = number_after(&mem, "RSS ");
        assert!(rss >= 64, "{mem}");

        // Kill, restarted after the duration.
        let before = pid_of(&dir, "b2");
        let k = ok(&dir, &["cds", "fault", "kill", "b2", "--for", "1s"]);
        assert!(k.contains("restarted"), "{k}");
        assert_ne!(pid_of(&dir, "b2"), before);

        // A fault whose command dies is still undone on time: the
        // process reads the deadline in the fault file.
        let mut child = Command::new(env!("CARGO_BIN_EXE_cdsctl"))
            .args([
                "cds",
                "fault",
                "disk-slow",
                "b3",
                "2",
                "--ms",
                "1",
                "--for",
                "2s",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        wait_for(5, "the slow disk listed", || {
            ok(&dir, &["cds", "fault", "list"]).contains("disk2-slow")
        });
        child.kill().expect("SIGKILL the fault command");
        let _ = child.wait();
        wait_for(10, "b3's slow disk undone by b3 itself", || {
            ok(&dir, &["cds", "fault", "list"]).contains("no fault in force")
                && log_has(&dir, "b3", "no fault in force any more")
        });

        // A disk failed for a while: its replicas are rebuilt, the disk
        // heals and is reported well again.
        ok(
            &dir,
            &["cds", "fault", "disk-error", "b4", "2", "--for", "2s"],
        );
    });
    assert!(out.contains("io errors 0"), "{out}");

    // Every fault undone, every group whole again, every disk well.
    assert!(ok(&dir, &["cds", "fault", "list"]).contains("no fault in force"));
    let start = Instant::now();
    loop {
        let v = cluster_view(&dir);
        let whole = v["groups"].as_array().is_some_and(|gs| {
            gs.iter().all(|g| {
                g["moving"].is_null() && g["replicas"].as_array().is_some_and(|r| r.len() == 3)
            })
        }) && v["degraded"].as_array().is_some_and(|d| d.is_empty());
        let well = v["disk_health"].as_object().is_some_and(|m| {
            m.values()
                .flat_map(|ds| ds.as_array().cloned().unwrap_or_default())
                .all(|d| d["state"] == "ok" && d["slow_ms"] == 0)
        });
        if whole && well {
            break;
        }
        if start.elapsed() >= Duration::from_secs(60) {
            // What the processes said about the groups still moving.
            let moving: Vec<String> = v["groups"]
                .as_array()
                .map(|gs| {
                    gs.iter()
                        .filter(|g| !g["moving"].is_null())
                        .map(|g| format!("group {}:", g["id"]))
                        .collect()
                })
                .unwrap_or_default();
            let logs: Vec<String> = moving
                .iter()
                .map(|needle| log_lines_with(&dir, needle, 15))
                .collect();
            panic!(
                "the cluster is not whole and well 60 s after the faults: {v:#}\nlogs:\n{}",
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let st = ok(&dir, &["cds", "status"]);
    assert!(!st.contains("disks not well"), "{st}");
}
