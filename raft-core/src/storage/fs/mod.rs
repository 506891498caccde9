//! The file system under the `local` stores, as a trait.
//!
//! [`super::local`] (the segmented log, the meta file, the snapshot
//! directories) does all its IO through [`Fs`], so the same code runs over
//! the real disk ([`RealFs`], feature `local`) and over [`SimFs`], an
//! in-memory disk for the simulator that loses unsynced writes at a crash,
//! tears the last write, fails with EIO and runs out of space, all chosen
//! by seed. The trait covers exactly what the stores need and nothing more.
//!
//! Errors stay [`std::io::Error`], so the stores keep naming the file in
//! [`super::StorageError::Io`] whatever the file system.

use std::fmt;
use std::io;
use std::path::Path;

#[cfg(feature = "local")]
mod real;
mod sim;

#[cfg(feature = "local")]
pub use real::RealFs;
pub use sim::{CrashReport, Fault, FsOp, SimFs, SimFsConfig, SimFsStats};

/// How [`Fs::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Creates the file, or empties it if it exists; writes start at 0.
    Create,
    /// An existing file; writes start at 0 (see [`FsFile::seek`]).
    Write,
    /// An existing file; every write goes to its end.
    Append,
}

/// What [`Fs::metadata`] tells about a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    /// Bytes in the file (0 for a directory).
    pub len: u64,
    pub is_dir: bool,
}

/// A file system: directories, whole-file reads, ranged reads, renames,
/// removals and the syncs that make them durable.
///
/// Durability follows POSIX: a file's writes are durable after
/// [`FsFile::sync_data`] (or [`FsFile::sync_all`]); creating, renaming or
/// removing an entry of a directory is durable only after
/// [`Fs::sync_dir`] of that directory.
pub trait Fs: Send + Sync + fmt::Debug {
    /// Creates `dir` and every missing parent.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The names of the entries of `dir`, in no particular order. Names
    /// that are not UTF-8 are left out (the stores create none).
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// The length and kind of `path`; `NotFound` if it does not exist.
    fn metadata(&self, path: &Path) -> io::Result<Metadata>;
    /// Whether `path` exists (an error reading it counts as no).
    fn exists(&self, path: &Path) -> bool {
        self.metadata(path).is_ok()
    }
    /// Opens the file `path` for writing.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FsFile>>;
    /// The whole contents of the file `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Fills `buf` from the file `path` starting at `offset`; an
    /// `UnexpectedEof` error if the file ends first.
    fn read_exact_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Renames `from` to `to`, replacing a file (or an empty directory)
    /// already at `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes the directory `path` and everything under it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Makes the entries of `dir` (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Makes everything written on the file system holding `dir` durable:
    /// every file's data and every directory's entries (`syncfs(2)`). One
    /// call stands for the syncs of every file written since the last one,
    /// which is what lets a host of many groups sync once per round
    /// instead of once per group (`storage::host_sync`).
    fn sync_fs(&self, dir: &Path) -> io::Result<()>;
}

/// An open file, written at a position that advances with each write and
/// read at any offset.
pub trait FsFile: Send + fmt::Debug {
    /// Writes all of `buf` at the current position (at the end for
    /// [`OpenMode::Append`]).
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Moves the write position to `pos`.
    fn seek(&mut self, pos: u64) -> io::Result<()>;
    /// Fills `buf` from the file starting at `offset` (the write position
    /// does not move); an `UnexpectedEof` error if the file ends first.
    /// Sees every write made through any handle, synced or not.
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Cuts or extends (with zeros) the file to `len` bytes.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Makes the file's contents and length durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// [`FsFile::sync_data`], and the file's other metadata (`fsync`).
    fn sync_all(&mut self) -> io::Result<()>;
}
