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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use raft_core::storage::fs::{Fs, FsFile, Metadata, OpenMode};

/// A file system that fails every call once its disk is marked failed.
#[derive(Debug, Clone)]
pub struct DiskFs {
    inner: Arc<dyn Fs>,
    failed: Arc<AtomicBool>,
}

impl DiskFs {
    pub fn new(inner: Arc<dyn Fs>, failed: Arc<AtomicBool>) -> DiskFs {
        DiskFs { inner, failed }
    }

    fn check(&self) -> io::Result<()> {
        check(&self.failed)
    }
}

fn check(failed: &AtomicBool) -> io::Result<()> {
    if failed.load(Ordering::Acquire) {
        Err(io::Error::from_raw_os_error(libc::EIO))
    } else {
        Ok(())
    }
}

impl Fs for DiskFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.check()?;
        self.inner.create_dir_all(dir)
    }
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.check()?;
        self.inner.read_dir(dir)
    }
    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        self.check()?;
        self.inner.metadata(path)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FsFile>> {
        self.check()?;
        let file = self.inner.open(path, mode)?;
        Ok(Box::new(DiskFile {
            inner: file,
            failed: self.failed.clone(),
        }))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.check()?;
        self.inner.read(path)
    }
    fn read_exact_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.check()?;
        self.inner.read_exact_at(path, offset, buf)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check()?;
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.check()?;
        self.inner.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.check()?;
        self.inner.remove_dir_all(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.check()?;
        self.inner.sync_dir(dir)
    }
    fn sync_fs(&self, dir: &Path) -> io::Result<()> {
        self.check()?;
        self.inner.sync_fs(dir)
    }
}

/// A file opened through a [`DiskFs`]: fails once its disk is failed,
/// even though it was opened before.
#[derive(Debug)]
struct DiskFile {
    inner: Box<dyn FsFile>,
    failed: Arc<AtomicBool>,
}

impl FsFile for DiskFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        check(&self.failed)?;
        self.inner.write_all(buf)
    }
    fn seek(&mut self, pos: u64) -> io::Result<()> {
        check(&self.failed)?;
        self.inner.seek(pos)
    }
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check(&self.failed)?;
        self.inner.read_exact_at(offset, buf)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        check(&self.failed)?;
        self.inner.set_len(len)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        check(&self.failed)?;
        self.inner.sync_data()
    }
    fn sync_all(&mut self) -> io::Result<()> {
        check(&self.failed)?;
        self.inner.sync_all()
    }
}

/// Checks that a disk still takes a small write and its sync (a file
/// `health` rewritten in place): what the server's heartbeat loop runs on
/// each disk, so a disk whose replicas are idle is found failed too.
pub fn probe(fs: &dyn Fs, disk: &Path) -> io::Result<()> {
    let mut f = fs.open(&disk.join("health"), OpenMode::Create)?;
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
        let failed = Arc::new(AtomicBool::new(false));
        let fs = DiskFs::new(Arc::new(RealFs), failed.clone());
        probe(&fs, dir.path()).expect("a healthy disk");
        let mut f = fs
            .open(&dir.path().join("x"), OpenMode::Create)
            .expect("open");
        f.write_all(b"data").expect("write");
        failed.store(true, Ordering::Release);
        let eio = |e: io::Error| e.raw_os_error() == Some(libc::EIO);
        assert!(f.write_all(b"more").is_err_and(eio));
        assert!(f.sync_data().is_err_and(eio));
        assert!(fs.read(&dir.path().join("x")).is_err_and(eio));
        assert!(probe(&fs, dir.path()).is_err_and(eio));
    }
}
