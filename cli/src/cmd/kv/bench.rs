//! `cdsctl kv bench`: closed-loop PUT load against the cluster's leader.
//!
//! Each client is a task holding one keep-alive HTTP/1.1 connection and
//! sending its next PUT as soon as the previous one is answered, like `wrk`
//! does. Clients are tasks on a two-thread runtime rather than OS threads
//! with a blocking client, so the load generator costs little CPU next to
//! the nodes it measures on the same machine (a thread per client cost more
//! than the cluster did and made the figures the client's).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HOST, LOCATION};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Longest wait for one answer before the connection is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before retrying after a refusal (503) or a failed connection.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// What one client saw.
#[derive(Default)]
struct ClientResult {
    latencies: Vec<Duration>,
    errors: u64,
    redirects: u64,
}

/// Runs `clients` closed-loop clients for `duration` against `nodes`
/// (HTTP addresses, the leader first) and prints throughput and latency.
pub fn run(
    nodes: Vec<String>,
    clients: usize,
    duration: Duration,
    value_size: usize,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the load generator's runtime")?;
    let nodes = Arc::new(nodes);
    let value = Bytes::from(vec![b'x'; value_size]);
    let started = Instant::now();
    let end = started + duration;
    let results: Vec<ClientResult> = rt.block_on(async {
        let tasks: Vec<_> = (0..clients)
            .map(|cl| tokio::spawn(client(cl, nodes.clone(), value.clone(), end)))
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await.unwrap_or_default());
        }
        out
    });
    let secs = started.elapsed().as_secs_f64();
    let errors: u64 = results.iter().map(|r| r.errors).sum();
    let redirects: u64 = results.iter().map(|r| r.redirects).sum();
    let mut lat: Vec<Duration> = results.into_iter().flat_map(|r| r.latencies).collect();
    lat.sort_unstable();
    let pct = |p: f64| -> String {
        if lat.is_empty() {
            return "-".into();
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        format!("{:.2} ms", lat[i].as_secs_f64() * 1e3)
    };
    println!(
        "{} puts ok, {errors} failed, in {secs:.1} s with {clients} clients, {value_size} B values: \
         {:.0} puts/s",
        lat.len(),
        lat.len() as f64 / secs.max(1e-9)
    );
    println!(
        "latency p50 {}  p99 {}  p999 {}",
        pct(0.50),
        pct(0.99),
        pct(0.999)
    );
    if redirects > 0 {
        println!("{redirects} redirects followed (leadership moved during the run)");
    }
    if lat.is_empty() {
        bail!("no put succeeded");
    }
    Ok(())
}

async fn connect(addr: &str) -> Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One closed-loop client: PUTs to `bench-CL-N` (1000 keys per client)
/// until `end`, following redirects to the leader and moving to the next
/// node when one stops answering.
async fn client(cl: usize, nodes: Arc<Vec<String>>, value: Bytes, end: Instant) -> ClientResult {
    let mut r = ClientResult::default();
    let mut addr = nodes[0].clone();
    let mut next_node = 1;
    let mut conn: Option<SendRequest<Full<Bytes>>> = None;
    let mut i = 0u64;
    while Instant::now() < end {
        let sender = match &mut conn {
            Some(s) => s,
            None => match tokio::time::timeout(REQUEST_TIMEOUT, connect(&addr)).await {
                Ok(Ok(s)) => conn.insert(s),
                _ => {
                    r.errors += 1;
                    addr = nodes[next_node % nodes.len()].clone();
                    next_node += 1;
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            },
        };
        let req = Request::put(format!("/kv/bench-{cl}-{}", i % 1000))
            .header(HOST, addr.as_str())
            .body(Full::new(value.clone()));
        let Ok(req) = req else {
            r.errors += 1;
            continue;
        };
        i += 1;
        let t = Instant::now();
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let location = resp
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(str::to_owned);
            // Read the body so the connection can carry the next request.
            resp.into_body().collect().await?;
            Ok::<_, hyper::Error>((status, location))
        })
        .await;
        match answer {
            Ok(Ok((StatusCode::OK, _))) => r.latencies.push(t.elapsed()),
            Ok(Ok((StatusCode::TEMPORARY_REDIRECT, Some(loc)))) => {
                r.redirects += 1;
                // `http://HOST:PORT/path`: keep the authority.
                if let Some(a) = loc
                    .strip_prefix("http://")
                    .and_then(|rest| rest.split('/').next())
                {
                    addr = a.to_owned();
                    conn = None;
                }
            }
            Ok(Ok(_)) => {
                r.errors += 1;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            _ => {
                r.errors += 1;
                conn = None;
                addr = nodes[next_node % nodes.len()].clone();
                next_node += 1;
            }
        }
    }
    r
}
