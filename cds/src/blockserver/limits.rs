//! Every limit of a BlockServer's data path, in one place.

use std::time::Duration;

/// Largest data a single read or write carries, in bytes. A client splits
/// larger requests (NBD's own maximum request is 32 MiB; qemu sends at
/// most 2 MiB by default).
pub const MAX_IO_BYTES: u64 = 4 << 20;

/// Largest frame payload accepted: an IO's data and its fields.
pub const MAX_FRAME_PAYLOAD: u32 = MAX_IO_BYTES as u32 + 4096;

/// Requests one connection may have in flight; past it the server stops
/// reading from the connection until one finishes (back pressure, not an
/// error).
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 64;

/// Request data in flight on one server, over all connections (a frame's
/// payload is reserved before it is read, a read's length before it is
/// served): past it, reading stalls until answers free room.
pub const MAX_BYTES_IN_FLIGHT: usize = 128 << 20;

/// Data-path connections a server serves at once; past it a new one is
/// closed at once.
pub const MAX_CONNECTIONS: usize = 1024;

/// Largest hello a connection may send (cluster id and token): an
/// unauthenticated peer can make the server hold no more than this.
pub const MAX_HELLO_BYTES: u32 = 4096;

/// How long a new connection has to present the cluster's token.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a proposal or a read point may take before the request is
/// answered `Unavailable` (a write's outcome is then unknown).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Corrupt sectors one read may repair before it is answered
/// `Unavailable` (the client's retry goes on repairing): a read of a badly
/// damaged slice cannot hold a connection's slot for long.
pub const MAX_REPAIRS_PER_READ: usize = 32;

/// How long the repair of one sector may take: asking the other replicas
/// for copies until one holds at this replica's point of the log.
pub const REPAIR_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause between rounds of asking the replicas for a copy that holds.
pub const REPAIR_RETRY: Duration = Duration::from_millis(50);

/// How long a write of answers to a client may make no progress.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);

const _: () = assert!(MAX_IO_BYTES <= MAX_FRAME_PAYLOAD as u64);
// One request of the largest size can always be admitted.
const _: () = assert!(MAX_IO_BYTES as usize <= MAX_BYTES_IN_FLIGHT);

/// The most bytes of small frames `wire::write_batch` gathers into one write.
pub const WRITE_BATCH_BYTES: usize = 256 << 10;

/// How many bytes a connection's reader buffers: room for many small
/// frames per read system call.
pub const READ_BUFFER_BYTES: usize = 256 << 10;

/// How often a BlockServer looks for slices to reclaim in replicas that
/// apply nothing (each look reclaims at most
/// [`crate::blockgroup::GC_SLICES_PER_BATCH`] slices per replica).
pub const RECLAIM_EVERY: Duration = Duration::from_millis(100);

/// How long a replica removed by replica GC stays in its disk's trash
/// directory before it is deleted (an operator's chance to undo a wrong
/// order).
pub const TRASH_KEEP: Duration = Duration::from_secs(600);

/// How close (in entries) a learner's log must be to the leader's before
/// a move makes it a voter.
pub const MOVE_CATCHUP_MARGIN: u64 = 64;

/// How long a heartbeat waits for one replica's status before it sends
/// that replica's previous report (a replica busy on a slow disk must not
/// hold back the server's heartbeat).
pub const REPORT_WITHIN: Duration = Duration::from_millis(100);

/// Entries between a replica's snapshots, unless configured.
pub const SNAPSHOT_EVERY: u64 = 20_000;
/// The fewest and most entries between snapshots a server accepts.
pub const MIN_SNAPSHOT_EVERY: u64 = 100;
pub const MAX_SNAPSHOT_EVERY: u64 = 10_000_000;

/// The lowest snapshot install rate a server accepts (besides 0,
/// unlimited): below it a repair of a 16 MiB block would take hours.
pub const MIN_INSTALL_BYTES_PER_S: u64 = 64 << 10;
