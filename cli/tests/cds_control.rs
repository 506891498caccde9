//! The control plane against real processes: a BlockServer lost for good
//! is rebuilt elsewhere while `volume verify` runs (and the repair
//! finishes although the leading Master is killed during it); the node's
//! stale replicas are collected through the trash when it returns; a
//! failed disk's replicas are rebuilt while its server keeps serving from
//! its other disk; a new empty node gets its share of replicas; a drain
//! moves every replica off a node during IO, and `cds rm` forgets it; a
//! cluster of two pools keeps each group on its own pool's disks through a
//! disk failure.
//!
//! Every cluster lives in a temp directory behind a guard that tears it
//! down, passed or failed; every wait is bounded.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::cds::{cluster_view, fails, leading_master, log_of, ok, verify_through, Guard};

/// Polls `done` every 200 ms until it holds; fails with `what` and the
/// last cluster view after `secs`. Returns how long it took.
fn wait_until(
    dir: &Path,
    secs: u64,
    what: &str,
    mut done: impl FnMut(&serde_json::Value) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let v = cluster_view(dir);
        if done(&v) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{what}: not done after {secs} s; cluster: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn groups(v: &serde_json::Value) -> Vec<serde_json::Value> {
    v["groups"].as_array().cloned().unwrap_or_default()
}

fn replicas(g: &serde_json::Value) -> Vec<u64> {
    g["replicas"]
        .as_array()
        .expect("replicas")
        .iter()
        .map(|r| r.as_u64().expect("server id"))
        .collect()
}

fn moving(v: &serde_json::Value) -> usize {
    groups(v).iter().filter(|g| !g["moving"].is_null()).count()
}

/// Replicas per server, every registered server listed.
fn load(v: &serde_json::Value) -> BTreeMap<u64, usize> {
    let mut out: BTreeMap<u64, usize> = v["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .map(|s| (s["id"].as_u64().expect("id"), 0))
        .collect();
    for g in groups(v) {
        for r in replicas(&g) {
            *out.entry(r).or_default() += 1;
        }
    }
    out
}

/// Every server within 5% of the mean replica count, or within one.
fn balanced(load: &BTreeMap<u64, usize>) -> bool {
    let mean = load.values().sum::<usize>() as f64 / load.len().max(1) as f64;
    let slack = (mean * 0.05).max(1.0);
    load.values().all(|&n| (n as f64 - mean).abs() <= slack)
}

fn zones(v: &serde_json::Value) -> BTreeMap<u64, String> {
    v["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .map(|s| {
            (
                s["id"].as_u64().expect("id"),
                s["location"]["zone"].as_str().expect("zone").to_string(),
            )
        })
        .collect()
}

fn log_lines(dir: &Path, name: &str, needle: &str) -> usize {
    log_of(dir, name)
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// `cds up` of the default topology with a 2 s repair grace and `extra`
/// flags.
fn up_six(dir: &Path, extra: &[&str]) {
    let mut args = vec!["--repair-grace", "2s"];
    args.extend_from_slice(extra);
    common::cds::up_six(dir, &args);
}

#[test]
fn a_lost_server_is_rebuilt_elsewhere_and_its_stale_replicas_collected_when_it_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let _g = Guard { dir: dir.clone() };
    up_six(&dir, &["--trash-keep", "3s"]);
    ok(&dir, &["volume", "create", "v", "--size", "64MiB"]);
    let on_b1: BTreeSet<u64> = groups(&cluster_view(&dir))
        .iter()
        .filter(|g| replicas(g).contains(&1))
        .map(|g| g["id"].as_u64().expect("id"))
        .collect();
    assert!(on_b1.len() >= 4, "{on_b1:?}");
    let mut repair_time = Duration::ZERO;
    let out = verify_through(&dir, 40, Duration::from_secs(3), || {
        ok(&dir, &["cds", "kill", "b1"]);
        let killed = Instant::now();
        // The repair starts after the grace period; the leading Master
        // dies during it, and the next one finishes it.
        wait_until(&dir, 30, "a repair move started", |v| moving(v) > 0);
        let m = leading_master(&dir);
        ok(&dir, &["cds", "kill", &m]);
        wait_until(&dir, 60, "every replica off b1", |v| {
            moving(v) == 0 && groups(v).iter().all(|g| !replicas(g).contains(&1))
        });
        repair_time = killed.elapsed();
        ok(&dir, &["cds", "restart", &m]);
    });
    assert!(out.contains("io errors 0"), "{out}");
    eprintln!(
        "{} groups rebuilt {:.1} s after b1 was killed (grace 2 s, a Master leader killed during it)",
        on_b1.len(),
        repair_time.as_secs_f64()
    );
    // Three replicas on three zones again; b1's zone peer b2 took them.
    let v = cluster_view(&dir);
    let zone = zones(&v);
    for g in groups(&v) {
        let r = replicas(&g);
        let z: BTreeSet<&String> = r.iter().map(|s| &zone[s]).collect();
        assert_eq!((r.len(), z.len()), (3, 3), "{g}");
    }
    assert_eq!(load(&v)[&2], 12, "{:?}", load(&v));
    // b1 returns: the Master orders its stale replicas removed (to the
    // trash, deleted 3 s later); capacity balance gives it its share of
    // zone 1 back.
    ok(&dir, &["cds", "restart", "b1"]);
    let back = Instant::now();
    wait_until(&dir, 60, "b1's stale replicas collected", |_| {
        log_lines(&dir, "b1", "replica removed") >= on_b1.len()
            && log_lines(&dir, "b1", "/trash/") >= on_b1.len()
    });
    wait_until(&dir, 60, "the trash emptied", |_| {
        log_lines(&dir, "b1", ": deleted ") >= on_b1.len()
    });
    wait_until(&dir, 90, "replicas balanced with b1 back", |v| {
        moving(v) == 0 && balanced(&load(v))
    });
    eprintln!(
        "b1 back: stale replicas collected and replicas balanced {:.1} s after its restart: {:?}",
        back.elapsed().as_secs_f64(),
        load(&cluster_view(&dir))
    );
    for d in ["disk1", "disk2"] {
        let trash = dir.join("b1").join(d).join("trash");
        let left: Vec<_> = std::fs::read_dir(&trash)
            .map(|r| r.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{}: {left:?}", trash.display());
    }
    // The data is all there: a read-back of what verify leaves behind.
    let out = verify_through(&dir, 5, Duration::ZERO, || {});
    assert!(out.contains("io errors 0"), "{out}");
}

#[test]
fn a_new_node_gets_its_share_and_a_drain_moves_everything_off_during_io() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let _g = Guard { dir: dir.clone() };
    ok(&dir, &["cds", "up", "--groups", "12", "--tick-ms", "20"]);
    ok(&dir, &["volume", "create", "v", "--size", "64MiB"]);
    let err = fails(&dir, &["cds", "drain", "m1"]);
    assert!(err.contains("not a BlockServer"), "{err}");
    let err = fails(&dir, &["cds", "add-server", "--zone", "z 1", "--rack", "r"]);
    assert!(err.contains("zone"), "{err}");
    // Three servers in three zones hold every group; b4 joins zone 1 empty
    // and takes half of that zone's replicas (a zone's replicas cannot
    // leave it: each group keeps one replica per zone).
    let added = ok(&dir, &["cds", "add-server", "--zone", "z1", "--rack", "r9"]);
    assert!(added.contains("b4 added"), "{added}");
    let t = wait_until(&dir, 60, "b4 given its share", |v| {
        let l = load(v);
        moving(v) == 0 && l.get(&4).copied().unwrap_or(0) > 0 && l[&1].abs_diff(l[&4]) <= 1
    });
    eprintln!(
        "capacity balanced {:.1} s after b4 joined: {:?}",
        t.as_secs_f64(),
        load(&cluster_view(&dir))
    );
    // A node cannot be forgotten while it holds replicas.
    let err = fails(&dir, &["cds", "rm", "b4"]);
    assert!(err.contains("drain it first"), "{err}");
    let mut drained = Duration::ZERO;
    let out = verify_through(&dir, 25, Duration::from_secs(2), || {
        ok(&dir, &["cds", "drain", "b4"]);
        drained = wait_until(&dir, 60, "b4 drained", |v| {
            moving(v) == 0 && load(v).get(&4) == Some(&0)
        });
    });
    assert!(out.contains("io errors 0"), "{out}");
    eprintln!("b4 drained in {:.1} s during verify", drained.as_secs_f64());
    let st = ok(&dir, &["cds", "status"]);
    assert!(st.contains("draining"), "{st}");
    ok(&dir, &["cds", "rm", "b4"]);
    let v = cluster_view(&dir);
    assert!(!load(&v).contains_key(&4), "{v:#}");
    let st = ok(&dir, &["cds", "status"]);
    assert!(!st.contains("b4 "), "{st}");
}

#[test]
fn a_failed_disk_is_rebuilt_elsewhere_while_its_server_serves_the_other() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let _g = Guard { dir: dir.clone() };
    up_six(&dir, &[]);
    ok(&dir, &["volume", "create", "v", "--size", "64MiB"]);
    let err = fails(&dir, &["cds", "fail-disk", "b2", "3"]);
    assert!(err.contains("disks 1 to 2"), "{err}");
    let on = |d: &str| -> BTreeSet<u64> {
        std::fs::read_dir(dir.join("b2").join(d).join("groups"))
            .map(|r| {
                r.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (disk1, disk2) = (on("disk1"), on("disk2"));
    assert!(
        !disk1.is_empty() && !disk2.is_empty(),
        "{disk1:?} {disk2:?}"
    );
    let mut rebuilt = Duration::ZERO;
    let out = verify_through(&dir, 30, Duration::from_secs(3), || {
        ok(&dir, &["cds", "fail-disk", "b2", "1"]);
        let failed = Instant::now();
        wait_until(&dir, 60, "disk 1's replicas rebuilt", |v| {
            moving(v) == 0
                && log_lines(&dir, "b2", "lost replica forgotten") >= disk1.len()
                && groups(v).iter().all(|g| replicas(g).len() == 3)
        });
        rebuilt = failed.elapsed();
    });
    assert!(out.contains("io errors 0"), "{out}");
    eprintln!(
        "{} replicas of b2's failed disk rebuilt in {:.1} s",
        disk1.len(),
        rebuilt.as_secs_f64()
    );
    // b2 lives on and still holds its disk 2 replicas.
    let st = ok(&dir, &["cds", "status"]);
    let b2 = st
        .lines()
        .find(|l| l.contains(" b2 "))
        .expect("b2 in the tree");
    assert!(b2.ends_with("up"), "{st}");
    let v = cluster_view(&dir);
    for g in &disk2 {
        let g = groups(&v)
            .into_iter()
            .find(|x| x["id"].as_u64() == Some(*g))
            .expect("group");
        assert!(replicas(&g).contains(&2), "{g}");
    }
    let zone = zones(&v);
    for g in groups(&v) {
        let z: BTreeSet<&String> = replicas(&g).iter().map(|s| &zone[s]).collect();
        assert_eq!(z.len(), 3, "{g}");
    }
}

#[test]
fn a_server_whose_disks_all_failed_gets_no_replica_until_they_heal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let _g = Guard { dir: dir.clone() };
    up_six(&dir, &[]);
    ok(&dir, &["volume", "create", "v", "--size", "64MiB"]);
    let out = verify_through(&dir, 20, Duration::from_secs(2), || {
        ok(&dir, &["cds", "fail-disk", "b2", "1"]);
        ok(&dir, &["cds", "fail-disk", "b2", "2"]);
        wait_until(&dir, 60, "b2's replicas rebuilt elsewhere", |v| {
            moving(v) == 0
                && load(v).get(&2) == Some(&0)
                && groups(v).iter().all(|g| replicas(g).len() == 3)
        });
    });
    assert!(out.contains("io errors 0"), "{out}");
    // b2 lives on and is heard, but with no disk to hold one it is
    // offered no replica, although it holds fewer than any other server.
    let st = ok(&dir, &["cds", "status"]);
    let row = st
        .lines()
        .find(|l| l.contains(" b2 "))
        .expect("b2 in the tree");
    assert!(row.ends_with("up") && row.contains("0X+0X"), "{st}");
    std::thread::sleep(Duration::from_secs(3));
    let v = cluster_view(&dir);
    assert_eq!(load(&v).get(&2), Some(&0), "b2 was given a replica: {v:#}");
    assert_eq!(moving(&v), 0, "{v:#}");
    // Healed, its disks take replicas again: balance gives it its share.
    ok(&dir, &["cds", "fault", "clear", "b2"]);
    let took = wait_until(&dir, 90, "b2 balanced back in", |v| {
        moving(v) == 0 && balanced(&load(v))
    });
    eprintln!(
        "b2's disks healed: replicas balanced back in {:.1} s",
        took.as_secs_f64()
    );
}

/// The pool of each replica's disk, from the cluster view: (group's pool,
/// disk's pool, server) for every replica a server reported.
fn replica_pools(v: &serde_json::Value) -> Vec<(String, String, u64)> {
    let pool_of_disk = |server: u64, disk: usize| -> String {
        v["servers"]
            .as_array()
            .expect("servers")
            .iter()
            .find(|s| s["id"].as_u64() == Some(server))
            .and_then(|s| s["pools"].as_array())
            .and_then(|p| p.get(disk))
            .and_then(|p| p.as_str())
            .unwrap_or("default")
            .to_string()
    };
    let group_pool: BTreeMap<u64, String> = groups(v)
        .iter()
        .map(|g| {
            (
                g["id"].as_u64().expect("id"),
                g["pool"].as_str().unwrap_or("default").to_string(),
            )
        })
        .collect();
    v["replica_disks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let server = r["server"].as_u64().expect("server");
            let disk = r["disk"].as_u64().expect("disk") as usize;
            let group = r["group"].as_u64().expect("group");
            (
                group_pool.get(&group).cloned().unwrap_or_default(),
                pool_of_disk(server, disk),
                server,
            )
        })
        .collect()
}

#[test]
fn each_pool_keeps_its_groups_on_its_own_disks_through_a_disk_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let _g = Guard { dir: dir.clone() };
    // Four servers with an ssd and an hdd, one with two ssds.
    let topo = tmp.path().join("pools.toml");
    let node = |zone: &str, rack: &str, media: &str| {
        format!("[[node]]\nzone = \"{zone}\"\nrack = \"{rack}\"\nmedia = [{media}]\n")
    };
    let both = "\"ssd\", \"hdd\"";
    std::fs::write(
        &topo,
        "[[pool]]\nname = \"fast\"\nmedia = \"ssd\"\n[[pool]]\nname = \"bulk\"\nmedia = \"hdd\"\n"
            .to_string()
            + &node("z1", "r1", both)
            + &node("z2", "r1", both)
            + &node("z3", "r1", both)
            + &node("z1", "r2", both)
            + &node("z2", "r2", "\"ssd\", \"ssd\""),
    )
    .unwrap();
    let up = ok(
        &dir,
        &[
            "cds",
            "up",
            "--topology",
            topo.to_str().unwrap(),
            "--groups",
            "4",
            "--tick-ms",
            "20",
            "--repair-grace",
            "2s",
        ],
    );
    assert!(up.contains("8 BlockGroups (4 per pool)"), "{up}");
    ok(
        &dir,
        &["volume", "create", "v", "--size", "64MiB", "--pool", "bulk"],
    );
    let err = fails(
        &dir,
        &["volume", "create", "w", "--size", "64MiB", "--pool", "blk"],
    );
    assert!(
        err.contains("no server has a disk in pool \"blk\""),
        "{err}"
    );
    let all_reported = |v: &serde_json::Value| replica_pools(v).len() == 8 * 3;
    wait_until(&dir, 30, "every replica reported", all_reported);
    let v = cluster_view(&dir);
    let check = |v: &serde_json::Value| {
        for (group_pool, disk_pool, server) in replica_pools(v) {
            assert_eq!(group_pool, disk_pool, "a replica on b{server}: {v:#}");
            assert!(
                !(server == 5 && group_pool == "bulk"),
                "b5 has no hdd: {v:#}"
            );
        }
    };
    check(&v);
    // b1's hdd fails during IO: its bulk replicas are rebuilt on the one
    // other server with an hdd (b4), never on b5; b1 keeps serving its
    // fast ones from its ssd.
    let out = verify_through(&dir, 25, Duration::from_secs(2), || {
        ok(&dir, &["cds", "fail-disk", "b1", "2"]);
        wait_until(&dir, 60, "b1's bulk replicas rebuilt", |v| {
            moving(v) == 0
                && all_reported(v)
                && !replica_pools(v)
                    .iter()
                    .any(|(p, _, s)| *s == 1 && p == "bulk")
        });
    });
    assert!(
        out.contains("io errors 0") && out.contains("PASSED"),
        "{out}"
    );
    let v = cluster_view(&dir);
    check(&v);
    let now = replica_pools(&v);
    assert_eq!(
        now.iter()
            .filter(|(p, _, s)| *s == 4 && p == "bulk")
            .count(),
        4,
        "{v:#}"
    );
    assert!(now.iter().any(|(p, _, s)| *s == 1 && p == "fast"), "{v:#}");
    let st = ok(&dir, &["cds", "status"]);
    assert!(st.contains("pool bulk: 4 groups"), "{st}");
    assert!(st.contains("pool fast: 4 groups"), "{st}");
}

#[test]
fn a_repair_installs_snapshots_at_the_set_rate_and_status_shows_their_progress() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let _g = Guard { dir: dir.clone() };
    // Frequent snapshots (the log kept behind one is as short), installs
    // held to 2 MiB/s per group: a new replica catches up by a snapshot
    // install slow enough to watch.
    up_six(&dir, &["--snapshot-every", "100", "--install-rate", "2MiB"]);
    let err = fails(
        &dir.with_file_name("d"),
        &["cds", "up", "--install-rate", "1k"],
    );
    assert!(
        err.contains("--install-rate must be 0 (unlimited) or at least 64 KiB/s"),
        "{err}"
    );
    ok(&dir, &["volume", "create", "v", "--size", "64MiB"]);
    // Fill the blocks the verify below uses (48 MiB: three groups).
    verify_through(&dir, 6, Duration::ZERO, || {});
    let info: serde_json::Value =
        serde_json::from_str(&ok(&dir, &["volume", "info", "v", "--json"])).expect("json");
    let block0 = &info["blocks"][0];
    let leader = block0["leader"].as_u64().expect("leader");
    let victim = block0["replicas"]
        .as_array()
        .expect("replicas")
        .iter()
        .filter_map(|r| r.as_u64())
        .find(|&r| r != leader)
        .expect("a follower of block 0's group");
    let group = block0["group"].as_u64().expect("group");
    let mut seen: Option<serde_json::Value> = None;
    let mut shown = String::new();
    let mut took = Duration::ZERO;
    let out = verify_through(&dir, 25, Duration::from_secs(2), || {
        ok(&dir, &["cds", "kill", &format!("b{victim}")]);
        let killed = Instant::now();
        wait_until(&dir, 60, "block 0's group rebuilt", |v| {
            for i in v["installs"].as_array().cloned().unwrap_or_default() {
                let (have, total) = (i["have_bytes"].as_u64(), i["total_bytes"].as_u64());
                if i["group"].as_u64() == Some(group)
                    && seen.is_none()
                    && have.zip(total).is_some_and(|(h, t)| h > 0 && h < t)
                {
                    seen = Some(i.clone());
                    shown = ok(&dir, &["cds", "status"]);
                }
            }
            moving(v) == 0
                && groups(v)
                    .iter()
                    .find(|g| g["id"].as_u64() == Some(group))
                    .is_some_and(|g| !replicas(g).contains(&victim))
        });
        took = killed.elapsed();
    });
    assert!(out.contains("io errors 0"), "{out}");
    let seen = seen.expect("no install of block 0's group was seen half done");
    eprintln!(
        "block 0's group rebuilt {:.1} s after b{victim} was killed (grace 2 s); an install half done: {seen}",
        took.as_secs_f64()
    );
    assert!(
        shown.contains(&format!("group {group}: snapshot install to b")),
        "{shown}"
    );
}
