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
    /// Bumped at the end of every sync, for waiters on async tasks.
    #[cfg(feature = "runtime")]
    ended_async: tokio::sync::watch::Sender<u64>,
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
    /// Sync requests (each a [`PendingSync`]).
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

/// A request for a sync covering every write its caller completed before
/// making it ([`HostSync::request`]); wait for it on a thread
/// ([`PendingSync::wait_blocking`]) or, with the runtime, on an async task
/// ([`PendingSync::wait`]) without holding a thread while the disk works.
#[derive(Debug)]
pub struct PendingSync {
    host: Arc<HostSync>,
    /// A sync numbered this or later started after the request.
    need: u64,
}

impl HostSync {
    /// A sync of the file system holding `dir` (which must exist).
    pub fn new(fs: Arc<dyn Fs>, dir: &Path) -> Arc<HostSync> {
        Arc::new(HostSync {
            fs,
            dir: dir.to_path_buf(),
            state: Mutex::default(),
            ended: Condvar::new(),
            #[cfg(feature = "runtime")]
            ended_async: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Asks for a sync of every write the caller completed before calling;
    /// nothing waits until the returned request is waited for.
    pub fn request(self: &Arc<Self>) -> PendingSync {
        let mut st = self.lock();
        st.requests += 1;
        PendingSync {
            host: self.clone(),
            need: st.started + 1,
        }
    }

    /// Returns once every write the caller completed before calling is
    /// durable, or with the error of the sync that should have made it so
    /// (or of an earlier failed one). Blocks the calling thread.
    pub fn sync(self: &Arc<Self>) -> io::Result<()> {
        self.request().wait_blocking()
    }

    /// Counters since creation.
    pub fn stats(&self) -> HostSyncStats {
        let st = self.lock();
        HostSyncStats {
            syncs: st.started,
            requests: st.requests,
        }
    }

    /// What a waiter for sync `need` should do now, under the lock.
    fn next(&self, st: &mut State, need: u64) -> Next {
        if let Some(e) = &st.failed {
            return Next::Done(Err(io::Error::other(format!(
                "the host-wide log sync failed, unsynced writes may be lost: {e}"
            ))));
        }
        if st.done >= need {
            return Next::Done(Ok(()));
        }
        if st.syncing {
            return Next::Wait;
        }
        st.syncing = true;
        st.started += 1;
        Next::Run(st.started)
    }

    /// Runs sync number `mine` (started by [`HostSync::next`]) and tells
    /// every waiter how it ended.
    fn run(&self, mine: u64) {
        let r = self.fs.sync_fs(&self.dir);
        self.end(mine, r.map_err(|e| e.to_string()));
    }

    fn end(&self, mine: u64, r: Result<(), String>) {
        let mut st = self.lock();
        st.syncing = false;
        match r {
            Ok(()) => st.done = mine,
            Err(e) => {
                st.failed.get_or_insert(e);
            }
        }
        drop(st);
        self.ended.notify_all();
        #[cfg(feature = "runtime")]
        self.ended_async.send_modify(|n| *n += 1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

enum Next {
    Done(io::Result<()>),
    Wait,
    Run(u64),
}

impl PendingSync {
    /// Waits on this thread (running the sync itself when the disk is
    /// idle); see [`HostSync::sync`].
    pub fn wait_blocking(&self) -> io::Result<()> {
        let h = &*self.host;
        let mut st = h.lock();
        loop {
            match h.next(&mut st, self.need) {
                Next::Done(r) => return r,
                Next::Wait => st = h.ended.wait(st).unwrap_or_else(|e| e.into_inner()),
                Next::Run(mine) => {
                    drop(st);
                    h.run(mine);
                    st = h.lock();
                }
            }
        }
    }

    /// Waits on an async task: the sync, when this waiter has to start one,
    /// runs on the runtime's blocking pool, and the task sleeps until a
    /// sync that covers it ends. Same outcome as [`PendingSync::wait_blocking`].
    #[cfg(feature = "runtime")]
    pub async fn wait(&self) -> io::Result<()> {
        let h = &self.host;
        loop {
            let mut ended = {
                let mut st = h.lock();
                let next = h.next(&mut st, self.need);
                // Subscribed under the lock: the end of any sync from here
                // on wakes this waiter.
                let ended = h.ended_async.subscribe();
                drop(st);
                match next {
                    Next::Done(r) => return r,
                    Next::Wait => {}
                    Next::Run(mine) => {
                        let run = SyncRun {
                            host: h.clone(),
                            mine,
                            ran: false,
                        };
                        tokio::task::spawn_blocking(move || run.go());
                    }
                }
                ended
            };
            // The sender lives as long as `h`: `changed` only fails if it
            // is gone, which it cannot be while `h` is held here.
            let _ = ended.changed().await;
        }
    }
}

/// A sync handed to the blocking pool. If the pool drops it unrun (the
/// runtime shutting down), the sync is marked ended without success, so
/// the next waiter starts another instead of waiting for it forever.
#[cfg(feature = "runtime")]
struct SyncRun {
    host: Arc<HostSync>,
    mine: u64,
    ran: bool,
}

#[cfg(feature = "runtime")]
impl SyncRun {
    fn go(mut self) {
        self.ran = true;
        self.host.run(self.mine);
    }
}

#[cfg(feature = "runtime")]
impl Drop for SyncRun {
    fn drop(&mut self) {
        if !self.ran {
            let mut st = self.host.lock();
            st.syncing = false;
            drop(st);
            self.host.ended.notify_all();
            self.host.ended_async.send_modify(|n| *n += 1);
        }
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
        assert!(e.to_string().contains("sync failed"), "{e}");
        assert_eq!(hs.stats().syncs, 2);
    }

    /// Groups waiting on async tasks share syncs as threads do: every
    /// request made before a sync starts rides on it, the writes are
    /// durable when the wait ends, and a failure reaches every waiter and
    /// stays.
    #[cfg(feature = "runtime")]
    #[test]
    fn async_waiters_share_one_sync_and_see_a_failure() {
        let fs = SimFs::new(SimFsConfig {
            seed: 9,
            ..SimFsConfig::default()
        });
        let dyn_fs: Arc<dyn Fs> = Arc::new(fs.clone());
        dyn_fs.create_dir_all(Path::new("/d")).unwrap();
        dyn_fs.sync_dir(Path::new("/")).unwrap();
        let hs = HostSync::new(dyn_fs.clone(), Path::new("/d"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut pending = Vec::new();
        for i in 0..50 {
            let mut f = dyn_fs
                .open(Path::new(&format!("/d/log{i}")), OpenMode::Create)
                .unwrap();
            f.write_all(format!("entry {i}").as_bytes()).unwrap();
            pending.push(hs.request());
        }
        rt.block_on(async {
            let waits = pending.iter().map(|p| p.wait());
            for r in futures_join_all(waits).await {
                r.unwrap();
            }
        });
        assert_eq!(
            hs.stats(),
            HostSyncStats {
                syncs: 1,
                requests: 50
            }
        );
        fs.crash_seeded(3);
        for i in 0..50 {
            let got = dyn_fs.read(Path::new(&format!("/d/log{i}"))).unwrap();
            assert_eq!(got, format!("entry {i}").into_bytes());
        }

        fs.configure(|c| c.sync_eio = Fault::Chance(1.0));
        let e = rt.block_on(hs.request().wait()).unwrap_err();
        assert!(e.to_string().contains("input/output error"), "{e}");
        assert_eq!(hs.stats().syncs, 2);
        // The disk is healthy again, but nothing is tried again: what the
        // failed sync held may be gone.
        fs.configure(|c| c.sync_eio = Fault::Never);
        let e = rt.block_on(hs.request().wait()).unwrap_err();
        assert!(e.to_string().contains("input/output error"), "{e}");
        assert_eq!(hs.stats().syncs, 2);
    }

    /// Awaits every future, in order (the tests need no more than this
    /// from a join).
    #[cfg(feature = "runtime")]
    async fn futures_join_all<F: std::future::Future>(
        fs: impl Iterator<Item = F>,
    ) -> Vec<F::Output> {
        let tasks: Vec<_> = fs.map(Box::pin).collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await);
        }
        out
    }
}
