//! `cdsctl nbd serve` against the real block tools: `nbdinfo`, `qemu-img`,
//! `qemu-io`, `nbdcopy` and `fio --ioengine=nbd`, on a CDS cluster of real
//! processes; an fio verify run through the kill -9 of the leading
//! BlockServer and a partitioned one; a hostile client sending random and
//! mutated handshakes and requests.
//!
//! The tools are required: `.ci/run` installs them (qemu-utils,
//! libnbd-bin, fio). A missing tool fails the test with its name.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cds::nbd::proto;
use common::cds::{cdsctl, fails, leading_master, ok, processes, Guard};
use common::{bounded, succeeded, text};

/// Runs a block tool, killed after `secs`; a missing tool fails the test.
fn tool(secs: u64, prog: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(prog);
    cmd.args(args);
    let what = format!("{prog} {args:?}");
    bounded(
        cmd,
        secs,
        &what,
        "install it (.ci/run does: qemu-utils, libnbd-bin, fio)",
    )
}

fn tool_ok(secs: u64, prog: &str, args: &[&str]) -> String {
    succeeded(&tool(secs, prog, args), &format!("{prog} {args:?}"))
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A running `cdsctl nbd serve`, killed when dropped.
struct Serve {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn uri(&self, export: &str) -> String {
        format!("nbd://{}/{export}", self.addr)
    }
}

/// Starts `cdsctl nbd serve ARGS` and waits until it prints its exports.
fn serve(dir: &Path, args: &[&str]) -> Serve {
    let addr = free_addr();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cdsctl"))
        .args(["nbd", "serve"])
        .args(args)
        .args(["--listen", &addr.to_string(), "--dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning cdsctl nbd serve");
    let mut stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut first = [0u8; 1];
        let got = stdout.read(&mut first).map(|n| n > 0).unwrap_or(false);
        let _ = tx.send(got);
        // Keep draining so the server never blocks on a full pipe.
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
    });
    let s = Serve { child, addr };
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(60)),
        Ok(true),
        "nbd serve printed nothing within 60 s"
    );
    s
}

fn write_file(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
}

/// Deterministic pseudo-random bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as u8
        })
        .collect()
}

fn cluster(tmp: &Path) -> (PathBuf, Guard) {
    let dir = tmp.join("c");
    let g = Guard { dir: dir.clone() };
    ok(&dir, &["cds", "up", "--groups", "8", "--tick-ms", "20"]);
    (dir, g)
}

#[test]
fn the_block_tools_read_and_write_volumes_over_nbd() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _g) = cluster(tmp.path());
    ok(&dir, &["volume", "create", "v", "--size", "64MiB"]);
    ok(&dir, &["volume", "create", "w", "--size", "32MiB"]);
    ok(&dir, &["volume", "create", "sparse", "--size", "64MiB"]);
    // Wrong arguments: clear errors, nothing served.
    let err = fails(&dir, &["nbd", "serve", "nope"]);
    assert!(err.contains("no volume named \"nope\""), "{err}");
    let err = fails(&dir, &["nbd", "serve", "v", "w", "--name", "x"]);
    assert!(err.contains("single volume"), "{err}");
    let err = fails(&dir, &["nbd", "serve", "v", "v"]);
    assert!(err.contains("given twice"), "{err}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap().to_string();
    let epoch = |d: &Path| {
        let v: serde_json::Value =
            serde_json::from_str(&ok(d, &["volume", "info", "v", "--json"])).expect("info json");
        v["epoch"].as_u64().expect("epoch")
    };
    let before = epoch(&dir);
    let err = fails(&dir, &["nbd", "serve", "v", "--listen", &at]);
    assert!(err.contains(&format!("listening on {at}")), "{err}");
    assert_eq!(
        epoch(&dir),
        before,
        "a serve that could not listen took the volume"
    );
    drop(taken);
    let s = serve(&dir, &["v", "w", "sparse"]);
    let (v, w) = (s.uri("v"), s.uri("w"));

    // Both exports are listed, with their sizes and what they support.
    let list = tool_ok(30, "nbdinfo", &["--list", &s.uri("")]);
    assert!(
        list.contains("export=\"v\"") && list.contains("export=\"w\""),
        "{list}"
    );
    assert!(list.contains("export-size: 67108864"), "{list}");
    assert!(list.contains("can_multi_conn: true"), "{list}");
    assert!(list.contains("block_size_minimum: 1"), "{list}");

    // qemu-img: a raw image of random data in, compared back.
    let img = tmp.path().join("random.img");
    write_file(&img, &noise(1, 64 << 20));
    let i = img.to_str().unwrap();
    tool_ok(
        120,
        "qemu-img",
        &["convert", "-n", "-f", "raw", "-O", "raw", i, &v],
    );
    let cmp = tool_ok(
        120,
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", i, &v],
    );
    assert!(cmp.contains("Images are identical"), "{cmp}");

    // qemu-io: a pattern written and read back; misaligned writes keep
    // the bytes around them; write-zeroes and discard read back as zeros.
    let io = tool_ok(
        60,
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0xab 0 1M",
            "-c",
            "read -P 0xab 0 1M",
            "-c",
            "write -P 0x11 4097 1000",
            "-c",
            "read -P 0x11 4097 1000",
            "-c",
            "read -P 0xab 4096 1",
            "-c",
            "read -P 0xab 5097 100",
            "-c",
            "write -P 0x22 8191 2",
            "-c",
            "read -P 0x22 8191 2",
            "-c",
            "read -P 0xab 8193 4095",
            "-c",
            "write -z 65536 65536",
            "-c",
            "read -P 0 65536 65536",
            "-c",
            "write -z 131073 10",
            "-c",
            "read -P 0 131073 10",
            "-c",
            "read -P 0xab 131083 100",
            "-c",
            "discard 262144 131072",
            "-c",
            "read -P 0 262144 131072",
            &v,
        ],
    );
    assert!(!io.contains("Pattern verification failed"), "{io}");
    assert_eq!(
        io.matches("\nread ").count() + usize::from(io.starts_with("read ")),
        10,
        "{io}"
    );

    // nbdcopy both ways.
    let src = tmp.path().join("src.img");
    let back = tmp.path().join("back.img");
    let data = noise(2, 32 << 20);
    write_file(&src, &data);
    tool_ok(120, "nbdcopy", &[src.to_str().unwrap(), &w]);
    tool_ok(120, "nbdcopy", &[&w, back.to_str().unwrap()]);
    assert!(
        std::fs::read(&back).unwrap() == data,
        "nbdcopy read back differs"
    );

    // fio's own checksums over random writes, 32 in flight.
    let fio = tool_ok(
        180,
        "fio",
        &[
            "--name=verify",
            "--ioengine=nbd",
            &format!("--uri={w}"),
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=32",
            "--size=16M",
            "--verify=crc32c",
            "--verify_state_save=0",
            "--verify_fatal=1",
        ],
    );
    assert!(fio.contains("err= 0"), "{fio}");

    // Block status (base:allocation over structured replies): only the
    // block written is data; a copy to qcow2 skips the rest.
    let sp = s.uri("sparse");
    tool_ok(
        30,
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x77 20M 8k", &sp],
    );
    let map = tool_ok(30, "nbdinfo", &["--map", &sp]);
    let rows: Vec<Vec<&str>> = map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec!["0", "16777216", "3", "hole,zero"],
            vec!["16777216", "16777216", "0", "data"],
            vec!["33554432", "33554432", "3", "hole,zero"],
        ],
        "{map}"
    );
    let q = tmp.path().join("sparse.qcow2");
    let qs = q.to_str().unwrap();
    tool_ok(
        60,
        "qemu-img",
        &["convert", "-f", "raw", "-O", "qcow2", &sp, qs],
    );
    let cmp = tool_ok(
        60,
        "qemu-img",
        &["compare", "-f", "raw", "-F", "qcow2", &sp, qs],
    );
    assert!(cmp.contains("Images are identical"), "{cmp}");
    let size = std::fs::metadata(&q).unwrap().len();
    assert!(
        size < 4 << 20,
        "the qcow2 copy of a sparse volume takes {size} bytes"
    );

    // Past the end: an error, not a hang.
    let past = tool(
        30,
        "qemu-io",
        &["-f", "raw", "-c", "read 67108864 4096", &v],
    );
    let all = text(&past);
    assert!(
        all.contains("Input/output error")
            || all.contains("Invalid argument")
            || all.contains("out of range")
            || all.contains("outside"),
        "{all}"
    );

    // A resize shows on the next connection.
    ok(&dir, &["volume", "resize", "v", "--size", "96MiB"]);
    let info = tool_ok(30, "nbdinfo", &[&v]);
    assert!(info.contains("export-size: 100663296"), "{info}");

    // A second server opening `v` for writing fences the first: its
    // writes are refused, the new one's go through.
    let s2 = serve(&dir, &["v"]);
    let stale = tool(
        30,
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x33 0 4k", &v],
    );
    assert!(
        text(&stale).contains("Operation not permitted"),
        "the fenced server still wrote: {}",
        text(&stale)
    );
    tool_ok(
        30,
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x44 0 4k", &s2.uri("v")],
    );
    let r = tool_ok(30, "qemu-io", &["-f", "raw", "-c", "read -P 0x44 0 4k", &v]);
    assert!(!r.contains("Pattern verification failed"), "{r}");
}

/// Index of the BlockServer leading the most groups, by `cds status`.
fn busiest_server(dir: &Path) -> String {
    processes(dir)
        .iter()
        .filter(|p| p["name"].as_str().unwrap_or("").starts_with('b'))
        .max_by_key(|p| p["leads"].as_u64().unwrap_or(0))
        .expect("a server")["name"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Runs fio with verification for `secs` against `uri` while `fault`
/// runs after `delay`; fio must finish with every block verified.
fn fio_through(uri: &str, size: &str, delay: Duration, fault: impl FnOnce()) -> String {
    let u = format!("--uri={uri}");
    let sz = format!("--size={size}");
    let h = std::thread::spawn(move || {
        let out = tool(
            240,
            "fio",
            &[
                "--name=chaos",
                "--ioengine=nbd",
                &u,
                "--rw=randwrite",
                "--bs=4k",
                "--iodepth=16",
                &sz,
                "--verify=crc32c",
                "--verify_state_save=0",
                "--verify_fatal=1",
                "--output-format=normal",
            ],
        );
        (out, Instant::now())
    });
    std::thread::sleep(delay);
    fault();
    let faulted = Instant::now();
    let (out, ended) = h.join().expect("fio thread");
    // Otherwise the fault proved nothing.
    assert!(
        ended > faulted,
        "fio was done before the fault: make it longer"
    );
    assert!(out.status.success(), "fio failed: {}", text(&out));
    let o = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(o.contains("err= 0"), "{o}");
    for l in o
        .lines()
        .filter(|l| l.contains("clat (") || l.contains("IOPS="))
    {
        eprintln!("fio: {}", l.trim());
    }
    o
}

#[test]
fn an_nbd_session_survives_a_leader_kill_and_a_partition() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _g) = cluster(tmp.path());
    ok(&dir, &["volume", "create", "v", "--size", "128MiB"]);
    let s = serve(&dir, &["v"]);
    let v = s.uri("v");
    // Blocks get groups on first write: write the span fio uses, then
    // kill the leader of the group holding its first block.
    tool_ok(
        60,
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x5a 0 48M", &v],
    );
    let info: serde_json::Value =
        serde_json::from_str(&ok(&dir, &["volume", "info", "v", "--json"])).expect("info json");
    let leader = info["blocks"][0]["leader"]
        .as_u64()
        .expect("block 0's leader");
    let victim = format!("b{leader}");
    let status = ok(&dir, &["cds", "status", "--json"]);
    assert!(
        status.contains(&format!("\"{victim}\"")),
        "no process {victim}: {status}"
    );
    let t = Instant::now();
    fio_through(&v, "48M", Duration::from_millis(1500), || {
        ok(&dir, &["cds", "kill", &victim]);
    });
    eprintln!("fio through the kill of {victim}: {:?}", t.elapsed());
    ok(&dir, &["cds", "restart", &victim]);
    let cut = busiest_server(&dir);
    fio_through(&v, "48M", Duration::from_millis(1500), || {
        ok(&dir, &["cds", "partition", &cut]);
    });
    ok(&dir, &["cds", "heal"]);
}

// A hostile client: the protocol fuzz.

/// Reads exactly `n` bytes, or `None` when the server closed first (or
/// said nothing for 10 s, which fails the caller's check).
fn read_n(s: &mut TcpStream, n: usize) -> Option<Vec<u8>> {
    let mut b = vec![0u8; n];
    s.read_exact(&mut b).ok().map(|()| b)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// The greeting, then the client flags.
fn start(addr: SocketAddr) -> TcpStream {
    let mut s = connect(addr);
    let g = read_n(&mut s, 18).expect("greeting");
    assert_eq!(&g[..8], &proto::NBDMAGIC.to_be_bytes());
    s.write_all(&(proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES).to_be_bytes())
        .unwrap();
    s
}

fn option(s: &mut TcpStream, opt: u32, data: &[u8]) {
    let mut b = Vec::new();
    b.extend_from_slice(&proto::IHAVEOPT.to_be_bytes());
    b.extend_from_slice(&opt.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    let _ = s.write_all(&b);
}

/// One option reply: (option, type, data), or `None` if the server closed.
fn option_reply(s: &mut TcpStream) -> Option<(u32, u32, Vec<u8>)> {
    let h = read_n(s, 20)?;
    assert_eq!(
        &h[..8],
        &proto::OPTION_REPLY_MAGIC.to_be_bytes(),
        "reply magic"
    );
    let be = |a: usize| u32::from_be_bytes([h[a], h[a + 1], h[a + 2], h[a + 3]]);
    let data = read_n(s, be(16) as usize)?;
    Some((be(8), be(12), data))
}

/// An export's name as options carry it: its length, then its bytes.
fn named(export: &str) -> Vec<u8> {
    let mut d = (export.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(export.as_bytes());
    d
}

/// Ends the handshake on `s` with NBD_OPT_GO for `export`: transmission.
fn go_on(mut s: TcpStream, export: &str) -> TcpStream {
    let mut d = named(export);
    d.extend_from_slice(&0u16.to_be_bytes());
    option(&mut s, proto::OPT_GO, &d);
    loop {
        let (_, kind, _) = option_reply(&mut s).expect("a reply to GO");
        if kind == proto::REP_ACK {
            return s;
        }
        assert_eq!(kind, proto::REP_INFO, "GO refused");
    }
}

/// A session in transmission on `export` (by NBD_OPT_GO).
fn go(addr: SocketAddr, export: &str) -> TcpStream {
    go_on(start(addr), export)
}

/// A session in transmission with structured replies and
/// `base:allocation` negotiated.
fn structured_go(addr: SocketAddr, export: &str) -> TcpStream {
    let mut s = start(addr);
    option(&mut s, proto::OPT_STRUCTURED_REPLY, &[]);
    assert_eq!(option_reply(&mut s).map(|r| r.1), Some(proto::REP_ACK));
    let mut d = named(export);
    d.extend_from_slice(&1u32.to_be_bytes());
    d.extend_from_slice(&named(proto::BASE_ALLOCATION));
    option(&mut s, proto::OPT_SET_META_CONTEXT, &d);
    assert_eq!(
        option_reply(&mut s).map(|r| r.1),
        Some(proto::REP_META_CONTEXT)
    );
    assert_eq!(option_reply(&mut s).map(|r| r.1), Some(proto::REP_ACK));
    go_on(s, export)
}

/// Sends a READ or BLOCK_STATUS and reads its reply, simple or chunks up
/// to the one marked done: (error, bytes the data, holes or extents cover).
fn structured_request(s: &mut TcpStream, r: proto::Request) -> Option<(u32, u64)> {
    s.write_all(&proto::encode_request(&r)).ok()?;
    let (mut err, mut covered) = (0, 0u64);
    loop {
        let magic = read_n(s, 4)?;
        if magic == proto::SIMPLE_REPLY_MAGIC.to_be_bytes() {
            assert_ne!(
                r.kind,
                proto::CMD_READ,
                "a simple reply to a structured read"
            );
            let rest = read_n(s, 12)?;
            assert_eq!(&rest[4..], &r.handle.to_be_bytes(), "reply handle");
            return Some((
                u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]),
                covered,
            ));
        }
        assert_eq!(
            magic,
            proto::STRUCTURED_REPLY_MAGIC.to_be_bytes(),
            "reply magic"
        );
        let h = read_n(s, 16)?;
        let flags = u16::from_be_bytes([h[0], h[1]]);
        let kind = u16::from_be_bytes([h[2], h[3]]);
        assert_eq!(&h[4..12], &r.handle.to_be_bytes(), "chunk handle");
        let len = u32::from_be_bytes([h[12], h[13], h[14], h[15]]) as usize;
        let p = read_n(s, len)?;
        let be32 = |a: usize| u32::from_be_bytes([p[a], p[a + 1], p[a + 2], p[a + 3]]);
        match kind {
            proto::REPLY_TYPE_OFFSET_DATA => covered += (len - 8) as u64,
            proto::REPLY_TYPE_OFFSET_HOLE => covered += u64::from(be32(8)),
            proto::REPLY_TYPE_BLOCK_STATUS => {
                assert_eq!(be32(0), proto::BASE_ALLOCATION_ID);
                let mut n = 0u64;
                for e in p[4..].chunks_exact(8) {
                    n += u64::from(u32::from_be_bytes([e[0], e[1], e[2], e[3]]));
                }
                // With REQ_ONE one extent may cover less than asked.
                covered += if r.flags & proto::CMD_FLAG_REQ_ONE != 0 {
                    u64::from(r.len)
                } else {
                    n
                };
            }
            proto::REPLY_TYPE_ERROR => err = be32(0),
            proto::REPLY_TYPE_NONE => {}
            other => panic!("chunk type {other}"),
        }
        if flags & proto::REPLY_FLAG_DONE != 0 {
            return Some((err, covered));
        }
    }
}

/// Sends a request (and payload) and reads its simple reply: (error, data).
fn request(s: &mut TcpStream, r: proto::Request, payload: &[u8]) -> Option<(u32, Vec<u8>)> {
    s.write_all(&proto::encode_request(&r)).ok()?;
    s.write_all(payload).ok()?;
    let h = read_n(s, 16)?;
    assert_eq!(
        &h[..4],
        &proto::SIMPLE_REPLY_MAGIC.to_be_bytes(),
        "reply magic"
    );
    assert_eq!(&h[8..], &r.handle.to_be_bytes(), "reply handle");
    let err = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    let data = if err == 0 && r.kind == proto::CMD_READ {
        read_n(s, r.len as usize)?
    } else {
        Vec::new()
    };
    Some((err, data))
}

fn rng(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

#[test]
fn a_hostile_client_gets_errors_or_a_closed_connection_never_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _g) = cluster(tmp.path());
    ok(&dir, &["volume", "create", "f", "--size", "16MiB"]);
    let mut srv = serve(&dir, &["f"]);
    let addr = srv.addr;
    let size = 16u64 << 20;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;

    // Known data to find intact at the end.
    let mut s = go(addr, "f");
    let known = noise(3, 8192);
    let w = proto::Request {
        flags: 0,
        kind: proto::CMD_WRITE,
        handle: 1,
        offset: 0,
        len: 8192,
    };
    assert_eq!(request(&mut s, w, &known).map(|r| r.0), Some(0));
    drop(s);

    // Random bytes instead of client flags and options.
    for round in 0..40 {
        let mut s = connect(addr);
        let _ = read_n(&mut s, 18);
        let n = (rng(&mut seed) % 200) as usize;
        let junk: Vec<u8> = (0..n).map(|_| rng(&mut seed) as u8).collect();
        let _ = s.write_all(&junk);
        let _ = s.shutdown(std::net::Shutdown::Write);
        // Whatever it answers, it must end the session, not hang.
        let mut rest = Vec::new();
        if let Err(e) = s.read_to_end(&mut rest) {
            assert!(
                !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "round {round}: the server neither answered nor closed"
            );
        }
    }

    // Unknown and malformed options get error replies; the session goes on.
    let mut s = start(addr);
    for _ in 0..100 {
        let opt = match rng(&mut seed) % 4 {
            0 => proto::OPT_GO,
            1 => proto::OPT_INFO,
            2 => proto::OPT_LIST,
            _ => 8 + (rng(&mut seed) % 100) as u32,
        };
        let n = (rng(&mut seed) % 64) as usize;
        let data: Vec<u8> = (0..n).map(|_| rng(&mut seed) as u8).collect();
        option(&mut s, opt, &data);
        // Read replies until this option's final one.
        loop {
            let (o, kind, _) = option_reply(&mut s).expect("an option got no reply");
            assert_eq!(o, opt);
            if kind == proto::REP_ACK && opt == proto::OPT_GO {
                panic!("GO with random data succeeded");
            }
            if kind == proto::REP_ACK || kind & (1 << 31) != 0 {
                break;
            }
        }
    }
    option(&mut s, proto::OPT_ABORT, &[]);
    assert_eq!(option_reply(&mut s).map(|r| r.1), Some(proto::REP_ACK));
    drop(s);

    // Unknown client flags, a wrong option magic, an oversized option:
    // the connection is closed.
    let mut s = connect(addr);
    let _ = read_n(&mut s, 18);
    s.write_all(&0x80u32.to_be_bytes()).unwrap();
    assert!(read_n(&mut s, 1).is_none(), "unknown client flags accepted");
    let mut s = start(addr);
    s.write_all(&[0u8; 16]).unwrap();
    assert!(
        read_n(&mut s, 1).is_none(),
        "an option without its magic accepted"
    );
    let mut s = start(addr);
    option(&mut s, proto::OPT_LIST, &[]);
    let mut b = proto::IHAVEOPT.to_be_bytes().to_vec();
    b.extend_from_slice(&proto::OPT_INFO.to_be_bytes());
    b.extend_from_slice(&u32::MAX.to_be_bytes());
    let _ = s.write_all(&b);
    let mut closed = false;
    for _ in 0..3 {
        if option_reply(&mut s).is_none() {
            closed = true;
            break;
        }
    }
    assert!(closed, "a 4 GiB option was not refused by closing");

    // Random requests: each gets a reply with its handle (an error where
    // it is wrong), or the connection closes when the stream cannot be
    // kept in step; never a crash or a hang.
    let mut s = go(addr, "f");
    let mut errors = 0;
    for handle in 100..400u64 {
        let kind = match rng(&mut seed) % 6 {
            0 => proto::CMD_READ,
            1 => proto::CMD_WRITE,
            2 => proto::CMD_TRIM,
            3 => proto::CMD_WRITE_ZEROES,
            4 => proto::CMD_FLUSH,
            _ => 9 + (rng(&mut seed) % 50) as u16,
        };
        let flags = if rng(&mut seed).is_multiple_of(4) {
            rng(&mut seed) as u16
        } else {
            0
        };
        let offset = match rng(&mut seed) % 3 {
            0 => 8192 + rng(&mut seed) % (size - 8192),
            1 => size - rng(&mut seed) % 8192,
            _ => rng(&mut seed),
        };
        let len = (rng(&mut seed) % 70_000) as u32;
        let payload = if kind == proto::CMD_WRITE {
            noise(handle, len as usize)
        } else {
            Vec::new()
        };
        let r = proto::Request {
            flags,
            kind,
            handle,
            offset,
            len,
        };
        let (err, _) = request(&mut s, r, &payload).expect("no reply to a request");
        let past = offset.checked_add(u64::from(len)).is_none_or(|e| e > size);
        let unknown = !matches!(kind, 0..=4 | 6) || flags & !proto::CMD_FLAGS_KNOWN != 0;
        if past || unknown {
            assert_ne!(err, 0, "{r:?} succeeded");
            errors += 1;
        } else if kind == proto::CMD_WRITE || kind == proto::CMD_READ {
            assert_eq!(err, 0, "{r:?} failed");
        }
    }
    assert!(
        errors > 50,
        "only {errors} requests were wrong: the fuzz is too tame"
    );
    // A write announcing more than the maximum payload ends the session.
    let huge = proto::Request {
        flags: 0,
        kind: proto::CMD_WRITE,
        handle: 9,
        offset: 0,
        len: u32::MAX,
    };
    let _ = s.write_all(&proto::encode_request(&huge));
    assert!(
        read_n(&mut s, 1).is_none(),
        "a 4 GiB write was not refused by closing"
    );
    // A client that leaves in the middle of a write's payload.
    let mut s = go(addr, "f");
    let half = proto::Request {
        flags: 0,
        kind: proto::CMD_WRITE,
        handle: 10,
        offset: 0,
        len: 4096,
    };
    s.write_all(&proto::encode_request(&half)).unwrap();
    s.write_all(&[0xee; 100]).unwrap();
    drop(s);

    // The same with structured replies and block status negotiated:
    // every read gets chunks ending in one marked done, data where the
    // volume has it, an error chunk where the request is wrong.
    let mut s = structured_go(addr, "f");
    for handle in 500..700u64 {
        let kind = if rng(&mut seed).is_multiple_of(2) {
            proto::CMD_READ
        } else {
            proto::CMD_BLOCK_STATUS
        };
        let flags = match rng(&mut seed) % 4 {
            0 => rng(&mut seed) as u16,
            1 => proto::CMD_FLAG_REQ_ONE,
            _ => 0,
        };
        let offset = match rng(&mut seed) % 3 {
            0 => rng(&mut seed) % size,
            1 => size - rng(&mut seed) % 8192,
            _ => rng(&mut seed),
        };
        let len = 1 + (rng(&mut seed) % 70_000) as u32;
        let r = proto::Request {
            flags,
            kind,
            handle,
            offset,
            len,
        };
        let (err, got) = structured_request(&mut s, r).expect("no reply to a structured request");
        let past = offset.checked_add(u64::from(len)).is_none_or(|e| e > size);
        let bad_flags = flags & !proto::CMD_FLAGS_KNOWN != 0;
        if past || bad_flags {
            assert_ne!(err, 0, "{r:?} succeeded");
        } else {
            assert_eq!(err, 0, "{r:?} failed");
            assert_eq!(got, u64::from(len), "{r:?}: the chunks cover {got} bytes");
        }
    }
    drop(s);

    // The server lives and the known data is intact.
    assert!(srv.child.try_wait().unwrap().is_none(), "the server died");
    let mut s = go(addr, "f");
    let r = proto::Request {
        flags: 0,
        kind: proto::CMD_READ,
        handle: 2,
        offset: 0,
        len: 8192,
    };
    let (err, data) = request(&mut s, r, &[]).expect("a read after the fuzz");
    assert_eq!(err, 0);
    assert!(data == known, "the data written before the fuzz changed");
    drop(s);
    let info = tool_ok(30, "nbdinfo", &[&srv.uri("f")]);
    assert!(info.contains("export-size: 16777216"), "{info}");
    let _ = &mut srv;
}

// Snapshots, rollback and clones, through the block tools.

/// The task list as `volume tasks --json` prints it.
fn tasks(dir: &Path) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(&ok(dir, &["volume", "tasks", "--json"]))
        .expect("tasks json")
        .as_array()
        .expect("a list")
        .clone()
}

#[test]
fn snapshots_rollback_and_clones_through_the_block_tools() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _g) = cluster(tmp.path());
    ok(&dir, &["volume", "create", "v", "--size", "64MiB"]);
    let s = serve(&dir, &["v"]);
    let v = s.uri("v");
    // The image the first snapshot must hold, written through qemu-img.
    let img = tmp.path().join("a.img");
    write_file(&img, &noise(7, 64 << 20));
    let a = img.to_str().unwrap();
    tool_ok(
        120,
        "qemu-img",
        &["convert", "-n", "-f", "raw", "-O", "raw", a, &v],
    );
    let took = ok(&dir, &["volume", "snapshot", "v", "s1"]);
    assert!(took.contains("done in"), "{took}");
    // Writes after the snapshot change the head, not the snapshot.
    tool_ok(
        60,
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0xcd 8M 8M", &v],
    );

    // fio's verify over the head while snapshots are taken under it.
    let d = dir.clone();
    fio_through(&v, "32M", Duration::from_millis(500), move || {
        for i in 2..=4 {
            ok(&d, &["volume", "snapshot", "v", &format!("s{i}")]);
            std::thread::sleep(Duration::from_millis(300));
        }
    });

    // The snapshot over NBD, read-only, is exactly the image written
    // before it, whatever came after.
    let snap = serve(&dir, &["v@s1", "--name", "snap1"]);
    let s1 = snap.uri("snap1");
    let cmp = tool_ok(
        120,
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", a, &s1],
    );
    assert!(cmp.contains("identical"), "{cmp}");
    let w = tool(
        30,
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x01 0 4k", &s1],
    );
    assert!(!w.status.success(), "a snapshot export took a write");

    // A clone of s1: the snapshot's bytes at once, then its own.
    let clone = ok(&dir, &["volume", "clone", "v@s1", "c1"]);
    assert!(clone.contains("done in"), "{clone}");
    let cs = serve(&dir, &["c1"]);
    let c1 = cs.uri("c1");
    let cmp = tool_ok(
        120,
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", a, &c1],
    );
    assert!(cmp.contains("identical"), "{cmp}");
    tool_ok(
        60,
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0xee 1M 64k",
            "-c",
            "read -P 0xee 1M 64k",
            &c1,
        ],
    );
    let cmp = tool_ok(
        120,
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", a, &s1],
    );
    assert!(
        cmp.contains("identical"),
        "a clone's write reached its origin: {cmp}"
    );
    let err = fails(&dir, &["volume", "snapshot-rm", "v", "s1"]);
    assert!(err.contains("clone"), "{err}");

    // The SnapshotWorker killed in the middle of a rollback, and the
    // leading Master with it: the task waits, in the Master's state; a
    // restarted worker finishes it under the new leading Master. The
    // worker is paced first (4 groups a second: a task on the 8 groups
    // takes 2 s) so that it can be killed in the middle of one.
    ok(&dir, &["cds", "kill", "w1"]);
    let wcfg = dir.join("w1").join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&wcfg).expect("w1 config")).expect("json");
    cfg["groups_per_second"] = 4.into();
    std::fs::write(&wcfg, serde_json::to_vec(&cfg).unwrap()).expect("w1 config");
    ok(&dir, &["cds", "restart", "w1"]);
    ok(&dir, &["volume", "rollback", "v", "s1", "--no-wait"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let running = loop {
        let t: Vec<_> = tasks(&dir)
            .into_iter()
            .filter(|t| t["state"] == "running")
            .collect();
        assert_eq!(t.len(), 1, "{t:?}");
        if t[0]["done"].as_u64().unwrap_or(0) > 0 {
            break t[0].clone();
        }
        assert!(Instant::now() < deadline, "no progress: {t:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    ok(&dir, &["cds", "kill", "w1"]);
    let (done, total) = (
        running["done"].as_u64().unwrap(),
        running["total"].as_u64().unwrap(),
    );
    assert!(done > 0 && done < total, "not mid-task: {running}");
    let master = leading_master(&dir);
    ok(&dir, &["cds", "kill", &master]);
    // Still under way with no worker, and in the new leader's state.
    let deadline = Instant::now() + Duration::from_secs(30);
    let t = loop {
        let out = cdsctl(&dir, &["volume", "tasks", "--json"]);
        if out.status.success() {
            break serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("tasks json");
        }
        assert!(
            Instant::now() < deadline,
            "no Master answers: {}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let t = t.as_array().expect("a list");
    assert!(
        t.iter()
            .any(|t| t["state"] == "running" && t["kind"]["kind"] == "rollback"),
        "{t:?}"
    );
    let err = fails(&dir, &["volume", "snapshot", "v", "s5"]);
    assert!(err.contains("under way"), "{err}");
    ok(&dir, &["cds", "restart", "w1"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while tasks(&dir).iter().any(|t| t["state"] == "running") {
        assert!(
            Instant::now() < deadline,
            "the restarted worker did not finish the rollback"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every reader sees the snapshot; the writer's session goes on, on top
    // of it.
    let cmp = tool_ok(
        120,
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", a, &v],
    );
    assert!(cmp.contains("identical"), "after the rollback: {cmp}");
    ok(&dir, &["cds", "restart", &master]);
    tool_ok(
        60,
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0x42 0 64k",
            "-c",
            "read -P 0x42 0 64k",
            &v,
        ],
    );

    // Listing and removing; the later snapshots survived the rollback.
    let list = ok(&dir, &["volume", "snapshots", "v"]);
    for name in ["s1", "s2", "s3", "s4"] {
        assert!(list.contains(name), "{name} missing: {list}");
    }
    ok(&dir, &["volume", "snapshot-rm", "v", "s3"]);
    let list = ok(&dir, &["volume", "snapshots", "v"]);
    assert!(!list.contains("s3 ") && list.contains("s4"), "{list}");

    // fio's verify goes on over the same export after the rollback (a
    // verify cannot span the rollback itself: the rollback undoes what it
    // would check), with a snapshot taken and one removed under it, the
    // worker unpaced again.
    ok(&dir, &["cds", "kill", "w1"]);
    cfg["groups_per_second"] = 0.into();
    std::fs::write(&wcfg, serde_json::to_vec(&cfg).unwrap()).expect("w1 config");
    ok(&dir, &["cds", "restart", "w1"]);
    let d = dir.clone();
    fio_through(&v, "32M", Duration::from_millis(300), move || {
        ok(&d, &["volume", "snapshot", "v", "s5"]);
        ok(&d, &["volume", "snapshot-rm", "v", "s4"]);
    });
    let list = ok(&dir, &["volume", "snapshots", "v"]);
    assert!(!list.contains("s4 ") && list.contains("s5"), "{list}");
}
