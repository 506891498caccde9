//! `cdsctl nbd serve`: CDS volumes as NBD exports, for `qemu-img`,
//! `qemu-io`, `nbdcopy`, `nbdinfo` and `fio --ioengine=nbd`.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use cds::cdscluster::CdsCluster;
use cds::nbd::{Export, NbdServer};
use clap::Subcommand;

use super::cds::CdsDir;

/// Subcommands of `cdsctl nbd`.
#[derive(Debug, Subcommand)]
pub enum NbdCommand {
    /// Serve volumes over NBD until interrupted (Ctrl-C or SIGTERM).
    ///
    /// Each volume is an export named after it (or `--name` for a single
    /// volume); the first is also the default export (the empty name).
    /// Volumes are opened for writing, which fences any earlier writer
    /// of them, unless `--read-only`. A write is answered once it is
    /// committed by its BlockGroup's majority: durable, and seen by every
    /// connection (so FLUSH has nothing left to do).
    Serve {
        /// The volumes to export.
        #[arg(required = true)]
        volumes: Vec<String>,
        /// Address to listen on. Loopback by default: NBD has no
        /// authentication, so listen elsewhere (e.g. 0.0.0.0:10809) only
        /// on a network you trust.
        #[arg(long, default_value = "127.0.0.1:10809")]
        listen: SocketAddr,
        /// Export name (only with one volume; default: the volume's name).
        #[arg(long)]
        name: Option<String>,
        /// Serve the volumes read-only (no epoch taken, no writer fenced).
        #[arg(long)]
        read_only: bool,
        #[command(flatten)]
        dir: CdsDir,
    },
}

/// Runs a `cdsctl nbd` subcommand.
pub fn run(cmd: NbdCommand) -> Result<()> {
    match cmd {
        NbdCommand::Serve {
            volumes,
            listen,
            name,
            read_only,
            dir,
        } => {
            if name.is_some() && volumes.len() != 1 {
                bail!(
                    "--name names the export of a single volume; {} were given",
                    volumes.len()
                );
            }
            let mut seen = std::collections::BTreeSet::new();
            for v in &volumes {
                if !seen.insert(v) {
                    bail!("volume {v:?} is given twice");
                }
            }
            let cluster = CdsCluster::load(&dir.dir)?;
            let access = cluster.access();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            rt.block_on(async move {
                // The port first: a wrong --listen must not take the
                // volumes' epochs (which would fence their writers).
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("listening on {listen}"))?;
                let mut exports = Vec::new();
                for v in &volumes {
                    let export_name = name.clone().unwrap_or_else(|| v.clone());
                    let e = Export::open(&access, v, &export_name, read_only)
                        .await
                        .with_context(|| format!("opening volume {v:?}"))?;
                    exports.push(e);
                }
                let names: Vec<(String, String)> = exports
                    .iter()
                    .map(|e| (e.name().to_string(), e.description()))
                    .collect();
                let server = NbdServer::start(listener, exports)
                    .with_context(|| format!("listening on {listen}"))?;
                let addr = server.local_addr();
                for (n, d) in names {
                    outln!("nbd://{addr}/{n}  {d}");
                }
                wait_for_signal().await?;
                let s = server.stats();
                let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
                eprintln!(
                    "nbd: stopping after {} sessions: {} reads, {} writes, {} zeroings, {} flushes, {} errors, {} protocol errors",
                    load(&s.sessions), load(&s.reads), load(&s.writes), load(&s.zeroes),
                    load(&s.flushes), load(&s.errors), load(&s.protocol_errors)
                );
                server.shutdown().await;
                Ok(())
            })
        }
    }
}

async fn wait_for_signal() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("listening for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}
