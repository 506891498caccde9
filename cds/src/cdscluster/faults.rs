//! Fault injection on a running local cluster: what `cdsctl cds fault`,
//! `partition`, `heal` and `fail-disk` do.
//!
//! Three ways a fault reaches its target:
//!
//! - **Fault files** (network and disk faults, see [`fault_file`]): a file
//!   in the process's `faults/` directory that the process applies itself
//!   within half a second: its Raft transport's filter (cut, delay, loss)
//!   or its disk's IO layer (errors, slowness, a full disk). Given a
//!   duration the file carries its deadline, so the process undoes the
//!   fault on time even if this command dies.
//! - **Signals** (kill, stop): SIGKILL, then a restart after the duration;
//!   SIGSTOP, then SIGCONT.
//! - **Hogs** (cpu, memory): this process is the hog, for the duration:
//!   busy threads pinned to the CPUs the target may run on, or memory
//!   allocated and touched so it stays resident.
//!
//! With a duration, [`inject`] waits it out (or until `cancel` is set, as
//! Ctrl-C does) and then undoes the fault; [`clear`] undoes every fault
//! file and continues every stopped process.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::directory::{CdsCluster, ProcName, Role};
use super::fault_file::{self, FaultKind, FaultRecord};
use super::lifecycle;
use crate::blockserver::process::BlockServerFileConfig;
use crate::devcluster::directory::NodeEntry;
use crate::devcluster::process::{self, ProcState};
use crate::error::{bail, Context, Error, Result};

/// The longest a fault may last.
pub const MAX_FAULT_DURATION: Duration = Duration::from_secs(24 * 3600);
/// The longest network delay (the KV's admin filter has the same bound).
pub const MAX_DELAY_MS: u64 = crate::kv::limits::MAX_FILTER_DELAY_MS;
/// The longest wait a slow disk adds to each sync and read.
pub const MAX_SLOW_MS: u64 = 10_000;
/// The most busy threads a CPU hog runs.
pub const MAX_HOG_THREADS: usize = 64;
/// The share of the memory available that a memory hog may take, in
/// percent (the machine must stay usable for the undo).
pub const MAX_HOG_MEMORY_PCT: u64 = 90;

/// One fault `inject` can put on a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Injection {
    /// SIGKILL (restarted after the duration, if one is given).
    Kill,
    /// SIGSTOP (SIGCONT after the duration, if one is given).
    Stop,
    /// Cut the Raft links to `peers` (all its Raft peers when empty).
    Cut { peers: Vec<ProcName> },
    /// Send to `peers` `ms` late.
    Delay { peers: Vec<ProcName>, ms: u64 },
    /// Drop `pct`% of what is sent to `peers`.
    Loss { peers: Vec<ProcName>, pct: u8 },
    /// Disk `disk` (1-based) returns EIO.
    DiskError { disk: usize },
    /// Disk `disk` waits `ms` before each sync and read.
    DiskSlow { disk: usize, ms: u64 },
    /// Disk `disk` is out of space.
    DiskFull { disk: usize },
    /// `threads` busy threads on the target's CPUs.
    Cpu { threads: usize },
    /// `mib` MiB allocated and kept resident.
    Memory { mib: u64 },
}

impl Injection {
    /// The fault file's name for this fault (one per kind and disk, so a
    /// second injection of the same kind replaces the first).
    fn file_name(&self) -> String {
        match self {
            Injection::Cut { .. } => "cut".into(),
            Injection::Delay { .. } => "delay".into(),
            Injection::Loss { .. } => "loss".into(),
            Injection::DiskError { disk } => format!("disk{disk}-error"),
            Injection::DiskSlow { disk, .. } => format!("disk{disk}-slow"),
            Injection::DiskFull { disk } => format!("disk{disk}-full"),
            _ => String::new(),
        }
    }
}

/// The Raft peers of `name`: the other BlockServers, or the other Masters.
fn raft_peers(c: &CdsCluster, name: ProcName) -> Result<Vec<u64>> {
    match name.role {
        Role::BlockServer | Role::Master => Ok(c
            .entries(name.role)
            .iter()
            .map(|e| e.id)
            .filter(|&i| i != name.id)
            .collect()),
        Role::SnapshotWorker => bail!(
            Invalid,
            "{name} is a SnapshotWorker: it has no Raft links (kill or stop it instead)"
        ),
    }
}

/// `peers` as ids of `name`'s Raft peers (all of them when empty).
fn peer_ids(c: &CdsCluster, name: ProcName, peers: &[ProcName]) -> Result<Vec<u64>> {
    let all = raft_peers(c, name)?;
    if peers.is_empty() {
        return Ok(all);
    }
    peers
        .iter()
        .map(|p| {
            if p.role != name.role || !all.contains(&p.id) {
                bail!(
                    Invalid,
                    "{p} is not a Raft peer of {name} (its peers: the other {})",
                    if name.role == Role::Master {
                        "Masters"
                    } else {
                        "BlockServers"
                    }
                );
            }
            Ok(p.id)
        })
        .collect()
}

fn check_disk(e: &NodeEntry, name: ProcName, disk: usize) -> Result<()> {
    if name.role != Role::BlockServer {
        bail!(
            Invalid,
            "{name} is not a BlockServer (b1, b2, ...): it has no disks"
        );
    }
    let cfg = BlockServerFileConfig::load(&e.data_dir.join("config.json"))?;
    if disk == 0 || disk > cfg.disks.len() {
        bail!(
            Invalid,
            "{name} has disks 1 to {}, not {disk}",
            cfg.disks.len()
        );
    }
    Ok(())
}

/// The fault file `inj` puts on `name`, checked against the cluster.
fn file_fault(c: &CdsCluster, name: ProcName, inj: &Injection) -> Result<Option<FaultKind>> {
    let e = c.entry(name)?;
    Ok(Some(match inj {
        Injection::Cut { peers } => FaultKind::Cut {
            peers: peer_ids(c, name, peers)?,
        },
        Injection::Delay { peers, ms } => {
            if *ms == 0 || *ms > MAX_DELAY_MS {
                bail!(Invalid, "a delay must be 1 to {MAX_DELAY_MS} ms, not {ms}");
            }
            FaultKind::Delay {
                peers: peer_ids(c, name, peers)?,
                ms: *ms,
            }
        }
        Injection::Loss { peers, pct } => {
            if !(1..=100).contains(pct) {
                bail!(Invalid, "a loss must be 1 to 100 percent, not {pct}");
            }
            FaultKind::Loss {
                peers: peer_ids(c, name, peers)?,
                pct: *pct,
            }
        }
        Injection::DiskError { disk } => {
            check_disk(e, name, *disk)?;
            FaultKind::DiskError { disk: *disk }
        }
        Injection::DiskSlow { disk, ms } => {
            check_disk(e, name, *disk)?;
            if *ms == 0 || *ms > MAX_SLOW_MS {
                bail!(Invalid, "a slow disk waits 1 to {MAX_SLOW_MS} ms, not {ms}");
            }
            FaultKind::DiskSlow {
                disk: *disk,
                ms: *ms,
            }
        }
        Injection::DiskFull { disk } => {
            check_disk(e, name, *disk)?;
            FaultKind::DiskFull { disk: *disk }
        }
        Injection::Kill | Injection::Stop | Injection::Cpu { .. } | Injection::Memory { .. } => {
            return Ok(None)
        }
    }))
}

/// Sleeps until `until` or until `cancel` is set; whether it was
/// cancelled.
fn wait(until: Instant, cancel: &AtomicBool) -> bool {
    loop {
        if cancel.load(Ordering::Relaxed) {
            return true;
        }
        let now = Instant::now();
        if now >= until {
            return false;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(100)));
    }
}

/// Puts fault `inj` on process `name` of the cluster in `dir`. With
/// `duration`, waits it out (or until `cancel`) and undoes the fault
/// before returning; without, leaves it in force (`clear` undoes it;
/// a CPU or memory hog needs a duration). `say` hears each step.
pub fn inject(
    dir: &Path,
    exe: &Path,
    name: ProcName,
    inj: &Injection,
    duration: Option<Duration>,
    cancel: &AtomicBool,
    say: &mut dyn FnMut(String),
) -> Result<()> {
    if let Some(d) = duration {
        if d.is_zero() || d > MAX_FAULT_DURATION {
            bail!(Invalid, "--for must be between 1 ms and 24 h");
        }
    }
    let c = CdsCluster::load(dir)?;
    let e = c.entry(name)?.clone();
    if let Some(fault) = file_fault(&c, name, inj)? {
        let file = inj.file_name();
        let record = FaultRecord {
            fault: fault.clone(),
            until_unix_ms: duration.map(fault_file::deadline),
        };
        fault_file::add(&e.data_dir, &file, &record)?;
        if process::state(&e) == ProcState::Down {
            say(format!(
                "{name} is not running: it applies the fault when it starts"
            ));
        }
        let Some(d) = duration else {
            say(format!("{name}: {fault} (until `cdsctl cds fault clear`)"));
            return Ok(());
        };
        say(format!("{name}: {fault} for {d:?}"));
        let cancelled = wait(Instant::now() + d, cancel);
        fault_file::remove(&e.data_dir, &file)?;
        say(format!(
            "{name}: {fault} undone{}",
            if cancelled { " (interrupted)" } else { "" }
        ));
        return Ok(());
    }
    match inj {
        Injection::Kill => {
            if process::state(&e) == ProcState::Down {
                bail!(Cluster, "{name} is not running");
            }
            process::kill(&e)?;
            let Some(d) = duration else {
                say(format!(
                    "{name}: killed (SIGKILL); `cdsctl cds restart {name}` brings it back"
                ));
                return Ok(());
            };
            say(format!("{name}: killed (SIGKILL) for {d:?}"));
            let until = Instant::now() + d;
            // The kill has to land before the restart can start it again.
            while process::state(&e) != ProcState::Down && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            wait(until, cancel);
            let pid = lifecycle::restart(dir, exe, name)?;
            say(format!("{name}: restarted (pid {pid})"));
        }
        Injection::Stop => {
            process::signal(&e, libc::SIGSTOP)?;
            let Some(d) = duration else {
                say(format!(
                    "{name}: stopped (SIGSTOP) until `cdsctl cds resume {name}`"
                ));
                return Ok(());
            };
            say(format!("{name}: stopped (SIGSTOP) for {d:?}"));
            wait(Instant::now() + d, cancel);
            process::signal(&e, libc::SIGCONT)?;
            say(format!("{name}: continued (SIGCONT)"));
        }
        Injection::Cpu { threads } => {
            let d = duration.ok_or_else(|| {
                Error::Invalid("a CPU hog needs --for: this command is the hog".into())
            })?;
            if *threads == 0 || *threads > MAX_HOG_THREADS {
                bail!(
                    Invalid,
                    "--threads must be 1 to {MAX_HOG_THREADS}, not {threads}"
                );
            }
            let cpus = affinity_of(&e)?;
            say(format!(
                "{name}: {threads} busy threads on CPUs {cpus:?} (where {name} runs) for {d:?}"
            ));
            let spent = cpu_hog(&cpus, *threads, Instant::now() + d, cancel);
            say(format!(
                "{name}: CPU hog stopped after {:.1} s of CPU time",
                spent.as_secs_f64()
            ));
        }
        Injection::Memory { mib } => {
            let d = duration.ok_or_else(|| {
                Error::Invalid("a memory hog needs --for: this command is the hog".into())
            })?;
            let available = mem_available_mib()?;
            let most = available * MAX_HOG_MEMORY_PCT / 100;
            if *mib == 0 || *mib > most {
                bail!(
                    Invalid,
                    "--mib must be 1 to {most} ({MAX_HOG_MEMORY_PCT}% of the {available} MiB available), not {mib}"
                );
            }
            let hog = memory_hog(*mib)?;
            say(format!(
                "{name}: {mib} MiB held resident beside it (this process's RSS {} MiB; {} MiB left available) for {d:?}",
                rss_mib().unwrap_or(0),
                mem_available_mib().unwrap_or(0)
            ));
            wait(Instant::now() + d, cancel);
            drop(hog);
            say(format!("{name}: memory hog released"));
        }
        _ => unreachable!("file faults are handled above"),
    }
    Ok(())
}

/// The CPUs `e`'s process may run on.
fn affinity_of(e: &NodeEntry) -> Result<Vec<usize>> {
    if process::state(e) == ProcState::Down {
        bail!(Cluster, "process {} is not running", e.id);
    }
    let pid = e
        .pid
        .and_then(|p| libc::pid_t::try_from(p).ok())
        .ok_or_else(|| Error::Cluster("no pid recorded".into()))?;
    // SAFETY: `set` is a plain bit set the call fills; its size is passed.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc =
        unsafe { libc::sched_getaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("reading the process's CPU affinity");
    }
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `i` is below CPU_SETSIZE.
        .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
        .collect();
    Ok(cpus)
}

/// Runs `threads` busy threads pinned to `cpus` until `until` or
/// `cancel`; the CPU time they used.
fn cpu_hog(cpus: &[usize], threads: usize, until: Instant, cancel: &AtomicBool) -> Duration {
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let stop = stop.clone();
            let cpus = cpus.to_vec();
            std::thread::spawn(move || {
                // SAFETY: as in `affinity_of`; 0 is the calling thread.
                unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    for &c in &cpus {
                        libc::CPU_SET(c, &mut set);
                    }
                    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                }
                let mut x = 1u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..100_000 {
                        x = std::hint::black_box(
                            x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1),
                        );
                    }
                }
                x
            })
        })
        .collect();
    let started = process_cpu_time();
    wait(until, cancel);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    process_cpu_time().saturating_sub(started)
}

/// This process's CPU time so far.
fn process_cpu_time() -> Duration {
    // SAFETY: `ts` is filled by the call.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// `mib` MiB allocated with every page written, so they are resident.
fn memory_hog(mib: u64) -> Result<Vec<u8>> {
    let bytes = usize::try_from(mib * 1024 * 1024)
        .map_err(|_| Error::Invalid(format!("{mib} MiB does not fit this machine")))?;
    let mut v: Vec<u8> = Vec::new();
    v.try_reserve_exact(bytes)
        .map_err(|e| Error::Invalid(format!("cannot allocate {mib} MiB: {e}")))?;
    v.resize(bytes, 0);
    for i in (0..bytes).step_by(4096) {
        v[i] = 1;
    }
    Ok(std::hint::black_box(v))
}

fn meminfo_field(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kb| kb / 1024)
}

/// MiB of memory the kernel says is available.
fn mem_available_mib() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    meminfo_field(&text, "MemAvailable:")
        .ok_or_else(|| Error::Cluster("/proc/meminfo has no MemAvailable".into()))
}

/// This process's resident MiB.
fn rss_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    meminfo_field(&text, "VmRSS:")
}

/// A fault in force on one process, for `fault list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveFault {
    pub process: ProcName,
    /// The fault file's name, or `stopped` for a SIGSTOPped process.
    pub name: String,
    /// What it does (or why its file cannot be read).
    pub what: String,
    /// How long it has left; `None`: until undone.
    pub left: Option<Duration>,
}

/// Every fault in force in the cluster in `dir`: fault files not expired
/// and stopped processes.
pub fn list(dir: &Path) -> Result<Vec<ActiveFault>> {
    let c = CdsCluster::load(dir)?;
    let now = fault_file::now_unix_ms();
    let mut out = Vec::new();
    for (name, e) in c.all() {
        if process::state(e) == ProcState::Paused {
            out.push(ActiveFault {
                process: name,
                name: "stopped".into(),
                what: "stopped (SIGSTOP)".into(),
                left: None,
            });
        }
        for (file, record) in fault_file::list(&e.data_dir)? {
            match record {
                Ok(r) if !r.in_force(now) => {}
                Ok(r) => out.push(ActiveFault {
                    process: name,
                    name: file,
                    what: r.fault.to_string(),
                    left: r
                        .until_unix_ms
                        .map(|u| Duration::from_millis(u.saturating_sub(now))),
                }),
                Err(why) => out.push(ActiveFault {
                    process: name,
                    name: file,
                    what: format!("unreadable: {why}"),
                    left: None,
                }),
            }
        }
    }
    Ok(out)
}

/// Undoes every fault file and continues every stopped process (of
/// `only`, or of the whole cluster); what was undone, one line each.
pub fn clear(dir: &Path, only: Option<ProcName>) -> Result<Vec<String>> {
    let c = CdsCluster::load(dir)?;
    if let Some(n) = only {
        c.entry(n)?;
    }
    let mut out = Vec::new();
    for (name, e) in c.all() {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        for file in fault_file::remove_where(&e.data_dir, |_| true)? {
            out.push(format!("{name}: {file} removed"));
        }
        if process::state(e) == ProcState::Paused {
            process::signal(e, libc::SIGCONT)?;
            out.push(format!("{name}: continued (SIGCONT)"));
        }
    }
    Ok(out)
}

/// Cuts process `name`'s Raft links to every Raft peer (both ways) until
/// [`heal`]; returns the peers cut off.
pub fn partition(dir: &Path, name: ProcName) -> Result<Vec<u64>> {
    let c = CdsCluster::load(dir)?;
    let peers = raft_peers(&c, name)?;
    let record = FaultRecord {
        fault: FaultKind::Cut {
            peers: peers.clone(),
        },
        until_unix_ms: None,
    };
    fault_file::add(&c.entry(name)?.data_dir, "partition", &record)?;
    Ok(peers)
}

/// Removes every network fault (cut, delay, loss) of every Master and
/// BlockServer (applied at each one's next look).
pub fn heal(dir: &Path) -> Result<()> {
    let c = CdsCluster::load(dir)?;
    for e in c.masters.iter().chain(&c.servers) {
        fault_file::remove_where(&e.data_dir, |r| r.fault.is_network())?;
    }
    Ok(())
}

/// Fails disk `disk` (1-based) of BlockServer `name` until the fault is
/// cleared (`cdsctl cds fault clear`): its IO returns `EIO` from the
/// server's next look, its replicas are reported lost and rebuilt
/// elsewhere, the server keeps serving from its other disks. The fault
/// file stays across restarts.
pub fn fail_disk(dir: &Path, name: ProcName, disk: usize) -> Result<()> {
    let never = AtomicBool::new(false);
    inject(
        dir,
        Path::new(""),
        name,
        &Injection::DiskError { disk },
        None,
        &never,
        &mut |_| {},
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_fields_parse_in_mib() {
        let t = "MemTotal:        8000000 kB\nMemAvailable:    2048000 kB\n";
        assert_eq!(meminfo_field(t, "MemAvailable:"), Some(2000));
        assert_eq!(meminfo_field(t, "VmRSS:"), None);
    }

    #[test]
    fn a_memory_hog_is_resident() {
        let before = rss_mib().expect("rss");
        let hog = memory_hog(64).expect("hog");
        let during = rss_mib().expect("rss");
        assert!(during >= before + 60, "{before} MiB then {during} MiB");
        drop(hog);
    }
}
