//! Runs many seeds of one configuration, spread over threads.
//!
//! Each seed's run is independent and deterministic, so the thread count
//! changes only how fast a sweep finishes, never its results.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::cluster::{run, Failure, SimConfig, Stats};

/// What a sweep found.
#[derive(Debug, Default)]
pub struct SweepReport {
    pub passed: u64,
    /// Failing seeds with their failure, in seed order.
    pub failed: Vec<(u64, Failure)>,
    /// Steps simulated over all seeds.
    pub steps: u64,
    /// Simulated milliseconds over all seeds.
    pub sim_time: u64,
    /// Counters summed over all seeds.
    pub stats: Stats,
}

/// Runs `base` once for every seed in `seeds` on `threads` threads.
/// `progress` is called after each seed (from any thread).
pub fn sweep(
    base: &SimConfig,
    seeds: std::ops::RangeInclusive<u64>,
    threads: usize,
    progress: &(dyn Fn(u64, Option<&Failure>) + Sync),
) -> SweepReport {
    let next = AtomicU64::new(*seeds.start());
    let end = *seeds.end();
    let report = Mutex::new(SweepReport::default());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed > end || seed < *seeds.start() {
                    break;
                }
                let mut cfg = base.clone();
                cfg.seed = seed;
                cfg.trace = false;
                let out = run(&cfg);
                progress(seed, out.failure.as_ref());
                let mut r = report.lock().unwrap_or_else(|p| p.into_inner());
                r.steps += out.steps;
                r.sim_time += out.sim_time;
                r.stats.add(&out.stats);
                match out.failure {
                    None => r.passed += 1,
                    Some(f) => r.failed.push((seed, f)),
                }
            });
        }
    });
    let mut r = report.into_inner().unwrap_or_else(|p| p.into_inner());
    r.failed.sort_by_key(|(seed, _)| *seed);
    r
}
