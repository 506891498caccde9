//! Snapshot install in two phases, resumable and throttled.
//!
//! When a follower needs entries the leader has compacted away, the leader
//! offers its latest snapshot: phase 1 sends only the meta (last included
//! index and term, the configuration, the files with sizes and CRC-32C).
//! In phase 2 the follower pulls the data, one chunk at a time, from
//! whichever leader offered it last:
//!
//! - every chunk carries its checksum; a bad chunk is asked for again;
//! - verified chunks are handed to the driver to persist (`SnapshotOp`), so
//!   a transfer resumes where it stopped after a lost message, a leader
//!   change (a new leader with the same snapshot: same meta) or a restart of
//!   either side, and a verified chunk is never fetched twice;
//! - each file's whole-file checksum is computed as its chunks arrive (in
//!   order: a running CRC-32C per file, [`checksum_extend`]), so nothing
//!   re-reads a file; after a restart the bytes already held are streamed
//!   once, a chunk at a time, to rebuild the running checksum. Once every
//!   file is complete the checksums are compared with the meta; a mismatch
//!   discards the copy, which is never loaded;
//! - the leader serves at most `snapshot_bytes_per_tick` bytes a tick and
//!   offers snapshots to at most `max_snapshot_sends` followers at once.

use std::collections::VecDeque;

use super::event::Event;
use super::membership::Membership;
use super::message::{
    checksum, checksum_extend, Bytes, ConfState, MessageBody, NodeId, SnapshotMeta,
};
use super::progress::ProgressState;
use super::raft::{Raft, Role};
use super::ready::SnapshotOp;
use crate::storage::Storage;

/// A follower's transfer in progress.
#[derive(Debug, Clone)]
pub(crate) struct Receiving {
    meta: SnapshotMeta,
    /// Who to ask: the leader that offered it last.
    leader: NodeId,
    /// Bytes of each file verified and handed to the driver.
    have: Vec<u64>,
    /// The CRC-32C of each file's first `have` bytes, extended chunk by
    /// chunk: the whole-file check needs no second read.
    crc: Vec<u32>,
    /// The chunk asked for and not yet received: (file, offset, len).
    outstanding: Option<(u32, u64, u64)>,
    /// Ticks since the outstanding request went out.
    elapsed: u32,
}

/// A chunk request a leader could not serve yet (throttled).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChunkRequest {
    to: NodeId,
    index: u64,
    file: u32,
    offset: u64,
    len: u64,
}

/// Snapshot state a node keeps between messages.
#[derive(Debug, Default)]
pub(crate) struct SnapshotState {
    pub(crate) receiving: Option<Receiving>,
    /// Work for the driver's next `Ready`.
    pub(crate) ops: Vec<SnapshotOp>,
    /// All chunks received; verify once they are durable.
    pub(crate) verify_pending: bool,
    /// Leader: bytes it may still serve this tick.
    budget: u64,
    /// Leader: throttled requests, at most one per follower.
    queue: VecDeque<ChunkRequest>,
}

impl SnapshotState {
    /// How far the transfer to this node has come, if one is under way.
    pub(crate) fn progress(&self) -> Option<super::status::SnapshotProgress> {
        self.receiving
            .as_ref()
            .map(|r| super::status::SnapshotProgress {
                index: r.meta.index,
                have_bytes: r.have.iter().sum(),
                total_bytes: r.meta.files.iter().map(|f| f.size).sum(),
            })
    }

    /// Whether no snapshot work is under way or waiting on this node:
    /// nothing received, nothing for the driver, no throttled request.
    pub(crate) fn idle(&self) -> bool {
        self.receiving.is_none()
            && self.ops.is_empty()
            && !self.verify_pending
            && self.queue.is_empty()
    }
}

impl<S: Storage> Raft<S> {
    /// The term and configuration as of `index`, for the driver to build
    /// the meta of a snapshot of its state machine at `index`. `index` must
    /// be committed, and applied by the driver; `None` otherwise or when
    /// the log no longer holds it.
    pub fn snapshot_point(&self, index: u64) -> Option<(u64, ConfState)> {
        if index > self.log.committed {
            return None;
        }
        let term = self.log.term(index)?;
        let m = self
            .conf_log
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map_or(&self.conf_base.1, |(_, m)| m);
        Some((term, conf_state(index, m)))
    }

    /// Offers the latest snapshot to `to` (leader, when the entries `to`
    /// needs are compacted). Returns whether the offer went out.
    pub(crate) fn send_snapshot(&mut self, to: NodeId) -> bool {
        let Some(meta) = self.log.storage.snapshot_meta() else {
            return false;
        };
        let sending = self
            .progress
            .iter()
            .filter(|(id, p)| **id != to && matches!(p.state, ProgressState::Snapshot { .. }))
            .count();
        if sending >= self.cfg.max_snapshot_sends {
            return false; // wait for a free slot (next heartbeat)
        }
        let Some(pr) = self.progress.get_mut(&to) else {
            return false;
        };
        pr.become_snapshot(meta.index);
        self.events.push(Event::SnapshotOffered {
            to,
            index: meta.index,
            bytes: meta.total_bytes(),
        });
        self.send(to, self.term, MessageBody::InstallSnapshot { meta });
        true
    }

    /// Phase 1 at the follower: start, resume or skip a transfer.
    pub(crate) fn handle_install_snapshot(&mut self, from: NodeId, meta: SnapshotMeta) {
        let reply = |index| MessageBody::AppendResponse {
            success: true,
            index,
            hint_index: 0,
            hint_term: 0,
            lease_tick: 0,
        };
        if meta.index <= self.log.committed {
            // Nothing to install: what it covers is already committed here.
            let c = self.log.committed;
            self.send(from, self.term, reply(c));
            return;
        }
        if self.log.match_term(meta.index, meta.term) {
            // Our log already holds its last entry: it matches the leader's
            // up to there, no data needs to move.
            self.log.commit_to(meta.index);
            self.send(from, self.term, reply(meta.index));
            return;
        }
        if let Some(r) = self.snap.receiving.as_mut() {
            if r.meta == meta {
                if r.leader == from && r.outstanding.is_some() {
                    // The leader re-offers on every heartbeat answer; a
                    // request is already out (its timeout re-sends it).
                    return;
                }
                // The same snapshot offered again (or by a new leader): go
                // on with it, asking the sender.
                if r.leader != from {
                    let have = r.have.iter().sum();
                    self.events.push(Event::SnapshotResumed {
                        index: meta.index,
                        have,
                    });
                }
                let r = self.snap.receiving.as_mut().expect("checked above");
                r.leader = from;
                r.outstanding = None;
                self.request_next_chunk();
                return;
            }
        }
        let (have, crc) = match self.log.storage.partial_snapshot() {
            Some((m, have)) if m == meta && self.snap.receiving.is_none() => {
                let Some(crc) = self.checksum_held(&have) else {
                    return; // unreadable: the failure is recorded, the node stops
                };
                let held: u64 = have.iter().sum();
                self.events.push(Event::SnapshotResumed {
                    index: meta.index,
                    have: held,
                });
                (have, crc)
            }
            _ => {
                if let Some(old) = self.snap.receiving.take() {
                    self.events.push(Event::SnapshotDiscarded {
                        index: old.meta.index,
                        reason: format!("replaced by the snapshot at {}", meta.index),
                    });
                }
                self.snap.ops.push(SnapshotOp::Begin(meta.clone()));
                (vec![0; meta.files.len()], vec![0; meta.files.len()])
            }
        };
        self.snap.receiving = Some(Receiving {
            meta,
            leader: from,
            have,
            crc,
            outstanding: None,
            elapsed: 0,
        });
        self.request_next_chunk();
    }

    /// The CRC-32C of the first `have[i]` bytes of each file of the
    /// partial snapshot in storage (a transfer resumed after a restart),
    /// read once, one chunk at a time: memory stays at one chunk whatever
    /// the files' sizes. `None` when a read failed (recorded).
    fn checksum_held(&self, have: &[u64]) -> Option<Vec<u32>> {
        let step = self.cfg.snapshot_chunk_size.max(1);
        let mut crcs = Vec::with_capacity(have.len());
        for (i, &held) in have.iter().enumerate() {
            let mut crc = 0;
            let mut at = 0;
            while at < held {
                let len = step.min(held - at);
                let Some(data) = self.log.checked_partial_chunk(i as u32, at, len) else {
                    // "Not held" is not recorded by the log; it is a
                    // failure here all the same (the store said it holds
                    // these bytes).
                    if self.log.failure().is_none() {
                        self.log.record_failure(format!(
                            "partial snapshot file {i}: {len} bytes at {at} not readable"
                        ));
                    }
                    return None;
                };
                if data.len() as u64 != len {
                    // Shorter than the store said it holds: a store bug;
                    // stop rather than checksum a guess.
                    self.log.record_failure(format!(
                        "partial snapshot file {i} gave {} bytes at {at}, {len} expected",
                        data.len()
                    ));
                    return None;
                }
                crc = checksum_extend(crc, &data);
                at += len;
            }
            crcs.push(crc);
        }
        Some(crcs)
    }

    /// Asks for the first missing chunk, or starts verification when none
    /// is missing.
    fn request_next_chunk(&mut self) {
        let chunk = self.cfg.snapshot_chunk_size;
        let Some(r) = self.snap.receiving.as_mut() else {
            return;
        };
        let next = r
            .meta
            .files
            .iter()
            .zip(&r.have)
            .enumerate()
            .find(|(_, (f, have))| **have < f.size)
            .map(|(i, (f, have))| (i as u32, *have, (f.size - have).min(chunk)));
        match next {
            Some((file, offset, len)) => {
                r.outstanding = Some((file, offset, len));
                r.elapsed = 0;
                let (to, index) = (r.leader, r.meta.index);
                self.send(
                    to,
                    self.term,
                    MessageBody::SnapshotChunkRequest {
                        index,
                        file,
                        offset,
                        len,
                    },
                );
            }
            None => {
                r.outstanding = None;
                self.snap.verify_pending = true;
            }
        }
    }

    /// Phase 2 at the leader: serve (or queue) a chunk request.
    pub(crate) fn handle_chunk_request(
        &mut self,
        from: NodeId,
        index: u64,
        file: u32,
        offset: u64,
        len: u64,
    ) {
        if let Some(pr) = self.progress.get_mut(&from) {
            pr.snapshot_idle = 0;
        }
        let req = ChunkRequest {
            to: from,
            index,
            file,
            offset,
            len: len.min(self.cfg.snapshot_chunk_size),
        };
        let limit = self.cfg.snapshot_bytes_per_tick;
        if limit > 0 && self.snap.budget < req.len {
            // A follower has one request out at a time: keep its latest.
            self.snap.queue.retain(|q| q.to != from);
            self.snap.queue.push_back(req);
            return;
        }
        self.serve_chunk(req);
    }

    fn serve_chunk(&mut self, req: ChunkRequest) {
        let current = self.log.storage.snapshot_meta();
        let data = match current {
            Some(m) if m.index == req.index => {
                self.log.checked_chunk(req.file, req.offset, req.len)
            }
            _ => None,
        };
        if data.is_none() && self.log.failure().is_some() {
            return; // unreadable is not gone: the node stops instead
        }
        let body = match data {
            Some(data) => {
                let len = data.len() as u64;
                self.snap.budget = self.snap.budget.saturating_sub(len);
                self.events.push(Event::SnapshotChunkSent {
                    to: req.to,
                    index: req.index,
                    file: req.file,
                    offset: req.offset,
                    len,
                });
                MessageBody::SnapshotChunk {
                    index: req.index,
                    file: req.file,
                    offset: req.offset,
                    crc: checksum(&data),
                    data: data.into(),
                    gone: false,
                }
            }
            None => MessageBody::SnapshotChunk {
                index: req.index,
                file: req.file,
                offset: req.offset,
                data: Bytes::new(),
                crc: 0,
                gone: true,
            },
        };
        self.send(req.to, self.term, body);
    }

    /// Phase 2 at the follower: check a chunk and keep it, or ask again.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn handle_chunk(
        &mut self,
        index: u64,
        file: u32,
        offset: u64,
        data: Bytes,
        crc: u32,
        gone: bool,
    ) {
        let Some(r) = self.snap.receiving.as_mut() else {
            return;
        };
        if r.meta.index != index {
            return;
        }
        if gone {
            let old = self.snap.receiving.take().map(|r| r.meta.index);
            self.snap.ops.push(SnapshotOp::Abort);
            self.events.push(Event::SnapshotDiscarded {
                index: old.unwrap_or(index),
                reason: "the leader no longer has it".into(),
            });
            return;
        }
        let Some((want_file, want_offset, want_len)) = r.outstanding else {
            return;
        };
        if (file, offset) != (want_file, want_offset) {
            return; // a duplicate or a late answer
        }
        let ok = checksum(&data) == crc && data.len() as u64 == want_len;
        self.events.push(Event::SnapshotChunkReceived {
            index,
            file,
            offset,
            len: data.len() as u64,
            ok,
        });
        let r = self.snap.receiving.as_mut().expect("checked above");
        r.outstanding = None;
        if ok {
            r.have[file as usize] += want_len;
            r.crc[file as usize] = checksum_extend(r.crc[file as usize], &data);
            self.snap.ops.push(SnapshotOp::Chunk { file, offset, data });
        }
        self.request_next_chunk();
    }

    /// Checks every file of a fully received snapshot against its meta
    /// (size, and the CRC-32C computed as its chunks arrived), then
    /// installs it, or discards it.
    pub(crate) fn verify_received_snapshot(&mut self) {
        let Some(r) = self.snap.receiving.take() else {
            return;
        };
        let bad = r
            .meta
            .files
            .iter()
            .zip(r.have.iter().zip(&r.crc))
            .find(|(f, (&have, &crc))| have != f.size || crc != f.crc);
        if let Some((f, _)) = bad {
            self.snap.ops.push(SnapshotOp::Abort);
            self.events.push(Event::SnapshotDiscarded {
                index: r.meta.index,
                reason: format!("file {} does not match its checksum", f.name),
            });
            return;
        }
        if r.meta.index <= self.log.committed {
            // Overtaken while it arrived: the log got there first.
            self.snap.ops.push(SnapshotOp::Abort);
            return;
        }
        if self.log.match_term(r.meta.index, r.meta.term) {
            // Meanwhile our log reached the snapshot's last entry (a new
            // leader replicated to us). Installing would drop entries after
            // it that we may have acknowledged: keep the log instead.
            self.log.commit_to(r.meta.index);
            self.snap.ops.push(SnapshotOp::Abort);
            return;
        }
        self.install_snapshot(r.meta, r.leader);
    }

    fn install_snapshot(&mut self, meta: SnapshotMeta, leader: NodeId) {
        let index = meta.index;
        self.log.restore(meta.index, meta.term);
        let m = Membership {
            voters: meta.conf.voters.clone(),
            outgoing: meta.conf.outgoing.clone(),
            learners: meta.conf.learners.clone(),
        };
        self.conf_base = (meta.index, m.clone());
        self.conf_log.clear();
        self.set_membership(m);
        self.snap.ops.push(SnapshotOp::Install(meta));
        self.events.push(Event::SnapshotInstalled { index });
        if self.role == Role::Follower {
            self.send(
                leader,
                self.term,
                MessageBody::AppendResponse {
                    success: true,
                    index,
                    hint_index: 0,
                    hint_term: 0,
                    lease_tick: 0,
                },
            );
        }
    }

    /// Leader: refill the send budget, serve what waited, give up on
    /// followers that stopped pulling. Follower: ask again for a chunk
    /// that did not come.
    pub(crate) fn tick_snapshot(&mut self) {
        if self.role == Role::Leader {
            let per_tick = self.cfg.snapshot_bytes_per_tick;
            if per_tick > 0 {
                self.snap.budget = per_tick;
                while let Some(req) = self.snap.queue.front().copied() {
                    if self.snap.budget < req.len {
                        break;
                    }
                    self.snap.queue.pop_front();
                    self.serve_chunk(req);
                }
            }
            let limit = self.cfg.election_tick;
            for pr in self.progress.values_mut() {
                if let ProgressState::Snapshot { .. } = pr.state {
                    pr.snapshot_idle += 1;
                    if pr.snapshot_idle >= limit {
                        // Silent for an election timeout: free the slot; the
                        // next probe offers the snapshot again.
                        pr.become_probe();
                    }
                }
            }
            return;
        }
        let timeout = self.cfg.snapshot_request_timeout;
        let Some(r) = self.snap.receiving.as_mut() else {
            return;
        };
        if r.meta.index <= self.log.committed && !self.snap.verify_pending {
            // The log overtook the snapshot while it arrived (a later
            // leader replicated the entries instead): it is useless, and
            // its source (perhaps a deposed leader that no longer serves
            // chunks) would be asked again forever.
            let index = r.meta.index;
            self.snap.receiving = None;
            self.snap.ops.push(SnapshotOp::Abort);
            self.events.push(Event::SnapshotDiscarded {
                index,
                reason: "the log overtook it".into(),
            });
            return;
        }
        if r.outstanding.is_some() {
            r.elapsed += 1;
            if r.elapsed >= timeout {
                r.outstanding = None;
                self.request_next_chunk();
            }
        }
    }

    /// Leader: a follower installing a snapshot answered a heartbeat; offer
    /// the snapshot again (it resumes, or learns of a newer one).
    pub(crate) fn reoffer_snapshot(&mut self, to: NodeId) {
        let Some(meta) = self.log.storage.snapshot_meta() else {
            return;
        };
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.state = ProgressState::Snapshot { index: meta.index };
        }
        self.send(to, self.term, MessageBody::InstallSnapshot { meta });
    }
}

/// The `ConfState` of membership `m` as of `index`.
pub(crate) fn conf_state(index: u64, m: &Membership) -> ConfState {
    ConfState {
        index,
        voters: m.voters.clone(),
        outgoing: m.outgoing.clone(),
        learners: m.learners.clone(),
    }
}
