//! A real node's own rtrace file.
//!
//! Each node appends what it lived through (role changes, timeouts, votes,
//! step-downs, transfers, configuration changes, snapshots, compactions,
//! restarts) to a file in its data directory, stamped with wall-clock
//! microseconds. `cdsctl trace merge` interleaves a cluster's files by time
//! into one trace the simulator's tools read.
//!
//! What it leaves out, on purpose: messages, appends, commits, applies and
//! reads. Those happen thousands of times a second under load, and tracing
//! them would cost the node more than the work itself; the simulator's
//! traces have them. Messages could not be paired across files anyway:
//! nothing on the wire identifies a message to both ends.
//!
//! Tracing never stops the node: the first write error is reported once
//! (through the returned error of [`NodeTracer::flush`]) and tracing is
//! switched off.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::core::{Event, Membership, NodeId, Role};
use crate::trace::events::event_kind;
use crate::trace::schema::{Header, Kind, NodeRole, Record, NODE_SOURCE};

/// Appends one node's events to its trace file.
#[derive(Debug)]
pub struct NodeTracer {
    id: NodeId,
    path: PathBuf,
    out: Option<BufWriter<File>>,
    /// The last `t` written: wall clocks may step back, traces may not.
    last_t: u64,
    /// The configuration before the next `config` record.
    membership: Membership,
    dirty: bool,
}

impl NodeTracer {
    /// Opens (or creates) `path` for node `id`, whose group starts with
    /// `members`. A new file gets a header; an existing one is appended to
    /// after a `restart` record, once a line cut short by a crash (a kill
    /// between two writes) has been removed.
    pub fn open(path: &Path, id: NodeId, members: &[NodeId]) -> io::Result<NodeTracer> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let len = file.metadata()?.len();
        let fresh = len == 0;
        if !fresh {
            cut_torn_line(&mut file, len)?;
        }
        let mut t = NodeTracer {
            id,
            path: path.to_path_buf(),
            out: Some(BufWriter::new(file)),
            last_t: 0,
            membership: Membership::default(),
            dirty: false,
        };
        if fresh {
            let mut nodes: Vec<NodeId> = members.iter().copied().chain([id]).collect();
            nodes.sort_unstable();
            nodes.dedup();
            let header = Header::new(NODE_SOURCE, nodes)
                .with_meta("node", id)
                .with_meta("clock", "wall_us");
            t.line(&header)?;
        }
        Ok(t)
    }

    /// Where the trace goes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records that the node (re)started with `membership`, in `term`,
    /// having committed `commit`.
    pub fn started(&mut self, term: u64, commit: u64, membership: &Membership) {
        self.record(term, Role::Follower, commit, Kind::Restart);
        self.membership = membership.clone();
    }

    /// Records the node's change of role from `from` to `role`, and the
    /// leader it now knows of.
    pub fn role(&mut self, term: u64, from: Role, role: Role, commit: u64, leader: Option<NodeId>) {
        let kind = Kind::Role {
            from: from.into(),
            leader,
        };
        self.record(term, role, commit, kind);
    }

    /// Records a core event, if it has a record ([`event_kind`]).
    pub fn event(&mut self, term: u64, role: Role, commit: u64, ev: &Event) {
        if let Some(kind) = event_kind(ev, &self.membership) {
            if let Event::MembershipChanged { membership, .. } = ev {
                self.membership = membership.clone();
            }
            self.record(term, role, commit, kind);
        }
    }

    /// Records a durable change of term or vote.
    pub fn persisted(&mut self, term: u64, role: Role, commit: u64, vote: Option<NodeId>) {
        self.record(
            term,
            role,
            commit,
            Kind::Persist {
                hs_term: term,
                vote,
                hs_commit: commit,
            },
        );
    }

    /// Records that the log up to `upto` was discarded behind a snapshot.
    pub fn compacted(&mut self, term: u64, role: Role, commit: u64, upto: u64) {
        self.record(term, role, commit, Kind::Compact { upto });
    }

    /// Whether records wait for [`NodeTracer::flush`].
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Writes buffered records to the file (no fsync: a trace is for
    /// reading, not for recovery). Returns the error that switched tracing
    /// off, once.
    pub fn flush(&mut self) -> io::Result<()> {
        if !std::mem::take(&mut self.dirty) {
            return Ok(());
        }
        let Some(out) = self.out.as_mut() else {
            return Ok(());
        };
        out.flush().inspect_err(|_| self.out = None)
    }

    fn record(&mut self, term: u64, role: Role, commit: u64, kind: Kind) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        self.last_t = self.last_t.max(now);
        let rec = Record {
            t: self.last_t,
            node: self.id,
            term,
            role: NodeRole::from(role),
            commit,
            kind,
        };
        // A failed write is seen again, and reported, by the next flush.
        let _ = self.line(&rec);
    }

    fn line<T: serde::Serialize>(&mut self, value: &T) -> io::Result<()> {
        let Some(out) = self.out.as_mut() else {
            return Ok(());
        };
        let mut buf = serde_json::to_vec(value)?;
        buf.push(b'\n');
        self.dirty = true;
        out.write_all(&buf)
    }
}

impl Drop for NodeTracer {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Truncates `file` (of `len` bytes) after its last newline, so an append
/// starts on a fresh line.
fn cut_torn_line(file: &mut File, len: u64) -> io::Result<()> {
    // Lines are short; look back in bounded steps for the last newline.
    let mut end = len;
    let mut buf = vec![0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..n])?;
        if let Some(p) = buf[..n].iter().rposition(|&b| b == b'\n') {
            let keep = start + p as u64 + 1;
            if keep < len {
                file.set_len(keep)?;
            }
            return Ok(());
        }
        end = start;
    }
    // Not even the header line is whole: start the file over.
    file.set_len(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::check::parse_str;

    #[test]
    fn a_node_trace_is_valid_across_a_crash_that_tore_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace.rtrace");
        let m = Membership {
            voters: vec![1, 2, 3],
            ..Membership::default()
        };
        {
            let mut t = NodeTracer::open(&path, 2, &[1, 2, 3]).unwrap();
            t.started(0, 0, &m);
            t.event(
                1,
                Role::PreCandidate,
                0,
                &Event::ElectionTimeout { pre_vote: true },
            );
            t.role(1, Role::Candidate, Role::Leader, 0, Some(2));
            t.flush().unwrap();
        }
        // A kill in the middle of a write leaves half a line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"t":1,"node":2,"ev":"ro"#).unwrap();
        drop(f);
        {
            let mut t = NodeTracer::open(&path, 2, &[1, 2, 3]).unwrap();
            t.started(1, 0, &m);
            let grown = Membership {
                voters: vec![1, 2, 3, 4],
                ..Membership::default()
            };
            t.event(
                1,
                Role::Follower,
                0,
                &Event::MembershipChanged {
                    index: 7,
                    membership: grown,
                },
            );
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let trace = parse_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(trace.header.source, NODE_SOURCE);
        assert_eq!(trace.header.nodes, vec![1, 2, 3]);
        let kinds: Vec<&str> = trace.records.iter().map(|r| r.kind.name()).collect();
        assert_eq!(kinds, ["restart", "timeout", "role", "restart", "config"]);
        assert!(
            matches!(&trace.records[4].kind, Kind::Config { change, .. } if change == "voter_added"),
            "{:?}",
            trace.records[4]
        );
        assert!(trace.records.windows(2).all(|w| w[0].t <= w[1].t));
    }
}
