//! `cdsctl raft sim` and `cdsctl raft scenario` as a user runs them.

use std::process::{Command, Output};

fn cdsctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cdsctl"))
        .args(args)
        .output()
        .expect("cdsctl runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_sweep_ends_with_the_pass_fail_line() {
    let o = cdsctl(&[
        "raft", "sim", "--nodes", "5", "--seeds", "1-40", "--steps", "3000", "--faults", "all",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.lines().last(), Some("40 passed, 0 failed"), "{out}");
    assert!(out.contains("steps/s"), "{out}");
}

#[test]
fn a_traced_run_is_byte_identical_and_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a.jsonl");
    let b = dir.path().join("b.jsonl");
    for p in [&a, &b] {
        let o = cdsctl(&[
            "raft",
            "sim",
            "--nodes",
            "5",
            "--seed",
            "42",
            "--steps",
            "2000",
            "--faults",
            "all",
            "--trace",
            p.to_str().expect("utf-8 path"),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let (ta, tb) = (
        std::fs::read(&a).expect("trace a"),
        std::fs::read(&b).expect("trace b"),
    );
    assert!(!ta.is_empty());
    assert_eq!(ta, tb, "same seed and flags, same bytes");
    let o = cdsctl(&["trace", "check", a.to_str().expect("utf-8 path")]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn bad_flags_are_refused_with_a_reason() {
    let o = cdsctl(&["raft", "sim", "--faults", "drop,flood"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("flood") && e.contains("partition"), "{e}");

    let o = cdsctl(&["raft", "sim", "--seeds", "9-3"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("empty range"), "{}", stderr(&o));

    let o = cdsctl(&["raft", "sim", "--nodes", "0", "--seed", "1"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--nodes"), "{}", stderr(&o));

    // Groups are numbered from 0: a 4-group run has no group 4 to trace.
    let trace = std::env::temp_dir().join(format!("cds-trace-group-{}.jsonl", std::process::id()));
    let trace = trace.to_str().expect("utf-8 path");
    let o = cdsctl(&[
        "raft",
        "sim",
        "--seed",
        "1",
        "--groups",
        "4",
        "--trace",
        trace,
        "--trace-group",
        "4",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--trace-group must be below --groups (4)"),
        "{}",
        stderr(&o)
    );
    assert!(!std::path::Path::new(trace).exists(), "nothing written");
}

#[test]
fn help_lists_the_fault_kinds() {
    let o = cdsctl(&["raft", "sim", "--help"]);
    let out = stdout(&o);
    for kind in [
        "delay",
        "drop",
        "duplicate",
        "reorder",
        "partition",
        "asymmetric",
        "crash",
        "pause",
        "tickrate",
    ] {
        assert!(out.contains(kind), "--help does not mention {kind}:\n{out}");
    }
}

#[test]
fn a_broken_scenario_names_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("s.txt");
    std::fs::write(&p, "nodes 3\ncampaign 1\nstabilize\nexpect leader 2\n").expect("write");
    let o = cdsctl(&["raft", "scenario", p.to_str().expect("utf-8 path")]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("s.txt:4:"), "{}", stderr(&o));
}

#[cfg(feature = "bug-injection")]
#[test]
fn a_failing_seed_prints_a_replay_command_that_reproduces_it() {
    let o = cdsctl(&[
        "raft",
        "sim",
        "--seeds",
        "1-30",
        "--steps",
        "5000",
        "--inject-bug",
        "vote-for-stale-log",
    ]);
    assert!(!o.status.success(), "the bug must be caught");
    let out = stdout(&o);
    let replay = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("replay: cdsctl "))
        .expect("a replay line");
    let args: Vec<&str> = replay.split_whitespace().collect();
    let again = cdsctl(&args);
    assert!(!again.status.success(), "replay must fail too");
    let first_fail = out
        .lines()
        .find(|l| l.starts_with("FAIL seed"))
        .expect("FAIL line");
    assert!(
        stdout(&again).contains(first_fail),
        "replay differs:\n{first_fail}\n{}",
        stdout(&again)
    );
}
