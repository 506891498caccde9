//! `cdsctl top`: a live console that watches and drives a cluster: a
//! local cluster of processes (`--dir`), or a simulated one running in
//! this process (`--sim`).
//!
//! Behind the screen is a [`source::Source`]. For a local cluster, pollers
//! (one per node, see [`poll`]) and a trace tailer fill shared state, and
//! one worker runs the actions the keys ask for, in order, through the same
//! functions as the `cdsctl kv` commands ([`local`]). For a simulation, the
//! UI thread moves simulated time along with the wall clock and acts on
//! the simulator directly ([`sim`]). Either way this thread only reads the
//! picture, draws, and waits for keys: nothing here blocks on a node, so a
//! paused or hung node shows as such instead of freezing the screen.

mod events;
mod keys;
mod local;
mod model;
mod poll;
mod sim;
mod source;
mod ui;

use std::io::Stdout;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Args;
use crossterm::event::{self, Event as TermEvent, KeyCode};
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

use crate::cmd::kv::parse_duration;
use cds::devcluster::directory::ClusterFile;
use keys::Action;
use model::{EventKind, Model, SimInfo};
use source::{Job, Source};

/// Arguments of `cdsctl top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// The cluster directory (as given to `cdsctl kv up --dir`).
    #[arg(long, default_value = "cds-cluster", conflicts_with = "sim")]
    pub dir: PathBuf,
    /// Watch a simulated cluster running in this process instead: the
    /// real Raft core on the deterministic simulator, simulated time
    /// moving with the wall clock (see `--speed`). Kills and pauses are
    /// simulated crashes and stalls; the simulation ends when `top` does.
    #[arg(long)]
    pub sim: bool,
    /// Voters of the simulated cluster (3 to 7; two spare nodes wait to be
    /// added).
    #[arg(long, default_value_t = 3, requires = "sim")]
    pub nodes: usize,
    /// The simulator's seed (shown on screen); a new one each run if not
    /// given.
    #[arg(long, requires = "sim")]
    pub seed: Option<u64>,
    /// Simulated milliseconds per wall-clock millisecond (0.01 to 100).
    #[arg(long, default_value_t = 1.0, requires = "sim", value_parser = parse_speed)]
    pub speed: f64,
    /// Write the simulated session's trace to this file as it runs
    /// (replay it with `cdsctl viz FILE`).
    #[arg(long, requires = "sim")]
    pub trace: Option<PathBuf>,
    /// Time between refreshes of the screen and polls of the nodes.
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    pub refresh: Duration,
    /// Clients of the load generator the `l` key starts.
    #[arg(long, default_value_t = 16)]
    pub load_clients: usize,
    /// Bytes per value the load generator writes (a local cluster only:
    /// simulated puts carry a number).
    #[arg(long, default_value_t = 256, conflicts_with = "sim")]
    pub value_size: usize,
}

fn parse_speed(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number (try 0.5 or 2)"))?;
    if !(0.01..=100.0).contains(&v) {
        return Err(format!("{v} is outside 0.01 to 100"));
    }
    Ok(v)
}

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
    let refresh = args.refresh.max(Duration::from_millis(50));
    let (mut source, mut model): (Box<dyn Source>, Model) = if args.sim {
        let seed = args.seed.unwrap_or_else(|| now_us() % 1_000_000);
        let source = sim::SimSource::new(sim::SimOptions {
            nodes: args.nodes,
            seed,
            speed: args.speed,
            clients: args.load_clients,
            trace: args.trace.clone(),
        })?;
        let mut model = Model::new(
            format!("simulated, seed {seed}"),
            refresh.as_micros() as u64,
            0,
        );
        model.sim = Some(SimInfo {
            seed,
            speed: args.speed,
        });
        (Box::new(source), model)
    } else {
        // Fail before touching the terminal when there is no cluster to watch.
        ClusterFile::load(&args.dir)?;
        let source = local::LocalSource::start(
            args.dir.clone(),
            refresh,
            args.load_clients,
            args.value_size,
        )?;
        let model = Model::new(
            args.dir.display().to_string(),
            refresh.as_micros() as u64,
            utc_offset_s(),
        );
        (Box::new(source), model)
    };

    let mut term = TerminalGuard::enter()?;
    let started = Instant::now();
    let outcome = ui_loop(&mut term.terminal, &mut model, source.as_mut(), refresh);
    let frames = outcome.as_ref().copied().unwrap_or(0);
    drop(term);
    let secs = started.elapsed().as_secs_f64();
    // For measuring the refresh rate; after the screen is restored.
    eprintln!(
        "top: {frames} frames in {secs:.1} s ({:.1}/s)",
        frames as f64 / secs.max(1e-9)
    );
    if let Some(seed) = model.sim.as_ref().map(|s| s.seed) {
        eprintln!("top: simulated cluster, seed {seed}");
    }
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

/// Draws and handles keys until quit; returns the frames drawn.
fn ui_loop(
    terminal: &mut Term,
    model: &mut Model,
    source: &mut dyn Source,
    refresh: Duration,
) -> Result<u64> {
    let mut frames = 0u64;
    let mut next_frame = Instant::now();
    loop {
        let up = source.update();
        let now = up.now_us;
        // Actions first: a kill's outcome goes in the log before the
        // node's "is down" it causes.
        for r in source.reports() {
            model.report(r);
        }
        model.observe(up.nodes, now);
        for e in up.events {
            model.push_event(e);
        }
        if let Some(e) = up.error {
            model.set_status(EventKind::Failed, e);
        }
        model.observe_load(up.load, now);
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
                    if handle(action, &k, model, source) {
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

/// Acts on a key; returns true to quit.
fn handle(
    action: Action,
    key: &crossterm::event::KeyEvent,
    model: &mut Model,
    source: &mut dyn Source,
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
            if let Err(e) = source.submit(job) {
                model.set_status(EventKind::Failed, format!("✗ {e}"));
            } else {
                model.queued += 1;
                model.set_status(EventKind::Action, format!("queued: {what}"));
            }
        }
    }
    false
}
