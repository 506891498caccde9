//! The BlockGroup's state machine: Raft entries applied to the engine.

use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use raft_core::runtime::state_machine::{
    Applied as Entry, SnapshotJob, SnapshotWriter, StateMachine,
};
use raft_core::storage::fs::Fs;

use super::command::{decode, encode_result, Applied};
use crate::engine::{Engine, EngineError, EXPORT_MAGIC};

/// Slices the garbage collector looks at after each applied batch: small,
/// so reclaiming never holds up the next batch for long.
pub const GC_SLICES_PER_BATCH: usize = 256;
/// Applied entries after which the engine is flushed even without a
/// snapshot, bounding what a restart replays.
pub const FLUSH_EVERY_ENTRIES: u64 = 4096;
/// The name of the one file of a BlockGroup snapshot.
pub const SNAPSHOT_FILE: &str = "engine";

/// The engine of one replica, shared by its state machine (which applies)
/// and its server (which reads).
pub type SharedEngine = Arc<Mutex<Engine>>;

/// Locks a shared engine (a panic while it was held does not make its
/// files wrong: the next storage call finds out if they are).
pub fn lock(e: &SharedEngine) -> MutexGuard<'_, Engine> {
    e.lock().unwrap_or_else(|p| p.into_inner())
}

/// Applies a group's entries to its engine; see the module docs of
/// [`crate::engine`] for what the engine guarantees and
/// [`super::command`] for the entries.
pub struct BlockGroupSm {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    engine: SharedEngine,
    failed: Option<String>,
}

impl BlockGroupSm {
    /// The state machine over the engine in `dir` (opened by the caller,
    /// who keeps `engine` to serve reads).
    pub fn new(fs: Arc<dyn Fs>, dir: &Path, engine: SharedEngine) -> BlockGroupSm {
        BlockGroupSm {
            fs,
            dir: dir.to_path_buf(),
            engine,
            failed: None,
        }
    }

    fn fail(&mut self, e: &EngineError) -> String {
        let why = e.to_string();
        self.failed.get_or_insert_with(|| why.clone());
        why
    }
}

/// Applies the entry at `index` (its payload `data`) to `e`: what every
/// replica does with each committed entry, here and in the simulator.
/// The outer error is the engine's own failure (the replica must stop).
pub fn apply_entry(
    e: &mut Engine,
    index: u64,
    data: &bytes::Bytes,
) -> Result<Applied, EngineError> {
    Ok(match decode(data) {
        Err(why) => {
            e.skip_to(index);
            Applied::Malformed(why)
        }
        Ok(cmd) => match e.apply(index, &cmd)? {
            Ok(o) => Applied::Done(o),
            Err(r) => Applied::Refused(r),
        },
    })
}

/// The engine's work after a batch of applied entries: a little garbage
/// collection, and a flush once `flush_every` entries are not durable.
pub fn after_batch(e: &mut Engine, flush_every: u64) -> Result<(), EngineError> {
    e.gc_step(GC_SLICES_PER_BATCH)?;
    if e.applied_index() >= e.durable_index() + flush_every {
        e.flush()?;
    }
    Ok(())
}

impl StateMachine for BlockGroupSm {
    fn on_apply(&mut self, entries: &mut dyn Iterator<Item = Entry>) {
        if self.failed.is_some() {
            return;
        }
        let engine = self.engine.clone();
        let mut e = lock(&engine);
        for mut a in entries {
            let result = match apply_entry(&mut e, a.index, &a.data) {
                Ok(r) => r,
                Err(err) => {
                    let why = self.fail(&err);
                    a.respond(encode_result(&Applied::Failed(why)));
                    // Take no more: the runtime fails the rest.
                    return;
                }
            };
            if a.has_waiter() {
                a.respond(encode_result(&result));
            }
        }
        if let Err(err) = after_batch(&mut e, FLUSH_EVERY_ENTRIES) {
            self.fail(&err);
        }
    }

    fn failure(&mut self) -> Option<String> {
        self.failed.clone()
    }

    fn on_snapshot_save(
        &mut self,
        writer: &mut SnapshotWriter,
    ) -> Result<Option<SnapshotJob>, String> {
        let engine = self.engine.clone();
        let export = {
            let mut e = lock(&engine);
            // Entries that are not commands (no-ops, membership) count too.
            e.skip_to(writer.index());
            e.begin_export().map_err(|err| err.to_string())?
        };
        let file = match writer.create(SNAPSHOT_FILE) {
            Ok(f) => f,
            Err(err) => {
                lock(&engine).end_export();
                return Err(err.to_string());
            }
        };
        // The stream is written beside the applying: the export pins what
        // it reads (see `engine::export`).
        Ok(Some(Box::new(move || {
            let mut out = BufWriter::with_capacity(1 << 20, file);
            let r = export.write_to(&mut out);
            lock(&engine).end_export();
            r.map_err(|e| e.to_string())
        })))
    }

    fn on_snapshot_load(&mut self, dir: &Path, files: &[String]) -> Result<(), String> {
        let [name] = files else {
            return Err(format!("a BlockGroup snapshot is one file, not {files:?}"));
        };
        if name != SNAPSHOT_FILE {
            return Err(format!("unexpected snapshot file {name:?}"));
        }
        let path = dir.join(name);
        let mut f = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let index = export_index(&mut f).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut e = lock(&self.engine);
        // At a restart the engine is usually ahead of the stored snapshot
        // (it was flushed when the snapshot was taken, and since): the log
        // replays from there, and what the engine holds is skipped.
        if e.durable_index() >= index {
            return Ok(());
        }
        let mut f = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut input = std::io::BufReader::with_capacity(1 << 20, &mut f);
        *e = Engine::import(self.fs.clone(), &self.dir, &mut input).map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// The Raft index an export stream describes, from its header.
fn export_index(input: &mut dyn Read) -> Result<u64, String> {
    let mut h = [0u8; 32];
    input
        .read_exact(&mut h)
        .map_err(|e| format!("reading the export header: {e}"))?;
    if &h[..8] != EXPORT_MAGIC {
        return Err("not an engine export".into());
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[24..32]);
    Ok(u64::from_le_bytes(b))
}
