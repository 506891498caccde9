//! Rendering: a pure function of the [`Model`] and a clock.
//!
//! Layout, top to bottom: a title line (directory, leader, term, clock),
//! the node table, configuration beside the last minute's throughput and
//! latency, the event log, the status bar and a line of key hints. At 80
//! columns the table drops the address and pid columns (the selected node's
//! show in its title); wider terminals get them back, and taller ones give
//! the charts and the event log the extra rows. A simulated cluster has no
//! pids or addresses, and its clock is simulated time since the start. The
//! latency chart shows the load generator's put latency while it runs (the
//! load's header gives the chart's newest point), and otherwise a real
//! leader's proposal latency ([`Model::p99_us`]).

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row, Sparkline, Table};
use ratatui::Frame;

use super::events::ids;
use super::keys::{keys_text, Action, Binding, Hint, KEYS};
use super::model::{link_state, EventKind, Liveness, Model, NodeView, HISTORY};

/// From this width on, the table shows the pid and HTTP address (and the
/// configuration panel is wider).
const WIDE: u16 = 110;
/// From this width on, the table also shows the transport address.
const WIDER: u16 = 134;

/// Draws the whole screen.
pub fn draw(f: &mut Frame, m: &Model, now_us: u64) {
    let area = f.area();
    let table_h = m.nodes.len().max(1) as u16 + 3;
    let middle_h = (area.height / 4).clamp(6, 14);
    let [title, table, middle, events, status, hints] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(table_h),
        Constraint::Length(middle_h),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_title(f, m, now_us, title);
    draw_nodes(f, m, table);
    let config_w = if area.width >= WIDE { 48 } else { 34 };
    let [config, charts] =
        Layout::horizontal([Constraint::Length(config_w), Constraint::Min(20)]).areas(middle);
    draw_config(f, m, config);
    draw_charts(f, m, charts);
    draw_events(f, m, events);
    draw_status(f, m, status);
    draw_hints(f, hints);
    if m.help {
        draw_help(f, m, area);
    }
}

/// `HH:MM:SS.mmm` in local time (`offset_s` from UTC).
pub fn clock(t_us: u64, offset_s: i64) -> String {
    let local_ms = (t_us / 1000) as i64 + offset_s * 1000;
    let day_ms = local_ms.rem_euclid(86_400_000);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        day_ms / 3_600_000,
        day_ms / 60_000 % 60,
        day_ms / 1000 % 60,
        day_ms % 1000
    )
}

fn role_style(role: &str) -> Style {
    match role {
        "leader" => Style::new().fg(Color::Green).add_modifier(Modifier::BOLD),
        "candidate" | "precandidate" => Style::new().fg(Color::Yellow),
        _ => Style::new(),
    }
}

fn liveness_style(l: Liveness) -> Style {
    match l {
        Liveness::Up => Style::new().fg(Color::Green),
        Liveness::NoAnswer => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        Liveness::Paused => Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD),
        Liveness::Down => Style::new().fg(Color::Red),
        Liveness::Unknown => Style::new().fg(Color::DarkGray),
    }
}

fn kind_style(k: EventKind) -> Style {
    match k {
        EventKind::Election => Style::new().fg(Color::Yellow),
        EventKind::Leader => Style::new().fg(Color::Green),
        EventKind::Config => Style::new().fg(Color::Cyan),
        EventKind::Snapshot => Style::new().fg(Color::Blue),
        EventKind::Process => Style::new(),
        EventKind::Action => Style::new().fg(Color::Magenta),
        EventKind::Done => Style::new().fg(Color::Green),
        EventKind::Failed => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
    }
}

fn draw_title(f: &mut Frame, m: &Model, now_us: u64, area: Rect) {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut spans = vec![
        Span::styled(" cdsctl top ", bold.fg(Color::Cyan)),
        Span::raw(&m.dir),
    ];
    match m.leader() {
        Some(l) => {
            let term = l.obs.status.as_ref().map_or(0, |s| s.term);
            spans.push(Span::raw("  leader "));
            spans.push(Span::styled(format!("n{}", l.obs.id), role_style("leader")));
            spans.push(Span::raw(format!(" term {term}")));
        }
        None => spans.push(Span::styled(
            "  no leader",
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        )),
    }
    if m.load.is_some() {
        spans.push(Span::styled("  load on", Style::new().fg(Color::Magenta)));
    }
    let left = Line::from(spans);
    let right = match &m.sim {
        // Simulated time since the start, and how it relates to the wall.
        Some(sim) if sim.speed != 1.0 => format!("sim {} ×{}", clock(now_us, 0), sim.speed),
        Some(_) => format!("sim {}", clock(now_us, 0)),
        None => clock(now_us, m.utc_offset_s),
    };
    let [l, r] = Layout::horizontal([
        Constraint::Min(10),
        Constraint::Length(right.len() as u16 + 1),
    ])
    .areas(area);
    f.render_widget(Paragraph::new(left), l);
    f.render_widget(Paragraph::new(right), r);
}

fn dash() -> String {
    "-".to_owned()
}

fn draw_nodes(f: &mut Frame, m: &Model, area: Rect) {
    // Simulated nodes have no pid or addresses to show.
    let real = m.sim.is_none();
    let wide = real && area.width >= WIDE;
    let wider = real && area.width >= WIDER;
    let leader = m
        .leader()
        .and_then(|l| l.obs.status.as_ref().map(|s| (l.obs.id, s)));
    let mut header = vec![
        "", "id", "state", "role", "term", "ldr", "commit", "applied", "log", "snap", "lag",
    ];
    if wide {
        header.extend(["pid", "http"]);
    }
    if wider {
        header.push("raft");
    }
    let rows = m
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| node_row(n, i == m.selected, leader, (wide, wider)));
    let mut widths = vec![
        Constraint::Length(1),
        Constraint::Length(3),
        Constraint::Length(9),
        Constraint::Length(12),
        Constraint::Length(5),
        Constraint::Length(3),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(6),
    ];
    if wide {
        widths.extend([Constraint::Length(8), Constraint::Length(21)]);
    }
    if wider {
        widths.push(Constraint::Length(21));
    }
    let title = match m.nodes.get(m.selected) {
        Some(n) if real && !wide => format!(
            " Nodes · n{} pid {} http {} ",
            n.obs.id,
            n.obs.pid.map_or_else(dash, |p| p.to_string()),
            n.obs.http_addr
        ),
        _ => " Nodes ".to_owned(),
    };
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(Style::new().add_modifier(Modifier::BOLD)))
        .block(Block::bordered().title(title));
    f.render_widget(table, area);
    if m.nodes.is_empty() {
        let inner = Rect {
            y: area.y + 2,
            height: 1,
            ..area.inner(ratatui::layout::Margin::new(1, 0))
        };
        f.render_widget(Paragraph::new("no nodes in cluster.json"), inner);
    }
}

fn node_row<'a>(
    n: &'a NodeView,
    selected: bool,
    leader: Option<(u64, &'a cds::status::Status)>,
    (wide, wider): (bool, bool),
) -> Row<'a> {
    let o = &n.obs;
    // Down: nothing is known; paused or silent: the last answer, dimmed.
    let st = if n.liveness == Liveness::Down {
        None
    } else {
        o.status.as_ref()
    };
    let stale = n.liveness != Liveness::Up;
    let num = |v: Option<u64>| v.map_or_else(dash, |v| v.to_string());
    let role = st.map_or_else(dash, |s| s.role.clone());
    // A match of 0 is a leader that has not heard from the peer yet (just
    // elected, or the peer is silent): the lag is unknown, not the whole log.
    let lag = match leader {
        Some((lid, ls)) if lid != o.id => ls
            .matched
            .get(&o.id)
            .map(|&m| (m > 0).then(|| ls.last_index.saturating_sub(m))),
        _ => None,
    };
    let mut cells = vec![
        Cell::from(if selected { "▶" } else { " " }),
        Cell::from(o.id.to_string()),
        // A running node cut off by a fault filter says so instead of "up".
        match (n.liveness, st.and_then(link_state)) {
            (Liveness::Up, Some(link)) => {
                Cell::from(link).style(Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD))
            }
            _ => Cell::from(n.liveness.name()).style(liveness_style(n.liveness)),
        },
        Cell::from(role.clone()).style(if stale {
            Style::new()
        } else {
            role_style(&role)
        }),
        Cell::from(num(st.map(|s| s.term))),
        Cell::from(num(st.and_then(|s| s.leader))),
        Cell::from(num(st.map(|s| s.commit))),
        Cell::from(num(st.map(|s| s.applied))),
        Cell::from(num(
            st.map(|s| (s.last_index + 1).saturating_sub(s.first_index))
        )),
        Cell::from(num(st.and_then(|s| s.snapshot_index))),
        Cell::from(match lag {
            None => dash(),
            Some(None) => "?".to_owned(),
            Some(Some(l)) => l.to_string(),
        })
        .style(match lag {
            Some(Some(l)) if l > 100 => Style::new().fg(Color::Yellow),
            Some(None) => Style::new().fg(Color::Yellow),
            _ => Style::new(),
        }),
    ];
    if wide {
        cells.extend([
            Cell::from(o.pid.map_or_else(dash, |p| p.to_string())),
            Cell::from(o.http_addr.as_str()),
        ]);
    }
    if wider {
        cells.push(Cell::from(o.raft_addr.as_str()));
    }
    let mut style = Style::new();
    if stale {
        style = style.fg(Color::DarkGray);
    }
    if selected {
        style = style.add_modifier(Modifier::REVERSED);
    }
    Row::new(cells).style(style)
}

fn draw_config(f: &mut Frame, m: &Model, area: Rect) {
    let label = |s: &'static str| {
        Span::styled(format!("{s:<9}"), Style::new().add_modifier(Modifier::BOLD))
    };
    let warn = Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD);
    let mut lines = Vec::new();
    let mut title = Line::from(" Configuration ");
    // In priority order: the panel is 4 lines high at 24 rows, and clips.
    match m.config_source() {
        Some(s) => {
            let joint = !s.outgoing.is_empty();
            lines.push(Line::from(vec![
                label("leader"),
                Span::raw(match m.leader() {
                    Some(l) => format!("n{} (term {})", l.obs.id, s.term),
                    None => "none".into(),
                }),
            ]));
            if joint {
                title = Line::from(vec![
                    Span::raw(" Configuration "),
                    Span::styled("JOINT ", warn),
                ]);
                lines.push(Line::from(vec![
                    label("voters"),
                    Span::raw(ids(&s.voters)),
                    Span::styled(" new", warn),
                ]));
                lines.push(Line::from(vec![
                    label("outgoing"),
                    Span::raw(ids(&s.outgoing)),
                    Span::styled(" old", warn),
                ]));
            } else {
                lines.push(Line::from(vec![label("voters"), Span::raw(ids(&s.voters))]));
            }
            lines.push(Line::from(vec![
                label("learners"),
                Span::raw(ids(&s.learners)),
            ]));
            lines.push(quorum_line(m, s, label("quorum")));
        }
        None => lines.push(Line::from("no node answers")),
    }
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(title)),
        area,
    );
}

/// Whether the voters that answer, and that the node whose configuration
/// is shown (the leader) can reach, make a majority (of both
/// configurations while joint, as a commit needs).
fn quorum_line<'a>(m: &Model, s: &cds::status::Status, label: Span<'a>) -> Line<'a> {
    let up = |id: u64| {
        m.nodes
            .iter()
            .find(|n| n.obs.id == id && n.liveness == Liveness::Up)
    };
    // A partition cuts both ways; either side's filter is enough.
    let reachable = |id: u64| {
        up(id).is_some_and(|n| {
            !s.cut().contains(&id)
                && !n
                    .obs
                    .status
                    .as_ref()
                    .is_some_and(|st| st.cut().contains(&s.id))
        })
    };
    let mut ok = true;
    let mut parts = Vec::new();
    for (name, set) in [("", &s.voters), ("old ", &s.outgoing)] {
        if set.is_empty() {
            continue;
        }
        let n_up = set.iter().filter(|&&id| up(id).is_some()).count();
        let n_ok = set.iter().filter(|&&id| reachable(id)).count();
        ok &= n_ok > set.len() / 2;
        let mut part = format!("{name}{n_up}/{} up", set.len());
        if n_ok < n_up {
            part.push_str(&format!(", {} cut off", n_up - n_ok));
        }
        parts.push(part);
    }
    let (word, style) = if ok {
        ("ok", Style::new().fg(Color::Green))
    } else {
        (
            "LOST",
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        )
    };
    Line::from(vec![
        label,
        Span::styled(word, style),
        Span::raw(format!(" ({})", parts.join(", "))),
    ])
}

/// `3.10 ms`, or `-`.
fn ms(us: Option<u64>) -> String {
    us.map_or_else(dash, |u| format!("{:.2} ms", u as f64 / 1000.0))
}

fn draw_charts(f: &mut Frame, m: &Model, area: Rect) {
    let mut title = vec![Span::raw(" Last minute · load ")];
    title.push(match &m.load {
        Some(l) if l.errors > 0 => Span::styled(
            format!("{}/s p99 {} {} err ", l.rate, ms(l.p99_us), l.errors),
            Style::new().fg(Color::Red),
        ),
        Some(l) => Span::styled(
            format!("{}/s p99 {} ", l.rate, ms(l.p99_us)),
            Style::new().fg(Color::Magenta),
        ),
        None => Span::raw("off "),
    });
    let block = Block::bordered().title(Line::from(title));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let spark_h = inner.height.saturating_sub(2) / 2;
    let [t1, s1, t2, s2] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(spark_h.max(1)),
        Constraint::Length(1),
        Constraint::Length(spark_h.max(1)),
    ])
    .areas(inner);
    let width = inner.width as usize;
    let rate: Vec<u64> = tail(m.commit_rate.iter().copied(), width);
    let p99: Vec<u64> = tail(m.p99_us.iter().map(|p| p.unwrap_or(0)), width);
    let bold = Style::new().add_modifier(Modifier::BOLD);
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled("commits/s ", bold),
            Span::raw(format!(
                "now {} max {}",
                m.commit_rate.back().copied().unwrap_or(0),
                m.commit_rate.iter().max().copied().unwrap_or(0)
            )),
        ])),
        t1,
    );
    f.render_widget(
        Sparkline::default()
            .data(&rate)
            .style(Style::new().fg(Color::Green)),
        s1,
    );
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(
                if m.load.is_some() || m.sim.is_some() {
                    "client p99 "
                } else {
                    "propose p99 "
                },
                bold,
            ),
            Span::raw(format!(
                "now {} max {}",
                ms(m.p99_us.back().copied().flatten()),
                ms(m.p99_us.iter().flatten().max().copied())
            )),
        ])),
        t2,
    );
    f.render_widget(
        Sparkline::default()
            .data(&p99)
            .style(Style::new().fg(Color::Yellow)),
        s2,
    );
}

/// `n` columns of a per-second series, the newest at the right edge. When
/// the minute fits, it spans the whole width (a wide terminal shows it
/// wider, not a longer blank); else the last `n` seconds show.
fn tail(values: impl DoubleEndedIterator<Item = u64> + ExactSizeIterator, n: usize) -> Vec<u64> {
    let v: Vec<u64> = values.collect();
    if n < HISTORY {
        let mut out = vec![0; n.saturating_sub(v.len())];
        out.extend(&v[v.len().saturating_sub(n)..]);
        return out;
    }
    (0..n)
        .map(|c| {
            // Column c shows the second this many seconds before the newest.
            let back = HISTORY - 1 - c * HISTORY / n;
            v.len().checked_sub(1 + back).map_or(0, |i| v[i])
        })
        .collect()
}

fn draw_events(f: &mut Frame, m: &Model, area: Rect) {
    let rows = area.height.saturating_sub(2) as usize;
    let start = m.events.len().saturating_sub(rows);
    let lines: Vec<Line> = m
        .events
        .iter()
        .skip(start)
        .map(|e| {
            let who = e.node.map_or_else(|| "  ".to_owned(), |n| format!("n{n}"));
            Line::from(vec![
                Span::styled(
                    clock(e.t_us, m.utc_offset_s),
                    Style::new().fg(Color::DarkGray),
                ),
                Span::raw(format!(" {who:<3} ")),
                Span::styled(e.text.as_str(), kind_style(e.kind)),
            ])
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" Events ")),
        area,
    );
}

fn draw_status(f: &mut Frame, m: &Model, area: Rect) {
    let mut text = m.status.text.clone();
    if m.queued > 0 {
        text.push_str(&format!(" ({} queued)", m.queued));
    }
    // One line: the first line of a multi-line message (a log tail).
    let first = text.lines().next().unwrap_or("").to_owned();
    f.render_widget(
        Paragraph::new(Line::from(Span::styled(
            format!(" {first}"),
            kind_style(m.status.kind),
        ))),
        area,
    );
}

/// The hinted keys, in table order, as many as fit: help and quit always
/// (they lead to everything else), then the `Yes` ones, then the `Wide`.
fn draw_hints(f: &mut Frame, area: Rect) {
    let width = |b: &Binding| b.keys[0].name().chars().count() + b.label.len() + 2;
    let always = |b: &Binding| matches!(b.action, Action::Help | Action::Quit);
    let mut shown: Vec<bool> = KEYS.iter().map(always).collect();
    let mut room = (area.width as usize)
        .saturating_sub(KEYS.iter().filter(|b| always(b)).map(width).sum::<usize>());
    for level in [Hint::Yes, Hint::Wide] {
        for (i, b) in KEYS.iter().enumerate() {
            if b.hint == level && !shown[i] && width(b) <= room {
                room -= width(b);
                shown[i] = true;
            }
        }
    }
    let mut spans = Vec::new();
    for (b, _) in KEYS.iter().zip(&shown).filter(|(_, s)| **s) {
        spans.push(Span::styled(
            format!(" {}", b.keys[0].name()),
            Style::new().fg(Color::Black).bg(Color::Cyan),
        ));
        spans.push(Span::raw(format!(" {}", b.label)));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_help(f: &mut Frame, m: &Model, area: Rect) {
    let mut lines: Vec<Line> = KEYS
        .iter()
        .map(|b| {
            Line::from(vec![
                Span::styled(
                    format!(" {:<8}", keys_text(b)),
                    Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
                ),
                Span::raw(b.help_for(m.sim.is_some())),
            ])
        })
        .collect();
    lines.push(Line::from(""));
    let note: [&str; 2] = if m.sim.is_some() {
        [
            " Actions act on the simulator at once; their",
            " effects unfold in simulated time.",
        ]
    } else {
        [
            " Each action runs `cdsctl kv ...` code on",
            " the selected node; see the status bar.",
        ]
    };
    lines.extend(note.map(Line::from));
    let w = 50.min(area.width);
    let h = (lines.len() as u16 + 2).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    f.render_widget(Clear, popup);
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" Keys (? or Esc closes) ")),
        popup,
    );
}

#[cfg(test)]
mod tests {
    //! Snapshot tests: each view at 80x24 and 160x48, from a fixed model and
    //! clock, against reviewed text in `cli/tests/snapshots/top/`. Run with
    //! `UPDATE_SNAPSHOTS=1` to rewrite them after an intended change (and
    //! read the diff before committing it).

    use std::collections::BTreeMap;

    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    use super::*;
    use crate::cmd::top::model::{Event, LoadView, NodeObs, SimInfo};
    use cds::devcluster::process::ProcState;
    use cds::status::{Filter, Status};

    /// 2023-11-14 22:13:20 UTC.
    const NOW: u64 = 1_700_000_000_000_000;
    /// 83.25 s into a simulated session.
    const SIM_NOW: u64 = 83_250_000;

    fn status(id: u64, role: &str, term: u64, leader: u64, commit: u64) -> Status {
        Status {
            id,
            role: role.into(),
            term,
            leader: Some(leader),
            commit,
            applied: commit - 2,
            voters: vec![1, 2, 3],
            first_index: 10_001,
            last_index: commit + 1,
            snapshot_index: Some(10_000),
            pid: Some(4000 + id),
            ..Status::default()
        }
    }

    fn obs(id: u64, proc: ProcState, st: Status) -> NodeObs {
        NodeObs {
            id,
            http_addr: format!("127.0.0.1:{}", 41000 + id),
            raft_addr: format!("127.0.0.1:{}", 42000 + id),
            pid: Some(4000 + id as u32),
            proc: Some(proc),
            status: Some(st),
            status_at_us: NOW - 100_000,
            ..NodeObs::default()
        }
    }

    fn event(ago_ms: u64, node: Option<u64>, kind: EventKind, text: &str) -> Event {
        Event {
            t_us: NOW - ago_ms * 1000,
            node,
            kind,
            text: text.into(),
        }
    }

    /// A healthy 3-node cluster under load: node 1 leads in term 3.
    fn healthy() -> Model {
        let mut m = Model::new("/tmp/cds-cluster".into(), 250_000, 0);
        let mut leader = status(1, "leader", 3, 1, 25_480);
        leader.matched = BTreeMap::from([(1, 25_481), (2, 25_470), (3, 25_300)]);
        m.observe(
            vec![
                obs(1, ProcState::Up, leader),
                obs(2, ProcState::Up, status(2, "follower", 3, 1, 25_470)),
                obs(3, ProcState::Up, status(3, "follower", 3, 1, 25_300)),
            ],
            NOW,
        );
        m.selected = 1;
        for (i, (rate, p99)) in (0..60u64)
            .map(|i| (4000 + (i * 37 % 11) * 300, 2_000 + (i * 53 % 7) * 400))
            .enumerate()
        {
            // A leader change 20 s ago: no commits for a second, no p99.
            let gap = i == 40;
            m.commit_rate.push_back(if gap { 0 } else { rate });
            m.p99_us.push_back((!gap).then_some(p99));
        }
        for e in [
            event(
                21_000,
                Some(2),
                EventKind::Election,
                "election timeout (pre-vote)",
            ),
            event(20_990, Some(2), EventKind::Election, "candidate, term 2"),
            event(20_950, Some(2), EventKind::Leader, "became leader, term 2"),
            event(
                12_000,
                None,
                EventKind::Action,
                "▶ transfer leadership to node 1",
            ),
            event(
                11_980,
                Some(2),
                EventKind::Leader,
                "starts leader transfer to n1",
            ),
            event(11_950, Some(1), EventKind::Leader, "became leader, term 3"),
            event(11_940, None, EventKind::Done, "✓ node 1 leads (term 3)"),
            event(5_000, Some(3), EventKind::Snapshot, "snapshot taken @10000"),
            event(
                4_990,
                Some(3),
                EventKind::Snapshot,
                "log compacted to 10000",
            ),
            event(
                3_000,
                None,
                EventKind::Action,
                "▶ toggle the load generator",
            ),
            event(
                2_990,
                None,
                EventKind::Done,
                "✓ load started: 16 clients, 256 B puts",
            ),
        ] {
            m.push_event(e);
        }
        m.load = Some(LoadView {
            clients: 16,
            ok: 120_000,
            errors: 0,
            rate: 5_210,
            // Set by the sample that pushed the chart's newest point.
            p99_us: m.p99_us.back().copied().flatten(),
        });
        m.set_status(EventKind::Done, "✓ load started: 16 clients, 256 B puts");
        m
    }

    /// Five nodes mid-change into a joint configuration ({1,2,3,4} to
    /// {1,2,3,5}), with node 2 paused, node 3 not answering (its request
    /// has been out for 2 s), node 4 down and node 5 partitioned away.
    fn faults() -> Model {
        let mut m = Model::new("/tmp/cds-cluster".into(), 250_000, 0);
        let mut leader = status(1, "leader", 4, 1, 31_000);
        leader.voters = vec![1, 2, 3, 5];
        leader.outgoing = vec![1, 2, 3, 4];
        // Node 2 has not answered the leader since it was elected: match 0.
        leader.matched = BTreeMap::from([(1, 31_001), (2, 0), (3, 30_950), (5, 29_000)]);
        let mut silent = obs(3, ProcState::Up, status(3, "follower", 4, 1, 30_950));
        silent.inflight_since_us = Some(NOW - 2_000_000);
        let mut learner = status(5, "follower", 4, 1, 29_000);
        learner.snapshot_index = Some(28_000);
        // Node 5 is partitioned away from every other member (`i`).
        learner.filter = Some(Filter::cutting(vec![1, 2, 3, 4]));
        leader.filter = Some(Filter::cutting(vec![5]));
        learner.first_index = 28_001;
        // Node 4 was seen up before: its going down makes an event.
        m.observe(
            vec![obs(4, ProcState::Up, status(4, "follower", 4, 1, 30_990))],
            NOW - 4_000_000,
        );
        m.observe(
            vec![
                obs(1, ProcState::Up, leader),
                obs(2, ProcState::Paused, status(2, "follower", 4, 1, 30_500)),
                silent,
                obs(4, ProcState::Down, status(4, "follower", 4, 1, 30_990)),
                obs(5, ProcState::Up, learner),
            ],
            NOW,
        );
        m.selected = 2;
        for i in 0..25u64 {
            m.commit_rate.push_back(3000 + i * 20);
            m.p99_us.push_back(Some(5_000 + i * 100));
        }
        for e in [
            event(9_000, None, EventKind::Action, "▶ add a node"),
            event(
                8_500,
                Some(1),
                EventKind::Snapshot,
                "sends snapshot @28000 to n5",
            ),
            event(
                8_000,
                Some(5),
                EventKind::Snapshot,
                "installed snapshot @28000",
            ),
            event(
                7_000,
                None,
                EventKind::Done,
                "✓ node 5 added (pid 4005); voters [1, 2, 3, 4, 5]",
            ),
            event(6_000, None, EventKind::Action, "▶ pause node 2"),
            event(5_990, None, EventKind::Done, "✓ node 2 paused"),
            event(
                1_000,
                Some(1),
                EventKind::Config,
                "config joint_entered @30999: voters {1,2,3,5} old {1,2,3,4}",
            ),
            event(
                500,
                None,
                EventKind::Failed,
                "✗ remove node 9: unknown node id 9",
            ),
        ] {
            m.push_event(e);
        }
        m.set_status(EventKind::Action, "running: remove node 4…");
        m.queued = 1;
        m
    }

    /// A simulated 5-node cluster, 83.25 s into its session at speed 0.5:
    /// node 2 leads, node 3 is down, node 5 paused, node 4 a new voter
    /// still behind; the load generator's clients are running. (The model
    /// logs the down and paused nodes itself, on first sight.)
    fn simulated() -> Model {
        let mut m = Model::new("simulated, seed 7".into(), 250_000, 0);
        m.sim = Some(SimInfo {
            seed: 7,
            speed: 0.5,
        });
        let sim_obs = |id: u64, proc: ProcState, st: Option<Status>| NodeObs {
            id,
            proc: Some(proc),
            status: st.map(|st| Status {
                voters: vec![1, 2, 3, 4, 5],
                snapshot_index: None,
                first_index: 1,
                pid: None,
                ..st
            }),
            status_at_us: SIM_NOW,
            ..NodeObs::default()
        };
        let mut leader = status(2, "leader", 4, 2, 9_412);
        leader.matched =
            BTreeMap::from([(1, 9_413), (2, 9_413), (3, 7_020), (4, 8_100), (5, 9_300)]);
        m.observe(
            vec![
                sim_obs(1, ProcState::Up, Some(status(1, "follower", 4, 2, 9_410))),
                sim_obs(2, ProcState::Up, Some(leader)),
                sim_obs(3, ProcState::Down, None),
                sim_obs(4, ProcState::Up, Some(status(4, "follower", 4, 2, 8_100))),
                sim_obs(
                    5,
                    ProcState::Paused,
                    Some(status(5, "follower", 4, 2, 9_300)),
                ),
            ],
            SIM_NOW,
        );
        m.selected = 2;
        for i in 0..60u64 {
            m.commit_rate
                .push_back(if i < 20 { 0 } else { 600 + i * 7 % 90 });
            m.p99_us
                .push_back((i >= 20).then_some(9_000 + i * 131 % 4_000));
        }
        let at = |ms: u64| SIM_NOW - ms * 1000;
        for (ago, node, kind, text) in [
            (
                60_000,
                None,
                EventKind::Action,
                "▶ toggle the load generator",
            ),
            (
                60_000,
                None,
                EventKind::Done,
                "✓ load on: 16 simulated clients, one put outstanding each",
            ),
            (
                9_000,
                None,
                EventKind::Done,
                "✓ node 3 killed (a crash: it keeps only what it wrote to its disk)",
            ),
            (
                8_904,
                Some(2),
                EventKind::Election,
                "election timeout (pre-vote)",
            ),
            (8_899, Some(2), EventKind::Election, "candidate, term 4"),
            (8_897, Some(2), EventKind::Leader, "became leader, term 4"),
            (4_000, None, EventKind::Done, "✓ node 5 paused"),
        ] {
            m.push_event(Event {
                t_us: at(ago),
                node,
                kind,
                text: text.into(),
            });
        }
        m.load = Some(LoadView {
            clients: 16,
            ok: 31_200,
            errors: 0,
            rate: 655,
            p99_us: m.p99_us.back().copied().flatten(),
        });
        m.set_status(EventKind::Done, "✓ node 5 paused");
        m
    }

    fn render(m: &Model, w: u16, h: u16) -> String {
        let now = if m.sim.is_some() { SIM_NOW } else { NOW };
        let mut t = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
        t.draw(|f| draw(f, m, now)).expect("draw");
        let buf = t.backend().buffer();
        let mut out = String::new();
        for y in 0..h {
            let mut line = String::new();
            for x in 0..w {
                line.push_str(buf[(x, y)].symbol());
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    fn check(name: &str, m: &Model) {
        for (w, h) in [(80, 24), (160, 48)] {
            let got = render(m, w, h);
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/snapshots/top")
                .join(format!("{name}_{w}x{h}.txt"));
            if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
                std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
                std::fs::write(&path, &got).expect("writing the snapshot");
                continue;
            }
            let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}; run with UPDATE_SNAPSHOTS=1 to create it",
                    path.display()
                )
            });
            assert!(
                got == want,
                "{} changed (UPDATE_SNAPSHOTS=1 rewrites it); now:\n{got}",
                path.display()
            );
        }
    }

    #[test]
    fn snapshot_healthy() {
        check("healthy", &healthy());
    }

    #[test]
    fn snapshot_faults_and_joint_config() {
        check("faults", &faults());
    }

    #[test]
    fn snapshot_simulated() {
        check("simulated", &simulated());
    }

    #[test]
    fn simulated_nodes_have_no_addresses_and_sim_time() {
        let screen = render(&simulated(), 200, 40);
        assert!(screen.contains("sim 00:01:23.250 ×0.5"), "{screen}");
        assert!(screen.contains("client p99"), "{screen}");
        assert!(
            !screen.contains("pid") && !screen.contains("http"),
            "{screen}"
        );
        let mut m = simulated();
        m.help = true;
        let help = render(&m, 80, 24);
        assert!(help.contains("Actions act on the simulator"), "{help}");
    }

    /// A leader partitioned from both followers has every voter up and no
    /// quorum; one follower cut off leaves the quorum intact.
    #[test]
    fn quorum_discounts_voters_behind_a_partition() {
        let cut = |who: u64, from: &[u64]| {
            let mut m = healthy();
            let n = m.nodes.iter_mut().find(|n| n.obs.id == who).unwrap();
            n.obs.status.as_mut().unwrap().filter = Some(Filter::cutting(from.to_vec()));
            render(&m, 120, 30)
        };
        let screen = cut(1, &[2, 3]);
        assert!(screen.contains("LOST (3/3 up, 2 cut off)"), "{screen}");
        let screen = cut(3, &[1, 2]);
        assert!(screen.contains("ok (3/3 up, 1 cut off)"), "{screen}");
        assert!(render(&healthy(), 120, 30).contains("ok (3/3 up)"));
    }

    #[test]
    fn snapshot_help_popup() {
        let mut m = healthy();
        m.help = true;
        check("help", &m);
    }

    #[test]
    fn help_lists_every_key_of_the_table() {
        for mut m in [healthy(), simulated()] {
            m.help = true;
            let sim = m.sim.is_some();
            let screen = render(&m, 80, 24);
            for b in KEYS {
                assert!(
                    screen.contains(b.help_for(sim)),
                    "help (sim: {sim}) lacks {:?}:\n{screen}",
                    b.action
                );
            }
        }
    }

    /// The simulated cluster's help speaks of simulated crashes and stalls,
    /// and of a simulation that ends with `top`.
    #[test]
    fn simulated_help_names_no_signal() {
        let mut m = simulated();
        m.help = true;
        let help = render(&m, 80, 30);
        assert!(help.contains("crash the node"), "{help}");
        assert!(help.contains("quit (ends the simulation)"), "{help}");
        assert!(
            !help.contains("SIG") && !help.contains("keeps running"),
            "{help}"
        );
    }

    #[test]
    fn tiny_terminals_do_not_panic() {
        for (w, h) in [(1, 1), (20, 5), (40, 10), (80, 8)] {
            let mut m = faults();
            render(&m, w, h);
            m.help = true;
            render(&m, w, h);
        }
    }

    #[test]
    fn every_width_keeps_whole_columns() {
        for w in [80, 100, 110, 120, 133, 134, 200] {
            let screen = render(&faults(), w, 30);
            for word in ["no answer", "follower", "leader", "30950"] {
                assert!(screen.contains(word), "{w} columns lack {word}:\n{screen}");
            }
            assert_eq!(screen.contains("127.0.0.1:42001"), w >= WIDER, "{w}");
        }
    }

    #[test]
    fn history_fills_the_width() {
        let v: Vec<u64> = (1..=60).collect();
        assert_eq!(tail(v.iter().copied(), 3), [58, 59, 60]);
        assert_eq!(tail([7u64].into_iter(), 3), [0, 0, 7]);
        let wide = tail(v.iter().copied(), 120);
        assert_eq!((wide[0], wide[1], wide[118], wide[119]), (1, 1, 60, 60));
        let short = tail([5u64, 6].into_iter(), 120);
        assert_eq!((short[115], short[116], short[118]), (0, 5, 6));
    }

    #[test]
    fn clock_is_local_time() {
        assert_eq!(clock(NOW, 0), "22:13:20.000");
        assert_eq!(clock(NOW + 1_500, 3600), "23:13:20.001");
        assert_eq!(clock(NOW, -23 * 3600), "23:13:20.000");
    }
}
