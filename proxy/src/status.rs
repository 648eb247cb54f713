//! The status page (`GET /status`): version, uptime, config, traffic per route, pool health,
//! cache and connections on one page, read from the metrics and the live objects behind them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::active::Active;
use crate::cache;
use crate::cache::store::MemoryStore;
use crate::metrics::{Metrics, RouteCounts, RouteMetrics};
use crate::reload::{short_hash, Reloader};

/// How an admin answer is written, from the request's `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `text/html`, for a browser.
    Html,
    /// `application/json`, for scripts.
    Json,
    /// `text/plain`, for a terminal.
    Text,
}

impl Format {
    /// The format `accept` asks for first among JSON, plain text and HTML; `default` when it
    /// names none of them (curl's `*/*`, or no header).
    pub(crate) fn negotiate(accept: Option<&str>, default: Format) -> Format {
        let Some(accept) = accept else {
            return default;
        };
        // The first listed wins: q-values are rare from the clients this serves.
        accept
            .split(',')
            .filter_map(|m| match m.split(';').next().unwrap_or("").trim() {
                "application/json" => Some(Format::Json),
                "text/plain" => Some(Format::Text),
                "text/html" => Some(Format::Html),
                _ => None,
            })
            .next()
            .unwrap_or(default)
    }
}

/// Everything the status page shows.
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    /// The edge's version.
    pub version: &'static str,
    /// When the process started (RFC 3339).
    pub started_at: String,
    /// Seconds since then.
    pub uptime_seconds: u64,
    /// The active config and the last reload.
    pub config: ConfigStatus,
    /// Viewer connections and requests now.
    pub connections: Connections,
    /// Traffic per route since the process started.
    pub routes: Vec<RouteStatus>,
    /// Requests no route matched (answered 404).
    pub unrouted_requests: u64,
    /// Pools and the health of each backend.
    pub pools: Vec<PoolStatus>,
    /// The cache.
    pub cache: CacheStatus,
}

/// The active config.
#[derive(Debug, Serialize)]
pub(crate) struct ConfigStatus {
    /// Content hash, as `dime_config_info` and `GET /config` show it.
    pub hash: String,
    /// The file it came from (`<command line>` in quick mode).
    pub source: String,
    /// When it became active, at startup or by a reload (RFC 3339).
    pub loaded_at: String,
    /// Settings changed in the file that wait on a restart.
    pub restart_required: Vec<String>,
    /// The last reload attempt since the process started; `None` before the first.
    pub last_reload: Option<ReloadStatus>,
}

/// One reload attempt.
#[derive(Debug, Serialize)]
pub(crate) struct ReloadStatus {
    /// When it finished (RFC 3339).
    pub at: String,
    /// What asked for it: `file change`, `SIGHUP` or `admin API`.
    pub trigger: String,
    /// `applied`, `unchanged` or `rejected`.
    pub result: &'static str,
    /// How many errors rejected it (the previous config kept serving).
    pub errors: usize,
}

/// Connections and requests now.
#[derive(Debug, Serialize)]
pub(crate) struct Connections {
    /// Viewer connections open on the HTTP and HTTPS listeners, idle keep-alive included.
    pub open: i64,
    /// Requests being served.
    pub requests_in_flight: i64,
}

/// One route's traffic.
#[derive(Debug, Serialize)]
pub(crate) struct RouteStatus {
    /// Route name.
    pub name: String,
    /// Host it serves, `(any host)` when it names none.
    pub host: String,
    /// Path prefix.
    pub path: String,
    /// Pool that serves it.
    pub pool: String,
    /// Cache mode: `off`, `rfc` or `video`.
    pub policy: &'static str,
    /// Requests answered.
    pub requests: u64,
    /// Requests by status class (`2xx`...).
    pub status: BTreeMap<&'static str, u64>,
    /// Requests by cache status (`HIT`, `MISS`...).
    pub cache: BTreeMap<&'static str, u64>,
    /// Hits (HIT, STALE, UPDATING, REVALIDATED) over cache lookups (those and MISS,
    /// EXPIRED); `None` before the first lookup.
    pub hit_ratio: Option<f64>,
    /// Body bytes sent to viewers.
    pub sent_bytes: u64,
    /// Of those, bytes sent from the cache.
    pub cache_served_bytes: u64,
    /// Requests that waited for another request's fill instead of going to the origin.
    pub coalesced_waits: u64,
}

/// One pool.
#[derive(Debug, Serialize)]
pub(crate) struct PoolStatus {
    /// Pool name.
    pub name: String,
    /// Whether a first round of health checks has finished.
    pub checked: bool,
    /// Whether backends marked down are tried when no healthy one is left.
    pub panic_mode: bool,
    /// Its backends.
    pub backends: Vec<BackendStatus>,
}

/// One backend.
#[derive(Debug, Serialize)]
pub(crate) struct BackendStatus {
    /// IP:port.
    pub address: String,
    /// Selection weight.
    pub weight: usize,
    /// `up` (takes traffic), `down` (health check failing) or `pending` (added by a reload,
    /// its first check not passed yet).
    pub state: &'static str,
}

/// The cache.
#[derive(Debug, Serialize)]
pub(crate) struct CacheStatus {
    /// Objects stored.
    pub objects: u64,
    /// Bytes stored, as counted against the limit.
    pub size_bytes: u64,
    /// The limit (`cache.memory`).
    pub capacity_bytes: i64,
    /// Objects evicted to make room since the process started.
    pub evictions: u64,
    /// Fills in progress.
    pub fills_in_progress: usize,
    /// Body bytes those fills hold (against `cache.fill_memory`).
    pub fill_bytes: u64,
    /// Fills that found the fill budget spent and streamed through uncached.
    pub fills_demoted: u64,
}

/// The active config's short hash: the reloader's, or computed (quick mode has none).
pub(crate) fn config_hash(active: &Active, reloader: Option<&Reloader>) -> String {
    match reloader {
        Some(r) => r.active_hash(),
        None => crate::reload::fingerprint(&active.config)
            .map(|f| short_hash(&f))
            .unwrap_or_default(),
    }
}

impl Status {
    /// Reads the status now.
    pub(crate) fn gather(
        active: &Active,
        metrics: &Metrics,
        store: &MemoryStore,
        reloader: Option<&Reloader>,
    ) -> Status {
        let now = SystemTime::now();
        let started = unix_time(metrics.start_time.get());
        let routes = active
            .routes
            .iter()
            .map(|r| {
                let counts = r.metrics.counts();
                RouteStatus {
                    name: r.spec.name.clone(),
                    host: r.spec.host.to_string(),
                    path: r.spec.prefix.clone(),
                    pool: r.spec.pool.clone(),
                    policy: r.spec.cache.mode.as_str(),
                    requests: counts.requests(),
                    status: counts.by_class.iter().copied().collect(),
                    cache: counts.by_cache_status.iter().copied().collect(),
                    hit_ratio: hit_ratio(&counts).map(|r| (r * 10_000.0).round() / 10_000.0),
                    sent_bytes: counts.sent_bytes,
                    cache_served_bytes: counts.cache_served_bytes,
                    coalesced_waits: counts.coalesced_waits,
                }
            })
            .collect();
        // The edge's own series for unrouted requests: resolving them again finds the same.
        let unrouted: RouteCounts =
            RouteMetrics::new(metrics, "none", &cache::CacheStatus::LABELS).counts();
        let pools = active
            .pools
            .iter()
            .map(|p| {
                let pending = p.members().pending();
                let weights = &p.spec.backends;
                PoolStatus {
                    name: p.name().to_string(),
                    checked: p.checked_once(),
                    panic_mode: p.spec.panic_mode,
                    backends: p
                        .health()
                        .into_iter()
                        .map(|(addr, up)| BackendStatus {
                            address: addr.to_string(),
                            weight: weights
                                .iter()
                                .find(|(a, _)| *a == addr)
                                .map_or(1, |(_, w)| *w),
                            state: if pending.contains(&addr) {
                                "pending"
                            } else if up {
                                "up"
                            } else {
                                "down"
                            },
                        })
                        .collect(),
                }
            })
            .collect();
        Status {
            version: env!("CARGO_PKG_VERSION"),
            started_at: rfc3339(started),
            uptime_seconds: now.duration_since(started).unwrap_or_default().as_secs(),
            config: ConfigStatus {
                hash: config_hash(active, reloader),
                source: active.config.source.clone(),
                loaded_at: rfc3339(unix_time(metrics.config_last_success.get())),
                restart_required: reloader.map(|r| r.restart_required()).unwrap_or_default(),
                last_reload: reloader
                    .and_then(|r| r.last_reload())
                    .map(|l| ReloadStatus {
                        at: rfc3339(l.at),
                        trigger: l.trigger.to_string(),
                        result: l.result,
                        errors: l.errors,
                    }),
            },
            connections: Connections {
                open: metrics.connections_open.get(),
                requests_in_flight: metrics.in_flight.get(),
            },
            routes,
            unrouted_requests: unrouted.requests(),
            pools,
            cache: CacheStatus {
                objects: store.object_count(),
                size_bytes: store.size_bytes(),
                capacity_bytes: metrics.cache_capacity_bytes.get(),
                evictions: metrics.cache_evictions.get(),
                fills_in_progress: store.fills_in_progress(),
                fill_bytes: store.fill_bytes(),
                fills_demoted: metrics.cache_fills_demoted.get(),
            },
        }
    }

    /// Plain text for a terminal: one section per topic, like `varnishstat -1`.
    pub(crate) fn text(&self) -> String {
        let mut o = String::new();
        let c = &self.config;
        let _ = writeln!(
            o,
            "dime-edge {}, up {} (since {})",
            self.version,
            humantime::format_duration(Duration::from_secs(self.uptime_seconds)),
            self.started_at
        );
        let _ = writeln!(
            o,
            "config {} from {}, active since {}",
            c.hash, c.source, c.loaded_at
        );
        let _ = writeln!(o, "last reload: {}", self.last_reload_line());
        for r in &c.restart_required {
            let _ = writeln!(o, "restart required: {r}");
        }
        let _ = writeln!(
            o,
            "connections: {} open, {} requests in flight",
            self.connections.open, self.connections.requests_in_flight
        );
        o.push_str("\nroutes (since start):\n");
        for r in &self.routes {
            let _ = writeln!(
                o,
                "  {} ({}{} -> pool {}, cache {}): {} requests, {}, hit ratio {}, {} sent ({} from cache)",
                r.name,
                if r.host == "(any host)" { "" } else { &r.host },
                r.path,
                r.pool,
                r.policy,
                r.requests,
                classes(&r.status),
                ratio(r.hit_ratio),
                bytes(r.sent_bytes),
                bytes(r.cache_served_bytes),
            );
        }
        let _ = writeln!(o, "  (no route): {} requests", self.unrouted_requests);
        o.push_str("\npools:\n");
        for p in &self.pools {
            let _ = writeln!(o, "  {}{}:", p.name, pool_note(p));
            for b in &p.backends {
                let _ = writeln!(o, "    {} weight {}: {}", b.address, b.weight, b.state);
            }
        }
        let k = &self.cache;
        let _ = writeln!(
            o,
            "\ncache: {} objects, {} of {}, {} evictions, {} fills in progress ({}), {} fills demoted",
            k.objects,
            bytes(k.size_bytes),
            bytes(k.capacity_bytes.max(0) as u64),
            k.evictions,
            k.fills_in_progress,
            bytes(k.fill_bytes),
            k.fills_demoted
        );
        o
    }

    /// A page for a browser: the same facts as [`Status::text`], in tables.
    pub(crate) fn html(&self) -> String {
        let c = &self.config;
        let mut o = String::from(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>dime-edge status</title>\n<style>body{font-family:system-ui,sans-serif;margin:1.5em}table{border-collapse:collapse;margin-bottom:1.5em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}.up{color:#060}.down{color:#b00}.pending{color:#960}</style></head><body>\n",
        );
        let _ = writeln!(
            o,
            "<h1>dime-edge {}</h1>\n<p>Up {} (since {}). Config <code>{}</code> from <code>{}</code>, active since {}. Last reload: {}.</p>",
            esc(self.version),
            esc(&humantime::format_duration(Duration::from_secs(self.uptime_seconds)).to_string()),
            esc(&self.started_at),
            esc(&c.hash),
            esc(&c.source),
            esc(&c.loaded_at),
            esc(&self.last_reload_line()),
        );
        for r in &c.restart_required {
            let _ = writeln!(o, "<p class=\"down\">Restart required: {}</p>", esc(r));
        }
        let _ = writeln!(
            o,
            "<p>{} viewer connections open, {} requests in flight.</p>",
            self.connections.open, self.connections.requests_in_flight
        );
        o.push_str("<h2>Routes</h2>\n<table><tr><th>Route</th><th>Match</th><th>Pool</th><th>Cache</th><th>Requests</th><th>By status</th><th>Hit ratio</th><th>Sent</th><th>From cache</th></tr>\n");
        for r in &self.routes {
            let host = if r.host == "(any host)" { "" } else { &r.host };
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td><code>{}{}</code></td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&r.name),
                esc(host),
                esc(&r.path),
                esc(&r.pool),
                r.policy,
                r.requests,
                esc(&classes(&r.status)),
                ratio(r.hit_ratio),
                bytes(r.sent_bytes),
                bytes(r.cache_served_bytes),
            );
        }
        let _ = writeln!(
            o,
            "<tr><td colspan=\"4\">(no route: answered 404)</td><td class=\"n\">{}</td><td colspan=\"4\"></td></tr></table>",
            self.unrouted_requests
        );
        o.push_str("<h2>Pools</h2>\n<table><tr><th>Pool</th><th>Backend</th><th>Weight</th><th>State</th></tr>\n");
        for p in &self.pools {
            for b in &p.backends {
                let _ = writeln!(
                    o,
                    "<tr><td>{}{}</td><td><code>{}</code></td><td class=\"n\">{}</td><td class=\"{}\">{}</td></tr>",
                    esc(&p.name),
                    esc(&pool_note(p)),
                    esc(&b.address),
                    b.weight,
                    b.state,
                    b.state
                );
            }
        }
        o.push_str("</table>\n<h2>Cache</h2>\n<table>\n");
        let k = &self.cache;
        for (name, value) in [
            ("Objects", k.objects.to_string()),
            (
                "Size",
                format!(
                    "{} of {}",
                    bytes(k.size_bytes),
                    bytes(k.capacity_bytes.max(0) as u64)
                ),
            ),
            ("Evictions", k.evictions.to_string()),
            (
                "Fills in progress",
                format!("{} ({})", k.fills_in_progress, bytes(k.fill_bytes)),
            ),
            ("Fills demoted", k.fills_demoted.to_string()),
        ] {
            let _ = writeln!(
                o,
                "<tr><th>{name}</th><td class=\"n\">{}</td></tr>",
                esc(&value)
            );
        }
        o.push_str("</table>\n<p>JSON: <code>curl -H 'Accept: application/json' …/status</code>; text: <code>Accept: text/plain</code>.</p>\n</body></html>\n");
        o
    }

    fn last_reload_line(&self) -> String {
        match &self.config.last_reload {
            None => "none since start".to_string(),
            Some(l) if l.result == "rejected" => format!(
                "rejected at {} ({}, {} errors; the previous config kept serving)",
                l.at, l.trigger, l.errors
            ),
            Some(l) => format!("{} at {} ({})", l.result, l.at, l.trigger),
        }
    }
}

/// What a person should know about a pool beyond its backends' states: that its health is not
/// known yet, or that none of its backends is up (then `panic_mode` decides what viewers get).
fn pool_note(p: &PoolStatus) -> String {
    let none_up = !p.backends.iter().any(|b| b.state == "up");
    match (p.checked, none_up, p.panic_mode) {
        (false, _, _) => " (first health check running)".to_string(),
        (true, true, true) => " (no backend up: panic mode tries them anyway)".to_string(),
        (true, true, false) => " (no backend up: requests get 502)".to_string(),
        (true, false, _) => String::new(),
    }
}

/// `2xx 10, 4xx 1`: the classes that saw requests.
fn classes(by: &BTreeMap<&'static str, u64>) -> String {
    let seen: Vec<String> = by
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    if seen.is_empty() {
        "-".to_string()
    } else {
        seen.join(", ")
    }
}

fn ratio(r: Option<f64>) -> String {
    r.map_or("-".to_string(), |r| format!("{:.1}%", r * 100.0))
}

/// `1.5 MiB`: a byte count a person reads at a glance.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn unix_time(secs: f64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0))
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// HTML-escapes text (route names, paths and reload triggers come from the config).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Hits over cache lookups (hits, misses and expired objects; bypassed requests do not
/// count); `None` before the first lookup.
fn hit_ratio(counts: &RouteCounts) -> Option<f64> {
    let count = |wanted: fn(cache::CacheStatus) -> bool| -> u64 {
        cache::CacheStatus::ALL
            .into_iter()
            .filter(|s| wanted(*s))
            .map(|s| counts.cache(s.as_str()))
            .sum()
    };
    let hits = count(cache::CacheStatus::served_from_cache);
    let lookups = hits + count(cache::CacheStatus::missed);
    (lookups > 0).then(|| hits as f64 / lookups as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_note_speaks_of_panic_mode_only_when_no_backend_is_up() {
        let pool = |checked, panic_mode, states: &[&'static str]| PoolStatus {
            name: "p".into(),
            checked,
            panic_mode,
            backends: states
                .iter()
                .map(|&state| BackendStatus {
                    address: "127.0.0.1:1".into(),
                    weight: 1,
                    state,
                })
                .collect(),
        };
        assert_eq!(pool_note(&pool(true, true, &["up", "down"])), "");
        assert_eq!(
            pool_note(&pool(true, true, &["down", "down"])),
            " (no backend up: panic mode tries them anyway)"
        );
        assert_eq!(
            pool_note(&pool(true, false, &["down"])),
            " (no backend up: requests get 502)"
        );
        assert_eq!(
            pool_note(&pool(false, true, &["pending"])),
            " (first health check running)"
        );
    }

    #[test]
    fn the_first_known_type_in_accept_wins() {
        let n = |a| Format::negotiate(a, Format::Html);
        assert_eq!(n(None), Format::Html);
        assert_eq!(n(Some("*/*")), Format::Html);
        assert_eq!(n(Some("application/json")), Format::Json);
        assert_eq!(n(Some("text/plain;q=0.9, application/json")), Format::Text);
        assert_eq!(
            n(Some("text/html,application/xhtml+xml,*/*;q=0.8")),
            Format::Html
        );
        assert_eq!(Format::negotiate(Some("*/*"), Format::Json), Format::Json);
    }

    #[test]
    fn sizes_read_with_units_and_text_is_escaped() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(64 << 20), "64.0 MiB");
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
