//! The node's HTTP API (axum): the KV operations, status, metrics and the
//! admin requests (documented in `book/src/cluster.md`, "The node's HTTP
//! API").
//!
//! Only the leader can order writes and confirm linearizable reads, but a
//! client does not know who leads; rather than proxying (which would hide
//! the leader and double every hop), a follower answers `307 Temporary
//! Redirect` to the same path and query on the leader's HTTP address, and
//! clients follow it. When no leader is known, or the node cannot take more
//! work, the answer is `503` with a JSON error, which clients retry.
//!
//! Every error body is JSON `{"error": "..."}`, axum's own answers (`405`,
//! a path that is not UTF-8) included ([`json_errors`]). A proposal whose
//! outcome is unknown (this node lost leadership or stopped while it was in
//! flight) is reported as such, never as a failure: it may still commit.
//!
//! # Exactly-once writes
//!
//! A write (`PUT`, `DELETE`, `POST .../cas`) may carry a client session in
//! two headers, [`CLIENT_ID_HEADER`] (`X-Client-Id`, the client's random
//! u64) and [`CLIENT_SEQ_HEADER`] (`X-Client-Seq`, from 1, new for each
//! command, the same for each retry of it). With them the write applies
//! at most once however often it is retried, and a retry of the last
//! command gets the reply of its first application (with `"replayed":
//! true`); an older seq is answered `409` (stale), a seq above 1 of a
//! client without a session `410` (unknown session: expired or evicted).
//! The leader stamps each such command with its wall clock, the time the
//! state machine expires sessions by (`state_machine.rs`, "Client sessions").
//! Without the headers a write is applied once per arrival: a retry after
//! an unknown outcome may apply it twice.
//!
//! # Who may do what
//!
//! Every request passes [`guard`] first:
//!
//! - **Host.** The `Host` header must name this node: its listen address,
//!   or `localhost`, `127.0.0.1` or `[::1]` with its port (any IP literal
//!   with its port when it listens on all addresses). A web page whose name
//!   an attacker rebinds to 127.0.0.1 sends its own name, and is refused
//!   (`421`) on every route: it must not read `/kv` or `/status` either.
//! - **Admin token.** `/admin/*` needs `Authorization: Bearer
//!   <admin_token>` (the config's `admin_token`, not the peers' `token`),
//!   compared in constant time; else `401`.
//! - **JSON bodies.** On `/admin/*` and `POST /kv/{key}/cas` (the requests
//!   with JSON bodies), a body must come with `Content-Type:
//!   application/json` and no other type is accepted (`415`): a browser
//!   form can post `text/plain` across origins without asking, never JSON.
//! - **Bodies.** A body is read whole before the handler runs, at most
//!   [`MAX_BODY_BYTES`] (`413`), within [`BODY_READ_TIMEOUT`] (`408`), and
//!   with at most [`MAX_BODY_BYTES_IN_FLIGHT`] of bodies held by the node at
//!   once (`503`, retry).
//!
//! `/status` and `/metrics` stay open to any local client with a proper
//! Host (monitoring needs no secret): they show ids, roles, indexes,
//! addresses and counters, never a token. `/kv` needs no token either: the
//! data API is for every local user of the cluster, like the loopback
//! listener it sits on.
//!
//! Admin requests are logged on stderr with the client's address, the
//! request and the answer's status; membership and fault changes also log
//! what they set.

// Helpers return `Result<_, Response>` so a handler can `return` the error
// answer as is; the `Response` lives for one request on the stack, and
// boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use raft_core::runtime::host::GroupHost;
use raft_core::runtime::node::{NodeError, NodeHandle};
use raft_core::runtime::status::{Histogram, HISTOGRAM_BOUNDS_US};
use raft_core::runtime::transport::{FaultFilter, TransportHandle};
use raft_core::storage::host_sync::HostSync;
use raft_core::NodeId;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Semaphore;

use super::state_machine::{
    Command, KvStats, Outcome, Request as KvRequest, SharedKv, Stamp, FIRST_SEQ,
};
use super::{CLIENT_ID_HEADER, CLIENT_SEQ_HEADER};

use super::config::NodeFileConfig;
use super::limits::{
    BODY_READ_TIMEOUT, MAX_BODY_BYTES, MAX_BODY_BYTES_IN_FLIGHT, MAX_ERROR_TEXT_BYTES,
    MAX_FILTER_DELAY_MS, MAX_KEY_BYTES,
};
use crate::status::{Filter, Status};

/// What every handler sees.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    /// Every hosted group, in id order; at least one. The first is the
    /// one `/status`, `/metrics` and `/admin/*` act on unless a request
    /// names another (`?group=`).
    groups: Vec<GroupApi>,
    host: GroupHost,
    host_sync: Option<Arc<HostSync>>,
    transport: TransportHandle,
    /// Every member's HTTP address, for redirects to the leader; grows with
    /// `POST /admin/peer`.
    http_peers: RwLock<BTreeMap<NodeId, SocketAddr>>,
    pid: u32,
    /// Where this API listens: the Host requests must name.
    http_addr: SocketAddr,
    /// What `/admin/*` requests must present.
    admin_token: String,
    /// The node's config file, read again by `/admin/peer`.
    config_path: PathBuf,
    /// `https` when the cluster's nodes serve HTTPS (redirects keep it).
    scheme: &'static str,
    /// Bytes of request bodies held at once, in KiB permits.
    body_kib: Semaphore,
}

/// One hosted group as the API sees it.
pub struct GroupApi {
    /// The group's Raft node on this process.
    pub node: NodeHandle,
    /// Its state machine's map.
    pub kv: SharedKv,
    /// Its state machine's session figures.
    pub kv_stats: Arc<KvStats>,
}

/// The group a key belongs to among `count` groups from `first`: the
/// same on every node and client (CRC-32C of the key, modulo the count).
pub fn group_of_key(key: &[u8], first: u64, count: u64) -> u64 {
    first + u64::from(raft_core::checksum(key)) % count.max(1)
}

/// What a node's HTTP server is built from.
pub struct Setup {
    /// The hosted groups, in id order; at least one.
    pub groups: Vec<GroupApi>,
    /// The host running them.
    pub host: GroupHost,
    /// The host's shared log sync, when its groups use one.
    pub host_sync: Option<Arc<HostSync>>,
    /// Its transport (filters, peer addresses, counters).
    pub transport: TransportHandle,
    /// Every member's HTTP address, from the config.
    pub http_peers: BTreeMap<NodeId, SocketAddr>,
    /// Where the API listens.
    pub http_addr: SocketAddr,
    /// The config's `admin_token`.
    pub admin_token: String,
    /// The config file the node was started with.
    pub config_path: PathBuf,
    /// Whether the API is served over HTTPS (as every member's is: they
    /// share the config's `https`), so redirects name `https://`.
    pub https: bool,
}

impl AppState {
    /// The state of a node's HTTP server.
    pub fn new(s: Setup) -> AppState {
        assert!(
            !s.groups.is_empty(),
            "a node's API serves at least one group"
        );
        AppState(Arc::new(Inner {
            groups: s.groups,
            host: s.host,
            host_sync: s.host_sync,
            transport: s.transport,
            http_peers: RwLock::new(s.http_peers),
            pid: std::process::id(),
            http_addr: s.http_addr,
            admin_token: s.admin_token,
            config_path: s.config_path,
            scheme: if s.https { "https" } else { "http" },
            body_kib: Semaphore::new(MAX_BODY_BYTES_IN_FLIGHT >> 10),
        }))
    }
}

impl Inner {
    /// The first group's node (see `groups`).
    fn node(&self) -> &NodeHandle {
        &self.groups[0].node
    }

    /// The group holding `key`.
    fn group_for(&self, key: &str) -> &GroupApi {
        let first = self.node().group();
        let g = group_of_key(key.as_bytes(), first, self.groups.len() as u64);
        &self.groups[(g - first) as usize]
    }

    /// Group `id`, or the first when `None`; a 404 answer for a group
    /// this process does not host.
    fn group(&self, id: Option<u64>) -> Result<&GroupApi, Response> {
        let Some(id) = id else {
            return Ok(&self.groups[0]);
        };
        let first = self.node().group();
        id.checked_sub(first)
            .and_then(|k| self.groups.get(k as usize))
            .ok_or_else(|| {
                error(
                    StatusCode::NOT_FOUND,
                    format!("group {id} is not hosted here"),
                )
            })
    }
}

/// The API's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/kv/{key}", put(put_key).get(get_key).delete(delete_key))
        .route("/kv/{key}/cas", post(cas_key))
        .route("/status", get(status))
        .route("/groups", get(groups))
        .route("/metrics", get(metrics))
        .route("/admin/transfer", post(admin_transfer))
        .route("/admin/filter", post(admin_filter))
        .route("/admin/change", post(admin_change))
        .route("/admin/learner", post(admin_learner))
        .route("/admin/snapshot", post(admin_snapshot))
        .route("/admin/peer", post(admin_peer))
        .fallback(unknown_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(middleware::map_response(json_errors))
        .with_state(state)
}

/// Whether `host` (a `Host` header) names the node listening on `listen`.
pub(crate) fn host_is_ours(host: &str, listen: SocketAddr) -> bool {
    let host = host.trim();
    if let Ok(addr) = host.parse::<SocketAddr>() {
        // An IP literal cannot be rebound to another site's name.
        return addr.port() == listen.port()
            && (addr.ip() == listen.ip()
                || addr.ip().is_loopback()
                || listen.ip().is_unspecified());
    }
    let Some((name, port)) = host.rsplit_once(':') else {
        return false;
    };
    name.eq_ignore_ascii_case("localhost") && port.parse() == Ok(listen.port())
}

/// Whether the request carries the admin token.
pub(crate) fn has_admin_token(headers: &HeaderMap, token: &str) -> bool {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let v = v.as_bytes();
    let scheme = b"bearer ";
    if v.len() < scheme.len() || !v[..scheme.len()].eq_ignore_ascii_case(scheme) {
        return false;
    }
    raft_core::runtime::transport::constant_time_eq(&v[scheme.len()..], token.as_bytes())
}

/// Whether the request's body is JSON-only: the admin API and CAS.
fn wants_json(method: &Method, path: &str) -> bool {
    path.starts_with("/admin/")
        || (method == Method::POST && path.starts_with("/kv/") && path.ends_with("/cas"))
}

/// Refuses a body that is not declared JSON, on a JSON-only request: a
/// Content-Type other than `application/json` (parameters allowed), or a
/// body without one.
fn check_json_type(headers: &HeaderMap) -> Result<(), Response> {
    let ctype = headers.get(header::CONTENT_TYPE);
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    let is_json = |v: &header::HeaderValue| {
        v.to_str().is_ok_and(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        })
    };
    match ctype {
        Some(v) if !is_json(v) => Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type {:?} refused: this request takes application/json",
                String::from_utf8_lossy(v.as_bytes())
            ),
        )),
        None if has_body => Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a body without Content-Type refused: this request takes application/json",
        )),
        _ => Ok(()),
    }
}

/// The checks every request passes before its handler (see the module's
/// "Who may do what"), then the handler, then the log line of an admin
/// request.
async fn guard(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let s = &s.0;
    let host = req
        .headers()
        .get(header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
    match host {
        None => return error(StatusCode::BAD_REQUEST, "no Host header"),
        Some(h) if !host_is_ours(&h, s.http_addr) => {
            return error(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "Host {h:?} is not this node (use {} or localhost:{})",
                    s.http_addr,
                    s.http_addr.port()
                ),
            )
        }
        Some(_) => {}
    }
    let path = req.uri().path().to_owned();
    let admin = path.starts_with("/admin/");
    if admin && !has_admin_token(req.headers(), &s.admin_token) {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "the admin API needs Authorization: Bearer <admin_token> (see the node's config)",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    if wants_json(req.method(), &path) {
        if let Err(r) = check_json_type(req.headers()) {
            return r;
        }
    }
    let (parts, body) = req.into_parts();
    let (bytes, _held) = match read_body(s, &parts.headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let what = admin.then(|| {
        let who = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| "an unknown client".to_owned(), |c| c.0.to_string());
        let pq = parts
            .uri
            .path_and_query()
            .map_or(path.as_str(), |pq| pq.as_str());
        format!("{} {pq} from {who}", parts.method)
    });
    let answer = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if let Some(what) = what {
        eprintln!("node {}: admin: {what}: {}", s.node().id(), answer.status());
    }
    answer
}

/// Reads a request's body whole: at most [`MAX_BODY_BYTES`], within
/// [`BODY_READ_TIMEOUT`], holding a share of [`MAX_BODY_BYTES_IN_FLIGHT`]
/// (returned with the bytes, for as long as the request lives).
async fn read_body<'a>(
    s: &'a Inner,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, Option<tokio::sync::SemaphorePermit<'a>>), Response> {
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    let length = match headers.get(header::CONTENT_LENGTH) {
        None => 0,
        Some(v) => match v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) {
            Some(n) => n,
            None => return Err(error(StatusCode::BAD_REQUEST, "bad Content-Length")),
        },
    };
    if length == 0 && !chunked {
        return Ok((Bytes::new(), None));
    }
    // A body of unknown length may be as large as the limit. One announced
    // above it is still read up to the limit before the `413`: answering
    // at once would close the connection under a client still sending,
    // which then sees a reset, not the answer.
    let want = if chunked {
        MAX_BODY_BYTES as u64
    } else {
        length.min(MAX_BODY_BYTES as u64)
    };
    let kib = u32::try_from(want.div_ceil(1024)).unwrap_or(u32::MAX);
    let Ok(held) = s.body_kib.try_acquire_many(kib) else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the node holds {} MiB of request bodies already, retry",
                MAX_BODY_BYTES_IN_FLIGHT >> 20
            ),
        ));
    };
    match tokio::time::timeout(
        BODY_READ_TIMEOUT,
        axum::body::to_bytes(body, MAX_BODY_BYTES),
    )
    .await
    {
        Ok(Ok(bytes)) => Ok((bytes, Some(held))),
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
        )),
        Ok(Err(e)) => {
            let too_large =
                std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                })
                .any(|e| e.is::<http_body_util::LengthLimitError>());
            Err(if too_large {
                error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body above the limit of {MAX_BODY_BYTES} bytes"),
                )
            } else {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {e}"),
                )
            })
        }
    }
}

/// Makes every error answer JSON: axum's own (`405`, a path or query it
/// cannot decode) are plain text or empty; their text becomes the
/// `error`. Headers (`Allow` of a `405`) are kept.
async fn json_errors(r: Response) -> Response {
    let status = r.status();
    let is_json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return r;
    }
    let (mut parts, body) = r.into_parts();
    let text = axum::body::to_bytes(body, MAX_ERROR_TEXT_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let mut msg = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    } else {
        text
    };
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        let _ = write!(
            msg,
            " (allowed: {})",
            String::from_utf8_lossy(allow.as_bytes())
        );
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    let body = json!({ "error": msg }).to_string();
    Response::from_parts(parts, Body::from(body))
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

async fn unknown_route(uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", uri.path()),
    )
}

/// The request body, or the JSON error answer when it could not be read
/// (e.g. `413` past [`MAX_BODY_BYTES`]).
fn body_or_error(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Response> {
    body.map_err(|e| {
        error(
            e.status(),
            format!("cannot read the request body: {}", e.body_text()),
        )
    })
}

/// Parses a JSON request body. The content type is not checked: a client
/// that forgets `Content-Type: application/json` still means JSON here.
fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes, what: &str) -> Result<T, Response> {
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("bad {what} request: {e}")))
}

fn check_key(key: &str) -> Result<(), Response> {
    if key.len() > MAX_KEY_BYTES {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("key longer than {MAX_KEY_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// The answer of a non-leader: a redirect to the leader's HTTP address
/// (same path and query), or 503 when no (other) leader is known.
fn not_leader(s: &Inner, leader: Option<NodeId>, uri: &Uri) -> Response {
    let target = leader.filter(|&l| l != s.node().id()).and_then(|l| {
        let peers = s.http_peers.read().unwrap_or_else(PoisonError::into_inner);
        peers.get(&l).map(|&a| (l, a))
    });
    match target {
        Some((l, addr)) => {
            let pq = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
            let location = format!("{}://{addr}{pq}", s.scheme);
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, location)],
                Json(json!({ "error": "not the leader", "leader": l })),
            )
                .into_response()
        }
        None => error(StatusCode::SERVICE_UNAVAILABLE, "no leader"),
    }
}

/// Maps a node error to the API's answers (`503` to retry, `307` to the
/// leader, ...).
fn node_error(s: &Inner, e: NodeError, uri: &Uri) -> Response {
    let unavailable = |m: String| error(StatusCode::SERVICE_UNAVAILABLE, m);
    match e {
        NodeError::NotLeader { leader } => not_leader(s, leader, uri),
        NodeError::Busy { .. } => unavailable("busy".into()),
        // Bodies are far below the wire's limit (`limits::MAX_BODY_BYTES`):
        // reached only if that relation is broken.
        e @ NodeError::TooLarge { .. } => error(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
        NodeError::LeadershipLost { .. } => unavailable("unknown outcome, retry".into()),
        NodeError::Stopped => unavailable("the node is stopping".into()),
        NodeError::NotCommitted { .. } => {
            unavailable("not committed (leader changed), retry".into())
        }
        NodeError::ReadLost => {
            unavailable("leadership lost before the read was confirmed, retry".into())
        }
        NodeError::Propose(e) => unavailable(format!("proposal refused: {e}")),
        NodeError::Read(e) => unavailable(format!("read refused: {e}")),
        NodeError::Change(e) => error(
            StatusCode::CONFLICT,
            format!("membership change refused: {e}"),
        ),
        NodeError::Transfer(e) => error(
            StatusCode::CONFLICT,
            format!("leader transfer refused: {e}"),
        ),
        e @ (NodeError::Failed(_) | NodeError::Start(_) | NodeError::Snapshot(_)) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

/// The client session a write names in its headers: `None` without
/// them; `400` when only one is there, when one is not a decimal u64, or
/// for seq 0.
fn session_of(headers: &HeaderMap) -> Result<Option<(u64, u64)>, Response> {
    let field = |name: &str| -> Result<Option<u64>, Response> {
        let Some(v) = headers.get(name) else {
            return Ok(None);
        };
        v.to_str()
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "{name}: {:?} is not a decimal number from 0 to 2^64-1",
                        String::from_utf8_lossy(v.as_bytes())
                    ),
                )
            })
    };
    match (field(CLIENT_ID_HEADER)?, field(CLIENT_SEQ_HEADER)?) {
        (None, None) => Ok(None),
        (Some(_), Some(0)) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("{CLIENT_SEQ_HEADER}: a session's commands are numbered from {FIRST_SEQ}"),
        )),
        (Some(client), Some(seq)) => Ok(Some((client, seq))),
        _ => Err(error(
            StatusCode::BAD_REQUEST,
            format!("{CLIENT_ID_HEADER} and {CLIENT_SEQ_HEADER} go together: send both or neither"),
        )),
    }
}

/// Milliseconds since the Unix epoch on this node's clock: the time a
/// leader stamps into the session commands it proposes (0 before 1970).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A write applied (now, or before: then `replayed`).
struct Done {
    /// The index and term of the entry that applied it.
    index: u64,
    term: u64,
    /// The command's result.
    result: Vec<u8>,
    /// The answer comes from the session's cache: this was a retry.
    replayed: bool,
}

impl Done {
    /// The `200` answer: `body` plus `"replayed": true` for a retry.
    fn answer(&self, mut body: serde_json::Value) -> Response {
        if self.replayed {
            body["replayed"] = json!(true);
        }
        Json(body).into_response()
    }
}

/// Proposes `cmd`, with the client's session if it sent one (stamped with
/// this node's clock: a proposal is taken only by the leader), and waits
/// until it is applied.
async fn propose(
    s: &Inner,
    g: &GroupApi,
    session: Option<(u64, u64)>,
    cmd: Command,
    uri: &Uri,
) -> Result<Done, Response> {
    let stamp = session.map(|(client, seq)| Stamp {
        client,
        seq,
        time_ms: now_ms(),
    });
    let req = KvRequest { stamp, cmd };
    let o = match g.node.propose(req.encode()).await {
        Ok(o) => o,
        // A proposal in flight when the node stops may still commit.
        Err(NodeError::Stopped) => {
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unknown outcome, retry",
            ))
        }
        // The node failed with the entry in flight: it may have committed
        // on the other members.
        Err(NodeError::Failed(e)) => {
            return Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("unknown outcome: the node failed: {e}"),
            ))
        }
        Err(e) => return Err(node_error(s, e, uri)),
    };
    let Some(stamp) = stamp else {
        return Ok(Done {
            index: o.index,
            term: o.term,
            result: o.result,
            replayed: false,
        });
    };
    let (client, seq) = (stamp.client, stamp.seq);
    match Outcome::decode(&o.result) {
        Some(Outcome::Applied(result)) => Ok(Done {
            index: o.index,
            term: o.term,
            result,
            replayed: false,
        }),
        Some(Outcome::Replayed(r)) => Ok(Done {
            index: r.index,
            term: r.term,
            result: r.result,
            replayed: true,
        }),
        Some(Outcome::Stale { last_seq }) => Err((
            StatusCode::CONFLICT,
            Json(json!({
                "error": format!(
                    "stale request: client {client} has already sent seq {last_seq}; \
                     seq {seq} was not applied now, and its reply is no longer kept"
                ),
                "last_seq": last_seq,
            })),
        )
            .into_response()),
        Some(Outcome::UnknownSession) => Err(error(
            StatusCode::GONE,
            format!(
                "unknown session: client {client} has no session (it expired or was evicted, \
                 or never began with seq {FIRST_SEQ}); seq {seq} was not applied now; \
                 start a new session"
            ),
        )),
        None => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the state machine did not understand the command",
        )),
    }
}

async fn put_key(
    State(s): State<AppState>,
    Path(key): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body_or_error(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(r) = check_key(&key) {
        return r;
    }
    let session = match session_of(&headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let g = s.0.group_for(&key);
    let cmd = Command::Put {
        key: key.into_bytes(),
        value: body.to_vec(),
    };
    match propose(&s.0, g, session, cmd, &uri).await {
        Ok(d) => d.answer(json!({ "index": d.index, "term": d.term })),
        Err(r) => r,
    }
}

async fn delete_key(
    State(s): State<AppState>,
    Path(key): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check_key(&key) {
        return r;
    }
    let session = match session_of(&headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let g = s.0.group_for(&key);
    let cmd = Command::Delete {
        key: key.into_bytes(),
    };
    match propose(&s.0, g, session, cmd, &uri).await {
        Ok(d) => d.answer(json!({
            "index": d.index,
            "term": d.term,
            "existed": d.result == [1],
        })),
        Err(r) => r,
    }
}

/// The body of `POST /kv/{key}/cas`.
#[derive(Debug, Deserialize)]
struct CasBody {
    /// The value the key must hold; `null`: the key must be absent.
    expect: Option<String>,
    /// The value to set.
    value: String,
}

async fn cas_key(
    State(s): State<AppState>,
    Path(key): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body_or_error(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(r) = check_key(&key) {
        return r;
    }
    let body: CasBody = match parse_json(&body, "CAS") {
        Ok(b) => b,
        Err(r) => return r,
    };
    let session = match session_of(&headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let g = s.0.group_for(&key);
    let cmd = Command::Cas {
        key: key.into_bytes(),
        expect: body.expect.map(String::into_bytes),
        value: body.value.into_bytes(),
    };
    match propose(&s.0, g, session, cmd, &uri).await {
        Ok(d) => d.answer(json!({
            "ok": d.result == [1],
            "index": d.index,
            "term": d.term,
        })),
        Err(r) => r,
    }
}

/// The query of `GET /kv/{key}`.
#[derive(Debug, Deserialize)]
struct ReadParams {
    consistency: Option<String>,
}

async fn get_key(
    State(s): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<ReadParams>,
    uri: Uri,
) -> Response {
    if let Err(r) = check_key(&key) {
        return r;
    }
    let g = s.0.group_for(&key);
    match q.consistency.as_deref().unwrap_or("linearizable") {
        "linearizable" => {
            if let Err(e) = g.node.read().await {
                return node_error(&s.0, e, &uri);
            }
        }
        // No heartbeat round while the leader's lease holds; a ReadIndex
        // round otherwise.
        "lease" => {
            if let Err(e) = g.node.read_lease().await {
                return node_error(&s.0, e, &uri);
            }
        }
        "stale" => {}
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown consistency {other:?} (expected linearizable, lease or stale)"),
            )
        }
    }
    // `read` returned once the read index is applied here: the map now
    // reflects every write that completed before the request.
    let value =
        g.kv.read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key.as_bytes())
            .cloned();
    match value {
        Some(v) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            v,
        )
            .into_response(),
        None => error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// `GET /groups`: every hosted group with this node's role in it, the
/// leader it knows of and whether it is quiescent, from the nodes' last
/// `Ready` (no round trip to any group: cheap for thousands). Clients
/// build their routing table from it instead of learning each group's
/// leader from a redirect.
async fn groups(State(s): State<AppState>) -> Response {
    let list: Vec<serde_json::Value> =
        s.0.groups
            .iter()
            .map(|g| {
                let (role, leader) = g.node.role();
                json!({
                    "group": g.node.group(),
                    "role": role.name(),
                    "leader": leader,
                    "quiescent": g.node.is_quiescent(),
                })
            })
            .collect();
    Json(json!({ "id": s.0.node().id(), "groups": list })).into_response()
}

/// The query of `GET /status` and `GET /metrics`: which group (default:
/// the first hosted).
#[derive(Debug, Deserialize)]
struct GroupParams {
    group: Option<u64>,
}

async fn status(State(s): State<AppState>, Query(q): Query<GroupParams>, uri: Uri) -> Response {
    let g = match s.0.group(q.group) {
        Ok(g) => g,
        Err(r) => return r,
    };
    let st = match g.node.status().await {
        Ok(st) => st,
        Err(e) => return node_error(&s.0, e, &uri),
    };
    let mut body = Status::from_raft(st.id, st.group, st.raft);
    body.groups = s.0.groups.len() as u64;
    body.groups_led =
        s.0.groups
            .iter()
            .filter(|g| g.node.role().0 == raft_core::Role::Leader)
            .count() as u64;
    body.pid = Some(u64::from(s.0.pid));
    // Only while a fault filter is set, so a healthy node's answer stays
    // as it always was.
    let f = s.0.transport.filter();
    if !(f.drop_to.is_empty() && f.drop_from.is_empty() && f.delay_to.is_empty()) {
        body.filter = Some(Filter {
            drop_to: f.drop_to.iter().copied().collect(),
            drop_from: f.drop_from.iter().copied().collect(),
            delay_to_ms: f
                .delay_to
                .iter()
                .map(|(&p, d)| (p, d.as_millis() as u64))
                .collect(),
        });
    }
    Json(body).into_response()
}

async fn metrics(State(s): State<AppState>, uri: Uri) -> Response {
    let st = match s.0.node().status().await {
        Ok(st) => st,
        Err(e) => return node_error(&s.0, e, &uri),
    };
    let t = s.0.transport.stats();
    let m = st.metrics;
    let mut out = String::new();
    out.push_str("# HELP cds_role 1 for the node's current role.\n# TYPE cds_role gauge\n");
    let is = |r: raft_core::Role| u64::from(st.raft.role == r);
    for r in [
        raft_core::Role::Follower,
        raft_core::Role::PreCandidate,
        raft_core::Role::Candidate,
        raft_core::Role::Leader,
    ] {
        let _ = writeln!(out, "cds_role{{role=\"{}\"}} {}", r.name(), is(r));
    }
    let mut gauge = |name: &str, help: &str, kind: &str, v: u64| {
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "# HELP cds_{name} {help}\n# TYPE cds_{name} {kind}\ncds_{name} {v}\n"
        );
    };
    gauge(
        "is_leader",
        "1 if this node leads.",
        "gauge",
        is(raft_core::Role::Leader),
    );
    gauge(
        "is_follower",
        "1 if this node follows.",
        "gauge",
        is(raft_core::Role::Follower),
    );
    gauge("term", "Current term.", "gauge", st.raft.term);
    gauge(
        "commit_index",
        "Highest index known committed.",
        "gauge",
        st.raft.commit,
    );
    gauge(
        "applied_index",
        "Highest index applied.",
        "gauge",
        st.raft.applied,
    );
    gauge(
        "proposals_total",
        "Proposals appended as leader.",
        "counter",
        m.proposals,
    );
    gauge(
        "log_syncs_total",
        "Log syncs (fsyncs).",
        "counter",
        m.log_syncs,
    );
    gauge(
        "ready_batches_total",
        "Ready batches handled.",
        "counter",
        m.ready_batches,
    );
    gauge(
        "busy_refusals_total",
        "Proposals refused: queue full.",
        "counter",
        m.busy_refusals,
    );
    gauge(
        "dropped_inbound_total",
        "Inbound messages dropped by the node.",
        "counter",
        m.dropped_messages,
    );
    gauge(
        "inbox_bytes",
        "Bytes of inbound messages queued for the node.",
        "gauge",
        m.inbox_bytes,
    );
    gauge(
        "proposal_queue_bytes",
        "Bytes of proposals queued for the node.",
        "gauge",
        m.proposal_bytes,
    );
    gauge(
        "refused_messages_total",
        "Raft messages dropped for a term too far ahead or a sender outside the configuration.",
        "counter",
        st.raft.refused_messages,
    );
    gauge(
        "snapshots_saved_total",
        "Snapshots saved.",
        "counter",
        m.snapshots_saved,
    );
    gauge(
        "snapshots_installed_total",
        "Snapshots installed from a leader.",
        "counter",
        m.snapshots_installed,
    );
    gauge(
        "transport_sent_total",
        "Envelopes written to peers.",
        "counter",
        t.sent,
    );
    gauge(
        "transport_received_total",
        "Envelopes received.",
        "counter",
        t.received,
    );
    gauge(
        "transport_dropped_queue_full_total",
        "Envelopes dropped: peer queue full.",
        "counter",
        t.dropped_queue_full,
    );
    gauge(
        "transport_dropped_queue_bytes_total",
        "Envelopes dropped: peer queue at its byte budget.",
        "counter",
        t.dropped_queue_bytes,
    );
    gauge(
        "transport_queued_bytes",
        "Bytes of envelopes waiting in the peers' send queues.",
        "gauge",
        t.queued_bytes,
    );
    gauge(
        "transport_inbound_bytes",
        "Bytes of received envelopes waiting for the node.",
        "gauge",
        t.inbound_bytes,
    );
    gauge(
        "transport_dropped_filter_total",
        "Envelopes dropped by the fault filter.",
        "counter",
        t.dropped_filter,
    );
    let h = s.0.host.metrics();
    gauge(
        "groups",
        "Raft groups hosted by this process.",
        "gauge",
        h.groups,
    );
    gauge(
        "groups_quiescent",
        "Hosted groups quiescent here (no heartbeats, no election timer).",
        "gauge",
        h.quiescent,
    );
    gauge(
        "host_ticks_total",
        "Ticks of the host's one timer.",
        "counter",
        h.ticks,
    );
    gauge(
        "host_group_ticks_total",
        "Ticks delivered to awake groups (quiescent ones are skipped).",
        "counter",
        h.group_ticks,
    );
    gauge(
        "host_pings_sent_total",
        "Node-level liveness pings sent to peer processes.",
        "counter",
        h.pings_sent,
    );
    gauge(
        "host_peers_dead",
        "Peer processes currently declared dead by node-level liveness.",
        "gauge",
        h.peers_dead,
    );
    gauge(
        "host_dropped_unknown_group_total",
        "Envelopes for a group this process does not host.",
        "counter",
        h.dropped_unknown_group,
    );
    if let Some(hs) = &s.0.host_sync {
        let st = hs.stats();
        gauge(
            "host_log_syncs_total",
            "Whole-disk syncs made for the hosted groups' logs (one per round).",
            "counter",
            st.syncs,
        );
        gauge(
            "host_log_sync_requests_total",
            "Log syncs the hosted groups asked for (each covered by one whole-disk sync).",
            "counter",
            st.requests,
        );
    }
    for d in t.defense_metrics() {
        let kind = if d.gauge { "gauge" } else { "counter" };
        gauge(d.name, d.help, kind, d.value);
    }
    // Summed over the hosted groups' state machines.
    let load = |f: fn(&KvStats) -> &std::sync::atomic::AtomicU64| -> u64 {
        s.0.groups
            .iter()
            .map(|g| f(&g.kv_stats).load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    };
    gauge(
        "kv_sessions",
        "Client sessions the state machine holds.",
        "gauge",
        load(|k| &k.sessions),
    );
    gauge(
        "kv_session_replays_total",
        "Retried session writes found in their session's cache and not applied again (every replica counts).",
        "counter",
        load(|k| &k.replayed),
    );
    gauge(
        "kv_session_stale_total",
        "Session writes refused: a seq older than their session's last (every replica counts).",
        "counter",
        load(|k| &k.stale),
    );
    gauge(
        "kv_session_unknown_total",
        "Session writes refused: a seq above 1 for a client without a session (every replica counts).",
        "counter",
        load(|k| &k.unknown_session),
    );
    gauge(
        "kv_sessions_expired_total",
        "Sessions expired (unused for the session TTL by the log's clock).",
        "counter",
        load(|k| &k.expired),
    );
    gauge(
        "kv_sessions_evicted_total",
        "Least recently used sessions evicted past the session limit.",
        "counter",
        load(|k| &k.evicted),
    );
    gauge(
        "reads_total",
        "Linearizable reads confirmed as leader.",
        "counter",
        m.reads,
    );
    gauge(
        "lease_reads_total",
        "Reads served by the leader lease.",
        "counter",
        m.lease_reads,
    );
    gauge(
        "log_first_index",
        "First index held in the log.",
        "gauge",
        st.raft.first_index,
    );
    gauge(
        "log_last_index",
        "Last index in the log.",
        "gauge",
        st.raft.last_index,
    );
    gauge(
        "snapshot_index",
        "Index of the latest snapshot (0: none).",
        "gauge",
        st.raft.last_snapshot.unwrap_or(0),
    );
    if !st.raft.peer_match.is_empty() {
        out.push_str(
            "# HELP cds_peer_match_index Leader only: highest index known to match on each member.\n\
             # TYPE cds_peer_match_index gauge\n",
        );
        for (p, i) in &st.raft.peer_match {
            let _ = writeln!(out, "cds_peer_match_index{{peer=\"{p}\"}} {i}");
        }
        out.push_str(
            "# HELP cds_peer_lag_entries Leader only: entries each member is behind the leader's log.\n\
             # TYPE cds_peer_lag_entries gauge\n",
        );
        for (p, i) in &st.raft.peer_match {
            let lag = st.raft.last_index.saturating_sub(*i);
            let _ = writeln!(out, "cds_peer_lag_entries{{peer=\"{p}\"}} {lag}");
        }
    }
    histogram(
        &mut out,
        "log_sync_seconds",
        "Time to persist a Ready with entries (one log sync).",
        &m.log_sync_latency,
    );
    histogram(
        &mut out,
        "propose_seconds",
        "Time from proposal to applied reply, successful proposals.",
        &m.propose_latency,
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        out,
    )
        .into_response()
}

/// Writes `h` as a Prometheus histogram `cds_{name}` in seconds, with
/// cumulative buckets.
fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let _ = writeln!(out, "# HELP cds_{name} {help}\n# TYPE cds_{name} histogram");
    let mut cumulative = 0;
    for (bound, n) in HISTOGRAM_BOUNDS_US.iter().zip(&h.buckets) {
        cumulative += n;
        let le = *bound as f64 / 1e6;
        let _ = writeln!(out, "cds_{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "cds_{name}_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "cds_{name}_sum {}", h.sum_us as f64 / 1e6);
    let _ = writeln!(out, "cds_{name}_count {}", h.count);
}

/// The query of `POST /admin/transfer`.
#[derive(Debug, Deserialize)]
struct TransferParams {
    to: Option<NodeId>,
}

async fn admin_transfer(
    State(s): State<AppState>,
    Query(q): Query<TransferParams>,
    uri: Uri,
) -> Response {
    let Some(to) = q.to else {
        return error(StatusCode::BAD_REQUEST, "missing ?to=NODE_ID");
    };
    eprintln!(
        "node {}: admin: leadership transfer to {to} requested",
        s.0.node().id()
    );
    match s.0.node().transfer_leader(to).await {
        Ok(()) => Json(json!({ "ok": true, "to": to })).into_response(),
        Err(e) => node_error(&s.0, e, &uri),
    }
}

/// The body of `POST /admin/filter`: the node's whole fault filter (what is
/// not named is cleared). Unknown fields are refused rather than ignored, so
/// a typo cannot silently heal a partition.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterBody {
    /// Drop what this node sends to these peers.
    #[serde(default)]
    drop_to: BTreeSet<NodeId>,
    /// Drop what this node receives from these peers.
    #[serde(default)]
    drop_from: BTreeSet<NodeId>,
    /// Hold what this node sends to each peer this many milliseconds.
    #[serde(default)]
    delay_to_ms: BTreeMap<NodeId, u64>,
    /// Drop this percentage (0 to 100) of what this node sends to each peer.
    #[serde(default)]
    loss_to_pct: BTreeMap<NodeId, u8>,
}

async fn admin_filter(State(s): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body_or_error(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let body: FilterBody = match parse_json(&body, "filter") {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Some((p, ms)) = body
        .delay_to_ms
        .iter()
        .find(|(_, &ms)| ms > MAX_FILTER_DELAY_MS)
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("delay to {p} of {ms} ms is above the limit of {MAX_FILTER_DELAY_MS} ms"),
        );
    }
    if let Some((p, pct)) = body.loss_to_pct.iter().find(|(_, &pct)| pct > 100) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("loss to {p} of {pct}% is above 100%"),
        );
    }
    let filter = FaultFilter {
        drop_to: body.drop_to,
        drop_from: body.drop_from,
        delay_to: body
            .delay_to_ms
            .iter()
            .map(|(&p, &ms)| (p, std::time::Duration::from_millis(ms)))
            .collect(),
        loss_to: body.loss_to_pct.clone(),
    };
    let echo = json!({
        "drop_to": filter.drop_to,
        "drop_from": filter.drop_from,
        "delay_to_ms": body.delay_to_ms,
        "loss_to_pct": body.loss_to_pct,
    });
    s.0.transport.set_filter(filter);
    eprintln!("node {}: fault filter set to {echo}", s.0.node().id());
    Json(echo).into_response()
}

/// The body of `POST /admin/change`.
#[derive(Debug, Deserialize)]
struct ChangeBody {
    voters: Vec<NodeId>,
}

async fn admin_change(
    State(s): State<AppState>,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body_or_error(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let body: ChangeBody = match parse_json(&body, "change") {
        Ok(b) => b,
        Err(r) => return r,
    };
    eprintln!(
        "node {}: admin: voters {:?} requested",
        s.0.node().id(),
        body.voters
    );
    match s.0.node().change_peers(body.voters.clone()).await {
        Ok(()) => Json(json!({ "ok": true, "voters": body.voters })).into_response(),
        Err(e) => node_error(&s.0, e, &uri),
    }
}

/// The query of `POST /admin/learner`.
#[derive(Debug, Deserialize)]
struct LearnerParams {
    add: Option<NodeId>,
    remove: Option<NodeId>,
}

async fn admin_learner(
    State(s): State<AppState>,
    Query(q): Query<LearnerParams>,
    uri: Uri,
) -> Response {
    let me = s.0.node().id();
    let r = match (q.add, q.remove) {
        (Some(id), None) => {
            eprintln!("node {me}: admin: learner {id} to be added");
            s.0.node().add_learner(id).await
        }
        (None, Some(id)) => {
            eprintln!("node {me}: admin: learner {id} to be removed");
            s.0.node().remove_learner(id).await
        }
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "give exactly one of ?add=N or ?remove=N",
            )
        }
    };
    match r {
        Ok(()) => Json(json!({ "ok": true })).into_response(),
        Err(e) => node_error(&s.0, e, &uri),
    }
}

/// `POST /admin/snapshot`: this node snapshots its state machine now and
/// compacts its log behind it (any member, leader or not). Answers the
/// index the latest stored snapshot covers.
async fn admin_snapshot(State(s): State<AppState>, uri: Uri) -> Response {
    match s.0.node().snapshot().await {
        Ok(index) => Json(json!({ "snapshot_index": index })).into_response(),
        Err(e) => node_error(&s.0, e, &uri),
    }
}

/// The body of `POST /admin/peer`.
#[derive(Debug, Deserialize)]
struct PeerBody {
    id: NodeId,
    raft: SocketAddr,
    http: SocketAddr,
}

/// Tells this node where a member listens: a node added after start is
/// unknown to the others' transports until they are told. `cdsctl kv
/// add-node` writes the new member into every node's config file, then
/// calls this on every running node before the membership change.
///
/// The rule: the node reads its config file again and accepts the request
/// only if the file's `peers` lists this id with exactly these addresses
/// (`409` otherwise). So an address is never taken from the request alone:
/// pointing a member at another listener (and receiving the leader's
/// handshake, token included) needs both the admin token and write access
/// to the node's private config file.
async fn admin_peer(State(s): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body_or_error(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let body: PeerBody = match parse_json(&body, "peer") {
        Ok(b) => b,
        Err(r) => return r,
    };
    if body.id == 0 {
        return error(StatusCode::BAD_REQUEST, "0 is not a valid node id");
    }
    let path = s.0.config_path.clone();
    let cfg = match tokio::task::spawn_blocking(move || NodeFileConfig::load(&path)).await {
        Ok(Ok(cfg)) => cfg,
        Ok(Err(e)) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read this node's config again: {e:#}"),
            )
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let listed = cfg.peers.get(&body.id).map(|a| (a.raft, a.http));
    if cfg.id != s.0.node().id() || listed != Some((body.raft, body.http)) {
        let what = match listed {
            Some((raft, http)) => format!("lists node {} at raft {raft} http {http}", body.id),
            None => format!("does not list node {}", body.id),
        };
        return error(
            StatusCode::CONFLICT,
            format!(
                "refused: this node's config ({}) {what}; a peer's addresses are taken \
                 only as its config lists them",
                s.0.config_path.display()
            ),
        );
    }
    if body.id != s.0.node().id() {
        s.0.transport.set_peer(body.id, body.raft);
    }
    s.0.http_peers
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(body.id, body.http);
    eprintln!(
        "node {}: peer {} at raft {} http {}",
        s.0.node().id(),
        body.id,
        body.raft,
        body.http
    );
    Json(json!({ "ok": true })).into_response()
}
