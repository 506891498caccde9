//! The shape of the data an engine holds: blocks, slices, sectors.

use super::error::EngineError;

/// The unit of checksums and of IO: every write covers whole sectors, and
/// every sector on disk carries its own CRC-32C.
///
/// 4 KiB is the page and the physical sector of current disks, so no
/// write is a read-modify-write of a partial sector, and a write torn by
/// a crash is always rewritten whole when the Raft log is replayed (a
/// partial-sector write would have to read a sector the crash may have
/// torn).
pub const SECTOR: u64 = 4096;

/// Default block size: 16 MiB, Curve's chunk size. A block is the unit a
/// volume is split into and placed by (one entry in the Master's map per
/// block, so a 10 GiB volume is 640 entries), large enough that the map
/// stays small and sequential IO stays within one group for a while,
/// small enough that a volume's load spreads over many groups.
pub const DEFAULT_BLOCK_SIZE: u64 = 16 << 20;

/// Default slice size: 64 KiB, the unit of copy-on-write. The first write
/// to a slice after a version mark copies the whole slice: 64 KiB bounds
/// that cost at 16 times a 4 KiB write, while keeping one map entry per
/// slice (256 per 16 MiB block) small enough to hold in memory for
/// terabytes per server (about 40 bytes per written slice).
pub const DEFAULT_SLICE_SIZE: u64 = 64 << 10;

/// Block, slice and sector sizes of one engine; fixed when it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Bytes per block: a multiple of `slice_size`.
    pub block_size: u64,
    /// Bytes per slice: a multiple of [`SECTOR`], at most 1 MiB.
    pub slice_size: u64,
}

impl Default for Geometry {
    fn default() -> Geometry {
        Geometry {
            block_size: DEFAULT_BLOCK_SIZE,
            slice_size: DEFAULT_SLICE_SIZE,
        }
    }
}

impl Geometry {
    /// Checks the sizes' relations.
    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |why: String| Err(EngineError::Geometry(why));
        if self.slice_size == 0 || !self.slice_size.is_multiple_of(SECTOR) {
            return bad(format!(
                "slice size {} is not a positive multiple of the {SECTOR}-byte sector",
                self.slice_size
            ));
        }
        if self.slice_size > 1 << 20 {
            return bad(format!("slice size {} is over 1 MiB", self.slice_size));
        }
        if self.block_size == 0 || !self.block_size.is_multiple_of(self.slice_size) {
            return bad(format!(
                "block size {} is not a positive multiple of the slice size {}",
                self.block_size, self.slice_size
            ));
        }
        if self.block_size / self.slice_size > u64::from(u32::MAX) {
            return bad(format!(
                "block size {} has too many slices",
                self.block_size
            ));
        }
        Ok(())
    }

    /// Sectors per slice.
    pub fn sectors_per_slice(&self) -> u64 {
        self.slice_size / SECTOR
    }

    /// Bytes one slice takes in the slot file: its sectors, each followed
    /// by its checksum trailer.
    pub fn slot_bytes(&self) -> u64 {
        self.sectors_per_slice() * super::slots::FRAME
    }
}
