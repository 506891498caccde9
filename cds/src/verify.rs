//! `volume verify`: a self-checking workload on a volume.
//!
//! Every sector written carries who wrote it and when: the volume id,
//! its own offset, the run's id and a generation (unique in the run),
//! filler derived from them, and a CRC-32C over it all. A read can then
//! tell a correct sector from a stale, misplaced or damaged one without
//! keeping the data.
//!
//! Workers own disjoint parts of the span, so each sector has one writer
//! and the checker knows what it may hold: the generation of its last
//! acknowledged write, or of a write after it whose outcome is unknown
//! (timed out: it may or may not have been applied); before any write of
//! this run, zeros or a sector of an earlier run. Anything else is a wrong
//! read. At the end every sector is read back: an acknowledged write that
//! is not there is a lost write.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use crate::engine::SECTOR;
use crate::volume::{Volume, VolumeError};

const MAGIC: &[u8; 4] = b"CDSV";
/// Longest run of sectors one IO of the workload touches.
const MAX_RUN_SECTORS: u64 = 8;
/// Unknown outcomes remembered per sector before the run gives up (a
/// cluster that times out that often is down, not being verified).
const MAX_UNKNOWN_PER_SECTOR: usize = 64;
/// Examples of failures kept for the report.
const MAX_EXAMPLES: usize = 10;
/// Bytes read per request in the final pass.
const FINAL_READ_BYTES: u64 = 1 << 20;

/// What a sector holds, as far as the checker can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Zeros,
    Written {
        run: u64,
        generation: u64,
    },
    /// Not a sector this workload wrote for this place.
    Bad(String),
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// The sector written at `offset` of `volume` by `run` at `generation`.
pub fn make_sector(volume: u64, offset: u64, run: u64, generation: u64) -> Vec<u8> {
    let mut b = BytesMut::with_capacity(SECTOR as usize);
    b.put_slice(MAGIC);
    for v in [volume, offset, run, generation] {
        b.put_u64_le(v);
    }
    let mut x = (offset ^ generation.rotate_left(17) ^ run.rotate_left(41)) | 1;
    while b.len() < SECTOR as usize - 4 {
        x = xorshift(x);
        let take = (SECTOR as usize - 4 - b.len()).min(8);
        b.put_slice(&x.to_le_bytes()[..take]);
    }
    let crc = raft_core::checksum(&b);
    b.put_u32_le(crc);
    b.to_vec()
}

/// Reads one sector (exactly [`SECTOR`] bytes) expected at `offset` of
/// `volume`.
pub fn check_sector(data: &[u8], volume: u64, offset: u64) -> Seen {
    if data.len() != SECTOR as usize {
        return Seen::Bad(format!("{} bytes, not a sector", data.len()));
    }
    if data.iter().all(|&b| b == 0) {
        return Seen::Zeros;
    }
    let (body, tail) = data.split_at(SECTOR as usize - 4);
    let crc = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    if raft_core::checksum(body) != crc || &body[..4] != MAGIC {
        return Seen::Bad("not a verify sector (checksum or magic wrong)".into());
    }
    let u = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().unwrap_or([0; 8]));
    let (vol, off, run, generation) = (u(4), u(12), u(20), u(28));
    if vol != volume || off != offset {
        return Seen::Bad(format!(
            "a sector of volume {vol} offset {off} (misplaced: expected volume {volume} offset {offset})"
        ));
    }
    Seen::Written { run, generation }
}

/// What the checker knows of one sector.
#[derive(Debug, Clone, Default)]
struct Model {
    acked: Option<u64>,
    maybe: Vec<u64>,
    /// Before this run's first acknowledged write the sector holds
    /// whatever was there (zeros, another run's sector, a user's data):
    /// the CRC of what the first read saw, which every later read must
    /// see again.
    prior: Option<u32>,
}

impl Model {
    /// Whether `data`, seen as `seen`, may be what the sector holds now;
    /// the first read before any acknowledged write fixes `prior`.
    fn accepts(&mut self, seen: &Seen, data: &[u8], run: u64) -> bool {
        if let Seen::Written { run: r, generation } = seen {
            if *r == run && (Some(*generation) == self.acked || self.maybe.contains(generation)) {
                return true;
            }
        }
        if self.acked.is_some() {
            return false;
        }
        let crc = raft_core::checksum(data);
        match self.prior {
            None if matches!(seen, Seen::Written { run: r, .. } if *r == run) => false,
            None => {
                self.prior = Some(crc);
                true
            }
            Some(p) => p == crc,
        }
    }
}

/// The outcome of a verify run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub volume: String,
    pub span_bytes: u64,
    pub seconds: f64,
    pub writes_acked: u64,
    pub sectors_written: u64,
    pub reads: u64,
    pub sectors_checked: u64,
    /// Writes that timed out (they may or may not have been applied).
    pub unknown_outcomes: u64,
    /// Other IO errors (retried by the workload).
    pub io_errors: u64,
    pub wrong_reads: u64,
    /// Acknowledged writes missing in the final read-back.
    pub lost_writes: u64,
    /// A few failures, described.
    pub examples: Vec<String>,
}

impl Report {
    /// No wrong read and no lost write.
    pub fn passed(&self) -> bool {
        self.wrong_reads == 0 && self.lost_writes == 0
    }

    fn example(&mut self, s: String) {
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(s);
        }
    }

    fn merge(&mut self, o: Report) {
        self.writes_acked += o.writes_acked;
        self.sectors_written += o.sectors_written;
        self.reads += o.reads;
        self.sectors_checked += o.sectors_checked;
        self.unknown_outcomes += o.unknown_outcomes;
        self.io_errors += o.io_errors;
        self.wrong_reads += o.wrong_reads;
        self.lost_writes += o.lost_writes;
        for e in o.examples {
            self.example(e);
        }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "verify {}: {:.1}s over {} bytes: {} writes acknowledged ({} sectors), {} reads ({} sectors checked)",
            self.volume, self.seconds, self.span_bytes, self.writes_acked, self.sectors_written,
            self.reads, self.sectors_checked
        )?;
        writeln!(
            f,
            "unknown outcomes {}, io errors {}, wrong reads {}, lost writes {}",
            self.unknown_outcomes, self.io_errors, self.wrong_reads, self.lost_writes
        )?;
        for e in &self.examples {
            writeln!(f, "  {e}")?;
        }
        write!(f, "{}", if self.passed() { "PASSED" } else { "FAILED" })
    }
}

/// Why a verify run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the span ({0} bytes) holds fewer sectors than workers")]
    SpanTooSmall(u64),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error("sector at {0}: {MAX_UNKNOWN_PER_SECTOR} unknown outcomes in a row; the cluster is not serving")]
    TooManyUnknown(u64),
}

struct Worker {
    volume: Volume,
    vol_id: u64,
    run: u64,
    /// First sector and sector count of its part.
    first: u64,
    count: u64,
    models: BTreeMap<u64, Model>,
    report: Report,
    rng: u64,
    next_gen: u64,
    gen_stride: u64,
}

impl Worker {
    fn rand(&mut self, n: u64) -> u64 {
        self.rng = xorshift(self.rng);
        self.rng % n
    }

    fn check(&mut self, data: &[u8], first_sector: u64) {
        for (i, chunk) in data.chunks(SECTOR as usize).enumerate() {
            let s = first_sector + i as u64;
            let off = s * SECTOR;
            let seen = check_sector(chunk, self.vol_id, off);
            self.report.sectors_checked += 1;
            let m = self.models.entry(s).or_default();
            if !m.accepts(&seen, chunk, self.run) {
                let m = m.clone();
                self.report.wrong_reads += 1;
                self.report.example(format!(
                    "offset {off}: read {seen:?}, expected generation {:?} (or unknown {:?})",
                    m.acked, m.maybe
                ));
            }
        }
    }

    async fn step(&mut self) -> Result<(), VerifyError> {
        let len = 1 + self.rand(MAX_RUN_SECTORS.min(self.count));
        let start = self.first + self.rand(self.count - len + 1);
        if self.rand(2) == 0 {
            let mut buf = BytesMut::with_capacity((len * SECTOR) as usize);
            let mut gens = Vec::new();
            for s in start..start + len {
                let g = self.next_gen;
                self.next_gen += self.gen_stride;
                gens.push(g);
                buf.put_slice(&make_sector(self.vol_id, s * SECTOR, self.run, g));
            }
            match self.volume.write(start * SECTOR, buf.freeze()).await {
                Ok(()) => {
                    self.report.writes_acked += 1;
                    self.report.sectors_written += len;
                    for (i, g) in gens.into_iter().enumerate() {
                        let m = self.models.entry(start + i as u64).or_default();
                        m.acked = Some(g);
                        m.maybe.clear();
                    }
                }
                Err(e @ VolumeError::Fenced { .. }) => return Err(e.into()),
                Err(_) => {
                    // Any failure may have left some pieces applied.
                    self.report.unknown_outcomes += 1;
                    for (i, g) in gens.into_iter().enumerate() {
                        let s = start + i as u64;
                        let m = self.models.entry(s).or_default();
                        if m.maybe.len() >= MAX_UNKNOWN_PER_SECTOR {
                            return Err(VerifyError::TooManyUnknown(s * SECTOR));
                        }
                        m.maybe.push(g);
                    }
                }
            }
        } else {
            match self.volume.read(start * SECTOR, len * SECTOR).await {
                Ok(d) => {
                    self.report.reads += 1;
                    self.check(&d, start);
                }
                Err(_) => self.report.io_errors += 1,
            }
        }
        Ok(())
    }

    /// Reads the whole part back; an acknowledged write missing is lost.
    async fn final_pass(&mut self) -> Result<(), VerifyError> {
        let per = FINAL_READ_BYTES / SECTOR;
        let mut s = self.first;
        while s < self.first + self.count {
            let n = per.min(self.first + self.count - s);
            let d: Bytes = self.volume.read(s * SECTOR, n * SECTOR).await?;
            for (i, chunk) in d.chunks(SECTOR as usize).enumerate() {
                let sec = s + i as u64;
                let off = sec * SECTOR;
                let seen = check_sector(chunk, self.vol_id, off);
                self.report.sectors_checked += 1;
                let m = self.models.entry(sec).or_default();
                if !m.accepts(&seen, chunk, self.run) {
                    let m = m.clone();
                    if m.acked.is_some() {
                        self.report.lost_writes += 1;
                    } else {
                        self.report.wrong_reads += 1;
                    }
                    self.report.example(format!(
                        "final read at offset {off}: {seen:?}, expected generation {:?} (or unknown {:?})",
                        m.acked, m.maybe
                    ));
                }
            }
            s += n;
        }
        Ok(())
    }
}

/// Runs the workload on the first `span` bytes of `volume` (open for
/// writing) with `workers` concurrent workers for `duration`, then reads
/// everything back.
pub async fn run(
    volume: &Volume,
    span: u64,
    workers: usize,
    duration: Duration,
) -> Result<Report, VerifyError> {
    let sectors = span / SECTOR;
    let workers = workers.max(1) as u64;
    if sectors < workers {
        return Err(VerifyError::SpanTooSmall(span));
    }
    let run = (std::process::id() as u64) << 32
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
    let meta = volume.meta();
    let started = Instant::now();
    let deadline = started + duration;
    let per = sectors / workers;
    let mut set = tokio::task::JoinSet::new();
    for w in 0..workers {
        let mut wk = Worker {
            volume: volume.clone(),
            vol_id: meta.id,
            run,
            first: w * per,
            count: if w + 1 == workers {
                sectors - w * per
            } else {
                per
            },
            models: BTreeMap::new(),
            report: Report::default(),
            rng: xorshift(run ^ (w + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1,
            next_gen: w + 1,
            gen_stride: workers,
        };
        set.spawn(async move {
            while Instant::now() < deadline {
                wk.step().await?;
            }
            wk.final_pass().await?;
            Ok::<Report, VerifyError>(wk.report)
        });
    }
    let mut report = Report {
        volume: meta.name.clone(),
        span_bytes: sectors * SECTOR,
        ..Report::default()
    };
    while let Some(r) = set.join_next().await {
        let r = r.map_err(|e| VolumeError::Protocol(format!("worker failed: {e}")))?;
        report.merge(r?);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sectors_round_trip_and_damage_is_seen() {
        let s = make_sector(7, 8192, 99, 5);
        assert_eq!(
            check_sector(&s, 7, 8192),
            Seen::Written {
                run: 99,
                generation: 5
            }
        );
        assert!(matches!(check_sector(&s, 7, 4096), Seen::Bad(_)));
        let mut d = s.clone();
        d[100] ^= 1;
        assert!(matches!(check_sector(&d, 7, 8192), Seen::Bad(_)));
        assert_eq!(check_sector(&[0; 4096], 7, 0), Seen::Zeros);
    }

    #[test]
    fn the_model_accepts_only_what_may_be_there() {
        let w = |run, generation| Seen::Written { run, generation };
        let mut m = Model::default();
        // Before any write: whatever is there, as long as it stays.
        assert!(m.accepts(&Seen::Bad("user data".into()), b"abc", 1));
        assert!(m.accepts(&Seen::Bad("user data".into()), b"abc", 1));
        assert!(!m.accepts(&Seen::Zeros, &[0; 3], 1));
        m.acked = Some(4);
        assert!(!m.accepts(&Seen::Bad("user data".into()), b"abc", 1));
        assert!(m.accepts(&w(1, 4), b"x", 1));
        assert!(!m.accepts(&w(1, 3), b"x", 1));
        m.maybe.push(6);
        assert!(m.accepts(&w(1, 6), b"x", 1));
        assert!(!m.accepts(&w(2, 4), b"x", 1));
        // A sector of this run never written in it is wrong.
        assert!(!Model::default().accepts(&w(1, 9), b"x", 1));
    }
}
