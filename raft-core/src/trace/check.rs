//! Validates a trace and reads it back.
//!
//! A trace is only useful if a later reader (replay, the visualizer, a
//! person) can trust it, so the checker enforces more than the JSON shape:
//! the header comes first and names a version this crate understands, time
//! never goes backwards, every node is a member, and every `recv` and `drop`
//! matches an earlier `send`. Errors carry the 1-based line they were found
//! on.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;

use super::schema::{Header, Kind, Msg, NodeRole, Record, FORMAT, NODE_SOURCE, VERSION};
use crate::core::NodeId;

/// Why a trace is invalid, and on which line (1-based; the header is line 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct CheckError {
    pub line: usize,
    pub reason: String,
}

/// What a valid trace contains.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The header line.
    pub header: Header,
    /// Lines in the file, the header included.
    pub lines: usize,
    /// Event lines (`lines - 1`).
    pub events: usize,
    /// Event count per `ev` value; kinds that do not occur are absent.
    pub kinds: BTreeMap<&'static str, usize>,
    /// The header's node ids.
    pub nodes: Vec<NodeId>,
    /// The largest `t` (that of the last event), `0` without events.
    pub max_t: u64,
}

/// A parsed, validated trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub header: Header,
    pub records: Vec<Record>,
}

/// Validates the trace in `text`.
pub fn check_str(text: &str) -> Result<Summary, CheckError> {
    let mut checker = Checker::default();
    for line in text.lines() {
        checker.line(line)?;
    }
    checker.finish()
}

/// Validates the trace read from `input`, one line at a time (memory use is
/// bounded by the number of sends, not the file size).
pub fn check_reader(input: impl BufRead) -> Result<Summary, CheckError> {
    let mut checker = Checker::default();
    for line in input.lines() {
        let line = line.map_err(|e| checker.error_at_next(format!("read error: {e}")))?;
        checker.line(&line)?;
    }
    checker.finish()
}

/// Validates the trace in `text` and returns its header and records.
pub fn parse_str(text: &str) -> Result<Trace, CheckError> {
    let mut checker = Checker::default();
    let mut records = Vec::new();
    for line in text.lines() {
        if let Some(record) = checker.line(line)? {
            records.push(record);
        }
    }
    let summary = checker.finish()?;
    Ok(Trace {
        header: summary.header,
        records,
    })
}

/// Validates the trace read from `input` and returns its header and records.
pub fn parse_reader(input: impl BufRead) -> Result<Trace, CheckError> {
    let mut checker = Checker::default();
    let mut records = Vec::new();
    for line in input.lines() {
        let line = line.map_err(|e| checker.error_at_next(format!("read error: {e}")))?;
        if let Some(record) = checker.line(&line)? {
            records.push(record);
        }
    }
    let summary = checker.finish()?;
    Ok(Trace {
        header: summary.header,
        records,
    })
}

/// What the checker remembers about a `send`.
struct Sent {
    from: NodeId,
    to: NodeId,
    m: Msg,
}

/// The line-by-line validator behind the `check_*` and `parse_*` functions.
#[derive(Default)]
struct Checker {
    /// Lines seen so far.
    line: usize,
    header: Option<Header>,
    last_t: u64,
    kinds: BTreeMap<&'static str, usize>,
    sends: HashMap<u64, Sent>,
}

impl Checker {
    fn error(&self, reason: impl Into<String>) -> CheckError {
        CheckError {
            line: self.line,
            reason: reason.into(),
        }
    }

    fn error_at_next(&self, reason: impl Into<String>) -> CheckError {
        CheckError {
            line: self.line + 1,
            reason: reason.into(),
        }
    }

    /// Checks one line (without its line terminator). Returns the record if
    /// it was an event line.
    fn line(&mut self, text: &str) -> Result<Option<Record>, CheckError> {
        self.line += 1;
        if text.trim().is_empty() {
            // `str::lines` and `BufRead::lines` yield no item for a single
            // trailing newline, so any empty item is a blank line.
            return Err(self.error(if self.header.is_none() {
                "empty line, expected an rtrace header"
            } else {
                "empty line"
            }));
        }
        if self.header.is_none() {
            self.header = Some(self.header_line(text)?);
            return Ok(None);
        }
        self.event_line(text).map(Some)
    }

    fn finish(self) -> Result<Summary, CheckError> {
        let Some(header) = self.header else {
            return Err(CheckError {
                line: 1,
                reason: format!("empty file: expected an {FORMAT} header"),
            });
        };
        Ok(Summary {
            nodes: header.nodes.clone(),
            header,
            lines: self.line,
            events: self.line.saturating_sub(1),
            kinds: self.kinds,
            max_t: self.last_t,
        })
    }

    fn header_line(&self, text: &str) -> Result<Header, CheckError> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            self.error(format!(
                "not an {FORMAT} file: not JSON: {}",
                serde_reason(&e)
            ))
        })?;
        match value.get("format") {
            Some(serde_json::Value::String(f)) if f == FORMAT => {}
            _ => {
                return Err(self.error(format!(
                    "not an {FORMAT} file: line 1 must be a header with \"format\":\"{FORMAT}\""
                )))
            }
        }
        match value.get("v") {
            Some(v) if v.as_u64() == Some(u64::from(VERSION)) => {}
            Some(v) => {
                return Err(self.error(format!(
                    "unsupported version {v} (this reader understands version {VERSION})"
                )))
            }
            None => return Err(self.error("header has no version field \"v\"")),
        }
        let header: Header = serde_json::from_value(value)
            .map_err(|e| self.error(format!("invalid header: {}", serde_reason(&e))))?;
        if header.nodes.is_empty() {
            return Err(self.error("invalid header: no nodes"));
        }
        if header.nodes.contains(&0) {
            return Err(self.error("invalid header: node id 0 is reserved for the cluster"));
        }
        for (i, n) in header.nodes.iter().enumerate() {
            if header.nodes[..i].contains(n) {
                return Err(self.error(format!("invalid header: node {n} listed twice")));
            }
        }
        Ok(header)
    }

    fn is_member(&self, node: NodeId) -> bool {
        self.header
            .as_ref()
            .is_some_and(|h| h.nodes.contains(&node))
    }

    fn member(&self, what: &str, node: NodeId) -> Result<(), CheckError> {
        // One real node's trace lists the members it knew when the file was
        // created; nodes added later show up in its events (a new leader, a
        // configuration) although no header could name them. Its own
        // events must still be its own.
        let single_node = self
            .header
            .as_ref()
            .is_some_and(|h| h.source == NODE_SOURCE);
        if self.is_member(node) || (single_node && what != "node") {
            Ok(())
        } else {
            Err(self.error(format!("{what} {node} is not in the header's nodes")))
        }
    }

    fn event_line(&mut self, text: &str) -> Result<Record, CheckError> {
        let record: Record = serde_json::from_str(text)
            .map_err(|e| self.error(format!("invalid event: {}", serde_reason(&e))))?;
        let ev = record.kind.name();

        if record.node == 0 {
            if !matches!(record.kind, Kind::Partition { .. } | Kind::Heal) {
                return Err(self.error(format!(
                    "node 0 (the cluster) can only record partition and heal, not {ev}"
                )));
            }
            if record.role != NodeRole::None {
                return Err(self.error(format!(
                    "node 0 must have role \"none\", not \"{}\"",
                    record.role
                )));
            }
        } else {
            self.member("node", record.node)?;
            if record.role == NodeRole::None {
                return Err(self.error(format!(
                    "role \"none\" is only for node 0, not node {}",
                    record.node
                )));
            }
        }

        if record.t < self.last_t {
            return Err(self.error(format!(
                "t goes backwards: {} after {}",
                record.t, self.last_t
            )));
        }

        match &record.kind {
            Kind::Role {
                leader: Some(leader),
                ..
            } => self.member("leader", *leader)?,
            Kind::Vote { candidate, .. } => self.member("candidate", *candidate)?,
            Kind::Send { id, to, m } => {
                self.member("destination", *to)?;
                if self.sends.contains_key(id) {
                    return Err(self.error(format!("send id {id} is used twice")));
                }
                self.sends.insert(
                    *id,
                    Sent {
                        from: record.node,
                        to: *to,
                        m: m.clone(),
                    },
                );
            }
            Kind::Recv { id, from, m } => {
                let Some(sent) = self.sends.get(id) else {
                    return Err(self.error(format!("recv of id {id}, which was never sent")));
                };
                if sent.to != record.node || sent.from != *from {
                    return Err(self.error(format!(
                        "recv of id {id} on node {} from {from}, but it was sent from {} to {}",
                        record.node, sent.from, sent.to
                    )));
                }
                if sent.m != *m {
                    return Err(self.error(format!(
                        "recv of id {id} carries a different message than its send"
                    )));
                }
            }
            Kind::Drop { id, to, .. } => {
                let Some(sent) = self.sends.get(id) else {
                    return Err(self.error(format!("drop of id {id}, which was never sent")));
                };
                if sent.to != *to {
                    return Err(self.error(format!(
                        "drop of id {id} to {to}, but it was sent to {}",
                        sent.to
                    )));
                }
            }
            Kind::Persist {
                vote: Some(vote), ..
            } => self.member("vote for", *vote)?,
            Kind::Transfer { to, .. } => self.member("transfer target", *to)?,
            Kind::Config {
                voters,
                outgoing,
                learners,
                ..
            } => {
                for &id in voters.iter().chain(outgoing).chain(learners) {
                    self.member("configuration member", id)?;
                }
            }
            Kind::Snapshot { peer: Some(p), .. } => self.member("snapshot peer", *p)?,
            Kind::Partition { blocked } => {
                for &(from, to) in blocked {
                    self.member("partitioned node", from)?;
                    self.member("partitioned node", to)?;
                }
            }
            _ => {}
        }

        self.last_t = record.t;
        *self.kinds.entry(ev).or_insert(0) += 1;
        Ok(record)
    }
}

/// serde_json's message without its position: each line is parsed on its
/// own, so its "line 1" would contradict the real line number. The column
/// is kept.
fn serde_reason(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match msg.strip_suffix(&suffix) {
        Some(stripped) if e.line() > 0 => format!("{stripped} (column {})", e.column()),
        _ => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::schema::{summarize, ClientDir, ClientOp, TransferPhase};
    use crate::trace::TraceWriter;

    fn rec(t: u64, node: NodeId, kind: Kind) -> Record {
        Record {
            t,
            node,
            term: 2,
            role: if node == 0 {
                NodeRole::None
            } else {
                NodeRole::Follower
            },
            commit: 1,
            kind,
        }
    }

    fn append_msg() -> Msg {
        Msg::Append {
            term: 2,
            prev_index: 3,
            prev_term: 1,
            entries: 2,
            first: 4,
            last: 5,
            leader_commit: 3,
        }
    }

    /// One record of every kind, and every message type, in a valid order.
    fn sample() -> (Header, Vec<Record>) {
        let header = Header::new("sim", vec![1, 2, 3])
            .with_meta("seed", 42)
            .with_meta("faults", "all");
        let msgs = [
            Msg::PreVote {
                term: 2,
                last_index: 5,
                last_term: 1,
                transfer: false,
            },
            Msg::Vote {
                term: 2,
                last_index: 5,
                last_term: 1,
                transfer: true,
            },
            Msg::PreVoteResp {
                term: 2,
                granted: true,
            },
            Msg::VoteResp {
                term: 2,
                granted: false,
            },
            append_msg(),
            Msg::AppendResp {
                term: 2,
                success: false,
                index: 3,
                hint_index: 2,
                hint_term: 1,
            },
            Msg::Heartbeat {
                term: 2,
                commit: 3,
                read_round: 7,
                quiesce: false,
            },
            Msg::Heartbeat {
                term: 2,
                commit: 3,
                read_round: 0,
                quiesce: true,
            },
            Msg::HeartbeatResp {
                term: 2,
                read_round: 7,
            },
            Msg::TimeoutNow { term: 2 },
        ];
        let mut records = vec![
            rec(
                0,
                1,
                Kind::Role {
                    from: NodeRole::Down,
                    leader: None,
                },
            ),
            rec(1, 1, Kind::Timeout { pre_vote: true }),
            rec(
                2,
                2,
                Kind::Vote {
                    candidate: 1,
                    pre_vote: true,
                    granted: true,
                },
            ),
        ];
        for (i, m) in msgs.iter().enumerate() {
            let id = i as u64 + 1;
            records.push(rec(
                3,
                1,
                Kind::Send {
                    id,
                    to: 2,
                    m: m.clone(),
                },
            ));
            records.push(rec(
                3,
                2,
                Kind::Recv {
                    id,
                    from: 1,
                    m: m.clone(),
                },
            ));
        }
        records.push(rec(
            5,
            1,
            Kind::Send {
                id: 100,
                to: 3,
                m: append_msg(),
            },
        ));
        records.extend([
            rec(
                6,
                1,
                Kind::Drop {
                    id: 100,
                    to: 3,
                    reason: "partition".into(),
                },
            ),
            rec(
                6,
                1,
                Kind::Role {
                    from: NodeRole::Candidate,
                    leader: Some(1),
                },
            ),
            rec(
                7,
                1,
                Kind::Stepdown {
                    reason: "check_quorum".into(),
                },
            ),
            rec(
                7,
                2,
                Kind::Quiesce {
                    quiescent: true,
                    reason: String::new(),
                },
            ),
            rec(
                7,
                2,
                Kind::Quiesce {
                    quiescent: false,
                    reason: "message".into(),
                },
            ),
            rec(
                8,
                2,
                Kind::Append {
                    first: 4,
                    last: 5,
                    last_term: 2,
                },
            ),
            rec(
                8,
                2,
                Kind::Persist {
                    hs_term: 2,
                    vote: Some(1),
                    hs_commit: 3,
                },
            ),
            rec(
                8,
                3,
                Kind::Persist {
                    hs_term: 2,
                    vote: None,
                    hs_commit: 0,
                },
            ),
            rec(9, 2, Kind::Commit { index: 5 }),
            rec(9, 2, Kind::Apply { first: 4, last: 5 }),
            rec(
                10,
                1,
                Kind::Read {
                    ctx: 9,
                    index: 5,
                    lease: false,
                },
            ),
            rec(
                11,
                1,
                Kind::Transfer {
                    phase: TransferPhase::TimeoutNow,
                    to: 2,
                },
            ),
            rec(
                12,
                1,
                Kind::Client {
                    dir: ClientDir::Request,
                    client: 7,
                    seq: 1,
                    op: ClientOp::Put,
                    key: 3,
                    value: Some(10),
                    outcome: None,
                },
            ),
            rec(
                13,
                1,
                Kind::Client {
                    dir: ClientDir::Reply,
                    client: 7,
                    seq: 1,
                    op: ClientOp::Get,
                    key: 3,
                    value: None,
                    outcome: Some("not_leader".into()),
                },
            ),
            rec(14, 3, Kind::Crash),
            rec(15, 3, Kind::Restart),
            rec(16, 2, Kind::Pause),
            rec(17, 2, Kind::Resume),
            rec(
                18,
                0,
                Kind::Partition {
                    blocked: vec![(1, 2), (2, 1)],
                },
            ),
            rec(19, 0, Kind::Heal),
            rec(20, 3, Kind::Tickrate { period: 3 }),
            rec(
                21,
                1,
                Kind::Config {
                    change: "joint_entered".into(),
                    index: 9,
                    voters: vec![1, 2],
                    outgoing: vec![1, 2, 3],
                    learners: vec![],
                },
            ),
            rec(
                21,
                2,
                Kind::Snapshot {
                    phase: "installed".into(),
                    index: 9,
                    peer: Some(1),
                    bytes: 120,
                    ok: true,
                },
            ),
            rec(21, 2, Kind::Compact { upto: 5 }),
        ]);
        (header, records)
    }

    fn write(header: &Header, records: &[Record]) -> String {
        let mut w = TraceWriter::in_memory(header);
        for r in records {
            w.push(r);
        }
        w.into_string()
    }

    fn sample_text() -> String {
        let (header, records) = sample();
        write(&header, &records)
    }

    /// `sample_text` with line `n` (1-based) replaced by `with`.
    fn replace_line(n: usize, with: &str) -> String {
        let text = sample_text();
        let mut lines: Vec<&str> = text.lines().collect();
        lines[n - 1] = with;
        lines.join("\n") + "\n"
    }

    fn err(text: &str) -> CheckError {
        match check_str(text) {
            Ok(s) => panic!("expected an error, got {s:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn trace_round_trip() {
        let (header, records) = sample();
        let text = write(&header, &records);
        let summary = check_str(&text).expect("valid");
        assert_eq!(summary.lines, records.len() + 1);
        assert_eq!(summary.events, records.len());
        assert_eq!(summary.nodes, vec![1, 2, 3]);
        assert_eq!(summary.max_t, 21);
        assert_eq!(summary.kinds["send"], 11);
        assert_eq!(summary.kinds["recv"], 10);
        // Every kind occurs in the sample.
        for name in Kind::NAMES {
            assert!(summary.kinds.contains_key(name), "{name} missing");
        }
        let trace = parse_str(&text).expect("valid");
        assert_eq!(trace.header, header);
        assert_eq!(trace.records, records);
        let via_reader = parse_reader(text.as_bytes()).expect("valid");
        assert_eq!(via_reader, trace);
        assert_eq!(check_reader(text.as_bytes()).expect("valid"), summary);
    }

    #[test]
    fn trace_output_is_deterministic_and_ordered() {
        let (header, records) = sample();
        let a = write(&header, &records);
        let b = write(&header, &records);
        assert_eq!(a, b);
        let mut first = a.lines();
        assert_eq!(
            first.next(),
            Some(
                r#"{"format":"rtrace","v":1,"source":"sim","nodes":[1,2,3],"meta":{"faults":"all","seed":42}}"#
            )
        );
        let line = a
            .lines()
            .find(|l| l.contains(r#""ev":"send""#) && l.contains(r#""type":"append""#))
            .expect("an append send");
        assert_eq!(
            line,
            r#"{"t":3,"node":1,"ev":"send","term":2,"role":"follower","commit":1,"id":5,"to":2,"m":{"type":"append","term":2,"prev_index":3,"prev_term":1,"entries":2,"first":4,"last":5,"leader_commit":3}}"#
        );
        let client = a
            .lines()
            .find(|l| l.contains(r#""dir":"request""#))
            .expect("a client request");
        assert_eq!(
            client,
            r#"{"t":12,"node":1,"ev":"client","term":2,"role":"follower","commit":1,"dir":"request","client":7,"seq":1,"op":"put","key":3,"value":10,"outcome":null}"#
        );
        assert!(
            a.contains(r#"{"t":14,"node":3,"ev":"crash","term":2,"role":"follower","commit":1}"#)
        );
        assert!(a.contains(r#""blocked":[[1,2],[2,1]]"#));
        assert!(a.ends_with('\n'));
    }

    #[test]
    fn trace_writer_to_io() {
        let (header, records) = sample();
        let mut w = TraceWriter::new(Vec::new(), &header).expect("header");
        for r in &records {
            w.write(r).expect("record");
        }
        assert_eq!(w.events(), records.len() as u64);
        let bytes = w.finish().expect("flush");
        assert_eq!(bytes, write(&header, &records).into_bytes());
    }

    #[test]
    fn trace_msg_from_core_message() {
        use crate::core::{Entry, EntryKind, Message, MessageBody};
        let entry = |index| Entry {
            index,
            term: 2,
            kind: EntryKind::Normal,
            data: vec![1].into(),
        };
        let m = Message {
            from: 1,
            to: 2,
            term: 2,
            body: MessageBody::Append {
                prev_log_index: 3,
                prev_log_term: 1,
                entries: vec![entry(4), entry(5)],
                leader_commit: 3,
                lease_tick: 99,
            },
        };
        assert_eq!(Msg::from(&m), append_msg());
        let empty = Message {
            body: MessageBody::Append {
                prev_log_index: 3,
                prev_log_term: 1,
                entries: vec![],
                leader_commit: 3,
                lease_tick: 0,
            },
            ..m.clone()
        };
        let Msg::Append {
            entries,
            first,
            last,
            ..
        } = summarize(&empty)
        else {
            panic!("not an append");
        };
        assert_eq!((entries, first, last), (0, 0, 0));
        let bodies = [
            MessageBody::RequestVote {
                pre_vote: true,
                last_log_index: 1,
                last_log_term: 1,
                leader_transfer: false,
            },
            MessageBody::RequestVote {
                pre_vote: false,
                last_log_index: 1,
                last_log_term: 1,
                leader_transfer: true,
            },
            MessageBody::RequestVoteResponse {
                pre_vote: true,
                granted: true,
            },
            MessageBody::RequestVoteResponse {
                pre_vote: false,
                granted: true,
            },
            MessageBody::AppendResponse {
                success: true,
                index: 4,
                hint_index: 0,
                hint_term: 0,
                lease_tick: 5,
            },
            MessageBody::Heartbeat {
                commit: 1,
                read_round: 2,
                lease_tick: 3,
                quiesce: false,
            },
            MessageBody::Heartbeat {
                commit: 1,
                read_round: 0,
                lease_tick: 3,
                quiesce: true,
            },
            MessageBody::HeartbeatResponse {
                read_round: 2,
                lease_tick: 3,
            },
            MessageBody::TimeoutNow,
        ];
        for body in bodies {
            let name = body.kind_name();
            let m = Message { body, ..m.clone() };
            let s = Msg::from(&m);
            assert_eq!(s.name(), name);
            assert_eq!(s.term(), 2);
            let json = serde_json::to_string(&s).expect("serialize");
            assert!(
                json.starts_with(&format!(r#"{{"type":"{name}","term":2"#)),
                "{json}"
            );
        }
    }

    #[test]
    fn trace_kind_names_match_serde() {
        let (_, records) = sample();
        for r in &records {
            let json = serde_json::to_value(r).expect("serialize");
            assert_eq!(json["ev"], r.kind.name());
            assert!(Kind::NAMES.contains(&r.kind.name()));
        }
    }

    #[test]
    fn trace_truncated_line() {
        let text = sample_text();
        let lines: Vec<&str> = text.lines().collect();
        let last = lines[lines.len() - 1];
        let cut = format!(
            "{}\n{}",
            lines[..lines.len() - 1].join("\n"),
            &last[..last.len() / 2]
        );
        let e = err(&cut);
        assert_eq!(e.line, lines.len());
        assert!(e.reason.contains("EOF"), "{e}");
    }

    #[test]
    fn trace_wrong_version() {
        let e = err(&replace_line(
            1,
            r#"{"format":"rtrace","v":2,"source":"sim","nodes":[1,2,3],"meta":{}}"#,
        ));
        assert_eq!(e.line, 1);
        assert!(e.reason.contains("unsupported version 2"), "{e}");
        assert_eq!(e.to_string(), format!("line 1: {}", e.reason));
    }

    #[test]
    fn trace_unknown_kind() {
        let e = err(&replace_line(
            4,
            r#"{"t":2,"node":1,"ev":"explode","term":2,"role":"leader","commit":1}"#,
        ));
        assert_eq!(e.line, 4);
        assert!(e.reason.contains("unknown variant `explode`"), "{e}");
    }

    #[test]
    fn trace_recv_without_send() {
        let e = err(&replace_line(
            3,
            r#"{"t":1,"node":2,"ev":"recv","term":2,"role":"follower","commit":1,"id":77,"from":1,"m":{"type":"timeout_now","term":2}}"#,
        ));
        assert_eq!(e.line, 3);
        assert!(e.reason.contains("never sent"), "{e}");
    }

    #[test]
    fn trace_recv_on_wrong_node() {
        // Line 5 is the first send (id 1, 1 -> 2), line 6 its recv.
        let text = sample_text();
        let line6 = text.lines().nth(5).expect("line 6");
        assert!(line6.contains(r#""ev":"recv""#), "{line6}");
        let e = err(&replace_line(
            6,
            &line6.replace(r#""node":2"#, r#""node":3"#),
        ));
        assert_eq!(e.line, 6);
        assert!(e.reason.contains("sent from 1 to 2"), "{e}");
    }

    #[test]
    fn trace_recv_with_other_message() {
        let text = sample_text();
        let line6 = text.lines().nth(5).expect("line 6");
        let e = err(&replace_line(
            6,
            &line6.replace(r#""last_index":5"#, r#""last_index":6"#),
        ));
        assert_eq!(e.line, 6);
        assert!(e.reason.contains("different message"), "{e}");
    }

    #[test]
    fn trace_drop_without_send() {
        let e = err(&replace_line(
            3,
            r#"{"t":1,"node":1,"ev":"drop","term":2,"role":"follower","commit":1,"id":5,"to":2,"reason":"fault"}"#,
        ));
        assert_eq!(e.line, 3);
        assert!(
            e.reason.contains("drop of id 5, which was never sent"),
            "{e}"
        );
    }

    #[test]
    fn trace_role_none_only_for_cluster() {
        let e = err(&replace_line(
            3,
            r#"{"t":1,"node":1,"ev":"timeout","term":2,"role":"none","commit":1,"pre_vote":true}"#,
        ));
        assert_eq!(e.line, 3);
        assert!(e.reason.contains("only for node 0"), "{e}");
        let e = err(&replace_line(
            3,
            r#"{"t":1,"node":0,"ev":"heal","term":0,"role":"leader","commit":0}"#,
        ));
        assert!(e.reason.contains("node 0 must have role"), "{e}");
    }

    #[test]
    fn trace_time_goes_backwards() {
        let e = err(&replace_line(
            5,
            r#"{"t":0,"node":1,"ev":"timeout","term":2,"role":"follower","commit":1,"pre_vote":false}"#,
        ));
        assert_eq!(e.line, 5);
        assert!(e.reason.contains("t goes backwards: 0 after 2"), "{e}");
    }

    #[test]
    fn trace_missing_field() {
        let e = err(&replace_line(
            3,
            r#"{"t":1,"node":1,"ev":"timeout","term":2,"role":"follower","commit":1}"#,
        ));
        assert_eq!(e.line, 3);
        assert!(e.reason.contains("missing field `pre_vote`"), "{e}");
        let e = err(&replace_line(
            3,
            r#"{"t":1,"node":1,"ev":"timeout","role":"follower","commit":1,"pre_vote":true}"#,
        ));
        assert!(e.reason.contains("missing field `term`"), "{e}");
    }

    #[test]
    fn trace_unknown_node() {
        let e = err(&replace_line(
            3,
            r#"{"t":1,"node":9,"ev":"timeout","term":2,"role":"follower","commit":1,"pre_vote":true}"#,
        ));
        assert_eq!(e.line, 3);
        assert!(e.reason.contains("node 9 is not in the header"), "{e}");
        let e = err(&replace_line(
            3,
            r#"{"t":1,"node":0,"ev":"timeout","term":0,"role":"none","commit":0,"pre_vote":true}"#,
        ));
        assert!(e.reason.contains("node 0"), "{e}");
    }

    #[test]
    fn trace_bad_role() {
        let e = err(&replace_line(
            3,
            r#"{"t":1,"node":1,"ev":"timeout","term":2,"role":"king","commit":1,"pre_vote":true}"#,
        ));
        assert_eq!(e.line, 3);
        assert!(e.reason.contains("unknown variant `king`"), "{e}");
    }

    #[test]
    fn trace_duplicate_send_id() {
        let text = sample_text();
        let send = text.lines().nth(4).expect("line 5");
        assert!(send.contains(r#""ev":"send""#), "{send}");
        let e = err(&replace_line(7, send));
        assert_eq!(e.line, 7);
        assert!(e.reason.contains("send id 1 is used twice"), "{e}");
    }

    #[test]
    fn trace_empty_file() {
        for text in ["", "\n"] {
            let e = err(text);
            assert_eq!(e.line, 1, "{text:?}");
            assert!(
                e.reason.contains("header") || e.reason.contains("empty"),
                "{e}"
            );
        }
    }

    #[test]
    fn trace_empty_line() {
        let text = sample_text();
        let e = err(&format!("{text}\n"));
        assert_eq!(e.line, text.lines().count() + 1);
        assert_eq!(e.reason, "empty line");
        let e = err(&replace_line(5, ""));
        assert_eq!(e.line, 5);
        // No trailing newline is fine, one is fine.
        assert!(check_str(text.trim_end()).is_ok());
    }

    #[test]
    fn trace_other_json_lines() {
        let text = "{\"level\":\"info\",\"msg\":\"hello\"}\n{\"level\":\"warn\",\"msg\":\"x\"}\n";
        let e = err(text);
        assert_eq!(e.line, 1);
        assert!(e.reason.contains("not an rtrace file"), "{e}");
        let e = err("not json at all\n");
        assert_eq!(e.line, 1);
        assert!(e.reason.contains("not an rtrace file"), "{e}");
    }

    #[test]
    fn trace_reader_io_error_names_line() {
        struct Failing(usize);
        impl std::io::Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let header = b"{\"format\":\"rtrace\",\"v\":1,\"source\":\"sim\",\"nodes\":[1]}\n";
                if self.0 == 0 {
                    self.0 = 1;
                    buf[..header.len()].copy_from_slice(header);
                    Ok(header.len())
                } else {
                    Err(std::io::Error::other("disk on fire"))
                }
            }
        }
        let e = match check_reader(std::io::BufReader::new(Failing(0))) {
            Ok(s) => panic!("expected an error, got {s:?}"),
            Err(e) => e,
        };
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("disk on fire"), "{e}");
    }
}
