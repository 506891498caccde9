//! One module per command group. Each exposes its clap arguments and a
//! `run` function returning `anyhow::Result<()>`; `main` prints the error.

pub mod cds;
pub mod cert;
pub mod kv;
pub mod nbd;
pub mod node;
mod perfetto;
pub mod raft;
pub mod top;
pub mod trace;
pub mod viz;
pub mod volume;
