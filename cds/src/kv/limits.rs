//! Every limit of the node's HTTP API, and of the KV state machine's
//! client sessions, in one place.
//!
//! A client, or anyone else on the host, can open connections, send
//! headers slowly, start a body and stall, or keep an idle connection
//! open. Each of these holds a file descriptor, a task and buffers, so
//! each is bounded here: by size, by time, or by count. The relations
//! between them are asserted at the bottom (a compile-time check), so a
//! change that breaks one does not build.

use std::time::Duration;

/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 4 << 10;

/// Largest request body (a value, or a JSON request) accepted, in bytes.
/// Well below the codec's per-entry limit, so an accepted write always
/// fits in a log entry. A body is read whole, within this size and
/// [`BODY_READ_TIMEOUT`], before a handler sees it.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Request bodies a node holds at once, in bytes (each is counted at its
/// announced length, or at [`MAX_BODY_BYTES`] when chunked, from the start
/// of its read until its answer). Past it a request with a body is
/// answered `503` (retry): stalled or slow bodies cannot take more memory
/// than this, however many connections carry them.
pub const MAX_BODY_BYTES_IN_FLIGHT: usize = 64 << 20;

/// Longest delay `/admin/filter` accepts: past an election timeout or two
/// a delayed link is a partition, and queued envelopes hold memory.
pub const MAX_FILTER_DELAY_MS: u64 = 60_000;

/// How long a client has to send a request's whole header block, from the
/// moment the connection is ready for it: a connection with partial
/// headers is closed after this. hyper starts the same timer when a
/// keep-alive connection waits for its next request, so this is also the
/// idle keep-alive timeout ([`IDLE_TIMEOUT`]).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an idle keep-alive connection is kept: the header timer above
/// (one knob in hyper, named twice for the reader).
pub const IDLE_TIMEOUT: Duration = HEADER_READ_TIMEOUT;

/// How long a client has to send a request's whole body once its headers
/// are in: a stalled body is dropped (its memory freed) and answered
/// `408`, and the connection closed.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a write to a client may make no progress: a client that stops
/// reading its answer loses the connection instead of holding it.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Default cap on HTTP connections served at once (`http_max_connections`
/// in the node's config). Past it, a new connection is answered `503` with
/// a JSON error and closed: never queued, never left hanging.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// Highest `http_max_connections` a config may set: each connection holds
/// a file descriptor, and the Raft transport needs some too.
pub const MAX_CONNECTIONS_LIMIT: usize = 16_384;

/// Connections being refused (answered `503` and closed) at once; past it
/// an excess connection is closed without an answer, so a flood cannot
/// grow this work either.
pub const MAX_REFUSING: usize = 64;

/// How long refusing one connection may take: writing the `503`, then
/// reading (and discarding) what the client sent, so closing does not
/// reset the connection before the client reads the answer.
pub const REFUSAL_LINGER: Duration = Duration::from_millis(500);

/// At most this many bytes of a refused connection's request are read and
/// discarded.
pub const REFUSAL_DRAIN_BYTES: usize = 16 << 10;

/// Pause after a failed `accept` (out of file descriptors, say), so the
/// loop does not spin while the condition lasts.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Longest error text of a non-JSON error answer (one of axum's own) that
/// is carried into the JSON `{"error": ...}` replacing it.
pub const MAX_ERROR_TEXT_BYTES: usize = 4 << 10;

/// Client sessions the KV state machine keeps at once (`state_machine.rs`). A new
/// session past it evicts the least recently used one (the one whose last
/// command has the lowest log index). Part of the replicated state's
/// rules: every node of a cluster must run with the same value, or their
/// state machines diverge.
pub const MAX_SESSIONS: usize = 10_000;

/// A session with no command for this long, by the state machine's clock
/// (the largest leader timestamp applied so far, in milliseconds), is
/// expired. Long next to any client's retry deadline (`cdsctl kv` gives up
/// after 10 s by default), so a client still retrying never finds its
/// session gone for lack of use. Like [`MAX_SESSIONS`], the same on every
/// node.
pub const SESSION_TTL_MS: u64 = 60 * 60 * 1000;

/// Largest reply a session caches, in bytes. The KV commands answer one
/// byte (whether a CAS swapped, whether a delete found the key); the
/// bound keeps the table's memory at most [`MAX_SESSIONS`] times (this
/// plus a few words), and a snapshot's sessions file claiming more is
/// refused.
pub const MAX_CACHED_REPLY_BYTES: usize = 64;

const _: () = {
    assert!(MAX_KEY_BYTES < MAX_BODY_BYTES);
    // A command (key, value and its few bytes of framing) always fits one
    // log entry on the wire: the node never answers TooLarge.
    assert!(MAX_KEY_BYTES + MAX_BODY_BYTES + 1024 <= raft_core::runtime::codec::MAX_DATA_BYTES);
    assert!(MAX_BODY_BYTES <= MAX_BODY_BYTES_IN_FLIGHT);
    assert!(MAX_BODY_BYTES_IN_FLIGHT & 1023 == 0);
    assert!(DEFAULT_MAX_CONNECTIONS <= MAX_CONNECTIONS_LIMIT);
    assert!(MAX_REFUSING < DEFAULT_MAX_CONNECTIONS);
    assert!(REFUSAL_LINGER.as_millis() < HEADER_READ_TIMEOUT.as_millis());
    assert!(IDLE_TIMEOUT.as_millis() == HEADER_READ_TIMEOUT.as_millis());
    // The session table (each entry: the reply and six words of
    // bookkeeping, twice indexed) stays within 4 MiB.
    assert!(MAX_SESSIONS * (MAX_CACHED_REPLY_BYTES + 8 * 8) <= 4 << 20);
    // A session outlives every retry of its last command by far.
    assert!(SESSION_TTL_MS >= 60 * 1000);
};
