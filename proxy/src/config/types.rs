//! The validated configuration: every type the running edge reads, nothing it must check again.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::error::ConfigError;
use crate::cache::CachePolicy;
use crate::host::HostMatch;
pub use crate::logging::files::{LogSettings, LogTarget};
use crate::tls::CertSet;
pub use crate::tls::CertSpec;

/// The admin listener when the file names none.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9090";
pub(crate) const DEFAULT_GRACE: Duration = Duration::from_secs(5);
/// The watcher's quiet time when the file names none.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(50);
pub(crate) const MAX_DEBOUNCE: Duration = Duration::from_secs(10);
/// Where `run --upgrade` meets the running process when the file names no socket.
pub const DEFAULT_UPGRADE_SOCK: &str = "/run/dime-edge/upgrade.sock";
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// A validated configuration: everything the proxy needs, nothing it must check again.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Where it came from (a path or `<command line>`), for messages.
    pub source: String,
    /// The file it was read from; `None` in quick mode, which has no file to reload.
    pub file: Option<PathBuf>,
    /// The text it was compiled from, for `GET /config` (redacted there) and reload diffs.
    pub text: String,
    /// Settings bound when the process starts; a reload holds them at their running values.
    pub restart: RestartSettings,
    /// The admin API's settings.
    pub admin: AdminSettings,
    /// Reload on file change; SIGHUP and `POST /config/reload` work either way.
    pub watch: bool,
    /// Quiet time after the last file event before the watcher reloads.
    pub debounce: Duration,
    /// Process-wide settings that apply live.
    pub server: ServerSettings,
    /// Certificates for the HTTPS listeners, in file order; the first is the default.
    pub certificates: Vec<CertSpec>,
    /// Pools, by name order.
    pub pools: Vec<PoolSpec>,
    /// Routes, in file order.
    pub routes: Vec<RouteSpec>,
    /// The shared cache's settings that apply live.
    pub cache: CacheSettings,
    /// Valid, but probably not what was meant (`check` prints them; they never stop a start).
    pub warnings: Vec<ConfigError>,
    /// Where the access log and the error log go.
    pub log: LogSettings,
}

/// The admin API's settings.
#[derive(Debug, Clone, Default)]
pub struct AdminSettings {
    /// Bearer token of `POST /config/reload` and `GET /config`; `None` refuses both.
    pub token: Option<String>,
    /// The file the token was read from, watched for reload.
    pub token_file: Option<PathBuf>,
}

/// How a pool talks TLS to its backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Name sent in SNI and verified against the backend's certificate.
    pub sni: String,
    /// Whether the backend's certificate is verified (chain and name).
    pub verify: bool,
    /// The CA bundle, DER certificates; `None` means the system roots.
    pub ca: Option<Arc<Vec<Vec<u8>>>>,
    /// Where the bundle came from, for messages.
    pub ca_file: Option<PathBuf>,
}

/// The shared cache's settings that apply live (its budget is in [`RestartSettings`]).
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Bearer token of the purge API; `None` disables purging.
    pub purge_token: Option<String>,
    /// The file the purge token was read from, watched for reload.
    pub purge_token_file: Option<PathBuf>,
}

/// Cache memory when the file names none.
pub const DEFAULT_CACHE_MEMORY: u64 = 512 << 20;

/// Process-wide settings that apply live.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// A write to a viewer that makes no progress for this long closes the connection.
    pub send_timeout: Duration,
    /// Viewer connections open at once; past it, new ones are refused at accept.
    pub max_connections: usize,
    /// How long an idle HTTP/1.1 keep-alive connection waits for its next request (whole
    /// seconds, at least one: pingora's granularity).
    pub keepalive_timeout: Duration,
    /// How long a new connection may take to send its first request header.
    pub header_timeout: Duration,
    /// Requests on one HTTP/1.1 connection; the last one's response closes it.
    pub keepalive_requests: u32,
    /// Bytes a request's line and header fields may take (each field counted as
    /// `name: value` and its line end); a larger request is answered 431.
    pub max_request_header_size: u64,
}

/// Settings bound when the process starts: the listening sockets, the upgrade socket, worker
/// threads, the shutdown grace period, the cache's memory and lock table, and HTTP/2's
/// connection settings. A reload that changes one keeps the running value and reports it
/// (`reload::diff`); a new field here is a compile error there until the diff names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartSettings {
    /// Plain HTTP listeners (`listen.http`).
    pub http_listeners: Vec<SocketAddr>,
    /// HTTPS listeners, HTTP/2 and HTTP/1.1 by ALPN (`listen.https`).
    pub https_listeners: Vec<SocketAddr>,
    /// Unix socket where `run --upgrade` receives the listeners (`server.upgrade_sock`).
    pub upgrade_sock: PathBuf,
    /// The admin listener (`listen.admin`).
    pub admin_listener: SocketAddr,
    /// Worker threads for the proxy service (`server.threads`).
    pub threads: usize,
    /// How long SIGTERM waits for in-flight requests before exiting (`server.grace_period`).
    pub grace_period: Duration,
    /// Bytes of memory for cached objects (`cache.memory`).
    pub cache_memory: u64,
    /// Bytes that fills in progress may hold before new fills stream through uncached
    /// (`cache.fill_memory`).
    pub cache_fill_memory: u64,
    /// How long one fill may hold the lock that coalesces misses (`cache.lock_timeout`).
    pub cache_lock_timeout: Duration,
    /// Streams one HTTP/2 connection may have open at once
    /// (`server.http2_max_concurrent_streams`).
    pub http2_max_concurrent_streams: u32,
    /// How long an HTTP/2 connection with no stream open is kept (`server.keepalive_timeout`
    /// as the process started: pingora reads it once).
    pub http2_idle_timeout: Duration,
}

/// `server.send_timeout` when the file names none (nginx's `send_timeout` default).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// `server.max_connections` when the file names none: about 400 MiB of idle connections
/// (docs/configuration.md says why).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// `server.keepalive_timeout` when the file names none (nginx's `keepalive_timeout` default).
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);
/// `server.header_timeout` when the file names none (nginx's `client_header_timeout`), also
/// its maximum: pingora closes a first request that stalls this long by itself.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// `server.keepalive_requests` when the file names none (nginx's default).
pub const DEFAULT_KEEPALIVE_REQUESTS: u32 = 1000;
/// `server.max_request_header_size` when the file names none: nginx's four 8 KiB buffers
/// (`large_client_header_buffers`).
pub const DEFAULT_MAX_REQUEST_HEADER_SIZE: u64 = 32 << 10;
/// The largest `server.max_request_header_size`: pingora reads at most 1 MiB of header.
pub const MAX_REQUEST_HEADER_SIZE: u64 = 1 << 20;
/// `server.http2_max_concurrent_streams` when the file names none (nginx's default).
pub const DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS: u32 = 128;

/// How a pool picks a backend for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Each request to the next healthy backend.
    RoundRobin,
    /// Ketama on the request path: one object always lands on the same backend.
    ConsistentHash,
}

/// A validated pool.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    /// The pool's name.
    pub name: String,
    /// Resolved backends and their weights.
    pub backends: Vec<(SocketAddr, usize)>,
    /// Selection algorithm.
    pub selection: Selection,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Longest wait for one read from the backend.
    pub read_timeout: Duration,
    /// Longest wait for one write to the backend.
    pub write_timeout: Duration,
    /// Longest whole upstream exchange, if bounded.
    pub total_timeout: Option<Duration>,
    /// How long idle upstream connections are kept for reuse.
    pub idle_timeout: Duration,
    /// Other backends tried after a failed attempt.
    pub retries: usize,
    /// When no healthy backend is left to try, try those marked down rather than fail.
    pub panic_mode: bool,
    /// Response statuses (4xx, 5xx) after which an idempotent request goes to another
    /// backend while the retry budget lasts; the last backend's answer is passed on.
    pub retry_on_status: Vec<u16>,
    /// Active health check.
    pub health_check: HealthCheckSpec,
    /// TLS to the backends, when on.
    pub tls: Option<UpstreamTls>,
}

/// What an active health check sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheckKind {
    /// A TCP connect succeeds.
    Tcp,
    /// An HTTP GET answers the expected status.
    Http {
        /// Path requested.
        path: String,
        /// Host header sent; the backend address when absent.
        host: Option<String>,
        /// Status a healthy backend answers.
        expect_status: u16,
    },
}

/// A validated health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckSpec {
    /// TCP or HTTP.
    pub kind: HealthCheckKind,
    /// Time between checks.
    pub interval: Duration,
    /// Time one check may take.
    pub timeout: Duration,
    /// Consecutive successes that bring a backend back.
    pub rise: usize,
    /// Consecutive failures that eject a backend.
    pub fall: usize,
}

/// A validated route.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// Name in metrics and logs.
    pub name: String,
    /// Which hosts it serves.
    pub host: HostMatch,
    /// Path prefix.
    pub prefix: String,
    /// Pool name (known to exist).
    pub pool: String,
    /// Remove the prefix before forwarding.
    pub strip_prefix: bool,
    /// Headers set on the upstream request.
    pub upstream_headers: Vec<(HeaderName, HeaderValue)>,
    /// Headers set on the response.
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// Cache policy.
    pub cache: CachePolicy,
    /// Plain-HTTP requests get a 308 to the HTTPS URL.
    pub redirect_https: bool,
}

impl EdgeConfig {
    /// The pool called `name`.
    pub fn pool(&self, name: &str) -> Option<&PoolSpec> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// Every file this config was built from, to watch for live reload: the config file
    /// itself and whatever it references. A component that reads another file (a certificate,
    /// a key) adds it here, so editing it triggers a reload like editing the config does.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self.file.iter().cloned().collect();
        files.extend(self.certificate_files());
        // A new CA bundle changes which origins are trusted: reload for it too.
        files.extend(
            self.pools
                .iter()
                .filter_map(|p| p.tls.as_ref()?.ca_file.clone()),
        );
        // A rotated token (a Kubernetes Secret update, a new systemd credential) applies
        // like an edited config.
        files.extend(self.admin.token_file.clone());
        files.extend(self.cache.purge_token_file.clone());
        files
    }

    /// One line for `dime-edge check` and the startup log.
    pub fn summary(&self) -> String {
        let backends: usize = self.pools.iter().map(|p| p.backends.len()).sum();
        let mut listeners: Vec<String> = self
            .restart
            .http_listeners
            .iter()
            .map(|a| a.to_string())
            .collect();
        listeners.extend(
            self.restart
                .https_listeners
                .iter()
                .map(|a| format!("https://{a}")),
        );
        let certs = if self.certificates.is_empty() {
            String::new()
        } else {
            format!(", {} certificate(s)", self.certificates.len())
        };
        format!(
            "{}: ok: {} route(s), {} pool(s), {} backend(s){certs}, listening on {}, admin on {}",
            self.source,
            self.routes.len(),
            self.pools.len(),
            backends,
            listeners.join(", "),
            self.restart.admin_listener
        )
    }

    /// The certificate table the HTTPS listeners serve.
    pub fn cert_set(&self) -> CertSet {
        let entries: Vec<_> = self
            .certificates
            .iter()
            .map(|c| (c.names.clone(), c.loaded.key.clone()))
            .collect();
        CertSet::new(&entries)
    }

    /// Every certificate and key file the config reads, for the file watcher.
    pub fn certificate_files(&self) -> Vec<PathBuf> {
        self.certificates
            .iter()
            .flat_map(|c| [c.cert.clone(), c.key.clone()])
            .collect()
    }
}

/// The directory of `file` (the current directory for a bare name or no file).
pub fn base_dir(file: Option<&Path>) -> PathBuf {
    match file.and_then(Path::parent) {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Resolves a path written in the config: absolute stays, relative joins the config file's
/// directory (not the process's working directory, which a service manager picks).
pub fn resolve_path(config_file: Option<&Path>, written: &str) -> PathBuf {
    let p = Path::new(written);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir(config_file).join(p)
    }
}
