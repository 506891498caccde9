//! Writes a trace, one JSON object per line, to any [`io::Write`].
//!
//! The writer is the only place that frames lines, so every producer (the
//! simulator writing to a `Vec<u8>`, a real node writing to a file) emits
//! the same bytes for the same records.

use std::io::{self, Write};

use super::schema::{Header, Record};

/// Appends a header and then records to `W`, one JSON object per line, each
/// line ending in `\n`. Output depends only on the values written, so equal
/// inputs give byte-identical traces.
#[derive(Debug)]
pub struct TraceWriter<W: Write> {
    out: W,
    events: u64,
}

impl<W: Write> TraceWriter<W> {
    /// Writes `header` as line 1 and returns a writer for the events.
    pub fn new(out: W, header: &Header) -> io::Result<Self> {
        let mut writer = TraceWriter { out, events: 0 };
        writer.line(header)?;
        Ok(writer)
    }

    /// Writes one event line.
    pub fn write(&mut self, record: &Record) -> io::Result<()> {
        self.line(record)?;
        self.events += 1;
        Ok(())
    }

    /// The number of event lines written so far (the header not counted).
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The destination, for inspecting what was written so far.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Flushes and returns the destination.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }

    fn line<T: serde::Serialize>(&mut self, value: &T) -> io::Result<()> {
        // Serialize first, so a failure cannot leave half a line behind.
        let mut buf = serde_json::to_vec(value)?;
        buf.push(b'\n');
        self.out.write_all(&buf)
    }
}

impl TraceWriter<Vec<u8>> {
    /// A writer that collects the trace in memory.
    pub fn in_memory(header: &Header) -> Self {
        let mut writer = TraceWriter {
            out: Vec::new(),
            events: 0,
        };
        // Serializing these types only fails on a map with non-string keys,
        // which they do not contain, and a `Vec` never fails to grow.
        if let Err(e) = writer.line(header) {
            unreachable!("writing a trace header to memory failed: {e}");
        }
        writer
    }

    /// Writes one event line to memory; cannot fail.
    pub fn push(&mut self, record: &Record) {
        if let Err(e) = self.write(record) {
            unreachable!("writing a trace record to memory failed: {e}");
        }
    }

    /// Takes every byte written so far (whole lines: the header the first
    /// time, then events), leaving the buffer empty, so a long session can
    /// hand its trace on instead of holding all of it. The event count
    /// keeps counting from where it was.
    pub fn take_written(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// The trace as text. It is valid UTF-8 because JSON output is.
    pub fn into_string(self) -> String {
        match String::from_utf8(self.out) {
            Ok(s) => s,
            Err(e) => unreachable!("serde_json wrote invalid UTF-8: {e}"),
        }
    }
}
