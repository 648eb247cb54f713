//! The access log: one line per request. A request formats its line straight into a shared
//! buffer (no allocation per line, once the buffer has grown), and a thread of the log's own
//! writes what gathered with one write(2) every [`FLUSH_EVERY`], or as soon as [`BATCH`] bytes
//! wait: a request never waits on the disk, and never wakes a thread, but one in a batch.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use dime_telemetry::LogFormat;

use super::files::Outputs;

/// The target of access log lines in the process's `tracing` filter (`RUST_LOG=access=off`
/// turns the access log off) and the JSON lines' `target`.
pub(crate) const ACCESS_TARGET: &str = "access";

/// Lines waiting to be written beyond this many bytes are dropped (and counted): a stalled
/// disk costs log lines, never a request's time or unbounded memory.
const MAX_PENDING: usize = 8 << 20;

/// The longest a line waits before it is written (nginx's `access_log ... flush=`).
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Waiting lines that wake the writer at once (nginx's `access_log ... buffer=`).
const BATCH: usize = 64 << 10;

/// One finished request, as the access log records it.
pub struct AccessRecord<'a> {
    /// The viewer's address.
    pub client: Option<&'a SocketAddr>,
    /// Request method.
    pub method: &'a str,
    /// Host as the viewer sent it.
    pub host: &'a str,
    /// Path and query as the viewer sent them.
    pub path: &'a str,
    /// Status sent, 0 when none could be.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: usize,
    /// Time from arrival to the last byte.
    pub duration: Duration,
    /// Route name, `none` when nothing matched.
    pub route: &'a str,
    /// Backend that answered, if one did.
    pub backend: Option<SocketAddr>,
    /// What the cache did, as `X-Cache-Status` says it; `BYPASS` for an answer of the edge's own.
    pub cache: &'a str,
    /// Error that ended the request, if any.
    pub error: Option<&'a dyn std::fmt::Display>,
    /// The request's id, also sent on the edge's own error answers.
    pub request_id: &'a str,
}

impl AccessRecord<'_> {
    /// Milliseconds, rounded to the microsecond.
    fn duration_ms(&self) -> f64 {
        (self.duration.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
    }
}

/// The writer [`start`] installed.
static WRITER: OnceLock<Arc<AccessWriter>> = OnceLock::new();

/// Logs one finished request. Before [`start`] (a test with its own subscriber), the line goes
/// through `tracing` like any other.
pub fn access(r: &AccessRecord<'_>) {
    // Nothing to format when the access log is filtered out.
    if !tracing::enabled!(target: "access", tracing::Level::INFO) {
        return;
    }
    match WRITER.get() {
        Some(writer) => writer.record(r, SystemTime::now()),
        None => through_tracing(r),
    }
}

/// Starts the access log's writer thread, writing `format` lines to `outputs`' access log.
pub(crate) fn start(format: LogFormat, outputs: Arc<Outputs>) -> std::io::Result<()> {
    let writer = Arc::new(AccessWriter::new(format));
    if WRITER.set(writer.clone()).is_err() {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || writer.run(&outputs))?;
    Ok(())
}

/// Writes the lines still waiting, from the calling thread: for a process about to exit.
pub(crate) fn flush() {
    if let (Some(writer), Some(outputs)) = (WRITER.get(), super::outputs()) {
        let lines = std::mem::take(&mut writer.lock().lines);
        let _ = outputs.write_access(&lines);
    }
}

/// Lines formatted, waiting for the writer thread.
struct Pending {
    lines: Vec<u8>,
    /// Lines dropped since the last batch, because `lines` was full.
    dropped: u64,
}

/// The shared buffer and the writer thread's wake-up.
struct AccessWriter {
    format: LogFormat,
    pending: Mutex<Pending>,
    wake: Condvar,
}

impl AccessWriter {
    fn new(format: LogFormat) -> Self {
        AccessWriter {
            format,
            pending: Mutex::new(Pending {
                lines: Vec::with_capacity(64 << 10),
                dropped: 0,
            }),
            wake: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Formats `r`'s line, stamped `at`, into the buffer; wakes the writer when the line
    /// makes a batch.
    fn record(&self, r: &AccessRecord<'_>, at: SystemTime) {
        let mut pending = self.lock();
        let before = pending.lines.len();
        if before >= MAX_PENDING {
            pending.dropped += 1;
            return;
        }
        // Writing into a Vec cannot fail.
        let _ = line(&mut pending.lines, self.format, r, at);
        let batch = before < BATCH && pending.lines.len() >= BATCH;
        drop(pending);
        if batch {
            self.wake.notify_one();
        }
    }

    /// The writer thread: every [`FLUSH_EVERY`], or when a batch is waiting, takes what
    /// gathered and writes it in one go, forever.
    fn run(&self, outputs: &Outputs) {
        let mut batch: Vec<u8> = Vec::with_capacity(BATCH);
        loop {
            let dropped = {
                let mut pending = self.lock();
                while pending.lines.len() < BATCH {
                    let (next, waited) = self
                        .wake
                        .wait_timeout(pending, FLUSH_EVERY)
                        .unwrap_or_else(PoisonError::into_inner);
                    pending = next;
                    if waited.timed_out() {
                        break;
                    }
                }
                std::mem::swap(&mut pending.lines, &mut batch);
                std::mem::take(&mut pending.dropped)
            };
            if batch.is_empty() && dropped == 0 {
                continue;
            }
            if let Err(e) = outputs.write_access(&batch) {
                tracing::error!(
                    "access log: cannot write {} byte(s) of lines: {e}",
                    batch.len()
                );
            }
            if dropped > 0 {
                tracing::warn!(
                    "access log: {dropped} line(s) dropped: their destination did not keep up"
                );
            }
            batch.clear();
            // A burst's buffer is not kept for ever.
            if batch.capacity() > 1 << 20 {
                batch = Vec::with_capacity(BATCH);
            }
        }
    }
}

/// Formats `r`'s line in `format`, stamped `at`, onto `out`: what each logged request does
/// under the shared buffer's lock.
pub(crate) fn line(
    out: &mut Vec<u8>,
    format: LogFormat,
    r: &AccessRecord<'_>,
    at: SystemTime,
) -> std::io::Result<()> {
    match format {
        LogFormat::Text => text_line(out, r, at),
        LogFormat::Json => json_line(out, r, at),
    }
}

/// `tracing`'s own text layout: `TIMESTAMP  INFO access: key=value ...`, strings quoted.
fn text_line(out: &mut Vec<u8>, r: &AccessRecord<'_>, at: SystemTime) -> std::io::Result<()> {
    write!(
        out,
        "{}  INFO access: client=",
        humantime::format_rfc3339_micros(at)
    )?;
    match r.client {
        Some(c) => write!(out, "{}", c.ip())?,
        None => out.push(b'-'),
    }
    write!(
        out,
        " method={:?} host={:?} path={:?} status={} bytes={} duration_ms={:?} route={:?} backend=",
        r.method,
        r.host,
        r.path,
        r.status,
        r.bytes,
        r.duration_ms(),
        r.route
    )?;
    match r.backend {
        Some(b) => write!(out, "{b}")?,
        None => out.push(b'-'),
    }
    write!(out, " cache={:?} error=", r.cache)?;
    match r.error {
        Some(e) => write!(out, "{:?}", Quoted(e))?,
        None => out.extend_from_slice(b"\"-\""),
    }
    writeln!(out, " request_id={}", r.request_id)
}

/// `tracing`'s flattened JSON layout: one object, the fields beside `timestamp` and `level`.
fn json_line(out: &mut Vec<u8>, r: &AccessRecord<'_>, at: SystemTime) -> std::io::Result<()> {
    write!(
        out,
        "{{\"timestamp\":\"{}\",\"level\":\"INFO\",\"client\":",
        humantime::format_rfc3339_micros(at)
    )?;
    match r.client {
        Some(c) => write!(out, "\"{}\"", c.ip())?,
        None => out.extend_from_slice(b"\"-\""),
    }
    for (key, value) in [("method", r.method), ("host", r.host), ("path", r.path)] {
        write!(out, ",\"{key}\":")?;
        json_string(out, value);
    }
    write!(
        out,
        ",\"status\":{},\"bytes\":{},\"duration_ms\":{:?},\"route\":",
        r.status,
        r.bytes,
        r.duration_ms()
    )?;
    json_string(out, r.route);
    match r.backend {
        Some(b) => write!(out, ",\"backend\":\"{b}\"")?,
        None => out.extend_from_slice(b",\"backend\":\"-\""),
    }
    out.extend_from_slice(b",\"cache\":");
    json_string(out, r.cache);
    out.extend_from_slice(b",\"error\":");
    match r.error {
        Some(e) => {
            // The error's text, escaped as it is written, without a String in between.
            out.push(b'"');
            write!(JsonEscaped(out), "{e}")?;
            out.push(b'"');
        }
        None => out.extend_from_slice(b"\"-\""),
    }
    out.extend_from_slice(b",\"request_id\":");
    json_string(out, r.request_id);
    writeln!(out, ",\"target\":\"{ACCESS_TARGET}\"}}")
}

/// `s` as a JSON string.
fn json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    escape_json(out, s);
    out.push(b'"');
}

/// RFC 8259 §7: quotes, backslashes and control characters escaped, the rest as it is.
fn escape_json(out: &mut Vec<u8>, s: &str) {
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&s.as_bytes()[start..i]);
        if escaped.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.extend_from_slice(escaped);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s.as_bytes()[start..]);
}

/// A writer escaping what goes through it for a JSON string.
struct JsonEscaped<'a>(&'a mut Vec<u8>);

impl std::io::Write for JsonEscaped<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // Display writes whole `str`s: the bytes are UTF-8.
        escape_json(self.0, &String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A `Display` value quoted as `{:?}` quotes a string.
struct Quoted<'a>(&'a dyn std::fmt::Display);

impl std::fmt::Debug for Quoted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        f.write_char('"')?;
        write!(Escaper(f), "{}", self.0)?;
        f.write_char('"')
    }
}

/// Escapes as `str`'s `Debug` does, a piece at a time.
struct Escaper<'a, 'b>(&'a mut std::fmt::Formatter<'b>);

impl std::fmt::Write for Escaper<'_, '_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for c in s.chars() {
            for e in c.escape_debug() {
                self.0.write_char(e)?;
            }
        }
        Ok(())
    }
}

/// The line through `tracing`, for a process whose subscriber is not Dime's.
fn through_tracing(r: &AccessRecord<'_>) {
    let client = r
        .client
        .map(|c| c.ip().to_string())
        .unwrap_or_else(|| "-".into());
    let backend = r
        .backend
        .map(|b| b.to_string())
        .unwrap_or_else(|| "-".into());
    let error = r.error.map(|e| e.to_string());
    tracing::info!(
        target: "access",
        client = %client,
        method = r.method,
        host = r.host,
        path = r.path,
        status = r.status,
        bytes = r.bytes,
        duration_ms = r.duration_ms(),
        route = r.route,
        backend = %backend,
        cache = r.cache,
        error = error.as_deref().unwrap_or("-"),
        request_id = %r.request_id,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(
        client: &'a SocketAddr,
        error: Option<&'a dyn std::fmt::Display>,
    ) -> AccessRecord<'a> {
        AccessRecord {
            client: Some(client),
            method: "GET",
            host: "cdn.example.com",
            path: "/stream/a \"b\"\\c\n.ts?x=1",
            status: 200,
            bytes: 524332,
            duration: Duration::from_micros(3384),
            route: "stream",
            backend: Some("127.0.0.1:8081".parse().unwrap()),
            cache: "MISS",
            error,
            request_id: "5f3a9c0e00000000",
        }
    }

    /// The line `tracing`'s own formatter writes for `r`, to compare with ours.
    fn via_subscriber(format: LogFormat, r: &AccessRecord<'_>) -> String {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let sink = buf.clone();
        let dispatch = dime_telemetry::logs::subscriber(
            format,
            tracing_subscriber::EnvFilter::new("info"),
            false,
            move || sink.clone(),
        );
        tracing::dispatcher::with_default(&dispatch, || through_tracing(r));
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        out
    }

    /// Everything after the timestamp, which differs between two runs.
    fn after_timestamp(line: &str, format: LogFormat) -> String {
        match format {
            LogFormat::Text => line.split_once("  INFO").unwrap().1.to_string(),
            LogFormat::Json => line.split_once("\"level\"").unwrap().1.to_string(),
        }
    }

    #[test]
    fn our_lines_are_the_lines_tracing_wrote_before() {
        let client: SocketAddr = "192.0.2.7:50000".parse().unwrap();
        let error = "Upstream \"ReadTimedout\"\tcontext: é\u{1}";
        for format in [LogFormat::Text, LogFormat::Json] {
            for error in [None, Some(&error as &dyn std::fmt::Display)] {
                let r = record(&client, error);
                let mut ours = Vec::new();
                line(&mut ours, format, &r, SystemTime::now()).unwrap();
                let ours = String::from_utf8(ours).unwrap();
                let theirs = via_subscriber(format, &r);
                assert_eq!(
                    after_timestamp(&ours, format),
                    after_timestamp(&theirs, format),
                    "{format:?}"
                );
                if format == LogFormat::Json {
                    let v: serde_json::Value = serde_json::from_str(&ours).unwrap();
                    assert_eq!(v["path"], r.path);
                    assert_eq!(v["duration_ms"], 3.384);
                }
            }
        }
    }

    #[test]
    fn the_writer_thread_writes_a_lone_line_and_a_batch_whole() {
        use super::super::files::{LogSettings, LogTarget};
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("access.log");
        let outputs = Arc::new(
            Outputs::open(&LogSettings {
                access: LogTarget::File(file.clone()),
                error: LogTarget::Stderr,
            })
            .unwrap(),
        );
        let writer = Arc::new(AccessWriter::new(LogFormat::Text));
        let (w, o) = (writer.clone(), outputs.clone());
        std::thread::spawn(move || w.run(&o));
        let client: SocketAddr = "192.0.2.7:50000".parse().unwrap();
        let r = record(&client, None);
        let text = || std::fs::read_to_string(&file).unwrap_or_default();
        let until = |want: usize| {
            for _ in 0..1000 {
                if text().lines().count() >= want {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            text()
        };
        // One line, which the timer writes.
        writer.record(&r, SystemTime::now());
        assert_eq!(until(1).lines().count(), 1);
        // More than a batch, which wakes the writer; every line whole.
        let batch = 2 * BATCH / 200;
        for _ in 0..batch {
            writer.record(&r, SystemTime::now());
        }
        let all = until(1 + batch);
        assert_eq!(all.lines().count(), 1 + batch);
        assert!(all
            .lines()
            .all(|l| l.ends_with("request_id=5f3a9c0e00000000")));
    }

    #[test]
    fn a_full_buffer_drops_lines_and_counts_them() {
        let writer = AccessWriter::new(LogFormat::Text);
        let client: SocketAddr = "192.0.2.7:50000".parse().unwrap();
        let r = record(&client, None);
        let mut written = 0;
        while writer.lock().lines.len() < MAX_PENDING {
            writer.record(&r, SystemTime::now());
            written += 1;
        }
        for _ in 0..3 {
            writer.record(&r, SystemTime::now());
        }
        let pending = writer.lock();
        assert_eq!(pending.dropped, 3);
        assert_eq!(
            pending.lines.iter().filter(|&&b| b == b'\n').count(),
            written
        );
    }
}
