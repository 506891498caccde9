//! The cluster directory: `cluster.json` (the node table every `cdsctl kv`
//! subcommand reads) and each node's `nN/config.json` (what `cdsctl node`
//! reads).
//!
//! The directory is the only state the client keeps between invocations, so
//! everything a later command needs (ids, pids, addresses, where each node's
//! config and log live) is written here, and rewritten atomically so a
//! crash mid-write never leaves a half table behind.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use crate::error::{bail, Context, Error, Result};
use crate::secret;
use serde::{Deserialize, Serialize};

/// The name of the node table inside a cluster directory.
pub const CLUSTER_FILE: &str = "cluster.json";
/// The TLS directory (CA, node certificates and keys) of a cluster.
pub const TLS_DIR: &str = "tls";

/// The node table of a local cluster (`DIR/cluster.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFile {
    /// The cluster id every node checks in the transport handshake.
    pub cluster_id: u64,
    /// The Raft group the nodes serve (the first, with `groups` > 1).
    pub group: u64,
    /// How many groups every node hosts (`kv up --groups`); keys are
    /// spread over them by hash.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub groups: u64,
    /// The shared transport token.
    pub token: String,
    /// The operator's token for the nodes' `/admin/*` requests (sent as
    /// `Authorization: Bearer`); distinct from `token`.
    pub admin_token: String,
    /// The nodes' transports use mutual TLS with the files in `DIR/tls`
    /// (`kv up --tls`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
    /// The nodes, in id order.
    pub nodes: Vec<NodeEntry>,
}

/// One node of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// The node's Raft id.
    pub id: u64,
    /// The pid of the process last spawned for it (None before the first
    /// spawn); it may be stale, so callers check it is still our node.
    pub pid: Option<u32>,
    /// Where peers reach its transport.
    pub raft_addr: String,
    /// Where clients reach its HTTP API.
    pub http_addr: String,
    /// Its data directory (absolute): holds `config.json`, `log`, `pid`, `raft/`.
    pub data_dir: PathBuf,
}

impl NodeEntry {
    /// The node's config file.
    pub fn config_path(&self) -> PathBuf {
        self.data_dir.join("config.json")
    }

    /// The file its stdout and stderr go to.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("log")
    }
}

/// A peer's two addresses, as the node config lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAddrs {
    /// Transport address.
    pub raft: String,
    /// HTTP address.
    pub http: String,
}

/// A node's config file, exactly the shape `cdsctl node` reads
/// (`cmd/node/config.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfig {
    /// The node's id.
    pub id: u64,
    /// The Raft group (the first of `groups`).
    pub group: u64,
    /// Groups hosted: `group` to `group + groups - 1`.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub groups: u64,
    /// Checked in the transport handshake.
    pub cluster_id: u64,
    /// Shared transport secret.
    pub token: String,
    /// The secret `/admin/*` requests must carry.
    pub admin_token: String,
    /// Transport listen address.
    pub raft_addr: String,
    /// HTTP listen address.
    pub http_addr: String,
    /// Storage lives at `local://data_dir/raft`.
    pub data_dir: PathBuf,
    /// Every node's addresses, by id (JSON object keys are strings).
    pub peers: BTreeMap<u64, PeerAddrs>,
    /// The initial voters (empty for a node that joins later).
    pub voters: Vec<u64>,
    /// Milliseconds per Raft tick.
    pub tick_ms: u64,
    /// Election timeout, in ticks.
    pub election_tick: u64,
    /// Heartbeat interval, in ticks.
    pub heartbeat_tick: u64,
    /// Snapshot every this many applied entries.
    pub snapshot_every: u64,
    /// Entries kept behind a snapshot for slow followers.
    pub log_margin: u64,
    /// TLS files of the transport (absent: plain TCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::tls::TlsPaths>,
    /// Serve the HTTP API over HTTPS with the TLS certificate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub https: bool,
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

impl ClusterFile {
    /// Builds the table for `n` new nodes in `dir`, with the given
    /// addresses (`addrs[i]` = (raft, http) of node i+1).
    pub fn new(
        dir: &Path,
        addrs: &[(SocketAddr, SocketAddr)],
        token: String,
        admin_token: String,
    ) -> Self {
        let nodes = addrs
            .iter()
            .enumerate()
            .map(|(i, (raft, http))| {
                let id = i as u64 + 1;
                NodeEntry {
                    id,
                    pid: None,
                    raft_addr: raft.to_string(),
                    http_addr: http.to_string(),
                    data_dir: dir.join(format!("n{id}")),
                }
            })
            .collect();
        // Distinct per cluster (derived from the random token), so nodes of
        // two local clusters refuse each other at the handshake.
        let cluster_id = token
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            })
            .max(1);
        ClusterFile {
            cluster_id,
            group: 1,
            groups: 1,
            token,
            admin_token,
            tls: false,
            nodes,
        }
    }

    /// Reads `dir/cluster.json`, with an error that says what to do when
    /// there is none.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(CLUSTER_FILE);
        if path.exists() {
            secret::check_private(&path)?;
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                Invalid,
                "no cluster in {}: {} not found (start one with `cdsctl kv up --dir {}`)",
                dir.display(),
                path.display(),
                dir.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let c: ClusterFile =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        c.validate()
            .with_context(|| format!("checking {}", path.display()))?;
        Ok(c)
    }

    /// Catches a hand-edited table that would make later commands act on
    /// the wrong node.
    fn validate(&self) -> Result<()> {
        secret::check_token(&self.token)?;
        secret::check_token(&self.admin_token).context("admin_token")?;
        let mut seen = std::collections::BTreeSet::new();
        for n in &self.nodes {
            if n.id == 0 {
                bail!(Invalid, "node id 0 is not allowed");
            }
            if !seen.insert(n.id) {
                bail!(Invalid, "node id {} appears twice", n.id);
            }
        }
        Ok(())
    }

    /// Writes `dir/cluster.json` atomically (temp file, then rename), so a
    /// reader never sees half a table.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).context("encoding cluster.json")?;
        secret::write_private(&dir.join(CLUSTER_FILE), text.as_bytes())
    }

    /// The node with this id, or an error listing the ids that exist.
    pub fn node(&self, id: u64) -> Result<&NodeEntry> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .ok_or_else(|| Error::UnknownNode {
                id,
                known: self.ids_text(),
            })
    }

    /// Mutable access to a node by id.
    pub fn node_mut(&mut self, id: u64) -> Result<&mut NodeEntry> {
        let ids = self.ids_text();
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .ok_or(Error::UnknownNode { id, known: ids })
    }

    /// "1, 2, 3".
    pub fn ids_text(&self) -> String {
        let ids: Vec<String> = self.nodes.iter().map(|n| n.id.to_string()).collect();
        ids.join(", ")
    }

    /// Every node's addresses, as the node config's `peers`.
    pub fn peers(&self) -> BTreeMap<u64, PeerAddrs> {
        self.nodes
            .iter()
            .map(|n| {
                (
                    n.id,
                    PeerAddrs {
                        raft: n.raft_addr.clone(),
                        http: n.http_addr.clone(),
                    },
                )
            })
            .collect()
    }

    /// For a TLS cluster, creates the CA (once) and issues `node` its
    /// certificate and key (naming its addresses' IPs too).
    pub fn issue_cert(&self, node: &NodeEntry) -> Result<()> {
        let dir = tls_dir(node);
        crate::tls::create_ca(&dir)?;
        let mut ips = Vec::new();
        for a in [&node.raft_addr, &node.http_addr] {
            let a: SocketAddr = a
                .parse()
                .map_err(|e| Error::Invalid(format!("node {}: address {a}: {e}", node.id)))?;
            if !ips.contains(&a.ip()) {
                ips.push(a.ip());
            }
        }
        crate::tls::issue_node(&dir, node.id, &ips).with_context(|| {
            format!(
                "issuing node {}'s certificate in {}",
                node.id,
                dir.display()
            )
        })?;
        Ok(())
    }

    /// The config file for `node`, with the given initial voters (and TLS
    /// paths in `tls_dir` if the cluster uses TLS).
    pub fn node_config(&self, node: &NodeEntry, voters: Vec<u64>) -> NodeConfig {
        let tls_dir = tls_dir(node);
        NodeConfig {
            id: node.id,
            group: self.group,
            groups: self.groups,
            cluster_id: self.cluster_id,
            token: self.token.clone(),
            admin_token: self.admin_token.clone(),
            raft_addr: node.raft_addr.clone(),
            http_addr: node.http_addr.clone(),
            data_dir: node.data_dir.clone(),
            peers: self.peers(),
            voters,
            // 50 ms ticks and a 10-tick election timeout: elections settle
            // in about a second on a loaded laptop without flapping.
            tick_ms: 50,
            election_tick: 10,
            heartbeat_tick: 2,
            snapshot_every: 10_000,
            log_margin: 100,
            tls: self
                .tls
                .then(|| crate::tls::TlsPaths::of_node(&tls_dir, node.id)),
            https: self.tls,
        }
    }

    /// The CA certificate clients verify the nodes' HTTPS against, when
    /// the cluster uses TLS.
    pub fn ca_path(&self) -> Option<PathBuf> {
        let node = self.nodes.first()?;
        self.tls
            .then(|| tls_dir(node).join(crate::tls::CA_CERT_FILE))
    }
}

/// Where a TLS cluster keeps its CA, certificates and keys: `tls/` beside
/// the nodes' directories (in the cluster directory).
fn tls_dir(node: &NodeEntry) -> PathBuf {
    node.data_dir
        .parent()
        .map_or_else(|| PathBuf::from(TLS_DIR), |d| d.join(TLS_DIR))
}

/// Writes a node's config file, which holds the token: owner-only, in an
/// owner-only data directory (see `crate::secret`).
pub fn write_node_config(cfg: &NodeConfig) -> Result<()> {
    secret::private_dir(&cfg.data_dir)?;
    let text = serde_json::to_string_pretty(cfg).context("encoding node config")?;
    secret::write_private(&cfg.data_dir.join("config.json"), text.as_bytes())
}

/// Picks `n` free loopback ports.
///
/// All listeners are held until every port is chosen, so the same port is
/// never handed out twice; they are released before the nodes bind. Another
/// process could take one in between, which the node then reports as a bind
/// error in its log.
pub fn pick_ports(n: usize) -> Result<Vec<SocketAddr>> {
    let listeners = (0..n)
        .map(|_| {
            TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0 to find a free port")
        })
        .collect::<Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().context("reading a bound port"))
        .collect()
}

/// A fresh transport token: 16 random bytes from the OS (`/dev/urandom`),
/// as 32 hex digits. Without a source of randomness there is no token: a
/// guessable one would keep nobody out.
pub fn new_token() -> Result<String> {
    let mut buf = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading 16 random bytes from /dev/urandom for the cluster token")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_loopback() {
        let ports = pick_ports(8).unwrap();
        let set: std::collections::BTreeSet<_> = ports.iter().map(|a| a.port()).collect();
        assert_eq!(set.len(), 8);
        assert!(ports.iter().all(|a| a.ip().is_loopback() && a.port() != 0));
    }

    #[test]
    fn cluster_file_round_trips_and_names_unknown_ids() {
        let dir = tempfile::tempdir().unwrap();
        let ports = pick_ports(6).unwrap();
        let addrs: Vec<_> = ports.chunks(2).map(|p| (p[0], p[1])).collect();
        let mut c = ClusterFile::new(
            dir.path(),
            &addrs,
            new_token().unwrap(),
            new_token().unwrap(),
        );
        c.node_mut(2).unwrap().pid = Some(42);
        c.save(dir.path()).unwrap();
        let back = ClusterFile::load(dir.path()).unwrap();
        assert_eq!(back, c);
        let err = back.node(9).unwrap_err().to_string();
        assert!(
            err.contains("unknown node id 9") && err.contains("1, 2, 3"),
            "{err}"
        );
    }

    #[test]
    fn missing_cluster_file_says_how_to_start_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = format!("{:#}", ClusterFile::load(dir.path()).unwrap_err());
        assert!(
            err.contains("no cluster in") && err.contains("kv up"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_ids_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let ports = pick_ports(4).unwrap();
        let addrs: Vec<_> = ports.chunks(2).map(|p| (p[0], p[1])).collect();
        let mut c = ClusterFile::new(
            dir.path(),
            &addrs,
            new_token().unwrap(),
            new_token().unwrap(),
        );
        c.nodes[1].id = 1;
        c.save(dir.path()).unwrap();
        let err = format!("{:#}", ClusterFile::load(dir.path()).unwrap_err());
        assert!(err.contains("appears twice"), "{err}");
    }

    #[test]
    fn node_config_has_the_fields_cdsctl_node_reads() {
        let dir = tempfile::tempdir().unwrap();
        let ports = pick_ports(6).unwrap();
        let addrs: Vec<_> = ports.chunks(2).map(|p| (p[0], p[1])).collect();
        let c = ClusterFile::new(
            dir.path(),
            &addrs,
            new_token().unwrap(),
            new_token().unwrap(),
        );
        let cfg = c.node_config(&c.nodes[0], vec![1, 2, 3]);
        let v = serde_json::to_value(&cfg).unwrap();
        for key in [
            "id",
            "group",
            "cluster_id",
            "token",
            "admin_token",
            "raft_addr",
            "http_addr",
            "data_dir",
            "peers",
            "voters",
            "tick_ms",
            "election_tick",
            "heartbeat_tick",
            "snapshot_every",
            "log_margin",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["peers"]["2"]["raft"], c.nodes[1].raft_addr.as_str());
        assert_eq!(v["peers"]["3"]["http"], c.nodes[2].http_addr.as_str());
        assert_eq!(v.as_object().unwrap().len(), 15);
    }
}
