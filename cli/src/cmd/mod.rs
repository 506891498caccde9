//! One module per command group. Each exposes its clap arguments and a
//! `run` function returning `anyhow::Result<()>`; `main` prints the error.

pub mod raft;
pub mod trace;
