//! The hard state and membership base in one small file, replaced
//! atomically.
//!
//! A vote must never be forgotten or half-written (a node could vote twice
//! in one term), so the file is only ever replaced whole: written to
//! `meta.tmp`, synced, renamed over `meta`, directory synced. A `meta.tmp`
//! found on open is a save that never completed; it is deleted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::core::{ConfState, HardState};
use crate::storage::{MetaStore, RecoveryReport, StorageError};

use super::codec::{self, Reader};
use super::{read_small, remove_leftover, write_atomic, META_FILE, TMP_SUFFIX};
use crate::storage::fs::Fs;

/// Identifies a meta file and its layout version.
const MAGIC: [u8; 8] = *b"CDSRMTA1";

/// The local [`MetaStore`]: the file `PATH/meta`.
#[derive(Debug)]
pub struct LocalMeta {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    hard_state: HardState,
    conf_state: ConfState,
}

impl LocalMeta {
    /// Opens the meta under `dir` on the real disk. Returns whether the
    /// file existed (defaults otherwise). A damaged file is an error naming
    /// its offset.
    #[cfg(feature = "local")]
    pub fn open(
        dir: &Path,
        report: &mut RecoveryReport,
    ) -> Result<(LocalMeta, bool), StorageError> {
        LocalMeta::open_with(Arc::new(crate::storage::fs::RealFs), dir, report)
    }

    /// [`LocalMeta::open`] on the file system `fs`.
    pub fn open_with(
        fs: Arc<dyn Fs>,
        dir: &Path,
        report: &mut RecoveryReport,
    ) -> Result<(LocalMeta, bool), StorageError> {
        let tmp = dir.join(format!("{META_FILE}{TMP_SUFFIX}"));
        if fs.exists(&tmp) {
            remove_leftover(&*fs, tmp, report)?;
        }
        let path = dir.join(META_FILE);
        let bytes = read_small(&*fs, &path)?;
        let mut meta = LocalMeta {
            fs,
            dir: dir.to_path_buf(),
            hard_state: HardState::default(),
            conf_state: ConfState::default(),
        };
        let Some(bytes) = bytes else {
            return Ok((meta, false));
        };
        let decode = || {
            let (body, at) = codec::unframe(&MAGIC, &bytes)?;
            let mut r = Reader::new(body, at);
            let hs = codec::hard_state(&mut r)?;
            let cs = codec::conf_state(&mut r)?;
            r.finish()?;
            Ok((hs, cs))
        };
        let (hs, cs) = decode().map_err(|e: codec::DecodeError| e.in_file(&path))?;
        meta.hard_state = hs;
        meta.conf_state = cs;
        Ok((meta, true))
    }

    /// The bytes of the meta file for `hs` and `cs`.
    fn encode(hs: &HardState, cs: &ConfState) -> Vec<u8> {
        let mut body = Vec::new();
        codec::put_hard_state(&mut body, hs);
        codec::put_conf_state(&mut body, cs);
        codec::frame(&MAGIC, &body)
    }
}

impl MetaStore for LocalMeta {
    fn load(&self) -> (HardState, ConfState) {
        (self.hard_state, self.conf_state.clone())
    }

    fn save(&mut self, hs: &HardState, cs: &ConfState) -> Result<(), StorageError> {
        write_atomic(&*self.fs, &self.dir, META_FILE, &LocalMeta::encode(hs, cs))?;
        self.hard_state = *hs;
        self.conf_state = cs.clone();
        Ok(())
    }
}
