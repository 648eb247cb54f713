//! Validation: turns the file as written into the runtime form, reporting every error at once.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use toml::Spanned;

use super::error::{ConfigError, ConfigErrors, Locator};
use super::file::{
    AdminSection, BackendEntry, CacheSection, ConfigFile, DurationText, HealthCheckSection,
    PoolSection, RouteCacheSection, RouteSection, SizeText, TlsSection,
};
use crate::cache::{AbandonedFill, CacheMode, CachePolicy};
use crate::host::HostMatch;
use crate::tls::{self, CertSet, LoadedCert};

/// The admin listener when the file names none.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9090";
const DEFAULT_GRACE: Duration = Duration::from_secs(5);
/// The watcher's quiet time when the file names none.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(50);
const MAX_DEBOUNCE: Duration = Duration::from_secs(10);
/// Where `run --upgrade` meets the running process when the file names no socket.
pub const DEFAULT_UPGRADE_SOCK: &str = "/run/dime-edge/upgrade.sock";
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// A validated configuration: everything the proxy needs, nothing it must check again.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Where it came from (a path or `<command line>`), for messages.
    pub source: String,
    /// The file it was read from; `None` in quick mode, which has no file to reload.
    pub file: Option<PathBuf>,
    /// The text it was compiled from, for `GET /config` (redacted there) and reload diffs.
    pub text: String,
    /// The admin API's settings.
    pub admin: AdminSettings,
    /// Reload on file change; SIGHUP and `POST /config/reload` work either way.
    pub watch: bool,
    /// Quiet time after the last file event before the watcher reloads.
    pub debounce: Duration,
    /// Process-wide settings.
    pub server: ServerSettings,
    /// Plain HTTP listeners.
    pub http_listeners: Vec<SocketAddr>,
    /// HTTPS listeners (HTTP/2 and HTTP/1.1 by ALPN).
    pub https_listeners: Vec<SocketAddr>,
    /// Certificates for the HTTPS listeners, in file order; the first is the default.
    pub certificates: Vec<CertSpec>,
    /// The admin listener.
    pub admin_listener: SocketAddr,
    /// Pools, by name order.
    pub pools: Vec<PoolSpec>,
    /// Routes, in file order.
    pub routes: Vec<RouteSpec>,
    /// The shared cache.
    pub cache: CacheSettings,
    /// Valid, but probably not what was meant (`check` prints them; they never stop a start).
    pub warnings: Vec<ConfigError>,
    /// Where the access log and the error log go.
    pub log: LogSettings,
}

/// Where the access log and the error log go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSettings {
    /// The access log (target `access`).
    pub access: LogTarget,
    /// Every other line.
    pub error: LogTarget,
}

/// One log's destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard output, the default: journald and Kubernetes collect it.
    #[default]
    Stdout,
    /// Standard error.
    Stderr,
    /// A file, appended to, created if missing, reopened on SIGUSR1.
    File(PathBuf),
}

impl fmt::Display for LogTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogTarget::Stdout => f.write_str("stdout"),
            LogTarget::Stderr => f.write_str("stderr"),
            LogTarget::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The admin API's settings.
#[derive(Debug, Clone, Default)]
pub struct AdminSettings {
    /// Bearer token of `POST /config/reload` and `GET /config`; `None` refuses both.
    pub token: Option<String>,
    /// The file the token was read from, watched for reload.
    pub token_file: Option<PathBuf>,
}

/// One served certificate, read and checked when the config was compiled.
#[derive(Debug, Clone)]
pub struct CertSpec {
    /// The PEM chain file, resolved against the config file's directory.
    pub cert: PathBuf,
    /// The PEM key file.
    pub key: PathBuf,
    /// SNI names it serves, lowercase: `host` or `*.suffix`.
    pub names: Vec<String>,
    /// The chain and key as read.
    pub loaded: LoadedCert,
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

/// The shared cache's settings.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Bytes of memory for cached objects.
    pub memory: u64,
    /// Bearer token of the purge API; `None` disables purging.
    pub purge_token: Option<String>,
    /// The file the purge token was read from, watched for reload.
    pub purge_token_file: Option<PathBuf>,
    /// How long one fill may hold the lock that coalesces misses.
    pub lock_timeout: Duration,
    /// Bytes that fills in progress may hold before new fills stream through uncached.
    pub fill_memory: u64,
}

/// Cache memory when the file names none.
pub const DEFAULT_CACHE_MEMORY: u64 = 512 << 20;

/// Process-wide settings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Worker threads for the proxy service.
    pub threads: usize,
    /// How long SIGTERM waits for in-flight requests before exiting.
    pub grace_period: Duration,
    /// Unix socket where `run --upgrade` receives the listeners from the running process.
    pub upgrade_sock: PathBuf,
    /// A write to a viewer that makes no progress for this long closes the connection.
    pub send_timeout: Duration,
}

/// `server.send_timeout` when the file names none (nginx's `send_timeout` default).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);

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

    /// The directory relative paths inside the config resolve against: the config file's own.
    pub fn base_dir(&self) -> PathBuf {
        base_dir(self.file.as_deref())
    }

    /// One line for `dime-edge check` and the startup log.
    pub fn summary(&self) -> String {
        let backends: usize = self.pools.iter().map(|p| p.backends.len()).sum();
        let mut listeners: Vec<String> =
            self.http_listeners.iter().map(|a| a.to_string()).collect();
        listeners.extend(self.https_listeners.iter().map(|a| format!("https://{a}")));
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
            self.admin_listener
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

/// Reads and compiles the file at `path`.
pub fn load(path: &Path) -> Result<EdgeConfig, ConfigErrors> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => compile(&name, &text).map(|mut c| {
            c.file = Some(path.to_path_buf());
            c
        }),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file: name,
            line: 0,
            column: 0,
            field: "(file)".into(),
            reason: format!("cannot read: {e}"),
        }])),
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

/// Compiles configuration text; `source` names it in errors. `${NAME}` in string values is
/// replaced by the process's environment variable.
pub fn compile(source: &str, text: &str) -> Result<EdgeConfig, ConfigErrors> {
    compile_with_env(source, text, &super::env::from_process)
}

/// [`compile`] with `${NAME}` looked up in `env`.
pub fn compile_with_env(
    source: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<EdgeConfig, ConfigErrors> {
    let loc = Locator { file: source, text };
    let mut errors = Vec::new();
    let Some(parsed) = super::parse::parse(&loc, env, &mut errors) else {
        errors.sort_by_key(|e| (e.line, e.column));
        return Err(ConfigErrors(errors));
    };
    let mut c = Compiler {
        loc,
        errors: Vec::new(),
    };
    let mut config = c.config(parsed.file);
    // A key with a parse error was left out; what validation says about its absence is
    // noise on top of the error that names it.
    c.errors
        .retain(|e| !super::parse::is_consequence(e, &parsed.removed));
    errors.append(&mut c.errors);
    if errors.is_empty() {
        config.text = text.to_string();
        Ok(config)
    } else {
        errors.sort_by_key(|e| (e.line, e.column));
        Err(ConfigErrors(errors))
    }
}

struct Compiler<'a> {
    loc: Locator<'a>,
    errors: Vec<ConfigError>,
}

impl Compiler<'_> {
    fn err(&mut self, span: Range<usize>, field: &str, reason: impl Into<String>) {
        let e = self.loc.at(span, field, reason);
        self.errors.push(e);
    }

    fn config(&mut self, file: ConfigFile) -> EdgeConfig {
        let server = ServerSettings {
            threads: match &file.server.threads {
                None => std::thread::available_parallelism().map_or(1, |n| n.get()),
                Some(t) => self.count(t, "server.threads", 1, 1024).unwrap_or(1),
            },
            grace_period: self
                .duration(file.server.grace_period.as_ref(), "server.grace_period")
                .unwrap_or(DEFAULT_GRACE),
            upgrade_sock: match &file.server.upgrade_sock {
                Some(p) if p.get_ref().trim().is_empty() => {
                    self.err(
                        p.span(),
                        "server.upgrade_sock",
                        "must not be empty: write a path, e.g. \"/run/dime-edge/upgrade.sock\"",
                    );
                    PathBuf::from(DEFAULT_UPGRADE_SOCK)
                }
                Some(p) => self.path(p.get_ref()),
                None => PathBuf::from(DEFAULT_UPGRADE_SOCK),
            },
            send_timeout: self
                .duration(file.server.send_timeout.as_ref(), "server.send_timeout")
                .unwrap_or(DEFAULT_SEND_TIMEOUT),
        };

        let mut http_listeners = Vec::new();
        for (i, l) in file.listen.http.iter().enumerate() {
            if let Some(addr) = self.listen_addr(l, &format!("listen.http[{i}]")) {
                if http_listeners.contains(&addr) {
                    self.err(l.span(), &format!("listen.http[{i}]"), "listed twice");
                }
                http_listeners.push(addr);
            }
        }
        let mut https_listeners = Vec::new();
        for (i, l) in file.listen.https.iter().enumerate() {
            let field = format!("listen.https[{i}]");
            if let Some(addr) = self.listen_addr(l, &field) {
                if https_listeners.contains(&addr) {
                    self.err(l.span(), &field, "listed twice");
                } else if http_listeners.contains(&addr) {
                    self.err(
                        l.span(),
                        &field,
                        format!(
                            "{addr} is also a plain HTTP listener; one address serves one protocol"
                        ),
                    );
                }
                https_listeners.push(addr);
            }
        }
        if file.listen.http.is_empty() && file.listen.https.is_empty() {
            self.errors.push(self.loc.whole(
                "listen.http",
                "at least one HTTP or HTTPS listener is required",
            ));
        }
        let certificates = self.certificates(&file.tls);
        if !https_listeners.is_empty()
            && certificates.is_empty()
            && file.tls.certificates.is_empty()
        {
            let span = file.listen.https[0].span();
            self.err(
                span,
                "listen.https",
                "HTTPS listeners need at least one [[tls.certificates]] entry (cert = \"...pem\", key = \"...key\")",
            );
        }
        if https_listeners.is_empty() {
            if let Some(first) = file.tls.certificates.first() {
                self.err(
                    first.span(),
                    "tls.certificates",
                    "certificates are configured but no HTTPS listener: add [listen] https = [\"0.0.0.0:443\"]",
                );
            }
        }
        let admin_listener = match &file.listen.admin {
            Some(a) => self
                .listen_addr(a, "listen.admin")
                .unwrap_or_else(|| DEFAULT_ADMIN.parse().expect("constant address")),
            None => DEFAULT_ADMIN.parse().expect("constant address"),
        };
        if http_listeners.contains(&admin_listener) || https_listeners.contains(&admin_listener) {
            let span = file.listen.admin.as_ref().map_or(0..0, |a| a.span());
            self.err(
                span,
                "listen.admin",
                "the admin listener cannot share an HTTP or HTTPS listener's address",
            );
        }

        let pools: Vec<PoolSpec> = file
            .pools
            .iter()
            .filter_map(|(name, p)| self.pool(name, p))
            .collect();
        let pool_names: Vec<&str> = file.pools.keys().map(String::as_str).collect();

        let mut routes: Vec<RouteSpec> = Vec::new();
        let mut seen: HashMap<(HostMatch, String), usize> = HashMap::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        for (i, r) in file.routes.iter().enumerate() {
            if let Some(route) = self.route(i, r, &pool_names, !https_listeners.is_empty()) {
                let name_span = r.get_ref().name.as_ref().map_or(r.span(), |n| n.span());
                if route.name == "none" {
                    self.err(
                        name_span.clone(),
                        &format!("routes[{i}].name"),
                        "\"none\" is reserved for requests no route matches",
                    );
                }
                if let Some(j) = names.get(&route.name) {
                    self.err(
                        name_span,
                        &format!("routes[{i}].name"),
                        format!(
                            "route name \"{}\" is already used by routes[{j}]; names label metrics and must be unique",
                            route.name
                        ),
                    );
                } else {
                    names.insert(route.name.clone(), i);
                }
                let key = (route.host.clone(), route.prefix.clone());
                if let Some(first) = seen.get(&key) {
                    let span = r.get_ref().path.as_ref().map_or(r.span(), |p| p.span());
                    self.err(
                        span,
                        &format!("routes[{i}]"),
                        format!(
                            "duplicate route: host {} and path \"{}\" are already routed by routes[{first}]",
                            route.host, route.prefix
                        ),
                    );
                } else {
                    seen.insert(key, i);
                }
                routes.push(route);
            }
        }
        if file.routes.is_empty() {
            self.errors.push(
                self.loc
                    .whole("routes", "at least one [[routes]] entry is required"),
            );
        }

        let warnings = self.misplaced_cache_tables(&file.routes, &routes);
        let cache = self.cache_settings(&file.cache);
        let admin = self.admin_settings(&file.admin);
        let log = LogSettings {
            access: self.log_target(file.log.access_log.as_ref(), "log.access_log"),
            error: self.log_target(file.log.error_log.as_ref(), "log.error_log"),
        };
        let debounce = match &file.reload.debounce {
            Some(d) => match self.duration(Some(d), "reload.debounce") {
                Some(x) if x <= MAX_DEBOUNCE => x,
                Some(_) => {
                    self.err(d.span(), "reload.debounce", "must be at most 10s");
                    DEFAULT_DEBOUNCE
                }
                None => DEFAULT_DEBOUNCE,
            },
            None => DEFAULT_DEBOUNCE,
        };
        EdgeConfig {
            source: self.loc.file.to_string(),
            file: None,
            text: String::new(),
            admin,
            watch: file.reload.watch.unwrap_or(true),
            debounce,
            server,
            http_listeners,
            https_listeners,
            certificates,
            admin_listener,
            pools,
            routes,
            cache,
            warnings,
            log,
        }
    }

    /// Warnings for a video cache table on a catch-all route while another route has none:
    /// TOML attaches `[routes.cache]` to the `[[routes]]` entry just above it, wherever the
    /// operator meant it, so a table written after the wrong route configures that route.
    fn misplaced_cache_tables(
        &self,
        written: &[Spanned<RouteSection>],
        routes: &[RouteSpec],
    ) -> Vec<ConfigError> {
        if routes.len() != written.len() {
            return Vec::new(); // a route failed: its errors come first
        }
        let mut out = Vec::new();
        for (i, (w, r)) in written.iter().zip(routes).enumerate() {
            let Some(table) = &w.get_ref().cache else {
                continue;
            };
            if r.cache.mode != CacheMode::Video || r.prefix != "/" {
                continue;
            }
            // The uncached route nearest above it is the likeliest owner: the table was
            // written after it and one [[routes]] too late.
            let owner = (0..written.len())
                .filter(|&j| j != i && written[j].get_ref().cache.is_none())
                .filter(|&j| r.host == HostMatch::Any || routes[j].host == r.host)
                .min_by_key(|&j| (j > i, i.abs_diff(j)));
            let Some(j) = owner else { continue };
            let span = self.table_header_span(table.span());
            out.push(self.loc.at(
                span,
                &format!("routes[{i}].cache"),
                format!(
                    "a video cache policy on routes[{i}] (path \"/\", a catch-all) while routes[{j}] (path \"{}\") has none; was it meant for routes[{j}]? \
                     In TOML, [routes.cache] belongs to the [[routes]] entry just above it, wherever it is written. \
                     If it is meant for routes[{j}], move the [routes.cache] table up to just after routes[{j}]'s keys \
                     (before the next [[routes]]), or write it inline there: cache = {{ mode = \"video\" }}",
                    routes[j].prefix
                ),
            ));
        }
        out
    }

    /// Where a route's cache table was written: its `[routes.cache]` header line, or the
    /// inline table itself (`cache = { ... }`), so a warning points at what the operator wrote.
    fn table_header_span(&self, span: Range<usize>) -> Range<usize> {
        let text = self.loc.text;
        let start = span.start.min(text.len());
        let line_start = text[..start].rfind('\n').map_or(0, |p| p + 1);
        if text[line_start..start].contains('=') {
            return span; // inline: `cache = { ... }`
        }
        if text[line_start..].trim_start().starts_with('[') {
            return line_start..line_start + 1;
        }
        // The span starts in the table's body: its header is the nearest one above.
        let mut end = line_start;
        while end > 0 {
            let prev = text[..end - 1].rfind('\n').map_or(0, |p| p + 1);
            if text[prev..end].trim_start().starts_with('[') {
                return prev..prev + 1;
            }
            end = prev;
        }
        span
    }

    fn pool(&mut self, name: &str, section: &Spanned<PoolSection>) -> Option<PoolSpec> {
        let field = format!("pools.{name}");
        let p = section.get_ref();
        if !valid_name(name) {
            self.err(
                section.span(),
                &field,
                "pool names use letters, digits, '-' and '_' only",
            );
        }
        let mut backends = Vec::new();
        if p.backends.get_ref().is_empty() {
            self.err(
                p.backends.span(),
                &format!("{field}.backends"),
                "empty pool: list at least one backend",
            );
        }
        for (i, b) in p.backends.get_ref().iter().enumerate() {
            let bfield = format!("{field}.backends[{i}]");
            let (addr, weight) = match b.get_ref() {
                BackendEntry::Addr(a) => (a, None),
                BackendEntry::Weighted(w) => (&w.addr, w.weight),
            };
            let weight = match weight {
                Some(w) if (1..=1000).contains(&w) => Some(w as usize),
                Some(w) => {
                    self.err(
                        b.span(),
                        &format!("{bfield}.weight"),
                        format!("must be between 1 and 1000, got {w}"),
                    );
                    None
                }
                None => Some(1),
            };
            match parse_backend_addr(addr) {
                Ok(a) => {
                    if backends.iter().any(|(b, _)| *b == a) {
                        self.err(b.span(), &bfield, format!("backend {a} is listed twice"));
                    }
                    if let Some(w) = weight {
                        backends.push((a, w));
                    }
                }
                Err(reason) => self.err(b.span(), &bfield, reason),
            }
        }
        let selection = match &p.selection {
            None => Selection::RoundRobin,
            Some(s) => match s.get_ref().as_str() {
                "round_robin" => Selection::RoundRobin,
                "consistent_hash" => Selection::ConsistentHash,
                other => {
                    self.err(
                        s.span(),
                        &format!("{field}.selection"),
                        format!(
                            "unknown selection \"{other}\": use round_robin or consistent_hash"
                        ),
                    );
                    Selection::RoundRobin
                }
            },
        };
        let d = |c: &mut Self, v: &Option<Spanned<DurationText>>, key: &str, default: u64| {
            c.duration(v.as_ref(), &format!("{field}.{key}"))
                .unwrap_or(Duration::from_secs(default))
        };
        let connect_timeout = d(self, &p.connect_timeout, "connect_timeout", 2);
        let read_timeout = d(self, &p.read_timeout, "read_timeout", 30);
        let write_timeout = d(self, &p.write_timeout, "write_timeout", 30);
        let idle_timeout = d(self, &p.idle_timeout, "idle_timeout", 60);
        let total_timeout =
            self.duration(p.total_timeout.as_ref(), &format!("{field}.total_timeout"));
        if let (Some(total), Some(span)) = (total_timeout, p.total_timeout.as_ref()) {
            if total < connect_timeout {
                self.err(
                    span.span(),
                    &format!("{field}.total_timeout"),
                    "must not be shorter than connect_timeout",
                );
            }
        }
        let retries = match &p.retries {
            Some(r) => self
                .count(r, &format!("{field}.retries"), 0, 16)
                .unwrap_or(0),
            None => 2,
        };
        let panic_mode = p.panic_mode.as_ref().is_none_or(|v| *v.get_ref());
        let health_check = self.health_check(&field, p.health_check.as_ref());
        let tls = self.upstream_tls(&field, p);
        Some(PoolSpec {
            name: name.to_string(),
            backends,
            selection,
            connect_timeout,
            read_timeout,
            write_timeout,
            total_timeout,
            idle_timeout,
            retries,
            panic_mode,
            health_check,
            tls,
        })
    }

    /// A path from the file (certificates, CA bundles), relative to the file's directory, so
    /// the config means the same whatever directory the edge starts in.
    fn path(&self, p: &str) -> PathBuf {
        resolve_path(Some(Path::new(self.loc.file)), p)
    }

    fn certificates(&mut self, t: &TlsSection) -> Vec<CertSpec> {
        let mut out: Vec<CertSpec> = Vec::new();
        // name -> index of the certificate that serves it
        let mut owners: HashMap<String, usize> = HashMap::new();
        for (i, entry) in t.certificates.iter().enumerate() {
            let field = format!("tls.certificates[{i}]");
            let e = entry.get_ref();
            let cert = self.path(e.cert.get_ref());
            let key = self.path(e.key.get_ref());
            let loaded = match tls::certs::load(&cert, &key) {
                Ok(l) => l,
                Err(err) => {
                    // A key problem is reported at the key field, everything else at the cert.
                    let (span, f) = match &err {
                        tls::CertError::NoKey { .. } => (e.key.span(), format!("{field}.key")),
                        tls::CertError::Read { path, .. } if *path == key => {
                            (e.key.span(), format!("{field}.key"))
                        }
                        _ => (e.cert.span(), format!("{field}.cert")),
                    };
                    self.err(span, &f, err.to_string());
                    continue;
                }
            };
            let names: Vec<String> = match &e.names {
                Some(list) => {
                    if list.get_ref().is_empty() {
                        self.err(list.span(), &format!("{field}.names"), "empty list: name at least one host, or leave names out to use the certificate's SANs");
                    }
                    let mut names = Vec::new();
                    for (j, n) in list.get_ref().iter().enumerate() {
                        let nf = format!("{field}.names[{j}]");
                        let name = match HostMatch::parse(n.get_ref()) {
                            Ok(HostMatch::Exact(h)) => h,
                            Ok(HostMatch::Wildcard(suffix)) => format!("*{suffix}"),
                            Ok(HostMatch::Any) => continue,
                            Err(reason) => {
                                self.err(n.span(), &nf, reason);
                                continue;
                            }
                        };
                        if !loaded.covers(&name) {
                            self.err(
                                n.span(),
                                &nf,
                                format!(
                                    "{} does not cover \"{name}\" (its DNS names: {}); clients would reject the handshake",
                                    cert.display(),
                                    if loaded.sans.is_empty() { "none".to_string() } else { loaded.sans.join(", ") }
                                ),
                            );
                        }
                        names.push(name);
                    }
                    names
                }
                None => {
                    if loaded.sans.is_empty() {
                        self.err(
                            e.cert.span(),
                            &format!("{field}.cert"),
                            format!("{}: the certificate has no DNS names in subjectAltName; list the hosts it serves with names = [...]", cert.display()),
                        );
                    }
                    loaded.sans.clone()
                }
            };
            for name in &names {
                if let Some(j) = owners.get(name) {
                    let span = e.names.as_ref().map_or(e.cert.span(), |n| n.span());
                    self.err(
                        span,
                        &format!("{field}.names"),
                        format!("\"{name}\" is already served by tls.certificates[{j}]; each name needs exactly one certificate"),
                    );
                } else {
                    owners.insert(name.clone(), i);
                }
            }
            out.push(CertSpec {
                cert,
                key,
                names,
                loaded,
            });
        }
        out
    }

    fn upstream_tls(&mut self, field: &str, p: &PoolSection) -> Option<UpstreamTls> {
        let on = p.tls.as_ref().is_some_and(|t| *t.get_ref());
        if !on {
            for (key, span) in [
                ("sni", p.sni.as_ref().map(|s| s.span())),
                ("ca_file", p.ca_file.as_ref().map(|s| s.span())),
                ("verify", p.verify.as_ref().map(|s| s.span())),
            ] {
                if let Some(span) = span {
                    self.err(
                        span,
                        &format!("{field}.{key}"),
                        "only applies with tls = true",
                    );
                }
            }
            return None;
        }
        let verify = p.verify.as_ref().is_none_or(|v| *v.get_ref());
        let sni = match &p.sni {
            Some(s) => match HostMatch::parse(s.get_ref()) {
                Ok(HostMatch::Exact(h)) => h,
                _ => {
                    self.err(s.span(), &format!("{field}.sni"), format!("invalid name \"{}\": write the host name the backends' certificates are issued for, e.g. \"origin.example.com\"", s.get_ref()));
                    String::new()
                }
            },
            None if verify => {
                let span = p.tls.as_ref().map_or(0..0, |t| t.span());
                self.err(span, &format!("{field}.sni"), "tls = true needs sni = \"name\": the host name the backends' certificates are issued for (it is sent in SNI and verified)");
                String::new()
            }
            None => String::new(),
        };
        let (ca, ca_file) = match &p.ca_file {
            None => (None, None),
            Some(f) => {
                let path = self.path(f.get_ref());
                match read_ca_bundle(&path) {
                    Ok(ders) => (Some(Arc::new(ders)), Some(path)),
                    Err(reason) => {
                        self.err(f.span(), &format!("{field}.ca_file"), reason);
                        (None, Some(path))
                    }
                }
            }
        };
        Some(UpstreamTls {
            sni,
            verify,
            ca,
            ca_file,
        })
    }

    fn health_check(
        &mut self,
        pool_field: &str,
        h: Option<&HealthCheckSection>,
    ) -> HealthCheckSpec {
        let field = format!("{pool_field}.health_check");
        let Some(h) = h else {
            return HealthCheckSpec {
                kind: HealthCheckKind::Tcp,
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(1),
                rise: 2,
                fall: 2,
            };
        };
        let http = match &h.kind {
            None => h.path.is_some(),
            Some(k) => match k.get_ref().as_str() {
                "http" => true,
                "tcp" => false,
                other => {
                    self.err(
                        k.span(),
                        &format!("{field}.type"),
                        format!("unknown health check type \"{other}\": use tcp or http"),
                    );
                    false
                }
            },
        };
        let kind = if http {
            let path = match &h.path {
                Some(p) if p.get_ref().starts_with('/') => p.get_ref().clone(),
                Some(p) => {
                    self.err(p.span(), &format!("{field}.path"), "must start with '/'");
                    "/".into()
                }
                None => "/".into(),
            };
            let expect_status = match &h.expect_status {
                Some(s) => self
                    .count(s, &format!("{field}.expect_status"), 100, 599)
                    .unwrap_or(200) as u16,
                None => 200,
            };
            HealthCheckKind::Http {
                path,
                host: h.host.as_ref().and_then(|host| {
                    let value = host.get_ref();
                    let valid = !value.is_empty()
                        && value
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
                    if valid {
                        Some(value.clone())
                    } else {
                        self.err(
                            host.span(),
                            &format!("{field}.host"),
                            format!(
                                "invalid host \"{}\": write a host name, e.g. \"origin.internal\"",
                                value.escape_debug()
                            ),
                        );
                        None
                    }
                }),
                expect_status,
            }
        } else {
            for (key, present) in [
                ("path", h.path.as_ref().map(|p| p.span())),
                ("host", h.host.as_ref().map(|p| p.span())),
                ("expect_status", h.expect_status.as_ref().map(|p| p.span())),
            ] {
                if let Some(span) = present {
                    self.err(
                        span,
                        &format!("{field}.{key}"),
                        "only applies to type = \"http\"",
                    );
                }
            }
            HealthCheckKind::Tcp
        };
        let interval = self
            .duration(h.interval.as_ref(), &format!("{field}.interval"))
            .unwrap_or(Duration::from_secs(5));
        let timeout = self
            .duration(h.timeout.as_ref(), &format!("{field}.timeout"))
            .unwrap_or(Duration::from_secs(1));
        let rise = h
            .rise
            .as_ref()
            .map_or(Some(2), |r| self.count(r, &format!("{field}.rise"), 1, 100))
            .unwrap_or(2);
        let fall = h
            .fall
            .as_ref()
            .map_or(Some(2), |r| self.count(r, &format!("{field}.fall"), 1, 100))
            .unwrap_or(2);
        HealthCheckSpec {
            kind,
            interval,
            timeout,
            rise,
            fall,
        }
    }

    fn route(
        &mut self,
        i: usize,
        r: &Spanned<RouteSection>,
        pools: &[&str],
        has_https: bool,
    ) -> Option<RouteSpec> {
        let field = format!("routes[{i}]");
        let s = r.get_ref();
        let mut ok = true;
        if !pools.contains(&s.pool.get_ref().as_str()) {
            let known = if pools.is_empty() {
                "no pools are defined".to_string()
            } else {
                format!("defined pools: {}", pools.join(", "))
            };
            self.err(
                s.pool.span(),
                &format!("{field}.pool"),
                format!("unknown pool \"{}\" ({known})", s.pool.get_ref()),
            );
            ok = false;
        }
        let host = match &s.host {
            None => HostMatch::Any,
            Some(h) => match HostMatch::parse(h.get_ref()) {
                Ok(m) => m,
                Err(reason) => {
                    self.err(h.span(), &format!("{field}.host"), reason);
                    ok = false;
                    HostMatch::Any
                }
            },
        };
        let prefix = match &s.path {
            None => "/".to_string(),
            Some(p) if p.get_ref().starts_with('/') && !p.get_ref().contains(['?', '#']) => {
                // Requests are matched by their canonical path, which a prefix that is not
                // canonical itself could never start.
                match crate::request_path::canonicalize(p.get_ref()) {
                    Ok(c) if c == *p.get_ref() => {}
                    Ok(c) => {
                        self.err(
                            p.span(),
                            &format!("{field}.path"),
                            format!("requests are routed by their canonical path, which never starts with \"{}\": write \"{c}\"", p.get_ref()),
                        );
                        ok = false;
                    }
                    Err(e) => {
                        self.err(p.span(), &format!("{field}.path"), e.to_string());
                        ok = false;
                    }
                }
                p.get_ref().clone()
            }
            Some(p) => {
                self.err(
                    p.span(),
                    &format!("{field}.path"),
                    "must be a path prefix starting with '/' (no query or fragment)",
                );
                ok = false;
                "/".into()
            }
        };
        let upstream_headers = self.headers(
            &s.upstream_headers,
            &format!("{field}.upstream_headers"),
            r.span(),
        );
        let response_headers = self.headers(
            &s.response_headers,
            &format!("{field}.response_headers"),
            r.span(),
        );
        let name = match &s.name {
            Some(n) if valid_route_name(n.get_ref()) => n.get_ref().clone(),
            Some(n) => {
                self.err(
                    n.span(),
                    &format!("{field}.name"),
                    "route names use letters, digits and '-', '_', '.', '/', '*'",
                );
                n.get_ref().clone()
            }
            None => match &host {
                HostMatch::Any => prefix.clone(),
                h => format!("{h}{prefix}"),
            },
        };
        let cache = self.route_cache(&field, s.cache.as_ref().map(Spanned::get_ref));
        let redirect_https = s.redirect_https.as_ref().is_some_and(|r| *r.get_ref());
        if redirect_https && !has_https {
            let span = s.redirect_https.as_ref().map_or(r.span(), |r| r.span());
            self.err(
                span,
                &format!("{field}.redirect_https"),
                "redirects to HTTPS need an HTTPS listener: add [listen] https = [\"0.0.0.0:443\"]",
            );
        }
        ok.then(|| RouteSpec {
            redirect_https,
            cache,
            name,
            host,
            prefix,
            pool: s.pool.get_ref().clone(),
            strip_prefix: s.strip_prefix,
            upstream_headers,
            response_headers,
        })
    }

    /// A log destination: `stdout`, `stderr` or a file whose directory exists (the edge creates
    /// the file, not directories, as nginx does).
    fn log_target(&mut self, written: Option<&Spanned<String>>, field: &str) -> LogTarget {
        let Some(w) = written else {
            return LogTarget::Stdout;
        };
        match w.get_ref().as_str() {
            "stdout" => return LogTarget::Stdout,
            "stderr" => return LogTarget::Stderr,
            "" => {
                self.err(
                    w.span(),
                    field,
                    "must not be empty: write a path, e.g. \"/var/log/dime/access.log\", or leave it out for stdout",
                );
                return LogTarget::Stdout;
            }
            _ => {}
        }
        let path = self.path(w.get_ref());
        let dir = path.parent().unwrap_or(Path::new("/"));
        if path.is_dir() {
            self.err(
                w.span(),
                field,
                format!(
                    "{} is a directory: name the file, e.g. \"{}/dime.log\"",
                    path.display(),
                    path.display()
                ),
            );
        } else if !dir.is_dir() {
            self.err(
                w.span(),
                field,
                format!("{}: directory {} does not exist; create it (the edge creates the file, not its directory)", path.display(), dir.display()),
            );
        }
        LogTarget::File(path)
    }

    fn admin_settings(&mut self, a: &AdminSection) -> AdminSettings {
        let (token, token_file) =
            self.secret(a.token.as_ref(), a.token_file.as_ref(), "admin", "token");
        AdminSettings { token, token_file }
    }

    /// A token written inline (`KEY`) or read from a file (`KEY_file`), at least 16
    /// characters. The file is read here, at compile time, so a missing or empty one is an
    /// error of this config, with its path, never a token that silently stops matching.
    fn secret(
        &mut self,
        inline: Option<&Spanned<String>>,
        file: Option<&Spanned<String>>,
        section: &str,
        key: &str,
    ) -> (Option<String>, Option<PathBuf>) {
        let file_field = format!("{section}.{key}_file");
        let (token, span, field, path) = match (inline, file) {
            (Some(_), Some(f)) => {
                self.err(
                    f.span(),
                    &file_field,
                    format!("set {key} or {key}_file, not both"),
                );
                return (None, None);
            }
            (Some(t), None) => (
                t.get_ref().clone(),
                t.span(),
                format!("{section}.{key}"),
                None,
            ),
            (None, Some(f)) => {
                let path = self.path(f.get_ref());
                let text = match std::fs::read_to_string(&path) {
                    Ok(text) => text,
                    Err(e) => {
                        self.err(
                            f.span(),
                            &file_field,
                            format!("cannot read {}: {}", path.display(), io_reason(&e)),
                        );
                        return (None, Some(path));
                    }
                };
                // `echo secret > file` and most editors end the file with a newline that is
                // not part of the token.
                let token = text.trim_end_matches(['\n', '\r']).to_string();
                if token.is_empty() {
                    self.err(
                        f.span(),
                        &file_field,
                        format!("is empty: {} holds no token", path.display()),
                    );
                    return (None, Some(path));
                }
                (token, f.span(), file_field, Some(path))
            }
            (None, None) => return (None, None),
        };
        if token.len() < 16 {
            self.err(span, &field, "too short: use at least 16 characters");
            return (None, path);
        }
        (Some(token), path)
    }

    fn cache_settings(&mut self, c: &CacheSection) -> CacheSettings {
        let memory = match &c.memory {
            Some(m) => self.size(m, "cache.memory").unwrap_or(DEFAULT_CACHE_MEMORY),
            None => DEFAULT_CACHE_MEMORY,
        };
        let (purge_token, purge_token_file) = self.secret(
            c.purge_token.as_ref(),
            c.purge_token_file.as_ref(),
            "cache",
            "purge_token",
        );
        let lock_timeout = self
            .duration(c.lock_timeout.as_ref(), "cache.lock_timeout")
            .unwrap_or(Duration::from_secs(30));
        // A quarter of the cache by default: fills become stored objects, so the two together
        // stay within 1.25x `memory` even when every fill is in progress at once.
        let fill_memory = match &c.fill_memory {
            Some(m) => self.size(m, "cache.fill_memory").unwrap_or(memory / 4),
            None => memory / 4,
        };
        CacheSettings {
            memory,
            purge_token,
            purge_token_file,
            lock_timeout,
            fill_memory,
        }
    }

    fn route_cache(&mut self, route_field: &str, c: Option<&RouteCacheSection>) -> CachePolicy {
        let mut p = CachePolicy::rfc_default();
        let Some(c) = c else {
            return p;
        };
        let field = format!("{route_field}.cache");
        if let Some(m) = &c.mode {
            p.mode = match m.get_ref().as_str() {
                "rfc" => CacheMode::Rfc,
                "video" => CacheMode::Video,
                "off" => CacheMode::Off,
                other => {
                    self.err(
                        m.span(),
                        &format!("{field}.mode"),
                        format!("unknown cache mode \"{other}\": use rfc, video or off"),
                    );
                    CacheMode::Rfc
                }
            };
        }
        if p.mode == CacheMode::Video {
            p.keep_query = Some(vec!["_HLS_msn".into(), "_HLS_part".into()]);
            p.background_fill = true;
        }
        if let Some(on) = c.background_fill {
            p.background_fill = on;
        }
        if let Some(a) = &c.abandoned_fill {
            p.abandoned_fill = match a.get_ref().as_str() {
                "finish" => AbandonedFill::Finish,
                "abort" => AbandonedFill::Abort,
                other => {
                    self.err(
                        a.span(),
                        &format!("{field}.abandoned_fill"),
                        format!("unknown value \"{other}\": use finish or abort"),
                    );
                    AbandonedFill::Finish
                }
            };
        }
        if let Some(keep) = &c.keep_query {
            p.keep_query = Some(keep.clone());
        }
        if let Some(store) = c.store_set_cookie {
            p.store_set_cookie = store;
        }
        if let Some(m) = &c.max_object_size {
            if let Some(n) = self.size(m, &format!("{field}.max_object_size")) {
                p.max_object_size = usize::try_from(n).unwrap_or(usize::MAX);
            }
        }
        let mut d = |v: &Option<Spanned<DurationText>>,
                     key: &str,
                     slot: &mut Duration,
                     allow_zero: bool| {
            let Some(v) = v else { return };
            let f = format!("{field}.{key}");
            if allow_zero
                && humantime::parse_duration(v.get_ref().as_str()).is_ok_and(|d| d.is_zero())
            {
                *slot = Duration::ZERO;
            } else if let Some(x) = self.duration(Some(v), &f) {
                *slot = x;
            }
        };
        d(
            &c.target_duration,
            "target_duration",
            &mut p.target_duration,
            false,
        );
        d(&c.media_ttl, "media_ttl", &mut p.media_ttl, false);
        d(&c.negative_ttl, "negative_ttl", &mut p.negative_ttl, true);
        d(
            &c.stale_while_revalidate,
            "stale_while_revalidate",
            &mut p.stale_while_revalidate,
            true,
        );
        d(
            &c.stale_if_error,
            "stale_if_error",
            &mut p.stale_if_error,
            true,
        );
        p
    }

    fn size(&mut self, v: &Spanned<SizeText>, field: &str) -> Option<u64> {
        match parse_size(&v.get_ref().0) {
            Some(n) if n > 0 => Some(n),
            _ => {
                self.err(
                    v.span(),
                    field,
                    format!(
                        "invalid size \"{}\": write a number and a unit, e.g. \"512MiB\", \"4GiB\"",
                        v.get_ref().0
                    ),
                );
                None
            }
        }
    }

    fn headers(
        &mut self,
        map: &BTreeMap<String, Spanned<String>>,
        field: &str,
        table_span: Range<usize>,
    ) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::new();
        for (name, value) in map {
            let hname = match HeaderName::from_bytes(name.as_bytes()) {
                Ok(n) => n,
                Err(_) => {
                    self.err(
                        table_span.clone(),
                        &format!("{field}.{name}"),
                        "not a valid header name",
                    );
                    continue;
                }
            };
            if crate::forwarding::is_hop_by_hop(&hname) {
                self.err(
                    value.span(),
                    &format!("{field}.{name}"),
                    "hop-by-hop headers cannot be set by a route",
                );
                continue;
            }
            match HeaderValue::from_str(value.get_ref()) {
                Ok(v) => out.push((hname, v)),
                Err(_) => self.err(
                    value.span(),
                    &format!("{field}.{name}"),
                    "not a valid header value",
                ),
            }
        }
        out
    }

    fn duration(&mut self, v: Option<&Spanned<DurationText>>, field: &str) -> Option<Duration> {
        let v = v?;
        let text = v.get_ref().as_str();
        match humantime::parse_duration(text) {
            Ok(d) if d.is_zero() => {
                self.err(
                    v.span(),
                    field,
                    "invalid duration: must be greater than zero",
                );
                None
            }
            Ok(d) if d > MAX_DURATION => {
                self.err(v.span(), field, "invalid duration: must be at most 24h");
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.err(
                    v.span(),
                    field,
                    format!("invalid duration \"{text}\" ({e}): write a number and a unit, e.g. \"500ms\", \"2s\", \"1m\""),
                );
                None
            }
        }
    }

    fn count(&mut self, v: &Spanned<i64>, field: &str, min: i64, max: i64) -> Option<usize> {
        let n = *v.get_ref();
        if (min..=max).contains(&n) {
            Some(n as usize)
        } else {
            self.err(
                v.span(),
                field,
                format!("must be between {min} and {max}, got {n}"),
            );
            None
        }
    }

    fn listen_addr(&mut self, v: &Spanned<String>, field: &str) -> Option<SocketAddr> {
        match v.get_ref().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    v.span(),
                    field,
                    format!(
                        "unparsable address \"{}\": write IP:port, e.g. \"0.0.0.0:8080\" or \"[::]:8080\"",
                        v.get_ref()
                    ),
                );
                None
            }
        }
    }
}

/// Parses a byte size: `"4GiB"`, `"512MiB"`, `"100MB"`, `"64KiB"` or plain bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Parses `IP:port`, or resolves `name:port` once (the first address wins).
pub fn parse_backend_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let bad = || format!("unparsable address \"{s}\": write host:port, e.g. \"10.0.0.5:8080\"");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let _: u16 = port.parse().map_err(|_| bad())?;
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !host_ok {
        return Err(bad());
    }
    match s.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("host \"{host}\" resolves to no address")),
        Err(e) => Err(format!("cannot resolve \"{host}\": {e}")),
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn valid_route_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./*".contains(c))
}

/// Reads a PEM bundle of CA certificates into DER, each one checked to parse.
fn read_ca_bundle(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    use rustls_pki_types::pem::PemObject;
    use x509_parser::prelude::{FromDer, X509Certificate};
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let ders = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate bundle: {e}", path.display()))?;
    if ders.is_empty() {
        return Err(format!(
            "{}: no CERTIFICATE block: expected PEM CA certificates",
            path.display()
        ));
    }
    let mut out = Vec::new();
    for (i, d) in ders.iter().enumerate() {
        X509Certificate::from_der(d.as_ref()).map_err(|e| {
            format!(
                "{}: certificate #{} cannot be parsed: {e}",
                path.display(),
                i + 1
            )
        })?;
        out.push(d.to_vec());
    }
    Ok(out)
}

/// An I/O error without Rust's `(os error 2)` suffix.
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str =
        "[listen]\nhttp = [\"127.0.0.1:8080\"]\n[pools.p]\nbackends = [\"127.0.0.1:8081\"]\n";

    fn warnings(routes: &str) -> Vec<String> {
        let c = compile("edge.toml", &format!("{HEAD}{routes}")).unwrap();
        c.warnings.iter().map(ConfigError::as_warning).collect()
    }

    #[test]
    fn a_video_table_on_the_catch_all_is_flagged_only_when_another_route_lacks_one() {
        let misplaced = "[[routes]]\npath = \"/stream/\"\npool = \"p\"\n[[routes]]\npath = \"/\"\npool = \"p\"\n[routes.cache]\nmode = \"video\"\n";
        let w = warnings(misplaced);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("edge.toml:11:1: warning: routes[1].cache: "),
            "{w:?}"
        );
        // Inline on the catch-all: the warning points at the inline table.
        let inline = "[[routes]]\npath = \"/stream/\"\npool = \"p\"\n[[routes]]\npath = \"/\"\npool = \"p\"\ncache = { mode = \"video\" }\n";
        let w = warnings(inline);
        assert!(
            w[0].starts_with("edge.toml:11:9: warning: routes[1].cache: "),
            "{w:?}"
        );
        for fine in [
            // The other route has its own table: the catch-all's video mode is deliberate.
            "[[routes]]\npath = \"/stream/\"\npool = \"p\"\n[routes.cache]\nmode = \"rfc\"\n[[routes]]\npath = \"/\"\npool = \"p\"\n[routes.cache]\nmode = \"video\"\n",
            // A video table on a specific route.
            "[[routes]]\npath = \"/stream/\"\npool = \"p\"\n[routes.cache]\nmode = \"video\"\n[[routes]]\npath = \"/\"\npool = \"p\"\n",
            // The catch-all alone.
            "[[routes]]\npath = \"/\"\npool = \"p\"\n[routes.cache]\nmode = \"video\"\n",
        ] {
            assert_eq!(warnings(fine), Vec::<String>::new(), "{fine}");
        }
    }
}
