//! `cdsctl raft ...`: the Raft core's tools. `raft sim` runs the seeded
//! simulator, one seed (optionally writing its trace) or a sweep of seeds.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use raft_core::sim::sweep::sweep;
use raft_core::sim::{FaultSet, SimConfig};

/// Subcommands of `cdsctl raft`.
#[derive(Debug, Subcommand)]
pub enum RaftCommand {
    /// Run clusters of the real Raft core under the deterministic simulator.
    ///
    /// Every step is checked against Election Safety, Log Matching, Leader
    /// Completeness and State Machine Safety; after `--steps` steps the
    /// faults stop and the cluster must elect a leader and finish every
    /// client operation (liveness); the clients' history is then checked for
    /// linearizability. The same seed and flags always give the same run.
    Sim(SimArgs),
    /// Run a scenario script (one command a line: campaign, tick, deliver,
    /// partition, propose, expect, ...) and print what happened.
    ///
    /// Exits non-zero, naming the line, when an expectation fails or a
    /// command is malformed. See the book's scenario scripts chapter for the
    /// format.
    Scenario {
        /// The script file.
        file: PathBuf,
        /// Inject a classic Raft bug into every node (builds with the
        /// `bug-injection` feature only).
        #[cfg(feature = "bug-injection")]
        #[arg(long)]
        inject_bug: Option<raft_core::Bug>,
    },
}

/// Flags of `cdsctl raft sim`.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Cluster size (1 to 9 voters).
    #[arg(long, default_value_t = 5)]
    pub nodes: usize,
    /// Run this one seed.
    #[arg(long, conflicts_with = "seeds")]
    pub seed: Option<u64>,
    /// Sweep a range of seeds, e.g. `1-500`.
    #[arg(long, value_parser = parse_seed_range)]
    pub seeds: Option<(u64, u64)>,
    /// Steps (scheduler events) with faults injected, per seed.
    #[arg(long, default_value_t = 5000)]
    pub steps: u64,
    /// Faults to inject: `all`, `none`, or a comma list of: delay, drop,
    /// duplicate, reorder, partition, asymmetric, crash, pause, tickrate.
    #[arg(long, default_value = "all", value_parser = parse_faults)]
    pub faults: FaultSet,
    /// Write the run's trace (rtrace JSON Lines) to this file (single seed).
    #[arg(long, requires = "seed")]
    pub trace: Option<PathBuf>,
    /// Concurrent simulated clients.
    #[arg(long, default_value_t = 3)]
    pub clients: usize,
    /// Inject random membership changes (joint and single-step, learners
    /// added, promoted and removed, the leader removed); two spare nodes
    /// start outside the group.
    #[arg(long)]
    pub reconfig: bool,
    /// Take snapshots often (every 16 entries) and compact the log behind
    /// them, with tiny throttled chunks, so snapshot installs happen often,
    /// get interrupted and resume; 5% of chunks are corrupted in flight.
    #[arg(long)]
    pub compact: bool,
    /// Quiescent groups: an idle group's leader stops heartbeating and its
    /// followers their election timers; node-level liveness pings (one per
    /// pair of nodes, through the faulty network) wake followers whose
    /// leader's node is declared dead. The quiet phase also waits for the
    /// group to quiesce, crashes its leader, and waits for a new one.
    #[arg(long)]
    pub quiesce: bool,
    /// Raft groups hosted by every simulated node (a multi-group host):
    /// all of them on the same nodes, sharing each node's disk (one
    /// whole-disk log sync per node), its faults and its node-level
    /// liveness; each with its own clients (at least one per group) and
    /// invariant checks. `--steps` is per group. A trace follows one
    /// group (`--trace-group`).
    #[arg(long, default_value_t = 1)]
    pub groups: usize,
    /// With `--groups`, the group `--trace` follows (0-based): its
    /// messages, client operations and events, and the node-level faults
    /// every group shares.
    #[arg(long, default_value_t = 0, requires = "trace")]
    pub trace_group: usize,
    /// Turn PreVote off.
    #[arg(long)]
    pub no_pre_vote: bool,
    /// Turn CheckQuorum off (this also disables lease reads).
    #[arg(long)]
    pub no_check_quorum: bool,
    /// Threads for a sweep (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Inject a classic Raft bug into every node, to watch the simulator
    /// catch it (builds with the `bug-injection` feature only).
    #[cfg(feature = "bug-injection")]
    #[arg(long)]
    pub inject_bug: Option<raft_core::Bug>,
}

pub(crate) fn parse_seed_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("'{s}' is not a range like 1-500"))?;
    let a: u64 = a
        .trim()
        .parse()
        .map_err(|e| format!("bad start '{a}': {e}"))?;
    let b: u64 = b
        .trim()
        .parse()
        .map_err(|e| format!("bad end '{b}': {e}"))?;
    if a > b {
        return Err(format!("empty range {a}-{b}"));
    }
    Ok((a, b))
}

fn parse_faults(s: &str) -> Result<FaultSet, String> {
    s.parse()
}

/// Runs a `cdsctl raft` subcommand.
pub fn run(cmd: RaftCommand) -> Result<()> {
    match cmd {
        RaftCommand::Sim(args) => sim(args),
        #[cfg(not(feature = "bug-injection"))]
        RaftCommand::Scenario { file } => scenario(&file, raft_core::BugSet::default()),
        #[cfg(feature = "bug-injection")]
        RaftCommand::Scenario { file, inject_bug } => {
            let bugs = inject_bug.map(raft_core::BugSet::only).unwrap_or_default();
            scenario(&file, bugs)
        }
    }
}

fn scenario(file: &std::path::Path, bugs: raft_core::BugSet) -> Result<()> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading scenario {}", file.display()))?;
    match raft_core::sim::script::run_script_with_bugs(&text, bugs) {
        Ok(transcript) => {
            out!("{transcript}");
            outln!("{}: ok", file.display());
            Ok(())
        }
        Err(e) => {
            out!("{}", e.transcript);
            bail!("{}:{}: {}", file.display(), e.line, e.reason)
        }
    }
}

impl SimArgs {
    fn config(&self, seed: u64) -> SimConfig {
        let mut c = SimConfig::new(self.nodes, seed, self.steps, self.faults);
        c.clients = self.clients;
        c.pre_vote = !self.no_pre_vote;
        c.check_quorum = !self.no_check_quorum;
        c.reconfig = self.reconfig;
        c.compact = self.compact;
        c.quiesce = self.quiesce;
        c.groups = self.groups;
        c.trace_group = self.trace_group;
        #[cfg(feature = "bug-injection")]
        {
            c.bugs = self
                .inject_bug
                .map(raft_core::BugSet::only)
                .unwrap_or_default();
        }
        c
    }

    /// The command line that replays `seed` alone.
    fn replay_command(&self, seed: u64) -> String {
        let mut s = format!(
            "cdsctl raft sim --nodes {} --seed {seed} --steps {} --faults {}",
            self.nodes, self.steps, self.faults
        );
        if self.clients != 3 {
            s += &format!(" --clients {}", self.clients);
        }
        if self.reconfig {
            s += " --reconfig";
        }
        if self.compact {
            s += " --compact";
        }
        if self.quiesce {
            s += " --quiesce";
        }
        if self.groups != 1 {
            s += &format!(" --groups {}", self.groups);
        }
        if self.no_pre_vote {
            s += " --no-pre-vote";
        }
        if self.no_check_quorum {
            s += " --no-check-quorum";
        }
        #[cfg(feature = "bug-injection")]
        if let Some(bug) = self.inject_bug {
            s += &format!(" --inject-bug {bug}");
        }
        s
    }
}

/// The most groups per simulated node `raft sim` accepts (every group is
/// a full replica with its own stores on each node's in-memory disk).
const MAX_GROUPS: usize = 1024;

fn sim(args: SimArgs) -> Result<()> {
    if !(1..=9).contains(&args.nodes) {
        bail!("--nodes must be between 1 and 9, got {}", args.nodes);
    }
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    if !(1..=MAX_GROUPS).contains(&args.groups) {
        bail!(
            "--groups must be between 1 and {MAX_GROUPS}, got {}",
            args.groups
        );
    }
    if args.trace_group >= args.groups {
        bail!(
            "--trace-group must be below --groups ({}), got {}",
            args.groups,
            args.trace_group
        );
    }
    match (args.seed, args.seeds) {
        (Some(seed), _) => sim_one(&args, seed),
        (None, Some((a, b))) => sim_sweep(&args, a, b),
        (None, None) => sim_one(&args, 1),
    }
}

fn sim_one(args: &SimArgs, seed: u64) -> Result<()> {
    let mut cfg = args.config(seed);
    cfg.trace = args.trace.is_some();
    let started = Instant::now();
    let out = raft_core::sim::run(&cfg);
    let secs = started.elapsed().as_secs_f64();
    if let (Some(path), Some(bytes)) = (&args.trace, &out.trace) {
        std::fs::write(path, bytes)
            .with_context(|| format!("writing trace to {}", path.display()))?;
    }
    outln!(
        "seed {seed}: {} steps, {} ms simulated, {:.0} steps/s",
        out.steps,
        out.sim_time,
        out.steps as f64 / secs.max(1e-9)
    );
    print_stats(args, &out.stats);
    if let Some(path) = &args.trace {
        outln!("  trace written to {}", path.display());
    }
    match out.failure {
        None => {
            outln!("1 passed, 0 failed");
            Ok(())
        }
        Some(f) => {
            outln!("FAIL seed {seed}: {f}");
            outln!("  replay: {}", args.replay_command(seed));
            outln!("0 passed, 1 failed");
            bail!("seed {seed} failed")
        }
    }
}

/// Prints what a run (or a whole sweep) did.
fn print_stats(args: &SimArgs, s: &raft_core::sim::cluster::Stats) {
    outln!(
        "  leaders elected {}, max term {}, committed {}, client ops {}",
        s.leaders_elected,
        s.max_term,
        s.committed,
        s.client_ops
    );
    outln!(
        "  reads: {} lease, {} read-index, {} through the log; transfers {}",
        s.lease_reads,
        s.read_index_reads,
        s.log_reads,
        s.transfers
    );
    outln!(
        "  faults: {} crashes, {} pauses, {} partitions; messages {} sent, {} dropped",
        s.crashes,
        s.pauses,
        s.partitions,
        s.messages_sent,
        s.messages_dropped
    );
    if s.disk_faults > 0 || s.disk_writes_lost > 0 {
        outln!(
            "  disk: {} faults, {} nodes stopped by a storage error; crashes lost {} unsynced writes, tore {}",
            s.disk_faults,
            s.disk_stops,
            s.disk_writes_lost,
            s.disk_writes_torn
        );
    }
    if args.reconfig {
        outln!(
            "  membership: {} joint, {} single adds, {} single removes, {} removing the leader; \
             {} learners added, {} removed; {} done, {} failed",
            s.joint_changes,
            s.single_adds,
            s.single_removes,
            s.leader_removals,
            s.learners_added,
            s.learners_removed,
            s.changes_done,
            s.changes_failed
        );
    }
    if args.compact {
        outln!(
            "  snapshots: {} taken, {} offered, {} installed, {} resumed, {} discarded; \
             chunks {} sent, {} rejected",
            s.snapshots_taken,
            s.snapshots_offered,
            s.snapshots_installed,
            s.snapshots_resumed,
            s.snapshots_discarded,
            s.chunks_sent,
            s.chunks_rejected
        );
    }
    if args.groups > 1 {
        let led: Vec<String> = s.groups_led.iter().map(u64::to_string).collect();
        outln!(
            "  groups: {} per node; leaders per node at the end [{}]; {} node crashes stopped {} group replicas, \
             {} node restarts started {}; {} whole-disk log syncs for {} group log syncs",
            args.groups,
            led.join(", "),
            s.crashes,
            s.group_crashes,
            s.restarts,
            s.group_restarts,
            s.host_syncs,
            s.host_sync_requests
        );
    }
    if args.quiesce {
        outln!(
            "  quiescence: {} groups quiesced, {} wakes ({} by a dead leader's node); \
             {} liveness pings, {} peers declared dead; {} quiescent leaders crashed and replaced",
            s.quiesced,
            s.wakes,
            s.wakes_leader_dead,
            s.liveness_pings,
            s.peers_declared_dead,
            s.quiescent_leader_crashes
        );
    }
}

fn sim_sweep(args: &SimArgs, first: u64, last: u64) -> Result<()> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let base = args.config(first);
    let started = Instant::now();
    // Failures are printed after the sweep, in seed order, so the output
    // does not depend on thread scheduling.
    let progress = |_: u64, _: Option<&raft_core::sim::Failure>| {};
    let report = sweep(&base, first..=last, threads, &progress);
    let secs = started.elapsed().as_secs_f64();
    for (seed, f) in &report.failed {
        outln!("FAIL seed {seed}: {f}");
        outln!("  replay: {}", args.replay_command(*seed));
    }
    outln!(
        "{} seeds, {} steps in {:.1}s ({:.0} steps/s on {threads} threads)",
        last - first + 1,
        report.steps,
        secs,
        report.steps as f64 / secs.max(1e-9)
    );
    if args.reconfig || args.compact || args.quiesce || args.groups > 1 {
        print_stats(args, &report.stats);
    }
    outln!("{} passed, {} failed", report.passed, report.failed.len());
    if !report.failed.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
