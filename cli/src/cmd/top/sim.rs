//! A simulated cluster as a [`Source`]: `cdsctl top --sim`.
//!
//! The cluster is [`LiveCluster`]: the real Raft core on the deterministic
//! simulator, with its invariant checks after every step. Simulated time
//! follows the wall clock (times `--speed`): each update runs the
//! simulator up to "now". Actions are calls on the simulator, so they
//! finish at once; their effects (an election after a kill, a snapshot sent
//! to a follower) then unfold in simulated time like anything else.
//!
//! The event log comes from the session's own trace, summarised by the same
//! code as a real node's trace. The trace is drained every update (and
//! written to `--trace FILE` if asked), as are the clients' latencies (the
//! model sums those up once a second), so a long session holds no history
//! it does not show.

use std::collections::{BTreeSet, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use raft_core::sim::live::LiveCluster;
use raft_core::trace::schema::Record;
use raft_core::RaftStatus;

use super::events::Summariser;
use super::keys::Action;
use super::model::{Event, EventKind, LoadObs, NodeObs, MAX_LATENCIES};
use super::source::{Job, Report, Source, Update};
use cds::devcluster::process::ProcState;
use cds::status::{Filter, Status};

/// Simulated milliseconds run between two top-ups of the load generator's
/// clients, so a client that got its answer sends its next put soon.
const STEP_MS: u64 = 5;
/// The most wall-clock time one update may spend simulating. When the
/// simulation cannot keep up (a high `--speed` under load, or a stall such
/// as a suspended terminal) it runs slower than asked instead of freezing
/// the screen.
const MAX_UPDATE_WORK: Duration = Duration::from_millis(100);
/// A node snapshots its state machine and compacts its log once it has
/// applied this many entries past its last snapshot, as a real node does
/// (`snapshot_every`); without it, a session under load grows its logs,
/// and so its memory, without end.
const SNAPSHOT_EVERY: u64 = 10_000;

/// How `top --sim` starts the session.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Voters at the start (3 to 7).
    pub nodes: usize,
    /// The simulator's seed.
    pub seed: u64,
    /// Simulated ms per wall-clock ms.
    pub speed: f64,
    /// Clients the load generator keeps busy.
    pub clients: usize,
    /// Where to stream the session's trace, if anywhere.
    pub trace: Option<PathBuf>,
}

/// The load generator: `clients` simulated clients, each with one put
/// outstanding at a time.
#[derive(Debug)]
struct SimLoad {
    clients: usize,
    ok: u64,
    /// Latencies (µs, from a put's first send to its answer) since the
    /// last picture, at most [`MAX_LATENCIES`].
    done_us: Vec<u64>,
}

/// A [`LiveCluster`] driven by the console.
pub struct SimSource {
    live: LiveCluster,
    speed: f64,
    /// The wall-clock instant that matches simulated time `anchor_ms`.
    anchor: Instant,
    anchor_ms: u64,
    /// Nodes on screen: the initial voters and every node that has been
    /// in a configuration since (the spares stay off screen until added).
    shown: BTreeSet<u64>,
    summary: Summariser,
    trace_out: Option<(PathBuf, BufWriter<File>)>,
    /// A failed write of the trace file, to show once.
    trace_error: Option<String>,
    failure_logged: bool,
    clients: usize,
    load: Option<SimLoad>,
    reports: VecDeque<Report>,
}

impl SimSource {
    /// Starts a session; nothing runs until the first update.
    pub fn new(opts: SimOptions) -> Result<SimSource> {
        let live = LiveCluster::new(opts.nodes, opts.seed)
            .map_err(anyhow::Error::msg)
            .context("starting the simulated cluster")?;
        let trace_out = match &opts.trace {
            Some(path) => {
                let f = File::create(path)
                    .with_context(|| format!("creating the trace file {}", path.display()))?;
                Some((path.clone(), BufWriter::new(f)))
            }
            None => None,
        };
        Ok(SimSource {
            live,
            speed: opts.speed,
            anchor: Instant::now(),
            anchor_ms: 0,
            shown: (1..=opts.nodes as u64).collect(),
            summary: Summariser::default(),
            trace_out,
            trace_error: None,
            failure_logged: false,
            clients: opts.clients.max(1),
            load: None,
            reports: VecDeque::new(),
        })
    }

    /// Runs the simulation up to `target_ms` simulated, keeping the load
    /// generator's clients busy. Stops early if an invariant check fails
    /// (the failure is then in every later [`SimSource::picture`]).
    #[cfg(test)]
    pub fn run_to(&mut self, target_ms: u64) {
        self.run_until(target_ms, None);
    }

    /// [`SimSource::run_to`], stopping early once the wall clock passes
    /// `deadline`.
    fn run_until(&mut self, target_ms: u64, deadline: Option<Instant>) {
        while self.live.failure().is_none() && self.live.now() < target_ms {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            self.top_up();
            let step = (target_ms - self.live.now()).min(STEP_MS);
            if self.live.advance(step).is_err() {
                break;
            }
            self.collect_latencies();
        }
        self.snapshot_long_logs();
    }

    /// Snapshots every running node [`SNAPSHOT_EVERY`] entries past its
    /// last snapshot (the trace, and so the event log, records it).
    fn snapshot_long_logs(&mut self) {
        for id in self.live.node_ids() {
            let due = self
                .live
                .status(id)
                .is_some_and(|s| s.applied >= s.last_snapshot.unwrap_or(0) + SNAPSHOT_EVERY);
            if due && !self.live.is_paused(id) {
                // Refused only by a stopped session, which the picture shows.
                let _ = self.live.snapshot(id);
            }
        }
    }

    /// Runs the simulation up to the simulated time that matches the wall
    /// clock.
    fn catch_up(&mut self) {
        let wall_ms = self.anchor.elapsed().as_secs_f64() * 1000.0 * self.speed;
        let target = self.anchor_ms + wall_ms as u64;
        self.run_until(target, Some(Instant::now() + MAX_UPDATE_WORK));
        if self.live.now() < target && self.live.failure().is_none() {
            // Behind: count simulated time from here, so the lost time is
            // not raced through later.
            self.anchor = Instant::now();
            self.anchor_ms = self.live.now();
        }
    }

    /// The picture at the current simulated time, with the events since
    /// the last call.
    pub fn picture(&mut self) -> Update {
        let now_us = self.live.now() * 1000;
        let mut events = self.drain_trace();
        // Newly added nodes come on screen with their first configuration.
        for id in self.live.node_ids() {
            if let Some(st) = self.live.status(id) {
                if st.membership.members().contains(&id) {
                    self.shown.insert(id);
                }
            }
        }
        let nodes = self
            .shown
            .iter()
            .map(|&id| {
                let running = self.live.is_running(id);
                let proc = if !running {
                    ProcState::Down
                } else if self.live.is_paused(id) {
                    ProcState::Paused
                } else {
                    ProcState::Up
                };
                NodeObs {
                    id,
                    proc: Some(proc),
                    status: self
                        .live
                        .status(id)
                        .map(|s| status(id, s, self.live.cut_off(id))),
                    status_at_us: now_us,
                    ..NodeObs::default()
                }
            })
            .collect();
        // A violated invariant ends the session: said in the log once, and
        // in the status bar on every frame from then on.
        let failure = self
            .live
            .failure()
            .map(|f| format!("✗ the simulation stopped: {f}"));
        if let Some(f) = &failure {
            if !self.failure_logged {
                self.failure_logged = true;
                events.push(Event {
                    t_us: now_us,
                    node: None,
                    kind: EventKind::Failed,
                    text: f.clone(),
                });
            }
        }
        let error = failure.or_else(|| self.trace_error.take());
        let live = &self.live;
        let load = self.load.as_mut().map(|l| LoadObs {
            clients: l.clients,
            ok: l.ok,
            errors: 0,
            done_us: std::mem::take(&mut l.done_us),
            waiting_since_us: live.pending_since().iter().map(|ms| ms * 1000).collect(),
        });
        Update {
            now_us,
            nodes,
            events,
            error,
            load,
        }
    }

    /// Runs `job` on the simulator; its outcome is the next report.
    fn act(&mut self, job: &Job) -> Result<String, String> {
        let node = || job.node.ok_or_else(|| "no node selected".to_owned());
        let live = &mut self.live;
        match job.action {
            Action::Kill => {
                let id = node()?;
                live.stop(id)?;
                Ok(format!(
                    "node {id} killed (a crash: it keeps only what it wrote to its disk)"
                ))
            }
            Action::Restart => {
                let id = node()?;
                live.restart(id)?;
                Ok(format!("node {id} restarted from its disk"))
            }
            Action::Pause => {
                let id = node()?;
                live.pause(id)?;
                Ok(format!("node {id} paused"))
            }
            Action::Resume => {
                let id = node()?;
                live.resume(id)?;
                Ok(format!("node {id} resumed"))
            }
            Action::Isolate => {
                let id = node()?;
                live.partition(id)?;
                Ok(format!("node {id} cut off from every other node"))
            }
            Action::Heal => {
                live.heal()?;
                Ok("every link restored".into())
            }
            Action::Transfer => {
                let id = node()?;
                live.transfer_leader(id)?;
                Ok(format!("leader transfer to node {id} started"))
            }
            Action::AddNode => {
                let id = live.add_node()?;
                self.shown.insert(id);
                Ok(format!(
                    "node {id} joining as a learner; it becomes a voter once caught up \
                     (or is dropped if it cannot catch up: snapshot a long log first)"
                ))
            }
            Action::RemoveNode => {
                let id = node()?;
                live.remove_node(id)?;
                Ok(format!("removal of node {id} proposed"))
            }
            Action::Snapshot => {
                let id = node()?;
                let index = live.snapshot(id)?;
                Ok(format!(
                    "node {id} took a snapshot at {index} and compacted its log"
                ))
            }
            Action::Load => Ok(match self.load.take() {
                Some(l) => format!(
                    "load off: {} puts answered, {} still pending are left to finish",
                    l.ok,
                    live.pending_requests()
                ),
                None => {
                    self.load = Some(SimLoad {
                        clients: self.clients,
                        ok: 0,
                        done_us: Vec::new(),
                    });
                    format!(
                        "load on: {} simulated clients, one put outstanding each",
                        self.clients
                    )
                }
            }),
            other => Err(format!("{other:?} is not a cluster action")),
        }
    }

    /// Sends a put for every idle client of the load generator.
    fn top_up(&mut self) {
        let Some(load) = &self.load else {
            return;
        };
        let want = load.clients.saturating_sub(self.live.pending_requests());
        for _ in 0..want {
            // Without a leader the clients start at a running node and
            // follow its hints, retrying until a leader answers.
            let sent = self.live.client_request(None).or_else(|_| {
                let any = self
                    .shown
                    .iter()
                    .copied()
                    .find(|&id| self.live.is_running(id));
                self.live.client_request(any)
            });
            if sent.is_err() {
                break;
            }
        }
    }

    /// Moves the clients' answered latencies to the load generator's
    /// figures (dropped when it is off: the puts it left pending).
    fn collect_latencies(&mut self) {
        let lat = self.live.take_latencies();
        if let Some(l) = &mut self.load {
            l.ok += lat.len() as u64;
            let room = MAX_LATENCIES.saturating_sub(l.done_us.len());
            l.done_us.extend(lat.iter().take(room).map(|ms| ms * 1000));
        }
    }

    /// The event-log lines of the trace written since the last call; the
    /// bytes go on to the trace file, if there is one.
    fn drain_trace(&mut self) -> Vec<Event> {
        let bytes = self.live.take_trace();
        if let Some((path, out)) = &mut self.trace_out {
            if let Err(e) = out.write_all(&bytes).and_then(|()| out.flush()) {
                self.trace_error = Some(format!(
                    "✗ writing the trace to {} failed ({e}); it is incomplete",
                    path.display()
                ));
                self.trace_out = None;
            }
        }
        // Whole lines: the simulator writes a record in one go.
        let mut events = Vec::new();
        for line in bytes.split(|b| *b == b'\n') {
            // Most lines are messages and appends, which the log never
            // shows: skip them before paying for a parse.
            if line.is_empty() || !worth_parsing(line) {
                continue;
            }
            // The header does not parse as a record, and is skipped.
            let Ok(rec) = serde_json::from_slice::<Record>(line) else {
                continue;
            };
            if !self.shown.contains(&rec.node) {
                continue; // a spare's start-up, or a cluster-wide record
            }
            // Simulated traces count milliseconds.
            if let Some(ev) = self.summary.describe(&rec, rec.t * 1000) {
                events.push(ev);
            }
        }
        events
    }
}

/// Whether a trace line may be one the event log shows: the kinds
/// [`Summariser::describe`] reads.
fn worth_parsing(line: &[u8]) -> bool {
    const KINDS: [&[u8]; 9] = [
        b"\"ev\":\"role\"",
        b"\"ev\":\"timeout\"",
        b"\"ev\":\"vote\"",
        b"\"ev\":\"stepdown\"",
        b"\"ev\":\"transfer\"",
        b"\"ev\":\"config\"",
        b"\"ev\":\"snapshot\"",
        b"\"ev\":\"compact\"",
        b"\"ev\":\"restart\"",
    ];
    KINDS.iter().any(|k| line.windows(k.len()).any(|w| w == *k))
}

/// The group the live view shows (the simulator's first), under the id a
/// local cluster gives its first group.
const SIM_GROUP: u64 = 1;

/// A simulated node's state (and the nodes a partition cuts it off from)
/// as the screen reads a real node's `/status`.
fn status(id: u64, s: RaftStatus, cut: Vec<u64>) -> Status {
    Status {
        filter: (!cut.is_empty()).then(|| Filter::cutting(cut)),
        ..Status::from_raft(id, SIM_GROUP, s)
    }
}

impl Drop for SimSource {
    /// Writes what the session traced since the last update, so the trace
    /// file ends where the session did.
    fn drop(&mut self) {
        if let Some((_, out)) = &mut self.trace_out {
            let rest = self.live.take_trace();
            let _ = out.write_all(&rest).and_then(|()| out.flush());
        }
    }
}

impl Source for SimSource {
    fn update(&mut self) -> Update {
        self.catch_up();
        self.picture()
    }

    fn submit(&mut self, job: Job) -> Result<(), String> {
        // The key was pressed now, not at the last frame: act at the
        // simulated time that matches.
        self.catch_up();
        let t_us = self.live.now() * 1000;
        self.reports.push_back(Report::Started {
            t_us,
            what: job.what.clone(),
        });
        let outcome = self.act(&job).map_err(|e| format!("{}: {e}", job.what));
        self.reports.push_back(Report::Finished { t_us, outcome });
        Ok(())
    }

    fn reports(&mut self) -> Vec<Report> {
        self.reports.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    //! The simulated source, driven in simulated time: `run_to` moves it,
    //! and a speed of 0.01 keeps the wall clock from moving it further
    //! while a test runs, so each test sees the same session every time.

    use super::*;

    fn source_options() -> SimOptions {
        SimOptions {
            nodes: 3,
            seed: 3,
            speed: 0.01,
            clients: 4,
            trace: None,
        }
    }

    fn source(trace: Option<PathBuf>) -> SimSource {
        SimSource::new(SimOptions {
            trace,
            ..source_options()
        })
        .unwrap()
    }

    fn leader(up: &Update) -> Option<u64> {
        up.nodes
            .iter()
            .filter(|n| n.proc == Some(ProcState::Up))
            .filter_map(|n| n.status.as_ref())
            .filter(|s| s.is_leader())
            .max_by_key(|s| s.term)
            .map(|s| s.id)
    }

    /// Submits `action` on `node` and returns its outcome.
    fn act(s: &mut SimSource, action: Action, node: Option<u64>) -> Result<String, String> {
        s.submit(Job {
            action,
            node,
            what: format!("{action:?}"),
        })
        .unwrap();
        let reports = s.reports();
        assert!(matches!(&reports[0], Report::Started { .. }), "{reports:?}");
        match &reports[1] {
            Report::Finished { outcome, .. } => outcome.clone(),
            other => panic!("{other:?}"),
        }
    }

    fn texts(up: &Update) -> Vec<String> {
        up.events
            .iter()
            .map(|e| format!("n{} {}", e.node.unwrap_or(0), e.text))
            .collect()
    }

    #[test]
    fn a_killed_leader_is_replaced_and_the_picture_follows() {
        let mut s = source(None);
        s.run_to(1_000);
        let up = s.picture();
        assert_eq!(up.now_us, 1_000_000);
        assert_eq!(up.nodes.len(), 3, "spares stay off screen");
        let old = leader(&up).expect("a leader within 1 s");
        assert!(
            texts(&up).contains(&format!("n{old} became leader, term 1")),
            "{:?}",
            texts(&up)
        );
        assert!(up.error.is_none());

        let msg = act(&mut s, Action::Kill, Some(old)).unwrap();
        assert!(msg.contains(&format!("node {old} killed")), "{msg}");
        s.run_to(2_000);
        let up = s.picture();
        let new = leader(&up).expect("a new leader within 1 s");
        assert_ne!(new, old);
        let dead = up.nodes.iter().find(|n| n.id == old).unwrap();
        assert_eq!(dead.proc, Some(ProcState::Down));
        assert!(dead.status.is_none());
        assert!(texts(&up).contains(&format!("n{new} became leader, term 2")));

        let err = act(&mut s, Action::Kill, Some(old)).unwrap_err();
        assert!(err.contains("stopped"), "{err}");
        act(&mut s, Action::Restart, Some(old)).unwrap();
        s.run_to(2_500);
        let up = s.picture();
        let back = up.nodes.iter().find(|n| n.id == old).unwrap();
        assert_eq!(back.proc, Some(ProcState::Up));
        assert_eq!(back.status.as_ref().unwrap().leader, Some(new));

        act(&mut s, Action::Isolate, Some(new)).unwrap();
        let up = s.picture();
        let link = |id: u64| {
            let n = up.nodes.iter().find(|n| n.id == id).unwrap();
            crate::cmd::top::model::link_state(n.status.as_ref().unwrap())
        };
        assert_eq!(link(new).as_deref(), Some("isolated"));
        assert_eq!(link(old), Some(format!("cut {new}")));
        act(&mut s, Action::Heal, None).unwrap();
        assert!(s
            .picture()
            .nodes
            .iter()
            .all(|n| n.status.as_ref().unwrap().cut().is_empty()));
    }

    #[test]
    fn load_pause_snapshot_and_a_new_member() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session.rtrace");
        let mut s = source(Some(path.clone()));
        s.run_to(1_000);
        let l = leader(&s.picture()).unwrap();

        assert!(act(&mut s, Action::Load, None)
            .unwrap()
            .starts_with("load on"));
        s.run_to(3_100);
        let up = s.picture();
        let load = up.load.expect("load figures");
        assert!(load.ok > 100, "{load:?}");
        assert_eq!(load.done_us.len() as u64, load.ok, "all since the start");
        assert!(load.done_us.iter().all(|&us| us > 0), "{load:?}");
        // At most one put out per client, and none stuck.
        assert!(load.waiting_since_us.len() <= 4, "{load:?}");
        assert!(
            load.waiting_since_us
                .iter()
                .all(|&t| t <= up.now_us && t + 1_000_000 > up.now_us),
            "{load:?} at {}",
            up.now_us
        );
        s.run_to(3_200);
        let again = s.picture().load.unwrap();
        assert!(
            (again.done_us.len() as u64) < again.ok,
            "latencies are drained by each picture"
        );
        let lo = up.nodes.iter().find(|n| n.id == l).unwrap();
        let commit = lo.status.as_ref().unwrap().commit;
        assert!(commit > load.ok, "{commit} vs {load:?}");

        let f = l % 3 + 1;
        act(&mut s, Action::Pause, Some(f)).unwrap();
        assert!(act(&mut s, Action::Pause, Some(f))
            .unwrap_err()
            .contains("already"));
        s.run_to(3_500);
        let paused = s.picture().nodes.into_iter().find(|n| n.id == f).unwrap();
        assert_eq!(paused.proc, Some(ProcState::Paused));
        act(&mut s, Action::Resume, Some(f)).unwrap();

        let msg = act(&mut s, Action::Snapshot, Some(l)).unwrap();
        assert!(msg.contains("took a snapshot"), "{msg}");
        let msg = act(&mut s, Action::AddNode, None).unwrap();
        assert!(msg.starts_with("node 4 joining"), "{msg}");
        s.run_to(5_000);
        let up = s.picture();
        assert_eq!(up.nodes.len(), 4, "the new node is on screen");
        let ls = up
            .nodes
            .iter()
            .find_map(|n| n.status.as_ref().filter(|s| s.is_leader()))
            .unwrap();
        assert_eq!(ls.voters, [1, 2, 3, 4], "{ls:?}");
        assert!(act(&mut s, Action::Load, None)
            .unwrap()
            .starts_with("load off"));
        assert!(s.picture().load.is_none());
        // Whatever ran after the last picture reaches the file on drop.
        s.run_to(5_500);
        let events = s.live.events();
        drop(s);

        let text = std::fs::read_to_string(&path).unwrap();
        let summary = raft_core::trace::check_str(&text).unwrap();
        assert_eq!(summary.events as u64, events);
        assert!(summary.max_t > 5_000, "{}", summary.max_t);
        // The visualizer replays it (`cdsctl viz FILE`).
        let replay = viz_wasm::model::Replay::parse(&text).unwrap();
        assert_eq!(replay.len() as u64, events);
        assert_eq!(replay.state_at(replay.len()).leader, Some(l));
        for ev in ["pause", "resume", "snapshot", "config", "client"] {
            assert!(summary.kinds.contains_key(ev), "{ev}: {:?}", summary.kinds);
        }
    }

    /// A failover under load, through the model as the console runs it
    /// (a picture and a sample every 250 ms): the second of the failover
    /// is a spike in the latency chart (its puts waited for the new
    /// leader), not a gap, and the load's header shows the same figure.
    #[test]
    fn a_failover_under_load_is_a_latency_spike() {
        use crate::cmd::top::model::Model;
        let mut s = source(None);
        let mut m = Model::new("sim".into(), 250_000, 0);
        let step = |s: &mut SimSource, m: &mut Model, t_ms: u64| {
            s.run_to(t_ms);
            let up = s.picture();
            m.observe(up.nodes, up.now_us);
            m.observe_load(up.load, up.now_us);
            m.sample(up.now_us);
        };
        step(&mut s, &mut m, 1_000);
        let old = leader(&s.picture()).expect("a leader within 1 s");
        act(&mut s, Action::Load, None).unwrap();
        for t in (1_250..=3_000).step_by(250) {
            step(&mut s, &mut m, t);
        }
        let healthy = m
            .p99_us
            .back()
            .copied()
            .flatten()
            .expect("a p99 under load");
        assert_eq!(m.load.as_ref().unwrap().p99_us, Some(healthy));
        act(&mut s, Action::Kill, Some(old)).unwrap();
        for t in (3_250..=4_000).step_by(250) {
            step(&mut s, &mut m, t);
        }
        assert_ne!(leader(&s.picture()), Some(old));
        let spike = m.p99_us.back().copied().flatten();
        assert!(
            spike.is_some_and(|p| p > 100_000 && p > 10 * healthy),
            "healthy {healthy} µs, failover {spike:?}: {:?}",
            m.p99_us
        );
        assert_eq!(m.load.as_ref().unwrap().p99_us, spike, "header = chart");
    }

    #[test]
    fn long_sessions_compact_their_logs() {
        let mut s = SimSource::new(SimOptions {
            clients: 16,
            ..source_options()
        })
        .unwrap();
        act(&mut s, Action::Load, None).unwrap();
        let mut t = 0;
        let mut snapshots = 0;
        while snapshots < 3 && t < 60_000 {
            t += 1_000;
            s.run_to(t);
            snapshots += texts(&s.picture())
                .iter()
                .filter(|e| e.contains("snapshot taken"))
                .count();
        }
        let up = s.picture();
        for n in &up.nodes {
            let st = n.status.as_ref().unwrap();
            assert!(st.snapshot_index.is_some(), "{st:?} after {t} ms");
            assert!(
                st.last_index + 1 - st.first_index <= SNAPSHOT_EVERY + 1_000,
                "{st:?}"
            );
        }
    }

    #[test]
    fn actions_without_a_node_or_a_leader_are_errors() {
        let mut s = source(None);
        let err = act(&mut s, Action::Kill, None).unwrap_err();
        assert_eq!(err, "Kill: no node selected");
        let err = act(&mut s, Action::Transfer, Some(2)).unwrap_err();
        assert!(err.contains("no leader"), "{err}");
        assert!(act(&mut s, Action::Heal, None).is_err());
        assert!(act(&mut s, Action::Help, None).is_err());
    }

    /// An injected Raft bug that the simulator's checks catch stops the
    /// session: the screen says so in the log once and in the status bar
    /// on every frame, and actions are refused.
    #[cfg(feature = "bug-injection")]
    #[test]
    fn a_violated_invariant_stops_the_session_visibly() {
        use raft_core::core::{Bug, BugSet};
        for seed in 0..20 {
            let mut s = source(None);
            s.live = LiveCluster::with_bugs(3, seed, BugSet::only(Bug::VoteForStaleLog)).unwrap();
            s.run_to(1_000);
            let Some(l) = leader(&s.picture()) else {
                continue;
            };
            let f = l % 3 + 1;
            act(&mut s, Action::Isolate, Some(f)).unwrap();
            for _ in 0..3 {
                s.live.client_request(None).unwrap();
                s.run_to(s.live.now() + 50);
            }
            act(&mut s, Action::Kill, Some(l)).unwrap();
            act(&mut s, Action::Heal, None).unwrap();
            for _ in 0..40 {
                s.run_to(s.live.now() + 5);
                let _ = s.live.timeout(f);
                if s.live.failure().is_some() || s.live.leader().is_some() {
                    break;
                }
            }
            if s.live.failure().is_none() {
                continue;
            }
            let up = s.picture();
            let err = up.error.clone().expect("the failure is shown");
            assert!(err.contains("the simulation stopped"), "{err}");
            assert!(err.contains("Leader Completeness"), "{err}");
            assert_eq!(
                texts(&up).iter().filter(|t| t.contains("stopped")).count(),
                1
            );
            let again = s.picture();
            assert!(again.error.is_some() && texts(&again).is_empty());
            let refused = act(&mut s, Action::Restart, Some(l)).unwrap_err();
            assert!(refused.contains("the session stopped"), "{refused}");
            return;
        }
        panic!("the injected bug was never caught in 20 sessions");
    }
}
