//! What the core reads from durable storage, and an in-memory implementation.
//!
//! The core never writes storage itself: the driver persists what a `Ready`
//! hands it and then calls `advance`. The core only reads the stable log
//! through [`Storage`], which keeps the persistence contract visible in the
//! types: everything the core holds beyond storage is in its unstable log.

use crate::core::{ConfState, Entry, HardState, Ready};
use crate::Error;

/// Read access to the durable part of a node's state.
///
/// Indexes start at 1. `first_index()..=last_index()` is the range that can
/// be read; entries outside it are an error, never a panic.
pub trait Storage {
    /// The hard state and membership the node starts from.
    fn initial_state(&self) -> Result<(HardState, ConfState), Error>;
    /// Entries `lo..hi`; returns at least one entry (when the range is not
    /// empty) and stops once `max_bytes` would be exceeded.
    fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, Error>;
    /// The term of the entry at `index`; index 0 has term 0.
    fn term(&self, index: u64) -> Result<u64, Error>;
    /// The first index still held.
    fn first_index(&self) -> u64;
    /// The last index held (`first_index() - 1` when empty).
    fn last_index(&self) -> u64;
}

/// An in-memory [`Storage`]: durable only for as long as the value lives,
/// which is exactly what the simulator needs to model crashes.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    hard_state: HardState,
    conf_state: ConfState,
    entries: Vec<Entry>,
}

impl MemStorage {
    /// Empty storage for a new group with the given voters.
    pub fn new(voters: Vec<u64>) -> MemStorage {
        MemStorage {
            hard_state: HardState::default(),
            conf_state: ConfState {
                voters,
                ..ConfState::default()
            },
            entries: Vec::new(),
        }
    }

    /// Makes `hs` the durable hard state.
    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// The durable hard state.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Appends `ents`, first dropping every held entry at or after
    /// `ents[0].index` (they conflict with the new ones). Returns how many
    /// entries were dropped.
    pub fn append(&mut self, ents: &[Entry]) -> Result<usize, Error> {
        let Some(first) = ents.first() else {
            return Ok(0);
        };
        let next = self.last_index() + 1;
        if first.index > next || first.index == 0 {
            return Err(Error::Storage(format!(
                "append at {} leaves a gap after {}",
                first.index,
                next - 1
            )));
        }
        let keep = (first.index - 1) as usize;
        let dropped = self.entries.len() - keep;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(ents);
        Ok(dropped)
    }

    /// Makes `cs` the durable membership base.
    pub fn set_conf_state(&mut self, cs: ConfState) {
        self.conf_state = cs;
    }

    /// Step 1 of the `Ready` contract: makes `rd`'s entries and hard state
    /// durable (here: part of this value).
    pub fn persist(&mut self, rd: &Ready) -> Result<(), Error> {
        self.append(&rd.entries)?;
        if let Some(hs) = rd.hard_state {
            self.hard_state = hs;
        }
        if let Some(cs) = &rd.conf_state {
            self.conf_state = cs.clone();
        }
        Ok(())
    }

    /// All held entries.
    pub fn all_entries(&self) -> &[Entry] {
        &self.entries
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<(HardState, ConfState), Error> {
        Ok((self.hard_state, self.conf_state.clone()))
    }

    fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, Error> {
        if lo < 1 || hi > self.last_index() + 1 || lo > hi {
            return Err(Error::Unavailable { lo, hi });
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in &self.entries[(lo - 1) as usize..(hi - 1) as usize] {
            bytes += e.size();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, index: u64) -> Result<u64, Error> {
        if index == 0 {
            return Ok(0);
        }
        self.entries
            .get((index - 1) as usize)
            .map(|e| e.term)
            .ok_or(Error::Unavailable {
                lo: index,
                hi: index + 1,
            })
    }

    fn first_index(&self) -> u64 {
        1
    }

    fn last_index(&self) -> u64 {
        self.entries.len() as u64
    }
}
