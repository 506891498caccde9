//! The engine's metadata on disk: a superblock and a journal of changes.
//!
//! The journal records every change to the slice map and the version
//! tree, in order; the superblock (`super`) says which journal file is
//! current, how many of its bytes are durable, and up to which Raft index
//! the engine's files hold every applied command. A flush syncs the slot
//! file, then the journal, then replaces the superblock (write, sync,
//! rename, sync the directory): the superblock never names bytes that are
//! not on disk. Bytes past the durable length belong to commands after the
//! durable index, which the group replays from its log after a crash, so
//! recovery cuts them off; a record that fails its check *within* the
//! durable length is corruption, reported, never skipped.
//!
//! When the journal has grown well past what it describes, a flush writes
//! the current state as a new journal (`journal.N+1`) and switches the
//! superblock to it.
//!
//! Record frame: payload length (u32 LE), CRC-32C of the payload (u32 LE),
//! payload. Payloads start with a tag byte; integers are little endian.

use raft_core::checksum;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::EngineError;
use super::geometry::Geometry;
use super::versions::{Node, Version, VersionState, VolumeVersions};
use crate::codec::Reader;

/// The superblock's file name.
pub(crate) const SUPER: &str = "super";
const MAGIC: &[u8; 8] = b"CDSENG01";
/// The file format: 2 has a version tree per volume.
const FORMAT: u32 = 2;
const SUPER_LEN: usize = 8 + 4 + 8 * 5 + 4;
/// The most bytes one record's payload may claim (a versions record of
/// the most versions an engine keeps fits easily).
const MAX_RECORD: usize = 1 << 20;

/// The journal file of generation `gen`.
pub(crate) fn journal_name(gen: u64) -> String {
    format!("journal.{gen}")
}

/// What the superblock says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Superblock {
    pub geometry: Geometry,
    /// Every command up to this Raft index is in the files it names.
    pub durable_index: u64,
    pub journal_gen: u64,
    pub journal_len: u64,
}

impl Superblock {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(SUPER_LEN);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&FORMAT.to_le_bytes());
        for v in [
            self.geometry.block_size,
            self.geometry.slice_size,
            self.durable_index,
            self.journal_gen,
            self.journal_len,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let crc = checksum(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    pub(crate) fn decode(path: &Path, b: &[u8]) -> Result<Superblock, EngineError> {
        let not = |why: &str| EngineError::NotAnEngine {
            path: path.to_path_buf(),
            why: why.to_string(),
        };
        if b.len() < 8 || &b[..8] != MAGIC {
            return Err(not("not a CDS block engine superblock"));
        }
        if b.len() != SUPER_LEN {
            return Err(EngineError::CorruptMeta {
                path: path.to_path_buf(),
                why: format!("superblock of {} bytes, want {SUPER_LEN}", b.len()),
            });
        }
        let (body, crc) = b.split_at(SUPER_LEN - 4);
        if checksum(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err(EngineError::CorruptMeta {
                path: path.to_path_buf(),
                why: "superblock checksum mismatch".into(),
            });
        }
        let mut r = Reader::new(&body[8..]);
        let format = r.u32().map_err(|_| not("short superblock"))?;
        if format != FORMAT {
            return Err(not(&format!(
                "engine format {format}, this build reads {FORMAT}"
            )));
        }
        let mut next = || r.u64().map_err(|_| not("short superblock"));
        let geometry = Geometry {
            block_size: next()?,
            slice_size: next()?,
        };
        let sb = Superblock {
            geometry,
            durable_index: next()?,
            journal_gen: next()?,
            journal_len: next()?,
        };
        geometry.validate()?;
        Ok(sb)
    }
}

/// Which slice of which block: the key of the slice map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SliceKey {
    pub volume: u64,
    pub block: u64,
    pub slice: u32,
}

impl SliceKey {
    /// The first key of `volume`, in key order (volume 0: of all).
    pub(crate) fn first_of(volume: u64) -> SliceKey {
        SliceKey {
            volume,
            block: 0,
            slice: 0,
        }
    }
}

/// One change, as journaled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// `key` at `version` is held by `slot` (`None`: all zeros).
    Map {
        key: SliceKey,
        version: Version,
        slot: Option<u64>,
    },
    /// `key` has no entry at `version` any more.
    Unmap { key: SliceKey, version: Version },
    /// A volume's whole version tree here, replacing its previous one.
    Volume { volume: u64, tree: VolumeVersions },
    /// A purged volume's tree is gone.
    Forget { volume: u64 },
    /// The newest writer epoch of `volume`.
    Epoch { volume: u64, epoch: u64 },
}

const TAG_MAP: u8 = 1;
const TAG_UNMAP: u8 = 2;
const TAG_EPOCH: u8 = 4;
const TAG_VOLUME: u8 = 5;
const TAG_FORGET: u8 = 6;
const NO_SLOT: u64 = u64::MAX;

impl Record {
    /// Appends the framed record to `out`.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        let mut p = Vec::with_capacity(48);
        let key = |p: &mut Vec<u8>, k: &SliceKey| {
            p.extend_from_slice(&k.volume.to_le_bytes());
            p.extend_from_slice(&k.block.to_le_bytes());
            p.extend_from_slice(&k.slice.to_le_bytes());
        };
        match self {
            Record::Map {
                key: k,
                version,
                slot,
            } => {
                p.push(TAG_MAP);
                key(&mut p, k);
                p.extend_from_slice(&version.to_le_bytes());
                p.extend_from_slice(&slot.unwrap_or(NO_SLOT).to_le_bytes());
            }
            Record::Unmap { key: k, version } => {
                p.push(TAG_UNMAP);
                key(&mut p, k);
                p.extend_from_slice(&version.to_le_bytes());
            }
            Record::Epoch { volume, epoch } => {
                p.push(TAG_EPOCH);
                p.extend_from_slice(&volume.to_le_bytes());
                p.extend_from_slice(&epoch.to_le_bytes());
            }
            Record::Volume { volume, tree } => {
                p.push(TAG_VOLUME);
                let (ov, over) = tree.origin().unwrap_or((0, 0));
                for v in [*volume, tree.head(), tree.base(), tree.born(), ov, over] {
                    p.extend_from_slice(&v.to_le_bytes());
                }
                p.push(u8::from(tree.origin().is_some()));
                p.extend_from_slice(&(tree.nodes().len() as u32).to_le_bytes());
                for (&v, n) in tree.nodes() {
                    p.extend_from_slice(&v.to_le_bytes());
                    p.extend_from_slice(&n.parent.unwrap_or(0).to_le_bytes());
                    p.push(match n.state {
                        VersionState::Head => 0,
                        VersionState::Retained => 1,
                        VersionState::Gone => 2,
                    });
                }
            }
            Record::Forget { volume } => {
                p.push(TAG_FORGET);
                p.extend_from_slice(&volume.to_le_bytes());
            }
        }
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(&checksum(&p).to_le_bytes());
        out.extend_from_slice(&p);
    }

    fn decode(p: &[u8]) -> Result<Record, String> {
        let mut r = Reader::new(p);
        let tag = r.u8()?;
        let key = |r: &mut Reader| -> Result<SliceKey, String> {
            Ok(SliceKey {
                volume: r.u64()?,
                block: r.u64()?,
                slice: r.u32()?,
            })
        };
        let rec = match tag {
            TAG_MAP => {
                let k = key(&mut r)?;
                let version = r.u64()?;
                let slot = r.u64()?;
                Record::Map {
                    key: k,
                    version,
                    slot: (slot != NO_SLOT).then_some(slot),
                }
            }
            TAG_UNMAP => Record::Unmap {
                key: key(&mut r)?,
                version: r.u64()?,
            },
            TAG_EPOCH => Record::Epoch {
                volume: r.u64()?,
                epoch: r.u64()?,
            },
            TAG_VOLUME => {
                let volume = r.u64()?;
                let (head, base, born) = (r.u64()?, r.u64()?, r.u64()?);
                let (ov, over) = (r.u64()?, r.u64()?);
                let is_clone = match r.u8()? {
                    0 => false,
                    1 => true,
                    b => return Err(format!("bad clone flag {b}")),
                };
                let n = r.u32()?;
                let mut nodes = BTreeMap::new();
                for _ in 0..n {
                    let v = r.u64()?;
                    let parent = r.u64()?;
                    let state = match r.u8()? {
                        0 => VersionState::Head,
                        1 => VersionState::Retained,
                        2 => VersionState::Gone,
                        s => return Err(format!("unknown version state {s}")),
                    };
                    let parent = (parent != 0).then_some(parent);
                    nodes.insert(v, Node { parent, state });
                }
                let origin = is_clone.then_some((ov, over));
                Record::Volume {
                    volume,
                    tree: VolumeVersions::from_parts(head, base, born, origin, nodes)?,
                }
            }
            TAG_FORGET => Record::Forget { volume: r.u64()? },
            t => return Err(format!("unknown record tag {t}")),
        };
        if !r.is_empty() {
            return Err(format!("{} trailing bytes in a record", r.remaining()));
        }
        Ok(rec)
    }
}

/// Decodes every record of `bytes`, which must be exactly whole records:
/// any damage is an error naming where it is.
pub(crate) fn decode_all(path: &Path, bytes: &[u8]) -> Result<Vec<Record>, EngineError> {
    let corrupt = |at: usize, why: String| EngineError::CorruptMeta {
        path: path.to_path_buf(),
        why: format!("at byte {at}: {why}"),
    };
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let head = bytes
            .get(at..at + 8)
            .ok_or_else(|| corrupt(at, "a record header cut short".into()))?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len > MAX_RECORD {
            return Err(corrupt(at, format!("a record of {len} bytes")));
        }
        let payload = bytes
            .get(at + 8..at + 8 + len)
            .ok_or_else(|| corrupt(at, "a record cut short".into()))?;
        if checksum(payload) != crc {
            return Err(corrupt(at, "record checksum mismatch".into()));
        }
        out.push(Record::decode(payload).map_err(|e| corrupt(at, e))?);
        at += 8 + len;
    }
    Ok(out)
}

/// The path of `name` in `dir`.
pub(crate) fn file(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
