//! Logs and metrics: JSON log lines through `tracing` (each carrying the
//! request id of the span it was written in) and a Prometheus recorder.

use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use kernel::config::{LogConfig, LogFormat};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Installs the global log subscriber; a second call (tests) is a no-op.
pub fn init_logging(config: &LogConfig) {
    JSON_LINES.store(config.format == LogFormat::Json, std::sync::atomic::Ordering::Relaxed);
    let filter = EnvFilter::try_new(&config.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(LogWriter);
    let _ = match config.format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("http_request_duration_seconds".into()),
                &LATENCY_BUCKETS,
            )
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; then our
        // handle renders an empty page rather than taking the process down.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed");
        }
        handle
    })
}

/// Log lines to stderr, gathered in memory so that a busy server makes one
/// write for many access-log lines instead of one per request (measured:
/// the write per line cost as much as the rest of a cached request).
/// Warnings and errors are written at once with whatever came before them,
/// the rest within [`FLUSH_EVERY`] and at exit ([`flush_logs`]): a crash
/// loses at most that much of the info-level lines.
struct LogWriter;

const FLUSH_EVERY: Duration = Duration::from_millis(50);
const FLUSH_AT_BYTES: usize = 32 * 1024;

fn buffer() -> &'static Mutex<Vec<u8>> {
    static BUFFER: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    BUFFER.get_or_init(|| {
        let spawned = std::thread::Builder::new().name("log-flush".into()).spawn(|| {
            loop {
                std::thread::sleep(FLUSH_EVERY);
                flush_logs();
            }
        });
        if spawned.is_err() {
            eprintln!("no log flusher thread; log lines are written as they come");
        }
        Mutex::new(Vec::with_capacity(FLUSH_AT_BYTES * 2))
    })
}

/// Writes out every gathered log line (on exit, and from the flusher).
pub fn flush_logs() {
    if let Ok(mut buf) = buffer().lock()
        && !buf.is_empty()
    {
        let _ = std::io::stderr().lock().write_all(&buf);
        buf.clear();
    }
}

/// One log line being written; it joins the buffer when dropped.
struct Line {
    bytes: Vec<u8>,
    urgent: bool,
}

impl Write for Line {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let Ok(mut buf) = buffer().lock() else {
            let _ = std::io::stderr().write_all(&self.bytes);
            return;
        };
        buf.extend_from_slice(&self.bytes);
        if self.urgent || buf.len() >= FLUSH_AT_BYTES {
            let _ = std::io::stderr().lock().write_all(&buf);
            buf.clear();
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { bytes: Vec::with_capacity(256), urgent: true }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line {
        Line { bytes: Vec::with_capacity(256), urgent: *meta.level() <= tracing::Level::WARN }
    }
}

/// Whether log lines are JSON (then access lines are written directly).
static JSON_LINES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The access line of one request. With JSON logs it is written here, in
/// the shape of the other lines, without the general formatter: one line
/// per request is the most frequent line there is, and the formatter cost a
/// quarter of a cached request's time.
pub fn access_log(request_id: &str, method: &str, path: &str, status: u16, latency_ms: f64) {
    if !tracing::enabled!(target: "access", tracing::Level::INFO) {
        return;
    }
    if !JSON_LINES.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::info!(target: "access", request_id, method, path, status, latency_ms, "request finished");
        return;
    }
    let now = time::OffsetDateTime::now_utc();
    let timestamp = now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let path = serde_json::to_string(path).unwrap_or_else(|_| "\"\"".into());
    let request_id = serde_json::to_string(request_id).unwrap_or_else(|_| "\"\"".into());
    let mut line = Line { bytes: Vec::with_capacity(256), urgent: false };
    let _ = writeln!(
        line,
        r#"{{"timestamp":"{timestamp}","level":"INFO","message":"request finished","request_id":{request_id},"method":"{method}","path":{path},"status":{status},"latency_ms":{latency_ms:.3},"target":"access"}}"#
    );
}
