//! Fault files: how `cdsctl cds fault` (and `partition`, `fail-disk`)
//! reach a running Master or BlockServer without a restart.
//!
//! Each fault is one JSON file in the process's `faults/` directory
//! (`DATA/faults/NAME.json`), so adding and undoing faults never race on a
//! shared file: adding writes a file (temporary file, then rename),
//! undoing removes it. A fault may carry a deadline (`until_unix_ms`):
//! past it the process ignores the fault and removes its file, so a fault
//! given a duration is undone even when the command that set it died.
//!
//! The process reads the directory at every heartbeat (BlockServers) or
//! half second (Masters) and applies the faults in force together: the
//! Raft-link faults as its transport's fault filter, the disk faults on
//! its disks. A malformed file is reported once and leaves every fault as
//! it was (a fault must not be undone by a typo).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use raft_core::runtime::transport::FaultFilter;
use serde::{Deserialize, Serialize};

use crate::error::{bail, Context, Result};

/// The directory of fault files in a process's data directory.
pub const FAULTS_DIR: &str = "faults";

/// One fault a process applies to itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FaultKind {
    /// Cut the Raft links to `peers`, both ways.
    Cut { peers: Vec<u64> },
    /// Send to `peers` `ms` milliseconds late.
    Delay { peers: Vec<u64>, ms: u64 },
    /// Drop what is sent to `peers` with a chance of `pct` percent.
    Loss { peers: Vec<u64>, pct: u8 },
    /// Disk `disk` (1-based) fails: every IO returns `EIO`.
    DiskError { disk: usize },
    /// Every IO to disk `disk` (1-based) waits `ms` milliseconds first.
    DiskSlow { disk: usize, ms: u64 },
    /// Disk `disk` (1-based) is full: a write that would grow a file or
    /// create one returns `ENOSPC`; reads and in-place writes go on.
    DiskFull { disk: usize },
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FaultKind::Cut { peers } => write!(f, "Raft links to {peers:?} cut"),
            FaultKind::Delay { peers, ms } => write!(f, "Raft sends to {peers:?} {ms} ms late"),
            FaultKind::Loss { peers, pct } => {
                write!(f, "{pct}% of Raft sends to {peers:?} dropped")
            }
            FaultKind::DiskError { disk } => write!(f, "disk {disk} failed (EIO)"),
            FaultKind::DiskSlow { disk, ms } => {
                write!(f, "disk {disk} slow by {ms} ms per sync and read")
            }
            FaultKind::DiskFull { disk } => write!(f, "disk {disk} full (ENOSPC)"),
        }
    }
}

impl FaultKind {
    /// Whether it acts on Raft links (what `heal` undoes).
    pub fn is_network(&self) -> bool {
        matches!(
            self,
            FaultKind::Cut { .. } | FaultKind::Delay { .. } | FaultKind::Loss { .. }
        )
    }

    /// The disk it acts on (1-based), if it is a disk fault.
    pub fn disk(&self) -> Option<usize> {
        match self {
            FaultKind::DiskError { disk }
            | FaultKind::DiskSlow { disk, .. }
            | FaultKind::DiskFull { disk } => Some(*disk),
            _ => None,
        }
    }
}

/// A fault file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRecord {
    #[serde(flatten)]
    pub fault: FaultKind,
    /// When it ends (milliseconds since the Unix epoch); `None`: until
    /// removed.
    #[serde(default)]
    pub until_unix_ms: Option<u64>,
}

impl FaultRecord {
    /// Whether it is in force at `now_unix_ms`.
    pub fn in_force(&self, now_unix_ms: u64) -> bool {
        self.until_unix_ms.is_none_or(|u| now_unix_ms < u)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The deadline of a fault lasting `d` from now.
pub fn deadline(d: Duration) -> u64 {
    now_unix_ms().saturating_add(d.as_millis() as u64)
}

fn dir_of(data_dir: &Path) -> PathBuf {
    data_dir.join(FAULTS_DIR)
}

/// Refuses names that are not a plain file stem.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        bail!(
            Invalid,
            "'{name}' is not a fault name (1 to 64 letters, digits, '-', '_')"
        );
    }
    Ok(())
}

/// Writes fault `name` for the process whose data directory is
/// `data_dir` (replacing one of that name); it applies at the process's
/// next look. Returns the file's path.
pub fn add(data_dir: &Path, name: &str, record: &FaultRecord) -> Result<PathBuf> {
    check_name(name)?;
    let dir = dir_of(data_dir);
    crate::secret::private_dir(&dir)?;
    let path = dir.join(format!("{name}.json"));
    let body = serde_json::to_vec_pretty(record).context("encoding the fault")?;
    crate::secret::write_private(&path, &body)?;
    Ok(path)
}

/// Removes fault `name`; whether there was one.
pub fn remove(data_dir: &Path, name: &str) -> Result<bool> {
    check_name(name)?;
    let path = dir_of(data_dir).join(format!("{name}.json"));
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Every fault file of the process, by name: its record, or why it could
/// not be read.
pub fn list(data_dir: &Path) -> Result<BTreeMap<String, std::result::Result<FaultRecord, String>>> {
    let dir = dir_of(data_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut out = BTreeMap::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(name) = file.strip_suffix(".json") else {
            continue; // a write in progress (`.tmp`) or a stranger
        };
        let path = entry.path();
        let record = std::fs::read(&path)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|b| {
                serde_json::from_slice::<FaultRecord>(&b)
                    .map_err(|e| format!("{}: {e}", path.display()))
            });
        out.insert(name.to_string(), record);
    }
    Ok(out)
}

/// Removes the fault files `which` selects; returns their names.
pub fn remove_where(data_dir: &Path, which: impl Fn(&FaultRecord) -> bool) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for (name, record) in list(data_dir)? {
        // A malformed file is removed too: it holds no fault to keep.
        if record.as_ref().map_or(true, &which) && remove(data_dir, &name)? {
            removed.push(name);
        }
    }
    Ok(removed)
}

/// One disk's faults in force.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskFault {
    pub error: bool,
    pub slow_ms: u64,
    pub full: bool,
}

/// What every fault in force adds up to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InForce {
    /// The Raft transport's filter.
    pub filter: FaultFilter,
    /// Per disk (0-based); disks without a fault are absent.
    pub disks: BTreeMap<usize, DiskFault>,
}

impl InForce {
    /// The faults in force among `records` at `now_unix_ms` together:
    /// delays and losses to one peer take the largest.
    pub fn of<'a>(records: impl IntoIterator<Item = &'a FaultRecord>, now_unix_ms: u64) -> InForce {
        let mut out = InForce::default();
        for r in records.into_iter().filter(|r| r.in_force(now_unix_ms)) {
            let f = &mut out.filter;
            match &r.fault {
                FaultKind::Cut { peers } => {
                    f.drop_to.extend(peers);
                    f.drop_from.extend(peers);
                }
                FaultKind::Delay { peers, ms } => {
                    for p in peers {
                        let d = f.delay_to.entry(*p).or_default();
                        *d = (*d).max(Duration::from_millis(*ms));
                    }
                }
                FaultKind::Loss { peers, pct } => {
                    for p in peers {
                        let l = f.loss_to.entry(*p).or_default();
                        *l = (*l).max((*pct).min(100));
                    }
                }
                disk_fault => {
                    // Disks are numbered from 1; a 0 names none.
                    let Some(i) = disk_fault.disk().and_then(|d| d.checked_sub(1)) else {
                        continue;
                    };
                    let d = out.disks.entry(i).or_default();
                    match disk_fault {
                        FaultKind::DiskError { .. } => d.error = true,
                        FaultKind::DiskFull { .. } => d.full = true,
                        FaultKind::DiskSlow { ms, .. } => d.slow_ms = d.slow_ms.max(*ms),
                        _ => {}
                    }
                }
            }
        }
        out
    }
}

/// A process's view of its fault files between looks.
#[derive(Debug)]
pub struct FaultWatch {
    data_dir: PathBuf,
    /// Who says what happened (`"blockserver 2"`).
    who: String,
    now: InForce,
    /// The last malformed-file error reported (each is said once).
    bad: Option<String>,
}

impl FaultWatch {
    pub fn new(data_dir: &Path, who: impl Into<String>) -> FaultWatch {
        FaultWatch {
            data_dir: data_dir.to_path_buf(),
            who: who.into(),
            now: InForce::default(),
            bad: None,
        }
    }

    /// Reads the fault files (removing the expired ones); when what is in
    /// force changed, says so on stderr and returns it.
    pub fn poll(&mut self) -> Option<InForce> {
        let now = now_unix_ms();
        let files = match list(&self.data_dir) {
            Ok(f) => f,
            Err(e) => return self.bad(e.to_string()),
        };
        let mut records = Vec::new();
        for (name, record) in files {
            match record {
                Ok(r) if !r.in_force(now) => {
                    let _ = remove(&self.data_dir, &name);
                }
                Ok(r) => records.push((name, r)),
                Err(e) => return self.bad(e),
            }
        }
        self.bad = None;
        let next = InForce::of(records.iter().map(|(_, r)| r), now);
        if next == self.now {
            return None;
        }
        if records.is_empty() {
            eprintln!("{}: no fault in force any more (fault files)", self.who);
        } else {
            let said: Vec<String> = records
                .iter()
                .map(|(name, r)| format!("{name}: {}", r.fault))
                .collect();
            eprintln!("{}: faults in force: {}", self.who, said.join("; "));
        }
        self.now = next.clone();
        Some(next)
    }

    fn bad(&mut self, e: String) -> Option<InForce> {
        if self.bad.as_ref() != Some(&e) {
            eprintln!("{}: {e}; faults unchanged", self.who);
            self.bad = Some(e);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(fault: FaultKind, until: Option<u64>) -> FaultRecord {
        FaultRecord {
            fault,
            until_unix_ms: until,
        }
    }

    #[test]
    fn faults_add_up_and_expire() {
        let rs = [
            rec(FaultKind::Cut { peers: vec![2] }, None),
            rec(
                FaultKind::Delay {
                    peers: vec![3],
                    ms: 20,
                },
                Some(1_000),
            ),
            rec(
                FaultKind::Delay {
                    peers: vec![3],
                    ms: 50,
                },
                Some(2_000),
            ),
            rec(
                FaultKind::Loss {
                    peers: vec![3],
                    pct: 200,
                },
                None,
            ),
            rec(FaultKind::DiskSlow { disk: 2, ms: 5 }, None),
            rec(FaultKind::DiskFull { disk: 2 }, None),
            rec(FaultKind::DiskError { disk: 0 }, None),
        ];
        let f = InForce::of(&rs, 1_500);
        assert_eq!(f.filter.drop_to, [2].into());
        assert_eq!(f.filter.drop_from, [2].into());
        assert_eq!(f.filter.delay_to[&3], Duration::from_millis(50));
        assert_eq!(f.filter.loss_to[&3], 100);
        assert_eq!(
            f.disks,
            [(
                1,
                DiskFault {
                    error: false,
                    slow_ms: 5,
                    full: true
                }
            )]
            .into()
        );
        let later = InForce::of(&rs, 2_000);
        assert!(later.filter.delay_to.is_empty(), "expired at its deadline");
    }

    #[test]
    fn a_watch_applies_changes_drops_expired_files_and_keeps_faults_over_a_bad_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = FaultWatch::new(dir.path(), "test");
        assert_eq!(w.poll(), None, "no files, nothing in force");
        add(
            dir.path(),
            "slow",
            &rec(FaultKind::DiskSlow { disk: 1, ms: 9 }, None),
        )
        .expect("add");
        add(
            dir.path(),
            "gone",
            &rec(FaultKind::DiskError { disk: 1 }, Some(1)),
        )
        .expect("add");
        let f = w.poll().expect("a change");
        assert_eq!(
            f.disks[&0],
            DiskFault {
                error: false,
                slow_ms: 9,
                full: false
            }
        );
        assert!(
            !dir.path().join("faults/gone.json").exists(),
            "expired file removed"
        );
        std::fs::write(dir.path().join("faults/typo.json"), b"{").expect("write");
        remove(dir.path(), "slow").expect("remove");
        assert_eq!(w.poll(), None, "a malformed file changes nothing");
        std::fs::remove_file(dir.path().join("faults/typo.json")).expect("rm");
        assert_eq!(w.poll(), Some(InForce::default()));
        assert!(add(
            dir.path(),
            "../x",
            &rec(FaultKind::Cut { peers: vec![] }, None)
        )
        .is_err());
    }
}
