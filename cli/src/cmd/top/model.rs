//! What `cdsctl top` shows, as plain data.
//!
//! A source (the pollers and trace tailer of a local cluster, or the
//! simulator) feeds observations in; the renderer reads the model and a
//! clock and nothing else. Every time here is microseconds on the source's
//! clock (wall-clock time for a local cluster, simulated time since the
//! start for `--sim`), so tests can build a model and a "now" by hand and
//! get the same screen every time.

use std::collections::VecDeque;

use super::events::{action_finished, action_started};
use super::source::Report;
use cds::devcluster::process::ProcState;
use cds::status::Status;

/// Seconds of throughput and latency history kept (one point a second).
pub const HISTORY: usize = 60;
/// Event-log lines kept.
pub const MAX_EVENTS: usize = 300;
/// Latencies of finished puts kept for one second's p99; past it, the
/// rest of that second's are not counted (far above what one machine's
/// cluster answers).
pub const MAX_LATENCIES: usize = 200_000;

/// One node as its source last saw it: the input of [`Model::observe`].
#[derive(Debug, Clone, Default)]
pub struct NodeObs {
    /// Its id.
    pub id: u64,
    /// Its HTTP address.
    pub http_addr: String,
    /// Its transport address.
    pub raft_addr: String,
    /// The pid in cluster.json.
    pub pid: Option<u32>,
    /// What the OS says about that pid (`None`: not looked at yet).
    pub proc: Option<ProcState>,
    /// The newest `/status` answer, kept after the node stops answering so
    /// the screen can still show its last known state.
    pub status: Option<Status>,
    /// When `status` was taken.
    pub status_at_us: u64,
    /// The last request failed (with this error).
    pub error: Option<String>,
    /// A request has been outstanding since then.
    pub inflight_since_us: Option<u64>,
    /// The leader's `cds_propose_seconds` histogram (cumulative buckets),
    /// fetched only while it leads.
    pub propose_hist: Option<Hist>,
}

/// A Prometheus histogram as `/metrics` gives it: cumulative counts per
/// upper bound (seconds), the last bound infinite.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Hist {
    /// `(le, cumulative count)`, in increasing `le`.
    pub buckets: Vec<(f64, u64)>,
}

impl Hist {
    /// Reads `cds_{name}_bucket{le="..."} N` lines of a `/metrics` text.
    pub fn parse(text: &str, name: &str) -> Option<Hist> {
        let prefix = format!("cds_{name}_bucket{{le=\"");
        let buckets: Vec<(f64, u64)> = text
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(&prefix)?;
                let (le, n) = rest.split_once("\"}")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, n.trim().parse().ok()?))
            })
            .collect();
        (!buckets.is_empty()).then_some(Hist { buckets })
    }

    /// The `q` quantile (0..1) of what was observed between `earlier` and
    /// `self`, in microseconds, interpolated linearly inside its bucket as
    /// Prometheus' `histogram_quantile` does. `None` without observations,
    /// or when the buckets differ (a restarted node reset its counters).
    pub fn quantile_since(&self, earlier: &Hist, q: f64) -> Option<u64> {
        if self.buckets.len() != earlier.buckets.len() {
            return None;
        }
        let mut delta = Vec::with_capacity(self.buckets.len());
        for ((le, now), (le0, then)) in self.buckets.iter().zip(&earlier.buckets) {
            if le != le0 || now < then {
                return None;
            }
            delta.push((*le, now - then));
        }
        let total = delta.last()?.1;
        if total == 0 {
            return None;
        }
        let want = q * total as f64;
        let mut prev_le = 0.0;
        let mut prev_n = 0u64;
        for (le, n) in delta {
            if n as f64 >= want {
                if le.is_infinite() {
                    // Past the last bound: all we know is "more than it".
                    return Some((prev_le * 1e6) as u64);
                }
                let inside = (n - prev_n) as f64;
                let frac = if inside > 0.0 {
                    (want - prev_n as f64) / inside
                } else {
                    1.0
                };
                return Some(((prev_le + (le - prev_le) * frac) * 1e6) as u64);
            }
            prev_le = le;
            prev_n = n;
        }
        None
    }
}

/// Whether a node can be asked, as the screen shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Running and answering.
    Up,
    /// Running, but its last request failed or is taking longer than a
    /// refresh.
    NoAnswer,
    /// Stopped by SIGSTOP (in a simulation: stalled).
    Paused,
    /// No process.
    Down,
    /// Not polled yet.
    Unknown,
}

impl Liveness {
    /// As the table writes it.
    pub fn name(self) -> &'static str {
        match self {
            Liveness::Up => "up",
            Liveness::NoAnswer => "no answer",
            Liveness::Paused => "paused",
            Liveness::Down => "down",
            Liveness::Unknown => "?",
        }
    }
}

/// One node as the screen shows it.
#[derive(Debug, Clone)]
pub struct NodeView {
    /// What the pollers saw.
    pub obs: NodeObs,
    /// Derived from `obs` and the clock.
    pub liveness: Liveness,
}

/// What an event-log line is about, for its colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventKind {
    /// Timeouts, candidacies, votes.
    Election,
    /// A node became leader or learned of a new one.
    Leader,
    /// Membership changes.
    Config,
    /// Snapshots and compactions.
    Snapshot,
    /// A process started, stopped or stopped answering.
    #[default]
    Process,
    /// An action of this console, as it starts.
    Action,
    /// An action's success.
    Done,
    /// An action's failure.
    Failed,
}

/// One line of the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When (wall-clock µs).
    pub t_us: u64,
    /// The node it happened on, if one.
    pub node: Option<u64>,
    /// For its colour.
    pub kind: EventKind,
    /// What happened.
    pub text: String,
}

/// The status bar: the outcome of the last action, or what runs now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusBar {
    /// The text.
    pub text: String,
    /// How to show it.
    pub kind: EventKind,
}

/// The background load generator as its source saw it: the input of
/// [`Model::observe_load`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoadObs {
    /// Its clients.
    pub clients: usize,
    /// Puts done since it started.
    pub ok: u64,
    /// Failed attempts since it started (each is retried: a put is done
    /// only when it succeeds).
    pub errors: u64,
    /// How long each put done since the last observation took, µs: from
    /// its first attempt to its success, failed attempts, timeouts and
    /// redirects included.
    pub done_us: Vec<u64>,
    /// When each put not done yet started (its first attempt), on the
    /// source's clock.
    pub waiting_since_us: Vec<u64>,
}

/// The background load generator's figures, as of the last per-second
/// sample ([`Model::sample`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoadView {
    /// Its clients.
    pub clients: usize,
    /// Successful puts since it started.
    pub ok: u64,
    /// Failed attempts since it started.
    pub errors: u64,
    /// Puts done per second over the last second.
    pub rate: u64,
    /// [`put_p99`] over the last second: the same figure as the newest
    /// point of the latency chart, set with it.
    pub p99_us: Option<u64>,
}

/// What the model keeps of the load generator between two samples.
#[derive(Debug, Clone, Default)]
struct LoadWindow {
    /// The latest observation, less the latencies (moved to `done_us`).
    last: LoadObs,
    /// Latencies of the puts done since the last sample, µs.
    done_us: Vec<u64>,
    /// Puts done as of the last sample (or when the load was first seen).
    ok_at_start: u64,
    /// When this window began: the last sample, or the load's first sight.
    start_us: u64,
}

/// What the screen says about a simulated cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct SimInfo {
    /// The simulator's seed.
    pub seed: u64,
    /// Simulated ms per wall-clock ms.
    pub speed: f64,
}

/// The point of the last per-second sample, to take deltas from.
#[derive(Debug, Clone, Default)]
struct Sample {
    t_us: u64,
    commit: Option<u64>,
    leader: Option<u64>,
    hist: Option<Hist>,
}

/// Everything the screen shows.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// The cluster directory, as given.
    pub dir: String,
    /// The nodes, in id order.
    pub nodes: Vec<NodeView>,
    /// The index into `nodes` of the selected node.
    pub selected: usize,
    /// The event log, oldest first.
    pub events: VecDeque<Event>,
    /// Committed entries per second, oldest first, one per second.
    pub commit_rate: VecDeque<u64>,
    /// Latency per second, µs, oldest first: while the load generator
    /// runs, [`put_p99`] of its puts (which the load's header shows too);
    /// otherwise the p99 of `cds_propose_seconds` on the leader (a real
    /// cluster's other clients), `None` without a leader or a sample.
    pub p99_us: VecDeque<Option<u64>>,
    /// The status bar.
    pub status: StatusBar,
    /// Actions queued behind the running one.
    pub queued: usize,
    /// The help popup is open.
    pub help: bool,
    /// The load generator's figures, while it runs.
    pub load: Option<LoadView>,
    /// Local time minus UTC, seconds (for the clock in event lines).
    pub utc_offset_s: i64,
    /// How long a request may be outstanding before its node is shown as
    /// not answering: one refresh.
    pub stale_us: u64,
    /// Set when watching a simulated cluster: times are then simulated
    /// time since its start, and nodes have no pid or address.
    pub sim: Option<SimInfo>,
    last_sample: Option<Sample>,
    load_window: Option<LoadWindow>,
}

impl Model {
    /// An empty model for `dir`.
    pub fn new(dir: String, stale_us: u64, utc_offset_s: i64) -> Model {
        Model {
            dir,
            stale_us,
            utc_offset_s,
            status: StatusBar {
                text: "press ? for help".into(),
                kind: EventKind::Process,
            },
            ..Model::default()
        }
    }

    /// Replaces the node list with the source's latest observations, and
    /// logs every change of a node's liveness.
    pub fn observe(&mut self, mut obs: Vec<NodeObs>, now_us: u64) {
        obs.sort_by_key(|o| o.id);
        let selected_id = self.selected_id();
        let mut nodes = Vec::with_capacity(obs.len());
        for o in obs {
            let liveness = liveness(&o, now_us, self.stale_us);
            let before = self
                .nodes
                .iter()
                .find(|n| n.obs.id == o.id)
                .map(|n| n.liveness);
            if let Some(text) = liveness_change(before, liveness) {
                self.push_event(Event {
                    t_us: now_us,
                    node: Some(o.id),
                    kind: EventKind::Process,
                    text,
                });
            }
            nodes.push(NodeView { obs: o, liveness });
        }
        self.nodes = nodes;
        // Keep the same node selected when others come and go.
        self.selected = selected_id
            .and_then(|id| self.nodes.iter().position(|n| n.obs.id == id))
            .unwrap_or(self.selected)
            .min(self.nodes.len().saturating_sub(1));
    }

    /// The id of the selected node.
    pub fn selected_id(&self) -> Option<u64> {
        self.nodes.get(self.selected).map(|n| n.obs.id)
    }

    /// The answering node that says it leads, the highest term if a deposed
    /// leader has not noticed yet.
    pub fn leader(&self) -> Option<&NodeView> {
        self.nodes
            .iter()
            .filter(|n| n.liveness == Liveness::Up)
            .filter(|n| n.obs.status.as_ref().is_some_and(Status::is_leader))
            .max_by_key(|n| n.obs.status.as_ref().map_or(0, |s| s.term))
    }

    /// The configuration to show: the leader's, else that of the answering
    /// node with the highest term.
    pub fn config_source(&self) -> Option<&Status> {
        self.leader()
            .or_else(|| {
                self.nodes
                    .iter()
                    .filter(|n| n.liveness == Liveness::Up)
                    .max_by_key(|n| n.obs.status.as_ref().map_or(0, |s| s.term))
            })
            .and_then(|n| n.obs.status.as_ref())
    }

    /// Adds an event in time order, dropping the oldest past [`MAX_EVENTS`].
    pub fn push_event(&mut self, ev: Event) {
        let at = self.events.partition_point(|e| e.t_us <= ev.t_us);
        self.events.insert(at, ev);
        while self.events.len() > MAX_EVENTS {
            self.events.pop_front();
        }
    }

    /// Takes in the load generator's latest figures (`None`: it is off).
    /// They are summed up at the next [`Model::sample`].
    pub fn observe_load(&mut self, obs: Option<LoadObs>, now_us: u64) {
        let Some(mut obs) = obs else {
            self.load = None;
            self.load_window = None;
            return;
        };
        let w = self.load_window.get_or_insert_with(|| LoadWindow {
            ok_at_start: obs.ok.saturating_sub(obs.done_us.len() as u64),
            start_us: now_us,
            ..LoadWindow::default()
        });
        let room = MAX_LATENCIES.saturating_sub(w.done_us.len());
        w.done_us.extend(obs.done_us.drain(..).take(room));
        w.last = obs;
        let view = self.load.get_or_insert_with(LoadView::default);
        view.clients = w.last.clients;
        view.ok = w.last.ok;
        view.errors = w.last.errors;
    }

    /// Takes the per-second sample when a second has passed since the last:
    /// committed entries per second from the leader's commit index; the
    /// load generator's rate, and its [`put_p99`] as the latency point
    /// (without it, the p99 of proposals from the leader's histogram's
    /// bucket deltas).
    pub fn sample(&mut self, now_us: u64) {
        if let Some(last) = &self.last_sample {
            if now_us < last.t_us + 1_000_000 {
                return;
            }
        }
        let leader = self.leader();
        let now = Sample {
            t_us: now_us,
            commit: leader.and_then(|l| l.obs.status.as_ref()).map(|s| s.commit),
            leader: leader.map(|l| l.obs.id),
            hist: leader.and_then(|l| l.obs.propose_hist.clone()),
        };
        if let Some(prev) = &self.last_sample {
            let secs = (now_us - prev.t_us) as f64 / 1e6;
            // Commit indices are the log's, the same on every node, so a
            // new leader's commit continues the old one's.
            let rate = match (prev.commit, now.commit) {
                (Some(a), Some(b)) if b >= a => ((b - a) as f64 / secs).round() as u64,
                _ => 0,
            };
            let p99 = match (&mut self.load_window, &mut self.load) {
                (Some(w), Some(view)) => {
                    let p99 = put_p99(&w.done_us, &w.last.waiting_since_us, now_us);
                    let secs = now_us.saturating_sub(w.start_us).max(1) as f64 / 1e6;
                    view.rate =
                        (w.last.ok.saturating_sub(w.ok_at_start) as f64 / secs).round() as u64;
                    view.p99_us = p99;
                    w.done_us.clear();
                    w.ok_at_start = w.last.ok;
                    w.start_us = now_us;
                    p99
                }
                // Histograms are per node: only deltas on one leader mean
                // anything.
                _ => match (&prev.hist, &now.hist) {
                    (Some(a), Some(b)) if prev.leader == now.leader => b.quantile_since(a, 0.99),
                    _ => None,
                },
            };
            push_capped(&mut self.commit_rate, rate);
            push_capped(&mut self.p99_us, p99);
        }
        // Without a leader keep the last commit, so the first second after
        // an election counts the entries committed since.
        let keep_commit = now
            .commit
            .or(self.last_sample.as_ref().and_then(|s| s.commit));
        self.last_sample = Some(Sample {
            commit: keep_commit,
            ..now
        });
    }

    /// Logs an action's start or outcome and shows it in the status bar.
    pub fn report(&mut self, r: Report) {
        match r {
            Report::Started { t_us, what } => {
                self.queued = self.queued.saturating_sub(1);
                self.push_event(action_started(t_us, &what));
                self.set_status(EventKind::Action, format!("running: {what}…"));
            }
            Report::Finished { t_us, outcome } => {
                self.push_event(action_finished(t_us, &outcome));
                match outcome {
                    Ok(m) => self.set_status(EventKind::Done, format!("✓ {m}")),
                    Err(e) => self.set_status(EventKind::Failed, format!("✗ {e}")),
                }
            }
        }
    }

    /// Sets the status bar.
    pub fn set_status(&mut self, kind: EventKind, text: impl Into<String>) {
        self.status = StatusBar {
            text: text.into(),
            kind,
        };
    }
}

/// The latency figure of the load generator for one second, µs: the 99th
/// percentile (nearest rank) of how long its puts took or have waited. A
/// put done in the second counts its latency, from its first attempt to
/// its success (so the attempts that failed or timed out in between are
/// in it); a put still waiting at `now_us` counts how long it has waited
/// so far. During a failover few puts or none finish, and those waiting
/// make the figure climb with the wait: a spike, not a gap. `None`
/// without any put, done or waiting.
pub fn put_p99(done_us: &[u64], waiting_since_us: &[u64], now_us: u64) -> Option<u64> {
    let mut all: Vec<u64> = done_us
        .iter()
        .copied()
        .chain(waiting_since_us.iter().map(|&t| now_us.saturating_sub(t)))
        .collect();
    p99(&mut all)
}

/// The 99th percentile (nearest rank) of `values`, which it sorts.
pub fn p99(values: &mut [u64]) -> Option<u64> {
    values.sort_unstable();
    let n = values.len();
    (n > 0).then(|| values[((n as f64 * 0.99).ceil() as usize).clamp(1, n) - 1])
}

fn push_capped<T>(q: &mut VecDeque<T>, v: T) {
    q.push_back(v);
    while q.len() > HISTORY {
        q.pop_front();
    }
}

/// How a node shows, from what the pollers saw and the clock.
pub fn liveness(o: &NodeObs, now_us: u64, stale_us: u64) -> Liveness {
    match o.proc {
        None => Liveness::Unknown,
        Some(ProcState::Down) => Liveness::Down,
        Some(ProcState::Paused) => Liveness::Paused,
        Some(ProcState::Up) => {
            let hung = o
                .inflight_since_us
                .is_some_and(|since| now_us.saturating_sub(since) > stale_us);
            if hung || o.error.is_some() {
                Liveness::NoAnswer
            } else if o.status.is_some() {
                Liveness::Up
            } else {
                Liveness::Unknown
            }
        }
    }
}

/// What a running node's fault filter does, as the state column shows it:
/// `isolated` when it is cut off from every other member of its
/// configuration, `cut 1,3` when from some, `slow` when it only delays
/// messages; `None` without a filter.
pub fn link_state(s: &Status) -> Option<String> {
    let cut = s.cut();
    if cut.is_empty() {
        return (!s.delayed().is_empty()).then(|| "slow".to_owned());
    }
    let mut others = s
        .voters
        .iter()
        .chain(&s.outgoing)
        .chain(&s.learners)
        .filter(|&&p| p != s.id)
        .peekable();
    if others.peek().is_some() && others.all(|p| cut.contains(p)) {
        return Some("isolated".to_owned());
    }
    let ids: Vec<String> = cut.iter().map(u64::to_string).collect();
    Some(format!("cut {}", ids.join(",")))
}

/// The event-log line for a change of liveness, if it is one worth a line.
/// (The log's node column names the node.)
fn liveness_change(before: Option<Liveness>, now: Liveness) -> Option<String> {
    let text = match (before, now) {
        (b, n) if b == Some(n) => return None,
        (_, Liveness::Unknown) => return None,
        // The first sight of a node: only worth a line if it is unwell.
        (None | Some(Liveness::Unknown), Liveness::Up) => return None,
        (_, Liveness::Up) => "answers",
        (_, Liveness::NoAnswer) => "stopped answering",
        (_, Liveness::Paused) => "is paused",
        (_, Liveness::Down) => "is down (no process)",
    };
    Some(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cds::status::Filter;

    fn hist(counts: &[u64]) -> Hist {
        let les = [0.001, 0.01, 0.1, f64::INFINITY];
        Hist {
            buckets: les.iter().copied().zip(counts.iter().copied()).collect(),
        }
    }

    #[test]
    fn metrics_histogram_parses() {
        let text = "# TYPE cds_propose_seconds histogram\n\
            cds_propose_seconds_bucket{le=\"0.00005\"} 1\n\
            cds_propose_seconds_bucket{le=\"0.001\"} 5\n\
            cds_propose_seconds_bucket{le=\"+Inf\"} 7\n\
            cds_propose_seconds_count 7\n\
            cds_log_sync_seconds_bucket{le=\"0.001\"} 99\n";
        let h = Hist::parse(text, "propose_seconds").unwrap();
        assert_eq!(
            h.buckets,
            vec![(0.00005, 1), (0.001, 5), (f64::INFINITY, 7)]
        );
        assert!(Hist::parse("", "propose_seconds").is_none());
    }

    #[test]
    fn p99_comes_from_bucket_deltas() {
        let a = hist(&[100, 100, 100, 100]);
        // 100 new observations: 90 under 1 ms, 10 between 1 and 10 ms.
        let b = hist(&[190, 200, 200, 200]);
        // 99th of 100 is the 9th of the 10 in (1 ms, 10 ms]: 1 + 9 * 0.9.
        assert_eq!(b.quantile_since(&a, 0.99), Some(9_100));
        assert_eq!(a.quantile_since(&a, 0.99), None, "no observations");
        assert_eq!(a.quantile_since(&b, 0.99), None, "counters went back");
        let slow = hist(&[100, 100, 100, 200]);
        assert_eq!(
            slow.quantile_since(&a, 0.99),
            Some(100_000),
            "past the last bound"
        );
    }

    fn obs(id: u64, proc: ProcState, role: &str, commit: u64) -> NodeObs {
        NodeObs {
            id,
            proc: Some(proc),
            status: Some(Status {
                id,
                role: role.into(),
                term: 2,
                commit,
                ..Status::default()
            }),
            ..NodeObs::default()
        }
    }

    #[test]
    fn liveness_follows_the_process_and_the_clock() {
        let mut o = obs(1, ProcState::Up, "follower", 0);
        assert_eq!(liveness(&o, 1_000, 250_000), Liveness::Up);
        o.inflight_since_us = Some(1_000);
        assert_eq!(liveness(&o, 200_000, 250_000), Liveness::Up);
        assert_eq!(liveness(&o, 300_000, 250_000), Liveness::NoAnswer);
        o.proc = Some(ProcState::Paused);
        assert_eq!(liveness(&o, 300_000, 250_000), Liveness::Paused);
        o.proc = Some(ProcState::Down);
        assert_eq!(liveness(&o, 300_000, 250_000), Liveness::Down);
    }

    #[test]
    fn link_state_names_the_cut() {
        let mut s = Status {
            id: 1,
            voters: vec![1, 2, 3],
            learners: vec![4],
            ..Status::default()
        };
        assert_eq!(link_state(&s), None);
        s.filter = Some(Filter {
            delay_to_ms: std::collections::BTreeMap::from([(2, 100)]),
            ..Filter::default()
        });
        assert_eq!(link_state(&s).as_deref(), Some("slow"));
        s.filter = Some(Filter::cutting(vec![2, 3]));
        assert_eq!(link_state(&s).as_deref(), Some("cut 2,3"));
        s.filter = Some(Filter::cutting(vec![2, 3, 4, 9]));
        assert_eq!(link_state(&s).as_deref(), Some("isolated"));
        // No configuration known: name the peers.
        s.voters.clear();
        s.learners.clear();
        assert_eq!(link_state(&s).as_deref(), Some("cut 2,3,4,9"));
    }

    fn load(ok: u64, done_us: Vec<u64>, waiting_since_us: Vec<u64>) -> Option<LoadObs> {
        Some(LoadObs {
            clients: 4,
            ok,
            errors: 0,
            done_us,
            waiting_since_us,
        })
    }

    #[test]
    fn put_p99_counts_the_waiting_with_their_wait() {
        assert_eq!(put_p99(&[], &[], 5_000), None);
        assert_eq!(put_p99(&[2_000; 99], &[], 5_000), Some(2_000));
        // Nothing done, four puts waiting for 1 s: the figure is the wait.
        assert_eq!(put_p99(&[], &[4_000_000; 4], 5_000_000), Some(1_000_000));
        // 2 slow of 100 set the p99 (the 99th of 100), done or waiting.
        let fast = [1_000; 98];
        let slow = [1_000_000; 2];
        assert_eq!(put_p99(&fast, &[4_000_000; 2], 5_000_000), Some(1_000_000));
        assert_eq!(
            put_p99(&[&fast[..], &slow].concat(), &[], 0),
            Some(1_000_000)
        );
        // 1 slow of 100 does not.
        assert_eq!(
            put_p99(&[&[1_000; 99][..], &slow[..1]].concat(), &[], 0),
            Some(1_000)
        );
    }

    /// The leader is killed with the load generator running: for a second
    /// no put is done and the four clients wait. The latency point of that
    /// second is their wait (a spike), not `None` (a gap in the chart),
    /// and the load's header shows the very same figure every second.
    #[test]
    fn a_failover_is_a_latency_spike_and_header_and_chart_agree() {
        let mut m = Model::new("d".into(), 250_000, 0);
        let up = |leader: bool| {
            vec![
                obs(
                    1,
                    ProcState::Up,
                    if leader { "leader" } else { "follower" },
                    10,
                ),
                obs(2, ProcState::Up, "follower", 10),
            ]
        };
        let second = |m: &mut Model, t: u64, leader, l: Option<LoadObs>| {
            m.observe(up(leader), t);
            m.observe_load(l, t);
            m.sample(t);
            let chart = *m.p99_us.back().expect("a point a second");
            assert_eq!(m.load.as_ref().unwrap().p99_us, chart, "at {t}");
            chart
        };
        m.observe(up(true), 0);
        m.observe_load(load(0, vec![], vec![]), 0);
        m.sample(0);
        // Healthy: 100 puts of 2 ms, four just sent.
        let t = 1_000_000;
        let healthy = second(
            &mut m,
            t,
            true,
            load(100, vec![2_000; 100], vec![t - 500; 4]),
        );
        assert_eq!(healthy, Some(2_000));
        assert_eq!(m.load.as_ref().unwrap().rate, 100);
        // The leader dies at once: nothing is done, the four wait.
        let failover = second(&mut m, 2_000_000, false, load(100, vec![], vec![t; 4]));
        assert_eq!(failover, Some(1_000_000), "{:?}", m.p99_us);
        assert_eq!(m.load.as_ref().unwrap().rate, 0);
        // A new leader: the four are done after 1.5 s, then 200 fast ones.
        let done = [vec![1_500_000; 4], vec![2_000; 200]].concat();
        let after = second(&mut m, 3_000_000, true, load(304, done, vec![2_999_000; 4]));
        assert_eq!(after, Some(1_500_000));
        assert_eq!(m.load.as_ref().unwrap().rate, 204);
        // The load stops: no figures, and no leftover window.
        m.observe_load(None, 3_500_000);
        assert!(m.load.is_none());
    }

    #[test]
    fn commit_rate_and_liveness_events() {
        let mut m = Model::new("d".into(), 250_000, 0);
        m.observe(
            vec![
                obs(1, ProcState::Up, "leader", 100),
                obs(2, ProcState::Up, "follower", 100),
            ],
            0,
        );
        m.sample(0);
        assert!(m.events.is_empty(), "{:?}", m.events);
        m.observe(
            vec![
                obs(1, ProcState::Up, "leader", 600),
                obs(2, ProcState::Down, "follower", 100),
            ],
            500_000,
        );
        m.sample(500_000);
        assert!(m.commit_rate.is_empty(), "under a second: no sample");
        m.sample(2_000_000);
        assert_eq!(m.commit_rate, [250]);
        assert_eq!(m.events.len(), 1);
        assert_eq!(m.events[0].text, "is down (no process)");
        assert_eq!(m.events[0].node, Some(2));
        assert_eq!(m.leader().map(|n| n.obs.id), Some(1));
    }
}
