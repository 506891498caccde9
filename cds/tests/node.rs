//! A KV node served in this process through `cds::kv::node::run`, reached
//! with `cds::client`: the library runs a node without `cdsctl`.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use cds::client::{self, Access, Method, Session};
use cds::devcluster::directory::{self, ClusterFile};
use cds::status::Status;

/// How long the node gets to elect itself and to stop.
const WAIT: Duration = Duration::from_secs(20);

#[test]
fn a_node_runs_in_process_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("c");
    cds::secret::private_dir(&dir).expect("dir");
    let ports = directory::pick_ports(2).expect("ports");
    let c = ClusterFile::new(
        &dir,
        &[(ports[0], ports[1])],
        directory::new_token().expect("token"),
        directory::new_token().expect("token"),
    );
    let node = c.nodes[0].clone();
    directory::write_node_config(&c.node_config(&node, vec![node.id])).expect("config");
    c.save(&dir).expect("cluster.json");

    let (done_tx, done) = mpsc::channel();
    let config = node.config_path();
    std::thread::spawn(move || {
        let _ = done_tx.send(cds::kv::node::run(&config));
    });

    // It elects itself.
    let access = Access::of(&c).expect("access");
    let deadline = Instant::now() + WAIT;
    let status: Status = loop {
        if let Ok(Err(e)) = done.try_recv() {
            panic!("the node stopped: {e}");
        }
        match client::status(&access, &node.http_addr) {
            Ok(s) if s.is_leader() => break s,
            _ if Instant::now() >= deadline => panic!("no leader within {WAIT:?}"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    assert_eq!((status.id, status.voters.clone()), (1, vec![1]));
    assert_eq!(status.pid, Some(u64::from(std::process::id())));

    // A write and a linearizable read.
    let nodes = [node.http_addr.clone()];
    let deadline = Instant::now() + WAIT;
    let put = client::request(
        &access,
        &nodes,
        Method::Put,
        "/kv/k",
        b"v",
        Some(Session::new().expect("session").next_stamp()),
        deadline,
    )
    .expect("put");
    assert_eq!(put.status, 200, "{}", put.error_text());
    let get =
        client::request(&access, &nodes, Method::Get, "/kv/k", &[], None, deadline).expect("get");
    assert_eq!((get.status, get.body.as_slice()), (200, &b"v"[..]));

    // SIGTERM (to this process: the node's handler takes it) stops it
    // cleanly and removes its pid file.
    // SAFETY: a signal to our own process, whose SIGTERM the node handles.
    unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    let outcome = done.recv_timeout(WAIT).expect("the node stops in time");
    outcome.expect("a clean stop");
    assert!(!node.data_dir.join("pid").exists(), "pid file removed");
}
