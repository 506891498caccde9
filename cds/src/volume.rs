//! The volume client: what `cdsctl volume` and the tests use (and the NBD
//! export of the next issue will use) to read and write a volume.
//!
//! A volume's byte range is cut into blocks (the volume's block size);
//! the Master's block map says which BlockGroup holds each block, and
//! the cluster view which servers hold each group's replicas. An IO is
//! split at block boundaries (and into pieces of at most
//! [`MAX_PIECE_BYTES`]), each piece is sent to its group's leader
//! ([`GroupClient`]: redirects followed, retries with backoff within the
//! deadline), and the pieces run at once.
//!
//! Blocks are allocated lazily: a block is given a group on its first
//! write (one Master call for all the new blocks of a request), and a
//! block never written reads as zeros without a network round trip. A
//! 10 GiB volume costs nothing until it is written, and the Master's map
//! grows with the data, not with the volume's size.
//!
//! Opening a volume for writing bumps its epoch at the Master and tells
//! every BlockGroup the new epoch (a `Fence` entry) before the open
//! returns; every write carries it, and the BlockGroups refuse a write of
//! an older epoch than one they have seen: a writer superseded by a later
//! open is fenced ([`VolumeError::Fenced`]) on every group at once and
//! must stop.
//!
//! Every write also carries the volume's head version as this client
//! last learned it (from the Master, or from a group that refused a write
//! as stale). A snapshot or rollback moves the head; a group that has
//! moved refuses an older tag and says where the head is, and the piece
//! is sent again at that head. That makes a snapshot a crash-consistent
//! cut (see `master/snapshot.rs` and the book's snapshot chapter). A
//! volume opened at a snapshot ([`Volume::open_snapshot`]) reads that
//! version and cannot be written.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::blockclient::{GroupClient, IoError, WriterTag};
use crate::engine::{ReadAt, Refusal, SECTOR};
use crate::master::api::{Allocate, ClusterView};
use crate::master::client::{MasterCallError, MasterClient};
use crate::master::Volume as VolumeMeta;

/// The largest piece of an IO sent as one request (one Raft entry).
pub const MAX_PIECE_BYTES: u64 = 1 << 20;
/// How many times a piece is sent again at a newer head version before
/// the IO fails (the head moves once per snapshot or rollback, and those
/// are one at a time per volume: two is enough; more is a bug).
const MAX_VERSION_RETRIES: usize = 8;

/// How a volume is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Reads only; no epoch taken, no writer fenced.
    Read,
    /// Reads and writes, as the volume's one writer (fences earlier ones).
    Write,
}

/// What an IO on a volume came to, when it did not succeed: each says
/// what a caller can do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeError {
    #[error("no volume named {0:?}")]
    NotFound(String),
    #[error("{len} bytes at offset {offset} run past the end of the volume ({size} bytes)")]
    OutOfRange { offset: u64, len: u64, size: u64 },
    #[error("offset {offset} and length {len} must be multiples of {SECTOR} bytes")]
    Misaligned { offset: u64, len: u64 },
    #[error("the volume was opened read-only")]
    ReadOnly,
    /// A later open took the volume: this writer must stop.
    #[error("fenced: the volume was opened again (epoch {current}, this writer has {epoch})")]
    Fenced { epoch: u64, current: u64 },
    /// No replica answered before the deadline; a write may or may not
    /// have been applied.
    #[error("timed out (a write's outcome is unknown): {0}")]
    TimedOut(String),
    /// A BlockGroup refused the request.
    #[error("refused by the block group: {0}")]
    Refused(String),
    #[error("Master: {0}")]
    Master(MasterCallError),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("volume {volume:?} has no ready snapshot {snapshot:?}")]
    NoSnapshot { volume: String, snapshot: String },
}

impl From<MasterCallError> for VolumeError {
    fn from(e: MasterCallError) -> Self {
        VolumeError::Master(e)
    }
}

impl From<IoError> for VolumeError {
    fn from(e: IoError) -> Self {
        match e {
            IoError::Fenced { epoch, current, .. } => VolumeError::Fenced { epoch, current },
            IoError::TimedOut(d, why) => VolumeError::TimedOut(format!("after {d:?}: {why}")),
            IoError::Refused(r) => VolumeError::Refused(r.to_string()),
            IoError::Protocol(p) => VolumeError::Protocol(p),
        }
    }
}

/// How to reach a cluster: its Masters and its data-path credentials.
#[derive(Debug, Clone)]
pub struct ClusterAccess {
    pub master: Arc<MasterClient>,
    pub cluster_id: u64,
    pub token: String,
    /// What each IO piece gets to succeed.
    pub io_deadline: Duration,
}

/// Waits for every piece of an IO; the first failure is the IO's (the
/// others still run to their end, so nothing is left half-sent).
async fn first_error(
    mut set: tokio::task::JoinSet<Result<(), IoError>>,
) -> Result<(), VolumeError> {
    let mut first_err = None;
    while let Some(r) = set.join_next().await {
        let r = r.unwrap_or_else(|e| Err(IoError::Protocol(format!("task failed: {e}"))));
        if let Err(e) = r {
            first_err.get_or_insert(VolumeError::from(e));
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Calls the Master off the async threads (its client blocks).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, MasterCallError> + Send + 'static,
) -> Result<T, MasterCallError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(MasterCallError::Protocol(format!("task failed: {e}"))))
}

/// A data-path client of the cluster as the Master describes it now, and
/// every group's replicas (group id to server ids).
pub async fn data_client(
    access: &ClusterAccess,
) -> Result<(GroupClient, BTreeMap<u64, Vec<u64>>), VolumeError> {
    let m = access.master.clone();
    let view: ClusterView = blocking(move || m.get("/v1/cluster")).await?;
    let mut servers = BTreeMap::new();
    for s in &view.servers {
        let addr: SocketAddr = s.data_addr.parse().map_err(|e| {
            VolumeError::Protocol(format!("server {} address {:?}: {e}", s.id, s.data_addr))
        })?;
        servers.insert(s.id, addr);
    }
    let data = GroupClient::new(
        access.cluster_id,
        &access.token,
        servers,
        access.io_deadline,
    )
    .with_master(access.master.clone());
    let groups = view
        .groups
        .iter()
        .map(|g| (g.id, g.replicas.clone()))
        .collect();
    Ok((data, groups))
}

/// Slots (slices of the engine's slice size) held by each version of
/// volume `volume_id`, summed over every group of the cluster: the space
/// each version holds that no older version shares.
pub async fn version_slots(
    access: &ClusterAccess,
    volume_id: u64,
) -> Result<BTreeMap<u64, u64>, VolumeError> {
    let (data, groups) = data_client(access).await?;
    let data = Arc::new(data);
    let mut set = tokio::task::JoinSet::new();
    for (g, replicas) in groups {
        let data = data.clone();
        set.spawn(async move { data.versions(g, &replicas, volume_id).await });
    }
    let mut out: BTreeMap<u64, u64> = BTreeMap::new();
    while let Some(r) = set.join_next().await {
        let rows = r.map_err(|e| VolumeError::Protocol(format!("task failed: {e}")))??;
        for row in rows {
            *out.entry(row.version).or_default() += row.slots;
        }
    }
    Ok(out)
}

struct Inner {
    access: ClusterAccess,
    data: GroupClient,
    /// Group to its replicas' server ids.
    groups: BTreeMap<u64, Vec<u64>>,
    meta: Mutex<VolumeMeta>,
    mode: Mode,
    /// The epoch this opener holds (0 when read-only).
    epoch: u64,
    /// The head version (and its base) as last learned.
    head: Mutex<(u64, u64)>,
    /// Opened at a snapshot: the version every read sees.
    snapshot: Option<u64>,
}

/// An open volume; cheap to clone, usable from many tasks at once.
#[derive(Clone)]
pub struct Volume {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.meta();
        f.debug_struct("Volume")
            .field("name", &m.name)
            .field("epoch", &self.inner.epoch)
            .finish_non_exhaustive()
    }
}

/// One piece of an IO: within one block.
#[derive(Debug, Clone, Copy)]
struct Piece {
    block: u64,
    /// Offset within the block.
    at: u64,
    len: u64,
    /// Offset within the caller's buffer.
    buf: u64,
}

impl Volume {
    /// Opens volume `name`: for writing, a new epoch is taken (every
    /// earlier writer is fenced from now on).
    pub async fn open(
        access: &ClusterAccess,
        name: &str,
        mode: Mode,
    ) -> Result<Volume, VolumeError> {
        Volume::open_at(access, name, mode, None).await
    }

    /// Opens snapshot `snapshot` of volume `name`, read-only: every read
    /// sees the volume as the snapshot cut it.
    pub async fn open_snapshot(
        access: &ClusterAccess,
        name: &str,
        snapshot: &str,
    ) -> Result<Volume, VolumeError> {
        Volume::open_at(access, name, Mode::Read, Some(snapshot)).await
    }

    async fn open_at(
        access: &ClusterAccess,
        name: &str,
        mode: Mode,
        snapshot: Option<&str>,
    ) -> Result<Volume, VolumeError> {
        let m = access.master.clone();
        let path = format!("/v1/volumes/{name}");
        let meta: VolumeMeta = match mode {
            Mode::Read => blocking(move || m.get(&path)).await,
            Mode::Write => {
                blocking(move || m.post(&format!("{path}/open"), &serde_json::json!({}))).await
            }
        }
        .map_err(|e| match e.kind() {
            "no_volume" => VolumeError::NotFound(name.to_string()),
            _ => VolumeError::Master(e),
        })?;
        let (data, groups) = data_client(access).await?;
        let epoch = match mode {
            Mode::Read => 0,
            Mode::Write => meta.epoch,
        };
        let mut meta = meta;
        let snapshot = match snapshot {
            None => None,
            Some(s) => match meta.snapshots.get(s) {
                Some(snap) if snap.state == crate::master::SnapshotState::Ready => {
                    // The volume as the snapshot cut it, size included.
                    let v = snap.version;
                    meta.size = snap.size;
                    Some(v)
                }
                _ => {
                    return Err(VolumeError::NoSnapshot {
                        volume: name.to_string(),
                        snapshot: s.to_string(),
                    })
                }
            },
        };
        let head = Mutex::new((meta.head, meta.base));
        let v = Volume {
            inner: Arc::new(Inner {
                access: access.clone(),
                data,
                groups,
                meta: Mutex::new(meta),
                mode,
                epoch,
                head,
                snapshot,
            }),
        };
        if mode == Mode::Write {
            v.fence_all().await?;
        }
        Ok(v)
    }

    /// Tells every group of the cluster this writer's epoch before any IO:
    /// a stale writer is then refused everywhere at once, even on groups
    /// this writer has not written yet, and on blocks allocated later.
    /// The open fails if a group cannot be told (within the IO deadline).
    async fn fence_all(&self) -> Result<(), VolumeError> {
        let vol = self.meta().id;
        let mut set = tokio::task::JoinSet::new();
        for (&g, replicas) in &self.inner.groups {
            let (this, replicas) = (self.clone(), replicas.clone());
            set.spawn(async move {
                this.inner
                    .data
                    .fence(g, &replicas, vol, this.inner.epoch)
                    .await
            });
        }
        first_error(set).await
    }

    /// Asks the Master for the volume again (its size after a resize, its
    /// block map), keeping this opener's epoch: a writer stays the writer.
    /// Returns the size.
    pub async fn refresh(&self) -> Result<u64, VolumeError> {
        let (m, name) = (self.inner.access.master.clone(), self.meta().name);
        let path = format!("/v1/volumes/{name}");
        let meta: VolumeMeta =
            blocking(move || m.get(&path))
                .await
                .map_err(|e| match e.kind() {
                    "no_volume" => VolumeError::NotFound(self.meta().name),
                    _ => VolumeError::Master(e),
                })?;
        self.learn(meta.head, meta.base);
        let mut cur = self
            .inner
            .meta
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // A snapshot keeps the size it was taken at.
        let size = match self.inner.snapshot {
            Some(_) => cur.size,
            None => meta.size,
        };
        *cur = VolumeMeta { size, ..meta };
        Ok(size)
    }

    /// Takes `head` (based on `base`) as the volume's head version if it
    /// is newer than the one known (version numbers only grow).
    fn learn(&self, head: u64, base: u64) {
        let mut h = self
            .inner
            .head
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if head > h.0 {
            *h = (head, base);
        }
    }

    /// The head version as this client knows it, and its base.
    pub fn head_version(&self) -> (u64, u64) {
        *self
            .inner
            .head
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The snapshot version this opener reads, if it was opened at one.
    pub fn snapshot_version(&self) -> Option<u64> {
        self.inner.snapshot
    }

    /// Where this opener's reads look.
    fn read_at(&self) -> ReadAt {
        match self.inner.snapshot {
            Some(v) => ReadAt::Version(v),
            None => {
                let (head, base) = self.head_version();
                ReadAt::Tagged { head, base }
            }
        }
    }

    /// Writes (or zeroes, `data` None) one piece, sent again at the head
    /// a group names when it refuses the tag as stale.
    async fn modify_piece(
        &self,
        group: u64,
        replicas: &[u64],
        p: Piece,
        data: Option<Bytes>,
    ) -> Result<(), IoError> {
        let c = &self.inner.data;
        let vol = self.meta().id;
        for _ in 0..MAX_VERSION_RETRIES {
            let (head, base) = self.head_version();
            let tag = WriterTag {
                epoch: self.inner.epoch,
                head,
                base,
            };
            let r = match &data {
                Some(d) => {
                    c.write(group, replicas, vol, p.block, p.at, tag, d.clone())
                        .await
                }
                None => {
                    c.zero(group, replicas, vol, p.block, p.at, p.len, tag)
                        .await
                }
            };
            match r {
                Err(IoError::Refused(Refusal::Stale { head, base, .. })) => self.learn(head, base),
                other => return other,
            }
        }
        Err(IoError::Protocol(format!(
            "the volume's head version moved {MAX_VERSION_RETRIES} times during one write"
        )))
    }

    /// The volume as the Master last described it to this opener.
    pub fn meta(&self) -> VolumeMeta {
        self.inner
            .meta
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn size(&self) -> u64 {
        self.inner
            .meta
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .size
    }

    /// The epoch this writer holds (0 when read-only).
    pub fn epoch(&self) -> u64 {
        self.inner.epoch
    }

    /// Checks an IO's bounds and alignment and cuts it into pieces.
    fn pieces(&self, offset: u64, len: u64) -> Result<Vec<Piece>, VolumeError> {
        let (size, bs) = {
            let m = self
                .inner
                .meta
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            (m.size, m.block_size)
        };
        if !offset.is_multiple_of(SECTOR) || !len.is_multiple_of(SECTOR) {
            return Err(VolumeError::Misaligned { offset, len });
        }
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(VolumeError::OutOfRange { offset, len, size });
        }
        let mut out = Vec::new();
        let mut pos = offset;
        while pos < offset + len {
            let block = pos / bs;
            let at = pos % bs;
            let n = (bs - at).min(offset + len - pos).min(MAX_PIECE_BYTES);
            out.push(Piece {
                block,
                at,
                len: n,
                buf: pos - offset,
            });
            pos += n;
        }
        Ok(out)
    }

    /// The bytes from `offset` for `len` as runs of (length, allocated):
    /// a run is unallocated where its blocks have no group yet (they read
    /// as zeros, cost nothing, and a copy may skip them). As of this
    /// opener's block map: its own writes and its last [`Volume::refresh`].
    pub fn extents(&self, offset: u64, len: u64) -> Vec<(u64, bool)> {
        let m = self
            .inner
            .meta
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let end = offset.saturating_add(len).min(m.size);
        let mut out: Vec<(u64, bool)> = Vec::new();
        let mut at = offset;
        while at < end {
            let block = at / m.block_size;
            let n = ((block + 1) * m.block_size).min(end) - at;
            let allocated = m.blocks.contains_key(&block);
            match out.last_mut() {
                Some((l, a)) if *a == allocated => *l += n,
                _ => out.push((n, allocated)),
            }
            at += n;
        }
        out
    }

    /// The group of each block in `blocks`, allocating those that have
    /// none (one Master call).
    async fn place(&self, blocks: &[u64]) -> Result<BTreeMap<u64, u64>, VolumeError> {
        let missing: Vec<u64> = {
            let m = self
                .inner
                .meta
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            blocks
                .iter()
                .copied()
                .filter(|b| !m.blocks.contains_key(b))
                .collect()
        };
        if !missing.is_empty() {
            let (m, name) = (self.inner.access.master.clone(), self.meta().name);
            let meta: VolumeMeta = blocking(move || {
                m.post(
                    &format!("/v1/volumes/{name}/allocate"),
                    &Allocate { blocks: missing },
                )
            })
            .await?;
            let mut cur = self
                .inner
                .meta
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            cur.blocks = meta.blocks;
            cur.size = meta.size;
            drop(cur);
            self.learn(meta.head, meta.base);
        }
        let m = self
            .inner
            .meta
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        blocks
            .iter()
            .map(|b| {
                m.blocks
                    .get(b)
                    .map(|g| (*b, *g))
                    .ok_or_else(|| VolumeError::Protocol(format!("block {b} was not allocated")))
            })
            .collect()
    }

    fn replicas(&self, group: u64) -> Result<Vec<u64>, VolumeError> {
        self.inner.groups.get(&group).cloned().ok_or_else(|| {
            VolumeError::Protocol(format!("group {group} is not in the cluster view"))
        })
    }

    /// Writes `data` at `offset` (both whole 4 KiB sectors): acknowledged
    /// once every piece is committed by its group's majority and applied
    /// by its leader. On an error some pieces may have been written.
    pub async fn write(&self, offset: u64, data: Bytes) -> Result<(), VolumeError> {
        self.modify(offset, data.len() as u64, Some(data)).await
    }

    /// Writes zeros over `len` bytes at `offset` (whole sectors). Blocks
    /// never written are left unallocated: they read as zeros already.
    pub async fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), VolumeError> {
        self.modify(offset, len, None).await
    }

    async fn modify(&self, offset: u64, len: u64, data: Option<Bytes>) -> Result<(), VolumeError> {
        if self.inner.mode != Mode::Write {
            return Err(VolumeError::ReadOnly);
        }
        let mut pieces = self.pieces(offset, len)?;
        if data.is_none() {
            let m = self
                .inner
                .meta
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            pieces.retain(|p| m.blocks.contains_key(&p.block));
        }
        let blocks: Vec<u64> = pieces.iter().map(|p| p.block).collect();
        let groups = self.place(&blocks).await?;
        // One piece (most writes): sent from this task, no spawn.
        if let [p] = pieces[..] {
            let g = groups[&p.block];
            let replicas = self.replicas(g)?;
            return self
                .modify_piece(g, &replicas, p, data)
                .await
                .map_err(VolumeError::from);
        }
        let mut set = tokio::task::JoinSet::new();
        for p in pieces {
            let g = groups[&p.block];
            let replicas = self.replicas(g)?;
            let this = self.clone();
            let chunk = data
                .as_ref()
                .map(|d| d.slice(p.buf as usize..(p.buf + p.len) as usize));
            set.spawn(async move { this.modify_piece(g, &replicas, p, chunk).await });
        }
        first_error(set).await
    }

    /// Reads `len` bytes at `offset` (whole sectors) at the head, from
    /// each group's leader; never-written blocks read as zeros.
    pub async fn read(&self, offset: u64, len: u64) -> Result<Bytes, VolumeError> {
        let pieces = self.pieces(offset, len)?;
        let placed: Vec<(Piece, Option<u64>)> = {
            let m = self
                .inner
                .meta
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            pieces
                .into_iter()
                .map(|p| (p, m.blocks.get(&p.block).copied()))
                .collect()
        };
        let vol = self.meta().id;
        let at = self.read_at();
        // One placed piece (most reads): its bytes are the answer, read
        // on this task, with no spawn, buffer or copy.
        if let [(p, Some(g))] = placed[..] {
            if p.buf == 0 && p.len == len {
                let replicas = self.replicas(g)?;
                let d = self
                    .inner
                    .data
                    .read(g, &replicas, vol, p.block, p.at, p.len, at)
                    .await?;
                return Ok(d);
            }
        }
        let mut out = BytesMut::zeroed(len as usize);
        let mut set = tokio::task::JoinSet::new();
        for (p, g) in placed {
            let Some(g) = g else { continue };
            let replicas = self.replicas(g)?;
            let this = self.clone();
            set.spawn(async move {
                let r = this
                    .inner
                    .data
                    .read(g, &replicas, vol, p.block, p.at, p.len, at)
                    .await;
                (p, r)
            });
        }
        while let Some(r) = set.join_next().await {
            let (p, r) = r.map_err(|e| VolumeError::Protocol(format!("task failed: {e}")))?;
            let d = r?;
            out[p.buf as usize..(p.buf + p.len) as usize].copy_from_slice(&d);
        }
        Ok(out.freeze())
    }
}
