//! One exported volume: the byte-granular IO NBD clients send, on a
//! volume that stores whole 4 KiB sectors.
//!
//! NBD lets a client read or write any byte range (this server advertises
//! a minimum block size of 1). Aligned IO goes straight to the volume.
//! A write or zeroing that starts or ends inside a sector reads the edge
//! sectors, merges, and writes whole sectors: a read-modify-write, which
//! would lose a concurrent write to the same sector if two ran at once.
//! So misaligned writes run alone (an exclusive lock), while aligned IO,
//! the common case, shares the lock and runs in parallel. Every
//! connection to the export shares the one [`Export`], so the rule holds
//! across connections too.

use bytes::{Bytes, BytesMut};
use tokio::sync::RwLock;

use crate::engine::SECTOR;
use crate::volume::{ClusterAccess, Mode, Volume, VolumeError};

use super::proto;

/// A volume served under an export name.
#[derive(Debug)]
pub struct Export {
    name: String,
    volume: Volume,
    read_only: bool,
    /// Shared by aligned IO, held alone by a read-modify-write.
    rmw: RwLock<()>,
}

/// What an IO on an export came to, as the errno an NBD reply carries.
pub fn errno(e: &VolumeError) -> u32 {
    match e {
        VolumeError::OutOfRange { .. } => proto::EINVAL,
        VolumeError::Misaligned { .. } => proto::EINVAL,
        VolumeError::ReadOnly | VolumeError::Fenced { .. } => proto::EPERM,
        VolumeError::Refused(why) if why.contains("space") => proto::ENOSPC,
        _ => proto::EIO,
    }
}

fn floor(x: u64) -> u64 {
    x - x % SECTOR
}

fn ceil(x: u64) -> u64 {
    x.div_ceil(SECTOR) * SECTOR
}

impl Export {
    /// Opens volume `volume` for export as `name`: for writing (taking
    /// the volume's epoch, which fences any earlier writer), or read-only.
    pub async fn open(
        access: &ClusterAccess,
        volume: &str,
        name: &str,
        read_only: bool,
    ) -> Result<Export, VolumeError> {
        // `NAME@SNAP`: a snapshot, read-only whatever was asked.
        let (volume, read_only) = match volume.split_once('@') {
            Some((v, snap)) => (Volume::open_snapshot(access, v, snap).await?, true),
            None => {
                let mode = if read_only { Mode::Read } else { Mode::Write };
                (Volume::open(access, volume, mode).await?, read_only)
            }
        };
        Ok(Export {
            name: name.to_string(),
            volume,
            read_only,
            rmw: RwLock::new(()),
        })
    }

    /// The export's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A line for `NBD_OPT_LIST` and `NBD_INFO_DESCRIPTION`.
    pub fn description(&self) -> String {
        let m = self.volume.meta();
        match self.volume.snapshot_version() {
            Some(v) => format!(
                "CDS volume {} at snapshot version {v} ({} bytes, read-only)",
                m.name, m.size
            ),
            None => format!(
                "CDS volume {} ({} bytes, {} at epoch {})",
                m.name,
                m.size,
                if self.read_only {
                    "read-only"
                } else {
                    "writable"
                },
                self.volume.epoch()
            ),
        }
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The size as last learned.
    pub fn size(&self) -> u64 {
        self.volume.size()
    }

    /// Learns the volume's size again (each new session does, so a
    /// `volume resize` shows on reconnect).
    pub async fn refresh(&self) -> Result<u64, VolumeError> {
        self.volume.refresh().await
    }

    /// The transmission flags of this export. `CAN_MULTI_CONN` holds: every
    /// connection shares this export's one volume client, and a write is
    /// answered only once it is committed by its group's majority, so
    /// what one connection was told is written every other one reads.
    pub fn flags(&self) -> u16 {
        let mut f = proto::FLAG_HAS_FLAGS
            | proto::FLAG_SEND_FLUSH
            | proto::FLAG_SEND_FUA
            | proto::FLAG_CAN_MULTI_CONN;
        if self.read_only {
            f |= proto::FLAG_READ_ONLY;
        } else {
            f |= proto::FLAG_SEND_TRIM | proto::FLAG_SEND_WRITE_ZEROES;
        }
        f
    }

    fn check(&self, offset: u64, len: u64) -> Result<(), VolumeError> {
        let size = self.size();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(VolumeError::OutOfRange { offset, len, size });
        }
        Ok(())
    }

    /// The range as runs of (length, allocated); see [`Volume::extents`].
    pub fn extents(&self, offset: u64, len: u64) -> Vec<(u64, bool)> {
        self.volume.extents(offset, len)
    }

    /// Reads `len` bytes at `offset`, any alignment.
    pub async fn read(&self, offset: u64, len: u64) -> Result<Bytes, VolumeError> {
        self.check(offset, len)?;
        if len == 0 {
            return Ok(Bytes::new());
        }
        let (a, b) = (floor(offset), ceil(offset + len));
        let _shared = self.rmw.read().await;
        let whole = self.volume.read(a, b - a).await?;
        let at = (offset - a) as usize;
        Ok(whole.slice(at..at + len as usize))
    }

    /// Writes `data` at `offset`, any alignment; `None` writes zeros.
    pub async fn write(
        &self,
        offset: u64,
        len: u64,
        data: Option<Bytes>,
    ) -> Result<(), VolumeError> {
        if self.read_only {
            return Err(VolumeError::ReadOnly);
        }
        self.check(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        if offset.is_multiple_of(SECTOR) && len.is_multiple_of(SECTOR) {
            let _shared = self.rmw.read().await;
            return match data {
                Some(d) => self.volume.write(offset, d).await,
                None => self.volume.write_zeroes(offset, len).await,
            };
        }
        let _alone = self.rmw.write().await;
        let (a, b) = (floor(offset), ceil(offset + len));
        // The whole sectors in the middle need no merging: zeroing them
        // keeps unwritten blocks unallocated.
        let (inner_a, inner_b) = (ceil(offset), floor(offset + len));
        if data.is_none() && inner_a < inner_b {
            self.volume.write_zeroes(inner_a, inner_b - inner_a).await?;
            for (x, y) in [(a, inner_a), (inner_b, b)] {
                if x < y {
                    self.merge(x, offset, len, None).await?;
                }
            }
            return Ok(());
        }
        // Zeros without a whole sector inside span under two sectors.
        let data = data.unwrap_or_else(|| Bytes::from(vec![0u8; len as usize]));
        self.merge(a, offset, len, Some(&data)).await
    }

    /// Reads the sectors from `a` that cover the part of `offset..+len`
    /// at or after `a` (for zeros, only the edge sector at `a`), lays the
    /// new bytes over them and writes them back whole.
    async fn merge(
        &self,
        a: u64,
        offset: u64,
        len: u64,
        data: Option<&Bytes>,
    ) -> Result<(), VolumeError> {
        let end = offset + len;
        let b = match data {
            Some(_) => ceil(end),
            // Zeroing edges: one sector at a time.
            None => (a + SECTOR).min(ceil(end)),
        };
        let mut buf = BytesMut::with_capacity((b - a) as usize);
        // Only the edge sectors hold bytes to keep.
        let head = self.volume.read(a, SECTOR).await?;
        buf.extend_from_slice(&head);
        if b - a > SECTOR {
            buf.resize((b - a - SECTOR) as usize + SECTOR as usize, 0);
            let tail_at = b - SECTOR;
            let tail = self.volume.read(tail_at, SECTOR).await?;
            let t = (tail_at - a) as usize;
            buf[t..].copy_from_slice(&tail);
        }
        let from = offset.max(a);
        let to = end.min(b);
        let (x, y) = ((from - a) as usize, (to - a) as usize);
        match data {
            Some(d) => {
                let s = (from - offset) as usize;
                buf[x..y].copy_from_slice(&d[s..s + (y - x)]);
            }
            None => buf[x..y].fill(0),
        }
        self.volume.write(a, buf.freeze()).await
    }
}

#[cfg(test)]
mod tests {
    use super::{ceil, floor};

    #[test]
    fn sector_bounds() {
        assert_eq!((floor(0), ceil(0)), (0, 0));
        assert_eq!((floor(1), ceil(1)), (0, 4096));
        assert_eq!((floor(4096), ceil(4096)), (4096, 4096));
        assert_eq!((floor(8191), ceil(8191)), (4096, 8192));
    }
}
