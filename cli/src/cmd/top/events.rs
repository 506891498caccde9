//! The event log's sources: trace records (from the nodes' trace files,
//! read incrementally from where the last read stopped, or from a
//! simulated session), and this console's own actions.
//!
//! Only what an operator watches for becomes a line (elections, leader
//! changes, configuration changes, snapshots, restarts); votes of pre-vote
//! rounds, persists and the like stay in the trace.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use raft_core::trace::schema::{Kind, NodeRole, Record, TransferPhase};

use super::model::{Event, EventKind};
use cds::devcluster::directory::NodeEntry;

/// How much of an existing trace is read when `top` starts: the recent
/// past, not a long-running cluster's whole history.
const BACKLOG_BYTES: u64 = 256 << 10;
/// The most read from one file in one pass, so a burst never stalls a poll.
const MAX_READ_BYTES: u64 = 1 << 20;
/// The trace file in a node's data directory (`TRACE_FILE` of the node's
/// config module, which is private to `cdsctl node`).
const TRACE_FILE: &str = "trace.rtrace";

/// Where the reading of one trace file stands.
#[derive(Debug, Default)]
struct FileTail {
    offset: u64,
    /// The start of a line whose end is not written yet.
    partial: Vec<u8>,
    /// The first line read is a fragment (reading started mid-file).
    skip_first: bool,
}

/// Reads new trace lines from every node and turns them into events.
#[derive(Debug, Default)]
pub struct Tailer {
    files: BTreeMap<PathBuf, FileTail>,
    summary: Summariser,
}

/// Turns trace records into event-log lines.
#[derive(Debug, Default)]
pub struct Summariser {
    /// Configuration changes already logged, by (change, index): every
    /// member records the same change, the log shows it once.
    configs_seen: BTreeSet<(String, u64)>,
}

impl Tailer {
    /// The events written to the nodes' traces since the last call.
    pub fn poll(&mut self, nodes: &[NodeEntry]) -> Vec<Event> {
        let mut out = Vec::new();
        for node in nodes {
            let path = node.data_dir.join(TRACE_FILE);
            for line in self.read_new(&path) {
                // The header and anything unreadable are skipped: the log
                // is a view, the trace stays the record.
                let Ok(rec) = serde_json::from_slice::<Record>(&line) else {
                    continue;
                };
                if let Some(ev) = self.summary.describe(&rec, rec.t) {
                    out.push(ev);
                }
            }
        }
        out
    }

    /// The complete lines appended to `path` since the last call.
    fn read_new(&mut self, path: &std::path::Path) -> Vec<Vec<u8>> {
        let Ok(len) = std::fs::metadata(path).map(|m| m.len()) else {
            return Vec::new();
        };
        let tail = self.files.entry(path.to_path_buf()).or_insert_with(|| {
            // First sight: start near the end of a long trace.
            let offset = len.saturating_sub(BACKLOG_BYTES);
            FileTail {
                offset,
                partial: Vec::new(),
                skip_first: offset > 0,
            }
        });
        if len < tail.offset {
            // The file was replaced (a fresh data directory): start over.
            *tail = FileTail::default();
        }
        if len == tail.offset {
            return Vec::new();
        }
        let mut buf = Vec::new();
        let read = File::open(path).and_then(|mut f| {
            f.seek(SeekFrom::Start(tail.offset))?;
            f.take(MAX_READ_BYTES).read_to_end(&mut buf)
        });
        let Ok(n) = read else {
            return Vec::new();
        };
        tail.offset += n as u64;
        tail.partial.extend_from_slice(&buf);
        let mut lines: Vec<Vec<u8>> = Vec::new();
        while let Some(end) = tail.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = tail.partial.drain(..=end).collect();
            if std::mem::take(&mut tail.skip_first) {
                continue;
            }
            lines.push(line);
        }
        lines
    }
}

impl Summariser {
    /// The event-log line for a trace record, if it is one an operator
    /// watches for, stamped `t_us` (the record's time on the log's clock).
    pub fn describe(&mut self, rec: &Record, t_us: u64) -> Option<Event> {
        let term = rec.term;
        let (kind, text) = match &rec.kind {
            Kind::Role { from, leader } => match rec.role {
                NodeRole::Leader => (EventKind::Leader, format!("became leader, term {term}")),
                NodeRole::Candidate => (EventKind::Election, format!("candidate, term {term}")),
                NodeRole::Follower if *from == NodeRole::Leader => (
                    EventKind::Leader,
                    format!("stepped down, term {term}{}", follows(*leader)),
                ),
                NodeRole::Follower => {
                    let l = (*leader)?;
                    (EventKind::Leader, format!("follows n{l}, term {term}"))
                }
                _ => return None,
            },
            Kind::Timeout { pre_vote } => (
                EventKind::Election,
                if *pre_vote {
                    "election timeout (pre-vote)".to_owned()
                } else {
                    "election timeout".to_owned()
                },
            ),
            Kind::Vote {
                candidate,
                pre_vote: false,
                granted: true,
            } => (
                EventKind::Election,
                format!("voted for n{candidate}, term {term}"),
            ),
            Kind::Stepdown { reason } => (EventKind::Leader, format!("steps down: {reason}")),
            Kind::Transfer { phase, to } => {
                let what = match phase {
                    TransferPhase::Start => "starts",
                    TransferPhase::TimeoutNow => "sends TimeoutNow in",
                    TransferPhase::Abort => "aborts",
                };
                (
                    EventKind::Leader,
                    format!("{what} leader transfer to n{to}"),
                )
            }
            Kind::Config {
                change,
                index,
                voters,
                outgoing,
                learners,
            } => {
                if !self.configs_seen.insert((change.clone(), *index)) {
                    return None;
                }
                let mut text = format!("config {change} @{index}: voters {}", ids(voters));
                if !outgoing.is_empty() {
                    text.push_str(&format!(" old {}", ids(outgoing)));
                }
                if !learners.is_empty() {
                    text.push_str(&format!(" learners {}", ids(learners)));
                }
                (EventKind::Config, text)
            }
            Kind::Snapshot {
                phase, index, peer, ..
            } => {
                let text = match (phase.as_str(), peer) {
                    ("taken", _) => format!("snapshot taken @{index}"),
                    ("offered", Some(p)) => format!("sends snapshot @{index} to n{p}"),
                    ("installed", _) => format!("installed snapshot @{index}"),
                    _ => return None,
                };
                (EventKind::Snapshot, text)
            }
            Kind::Compact { upto } => (EventKind::Snapshot, format!("log compacted to {upto}")),
            Kind::Restart => (EventKind::Process, format!("started, term {term}")),
            _ => return None,
        };
        Some(Event {
            t_us,
            node: Some(rec.node),
            kind,
            text,
        })
    }
}

fn follows(leader: Option<u64>) -> String {
    leader.map_or(String::new(), |l| format!(", follows n{l}"))
}

/// `{1,2,3}`.
pub fn ids(ids: &[u64]) -> String {
    let v: Vec<String> = ids.iter().map(u64::to_string).collect();
    format!("{{{}}}", v.join(","))
}

/// The log line of an action as it starts.
pub fn action_started(t_us: u64, what: &str) -> Event {
    Event {
        t_us,
        node: None,
        kind: EventKind::Action,
        text: format!("▶ {what}"),
    }
}

/// The log line of an action's outcome.
pub fn action_finished(t_us: u64, outcome: &Result<String, String>) -> Event {
    let (kind, text) = match outcome {
        Ok(m) => (EventKind::Done, format!("✓ {m}")),
        Err(e) => (EventKind::Failed, format!("✗ {e}")),
    };
    Event {
        t_us,
        node: None,
        kind,
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn entry(dir: &std::path::Path, id: u64) -> NodeEntry {
        NodeEntry {
            id,
            pid: None,
            raft_addr: String::new(),
            http_addr: String::new(),
            data_dir: dir.join(format!("n{id}")),
        }
    }

    #[test]
    fn traces_are_read_incrementally_and_summarised() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = [entry(dir.path(), 1), entry(dir.path(), 2)];
        for n in &nodes {
            std::fs::create_dir_all(&n.data_dir).unwrap();
        }
        let p1 = nodes[0].data_dir.join(TRACE_FILE);
        let p2 = nodes[1].data_dir.join(TRACE_FILE);
        let mut f1 = File::create(&p1).unwrap();
        writeln!(
            f1,
            r#"{{"format":"rtrace","v":1,"source":"node","nodes":[1,2],"meta":{{}}}}"#
        )
        .unwrap();
        writeln!(f1, r#"{{"t":10,"node":1,"ev":"timeout","term":1,"role":"follower","commit":0,"pre_vote":false}}"#).unwrap();
        // Half a line: not read until its end is written.
        write!(
            f1,
            r#"{{"t":20,"node":1,"ev":"role","term":2,"role":"leader","#
        )
        .unwrap();
        f1.flush().unwrap();
        let config = r#"{"t":30,"node":NODE,"ev":"config","term":2,"role":"follower","commit":3,"change":"voter_added","index":3,"voters":[1,2],"outgoing":[],"learners":[]}"#;
        std::fs::write(&p2, format!("{}\n", config.replace("NODE", "2"))).unwrap();

        let mut t = Tailer::default();
        let texts = |evs: Vec<Event>| -> Vec<String> {
            evs.into_iter()
                .map(|e| format!("{:?} n{} {}", e.kind, e.node.unwrap_or(0), e.text))
                .collect()
        };
        assert_eq!(
            texts(t.poll(&nodes)),
            [
                "Election n1 election timeout",
                "Config n2 config voter_added @3: voters {1,2}"
            ]
        );
        assert!(t.poll(&nodes).is_empty(), "nothing new");
        writeln!(f1, r#""commit":0,"from":"candidate","leader":1}}"#).unwrap();
        writeln!(f1, "{}", config.replace("NODE", "1")).unwrap();
        f1.flush().unwrap();
        // The completed line is read; node 1's copy of the config is not
        // logged twice.
        assert_eq!(texts(t.poll(&nodes)), ["Leader n1 became leader, term 2"]);
    }

    #[test]
    fn a_long_trace_is_read_from_near_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let node = entry(dir.path(), 1);
        std::fs::create_dir_all(&node.data_dir).unwrap();
        let line = r#"{"t":10,"node":1,"ev":"timeout","term":1,"role":"follower","commit":0,"pre_vote":true}"#;
        let n = (BACKLOG_BYTES as usize / line.len()) * 3;
        let text: String = (0..n).map(|_| format!("{line}\n")).collect();
        std::fs::write(node.data_dir.join(TRACE_FILE), text).unwrap();
        let evs = Tailer::default().poll(std::slice::from_ref(&node));
        assert!(!evs.is_empty() && evs.len() < n / 2, "{} of {n}", evs.len());
    }
}
