//! The Executor: the leading Master's loop that runs the scheduler
//! (`schedule.rs`) and records its decisions in the Master's log.
//!
//! It is a component of the Master, not a process of its own: the plans it
//! records are part of the replicated state (`moves.rs`), so a Master
//! restart or a new leader resumes them, and the steps themselves are
//! taken by each group's leader BlockServer from its heartbeat answer. A
//! separate process would add a third party to agree with and nothing the
//! replicated plan does not already give.
//!
//! Every round it checks that this replica leads (a new leader starts its
//! soft state afresh and waits the grace period before it calls a server
//! dead), builds the [`View`] from heartbeats, and proposes what the
//! scheduler decided, one command at a time (each is checked again by the
//! state machine, so a stale decision is refused, never applied twice).

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use raft_core::Role;

use super::api::DiskHealth;
use super::http::{MasterApi, Soft, LIVE_WITHIN};
use super::moves::MoveCommand;
use super::schedule::{self, Heard, Limits, View};
use super::state::{MasterCommand, MasterReply};

/// How often the scheduler runs.
pub const ROUND: Duration = Duration::from_millis(500);

/// Runs the scheduler forever on `api`'s replica (acting only while it
/// leads). `grace`: how long a server may go unheard before its replicas
/// are repaired elsewhere.
pub async fn run(api: Arc<MasterApi>, grace: Duration, limits: Limits) {
    loop {
        tokio::time::sleep(ROUND).await;
        let leads = api.node.role().0 == Role::Leader;
        {
            let mut soft = api.soft.lock().unwrap_or_else(PoisonError::into_inner);
            if !leads {
                *soft = Soft::default();
                continue;
            }
            if soft.since.is_none() {
                *soft = Soft::default();
                soft.since = Some(Instant::now());
            }
        }
        if api.read_point().await.is_err() {
            continue;
        }
        let plan = {
            let soft = api.soft.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let led_long = soft.since.is_some_and(|t| now.duration_since(t) >= grace);
            let usable = soft
                .disk_health
                .iter()
                .map(|(&s, ds)| (s, ds.iter().map(|d| d.state == DiskHealth::Ok).collect()))
                .collect();
            let live = |s: u64| {
                soft.heard
                    .get(&s)
                    .is_some_and(|at| now.duration_since(*at) < LIVE_WITHIN)
            };
            let dead = |s: u64| {
                led_long
                    && soft
                        .heard
                        .get(&s)
                        .is_none_or(|at| now.duration_since(*at) >= grace)
            };
            api.with_state(|st| {
                let view = View::from_heard(
                    st,
                    &Heard {
                        live: &live,
                        dead: &dead,
                        failed: &soft.failed,
                        hosted: &soft.hosted,
                        confs: &soft.confs,
                        usable: &usable,
                    },
                );
                schedule::plan(st, &view, limits, now_ms())
            })
        };
        for c in &plan.commands {
            match api.run(MasterCommand::Move(c.clone())).await {
                Ok(MasterReply::Ok) => eprintln!("master {}: {}", api.id, describe(c)),
                Ok(r) => eprintln!("master {}: {} refused: {r:?}", api.id, describe(c)),
                Err(_) => break,
            }
        }
        api.soft.lock().unwrap_or_else(PoisonError::into_inner).plan = Some(plan);
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One line for the log.
pub fn describe(c: &MoveCommand) -> String {
    match c {
        MoveCommand::Start { group, mv } => format!(
            "group {group}: {} move of the replica on {} to {} started",
            mv.reason.as_str(),
            mv.from,
            mv.to
        ),
        MoveCommand::Finish {
            group,
            voters,
            conf_index,
        } => format!("group {group}: move done, voters {voters:?} (epoch {conf_index})"),
        MoveCommand::Abandon { group } => format!("group {group}: move abandoned (target lost)"),
        MoveCommand::Record {
            group,
            voters,
            conf_index,
        } => format!("group {group}: voters {voters:?} recorded as its leader reports them (epoch {conf_index})"),
        MoveCommand::Drain { server, drained } => format!(
            "server {server}: {}",
            if *drained { "draining" } else { "undrained" }
        ),
        MoveCommand::RemoveServer { server } => format!("server {server}: removed"),
    }
}
