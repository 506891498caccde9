//! Every bound of the NBD server, in one place.

use std::time::Duration;

/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client may take over its whole handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Options one handshake may send before the server gives up on it.
pub const MAX_OPTIONS: usize = 256;
/// Largest option data accepted (an export name is at most 4 KiB); a
/// larger one ends the session, since skipping it would mean reading it.
pub const MAX_OPTION_BYTES: u32 = 16 << 10;
/// Largest read or write payload, advertised as the maximum block size.
/// A write announcing more ends the connection (its payload cannot be
/// skipped without reading it); a read asking for more gets `EINVAL`.
pub const MAX_PAYLOAD: u32 = 32 << 20;
/// Zeroing (TRIM, WRITE_ZEROES) of a large range is done this many bytes
/// at a time, so one request cannot start unbounded work at once.
pub const ZERO_CHUNK: u64 = 64 << 20;
/// Requests in flight on one connection; the next waits to be read.
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 128;
/// Bytes of payloads and read data in flight across the whole server.
pub const MAX_BYTES_IN_FLIGHT: usize = 256 << 20;
/// How long writing replies to a client may make no progress.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);

const _: () = assert!(MAX_PAYLOAD as usize <= MAX_BYTES_IN_FLIGHT);
