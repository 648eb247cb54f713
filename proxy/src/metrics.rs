//! Prometheus metrics: every `dime_*` series the edge exports, in one registry.

use dime_telemetry::Registry;
use prometheus::{
    Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

/// The edge's metrics.
pub struct Metrics {
    registry: Registry,
    /// `dime_requests_total{route, status_class}`: requests answered.
    pub requests: IntCounterVec,
    /// `dime_request_duration_seconds{route}`: time from request to last byte sent.
    pub request_duration: HistogramVec,
    /// `dime_upstream_requests_total{pool, backend, outcome}`: attempts to reach an origin.
    pub upstream_requests: IntCounterVec,
    /// `dime_backend_healthy{pool, backend}`: 1 when the health check passes.
    pub backend_healthy: IntGaugeVec,
    /// `dime_pool_panic_picks_total{pool}`: backends tried although marked down, because no
    /// healthy one was left to try (panic mode).
    pub pool_panic_picks: IntCounterVec,
    /// `dime_sent_bytes_total{route}`: response body bytes sent to viewers.
    pub sent_bytes: IntCounterVec,
    /// `dime_requests_in_flight`: requests being served now.
    pub in_flight: IntGauge,
    /// `dime_connections_open`: viewer connections open now, idle keep-alive ones included.
    pub connections_open: IntGauge,
    /// `dime_listener_connections_open{listener, protocol}`: the same, by listener and protocol.
    pub listener_connections_open: IntGaugeVec,
    /// `dime_connections_refused_total{listener}`: connections closed at accept because
    /// `server.max_connections` were open.
    pub connections_refused: IntCounterVec,
    /// `dime_connection_timeouts_total{listener, kind}`: connections closed by the header or
    /// the keep-alive timeout.
    pub connection_timeouts: IntCounterVec,
    /// `dime_start_time_seconds`: Unix time the process started.
    pub start_time: Gauge,
    /// `dime_build_info{version}`: always 1.
    pub build_info: IntGaugeVec,
    /// `dime_cache_requests_total{route, status}`: requests by cache status (HIT, MISS...).
    pub cache_requests: IntCounterVec,
    /// `dime_cache_served_bytes_total{route}`: body bytes served from the cache.
    pub cache_served_bytes: IntCounterVec,
    /// `dime_cache_objects`: objects stored.
    pub cache_objects: IntGauge,
    /// `dime_cache_size_bytes`: bytes stored, as counted against the limit.
    pub cache_size_bytes: IntGauge,
    /// `dime_cache_capacity_bytes`: the limit.
    pub cache_capacity_bytes: IntGauge,
    /// `dime_cache_evictions_total`: objects evicted to make room.
    pub cache_evictions: IntCounter,
    /// `dime_cache_coalesced_waits_total{route}`: requests that waited for another's fill.
    pub cache_coalesced_waits: IntCounterVec,
    /// `dime_cache_fill_bytes`: body bytes held by fills in progress.
    pub cache_fill_bytes: IntGauge,
    /// `dime_cache_fills_demoted_total`: fills that found the fill budget spent and streamed
    /// through uncached.
    pub cache_fills_demoted: IntCounter,
    /// `dime_cache_body_files`: stored bodies held in memory files.
    pub cache_body_files: IntGauge,
    /// `dime_cache_sendfile_bytes_total`: hit body bytes sent from those files.
    pub cache_sendfile_bytes: IntCounter,
    /// `dime_cache_bodies_in_memory_total`: bodies large enough for a file kept in ordinary
    /// memory.
    pub cache_bodies_in_memory: IntCounter,
    /// `dime_cache_variants_refused_total`: responses not stored because their URL already
    /// had a route's `max_variants` stored.
    pub cache_variants_refused: IntCounter,
    /// `dime_cache_purges_total{kind}`: purge API calls by kind (url, prefix, all).
    pub cache_purges: IntCounterVec,
    /// `dime_config_reloads_total{result}`: reload attempts by result (applied, unchanged,
    /// rejected).
    pub config_reloads: IntCounterVec,
    /// `dime_config_last_reload_success_timestamp_seconds`: when the active config was
    /// loaded (startup counts).
    pub config_last_success: Gauge,
    /// `dime_config_info{hash}`: 1 for the active config's content hash, no other series.
    pub config_info: IntGaugeVec,
    /// `dime_config_restart_required`: 1 when the active config changes something only a
    /// restart applies (listeners, threads, cache memory).
    pub config_restart_required: IntGauge,
    /// `dime_tls_certificate_expiry_timestamp_seconds{cert}`: notAfter of each served
    /// certificate, for alerts before it lapses.
    pub tls_cert_expiry: IntGaugeVec,
}

impl Metrics {
    /// Creates and registers every series.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "dime_requests_total",
                "Requests answered, by route and status class.",
            ),
            &["route", "status_class"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "dime_request_duration_seconds",
                "Time from request arrival to the last response byte, by route.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["route"],
        )
        .expect("valid metric");
        let upstream_requests = IntCounterVec::new(
            Opts::new(
                "dime_upstream_requests_total",
                "Attempts to reach an origin backend, by pool, backend and outcome.",
            ),
            &["pool", "backend", "outcome"],
        )
        .expect("valid metric");
        let backend_healthy = IntGaugeVec::new(
            Opts::new(
                "dime_backend_healthy",
                "1 when the backend passes its active health check, 0 when it is ejected.",
            ),
            &["pool", "backend"],
        )
        .expect("valid metric");
        let pool_panic_picks = IntCounterVec::new(
            Opts::new(
                "dime_pool_panic_picks_total",
                "Backends tried although marked down, because no healthy backend was left to try (panic mode), by pool.",
            ),
            &["pool"],
        )
        .expect("valid metric");
        let sent_bytes = IntCounterVec::new(
            Opts::new(
                "dime_sent_bytes_total",
                "Response body bytes sent to clients, by route.",
            ),
            &["route"],
        )
        .expect("valid metric");
        let in_flight = IntGauge::new("dime_requests_in_flight", "Requests being served now.")
            .expect("valid metric");
        let connections_open = IntGauge::new(
            "dime_connections_open",
            "Viewer connections open now, on every HTTP and HTTPS listener, idle keep-alive ones included.",
        )
        .expect("valid metric");
        let listener_connections_open = IntGaugeVec::new(
            Opts::new(
                "dime_listener_connections_open",
                "Viewer connections open now, by listener and protocol (http/1.1, h2); a cleartext connection counts as http/1.1 until its first bytes show the HTTP/2 preface.",
            ),
            &["listener", "protocol"],
        )
        .expect("valid metric");
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "dime_connections_refused_total",
                "Viewer connections closed at accept, before TLS or any byte read, because server.max_connections were open, by listener.",
            ),
            &["listener"],
        )
        .expect("valid metric");
        let connection_timeouts = IntCounterVec::new(
            Opts::new(
                "dime_connection_timeouts_total",
                "Viewer connections closed by a timeout, by listener and kind: header (server.header_timeout passed before the first request header) or keepalive (server.keepalive_timeout passed waiting for the next request).",
            ),
            &["listener", "kind"],
        )
        .expect("valid metric");
        let start_time = Gauge::new("dime_start_time_seconds", "Unix time the process started.")
            .expect("valid metric");
        start_time.set(unix_now());
        let build_info = IntGaugeVec::new(
            Opts::new("dime_build_info", "Build information; always 1."),
            &["version"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let cache_requests = IntCounterVec::new(
            Opts::new("dime_cache_requests_total", "Requests by route and cache status (HIT, MISS, STALE, UPDATING, EXPIRED, REVALIDATED, BYPASS)."),
            &["route", "status"],
        )
        .expect("valid metric");
        let cache_served_bytes = IntCounterVec::new(
            Opts::new(
                "dime_cache_served_bytes_total",
                "Response body bytes served from the cache, by route.",
            ),
            &["route"],
        )
        .expect("valid metric");
        let cache_objects =
            IntGauge::new("dime_cache_objects", "Objects in the cache.").expect("valid metric");
        let cache_size_bytes = IntGauge::new(
            "dime_cache_size_bytes",
            "Bytes in the cache, bodies, headers and bookkeeping.",
        )
        .expect("valid metric");
        let cache_capacity_bytes =
            IntGauge::new("dime_cache_capacity_bytes", "The cache's memory limit.")
                .expect("valid metric");
        let cache_evictions = IntCounter::new(
            "dime_cache_evictions_total",
            "Objects evicted to make room.",
        )
        .expect("valid metric");
        let cache_coalesced_waits = IntCounterVec::new(
            Opts::new(
                "dime_cache_coalesced_waits_total",
                "Requests that waited for another request's fill instead of going to the origin.",
            ),
            &["route"],
        )
        .expect("valid metric");
        let cache_fill_bytes = IntGauge::new(
            "dime_cache_fill_bytes",
            "Body bytes held by fills in progress, against cache.fill_memory.",
        )
        .expect("valid metric");
        let cache_fills_demoted = IntCounter::new(
            "dime_cache_fills_demoted_total",
            "Fills that found cache.fill_memory spent: streamed to their viewers at the slowest one's pace and not stored.",
        )
        .expect("valid metric");
        let cache_body_files = IntGauge::new(
            "dime_cache_body_files",
            "Stored bodies of 256 KiB or more held in memory files, which plain HTTP/1.1 hits send with sendfile.",
        )
        .expect("valid metric");
        let cache_sendfile_bytes = IntCounter::new(
            "dime_cache_sendfile_bytes_total",
            "Body bytes of cache hits sent from memory files with sendfile, not copied into the socket.",
        )
        .expect("valid metric");
        let cache_bodies_in_memory = IntCounter::new(
            "dime_cache_bodies_in_memory_total",
            "Bodies of 256 KiB or more stored in ordinary memory instead of a file: the open-file bound reached, or the kernel refused a file.",
        )
        .expect("valid metric");
        let cache_variants_refused = IntCounter::new(
            "dime_cache_variants_refused_total",
            "Responses not stored because their URL already had the route's cache.max_variants Vary variants stored.",
        )
        .expect("valid metric");
        let cache_purges = IntCounterVec::new(
            Opts::new(
                "dime_cache_purges_total",
                "Purge API calls, by kind (url, prefix, all).",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "dime_config_reloads_total",
                "Config reload attempts, by result: applied, unchanged (same content) or rejected (invalid; the old config keeps serving).",
            ),
            &["result"],
        )
        .expect("valid metric");
        for result in ["applied", "unchanged", "rejected"] {
            config_reloads.with_label_values(&[result]);
        }
        let config_last_success = Gauge::new(
            "dime_config_last_reload_success_timestamp_seconds",
            "Unix time the active config was loaded, at startup or by a reload.",
        )
        .expect("valid metric");
        let config_info = IntGaugeVec::new(
            Opts::new(
                "dime_config_info",
                "The active config: its content hash (sha256 prefix) as a label; always 1.",
            ),
            &["hash"],
        )
        .expect("valid metric");
        let config_restart_required = IntGauge::new(
            "dime_config_restart_required",
            "1 when the active config changes a setting that only a restart applies (listeners, threads, cache memory); the old value is in force.",
        )
        .expect("valid metric");
        let tls_cert_expiry = IntGaugeVec::new(
            Opts::new(
                "dime_tls_certificate_expiry_timestamp_seconds",
                "Unix time a served certificate expires (its notAfter), by certificate file.",
            ),
            &["cert"],
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(upstream_requests.clone()),
            Box::new(backend_healthy.clone()),
            Box::new(pool_panic_picks.clone()),
            Box::new(sent_bytes.clone()),
            Box::new(in_flight.clone()),
            Box::new(connections_open.clone()),
            Box::new(listener_connections_open.clone()),
            Box::new(connections_refused.clone()),
            Box::new(connection_timeouts.clone()),
            Box::new(start_time.clone()),
            Box::new(build_info.clone()),
            Box::new(cache_requests.clone()),
            Box::new(cache_served_bytes.clone()),
            Box::new(cache_objects.clone()),
            Box::new(cache_size_bytes.clone()),
            Box::new(cache_capacity_bytes.clone()),
            Box::new(cache_evictions.clone()),
            Box::new(cache_coalesced_waits.clone()),
            Box::new(cache_fill_bytes.clone()),
            Box::new(cache_fills_demoted.clone()),
            Box::new(cache_body_files.clone()),
            Box::new(cache_sendfile_bytes.clone()),
            Box::new(cache_bodies_in_memory.clone()),
            Box::new(cache_variants_refused.clone()),
            Box::new(cache_purges.clone()),
            Box::new(config_reloads.clone()),
            Box::new(config_last_success.clone()),
            Box::new(config_info.clone()),
            Box::new(config_restart_required.clone()),
            Box::new(tls_cert_expiry.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        Metrics {
            registry,
            requests,
            request_duration,
            upstream_requests,
            backend_healthy,
            pool_panic_picks,
            sent_bytes,
            in_flight,
            connections_open,
            listener_connections_open,
            connections_refused,
            connection_timeouts,
            start_time,
            build_info,
            cache_requests,
            cache_served_bytes,
            cache_objects,
            cache_size_bytes,
            cache_capacity_bytes,
            cache_evictions,
            cache_coalesced_waits,
            cache_fill_bytes,
            cache_fills_demoted,
            cache_body_files,
            cache_sendfile_bytes,
            cache_bodies_in_memory,
            cache_variants_refused,
            cache_purges,
            config_reloads,
            config_last_success,
            config_info,
            config_restart_required,
            tls_cert_expiry,
        }
    }

    /// Counts one attempt at `backend` of `pool` in `dime_upstream_requests_total`.
    pub fn count_upstream(&self, pool: &str, backend: Option<std::net::SocketAddr>, outcome: &str) {
        let backend = backend.map(|b| b.to_string()).unwrap_or_default();
        self.upstream_requests
            .with_label_values(&[pool, &backend, outcome])
            .inc();
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> Vec<u8> {
        self.registry.render()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Status classes, in the order [`RouteMetrics`] holds them.
pub(crate) const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// One route's series, resolved once so the request path does no label lookups.
pub(crate) struct RouteMetrics {
    requests: [prometheus::IntCounter; 6],
    duration: prometheus::Histogram,
    sent_bytes: prometheus::IntCounter,
    /// By cache status label, in the order the edge gave them.
    cache: Vec<(&'static str, prometheus::IntCounter)>,
    cache_served_bytes: prometheus::IntCounter,
    coalesced_waits: prometheus::IntCounter,
}

impl RouteMetrics {
    /// Resolves every series of `route`, with one cache series per label in `cache_statuses`
    /// (the cache's statuses: this module only counts them).
    pub(crate) fn new(m: &Metrics, route: &str, cache_statuses: &[&'static str]) -> Self {
        RouteMetrics {
            requests: STATUS_CLASSES.map(|c| m.requests.with_label_values(&[route, c])),
            duration: m.request_duration.with_label_values(&[route]),
            sent_bytes: m.sent_bytes.with_label_values(&[route]),
            cache: cache_statuses
                .iter()
                .map(|c| (*c, m.cache_requests.with_label_values(&[route, c])))
                .collect(),
            cache_served_bytes: m.cache_served_bytes.with_label_values(&[route]),
            coalesced_waits: m.cache_coalesced_waits.with_label_values(&[route]),
        }
    }

    /// Records one finished request: its status code, duration, body bytes, cache status
    /// label, whether that body came from the cache, and whether it waited for another's fill.
    pub(crate) fn record(
        &self,
        status: u16,
        seconds: f64,
        bytes: u64,
        cache_status: &str,
        served_from_cache: bool,
        coalesced: bool,
    ) {
        let class = STATUS_CLASSES
            .iter()
            .position(|c| *c == status_class(status))
            .unwrap_or(5);
        self.requests[class].inc();
        self.duration.observe(seconds);
        self.sent_bytes.inc_by(bytes);
        if let Some((_, n)) = self.cache.iter().find(|(c, _)| *c == cache_status) {
            n.inc();
        }
        if served_from_cache {
            self.cache_served_bytes.inc_by(bytes);
        }
        if coalesced {
            self.coalesced_waits.inc();
        }
    }
}

impl RouteMetrics {
    /// What the route's series hold now.
    pub(crate) fn counts(&self) -> RouteCounts {
        RouteCounts {
            by_class: STATUS_CLASSES
                .iter()
                .zip(&self.requests)
                .map(|(c, n)| (*c, n.get()))
                .collect(),
            by_cache_status: self.cache.iter().map(|(c, n)| (*c, n.get())).collect(),
            sent_bytes: self.sent_bytes.get(),
            cache_served_bytes: self.cache_served_bytes.get(),
            coalesced_waits: self.coalesced_waits.get(),
        }
    }
}

/// One route's counters since the process started, read from its Prometheus series.
#[derive(Debug, Clone)]
pub(crate) struct RouteCounts {
    /// Requests answered, by status class.
    pub by_class: Vec<(&'static str, u64)>,
    /// Requests by cache status.
    pub by_cache_status: Vec<(&'static str, u64)>,
    /// Body bytes sent to viewers.
    pub sent_bytes: u64,
    /// Body bytes sent from the cache.
    pub cache_served_bytes: u64,
    /// Requests that waited for another request's fill.
    pub coalesced_waits: u64,
}

impl RouteCounts {
    /// Requests answered.
    pub(crate) fn requests(&self) -> u64 {
        self.by_class.iter().map(|(_, n)| n).sum()
    }

    /// Requests with this cache status.
    pub(crate) fn cache(&self, status: &str) -> u64 {
        self.by_cache_status
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, n)| *n)
    }
}

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `2xx`, `4xx`...: the label for a status code.
pub(crate) fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}
