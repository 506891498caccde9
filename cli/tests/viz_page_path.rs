//! `cdsctl viz` without `--page` finds the page from anywhere, not only from
//! the repository root: run from an empty temporary directory, it serves
//! the page built beside its executable (`target/viz` for
//! `target/release/cdsctl`).
//!
//! Needs the page built (`viz-wasm/build.sh`, which `.ci/run` runs before
//! the tests); missing it is a failure with instructions, never a skip.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Longest wait for the address, and for each step of the HTTP exchange.
const WAIT: Duration = Duration::from_secs(20);

/// `cdsctl viz`, killed when dropped (also when the test fails).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` on `addr` (`127.0.0.1:PORT`): the status line and the body.
fn get(addr: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("connecting to cdsctl viz");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("reading the reply");
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let status = head.lines().next().unwrap_or("").to_owned();
    (status, body.to_owned())
}

#[test]
fn viz_serves_the_page_from_any_directory() {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/viz/index.html");
    assert!(
        built.is_file(),
        "the visualizer page is not built ({} is missing): run viz-wasm/build.sh first \
         (.ci/run does)",
        built.display()
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cdsctl"))
        .arg("viz")
        .current_dir(elsewhere.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cdsctl viz starts");
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let server = Server(child);
    // The first line is the address; a bounded read through a thread.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let url = match rx.recv_timeout(WAIT) {
        Ok(l) if l.starts_with("http://") => l.trim().to_owned(),
        other => {
            drop(server);
            let mut err = String::new();
            let _ = stderr.read_to_string(&mut err);
            panic!("cdsctl viz printed no address: {other:?}\nstderr:\n{err}");
        }
    };
    let addr = url
        .strip_prefix("http://")
        .and_then(|r| r.split('/').next())
        .unwrap();
    let (status, body) = get(addr, "/index.html");
    assert!(status.contains(" 200 "), "{status}\n{body}");
    assert_eq!(
        body,
        std::fs::read_to_string(&built).unwrap(),
        "served a page other than the one built"
    );
}
