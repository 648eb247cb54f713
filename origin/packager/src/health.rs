//! The live packager's state, served as `GET /healthz` (JSON) and `GET /metrics` (Prometheus).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What the running packager shares with its health endpoint; updated lock-free.
#[derive(Debug)]
pub struct LiveState {
    /// The channel name.
    pub channel: String,
    /// Where frames come from (`test-pattern`, `/dev/video0 (Mjpeg)`).
    pub source: String,
    running: AtomicBool,
    frames: AtomicU64,
    captured: AtomicU64,
    segments: AtomicU64,
    /// Wall-clock milliseconds since the epoch when the last segment was listed; 0 = none yet.
    last_segment_ms: AtomicU64,
    last_segment_duration_ms: AtomicU64,
    media_sequence: AtomicU64,
    target_duration: AtomicU64,
}

impl LiveState {
    /// A stopped packager with nothing written yet.
    pub fn new(channel: &str, source: &str, target_duration: u64) -> Self {
        Self {
            channel: channel.into(),
            source: source.into(),
            running: AtomicBool::new(false),
            frames: AtomicU64::new(0),
            captured: AtomicU64::new(0),
            segments: AtomicU64::new(0),
            last_segment_ms: AtomicU64::new(0),
            last_segment_duration_ms: AtomicU64::new(0),
            media_sequence: AtomicU64::new(0),
            target_duration: AtomicU64::new(target_duration),
        }
    }

    /// Marks the pipeline as running (true) or stopped.
    pub fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::Relaxed);
    }

    /// Counts one encoded frame.
    pub fn count_frame(&self) {
        self.frames.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one captured frame; captured minus encoded is what the leaky queue dropped
    /// because the encoder fell behind.
    pub fn count_captured(&self) {
        self.captured.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a segment listed in the playlist.
    pub fn segment_written(&self, duration: Duration, media_sequence: u64, target_duration: u64) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.segments.fetch_add(1, Ordering::Relaxed);
        self.last_segment_ms
            .store(now.as_millis() as u64, Ordering::Relaxed);
        self.last_segment_duration_ms
            .store(duration.as_millis() as u64, Ordering::Relaxed);
        self.media_sequence.store(media_sequence, Ordering::Relaxed);
        self.target_duration
            .store(target_duration, Ordering::Relaxed);
    }

    /// Frames encoded so far.
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// Segments written so far.
    pub fn segments(&self) -> u64 {
        self.segments.load(Ordering::Relaxed)
    }

    /// Healthy: running, and a segment was written within three target durations (a stalled
    /// camera or encoder shows here before viewers notice the playlist stopped moving).
    pub fn healthy(&self, now: SystemTime) -> bool {
        let last = self.last_segment_ms.load(Ordering::Relaxed);
        if !self.running.load(Ordering::Relaxed) || last == 0 {
            return false;
        }
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let limit = 3 * 1000 * self.target_duration.load(Ordering::Relaxed).max(1);
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
            "running": self.running.load(Ordering::Relaxed),
            "frames": self.frames(),
            "captured_frames": self.captured.load(Ordering::Relaxed),
            "segments": self.segments(),
            "last_segment_time": last_time,
            "media_sequence": self.media_sequence.load(Ordering::Relaxed),
            "target_duration": self.target_duration.load(Ordering::Relaxed),
        })
    }

    /// The `/metrics` body, Prometheus text format 0.0.4.
    pub fn to_prometheus(&self) -> String {
        let label = format!("channel=\"{}\"", self.channel.replace(['\\', '"'], "_"));
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{{label}}} {value}"
            );
        };
        metric(
            "dime_packager_running",
            "gauge",
            "1 while the capture pipeline runs.",
            f64::from(u8::from(self.running.load(Ordering::Relaxed))),
        );
        metric(
            "dime_packager_frames_total",
            "counter",
            "Frames encoded since start.",
            self.frames() as f64,
        );
        metric(
            "dime_packager_captured_frames_total",
            "counter",
            "Frames captured since start (captured - encoded = dropped by a slow encoder).",
            self.captured.load(Ordering::Relaxed) as f64,
        );
        metric(
            "dime_packager_segments_total",
            "counter",
            "Segments written and listed since start.",
            self.segments() as f64,
        );
        metric(
            "dime_packager_last_segment_timestamp_seconds",
            "gauge",
            "Unix time when the last segment was listed (0: none yet).",
            self.last_segment_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        );
        metric(
            "dime_packager_last_segment_duration_seconds",
            "gauge",
            "Duration of the last segment.",
            self.last_segment_duration_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        );
        metric(
            "dime_packager_media_sequence",
            "gauge",
            "EXT-X-MEDIA-SEQUENCE of the current playlist.",
            self.media_sequence.load(Ordering::Relaxed) as f64,
        );
        metric(
            "dime_packager_target_duration_seconds",
            "gauge",
            "EXT-X-TARGETDURATION of the current playlist.",
            self.target_duration.load(Ordering::Relaxed) as f64,
        );
        out
    }
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
}
