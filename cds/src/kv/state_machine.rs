//! The replicated key-value state machine, its command encoding and its
//! client sessions.
//!
//! Every replica must reach the same map from the same log (rule 1 of the
//! state machine contract), so commands are a fixed binary encoding (no
//! serde format whose output could change between versions), the map is a
//! `BTreeMap` (its snapshot bytes depend only on its contents), and
//! applying a command looks at nothing but the state and the command.
//!
//! The map sits behind a lock shared with the HTTP handlers: writes come
//! only from the apply task; readers (stale reads, and linearizable reads
//! once the node says the read index is applied) take the lock briefly and
//! never across an await. The sessions belong to the apply task alone.
//!
//! # Client sessions: exactly-once commands
//!
//! A client that gets no answer to a write (a timeout, a reset connection,
//! a `503 unknown outcome`) cannot tell whether it was applied, and a
//! blind retry may apply it twice: a CAS retried after it succeeded would
//! then fail against its own value. As in §6.3 of Ongaro's thesis, a
//! command may carry a session ([`Stamp`]): the client's id and a sequence
//! number, new for each command and increasing. [`Sessions`] keeps, per
//! client, the last sequence number applied and the reply it gave:
//!
//! - a seq above the last is applied, and its reply cached (the last one
//!   only: a client has one command in flight at a time);
//! - the same seq again is not applied: it gets the cached reply
//!   ([`Outcome::Replayed`]);
//! - an older seq is refused ([`Outcome::Stale`]): the client moved on, and
//!   that reply is no longer kept;
//! - an unknown client opens a session with seq 1 (no registration round
//!   trip); any other seq of an unknown client is refused
//!   ([`Outcome::UnknownSession`]): its session expired or was evicted,
//!   and whether its earlier commands applied can no longer be told.
//!
//! The one case left open: a first command (seq 1) whose session is
//! evicted or expires while its client still retries it would open a new
//! session and apply again. Expiry comes after [`SESSION_TTL_MS`] without
//! use, far beyond any retry deadline; eviction needs [`MAX_SESSIONS`]
//! sessions used more recently in between.
//!
//! Sessions are replicated state, so every decision about them is made
//! from the log alone. Time is the leader's wall clock, stamped into each
//! session command when it is proposed; the state machine's clock is the
//! largest stamp applied so far (a replica's own clock is never read), and
//! a session expires once that clock passes its last use by
//! [`SESSION_TTL_MS`]. "Least recently used" is the lowest log index of a
//! session's last command. A leader whose clock runs far ahead expires
//! sessions early (their clients then get [`Outcome::UnknownSession`],
//! never a double apply, except for the seq 1 case above); the clock then
//! waits for real time to catch up.
//!
//! Commands without a session keep the encoding they had before sessions
//! existed, so logs and snapshots written before still load, and such
//! commands still apply as they always did: at most once is not promised
//! for them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use std::io::Write;
use std::path::Path;

use raft_core::runtime::state_machine::{Applied, SnapshotJob, SnapshotWriter, StateMachine};
use raft_core::NodeId;

use super::limits::{MAX_CACHED_REPLY_BYTES, MAX_SESSIONS, SESSION_TTL_MS};

/// The map every replica holds.
pub type KvMap = BTreeMap<Vec<u8>, Vec<u8>>;

/// The map, shared between the apply task (the only writer) and readers.
pub type SharedKv = Arc<RwLock<KvMap>>;

/// The snapshot file holding the map.
const SNAPSHOT_FILE: &str = "kv";
/// The snapshot file holding the sessions and the state machine's clock
/// (absent from snapshots made before sessions existed).
const SESSIONS_FILE: &str = "sessions";
/// The version byte that starts the sessions file.
const SESSIONS_FORMAT: u8 = 1;

const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;
const TAG_CAS: u8 = 3;
/// A command with a session: client, seq and time, then the command.
const TAG_SESSION: u8 = 4;

/// The sequence number a session starts with.
pub const FIRST_SEQ: u64 = 1;

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

/// Reads a little-endian u64, advancing `pos`; `None` when the input is
/// too short.
fn take_u64(data: &[u8], pos: &mut usize) -> Option<u64> {
    let end = pos.checked_add(8)?;
    let v = u64::from_le_bytes(data.get(*pos..end)?.try_into().ok()?);
    *pos = end;
    Some(v)
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
#[cfg(test)]
pub fn encode_map(map: &KvMap) -> Vec<u8> {
    let mut out = Vec::new();
    write_map(map, &mut out).expect("writing into a Vec cannot fail");
    out
}

/// Writes the map's snapshot encoding to `out` as it goes (a snapshot
/// file), holding no encoding of the whole map: a u64 count, then each
/// key and value length-prefixed, in key order (so equal maps give equal
/// bytes).
pub fn write_map(map: &KvMap, out: &mut impl Write) -> std::io::Result<()> {
    out.write_all(&(map.len() as u64).to_le_bytes())?;
    for (k, v) in map {
        // Lengths are bounded by the HTTP layer far below 4 GiB.
        out.write_all(&(k.len() as u32).to_le_bytes())?;
        out.write_all(k)?;
        out.write_all(&(v.len() as u32).to_le_bytes())?;
        out.write_all(v)?;
    }
    Ok(())
}

/// Decodes [`write_map`]'s output.
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

/// A command's session: who sent it, which of its commands it is, and the
/// leader's wall clock when it was proposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The client's id (random, chosen by the client).
    pub client: u64,
    /// The command's sequence number in the session, from [`FIRST_SEQ`].
    pub seq: u64,
    /// Milliseconds since the Unix epoch on the proposing leader's clock.
    pub time_ms: u64,
}

/// An entry of the log: a command, with a session or without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The session, if the client sent one.
    pub stamp: Option<Stamp>,
    /// What to do.
    pub cmd: Command,
}

impl Request {
    /// The entry's bytes: without a session exactly [`Command::encode`]
    /// (the encoding from before sessions); with one, [`TAG_SESSION`], the
    /// client, seq and time as little-endian u64s, then the command.
    pub fn encode(&self) -> Vec<u8> {
        let Some(st) = self.stamp else {
            return self.cmd.encode();
        };
        let mut out = vec![TAG_SESSION];
        for w in [st.client, st.seq, st.time_ms] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&self.cmd.encode());
        out
    }

    /// Parses bytes made by [`Request::encode`]; `None` for anything else.
    pub fn decode(data: &[u8]) -> Option<Request> {
        if data.first() != Some(&TAG_SESSION) {
            return Some(Request {
                stamp: None,
                cmd: Command::decode(data)?,
            });
        }
        let mut pos = 1;
        let stamp = Stamp {
            client: take_u64(data, &mut pos)?,
            seq: take_u64(data, &mut pos)?,
            time_ms: take_u64(data, &mut pos)?,
        };
        // The inner command cannot be another session command: its tag
        // is not one `Command::decode` knows.
        let cmd = Command::decode(data.get(pos..)?)?;
        Some(Request {
            stamp: Some(stamp),
            cmd,
        })
    }
}

/// The reply a session keeps for its last command: the entry that applied
/// it and the command's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedReply {
    /// The log index of the entry that applied the command.
    pub index: u64,
    /// Its term.
    pub term: u64,
    /// What [`Command::apply`] returned (at most
    /// [`MAX_CACHED_REPLY_BYTES`]).
    pub result: Vec<u8>,
}

/// What became of a command with a session; handed to its proposer as
/// bytes ([`Outcome::encode`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new command: applied now, with this result.
    Applied(Vec<u8>),
    /// The session's last command again (a retry): not applied again;
    /// this is the reply it got the first time.
    Replayed(CachedReply),
    /// Older than the session's last command: refused, not applied.
    Stale {
        /// The seq of the session's last command.
        last_seq: u64,
    },
    /// No session for this client, and the seq is not [`FIRST_SEQ`]:
    /// refused, not applied.
    UnknownSession,
}

const OUTCOME_APPLIED: u8 = 0;
const OUTCOME_REPLAYED: u8 = 1;
const OUTCOME_STALE: u8 = 2;
const OUTCOME_UNKNOWN: u8 = 3;

impl Outcome {
    /// The outcome as the bytes of a proposal's result.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Outcome::Applied(result) => {
                out.push(OUTCOME_APPLIED);
                out.extend_from_slice(result);
            }
            Outcome::Replayed(r) => {
                out.push(OUTCOME_REPLAYED);
                out.extend_from_slice(&r.index.to_le_bytes());
                out.extend_from_slice(&r.term.to_le_bytes());
                out.extend_from_slice(&r.result);
            }
            Outcome::Stale { last_seq } => {
                out.push(OUTCOME_STALE);
                out.extend_from_slice(&last_seq.to_le_bytes());
            }
            Outcome::UnknownSession => out.push(OUTCOME_UNKNOWN),
        }
        out
    }

    /// Parses [`Outcome::encode`]'s bytes; `None` for anything else (e.g.
    /// the empty result of an entry the state machine could not decode).
    pub fn decode(data: &[u8]) -> Option<Outcome> {
        let (&tag, rest) = data.split_first()?;
        let mut pos = 0;
        match tag {
            OUTCOME_APPLIED => Some(Outcome::Applied(rest.to_vec())),
            OUTCOME_REPLAYED => Some(Outcome::Replayed(CachedReply {
                index: take_u64(rest, &mut pos)?,
                term: take_u64(rest, &mut pos)?,
                result: rest.get(pos..)?.to_vec(),
            })),
            OUTCOME_STALE => {
                let last_seq = take_u64(rest, &mut pos)?;
                (pos == rest.len()).then_some(Outcome::Stale { last_seq })
            }
            OUTCOME_UNKNOWN => rest.is_empty().then_some(Outcome::UnknownSession),
            _ => None,
        }
    }
}

/// One client's session.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Session {
    /// The seq of its last command applied.
    seq: u64,
    /// That command's reply.
    reply: CachedReply,
    /// The log index of its last use (its last command applied or
    /// replayed): its place in the least-recently-used order.
    last_used: u64,
    /// The state machine's clock at that use.
    last_ms: u64,
}

/// The client sessions and the state machine's clock (see the module's
/// "Client sessions"). At most [`MAX_SESSIONS`], each caching one reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sessions {
    /// By client id.
    clients: BTreeMap<u64, Session>,
    /// Client by the log index of its session's last use: the first is the
    /// least recently used, and, since the clock never goes back as the
    /// index grows, also the one idle longest.
    lru: BTreeMap<u64, u64>,
    /// The largest leader timestamp applied so far, in ms.
    clock_ms: u64,
    /// Sessions expired and evicted by this process (counters for
    /// `/metrics`, not replicated state: a snapshot does not carry them).
    housekeeping: Housekeeping,
}

/// What [`Sessions`] dropped to stay bounded, since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Housekeeping {
    /// Sessions unused for [`SESSION_TTL_MS`].
    pub expired: u64,
    /// Least recently used sessions dropped for a new one past
    /// [`MAX_SESSIONS`].
    pub evicted: u64,
}

impl Sessions {
    /// Applies `cmd`, sent with `stamp`, as the entry at `index` and
    /// `term`: once per seq (see [`Outcome`]). First the clock moves to the
    /// stamp's time (if later) and the sessions idle for
    /// [`SESSION_TTL_MS`] by it expire; a new session past
    /// [`MAX_SESSIONS`] evicts the least recently used one.
    pub fn apply(
        &mut self,
        map: &mut KvMap,
        stamp: Stamp,
        cmd: Command,
        index: u64,
        term: u64,
    ) -> Outcome {
        self.clock_ms = self.clock_ms.max(stamp.time_ms);
        self.expire();
        match self.clients.get(&stamp.client) {
            Some(s) if stamp.seq < s.seq => return Outcome::Stale { last_seq: s.seq },
            Some(s) if stamp.seq == s.seq => {
                let reply = s.reply.clone();
                self.touch(stamp.client, index);
                return Outcome::Replayed(reply);
            }
            Some(_) => {}
            None if stamp.seq != FIRST_SEQ => return Outcome::UnknownSession,
            None => {
                if self.clients.len() >= MAX_SESSIONS {
                    self.evict_lru();
                }
            }
        }
        let result = cmd.apply(map);
        // The commands answer one byte; a bigger reply would be a change
        // to them that forgot the session table's bound.
        assert!(
            result.len() <= MAX_CACHED_REPLY_BYTES,
            "a KV command replied {} bytes, above the {MAX_CACHED_REPLY_BYTES} a session caches",
            result.len()
        );
        let reply = CachedReply {
            index,
            term,
            result: result.clone(),
        };
        let fresh = Session {
            seq: stamp.seq,
            reply,
            last_used: index,
            last_ms: self.clock_ms,
        };
        if let Some(old) = self.clients.insert(stamp.client, fresh) {
            self.lru.remove(&old.last_used);
        }
        self.index_use(index, stamp.client);
        Outcome::Applied(result)
    }

    /// Marks `client`'s session used by the entry at `index`.
    fn touch(&mut self, client: u64, index: u64) {
        let clock = self.clock_ms;
        let Some(s) = self.clients.get_mut(&client) else {
            return;
        };
        let before = std::mem::replace(&mut s.last_used, index);
        s.last_ms = clock;
        self.lru.remove(&before);
        self.index_use(index, client);
    }

    /// Records `client` as last used at `index` in the LRU order.
    fn index_use(&mut self, index: u64, client: u64) {
        // Each log index is applied once, so no two sessions share one.
        let other = self.lru.insert(index, client);
        assert!(
            other.is_none(),
            "entry {index} used by two sessions ({other:?} and {client})"
        );
        debug_assert_eq!(self.lru.len(), self.clients.len());
    }

    /// Drops the sessions idle for [`SESSION_TTL_MS`] by the clock.
    fn expire(&mut self) {
        while let Some((&index, &client)) = self.lru.first_key_value() {
            let idle_until = self
                .clients
                .get(&client)
                .map_or(0, |s| s.last_ms.saturating_add(SESSION_TTL_MS));
            if idle_until > self.clock_ms {
                break;
            }
            self.lru.remove(&index);
            self.clients.remove(&client);
            self.housekeeping.expired += 1;
        }
    }

    /// Drops the least recently used session.
    fn evict_lru(&mut self) {
        if let Some((_, client)) = self.lru.pop_first() {
            self.clients.remove(&client);
            self.housekeeping.evicted += 1;
        }
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// What was expired and evicted since the process started.
    pub fn housekeeping(&self) -> Housekeeping {
        self.housekeeping
    }

    /// The sessions file of a snapshot: the format byte, the clock, the
    /// count, then per session (by client id) the client, seq, last use,
    /// its clock, the reply's index and term as little-endian u64s and the
    /// reply's result length-prefixed. Equal sessions give equal bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![SESSIONS_FORMAT];
        out.extend_from_slice(&self.clock_ms.to_le_bytes());
        out.extend_from_slice(&(self.clients.len() as u64).to_le_bytes());
        for (client, s) in &self.clients {
            for w in [
                *client,
                s.seq,
                s.last_used,
                s.last_ms,
                s.reply.index,
                s.reply.term,
            ] {
                out.extend_from_slice(&w.to_le_bytes());
            }
            put_bytes(&mut out, &s.reply.result);
        }
        out
    }

    /// Decodes [`Sessions::encode`]'s output, refusing what this node
    /// would never have written: another format, more than
    /// [`MAX_SESSIONS`], clients out of order, two sessions last used at
    /// one index, a reply above [`MAX_CACHED_REPLY_BYTES`], a last use
    /// after the clock, trailing bytes.
    pub fn decode(data: &[u8]) -> Result<Sessions, String> {
        let (&format, _) = data.split_first().ok_or("sessions file is empty")?;
        if format != SESSIONS_FORMAT {
            return Err(format!(
                "sessions file format {format}: this node reads format {SESSIONS_FORMAT} only"
            ));
        }
        let mut pos = 1;
        let clock_ms = take_u64(data, &mut pos).ok_or("sessions file: no clock")?;
        let count = take_u64(data, &mut pos).ok_or("sessions file: no count")?;
        if count > MAX_SESSIONS as u64 {
            return Err(format!(
                "sessions file holds {count} sessions, above the limit of {MAX_SESSIONS}"
            ));
        }
        let mut out = Sessions {
            clock_ms,
            ..Sessions::default()
        };
        for i in 0..count {
            let torn = || format!("sessions file: session {i} is truncated");
            let mut word = || take_u64(data, &mut pos).ok_or_else(torn);
            let client = word()?;
            let seq = word()?;
            let last_used = word()?;
            let last_ms = word()?;
            let index = word()?;
            let term = word()?;
            let result = take_bytes(data, &mut pos).ok_or_else(torn)?;
            if result.len() > MAX_CACHED_REPLY_BYTES {
                return Err(format!(
                    "sessions file: client {client} caches a reply of {} bytes, above {MAX_CACHED_REPLY_BYTES}",
                    result.len()
                ));
            }
            if out
                .clients
                .last_key_value()
                .is_some_and(|(&c, _)| c >= client)
            {
                return Err(format!(
                    "sessions file: client {client} is out of order or repeated"
                ));
            }
            if last_ms > clock_ms {
                return Err(format!(
                    "sessions file: client {client} was last used at {last_ms} ms, after the clock ({clock_ms} ms)"
                ));
            }
            if out.lru.insert(last_used, client).is_some() {
                return Err(format!(
                    "sessions file: two sessions were last used by entry {last_used}"
                ));
            }
            out.clients.insert(
                client,
                Session {
                    seq,
                    reply: CachedReply {
                        index,
                        term,
                        result,
                    },
                    last_used,
                    last_ms,
                },
            );
        }
        if pos != data.len() {
            return Err(format!(
                "sessions file has {} trailing bytes",
                data.len() - pos
            ));
        }
        Ok(out)
    }
}

/// The KV state as snapshot files: `kv` (the map, [`write_map`]) and
/// `sessions` ([`Sessions::encode`]).
#[cfg(test)]
pub fn snapshot_files(map: &KvMap, sessions: &Sessions) -> Vec<(String, Vec<u8>)> {
    vec![
        (SNAPSHOT_FILE.to_string(), encode_map(map)),
        (SESSIONS_FILE.to_string(), sessions.encode()),
    ]
}

/// The state a snapshot's `files` describe. A snapshot from before
/// sessions existed has no `sessions` file: it loads with no sessions and
/// the clock at 0 (its commands had no sessions either). One without `kv`,
/// or with a file that does not decode, is refused with the reason.
pub fn load_snapshot(files: Vec<(String, Vec<u8>)>) -> Result<(KvMap, Sessions), String> {
    let mut map = None;
    let mut sessions = None;
    for (name, data) in files {
        match name.as_str() {
            SNAPSHOT_FILE => map = Some(decode_map(&data)?),
            SESSIONS_FILE => sessions = Some(Sessions::decode(&data)?),
            // Nothing this node writes: left alone.
            _ => {}
        }
    }
    let map = map.ok_or(format!("the snapshot has no file named {SNAPSHOT_FILE:?}"))?;
    Ok((map, sessions.unwrap_or_default()))
}

/// What the KV state machine counts for `/metrics`; written by the apply
/// task, read by the HTTP handlers.
#[derive(Debug, Default)]
pub struct KvStats {
    /// Sessions held now.
    pub sessions: AtomicU64,
    /// Session commands answered from the cache (retries not applied again).
    pub replayed: AtomicU64,
    /// Session commands refused as stale.
    pub stale: AtomicU64,
    /// Session commands refused for an unknown session.
    pub unknown_session: AtomicU64,
    /// Sessions expired.
    pub expired: AtomicU64,
    /// Sessions evicted to make room.
    pub evicted: AtomicU64,
}

/// The KV [`StateMachine`]: applies commands to the shared map (through
/// the sessions when they have one) and logs role changes to stderr (the
/// node's log).
pub struct KvStateMachine {
    id: NodeId,
    map: SharedKv,
    sessions: Sessions,
    stats: Arc<KvStats>,
}

impl KvStateMachine {
    /// A state machine for node `id` writing into `map` (which it empties:
    /// a node starts from empty and is rebuilt from snapshot and log) and
    /// counting into `stats`.
    pub fn new(id: NodeId, map: SharedKv, stats: Arc<KvStats>) -> KvStateMachine {
        map.write().unwrap_or_else(PoisonError::into_inner).clear();
        KvStateMachine {
            id,
            map,
            sessions: Sessions::default(),
            stats,
        }
    }

    /// Publishes the session table's figures.
    fn publish(&self) {
        let h = self.sessions.housekeeping();
        self.stats
            .sessions
            .store(self.sessions.len() as u64, Ordering::Relaxed);
        self.stats.expired.store(h.expired, Ordering::Relaxed);
        self.stats.evicted.store(h.evicted, Ordering::Relaxed);
    }
}

impl StateMachine for KvStateMachine {
    fn on_apply(&mut self, entries: &mut dyn Iterator<Item = Applied>) {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        for mut e in entries {
            match Request::decode(&e.data) {
                Some(Request { stamp: None, cmd }) => {
                    let result = cmd.apply(&mut map);
                    e.respond(result);
                }
                Some(Request {
                    stamp: Some(stamp),
                    cmd,
                }) => {
                    let outcome = self.sessions.apply(&mut map, stamp, cmd, e.index, e.term);
                    let counter = match outcome {
                        Outcome::Applied(_) => None,
                        Outcome::Replayed(_) => Some(&self.stats.replayed),
                        Outcome::Stale { .. } => Some(&self.stats.stale),
                        Outcome::UnknownSession => Some(&self.stats.unknown_session),
                    };
                    if let Some(c) = counter {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                    e.respond(outcome.encode());
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
        drop(map);
        self.publish();
    }

    fn on_snapshot_save(
        &mut self,
        writer: &mut SnapshotWriter,
    ) -> Result<Option<SnapshotJob>, String> {
        // The choice: copy here, write on the job's thread. The map lives
        // in memory and keeps changing as entries apply, so the job needs
        // its own immutable copy as of this index (rule 4). The copy is a
        // deep clone of the map and the sessions: on the apply task it
        // costs one pass over the state at memory speed (about 0.1 s per
        // 100 MB) and, until the job ends, a second copy's memory. The
        // encoding and the disk writes (the slow part, fsync included)
        // run on the job's thread while apply and replication go on; the
        // encoding streams through a 1 MiB buffer, never a second whole
        // copy. Writing directly here instead would cost no extra memory
        // but stall applying for the whole write.
        let map = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let sessions = self.sessions.encode();
        let kv = writer.create(SNAPSHOT_FILE).map_err(|e| e.to_string())?;
        let mut sf = writer.create(SESSIONS_FILE).map_err(|e| e.to_string())?;
        Ok(Some(Box::new(move || {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, kv);
            write_map(&map, &mut out)
                .and_then(|()| out.flush())
                .map_err(|e| format!("writing the kv snapshot file: {e}"))?;
            sf.write_all(&sessions)
                .map_err(|e| format!("writing the sessions snapshot file: {e}"))
        })))
    }

    fn on_snapshot_load(&mut self, dir: &Path, names: &[String]) -> Result<(), String> {
        // Rule 5: the snapshot replaces everything, nothing survives it.
        // The whole files are read: the map they hold lives in memory
        // anyway.
        let mut files = Vec::with_capacity(names.len());
        for name in names {
            if name != SNAPSHOT_FILE && name != SESSIONS_FILE {
                continue; // nothing this node writes: left alone
            }
            let path = dir.join(name);
            let data =
                std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            files.push((name.clone(), data));
        }
        let (map, sessions) = load_snapshot(files)?;
        *self.map.write().unwrap_or_else(PoisonError::into_inner) = map;
        // This process's counters carry on across the load.
        let housekeeping = self.sessions.housekeeping();
        self.sessions = Sessions {
            housekeeping,
            ..sessions
        };
        self.publish();
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

    fn put(key: &str, value: &str) -> Command {
        Command::Put {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
        }
    }

    fn stamp(client: u64, seq: u64, time_ms: u64) -> Stamp {
        Stamp {
            client,
            seq,
            time_ms,
        }
    }

    fn value(m: &KvMap, key: &str) -> Option<String> {
        m.get(key.as_bytes())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// A log being applied: entries get increasing indexes, as they would.
    struct Log {
        map: KvMap,
        sessions: Sessions,
        index: u64,
    }

    impl Log {
        fn new() -> Log {
            Log {
                map: KvMap::new(),
                sessions: Sessions::default(),
                index: 0,
            }
        }

        fn apply(&mut self, st: Stamp, cmd: Command) -> Outcome {
            self.index += 1;
            self.sessions.apply(&mut self.map, st, cmd, self.index, 7)
        }
    }

    #[test]
    fn requests_round_trip_and_reject_garbage() {
        let plain = Request {
            stamp: None,
            cmd: put("k", "v"),
        };
        // Without a session, the bytes from before sessions existed.
        assert_eq!(plain.encode(), put("k", "v").encode());
        assert_eq!(Request::decode(&plain.encode()), Some(plain));
        let stamped = Request {
            stamp: Some(stamp(u64::MAX, 3, 1_700_000_000_000)),
            cmd: Command::Cas {
                key: b"k".to_vec(),
                expect: None,
                value: b"x".to_vec(),
            },
        };
        let bytes = stamped.encode();
        assert_eq!(Request::decode(&bytes), Some(stamped.clone()));
        for cut in 1..bytes.len() {
            assert_eq!(Request::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Request::decode(&longer), None);
        // A session command inside a session command is not a command.
        let mut nested = bytes[..25].to_vec();
        nested.extend_from_slice(&bytes);
        assert_eq!(Request::decode(&nested), None);
    }

    #[test]
    fn outcomes_round_trip_and_reject_garbage() {
        let all = [
            Outcome::Applied(vec![1]),
            Outcome::Applied(vec![]),
            Outcome::Replayed(CachedReply {
                index: 9,
                term: 2,
                result: vec![0],
            }),
            Outcome::Stale { last_seq: 5 },
            Outcome::UnknownSession,
        ];
        for o in all {
            assert_eq!(Outcome::decode(&o.encode()), Some(o.clone()));
        }
        assert_eq!(Outcome::decode(&[]), None);
        assert_eq!(Outcome::decode(&[9]), None);
        assert_eq!(Outcome::decode(&[OUTCOME_STALE, 1]), None);
        assert_eq!(Outcome::decode(&[OUTCOME_UNKNOWN, 0]), None);
        assert_eq!(Outcome::decode(&[OUTCOME_REPLAYED, 1, 2]), None);
    }

    #[test]
    fn a_retried_put_applies_once_and_gets_its_first_reply() {
        let mut log = Log::new();
        assert_eq!(
            log.apply(stamp(1, 1, 10), put("k", "a")),
            Outcome::Applied(vec![1])
        );
        // Another client writes after it.
        assert_eq!(
            log.apply(stamp(2, 1, 11), put("k", "b")),
            Outcome::Applied(vec![1])
        );
        // The first client's retry (its reply was lost) is not applied
        // again: "b" stays, and the reply names the first entry.
        assert_eq!(
            log.apply(stamp(1, 1, 12), put("k", "a")),
            Outcome::Replayed(CachedReply {
                index: 1,
                term: 7,
                result: vec![1]
            })
        );
        assert_eq!(value(&log.map, "k").as_deref(), Some("b"));
        // The next command of the session applies.
        assert_eq!(
            log.apply(stamp(1, 2, 13), put("k", "c")),
            Outcome::Applied(vec![1])
        );
        assert_eq!(value(&log.map, "k").as_deref(), Some("c"));
    }

    #[test]
    fn a_cas_or_delete_retried_after_success_gets_its_success_again() {
        let cas = |expect: Option<&str>, v: &str| Command::Cas {
            key: b"k".to_vec(),
            expect: expect.map(|e| e.as_bytes().to_vec()),
            value: v.as_bytes().to_vec(),
        };
        let mut log = Log::new();
        assert_eq!(
            log.apply(stamp(1, 1, 0), cas(None, "a")),
            Outcome::Applied(vec![1])
        );
        // Applied again, the CAS would fail against its own value.
        assert_eq!(cas(None, "a").apply(&mut log.map.clone()), vec![0]);
        let retry = log.apply(stamp(1, 1, 0), cas(None, "a"));
        assert!(
            matches!(&retry, Outcome::Replayed(r) if r.result == [1]),
            "{retry:?}"
        );
        let del = Command::Delete { key: b"k".to_vec() };
        assert_eq!(
            log.apply(stamp(1, 2, 0), del.clone()),
            Outcome::Applied(vec![1])
        );
        let retry = log.apply(stamp(1, 2, 0), del);
        assert!(
            matches!(&retry, Outcome::Replayed(r) if r.result == [1]),
            "the retried delete still says the key existed: {retry:?}"
        );
        assert_eq!(value(&log.map, "k"), None);
    }

    #[test]
    fn an_older_seq_is_refused_as_stale_and_not_applied() {
        let mut log = Log::new();
        log.apply(stamp(1, 1, 0), put("k", "a"));
        log.apply(stamp(1, 3, 0), put("k", "c"));
        assert_eq!(
            log.apply(stamp(1, 2, 0), put("k", "b")),
            Outcome::Stale { last_seq: 3 }
        );
        assert_eq!(
            log.apply(stamp(1, 1, 0), put("k", "a")),
            Outcome::Stale { last_seq: 3 }
        );
        assert_eq!(value(&log.map, "k").as_deref(), Some("c"));
    }

    #[test]
    fn an_unknown_session_opens_only_with_the_first_seq() {
        let mut log = Log::new();
        assert_eq!(
            log.apply(stamp(1, 2, 0), put("k", "a")),
            Outcome::UnknownSession
        );
        assert_eq!(value(&log.map, "k"), None);
        assert_eq!(log.sessions.len(), 0);
        assert_eq!(
            log.apply(stamp(1, 1, 0), put("k", "a")),
            Outcome::Applied(vec![1])
        );
        assert_eq!(log.sessions.len(), 1);
    }

    #[test]
    fn past_the_limit_the_least_recently_used_session_is_evicted() {
        let mut log = Log::new();
        for client in 0..MAX_SESSIONS as u64 {
            log.apply(stamp(client, 1, 0), put("k", "v"));
        }
        assert_eq!(log.sessions.len(), MAX_SESSIONS);
        // Client 0 retries: used last now; client 1 is the least recent.
        assert!(matches!(
            log.apply(stamp(0, 1, 0), put("k", "v")),
            Outcome::Replayed(_)
        ));
        log.apply(stamp(u64::MAX, 1, 0), put("k", "new"));
        assert_eq!(log.sessions.len(), MAX_SESSIONS);
        assert_eq!(log.sessions.housekeeping().evicted, 1);
        assert_eq!(
            log.apply(stamp(1, 2, 0), put("k", "x")),
            Outcome::UnknownSession,
            "client 1 was evicted"
        );
        assert_eq!(
            log.apply(stamp(0, 2, 0), put("k", "y")),
            Outcome::Applied(vec![1])
        );
        assert_eq!(
            log.apply(stamp(2, 2, 0), put("k", "z")),
            Outcome::Applied(vec![1])
        );
        assert_eq!(value(&log.map, "k").as_deref(), Some("z"));
    }

    #[test]
    fn sessions_expire_by_the_clock_the_log_carries() {
        let t0 = 1_700_000_000_000;
        let mut log = Log::new();
        log.apply(stamp(1, 1, t0), put("a", "1"));
        log.apply(stamp(2, 1, t0 + 10), put("b", "1"));
        // A stamp from a leader whose clock is behind does not move the
        // clock back.
        log.apply(stamp(3, 1, t0 + SESSION_TTL_MS - 1), put("c", "1"));
        log.apply(stamp(3, 2, t0), put("c", "2"));
        assert_eq!(log.sessions.clock_ms, t0 + SESSION_TTL_MS - 1);
        assert_eq!(log.sessions.len(), 3, "nobody idle for the TTL yet");
        // One more millisecond: client 1 has been idle for the TTL.
        log.apply(stamp(3, 3, t0 + SESSION_TTL_MS), put("c", "3"));
        assert_eq!(log.sessions.len(), 2);
        assert_eq!(log.sessions.housekeeping().expired, 1);
        assert_eq!(
            log.apply(stamp(1, 2, t0 + SESSION_TTL_MS), put("a", "2")),
            Outcome::UnknownSession
        );
        assert_eq!(value(&log.map, "a").as_deref(), Some("1"));
        // Client 2 is still there, and its retry is still answered.
        assert!(matches!(
            log.apply(stamp(2, 1, t0 + SESSION_TTL_MS), put("b", "1")),
            Outcome::Replayed(_)
        ));
        // Far later, everything idle goes at once.
        log.apply(stamp(9, 1, t0 + 3 * SESSION_TTL_MS), put("z", "1"));
        assert_eq!(log.sessions.len(), 1);
    }

    #[test]
    fn sessions_round_trip_through_a_snapshot_and_still_dedupe() {
        let mut log = Log::new();
        log.apply(stamp(5, 1, 100), put("k", "a"));
        log.apply(stamp(3, 1, 200), put("j", "b"));
        log.apply(stamp(5, 2, 300), Command::Delete { key: b"j".to_vec() });
        let files = snapshot_files(&log.map, &log.sessions);
        let (map, sessions) = load_snapshot(files.clone()).unwrap();
        assert_eq!(map, log.map);
        assert_eq!(sessions, log.sessions);
        assert_eq!(snapshot_files(&map, &sessions), files, "same bytes again");
        // A replica that loaded the snapshot answers the retry from cache.
        let mut other = Log {
            map,
            sessions,
            index: log.index,
        };
        let retry = other.apply(stamp(5, 2, 400), Command::Delete { key: b"j".to_vec() });
        assert_eq!(
            retry,
            Outcome::Replayed(CachedReply {
                index: 3,
                term: 7,
                result: vec![1]
            })
        );
        assert_eq!(
            other.apply(stamp(3, 1, 400), put("j", "b")),
            Outcome::Replayed(CachedReply {
                index: 2,
                term: 7,
                result: vec![1]
            })
        );
        assert_eq!(value(&other.map, "j"), None);

        let bytes = log.sessions.encode();
        for cut in 0..bytes.len() {
            assert!(Sessions::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Sessions::decode(&longer).is_err());
        let mut newer = bytes.clone();
        newer[0] = SESSIONS_FORMAT + 1;
        let e = Sessions::decode(&newer).unwrap_err();
        assert!(e.contains("format 2"), "{e}");
    }

    #[test]
    fn a_snapshot_from_before_sessions_loads_with_none() {
        let mut m = KvMap::new();
        m.insert(b"k".to_vec(), b"v".to_vec());
        let old = vec![(SNAPSHOT_FILE.to_string(), encode_map(&m))];
        let (map, sessions) = load_snapshot(old).unwrap();
        assert_eq!(map, m);
        assert_eq!(sessions, Sessions::default());
        let e = load_snapshot(vec![(
            SESSIONS_FILE.to_string(),
            Sessions::default().encode(),
        )])
        .unwrap_err();
        assert!(e.contains("no file named \"kv\""), "{e}");
    }

    #[test]
    fn a_sessions_file_this_node_would_not_write_is_refused() {
        let mut log = Log::new();
        log.apply(stamp(1, 1, 100), put("k", "a"));
        log.apply(stamp(2, 1, 200), put("k", "b"));
        let good = log.sessions.encode();
        // Two clients swapped: out of order.
        let rec = (good.len() - 17) / 2;
        let (head, recs) = good.split_at(17);
        let mut swapped = head.to_vec();
        swapped.extend_from_slice(&recs[rec..]);
        swapped.extend_from_slice(&recs[..rec]);
        assert!(Sessions::decode(&swapped)
            .unwrap_err()
            .contains("out of order"));
        // A last use after the clock.
        let mut late = good.clone();
        late[1..9].copy_from_slice(&50u64.to_le_bytes());
        assert!(Sessions::decode(&late)
            .unwrap_err()
            .contains("after the clock"));
        // More sessions than the limit.
        let mut many = good.clone();
        many[9..17].copy_from_slice(&(MAX_SESSIONS as u64 + 1).to_le_bytes());
        assert!(Sessions::decode(&many)
            .unwrap_err()
            .contains("above the limit"));
    }
}
