//! The rtrace format: a versioned, line-oriented record of what every node
//! did during a run (simulated or real).
//!
//! A trace is JSON Lines: line 1 is a [`Header`] (`"format":"rtrace"`,
//! `"v":1`), every further line one [`Record`]. It exists so that a run can
//! be checked, diffed, replayed and visualized after the fact by tools that
//! share nothing with the process that produced it but this schema. The
//! same records serialize to the same bytes, so two runs with the same seed
//! can be compared with a hash.
//!
//! - [`schema`]: the types, one per JSON shape, and [`FORMAT`]/[`VERSION`].
//! - [`writer`]: [`TraceWriter`], to a file or into memory.
//! - [`events`]: how the core's [`crate::Event`]s become records, shared by
//!   the simulator and real nodes so both traces read the same.
//! - [`check`]: validation ([`check_str`], [`check_reader`]) and reading
//!   back ([`parse_str`], [`parse_reader`]).
//!
//! The format is described for readers outside Rust in the book chapter
//! `trace-format.md`.

pub mod check;
pub mod events;
pub mod schema;
pub mod writer;

pub use check::{check_reader, check_str, parse_reader, parse_str, CheckError, Summary, Trace};
pub use events::event_kind;
pub use schema::{
    summarize, ClientDir, ClientOp, Header, Kind, Msg, NodeRole, Record, TransferPhase, FORMAT,
    NODE_SOURCE, VERSION,
};
pub use writer::TraceWriter;
