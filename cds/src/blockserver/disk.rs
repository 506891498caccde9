//! A disk that can fail while the process runs.
//!
//! Every file a replica's log, meta, snapshots and engine touch goes
//! through a [`DiskFs`] of its disk. Once the disk is failed (by a fault
//! injected on purpose, `cdsctl cds fail-disk`, or when the server's health
//! probe finds the disk unusable) every call returns `EIO`, as a dead
//! device would: the replicas on it stop on their next IO, the server
//! reports them failed, and the Master rebuilds them elsewhere while the
//! server goes on serving from its other disks.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use raft_core::storage::fs::{Fs, FsFile, Metadata, OpenMode};

/// What is wrong with a disk right now; shared by every [`DiskFs`] and
/// open file of the disk, changed while they are in use.
#[derive(Debug, Default)]
pub struct DiskState {
    /// Every call returns `EIO`.
    failed: AtomicBool,
    /// Syncs and reads wait this long first (a slow device: buffered
    /// writes land in the page cache at memory speed; what reaches the
    /// device, a flush or a read, waits).
    slow_ms: AtomicU64,
    /// A write that would grow a file returns `ENOSPC`.
    full: AtomicBool,
}

impl DiskState {
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }
    pub fn set_failed(&self, on: bool) {
        self.failed.store(on, Ordering::Release);
    }
    pub fn slow_ms(&self) -> u64 {
        self.slow_ms.load(Ordering::Acquire)
    }
    pub fn set_slow_ms(&self, ms: u64) {
        self.slow_ms.store(ms, Ordering::Release);
    }
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Acquire)
    }
    pub fn set_full(&self, on: bool) {
        self.full.store(on, Ordering::Release);
    }

    /// Before a sync or a read: the slow disk's wait (blocking the calling
    /// thread, as a slow device does), then the failed disk's error.
    fn check_device(&self) -> io::Result<()> {
        let ms = self.slow_ms();
        if ms > 0 {
            std::thread::sleep(Duration::from_millis(ms));
        }
        self.check()
    }

    /// Before any call: the failed disk's error.
    fn check(&self) -> io::Result<()> {
        if self.is_failed() {
            Err(io::Error::from_raw_os_error(libc::EIO))
        } else {
            Ok(())
        }
    }

    /// Before a write that makes a file `from` bytes long `to`.
    fn check_grow(&self, from: u64, to: u64) -> io::Result<()> {
        if to > from && self.is_full() {
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        } else {
            Ok(())
        }
    }
}

/// A file system whose calls obey its disk's [`DiskState`].
#[derive(Debug, Clone)]
pub struct DiskFs {
    inner: Arc<dyn Fs>,
    state: Arc<DiskState>,
}

impl DiskFs {
    pub fn new(inner: Arc<dyn Fs>, state: Arc<DiskState>) -> DiskFs {
        DiskFs { inner, state }
    }
}

impl Fs for DiskFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.state.check()?;
        self.inner.create_dir_all(dir)
    }
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.state.check()?;
        self.inner.read_dir(dir)
    }
    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        self.state.check()?;
        self.inner.metadata(path)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FsFile>> {
        self.state.check()?;
        let file = self.inner.open(path, mode)?;
        // Where writes land and how long the file is, so a full disk
        // refuses exactly the writes that need new space.
        let len = match mode {
            OpenMode::Create => 0,
            OpenMode::Write | OpenMode::Append => self.inner.metadata(path)?.len,
        };
        Ok(Box::new(DiskFile {
            inner: file,
            state: self.state.clone(),
            pos: if mode == OpenMode::Append { len } else { 0 },
            len,
            append: mode == OpenMode::Append,
        }))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.state.check_device()?;
        self.inner.read(path)
    }
    fn read_exact_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.state.check_device()?;
        self.inner.read_exact_at(path, offset, buf)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.state.check()?;
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.state.check()?;
        self.inner.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.state.check()?;
        self.inner.remove_dir_all(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.state.check_device()?;
        self.inner.sync_dir(dir)
    }
    fn sync_fs(&self, dir: &Path) -> io::Result<()> {
        self.state.check_device()?;
        self.inner.sync_fs(dir)
    }
}

/// A file opened through a [`DiskFs`]: obeys its disk's state as it is at
/// each call, even though it was opened before.
#[derive(Debug)]
struct DiskFile {
    inner: Box<dyn FsFile>,
    state: Arc<DiskState>,
    pos: u64,
    len: u64,
    append: bool,
}

impl FsFile for DiskFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.state.check()?;
        let at = if self.append { self.len } else { self.pos };
        let end = at.saturating_add(buf.len() as u64);
        self.state.check_grow(self.len, end)?;
        self.inner.write_all(buf)?;
        self.pos = end;
        self.len = self.len.max(end);
        Ok(())
    }
    fn seek(&mut self, pos: u64) -> io::Result<()> {
        self.state.check()?;
        self.inner.seek(pos)?;
        self.pos = pos;
        Ok(())
    }
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.state.check_device()?;
        self.inner.read_exact_at(offset, buf)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.state.check()?;
        self.state.check_grow(self.len, len)?;
        self.inner.set_len(len)?;
        self.len = len;
        Ok(())
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.state.check_device()?;
        self.inner.sync_data()
    }
    fn sync_all(&mut self) -> io::Result<()> {
        self.state.check_device()?;
        self.inner.sync_all()
    }
}

/// Checks that a disk still takes a small write and its sync (a file
/// `health` rewritten in place): what the server's heartbeat loop runs on
/// each disk, so a disk whose replicas are idle is found failed too. A
/// full disk passes once the file exists: it is rewritten, not grown.
pub fn probe(fs: &dyn Fs, disk: &Path) -> io::Result<()> {
    let path = disk.join("health");
    let mode = match fs.metadata(&path) {
        Ok(m) if m.len >= 3 => OpenMode::Write,
        _ => OpenMode::Create,
    };
    let mut f = fs.open(&path, mode)?;
    f.write_all(b"ok\n")?;
    f.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::storage::fs::RealFs;

    #[test]
    fn a_failed_disk_fails_every_call_even_on_open_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = Arc::new(DiskState::default());
        let fs = DiskFs::new(Arc::new(RealFs), state.clone());
        probe(&fs, dir.path()).expect("a healthy disk");
        let mut f = fs
            .open(&dir.path().join("x"), OpenMode::Create)
            .expect("open");
        f.write_all(b"data").expect("write");
        state.set_failed(true);
        let eio = |e: io::Error| e.raw_os_error() == Some(libc::EIO);
        assert!(f.write_all(b"more").is_err_and(eio));
        assert!(f.sync_data().is_err_and(eio));
        assert!(fs.read(&dir.path().join("x")).is_err_and(eio));
        assert!(probe(&fs, dir.path()).is_err_and(eio));
    }

    #[test]
    fn a_full_disk_refuses_growth_only_and_a_slow_one_waits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = Arc::new(DiskState::default());
        let fs = DiskFs::new(Arc::new(RealFs), state.clone());
        let path = dir.path().join("x");
        let mut f = fs.open(&path, OpenMode::Create).expect("open");
        f.write_all(&[1; 100]).expect("write");
        probe(&fs, dir.path()).expect("healthy");
        state.set_full(true);
        probe(&fs, dir.path()).expect("a full disk still passes its probe");
        let enospc = |e: io::Error| e.raw_os_error() == Some(libc::ENOSPC);
        assert!(f.write_all(b"more").is_err_and(enospc), "growing");
        f.seek(10).expect("seek");
        f.write_all(&[2; 50])
            .expect("an in-place write needs no space");
        assert!(f.set_len(200).is_err_and(enospc));
        f.set_len(60).expect("shrinking");
        let mut a = fs.open(&path, OpenMode::Append).expect("append");
        assert!(a.write_all(b"x").is_err_and(enospc), "appending");
        let mut n = fs
            .open(&dir.path().join("new"), OpenMode::Create)
            .expect("create");
        assert!(
            n.write_all(b"y").is_err_and(enospc),
            "a new file's data needs space"
        );
        state.set_full(false);
        a.write_all(b"x").expect("space again");
        assert_eq!(fs.metadata(&path).expect("meta").len, 61);
        state.set_slow_ms(30);
        let t = std::time::Instant::now();
        f.sync_data().expect("sync");
        assert!(t.elapsed() >= Duration::from_millis(30));
    }
}
