//! The node's config file (JSON), as written by `cdsctl kv up`.
//!
//! A node is started by another program, often in the background with its
//! stderr going to a log file; a config mistake found later (a bad address
//! at the first connect, a tick setting the core refuses at start) is much
//! harder to diagnose than one refused at once. So everything is parsed and
//! checked here, before anything is opened, and each error names the file
//! and the field.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::error::{bail, Context, Result};
use raft_core::NodeId;
use serde::Deserialize;

/// Where one member of the cluster listens.
#[derive(Debug, Clone, Deserialize)]
pub struct PeerAddrs {
    /// Its Raft transport address.
    pub raft: SocketAddr,
    /// Its HTTP address (where followers redirect clients).
    pub http: SocketAddr,
}

/// The config file of one node: these fields, as JSON (`cdsctl kv up`
/// writes them; `book/src/cluster.md`, "The cluster directory", shows one).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFileConfig {
    /// This node's id (non-zero).
    pub id: NodeId,
    /// The Raft group this node serves.
    #[serde(default = "default_group")]
    pub group: u64,
    /// How many groups this process hosts: `group`, `group + 1`, ...,
    /// `group + groups - 1`, each with its own key-value state machine;
    /// a key belongs to one of them by its hash (`http::group_of_key`).
    #[serde(default = "default_groups")]
    pub groups: u64,
    /// Idle ticks after which a group's leader lets the group quiesce
    /// (no heartbeats, no election timers; node-level liveness watches
    /// the peers instead). Absent: 0 (never) for one group, 20 for
    /// several. 0 turns it off.
    #[serde(default)]
    pub quiesce_after_ticks: Option<u32>,
    /// Peers presenting another cluster id are refused by the transport.
    pub cluster_id: u64,
    /// The shared secret every member presents in the transport handshake.
    pub token: String,
    /// The operator's secret: every `/admin/*` request must carry it as
    /// `Authorization: Bearer <admin_token>`. Distinct from `token`, so
    /// what a peer holds does not open the admin API.
    pub admin_token: String,
    /// Where the Raft transport listens.
    pub raft_addr: SocketAddr,
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// The node's directory: storage in `data_dir/raft`, pid in `data_dir/pid`,
    /// trace in `data_dir/trace.rtrace`.
    pub data_dir: PathBuf,
    /// Every member's addresses, this node included, keyed by id.
    pub peers: BTreeMap<NodeId, PeerAddrs>,
    /// The initial voters of a new group; empty for a node that joins later
    /// (it learns its membership from the leader's log).
    #[serde(default)]
    pub voters: Vec<NodeId>,
    /// Real time per Raft tick, in milliseconds.
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    /// Ticks without a leader before campaigning.
    #[serde(default = "default_election_tick")]
    pub election_tick: u32,
    /// Ticks between leader heartbeats.
    #[serde(default = "default_heartbeat_tick")]
    pub heartbeat_tick: u32,
    /// Take a snapshot every this many applied entries (0: never).
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot.
    #[serde(default = "default_log_margin")]
    pub log_margin: u64,
    /// Most HTTP connections served at once; past it a new connection is
    /// answered `503` and closed (`http::limits`).
    #[serde(default = "default_http_max_connections")]
    pub http_max_connections: usize,
    /// Append this node's rtrace events (elections, role and configuration
    /// changes, snapshots) to `data_dir/trace.rtrace`.
    #[serde(default = "default_trace")]
    pub trace: bool,
    /// TLS for the Raft transport (mutual, against the CA); absent: plain
    /// TCP. The key file must be private (0600).
    #[serde(default)]
    pub tls: Option<crate::tls::TlsPaths>,
    /// Serve the HTTP API over HTTPS with the certificate and key of `tls`
    /// (clients verify it against the CA). Needs `tls`.
    #[serde(default)]
    pub https: bool,
}

/// The file a node's trace goes to, in its data directory.
pub const TRACE_FILE: &str = "trace.rtrace";

/// Longest tick accepted, in milliseconds.
pub const MAX_TICK_MS: u64 = 1000;
/// Most ticks in an election timeout.
pub const MAX_ELECTION_TICK: u32 = 1000;
/// Longest election timeout (`tick_ms × election_tick`) accepted: a group
/// stays leaderless this long (up to twice: the timeout is randomized)
/// after its leader dies.
pub const MAX_ELECTION_TIMEOUT_MS: u64 = 60_000;

fn default_trace() -> bool {
    true
}

fn default_http_max_connections() -> usize {
    super::limits::DEFAULT_MAX_CONNECTIONS
}

fn default_group() -> u64 {
    1
}
fn default_groups() -> u64 {
    1
}
/// The most groups one process hosts (`raft_core::runtime::host`).
pub const MAX_GROUPS: u64 = raft_core::runtime::host::MAX_GROUPS as u64;

fn default_tick_ms() -> u64 {
    50
}
fn default_election_tick() -> u32 {
    10
}
fn default_heartbeat_tick() -> u32 {
    2
}
fn default_snapshot_every() -> u64 {
    1000
}
fn default_log_margin() -> u64 {
    100
}

impl NodeFileConfig {
    /// The ids of the groups this process hosts, ascending.
    pub fn group_ids(&self) -> std::ops::Range<u64> {
        self.group..self.group + self.groups
    }

    /// Idle ticks before a group quiesces (0: never); see the field.
    pub fn quiesce_ticks(&self) -> u32 {
        self.quiesce_after_ticks
            .unwrap_or(if self.groups > 1 { 20 } else { 0 })
    }

    /// Reads and checks the config at `path`.
    pub fn load(path: &Path) -> Result<NodeFileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        // It holds the token: refuse it while others can read it.
        crate::secret::check_private(path)
            .with_context(|| format!("refusing the config file {}", path.display()))?;
        let cfg: NodeFileConfig = serde_json::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        cfg.validate()
            .with_context(|| format!("invalid config file {}", path.display()))?;
        Ok(cfg)
    }

    /// Checks the fields against each other.
    pub fn validate(&self) -> Result<()> {
        if self.id == 0 {
            bail!(Invalid, "id: 0 is not a valid node id");
        }
        crate::secret::check_token(&self.token)?;
        crate::secret::check_token(&self.admin_token).context("admin_token")?;
        if self.admin_token == self.token {
            bail!(
                Invalid,
                "admin_token must differ from token (a peer must not hold the operator's key)"
            );
        }
        let max = super::limits::MAX_CONNECTIONS_LIMIT;
        if !(1..=max).contains(&self.http_max_connections) {
            bail!(
                Invalid,
                "http_max_connections: {} is out of range (1 to {max})",
                self.http_max_connections
            );
        }
        if self.peers.contains_key(&0) {
            bail!(Invalid, "peers: 0 is not a valid node id");
        }
        if self.https && self.tls.is_none() {
            bail!(
                Invalid,
                "https: needs tls (the certificate and key to serve with)"
            );
        }
        if self.group == 0 {
            bail!(Invalid, "group: 0 is not a valid group id");
        }
        if !(1..=MAX_GROUPS).contains(&self.groups) {
            bail!(
                Invalid,
                "groups: {} is out of range (1 to {MAX_GROUPS})",
                self.groups
            );
        }
        if self.group.checked_add(self.groups).is_none() {
            bail!(Invalid, "group + groups overflows a group id");
        }
        if let Some(q) = self.quiesce_after_ticks {
            if q != 0 && q < self.heartbeat_tick {
                bail!(
                    Invalid,
                    "quiesce_after_ticks ({q}) must be 0 (off) or at least heartbeat_tick ({})",
                    self.heartbeat_tick
                );
            }
        }
        if !(1..=MAX_TICK_MS).contains(&self.tick_ms) {
            bail!(
                Invalid,
                "tick_ms ({}) must be between 1 and {MAX_TICK_MS}",
                self.tick_ms
            );
        }
        if !(2..=MAX_ELECTION_TICK).contains(&self.election_tick) {
            bail!(
                Invalid,
                "election_tick ({}) must be between 2 (the lease is half of it) and \
                 {MAX_ELECTION_TICK}",
                self.election_tick
            );
        }
        if self.heartbeat_tick == 0 || self.heartbeat_tick >= self.election_tick {
            bail!(
                Invalid,
                "heartbeat_tick ({}) must be at least 1 and below election_tick ({})",
                self.heartbeat_tick,
                self.election_tick
            );
        }
        let election_ms = self.tick_ms * u64::from(self.election_tick);
        if election_ms > MAX_ELECTION_TIMEOUT_MS {
            bail!(
                Invalid,
                "tick_ms × election_tick is an election timeout of {election_ms} ms; \
                 more than {MAX_ELECTION_TIMEOUT_MS} ms leaves a group without a leader \
                 for minutes after a crash"
            );
        }
        if let Some(me) = self.peers.get(&self.id) {
            if me.raft != self.raft_addr || me.http != self.http_addr {
                bail!(
                    Invalid,
                    "peers.{}: addresses differ from raft_addr/http_addr of this node",
                    self.id
                );
            }
        }
        for v in &self.voters {
            if !self.peers.contains_key(v) {
                bail!(Invalid, "voters: node {v} has no entry in peers");
            }
        }
        if !self.voters.is_empty() && !self.voters.contains(&self.id) {
            bail!(
                Invalid,
                "voters: a founding member must be one of the voters (id {} is not); \
                 a joining node has voters []",
                self.id
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        r#"{"id":1,"group":1,"cluster_id":7,"token":"0123456789abcdef",
            "admin_token":"fedcba9876543210",
            "raft_addr":"127.0.0.1:7001","http_addr":"127.0.0.1:8001",
            "data_dir":"/tmp/x",
            "peers":{"1":{"raft":"127.0.0.1:7001","http":"127.0.0.1:8001"},
                     "2":{"raft":"127.0.0.1:7002","http":"127.0.0.1:8002"}},
            "voters":[1,2]}"#
            .to_string()
    }

    #[test]
    fn a_sample_config_parses_with_defaults() {
        let c: NodeFileConfig = serde_json::from_str(&sample()).expect("parse");
        c.validate().expect("valid");
        assert_eq!(c.peers.len(), 2);
        assert_eq!(c.tick_ms, 50);
        assert_eq!(c.election_tick, 10);
    }

    #[test]
    fn unknown_fields_and_short_tokens_are_refused() {
        let typo = sample().replace("\"voters\"", "\"voter\"");
        let e = serde_json::from_str::<NodeFileConfig>(&typo).expect_err("unknown field");
        assert!(e.to_string().contains("unknown field `voter`"), "{e}");
        let c: NodeFileConfig =
            serde_json::from_str(&sample().replace("0123456789abcdef", "")).expect("parse");
        let e = c.validate().expect_err("empty token");
        assert!(e.to_string().contains("token"), "{e}");
    }

    #[test]
    fn absurd_ticks_and_group_zero_are_refused() {
        for (field, value, says) in [
            ("group", "0", "group: 0"),
            ("groups", "0", "groups: 0 is out of range"),
            ("groups", "5000", "groups: 5000 is out of range"),
            ("quiesce_after_ticks", "1", "quiesce_after_ticks (1)"),
            ("tick_ms", "0", "tick_ms (0)"),
            ("tick_ms", "3600000", "tick_ms (3600000)"),
            ("election_tick", "1", "election_tick (1)"),
            ("election_tick", "4000000000", "election_tick (4000000000)"),
            ("tick_ms", "900", "election timeout of"),
        ] {
            let mut v: serde_json::Value = serde_json::from_str(&sample()).expect("parse");
            v[field] = serde_json::from_str(value).expect("number");
            if field == "tick_ms" && value == "900" {
                v["election_tick"] = 100.into();
            }
            let c: NodeFileConfig = serde_json::from_value(v).expect("parse");
            let e = c.validate().expect_err(field);
            assert!(e.to_string().contains(says), "{field}={value}: {e}");
        }
    }

    #[test]
    fn a_config_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config.json");
        std::fs::write(&path, sample()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = format!("{:#}", NodeFileConfig::load(&path).expect_err("0644"));
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        NodeFileConfig::load(&path).expect("0600 loads");
    }

    #[test]
    fn a_voter_without_addresses_is_refused() {
        let mut c: NodeFileConfig = serde_json::from_str(&sample()).expect("parse");
        c.voters.push(3);
        let e = c.validate().expect_err("must fail");
        assert!(e.to_string().contains("node 3"), "{e}");
    }
}
