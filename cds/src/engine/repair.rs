//! Repairing a corrupt sector with a copy from another replica.
//!
//! Replicas of a group apply the same commands in the same order, so a
//! slice's entry (its key and the version it belongs to) has the same
//! bytes on every replica *at the same Raft index*; but replicas are at
//! different indices when one asks another for a copy. So a copy comes
//! with the stretch of the log over which it holds: the copying replica's
//! entry has not changed from `since` (its `changed` mark) to `at` (its
//! applied index). The damaged replica, at applied index `a`, takes it
//! when the two points are known to see the same bytes:
//!
//! - `a <= at`: the copy holds at `a` if `since <= a`;
//! - `a > at`: its own entry has not changed since its mark, so the bytes
//!   at `at` are its bytes at `a` if that mark is `<= at`.
//!
//! Otherwise it waits (for itself or the peer to apply more) and asks
//! again. `changed` is kept in memory: after a restart it is the durable
//! index the engine opened at, which is later than (or equal to) the true
//! last change, so the rule only ever refuses more, never accepts wrongly.
//!
//! A repaired sector is written in place without a sync: if a crash loses
//! it, the sector is corrupt again (or rewritten by the log's replay) and
//! is repaired again. Nothing else changes: the entry's bytes as the
//! replicas agree on them are what the sector now holds.

use super::error::EngineError;
use super::geometry::SECTOR;
use super::journal::SliceKey;
use super::versions::Version;
use super::Engine;

/// A sector as the replicas of a group name it: the slice, the version
/// whose entry holds it, and its index in the slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectorId {
    pub key: SliceKey,
    pub version: Version,
    pub sector: u64,
}

/// A sector's bytes copied from a replica, and the stretch of the log
/// over which they are the sector's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectorCopy {
    /// [`SECTOR`] bytes.
    pub data: Vec<u8>,
    /// The entry did not change between these Raft indices (inclusive):
    /// the bytes hold at every index from `since` to `at`.
    pub since: u64,
    pub at: u64,
}

/// What [`Engine::repair_sector`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// The sector holds the copy now.
    Repaired,
    /// The sector was not corrupt (already repaired, or rewritten).
    Healthy,
    /// No entry holds the sector any more (the slice was rewritten into
    /// another slot, zeroed, or its version reclaimed): nothing to repair.
    Gone,
    /// The copy is from a point of the log this replica cannot match yet:
    /// ask again once this replica applied `since` (if it is behind) or
    /// the peer caught up (if it is).
    Later,
}

impl Engine {
    /// Which sector of which entry `slot`'s sector `sector` is, if an
    /// entry maps the slot (a search of the whole map: repairs are rare).
    pub fn locate(&self, slot: u64, sector: u64) -> Option<SectorId> {
        self.map.iter().find_map(|(key, entries)| {
            entries
                .iter()
                .find(|e| e.slot == Some(slot))
                .map(|e| SectorId {
                    key: *key,
                    version: e.version,
                    sector,
                })
        })
    }

    /// This replica's copy of sector `id` for a replica repairing its
    /// own: `None` if no entry holds it here. A sector corrupt here too
    /// is the engine's error (never copied).
    pub fn copy_sector(&mut self, id: SectorId) -> Result<Option<SectorCopy>, EngineError> {
        self.check_ok()?;
        if id.sector >= self.geometry.sectors_per_slice() {
            return Ok(None);
        }
        let Some(e) = self.exact_entry(&id) else {
            return Ok(None);
        };
        let mut data = vec![0u8; SECTOR as usize];
        if let Some(slot) = e.slot {
            self.slots.read(slot, id.sector, &mut data)?;
        }
        Ok(Some(SectorCopy {
            data,
            since: e.changed,
            at: self.applied,
        }))
    }

    /// Repairs sector `id` with `copy` from another replica, if the copy
    /// holds at this replica's applied index (see the module docs).
    pub fn repair_sector(
        &mut self,
        id: SectorId,
        copy: &SectorCopy,
    ) -> Result<Repair, EngineError> {
        self.check_ok()?;
        if copy.data.len() as u64 != SECTOR || id.sector >= self.geometry.sectors_per_slice() {
            return Ok(Repair::Gone);
        }
        let Some(e) = self.exact_entry(&id) else {
            return Ok(Repair::Gone);
        };
        let Some(slot) = e.slot else {
            return Ok(Repair::Healthy);
        };
        let mut probe = vec![0u8; SECTOR as usize];
        match self.slots.read(slot, id.sector, &mut probe) {
            Ok(()) => return Ok(Repair::Healthy),
            Err(EngineError::CorruptSector { .. }) => {}
            Err(other) => return Err(other),
        }
        let a = self.applied;
        let holds = if a <= copy.at {
            copy.since <= a
        } else {
            e.changed <= copy.at
        };
        if !holds {
            return Ok(Repair::Later);
        }
        let r = self.slots.write(slot, id.sector, &copy.data);
        self.fail(r)?;
        self.stats.repaired += 1;
        Ok(Repair::Repaired)
    }

    fn exact_entry(&self, id: &SectorId) -> Option<super::Entry> {
        self.map
            .get(&id.key)?
            .iter()
            .find(|e| e.version == id.version)
            .copied()
    }
}
