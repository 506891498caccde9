//! One node process of the replicated KV store: [`run`] serves it until
//! SIGTERM or SIGINT.
//!
//! This is where the runtime's parts meet real resources: the config file
//! names the ports and the data directory, storage lives in
//! `data_dir/raft` (`local://`), the TCP transport carries Raft messages,
//! a [`GroupHost`] drives the groups with the KV state machine
//! ([`super::state_machine`]), and an HTTP server ([`super::http`]) serves
//! clients and operators. `cdsctl node` calls [`run`]; `cdsctl kv up`
//! starts such processes, and tests start them too, so every failure to
//! start is reported with what was being done.
//!
//! Shutdown on SIGTERM or SIGINT stops the node first (pending proposals
//! and reads fail with "unknown outcome" / "stopped", so no HTTP handler
//! waits forever), then the HTTP server (bounded), then the transport, and
//! finally removes the pid file. A node that fails by itself (a storage
//! error) makes [`run`] return an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{bail, Context, Error, Result};
use raft_core::runtime::host::{GroupHost, HostConfig};
use raft_core::runtime::node::NodeConfig;
use raft_core::runtime::transport::{Transport, TransportConfig};
use raft_core::storage::fs::RealFs;
use raft_core::storage::host_sync::HostSync;
use raft_core::storage::Storage;
use raft_core::ConfState;

use super::config::{self, NodeFileConfig};
use super::state_machine::{KvStateMachine, KvStats, SharedKv};
use super::{http, server, transport_log};

/// How long in-flight HTTP requests get to finish at shutdown.
const HTTP_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// An inbound Raft connection may stay idle for at least this many
/// election timeouts (and at least the transport's default) before it is
/// closed.
const IDLE_ELECTIONS: u32 = 20;
/// How often the process checks that its node is still running.
const NODE_CHECK_EVERY: Duration = Duration::from_millis(500);

/// Open files a group needs at most (its active log segment, a snapshot
/// being read or written, the meta being replaced), plus what the process
/// needs besides its groups (connections, the trace, ...).
const FILES_PER_GROUP: u64 = 4;
const FILES_BESIDES_GROUPS: u64 = 1024;

/// Raises the soft limit on open files toward the hard one when the
/// groups need more than the soft limit allows (a soft limit of 1024 is
/// common, and 1,024 groups hold more files than that). Fails with the
/// figures when even the hard limit is too low.
fn raise_file_limit(groups: u64) -> Result<()> {
    let want = groups * FILES_PER_GROUP + FILES_BESIDES_GROUPS;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot read the open-file limit");
    }
    if lim.rlim_cur >= want {
        return Ok(());
    }
    if lim.rlim_max < want {
        bail!(
            Invalid,
            "{groups} groups need up to {want} open files, but the hard limit is {} \
             (raise it, e.g. `ulimit -Hn {want}`, or host fewer groups)",
            lim.rlim_max
        );
    }
    lim.rlim_cur = want as libc::rlim_t;
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot raise the open-file limit to {want}"));
    }
    Ok(())
}

/// Runs the node whose config file is `config_path` until it is told to
/// stop (SIGTERM or SIGINT), on a tokio runtime of its own; returns
/// `Ok` after a clean shutdown, and an error naming the node and the file
/// when it cannot start or a group, the HTTP server or the transport
/// fails. Writes `data_dir/pid` while it runs.
pub fn run(config_path: &Path) -> Result<()> {
    let cfg = NodeFileConfig::load(config_path)?;
    raise_file_limit(cfg.groups)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let id = cfg.id;
    rt.block_on(serve(cfg, config_path))
        .with_context(|| format!("node {id} ({})", config_path.display()))
}

/// Where group `group`'s storage lives: `data_dir/raft` for a process
/// of one group, `data_dir/groups/GROUP` for each of several.
fn group_dir(cfg: &NodeFileConfig, group: u64) -> PathBuf {
    if cfg.groups == 1 {
        cfg.data_dir.join("raft")
    } else {
        cfg.data_dir.join("groups").join(group.to_string())
    }
}

/// Opens group `group`'s store (see [`group_dir`]), its log synced through
/// `host_sync` when given; a new store of a founding member gets the
/// initial voters (a joining node's stays empty: it learns them from the
/// log).
fn open_storage(
    cfg: &NodeFileConfig,
    group: u64,
    host_sync: Option<&Arc<HostSync>>,
) -> Result<raft_core::storage::NodeStorage> {
    let dir = group_dir(cfg, group);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let uri = format!("local://{}", dir.display());
    let mut storage = raft_core::storage::local::open_in_host(
        Arc::new(RealFs),
        &dir,
        &raft_core::storage::local::LocalOptions::default(),
        host_sync.cloned(),
    )
    .with_context(|| format!("cannot open the storage {uri}"))?;
    let report = storage.recovery();
    if *report != Default::default() {
        eprintln!(
            "node {} group {group}: storage recovery: {report:?}",
            cfg.id
        );
    }
    // New: nothing was ever written (no term, no entry, no snapshot). A
    // store that has state but no voters (a joining node) keeps learning
    // its membership from the log.
    let is_new = storage.conf_state().voters.is_empty()
        && storage.hard_state() == Default::default()
        && Storage::last_index(&storage) == 0
        && Storage::snapshot_meta(&storage).is_none();
    if is_new && !cfg.voters.is_empty() {
        storage
            .set_conf_state(ConfState {
                voters: cfg.voters.clone(),
                ..ConfState::default()
            })
            .with_context(|| format!("cannot write the initial voters to {uri}"))?;
    }
    Ok(storage)
}

/// Writes the pid file; it is how `cdsctl kv` finds the process.
pub(crate) fn write_pid(data_dir: &Path) -> Result<PathBuf> {
    let path = data_dir.join("pid");
    std::fs::write(&path, format!("{}\n", std::process::id()))
        .with_context(|| format!("cannot write the pid file {}", path.display()))?;
    Ok(path)
}

/// Starts watching SIGTERM and SIGINT at once (a signal that arrives
/// before the returned future is polled is kept, not lost, and no longer
/// kills the process halfway through a write); the future resolves with the
/// first signal's name.
pub(crate) fn stop_signal() -> Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}

async fn serve(cfg: NodeFileConfig, config_path: &Path) -> Result<()> {
    let id = cfg.id;
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            cfg.data_dir.display()
        )
    })?;
    let signal = stop_signal()?;
    // Several groups share one sync of the data directory's disk per round
    // (`storage::host_sync`); one group syncs its own log file.
    let host_sync = (cfg.groups > 1).then(|| HostSync::new(Arc::new(RealFs), &cfg.data_dir));
    let mut storages = Vec::new();
    for g in cfg.group_ids() {
        storages.push((g, open_storage(&cfg, g, host_sync.as_ref())?));
    }

    let mut tcfg = TransportConfig::new(id, cfg.raft_addr, cfg.cluster_id, cfg.token.clone());
    tcfg.peers = cfg
        .peers
        .iter()
        .filter(|(&p, _)| p != id)
        .map(|(&p, a)| (p, a.raft))
        .collect();
    // An idle inbound connection is closed after idle_timeout: keep it far
    // above the election timeout (a live peer sends at least that often),
    // even with slow ticks.
    let election = Duration::from_millis(cfg.tick_ms.saturating_mul(u64::from(cfg.election_tick)));
    tcfg.idle_timeout = tcfg
        .idle_timeout
        .max(election.saturating_mul(IDLE_ELECTIONS));
    tcfg.tls = cfg
        .tls
        .as_ref()
        .map(crate::tls::load_transport)
        .transpose()
        .context("cannot load the transport's TLS files")?;
    let (transport, inbound) = Transport::start(tcfg)
        .await
        .with_context(|| format!("cannot start the Raft transport on {}", cfg.raft_addr))?;

    let transport_log = tokio::spawn(transport_log::run(id, transport.clone()));

    let mut hcfg = HostConfig::new(id, cfg.peers.keys().copied().filter(|&p| p != id).collect());
    hcfg.tick = Duration::from_millis(cfg.tick_ms);
    hcfg.quiesce_after_ticks = cfg.quiesce_ticks();
    // Peers are declared dead after two election timeouts of silence (at
    // least two ping periods): never sooner than an awake group's
    // followers would time out.
    hcfg.peer_timeout = (2 * u64::from(cfg.election_tick)).max(2 * hcfg.ping_every);
    let host = GroupHost::start(hcfg, transport.clone(), inbound)
        .context("cannot start the group host")?;
    let mut groups = Vec::new();
    for (g, storage) in storages {
        let mut ncfg = NodeConfig::new(id, g);
        ncfg.config.election_tick = cfg.election_tick;
        ncfg.config.heartbeat_tick = cfg.heartbeat_tick;
        ncfg.config.lease_tick = cfg.election_tick / 2;
        ncfg.config.quiesce_after_ticks = cfg.quiesce_ticks();
        ncfg.tick = Duration::from_millis(cfg.tick_ms);
        ncfg.snapshot_every = cfg.snapshot_every;
        ncfg.log_margin = cfg.log_margin;
        // One trace per process: the first group's (a trace follows one
        // group; see the book's trace chapter).
        ncfg.trace = (cfg.trace && g == cfg.group).then(|| cfg.data_dir.join(config::TRACE_FILE));
        let kv: SharedKv = Arc::default();
        let kv_stats: Arc<KvStats> = Arc::default();
        let sm = KvStateMachine::new(id, kv.clone(), kv_stats.clone());
        let node = host
            .create_group(ncfg, storage, Box::new(sm))
            .with_context(|| format!("cannot start group {g}"))?;
        groups.push(http::GroupApi { node, kv, kv_stats });
    }
    let node = groups[0].node.clone();

    let https = match (&cfg.tls, cfg.https) {
        (Some(paths), true) => Some(
            crate::tls::http_server_config(paths).context("cannot load the HTTPS certificate")?,
        ),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(cfg.http_addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", cfg.http_addr))?;
    let http_peers: BTreeMap<_, _> = cfg.peers.iter().map(|(&p, a)| (p, a.http)).collect();
    let app = http::router(http::AppState::new(http::Setup {
        groups,
        host: host.clone(),
        host_sync: host_sync.clone(),
        transport: transport.clone(),
        http_peers,
        http_addr: cfg.http_addr,
        admin_token: cfg.admin_token.clone(),
        config_path: config_path.to_path_buf(),
        https: https.is_some(),
    }));
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(
        listener,
        app,
        cfg.http_max_connections,
        id,
        https.map(tokio_rustls::TlsAcceptor::from),
        async move {
            let _ = http_stopped.await;
        },
    ));
    let pid_path = write_pid(&cfg.data_dir)?;
    eprintln!(
        "node {id}: serving (pid {}, raft {}, http {}, data {})",
        std::process::id(),
        cfg.raft_addr,
        cfg.http_addr,
        cfg.data_dir.display()
    );

    // Run until a signal, or until a group or the HTTP server fails: a
    // process whose group stopped on an error (a storage failure, say)
    // stops too, so its supervisor sees it.
    let watch_node = {
        let host = host.clone();
        async move {
            loop {
                tokio::time::sleep(NODE_CHECK_EVERY).await;
                for g in host.groups() {
                    let Some(node) = host.group(g) else { continue };
                    if let Some(f) = node.failure() {
                        return format!("group {g}: {f}");
                    }
                }
                if let Err(e) = node.status().await {
                    return node.failure().unwrap_or_else(|| e.to_string());
                }
            }
        }
    };
    let mut server = server;
    let outcome: Result<()> = tokio::select! {
        name = signal => {
            eprintln!("node {id}: {name} received, shutting down");
            Ok(())
        }
        e = watch_node => Err(Error::Runtime {
            what: "the Raft node stopped".to_owned(),
            error: e,
        }),
        r = &mut server => Err(Error::Runtime {
            what: "the HTTP server stopped".to_owned(),
            error: match r {
                Ok(()) => "it returned".to_owned(),
                Err(e) => format!("its task failed: {e}"),
            },
        }),
    };

    // Groups first: what waits on them fails now, so HTTP handlers finish.
    host.shutdown().await;
    let _ = stop_http.send(());
    if tokio::time::timeout(HTTP_SHUTDOWN_GRACE, &mut server)
        .await
        .is_err()
    {
        server.abort();
    }
    transport.shutdown().await;
    transport_log.abort();
    // Only remove the pid file if it is still ours (a restarted process
    // may have replaced it).
    if std::fs::read_to_string(&pid_path).is_ok_and(|s| s.trim() == std::process::id().to_string())
    {
        if let Err(e) = std::fs::remove_file(&pid_path) {
            eprintln!("node {id}: cannot remove {}: {e}", pid_path.display());
        }
    }
    if outcome.is_ok() {
        eprintln!("node {id}: stopped cleanly");
    }
    outcome
}
