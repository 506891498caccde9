//! `memory://`: the three stores held in memory.
//!
//! They make [`super::NodeStorage`] usable where there is no disk (tests,
//! the browser) and are the reference the conformance suite compares the
//! durable implementations with. "Durable" here means "as long as the value
//! lives".

use crate::core::{ConfState, Entry, HardState, SnapshotMeta};

use super::traits::{check_append, check_range, chunk_of};
use super::{LogStore, MetaStore, SnapshotStore, StorageError};

/// An in-memory [`LogStore`].
#[derive(Debug, Clone, Default)]
pub struct MemoryLog {
    /// Index and term of the compaction point.
    offset: u64,
    offset_term: u64,
    entries: Vec<Entry>,
}

impl MemoryLog {
    /// An empty log (compaction point 0, term 0).
    pub fn new() -> MemoryLog {
        MemoryLog::default()
    }
}

impl LogStore for MemoryLog {
    fn first_index(&self) -> u64 {
        self.offset + 1
    }

    fn last_index(&self) -> u64 {
        self.offset + self.entries.len() as u64
    }

    fn term(&self, index: u64) -> Result<u64, StorageError> {
        if index == self.offset {
            return Ok(self.offset_term);
        }
        let unavailable = StorageError::Unavailable {
            lo: index,
            hi: index + 1,
        };
        if index < self.offset {
            return Err(unavailable);
        }
        self.entries
            .get((index - self.offset - 1) as usize)
            .map(|e| e.term)
            .ok_or(unavailable)
    }

    fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        check_range(self.first_index(), self.last_index(), lo, hi)?;
        let base = self.offset + 1;
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in &self.entries[(lo - base) as usize..(hi - base) as usize] {
            bytes += e.size();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn append(&mut self, ents: &[Entry]) -> Result<usize, StorageError> {
        check_append(self.first_index(), self.last_index(), ents)?;
        let Some(head) = ents.first() else {
            return Ok(0);
        };
        let keep = (head.index - 1 - self.offset) as usize;
        let dropped = self.entries.len() - keep;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(ents);
        Ok(dropped)
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        Ok(())
    }

    fn compact(&mut self, upto: u64) -> Result<usize, StorageError> {
        if upto <= self.offset {
            return Ok(0);
        }
        if upto > self.last_index() {
            return Err(StorageError::Invalid(format!(
                "compaction to {upto} is past the last entry ({})",
                self.last_index()
            )));
        }
        let term = self.term(upto)?;
        let n = (upto - self.offset) as usize;
        self.entries.drain(..n);
        self.offset = upto;
        self.offset_term = term;
        Ok(n)
    }

    fn reset(&mut self, index: u64, term: u64) -> Result<(), StorageError> {
        self.entries.clear();
        self.offset = index;
        self.offset_term = term;
        Ok(())
    }
}

/// An in-memory [`MetaStore`].
#[derive(Debug, Clone, Default)]
pub struct MemoryMeta {
    hard_state: HardState,
    conf_state: ConfState,
}

impl MemoryMeta {
    /// Defaults: term 0, no vote, nothing committed, no members.
    pub fn new() -> MemoryMeta {
        MemoryMeta::default()
    }

    /// A store holding `cs` as the saved membership (term 0, no vote).
    pub fn with_members(cs: ConfState) -> MemoryMeta {
        MemoryMeta {
            hard_state: HardState::default(),
            conf_state: cs,
        }
    }
}

impl MetaStore for MemoryMeta {
    fn load(&self) -> (HardState, ConfState) {
        (self.hard_state, self.conf_state.clone())
    }

    fn save(&mut self, hs: &HardState, cs: &ConfState) -> Result<(), StorageError> {
        self.hard_state = *hs;
        self.conf_state = cs.clone();
        Ok(())
    }
}

/// A snapshot and its files, held in memory.
#[derive(Debug, Clone, Default)]
struct Held {
    meta: SnapshotMeta,
    files: Vec<Vec<u8>>,
}

impl Held {
    fn file(&self, file: u32) -> Result<&[u8], StorageError> {
        self.files
            .get(file as usize)
            .map(|f| &f[..])
            .ok_or_else(|| StorageError::Invalid(format!("no file {file} in the snapshot")))
    }
}

/// An in-memory [`SnapshotStore`].
#[derive(Debug, Clone, Default)]
pub struct MemorySnapshots {
    latest: Option<Held>,
    partial: Option<Held>,
}

impl MemorySnapshots {
    /// No snapshot, none being received.
    pub fn new() -> MemorySnapshots {
        MemorySnapshots::default()
    }
}

impl SnapshotStore for MemorySnapshots {
    fn latest(&self) -> Option<SnapshotMeta> {
        self.latest.as_ref().map(|s| s.meta.clone())
    }

    fn read_chunk(&self, file: u32, offset: u64, len: u64) -> Result<Vec<u8>, StorageError> {
        let s = self
            .latest
            .as_ref()
            .ok_or_else(|| StorageError::Invalid("no snapshot".into()))?;
        chunk_of(s.file(file)?, offset, len)
    }

    fn save(&mut self, meta: &SnapshotMeta, files: &[Vec<u8>]) -> Result<bool, StorageError> {
        if self
            .latest
            .as_ref()
            .is_some_and(|s| s.meta.index >= meta.index)
        {
            return Ok(false);
        }
        self.latest = Some(Held {
            meta: meta.clone(),
            files: files.to_vec(),
        });
        Ok(true)
    }

    fn partial(&self) -> Option<(SnapshotMeta, Vec<u64>)> {
        self.partial.as_ref().map(|p| {
            (
                p.meta.clone(),
                p.files.iter().map(|f| f.len() as u64).collect(),
            )
        })
    }

    fn read_partial_chunk(
        &self,
        file: u32,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, StorageError> {
        let p = self
            .partial
            .as_ref()
            .ok_or_else(|| StorageError::Invalid("no partial snapshot".into()))?;
        chunk_of(p.file(file)?, offset, len)
    }

    fn begin_partial(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        self.partial = Some(Held {
            meta: meta.clone(),
            files: vec![Vec::new(); meta.files.len()],
        });
        Ok(())
    }

    fn append_partial(&mut self, file: u32, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        let p = self
            .partial
            .as_mut()
            .ok_or_else(|| StorageError::Invalid("chunk without a partial snapshot".into()))?;
        let f = p
            .files
            .get_mut(file as usize)
            .ok_or_else(|| StorageError::Invalid(format!("no file {file} in the snapshot")))?;
        if offset != f.len() as u64 {
            return Err(StorageError::Invalid(format!(
                "chunk at {offset} of file {file}, which holds {} bytes",
                f.len()
            )));
        }
        f.extend_from_slice(data);
        Ok(())
    }

    fn abort_partial(&mut self) -> Result<(), StorageError> {
        self.partial = None;
        Ok(())
    }

    fn install_partial(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        if self.partial.as_ref().is_none_or(|p| p.meta != *meta) {
            return Err(StorageError::Invalid(
                "install of a snapshot not received".into(),
            ));
        }
        self.latest = self.partial.take();
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
}
