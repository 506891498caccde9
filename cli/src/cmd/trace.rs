//! `cdsctl trace ...`: tools for rtrace files.
//!
//! The validation itself lives in `raft_core::trace`, so the CLI, tests and
//! the visualizer agree on what a valid trace is; this module only opens
//! files and formats results for a terminal.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use raft_core::trace::{check_reader, parse_reader, Header, Record, Summary, TraceWriter};

/// The trace file in a node's data directory.
const NODE_TRACE: &str = "trace.rtrace";

/// Arguments of `cdsctl trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    #[command(subcommand)]
    pub command: TraceCommand,
}

/// The `cdsctl trace` subcommands.
#[derive(Debug, Subcommand)]
pub enum TraceCommand {
    /// Validate an rtrace file: header and version, every event's fields,
    /// node ids, non-decreasing time, and send/recv/drop matching.
    ///
    /// Prints `FILE: ok, N events (...)` and exits 0 if the trace is valid;
    /// otherwise prints `FILE:LINE: reason` to stderr and exits 1.
    Check {
        /// The trace file; `-` reads standard input.
        file: PathBuf,
    },
    /// Merge real nodes' traces into one trace, ordered by time.
    ///
    /// Each PATH is a trace file, a node's data directory (holding
    /// `trace.rtrace`), or a cluster directory (whose `*/trace.rtrace` are
    /// all taken). Every input is validated first; the output is a valid
    /// rtrace file with the union of the nodes, which `trace check` and the
    /// visualizer read like a simulator's trace.
    Merge {
        /// Trace files, node data directories or cluster directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Write the merged trace here instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Convert an rtrace file to Chrome trace-event JSON, for the Perfetto
    /// UI (ui.perfetto.dev) or chrome://tracing.
    ///
    /// One process per node with tracks for its role (a slice per role and
    /// term), log, messages (send to recv as flow arrows), client requests
    /// and faults, plus term and commit counters; a `cluster` process holds
    /// partitions and heals. Simulated milliseconds and wall-clock
    /// microseconds both become microseconds; the output's
    /// `metadata.clock` says which the trace used. IN is validated first:
    /// on a problem it prints `IN:LINE: reason` and OUT is not created.
    ToPerfetto {
        /// The trace file; `-` reads standard input.
        input: PathBuf,
        /// The JSON file to write; `-` writes standard output.
        output: PathBuf,
    },
}

/// Runs a `cdsctl trace` subcommand.
pub fn run(args: TraceArgs) -> anyhow::Result<()> {
    match args.command {
        TraceCommand::Check { file } => check(&file),
        TraceCommand::Merge { paths, out } => merge(&paths, out.as_deref()),
        TraceCommand::ToPerfetto { input, output } => to_perfetto(&input, &output),
    }
}

fn check(file: &PathBuf) -> anyhow::Result<()> {
    let name = file.display().to_string();
    let result = if name == "-" {
        check_reader(io::stdin().lock())
    } else {
        let f = File::open(file).with_context(|| format!("{name}: cannot open"))?;
        check_reader(BufReader::new(f))
    };
    match result {
        Ok(summary) => {
            outln!("{name}: ok, {}", describe(&summary));
            Ok(())
        }
        Err(e) => bail!("{name}:{}: {}", e.line, e.reason),
    }
}

/// `N events (kind count, ...)`, kinds in alphabetical order.
fn describe(summary: &Summary) -> String {
    let kinds: Vec<String> = summary
        .kinds
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    let noun = if summary.events == 1 {
        "event"
    } else {
        "events"
    };
    if kinds.is_empty() {
        format!("{} {noun}", summary.events)
    } else {
        format!("{} {noun} ({})", summary.events, kinds.join(", "))
    }
}

/// The trace files `path` stands for: itself, its `trace.rtrace`, or each
/// subdirectory's `trace.rtrace` (in name order).
fn trace_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        if !path.exists() {
            bail!("{}: no such file or directory", path.display());
        }
        return Ok(vec![path.to_path_buf()]);
    }
    let own = path.join(NODE_TRACE);
    if own.is_file() {
        return Ok(vec![own]);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("{}: cannot list", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path().join(NODE_TRACE)))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    if found.is_empty() {
        bail!(
            "{}: no {NODE_TRACE} in it or in its subdirectories",
            path.display()
        );
    }
    Ok(found)
}

fn merge(paths: &[PathBuf], out: Option<&Path>) -> anyhow::Result<()> {
    let mut files: Vec<PathBuf> = Vec::new();
    for p in paths {
        for f in trace_files(p)? {
            let same =
                |g: &PathBuf| std::fs::canonicalize(g).ok() == std::fs::canonicalize(&f).ok();
            if files.iter().any(same) {
                bail!("{}: given twice", f.display());
            }
            files.push(f);
        }
    }
    let mut records: Vec<Record> = Vec::new();
    let mut nodes = Vec::new();
    // Which file each node's events came from: two files must not speak
    // for the same node (the same directory named twice, or traces of two
    // different clusters).
    let mut owner: BTreeMap<u64, PathBuf> = BTreeMap::new();
    for f in &files {
        let name = f.display();
        let file = File::open(f).with_context(|| format!("{name}: cannot open"))?;
        let trace = parse_reader(BufReader::new(file))
            .map_err(|e| anyhow::anyhow!("{name}:{}: {}", e.line, e.reason))?;
        for r in &trace.records {
            if let Some(other) = owner.get(&r.node).filter(|o| *o != f) {
                bail!(
                    "{name}: node {} also has events in {}: these traces do not \
                     come from distinct nodes of one cluster",
                    r.node,
                    other.display()
                );
            }
            owner.insert(r.node, f.clone());
        }
        nodes.extend(trace.header.nodes);
        // A node's own trace may name members it learned of later; the
        // merged header lists every node any event names.
        nodes.extend(trace.records.iter().flat_map(|r| r.kind.named_nodes()));
        records.extend(trace.records);
    }
    nodes.sort_unstable();
    nodes.dedup();
    // Each input is in time order; a stable sort keeps each node's own
    // order for equal times.
    records.sort_by_key(|r| r.t);
    let header = Header::new("merge", nodes).with_meta(
        "files",
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>(),
    );
    let sink: Box<dyn Write> = match out {
        Some(p) => {
            Box::new(File::create(p).with_context(|| format!("{}: cannot create", p.display()))?)
        }
        None => Box::new(crate::stdout::Stdout::lock()),
    };
    let mut w = TraceWriter::new(BufWriter::new(sink), &header).context("writing the trace")?;
    for r in &records {
        w.write(r).context("writing the trace")?;
    }
    w.finish().context("writing the trace")?;
    if let Some(p) = out {
        eprintln!(
            "{}: {} events from {} files",
            p.display(),
            records.len(),
            files.len()
        );
    }
    Ok(())
}

fn to_perfetto(input: &Path, output: &Path) -> anyhow::Result<()> {
    let name = input.display().to_string();
    let parsed = if name == "-" {
        parse_reader(io::stdin().lock())
    } else {
        let f = File::open(input).with_context(|| format!("{name}: cannot open"))?;
        parse_reader(BufReader::new(f))
    };
    let trace = parsed.map_err(|e| anyhow::anyhow!("{name}:{}: {}", e.line, e.reason))?;
    let out_name = output.display().to_string();
    if out_name == "-" {
        super::perfetto::write_json(&trace, BufWriter::new(crate::stdout::Stdout::lock()))
            .context("writing the trace-event JSON")?;
        return Ok(());
    }
    // Written beside OUT and renamed into place, so a failed conversion
    // leaves no partial file.
    let file_name = output
        .file_name()
        .with_context(|| format!("{out_name}: not a file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = output.with_file_name(tmp_name);
    let written = File::create(&tmp)
        .with_context(|| format!("{out_name}: cannot create"))
        .and_then(|f| {
            super::perfetto::write_json(&trace, BufWriter::new(f))
                .with_context(|| format!("{out_name}: cannot write"))
        })
        .and_then(|w| {
            std::fs::rename(&tmp, output).with_context(|| format!("{out_name}: cannot create"))?;
            Ok(w)
        });
    let written = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    eprintln!(
        "{out_name}: {} trace events from {} records ({} clock)",
        written.events,
        trace.records.len(),
        written.clock.name()
    );
    Ok(())
}
