//! `cdsctl cds ...`: a local CDS block store (Masters, BlockServers and
//! SnapshotWorkers as real processes), its status, its faults, and the
//! server processes themselves (`cds master`, `cds blockserver`,
//! `cds snapshot-worker`).
//!
//! What the commands do lives in [`cds::cdscluster`]; this module parses
//! the arguments, calls it and prints what it returns.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use cds::cdscluster::{self, Fault, ProcName, UpOptions, DEFAULT_GROUPS};
use cds::master::api::{DiskHealth, DiskReport};
use cds::topology::Topology;
use clap::{Args, Subcommand};

use super::kv::parse_duration;

/// The cluster directory of a CDS cluster.
#[derive(Debug, Args)]
pub struct CdsDir {
    /// The cluster directory (cds.json and one directory per process).
    #[arg(long, default_value = "cds-store")]
    pub dir: PathBuf,
}

/// Subcommands of `cdsctl cds`.
#[derive(Debug, Subcommand)]
pub enum CdsCommand {
    /// Start a local block store: Masters and BlockServers as processes on
    /// loopback, BlockGroups placed on the servers; returns once every group
    /// has a leader.
    Up {
        #[command(flatten)]
        dir: CdsDir,
        /// Master replicas (1 to 7).
        #[arg(long, default_value_t = 3)]
        masters: u64,
        /// BlockServers (3 to 32).
        #[arg(long, default_value_t = 3, conflicts_with = "topology")]
        servers: u64,
        /// Disks (data directories) per BlockServer (1 to 8).
        #[arg(long, default_value_t = 2, conflicts_with = "topology")]
        disks: u64,
        /// A topology file (TOML: one `[[node]]` with zone, rack, and
        /// optionally region and disks, per BlockServer), or `default`: 6
        /// BlockServers over 3 zones, 2 racks per zone, 2 disks each.
        #[arg(long)]
        topology: Option<PathBuf>,
        /// BlockGroups to create (each a Raft group of 3 replicas).
        #[arg(long, default_value_t = DEFAULT_GROUPS)]
        groups: u64,
        /// SnapshotWorkers (0 to 8; snapshot tasks wait while there are none).
        #[arg(long, default_value_t = 1)]
        workers: u64,
        /// The most BlockGroups per second a SnapshotWorker takes a task's
        /// step to (0: no limit), to spare the volumes' own IO.
        #[arg(long, default_value_t = 0)]
        worker_rate: u32,
        /// Milliseconds per Raft tick.
        #[arg(long, default_value_t = 50)]
        tick_ms: u64,
        /// How long a BlockServer may go unheard before the Master rebuilds
        /// its replicas elsewhere (1s to 24h).
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        repair_grace: Duration,
        /// How long a replica removed by replica GC stays in its disk's
        /// trash directory before it is deleted.
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        trash_keep: Duration,
        /// Log entries between a BlockGroup replica's snapshots; a replica
        /// further behind than the log kept catches up by a snapshot
        /// install.
        #[arg(long, default_value_t = cds::blockserver::limits::SNAPSHOT_EVERY)]
        snapshot_every: u64,
        /// Snapshot bytes per second each group's leader sends to a
        /// replica catching up, e.g. 8MiB (0: unlimited).
        #[arg(long, default_value = "0", value_parser = crate::cmd::volume::parse_size)]
        install_rate: u64,
        /// How long to wait for the cluster to serve.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Show every process: pid, state, role; BlockServers' replicas and leaders.
    Status {
        #[command(flatten)]
        dir: CdsDir,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop every process: SIGTERM, then SIGKILL after the timeout.
    Down {
        #[command(flatten)]
        dir: CdsDir,
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// SIGKILL a process (a crash): m1, m2, ... for Masters, b1, b2, ... for
    /// BlockServers, w1, ... for SnapshotWorkers.
    Kill {
        name: ProcName,
        #[command(flatten)]
        dir: CdsDir,
    },
    /// SIGSTOP a process (a hung machine).
    Pause {
        name: ProcName,
        #[command(flatten)]
        dir: CdsDir,
    },
    /// SIGCONT a paused process.
    Resume {
        name: ProcName,
        #[command(flatten)]
        dir: CdsDir,
    },
    /// Cut a process's Raft links to its peers, both ways: a BlockServer's
    /// to every other BlockServer, a Master's to the other Masters
    /// (applied within half a second; clients still reach it).
    Partition {
        name: ProcName,
        #[command(flatten)]
        dir: CdsDir,
    },
    /// Remove every network fault (partitions, delays, losses) of every
    /// Master and BlockServer.
    Heal {
        #[command(flatten)]
        dir: CdsDir,
    },
    /// Start a stopped process again from its config and data.
    Restart {
        name: ProcName,
        #[command(flatten)]
        dir: CdsDir,
    },
    /// Add an empty BlockServer (the next number, free loopback ports, the
    /// other servers' settings); the Master's capacity balance then moves
    /// replicas to it.
    AddServer {
        /// Its zone.
        #[arg(long)]
        zone: String,
        /// Its rack.
        #[arg(long)]
        rack: String,
        #[arg(long, default_value = "local")]
        region: String,
        /// Its disks (data directories).
        #[arg(long, default_value_t = 2)]
        disks: u32,
        /// The pool of its disks: one name for all, or one per disk
        /// (comma-separated). Default: the pools of server 1's disks, in
        /// order.
        #[arg(long, value_delimiter = ',')]
        pool: Vec<String>,
        #[command(flatten)]
        dir: CdsDir,
    },
    /// Drain a BlockServer: it gets no new replicas and the Master moves
    /// each of its replicas elsewhere (add learner, catch up, change
    /// voters), a few at a time. `cds status` shows the moves.
    Drain {
        name: ProcName,
        #[command(flatten)]
        dir: CdsDir,
    },
    /// Fail a BlockServer's disk while it runs (1 for its first): its IO
    /// returns EIO, its replicas are reported lost and rebuilt elsewhere,
    /// the server keeps serving from its other disks. The disk stays
    /// failed, across restarts too, until `cdsctl cds fault clear bN`
    /// (`cds fault disk-error --for D` fails it for a while).
    FailDisk {
        name: ProcName,
        disk: usize,
        #[command(flatten)]
        dir: CdsDir,
    },
    /// Inject a fault into one process for a while (`--for`), then undo
    /// it: process, network, disk, CPU and memory faults. `fault list`
    /// shows those in force, `fault clear` undoes them.
    Fault {
        #[command(subcommand)]
        what: FaultCmd,
    },
    /// Stop draining a BlockServer (moves under way finish).
    Undrain {
        name: ProcName,
        #[command(flatten)]
        dir: CdsDir,
    },
    /// Forget a BlockServer that holds no replica (drain it first), stop
    /// its process and drop it from the cluster (its directory stays).
    Rm {
        name: ProcName,
        #[command(flatten)]
        dir: CdsDir,
    },
    /// Run the data path under the seeded simulator: BlockGroups on
    /// simulated disks and network, crashes and partitions, a block
    /// workload checked sector by sector for linearizability.
    Sim(SimArgs),
    /// Run one Master process (started by `cds up`; takes a config file).
    Master {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run one BlockServer process (started by `cds up`; takes a config file).
    Blockserver {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run one SnapshotWorker process (started by `cds up`; takes a config file).
    SnapshotWorker {
        #[arg(long)]
        config: PathBuf,
    },
}

/// How long a fault lasts and which cluster it goes to.
#[derive(Debug, Args)]
pub struct FaultFor {
    /// How long it lasts; then it is undone (Ctrl-C undoes it early).
    /// Without: it stays until `cdsctl cds fault clear` (a hog needs it).
    #[arg(long = "for", value_parser = parse_duration)]
    duration: Option<Duration>,
    #[command(flatten)]
    dir: CdsDir,
}

/// Subcommands of `cdsctl cds fault`.
#[derive(Debug, Subcommand)]
pub enum FaultCmd {
    /// SIGKILL the process; restart it after --for.
    Kill {
        name: ProcName,
        #[command(flatten)]
        f: FaultFor,
    },
    /// SIGSTOP the process (a hung machine); SIGCONT after --for.
    Stop {
        name: ProcName,
        #[command(flatten)]
        f: FaultFor,
    },
    /// Cut its Raft links, both ways, to --peers (default: all its Raft
    /// peers).
    Partition {
        name: ProcName,
        /// Peers, comma-separated (b2,b3).
        #[arg(long, value_delimiter = ',')]
        peers: Vec<ProcName>,
        #[command(flatten)]
        f: FaultFor,
    },
    /// Send its Raft messages to --peers late.
    Delay {
        name: ProcName,
        /// Milliseconds added to each message.
        #[arg(long)]
        ms: u64,
        #[arg(long, value_delimiter = ',')]
        peers: Vec<ProcName>,
        #[command(flatten)]
        f: FaultFor,
    },
    /// Drop a share of its Raft messages to --peers.
    Drop {
        name: ProcName,
        /// Percent of messages dropped (1 to 100).
        #[arg(long)]
        pct: u8,
        #[arg(long, value_delimiter = ',')]
        peers: Vec<ProcName>,
        #[command(flatten)]
        f: FaultFor,
    },
    /// Fail a BlockServer disk (1 for its first): its IO returns EIO.
    DiskError {
        name: ProcName,
        disk: usize,
        #[command(flatten)]
        f: FaultFor,
    },
    /// Make a BlockServer disk slow: every sync and read waits --ms first
    /// (buffered writes do not: they land in the page cache).
    DiskSlow {
        name: ProcName,
        disk: usize,
        #[arg(long)]
        ms: u64,
        #[command(flatten)]
        f: FaultFor,
    },
    /// Fill a BlockServer disk: writes that need space return ENOSPC.
    DiskFull {
        name: ProcName,
        disk: usize,
        #[command(flatten)]
        f: FaultFor,
    },
    /// Busy threads pinned to the CPUs the process runs on (this command
    /// is the hog).
    Cpu {
        name: ProcName,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[command(flatten)]
        f: FaultFor,
    },
    /// Memory pressure beside the process: this command holds --mib MiB
    /// resident.
    Memory {
        name: ProcName,
        #[arg(long)]
        mib: u64,
        #[command(flatten)]
        f: FaultFor,
    },
    /// The faults in force: fault files and stopped processes.
    List {
        #[command(flatten)]
        dir: CdsDir,
    },
    /// Undo every fault (of one process, or all): fault files removed,
    /// stopped processes continued.
    Clear {
        name: Option<ProcName>,
        #[command(flatten)]
        dir: CdsDir,
    },
}

/// Flags of `cdsctl cds sim`.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Seeds to run, as a range (each seed reproduces its run exactly).
    #[arg(long, default_value = "1-20", value_parser = super::raft::parse_seed_range)]
    seeds: (u64, u64),
    /// BlockServers (every group has a replica on each): 3 or 5.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(3..=5))]
    nodes: u64,
    /// BlockGroups.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    groups: u64,
    /// Blocks of the simulated volume (64 KiB each).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    blocks: u64,
    /// Clients, one request in flight each.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    clients: u64,
    /// Simulated time under faults, per seed.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// No crashes, partitions or message loss: the workload alone.
    #[arg(long)]
    no_faults: bool,
    /// Print every seed's line, not only the failures.
    #[arg(long)]
    verbose: bool,
    /// Simulate the control plane instead: the Master's scheduler, its
    /// moves and replica GC over modelled groups while servers crash, are
    /// lost, fail disks, join and are drained (500 ms rounds over
    /// --duration; --groups groups on 6 servers at first).
    #[arg(long)]
    control: bool,
    /// Threads (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Inject a bug the simulator must catch (test builds).
    #[cfg(feature = "bug-injection")]
    #[arg(long)]
    inject_bug: Option<cds::sim::Bug>,
}

impl SimArgs {
    fn config(&self, seed: u64) -> cds::sim::SimConfig {
        let mut c = cds::sim::SimConfig::new(seed);
        c.nodes = self.nodes as usize;
        c.groups = self.groups as usize;
        c.blocks = self.blocks;
        c.clients = self.clients as usize;
        c.millis = self.duration.as_millis() as u64;
        c.faults = !self.no_faults;
        #[cfg(feature = "bug-injection")]
        {
            c.bug = self.inject_bug;
        }
        c
    }
}

/// Runs `one` for every seed of `args.seeds` on `args.threads` threads
/// (every core by default), seeds handed out in turn; the outcomes in no
/// particular order.
fn run_seeds<T: Send>(args: &SimArgs, one: impl Fn(u64) -> T + Sync) -> Vec<T> {
    let (first, last) = args.seeds;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let next = std::sync::atomic::AtomicU64::new(first);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if seed > last {
                            return mine;
                        }
                        mine.push(one(seed));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    })
}

/// Runs the seeds on `threads` threads; prints failures (or every seed)
/// in seed order and closes with `N passed, M failed`.
fn sim(args: &SimArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let mut outcomes = run_seeds(args, |seed| cds::sim::run(&args.config(seed)));
    outcomes.sort_by_key(|o| o.seed);
    let mut failed = 0;
    let (mut acked, mut reads, mut crashes, mut rot, mut repaired) = (0, 0, 0, 0, 0);
    let (mut snaps, mut rollbacks, mut clones) = (0, 0, 0);
    for o in &outcomes {
        snaps += o.stats.snapshots;
        rollbacks += o.stats.rollbacks;
        clones += o.stats.clones;
        acked += o.stats.writes_acked;
        reads += o.stats.reads;
        crashes += o.stats.crashes;
        rot += o.stats.bit_rot;
        repaired += o.stats.repaired;
        if o.failure.is_some() {
            failed += 1;
            outln!("{o}");
            outln!("  replay: {}", replay_command(args, o.seed));
        } else if args.verbose {
            outln!("{o}");
        }
    }
    outln!(
        "{} seeds in {:.1}s: {acked} writes acknowledged, {reads} reads checked, {snaps} snapshots, \
         {rollbacks} rollbacks, {clones} clones, {crashes} crashes, {rot} bits rotted, {repaired} \
         sectors repaired from replicas",
        outcomes.len(),
        started.elapsed().as_secs_f64()
    );
    outln!("{} passed, {failed} failed", outcomes.len() - failed);
    if failed > 0 {
        anyhow::bail!("{failed} seeds failed");
    }
    Ok(())
}

/// The command line that runs `seed` alone with the same flags.
fn replay_command(a: &SimArgs, seed: u64) -> String {
    let mut s = format!(
        "cdsctl cds sim --seeds {seed}-{seed} --nodes {} --groups {} --blocks {} --clients {} \
         --duration {}ms --verbose",
        a.nodes,
        a.groups,
        a.blocks,
        a.clients,
        a.duration.as_millis()
    );
    if a.no_faults {
        s += " --no-faults";
    }
    #[cfg(feature = "bug-injection")]
    if let Some(b) = a.inject_bug {
        s += &format!(" --inject-bug {b}");
    }
    s
}

fn exe() -> Result<PathBuf> {
    std::env::current_exe().context("finding the cdsctl executable to run the servers")
}

/// Runs a `cdsctl cds` subcommand.
pub fn run(cmd: CdsCommand) -> Result<()> {
    match cmd {
        CdsCommand::Up {
            dir,
            masters,
            servers,
            disks,
            groups,
            workers,
            worker_rate,
            topology,
            tick_ms,
            repair_grace,
            trash_keep,
            snapshot_every,
            install_rate,
            timeout,
        } => {
            let mut o = UpOptions::new(exe()?);
            o.snapshot_every = snapshot_every;
            o.install_bytes_per_s = install_rate;
            o.masters = masters;
            o.servers = servers;
            o.disks = disks;
            o.groups = groups;
            o.workers = workers;
            o.worker_rate = worker_rate;
            o.topology = match topology {
                None => None,
                Some(p) if p.as_os_str() == "default" => Some(Topology::default_six()),
                Some(p) => Some(Topology::load(&p)?),
            };
            o.tick_ms = tick_ms;
            o.repair_grace = repair_grace;
            o.trash_keep = trash_keep;
            o.timeout = timeout;
            let c = cdscluster::up(&dir.dir, &o)?;
            let disks = match &o.topology {
                None => format!("{disks} disks each"),
                Some(t) => {
                    let zones: std::collections::BTreeSet<_> =
                        t.nodes.iter().map(|n| (&n.region, &n.zone)).collect();
                    let racks: std::collections::BTreeSet<_> = t
                        .nodes
                        .iter()
                        .map(|n| (&n.region, &n.zone, &n.rack))
                        .collect();
                    let d: u32 = t.nodes.iter().map(|n| n.disk_count()).sum();
                    let pools = if t.pools.is_empty() {
                        String::new()
                    } else {
                        format!(", pools {}", t.pool_names().join(" and "))
                    };
                    format!(
                        "{d} disks, {} zones, {} racks{pools}",
                        zones.len(),
                        racks.len()
                    )
                }
            };
            let pools = o.topology.as_ref().map_or(1, |t| t.pool_names().len()) as u64;
            outln!(
                "CDS cluster up in {}: {} Masters, {} BlockServers ({disks}), {} BlockGroups{}, \
                 {} SnapshotWorker{}",
                dir.dir.display(),
                c.masters.len(),
                c.servers.len(),
                groups * pools,
                if pools > 1 {
                    format!(" ({groups} per pool)")
                } else {
                    String::new()
                },
                c.workers.len(),
                if c.workers.len() == 1 { "" } else { "s" }
            );
            for (name, e) in c.all() {
                if name.role == cdscluster::Role::SnapshotWorker {
                    outln!(
                        "  {name:<4} pid {:<8} (snapshot worker)",
                        e.pid.map_or("-".into(), |p| p.to_string())
                    );
                    continue;
                }
                outln!(
                    "  {name:<4} pid {:<8} raft {:<21} {} {}",
                    e.pid.map_or("-".into(), |p| p.to_string()),
                    e.raft_addr,
                    if name.role == cdscluster::Role::Master {
                        "http"
                    } else {
                        "data"
                    },
                    e.http_addr
                );
            }
            outln!(
                "next: cdsctl volume create vol1 --size 1GiB --dir {}",
                dir.dir.display()
            );
            Ok(())
        }
        CdsCommand::Status { dir, json } => status(&dir.dir, json),
        CdsCommand::Down { dir, timeout } => {
            for (name, how) in cdscluster::down(&dir.dir, timeout)? {
                outln!("{name}: {how}");
            }
            Ok(())
        }
        CdsCommand::Kill { name, dir } => {
            cdscluster::fault(&dir.dir, name, Fault::Kill)?;
            outln!("{name} killed (SIGKILL)");
            Ok(())
        }
        CdsCommand::Pause { name, dir } => {
            cdscluster::fault(&dir.dir, name, Fault::Pause)?;
            outln!("{name} paused (SIGSTOP)");
            Ok(())
        }
        CdsCommand::Resume { name, dir } => {
            cdscluster::fault(&dir.dir, name, Fault::Resume)?;
            outln!("{name} resumed (SIGCONT)");
            Ok(())
        }
        CdsCommand::Restart { name, dir } => {
            let pid = cdscluster::restart(&dir.dir, &exe()?, name)?;
            outln!("{name} restarted (pid {pid})");
            Ok(())
        }
        CdsCommand::Sim(args) if args.control => sim_control(&args),
        CdsCommand::Sim(args) => sim(&args),
        CdsCommand::AddServer {
            zone,
            rack,
            region,
            disks,
            pool,
            dir,
        } => {
            let new = cdscluster::NewServer {
                location: cds::master::Location { region, zone, rack },
                disks,
                pools: pool,
            };
            let (name, pools) = cdscluster::add_server(&dir.dir, &exe()?, &new)?;
            outln!(
                "{name} added in {} / {} / {} with {disks} disks (pools {}); the Master balances replicas onto it",
                new.location.region,
                new.location.zone,
                new.location.rack,
                pools.join(", ")
            );
            Ok(())
        }
        CdsCommand::Drain { name, dir } => {
            cdscluster::drain(&dir.dir, name, true)?;
            outln!("{name} draining: its replicas move elsewhere (`cdsctl cds status` shows the moves)");
            Ok(())
        }
        CdsCommand::FailDisk { name, disk, dir } => {
            cdscluster::fail_disk(&dir.dir, name, disk)?;
            outln!("{name} disk {disk} failing: its replicas will be rebuilt elsewhere");
            Ok(())
        }
        CdsCommand::Fault { what } => fault(what),
        CdsCommand::Undrain { name, dir } => {
            cdscluster::drain(&dir.dir, name, false)?;
            outln!("{name} no longer drained");
            Ok(())
        }
        CdsCommand::Rm { name, dir } => {
            cdscluster::remove_server(&dir.dir, name)?;
            outln!("{name} removed from the cluster (its directory is left)");
            Ok(())
        }
        CdsCommand::Partition { name, dir } => {
            let others = cdscluster::partition(&dir.dir, name)?;
            let peers = match name.role {
                cdscluster::Role::Master => "Masters",
                cdscluster::Role::BlockServer => "BlockServers",
                cdscluster::Role::SnapshotWorker => "nobody",
            };
            outln!("{name}: Raft links to {peers} {others:?} cut (within half a second)");
            Ok(())
        }
        CdsCommand::Heal { dir } => {
            cdscluster::heal(&dir.dir)?;
            outln!("every partition removed (within half a second)");
            Ok(())
        }
        CdsCommand::Master { config } => Ok(cds::master::process::run(&config)?),
        CdsCommand::Blockserver { config } => Ok(cds::blockserver::process::run(&config)?),
        CdsCommand::SnapshotWorker { config } => Ok(cds::snapshotworker::process::run(&config)?),
    }
}

/// Set by SIGINT while a fault waits out its duration: the fault is then
/// undone at once.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn fault(what: FaultCmd) -> Result<()> {
    use cdscluster::faults::{self, Injection};
    let (name, inj, f) = match what {
        FaultCmd::List { dir } => {
            let all = faults::list(&dir.dir)?;
            if all.is_empty() {
                outln!("no fault in force");
            }
            for a in all {
                let left = a.left.map_or("until cleared".into(), |d| {
                    format!("{:.1}s left", d.as_secs_f64())
                });
                outln!("{:<4} {:<14} {} ({left})", a.process, a.name, a.what);
            }
            return Ok(());
        }
        FaultCmd::Clear { name, dir } => {
            let undone = faults::clear(&dir.dir, name)?;
            if undone.is_empty() {
                outln!("no fault to undo");
            }
            for line in undone {
                outln!("{line}");
            }
            return Ok(());
        }
        FaultCmd::Kill { name, f } => (name, Injection::Kill, f),
        FaultCmd::Stop { name, f } => (name, Injection::Stop, f),
        FaultCmd::Partition { name, peers, f } => (name, Injection::Cut { peers }, f),
        FaultCmd::Delay { name, ms, peers, f } => (name, Injection::Delay { peers, ms }, f),
        FaultCmd::Drop {
            name,
            pct,
            peers,
            f,
        } => (name, Injection::Loss { peers, pct }, f),
        FaultCmd::DiskError { name, disk, f } => (name, Injection::DiskError { disk }, f),
        FaultCmd::DiskSlow { name, disk, ms, f } => (name, Injection::DiskSlow { disk, ms }, f),
        FaultCmd::DiskFull { name, disk, f } => (name, Injection::DiskFull { disk }, f),
        FaultCmd::Cpu { name, threads, f } => (name, Injection::Cpu { threads }, f),
        FaultCmd::Memory { name, mib, f } => (name, Injection::Memory { mib }, f),
    };
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
    faults::inject(
        &f.dir.dir,
        &exe()?,
        name,
        &inj,
        f.duration,
        &INTERRUPTED,
        &mut |line| outln!("{line}"),
    )?;
    Ok(())
}

/// The mark after a disk's replica count in `cds status`: F full, X
/// failed, s slow, nothing when well (or not reported).
fn disk_mark(d: Option<&DiskReport>) -> &'static str {
    match d {
        Some(d) if d.state == DiskHealth::Failed => "X",
        Some(d) if d.state == DiskHealth::Full => "F",
        Some(d) if d.slow_ms > 0 => "s",
        _ => "",
    }
}

fn status(dir: &std::path::Path, json: bool) -> Result<()> {
    let (procs, view) = cdscluster::status(dir)?;
    if json {
        let v = serde_json::json!({ "processes": procs, "cluster": view });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    outln!(
        "{:<5} {:<8} {:<7} {:<22} {:<10} {:>5} {:>8} {:>8} {:>7}",
        "NAME",
        "PID",
        "STATE",
        "ADDRESS",
        "ROLE",
        "TERM",
        "REPLICAS",
        "LEADS",
        "HEARD"
    );
    for p in &procs {
        let (role, term) = match &p.master {
            Some(m) => (m.role.clone(), m.term.to_string()),
            None if p.name.starts_with('m') => ("-".into(), "-".into()),
            None if p.name.starts_with('w') => ("worker".into(), "-".into()),
            None => ("server".into(), "-".into()),
        };
        let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        outln!(
            "{:<5} {:<8} {:<7} {:<22} {:<10} {:>5} {:>8} {:>8} {:>7}",
            p.name,
            p.pid.map_or("-".into(), |p| p.to_string()),
            p.state,
            p.addr,
            role,
            term,
            opt(p.replicas),
            opt(p.leads),
            p.last_heard_ms
                .map_or("-".to_string(), |ms| format!("{:.1}s", ms as f64 / 1000.0))
        );
    }
    match view {
        Some(v) => {
            outln!(
                "{} BlockGroups, {} with a known leader",
                v.groups.len(),
                v.leaders.len()
            );
            topology_tree(&v);
        }
        None => outln!("no Master leads: the cluster view is unavailable"),
    }
    Ok(())
}

/// The BlockServers by region, zone and rack with their replica and
/// leader counts, and how the groups spread over the zones.
fn topology_tree(v: &cds::master::api::ClusterView) {
    use std::collections::{BTreeMap, BTreeSet};
    let mut servers: Vec<_> = v.servers.iter().collect();
    servers.sort_by(|a, b| (&a.location, a.id).cmp(&(&b.location, b.id)));
    let replicas = |id: u64| v.groups.iter().filter(|g| g.replicas.contains(&id)).count();
    let leads = |id: u64| v.leaders.values().filter(|&&s| s == id).count();
    outln!();
    // Replicas per disk of each server, as the servers reported them.
    let mut per_disk: BTreeMap<u64, BTreeMap<u32, usize>> = BTreeMap::new();
    for r in &v.replica_disks {
        *per_disk
            .entry(r.server)
            .or_default()
            .entry(r.disk)
            .or_default() += 1;
    }
    let disks_of = |s: &cds::master::Server| -> String {
        if v.last_heard_ms.get(&s.id).is_none_or(|&ms| ms > 2_000) {
            return "-".into();
        }
        (0..s.disks.len() as u32)
            .map(|d| {
                let n = per_disk
                    .get(&s.id)
                    .and_then(|m| m.get(&d))
                    .copied()
                    .unwrap_or(0);
                format!(
                    "{n}{}",
                    disk_mark(v.disk_health.get(&s.id).and_then(|h| h.get(d as usize)))
                )
            })
            .collect::<Vec<_>>()
            .join("+")
    };
    // Data-path requests per second and the fullest disk's use, from the
    // server's last two heartbeats.
    let io_of = |s: &cds::master::Server| -> String {
        v.io_rates
            .get(&s.id)
            .filter(|_| v.last_heard_ms.get(&s.id).is_some_and(|&ms| ms <= 2_000))
            .map_or("-".into(), |r| (r.reads_per_s + r.writes_per_s).to_string())
    };
    let use_of = |s: &cds::master::Server| -> String {
        v.disk_health
            .get(&s.id)
            .filter(|_| v.last_heard_ms.get(&s.id).is_some_and(|&ms| ms <= 2_000))
            .and_then(|ds| {
                ds.iter()
                    .filter(|d| d.total_bytes > 0)
                    .map(|d| 100 - d.free_bytes.min(d.total_bytes) * 100 / d.total_bytes)
                    .max()
            })
            .map_or("-".into(), |p| format!("{p}%"))
    };
    outln!(
        "{:<36} {:<6} {:>8} {:>6} {:>9} {:>7} {:>5}  {}",
        "REGION / ZONE / RACK",
        "SERVER",
        "REPLICAS",
        "LEADS",
        "PER DISK",
        "IO/s",
        "USE",
        "STATE"
    );
    for s in &servers {
        let l = &s.location;
        let state = match v.last_heard_ms.get(&s.id) {
            None => "unheard",
            Some(&ms) if ms > 2_000 => "silent",
            Some(_) if s.drained => "draining",
            Some(_) => "up",
        };
        outln!(
            "{:<36} {:<6} {:>8} {:>6} {:>9} {:>7} {:>5}  {}",
            format!("{} / {} / {}", l.region, l.zone, l.rack),
            format!("b{}", s.id),
            replicas(s.id),
            leads(s.id),
            disks_of(s),
            io_of(s),
            use_of(s),
            state
        );
    }
    if servers.is_empty() {
        return;
    }
    let r: Vec<usize> = servers.iter().map(|s| replicas(s.id)).collect();
    let l: Vec<usize> = servers.iter().map(|s| leads(s.id)).collect();
    let range = |v: &[usize]| {
        (
            v.iter().copied().min().unwrap_or(0),
            v.iter().copied().max().unwrap_or(0),
        )
    };
    let zone_of: BTreeMap<u64, (&str, &str)> = v
        .servers
        .iter()
        .map(|s| (s.id, (s.location.region.as_str(), s.location.zone.as_str())))
        .collect();
    let zones: BTreeSet<_> = zone_of.values().collect();
    // The zones a pool's servers span: a group can use no more.
    let pool_zones = |pool: &str| -> usize {
        v.servers
            .iter()
            .filter(|s| s.in_pool(pool))
            .filter_map(|s| zone_of.get(&s.id))
            .collect::<BTreeSet<_>>()
            .len()
    };
    let spread = v
        .groups
        .iter()
        .filter(|g| {
            let z: BTreeSet<_> = g.replicas.iter().filter_map(|r| zone_of.get(r)).collect();
            z.len() == g.replicas.len().min(pool_zones(&g.pool))
        })
        .count();
    let ((rlo, rhi), (llo, lhi)) = (range(&r), range(&l));
    outln!(
        "replicas per server {rlo}..{rhi}, leaders per server {llo}..{lhi}; {spread} of {} groups \
         spread over as many zones as they can ({} zones)",
        v.groups.len(),
        zones.len()
    );
    // Each pool's balance, when there are several.
    let pools: BTreeSet<&str> = v
        .groups
        .iter()
        .map(|g| g.pool.as_str())
        .chain(v.servers.iter().flat_map(|s| s.pool_names()))
        .collect();
    if pools.len() > 1 {
        for pool in pools {
            // Balance is judged over the pool's servers that are up and
            // not draining, as the scheduler judges it.
            let members: Vec<&&cds::master::Server> = servers
                .iter()
                .filter(|s| {
                    s.in_pool(pool)
                        && !s.drained
                        && v.last_heard_ms.get(&s.id).is_some_and(|&ms| ms <= 2_000)
                })
                .collect();
            let groups = v.groups.iter().filter(|g| g.pool == pool).count();
            let counts: Vec<usize> = members
                .iter()
                .map(|s| {
                    v.groups
                        .iter()
                        .filter(|g| g.pool == pool && g.replicas.contains(&s.id))
                        .count()
                })
                .collect();
            let (lo, hi) = range(&counts);
            outln!(
                "pool {pool}: {groups} groups, {lo}..{hi} replicas on each of its {} servers up{}",
                members.len(),
                // Outside the bound, either a move is under way or the
                // zones leave no better placement (a zone with one server
                // of the pool holds a replica of each of its groups).
                if cds::master::schedule::balanced(&counts) {
                    " (within 5% of the mean, or one)"
                } else {
                    ""
                }
            );
        }
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let moves: Vec<_> = v
        .groups
        .iter()
        .filter_map(|g| g.moving.as_ref().map(|m| (g.id, m)))
        .collect();
    if moves.is_empty() {
        outln!("no replica moves under way");
    } else {
        outln!("{} replica moves under way:", moves.len());
        for (g, m) in moves {
            outln!(
                "  group {g}: {} b{} -> b{} ({:.0}s)",
                m.reason.as_str(),
                m.from,
                m.to,
                now_ms.saturating_sub(m.started_ms) as f64 / 1000.0
            );
        }
    }
    for i in &v.installs {
        let p = &i.progress;
        outln!(
            "  group {}: snapshot install to b{}: {:.1} of {:.1} MiB ({}%)",
            i.group,
            i.server,
            p.have_bytes as f64 / (1 << 20) as f64,
            p.total_bytes as f64 / (1 << 20) as f64,
            (p.have_bytes * 100)
                .checked_div(p.total_bytes)
                .unwrap_or(100)
        );
    }
    let mut unwell = Vec::new();
    for (server, disks) in &v.disk_health {
        for (i, d) in disks.iter().enumerate() {
            let what = match d.state {
                DiskHealth::Ok if d.slow_ms == 0 => continue,
                DiskHealth::Ok => format!("slow ({} ms per sync and read)", d.slow_ms),
                DiskHealth::Full => "full".to_string(),
                DiskHealth::Failed => format!("failed: {}", d.why.as_deref().unwrap_or("?")),
            };
            unwell.push(format!("b{server} disk {}: {what}", i + 1));
        }
    }
    if !unwell.is_empty() {
        outln!(
            "disks not well (F full, X failed, s slow): {}",
            unwell.join("; ")
        );
    }
    if !v.degraded.is_empty() {
        outln!(
            "under-replicated groups (a replica dead or failed): {:?}",
            v.degraded
        );
    }
    if !v.stuck.is_empty() {
        outln!(
            "groups with a minority alive, left alone until their replicas return: {:?}",
            v.stuck
        );
    }
}

/// `cds sim --control`: the control plane's seeds (see
/// `cds::sim::control`), on `threads` threads; failures (or every seed)
/// in seed order, then `N passed, M failed`.
fn sim_control(args: &SimArgs) -> Result<()> {
    use cds::sim::control::{self, ControlConfig};
    let started = std::time::Instant::now();
    let rounds = (args.duration.as_millis() as u64 / 500).max(1);
    let mut outcomes = run_seeds(args, |seed| {
        let mut c = ControlConfig::new(seed);
        c.groups = args.groups;
        c.rounds = rounds;
        control::run(&c)
    });
    outcomes.sort_by_key(|o| o.seed);
    let mut failed = 0;
    let mut t = control::ControlStats::default();
    let mut settle_max = 0;
    for o in &outcomes {
        let s = &o.stats;
        t.moves_started += s.moves_started;
        t.moves_finished += s.moves_finished;
        t.moves_abandoned += s.moves_abandoned;
        t.crashes += s.crashes;
        t.losses += s.losses;
        t.disk_failures += s.disk_failures;
        t.additions += s.additions;
        t.drains += s.drains;
        t.master_changes += s.master_changes;
        t.replicas_collected += s.replicas_collected;
        t.recorded += s.recorded;
        settle_max = settle_max.max(s.settle_rounds);
        match &o.failure {
            Some(f) => {
                failed += 1;
                outln!("seed {}: FAILED: {f}", o.seed);
                outln!(
                    "  replay: cdsctl cds sim --control --seeds {0}-{0} --groups {1} --duration {2}ms --verbose",
                    o.seed,
                    args.groups,
                    args.duration.as_millis()
                );
            }
            None if args.verbose => outln!("seed {}: ok {:?}", o.seed, s),
            None => {}
        }
    }
    outln!(
        "{} seeds in {:.1}s: {} moves started, {} finished, {} abandoned; {} crashes, {} servers lost, \
         {} disks failed, {} servers added, {} drains, {} Master leader changes, {} replicas collected, \
         {} configurations recorded from leaders; settled within {} rounds",
        outcomes.len(),
        started.elapsed().as_secs_f64(),
        t.moves_started,
        t.moves_finished,
        t.moves_abandoned,
        t.crashes,
        t.losses,
        t.disk_failures,
        t.additions,
        t.drains,
        t.master_changes,
        t.replicas_collected,
        t.recorded,
        settle_max
    );
    outln!("{} passed, {failed} failed", outcomes.len() - failed);
    if failed > 0 {
        anyhow::bail!("{failed} seeds failed");
    }
    Ok(())
}
