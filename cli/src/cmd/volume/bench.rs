//! `cdsctl volume bench`: IOPS, throughput and latency of a volume through
//! the client library, at a fixed queue depth.
//!
//! Reads of blocks never written are answered by the client without a
//! network trip (they are zeros), so a read benchmark first writes its
//! span (reported as the prefill) and measures reads of real data.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;
use cds::volume::Volume;
use serde::Serialize;

use super::Pattern;

/// Latency samples kept per worker (a bound on memory: 4 MiB each).
const MAX_SAMPLES_PER_WORKER: usize = 1 << 20;
/// Prefill IO size.
const PREFILL_BYTES: u64 = 1 << 20;

/// What a bench run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub pattern: String,
    pub bs: u64,
    pub qd: usize,
    pub seconds: f64,
    pub ios: u64,
    pub errors: u64,
    pub iops: f64,
    pub mb_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// Seconds spent writing the span first (read patterns).
    pub prefill_seconds: Option<f64>,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bs={} qd={}: {:.0} IOPS, {:.1} MB/s over {:.1}s ({} IOs, {} errors); \
             latency p50 {} us, p99 {} us, p999 {} us, max {} us",
            self.pattern,
            self.bs,
            self.qd,
            self.iops,
            self.mb_per_s,
            self.seconds,
            self.ios,
            self.errors,
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.max_us
        )
    }
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// Runs `pattern` on the first `span` bytes of `v` with `qd` IOs of `bs`
/// bytes in flight for `duration`.
pub async fn run(
    v: &Volume,
    pattern: Pattern,
    bs: u64,
    qd: usize,
    span: u64,
    duration: Duration,
) -> Result<BenchReport> {
    if bs == 0 || !bs.is_multiple_of(4096) || bs > cds::volume::MAX_PIECE_BYTES * 4 {
        bail!("--bs must be a multiple of 4 KiB, at most 4 MiB");
    }
    let slots = span / bs;
    if slots == 0 {
        bail!("the span ({span} bytes) is smaller than one IO ({bs} bytes)");
    }
    let qd = qd.clamp(1, 1024);
    let reads = matches!(pattern, Pattern::Read | Pattern::Randread);
    let mut prefill_seconds = None;
    if reads {
        let t = Instant::now();
        let chunk = Bytes::from(vec![0xa5u8; PREFILL_BYTES as usize]);
        let mut at = 0;
        while at < slots * bs {
            let n = PREFILL_BYTES.min(slots * bs - at);
            v.write(at, chunk.slice(..n as usize)).await?;
            at += n;
        }
        prefill_seconds = Some(t.elapsed().as_secs_f64());
    }
    let data = Bytes::from(vec![0x5au8; bs as usize]);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut set = tokio::task::JoinSet::new();
    for w in 0..qd {
        let (v, data, next) = (v.clone(), data.clone(), next.clone());
        set.spawn(async move {
            let mut rng = xorshift(0x9E37_79B9_7F4A_7C15 ^ (w as u64 + 1)) | 1;
            let mut lat: Vec<u32> = Vec::new();
            let mut errors = 0u64;
            let mut ios = 0u64;
            while Instant::now() < deadline {
                let slot = match pattern {
                    Pattern::Randread | Pattern::Randwrite => {
                        rng = xorshift(rng);
                        rng % slots
                    }
                    Pattern::Read | Pattern::Write => next.fetch_add(1, Ordering::Relaxed) % slots,
                };
                let t = Instant::now();
                let ok = if reads {
                    v.read(slot * bs, bs).await.is_ok()
                } else {
                    v.write(slot * bs, data.clone()).await.is_ok()
                };
                if ok {
                    ios += 1;
                    if lat.len() < MAX_SAMPLES_PER_WORKER {
                        lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                } else {
                    errors += 1;
                }
            }
            (ios, errors, lat)
        });
    }
    let (mut ios, mut errors, mut lat) = (0, 0, Vec::new());
    while let Some(r) = set.join_next().await {
        let (i, e, l) = r?;
        ios += i;
        errors += e;
        lat.extend(l);
    }
    let seconds = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| -> u64 {
        if lat.is_empty() {
            return 0;
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        u64::from(lat[i])
    };
    Ok(BenchReport {
        pattern: format!("{pattern:?}").to_lowercase(),
        bs,
        qd,
        seconds,
        ios,
        errors,
        iops: ios as f64 / seconds,
        mb_per_s: ios as f64 * bs as f64 / seconds / 1e6,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        p999_us: pct(0.999),
        max_us: lat.last().copied().map_or(0, u64::from),
        prefill_seconds,
    })
}
