//! One log sync for every group of a host: group commit across groups.
//!
//! Each group's log is its own segment files, and a group's `Ready` is
//! durable only after its log is synced. Synced file by file, a host with
//! G busy groups issues G `fdatasync`s per round. [`HostSync`] replaces
//! them with one whole-disk sync (`Fs::sync_fs`, `syncfs(2)` on Linux)
//! shared by every group whose writes finished before it began:
//!
//! - a caller's writes are complete when it calls [`HostSync::sync`], so a
//!   sync that *starts* after the call covers them; one already under way
//!   may have started before them and does not count;
//! - if no sync is under way, the caller runs one itself; otherwise it
//!   waits for the one under way to end, then for the next, which the
//!   first waiter to find the disk idle starts for everyone waiting. Under
//!   load, every group that wrote during a sync rides on the next one: one
//!   sync per round, whatever the group count.
//!
//! A failed sync may have lost any unsynced write on the disk (Linux marks
//! the pages clean after a writeback error, the lesson of PostgreSQL's
//! "fsyncgate"), so the first failure is final: that sync and every later
//! one return an error, and the groups stop instead of trusting their logs.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use super::fs::Fs;

/// A host-wide log sync; see the module docs. Shared by the groups'
/// logs through `LocalOptions::host_sync`.
#[derive(Debug)]
pub struct HostSync {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    state: Mutex<State>,
    ended: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Syncs started so far (the number of the latest).
    started: u64,
    /// The number of the latest sync that ended well.
    done: u64,
    /// Whether a sync is under way.
    syncing: bool,
    /// The first failure, final.
    failed: Option<String>,
    /// Calls of [`HostSync::sync`].
    requests: u64,
}

/// What a [`HostSync`] did since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostSyncStats {
    /// Whole-disk syncs issued.
    pub syncs: u64,
    /// Log syncs asked for by groups (each covered by one of `syncs`).
    pub requests: u64,
}

impl HostSync {
    /// A sync of the file system holding `dir` (which must exist).
    pub fn new(fs: Arc<dyn Fs>, dir: &Path) -> Arc<HostSync> {
        Arc::new(HostSync {
            fs,
            dir: dir.to_path_buf(),
            state: Mutex::default(),
            ended: Condvar::new(),
        })
    }

    /// Returns once every write the caller completed before calling is
    /// durable, or with the error of the sync that should have made it so
    /// (or of an earlier failed one). Blocks the calling thread.
    pub fn sync(&self) -> io::Result<()> {
        let mut st = self.lock();
        st.requests += 1;
        // A sync numbered `need` or later starts after this call.
        let need = st.started + 1;
        loop {
            if let Some(e) = &st.failed {
                return Err(io::Error::other(format!(
                    "the host-wide log sync failed earlier, unsynced writes may be lost: {e}"
                )));
            }
            if st.done >= need {
                return Ok(());
            }
            if st.syncing {
                st = self.ended.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            st.syncing = true;
            st.started += 1;
            let mine = st.started;
            drop(st);
            let r = self.fs.sync_fs(&self.dir);
            st = self.lock();
            st.syncing = false;
            match r {
                Ok(()) => st.done = mine,
                Err(e) => st.failed = Some(e.to_string()),
            }
            self.ended.notify_all();
        }
    }

    /// Counters since creation.
    pub fn stats(&self) -> HostSyncStats {
        let st = self.lock();
        HostSyncStats {
            syncs: st.started,
            requests: st.requests,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::fs::{Fault, OpenMode, SimFs, SimFsConfig};

    #[test]
    fn a_sync_makes_every_files_writes_durable_and_a_failure_is_final() {
        let fs = SimFs::new(SimFsConfig {
            seed: 7,
            ..SimFsConfig::default()
        });
        let dyn_fs: Arc<dyn Fs> = Arc::new(fs.clone());
        dyn_fs.create_dir_all(Path::new("/d/a")).unwrap();
        dyn_fs.create_dir_all(Path::new("/d/b")).unwrap();
        dyn_fs.sync_dir(Path::new("/d")).unwrap();
        let hs = HostSync::new(dyn_fs.clone(), Path::new("/d"));
        let mut fa = dyn_fs
            .open(Path::new("/d/a/log"), OpenMode::Create)
            .unwrap();
        let mut fb = dyn_fs
            .open(Path::new("/d/b/log"), OpenMode::Create)
            .unwrap();
        fa.write_all(b"aaaa").unwrap();
        fb.write_all(b"bbbb").unwrap();
        hs.sync().unwrap();
        assert_eq!(
            hs.stats(),
            HostSyncStats {
                syncs: 1,
                requests: 1
            }
        );
        drop((fa, fb));
        fs.crash_seeded(1);
        assert_eq!(dyn_fs.read(Path::new("/d/a/log")).unwrap(), b"aaaa");
        assert_eq!(dyn_fs.read(Path::new("/d/b/log")).unwrap(), b"bbbb");

        fs.configure(|c| c.sync_eio = Fault::Chance(1.0));
        let mut fa = dyn_fs
            .open(Path::new("/d/a/log"), OpenMode::Append)
            .unwrap();
        fa.write_all(b"more").unwrap();
        assert!(hs.sync().is_err());
        fs.configure(|c| c.sync_eio = Fault::Never);
        // The disk is healthy again, but what the failed sync held may be
        // gone: every later sync fails too.
        let e = hs.sync().unwrap_err();
        assert!(e.to_string().contains("failed earlier"), "{e}");
    }
}
