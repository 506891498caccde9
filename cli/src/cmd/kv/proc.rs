//! Node processes: spawning them detached, telling whether a recorded pid is
//! still our node, and signalling them.
//!
//! `cdsctl kv` exits right after `up`, so the nodes are not its children for
//! long and it cannot `wait` for them later; liveness is read from the OS
//! instead. A pid in `cluster.json` may be stale and reused by an unrelated
//! process, so on Linux a pid counts as our node only if its command line
//! names the node's config file: we never signal a stranger.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::cluster::NodeEntry;

/// What the OS says about a node's recorded pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcState {
    /// Running (or runnable, or sleeping).
    Up,
    /// Stopped by SIGSTOP (`kv pause`).
    Paused,
    /// Gone, a zombie, never started, or the pid now belongs to another
    /// program.
    Down,
}

impl std::fmt::Display for ProcState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProcState::Up => "up",
            ProcState::Paused => "paused",
            ProcState::Down => "down",
        })
    }
}

/// Spawns `cdsctl node --config CONFIG` for `node`, detached from our
/// terminal (own session, so a Ctrl-C meant for the shell does not reach
/// it), stdin closed, stdout and stderr appended to the node's log.
pub fn spawn_node(node: &NodeEntry) -> Result<Child> {
    let exe = std::env::current_exe().context("finding the cdsctl executable to run nodes")?;
    let log_path = node.log_path();
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening log {}", log_path.display()))?;
    let log_err = log
        .try_clone()
        .with_context(|| format!("duplicating log handle {}", log_path.display()))?;
    let mut cmd = Command::new(&exe);
    cmd.arg("node")
        .arg("--config")
        .arg(node.config_path())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    // SAFETY: setsid is async-signal-safe and touches no memory of the
    // parent; it is the only thing run between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().with_context(|| {
        format!(
            "starting node {} ({} node --config {})",
            node.id,
            exe.display(),
            node.config_path().display()
        )
    })
}

/// Whether the node's recorded pid is our node, and whether it is paused.
pub fn state(node: &NodeEntry) -> ProcState {
    let Some(pid) = node.pid else {
        return ProcState::Down;
    };
    let Ok(pid_t) = libc::pid_t::try_from(pid) else {
        return ProcState::Down;
    };
    // SAFETY: signal 0 only checks that the pid exists and may be signalled.
    let exists = unsafe { libc::kill(pid_t, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return ProcState::Down;
    }
    // Where /proc exists (Linux), check the program and the run state.
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        Err(_) => return ProcState::Up,
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let config = node.config_path();
    let wanted = config.as_os_str().as_encoded_bytes();
    let ours = cmdline.split(|b| *b == 0).any(|arg| arg == wanted);
    if !ours {
        return ProcState::Down;
    }
    // The state letter follows the command name in parentheses, which may
    // itself contain spaces or parentheses: take what follows the last ')'.
    let st = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("R");
    match st {
        "Z" | "X" | "x" => ProcState::Down,
        "T" | "t" => ProcState::Paused,
        _ => ProcState::Up,
    }
}

/// Sends `sig` to the node's process, if it is still our node.
pub fn signal(node: &NodeEntry, sig: libc::c_int) -> Result<()> {
    if state(node) == ProcState::Down {
        bail!("node {} is not running", node.id);
    }
    let pid = node
        .pid
        .and_then(|p| libc::pid_t::try_from(p).ok())
        .context("node has no valid pid")?;
    // SAFETY: plain syscall on a pid we just checked is our node.
    if unsafe { libc::kill(pid, sig) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(e).with_context(|| format!("signalling node {} (pid {pid})", node.id));
    }
    Ok(())
}

/// Waits until the node's process is gone, for at most `timeout`.
pub fn wait_down(node: &NodeEntry, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if state(node) == ProcState::Down {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops a node: SIGCONT (a paused process cannot act on SIGTERM), SIGTERM,
/// then SIGKILL if it has not exited within `grace`. Returns how it ended.
pub fn stop(node: &NodeEntry, grace: Duration) -> Result<&'static str> {
    if state(node) == ProcState::Down {
        return Ok("not running");
    }
    let _ = signal(node, libc::SIGCONT);
    if signal(node, libc::SIGTERM).is_err() || wait_down(node, grace) {
        // A failed signal means it exited in between: either way it is gone.
        if state(node) == ProcState::Down {
            return Ok("stopped");
        }
    }
    kill(node).map(|()| "killed after SIGTERM timed out")
}

/// SIGKILLs a node and waits (at most 5 s) until it is gone.
pub fn kill(node: &NodeEntry) -> Result<()> {
    if let Err(e) = signal(node, libc::SIGKILL) {
        if state(node) == ProcState::Down {
            return Ok(());
        }
        return Err(e);
    }
    if wait_down(node, Duration::from_secs(5)) {
        Ok(())
    } else {
        bail!(
            "node {} (pid {:?}) still running 5 s after SIGKILL",
            node.id,
            node.pid
        )
    }
}

/// The last `lines` lines of a node's log, for error messages.
pub fn log_tail(node: &NodeEntry, lines: usize) -> String {
    match std::fs::read_to_string(node.log_path()) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all[start..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", node.log_path().display()),
    }
}
