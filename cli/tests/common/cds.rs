//! Helpers for the CDS multi-process tests: `cdsctl ARGS --dir DIR` with a
//! bound, and a guard that always tears a cluster down.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use super::{bounded, failed, succeeded, text};

/// Runs `cdsctl ARGS --dir DIR`, killed after two minutes.
pub fn cdsctl(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cdsctl"));
    cmd.args(args).arg("--dir").arg(dir);
    bounded(
        cmd,
        120,
        &format!("cdsctl {args:?}"),
        "the test binary's cdsctl",
    )
}

pub fn ok(dir: &Path, args: &[&str]) -> String {
    succeeded(&cdsctl(dir, args), &format!("cdsctl {args:?}"))
}

/// Every process's entry in `cds status --json`.
pub fn processes(dir: &Path) -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&ok(dir, &["cds", "status", "--json"])).expect("status json");
    v["processes"].as_array().expect("processes").clone()
}

/// Process `name`'s entry in `cds status --json`.
pub fn process(dir: &Path, name: &str) -> serde_json::Value {
    processes(dir)
        .into_iter()
        .find(|p| p["name"] == name)
        .expect("the process's status")
}

/// The name of the leading Master (`m1`...), by `cds status --json`.
pub fn leading_master(dir: &Path) -> String {
    processes(dir)
        .iter()
        .find(|p| p["master"]["role"] == "leader")
        .expect("a leading Master")["name"]
        .as_str()
        .expect("a name")
        .to_string()
}

pub fn fails(dir: &Path, args: &[&str]) -> String {
    failed(&cdsctl(dir, args), &format!("cdsctl {args:?}"))
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
        for e in ["masters", "servers", "workers"]
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

/// Runs `volume verify` for `secs` while `fault` runs after `delay`;
/// the verify must pass.
pub fn verify_through(dir: &Path, secs: u64, delay: Duration, fault: impl FnOnce()) -> String {
    let d = dir.to_path_buf();
    let s = format!("{secs}s");
    let h = std::thread::spawn(move || {
        cdsctl(
            &d,
            &["volume", "verify", "v", "--duration", &s, "--span", "48MiB"],
        )
    });
    std::thread::sleep(delay);
    fault();
    let out = h.join().expect("verify thread");
    assert!(out.status.success(), "verify failed: {}", text(&out));
    let o = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        o.contains("wrong reads 0, lost writes 0") && o.contains("PASSED"),
        "{o}"
    );
    o
}

/// The cluster view of `cds status --json` (servers, groups with their
/// moves, leaders, degraded and stuck groups).
pub fn cluster_view(dir: &Path) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&ok(dir, &["cds", "status", "--json"])).expect("status json");
    v["cluster"].clone()
}

/// `cds up` of the default topology (6 BlockServers over 3 zones), 12
/// groups and a 20 ms tick, with `extra` flags.
pub fn up_six(dir: &Path, extra: &[&str]) {
    let mut args = vec![
        "cds",
        "up",
        "--topology",
        "default",
        "--groups",
        "12",
        "--tick-ms",
        "20",
    ];
    args.extend_from_slice(extra);
    ok(dir, &args);
}

/// What process `name` of the cluster in `dir` has logged so far (empty
/// when it has no log yet).
pub fn log_of(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name).join("log")).unwrap_or_default()
}

/// The last `n` lines of every process's log in the cluster `dir` that
/// contain `needle`, each prefixed with its process: what a failing wait
/// prints so the failure can be understood after the cluster is gone.
pub fn log_lines_with(dir: &Path, needle: &str, n: usize) -> String {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return String::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    for name in names {
        let text = log_of(dir, &name);
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
        for l in &lines[lines.len().saturating_sub(n)..] {
            out.push(format!("{name}: {l}"));
        }
    }
    out.join("\n")
}
