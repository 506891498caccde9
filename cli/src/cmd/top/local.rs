//! The local cluster as a [`Source`]: the pollers' observations and the
//! nodes' traces, and actions run one at a time on a worker thread through
//! the same functions as the `cdsctl kv` commands.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::keys::Action;
use super::model::LoadObs;
use super::source::{Job, Report, Source, Update};
use super::{now_us, poll};
use crate::cmd::kv::bench::{Background, LiveStats};
use crate::cmd::kv::{self, node_program};
use cds::devcluster as cluster;
use cds::devcluster::directory::ClusterFile;

/// How long an action that waits for the cluster (restart, transfer,
/// membership changes) may take, as the matching command's default.
const ACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// What the worker tells the UI thread.
enum WorkerReport {
    /// An action's start or outcome.
    Action(Report),
    /// The load generator started (with its counters) or stopped.
    Load(Option<Arc<LiveStats>>),
}

/// The running load generator as the UI tracks it.
struct LoadTrack {
    stats: Arc<LiveStats>,
    clients: usize,
}

/// The cluster in a directory, watched by pollers and driven by a worker.
pub struct LocalSource {
    poller: poll::Poller,
    jobs: Sender<Job>,
    results: Receiver<WorkerReport>,
    load: Option<LoadTrack>,
    load_clients: usize,
}

impl LocalSource {
    /// Starts polling the cluster in `dir` every `refresh` and the action
    /// worker; the load generator (the `l` key) runs `clients` clients
    /// writing `value_size`-byte values.
    pub fn start(
        dir: PathBuf,
        refresh: Duration,
        clients: usize,
        value_size: usize,
    ) -> Result<LocalSource> {
        let poller = poll::Poller::start(dir.clone(), refresh);
        let (jobs, results) = start_worker(dir, clients, value_size)?;
        Ok(LocalSource {
            poller,
            jobs,
            results,
            load: None,
            load_clients: clients,
        })
    }
}

impl Source for LocalSource {
    fn update(&mut self) -> Update {
        let (nodes, events, error) = self.poller.take();
        let now = now_us();
        Update {
            now_us: now,
            nodes,
            events,
            error,
            load: self.load.as_ref().map(|l| l.observe(now)),
        }
    }

    fn submit(&mut self, job: Job) -> Result<(), String> {
        self.jobs
            .send(job)
            .map_err(|_| "the action worker has stopped".to_owned())
    }

    fn reports(&mut self) -> Vec<Report> {
        let mut out = Vec::new();
        while let Ok(r) = self.results.try_recv() {
            match r {
                WorkerReport::Action(r) => out.push(r),
                WorkerReport::Load(Some(stats)) => {
                    self.load = Some(LoadTrack {
                        stats,
                        clients: self.load_clients,
                    });
                }
                WorkerReport::Load(None) => self.load = None,
            }
        }
        out
    }
}

impl LoadTrack {
    /// The load generator's counters, the latencies of the puts done since
    /// the last call, and when each waiting put started, on the wall clock
    /// of `now` (µs): the model sums them up once a second.
    fn observe(&self, now: u64) -> LoadObs {
        let at = Instant::now();
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        LoadObs {
            clients: self.clients,
            ok: self.stats.ok.load(Ordering::Relaxed),
            errors: self.stats.errors.load(Ordering::Relaxed),
            done_us: self.stats.drain().into_iter().map(us).collect(),
            waiting_since_us: self
                .stats
                .waiting()
                .into_iter()
                .map(|since| now.saturating_sub(us(at.saturating_duration_since(since))))
                .collect(),
        }
    }
}

fn start_worker(
    dir: PathBuf,
    clients: usize,
    value_size: usize,
) -> Result<(Sender<Job>, Receiver<WorkerReport>)> {
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let (rep_tx, rep_rx) = mpsc::channel::<WorkerReport>();
    std::thread::Builder::new()
        .name("top-actions".into())
        .spawn(move || {
            // Lives here so a stop can wait for the clients off the UI thread;
            // dropped (and so stopped) when `top` exits.
            let mut load: Option<Background> = None;
            for job in job_rx {
                let started = WorkerReport::Action(Report::Started {
                    t_us: now_us(),
                    what: job.what.clone(),
                });
                if rep_tx.send(started).is_err() {
                    return;
                }
                let outcome = act(&dir, &job, &mut load, clients, value_size, &rep_tx)
                    .map_err(|e| format!("{}: {e:#}", job.what));
                let finished = Report::Finished {
                    t_us: now_us(),
                    outcome,
                };
                if rep_tx.send(WorkerReport::Action(finished)).is_err() {
                    return;
                }
            }
        })
        .context("starting the action worker")?;
    Ok((job_tx, rep_rx))
}

/// Runs one action through the `cdsctl kv` code; warnings (nodes skipped)
/// are appended to the message.
fn act(
    dir: &Path,
    job: &Job,
    load: &mut Option<Background>,
    clients: usize,
    value_size: usize,
    reports: &Sender<WorkerReport>,
) -> Result<String> {
    let mut warnings = Vec::new();
    let mut warn = |w: String| warnings.push(w);
    let node = || job.node.context("no node selected");
    let msg = match job.action {
        Action::Kill => cluster::kill(dir, node()?)?.to_string(),
        Action::Restart => {
            cluster::restart(&node_program()?, dir, node()?, ACTION_TIMEOUT)?.to_string()
        }
        Action::Pause => cluster::pause(dir, node()?)?.to_string(),
        Action::Resume => cluster::resume(dir, node()?)?.to_string(),
        Action::Isolate => {
            let id = node()?;
            let c = ClusterFile::load(dir)?;
            let others: Vec<u64> = c.nodes.iter().map(|n| n.id).filter(|&n| n != id).collect();
            cluster::partition(dir, &[vec![id], others], &mut warn)?.to_string()
        }
        Action::Heal => cluster::heal(dir, &mut warn)?.to_string(),
        Action::Transfer => cluster::transfer_leader(dir, node()?, ACTION_TIMEOUT)?.to_string(),
        Action::AddNode => {
            cluster::add_node(&node_program()?, dir, ACTION_TIMEOUT, &mut warn)?.to_string()
        }
        Action::RemoveNode => cluster::remove_node(dir, node()?, ACTION_TIMEOUT)?.to_string(),
        Action::Snapshot => cluster::snapshot(dir, node()?)?.to_string(),
        Action::Load => match load.take() {
            Some(bg) => {
                // The UI stops showing the load at once; the stop itself
                // waits for the clients' last requests.
                let _ = reports.send(WorkerReport::Load(None));
                bg.stop()
            }
            None => {
                let (bg, msg) = kv::load_start(dir, clients, value_size)?;
                let _ = reports.send(WorkerReport::Load(Some(bg.stats())));
                *load = Some(bg);
                msg
            }
        },
        other => anyhow::bail!("{other:?} is not a cluster action"),
    };
    Ok(if warnings.is_empty() {
        msg
    } else {
        format!("{msg} ({})", warnings.join("; "))
    })
}
