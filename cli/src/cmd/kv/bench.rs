//! `cdsctl kv bench`: closed-loop PUT load against the cluster's leader.
//!
//! Each client is a task holding one keep-alive HTTP/1.1 connection and
//! sending its next PUT as soon as the previous one is answered, like `wrk`
//! does. Clients are tasks on a two-thread runtime rather than OS threads
//! with a blocking client, so the load generator costs little CPU next to
//! the nodes it measures on the same machine (a thread per client cost more
//! than the cluster did and made the figures the client's).
//!
//! A put's latency is what its client waits: from its first attempt to its
//! success, failed attempts, timeouts and redirects included.
//!
//! Each client has a session (a random id; see `client::Session`): a put
//! takes the next sequence number and keeps it, and its key, through every
//! retry, so a put retried after a timeout or a lost connection is applied
//! once. Should a session be gone (`410`, after an hour idle or past the
//! nodes' session limit), the client opens a new one and sends the put
//! again: as a put rewrites the value it wrote, that is harmless here.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HOST, LOCATION};
use hyper::{Request, StatusCode};

use cds::client::{Session, Stamp};
use cds::kv::{group_of_key, CLIENT_ID_HEADER, CLIENT_SEQ_HEADER};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Longest wait for one answer before the connection is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before retrying after a refusal (503) or a failed connection.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// What one client saw.
#[derive(Default)]
struct ClientResult {
    /// Per put: from its first attempt to its success (failed attempts,
    /// timeouts and redirects in between included), what a user waits.
    latencies: Vec<Duration>,
    errors: u64,
    redirects: u64,
    /// Sessions the nodes no longer knew, replaced by new ones.
    sessions_renewed: u64,
}

/// Where the clients send: the nodes' HTTP addresses (the leader first),
/// and, for a cluster whose nodes serve HTTPS, the TLS client that trusts
/// only its CA.
pub struct Targets {
    /// HTTP addresses, the leader first.
    pub nodes: Vec<String>,
    /// Set when the nodes serve HTTPS.
    pub tls: Option<tokio_rustls::TlsConnector>,
    /// The cluster's groups: the first id and the count. Each key goes to
    /// its group's leader (`group_of_key`), learnt from redirects.
    pub groups: (u64, u64),
    /// Group -> its leader's HTTP address, as the nodes reported it
    /// before the run (`GET /groups`); a group missing here or whose
    /// leader moved is learnt from redirects.
    pub leaders: HashMap<u64, String>,
}

/// When the clients stop, and where a background run's figures go.
#[derive(Default)]
struct Control {
    /// Connect over TLS with this (the nodes serve HTTPS).
    tls: Option<tokio_rustls::TlsConnector>,
    /// A timed run (`kv bench`) ends here.
    end: Option<Instant>,
    /// A background run (`top`) ends when this is set.
    stop: AtomicBool,
    /// Background runs report here instead of keeping every latency,
    /// which would grow without bound over a long session.
    live: Option<Arc<LiveStats>>,
    /// The cluster's groups (first id, count); see [`Targets::groups`].
    groups: (u64, u64),
    /// The routing table the clients start from; see [`Targets::leaders`].
    leaders: HashMap<u64, String>,
}

impl Control {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed) && self.end.is_none_or(|end| Instant::now() < end)
    }
}

/// The running figures of a background load, read (and drained) by its
/// owner while it runs.
#[derive(Debug, Default)]
pub struct LiveStats {
    /// Successful puts so far.
    pub ok: AtomicU64,
    /// Failed attempts so far (refusals, timeouts, lost connections).
    pub errors: AtomicU64,
    /// Latencies of puts done since the last [`LiveStats::drain`], each
    /// from its first attempt to its success.
    latencies: Mutex<Vec<Duration>>,
    /// When each client's put not done yet started (its first attempt),
    /// by client: at most one per client.
    waiting: Mutex<BTreeMap<usize, Instant>>,
}

impl LiveStats {
    /// Takes the latencies recorded since the last call.
    pub fn drain(&self) -> Vec<Duration> {
        std::mem::take(
            &mut *self
                .latencies
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// When each put not done yet started.
    pub fn waiting(&self) -> Vec<Instant> {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .copied()
            .collect()
    }

    fn set_waiting(&self, client: usize, since: Option<Instant>) {
        let mut w = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        match since {
            Some(t) => w.insert(client, t),
            None => w.remove(&client),
        };
    }
}

/// The outcome of a timed run: the lines `kv bench` prints, and how many
/// puts succeeded.
#[derive(Debug)]
pub struct Report {
    /// Throughput and latency, one or more lines, each ending in '\n'.
    pub text: String,
    /// Puts that succeeded.
    pub ok: usize,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the load generator's runtime")
}

/// Runs `clients` closed-loop clients for `duration` against `nodes`
/// (HTTP addresses, the leader first) and reports throughput and latency.
pub fn run(
    targets: Targets,
    clients: usize,
    duration: Duration,
    value_size: usize,
) -> Result<Report> {
    let rt = runtime()?;
    let sessions = sessions(clients)?;
    let started = Instant::now();
    let ctl = Arc::new(Control {
        end: Some(started + duration),
        tls: targets.tls,
        groups: targets.groups,
        leaders: targets.leaders,
        ..Control::default()
    });
    let results = rt.block_on(run_clients(targets.nodes, sessions, value_size, ctl));
    Ok(report(results, started.elapsed(), clients, value_size))
}

/// A load generator running in the background until [`Background::stop`]
/// (or until dropped, which stops it without waiting).
pub struct Background {
    ctl: Arc<Control>,
    stats: Arc<LiveStats>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Starts `clients` closed-loop clients against `nodes` (the leader first)
    /// on a thread of their own.
    pub fn start(targets: Targets, clients: usize, value_size: usize) -> Result<Background> {
        let stats = Arc::new(LiveStats::default());
        let ctl = Arc::new(Control {
            live: Some(stats.clone()),
            tls: targets.tls,
            groups: targets.groups,
            leaders: targets.leaders,
            ..Control::default()
        });
        let nodes = targets.nodes;
        let sessions = sessions(clients)?;
        let rt = runtime()?;
        let thread_ctl = ctl.clone();
        let thread = std::thread::Builder::new()
            .name("load".into())
            .spawn(move || {
                rt.block_on(run_clients(nodes, sessions, value_size, thread_ctl));
            })
            .context("starting the load generator's thread")?;
        Ok(Background {
            ctl,
            stats,
            thread: Some(thread),
        })
    }

    /// Its running figures.
    pub fn stats(&self) -> Arc<LiveStats> {
        self.stats.clone()
    }

    /// Stops the clients and waits for them (each finishes the request it
    /// has in flight, at most [`REQUEST_TIMEOUT`]). Returns a summary line.
    pub fn stop(mut self) -> String {
        self.ctl.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        format!(
            "load stopped: {} puts ok, {} failed",
            self.stats.ok.load(Ordering::Relaxed),
            self.stats.errors.load(Ordering::Relaxed)
        )
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.ctl.stop.store(true, Ordering::Relaxed);
    }
}

/// One session per client, each with a random id.
fn sessions(clients: usize) -> Result<Vec<Session>> {
    Ok((0..clients)
        .map(|_| Session::new())
        .collect::<cds::Result<_>>()?)
}

async fn run_clients(
    nodes: Vec<String>,
    sessions: Vec<Session>,
    value_size: usize,
    ctl: Arc<Control>,
) -> Vec<ClientResult> {
    let nodes = Arc::new(nodes);
    let value = Bytes::from(vec![b'x'; value_size]);
    {
        let tasks: Vec<_> = sessions
            .into_iter()
            .enumerate()
            .map(|(cl, session)| {
                tokio::spawn(client(
                    cl,
                    session,
                    nodes.clone(),
                    value.clone(),
                    ctl.clone(),
                ))
            })
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await.unwrap_or_default());
        }
        out
    }
}

fn report(
    results: Vec<ClientResult>,
    elapsed: Duration,
    clients: usize,
    value_size: usize,
) -> Report {
    let secs = elapsed.as_secs_f64();
    let errors: u64 = results.iter().map(|r| r.errors).sum();
    let redirects: u64 = results.iter().map(|r| r.redirects).sum();
    let renewed: u64 = results.iter().map(|r| r.sessions_renewed).sum();
    let mut lat: Vec<Duration> = results.into_iter().flat_map(|r| r.latencies).collect();
    lat.sort_unstable();
    let pct = |p: f64| -> String {
        if lat.is_empty() {
            return "-".into();
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        format!("{:.2} ms", lat[i].as_secs_f64() * 1e3)
    };
    let mut text = format!(
        "{} puts ok, {errors} failed, in {secs:.1} s with {clients} clients, {value_size} B values: \
         {:.0} puts/s\n",
        lat.len(),
        lat.len() as f64 / secs.max(1e-9)
    );
    text.push_str(&format!(
        "latency p50 {}  p99 {}  p999 {}\n",
        pct(0.50),
        pct(0.99),
        pct(0.999)
    ));
    if redirects > 0 {
        text.push_str(&format!(
            "{redirects} redirects followed (leadership moved during the run)\n"
        ));
    }
    if renewed > 0 {
        text.push_str(&format!(
            "{renewed} client sessions renewed (the nodes had dropped them)\n"
        ));
    }
    Report {
        text,
        ok: lat.len(),
    }
}

async fn connect(
    addr: &str,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let Some(tls) = tls else {
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        return Ok(sender);
    };
    // The node's certificate names its IP address (cdsctl cert --ip).
    let ip = addr
        .parse::<std::net::SocketAddr>()
        .with_context(|| format!("{addr} is not an IP address and port"))?
        .ip();
    let stream = tls
        .connect(rustls_pki_types::ServerName::IpAddress(ip.into()), stream)
        .await?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One closed-loop client: PUTs to `bench-CL-N` (1000 keys per client)
/// until `ctl` says stop, each to the leader of the key's group (learnt
/// from redirects, one guess per group), moving to the next node when one
/// stops answering. Every put goes with the client's session for its
/// group (sessions are per state machine, so per group), its retries with
/// the same seq.
async fn client(
    cl: usize,
    session: Session,
    nodes: Arc<Vec<String>>,
    value: Bytes,
    ctl: Arc<Control>,
) -> ClientResult {
    let mut r = ClientResult::default();
    let (first_group, group_count) = ctl.groups;
    let base_id = session.id();
    let mut sessions: HashMap<u64, Session> = HashMap::from([(first_group, session)]);
    let mut leaders: HashMap<u64, String> = ctl.leaders.clone();
    let mut conns: HashMap<String, SendRequest<Full<Bytes>>> = HashMap::new();
    let mut next_node = 1;
    let mut i = 0u64;
    let live = ctl.live.as_deref();
    let count_error = |r: &mut ClientResult| {
        r.errors += 1;
        if let Some(l) = live {
            l.errors.fetch_add(1, Ordering::Relaxed);
        }
    };
    // A group's session id: the client's, mixed with the group's, so
    // different groups' sessions of one client never share an id.
    let session_of =
        |group: u64| Session::with_id(base_id ^ group.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    // The put being tried: when it started (its latency runs from its
    // first attempt, through failures and redirects, to its success), its
    // key, its group and its stamp, all kept for every retry.
    let mut put: Option<(Instant, String, u64, Stamp)> = None;
    while ctl.running() {
        let (since, path, group, stamp) = put
            .get_or_insert_with(|| {
                let t = Instant::now();
                if let Some(l) = live {
                    l.set_waiting(cl, Some(t));
                }
                let key = format!("bench-{cl}-{}", i % 1000);
                i += 1;
                let group = group_of_key(key.as_bytes(), first_group, group_count);
                let stamp = sessions
                    .entry(group)
                    .or_insert_with(|| session_of(group))
                    .next_stamp();
                (t, format!("/kv/{key}"), group, stamp)
            })
            .clone();
        let addr = leaders
            .entry(group)
            .or_insert_with(|| nodes[0].clone())
            .clone();
        let sender = match conns.get_mut(&addr) {
            Some(s) => s,
            None => match tokio::time::timeout(REQUEST_TIMEOUT, connect(&addr, ctl.tls.as_ref()))
                .await
            {
                Ok(Ok(s)) => conns.entry(addr.clone()).or_insert(s),
                _ => {
                    count_error(&mut r);
                    leaders.insert(group, nodes[next_node % nodes.len()].clone());
                    next_node += 1;
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            },
        };
        let req = Request::put(path.as_str())
            .header(HOST, addr.as_str())
            .header(CLIENT_ID_HEADER, stamp.client)
            .header(CLIENT_SEQ_HEADER, stamp.seq)
            .body(Full::new(value.clone()));
        let Ok(req) = req else {
            count_error(&mut r);
            continue;
        };
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
            Ok(Ok((StatusCode::OK, _))) => {
                put = None;
                match live {
                    Some(l) => {
                        l.ok.fetch_add(1, Ordering::Relaxed);
                        l.latencies
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(since.elapsed());
                        l.set_waiting(cl, None);
                    }
                    None => r.latencies.push(since.elapsed()),
                }
            }
            Ok(Ok((StatusCode::TEMPORARY_REDIRECT, Some(loc)))) => {
                r.redirects += 1;
                // `http://HOST:PORT/path`: keep the authority, if it is one
                // of the cluster's nodes (a redirect elsewhere is an error:
                // our writes go to the cluster or nowhere).
                let scheme = if ctl.tls.is_some() {
                    "https://"
                } else {
                    "http://"
                };
                match loc
                    .strip_prefix(scheme)
                    .and_then(|rest| rest.split('/').next())
                    .filter(|a| nodes.iter().any(|n| n == a))
                {
                    Some(a) => {
                        leaders.insert(group, a.to_owned());
                    }
                    None => {
                        count_error(&mut r);
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
            }
            Ok(Ok((StatusCode::GONE, _))) => {
                // The nodes dropped this client's session: a new one, and
                // the put again under it.
                count_error(&mut r);
                match Session::new() {
                    Ok(s) => {
                        sessions.insert(group, s);
                    }
                    Err(_) => break,
                }
                r.sessions_renewed += 1;
                if let (Some(p), Some(s)) = (put.as_mut(), sessions.get_mut(&group)) {
                    p.3 = s.next_stamp();
                }
            }
            Ok(Ok((StatusCode::CONFLICT, _))) => {
                // Stale: a later seq of this session was applied, which
                // one put at a time never causes. Take a new seq rather
                // than be refused forever.
                count_error(&mut r);
                if let (Some(p), Some(s)) = (put.as_mut(), sessions.get_mut(&group)) {
                    p.3 = s.next_stamp();
                }
            }
            Ok(Ok(_)) => {
                count_error(&mut r);
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            _ => {
                count_error(&mut r);
                conns.remove(&addr);
                leaders.insert(group, nodes[next_node % nodes.len()].clone());
                next_node += 1;
            }
        }
    }
    if let Some(l) = live {
        l.set_waiting(cl, None);
    }
    r
}
