//! The errors and the recovery report of durable storage.
//!
//! Storage failures carry more than the core's [`crate::Error`] can: the
//! file and byte offset of a corruption, the IO error behind a failure. The
//! driver sees them whole through [`StorageError`]; the core, which can only
//! stop on them, sees them converted.

use std::path::PathBuf;

/// Why a storage operation failed.
///
/// After any error other than [`StorageError::Unavailable`] and
/// [`StorageError::Invalid`], what is durable is still consistent, but what
/// the store holds in memory may not be: the node must stop and reopen it.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The storage URI names no storage this build can open.
    #[error("bad storage URI {uri:?}: {reason}")]
    Uri { uri: String, reason: String },
    /// Log entries `lo..hi` are not held (compacted, or not yet written).
    #[error("log entries {lo}..{hi} are unavailable")]
    Unavailable { lo: u64, hi: u64 },
    /// A request that contradicts what is held (an append that leaves a
    /// gap, a chunk at the wrong offset, an install of an unknown snapshot).
    /// Nothing was changed.
    #[error("{0}")]
    Invalid(String),
    /// The operating system refused an operation on `path`.
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `file` holds bytes at `offset` that are not what was written there.
    /// Never skipped: the node must not start on a log it cannot trust.
    #[error("corrupt {} at byte {offset}: {reason}", .file.display())]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    /// The files are each intact but disagree with each other.
    #[error("inconsistent storage: {0}")]
    Inconsistent(String),
    /// An earlier write or sync failed; what the store holds in memory may
    /// differ from the disk, so it refuses all work until reopened.
    #[error("storage failed earlier and must be reopened: {0}")]
    Failed(String),
}

impl StorageError {
    /// An IO error on `path` while doing `op`.
    #[cfg(any(feature = "sim", feature = "local"))]
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

impl From<StorageError> for crate::Error {
    fn from(e: StorageError) -> crate::Error {
        match e {
            StorageError::Unavailable { lo, hi } => crate::Error::Unavailable { lo, hi },
            other => crate::Error::Storage(other.to_string()),
        }
    }
}

/// What opening a store found and repaired. Every repair is listed: nothing
/// is dropped silently.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The torn tail cut off the log, if the last write was interrupted.
    pub torn_tail: Option<TornTail>,
    /// Leftovers of interrupted operations that were deleted: temporary
    /// files and directories, segments below the compaction point, snapshots
    /// older than the latest.
    pub removed: Vec<PathBuf>,
    /// The index of a snapshot whose interrupted install was completed.
    pub install_completed: Option<u64>,
}

impl RecoveryReport {
    /// Whether opening found nothing to repair.
    pub fn is_clean(&self) -> bool {
        self.torn_tail.is_none() && self.removed.is_empty() && self.install_completed.is_none()
    }
}

/// The end of the last log segment, dropped because it holds no complete,
/// checksummed record and nothing valid follows it: the trace of a write
/// cut short by a crash. Its entries had not been synced, so no
/// acknowledgement depended on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment that was truncated (or deleted, when even its header
    /// was incomplete).
    pub file: PathBuf,
    /// Where the segment now ends.
    pub offset: u64,
    /// How many bytes were dropped.
    pub dropped_bytes: u64,
    /// How many records had begun in the dropped bytes, as far as their
    /// length fields could be followed (at least 1 when bytes were dropped).
    pub dropped_records: u64,
    /// The index the first dropped record would have had.
    pub first_lost_index: u64,
}
