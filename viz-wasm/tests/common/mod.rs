//! Helpers shared by the model's integration tests.

use raft_core::sim::{run, FaultSet, SimConfig};

/// The trace of a simulator run with every fault kind, as `cdsctl raft sim
/// --trace` writes it; panics if the run found a violation.
pub fn sim_trace(nodes: usize, seed: u64, steps: u64, reconfig: bool, compact: bool) -> String {
    let mut cfg = SimConfig::new(nodes, seed, steps, FaultSet::all());
    cfg.reconfig = reconfig;
    cfg.compact = compact;
    trace_of(cfg)
}

/// [`sim_trace`] of a run with quiescent groups (`--quiesce`).
#[allow(dead_code)] // not every test binary uses it
pub fn sim_trace_quiesce(nodes: usize, seed: u64, steps: u64) -> String {
    let mut cfg = SimConfig::new(nodes, seed, steps, FaultSet::all());
    cfg.quiesce = true;
    trace_of(cfg)
}

fn trace_of(mut cfg: SimConfig) -> String {
    cfg.trace = true;
    let seed = cfg.seed;
    let out = run(&cfg);
    assert!(out.failure.is_none(), "seed {seed}: {:?}", out.failure);
    String::from_utf8(out.trace.expect("asked for a trace")).expect("utf-8")
}
