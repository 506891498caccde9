//! The live mode: the real Raft core running in the page, driven by the
//! user (RaftScope-style).
//!
//! [`Live`] wraps raft-core's [`LiveCluster`] (the simulator with no random
//! faults or clients, see `raft_core::sim::live`) and keeps a [`Replay`] of
//! its trace up to date, so the page draws a live session from the same
//! model, and the same JSON, as a loaded trace. The trace grows by
//! [`Replay::push`]: each call takes in only the events written since the
//! last one.

use raft_core::sim::live::LiveCluster;
use raft_core::trace::{Header, Record};
use wasm_bindgen::prelude::*;

use crate::model::{ClusterState, Replay, CHECKPOINT_EVERY};

/// A live session: a simulated cluster and the replay of its trace.
#[wasm_bindgen]
pub struct Live {
    cluster: LiveCluster,
    replay: Replay,
    /// Bytes of the trace already pushed into `replay`.
    fed: usize,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("cluster", &self.cluster)
            .field("events", &self.replay.len())
            .finish()
    }
}

fn js(e: String) -> JsError {
    JsError::new(&e)
}

#[wasm_bindgen]
impl Live {
    /// A session of `nodes` voters (3 to 7) from `seed` (a JS number:
    /// integers up to 2^53 are taken exactly, anything else is refused).
    #[wasm_bindgen(constructor)]
    pub fn new_js(nodes: usize, seed: f64) -> Result<Live, JsError> {
        if !(seed.is_finite() && seed >= 0.0 && seed.fract() == 0.0 && seed <= 9e15) {
            return Err(JsError::new(&format!(
                "the seed must be a whole number from 0 to 9e15, not {seed}"
            )));
        }
        Live::new(nodes, seed as u64).map_err(js)
    }

    /// The seed (exact below 2^53).
    pub fn seed(&self) -> f64 {
        self.cluster.seed() as f64
    }

    /// Simulated milliseconds since the start.
    pub fn now(&self) -> f64 {
        self.cluster.now() as f64
    }

    /// Runs simulated time forward by `ms` (fractions are dropped by the
    /// caller's accumulator; negative or non-finite values do nothing).
    pub fn advance(&mut self, ms: f64) -> Result<(), JsError> {
        let ms = if ms.is_finite() && ms > 0.0 {
            ms as u64
        } else {
            0
        };
        self.cluster.advance(ms).map_err(js)
    }

    /// Stops (crashes) node `id`.
    pub fn stop(&mut self, id: u32) -> Result<(), JsError> {
        self.cluster.stop(id.into()).map_err(js)
    }

    /// Restarts stopped node `id` from its disk.
    pub fn restart(&mut self, id: u32) -> Result<(), JsError> {
        self.cluster.restart(id.into()).map_err(js)
    }

    /// Fires node `id`'s election timer now.
    pub fn timeout(&mut self, id: u32) -> Result<(), JsError> {
        self.cluster.timeout(id.into()).map_err(js)
    }

    /// Loses in-flight message `msg_id` (the `id` of a `msgs` entry).
    pub fn drop_message(&mut self, msg_id: f64) -> Result<(), JsError> {
        self.cluster.drop_message(msg_id as u64).map_err(js)
    }

    /// Cuts node `id` off from all others.
    pub fn partition(&mut self, id: u32) -> Result<(), JsError> {
        self.cluster.partition(id.into()).map_err(js)
    }

    /// Restores every link.
    pub fn heal(&mut self) -> Result<(), JsError> {
        self.cluster.heal().map_err(js)
    }

    /// A client put to node `to`, or to the leader when `to` is 0.
    /// Returns the client's id.
    pub fn client_request(&mut self, to: u32) -> Result<u32, JsError> {
        let to = (to != 0).then_some(u64::from(to));
        self.cluster
            .client_request(to)
            .map(|c| c as u32)
            .map_err(js)
    }

    /// Adds the lowest id not yet a voter; returns it.
    pub fn add_node(&mut self) -> Result<u32, JsError> {
        self.cluster.add_node().map(|id| id as u32).map_err(js)
    }

    /// Removes voter `id`.
    pub fn remove_node(&mut self, id: u32) -> Result<(), JsError> {
        self.cluster.remove_node(id.into()).map_err(js)
    }

    /// Node `id` snapshots and compacts its log; returns the index.
    pub fn snapshot(&mut self, id: u32) -> Result<f64, JsError> {
        self.cluster
            .snapshot(id.into())
            .map(|i| i as f64)
            .map_err(js)
    }

    /// The whole trace so far (for "download trace").
    pub fn trace_text(&self) -> String {
        self.cluster.trace_text()
    }

    /// Events so far.
    pub fn len(&mut self) -> usize {
        self.sync();
        self.replay.len()
    }

    /// Whether nothing happened yet.
    pub fn is_empty(&mut self) -> bool {
        self.len() == 0
    }

    /// The header, as JSON.
    pub fn header_json(&self) -> String {
        serde_json::to_string(self.replay.header()).unwrap_or_default()
    }

    /// The state after the last event, as JSON (the replay model's).
    pub fn state_json(&mut self) -> String {
        serde_json::to_string(&self.state()).unwrap_or_default()
    }

    /// Messages in flight and when each arrives, as JSON: `{"id": due}`
    /// (for drawing them along their link).
    pub fn in_flight_json(&self) -> String {
        let mut out = String::from("{");
        for (k, (id, _, _, due)) in self.cluster.in_flight().into_iter().enumerate() {
            if k > 0 {
                out.push(',');
            }
            out.push_str(&format!("\"{id}\":{due}"));
        }
        out.push('}');
        out
    }

    /// The invariant violation that stopped the session, or "".
    pub fn failure(&self) -> String {
        self.cluster
            .failure()
            .map(|f| f.to_string())
            .unwrap_or_default()
    }
}

impl Live {
    /// A session of `nodes` voters from `seed`.
    pub fn new(nodes: usize, seed: u64) -> Result<Live, String> {
        let cluster = LiveCluster::new(nodes, seed)?;
        let bytes = cluster.trace_bytes();
        let end = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("the trace has no header line")?;
        let header: Header = serde_json::from_slice(&bytes[..end])
            .map_err(|e| format!("the live trace's header: {e}"))?;
        let mut live = Live {
            cluster,
            replay: Replay::new(header, Vec::new(), CHECKPOINT_EVERY),
            fed: end + 1,
        };
        live.sync();
        Ok(live)
    }

    /// The simulated cluster.
    pub fn cluster(&self) -> &LiveCluster {
        &self.cluster
    }

    /// The simulated cluster, to act on it directly.
    pub fn cluster_mut(&mut self) -> &mut LiveCluster {
        &mut self.cluster
    }

    /// The replay of the trace so far.
    pub fn replay(&mut self) -> &Replay {
        self.sync();
        &self.replay
    }

    /// The state after the last event.
    pub fn state(&mut self) -> ClusterState {
        self.sync();
        self.replay.last_state()
    }

    /// Pushes the events written since the last call into the replay.
    fn sync(&mut self) {
        let bytes = self.cluster.trace_bytes();
        while let Some(n) = bytes[self.fed..].iter().position(|&b| b == b'\n') {
            let line = &bytes[self.fed..self.fed + n];
            self.fed += n + 1;
            // The simulator wrote it, so it parses; a line that did not
            // would be a bug in the writer, skipped rather than fatal.
            if let Ok(r) = serde_json::from_slice::<Record>(line) {
                self.replay.push(r);
            }
        }
    }
}
