//! Node processes: spawning them detached, telling whether a recorded pid is
//! still our node, and signalling them.
//!
//! The program a node runs is the caller's to name ([`NodeProgram`]):
//! `cdsctl` runs itself as `cdsctl node --config FILE`, a test may run
//! another binary that calls [`crate::kv::node::run`].
//!
//! `cdsctl kv` exits right after `up`, so the nodes are not its children for
//! long and it cannot `wait` for them later; liveness is read from the OS
//! instead. A pid in `cluster.json` may be stale and reused by an unrelated
//! process, so on Linux a pid counts as our node only if its command line
//! names the node's config file: we never signal a stranger.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{bail, Context, Error, Result};

use super::directory::NodeEntry;
use super::outcome::NodeStop;

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

/// The program that runs one node: `exe ARGS... --config CONFIG`, where
/// the program serves the node of that config file (as
/// [`crate::kv::node::run`] does) until SIGTERM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeProgram {
    /// The executable.
    pub exe: PathBuf,
    /// Arguments before `--config CONFIG` (`["node"]` for `cdsctl`).
    pub args: Vec<OsString>,
}

impl NodeProgram {
    /// `cdsctl node`, with `exe` the path of the `cdsctl` binary.
    pub fn cdsctl(exe: PathBuf) -> NodeProgram {
        NodeProgram {
            exe,
            args: vec![OsString::from("node")],
        }
    }
}

/// Spawns `program` for `node`, detached from our terminal (own session,
/// so a Ctrl-C meant for the shell does not reach it), stdin closed,
/// stdout and stderr appended to the node's log.
pub fn spawn_node(program: &NodeProgram, node: &NodeEntry) -> Result<Child> {
    let log_path = node.log_path();
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening log {}", log_path.display()))?;
    let log_err = log
        .try_clone()
        .with_context(|| format!("duplicating log handle {}", log_path.display()))?;
    let mut cmd = Command::new(&program.exe);
    cmd.args(&program.args)
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
            "starting node {} ({} {} --config {})",
            node.id,
            program.exe.display(),
            program
                .args
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
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
        return Err(not_running(node.id));
    }
    let pid = node
        .pid
        .and_then(|p| libc::pid_t::try_from(p).ok())
        .ok_or_else(|| Error::Cluster(format!("node {} has no valid pid", node.id)))?;
    // SAFETY: plain syscall on a pid we just checked is our node.
    if unsafe { libc::kill(pid, sig) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(e).with_context(|| format!("signalling node {} (pid {pid})", node.id));
    }
    Ok(())
}

/// The error of an operation that needs node `id` running.
pub fn not_running(id: u64) -> Error {
    Error::Cluster(format!("node {id} is not running"))
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
pub fn stop(node: &NodeEntry, grace: Duration) -> Result<NodeStop> {
    if state(node) == ProcState::Down {
        return Ok(NodeStop::NotRunning);
    }
    let _ = signal(node, libc::SIGCONT);
    if signal(node, libc::SIGTERM).is_err() || wait_down(node, grace) {
        // A failed signal means it exited in between: either way it is gone.
        if state(node) == ProcState::Down {
            return Ok(NodeStop::Stopped);
        }
    }
    kill(node).map(|()| NodeStop::Killed { grace })
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
            Cluster,
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
