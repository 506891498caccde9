//! The visualizer's Rust side: the replay model (plain Rust, tested
//! natively) and the API the page calls through wasm-bindgen.
//!
//! The page holds one [`Viewer`] per loaded trace and asks it for the state
//! after event N as JSON; everything it draws comes from there, so what the
//! page shows is exactly what the model (and its native tests) say.

pub mod live;
pub mod model;

use wasm_bindgen::prelude::*;

use model::{Moment, Replay};

/// A loaded trace, ready to be seeked.
#[wasm_bindgen]
pub struct Viewer {
    replay: Replay,
    /// Each event's `t`, for mapping playback time to events.
    times: Vec<u64>,
}

#[wasm_bindgen]
impl Viewer {
    /// Parses and validates `text` (an rtrace file). Fails with a message
    /// naming the first bad line and why.
    #[wasm_bindgen(constructor)]
    pub fn new(text: &str) -> Result<Viewer, JsError> {
        let replay = Replay::parse(text).map_err(|e| JsError::new(&e.to_string()))?;
        Ok(Viewer::from_replay(replay))
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.replay.len()
    }

    /// Whether the trace has no events.
    pub fn is_empty(&self) -> bool {
        self.replay.is_empty()
    }

    /// The header, as JSON.
    pub fn header_json(&self) -> String {
        serde_json::to_string(self.replay.header()).unwrap_or_default()
    }

    /// The state after the first `n` events (clamped), as JSON.
    pub fn state_json(&self, n: usize) -> String {
        serde_json::to_string(&self.replay.state_at(n)).unwrap_or_default()
    }

    /// Event `i` (0-based) as its JSON line, or an empty string.
    pub fn record_json(&self, i: usize) -> String {
        self.replay
            .record(i)
            .and_then(|r| serde_json::to_string(r).ok())
            .unwrap_or_default()
    }

    /// The index of the next event at or after `from` that starts a moment
    /// named `what` (`election`, `config`, `snapshot`, `fault`), or -1.
    ///
    /// An `f64` on purpose: a 64-bit integer reaches JavaScript as a
    /// BigInt, which cannot be mixed with the page's numbers (`i + 1`
    /// throws). Event indexes are far below 2^53, so the value is exact.
    pub fn find_next(&self, from: usize, what: &str) -> f64 {
        moment(what)
            .and_then(|m| self.replay.find_next(from, m))
            .map_or(-1.0, |i| i as f64)
    }

    /// Like [`Viewer::find_next`], before `from`.
    pub fn find_prev(&self, from: usize, what: &str) -> f64 {
        moment(what)
            .and_then(|m| self.replay.find_prev(from, m))
            .map_or(-1.0, |i| i as f64)
    }

    /// How many events have `t <= time`, at least `from` (playback moves
    /// forward from where it stands).
    pub fn index_after_time(&self, from: usize, time: f64) -> usize {
        let upto = self.times.partition_point(|&t| (t as f64) <= time);
        upto.max(from.min(self.times.len()))
    }
}

impl Viewer {
    /// A viewer over an already parsed trace.
    pub fn from_replay(replay: Replay) -> Viewer {
        let times = replay.records().iter().map(|r| r.t).collect();
        Viewer { replay, times }
    }
}

/// The page's names for moments (`config` is short for `config_change`).
fn moment(what: &str) -> Option<Moment> {
    match what {
        "config" => Some(Moment::ConfigChange),
        other => Moment::from_name(other),
    }
}
