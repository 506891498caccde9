//! The HTTP server loop: accepts connections, serves each with hyper's
//! HTTP/1.1 connection driver, and bounds what a connection may hold.
//!
//! `axum::serve` accepts without limit and leaves a connection open as long
//! as its client wishes; anyone on the host could hold every file
//! descriptor or megabytes per stalled request. Here (limits in
//! [`super::limits`]):
//!
//! - at most `http_max_connections` connections are served at once; a
//!   connection past the cap is answered `503` with a JSON error and
//!   closed at once, never queued (a queue would only hang the client);
//! - a connection whose headers do not arrive within
//!   [`HEADER_READ_TIMEOUT`] is closed, and so is a keep-alive connection
//!   idle that long (hyper starts one timer for both);
//! - a write that makes no progress for [`WRITE_STALL_TIMEOUT`] (a client
//!   that stopped reading) ends its connection;
//! - bodies are read whole, within a size and a time, by the API's guard
//!   (`http::guard`), before any handler runs.
//!
//! Only HTTP/1.1 is served: every client of the node speaks it, and the
//! header timeout is an HTTP/1 setting.
//!
//! At shutdown the loop stops accepting, asks every connection to finish
//! its request in flight and close, and returns when all have.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;

use super::limits::{
    ACCEPT_ERROR_PAUSE, HEADER_READ_TIMEOUT, MAX_REFUSING, REFUSAL_DRAIN_BYTES, REFUSAL_LINGER,
    WRITE_STALL_TIMEOUT,
};

/// The whole answer to a connection past the cap.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
content-length: 63\r\n\
connection: close\r\n\
\r\n\
{\"error\":\"too many connections to this node, retry in a while\"}";

/// Serves `app` on `listener` until `stop` resolves (or its sender is
/// dropped), then lets the connections finish and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    max_connections: usize,
    node: u64,
    tls: Option<TlsAcceptor>,
    stop: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let (stopping_tx, stopping) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(stop);
    loop {
        let (stream, remote) = tokio::select! {
            () = &mut stop => break,
            // Reap finished connections as they end, so the set stays small.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait for some to be
                    // freed rather than spin.
                    eprintln!("node {node}: http: cannot accept a connection: {e}");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                conns.spawn(connection(
                    stream,
                    remote,
                    app.clone(),
                    slot,
                    stopping.clone(),
                    tls.clone(),
                ));
            }
            // Over TLS the plain 503 would read as a broken handshake:
            // the connection is just closed.
            Err(_) if tls.is_some() => drop(stream),
            Err(_) => match refusing.clone().try_acquire_owned() {
                Ok(permit) => {
                    conns.spawn(refuse(stream, permit));
                }
                // Refusals are bounded too: past that, close without a word.
                Err(_) => drop(stream),
            },
        }
    }
    let _ = stopping_tx.send(true);
    while conns.join_next().await.is_some() {}
}

/// Serves one connection while it holds `_slot`.
async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    app: Router,
    _slot: OwnedSemaphorePermit,
    stopping: watch::Receiver<bool>,
    tls: Option<TlsAcceptor>,
) {
    let _ = stream.set_nodelay(true);
    match tls {
        None => serve_connection(StallGuard::new(stream), remote, app, stopping).await,
        Some(acceptor) => {
            // The handshake is part of the request's header time: a client
            // that starts one and stalls holds its slot no longer.
            let Ok(Ok(tls)) =
                tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await
            else {
                return;
            };
            serve_connection(StallGuard::new(tls), remote, app, stopping).await;
        }
    }
}

/// HTTP/1.1 on one accepted (and, for HTTPS, handshaken) connection.
async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: StallGuard<S>,
    remote: SocketAddr,
    app: Router,
    mut stopping: watch::Receiver<bool>,
) {
    let svc = TowerToHyperService::new(app);
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(remote));
        svc.call(req)
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = async { drop(stopping.wait_for(|s| *s).await) } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.as_mut().await;
        }
    }
}

async fn refuse(mut stream: TcpStream, _permit: OwnedSemaphorePermit) {
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(REFUSAL).await?;
        stream.shutdown().await?;
        let mut buf = [0u8; 1024];
        let mut drained = 0;
        while drained < REFUSAL_DRAIN_BYTES {
            match stream.read(&mut buf).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<_, io::Error>(())
    })
    .await;
}

/// A connection whose writes fail once they have made no progress for
/// [`WRITE_STALL_TIMEOUT`]: hyper has no write timeout, and a client that
/// stops reading would otherwise hold its connection (and its slot) for
/// good.
struct StallGuard<S> {
    inner: S,
    /// Running while a write waits for the client.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> StallGuard<S> {
    fn new(inner: S) -> StallGuard<S> {
        StallGuard {
            inner,
            stalled: None,
        }
    }

    /// Passes `r` on, timing how long the write side waits.
    fn watch<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_STALL_TIMEOUT)));
        if timer.as_mut().poll(cx).is_ready() {
            self.stalled = None;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client has not read its answer in time",
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_whole_json_answer() {
        let text = std::str::from_utf8(REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(v["error"].is_string());
    }
}
