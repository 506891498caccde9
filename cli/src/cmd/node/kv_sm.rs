//! The replicated key-value state machine and its command encoding.
//!
//! Every replica must reach the same map from the same log (rule 1 of the
//! state machine contract), so commands are a fixed binary encoding (no
//! serde format whose output could change between versions), the map is a
//! `BTreeMap` (its snapshot bytes depend only on its contents), and
//! applying a command looks at nothing but the map and the command.
//!
//! The map sits behind a lock shared with the HTTP handlers: writes come
//! only from the apply task; readers (stale reads, and linearizable reads
//! once the node says the read index is applied) take the lock briefly and
//! never across an await.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use raft_core::runtime::state_machine::{Applied, StateMachine};
use raft_core::NodeId;

/// The map every replica holds.
pub type KvMap = BTreeMap<Vec<u8>, Vec<u8>>;

/// The map, shared between the apply task (the only writer) and readers.
pub type SharedKv = Arc<RwLock<KvMap>>;

/// The name of the one file a snapshot consists of.
const SNAPSHOT_FILE: &str = "kv";

const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;
const TAG_CAS: u8 = 3;

/// A command of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Set `key` to `value`.
    Put { key: Vec<u8>, value: Vec<u8> },
    /// Remove `key` (absent is fine).
    Delete { key: Vec<u8> },
    /// Set `key` to `value` only if it currently holds `expect` (`None`:
    /// only if absent).
    Cas {
        key: Vec<u8>,
        expect: Option<Vec<u8>>,
        value: Vec<u8>,
    },
}

/// Appends `b` with a u32 little-endian length prefix.
fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Lengths are bounded by the HTTP layer far below 4 GiB.
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Reads bytes written by `put_bytes`, advancing `pos`; `None` when the
/// input is too short.
fn take_bytes(data: &[u8], pos: &mut usize) -> Option<Vec<u8>> {
    let len_end = pos.checked_add(4)?;
    let len = u32::from_le_bytes(data.get(*pos..len_end)?.try_into().ok()?) as usize;
    let end = len_end.checked_add(len)?;
    let b = data.get(len_end..end)?.to_vec();
    *pos = end;
    Some(b)
}

impl Command {
    /// The command's bytes: a tag, then length-prefixed fields.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Command::Put { key, value } => {
                out.push(TAG_PUT);
                put_bytes(&mut out, key);
                put_bytes(&mut out, value);
            }
            Command::Delete { key } => {
                out.push(TAG_DELETE);
                put_bytes(&mut out, key);
            }
            Command::Cas { key, expect, value } => {
                out.push(TAG_CAS);
                put_bytes(&mut out, key);
                match expect {
                    None => out.push(0),
                    Some(e) => {
                        out.push(1);
                        put_bytes(&mut out, e);
                    }
                }
                put_bytes(&mut out, value);
            }
        }
        out
    }

    /// Parses bytes made by [`Command::encode`]; `None` for anything else
    /// (including trailing bytes).
    pub fn decode(data: &[u8]) -> Option<Command> {
        let (&tag, _) = data.split_first()?;
        let mut pos = 1;
        let cmd = match tag {
            TAG_PUT => Command::Put {
                key: take_bytes(data, &mut pos)?,
                value: take_bytes(data, &mut pos)?,
            },
            TAG_DELETE => Command::Delete {
                key: take_bytes(data, &mut pos)?,
            },
            TAG_CAS => {
                let key = take_bytes(data, &mut pos)?;
                let flag = *data.get(pos)?;
                pos += 1;
                let expect = match flag {
                    0 => None,
                    1 => Some(take_bytes(data, &mut pos)?),
                    _ => return None,
                };
                let value = take_bytes(data, &mut pos)?;
                Command::Cas { key, expect, value }
            }
            _ => return None,
        };
        (pos == data.len()).then_some(cmd)
    }

    /// Applies the command to `map`; returns the result for the proposer:
    /// `[1]` or `[0]` (whether a CAS swapped, whether a delete found the
    /// key; a put always answers `[1]`).
    pub fn apply(self, map: &mut KvMap) -> Vec<u8> {
        let ok = match self {
            Command::Put { key, value } => {
                map.insert(key, value);
                true
            }
            Command::Delete { key } => map.remove(&key).is_some(),
            Command::Cas { key, expect, value } => {
                if map.get(&key) == expect.as_ref() {
                    map.insert(key, value);
                    true
                } else {
                    false
                }
            }
        };
        vec![u8::from(ok)]
    }
}

/// Encodes the whole map: a u64 count, then each key and value
/// length-prefixed, in key order (so equal maps give equal bytes).
pub fn encode_map(map: &KvMap) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(map.len() as u64).to_le_bytes());
    for (k, v) in map {
        put_bytes(&mut out, k);
        put_bytes(&mut out, v);
    }
    out
}

/// Decodes [`encode_map`]'s output.
pub fn decode_map(data: &[u8]) -> Result<KvMap, String> {
    let count = data
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or("snapshot too short for its entry count")?;
    let mut pos = 8;
    let mut map = KvMap::new();
    for i in 0..count {
        let k = take_bytes(data, &mut pos).ok_or(format!("snapshot entry {i}: truncated key"))?;
        let v = take_bytes(data, &mut pos).ok_or(format!("snapshot entry {i}: truncated value"))?;
        map.insert(k, v);
    }
    if pos != data.len() {
        return Err(format!("snapshot has {} trailing bytes", data.len() - pos));
    }
    Ok(map)
}

/// The KV [`StateMachine`]: applies commands to the shared map and logs
/// role changes to stderr (the node's log).
pub struct KvStateMachine {
    id: NodeId,
    map: SharedKv,
}

impl KvStateMachine {
    /// A state machine for node `id` writing into `map` (which it empties:
    /// a node starts from empty and is rebuilt from snapshot and log).
    pub fn new(id: NodeId, map: SharedKv) -> KvStateMachine {
        map.write().unwrap_or_else(PoisonError::into_inner).clear();
        KvStateMachine { id, map }
    }
}

impl StateMachine for KvStateMachine {
    fn on_apply(&mut self, entries: &mut dyn Iterator<Item = Applied>) {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        for mut e in entries {
            match Command::decode(&e.data) {
                Some(cmd) => {
                    let result = cmd.apply(&mut map);
                    e.respond(result);
                }
                None => {
                    // Every replica skips the same bytes the same way, so
                    // the replicas still agree; the proposer learns it.
                    eprintln!(
                        "node {}: entry {} is not a KV command ({} bytes); skipped",
                        self.id,
                        e.index,
                        e.data.len()
                    );
                    e.respond(Vec::new());
                }
            }
        }
    }

    fn on_snapshot_save(&mut self) -> Vec<(String, Vec<u8>)> {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        vec![(SNAPSHOT_FILE.to_string(), encode_map(&map))]
    }

    fn on_snapshot_load(&mut self, files: Vec<(String, Vec<u8>)>) -> Result<(), String> {
        let Some((_, data)) = files.into_iter().find(|(n, _)| n == SNAPSHOT_FILE) else {
            return Err(format!("the snapshot has no file named {SNAPSHOT_FILE:?}"));
        };
        // Rule 5: the snapshot replaces everything, nothing survives it.
        let loaded = decode_map(&data)?;
        *self.map.write().unwrap_or_else(PoisonError::into_inner) = loaded;
        Ok(())
    }

    fn on_leader_start(&mut self, term: u64) {
        eprintln!("node {}: leading term {term}", self.id);
    }

    fn on_leader_stop(&mut self) {
        eprintln!("node {}: stopped leading", self.id);
    }

    fn on_start_following(&mut self, leader: NodeId, term: u64) {
        eprintln!("node {}: following {leader} in term {term}", self.id);
    }

    fn on_error(&mut self, error: &str) {
        eprintln!("node {}: fatal error: {error}", self.id);
    }

    fn on_shutdown(&mut self) {
        eprintln!("node {}: state machine shut down", self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_reject_garbage() {
        let cmds = [
            Command::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
            Command::Delete { key: b"".to_vec() },
            Command::Cas {
                key: b"k".to_vec(),
                expect: None,
                value: b"x".to_vec(),
            },
            Command::Cas {
                key: b"k".to_vec(),
                expect: Some(b"x".to_vec()),
                value: b"y".to_vec(),
            },
        ];
        for c in cmds {
            let bytes = c.encode();
            assert_eq!(Command::decode(&bytes), Some(c.clone()));
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(Command::decode(&longer), None);
            assert_eq!(Command::decode(&bytes[..bytes.len() - 1]), None);
        }
        assert_eq!(Command::decode(&[]), None);
        assert_eq!(Command::decode(&[9, 0, 0, 0, 0]), None);
    }

    #[test]
    fn cas_swaps_only_on_a_match() {
        let mut m = KvMap::new();
        let cas = |expect: Option<&[u8]>, value: &[u8]| Command::Cas {
            key: b"k".to_vec(),
            expect: expect.map(<[u8]>::to_vec),
            value: value.to_vec(),
        };
        assert_eq!(cas(Some(b"a"), b"b").apply(&mut m), vec![0]);
        assert_eq!(cas(None, b"a").apply(&mut m), vec![1]);
        assert_eq!(cas(None, b"b").apply(&mut m), vec![0]);
        assert_eq!(cas(Some(b"a"), b"b").apply(&mut m), vec![1]);
        assert_eq!(m.get(b"k".as_slice()), Some(&b"b".to_vec()));
    }

    #[test]
    fn the_map_round_trips_through_a_snapshot() {
        let mut m = KvMap::new();
        m.insert(b"a".to_vec(), b"1".to_vec());
        m.insert(b"".to_vec(), vec![0; 300]);
        let bytes = encode_map(&m);
        assert_eq!(decode_map(&bytes), Ok(m));
        assert!(decode_map(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_map(&[1, 2]).is_err());
    }
}
