//! Snapshots on disk: the latest complete one, and one being received.
//!
//! A complete snapshot is a directory `<index>-<term>` holding `META` (its
//! [`SnapshotMeta`], checksummed) and one file `<i>.dat` per entry of
//! `meta.files` (file names in the meta are the application's and never
//! touch the file system). It is written under `save.tmp` and renamed into
//! place, so it is either whole or absent; a newer one replaces it.
//!
//! The snapshot being received lives in `partial/`, created the same way,
//! whose files only grow: after a restart their lengths are the bytes held,
//! and the transfer resumes from there. A chunk cut short by a crash leaves
//! a shorter file, which only means more to fetch; bytes a crash garbled
//! are caught by the core's whole-file checksum before any install.
//! Installing renames `partial/` to its final name.
//!
//! A snapshot of the state machine may also be written elsewhere in this
//! directory first (a staging directory ending in `.tmp`, filled by the
//! runtime's snapshot writer and synced by it) and adopted with
//! [`SnapshotStore::save_dir`]: the store adds its META and renames the
//! directory into place, so saving costs the same whatever the files'
//! sizes. Chunk reads ([`SnapshotStore::read_chunk`]) read only the bytes
//! asked for; nothing here reads a whole data file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::core::SnapshotMeta;
use crate::storage::fs::{Fs, FsFile, OpenMode};
use crate::storage::{RecoveryReport, SnapshotStore, StorageError};

use super::codec::{self, Reader, MAX_SNAPSHOT_FILES};
use super::{create_dir, read_small, remove_leftover, sync_dir, TMP_SUFFIX};

/// Identifies a snapshot meta file and its layout version.
const MAGIC: [u8; 8] = *b"CDSRSNP1";
/// The meta file in a snapshot directory.
const META_FILE: &str = "META";
/// The directory of the snapshot being received.
const PARTIAL_DIR: &str = "partial";
/// The directory a snapshot is saved in before it is renamed into place.
const SAVE_DIR: &str = "save";

fn snapshot_dir_name(meta: &SnapshotMeta) -> String {
    format!("{:020}-{:020}", meta.index, meta.term)
}

fn parse_snapshot_dir_name(name: &str) -> Option<(u64, u64)> {
    let (i, t) = name.split_once('-')?;
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(i) || !digits(t) {
        return None;
    }
    Some((i.parse().ok()?, t.parse().ok()?))
}

fn data_file(dir: &Path, file: usize) -> PathBuf {
    crate::storage::staged_file(dir, file)
}

fn file_len(fs: &dyn Fs, path: &Path) -> Result<u64, StorageError> {
    fs.metadata(path)
        .map(|m| m.len)
        .map_err(|e| StorageError::io("stat", path, e))
}

fn read_meta(fs: &dyn Fs, dir: &Path) -> Result<SnapshotMeta, StorageError> {
    let path = dir.join(META_FILE);
    let bytes = read_small(fs, &path)?.ok_or_else(|| StorageError::Corrupt {
        file: path.clone(),
        offset: 0,
        reason: "snapshot meta is missing".into(),
    })?;
    let decode = || {
        let (body, at) = codec::unframe(&MAGIC, &bytes)?;
        let mut r = Reader::new(body, at);
        let meta = codec::snapshot_meta(&mut r)?;
        r.finish()?;
        Ok(meta)
    };
    decode().map_err(|e: codec::DecodeError| e.in_file(&path))
}

/// Creates `dir` (emptied first if it exists) holding `meta`'s META file
/// and its data files, each synced, and syncs the directory.
fn write_snapshot_dir(
    fs: &dyn Fs,
    dir: &Path,
    meta: &SnapshotMeta,
    files: Option<&[Vec<u8>]>,
) -> Result<(), StorageError> {
    if fs.exists(dir) {
        fs.remove_dir_all(dir)
            .map_err(|e| StorageError::io("remove", dir, e))?;
    }
    create_dir(fs, dir)?;
    let mut body = Vec::new();
    codec::put_snapshot_meta(&mut body, meta);
    let write = |path: PathBuf, bytes: &[u8]| {
        fs.open(&path, OpenMode::Create)
            .and_then(|mut f| {
                f.write_all(bytes)?;
                f.sync_all()
            })
            .map_err(|e| StorageError::io("write", &path, e))
    };
    write(dir.join(META_FILE), &codec::frame(&MAGIC, &body))?;
    for i in 0..meta.files.len() {
        let data = files.and_then(|f| f.get(i)).map_or(&[][..], |d| &d[..]);
        write(data_file(dir, i), data)?;
    }
    sync_dir(fs, dir)
}

/// Up to `len` bytes of `path` from `offset`, of the `size` bytes it holds.
fn read_range(
    fs: &dyn Fs,
    path: &Path,
    size: u64,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, StorageError> {
    if offset > size {
        return Err(StorageError::Invalid(format!(
            "chunk at {offset} is past the end ({size} bytes)"
        )));
    }
    let n = len.min(size - offset);
    let mut buf = vec![0u8; n as usize];
    fs.read_exact_at(path, offset, &mut buf)
        .map_err(|e| StorageError::io("read", path, e))?;
    Ok(buf)
}

/// The snapshot being received.
#[derive(Debug)]
struct Partial {
    meta: SnapshotMeta,
    /// Bytes held per file.
    held: Vec<u64>,
    /// Files written since the last sync; at most one handle per file of
    /// the snapshot ([`MAX_SNAPSHOT_FILES`]).
    unsynced: BTreeMap<usize, Box<dyn FsFile>>,
}

/// The local [`SnapshotStore`]: directories under `PATH/snap`.
#[derive(Debug)]
pub struct LocalSnapshots {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    /// The latest complete snapshot and the directory holding it.
    latest: Option<(SnapshotMeta, PathBuf)>,
    partial: Option<Partial>,
    /// Set by a failed write or sync: memory and disk may differ.
    poison: super::Poison,
}

impl LocalSnapshots {
    /// Opens (creating if needed) the snapshots in `dir` on the real disk:
    /// keeps the newest complete snapshot, checks its files' sizes, and
    /// measures the partial one. Leftovers go into `report`.
    #[cfg(feature = "local")]
    pub fn open(dir: &Path, report: &mut RecoveryReport) -> Result<LocalSnapshots, StorageError> {
        LocalSnapshots::open_with(Arc::new(crate::storage::fs::RealFs), dir, report)
    }

    /// [`LocalSnapshots::open`] on the file system `fs`.
    pub fn open_with(
        shared: Arc<dyn Fs>,
        dir: &Path,
        report: &mut RecoveryReport,
    ) -> Result<LocalSnapshots, StorageError> {
        let fs: &dyn Fs = &*shared;
        create_dir(fs, dir)?;
        let mut complete = Vec::new();
        let mut partial_dir = None;
        let listing = fs
            .read_dir(dir)
            .map_err(|e| StorageError::io("list", dir, e))?;
        for name in listing {
            if name.ends_with(TMP_SUFFIX) {
                remove_leftover(fs, dir.join(&name), report)?;
            } else if name == PARTIAL_DIR {
                partial_dir = Some(dir.join(&name));
            } else if let Some(key) = parse_snapshot_dir_name(&name) {
                complete.push((key, dir.join(&name)));
            }
        }
        complete.sort();
        let mut store = LocalSnapshots {
            fs: shared.clone(),
            dir: dir.to_path_buf(),
            latest: None,
            partial: None,
            poison: super::Poison::default(),
        };
        if let Some(((index, term), path)) = complete.pop() {
            let meta = read_meta(fs, &path)?;
            if (meta.index, meta.term) != (index, term) {
                return Err(StorageError::Corrupt {
                    file: path.join(META_FILE),
                    offset: 0,
                    reason: format!(
                        "meta of ({}, {}) in the directory of ({index}, {term})",
                        meta.index, meta.term
                    ),
                });
            }
            for (i, f) in meta.files.iter().enumerate() {
                let data = data_file(&path, i);
                let len = file_len(fs, &data)?;
                if len != f.size {
                    return Err(StorageError::Corrupt {
                        file: data,
                        offset: len.min(f.size),
                        reason: format!("holds {len} bytes, its meta says {}", f.size),
                    });
                }
            }
            // Older ones are leftovers of a replacement a crash cut short.
            for (_, old) in complete {
                remove_leftover(fs, old, report)?;
            }
            store.latest = Some((meta, path));
        }
        if let Some(path) = partial_dir {
            let meta = read_meta(fs, &path)?;
            let mut held = Vec::with_capacity(meta.files.len());
            for (i, f) in meta.files.iter().enumerate() {
                let data = data_file(&path, i);
                let len = file_len(fs, &data)?;
                if len > f.size {
                    return Err(StorageError::Corrupt {
                        file: data,
                        offset: f.size,
                        reason: format!("holds {len} bytes, its meta says {}", f.size),
                    });
                }
                held.push(len);
                // Bytes a process that died before syncing them left in
                // the page cache: this one reports them held, so they must
                // be durable first.
                fs.open(&data, OpenMode::Append)
                    .and_then(|mut f| f.sync_data())
                    .map_err(|e| StorageError::io("sync", &data, e))?;
            }
            store.partial = Some(Partial {
                meta,
                held,
                unsynced: BTreeMap::new(),
            });
        }
        // Likewise the renames and removals such a process did not sync.
        sync_dir(fs, dir)?;
        Ok(store)
    }

    /// Whether a complete or partial snapshot is held.
    pub fn holds_any(&self) -> bool {
        self.latest.is_some() || self.partial.is_some()
    }

    /// Runs a mutation; an error that may have left memory and disk apart
    /// poisons the store.
    fn guarded<T>(
        &mut self,
        f: impl FnOnce(&mut LocalSnapshots) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        self.poison.check()?;
        let r = f(self);
        self.poison.note(&r);
        r
    }

    fn partial_dir(&self) -> PathBuf {
        self.dir.join(PARTIAL_DIR)
    }

    fn sync_partial(&mut self) -> Result<(), StorageError> {
        let dir = self.partial_dir();
        if let Some(p) = self.partial.as_mut() {
            for (i, mut f) in std::mem::take(&mut p.unsynced) {
                f.sync_data()
                    .map_err(|e| StorageError::io("sync", data_file(&dir, i), e))?;
            }
        }
        Ok(())
    }

    /// Removes the partial snapshot's directory, durably.
    fn remove_partial(&mut self) -> Result<(), StorageError> {
        self.partial = None;
        let dir = self.partial_dir();
        if self.fs.exists(&dir) {
            self.fs
                .remove_dir_all(&dir)
                .map_err(|e| StorageError::io("remove", &dir, e))?;
            sync_dir(&*self.fs, &self.dir)?;
        }
        Ok(())
    }

    /// Makes the directory `path`, holding `meta`, the latest snapshot and
    /// removes the previous one. A crash before the removal leaves two; the
    /// next open keeps the newest.
    fn replace_latest(&mut self, meta: SnapshotMeta, path: PathBuf) -> Result<(), StorageError> {
        if let Some((_, old)) = self.latest.replace((meta, path.clone())) {
            if old != path {
                self.fs
                    .remove_dir_all(&old)
                    .map_err(|e| StorageError::io("remove", &old, e))?;
            }
        }
        Ok(())
    }
}

fn check_file_count(meta: &SnapshotMeta) -> Result<(), StorageError> {
    if meta.files.len() > MAX_SNAPSHOT_FILES as usize {
        return Err(StorageError::Invalid(format!(
            "snapshot of {} files, above the limit {MAX_SNAPSHOT_FILES}",
            meta.files.len()
        )));
    }
    Ok(())
}

impl SnapshotStore for LocalSnapshots {
    fn latest(&self) -> Option<SnapshotMeta> {
        self.latest.as_ref().map(|(m, _)| m.clone())
    }

    fn latest_file_path(&self, file: u32) -> Option<PathBuf> {
        self.latest
            .as_ref()
            .map(|(_, dir)| data_file(dir, file as usize))
    }

    fn read_chunk(&self, file: u32, offset: u64, len: u64) -> Result<Vec<u8>, StorageError> {
        self.poison.check()?;
        let (meta, dir) = self
            .latest
            .as_ref()
            .ok_or_else(|| StorageError::Invalid("no snapshot".into()))?;
        let f = meta
            .files
            .get(file as usize)
            .ok_or_else(|| StorageError::Invalid(format!("no file {file} in the snapshot")))?;
        read_range(
            &*self.fs,
            &data_file(dir, file as usize),
            f.size,
            offset,
            len,
        )
    }

    fn save(&mut self, meta: &SnapshotMeta, files: &[Vec<u8>]) -> Result<bool, StorageError> {
        self.poison.check()?;
        if self
            .latest
            .as_ref()
            .is_some_and(|(m, _)| m.index >= meta.index)
        {
            return Ok(false);
        }
        check_file_count(meta)?;
        if files.len() != meta.files.len()
            || meta
                .files
                .iter()
                .zip(files)
                .any(|(f, d)| f.size != d.len() as u64)
        {
            return Err(StorageError::Invalid(
                "snapshot files do not match their meta".into(),
            ));
        }
        self.guarded(|s| {
            let tmp = s.dir.join(format!("{SAVE_DIR}{TMP_SUFFIX}"));
            write_snapshot_dir(&*s.fs, &tmp, meta, Some(files))?;
            let path = s.dir.join(snapshot_dir_name(meta));
            if s.fs.exists(&path) {
                s.fs.remove_dir_all(&path)
                    .map_err(|e| StorageError::io("remove", &path, e))?;
            }
            s.fs.rename(&tmp, &path)
                .map_err(|e| StorageError::io("rename", &tmp, e))?;
            sync_dir(&*s.fs, &s.dir)?;
            s.replace_latest(meta.clone(), path)?;
            Ok(true)
        })
    }

    fn partial(&self) -> Option<(SnapshotMeta, Vec<u64>)> {
        self.partial
            .as_ref()
            .map(|p| (p.meta.clone(), p.held.clone()))
    }

    fn read_partial_chunk(
        &self,
        file: u32,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, StorageError> {
        self.poison.check()?;
        let p = self
            .partial
            .as_ref()
            .ok_or_else(|| StorageError::Invalid("no partial snapshot".into()))?;
        let held = *p
            .held
            .get(file as usize)
            .ok_or_else(|| StorageError::Invalid(format!("no file {file} in the snapshot")))?;
        read_range(
            &*self.fs,
            &data_file(&self.partial_dir(), file as usize),
            held,
            offset,
            len,
        )
    }

    fn begin_partial(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        self.poison.check()?;
        check_file_count(meta)?;
        self.guarded(|s| {
            s.remove_partial()?;
            let tmp = s.dir.join(format!("{PARTIAL_DIR}{TMP_SUFFIX}"));
            write_snapshot_dir(&*s.fs, &tmp, meta, None)?;
            let path = s.partial_dir();
            s.fs.rename(&tmp, &path)
                .map_err(|e| StorageError::io("rename", &tmp, e))?;
            sync_dir(&*s.fs, &s.dir)?;
            s.partial = Some(Partial {
                meta: meta.clone(),
                held: vec![0; meta.files.len()],
                unsynced: BTreeMap::new(),
            });
            Ok(())
        })
    }

    fn append_partial(&mut self, file: u32, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        self.poison.check()?;
        let dir = self.partial_dir();
        let p = self
            .partial
            .as_mut()
            .ok_or_else(|| StorageError::Invalid("chunk without a partial snapshot".into()))?;
        let i = file as usize;
        let held = *p
            .held
            .get(i)
            .ok_or_else(|| StorageError::Invalid(format!("no file {file} in the snapshot")))?;
        if offset != held {
            return Err(StorageError::Invalid(format!(
                "chunk at {offset} of file {file}, which holds {held} bytes"
            )));
        }
        self.guarded(|s| {
            let fs = s.fs.clone();
            let Some(p) = s.partial.as_mut() else {
                return Err(StorageError::Failed("partial snapshot vanished".into()));
            };
            let path = data_file(&dir, i);
            let f = match p.unsynced.entry(i) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => v.insert(
                    fs.open(&path, OpenMode::Append)
                        .map_err(|e| StorageError::io("open", &path, e))?,
                ),
            };
            f.write_all(data)
                .map_err(|e| StorageError::io("write", &path, e))?;
            p.held[i] += data.len() as u64;
            Ok(())
        })
    }

    fn abort_partial(&mut self) -> Result<(), StorageError> {
        self.guarded(|s| s.remove_partial())
    }

    fn install_partial(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        self.poison.check()?;
        if self.partial.as_ref().is_none_or(|p| p.meta != *meta) {
            return Err(StorageError::Invalid(
                "install of a snapshot not received".into(),
            ));
        }
        self.guarded(|s| {
            s.sync_partial()?;
            s.partial = None;
            let from = s.partial_dir();
            let path = s.dir.join(snapshot_dir_name(meta));
            if s.fs.exists(&path) {
                s.fs.remove_dir_all(&path)
                    .map_err(|e| StorageError::io("remove", &path, e))?;
            }
            s.fs.rename(&from, &path)
                .map_err(|e| StorageError::io("rename", &from, e))?;
            sync_dir(&*s.fs, &s.dir)?;
            s.replace_latest(meta.clone(), path)
        })
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.guarded(|s| s.sync_partial())
    }

    fn latest_dir(&self) -> Option<PathBuf> {
        self.latest.as_ref().map(|(_, dir)| dir.clone())
    }

    fn staging_root(&self) -> Option<PathBuf> {
        Some(self.dir.clone())
    }

    fn save_dir(&mut self, meta: &SnapshotMeta, staged: &Path) -> Result<bool, StorageError> {
        self.poison.check()?;
        if self
            .latest
            .as_ref()
            .is_some_and(|(m, _)| m.index >= meta.index)
        {
            return Ok(false);
        }
        check_file_count(meta)?;
        if staged.parent() != Some(self.dir.as_path())
            || !staged
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(TMP_SUFFIX))
        {
            // Anywhere else the rename could cross file systems, or a
            // crash could leave a directory the next open does not clean.
            return Err(StorageError::Invalid(format!(
                "a snapshot must be staged in a directory ending in {TMP_SUFFIX} directly \
                 under {}, not {}",
                self.dir.display(),
                staged.display()
            )));
        }
        for (i, f) in meta.files.iter().enumerate() {
            let data = data_file(staged, i);
            let len = file_len(&*self.fs, &data)?;
            if len != f.size {
                return Err(StorageError::Invalid(format!(
                    "staged snapshot file {} holds {len} bytes, its meta says {}",
                    data.display(),
                    f.size
                )));
            }
        }
        self.guarded(|s| {
            let fs = &*s.fs;
            let mut body = Vec::new();
            codec::put_snapshot_meta(&mut body, meta);
            let meta_path = staged.join(META_FILE);
            fs.open(&meta_path, OpenMode::Create)
                .and_then(|mut f| {
                    f.write_all(&codec::frame(&MAGIC, &body))?;
                    f.sync_all()
                })
                .map_err(|e| StorageError::io("write", &meta_path, e))?;
            sync_dir(fs, staged)?;
            let path = s.dir.join(snapshot_dir_name(meta));
            if fs.exists(&path) {
                fs.remove_dir_all(&path)
                    .map_err(|e| StorageError::io("remove", &path, e))?;
            }
            fs.rename(staged, &path)
                .map_err(|e| StorageError::io("rename", staged, e))?;
            sync_dir(fs, &s.dir)?;
            s.replace_latest(meta.clone(), path)?;
            Ok(true)
        })
    }
}
