//! The configuration file as written: serde structs that mirror the TOML, nothing validated yet.

use std::collections::BTreeMap;

use serde::{de, Deserialize, Deserializer};
use toml::Spanned;

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Process-wide settings (threads, shutdown).
    #[serde(default)]
    pub server: ServerSection,
    /// Where the edge listens.
    pub listen: ListenSection,
    /// Named pools of origin backends.
    #[serde(default)]
    pub pools: BTreeMap<String, Spanned<PoolSection>>,
    /// Routes from (host, path prefix) to a pool.
    #[serde(default)]
    pub routes: Vec<Spanned<RouteSection>>,
    /// The shared in-memory cache.
    #[serde(default)]
    pub cache: CacheSection,
    /// Certificates for the HTTPS listeners.
    #[serde(default)]
    pub tls: TlsSection,
    /// The admin API's own settings.
    #[serde(default)]
    pub admin: AdminSection,
    /// Live reload.
    #[serde(default)]
    pub reload: ReloadSection,
    /// Where log lines go.
    #[serde(default)]
    pub log: LogSection,
}

/// `[log]`: where the access log and the error log go; stdout when absent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// The access log: a file path, `"stdout"` or `"stderr"`.
    pub access_log: Option<Spanned<String>>,
    /// Every other line: a file path, `"stdout"` or `"stderr"`.
    pub error_log: Option<Spanned<String>>,
}

/// `[reload]`: how the edge notices config changes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadSection {
    /// Reload when the config file (or a file it references) changes; default `true`.
    pub watch: Option<bool>,
    /// Quiet time after the last file event before reloading, e.g. `"50ms"`.
    pub debounce: Option<Spanned<DurationText>>,
}

/// `[admin]`: the admin listener's API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Bearer token for `POST /config/reload` and `GET /config`; both are refused without one.
    pub token: Option<Spanned<String>>,
    /// A file holding the token (trailing newlines trimmed), instead of `token`.
    pub token_file: Option<Spanned<String>>,
}

/// `[tls]`: certificates served on the HTTPS listeners.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// `[[tls.certificates]]`, in file order; the first is the default.
    #[serde(default)]
    pub certificates: Vec<Spanned<CertificateSection>>,
}

/// `[[tls.certificates]]`: one certificate chain and its key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSection {
    /// PEM file: the leaf certificate first, then its intermediates.
    pub cert: Spanned<String>,
    /// PEM file: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Spanned<String>,
    /// SNI names it serves (`example.com`, `*.example.com`); absent means its SANs.
    pub names: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[cache]`: the in-memory cache every route shares.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// Memory for cached objects, e.g. `"4GiB"`.
    pub memory: Option<Spanned<SizeText>>,
    /// Bearer token for the purge API; purge is disabled without one.
    pub purge_token: Option<Spanned<String>>,
    /// A file holding the purge token (trailing newlines trimmed), instead of `purge_token`.
    pub purge_token_file: Option<Spanned<String>>,
    /// How long one fill may hold the lock that coalesces misses.
    pub lock_timeout: Option<Spanned<DurationText>>,
    /// Memory for fills in progress, e.g. `"128MiB"`; default a quarter of `memory`.
    pub fill_memory: Option<Spanned<SizeText>>,
}

/// `[routes.cache]`: one route's cache policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteCacheSection {
    /// `rfc` (default), `video` or `off`.
    pub mode: Option<Spanned<String>>,
    /// Bigger objects stream through uncached, e.g. `"256MiB"`.
    pub max_object_size: Option<Spanned<SizeText>>,
    /// Responses stored under one URL at most (its `Vary` variants).
    pub max_variants: Option<Spanned<i64>>,
    /// Video: the HLS target duration; live playlists stay fresh for at most half.
    pub target_duration: Option<Spanned<DurationText>>,
    /// Video: freshness of segments and VoD files when the origin sends none.
    pub media_ttl: Option<Spanned<DurationText>>,
    /// Video: longest freshness of a 404 or 5xx for media.
    pub negative_ttl: Option<Spanned<DurationText>>,
    /// Query parameters kept in the cache key (video default: `_HLS_msn`, `_HLS_part`, `_HLS_skip`).
    pub keep_query: Option<Vec<String>>,
    /// Default stale-while-revalidate window.
    pub stale_while_revalidate: Option<Spanned<DurationText>>,
    /// Default stale-if-error window.
    pub stale_if_error: Option<Spanned<DurationText>>,
    /// Store responses that set a cookie, replaying the cookie to every viewer (default false).
    pub store_set_cookie: Option<bool>,
    /// Fields whose directives set the edge's caching ahead of Cache-Control, in precedence
    /// order (RFC 9213; default `["CDN-Cache-Control", "Surrogate-Control"]`).
    pub targeted_fields: Option<Vec<Spanned<String>>>,
    /// Remove the targeted fields from responses to viewers (default true).
    pub strip_targeted: Option<bool>,
    /// Fill misses in a background task at the origin's speed (default: on in `video` mode).
    pub background_fill: Option<bool>,
    /// `finish` (default) or `abort`: what a background fill does when all its viewers left.
    pub abandoned_fill: Option<Spanned<String>>,
}

/// `[server]`: process-wide settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Worker threads; absent means one per core.
    pub threads: Option<Spanned<i64>>,
    /// How long SIGTERM waits for in-flight requests, e.g. `"5s"`.
    pub grace_period: Option<Spanned<DurationText>>,
    /// Unix socket through which `run --upgrade` takes the listeners over.
    pub upgrade_sock: Option<Spanned<String>>,
    /// A write to a viewer that makes no progress for this long closes its connection.
    pub send_timeout: Option<Spanned<DurationText>>,
    /// Viewer connections open at once; past it, new ones are refused at accept.
    pub max_connections: Option<Spanned<i64>>,
    /// How long an idle keep-alive connection waits for its next request.
    pub keepalive_timeout: Option<Spanned<DurationText>>,
    /// How long a new connection may take to send its first request header.
    pub header_timeout: Option<Spanned<DurationText>>,
    /// Requests on one HTTP/1.1 connection; the last response closes it.
    pub keepalive_requests: Option<Spanned<i64>>,
    /// The most a request's line and header fields may take; larger ones get 431.
    pub max_request_header_size: Option<Spanned<SizeText>>,
    /// Streams one HTTP/2 connection may have open at once.
    pub http2_max_concurrent_streams: Option<Spanned<i64>>,
}

/// `[listen]`: listening addresses.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenSection {
    /// Plain HTTP listeners, `IP:port`.
    #[serde(default)]
    pub http: Vec<Spanned<String>>,
    /// HTTPS listeners, `IP:port`; they need `[[tls.certificates]]`.
    #[serde(default)]
    pub https: Vec<Spanned<String>>,
    /// Admin listener (metrics, health), `IP:port`.
    pub admin: Option<Spanned<String>>,
}

/// `[pools.NAME]`: one pool of interchangeable backends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    /// The backends, `"host:port"` or `{ addr = "host:port", weight = N }`.
    pub backends: Spanned<Vec<Spanned<BackendEntry>>>,
    /// `round_robin` (default) or `consistent_hash`.
    pub selection: Option<Spanned<String>>,
    /// TCP connect timeout.
    pub connect_timeout: Option<Spanned<DurationText>>,
    /// Longest wait for any read from the backend (headers or body).
    pub read_timeout: Option<Spanned<DurationText>>,
    /// Longest wait for any write to the backend.
    pub write_timeout: Option<Spanned<DurationText>>,
    /// Whole upstream exchange, from connect to the last body byte.
    pub total_timeout: Option<Spanned<DurationText>>,
    /// How long an idle upstream connection stays in the keepalive pool.
    pub idle_timeout: Option<Spanned<DurationText>>,
    /// How many other backends to try after a failed attempt.
    pub retries: Option<Spanned<i64>>,
    /// Try backends marked down when no healthy one is left (default true).
    pub panic_mode: Option<Spanned<bool>>,
    /// Response statuses that send an idempotent request on to another backend.
    pub retry_on_status: Option<Spanned<Vec<Spanned<i64>>>>,
    /// Active health check.
    pub health_check: Option<HealthCheckSection>,
    /// Talk to the backends over TLS.
    pub tls: Option<Spanned<bool>>,
    /// Name sent in SNI and checked against the backends' certificates.
    pub sni: Option<Spanned<String>>,
    /// PEM bundle of the CAs that may sign the backends' certificates (default: system roots).
    pub ca_file: Option<Spanned<String>>,
    /// Verify the backends' certificates (default true; false is logged as a warning).
    pub verify: Option<Spanned<bool>>,
}

/// One backend of a pool. (Untagged enums lose TOML spans, so the entry as a whole carries
/// the span, not its fields.)
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum BackendEntry {
    /// `"host:port"`, weight 1.
    Addr(String),
    /// `{ addr = "host:port", weight = N }`.
    Weighted(WeightedBackend),
}

/// A backend with an explicit weight.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedBackend {
    /// `host:port`.
    pub addr: String,
    /// Relative share of traffic, 1 to 1000.
    pub weight: Option<i64>,
}

/// `[pools.NAME.health_check]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSection {
    /// `tcp` or `http`.
    #[serde(rename = "type")]
    pub kind: Option<Spanned<String>>,
    /// HTTP path to request (http checks).
    pub path: Option<Spanned<String>>,
    /// Host header to send (http checks).
    pub host: Option<Spanned<String>>,
    /// Status a healthy backend answers (http checks).
    pub expect_status: Option<Spanned<i64>>,
    /// Time between checks.
    pub interval: Option<Spanned<DurationText>>,
    /// Time one check may take.
    pub timeout: Option<Spanned<DurationText>>,
    /// Consecutive successes that bring a backend back.
    pub rise: Option<Spanned<i64>>,
    /// Consecutive failures that eject a backend.
    pub fall: Option<Spanned<i64>>,
}

/// `[[routes]]`: one route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// Name in metrics and logs; defaults to host + path.
    pub name: Option<Spanned<String>>,
    /// `example.com` or `*.example.com`; absent matches any host.
    pub host: Option<Spanned<String>>,
    /// Path prefix, starting with `/`.
    pub path: Option<Spanned<String>>,
    /// The pool that serves this route.
    pub pool: Spanned<String>,
    /// Remove the matched prefix before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Headers set on the request to the origin.
    #[serde(default)]
    pub upstream_headers: BTreeMap<String, Spanned<String>>,
    /// Headers set on the response to the viewer.
    #[serde(default)]
    pub response_headers: BTreeMap<String, Spanned<String>>,
    /// Cache policy; absent means RFC 9111 caching.
    pub cache: Option<Spanned<RouteCacheSection>>,
    /// Answer plain-HTTP requests with a 308 to the same URL over HTTPS.
    pub redirect_https: Option<Spanned<bool>>,
}

/// A duration as written, e.g. `"10s"`; compile parses it. Its own type so that a bare number
/// is refused here with a hint to add a unit, not as "expected a string".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationText(pub String);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = DurationText;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration with a unit, e.g. \"10s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationText, E> {
                Ok(DurationText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurationText, E> {
                Err(E::custom(format!(
                    "expected a duration, found the integer {v}: write it with a unit, e.g. \"{}s\"",
                    v.max(1)
                )))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationText, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<DurationText, E> {
                Err(E::custom(format!(
                    "expected a duration, found the number {v}: write it with a unit, e.g. \"{v}s\""
                )))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl DurationText {
    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A size as written, e.g. `"512MiB"`; compile parses it. Its own type for the same reason as
/// [`DurationText`]: a bare TOML integer gets a hint, not "expected a string".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeText(pub String);

impl<'de> Deserialize<'de> for SizeText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = SizeText;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a size with a unit, e.g. \"512MiB\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SizeText, E> {
                Ok(SizeText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SizeText, E> {
                Err(E::custom(format!(
                    "expected a size, found the integer {v}: write it as a string with a unit, e.g. \"512MiB\" (\"{v}\" is {v} bytes)"
                )))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SizeText, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
        }
        d.deserialize_any(Visitor)
    }
}
