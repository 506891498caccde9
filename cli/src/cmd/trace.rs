//! `cdsctl trace ...`: tools for rtrace files.
//!
//! The validation itself lives in `raft_core::trace`, so the CLI, tests and
//! the visualizer agree on what a valid trace is; this module only opens
//! files and formats results for a terminal.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use raft_core::trace::{check_reader, Summary};

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
}

/// Runs a `cdsctl trace` subcommand.
pub fn run(args: TraceArgs) -> anyhow::Result<()> {
    match args.command {
        TraceCommand::Check { file } => check(&file),
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
            println!("{name}: ok, {}", describe(&summary));
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
