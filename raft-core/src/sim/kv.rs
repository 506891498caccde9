//! The replicated key-value state machine the simulator's clients use.
//!
//! Commands carry the client's id and sequence number; the state machine
//! keeps each client's last result (a session), so a command retried after
//! a timeout is applied once and answered with the first result.

use std::collections::BTreeMap;

/// A client command as it travels through the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Set `key` to `value`.
    Put { key: u64, value: u64 },
    /// Read `key` through the log (the slowest, simplest linearizable read).
    Get { key: u64 },
}

/// A command tagged with who sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub client: u64,
    pub seq: u64,
    pub cmd: Command,
}

const ENCODED_LEN: usize = 33;

impl Request {
    /// The bytes stored in a log entry.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENCODED_LEN);
        let (tag, key, value) = match self.cmd {
            Command::Put { key, value } => (1u8, key, value),
            Command::Get { key } => (2u8, key, 0),
        };
        out.push(tag);
        for v in [self.client, self.seq, key, value] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Parses bytes made by [`Request::encode`].
    pub fn decode(data: &[u8]) -> Result<Request, String> {
        if data.len() != ENCODED_LEN {
            return Err(format!(
                "command of {} bytes, want {ENCODED_LEN}",
                data.len()
            ));
        }
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&data[1 + 8 * i..9 + 8 * i]);
            u64::from_le_bytes(b)
        };
        let cmd = match data[0] {
            1 => Command::Put {
                key: word(2),
                value: word(3),
            },
            2 => Command::Get { key: word(2) },
            t => return Err(format!("unknown command tag {t}")),
        };
        Ok(Request {
            client: word(0),
            seq: word(1),
            cmd,
        })
    }
}

/// The state machine: a map and the client sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kv {
    map: BTreeMap<u64, u64>,
    /// client -> (last applied seq, its result)
    sessions: BTreeMap<u64, (u64, Option<u64>)>,
}

impl Kv {
    /// Applies `req` once; a retry of the last request returns the cached
    /// result, an older one returns `None` (its client moved on).
    pub fn apply(&mut self, req: &Request) -> Option<u64> {
        if let Some(&(seq, result)) = self.sessions.get(&req.client) {
            if req.seq <= seq {
                return if req.seq == seq { result } else { None };
            }
        }
        let result = match req.cmd {
            Command::Put { key, value } => {
                self.map.insert(key, value);
                None
            }
            Command::Get { key } => self.map.get(&key).copied(),
        };
        self.sessions.insert(req.client, (req.seq, result));
        result
    }

    /// The current value of `key`.
    pub fn get(&self, key: u64) -> Option<u64> {
        self.map.get(&key).copied()
    }

    /// The state as snapshot files: `kv` (the map) and `sessions`. The
    /// bytes depend only on the state, so replicas that applied the same
    /// entries write identical files.
    pub fn to_files(&self) -> Vec<(String, Vec<u8>)> {
        let mut kv = Vec::with_capacity(self.map.len() * 16);
        for (k, v) in &self.map {
            kv.extend_from_slice(&k.to_le_bytes());
            kv.extend_from_slice(&v.to_le_bytes());
        }
        let mut sessions = Vec::with_capacity(self.sessions.len() * 25);
        for (c, (seq, result)) in &self.sessions {
            sessions.extend_from_slice(&c.to_le_bytes());
            sessions.extend_from_slice(&seq.to_le_bytes());
            sessions.push(result.is_some() as u8);
            sessions.extend_from_slice(&result.unwrap_or(0).to_le_bytes());
        }
        vec![("kv".into(), kv), ("sessions".into(), sessions)]
    }

    /// A state machine holding exactly what `files` (from
    /// [`Kv::to_files`]) describe: nothing of any earlier state survives.
    pub fn from_files(files: &[Vec<u8>]) -> Result<Kv, String> {
        let [kv, sessions] = files else {
            return Err(format!("a KV snapshot has 2 files, not {}", files.len()));
        };
        let word = |b: &[u8], i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        if kv.len() % 16 != 0 || sessions.len() % 25 != 0 {
            return Err("a KV snapshot file has a torn record".into());
        }
        let mut out = Kv::default();
        for rec in kv.chunks(16) {
            out.map.insert(word(rec, 0), word(rec, 8));
        }
        for rec in sessions.chunks(25) {
            let result = match rec[16] {
                0 => None,
                1 => Some(word(rec, 17)),
                b => return Err(format!("bad session flag {b}")),
            };
            out.sessions.insert(word(rec, 0), (word(rec, 8), result));
        }
        Ok(out)
    }

    /// A fingerprint of the whole state (FNV-1a over its snapshot files).
    pub fn fingerprint(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (_, f) in self.to_files() {
            for b in f {
                h ^= b as u64;
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            h ^= 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        let r = Request {
            client: 3,
            seq: 9,
            cmd: Command::Put { key: 4, value: 77 },
        };
        assert_eq!(Request::decode(&r.encode()), Ok(r));
        assert!(Request::decode(&[1, 2, 3]).is_err());
        let mut bad = r.encode();
        bad[0] = 9;
        assert!(Request::decode(&bad).is_err());
    }

    #[test]
    fn a_snapshot_load_replaces_the_whole_state() {
        let put = |client, seq, key, value| Request {
            client,
            seq,
            cmd: Command::Put { key, value },
        };
        let mut a = Kv::default();
        a.apply(&put(1, 1, 1, 10));
        a.apply(&put(2, 1, 2, 20));
        let files: Vec<Vec<u8>> = a.to_files().into_iter().map(|(_, f)| f).collect();
        // A replica with other state (key 3, a later session) loads it.
        let mut b = Kv::default();
        b.apply(&put(1, 5, 3, 30));
        b = Kv::from_files(&files).unwrap();
        assert_eq!(b, a, "nothing of the old state survives");
        assert_eq!(b.get(3), None);
        assert_eq!(b.fingerprint(), a.fingerprint());
        assert!(Kv::from_files(&files[..1]).is_err());
        let mut torn = files.clone();
        torn[0].pop();
        assert!(Kv::from_files(&torn).is_err());
    }

    #[test]
    fn retries_apply_once() {
        let mut kv = Kv::default();
        let put = |seq, value| Request {
            client: 1,
            seq,
            cmd: Command::Put { key: 1, value },
        };
        kv.apply(&put(1, 10));
        kv.apply(&put(2, 20));
        kv.apply(&put(1, 10)); // a late duplicate of an old request
        assert_eq!(kv.get(1), Some(20));
    }
}
