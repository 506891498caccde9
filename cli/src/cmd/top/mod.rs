//! `cdsctl top`: a live console that watches and drives a local cluster.
//!
//! Three kinds of thread keep the screen responsive: pollers (one per
//! node, see [`poll`]) and a trace tailer fill shared state; one worker
//! runs the actions the keys ask for, in order, through the same functions
//! as the `cdsctl kv` commands; and this thread only reads that state,
//! draws, and waits for keys. Nothing here blocks on a node, so a paused or
//! hung node shows as such instead of freezing the screen.
//!
//! Left out: `--sim` (a simulated cluster in the same process).

mod events;
mod keys;
mod model;
mod poll;
mod ui;

use std::io::Stdout;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Args;
use crossterm::event::{self, Event as TermEvent, KeyCode};
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

use crate::cmd::kv::bench::{Background, LiveStats};
use crate::cmd::kv::cluster::ClusterFile;
use crate::cmd::kv::{self, parse_duration};
use keys::Action;
use model::{EventKind, LoadView, Model};

/// Arguments of `cdsctl top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// The cluster directory (as given to `cdsctl kv up --dir`).
    #[arg(long, default_value = "cds-cluster")]
    pub dir: PathBuf,
    /// Time between refreshes of the screen and polls of the nodes.
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    pub refresh: Duration,
    /// Clients of the load generator the `l` key starts.
    #[arg(long, default_value_t = 16)]
    pub load_clients: usize,
    /// Bytes per value the load generator writes.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
}

/// How long an action that waits for the cluster (restart, transfer,
/// membership changes) may take, as the matching command's default.
const ACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Wall-clock microseconds, the clock of the traces and of the model.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Local time minus UTC, in seconds, for the clock on screen.
fn utc_offset_s() -> i64 {
    let now = (now_us() / 1_000_000) as libc::time_t;
    // SAFETY: localtime_r writes only into `tm`, which we own.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&now, &mut tm) }.is_null() {
        return 0;
    }
    tm.tm_gmtoff
}

/// Runs `cdsctl top`.
pub fn run(args: TopArgs) -> Result<()> {
    // Fail before touching the terminal when there is no cluster to watch.
    ClusterFile::load(&args.dir)?;
    let refresh = args.refresh.max(Duration::from_millis(50));
    let poller = poll::Poller::start(args.dir.clone(), refresh);
    let (jobs, results) = start_worker(args.dir.clone(), args.load_clients, args.value_size)?;
    let mut model = Model::new(
        args.dir.display().to_string(),
        refresh.as_micros() as u64,
        utc_offset_s(),
    );

    let mut term = TerminalGuard::enter()?;
    let started = Instant::now();
    let outcome = ui_loop(
        &mut term.terminal,
        &mut model,
        &poller,
        (&jobs, &results),
        refresh,
        args.load_clients,
    );
    let frames = outcome.as_ref().copied().unwrap_or(0);
    drop(term);
    let secs = started.elapsed().as_secs_f64();
    // For measuring the refresh rate; after the screen is restored.
    eprintln!(
        "top: {frames} frames in {secs:.1} s ({:.1}/s)",
        frames as f64 / secs.max(1e-9)
    );
    outcome.map(|_| ())
}

type Term = Terminal<CrosstermBackend<Stdout>>;

/// Raw mode and the alternate screen, undone on drop and on panic.
struct TerminalGuard {
    terminal: Term,
}

fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = crossterm::execute!(
        std::io::stdout(),
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

impl TerminalGuard {
    fn enter() -> Result<TerminalGuard> {
        // Restore before the panic message prints, or it lands in the
        // alternate screen in raw mode and is lost.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
        enable_raw_mode().context("switching the terminal to raw mode")?;
        let mut out = std::io::stdout();
        if let Err(e) = crossterm::execute!(out, EnterAlternateScreen) {
            restore_terminal();
            return Err(e).context("entering the alternate screen");
        }
        match Terminal::new(CrosstermBackend::new(out)) {
            Ok(terminal) => Ok(TerminalGuard { terminal }),
            Err(e) => {
                restore_terminal();
                Err(e).context("setting up the terminal")
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// A request to the worker: an action and the node it targets.
struct Job {
    action: Action,
    node: Option<u64>,
    what: String,
}

/// What the worker reports back.
enum Report {
    Started(String),
    Finished {
        outcome: Result<String, String>,
        /// `Some` when the load generator started (`Some(Some)`) or
        /// stopped (`Some(None)`).
        load: Option<Option<Arc<LiveStats>>>,
    },
}

fn start_worker(
    dir: PathBuf,
    clients: usize,
    value_size: usize,
) -> Result<(Sender<Job>, Receiver<Report>)> {
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let (rep_tx, rep_rx) = mpsc::channel::<Report>();
    std::thread::Builder::new()
        .name("top-actions".into())
        .spawn(move || {
            // Lives here so a stop can wait for the clients off the UI thread;
            // dropped (and so stopped) when `top` exits.
            let mut load: Option<Background> = None;
            for job in job_rx {
                if rep_tx.send(Report::Started(job.what.clone())).is_err() {
                    return;
                }
                let mut load_change = None;
                let outcome = act(&dir, &job, &mut load, clients, value_size, &mut load_change)
                    .map_err(|e| format!("{}: {e:#}", job.what));
                let report = Report::Finished {
                    outcome,
                    load: load_change,
                };
                if rep_tx.send(report).is_err() {
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
    load_change: &mut Option<Option<Arc<LiveStats>>>,
) -> Result<String> {
    let mut warnings = Vec::new();
    let mut warn = |w: String| warnings.push(w);
    let node = || job.node.context("no node selected");
    let msg = match job.action {
        Action::Kill => kv::kill(dir, node()?)?,
        Action::Restart => kv::restart(dir, node()?, ACTION_TIMEOUT)?,
        Action::Pause => kv::pause(dir, node()?)?,
        Action::Resume => kv::resume(dir, node()?)?,
        Action::Isolate => {
            let id = node()?;
            let c = ClusterFile::load(dir)?;
            let others: Vec<String> = c
                .nodes
                .iter()
                .filter(|n| n.id != id)
                .map(|n| n.id.to_string())
                .collect();
            kv::partition(dir, &format!("{id}/{}", others.join(",")), &mut warn)?
        }
        Action::Heal => kv::heal(dir, &mut warn)?,
        Action::Transfer => kv::transfer_leader(dir, node()?, ACTION_TIMEOUT)?,
        Action::AddNode => kv::add_node(dir, ACTION_TIMEOUT, &mut warn)?,
        Action::RemoveNode => kv::remove_node(dir, node()?, ACTION_TIMEOUT)?,
        Action::Snapshot => kv::snapshot(dir, node()?)?,
        Action::Load => match load.take() {
            Some(bg) => {
                *load_change = Some(None);
                bg.stop()
            }
            None => {
                let (bg, msg) = kv::load_start(dir, clients, value_size)?;
                *load_change = Some(Some(bg.stats()));
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

/// What the user sees while an action is queued: "kill node 2".
fn describe(action: Action, node: Option<u64>) -> String {
    let n = node.map_or_else(|| "?".to_owned(), |n| n.to_string());
    match action {
        Action::Kill => format!("kill node {n}"),
        Action::Restart => format!("restart node {n}"),
        Action::Pause => format!("pause node {n}"),
        Action::Resume => format!("resume node {n}"),
        Action::Isolate => format!("partition node {n} away"),
        Action::Heal => "heal".into(),
        Action::Transfer => format!("transfer leadership to node {n}"),
        Action::AddNode => "add a node".into(),
        Action::RemoveNode => format!("remove node {n}"),
        Action::Snapshot => format!("snapshot node {n}"),
        Action::Load => "toggle the load generator".into(),
        other => format!("{other:?}"),
    }
}

/// The running load generator as the UI tracks it.
struct LoadTrack {
    stats: Arc<LiveStats>,
    clients: usize,
    last_ok: u64,
    last_at: Instant,
}

/// Draws and handles keys until quit; returns the frames drawn.
fn ui_loop(
    terminal: &mut Term,
    model: &mut Model,
    poller: &poll::Poller,
    (jobs, results): (&Sender<Job>, &Receiver<Report>),
    refresh: Duration,
    load_clients: usize,
) -> Result<u64> {
    let mut frames = 0u64;
    let mut load: Option<LoadTrack> = None;
    let mut next_frame = Instant::now();
    loop {
        let now = now_us();
        let (obs, evs, cluster_error) = poller.take();
        model.observe(obs, now);
        for e in evs {
            model.push_event(e);
        }
        if let Some(e) = cluster_error {
            model.set_status(EventKind::Failed, e);
        }
        while let Ok(r) = results.try_recv() {
            match r {
                Report::Started(what) => {
                    model.queued = model.queued.saturating_sub(1);
                    model.push_event(events::action_started(now, &what));
                    model.set_status(EventKind::Action, format!("running: {what}…"));
                }
                Report::Finished {
                    outcome,
                    load: change,
                } => {
                    model.push_event(events::action_finished(now, &outcome));
                    match &outcome {
                        Ok(m) => model.set_status(EventKind::Done, format!("✓ {m}")),
                        Err(e) => model.set_status(EventKind::Failed, format!("✗ {e}")),
                    }
                    match change {
                        Some(Some(stats)) => {
                            load = Some(LoadTrack {
                                stats,
                                clients: load_clients,
                                last_ok: 0,
                                last_at: Instant::now(),
                            });
                            model.load = Some(LoadView {
                                clients: load_clients,
                                ..LoadView::default()
                            });
                        }
                        Some(None) => {
                            load = None;
                            model.load = None;
                        }
                        None => {}
                    }
                }
            }
        }
        if let Some(l) = &mut load {
            update_load(l, model);
        }
        model.sample(now);
        terminal
            .draw(|f| ui::draw(f, model, now))
            .context("drawing the screen")?;
        frames += 1;

        // A frame drawn early for a key leaves the schedule alone, so keys
        // never delay the next refresh.
        let now_i = Instant::now();
        if now_i >= next_frame {
            next_frame += refresh;
            if next_frame < now_i {
                // Fell behind (a slow terminal): don't try to catch up.
                next_frame = now_i + refresh;
            }
        }
        // Wait for a key until the next frame is due; a key redraws at once.
        while let Some(wait) = next_frame.checked_duration_since(Instant::now()) {
            if !event::poll(wait).context("reading the terminal")? {
                break;
            }
            match event::read().context("reading the terminal")? {
                TermEvent::Key(k) => {
                    let Some(action) = keys::action_for(&k) else {
                        continue;
                    };
                    if handle(action, &k, model, jobs) {
                        return Ok(frames);
                    }
                    break;
                }
                TermEvent::Resize(..) => break,
                _ => {}
            }
        }
    }
}

/// Once a second: the load generator's rate and its own p99.
fn update_load(l: &mut LoadTrack, model: &mut Model) {
    let dt = l.last_at.elapsed();
    if dt < Duration::from_secs(1) {
        return;
    }
    let ok = l.stats.ok.load(std::sync::atomic::Ordering::Relaxed);
    let errors = l.stats.errors.load(std::sync::atomic::Ordering::Relaxed);
    let mut lat = l.stats.drain();
    lat.sort_unstable();
    let p99_us = (!lat.is_empty()).then(|| {
        let i = ((lat.len() as f64 * 0.99).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i].as_micros() as u64
    });
    model.load = Some(LoadView {
        clients: l.clients,
        ok,
        errors,
        rate: ((ok - l.last_ok.min(ok)) as f64 / dt.as_secs_f64()).round() as u64,
        p99_us,
    });
    l.last_ok = ok;
    l.last_at = Instant::now();
}

/// Acts on a key; returns true to quit.
fn handle(
    action: Action,
    key: &crossterm::event::KeyEvent,
    model: &mut Model,
    jobs: &Sender<Job>,
) -> bool {
    // With the help open only the keys that close it (or quit) act, so a
    // stray key cannot kill a node behind the popup.
    if model.help && !matches!(action, Action::Help | Action::Close | Action::Quit) {
        return false;
    }
    let n = model.nodes.len();
    match action {
        Action::Quit => return true,
        Action::Help => model.help = !model.help,
        Action::Close => model.help = false,
        Action::Up => model.selected = model.selected.saturating_sub(1),
        Action::Down => model.selected = (model.selected + 1).min(n.saturating_sub(1)),
        Action::SelectId => {
            if let KeyCode::Char(c) = key.code {
                let id = c.to_digit(10).map(u64::from);
                match model.nodes.iter().position(|v| Some(v.obs.id) == id) {
                    Some(i) => model.selected = i,
                    None => model.set_status(EventKind::Failed, format!("✗ there is no node {c}")),
                }
            }
        }
        _ => {
            let node = model.selected_id();
            let what = describe(action, node);
            let job = Job {
                action,
                node,
                what: what.clone(),
            };
            if jobs.send(job).is_err() {
                model.set_status(EventKind::Failed, "✗ the action worker has stopped");
            } else {
                model.queued += 1;
                model.set_status(EventKind::Action, format!("queued: {what}"));
            }
        }
    }
    false
}
