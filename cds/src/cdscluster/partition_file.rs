//! The partition file: how `cdsctl cds partition` cuts a running
//! process's Raft links without a restart.
//!
//! A Master or BlockServer reads `partition.json` in its data directory
//! every heartbeat (BlockServers) or half second (Masters): a JSON list of
//! the peer ids whose Raft links it must cut, both ways. No file, no cut
//! links. The process applies a change as its transport's fault filter,
//! and says so on stderr once; a malformed file is reported once and
//! leaves the links as they were.

use std::path::{Path, PathBuf};

use raft_core::runtime::transport::FaultFilter;

use crate::error::{Context, Error, Result};

/// The file's name in a process's data directory.
pub const PARTITION_FILE: &str = "partition.json";

/// The ids the partition file in `data_dir` lists (none without a file).
pub fn read(data_dir: &Path) -> Result<Vec<u64>> {
    let path = data_dir.join(PARTITION_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the partition file of the process whose data directory is
/// `data_dir`: its links to `cut` go at its next look.
pub fn write(data_dir: &Path, cut: &[u64]) -> Result<()> {
    let path = data_dir.join(PARTITION_FILE);
    let body = serde_json::to_vec(cut).context("encoding the partition")?;
    std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))
}

/// Removes the partition file in `data_dir`, if there is one.
pub fn remove(data_dir: &Path) -> Result<()> {
    let path = data_dir.join(PARTITION_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// A process's view of its partition file between looks.
#[derive(Debug)]
pub struct PartitionWatch {
    data_dir: PathBuf,
    /// Who says what happened (`"blockserver 2"`).
    who: String,
    cut: Vec<u64>,
    /// The last malformed-file error reported (each is said once).
    bad: Option<String>,
}

impl PartitionWatch {
    pub fn new(data_dir: &Path, who: impl Into<String>) -> PartitionWatch {
        PartitionWatch {
            data_dir: data_dir.to_path_buf(),
            who: who.into(),
            cut: Vec::new(),
            bad: None,
        }
    }

    /// Reads the file; when the set of cut links changed, returns the
    /// filter to apply (and says so on stderr).
    pub fn poll(&mut self) -> Option<FaultFilter> {
        match read(&self.data_dir) {
            Ok(now) if now != self.cut => {
                self.bad = None;
                if now.is_empty() {
                    eprintln!("{}: every Raft link restored (partition file)", self.who);
                } else {
                    eprintln!("{}: Raft links to {now:?} cut (partition file)", self.who);
                }
                let filter = FaultFilter {
                    drop_to: now.iter().copied().collect(),
                    drop_from: now.iter().copied().collect(),
                    ..Default::default()
                };
                self.cut = now;
                Some(filter)
            }
            Ok(_) => {
                self.bad = None;
                None
            }
            Err(e) => {
                let e = e.to_string();
                if self.bad.as_ref() != Some(&e) {
                    eprintln!("{}: {e}; Raft links unchanged", self.who);
                    self.bad = Some(e);
                }
                None
            }
        }
    }
}
