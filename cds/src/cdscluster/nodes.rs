//! Changing a local cluster's BlockServers: add an empty one, drain one
//! (the Master moves its replicas away), forget a drained one.

use std::path::Path;
use std::time::{Duration, Instant};

use super::directory::{proc_dir, CdsCluster, ProcName, Role};
use super::lifecycle::{program, write_config, LOG_LINES, MAX_SERVERS};
use crate::blockserver::process::BlockServerFileConfig;
use crate::devcluster::directory::{pick_ports, NodeEntry};
use crate::devcluster::process::{self, ProcState};
use crate::error::{bail, Context, Error, Result};
use crate::master::api::{ClusterView, DrainRequest};
use crate::master::Location;
use crate::topology;

/// Where a new BlockServer stands and how many disks it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewServer {
    pub location: Location,
    pub disks: u32,
    /// The pool of its disks: empty (server 1's, in order), one name for
    /// all, or one per disk.
    pub pools: Vec<String>,
}

/// How long a new server has to register with the Master.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a removed server has to stop before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Adds an empty BlockServer to the cluster in `dir` (its next number,
/// free loopback ports, the other servers' settings) and starts it;
/// returns its name and its disks' pools once the Master lists it.
/// Capacity balance then moves replicas to it.
pub fn add_server(dir: &Path, exe: &Path, new: &NewServer) -> Result<(ProcName, Vec<String>)> {
    topology::check_location(&new.location).map_err(|e| Error::Invalid(e.to_string()))?;
    if !(1..=topology::MAX_DISKS).contains(&new.disks) {
        bail!(
            Invalid,
            "--disks must be between 1 and {}, got {}",
            topology::MAX_DISKS,
            new.disks
        );
    }
    let mut c = CdsCluster::load(dir)?;
    if c.servers.len() as u64 >= MAX_SERVERS {
        bail!(
            Invalid,
            "the cluster has {MAX_SERVERS} BlockServers, the most it may have"
        );
    }
    let template = c.servers.first().ok_or_else(|| {
        Error::Cluster("the cluster has no BlockServer to copy settings from".into())
    })?;
    let base = BlockServerFileConfig::load(&template.data_dir.join("config.json"))?;
    let pools = disk_pools(new, &base.pools)?;
    let shown: Vec<String> = (0..new.disks as usize)
        .map(|i| crate::pool::of_disk(&pools, i).to_string())
        .collect();
    let id = c.servers.iter().map(|e| e.id).max().unwrap_or(0) + 1;
    let name = ProcName {
        role: Role::BlockServer,
        id,
    };
    let data_dir = proc_dir(dir, name);
    let ports = pick_ports(2)?;
    let cfg = BlockServerFileConfig {
        id,
        raft_addr: ports[0],
        data_addr: ports[1],
        data_dir: data_dir.clone(),
        disks: (1..=new.disks)
            .map(|d| data_dir.join(format!("disk{d}")))
            .collect(),
        location: new.location.clone(),
        pools: pools.clone(),
        ..base
    };
    write_config(&data_dir, &cfg)?;
    let entry = NodeEntry {
        id,
        pid: None,
        raft_addr: ports[0].to_string(),
        http_addr: ports[1].to_string(),
        data_dir,
    };
    c.servers.push(entry.clone());
    let mut child = process::spawn_node(&program(exe, Role::BlockServer), &entry)?;
    c.entry_mut(name)?.pid = Some(child.id());
    c.save(dir)?;
    let master = c.master();
    let deadline = Instant::now() + REGISTER_TIMEOUT;
    loop {
        if let Some(code) = child.try_wait().context("checking the process")? {
            bail!(
                Cluster,
                "{name} exited right after start ({code}); last log lines:\n{}",
                process::log_tail(&entry, LOG_LINES)
            );
        }
        if let Ok(v) = master.get::<ClusterView>("/v1/cluster") {
            if v.servers.iter().any(|s| s.id == id) {
                return Ok((name, shown));
            }
        }
        if Instant::now() >= deadline {
            bail!(
                Cluster,
                "{name} did not register with the Master within {REGISTER_TIMEOUT:?}; last log lines:\n{}",
                process::log_tail(&entry, LOG_LINES)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pool of each of a new server's disks (empty: all default): as
/// asked (one name for all, or one per disk), else server 1's disks'
/// pools in order, repeated.
fn disk_pools(new: &NewServer, template: &[String]) -> Result<Vec<String>> {
    let n = new.disks as usize;
    for p in &new.pools {
        crate::pool::check_name(p).map_err(|e| Error::Invalid(format!("--pool: {e}")))?;
    }
    Ok(match new.pools.len() {
        0 if template.is_empty() => Vec::new(),
        0 => template.iter().cycle().take(n).cloned().collect(),
        1 => vec![new.pools[0].clone(); n],
        k if k == n => new.pools.clone(),
        k => bail!(
            Invalid,
            "--pool: {k} names for {n} disks (give one for all, or one per disk)"
        ),
    })
}

fn server_id(name: ProcName) -> Result<u64> {
    if name.role != Role::BlockServer {
        bail!(Invalid, "{name} is not a BlockServer (b1, b2, ...)");
    }
    Ok(name.id)
}

/// Starts (`true`) or stops draining BlockServer `name`: while drained it
/// gets no new replicas and the Master moves its replicas elsewhere, one
/// at a time per server, each by add learner, catch up, change voters.
pub fn drain(dir: &Path, name: ProcName, drained: bool) -> Result<()> {
    let id = server_id(name)?;
    let c = CdsCluster::load(dir)?;
    c.entry(name)?;
    c.admin()
        .post::<_, serde_json::Value>(
            &format!("/v1/servers/{id}/drain"),
            &DrainRequest { drained },
        )
        .map_err(|e| Error::Cluster(format!("the Master refused: {e}")))?;
    Ok(())
}

/// Forgets BlockServer `name` (the Master refuses while it holds a
/// replica or a move involves it: drain it first), stops its process and
/// drops it from the cluster's table. Its directory is left on disk.
pub fn remove_server(dir: &Path, name: ProcName) -> Result<()> {
    let id = server_id(name)?;
    let mut c = CdsCluster::load(dir)?;
    let e = c.entry(name)?.clone();
    c.admin()
        .delete::<serde_json::Value>(&format!("/v1/servers/{id}"))
        .map_err(|e| Error::Cluster(format!("the Master refused: {e}")))?;
    if process::state(&e) != ProcState::Down {
        process::stop(&e, STOP_GRACE)?;
    }
    c.servers.retain(|s| s.id != id);
    c.save(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_server_s_pools_are_asked_or_copied_from_server_1() {
        let new = |disks: u32, pools: &[&str]| NewServer {
            location: Location::default(),
            disks,
            pools: pools.iter().map(|p| p.to_string()).collect(),
        };
        let two = vec!["fast".to_string(), "bulk".to_string()];
        assert!(disk_pools(&new(2, &[]), &[]).unwrap().is_empty());
        assert_eq!(
            disk_pools(&new(3, &[]), &two).unwrap(),
            ["fast", "bulk", "fast"]
        );
        assert_eq!(
            disk_pools(&new(2, &["bulk"]), &two).unwrap(),
            ["bulk", "bulk"]
        );
        assert_eq!(disk_pools(&new(2, &["a", "b"]), &two).unwrap(), ["a", "b"]);
        let e = disk_pools(&new(3, &["a", "b"]), &two)
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 names for 3 disks"), "{e}");
        let e = disk_pools(&new(1, &["a b"]), &two).unwrap_err().to_string();
        assert!(e.contains("--pool: pool \"a b\""), "{e}");
    }
}
