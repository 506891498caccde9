//! The Master's state machine: [`MasterCommand`]s from its Raft log
//! applied to a [`MasterState`] shared with the Master's API.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use raft_core::runtime::state_machine::{Applied, SnapshotJob, SnapshotWriter, StateMachine};

use super::state::{MasterCommand, MasterError, MasterReply, MasterState};

/// The one file of a Master snapshot.
pub const SNAPSHOT_FILE: &str = "master.json";

/// The state shared by the state machine (which writes it) and the API
/// (which reads it after a read point).
pub type SharedState = Arc<RwLock<MasterState>>;

/// Encodes a command as a Raft entry.
pub fn encode(cmd: &MasterCommand) -> Vec<u8> {
    // Serializing a plain enum of strings and integers cannot fail.
    serde_json::to_vec(cmd).unwrap_or_default()
}

/// Decodes a command's result.
pub fn decode_reply(bytes: &[u8]) -> Result<MasterReply, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("a Master reply that does not parse: {e}"))
}

/// Applies the Master's log.
pub struct MasterSm {
    state: SharedState,
}

impl MasterSm {
    pub fn new(state: SharedState) -> MasterSm {
        MasterSm { state }
    }
}

impl StateMachine for MasterSm {
    fn on_apply(&mut self, entries: &mut dyn Iterator<Item = Applied>) {
        let mut st = self.state.write().unwrap_or_else(PoisonError::into_inner);
        for mut a in entries {
            let reply = match serde_json::from_slice::<MasterCommand>(&a.data) {
                Ok(cmd) => st.apply(&cmd),
                // Every replica refuses the same bytes the same way.
                Err(e) => MasterReply::Error {
                    error: MasterError::BadVolume {
                        why: format!("a command that does not parse: {e}"),
                    },
                },
            };
            if a.has_waiter() {
                a.respond(serde_json::to_vec(&reply).unwrap_or_default());
            }
        }
    }

    fn on_snapshot_save(
        &mut self,
        writer: &mut SnapshotWriter,
    ) -> Result<Option<SnapshotJob>, String> {
        // The state is metadata (kilobytes to a few megabytes): copied
        // here, written by the job.
        let copy = self
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut f = writer.create(SNAPSHOT_FILE).map_err(|e| e.to_string())?;
        Ok(Some(Box::new(move || {
            let bytes = serde_json::to_vec(&copy).map_err(|e| e.to_string())?;
            f.write_all(&bytes)
                .map_err(|e| format!("writing the Master snapshot: {e}"))
        })))
    }

    fn on_snapshot_load(&mut self, dir: &Path, files: &[String]) -> Result<(), String> {
        let [name] = files else {
            return Err(format!("a Master snapshot is one file, not {files:?}"));
        };
        if name != SNAPSHOT_FILE {
            return Err(format!("unexpected snapshot file {name:?}"));
        }
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let loaded: MasterState =
            serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = loaded;
        Ok(())
    }
}
