//! `local://PATH`: a node's durable state in files under one directory.
//!
//! ```text
//! PATH/meta                       hard state + membership (atomic replace)
//! PATH/log/00000000000000000001.seg   log segments, named by first index
//! PATH/log/compacted              compaction point (atomic replace)
//! PATH/snap/<index>-<term>/       the latest complete snapshot: META, 0.dat, 1.dat, ...
//! PATH/snap/partial/              the snapshot being received (append-only files)
//! ```
//!
//! Every write that must survive a crash is followed by an fsync, and every
//! file that is replaced whole is written to a temporary name, synced,
//! renamed over the old one, and its directory synced: after a power cut
//! each file holds either its old or its new contents. Only the end of the
//! last log segment can be torn; opening cuts it off and reports it.
//! Damage anywhere else stops the open with an error naming the file and
//! the byte offset.
//!
//! One process at a time may open a directory: nothing here locks it.
//!
//! All IO goes through an [`Fs`]: [`open`] and the stores' `open` use the
//! real disk ([`RealFs`](super::fs::RealFs), feature `local`); [`open_with`]
//! and the stores' `open_with` take any, such as the simulator's
//! [`SimFs`](super::fs::SimFs), which loses unsynced writes at a crash.

mod codec;
mod log;
mod meta;
mod snapshot;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use self::log::{
    record_len, segment_file_name, SegmentedLog, DEFAULT_SEGMENT_BYTES, MAX_ENTRY_DATA_BYTES,
    MAX_SEGMENT_BYTES, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES, WRITE_BUFFER_BYTES,
};
pub use self::meta::LocalMeta;
pub use self::snapshot::LocalSnapshots;
pub use codec::{MAX_FILE_NAME_BYTES, MAX_MEMBERS, MAX_SMALL_FILE_BYTES, MAX_SNAPSHOT_FILES};

use super::fs::{Fs, OpenMode};
use super::{LogStore, MetaStore, NodeStorage, RecoveryReport, StorageError};

/// Name of the meta file under `PATH`.
pub const META_FILE: &str = "meta";
/// Name of the log directory under `PATH`.
pub const LOG_DIR: &str = "log";
/// Name of the snapshot directory under `PATH`.
pub const SNAP_DIR: &str = "snap";
/// Suffix of files and directories being written; leftovers are deleted
/// on open (an operation that had not completed).
pub const TMP_SUFFIX: &str = ".tmp";

/// Tuning of a local store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalOptions {
    /// A log segment is closed and a new one started once it holds this
    /// many bytes (at most [`MAX_SEGMENT_BYTES`]).
    pub segment_bytes: u64,
}

impl Default for LocalOptions {
    fn default() -> LocalOptions {
        LocalOptions {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
        }
    }
}

/// Opens (creating if needed) the store under `path` on the real disk:
/// checks every file, cuts a torn log tail, deletes leftovers of
/// interrupted operations and completes an interrupted snapshot install,
/// all listed in [`NodeStorage::recovery`].
#[cfg(feature = "local")]
pub fn open(path: &Path, opts: &LocalOptions) -> Result<NodeStorage, StorageError> {
    open_with(Arc::new(super::fs::RealFs), path, opts)
}

/// [`open`] on the file system `fs`.
pub fn open_with(
    fs: Arc<dyn Fs>,
    path: &Path,
    opts: &LocalOptions,
) -> Result<NodeStorage, StorageError> {
    open_in_host(fs, path, opts, None)
}

/// [`open_with`] for one group of a host: its log syncs through the
/// host's shared `host_sync` (one whole-disk sync per round for every
/// group on the disk, see `storage::host_sync`) when one is given.
pub fn open_in_host(
    fs: Arc<dyn Fs>,
    path: &Path,
    opts: &LocalOptions,
    host_sync: Option<Arc<crate::storage::host_sync::HostSync>>,
) -> Result<NodeStorage, StorageError> {
    create_dir_durably(&*fs, path)?;
    let mut report = RecoveryReport::default();
    let (mut meta, meta_found) = LocalMeta::open_with(fs.clone(), path, &mut report)?;
    let mut log = SegmentedLog::open_with(
        fs.clone(),
        &path.join(LOG_DIR),
        opts.segment_bytes,
        &mut report,
    )?;
    log.set_host_sync(host_sync);
    let snaps = LocalSnapshots::open_with(fs.clone(), &path.join(SNAP_DIR), &mut report)?;
    sync_dir(&*fs, path)?;
    if !meta_found {
        let holds_data = log.last_index() > 0 || snaps.holds_any();
        if holds_data {
            // A node that forgot its vote could vote twice in one term.
            return Err(StorageError::Inconsistent(format!(
                "{} is missing but the log or snapshots hold data",
                path.join(META_FILE).display()
            )));
        }
        // Written at creation so that a missing meta later is an error.
        let (hs, cs) = meta.load();
        meta.save(&hs, &cs)?;
    }
    NodeStorage::new(Box::new(log), Box::new(meta), Box::new(snaps), report)
}

/// Creates `dir` and its missing parents, each one durably: the entry of
/// every directory created is synced in its parent (syncing only the last
/// one's parent would leave the others to the file system's goodwill, and
/// a power cut could take the whole store with them).
fn create_dir_durably(fs: &dyn Fs, dir: &Path) -> Result<(), StorageError> {
    let parent_of = |d: &Path| match d.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // The directories to create, deepest first.
    let mut missing = Vec::new();
    let mut d = dir;
    while !fs.exists(d) {
        missing.push(d);
        match d.parent() {
            Some(p) if !p.as_os_str().is_empty() => d = p,
            _ => break,
        }
    }
    create_dir(fs, dir)?;
    for created in missing.iter().rev() {
        sync_dir(fs, &parent_of(created))?;
    }
    Ok(())
}

/// Creates `dir` and its parents if missing.
pub(crate) fn create_dir(fs: &dyn Fs, dir: &Path) -> Result<(), StorageError> {
    fs.create_dir_all(dir)
        .map_err(|e| StorageError::io("create directory", dir, e))
}

/// Makes the entries of `dir` (creations, renames, removals) durable.
pub(crate) fn sync_dir(fs: &dyn Fs, dir: &Path) -> Result<(), StorageError> {
    fs.sync_dir(dir)
        .map_err(|e| StorageError::io("sync directory", dir, e))
}

/// Replaces `dir/name` with `bytes` atomically and durably: temp file,
/// fsync, rename, directory fsync.
pub(crate) fn write_atomic(
    fs: &dyn Fs,
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<(), StorageError> {
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let path = dir.join(name);
    let mut f = fs
        .open(&tmp, OpenMode::Create)
        .map_err(|e| StorageError::io("create", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| StorageError::io("write", &tmp, e))?;
    drop(f);
    fs.rename(&tmp, &path)
        .map_err(|e| StorageError::io("rename", &tmp, e))?;
    sync_dir(fs, dir)
}

/// The contents of a small file, `None` when it does not exist. A file
/// larger than [`MAX_SMALL_FILE_BYTES`] is corrupt (none is written so large).
pub(crate) fn read_small(fs: &dyn Fs, path: &Path) -> Result<Option<Vec<u8>>, StorageError> {
    let len = match fs.metadata(path) {
        Ok(m) => m.len,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io("stat", path, e)),
    };
    if len > MAX_SMALL_FILE_BYTES {
        return Err(StorageError::Corrupt {
            file: path.to_path_buf(),
            offset: MAX_SMALL_FILE_BYTES,
            reason: format!("{len} bytes, more than any such file holds"),
        });
    }
    fs.read(path)
        .map(Some)
        .map_err(|e| StorageError::io("read", path, e))
}

/// Removes the file or directory `path` left by an interrupted operation
/// and lists it in `report`.
pub(crate) fn remove_leftover(
    fs: &dyn Fs,
    path: PathBuf,
    report: &mut RecoveryReport,
) -> Result<(), StorageError> {
    let r = if fs.metadata(&path).is_ok_and(|m| m.is_dir) {
        fs.remove_dir_all(&path)
    } else {
        fs.remove_file(&path)
    };
    r.map_err(|e| StorageError::io("remove", &path, e))?;
    report.removed.push(path);
    Ok(())
}

/// Set by a failed write or sync, after which memory and disk may differ:
/// the store then refuses all work until it is reopened (and recovered).
/// Refusals that change nothing (`Invalid`, `Unavailable`) do not poison.
#[derive(Debug, Default)]
pub(crate) struct Poison(Option<String>);

impl Poison {
    /// An error if an earlier failure poisoned the store.
    pub(crate) fn check(&self) -> Result<(), StorageError> {
        match &self.0 {
            Some(why) => Err(StorageError::Failed(why.clone())),
            None => Ok(()),
        }
    }

    /// Records the outcome of a mutation.
    pub(crate) fn note<T>(&mut self, r: &Result<T, StorageError>) {
        if let Err(e) = r {
            if !matches!(
                e,
                StorageError::Invalid(_) | StorageError::Unavailable { .. }
            ) {
                self.0 = Some(e.to_string());
            }
        }
    }
}
