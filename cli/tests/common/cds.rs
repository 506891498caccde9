//! Helpers for the CDS multi-process tests: `cdsctl ARGS --dir DIR` with a
//! bound, and a guard that always tears a cluster down.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Runs `cdsctl ARGS --dir DIR`, killed after two minutes.
pub fn cdsctl(dir: &Path, args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_cdsctl"))
        .args(args)
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning cdsctl");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(out) => out.expect("waiting for cdsctl"),
        Err(_) => {
            // SAFETY: plain syscall on our own child's pid.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("cdsctl {args:?} ran for more than 120 s");
        }
    }
}

pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn ok(dir: &Path, args: &[&str]) -> String {
    let out = cdsctl(dir, args);
    assert!(
        out.status.success(),
        "cdsctl {args:?} failed: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn fails(dir: &Path, args: &[&str]) -> String {
    let out = cdsctl(dir, args);
    assert!(
        !out.status.success(),
        "cdsctl {args:?} succeeded: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Tears the cluster in `dir` down when dropped.
pub struct Guard {
    pub dir: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = cdsctl(&self.dir, &["cds", "down", "--timeout", "5s"]);
        let Ok(text) = std::fs::read_to_string(self.dir.join("cds.json")) else {
            return;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            return;
        };
        let needle = self.dir.to_string_lossy().into_owned();
        for e in ["masters", "servers"]
            .iter()
            .flat_map(|k| v[k].as_array().cloned().unwrap_or_default())
        {
            let Some(pid) = e["pid"].as_u64() else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&needle) {
                // SAFETY: plain syscall on a pid whose command line names our dir.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
    }
}
