//! An rtrace as Chrome trace-event JSON (the "JSON Object Format" that the
//! Perfetto UI and `chrome://tracing` open), for `cdsctl trace to-perfetto`.
//!
//! The layout, chosen so a run reads like a timeline of processes:
//!
//! - one process per node (`pid` = node id, named `node N`) with threads
//!   - `role`: a complete (`X`) slice per period in one role and term
//!     (`leader t3`, `down`, ...), coloured by role, plus instants for
//!     timeouts, votes, step-downs and transfers;
//!   - `log`: instants for append, persist, commit, apply, read, config,
//!     snapshot and compact;
//!   - `messages`: an instant per send, recv and drop; each received send
//!     is joined to its recv by a flow arrow (`s`/`f`, flow id = the send's
//!     `id`, a fresh id for each extra copy of a duplicated message);
//!   - `client`: instants for requests and replies, and an async slice
//!     from each request to its reply;
//!   - `faults`: crash, restart, pause, resume and tickrate instants, and a
//!     `paused` slice from pause to resume;
//!   - a counter `raft` with the node's `term` and `commit` (not sampled
//!     while the node is down, when the trace reports both as 0);
//! - one process `cluster` (`pid` = the largest node id + 1, so it cannot
//!   collide with a node; pid 0 is the idle process in Perfetto) for node-0
//!   events: partitions as slices while links are cut, heals as instants.
//!
//! Every event made from a record carries the record, all its fields, as
//! `args`. Trace-event `ts` is in microseconds: simulated milliseconds are
//! multiplied by 1000, wall-clock microseconds kept as they are; the
//! output's `metadata.clock` says which.
//!
//! The output is written as it is produced, one event at a time, so a
//! large trace costs little memory beyond the parsed records.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};

use raft_core::trace::{ClientDir, Header, Kind, NodeRole, Record, Trace, NODE_SOURCE};
use serde::Serialize;
use serde_json::{json, Value};

/// What a trace's `t` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Simulated milliseconds (the simulator's traces).
    SimMs,
    /// Wall-clock microseconds (real nodes' traces and their merges).
    WallUs,
}

impl Clock {
    /// The clock of a trace with `header`: what its `meta` says (`clock`,
    /// `time_unit`), else by `source` (`node` and `merge` are wall-clock),
    /// else simulated milliseconds.
    pub fn of(header: &Header) -> Clock {
        let meta = |k: &str| header.meta.get(k).and_then(Value::as_str);
        match (meta("clock"), meta("time_unit")) {
            (Some("wall_us"), _) | (_, Some("us")) => Clock::WallUs,
            (Some("sim_ms"), _) | (_, Some("ms")) => Clock::SimMs,
            _ if header.source == NODE_SOURCE || header.source == "merge" => Clock::WallUs,
            _ => Clock::SimMs,
        }
    }

    /// The name written to the output's metadata.
    pub fn name(self) -> &'static str {
        match self {
            Clock::SimMs => "sim_ms",
            Clock::WallUs => "wall_us",
        }
    }

    /// `t` in microseconds.
    fn ts(self, t: u64) -> u64 {
        match self {
            Clock::SimMs => t.saturating_mul(1000),
            Clock::WallUs => t,
        }
    }
}

/// What [`write_json`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Entries of `traceEvents`.
    pub events: usize,
    pub clock: Clock,
}

// Thread ids within a node's process (`tid = pid * 10 + k`, so tids are
// unique across processes too, which older viewers assume).
const ROLE: u64 = 1;
const LOG: u64 = 2;
const MESSAGES: u64 = 3;
const CLIENT: u64 = 4;
const FAULTS: u64 = 5;
const NODE_THREADS: [(u64, &str); 5] = [
    (ROLE, "role"),
    (LOG, "log"),
    (MESSAGES, "messages"),
    (CLIENT, "client"),
    (FAULTS, "faults"),
];
/// The cluster process's one thread.
const NETWORK: u64 = 1;

fn tid(pid: u64, k: u64) -> u64 {
    pid.wrapping_mul(10).wrapping_add(k)
}

/// A trace-event's `args`: a record's fields, or anything else.
#[derive(Serialize)]
#[serde(untagged)]
enum Args<'a> {
    Record(&'a Record),
    Value(Value),
}

/// One entry of `traceEvents`.
#[derive(Serialize)]
struct Event<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cat: Option<&'static str>,
    ph: &'static str,
    ts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    dur: Option<u64>,
    pid: u64,
    tid: u64,
    /// Scope of an instant (`t`: its thread).
    #[serde(skip_serializing_if = "Option::is_none")]
    s: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    /// Binding point of a flow end (`e`: the enclosing slice).
    #[serde(skip_serializing_if = "Option::is_none")]
    bp: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cname: Option<&'static str>,
    args: Args<'a>,
}

impl<'a> Event<'a> {
    fn new(ph: &'static str, name: &'a str, ts: u64, pid: u64, tid: u64, args: Args<'a>) -> Self {
        Event {
            name,
            cat: None,
            ph,
            ts,
            dur: None,
            pid,
            tid,
            s: None,
            id: None,
            bp: None,
            cname: None,
            args,
        }
    }

    fn instant(name: &'a str, ts: u64, pid: u64, tid: u64, r: &'a Record) -> Self {
        Event {
            s: Some("t"),
            ..Event::new("i", name, ts, pid, tid, Args::Record(r))
        }
    }

    fn meta(name: &'a str, pid: u64, tid: u64, args: Value) -> Self {
        Event::new("M", name, 0, pid, tid, Args::Value(args))
    }
}

/// The `traceEvents` array being written.
struct Sink<W: Write> {
    w: W,
    events: usize,
}

impl<W: Write> Sink<W> {
    fn push(&mut self, e: &Event<'_>) -> io::Result<()> {
        if self.events > 0 {
            self.w.write_all(b",\n")?;
        }
        serde_json::to_writer(&mut self.w, e)?;
        self.events += 1;
        Ok(())
    }
}

/// A role period not yet closed: since when, and the record that began it.
struct Period<'a> {
    start: u64,
    role: NodeRole,
    term: u64,
    record: &'a Record,
}

/// What the converter remembers about one node.
#[derive(Default)]
struct NodeState<'a> {
    role: Option<Period<'a>>,
    paused: Option<(u64, &'a Record)>,
    /// The last `term` and `commit` counted.
    counters: Option<(u64, u64)>,
}

/// Chrome's reserved colour names, by role (Perfetto colours by name).
fn role_colour(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Leader => "good",
        NodeRole::Candidate => "bad",
        NodeRole::Precandidate => "yellow",
        NodeRole::Follower => "grey",
        NodeRole::Down => "black",
        NodeRole::None => "generic_work",
    }
}

fn role_slice_name(role: NodeRole, term: u64) -> String {
    match role {
        NodeRole::Down => "down".to_string(),
        _ => format!("{role} t{term}"),
    }
}

/// The role and term a record leaves its node in. A `crash` is recorded
/// with the role the node had; it is down from then on. A down node's term
/// is reported as 0, so it does not start new periods.
fn role_after(r: &Record) -> (NodeRole, u64) {
    match (&r.kind, r.role) {
        (Kind::Crash, _) | (_, NodeRole::Down) => (NodeRole::Down, 0),
        (_, role) => (role, r.term),
    }
}

fn close_role<W: Write>(
    out: &mut Sink<W>,
    clock: Clock,
    pid: u64,
    p: Period<'_>,
    end: u64,
) -> io::Result<()> {
    let name = role_slice_name(p.role, p.term);
    let start = clock.ts(p.start);
    out.push(&Event {
        dur: Some(clock.ts(end).saturating_sub(start)),
        cname: Some(role_colour(p.role)),
        cat: Some("role"),
        ..Event::new(
            "X",
            &name,
            start,
            pid,
            tid(pid, ROLE),
            Args::Record(p.record),
        )
    })
}

/// Writes the slice of a pause that began at `start` (trace time, with its
/// record) and ended at `end`, on the node's faults track.
fn close_pause<W: Write>(
    out: &mut Sink<W>,
    clock: Clock,
    pid: u64,
    (start, rec): (u64, &Record),
    end: u64,
) -> io::Result<()> {
    let start = clock.ts(start);
    out.push(&Event {
        dur: Some(clock.ts(end).saturating_sub(start)),
        cat: Some("faults"),
        ..Event::new(
            "X",
            "paused",
            start,
            pid,
            tid(pid, FAULTS),
            Args::Record(rec),
        )
    })
}

/// The wire name of a unit enum (`"put"`, `"timeout_now"`).
fn wire<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

/// A partition in force since `start`, cut by the record `rec`.
type Partition<'a> = (u64, &'a Record, String);

fn close_partition<W: Write>(
    out: &mut Sink<W>,
    clock: Clock,
    cluster: u64,
    (start, rec, name): Partition<'_>,
    end: u64,
) -> io::Result<()> {
    let start = clock.ts(start);
    out.push(&Event {
        dur: Some(clock.ts(end).saturating_sub(start)),
        cat: Some("network"),
        cname: Some("bad"),
        ..Event::new(
            "X",
            &name,
            start,
            cluster,
            tid(cluster, NETWORK),
            Args::Record(rec),
        )
    })
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// A short label for an instant made from `r`, for its thread.
fn label(r: &Record, msg_types: &HashMap<u64, &'static str>) -> String {
    match &r.kind {
        Kind::Role { from, .. } => format!("role {from} -> {}", r.role),
        Kind::Timeout { pre_vote } => {
            if *pre_vote {
                "timeout (pre-vote)".to_string()
            } else {
                "timeout".to_string()
            }
        }
        Kind::Vote {
            candidate,
            pre_vote,
            granted,
        } => format!(
            "{} {} {candidate}",
            if *pre_vote { "pre-vote" } else { "vote" },
            if *granted { "granted to" } else { "denied to" }
        ),
        Kind::Stepdown { reason } => format!("stepdown ({reason})"),
        Kind::Quiesce {
            quiescent: true, ..
        } => "quiesced".to_string(),
        Kind::Quiesce { reason, .. } => format!("woke ({reason})"),
        Kind::Send { to, m, .. } => format!("{} -> {to}", m.name()),
        Kind::Recv { from, m, .. } => format!("{} <- {from}", m.name()),
        Kind::Drop { id, to, reason } => format!(
            "drop {} -> {to} ({reason})",
            msg_types.get(id).copied().unwrap_or("message")
        ),
        Kind::Append { first, last, .. } => format!("append {first}..{last}"),
        Kind::Persist { hs_term, vote, .. } => format!("persist t{hs_term} vote {}", opt(*vote)),
        Kind::Commit { index } => format!("commit {index}"),
        Kind::Apply { first, last } => format!("apply {first}..{last}"),
        Kind::Read { index, lease, .. } => {
            format!("read @{index}{}", if *lease { " (lease)" } else { "" })
        }
        Kind::Transfer { phase, to } => format!("transfer {} -> {to}", wire(phase)),
        Kind::Client {
            dir,
            client,
            seq,
            op,
            key,
            outcome,
            ..
        } => {
            let op = wire(op);
            match dir {
                ClientDir::Request => format!("{op} k{key} c{client}#{seq}"),
                ClientDir::Reply => format!(
                    "{op} k{key} c{client}#{seq} -> {}",
                    outcome.as_deref().unwrap_or("?")
                ),
            }
        }
        Kind::Crash => "crash".to_string(),
        Kind::Restart => "restart".to_string(),
        Kind::Pause => "pause".to_string(),
        Kind::Resume => "resume".to_string(),
        Kind::Partition { blocked } if blocked.is_empty() => "partition (none)".to_string(),
        Kind::Partition { blocked } => {
            let links: Vec<String> = blocked.iter().map(|(a, b)| format!("{a}->{b}")).collect();
            format!("partition {}", links.join(" "))
        }
        Kind::Heal => "heal".to_string(),
        Kind::Tickrate { period } => format!("tickrate {period}"),
        Kind::Config { change, index, .. } => format!("config {change} @{index}"),
        Kind::Snapshot { phase, index, .. } => format!("snapshot {phase} @{index}"),
        Kind::Compact { upto } => format!("compact ..{upto}"),
    }
}

/// The thread of a node's process an instant made from `kind` goes to.
fn thread_of(kind: &Kind) -> u64 {
    match kind {
        Kind::Role { .. }
        | Kind::Timeout { .. }
        | Kind::Vote { .. }
        | Kind::Stepdown { .. }
        | Kind::Quiesce { .. }
        | Kind::Transfer { .. } => ROLE,
        Kind::Send { .. } | Kind::Recv { .. } | Kind::Drop { .. } => MESSAGES,
        Kind::Client { .. } => CLIENT,
        Kind::Crash
        | Kind::Restart
        | Kind::Pause
        | Kind::Resume
        | Kind::Tickrate { .. }
        | Kind::Partition { .. }
        | Kind::Heal => FAULTS,
        Kind::Append { .. }
        | Kind::Persist { .. }
        | Kind::Commit { .. }
        | Kind::Apply { .. }
        | Kind::Read { .. }
        | Kind::Config { .. }
        | Kind::Snapshot { .. }
        | Kind::Compact { .. } => LOG,
    }
}

/// Writes `trace` to `w` as a trace-event JSON object:
/// `{"traceEvents":[...],"displayTimeUnit":"ms","metadata":{...}}`.
pub fn write_json<W: Write>(trace: &Trace, w: W) -> io::Result<Written> {
    let header = &trace.header;
    let clock = Clock::of(header);
    let mut nodes: Vec<u64> = header
        .nodes
        .iter()
        .copied()
        .chain(trace.records.iter().map(|r| r.node))
        .filter(|&n| n != 0)
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    let cluster = nodes.last().map_or(1, |n| n.saturating_add(1));

    let mut out = Sink { w, events: 0 };
    out.w.write_all(b"{\"traceEvents\":[\n")?;

    // Names and order of processes and threads.
    out.push(&Event::meta(
        "process_name",
        cluster,
        tid(cluster, NETWORK),
        json!({"name": "cluster"}),
    ))?;
    out.push(&Event::meta(
        "process_sort_index",
        cluster,
        tid(cluster, NETWORK),
        json!({"sort_index": 0}),
    ))?;
    out.push(&Event::meta(
        "thread_name",
        cluster,
        tid(cluster, NETWORK),
        json!({"name": "network"}),
    ))?;
    for &n in &nodes {
        out.push(&Event::meta(
            "process_name",
            n,
            tid(n, ROLE),
            json!({"name": format!("node {n}")}),
        ))?;
        out.push(&Event::meta(
            "process_sort_index",
            n,
            tid(n, ROLE),
            json!({"sort_index": n}),
        ))?;
        for (k, name) in NODE_THREADS {
            out.push(&Event::meta(
                "thread_name",
                n,
                tid(n, k),
                json!({"name": name}),
            ))?;
            out.push(&Event::meta(
                "thread_sort_index",
                n,
                tid(n, k),
                json!({"sort_index": k}),
            ))?;
        }
    }

    // How many times each send is received: a duplicated message needs one
    // flow per copy, and a flow that never ends is left out.
    let mut received: HashMap<u64, u32> = HashMap::new();
    let mut max_id = 0;
    for r in &trace.records {
        match r.kind {
            Kind::Recv { id, .. } => *received.entry(id).or_default() += 1,
            Kind::Send { id, .. } => max_id = max_id.max(id),
            _ => {}
        }
    }
    let mut next_flow = max_id.saturating_add(1);
    // Flow ids of the later copies of duplicated sends, in order.
    let mut extra_flows: HashMap<u64, VecDeque<u64>> = HashMap::new();
    let mut msg_types: HashMap<u64, &'static str> = HashMap::new();
    let mut recv_seen: HashMap<u64, u32> = HashMap::new();

    let mut state: HashMap<u64, NodeState<'_>> = HashMap::new();
    let mut partition: Option<Partition<'_>> = None;
    // Client requests waiting for their reply: (node, client, seq) ->
    // request time.
    let mut requests: HashMap<(u64, u64, u64), (u64, String)> = HashMap::new();
    let mut next_async = 1u64;
    let end = trace.records.last().map_or(0, |r| r.t);

    for r in &trace.records {
        let ts = clock.ts(r.t);
        let pid = r.node;
        if pid == 0 {
            match &r.kind {
                Kind::Partition { blocked } => {
                    if let Some(p) = partition.take() {
                        close_partition(&mut out, clock, cluster, p, r.t)?;
                    }
                    let name = label(r, &msg_types);
                    if blocked.is_empty() {
                        out.push(&Event::instant(
                            &name,
                            ts,
                            cluster,
                            tid(cluster, NETWORK),
                            r,
                        ))?;
                    } else {
                        partition = Some((r.t, r, name));
                    }
                }
                Kind::Heal => {
                    if let Some(p) = partition.take() {
                        close_partition(&mut out, clock, cluster, p, r.t)?;
                    }
                    out.push(&Event::instant(
                        "heal",
                        ts,
                        cluster,
                        tid(cluster, NETWORK),
                        r,
                    ))?;
                }
                _ => {
                    let name = label(r, &msg_types);
                    out.push(&Event::instant(
                        &name,
                        ts,
                        cluster,
                        tid(cluster, NETWORK),
                        r,
                    ))?;
                }
            }
            continue;
        }

        let st = state.entry(pid).or_default();

        // The role track: a new period when role or term changes.
        let (role, term) = role_after(r);
        let same = st
            .role
            .as_ref()
            .is_some_and(|p| p.role == role && p.term == term);
        if !same {
            if let Some(p) = st.role.take() {
                close_role(&mut out, clock, pid, p, r.t)?;
            }
            st.role = Some(Period {
                start: r.t,
                role,
                term,
                record: r,
            });
        }

        // Counters, while the node is up. One counter `raft` with both
        // values: Perfetto shows it as tracks `raft term` and `raft commit`,
        // and chrome://tracing needs every sample of a counter to carry the
        // same series.
        let up = r.role != NodeRole::Down && !matches!(r.kind, Kind::Crash);
        if up && st.counters != Some((r.term, r.commit)) {
            st.counters = Some((r.term, r.commit));
            out.push(&Event::new(
                "C",
                "raft",
                ts,
                pid,
                tid(pid, ROLE),
                Args::Value(json!({"term": r.term, "commit": r.commit})),
            ))?;
        }

        // A role event that started a period is that period's slice.
        if matches!(r.kind, Kind::Role { .. }) && !same {
            continue;
        }

        let name = label(r, &msg_types);
        let thread = tid(pid, thread_of(&r.kind));
        out.push(&Event::instant(&name, ts, pid, thread, r))?;
        match &r.kind {
            Kind::Send { id, m, .. } => {
                msg_types.insert(*id, m.name());
                let copies = received.get(id).copied().unwrap_or(0);
                for copy in 0..copies {
                    let flow = if copy == 0 {
                        *id
                    } else {
                        let f = next_flow;
                        next_flow += 1;
                        extra_flows.entry(*id).or_default().push_back(f);
                        f
                    };
                    out.push(&Event {
                        cat: Some("message"),
                        id: Some(flow),
                        ..Event::new("s", m.name(), ts, pid, thread, Args::Value(json!({})))
                    })?;
                }
            }
            Kind::Recv { id, m, .. } => {
                let n = recv_seen.entry(*id).or_insert(0);
                // The first copy uses the send's own id.
                let flow = if *n == 0 {
                    *id
                } else {
                    extra_flows
                        .get_mut(id)
                        .and_then(VecDeque::pop_front)
                        .unwrap_or(*id)
                };
                *n += 1;
                out.push(&Event {
                    cat: Some("message"),
                    id: Some(flow),
                    bp: Some("e"),
                    ..Event::new("f", m.name(), ts, pid, thread, Args::Value(json!({})))
                })?;
            }
            Kind::Pause => st.paused = Some((r.t, r)),
            Kind::Resume => {
                if let Some(p) = st.paused.take() {
                    close_pause(&mut out, clock, pid, p, r.t)?;
                }
            }
            Kind::Client {
                dir,
                client,
                seq,
                op,
                key,
                ..
            } => {
                let k = (pid, *client, *seq);
                match dir {
                    ClientDir::Request => {
                        requests.insert(k, (ts, format!("{} k{key}", wire(op))));
                    }
                    ClientDir::Reply => {
                        if let Some((start, name)) = requests.remove(&k) {
                            let id = next_async;
                            next_async += 1;
                            push_async(&mut out, &name, start, ts, pid, id, Args::Record(r))?;
                        }
                    }
                }
            }
            _ => {}
        }
    }

    // Close whatever is still open at the end of the trace.
    let end_ts = clock.ts(end);
    let mut open: Vec<(u64, NodeState<'_>)> = state.into_iter().collect();
    open.sort_by_key(|(n, _)| *n);
    for (pid, st) in open {
        if let Some(p) = st.role {
            close_role(&mut out, clock, pid, p, end)?;
        }
        if let Some(p) = st.paused {
            close_pause(&mut out, clock, pid, p, end)?;
        }
    }
    if let Some(p) = partition.take() {
        close_partition(&mut out, clock, cluster, p, end)?;
    }
    let mut pending: Vec<_> = requests.into_iter().collect();
    pending.sort_by_key(|((n, c, s), (t, _))| (*t, *n, *c, *s));
    for ((pid, client, seq), (start, name)) in pending {
        let id = next_async;
        next_async += 1;
        let name = format!("{name} (no reply)");
        let args = json!({"client": client, "seq": seq, "outcome": null});
        push_async(&mut out, &name, start, end_ts, pid, id, Args::Value(args))?;
    }

    let written = out.events;
    out.w
        .write_all(b"\n],\"displayTimeUnit\":\"ms\",\"metadata\":")?;
    let metadata = json!({
        "converter": "cdsctl trace to-perfetto",
        "format": "rtrace",
        "v": header.v,
        "source": header.source,
        "nodes": header.nodes,
        "clock": clock.name(),
        "time_unit": match clock { Clock::SimMs => "ms (simulated)", Clock::WallUs => "us (wall clock)" },
        "ts_per_t": match clock { Clock::SimMs => 1000, Clock::WallUs => 1 },
        "cluster_pid": cluster,
        "records": trace.records.len(),
        "rtrace_meta": header.meta,
    });
    serde_json::to_writer(&mut out.w, &metadata)?;
    out.w.write_all(b"}\n")?;
    out.w.flush()?;
    Ok(Written {
        events: written,
        clock,
    })
}

/// An async slice on the node's process, from a client request to its
/// reply (whose record is its `args`) or to the end of the trace.
fn push_async<W: Write>(
    out: &mut Sink<W>,
    name: &str,
    start: u64,
    end: u64,
    pid: u64,
    id: u64,
    args: Args<'_>,
) -> io::Result<()> {
    let thread = tid(pid, CLIENT);
    out.push(&Event {
        cat: Some("client"),
        id: Some(id),
        ..Event::new("b", name, start, pid, thread, Args::Value(json!({})))
    })?;
    out.push(&Event {
        cat: Some("client"),
        id: Some(id),
        ..Event::new("e", name, end, pid, thread, args)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::trace::{ClientOp, Msg};

    fn rec(t: u64, node: u64, term: u64, role: NodeRole, kind: Kind) -> Record {
        Record {
            t,
            node,
            term,
            role,
            commit: 0,
            kind,
        }
    }

    fn convert(header: Header, records: Vec<Record>) -> Value {
        let mut buf = Vec::new();
        write_json(&Trace { header, records }, &mut buf).expect("write");
        serde_json::from_slice(&buf).expect("valid JSON")
    }

    fn events(v: &Value) -> &Vec<Value> {
        v["traceEvents"].as_array().expect("traceEvents")
    }

    fn with_ph<'a>(v: &'a Value, ph: &str) -> Vec<&'a Value> {
        events(v).iter().filter(|e| e["ph"] == ph).collect()
    }

    fn hb() -> Msg {
        Msg::Heartbeat {
            term: 2,
            commit: 0,
            read_round: 0,
            quiesce: false,
        }
    }

    fn role(from: NodeRole) -> Kind {
        Kind::Role { from, leader: None }
    }

    #[test]
    fn role_slices_close_at_the_next_change_and_at_the_end() {
        use NodeRole::*;
        let v = convert(
            Header::new("sim", vec![1, 2]),
            vec![
                rec(0, 1, 0, Follower, Kind::Timeout { pre_vote: false }),
                rec(10, 1, 1, Candidate, role(Follower)),
                rec(15, 1, 1, Leader, role(Candidate)),
                rec(40, 1, 1, Leader, Kind::Crash),
                rec(50, 1, 0, Down, Kind::Tickrate { period: 11 }),
                rec(60, 1, 1, Follower, Kind::Restart),
                rec(100, 2, 0, Follower, Kind::Pause),
            ],
        );
        let mut slices: Vec<(String, u64, u64, u64)> = with_ph(&v, "X")
            .iter()
            .filter(|e| e["cat"] == "role")
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_string(),
                    e["pid"].as_u64().unwrap(),
                    e["ts"].as_u64().unwrap(),
                    e["dur"].as_u64().unwrap(),
                )
            })
            .collect();
        slices.sort_by_key(|s| (s.1, s.2));
        assert_eq!(
            slices,
            vec![
                ("follower t0".to_string(), 1, 0, 10_000),
                ("candidate t1".to_string(), 1, 10_000, 5_000),
                ("leader t1".to_string(), 1, 15_000, 25_000),
                // Down from the crash to the restart, whatever term the
                // records while down report.
                ("down".to_string(), 1, 40_000, 20_000),
                // Open periods end with the trace.
                ("follower t1".to_string(), 1, 60_000, 40_000),
                ("follower t0".to_string(), 2, 100_000, 0),
            ]
        );
        let leader = with_ph(&v, "X")
            .into_iter()
            .find(|e| e["name"] == "leader t1")
            .unwrap();
        // The slice carries the record that began it.
        assert_eq!(leader["args"]["ev"], "role");
        assert_eq!(leader["args"]["from"], "candidate");
        assert_eq!(leader["cname"], "good");
        assert_eq!(leader["tid"], tid(1, ROLE));
        // The pause never resumed: a `paused` slice to the end.
        let paused = with_ph(&v, "X")
            .into_iter()
            .find(|e| e["name"] == "paused")
            .unwrap();
        assert_eq!(
            (paused["pid"].as_u64(), paused["dur"].as_u64()),
            (Some(2), Some(0))
        );
        // Counters skip the down period (its records say term 0).
        let terms: Vec<(u64, u64)> = with_ph(&v, "C")
            .iter()
            .filter(|e| e["name"] == "raft" && e["pid"] == 1)
            .map(|e| {
                (
                    e["ts"].as_u64().unwrap(),
                    e["args"]["term"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(terms, vec![(0, 0), (10_000, 1)]);
    }

    #[test]
    fn a_send_and_its_recv_are_one_flow_and_a_drop_is_an_instant() {
        use NodeRole::*;
        let v = convert(
            Header::new("sim", vec![1, 2, 3]),
            vec![
                rec(
                    1,
                    1,
                    2,
                    Leader,
                    Kind::Send {
                        id: 7,
                        to: 2,
                        m: hb(),
                    },
                ),
                rec(
                    1,
                    1,
                    2,
                    Leader,
                    Kind::Send {
                        id: 8,
                        to: 3,
                        m: hb(),
                    },
                ),
                rec(
                    2,
                    2,
                    2,
                    Follower,
                    Kind::Recv {
                        id: 7,
                        from: 1,
                        m: hb(),
                    },
                ),
                rec(
                    3,
                    1,
                    2,
                    Leader,
                    Kind::Drop {
                        id: 8,
                        to: 3,
                        reason: "partition".into(),
                    },
                ),
                // The network duplicated message 7.
                rec(
                    4,
                    2,
                    2,
                    Follower,
                    Kind::Recv {
                        id: 7,
                        from: 1,
                        m: hb(),
                    },
                ),
            ],
        );
        let starts = with_ph(&v, "s");
        let ends = with_ph(&v, "f");
        // One flow per copy received; none for the dropped message.
        assert_eq!(starts.len(), 2);
        assert_eq!(ends.len(), 2);
        let start_ids: Vec<u64> = starts.iter().map(|e| e["id"].as_u64().unwrap()).collect();
        let end_ids: Vec<u64> = ends.iter().map(|e| e["id"].as_u64().unwrap()).collect();
        assert_eq!(start_ids[0], 7, "the first copy's flow id is the send id");
        assert_ne!(start_ids[1], 7);
        assert_eq!(start_ids, end_ids);
        for s in &starts {
            assert_eq!(
                (s["pid"].as_u64(), s["tid"].as_u64()),
                (Some(1), Some(tid(1, MESSAGES)))
            );
            assert_eq!(
                (s["ts"].as_u64(), s["name"].as_str()),
                (Some(1000), Some("heartbeat"))
            );
        }
        for (f, ts) in ends.iter().zip([2000, 4000]) {
            assert_eq!(
                (f["pid"].as_u64(), f["tid"].as_u64()),
                (Some(2), Some(tid(2, MESSAGES)))
            );
            assert_eq!((f["ts"].as_u64(), f["bp"].as_str()), (Some(ts), Some("e")));
            assert_eq!(f["cat"], starts[0]["cat"]);
            assert_eq!(f["name"], "heartbeat");
        }
        // Each flow begins right after its send's instant, which it binds to.
        let all = events(&v);
        let first_s = all.iter().position(|e| e["ph"] == "s").unwrap();
        assert_eq!(all[first_s - 1]["args"]["ev"], "send");
        assert_eq!(all[first_s - 1]["args"]["id"], 7);

        let drop = with_ph(&v, "i")
            .into_iter()
            .find(|e| e["args"]["ev"] == "drop")
            .expect("a drop instant");
        assert_eq!(drop["name"], "drop heartbeat -> 3 (partition)");
        assert_eq!(drop["args"]["reason"], "partition");
        assert_eq!(drop["args"]["id"], 8);
        assert_eq!(drop["tid"], tid(1, MESSAGES));
        assert_eq!(drop["s"], "t");
    }

    #[test]
    fn node_zero_events_go_to_the_cluster_process() {
        use NodeRole::*;
        let v = convert(
            Header::new("sim", vec![1, 2, 3]),
            vec![
                rec(
                    5,
                    0,
                    0,
                    None,
                    Kind::Partition {
                        blocked: vec![(2, 3), (3, 2)],
                    },
                ),
                rec(
                    9,
                    0,
                    0,
                    None,
                    Kind::Partition {
                        blocked: vec![(1, 2)],
                    },
                ),
                rec(20, 0, 0, None, Kind::Heal),
                rec(
                    30,
                    0,
                    0,
                    None,
                    Kind::Partition {
                        blocked: vec![(1, 3)],
                    },
                ),
                rec(35, 1, 0, Follower, Kind::Timeout { pre_vote: true }),
            ],
        );
        let cluster = v["metadata"]["cluster_pid"].as_u64().unwrap();
        assert_eq!(cluster, 4);
        let name = events(&v)
            .iter()
            .find(|e| e["ph"] == "M" && e["name"] == "process_name" && e["pid"] == cluster)
            .expect("cluster process_name");
        assert_eq!(name["args"]["name"], "cluster");
        let mut parts: Vec<(String, u64, u64)> = with_ph(&v, "X")
            .iter()
            .filter(|e| e["pid"] == cluster)
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_string(),
                    e["ts"].as_u64().unwrap(),
                    e["dur"].as_u64().unwrap(),
                )
            })
            .collect();
        parts.sort_by_key(|p| p.1);
        assert_eq!(
            parts,
            vec![
                ("partition 2->3 3->2".to_string(), 5000, 4000),
                ("partition 1->2".to_string(), 9000, 11000),
                // Still cut at the end of the trace.
                ("partition 1->3".to_string(), 30000, 5000),
            ]
        );
        let heal = with_ph(&v, "i")
            .into_iter()
            .find(|e| e["name"] == "heal")
            .expect("heal instant");
        assert_eq!(heal["pid"], cluster);
        assert_eq!(heal["args"]["node"], 0);
        // No node process, role slice or counter for node 0.
        assert!(events(&v).iter().all(|e| e["pid"] != 0));
    }

    #[test]
    fn sim_milliseconds_and_wall_microseconds() {
        use NodeRole::*;
        let records = || {
            vec![
                rec(1_000, 1, 1, Follower, Kind::Commit { index: 3 }),
                rec(1_500, 1, 1, Follower, Kind::Commit { index: 4 }),
            ]
        };
        let ts = |v: &Value| -> Vec<u64> {
            with_ph(v, "i")
                .iter()
                .map(|e| e["ts"].as_u64().unwrap())
                .collect()
        };
        let sim = convert(
            Header::new("sim", vec![1]).with_meta("time_unit", "ms"),
            records(),
        );
        assert_eq!(ts(&sim), vec![1_000_000, 1_500_000]);
        assert_eq!(sim["metadata"]["clock"], "sim_ms");
        assert_eq!(sim["metadata"]["source"], "sim");
        assert_eq!(sim["displayTimeUnit"], "ms");

        let node = convert(
            Header::new(NODE_SOURCE, vec![1])
                .with_meta("node", 1)
                .with_meta("clock", "wall_us"),
            records(),
        );
        assert_eq!(ts(&node), vec![1_000, 1_500]);
        assert_eq!(node["metadata"]["clock"], "wall_us");

        // A merge of node traces has no `clock` in its meta.
        let merged = convert(Header::new("merge", vec![1]), records());
        assert_eq!(merged["metadata"]["clock"], "wall_us");
        assert_eq!(Clock::of(&Header::new("test", vec![1])), Clock::SimMs);
    }

    #[test]
    fn every_node_gets_a_process_threads_and_counters() {
        use NodeRole::*;
        let v = convert(
            Header::new("sim", vec![1, 2]),
            vec![
                Record {
                    commit: 5,
                    ..rec(3, 2, 1, Follower, Kind::Commit { index: 5 })
                },
                Record {
                    commit: 5,
                    ..rec(
                        4,
                        2,
                        1,
                        Follower,
                        Kind::Append {
                            first: 6,
                            last: 7,
                            last_term: 1,
                        },
                    )
                },
            ],
        );
        for n in [1u64, 2] {
            let names: Vec<&str> = events(&v)
                .iter()
                .filter(|e| e["ph"] == "M" && e["pid"] == n)
                .filter(|e| e["name"] == "process_name" || e["name"] == "thread_name")
                .map(|e| e["args"]["name"].as_str().unwrap())
                .collect();
            let node = format!("node {n}");
            assert_eq!(
                names,
                vec![&node[..], "role", "log", "messages", "client", "faults"]
            );
        }
        // Sampled when term or commit changes, both values each time.
        let counters = with_ph(&v, "C");
        assert_eq!(counters.len(), 1);
        assert_eq!(counters[0]["name"], "raft");
        assert_eq!(counters[0]["pid"], 2);
        assert_eq!(
            counters[0]["args"],
            serde_json::json!({"term": 1, "commit": 5})
        );
        let log: Vec<&str> = with_ph(&v, "i")
            .iter()
            .filter(|e| e["tid"] == tid(2, LOG))
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(log, vec!["commit 5", "append 6..7"]);
        // Instants carry all the record's fields.
        let append = with_ph(&v, "i")
            .into_iter()
            .find(|e| e["name"] == "append 6..7")
            .unwrap();
        assert_eq!(
            append["args"],
            serde_json::json!({"t": 4, "node": 2, "ev": "append", "term": 1,
                "role": "follower", "commit": 5, "first": 6, "last": 7, "last_term": 1})
        );
    }

    #[test]
    fn a_client_request_and_its_reply_make_an_async_slice() {
        use NodeRole::*;
        let client = |seq, dir, outcome: Option<&str>| Kind::Client {
            dir,
            client: 2,
            seq,
            op: ClientOp::Put,
            key: 4,
            value: Some(1),
            outcome: outcome.map(str::to_string),
        };
        let v = convert(
            Header::new("sim", vec![1]),
            vec![
                rec(
                    10,
                    1,
                    1,
                    Leader,
                    client(9, ClientDir::Request, Option::None),
                ),
                rec(25, 1, 1, Leader, client(9, ClientDir::Reply, Some("ok"))),
                rec(
                    30,
                    1,
                    1,
                    Leader,
                    client(10, ClientDir::Request, Option::None),
                ),
            ],
        );
        let b = with_ph(&v, "b");
        let e = with_ph(&v, "e");
        assert_eq!(b.len(), 2);
        assert_eq!(e.len(), 2);
        assert_eq!(
            (b[0]["ts"].as_u64(), e[0]["ts"].as_u64()),
            (Some(10_000), Some(25_000))
        );
        assert_eq!(b[0]["id"], e[0]["id"]);
        assert_eq!(b[0]["name"], "put k4");
        assert_eq!(e[0]["args"]["outcome"], "ok");
        // The request without a reply ends with the trace.
        assert_eq!(b[1]["name"], "put k4 (no reply)");
        assert_eq!(e[1]["ts"].as_u64(), Some(30_000));
        let names: Vec<&str> = with_ph(&v, "i")
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            vec!["put k4 c2#9", "put k4 c2#9 -> ok", "put k4 c2#10"]
        );
    }
}
