//! Standard output for every command, and what happens when its reader
//! goes away.
//!
//! Rust starts programs with SIGPIPE ignored, so a write to a pipe whose
//! reader has exited (`cdsctl kv up | head -1`) fails with `BrokenPipe`,
//! and `println!` panics on that failure. A command-line tool should
//! instead stop quietly, as `cat` does.
//!
//! Restoring the default SIGPIPE disposition for the whole process would
//! do that, but would also let a socket kill it: hyper writes with
//! `writev`, which (unlike `send`) has no `MSG_NOSIGNAL`, so a node that
//! goes away in the middle of a write would kill `cdsctl node`, `cdsctl
//! viz`, or `cdsctl top` with its load generator running, instead of
//! failing one request. So SIGPIPE stays ignored, and everything printed
//! goes through [`out!`], [`outln!`] or [`Stdout`]: when standard output
//! is found closed, the process ends then by SIGPIPE (what a shell
//! expects of a pipeline's writer), with no message.
//! `clippy::print_stdout` (denied in `main.rs`) keeps `println!` out.

use std::fmt;
use std::io::{self, ErrorKind, Write};

/// Prints to standard output like `print!`; a closed output ends the
/// process quietly ([`closed`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::stdout::print(format_args!($($arg)*))
    };
}

/// Prints a line to standard output like `println!`; a closed output ends
/// the process quietly ([`closed`]).
macro_rules! outln {
    () => {
        $crate::stdout::print(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::stdout::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Standard output as a [`Write`] (for writers that stream, such as a
/// trace to `-`): a closed output ends the process quietly, any other
/// error is returned.
pub struct Stdout(io::StdoutLock<'static>);

impl Stdout {
    /// Locks standard output for this writer's lifetime.
    pub fn lock() -> Stdout {
        Stdout(io::stdout().lock())
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(check)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().map_err(check)
    }
}

/// Ends the process if `e` says the reader of standard output has gone.
fn check(e: io::Error) -> io::Error {
    if e.kind() == ErrorKind::BrokenPipe {
        closed();
    }
    e
}

/// What [`out!`] and [`outln!`] call. An error other than a closed output
/// (a full disk behind a redirection) is reported and ends the process
/// with status 1, where `println!` would panic.
pub fn print(args: fmt::Arguments<'_>) {
    let mut out = Stdout::lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        eprintln!("cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// Ends the process as the default SIGPIPE disposition would have: killed
/// by SIGPIPE, nothing printed.
pub fn closed() -> ! {
    // SAFETY: plain libc calls with constant arguments; nothing else in
    // this process relies on SIGPIPE being ignored from here on, as it is
    // about to end.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    // Not reached: SIGPIPE's default action ends the process.
    std::process::exit(128 + libc::SIGPIPE)
}
