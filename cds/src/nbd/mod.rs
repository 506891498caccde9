//! CDS volumes over NBD, for the block tools people already use
//! (`qemu-img`, `qemu-io`, `nbdcopy`, `nbdinfo`, `fio --ioengine=nbd`).
//!
//! One [`NbdServer`] serves one or more volumes, each under an export
//! name, on one TCP listener (loopback unless told otherwise). It is a
//! client of the cluster: each export is a [`crate::volume::Volume`]
//! opened for writing, which takes the volume's epoch and so fences any
//! earlier writer; a later opener fences this one (its writes then fail
//! `EPERM`).
//!
//! The protocol: the fixed newstyle handshake with `NBD_OPT_GO`,
//! `NBD_OPT_INFO` (block sizes: minimum 1, preferred 4096, maximum
//! [`limits::MAX_PAYLOAD`]), `NBD_OPT_LIST`, `NBD_OPT_ABORT`,
//! `NBD_OPT_EXPORT_NAME`, `NBD_OPT_STRUCTURED_REPLY` and the meta context
//! options for `base:allocation` ([`handshake`]); then READ, WRITE (FUA),
//! FLUSH, TRIM, WRITE_ZEROES, BLOCK_STATUS and DISC, many in flight,
//! answered out of order ([`transmission`], which states what an answer
//! promises). The bytes on the wire are built and parsed in [`proto`].

pub mod export;
pub mod handshake;
pub mod limits;
pub mod proto;
pub mod transmission;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

pub use export::Export;
use handshake::{handshake, Exports, Handshake};
use limits::{HANDSHAKE_TIMEOUT, MAX_BYTES_IN_FLIGHT, MAX_CONNECTIONS};

/// What a server did since it started.
#[derive(Debug, Default)]
pub struct NbdStats {
    pub sessions: AtomicU64,
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub zeroes: AtomicU64,
    pub flushes: AtomicU64,
    /// Requests answered with an error.
    pub errors: AtomicU64,
    /// Connections ended for breaking the protocol.
    pub protocol_errors: AtomicU64,
}

impl NbdStats {
    fn count(&self, kind: u16, ok: bool) {
        let c = match kind {
            proto::CMD_READ => &self.reads,
            proto::CMD_WRITE => &self.writes,
            proto::CMD_TRIM | proto::CMD_WRITE_ZEROES => &self.zeroes,
            proto::CMD_FLUSH => &self.flushes,
            _ => &self.errors,
        };
        c.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A running NBD server; stops when [`NbdServer::shutdown`] is called.
#[derive(Debug)]
pub struct NbdServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    stats: Arc<NbdStats>,
    task: tokio::task::JoinHandle<()>,
}

impl NbdServer {
    /// Serves `exports` on `listener` (the first export is also the
    /// default, empty-named one). Binding is the caller's, so it can fail
    /// before the volumes are opened.
    pub fn start(listener: TcpListener, exports: Vec<Export>) -> std::io::Result<NbdServer> {
        let addr = listener.local_addr()?;
        let (stop, _) = watch::channel(false);
        let stats = Arc::new(NbdStats::default());
        let exports = Arc::new(Exports {
            list: exports.into_iter().map(Arc::new).collect(),
        });
        let task = tokio::spawn(accept(listener, exports, stop.subscribe(), stats.clone()));
        Ok(NbdServer {
            addr,
            stop,
            stats,
            task,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> &NbdStats {
        &self.stats
    }

    /// Stops accepting, ends every session after its requests in flight
    /// are answered, and returns once the listener is closed.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn accept(
    listener: TcpListener,
    exports: Arc<Exports>,
    mut stop: watch::Receiver<bool>,
    stats: Arc<NbdStats>,
) {
    let conns = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let bytes = Arc::new(Semaphore::new(MAX_BYTES_IN_FLIGHT));
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = conns.clone().acquire_owned() => p,
            _ = stop.wait_for(|s| *s) => break,
        };
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        let Ok((stream, _)) = accepted else {
            // Out of descriptors, say: wait a little instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (exports, bytes, stats, stop) =
            (exports.clone(), bytes.clone(), stats.clone(), stop.clone());
        sessions.spawn(async move {
            session(stream, &exports, bytes, stats, stop).await;
            drop(permit);
        });
        // Reap finished sessions so the set stays small.
        while sessions.try_join_next().is_some() {}
    }
    drop(listener);
    while sessions.join_next().await.is_some() {}
}

async fn session(
    mut stream: tokio::net::TcpStream,
    exports: &Exports,
    bytes: Arc<Semaphore>,
    stats: Arc<NbdStats>,
    stop: watch::Receiver<bool>,
) {
    let (export, negotiated) =
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut stream, exports)).await {
            Ok(Ok(Handshake::Go(e, s))) => (e, s),
            Ok(Ok(Handshake::Ended)) => return,
            Ok(Err(handshake::HandshakeError::Protocol(_))) | Err(_) => {
                stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(Err(_)) => return,
        };
    stats.sessions.fetch_add(1, Ordering::Relaxed);
    let (rd, wr) = stream.into_split();
    let rd = tokio::io::BufReader::with_capacity(crate::blockserver::limits::READ_BUFFER_BYTES, rd);
    let end = transmission::serve(rd, wr, export, negotiated, bytes, stats.clone(), stop).await;
    if let transmission::End::Protocol(_) = end {
        stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
    }
}
