//! `cds`: the servers of cds-raft as a library.
//!
//! Today that is the replicated key-value store (the Master's metadata
//! store to be, and the KV demo) and what runs it locally:
//!
//! - [`kv`]: one KV node process: its config file, the KV state machine,
//!   the HTTP API and the server it runs on; [`kv::node::run`] serves a
//!   node until it is told to stop.
//! - [`devcluster`]: local multi-process clusters: the cluster directory,
//!   node processes (spawn, signal, stop), and the operations `cdsctl kv`
//!   and `cdsctl top` offer (up, down, kill, pause, partition, membership).
//! - [`client`]: a blocking HTTP client to the nodes that follows the
//!   leader's redirects within one deadline.
//! - [`status`]: the body of a node's `GET /status`, one serde type for the
//!   server, the client, the console and the simulator's live view.
//! - [`tls`] and [`secret`]: certificates, keys and token files.
//!
//! The binary `cdsctl` parses arguments, prints and hosts the console; it
//! calls this crate for everything else. Every function returns the
//! crate's [`Error`], whose text says what was being done and why.

pub mod blockclient;
pub mod blockgroup;
pub mod blockserver;
pub mod cdscluster;
pub mod client;
mod codec;
pub mod devcluster;
pub mod engine;
pub mod error;
pub mod kv;
pub mod master;
pub mod nbd;
pub mod placement;
pub mod pool;
pub mod secret;
pub mod sim;
pub mod snapshotworker;
pub mod status;
pub mod tls;
pub mod topology;
pub mod verify;
pub mod volume;
pub mod wire;

pub use error::{Error, Result};
