//! A reader that stops early (`cdsctl ... | head -1`) ends `cdsctl` the way
//! it ends `cat`: killed by SIGPIPE, with nothing on stderr, never by a
//! panic (Rust ignores SIGPIPE, so an unguarded `println!` panics on the
//! broken pipe and the process exits with 101).

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Runs `cdsctl ARGS` with its stdout read for `lines` lines and then
/// closed; returns how it ended and its stderr. Bounded: killed after a
/// minute.
fn with_reader_closing_after(args: &[&str], lines: usize) -> (ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cdsctl"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cdsctl starts");
    let mut stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    {
        let mut out = BufReader::new(child.stdout.take().unwrap());
        for _ in 0..lines {
            let mut line = String::new();
            let n = out.read_line(&mut line).expect("reading stdout");
            assert!(n > 0, "cdsctl {args:?} printed fewer than {lines} lines");
        }
        // Dropped here: the pipe's only reader is gone.
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for cdsctl") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cdsctl {args:?} still runs a minute after its reader left");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, errors.join().unwrap())
}

fn assert_quiet_sigpipe(args: &[&str], status: ExitStatus, stderr: &str) {
    assert!(
        !stderr.contains("panicked"),
        "cdsctl {args:?} panicked:\n{stderr}"
    );
    assert!(
        status.success() || status.signal() == Some(libc::SIGPIPE),
        "cdsctl {args:?} ended with {status:?}, not by SIGPIPE:\n{stderr}"
    );
    assert!(stderr.is_empty(), "cdsctl {args:?} complained:\n{stderr}");
}

/// `println!`'s path: the sweep prints only when it is done, so a reader
/// that leaves first (as `head -1` can, or `true`) sees every line fail.
#[test]
fn a_sweep_whose_reader_left_dies_by_sigpipe_without_panicking() {
    let args = [
        "raft", "sim", "--nodes", "3", "--seeds", "1-200", "--steps", "200",
    ];
    let (status, stderr) = with_reader_closing_after(&args, 0);
    assert_quiet_sigpipe(&args, status, &stderr);
    assert!(!status.success(), "the sweep's output had nowhere to go");
}

/// A streamed writer's path (`trace to-perfetto IN -`, more output than a
/// pipe holds), read for one line as `head -1` does.
#[test]
fn a_streamed_output_read_for_one_line_dies_by_sigpipe() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.rtrace");
    let made = Command::new(env!("CARGO_BIN_EXE_cdsctl"))
        .args([
            "raft", "sim", "--nodes", "3", "--seed", "7", "--steps", "3000",
        ])
        .arg("--trace")
        .arg(&trace)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let path = trace.to_str().unwrap();
    let args = ["trace", "to-perfetto", path, "-"];
    let (status, stderr) = with_reader_closing_after(&args, 1);
    assert_quiet_sigpipe(&args, status, &stderr);
    // Success would mean the whole output fitted in the pipe: no test.
    assert_eq!(status.signal(), Some(libc::SIGPIPE));
}
