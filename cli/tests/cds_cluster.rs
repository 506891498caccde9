//! `cdsctl cds` and `cdsctl volume` against the real binary: a CDS
//! cluster of real processes (3 Masters, 3 BlockServers) serving a volume
//! through kill -9 and SIGSTOP of BlockServers and the loss of the
//! leading Master, with `volume verify` checking every read and the
//! final read-back; bad input refused with clear errors; a stale writer
//! fenced.
//!
//! Every cluster lives in a temp directory behind a guard that runs
//! `cds down` and SIGKILLs any pid left in cds.json whose command line
//! names the directory, passed or failed.

mod common;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use cds::cdscluster::CdsCluster;
use cds::volume::{Mode, Volume, VolumeError};
use common::cds::{cdsctl, fails, leading_master, ok, process, verify_through, Guard};
use common::text;

#[test]
fn cds_errors_without_a_cluster_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("none");
    let err = fails(&dir, &["cds", "status"]);
    assert!(
        err.contains("no CDS cluster") && err.contains("cds up"),
        "{err}"
    );
    let err = fails(&dir, &["volume", "ls"]);
    assert!(err.contains("no CDS cluster"), "{err}");
    let err = fails(&dir, &["cds", "up", "--servers", "2"]);
    assert!(err.contains("between 3 and 32"), "{err}");
    let err = fails(&dir, &["cds", "up", "--worker-rate", "200000"]);
    assert!(err.contains("between 0 and 100000"), "{err}");
    let err = fails(&dir, &["cds", "kill", "x1"]);
    assert!(err.contains("names no process"), "{err}");
    let err = fails(&dir, &["volume", "create", "v", "--size", "10XB"]);
    assert!(err.contains("unknown unit"), "{err}");
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("precious.txt"), "x").unwrap();
    let err = fails(&other, &["cds", "up"]);
    assert!(err.contains("not empty"), "{err}");
}

/// How many groups BlockServer `name` leads, by `cds status --json`.
fn leads_of(dir: &Path, name: &str) -> u64 {
    process(dir, name)["leads"]
        .as_u64()
        .expect("the server's leader count")
}

/// The Raft role Master `name` reports, by `cds status --json`.
fn master_role(dir: &Path, name: &str) -> String {
    process(dir, name)["master"]["role"].to_string()
}

/// The BlockServer leading the most groups, and the leading Master.
fn leaders(dir: &Path) -> (String, String) {
    let v: serde_json::Value =
        serde_json::from_str(&ok(dir, &["cds", "status", "--json"])).expect("status json");
    let procs = v["processes"].as_array().expect("processes").clone();
    let server = procs
        .iter()
        .filter(|p| p["name"].as_str().unwrap_or("").starts_with('b'))
        .max_by_key(|p| p["leads"].as_u64().unwrap_or(0))
        .expect("a server")["name"]
        .as_str()
        .unwrap()
        .to_string();
    (server, leading_master(dir))
}

#[test]
fn a_cds_cluster_serves_a_volume_through_crashes_pauses_and_master_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let _g = Guard { dir: dir.clone() };
    let up = ok(&dir, &["cds", "up", "--groups", "8", "--tick-ms", "20"]);
    assert!(up.contains("3 Masters, 3 BlockServers"), "{up}");
    ok(&dir, &["volume", "create", "v", "--size", "256MiB"]);

    // A write across a block boundary reads back whole.
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i * 7 + i / 4093) as u8).collect();
    let file = tmp.path().join("data");
    std::fs::write(&file, &data).unwrap();
    let f = file.to_str().unwrap();
    ok(
        &dir,
        &["volume", "write", "v", "--offset", "79M", "--file", f],
    );
    let out = cdsctl(
        &dir,
        &["volume", "read", "v", "--offset", "79M", "--length", "3M"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(out.stdout == data, "read back differs");
    let info: serde_json::Value =
        serde_json::from_str(&ok(&dir, &["volume", "info", "v", "--json"])).unwrap();
    assert_eq!(info["blocks"].as_array().unwrap().len(), 2, "{info}");

    // Bad input: clear errors.
    let err = fails(
        &dir,
        &["volume", "read", "v", "--offset", "256M", "--length", "4k"],
    );
    assert!(err.contains("past the end"), "{err}");
    let err = fails(
        &dir,
        &["volume", "read", "v", "--offset", "100", "--length", "4k"],
    );
    assert!(err.contains("multiples of 4096"), "{err}");
    let err = fails(&dir, &["volume", "read", "nope", "--length", "4k"]);
    assert!(err.contains("no volume named"), "{err}");
    let err = fails(&dir, &["volume", "create", "v", "--size", "1GiB"]);
    assert!(err.contains("exists already"), "{err}");
    let err = fails(&dir, &["volume", "resize", "v", "--size", "128MiB"]);
    assert!(err.contains("would lose data"), "{err}");

    // Faults while verify checks every read.
    let (server, master) = leaders(&dir);
    verify_through(&dir, 6, Duration::from_secs(2), || {
        ok(&dir, &["cds", "kill", &server]);
    });
    ok(&dir, &["cds", "restart", &server]);
    let (server, _) = leaders(&dir);
    verify_through(&dir, 6, Duration::from_secs(2), || {
        ok(&dir, &["cds", "pause", &server]);
        std::thread::sleep(Duration::from_secs(2));
        ok(&dir, &["cds", "resume", &server]);
    });
    // A partitioned BlockServer (its Raft links to the others cut both
    // ways) loses every leadership while verify goes on; healed, it
    // catches up.
    let (server, _) = leaders(&dir);
    verify_through(&dir, 8, Duration::from_secs(2), || {
        ok(&dir, &["cds", "partition", &server]);
        std::thread::sleep(Duration::from_secs(4));
        let leads = leads_of(&dir, &server);
        ok(&dir, &["cds", "heal"]);
        assert_eq!(
            leads, 0,
            "{server} still leads {leads} groups while partitioned"
        );
    });
    // A partitioned Master leader (its Raft links to the other Masters
    // cut; clients still reach it) gives way to a new leader, and the
    // control plane answers from the majority while verify goes on.
    verify_through(&dir, 8, Duration::from_secs(2), || {
        ok(&dir, &["cds", "partition", &master]);
        std::thread::sleep(Duration::from_secs(3));
        let role = master_role(&dir, &master);
        let created = cdsctl(&dir, &["volume", "create", "w", "--size", "64MiB"]);
        ok(&dir, &["cds", "heal"]);
        assert_ne!(role, "\"leader\"", "{master} still leads while partitioned");
        assert!(
            created.status.success(),
            "no volume created while {master} was cut off: {}",
            text(&created)
        );
    });
    ok(&dir, &["volume", "rm", "w"]);
    let (_, master) = leaders(&dir);
    verify_through(&dir, 6, Duration::from_secs(2), || {
        ok(&dir, &["cds", "kill", &master]);
    });
    // The data written before the faults is still there.
    let out = cdsctl(
        &dir,
        &["volume", "read", "v", "--offset", "79M", "--length", "3M"],
    );
    assert!(out.stdout == data, "read back differs after the faults");

    // A stale writer is fenced by a later open.
    let c = CdsCluster::load(&dir).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let a = Volume::open(&c.access(), "v", Mode::Write).await.unwrap();
        a.write(0, Bytes::from(vec![1u8; 4096])).await.unwrap();
        let b = Volume::open(&c.access(), "v", Mode::Write).await.unwrap();
        b.write(0, Bytes::from(vec![2u8; 4096])).await.unwrap();
        let e = a.write(0, Bytes::from(vec![3u8; 4096])).await.unwrap_err();
        assert!(matches!(e, VolumeError::Fenced { .. }), "{e:?}");
        let r = Volume::open(&c.access(), "v", Mode::Read).await.unwrap();
        assert_eq!(&r.read(0, 4096).await.unwrap()[..], &[2u8; 4096][..]);
    });

    // Grow, list, remove.
    ok(&dir, &["volume", "resize", "v", "--size", "512MiB"]);
    let ls: serde_json::Value =
        serde_json::from_str(&ok(&dir, &["volume", "ls", "--json"])).unwrap();
    assert_eq!(ls[0]["size"], 512u64 << 20, "{ls}");
    let info: serde_json::Value =
        serde_json::from_str(&ok(&dir, &["volume", "info", "v", "--json"])).unwrap();
    let id = info["id"].as_u64().expect("volume id");
    let held: std::collections::BTreeSet<u64> = info["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["group"].as_u64().unwrap())
        .collect();
    assert!(!held.is_empty(), "{info}");
    ok(&dir, &["volume", "rm", "v"]);
    // Every group that held its blocks purges them, told by heartbeats
    // (each leader says so in its log).
    let c = CdsCluster::load(&dir).unwrap();
    let marker = format!(": deleted volume {id} purged");
    let start = std::time::Instant::now();
    loop {
        let mut purged = std::collections::BTreeSet::new();
        for s in &c.servers {
            let log = std::fs::read_to_string(s.data_dir.join("log")).unwrap_or_default();
            for line in log.lines().filter(|l| l.contains(&marker)) {
                let g = line
                    .split(": group ")
                    .nth(1)
                    .and_then(|r| r.split(':').next())
                    .and_then(|g| g.parse::<u64>().ok());
                purged.extend(g);
            }
        }
        if purged == held {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "groups {held:?} held volume {id}; purged so far: {purged:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let ls = ok(&dir, &["volume", "ls"]);
    assert!(!ls.contains("\nv "), "{ls}");
}

#[test]
fn an_idle_volume_gets_back_the_space_a_rollback_abandoned() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let _g = Guard { dir: dir.clone() };
    // One group holds every slice: reclaiming them takes many steps, more
    // than the few that applying the rollback itself drives.
    ok(&dir, &["cds", "up", "--groups", "1", "--tick-ms", "20"]);
    ok(&dir, &["volume", "create", "v", "--size", "64MiB"]);
    let file = tmp.path().join("data");
    for (i, snap) in ["a", "b"].iter().enumerate() {
        let data: Vec<u8> = (0..64u32 << 20)
            .map(|x| (x / 4096 + i as u32 * 31) as u8)
            .collect();
        std::fs::write(&file, &data).unwrap();
        ok(
            &dir,
            &["volume", "write", "v", "--file", file.to_str().unwrap()],
        );
        if i == 0 {
            ok(&dir, &["volume", "snapshot", "v", snap]);
        }
    }
    let list = |dir: &Path| -> serde_json::Value {
        serde_json::from_str(&ok(dir, &["volume", "snapshots", "v", "--json"])).expect("json")
    };
    let before = list(&dir);
    assert_eq!(before["head_bytes"], 64u64 << 20, "{before}");
    let abandoned = before["head"].to_string();
    ok(&dir, &["volume", "rollback", "v", "a"]);
    // No IO from here on: the space must come back anyway.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = list(&dir);
        if now["gone_versions"].get(&abandoned).is_none() && now["gone_bytes"] == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rolled-back head's slices were not reclaimed: {now}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_declared_topology_places_each_group_in_distinct_zones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let _g = Guard { dir: dir.clone() };
    // Bad files and flags are refused before anything starts.
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[[node]]\nzone = \"a\"\nrak = \"1\"\n").unwrap();
    let err = fails(&dir, &["cds", "up", "--topology", bad.to_str().unwrap()]);
    assert!(err.contains("rak") && err.contains("bad.toml"), "{err}");
    let err = fails(
        &dir,
        &["cds", "up", "--topology", "default", "--servers", "4"],
    );
    assert!(err.contains("cannot be used with"), "{err}");
    // Four nodes, three zones: zone a has two racks of one node each.
    let file = tmp.path().join("topology.toml");
    let node = |z: &str, r: &str, d: u32| {
        format!("[[node]]\nregion = \"eu\"\nzone = \"{z}\"\nrack = \"{r}\"\ndisks = {d}\n")
    };
    let text = node("a", "1", 1) + &node("a", "2", 2) + &node("b", "1", 1) + &node("c", "1", 3);
    std::fs::write(&file, text).unwrap();
    let up = ok(
        &dir,
        &[
            "cds",
            "up",
            "--topology",
            file.to_str().unwrap(),
            "--groups",
            "8",
            "--tick-ms",
            "20",
        ],
    );
    assert!(
        up.contains("4 BlockServers (7 disks, 3 zones, 4 racks)"),
        "{up}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&ok(&dir, &["cds", "status", "--json"])).expect("status json");
    let zone_of: std::collections::BTreeMap<u64, String> = v["cluster"]["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .map(|s| {
            (
                s["id"].as_u64().unwrap(),
                s["location"]["zone"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(zone_of.len(), 4, "{zone_of:?}");
    let groups = v["cluster"]["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 8);
    let mut load = std::collections::BTreeMap::<u64, usize>::new();
    for g in groups {
        let zones: std::collections::BTreeSet<&String> = g["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                *load.entry(r.as_u64().unwrap()).or_default() += 1;
                &zone_of[&r.as_u64().unwrap()]
            })
            .collect();
        assert_eq!(zones.len(), 3, "two replicas in one zone: {g}");
    }
    // Zones b and c have one node each: it holds every group; zone a's
    // two nodes share its replicas evenly.
    assert_eq!((load[&3], load[&4]), (8, 8), "{load:?}");
    assert_eq!((load[&1], load[&2]), (4, 4), "{load:?}");
    // The status shows the tree and the spread.
    let st = ok(&dir, &["cds", "status"]);
    assert!(
        st.contains("eu / a / 2") && st.contains("8 of 8 groups spread over as many zones"),
        "{st}"
    );
}

#[test]
fn leaders_are_balanced_again_after_a_restart_concentrates_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let _g = Guard { dir: dir.clone() };
    ok(&dir, &["cds", "up", "--groups", "12", "--tick-ms", "20"]);
    let leads = |dir: &Path| -> Vec<u64> {
        ["b1", "b2", "b3"]
            .iter()
            .map(|b| leads_of(dir, b))
            .collect()
    };
    // b1 dies: the other two take its groups' leadership; back, it leads
    // nothing until the Master moves some leaders to it.
    ok(&dir, &["cds", "kill", "b1"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while leads(&dir)[1] + leads(&dir)[2] < 12 {
        assert!(std::time::Instant::now() < deadline, "{:?}", leads(&dir));
        std::thread::sleep(Duration::from_millis(200));
    }
    ok(&dir, &["cds", "restart", "b1"]);
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_secs(30);
    loop {
        let l = leads(&dir);
        let (lo, hi) = (
            l.iter().copied().min().unwrap_or(0),
            l.iter().copied().max().unwrap_or(0),
        );
        if l.iter().sum::<u64>() == 12 && hi - lo <= 1 {
            eprintln!(
                "leaders {l:?} balanced {:.1}s after the restart",
                started.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "leaders not balanced 30 s after the restart: {l:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
