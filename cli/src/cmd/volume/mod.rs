//! `cdsctl volume ...`: volumes of a local CDS cluster (`cdsctl cds up`):
//! create, list, inspect, resize, remove, read and write them through
//! the client library ([`cds::volume`]), and their snapshots, rollbacks
//! and clones (`snapshot.rs`).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use cds::cdscluster::CdsCluster;
use cds::master::api::{ClusterView, CreateVolume, Resize};
use cds::master::Volume as VolumeMeta;
use cds::volume::{Mode, Volume};
use clap::{Subcommand, ValueEnum};

mod bench;
mod snapshot;

pub(crate) use snapshot::split_at_snapshot;

use super::cds::CdsDir;
use super::kv::parse_duration;

/// Subcommands of `cdsctl volume`.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (thin: blocks get a group on first write).
    Create {
        name: String,
        /// Size, e.g. 10GiB, 512MiB, 1073741824 (a multiple of 4 KiB).
        #[arg(long, value_parser = parse_size)]
        size: u64,
        /// Block size (a multiple of 64 KiB; default 16 MiB).
        #[arg(long, value_parser = parse_size)]
        block_size: Option<u64>,
        /// The pool whose groups hold its blocks (see `cds status`).
        #[arg(long, default_value = cds::pool::DEFAULT_POOL)]
        pool: String,
        #[command(flatten)]
        dir: CdsDir,
    },
    /// List volumes.
    Ls {
        #[command(flatten)]
        dir: CdsDir,
        #[arg(long)]
        json: bool,
    },
    /// Show a volume: size, epoch, blocks allocated, their groups, replicas and leaders.
    Info {
        name: String,
        #[command(flatten)]
        dir: CdsDir,
        #[arg(long)]
        json: bool,
    },
    /// Grow a volume (shrinking is refused: it would lose data).
    Resize {
        name: String,
        #[arg(long, value_parser = parse_size)]
        size: u64,
        #[command(flatten)]
        dir: CdsDir,
    },
    /// Remove a volume.
    Rm {
        name: String,
        #[command(flatten)]
        dir: CdsDir,
    },
    /// Write a file (or stdin with `--file -`) at an offset (both multiples of 4 KiB).
    Write {
        name: String,
        #[arg(long, value_parser = parse_size, default_value = "0")]
        offset: u64,
        #[arg(long)]
        file: PathBuf,
        #[command(flatten)]
        dir: CdsDir,
    },
    /// Read bytes at an offset to stdout (or `--out FILE`); `NAME@SNAP`
    /// reads a snapshot.
    Read {
        name: String,
        #[arg(long, value_parser = parse_size, default_value = "0")]
        offset: u64,
        #[arg(long, value_parser = parse_size)]
        length: u64,
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        dir: CdsDir,
    },
    /// Write self-checking sectors and read them back: every read must
    /// return the last acknowledged write of each sector (or one whose
    /// outcome is unknown), and at the end every acknowledged write must
    /// be there.
    Verify {
        name: String,
        /// How long to run.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// Concurrent workers (each owns a disjoint part of the span).
        #[arg(long, default_value_t = 8)]
        qd: usize,
        /// Bytes of the volume used from offset 0 (default: 64 MiB or the
        /// volume's size, whichever is smaller).
        #[arg(long, value_parser = parse_size)]
        span: Option<u64>,
        #[command(flatten)]
        dir: CdsDir,
        #[arg(long)]
        json: bool,
    },
    /// Take a crash-consistent snapshot of a volume (no data is copied; IO
    /// goes on).
    Snapshot {
        name: String,
        snapshot: String,
        #[command(flatten)]
        wait: TaskWait,
        #[command(flatten)]
        dir: CdsDir,
    },
    /// List a volume's snapshots, their state and the space each holds.
    Snapshots {
        name: String,
        #[command(flatten)]
        dir: CdsDir,
        #[arg(long)]
        json: bool,
    },
    /// Remove a snapshot (its slices no other version shares are reclaimed).
    SnapshotRm {
        name: String,
        snapshot: String,
        #[command(flatten)]
        wait: TaskWait,
        #[command(flatten)]
        dir: CdsDir,
    },
    /// Roll a volume back to a snapshot: every reader and writer sees it at
    /// once; the abandoned slices are reclaimed in the background.
    Rollback {
        name: String,
        snapshot: String,
        #[command(flatten)]
        wait: TaskWait,
        #[command(flatten)]
        dir: CdsDir,
    },
    /// Make a new volume from a snapshot (`NAME@SNAP`): usable at once, its
    /// unwritten slices read through to the snapshot.
    Clone {
        source: String,
        new: String,
        #[command(flatten)]
        wait: TaskWait,
        #[command(flatten)]
        dir: CdsDir,
    },
    /// Show the snapshot tasks under way and the latest finished ones.
    Tasks {
        #[command(flatten)]
        dir: CdsDir,
        #[arg(long)]
        json: bool,
    },
    /// Measure IOPS, throughput and latency through the client library.
    Bench {
        name: String,
        #[arg(long, value_enum, default_value_t = Pattern::Randwrite)]
        pattern: Pattern,
        /// IO size, e.g. 4k, 1M.
        #[arg(long, value_parser = parse_size, default_value = "4k")]
        bs: u64,
        /// IOs in flight.
        #[arg(long, default_value_t = 32)]
        qd: usize,
        #[arg(long, default_value = "20s", value_parser = parse_duration)]
        duration: Duration,
        /// Bytes of the volume used from offset 0 (default: 1 GiB or the
        /// volume's size, whichever is smaller).
        #[arg(long, value_parser = parse_size)]
        span: Option<u64>,
        #[command(flatten)]
        dir: CdsDir,
        #[arg(long)]
        json: bool,
    },
}

/// Flags of the commands that start a snapshot task.
#[derive(Debug, clap::Args)]
pub struct TaskWait {
    /// Return once the Master accepted it, without waiting for every group.
    #[arg(long)]
    no_wait: bool,
    /// How long to wait for every group to take it.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    timeout: Duration,
}

/// What `volume bench` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Pattern {
    Randwrite,
    Randread,
    Write,
    Read,
}

/// Parses `10GiB`, `512M`, `4k`, `4096` (binary units; `B` optional).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 10GiB, 512MiB, 4k or 4096"))?;
    let shift = match unit
        .to_ascii_lowercase()
        .trim_end_matches('b')
        .trim_end_matches('i')
    {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(format!("unknown unit {unit:?} in {s:?} (use k, M, G, T)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// `1.5 GiB` style.
pub(crate) fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

/// Runs a `cdsctl volume` subcommand.
pub fn run(cmd: VolumeCommand) -> Result<()> {
    match cmd {
        VolumeCommand::Create {
            name,
            size,
            block_size,
            pool,
            dir,
        } => {
            let c = CdsCluster::load(&dir.dir)?;
            let v: VolumeMeta = c
                .admin()
                .post(
                    "/v1/volumes",
                    &CreateVolume {
                        name,
                        size,
                        block_size,
                        owner: String::new(),
                        pool,
                    },
                )
                .context("creating the volume")?;
            outln!(
                "volume {} created: {} ({} bytes), blocks of {}, in pool {}",
                v.name,
                human(v.size),
                v.size,
                human(v.block_size),
                v.pool
            );
            Ok(())
        }
        VolumeCommand::Ls { dir, json } => {
            let c = CdsCluster::load(&dir.dir)?;
            let vols: Vec<VolumeMeta> = c.master().get("/v1/volumes").context("listing volumes")?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&vols)?);
                return Ok(());
            }
            outln!(
                "{:<24} {:>12} {:>10} {:>8} {:>6}  POOL",
                "NAME",
                "SIZE",
                "BLOCK",
                "ALLOC",
                "EPOCH"
            );
            for v in vols {
                outln!(
                    "{:<24} {:>12} {:>10} {:>8} {:>6}  {}",
                    v.name,
                    human(v.size),
                    human(v.block_size),
                    v.blocks.len(),
                    v.epoch,
                    v.pool
                );
            }
            Ok(())
        }
        VolumeCommand::Info { name, dir, json } => info(&dir.dir, &name, json),
        VolumeCommand::Resize { name, size, dir } => {
            let c = CdsCluster::load(&dir.dir)?;
            let v: VolumeMeta = c
                .admin()
                .post(&format!("/v1/volumes/{name}/resize"), &Resize { size })
                .context("resizing the volume")?;
            outln!(
                "volume {} is now {} ({} bytes)",
                v.name,
                human(v.size),
                v.size
            );
            Ok(())
        }
        VolumeCommand::Rm { name, dir } => {
            let c = CdsCluster::load(&dir.dir)?;
            let _: serde_json::Value = c
                .admin()
                .delete(&format!("/v1/volumes/{name}"))
                .context("removing the volume")?;
            outln!("volume {name} removed");
            Ok(())
        }
        VolumeCommand::Write {
            name,
            offset,
            file,
            dir,
        } => {
            let mut data = Vec::new();
            if file.as_os_str() == "-" {
                std::io::stdin()
                    .read_to_end(&mut data)
                    .context("reading stdin")?;
            } else {
                data =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            }
            let c = CdsCluster::load(&dir.dir)?;
            let len = data.len();
            runtime()?.block_on(async {
                let v = Volume::open(&c.access(), &name, Mode::Write).await?;
                v.write(offset, Bytes::from(data)).await?;
                anyhow::Ok(())
            })?;
            outln!("wrote {len} bytes at offset {offset} of {name}");
            Ok(())
        }
        VolumeCommand::Read {
            name,
            offset,
            length,
            out,
            dir,
        } => {
            let c = CdsCluster::load(&dir.dir)?;
            let data = runtime()?.block_on(async {
                let v = match name.contains('@') {
                    true => {
                        let (vol, snap) = split_at_snapshot(&name)?;
                        Volume::open_snapshot(&c.access(), vol, snap).await?
                    }
                    false => Volume::open(&c.access(), &name, Mode::Read).await?,
                };
                anyhow::Ok(v.read(offset, length).await?)
            })?;
            match out {
                Some(p) => {
                    std::fs::write(&p, &data).with_context(|| format!("writing {}", p.display()))?
                }
                None => {
                    let mut o = std::io::stdout().lock();
                    if let Err(e) = o.write_all(&data).and_then(|()| o.flush()) {
                        if e.kind() != std::io::ErrorKind::BrokenPipe {
                            return Err(e).context("writing stdout");
                        }
                    }
                }
            }
            Ok(())
        }
        VolumeCommand::Verify {
            name,
            duration,
            qd,
            span,
            dir,
            json,
        } => verify(&dir.dir, &name, duration, qd, span, json),
        VolumeCommand::Snapshot {
            name,
            snapshot,
            wait,
            dir,
        } => snapshot::snapshot(
            &CdsCluster::load(&dir.dir)?,
            &name,
            &snapshot,
            wait.no_wait,
            wait.timeout,
        ),
        VolumeCommand::Snapshots { name, dir, json } => {
            snapshot::snapshots(&CdsCluster::load(&dir.dir)?, &name, json)
        }
        VolumeCommand::SnapshotRm {
            name,
            snapshot,
            wait,
            dir,
        } => snapshot::snapshot_rm(
            &CdsCluster::load(&dir.dir)?,
            &name,
            &snapshot,
            wait.no_wait,
            wait.timeout,
        ),
        VolumeCommand::Rollback {
            name,
            snapshot,
            wait,
            dir,
        } => snapshot::rollback(
            &CdsCluster::load(&dir.dir)?,
            &name,
            &snapshot,
            wait.no_wait,
            wait.timeout,
        ),
        VolumeCommand::Clone {
            source,
            new,
            wait,
            dir,
        } => snapshot::clone(
            &CdsCluster::load(&dir.dir)?,
            &source,
            &new,
            wait.no_wait,
            wait.timeout,
        ),
        VolumeCommand::Tasks { dir, json } => snapshot::tasks(&CdsCluster::load(&dir.dir)?, json),
        VolumeCommand::Bench {
            name,
            pattern,
            bs,
            qd,
            duration,
            span,
            dir,
            json,
        } => {
            let c = CdsCluster::load(&dir.dir)?;
            let report = runtime()?.block_on(async {
                // Read patterns write their span first: a writer too.
                let v = Volume::open(&c.access(), &name, Mode::Write).await?;
                let span = span.unwrap_or(1 << 30).min(v.size());
                bench::run(&v, pattern, bs, qd, span, duration).await
            })?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                if let Some(p) = report.prefill_seconds {
                    outln!("prefill: wrote the span in {p:.1}s");
                }
                outln!("{report}");
            }
            Ok(())
        }
    }
}

fn info(dir: &std::path::Path, name: &str, json: bool) -> Result<()> {
    let c = CdsCluster::load(dir)?;
    let m = c.master();
    let v: VolumeMeta = m
        .get(&format!("/v1/volumes/{name}"))
        .with_context(|| format!("volume {name}"))?;
    let view: ClusterView = m.get("/v1/cluster").context("the cluster view")?;
    if json {
        let blocks: Vec<serde_json::Value> = v
            .blocks
            .iter()
            .map(|(b, g)| {
                let replicas = view
                    .groups
                    .iter()
                    .find(|x| x.id == *g)
                    .map(|x| x.replicas.clone())
                    .unwrap_or_default();
                serde_json::json!({
                    "block": b, "group": g, "replicas": replicas,
                    "leader": view.leaders.get(g),
                })
            })
            .collect();
        let out = serde_json::json!({
            "name": v.name, "id": v.id, "size": v.size, "block_size": v.block_size,
            "epoch": v.epoch, "blocks_total": v.size.div_ceil(v.block_size), "pool": v.pool,
            "blocks": blocks,
        });
        outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    outln!(
        "volume {} (id {}): {} in {} blocks of {}, {} allocated, writer epoch {}, pool {}",
        v.name,
        v.id,
        human(v.size),
        v.size.div_ceil(v.block_size),
        human(v.block_size),
        v.blocks.len(),
        v.epoch,
        v.pool
    );
    if !v.blocks.is_empty() {
        outln!(
            "{:>8} {:>6} {:<12} {:>6}",
            "BLOCK",
            "GROUP",
            "REPLICAS",
            "LEADER"
        );
    }
    for (b, g) in &v.blocks {
        let replicas = view
            .groups
            .iter()
            .find(|x| x.id == *g)
            .map(|x| {
                x.replicas
                    .iter()
                    .map(|r| format!("b{r}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        outln!(
            "{:>8} {:>6} {:<12} {:>6}",
            b,
            g,
            replicas,
            view.leaders
                .get(g)
                .map_or("?".to_string(), |l| format!("b{l}"))
        );
    }
    Ok(())
}

fn verify(
    dir: &std::path::Path,
    name: &str,
    duration: Duration,
    qd: usize,
    span: Option<u64>,
    json: bool,
) -> Result<()> {
    let c = CdsCluster::load(dir)?;
    let report = runtime()?.block_on(async {
        let v = Volume::open(&c.access(), name, Mode::Write).await?;
        let span = span.unwrap_or(64 << 20).min(v.size());
        anyhow::Ok(cds::verify::run(&v, span, qd, duration).await?)
    })?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!("{report}");
    }
    if !report.passed() {
        bail!(
            "volume verify FAILED: {} wrong reads, {} lost writes",
            report.wrong_reads,
            report.lost_writes
        );
    }
    Ok(())
}
