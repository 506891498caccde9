//! `cdsctl`: operate, simulate and inspect cds-raft clusters.
//!
//! Commands are grouped by subject (`cdsctl trace ...`, `cdsctl raft ...`); each group lives in its own module under `cmd`, and this file only
//! parses the command line and reports errors.

// Everything printed goes through `stdout`, which ends the process quietly
// when the reader of a pipe has gone, where `println!` would panic.
#![deny(clippy::print_stdout)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// First: its `out!` and `outln!` macros are used by the modules below.
#[macro_use]
mod stdout;

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
    /// A replicated key-value store as a local cluster of real processes.
    #[command(subcommand)]
    Kv(cmd::kv::KvCommand),
    /// The CDS block store as a local cluster of real processes: Masters and BlockServers.
    #[command(subcommand)]
    Cds(cmd::cds::CdsCommand),
    /// Volumes of a CDS cluster: create, list, inspect, read, write, verify, bench.
    #[command(subcommand)]
    Volume(cmd::volume::VolumeCommand),
    /// Volumes over NBD for the standard block tools (qemu-img, qemu-io, nbdcopy, fio).
    #[command(subcommand)]
    Nbd(cmd::nbd::NbdCommand),
    /// Run one node process (started by `cdsctl kv up`; takes a config file).
    Node(cmd::node::NodeArgs),
    /// Serve the trace visualizer on localhost and print its address.
    Viz(cmd::viz::VizArgs),
    /// A live console that watches and drives a local cluster (`kv up`), or a simulated one (`--sim`).
    ///
    /// On a local cluster (`--dir`) the keys act on real processes: `x`
    /// kills the selected node with SIGKILL, `p` stops it with SIGSTOP, and
    /// quitting leaves the cluster running. With `--sim` the cluster lives
    /// in this process: `x` is a simulated crash (the node keeps only what
    /// it wrote to its simulated disk), `p` a simulated stall, and quitting
    /// ends the simulation. `?` lists every key.
    Top(cmd::top::TopArgs),
    /// Create a local CA and a certificate and key per node (TLS for a dev cluster).
    ///
    /// Files go to DIR (owner-only): ca.pem, ca-key.pem, node-N.pem and
    /// node-N-key.pem. Each node certificate names node-N.cds-raft (what
    /// peers check), localhost and the --ip addresses. `cdsctl kv up --tls`
    /// does this for you.
    Cert(cmd::cert::CertArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Trace(args) => cmd::trace::run(args),
        Command::Raft(cmd) => cmd::raft::run(cmd),
        Command::Kv(cmd) => cmd::kv::run(cmd),
        Command::Cds(cmd) => cmd::cds::run(cmd),
        Command::Volume(cmd) => cmd::volume::run(cmd),
        Command::Nbd(cmd) => cmd::nbd::run(cmd),
        Command::Node(args) => cmd::node::run(args),
        Command::Viz(args) => cmd::viz::run(args),
        Command::Top(args) => cmd::top::run(args),
        Command::Cert(args) => cmd::cert::run(args),
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
