//! `cdsctl node --config FILE`: one node process of the replicated KV
//! store, served by [`cds::kv::node::run`].

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

/// Flags of `cdsctl node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node's config file: JSON with its id, cluster id and token,
    /// Raft and HTTP addresses, data directory, every peer's addresses and
    /// the initial voters (`cdsctl kv up` writes one per node; the book's
    /// "Running a local cluster" chapter, book/src/cluster.md, shows one).
    #[arg(long)]
    pub config: PathBuf,
}

/// Runs a node until it is told to stop (SIGTERM or SIGINT).
pub fn run(args: NodeArgs) -> Result<()> {
    Ok(cds::kv::node::run(&args.config)?)
}
