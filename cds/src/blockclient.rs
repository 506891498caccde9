//! The data path's client: pipelined connections to BlockServers, and a
//! group client that finds a group's leader and retries.
//!
//! [`Conn`] is one authenticated connection; any number of requests may
//! be in flight on it, each answered when it completes. [`GroupClient`]
//! sends each request to the replica it believes leads the group,
//! follows `NotLeader` answers, and retries with backoff on other
//! replicas when one is unreachable or unavailable, within a deadline.
//! Its errors say what a caller can do about them ([`IoError`]).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Mutex as AsyncMutex, Semaphore};

use crate::blockgroup::command::Applied;
use crate::blockserver::limits::READ_BUFFER_BYTES;
use crate::engine::{Outcome, ReadAt, Refusal, Step};
use crate::master::api::ClusterView;
use crate::master::client::MasterClient;
use crate::wire::{
    read_response, write_frames, Outgoing, Request, Response, VersionRow, WireError,
};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// First and largest pause between retries.
const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Requests, and bytes of them, queued on one connection for its writer.
const MAX_QUEUED_REQUESTS: usize = 256;
const MAX_QUEUED_BYTES: usize = 64 << 20;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Response>>>>;

/// One authenticated, pipelined connection to a BlockServer.
#[derive(Clone)]
pub struct Conn {
    /// Requests for the writer task, which holds the write half.
    writer: mpsc::Sender<Outgoing>,
    /// Bytes of requests queued for the writer and not yet written.
    queued_bytes: Arc<Semaphore>,
    pending: Pending,
    next: Arc<std::sync::atomic::AtomicU64>,
    /// Set by the reader when the connection ends (before it fails the
    /// waiters): a call made after that must not wait for an answer.
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").finish_non_exhaustive()
    }
}

impl Conn {
    /// Connects to `addr` and presents the cluster's id and token.
    pub async fn connect(
        addr: SocketAddr,
        cluster_id: u64,
        token: &str,
    ) -> Result<Conn, WireError> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| WireError::Io(std::io::ErrorKind::TimedOut.into()))??;
        let _ = stream.set_nodelay(true);
        let (rd, mut wr) = stream.into_split();
        let mut rd = tokio::io::BufReader::with_capacity(READ_BUFFER_BYTES, rd);
        let hello = Request::Hello {
            cluster_id,
            token: token.to_string(),
        };
        crate::wire::write_frame(&mut wr, &hello.encode(0)).await?;
        match tokio::time::timeout(CONNECT_TIMEOUT, read_response(&mut rd)).await {
            Ok(Ok((_, Response::Welcome))) => {}
            Ok(Ok((_, other))) => return Err(WireError::Bad(format!("refused: {other:?}"))),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(WireError::Io(std::io::ErrorKind::TimedOut.into())),
        }
        let pending: Pending = Arc::default();
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // The connection ended: every waiter learns it (its sender drops),
        // and later calls see `closed`.
        let end = |p: &Pending, c: &std::sync::atomic::AtomicBool| {
            c.store(true, std::sync::atomic::Ordering::SeqCst);
            p.lock().unwrap_or_else(|e| e.into_inner()).clear();
        };
        let (p, c) = (pending.clone(), closed.clone());
        tokio::spawn(async move {
            while let Ok((id, resp)) = read_response(&mut rd).await {
                let waiter = p.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                if let Some(w) = waiter {
                    let _ = w.send(resp);
                }
            }
            end(&p, &c);
        });
        // One writer gathers the requests of concurrent callers into as
        // few writes as it can.
        let (tx, mut rx) = mpsc::channel::<Outgoing>(MAX_QUEUED_REQUESTS);
        let (p, c) = (pending.clone(), closed.clone());
        tokio::spawn(async move {
            let _ = write_frames(&mut wr, &mut rx, None).await;
            end(&p, &c);
        });
        Ok(Conn {
            writer: tx,
            queued_bytes: Arc::new(Semaphore::new(MAX_QUEUED_BYTES)),
            pending,
            next: Arc::new(1.into()),
            closed,
        })
    }

    /// Sends `req` and waits for its answer (`None`: the connection
    /// ended first, or had ended already).
    pub async fn call(&self, req: &Request) -> Option<Response> {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            return None;
        }
        let frame = req.encode(id);
        let want = frame.len().clamp(1, MAX_QUEUED_BYTES) as u32;
        let sent = match self.queued_bytes.clone().acquire_many_owned(want).await {
            Ok(held) => self
                .writer
                .send(Outgoing {
                    frame,
                    held: vec![held],
                })
                .await
                .is_ok(),
            Err(_) => false,
        };
        if !sent {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            return None;
        }
        rx.await.ok()
    }
}

/// What an IO through [`GroupClient`] came to, when it did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IoError {
    /// The group refused the request itself (out of range, misaligned,
    /// no such version); retrying will not help.
    #[error("refused: {0}")]
    Refused(Refusal),
    /// The volume was opened by a newer writer: this one must stop.
    #[error("fenced: volume {volume} is open at epoch {current}, this writer has {epoch}")]
    Fenced {
        volume: u64,
        epoch: u64,
        current: u64,
    },
    /// No replica could serve it before the deadline. For a write the
    /// outcome is unknown: it may have been applied.
    #[error("timed out after {0:?} (for a write, the outcome is unknown): {1}")]
    TimedOut(Duration, String),
    /// The servers answered something this client cannot use.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// Sends a group's requests to its leader, wherever it is.
#[derive(Debug)]
pub struct GroupClient {
    cluster_id: u64,
    token: String,
    /// Every server's data address, by node id.
    servers: Mutex<BTreeMap<u64, SocketAddr>>,
    conns: AsyncMutex<BTreeMap<u64, Conn>>,
    /// The node believed to lead each group.
    leaders: Mutex<BTreeMap<u64, u64>>,
    deadline: Duration,
    /// Where the layout comes from again when a group moved (its replicas
    /// changed since the caller learned them), and what it said last.
    master: Option<Arc<MasterClient>>,
    routes: Mutex<Routes>,
}

/// The groups' replicas as last learned from the Master (they override
/// what a caller passes), and when.
#[derive(Debug, Default)]
struct Routes {
    replicas: BTreeMap<u64, Vec<u64>>,
    at: Option<Instant>,
}

/// The least time between two asks for the layout (every request of a
/// moved group would ask otherwise).
const REFRESH_EVERY: Duration = Duration::from_millis(500);

impl GroupClient {
    /// A client of the servers at `servers` (node id to data address)
    /// that gives each request `deadline` to succeed.
    pub fn new(
        cluster_id: u64,
        token: &str,
        servers: BTreeMap<u64, SocketAddr>,
        deadline: Duration,
    ) -> Self {
        GroupClient {
            cluster_id,
            token: token.to_string(),
            servers: Mutex::new(servers),
            conns: AsyncMutex::new(BTreeMap::new()),
            leaders: Mutex::new(BTreeMap::new()),
            deadline,
            master: None,
            routes: Mutex::default(),
        }
    }

    /// Lets the client ask `master` for the cluster's layout when a
    /// group's known replicas cannot serve it: a group whose replicas moved
    /// (a repair, a drain, a balance) is found where it went, on servers
    /// that joined after this client started too.
    pub fn with_master(mut self, master: Arc<MasterClient>) -> Self {
        self.master = Some(master);
        self
    }

    /// The replicas to try for `group`: the latest learned, else `hint`.
    fn replicas_of(&self, group: u64, hint: &[u64]) -> Vec<u64> {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replicas
            .get(&group)
            .cloned()
            .unwrap_or_else(|| hint.to_vec())
    }

    /// Asks the Master for the layout again, at most once per
    /// [`REFRESH_EVERY`] over all callers; a failure leaves what was known.
    async fn refresh(&self) {
        let Some(master) = self.master.clone() else {
            return;
        };
        {
            let mut r = self.routes.lock().unwrap_or_else(|e| e.into_inner());
            if r.at.is_some_and(|t| t.elapsed() < REFRESH_EVERY) {
                return;
            }
            r.at = Some(Instant::now());
        }
        let view =
            tokio::task::spawn_blocking(move || master.get::<ClusterView>("/v1/cluster")).await;
        let Ok(Ok(view)) = view else {
            return;
        };
        {
            let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
            for s in &view.servers {
                if let Ok(a) = s.data_addr.parse::<SocketAddr>() {
                    servers.insert(s.id, a);
                }
            }
        }
        let mut r = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        r.replicas = view
            .groups
            .iter()
            .map(|g| (g.id, g.replicas.clone()))
            .collect();
    }

    async fn conn(&self, node: u64) -> Option<Conn> {
        let mut conns = self.conns.lock().await;
        if let Some(c) = conns.get(&node) {
            return Some(c.clone());
        }
        let addr = *self
            .servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&node)?;
        let c = Conn::connect(addr, self.cluster_id, &self.token)
            .await
            .ok()?;
        conns.insert(node, c.clone());
        Some(c)
    }

    async fn forget(&self, node: u64) {
        self.conns.lock().await.remove(&node);
    }

    /// Sends `req` for `group` (whose replicas are `replicas`) to its
    /// leader, following redirects and retrying within the deadline.
    async fn send(&self, group: u64, hint: &[u64], req: &Request) -> Result<Response, IoError> {
        let mut replicas = self.replicas_of(group, hint);
        if replicas.is_empty() {
            return Err(IoError::Protocol(format!("group {group} has no replicas")));
        }
        let start = Instant::now();
        let mut backoff = BACKOFF_MIN;
        let mut turn = 0usize;
        loop {
            // Every known replica tried without success, or a leader named
            // that is not among them: the group may have moved.
            if turn > 0 && turn.is_multiple_of(replicas.len()) {
                self.refresh().await;
                replicas = self.replicas_of(group, hint);
                if replicas.is_empty() {
                    return Err(IoError::Protocol(format!("group {group} has no replicas")));
                }
            }
            let cached = self
                .leaders
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&group)
                .copied();
            let node = cached.unwrap_or_else(|| replicas[turn % replicas.len()]);
            let left = self.deadline.saturating_sub(start.elapsed());
            let answer = match self.conn(node).await {
                // No answer in the time left counts as none.
                Some(c) => tokio::time::timeout(left, c.call(req)).await.ok().flatten(),
                None => None,
            };
            // Whether to try at once (a redirect to a new leader) or after
            // a pause.
            let (why, at_once) = match answer {
                Some(Response::NotLeader { leader })
                    if leader != 0 && !replicas.contains(&leader) && self.master.is_some() =>
                {
                    self.refresh().await;
                    replicas = self.replicas_of(group, hint);
                    if replicas.contains(&leader) {
                        self.leaders
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(group, leader);
                        (format!("node {node} is not the leader"), true)
                    } else {
                        turn += 1;
                        (
                            format!("node {node} names leader {leader}, not a replica known"),
                            false,
                        )
                    }
                }
                Some(Response::NotLeader { leader })
                    if leader != 0 && replicas.contains(&leader) =>
                {
                    self.leaders
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(group, leader);
                    // Told the leader we already tried: it has not taken
                    // over yet.
                    (
                        format!("node {node} is not the leader"),
                        cached != Some(leader),
                    )
                }
                None => {
                    self.forget(node).await;
                    self.leaders
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&group);
                    turn += 1;
                    (format!("node {node} unreachable"), false)
                }
                Some(
                    r @ (Response::NotLeader { .. } | Response::NoGroup | Response::Unavailable(_)),
                ) => {
                    self.leaders
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&group);
                    turn += 1;
                    (format!("node {node}: {r:?}"), false)
                }
                Some(other) => return Ok(other),
            };
            if start.elapsed() + backoff > self.deadline {
                return Err(IoError::TimedOut(self.deadline, why));
            }
            if !at_once {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }

    /// Writes `data` (whole 4 KiB sectors) at `offset` of a block held by
    /// `group`, as the writer `tag` says. A group whose head version is
    /// newer refuses it ([`Refusal::Stale`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn write(
        &self,
        group: u64,
        replicas: &[u64],
        volume: u64,
        block: u64,
        offset: u64,
        tag: WriterTag,
        data: Bytes,
    ) -> Result<(), IoError> {
        let req = Request::Write {
            group,
            volume,
            block,
            offset,
            epoch: tag.epoch,
            head: tag.head,
            base: tag.base,
            data,
        };
        match self.send(group, replicas, &req).await? {
            Response::Applied(Applied::Done(Outcome::Written)) => Ok(()),
            other => Err(applied_error(other)),
        }
    }

    /// Zeroes `len` bytes (whole sectors) at `offset` of a block held by
    /// `group`, as the writer `tag` says.
    #[allow(clippy::too_many_arguments)]
    pub async fn zero(
        &self,
        group: u64,
        replicas: &[u64],
        volume: u64,
        block: u64,
        offset: u64,
        len: u64,
        tag: WriterTag,
    ) -> Result<(), IoError> {
        let req = Request::Zero {
            group,
            volume,
            block,
            offset,
            len,
            epoch: tag.epoch,
            head: tag.head,
            base: tag.base,
        };
        match self.send(group, replicas, &req).await? {
            Response::Applied(Applied::Done(Outcome::Zeroed)) => Ok(()),
            other => Err(applied_error(other)),
        }
    }

    /// Makes `epoch` the writer epoch of `volume` on `group` (refused,
    /// `Fenced`, if a newer writer got there first).
    pub async fn fence(
        &self,
        group: u64,
        replicas: &[u64],
        volume: u64,
        epoch: u64,
    ) -> Result<(), IoError> {
        let req = Request::Fence {
            group,
            volume,
            epoch,
        };
        match self.send(group, replicas, &req).await? {
            Response::Applied(Applied::Done(Outcome::Fenced)) => Ok(()),
            other => Err(applied_error(other)),
        }
    }

    /// Reads `len` bytes at `offset` of a block held by `group`, as `at`
    /// says.
    #[allow(clippy::too_many_arguments)]
    pub async fn read(
        &self,
        group: u64,
        replicas: &[u64],
        volume: u64,
        block: u64,
        offset: u64,
        len: u64,
        at: ReadAt,
    ) -> Result<Bytes, IoError> {
        let (version, head, base) = match at {
            ReadAt::Head => (0, 0, 0),
            ReadAt::Tagged { head, base } => (0, head, base),
            ReadAt::Version(v) => (v, 0, 0),
        };
        let req = Request::Read {
            group,
            volume,
            block,
            offset,
            len,
            version,
            head,
            base,
        };
        match self.send(group, replicas, &req).await? {
            Response::Data(d) if d.len() as u64 == len => Ok(d),
            Response::Data(d) => Err(IoError::Protocol(format!(
                "{} bytes for a read of {len}",
                d.len()
            ))),
            other => Err(applied_error(other)),
        }
    }
}

impl GroupClient {
    /// Moves `volume`'s head version on `group` to `head` (based on
    /// `base`): a SnapshotWorker's snapshot or rollback step. Idempotent.
    pub async fn advance(
        &self,
        group: u64,
        replicas: &[u64],
        volume: u64,
        head: u64,
        base: u64,
    ) -> Result<Step, IoError> {
        let req = Request::Advance {
            group,
            volume,
            head,
            base,
        };
        match self.send(group, replicas, &req).await? {
            Response::Applied(Applied::Done(Outcome::Advanced { step, .. })) => Ok(step),
            other => Err(applied_error(other)),
        }
    }

    /// Drops retained version `version` of `volume` on `group`
    /// (idempotent: a version already gone is fine).
    pub async fn drop_version(
        &self,
        group: u64,
        replicas: &[u64],
        volume: u64,
        version: u64,
    ) -> Result<(), IoError> {
        let req = Request::DropVersion {
            group,
            volume,
            version,
        };
        match self.send(group, replicas, &req).await? {
            Response::Applied(Applied::Done(Outcome::Dropped { .. } | Outcome::Skipped)) => Ok(()),
            Response::Applied(Applied::Refused(Refusal::NotRetained(_))) => Ok(()),
            other => Err(applied_error(other)),
        }
    }

    /// Makes `volume` a clone of `from` at `version` on `group`
    /// (idempotent).
    pub async fn clone_volume(
        &self,
        group: u64,
        replicas: &[u64],
        volume: u64,
        from: u64,
        version: u64,
    ) -> Result<(), IoError> {
        let req = Request::Clone {
            group,
            volume,
            from,
            version,
        };
        match self.send(group, replicas, &req).await? {
            Response::Applied(Applied::Done(Outcome::Cloned | Outcome::Skipped)) => Ok(()),
            other => Err(applied_error(other)),
        }
    }

    /// `volume`'s versions on `group`, from its leader.
    pub async fn versions(
        &self,
        group: u64,
        replicas: &[u64],
        volume: u64,
    ) -> Result<Vec<VersionRow>, IoError> {
        match self
            .send(group, replicas, &Request::Versions { group, volume })
            .await?
        {
            Response::Versions(rows) => Ok(rows),
            other => Err(applied_error(other)),
        }
    }
}

/// What a writer sends with each write: its epoch (fencing) and the head
/// version it writes at, with that version's base (snapshots).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterTag {
    pub epoch: u64,
    pub head: u64,
    pub base: u64,
}

/// The error for an answer that is not the success expected.
fn applied_error(r: Response) -> IoError {
    match r {
        Response::Applied(Applied::Refused(Refusal::Fenced {
            volume,
            epoch,
            current,
        })) => IoError::Fenced {
            volume,
            epoch,
            current,
        },
        Response::Applied(Applied::Refused(r)) => IoError::Refused(r),
        other => IoError::Protocol(format!("unexpected answer {other:?}")),
    }
}
