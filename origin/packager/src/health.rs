//! The live packager's state, served as `GET /healthz` (JSON) and `GET /metrics` (Prometheus).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dime_telemetry::prometheus::core::Collector;
use dime_telemetry::prometheus::{Gauge, IntCounter, IntGauge, Opts};
use dime_telemetry::Registry;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What the running packager shares with its health endpoint; updated lock-free (the
/// Prometheus series are atomics too).
#[derive(Debug)]
pub struct LiveState {
    /// The channel name.
    pub channel: String,
    /// Where frames come from (`test-pattern`, `/dev/video0 (Mjpeg)`).
    pub source: String,
    /// Every series below, labelled `channel`.
    registry: Registry,
    /// `dime_packager_running`: 1 while the pipeline runs.
    running: IntGauge,
    /// `dime_packager_frames_total`.
    frames: IntCounter,
    /// `dime_packager_captured_frames_total`.
    captured: IntCounter,
    /// `dime_packager_segments_total`.
    segments: IntCounter,
    /// Wall-clock milliseconds since the epoch when the last segment was listed; 0 = none yet.
    /// Kept exact for [`LiveState::healthy`]; the series below holds it in seconds.
    last_segment_ms: AtomicU64,
    /// `dime_packager_last_segment_timestamp_seconds`.
    last_segment_time: Gauge,
    /// `dime_packager_last_segment_duration_seconds`.
    last_segment_duration: Gauge,
    /// `dime_packager_media_sequence`.
    media_sequence: IntGauge,
    /// `dime_packager_target_duration_seconds`.
    target_duration: IntGauge,
}

impl LiveState {
    /// A stopped packager with nothing written yet.
    pub fn new(channel: &str, source: &str, target_duration: u64) -> Self {
        let registry = Registry::new();
        // The names and help texts are constants, and a label value may be any text: creating
        // and registering the series cannot fail.
        fn add<C: Collector + Clone + 'static>(registry: &Registry, metric: C) -> C {
            registry
                .register(Box::new(metric.clone()))
                .expect("unique metric names");
            metric
        }
        let opts = |name: &str, help: &str| Opts::new(name, help).const_label("channel", channel);
        let counter = |name: &str, help: &str| {
            add(
                &registry,
                IntCounter::with_opts(opts(name, help)).expect("valid metric"),
            )
        };
        let int_gauge = |name: &str, help: &str| {
            add(
                &registry,
                IntGauge::with_opts(opts(name, help)).expect("valid metric"),
            )
        };
        let gauge = |name: &str, help: &str| {
            add(
                &registry,
                Gauge::with_opts(opts(name, help)).expect("valid metric"),
            )
        };
        let running = int_gauge(
            "dime_packager_running",
            "1 while the capture pipeline runs.",
        );
        let frames = counter("dime_packager_frames_total", "Frames encoded since start.");
        let captured = counter(
            "dime_packager_captured_frames_total",
            "Frames captured since start (captured - encoded = dropped by a slow encoder).",
        );
        let segments = counter(
            "dime_packager_segments_total",
            "Segments written and listed since start.",
        );
        let last_segment_time = gauge(
            "dime_packager_last_segment_timestamp_seconds",
            "Unix time when the last segment was listed (0: none yet).",
        );
        let last_segment_duration = gauge(
            "dime_packager_last_segment_duration_seconds",
            "Duration of the last segment.",
        );
        let media_sequence = int_gauge(
            "dime_packager_media_sequence",
            "EXT-X-MEDIA-SEQUENCE of the current playlist.",
        );
        let target = int_gauge(
            "dime_packager_target_duration_seconds",
            "EXT-X-TARGETDURATION of the current playlist.",
        );
        target.set(gauge_value(target_duration));
        Self {
            channel: channel.into(),
            source: source.into(),
            registry,
            running,
            frames,
            captured,
            segments,
            last_segment_ms: AtomicU64::new(0),
            last_segment_time,
            last_segment_duration,
            media_sequence,
            target_duration: target,
        }
    }

    /// Marks the pipeline as running (true) or stopped.
    pub fn set_running(&self, running: bool) {
        self.running.set(i64::from(running));
    }

    /// Whether the pipeline runs.
    fn running(&self) -> bool {
        self.running.get() == 1
    }

    /// Counts one encoded frame.
    pub fn count_frame(&self) {
        self.frames.inc();
    }

    /// Counts one captured frame; captured minus encoded is what the leaky queue dropped
    /// because the encoder fell behind.
    pub fn count_captured(&self) {
        self.captured.inc();
    }

    /// Records a segment listed in the playlist.
    pub fn segment_written(&self, duration: Duration, media_sequence: u64, target_duration: u64) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let now_ms = now.as_millis() as u64;
        self.segments.inc();
        self.last_segment_ms.store(now_ms, Ordering::Relaxed);
        // Whole milliseconds, as the series always had.
        self.last_segment_time.set(now_ms as f64 / 1000.0);
        self.last_segment_duration
            .set(duration.as_millis() as u64 as f64 / 1000.0);
        self.media_sequence.set(gauge_value(media_sequence));
        self.target_duration.set(gauge_value(target_duration));
    }

    /// Frames encoded so far.
    pub fn frames(&self) -> u64 {
        self.frames.get()
    }

    /// Segments written so far.
    pub fn segments(&self) -> u64 {
        self.segments.get()
    }

    /// Healthy: running, and a segment was written within three target durations (a stalled
    /// camera or encoder shows here before viewers notice the playlist stopped moving).
    pub fn healthy(&self, now: SystemTime) -> bool {
        let last = self.last_segment_ms.load(Ordering::Relaxed);
        if !self.running() || last == 0 {
            return false;
        }
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let limit = 3 * 1000 * self.target_duration.get().max(1) as u64;
        now_ms.saturating_sub(last) <= limit
    }

    /// The `/healthz` body.
    pub fn to_json(&self, now: SystemTime) -> serde_json::Value {
        let last = self.last_segment_ms.load(Ordering::Relaxed);
        let last_time = (last > 0).then(|| {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(last)).to_string()
        });
        serde_json::json!({
            "healthy": self.healthy(now),
            "channel": self.channel,
            "source": self.source,
            "running": self.running(),
            "frames": self.frames(),
            "captured_frames": self.captured.get(),
            "segments": self.segments(),
            "last_segment_time": last_time,
            "media_sequence": self.media_sequence.get(),
            "target_duration": self.target_duration.get(),
        })
    }

    /// The `/metrics` body, Prometheus text format 0.0.4, the channel name escaped as a label
    /// value.
    pub fn to_prometheus(&self) -> String {
        // The encoder writes text: nothing is lost.
        String::from_utf8_lossy(&self.registry.render()).into_owned()
    }
}

/// `value` as an integer gauge's value (an i64); a sequence number or duration beyond its range
/// is not one a playlist can carry, and reads as the largest.
fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Binds the health listener (before the pipeline starts, so a taken port fails the start).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `/healthz` and `/metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<LiveState>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors, usually: back off instead of spinning on the error.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&request, &state)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(request: &Request<Incoming>, state: &LiveState) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            content_type
                .parse()
                .unwrap_or(header::HeaderValue::from_static("text/plain")),
        );
        headers.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        response
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match request.uri().path() {
        "/healthz" => {
            let now = SystemTime::now();
            let status = if state.healthy(now) {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body = format!("{}\n", state.to_json(now));
            reply(status, "application/json", body)
        }
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            state.to_prometheus(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /healthz or /metrics\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_only_while_running_and_segments_keep_coming() {
        let state = LiveState::new("camera", "test-pattern", 1);
        let now = SystemTime::now();
        assert!(!state.healthy(now), "nothing written yet");
        state.set_running(true);
        assert!(!state.healthy(now), "running, but no segment yet");
        state.segment_written(Duration::from_millis(1000), 7, 1);
        let written = SystemTime::now();
        assert!(state.healthy(written));
        assert!(state.healthy(written + Duration::from_millis(2900)));
        assert!(
            !state.healthy(written + Duration::from_secs(4)),
            "three target durations without a segment"
        );
        state.set_running(false);
        assert!(!state.healthy(written));
    }

    #[test]
    fn the_json_and_metrics_carry_the_counters() {
        let state = LiveState::new("camera", "test-pattern", 2);
        state.set_running(true);
        state.count_frame();
        state.count_frame();
        state.count_captured();
        state.segment_written(Duration::from_millis(1500), 41, 2);
        let json = state.to_json(SystemTime::now());
        assert_eq!(json["frames"], 2);
        assert_eq!(json["segments"], 1);
        assert_eq!(json["captured_frames"], 1);
        assert_eq!(json["media_sequence"], 41);
        assert_eq!(json["healthy"], true);
        let metrics = state.to_prometheus();
        assert!(metrics.contains("dime_packager_frames_total{channel=\"camera\"} 2\n"));
        assert!(metrics
            .contains("dime_packager_last_segment_duration_seconds{channel=\"camera\"} 1.5\n"));
        assert!(metrics.contains("dime_packager_media_sequence{channel=\"camera\"} 41\n"));
    }

    #[test]
    fn a_channel_name_with_quotes_and_backslashes_is_escaped_not_replaced() {
        let state = LiveState::new("cam \"A\" \\ B", "test-pattern", 2);
        state.count_frame();
        let metrics = state.to_prometheus();
        // Prometheus text format: `\` as `\\`, `"` as `\"` inside a label value.
        assert!(
            metrics.contains("dime_packager_frames_total{channel=\"cam \\\"A\\\" \\\\ B\"} 1\n"),
            "{metrics}"
        );
    }
}
