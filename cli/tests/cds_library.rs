//! The `cds` crate used on its own: a local cluster started, driven and
//! read through `cds::devcluster` and `cds::client`, with `cdsctl` only as
//! the program each node process runs (what `NodeProgram` names). Proves
//! the library needs nothing from the CLI but that program.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cds::client::{self, Access, Method, Session};
use cds::devcluster::directory::ClusterFile;
use cds::devcluster::process::ProcState;
use cds::devcluster::{self, NodeProgram, NodeStop, Outcome};
use cds::status::Status;

fn program() -> NodeProgram {
    NodeProgram::cdsctl(PathBuf::from(env!("CARGO_BIN_EXE_cdsctl")))
}

#[test]
fn a_cluster_runs_through_the_library_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("c");
    // Stops the nodes even when an assertion fails.
    let _guard = common::Guard { dir: dir.clone() };

    let started =
        devcluster::up(&program(), 3, &dir, Duration::from_secs(30), false, 1).expect("up");
    assert_eq!(started.cluster.nodes.len(), 3);
    let c = ClusterFile::load(&dir).expect("cluster.json");
    let access = Access::of(&c).expect("access");

    // A write with a session, through whichever node answers first.
    let deadline = Instant::now() + Duration::from_secs(15);
    let reply = client::request(
        &access,
        &devcluster::live_http(&c).expect("live nodes"),
        Method::Put,
        &format!("/kv/{}", client::encode_key("lib/key")),
        b"value",
        Some(Session::new().expect("session").next_stamp()),
        deadline,
    )
    .expect("put");
    assert_eq!(reply.status, 200, "{}", reply.error_text());

    // Every node's /status reads into the one Status type, and they agree
    // on the leader and the voters.
    let statuses: Vec<Status> = c
        .nodes
        .iter()
        .map(|n| client::status(&access, &n.http_addr).expect("status"))
        .collect();
    assert_eq!(statuses.iter().filter(|s| s.is_leader()).count(), 1);
    let (leader, leader_status) =
        devcluster::find_leader(&c, Instant::now() + Duration::from_secs(10)).expect("leader");
    assert_eq!(leader_status.voters, vec![1, 2, 3]);
    assert_eq!(leader_status.pid, leader.pid.map(u64::from));
    assert!(leader_status.commit >= 1 && leader_status.filter.is_none());

    // A fault, seen in /status, and healed.
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|&n| n != leader.id).collect();
    let cut = devcluster::partition(&dir, &[vec![leader.id], others.clone()], &mut |w| {
        panic!("no node should be skipped: {w}")
    })
    .expect("partition");
    assert!(matches!(cut, Outcome::Partitioned(_)), "{cut}");
    let seen = client::status(&access, &leader.http_addr).expect("status");
    assert_eq!(seen.cut(), others);
    devcluster::heal(&dir, &mut |w| panic!("{w}")).expect("heal");
    let healed = client::status(&access, &leader.http_addr).expect("status");
    assert!(healed.filter.is_none());

    // A crash and a restart: the process state follows.
    let victim = others[0];
    assert_eq!(
        devcluster::kill(&dir, victim).expect("kill"),
        Outcome::Killed(victim)
    );
    let reports = devcluster::reports(&ClusterFile::load(&dir).expect("load")).expect("reports");
    let down = reports.iter().find(|r| r.node.id == victim).expect("row");
    assert_eq!(
        (down.state, down.status.is_some()),
        (ProcState::Down, false)
    );
    let again =
        devcluster::restart(&program(), &dir, victim, Duration::from_secs(15)).expect("restart");
    assert!(
        matches!(again, Outcome::Restarted { id, .. } if id == victim),
        "{again}"
    );
    // Killing a node that is not running is an error, not a no-op.
    devcluster::kill(&dir, victim).expect("kill");
    let e = devcluster::kill(&dir, victim).expect_err("dead already");
    assert!(e.to_string().contains("is not running"), "{e}");

    let ended = devcluster::down(&dir, Duration::from_secs(10)).expect("down");
    assert_eq!(ended.len(), 3);
    assert_eq!(
        ended.iter().find(|(id, _)| *id == victim).map(|e| e.1),
        Some(NodeStop::NotRunning)
    );
    assert!(ended
        .iter()
        .all(|(id, how)| *id == victim || *how == NodeStop::Stopped));
}

#[test]
fn a_bad_request_is_refused_before_anything_starts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("c");
    let e =
        devcluster::up(&program(), 0, &dir, Duration::from_secs(1), false, 1).expect_err("0 nodes");
    assert!(matches!(e, cds::Error::Invalid(_)), "{e}");
    assert!(!dir.exists(), "nothing written");
    let e = devcluster::parse_groups("1,2,3").expect_err("one group");
    assert!(e.to_string().contains("one group"), "{e}");
}
