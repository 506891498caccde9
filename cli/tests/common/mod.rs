//! Helpers the multi-process tests share: running `cdsctl kv` with a bound,
//! and a guard that always tears a local cluster down.
//!
//! Each test file includes this module (`mod common;`) and uses what it
//! needs, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod cds;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Runs `cmd` with its output captured, SIGKILLed after `secs` (the test
/// then fails naming `what`); `spawned` says what a failure to start it
/// means (a missing tool, say).
pub fn bounded(mut cmd: Command, secs: u64, what: &str, spawned: &str) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} cannot be run ({e}): {spawned}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(out) => out.expect("waiting for a child"),
        Err(_) => {
            // SAFETY: plain syscall on our own child's pid.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("{what} ran for more than {secs} s");
        }
    }
}

/// Runs `cdsctl kv ARGS --dir DIR`, killing it if it takes more than a
/// minute (every kv command has its own, shorter bound; this catches a bug
/// in those bounds instead of hanging the test run).
pub fn kv(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cdsctl"));
    cmd.arg("kv").args(args).arg("--dir").arg(dir);
    bounded(
        cmd,
        60,
        &format!("cdsctl kv {args:?}"),
        "the test binary's cdsctl",
    )
}

/// The stdout of `out`, which must have succeeded (`what` names it).
pub fn succeeded(out: &Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed: {}", text(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The stderr of `out`, which must have failed (`what` names it).
pub fn failed(out: &Output, what: &str) -> String {
    assert!(!out.status.success(), "{what} succeeded: {}", text(out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a command that must succeed and returns its stdout.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    succeeded(&kv(dir, args), &format!("cdsctl kv {args:?}"))
}

/// Runs a command that must fail and returns its stderr.
pub fn fails(dir: &Path, args: &[&str]) -> String {
    failed(&kv(dir, args), &format!("cdsctl kv {args:?}"))
}

/// Stops whatever runs in `dir` when dropped: `kv down`, then SIGKILL for
/// any pid in cluster.json whose command line still names that directory.
pub struct Guard {
    pub dir: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = kv(&self.dir, &["down", "--timeout", "5s"]);
        let Ok(text) = std::fs::read_to_string(self.dir.join("cluster.json")) else {
            return;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            return;
        };
        let needle = self.dir.to_string_lossy().into_owned();
        for node in v["nodes"].as_array().into_iter().flatten() {
            let Some(pid) = node["pid"].as_u64() else {
                continue;
            };
            // Only our nodes: a recycled pid belongs to someone else.
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&needle) {
                // SAFETY: plain syscall on a pid whose command line names our dir.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
    }
}

/// A client that speaks HTTPS to a `--tls` cluster's nodes, trusting only
/// the CA certificate in `ca_pem` (and giving up on a request after 5 s).
pub fn https_agent(ca_pem: &Path) -> ureq::Agent {
    let pem = std::fs::read(ca_pem).expect("reading the CA certificate");
    let ca = ureq::tls::Certificate::from_pem(&pem).expect("a PEM certificate");
    ureq::Agent::config_builder()
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(vec![
                    ca,
                ])))
                .build(),
        )
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into()
}
