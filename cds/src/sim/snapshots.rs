//! The simulated volume's snapshots: the Master's record of its versions,
//! the snapshot task under way (whose steps the clients carry to every
//! group, as SnapshotWorkers would), and the checks that make a snapshot
//! a crash-consistent cut.
//!
//! What is checked, at the end of a seed:
//!
//! - a snapshot's content never changes: every read of a sector at a
//!   snapshot's version returns the same value;
//! - each of those values is linearizable as a read taken somewhere
//!   between the moment the Master took the snapshot and the moment every
//!   group had (added to the per-sector histories);
//! - the cut is crash-consistent across sectors for each writer: when a
//!   write that is in the snapshot began after the same client's earlier
//!   write had been acknowledged, that earlier write (or a newer one of
//!   its sector) is in the snapshot too. (The simulated clients are
//!   concurrent writers with their own epochs, looser than the one fenced
//!   writer a volume has, and do not tell each other the versions they
//!   learn; across clients only the per-sector checks apply. A rollback
//!   between the two writes may undo the first: such pairs are skipped.)
//! - a rollback writes every sector with the snapshot's value somewhere
//!   between its start and the moment every group took it (added to the
//!   histories, so reads after it must see the snapshot or later writes);
//! - deleted snapshots and abandoned heads are reclaimed (`world.rs`);
//! - a clone (one per seed) starts as its snapshot's content: every
//!   sector of it is a register whose first value is the snapshot's,
//!   written by the clone alone from then on (the per-sector histories
//!   check that the clone's writes never reach the source, and the
//!   source's never reach the clone).

use std::collections::{BTreeMap, BTreeSet};

use raft_core::sim::linearizability::{Op, OpKind};

use super::sectors;
use super::world::Body;

/// Snapshots kept at once (more are not started).
const MAX_LIVE_SNAPSHOTS: usize = 6;
/// Rollbacks per seed (each adds a write per sector to the histories).
const MAX_ROLLBACKS: usize = 3;

/// One snapshot.
#[derive(Debug, Default)]
struct Snap {
    version: u64,
    /// The Master took it.
    t0: u64,
    /// Every group had (`None`: its task is under way).
    t1: Option<u64>,
    deleting: bool,
    deleted: bool,
    /// A rollback went to it: kept to the end (its values are needed).
    target: bool,
    /// Each sector's value as read at the snapshot.
    values: BTreeMap<u64, u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Snapshot,
    Rollback,
    Delete,
    Clone,
}

/// The task under way: one step per group.
#[derive(Debug)]
pub(super) struct Task {
    kind: Kind,
    snap: usize,
    t0: u64,
    head: u64,
    base: u64,
    todo: BTreeSet<usize>,
    inflight: BTreeSet<usize>,
}

/// The Master's record of the volume's versions.
#[derive(Debug)]
pub(super) struct VolumeRecord {
    pub(super) head: u64,
    pub(super) base: u64,
    next: u64,
    snaps: Vec<Snap>,
    pub(super) task: Option<Task>,
    /// (snapshot, start, end) of each rollback.
    rollbacks: Vec<(usize, u64, u64)>,
    /// The clone: its snapshot, and when every group had it.
    clone: Option<(usize, Option<u64>)>,
}

impl Default for VolumeRecord {
    fn default() -> VolumeRecord {
        VolumeRecord {
            head: 1,
            base: 0,
            next: 2,
            snaps: Vec::new(),
            task: None,
            rollbacks: Vec::new(),
            clone: None,
        }
    }
}

impl VolumeRecord {
    /// Starts a task if none is under way: a snapshot, a rollback to a
    /// ready snapshot, or the deletion of one (`roll` 0..10 picks the
    /// kind, `pick` the snapshot). Returns whether one started.
    pub(super) fn start_task(&mut self, roll: u64, pick: usize, now: u64, groups: usize) -> bool {
        if self.task.is_some() {
            return false;
        }
        let ready: Vec<usize> = (0..self.snaps.len())
            .filter(|&i| {
                let s = &self.snaps[i];
                s.t1.is_some() && !s.deleting && !s.deleted
            })
            .collect();
        let live = self.snaps.iter().filter(|s| !s.deleted).count();
        let (kind, snap) = match roll {
            0..=5 if live < MAX_LIVE_SNAPSHOTS => (Kind::Snapshot, self.snaps.len()),
            6..=7 if !ready.is_empty() && self.rollbacks.len() < MAX_ROLLBACKS => {
                (Kind::Rollback, ready[pick % ready.len()])
            }
            8 if !ready.is_empty() && self.clone.is_none() => {
                (Kind::Clone, ready[pick % ready.len()])
            }
            _ => {
                let deletable: Vec<usize> = ready
                    .iter()
                    .copied()
                    .filter(|&i| !self.snaps[i].target)
                    .collect();
                if deletable.is_empty() {
                    return false;
                }
                (Kind::Delete, deletable[pick % deletable.len()])
            }
        };
        let (head, base) = match kind {
            Kind::Snapshot => {
                self.snaps.push(Snap {
                    version: self.head,
                    t0: now,
                    ..Snap::default()
                });
                (self.next, self.head)
            }
            Kind::Rollback => {
                self.snaps[snap].target = true;
                (self.next, self.snaps[snap].version)
            }
            Kind::Delete => {
                self.snaps[snap].deleting = true;
                (self.head, self.base)
            }
            Kind::Clone => {
                // Its source stays (a snapshot with a clone cannot be
                // removed) and its values are needed to the end.
                self.snaps[snap].target = true;
                self.clone = Some((snap, None));
                (self.head, self.base)
            }
        };
        if matches!(kind, Kind::Snapshot | Kind::Rollback) {
            self.next += 1;
            (self.head, self.base) = (head, base);
        }
        self.task = Some(Task {
            kind,
            snap,
            t0: now,
            head,
            base,
            todo: (0..groups).collect(),
            inflight: BTreeSet::new(),
        });
        true
    }

    /// The next group step of the task no one is carrying yet.
    pub(super) fn next_step(&mut self, _groups: usize) -> Option<Body> {
        let t = self.task.as_mut()?;
        let group = *t.todo.iter().find(|g| !t.inflight.contains(g))?;
        t.inflight.insert(group);
        Some(match t.kind {
            Kind::Snapshot | Kind::Rollback => Body::Advance {
                group,
                head: t.head,
                base: t.base,
            },
            Kind::Delete => Body::Drop {
                group,
                version: self.snaps[t.snap].version,
            },
            Kind::Clone => Body::Clone {
                group,
                version: self.snaps[t.snap].version,
            },
        })
    }

    /// Group `group` took the task's step; the task ends with the last.
    pub(super) fn step_done(&mut self, group: usize, now: u64) {
        let Some(t) = self.task.as_mut() else {
            return;
        };
        t.inflight.remove(&group);
        t.todo.remove(&group);
        if !t.todo.is_empty() {
            return;
        }
        let (kind, snap, t0) = (t.kind, t.snap, t.t0);
        self.task = None;
        match kind {
            Kind::Snapshot => self.snaps[snap].t1 = Some(now),
            Kind::Rollback => self.rollbacks.push((snap, t0, now)),
            Kind::Delete => self.snaps[snap].deleted = true,
            Kind::Clone => self.clone = Some((snap, Some(now))),
        }
    }

    /// Snapshots made (on every group), rollbacks done and clones made.
    pub(super) fn finished(&self) -> (u64, u64, u64) {
        (
            self.snaps.iter().filter(|s| s.t1.is_some()).count() as u64,
            self.rollbacks.len() as u64,
            u64::from(self.clone_ready()),
        )
    }

    /// Whether the clone is made on every group (and can be used).
    pub(super) fn clone_ready(&self) -> bool {
        matches!(self.clone, Some((_, Some(_))))
    }

    /// Per sector of the clone, a write of its snapshot's value, done by
    /// the time every group had the clone.
    pub(super) fn clone_writes(&self, blocks: u64) -> Vec<Op> {
        let Some((snap, Some(done))) = self.clone else {
            return Vec::new();
        };
        self.snaps[snap]
            .values
            .iter()
            .map(|(&key, &value)| {
                let (block, sector) = sectors::split_key(key);
                Op {
                    client: 0,
                    invoke: 0,
                    complete: Some(done),
                    kind: OpKind::Put {
                        key: sectors::key(blocks + block, sector),
                        value,
                    },
                }
            })
            .collect()
    }

    /// A ready snapshot's version to read (`pick` chooses), if any.
    pub(super) fn readable_snapshot(&self, pick: usize) -> Option<u64> {
        let ready: Vec<u64> = self
            .snaps
            .iter()
            .filter(|s| s.t1.is_some() && !s.deleting && !s.deleted)
            .map(|s| s.version)
            .collect();
        (!ready.is_empty()).then(|| ready[pick % ready.len()])
    }

    /// Whether the snapshot at `version` is being (or was) deleted.
    pub(super) fn deleting(&self, version: u64) -> bool {
        self.snaps
            .iter()
            .any(|s| s.version == version && (s.deleting || s.deleted))
    }

    /// The cut of the snapshot at `version`: (taken, every group had).
    pub(super) fn cut_of(&self, version: u64) -> Option<(u64, u64)> {
        self.snaps
            .iter()
            .find(|s| s.version == version)
            .and_then(|s| s.t1.map(|t1| (s.t0, t1)))
    }

    /// Records a sector's value read at a snapshot: it must never change.
    pub(super) fn saw(&mut self, version: u64, key: u64, value: u64) -> Result<(), String> {
        let Some(s) = self.snaps.iter_mut().find(|s| s.version == version) else {
            return Err(format!("a read of unknown snapshot version {version}"));
        };
        match s.values.insert(key, value) {
            Some(old) if old != value => {
                let (block, sector) = sectors::split_key(key);
                Err(format!(
                    "snapshot version {version} changed: block {block} sector {sector} read \
                     {old} before, {value} now"
                ))
            }
            _ => Ok(()),
        }
    }

    /// The final pass: every block at the head and at every snapshot still
    /// kept, in the order they are popped.
    pub(super) fn final_reads(&self, blocks: u64) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = (0..blocks).map(|b| (b, 0)).collect();
        if self.clone_ready() {
            out.extend((blocks..2 * blocks).map(|b| (b, 0)));
        }
        for s in self.snaps.iter().filter(|s| s.t1.is_some() && !s.deleted) {
            out.extend((0..blocks).map(|b| (b, s.version)));
        }
        out.reverse();
        out
    }

    /// Versions that must have left every tree: deleted snapshots'.
    pub(super) fn deleted_versions(&self) -> Vec<u64> {
        self.snaps
            .iter()
            .filter(|s| s.deleted)
            .map(|s| s.version)
            .collect()
    }

    /// Per sector, a write of the snapshot's value for every rollback.
    pub(super) fn rollback_writes(&self) -> Vec<Op> {
        let mut out = Vec::new();
        for &(snap, r0, r1) in &self.rollbacks {
            for (&key, &value) in &self.snaps[snap].values {
                out.push(Op {
                    client: 0,
                    invoke: r0,
                    complete: Some(r1),
                    kind: OpKind::Put { key, value },
                });
            }
        }
        out
    }

    /// The cross-sector check of every snapshot read (see the module
    /// docs). Values are unique per write except 0 (zeros and the
    /// initial state), whose sectors are left out.
    pub(super) fn check_cuts(&self, ops: &[Op]) -> Result<(), String> {
        // Each non-zero value's write: (client, invoke, complete).
        let mut writes: BTreeMap<u64, (u64, u64, Option<u64>)> = BTreeMap::new();
        let mut acked: Vec<(u64, u64, u64, u64, u64)> = Vec::new();
        for op in ops {
            if let OpKind::Put { key, value } = op.kind {
                if value != 0 {
                    writes.insert(value, (op.client, op.invoke, op.complete));
                    if let Some(c) = op.complete {
                        acked.push((op.client, key, value, op.invoke, c));
                    }
                }
            }
        }
        for s in self.snaps.iter().filter(|s| s.t1.is_some()) {
            for (&kb, &vb) in &s.values {
                let Some(&(client, t2, w2_done)) = writes.get(&vb).filter(|_| vb != 0) else {
                    continue;
                };
                // Every write of the same client acknowledged before this
                // one began...
                for &(c1, ka, va1, w1_invoke, w1_done) in &acked {
                    if c1 != client || ka == kb || w1_done >= t2 {
                        continue;
                    }
                    // A rollback that may take effect between the two (after
                    // the first began, before the second was done) may undo
                    // the first: a write in flight when a group takes the
                    // rollback may apply before it and be acknowledged after.
                    let w2_done = w2_done.unwrap_or(u64::MAX);
                    if self
                        .rollbacks
                        .iter()
                        .any(|&(_, r0, r1)| r1 >= w1_invoke && r0 <= w2_done)
                    {
                        continue;
                    }
                    let Some(&va) = s.values.get(&ka) else {
                        continue;
                    };
                    if va == 0 || va == va1 {
                        continue;
                    }
                    // ...is in the snapshot, or a newer write of its sector.
                    let Some(&(_, _, Some(wa_done))) = writes.get(&va) else {
                        continue;
                    };
                    if wa_done < w1_invoke {
                        let (bb, sb) = sectors::split_key(kb);
                        let (ba, sa) = sectors::split_key(ka);
                        return Err(format!(
                            "snapshot version {} is not a crash-consistent cut: it holds the \
                             write of {vb} to block {bb} sector {sb}, begun at {t2} ms, but not \
                             the write of {va1} to block {ba} sector {sa}, acknowledged at \
                             {w1_done} ms (it holds {va}, older)",
                            s.version
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}
