//! Runs the built `cdsctl` binary on good and bad traces.

use std::fs;
use std::process::{Command, Output};

use raft_core::trace::{Header, Kind, Msg, NodeRole, Record, TraceWriter};

fn cdsctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cdsctl"))
        .args(args)
        .output()
        .expect("run cdsctl")
}

fn good_trace() -> String {
    let mut w = TraceWriter::in_memory(&Header::new("test", vec![1, 2, 3]));
    let m = Msg::Heartbeat {
        term: 1,
        commit: 0,
        read_round: 0,
        quiesce: false,
    };
    let rec = |t, node, role, kind| Record {
        t,
        node,
        term: 1,
        role,
        commit: 0,
        kind,
    };
    w.push(&rec(
        1,
        1,
        NodeRole::Leader,
        Kind::Send {
            id: 1,
            to: 2,
            m: m.clone(),
        },
    ));
    w.push(&rec(
        2,
        2,
        NodeRole::Follower,
        Kind::Recv { id: 1, from: 1, m },
    ));
    w.push(&rec(3, 3, NodeRole::Down, Kind::Restart));
    w.into_string()
}

#[test]
fn check_accepts_a_good_trace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("good.jsonl");
    fs::write(&path, good_trace()).expect("write");
    let path = path.to_str().expect("utf-8 path");

    let out = cdsctl(&["trace", "check", path]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "status {:?}, stderr {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.trim_end(),
        format!("{path}: ok, 3 events (recv 1, restart 1, send 1)")
    );
}

#[test]
fn check_rejects_a_bad_trace_naming_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.jsonl");
    // Line 3 receives a message nobody sent.
    let text = good_trace().replace(
        r#""ev":"recv","term":1,"role":"follower","commit":0,"id":1"#,
        r#""ev":"recv","term":1,"role":"follower","commit":0,"id":9"#,
    );
    assert_ne!(text, good_trace());
    fs::write(&path, text).expect("write");
    let path = path.to_str().expect("utf-8 path");

    let out = cdsctl(&["trace", "check", path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.starts_with(&format!("{path}:3: ")),
        "stderr: {stderr}"
    );
    assert!(stderr.contains("never sent"), "stderr: {stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn check_rejects_a_missing_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("absent.jsonl");
    let out = cdsctl(&["trace", "check", path.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open"));
}
