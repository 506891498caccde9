//! Runs the built `cdsctl trace to-perfetto` on a real simulator trace and
//! on a malformed one.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn cdsctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cdsctl"))
        .args(args)
        .output()
        .expect("run cdsctl")
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "status {:?}, stderr {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn converts_a_simulator_trace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("sim.rtrace");
    let json = dir.path().join("sim.json");
    ok(&cdsctl(&[
        "raft",
        "sim",
        "--nodes",
        "5",
        "--seed",
        "42",
        "--steps",
        "3000",
        "--faults",
        "all",
        "--trace",
        path(&trace),
    ]));
    let out = cdsctl(&["trace", "to-perfetto", path(&trace), path(&json)]);
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sim_ms clock"),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let v: Value = serde_json::from_slice(&fs::read(&json).expect("read output")).expect("JSON");
    let events = v["traceEvents"].as_array().expect("a traceEvents array");
    assert!(events.len() > 100, "{} events", events.len());
    assert_eq!(v["displayTimeUnit"], "ms");
    assert_eq!(v["metadata"]["source"], "sim");
    assert_eq!(v["metadata"]["clock"], "sim_ms");
    for e in events {
        assert!(
            e["ph"].is_string() && e["pid"].is_u64() && e["tid"].is_u64(),
            "{e}"
        );
        assert!(e["ts"].is_u64() && e["name"].is_string(), "{e}");
    }

    // A named process per node, and the cluster.
    let processes: HashMap<u64, &str> = events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "process_name")
        .map(|e| {
            (
                e["pid"].as_u64().unwrap(),
                e["args"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    let nodes = v["metadata"]["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 5);
    for n in nodes {
        let n = n.as_u64().unwrap();
        assert_eq!(processes.get(&n).copied(), Some(&*format!("node {n}")));
    }
    let cluster = v["metadata"]["cluster_pid"].as_u64().expect("cluster_pid");
    assert_eq!(processes.get(&cluster).copied(), Some("cluster"));

    // Someone led, for a while.
    let leader = events.iter().find(|e| {
        e["ph"] == "X"
            && e["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("leader t"))
    });
    let leader = leader.expect("an X leader slice");
    assert!(leader["dur"].as_u64().unwrap() > 0);
    assert_eq!(leader["args"]["role"], "leader");

    // Flows start and finish in pairs, from a send to the matching recv.
    let ids = |ph: &str| -> BTreeSet<u64> {
        events
            .iter()
            .filter(|e| e["ph"] == ph)
            .map(|e| e["id"].as_u64().expect("flow id"))
            .collect()
    };
    let (starts, finishes) = (ids("s"), ids("f"));
    assert!(!starts.is_empty());
    assert_eq!(starts, finishes);
    let recv = events
        .iter()
        .find(|e| e["ph"] == "i" && e["args"]["ev"] == "recv")
        .expect("a recv");
    let id = recv["args"]["id"].as_u64().unwrap();
    let send = events
        .iter()
        .find(|e| e["ph"] == "i" && e["args"]["ev"] == "send" && e["args"]["id"] == id)
        .expect("its send");
    let flow = |ph: &str| {
        events
            .iter()
            .find(|e| e["ph"] == ph && e["id"] == id)
            .expect("the flow")
    };
    assert_eq!(
        (flow("s")["pid"].clone(), flow("s")["ts"].clone()),
        (send["pid"].clone(), send["ts"].clone())
    );
    assert_eq!(
        (flow("f")["pid"].clone(), flow("f")["ts"].clone()),
        (recv["pid"].clone(), recv["ts"].clone())
    );
    assert_eq!(flow("f")["bp"], "e");
}

#[test]
fn a_malformed_trace_names_file_and_line_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("bad.rtrace");
    let json = dir.path().join("bad.json");
    fs::write(
        &trace,
        concat!(
            r#"{"format":"rtrace","v":1,"source":"sim","nodes":[1,2],"meta":{}}"#,
            "\n",
            r#"{"t":1,"node":1,"ev":"crash","term":0,"role":"follower","commit":0}"#,
            "\n",
            r#"{"t":2,"node":1,"ev":"send","term":0,"role":"down","commit":0,"id":1}"#,
            "\n",
        ),
    )
    .expect("write");
    let out = cdsctl(&["trace", "to-perfetto", path(&trace), path(&json)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.starts_with(&format!("{}:3: ", path(&trace))),
        "stderr: {stderr}"
    );
    assert!(stderr.contains("missing field"), "stderr: {stderr}");
    assert!(!json.exists());
    let left: Vec<_> = fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left.len(), 1, "left behind: {left:?}");
}

#[test]
fn a_missing_input_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("out.json");
    let out = cdsctl(&[
        "trace",
        "to-perfetto",
        path(&dir.path().join("absent.rtrace")),
        path(&json),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open"));
    assert!(!json.exists());
}
