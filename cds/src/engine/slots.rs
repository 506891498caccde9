//! The slot file: where slice contents live, each sector checksummed.
//!
//! The file is an array of slots, one slice each. A slot holds the
//! slice's sectors, each as a *frame*: the sector's bytes, then a CRC-32C
//! of those bytes together with the slot number and the sector's index
//! (so a sector written to the wrong place fails its check too), then
//! four reserved bytes. Every sector read is checked; one that fails is
//! reported as [`EngineError::CorruptSector`] and never served.
//!
//! A slot is written whole when it is allocated (the copy of the slice it
//! replaces, or zeros), then sector by sector in place while its version
//! is the head. A slot past the end of the file is the exception: the
//! file is extended over it (a hole, which reads as zero bytes) and only
//! the sectors written get frames. A frame of all zero bytes (data,
//! checksum and reserved) therefore reads as a sector of zeros: that is
//! what a hole holds. It adds one undetected failure to those a checksum
//! kept beside its data cannot see anyway (a lost write leaves an old,
//! valid frame): a disk that zeroes a whole frame. A corrupt sector copied into a new slot stays corrupt
//! there: its frame is written *poisoned* (its checksum inverted), so a
//! copy never launders bad bytes into good ones and the sector is
//! repaired from a replica like any other (`repair.rs`). Which slots are in use is the journal's business
//! (`journal.rs`); this file only stores bytes.

use raft_core::{checksum, checksum_extend};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use raft_core::storage::fs::{Fs, FsFile, OpenMode};

use super::error::EngineError;
use super::geometry::{Geometry, SECTOR};

/// Bytes a sector takes in the slot file: data, CRC, reserved.
pub const FRAME: u64 = SECTOR + 8;

/// The checksum a frame of `slot`'s sector `sector` carries.
fn frame_crc(data: &[u8], slot: u64, sector: u64) -> u32 {
    let crc = checksum_extend(checksum(data), &slot.to_le_bytes());
    checksum_extend(crc, &sector.to_le_bytes())
}

/// Checks the frames of `slot` from sector `first` and copies their
/// sectors into `out`.
pub(crate) fn unframe(
    path: &Path,
    slot: u64,
    first: u64,
    frames: &[u8],
    out: &mut [u8],
) -> Result<(), EngineError> {
    for (i, (frame, dst)) in frames
        .chunks_exact(FRAME as usize)
        .zip(out.chunks_exact_mut(SECTOR as usize))
        .enumerate()
    {
        let sector = first + i as u64;
        let (data, trailer) = frame.split_at(SECTOR as usize);
        // Never written: a hole in the file (the trailer is looked at
        // first, so a written sector costs no scan).
        if trailer.iter().all(|&b| b == 0) && data.iter().all(|&b| b == 0) {
            dst.fill(0);
            continue;
        }
        let want = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        if frame_crc(data, slot, sector) != want {
            return Err(EngineError::CorruptSector {
                path: path.to_path_buf(),
                slot,
                sector,
            });
        }
        dst.copy_from_slice(data);
    }
    Ok(())
}

/// The open slot file.
pub(crate) struct SlotFile {
    path: PathBuf,
    file: Box<dyn FsFile>,
    geometry: Geometry,
    /// The file's length as this engine made it (slots at or past it have
    /// never been written).
    len: u64,
    /// A frame-sized scratch buffer per sector of a slice.
    scratch: Vec<u8>,
}

impl std::fmt::Debug for SlotFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotFile")
            .field("path", &self.path)
            .finish()
    }
}

impl SlotFile {
    /// Opens (`create`: creates empty) the slot file at `path`.
    pub(crate) fn open(
        fs: &Arc<dyn Fs>,
        path: &Path,
        geometry: Geometry,
        create: bool,
    ) -> Result<SlotFile, EngineError> {
        let mode = if create {
            OpenMode::Create
        } else {
            OpenMode::Write
        };
        let file = fs.open(path, mode).map_err(EngineError::io(path))?;
        let len = fs.metadata(path).map_err(EngineError::io(path))?.len;
        Ok(SlotFile {
            path: path.to_path_buf(),
            file,
            geometry,
            len,
            scratch: Vec::new(),
        })
    }

    fn offset(&self, slot: u64, sector: u64) -> u64 {
        slot * self.geometry.slot_bytes() + sector * FRAME
    }

    /// Writes `data` (whole sectors) into `slot` from sector `first`.
    pub(crate) fn write(&mut self, slot: u64, first: u64, data: &[u8]) -> Result<(), EngineError> {
        debug_assert!((data.len() as u64).is_multiple_of(SECTOR));
        let n = data.len() as u64 / SECTOR;
        debug_assert!(first + n <= self.geometry.sectors_per_slice());
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        for (i, sector) in data.chunks_exact(SECTOR as usize).enumerate() {
            let idx = first + i as u64;
            buf.extend_from_slice(sector);
            buf.extend_from_slice(&frame_crc(sector, slot, idx).to_le_bytes());
            buf.extend_from_slice(&[0; 4]);
        }
        let at = self.offset(slot, first);
        let r = self
            .file
            .seek(at)
            .and_then(|()| self.file.write_all(&buf))
            .map_err(EngineError::io(&self.path));
        if r.is_ok() {
            self.len = self.len.max(at + buf.len() as u64);
        }
        self.scratch = buf;
        r
    }

    /// Whether `slot` lies wholly at or past the end of the file: never
    /// written, so it reads as zeros once the file reaches over it.
    pub(crate) fn is_fresh(&self, slot: u64) -> bool {
        self.offset(slot, 0) >= self.len
    }

    /// Extends the file (with a hole) to hold `slot` whole.
    pub(crate) fn extend_over(&mut self, slot: u64) -> Result<(), EngineError> {
        let end = self.offset(slot + 1, 0);
        if end > self.len {
            self.file
                .set_len(end)
                .map_err(EngineError::io(&self.path))?;
            self.len = end;
        }
        Ok(())
    }

    /// Reads the frames of `n` sectors of `slot` from sector `first` into
    /// the scratch buffer, which the caller hands back. A file that ends
    /// early is corruption: a slot the journal maps always exists whole,
    /// so the file lost data it had made durable.
    fn read_frames(&mut self, slot: u64, first: u64, n: u64) -> Result<Vec<u8>, EngineError> {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.resize((n * FRAME) as usize, 0);
        match self.file.read_exact_at(self.offset(slot, first), &mut buf) {
            Ok(()) => Ok(buf),
            Err(e) => {
                self.scratch = buf;
                Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    EngineError::CorruptSector {
                        path: self.path.clone(),
                        slot,
                        sector: first,
                    }
                } else {
                    EngineError::io(&self.path)(e)
                })
            }
        }
    }

    /// Reads whole sectors of `slot` from sector `first` into `out`,
    /// checking each.
    pub(crate) fn read(
        &mut self,
        slot: u64,
        first: u64,
        out: &mut [u8],
    ) -> Result<(), EngineError> {
        debug_assert!((out.len() as u64).is_multiple_of(SECTOR));
        let buf = self.read_frames(slot, first, out.len() as u64 / SECTOR)?;
        let r = unframe(&self.path, slot, first, &buf, out);
        self.scratch = buf;
        r
    }

    /// Reads all of `slot` into `out` (a slice's bytes) like
    /// [`SlotFile::read`], but a sector that fails its check does not fail
    /// the read: it is listed in the answer (its bytes in `out` are
    /// zeros). Errors are IO errors and a file cut short.
    pub(crate) fn read_salvage(
        &mut self,
        slot: u64,
        out: &mut [u8],
    ) -> Result<Vec<u64>, EngineError> {
        let buf = self.read_frames(slot, 0, out.len() as u64 / SECTOR)?;
        let mut bad = Vec::new();
        for (i, (frame, dst)) in buf
            .chunks_exact(FRAME as usize)
            .zip(out.chunks_exact_mut(SECTOR as usize))
            .enumerate()
        {
            let sector = i as u64;
            if unframe(&self.path, slot, sector, frame, dst).is_err() {
                dst.fill(0);
                bad.push(sector);
            }
        }
        self.scratch = buf;
        Ok(bad)
    }

    /// Writes `data` (one sector) as `slot`'s sector `sector` with its
    /// checksum inverted: it reads as corrupt until rewritten or
    /// repaired.
    pub(crate) fn write_poisoned(
        &mut self,
        slot: u64,
        sector: u64,
        data: &[u8],
    ) -> Result<(), EngineError> {
        debug_assert_eq!(data.len() as u64, SECTOR);
        let mut buf = Vec::with_capacity(FRAME as usize);
        buf.extend_from_slice(data);
        buf.extend_from_slice(&(!frame_crc(data, slot, sector)).to_le_bytes());
        buf.extend_from_slice(&[0; 4]);
        let at = self.offset(slot, sector);
        self.file
            .seek(at)
            .and_then(|()| self.file.write_all(&buf))
            .map_err(EngineError::io(&self.path))
    }

    /// Makes every write so far durable.
    pub(crate) fn sync(&mut self) -> Result<(), EngineError> {
        self.file.sync_data().map_err(EngineError::io(&self.path))
    }
}
