//! `cdsctl`: operate, simulate and inspect cds-raft clusters.
//!
//! Commands are grouped by subject (`cdsctl trace ...`, `cdsctl raft ...`); each group lives in its own module under `cmd`, and this file only
//! parses the command line and reports errors.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

#[derive(Debug, Parser)]
#[command(
    name = "cdsctl",
    version,
    about = "Operate, simulate and inspect cds-raft clusters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with rtrace files (JSON Lines traces of a run).
    Trace(cmd::trace::TraceArgs),
    /// The Raft core: the seeded simulator and scenario scripts.
    #[command(subcommand)]
    Raft(cmd::raft::RaftCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Trace(args) => cmd::trace::run(args),
        Command::Raft(cmd) => cmd::raft::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the context chain on one line: "what: why".
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
