//! A declared topology: where every BlockServer (a *node*) stands in the
//! failure-domain hierarchy, Region > Zone > Rack > Node > Disk, and how
//! many disks it has. `cdsctl cds up --topology FILE` starts the nodes a
//! file declares; [`Topology::default_six`] is the built-in one.
//!
//! The file is TOML, one `[[node]]` table per BlockServer, in id order:
//!
//! ```toml
//! [[node]]
//! region = "local"   # optional, "local" when left out
//! zone = "z1"
//! rack = "r1"
//! disks = 2          # optional, 2 when left out
//! ```
//!
//! Pools (see [`crate::pool`]) are declared by media: each `[[pool]]`
//! takes the disks of one media, and each node then says the media of
//! each of its disks (its disk count is that list's length):
//!
//! ```toml
//! [[pool]]
//! name = "fast"
//! media = "ssd"
//!
//! [[pool]]
//! name = "bulk"
//! media = "hdd"
//!
//! [[node]]
//! zone = "z1"
//! rack = "r1"
//! media = ["ssd", "hdd"]
//! ```
//!
//! With no `[[pool]]`, every disk is in the one default pool.
//!
//! Unknown keys are refused (a typo must not silently place replicas in
//! one rack), as are names that are empty, too long or not
//! `[A-Za-z0-9._-]`, node and disk counts out of bounds, a disk whose
//! media no pool takes, two pools of one media, and a pool with disks on
//! fewer than three nodes (its groups could not be placed).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::master::Location;
use crate::pool;

/// The fewest and most nodes a topology may declare (`cds up`'s bounds).
pub const MIN_NODES: usize = 3;
pub const MAX_NODES: usize = 32;
/// The most disks one node may have.
pub const MAX_DISKS: u32 = 8;
/// The longest region, zone or rack name.
pub const MAX_NAME: usize = 64;
/// The largest topology file read.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// One node of a topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeDecl {
    #[serde(default = "default_region")]
    pub region: String,
    pub zone: String,
    pub rack: String,
    /// How many disks (2 when neither this nor `media` is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disks: Option<u32>,
    /// The media of each disk (then `disks` is its length): how the
    /// disks are dealt to the declared pools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<String>,
}

/// A pool: the disks of one media.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolDecl {
    pub name: String,
    pub media: String,
}

fn default_region() -> String {
    "local".into()
}

/// Disks of a node that gives neither a count nor media.
const DEFAULT_DISKS: u32 = 2;

impl NodeDecl {
    pub fn location(&self) -> Location {
        Location {
            region: self.region.clone(),
            zone: self.zone.clone(),
            rack: self.rack.clone(),
        }
    }

    /// How many disks it has: its media list's length when it gives one.
    pub fn disk_count(&self) -> u32 {
        if self.media.is_empty() {
            self.disks.unwrap_or(DEFAULT_DISKS)
        } else {
            self.media.len() as u32
        }
    }
}

/// A whole topology: its nodes, node `i` (from 0) being BlockServer
/// `i + 1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Declared pools; none: one default pool of every disk.
    #[serde(rename = "pool", default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<PoolDecl>,
    #[serde(rename = "node")]
    pub nodes: Vec<NodeDecl>,
}

/// Why a topology was refused.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("cannot read topology file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("topology file {path} is {len} bytes; the limit is {MAX_FILE_BYTES}")]
    TooLarge { path: String, len: u64 },
    #[error("topology file {path}: {why}")]
    Parse { path: String, why: String },
    #[error("topology: {0}")]
    Invalid(String),
}

impl Topology {
    /// The built-in topology: 6 nodes over 3 zones, 2 racks per zone, 2
    /// disks each (so a group's 3 replicas land in 3 zones).
    pub fn default_six() -> Topology {
        let nodes = (0..6)
            .map(|i| NodeDecl {
                region: default_region(),
                zone: format!("z{}", i / 2 + 1),
                rack: format!("r{}", i % 2 + 1),
                disks: Some(2),
                media: Vec::new(),
            })
            .collect();
        Topology {
            pools: Vec::new(),
            nodes,
        }
    }

    /// The pool of each disk of node `i` (from 0), in order: empty when
    /// the topology declares no pool (every disk in the default one).
    pub fn disk_pools(&self, i: usize) -> Vec<String> {
        let Some(node) = self.nodes.get(i) else {
            return Vec::new();
        };
        if self.pools.is_empty() {
            return Vec::new();
        }
        node.media
            .iter()
            .map(|m| {
                self.pools
                    .iter()
                    .find(|p| &p.media == m)
                    .map_or_else(pool::default_pool, |p| p.name.clone())
            })
            .collect()
    }

    /// The names of the pools, the default one when none is declared.
    pub fn pool_names(&self) -> Vec<String> {
        if self.pools.is_empty() {
            vec![pool::default_pool()]
        } else {
            self.pools.iter().map(|p| p.name.clone()).collect()
        }
    }

    /// Reads and checks a topology file.
    pub fn load(path: &Path) -> Result<Topology, TopologyError> {
        let shown = path.display().to_string();
        let read = |source| TopologyError::Read {
            path: shown.clone(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read)?.len();
        if len > MAX_FILE_BYTES {
            return Err(TopologyError::TooLarge { path: shown, len });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Topology::parse(&text).map_err(|e| match e {
            TopologyError::Parse { why, .. } => TopologyError::Parse { path: shown, why },
            other => other,
        })
    }

    /// Parses and checks a topology's TOML text.
    pub fn parse(text: &str) -> Result<Topology, TopologyError> {
        let t: Topology = toml::from_str(text).map_err(|e| TopologyError::Parse {
            path: "(text)".into(),
            why: e.to_string(),
        })?;
        t.check()?;
        Ok(t)
    }

    /// Checks the bounds and names.
    pub fn check(&self) -> Result<(), TopologyError> {
        let n = self.nodes.len();
        if !(MIN_NODES..=MAX_NODES).contains(&n) {
            return Err(TopologyError::Invalid(format!(
                "{n} nodes declared; between {MIN_NODES} and {MAX_NODES} are supported"
            )));
        }
        for (i, node) in self.nodes.iter().enumerate() {
            check_location(&node.location())
                .map_err(|e| TopologyError::Invalid(format!("node {}: {e}", i + 1)))?;
            if let Some(d) = node
                .disks
                .filter(|&d| !node.media.is_empty() && d as usize != node.media.len())
            {
                return Err(TopologyError::Invalid(format!(
                    "node {}: disks = {d} but {} media given (one per disk)",
                    i + 1,
                    node.media.len()
                )));
            }
            let disks = node.disk_count();
            if !(1..=MAX_DISKS).contains(&disks) {
                return Err(TopologyError::Invalid(format!(
                    "node {}: {disks} disks; between 1 and {MAX_DISKS}",
                    i + 1,
                )));
            }
            for m in &node.media {
                pool::check_name(m).map_err(|_| {
                    TopologyError::Invalid(format!(
                        "node {}: media {m:?}: 1 to {} characters of A-Z a-z 0-9 . _ -",
                        i + 1,
                        pool::MAX_POOL_NAME
                    ))
                })?;
            }
        }
        self.check_pools()
    }

    /// Checks the pools: valid distinct names, one pool per media, every
    /// disk's media taken by a pool, every pool on at least three nodes.
    fn check_pools(&self) -> Result<(), TopologyError> {
        if self.pools.is_empty() {
            return Ok(());
        }
        let invalid = TopologyError::Invalid;
        for (k, p) in self.pools.iter().enumerate() {
            pool::check_name(&p.name).map_err(|e| invalid(e.to_string()))?;
            pool::check_name(&p.media).map_err(|_| {
                invalid(format!(
                    "pool {:?}: media {:?}: 1 to {} characters of A-Z a-z 0-9 . _ -",
                    p.name,
                    p.media,
                    pool::MAX_POOL_NAME
                ))
            })?;
            if let Some(q) = self.pools[..k].iter().find(|q| q.name == p.name) {
                return Err(invalid(format!("pool {:?} is declared twice", q.name)));
            }
            if let Some(q) = self.pools[..k].iter().find(|q| q.media == p.media) {
                return Err(invalid(format!(
                    "pools {:?} and {:?} both take media {:?}: one pool per media",
                    q.name, p.name, p.media
                )));
            }
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if node.media.is_empty() {
                return Err(invalid(format!(
                    "node {}: pools are declared by media, so each node lists the \
                     media of its disks (media = [\"{}\", ...])",
                    i + 1,
                    self.pools[0].media
                )));
            }
            if let Some(m) = node
                .media
                .iter()
                .find(|m| !self.pools.iter().any(|p| &p.media == *m))
            {
                return Err(invalid(format!(
                    "node {}: no pool takes media {m:?} (pools take {})",
                    i + 1,
                    self.pools
                        .iter()
                        .map(|p| format!("{:?}", p.media))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        for p in &self.pools {
            let nodes = self
                .nodes
                .iter()
                .filter(|n| n.media.contains(&p.media))
                .count();
            if nodes < MIN_NODES {
                return Err(invalid(format!(
                    "pool {:?} has disks on {nodes} nodes; its groups' {MIN_NODES} replicas \
                     need {MIN_NODES} (never two on one node)",
                    p.name
                )));
            }
        }
        Ok(())
    }

    /// The topology as TOML (what `load` reads back).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// Checks a location's names: 1 to [`MAX_NAME`] characters of A-Z a-z
/// 0-9 . _ - each.
pub fn check_location(l: &Location) -> Result<(), TopologyError> {
    for (what, name) in [("region", &l.region), ("zone", &l.zone), ("rack", &l.rack)] {
        let ok = !name.is_empty()
            && name.len() <= MAX_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            return Err(TopologyError::Invalid(format!(
                "{what} {name:?}: 1 to {MAX_NAME} characters of A-Z a-z 0-9 . _ -"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_spreads_six_nodes_over_three_zones_and_two_racks_each() {
        let t = Topology::default_six();
        t.check().unwrap();
        let zones: std::collections::BTreeSet<_> = t.nodes.iter().map(|n| &n.zone).collect();
        let racks: std::collections::BTreeSet<_> =
            t.nodes.iter().map(|n| (&n.zone, &n.rack)).collect();
        assert_eq!((zones.len(), racks.len()), (3, 6));
        assert_eq!(Topology::parse(&t.to_toml()).unwrap(), t);
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let node = |z: &str| format!("[[node]]\nzone = \"{z}\"\nrack = \"r\"\n");
        let three = node("a") + &node("b") + &node("c");
        Topology::parse(&three).unwrap();
        let e = Topology::parse(&(node("a") + &node("b"))).unwrap_err();
        assert!(e.to_string().contains("2 nodes declared"), "{e}");
        let e = Topology::parse(&(three.clone() + "[[node]]\nzone = \"d\"\nrak = \"r\"\n"))
            .unwrap_err();
        assert!(e.to_string().contains("rak"), "{e}");
        let e = Topology::parse(&(three.clone() + &node("a b"))).unwrap_err();
        assert!(e.to_string().contains("zone \"a b\""), "{e}");
        let e = Topology::parse(&(three + "[[node]]\nzone = \"d\"\nrack = \"r\"\ndisks = 0\n"))
            .unwrap_err();
        assert!(e.to_string().contains("0 disks"), "{e}");
        let e = Topology::parse("node = 3").unwrap_err();
        assert!(matches!(e, TopologyError::Parse { .. }), "{e}");
    }

    #[test]
    fn pools_take_the_disks_of_their_media() {
        let pools = "[[pool]]\nname = \"fast\"\nmedia = \"ssd\"\n\
                     [[pool]]\nname = \"bulk\"\nmedia = \"hdd\"\n";
        let node = |z: &str, media: &str| {
            format!("[[node]]\nzone = \"{z}\"\nrack = \"r\"\nmedia = [{media}]\n")
        };
        let both = "\"ssd\", \"hdd\"";
        let text = pools.to_string()
            + &node("a", both)
            + &node("b", both)
            + &node("c", both)
            + &node("a", "\"ssd\"");
        let t = Topology::parse(&text).unwrap();
        assert_eq!(t.disk_pools(0), vec!["fast", "bulk"]);
        assert_eq!(t.disk_pools(3), vec!["fast"]);
        assert_eq!(t.nodes[3].disk_count(), 1);
        assert_eq!(t.pool_names(), vec!["fast", "bulk"]);
        assert_eq!(Topology::parse(&t.to_toml()).unwrap(), t);
        // No pool declared: one default pool, every disk in it.
        let plain = Topology::default_six();
        assert!(plain.disk_pools(0).is_empty());
        assert_eq!(plain.pool_names(), vec!["default"]);
        // Refusals, each with its reason.
        let refused = |text: String, want: &str| {
            let e = Topology::parse(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{e} lacks {want:?}");
        };
        refused(
            pools.to_string() + &node("a", both) + &node("b", both) + &node("c", "\"ssd\""),
            "pool \"bulk\" has disks on 2 nodes",
        );
        refused(
            pools.to_string() + &node("a", both) + &node("b", both) + &node("c", "\"nvme\""),
            "no pool takes media \"nvme\"",
        );
        refused(
            pools.to_string()
                + &node("a", both)
                + &node("b", both)
                + "[[node]]\nzone = \"c\"\nrack = \"r\"\n",
            "node 3: pools are declared by media",
        );
        refused(
            "[[pool]]\nname = \"x\"\nmedia = \"ssd\"\n[[pool]]\nname = \"y\"\nmedia = \"ssd\"\n"
                .to_string()
                + &node("a", "\"ssd\"")
                + &node("b", "\"ssd\"")
                + &node("c", "\"ssd\""),
            "both take media \"ssd\"",
        );
        refused(
            pools.to_string()
                + &node("a", both)
                + &node("b", both)
                + "[[node]]\nzone = \"c\"\nrack = \"r\"\ndisks = 3\nmedia = [\"ssd\", \"hdd\"]\n",
            "disks = 3 but 2 media given",
        );
    }
}
