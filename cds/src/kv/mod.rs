//! The replicated key-value store: one node process's parts.
//!
//! [`node::run`] is the process: it reads the [`config`] file, opens the
//! storage, starts the Raft transport and the group host with one
//! [`state_machine`] per group, and serves the [`http`] API on
//! [`server`] until a signal. [`limits`] holds every bound those parts
//! keep; [`transport_log`] reports what the transport refuses.

pub mod config;
pub mod http;
pub mod limits;
pub mod node;
pub(crate) mod server;
pub mod state_machine;
mod transport_log;

pub use config::MAX_GROUPS;
pub use http::group_of_key;

/// The header naming a write's client session: the client's id, a decimal
/// u64 the client picks at random (see [`state_machine`]'s "Client
/// sessions").
pub const CLIENT_ID_HEADER: &str = "X-Client-Id";
/// The header numbering a write within its session: a decimal u64 from 1,
/// new for each command, the same for every retry of one command.
pub const CLIENT_SEQ_HEADER: &str = "X-Client-Seq";
