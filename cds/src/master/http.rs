//! The Master's HTTP/JSON server: the handlers of [`super::api`] over one
//! Master replica.
//!
//! Changes go through the Master's Raft log (`propose`); reads of the
//! replicated state are made after a ReadIndex round on the leader, so
//! they see every change acknowledged before them. What the leader learns
//! from heartbeats (which replica leads each group, when each server was
//! last heard) is soft state: it is not replicated, and a new leading
//! Master rebuilds it from the next round of heartbeats.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use raft_core::runtime::node::{NodeError, NodeHandle};

use super::api::{
    Allocate, ApiError, Assignment, CloneRequest, ClusterView, ConfReport, CreateGroups,
    CreateVolume, DiskReport, Heartbeat, InstallProgress, InstallView, IoRates, IoTotals,
    MasterStatus, PurgeOrder, Resize, SnapshotName, TaskProgress, MAX_BODY_BYTES,
};
use super::balance;
use super::snapshot::{SnapshotCommand, Task, TaskState};

/// The longest `GET /v1/tasks?wait_ms=` waits (under the clients' 2 s
/// exchange timeout).
pub const MAX_TASK_WAIT_MS: u64 = 1_500;

/// `GET /v1/tasks` query.
#[derive(Debug, serde::Deserialize)]
struct TaskQuery {
    wait_ms: Option<u64>,
}
use super::state::{MasterCommand, MasterReply, Server, Volume};
use super::state_machine::{decode_reply, encode, SharedState};
use crate::kv::http::{has_admin_token, host_is_ours};

/// One Master replica's API.
pub struct MasterApi {
    pub id: u64,
    pub node: NodeHandle,
    pub state: SharedState,
    /// Every Master replica's HTTP address, by id (for `not_leader`).
    pub peers_http: BTreeMap<u64, String>,
    pub http_addr: SocketAddr,
    pub token: String,
    pub admin_token: String,
    pub(super) soft: Mutex<Soft>,
    /// Woken when this replica starts a snapshot task: a SnapshotWorker
    /// waiting on `GET /v1/tasks?wait_ms=` hears of it at once.
    task_started: tokio::sync::Notify,
}

/// What heartbeats told this replica (meaningful while it leads).
#[derive(Default)]
pub(super) struct Soft {
    /// When this replica started leading (as the executor loop saw it);
    /// `None` while it does not lead. Everything below is cleared then.
    pub(super) since: Option<Instant>,
    /// Group to (server, term) of the latest leader reported.
    pub(super) leaders: BTreeMap<u64, (u64, u64)>,
    pub(super) heard: BTreeMap<u64, Instant>,
    /// Each group's configuration as its latest leader reported it.
    pub(super) confs: BTreeMap<u64, ConfReport>,
    /// Replicas reported failed, by server (its latest heartbeat's).
    pub(super) failed: BTreeMap<u64, BTreeSet<u64>>,
    /// The groups each server reported hosting (its latest heartbeat's).
    pub(super) hosted: BTreeMap<u64, BTreeSet<u64>>,
    /// Each server's replicas by group, with their disk.
    pub(super) disks: BTreeMap<u64, BTreeMap<u64, u32>>,
    /// Each server's disks as its latest heartbeat reported them.
    pub(super) disk_health: BTreeMap<u64, Vec<DiskReport>>,
    /// Each server's latest IO totals and when they came, and the rates
    /// between its last two heartbeats.
    io: BTreeMap<u64, (Instant, IoTotals)>,
    io_rates: BTreeMap<u64, IoRates>,
    /// Snapshot installs each server reported receiving, by group.
    installs: BTreeMap<u64, BTreeMap<u64, InstallProgress>>,
    /// Groups whose lost leader this Master asked a replica to replace,
    /// and when (asked again only after `ELECT_AFTER`).
    pub(super) elect_asked: BTreeMap<u64, Instant>,
    /// What the scheduler found at its latest round.
    pub(super) plan: Option<super::schedule::Plan>,
    /// Groups whose leadership this Master asked to move, and when: left
    /// alone until the heartbeats can show the move.
    moved: BTreeMap<u64, Instant>,
}

/// A server not heard from for this long takes no leaderships.
pub(super) const LIVE_WITHIN: Duration = Duration::from_secs(2);
/// A group whose leadership was asked to move is not asked again for this
/// long.
const MOVE_SETTLE: Duration = Duration::from_secs(3);
/// Leaderships one server is asked to hand over per heartbeat.
const MOVES_PER_HEARTBEAT: usize = 1;
/// How long a Master must have led before it orders replica GC: every
/// live server heard at least once (heartbeats come every second).
pub(super) const GC_AFTER_LEADING: Duration = Duration::from_secs(3);
/// How long a group may go without a leader known to this Master (itself
/// leading that long) before one replica is asked to campaign.
const ELECT_AFTER: Duration = Duration::from_secs(3);

impl MasterApi {
    pub fn new(
        id: u64,
        node: NodeHandle,
        state: SharedState,
        peers_http: BTreeMap<u64, String>,
        http_addr: SocketAddr,
        token: String,
        admin_token: String,
    ) -> Arc<MasterApi> {
        Arc::new(MasterApi {
            id,
            node,
            state,
            peers_http,
            http_addr,
            token,
            admin_token,
            soft: Mutex::default(),
            task_started: tokio::sync::Notify::new(),
        })
    }
}

type Api = Arc<MasterApi>;

/// The router: every path of [`super::api`], behind the token checks.
pub fn router(api: Api) -> Router {
    let admin = Router::new()
        .route("/v1/groups", post(create_groups))
        .route("/v1/volumes", post(create_volume))
        .route("/v1/volumes/{name}/resize", post(resize_volume))
        .route("/v1/volumes/{name}", axum::routing::delete(delete_volume))
        .route("/v1/volumes/{name}/snapshots", post(create_snapshot))
        .route(
            "/v1/volumes/{name}/snapshots/{snapshot}",
            axum::routing::delete(delete_snapshot),
        )
        .route("/v1/volumes/{name}/rollback", post(rollback))
        .route("/v1/volumes/{name}/clone", post(clone_volume))
        .route("/v1/tasks/{id}/progress", post(task_progress))
        .route("/v1/tasks/{id}/finish", post(task_finish))
        .route("/v1/servers/{id}/drain", post(drain_server))
        .route("/v1/servers/{id}", axum::routing::delete(remove_server))
        .route_layer(middleware::from_fn_with_state(api.clone(), admin_only));
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/cluster", get(cluster))
        .route("/v1/servers", post(register))
        .route("/v1/heartbeat", post(heartbeat))
        .route("/v1/volumes", get(list_volumes))
        .route("/v1/volumes/{name}", get(get_volume))
        .route("/v1/volumes/{name}/open", post(open_volume))
        .route("/v1/volumes/{name}/allocate", post(allocate))
        .route("/v1/tasks", get(list_tasks))
        .route("/v1/tasks/{id}", get(get_task))
        .merge(admin)
        .fallback(|| async { fail(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .layer(middleware::from_fn_with_state(api.clone(), authenticate))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api)
}

fn fail(status: StatusCode, kind: &str, error: impl Into<String>) -> Response {
    (
        status,
        Json(ApiError {
            error: error.into(),
            kind: kind.to_string(),
            leader_http: None,
        }),
    )
        .into_response()
}

/// Every request: a Host naming this server (no DNS rebinding from a
/// browser) and one of the two tokens.
async fn authenticate(State(api): State<Api>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
    match host {
        Some(h) if host_is_ours(&h, api.http_addr) => {}
        _ => {
            return fail(
                StatusCode::MISDIRECTED_REQUEST,
                "bad_request",
                format!("the Host header must name this Master ({})", api.http_addr),
            )
        }
    }
    let h = req.headers();
    if !has_admin_token(h, &api.token) && !has_admin_token(h, &api.admin_token) {
        return unauthorized("Authorization: Bearer <token> (the cluster's token) is required");
    }
    next.run(req).await
}

/// Admin paths: the admin token only.
async fn admin_only(State(api): State<Api>, req: Request, next: Next) -> Response {
    if !has_admin_token(req.headers(), &api.admin_token) {
        return unauthorized("this changes the cluster: Authorization: Bearer <admin_token>");
    }
    next.run(req).await
}

fn unauthorized(why: &str) -> Response {
    let mut r = fail(StatusCode::UNAUTHORIZED, "unauthorized", why);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

impl MasterApi {
    fn not_leader(&self, leader: Option<u64>) -> Response {
        let leader_http = leader.and_then(|l| self.peers_http.get(&l).cloned());
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ApiError {
                error: format!(
                    "Master {} does not lead (leader: {})",
                    self.id,
                    leader.map_or("unknown".to_string(), |l| l.to_string())
                ),
                kind: "not_leader".into(),
                leader_http,
            }),
        )
            .into_response()
    }

    fn node_error(&self, e: NodeError) -> Response {
        match e {
            NodeError::NotLeader { leader } => self.not_leader(leader),
            NodeError::ReadLost => self.not_leader(None),
            NodeError::LeadershipLost { .. } | NodeError::Failed(_) => fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "unknown_outcome",
                format!("{e} (the change may or may not have been made)"),
            ),
            NodeError::NotCommitted { .. } | NodeError::Busy { .. } | NodeError::Stopped => fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
            other => fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                other.to_string(),
            ),
        }
    }

    /// Commits `cmd` and returns what it came to.
    pub(super) async fn run(&self, cmd: MasterCommand) -> Result<MasterReply, Response> {
        let out = self
            .node
            .propose(encode(&cmd))
            .await
            .map_err(|e| self.node_error(e))?;
        let reply = decode_reply(&out.result)
            .map_err(|e| fail(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))?;
        match reply {
            MasterReply::Error { error } => {
                let kind = serde_json::to_value(&error)
                    .ok()
                    .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_string))
                    .unwrap_or_else(|| "refused".into());
                let status = match error {
                    super::MasterError::NoVolume { .. } => StatusCode::NOT_FOUND,
                    super::MasterError::NoSnapshot { .. } | super::MasterError::NoTask { .. } => {
                        StatusCode::NOT_FOUND
                    }
                    super::MasterError::VolumeExists { .. }
                    | super::MasterError::ServerConflict { .. }
                    | super::MasterError::SnapshotExists { .. }
                    | super::MasterError::TaskUnderWay { .. }
                    | super::MasterError::Busy { .. }
                    | super::MasterError::SnapshotNotReady { .. }
                    | super::MasterError::HasClones { .. } => StatusCode::CONFLICT,
                    super::MasterError::NotEnoughServers { .. }
                    | super::MasterError::NoGroups { .. } => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::BAD_REQUEST,
                };
                Err(fail(status, &kind, error.to_string()))
            }
            ok => Ok(ok),
        }
    }

    /// Waits until this replica may answer from its state linearizably.
    pub(super) async fn read_point(&self) -> Result<(), Response> {
        self.node
            .read()
            .await
            .map(|_| ())
            .map_err(|e| self.node_error(e))
    }

    pub(super) fn with_state<T>(&self, f: impl FnOnce(&super::MasterState) -> T) -> T {
        f(&self.state.read().unwrap_or_else(PoisonError::into_inner))
    }
}

fn volume_reply(r: MasterReply) -> Response {
    match r {
        MasterReply::Volume { volume } => Json(volume).into_response(),
        MasterReply::Groups { groups } => Json(groups).into_response(),
        MasterReply::Ok => Json(serde_json::json!({})).into_response(),
        MasterReply::Task { task } => Json(task).into_response(),
        MasterReply::Error { error } => fail(StatusCode::BAD_REQUEST, "refused", error.to_string()),
    }
}

async fn status(State(api): State<Api>) -> Response {
    let s = match api.node.status().await {
        Ok(s) => s,
        Err(e) => return api.node_error(e),
    };
    let (volumes, servers, groups) =
        api.with_state(|st| (st.volumes.len(), st.servers.len(), st.groups.len()));
    Json(MasterStatus {
        id: api.id,
        role: s.raft.role.name().to_string(),
        term: s.raft.term,
        leader: s.raft.leader,
        leader_http: s.raft.leader.and_then(|l| api.peers_http.get(&l).cloned()),
        applied: s.raft.applied,
        pid: std::process::id(),
        volumes,
        servers,
        groups,
    })
    .into_response()
}

async fn cluster(State(api): State<Api>) -> Response {
    if let Err(r) = api.read_point().await {
        return r;
    }
    let (servers, groups) = api.with_state(|st| {
        (
            st.servers.values().cloned().collect::<Vec<_>>(),
            st.groups.values().cloned().collect::<Vec<_>>(),
        )
    });
    let soft = api.soft.lock().unwrap_or_else(PoisonError::into_inner);
    let leaders = soft.leaders.iter().map(|(&g, &(s, _))| (g, s)).collect();
    let last_heard_ms = soft
        .heard
        .iter()
        .map(|(&s, t)| (s, t.elapsed().as_millis() as u64))
        .collect();
    let (degraded, stuck) = soft
        .plan
        .as_ref()
        .map(|p| (p.degraded.clone(), p.stuck.clone()))
        .unwrap_or_default();
    let replica_disks = soft
        .disks
        .iter()
        .flat_map(|(&server, gs)| {
            gs.iter()
                .map(move |(&group, &disk)| super::api::ReplicaDisk {
                    group,
                    server,
                    disk,
                })
        })
        .collect();
    Json(ClusterView {
        servers,
        groups,
        leaders,
        last_heard_ms,
        degraded,
        stuck,
        replica_disks,
        disk_health: soft.disk_health.clone(),
        io_rates: soft.io_rates.clone(),
        installs: soft
            .installs
            .iter()
            // A silent server's last report is not news of an install.
            .filter(|(s, _)| soft.heard.get(s).is_some_and(|t| t.elapsed() < LIVE_WITHIN))
            .flat_map(|(&server, gs)| {
                gs.iter().map(move |(&group, &progress)| InstallView {
                    group,
                    server,
                    progress,
                })
            })
            .collect(),
    })
    .into_response()
}

async fn register(State(api): State<Api>, Json(server): Json<Server>) -> Response {
    match api.run(MasterCommand::RegisterServer { server }).await {
        Ok(r) => volume_reply(r),
        Err(r) => r,
    }
}

async fn heartbeat(State(api): State<Api>, Json(hb): Json<Heartbeat>) -> Response {
    // Only the leader keeps the soft state; it answers from committed
    // state after a read point, so a server never hears of a group that
    // a later leader would not know.
    if let Err(r) = api.read_point().await {
        return r;
    }
    // One read of the state for the whole answer: its groups and its GC
    // orders must agree.
    let answer = api.with_state(|st| {
        if !st.servers.contains_key(&hb.server) {
            return None;
        }
        let all_groups: Vec<super::Group> = st.groups.values().cloned().collect();
        Some((
            all_groups,
            Assignment {
                groups: st
                    .groups
                    .values()
                    .filter(|g| g.involves(hb.server))
                    .cloned()
                    .collect(),
                servers: st.servers.values().cloned().collect(),
                purge: st
                    .deleted
                    .iter()
                    .filter_map(|(&volume, groups)| {
                        let mine: Vec<u64> = groups
                            .iter()
                            .copied()
                            .filter(|g| {
                                st.groups
                                    .get(g)
                                    .is_some_and(|g| g.replicas.contains(&hb.server))
                            })
                            .collect();
                        (!mine.is_empty()).then_some(PurgeOrder {
                            volume,
                            groups: mine,
                        })
                    })
                    .collect(),
                transfers: Vec::new(),
                gc: Vec::new(),
                elect: Vec::new(),
            },
        ))
    });
    let Some((all_groups, mut answer)) = answer else {
        return fail(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("server {} is not registered", hb.server),
        );
    };
    let mut soft = api.soft.lock().unwrap_or_else(PoisonError::into_inner);
    soft.heard.insert(hb.server, Instant::now());
    soft.hosted
        .insert(hb.server, hb.replicas.iter().map(|r| r.group).collect());
    soft.disk_health.insert(hb.server, hb.disks.clone());
    let now = Instant::now();
    if let Some((at, before)) = soft.io.insert(hb.server, (now, hb.io)) {
        let rates = IoRates::between(before, hb.io, now.duration_since(at).as_secs_f64());
        soft.io_rates.insert(hb.server, rates);
    }
    soft.disks.insert(
        hb.server,
        hb.replicas
            .iter()
            .filter_map(|r| r.disk.map(|d| (r.group, d)))
            .collect(),
    );
    soft.installs.insert(
        hb.server,
        hb.replicas
            .iter()
            .filter_map(|r| r.installing.map(|p| (r.group, p)))
            .collect(),
    );
    for r in &hb.replicas {
        let known = soft.leaders.get(&r.group).copied();
        if r.leader && known.is_none_or(|(_, t)| t <= r.term) {
            soft.leaders.insert(r.group, (hb.server, r.term));
            if let Some(c) = &r.conf {
                soft.confs.insert(r.group, c.clone());
            }
        } else if !r.leader && known.is_some_and(|(s, t)| s == hb.server && t <= r.term) {
            soft.leaders.remove(&r.group);
        }
    }
    let failed: BTreeSet<u64> = hb
        .replicas
        .iter()
        .filter(|r| r.failed.is_some())
        .map(|r| r.group)
        .collect();
    // A leader whose replica failed leads no more; its process lives on,
    // so node-level liveness does not tell a quiescent group's followers.
    for g in &failed {
        if soft.leaders.get(g).is_some_and(|&(s, _)| s == hb.server) {
            soft.leaders.remove(g);
        }
    }
    soft.failed.insert(hb.server, failed);
    // Groups with no known leader: the lowest live replica that reported
    // hosting the group (and not failed) is asked to campaign.
    let now = Instant::now();
    let led_long = soft
        .since
        .is_some_and(|t| now.duration_since(t) >= ELECT_AFTER);
    if led_long {
        let mut elect = Vec::new();
        for g in all_groups
            .iter()
            .filter(|g| g.replicas.contains(&hb.server))
        {
            if soft.leaders.contains_key(&g.id)
                || soft
                    .elect_asked
                    .get(&g.id)
                    .is_some_and(|t| now.duration_since(*t) < ELECT_AFTER)
            {
                continue;
            }
            let chosen = g.replicas.iter().copied().find(|r| {
                soft.heard
                    .get(r)
                    .is_some_and(|t| now.duration_since(*t) < LIVE_WITHIN)
                    && soft.hosted.get(r).is_some_and(|h| h.contains(&g.id))
                    && soft.failed.get(r).is_none_or(|f| !f.contains(&g.id))
            });
            if chosen == Some(hb.server) {
                elect.push(g.id);
            }
        }
        for g in &elect {
            soft.elect_asked.insert(*g, now);
        }
        answer.elect = elect;
    }
    // Replica GC: replicas this server reported that no group gives it,
    // once this Master has led for a full round of heartbeats (so the
    // committed state it answers from is one every server has seen).
    let settled = soft.since.is_some_and(|t| t.elapsed() >= GC_AFTER_LEADING);
    if settled {
        answer.gc = hb
            .replicas
            .iter()
            .filter_map(|r| {
                let g = all_groups.iter().find(|g| g.id == r.group)?;
                super::moves::gc_order(hb.server, g, soft.confs.get(&g.id))
            })
            .collect();
    }
    // Leader balance over every group of the committed state, with the
    // leaders and liveness the heartbeats told this Master.
    let now = Instant::now();
    soft.moved
        .retain(|_, at| now.duration_since(*at) < MOVE_SETTLE);
    let live: BTreeSet<u64> = soft
        .heard
        .iter()
        .filter(|(_, at)| now.duration_since(**at) < LIVE_WITHIN)
        .map(|(&s, _)| s)
        .collect();
    let leaders: BTreeMap<u64, u64> = soft.leaders.iter().map(|(&g, &(s, _))| (g, s)).collect();
    let skip: BTreeSet<u64> = soft.moved.keys().copied().collect();
    answer.transfers = balance::leader_moves(
        hb.server,
        &all_groups,
        &leaders,
        &live,
        &skip,
        MOVES_PER_HEARTBEAT,
    );
    for m in &answer.transfers {
        soft.moved.insert(m.group, now);
    }
    Json(answer).into_response()
}

async fn create_groups(State(api): State<Api>, Json(req): Json<CreateGroups>) -> Response {
    if req.count == 0 || req.count > super::state::MAX_GROUPS_PER_REQUEST {
        return fail(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!(
                "count must be 1 to {}",
                super::state::MAX_GROUPS_PER_REQUEST
            ),
        );
    }
    match api
        .run(MasterCommand::CreateGroups {
            count: req.count,
            replication: req.replication,
            pool: req.pool,
        })
        .await
    {
        Ok(r) => volume_reply(r),
        Err(r) => r,
    }
}

async fn drain_server(
    State(api): State<Api>,
    Path(id): Path<u64>,
    Json(req): Json<super::api::DrainRequest>,
) -> Response {
    let cmd = MasterCommand::Move(super::moves::MoveCommand::Drain {
        server: id,
        drained: req.drained,
    });
    match api.run(cmd).await {
        Ok(r) => volume_reply(r),
        Err(r) => r,
    }
}

async fn remove_server(State(api): State<Api>, Path(id): Path<u64>) -> Response {
    let cmd = MasterCommand::Move(super::moves::MoveCommand::RemoveServer { server: id });
    match api.run(cmd).await {
        Ok(r) => volume_reply(r),
        Err(r) => r,
    }
}

async fn list_volumes(State(api): State<Api>) -> Response {
    if let Err(r) = api.read_point().await {
        return r;
    }
    let vols: Vec<Volume> = api.with_state(|st| st.volumes.values().cloned().collect());
    Json(vols).into_response()
}

async fn get_volume(State(api): State<Api>, Path(name): Path<String>) -> Response {
    if let Err(r) = api.read_point().await {
        return r;
    }
    match api.with_state(|st| st.volumes.get(&name).cloned()) {
        Some(v) => Json(v).into_response(),
        None => fail(
            StatusCode::NOT_FOUND,
            "no_volume",
            format!("no volume named {name:?}"),
        ),
    }
}

async fn create_volume(State(api): State<Api>, Json(req): Json<CreateVolume>) -> Response {
    let cmd = MasterCommand::CreateVolume {
        name: req.name,
        size: req.size,
        block_size: req.block_size,
        owner: req.owner,
        pool: req.pool,
    };
    match api.run(cmd).await {
        Ok(r) => volume_reply(r),
        Err(r) => r,
    }
}

async fn resize_volume(
    State(api): State<Api>,
    Path(name): Path<String>,
    Json(req): Json<Resize>,
) -> Response {
    match api
        .run(MasterCommand::ResizeVolume {
            name,
            size: req.size,
        })
        .await
    {
        Ok(r) => volume_reply(r),
        Err(r) => r,
    }
}

async fn delete_volume(State(api): State<Api>, Path(name): Path<String>) -> Response {
    match api.run(MasterCommand::DeleteVolume { name }).await {
        Ok(r) => volume_reply(r),
        Err(r) => r,
    }
}

async fn open_volume(State(api): State<Api>, Path(name): Path<String>) -> Response {
    match api.run(MasterCommand::OpenVolume { name }).await {
        Ok(r) => volume_reply(r),
        Err(r) => r,
    }
}

async fn allocate(
    State(api): State<Api>,
    Path(name): Path<String>,
    Json(req): Json<Allocate>,
) -> Response {
    match api
        .run(MasterCommand::AllocateBlocks {
            name,
            blocks: req.blocks,
        })
        .await
    {
        Ok(r) => volume_reply(r),
        Err(r) => r,
    }
}

/// Milliseconds since the Unix epoch, for the records' timestamps (the
/// proposer's clock: the state machine itself reads no clock).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn snapshot_cmd(api: &Api, cmd: SnapshotCommand) -> Response {
    match api.run(MasterCommand::Snapshot(cmd)).await {
        Ok(r) => {
            if let MasterReply::Task { task } = &r {
                if task.state == TaskState::Running {
                    api.task_started.notify_waiters();
                }
            }
            volume_reply(r)
        }
        Err(r) => r,
    }
}

async fn create_snapshot(
    State(api): State<Api>,
    Path(volume): Path<String>,
    Json(req): Json<SnapshotName>,
) -> Response {
    let cmd = SnapshotCommand::Create {
        volume,
        snapshot: req.snapshot,
        now_ms: now_ms(),
    };
    snapshot_cmd(&api, cmd).await
}

async fn delete_snapshot(
    State(api): State<Api>,
    Path((volume, snapshot)): Path<(String, String)>,
) -> Response {
    let cmd = SnapshotCommand::Delete {
        volume,
        snapshot,
        now_ms: now_ms(),
    };
    snapshot_cmd(&api, cmd).await
}

async fn rollback(
    State(api): State<Api>,
    Path(volume): Path<String>,
    Json(req): Json<SnapshotName>,
) -> Response {
    let cmd = SnapshotCommand::Rollback {
        volume,
        snapshot: req.snapshot,
        now_ms: now_ms(),
    };
    snapshot_cmd(&api, cmd).await
}

async fn clone_volume(
    State(api): State<Api>,
    Path(volume): Path<String>,
    Json(req): Json<CloneRequest>,
) -> Response {
    let cmd = SnapshotCommand::Clone {
        volume,
        snapshot: req.snapshot,
        clone: req.clone,
        owner: req.owner,
        now_ms: now_ms(),
    };
    snapshot_cmd(&api, cmd).await
}

async fn task_progress(
    State(api): State<Api>,
    Path(task): Path<u64>,
    Json(req): Json<TaskProgress>,
) -> Response {
    let cmd = SnapshotCommand::Progress {
        task,
        done: req.done,
        total: req.total,
    };
    snapshot_cmd(&api, cmd).await
}

async fn task_finish(State(api): State<Api>, Path(task): Path<u64>) -> Response {
    let cmd = SnapshotCommand::Finish {
        task,
        now_ms: now_ms(),
    };
    snapshot_cmd(&api, cmd).await
}

/// `GET /v1/tasks[?wait_ms=N]`: with `wait_ms` (at most
/// [`MAX_TASK_WAIT_MS`]) and no task under way, the answer waits until
/// one starts here or the time passes (a SnapshotWorker's long poll).
async fn list_tasks(State(api): State<Api>, Query(q): Query<TaskQuery>) -> Response {
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(0).min(MAX_TASK_WAIT_MS));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Registered before the state is read: a task started in between
        // still wakes this wait.
        let started = api.task_started.notified();
        if let Err(r) = api.read_point().await {
            return r;
        }
        let (tasks, running) = api.with_state(|st| {
            (
                st.tasks.values().cloned().collect::<Vec<Task>>(),
                st.running_tasks().next().is_some(),
            )
        });
        if running || tokio::time::Instant::now() >= deadline {
            return Json(tasks).into_response();
        }
        let _ = tokio::time::timeout_at(deadline, started).await;
    }
}

async fn get_task(State(api): State<Api>, Path(id): Path<u64>) -> Response {
    if let Err(r) = api.read_point().await {
        return r;
    }
    match api.with_state(|st| st.tasks.get(&id).cloned()) {
        Some(t) => Json(t).into_response(),
        None => fail(StatusCode::NOT_FOUND, "no_task", format!("no task {id}")),
    }
}
