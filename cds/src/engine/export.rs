//! An engine as one stream, and back: how a BlockGroup's Raft snapshot
//! carries its blocks to a new or lagging replica.
//!
//! [`Engine::begin_export`] flushes, then *pins* every slot an entry maps:
//! until [`Engine::end_export`], a write to a pinned head slot goes to a
//! new slot instead of in place, and a pinned slot no longer mapped is
//! not reused. So the stream ([`Export::write_to`], run on another thread
//! while the group keeps applying) reads slots that do not change, and
//! describes the engine exactly at the export's index, without stopping
//! writes and without holding the data in memory.
//!
//! Stream: a header (magic, geometry, index, image length, slot count,
//! CRC-32C of the header), the image (journal records: the version tree
//! and writer epochs, and every entry, slots renumbered 0..count in
//! stream order), each slot's sectors, bare, and a CRC-32C of all the slot
//! data. Sector checksums are checked while reading (a corrupt sector is
//! never exported) and made anew on import, for the new slot numbers; the
//! trailing CRC catches damage in between.

use raft_core::{checksum, checksum_extend};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use raft_core::storage::fs::Fs;

use super::error::EngineError;
use super::geometry::Geometry;
use super::journal::{self, Record, Superblock};
use super::slots::{self, SlotFile};
use super::{write_superblock, write_synced, Engine, SLOTS};

/// The first bytes of an export stream.
pub const EXPORT_MAGIC: &[u8; 8] = b"CDSEXP02";
const HEADER_LEN: usize = 8 + 8 * 5 + 4;
/// The largest image an import accepts (a hostile header cannot make it
/// allocate more): room for about 20 million entries.
const MAX_IMAGE_BYTES: u64 = 1 << 30;

/// One export under way: what to write, and from where.
#[derive(Debug)]
pub struct Export {
    fs: Arc<dyn Fs>,
    slots_path: PathBuf,
    geometry: Geometry,
    index: u64,
    image: Vec<u8>,
    /// Source slots, in stream order.
    slots: Vec<u64>,
}

impl Export {
    /// The Raft index the stream describes.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The stream's length in bytes.
    pub fn len(&self) -> u64 {
        HEADER_LEN as u64
            + self.image.len() as u64
            + self.slots.len() as u64 * self.geometry.slice_size
            + 4
    }

    /// Whether the stream has no slots (an empty engine).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Writes the stream to `out`. Safe to run while the engine applies
    /// (until [`Engine::end_export`]).
    pub fn write_to(&self, out: &mut dyn Write) -> Result<(), EngineError> {
        let io = |e: std::io::Error| EngineError::Io {
            path: PathBuf::from("<export stream>"),
            source: e,
        };
        let mut h = Vec::with_capacity(HEADER_LEN);
        h.extend_from_slice(EXPORT_MAGIC);
        for v in [
            self.geometry.block_size,
            self.geometry.slice_size,
            self.index,
            self.image.len() as u64,
            self.slots.len() as u64,
        ] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        h.extend_from_slice(&checksum(&h).to_le_bytes());
        out.write_all(&h).map_err(io)?;
        out.write_all(&self.image).map_err(io)?;
        let slot_bytes = self.geometry.slot_bytes();
        let mut frames = vec![0u8; slot_bytes as usize];
        let mut data = vec![0u8; self.geometry.slice_size as usize];
        let mut crc = 0;
        for &slot in &self.slots {
            self.fs
                .read_exact_at(&self.slots_path, slot * slot_bytes, &mut frames)
                .map_err(EngineError::io(&self.slots_path))?;
            slots::unframe(&self.slots_path, slot, 0, &frames, &mut data)?;
            crc = checksum_extend(crc, &data);
            out.write_all(&data).map_err(io)?;
        }
        out.write_all(&crc.to_le_bytes()).map_err(io)?;
        out.flush().map_err(io)
    }
}

impl Engine {
    /// Flushes and pins the engine's slots for an export of its state at
    /// the applied index (see the module docs). Call
    /// [`Engine::end_export`] when the stream is written or abandoned.
    pub fn begin_export(&mut self) -> Result<Export, EngineError> {
        if !self.pinned.is_empty() || !self.pinned_released.is_empty() {
            return Err(EngineError::ExportBusy);
        }
        self.flush()?;
        let mut image = Vec::new();
        self.image_head(&mut image);
        let mut order = Vec::new();
        for (&key, entries) in &self.map {
            for e in entries {
                let slot = e.slot.map(|s| {
                    order.push(s);
                    order.len() as u64 - 1
                });
                Record::Map {
                    key,
                    version: e.version,
                    slot,
                }
                .encode_into(&mut image);
            }
        }
        self.pinned = order.iter().copied().collect();
        Ok(Export {
            fs: self.fs.clone(),
            slots_path: self.dir.join(SLOTS),
            geometry: self.geometry,
            index: self.durable,
            image,
            slots: order,
        })
    }

    /// Ends the export: pinned slots may be written in place and reused
    /// again (those released meanwhile after the next flush).
    pub fn end_export(&mut self) {
        self.pinned.clear();
        let released = std::mem::take(&mut self.pinned_released);
        self.pending_free.extend(released);
    }

    /// Builds an engine in `dir` from an export stream, replacing whatever
    /// engine was there (only once the new one is whole and durable), and
    /// opens it: its durable index is the export's.
    pub fn import(
        fs: Arc<dyn Fs>,
        dir: &Path,
        input: &mut dyn Read,
    ) -> Result<Engine, EngineError> {
        let bad = |why: String| EngineError::BadExport(why);
        let io = stream_error;
        let mut h = [0u8; HEADER_LEN];
        input.read_exact(&mut h).map_err(io)?;
        if &h[..8] != EXPORT_MAGIC {
            return Err(bad("not an engine export".into()));
        }
        let (body, crc) = h.split_at(HEADER_LEN - 4);
        if checksum(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err(bad("header checksum mismatch".into()));
        }
        let field = |i: usize| {
            let at = 8 + 8 * i;
            let mut b = [0u8; 8];
            b.copy_from_slice(&body[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let geometry = Geometry {
            block_size: field(0),
            slice_size: field(1),
        };
        geometry.validate()?;
        let (index, image_len, count) = (field(2), field(3), field(4));
        if image_len > MAX_IMAGE_BYTES {
            return Err(bad(format!("an image of {image_len} bytes")));
        }
        let mut image = vec![0u8; image_len as usize];
        input.read_exact(&mut image).map_err(io)?;
        let records = journal::decode_all(Path::new("<export image>"), &image)?;
        let mut seen = BTreeSet::new();
        for r in &records {
            if let Record::Map { slot: Some(s), .. } = r {
                if *s >= count || !seen.insert(*s) {
                    return Err(bad(format!("slot {s} out of {count}, or mapped twice")));
                }
            }
        }
        if seen.len() as u64 != count {
            return Err(bad(format!("{count} slots sent, {} mapped", seen.len())));
        }
        // Build beside the target, then swap it in; a failed build leaves
        // the target as it was and removes what it staged.
        let staging = dir.with_extension("import");
        if fs.exists(&staging) {
            fs.remove_dir_all(&staging)
                .map_err(EngineError::io(&staging))?;
        }
        fs.create_dir_all(&staging)
            .map_err(EngineError::io(&staging))?;
        let built = build(&fs, &staging, geometry, index, &image, count, input);
        if built.is_err() {
            let _ = fs.remove_dir_all(&staging);
        }
        built?;
        if fs.exists(dir) {
            fs.remove_dir_all(dir).map_err(EngineError::io(dir))?;
        }
        fs.rename(&staging, dir).map_err(EngineError::io(dir))?;
        if let Some(parent) = dir.parent() {
            fs.sync_dir(parent).map_err(EngineError::io(parent))?;
        }
        Engine::open(fs, dir)
    }
}

/// Writes an engine's files into `staging` from the rest of the stream.
fn build(
    fs: &Arc<dyn Fs>,
    staging: &Path,
    geometry: Geometry,
    index: u64,
    image: &[u8],
    count: u64,
    input: &mut dyn Read,
) -> Result<(), EngineError> {
    let mut slots = SlotFile::open(fs, &staging.join(SLOTS), geometry, true)?;
    let mut data = vec![0u8; geometry.slice_size as usize];
    let mut crc = 0;
    for slot in 0..count {
        input.read_exact(&mut data).map_err(stream_error)?;
        crc = checksum_extend(crc, &data);
        slots.write(slot, 0, &data)?;
    }
    let mut want = [0u8; 4];
    input.read_exact(&mut want).map_err(stream_error)?;
    if crc != u32::from_le_bytes(want) {
        return Err(EngineError::BadExport("slot data checksum mismatch".into()));
    }
    let mut extra = [0u8; 1];
    if input.read(&mut extra).map_err(stream_error)? != 0 {
        return Err(EngineError::BadExport("bytes after the last slot".into()));
    }
    slots.sync()?;
    let gen = 1;
    write_synced(fs, &staging.join(journal::journal_name(gen)), image)?;
    write_superblock(
        fs,
        staging,
        &Superblock {
            geometry,
            durable_index: index,
            journal_gen: gen,
            journal_len: image.len() as u64,
        },
    )
}

/// An IO error reading the stream; running out of bytes is a bad stream.
fn stream_error(e: std::io::Error) -> EngineError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        EngineError::BadExport("the stream ends early".into())
    } else {
        EngineError::Io {
            path: PathBuf::from("<export stream>"),
            source: e,
        }
    }
}
