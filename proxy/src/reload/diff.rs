//! What a reload changes, computed once as a typed diff between the running config and the
//! next: the reload applies it (restart-only settings held at their running values, pools kept
//! or rebuilt as it says) and renders it as the lines its outcome reports.
//!
//! Lines name fields by the config file's own keys: `route stream: cache.mode rfc → video` is
//! `routes[i].cache.mode` of the route named `stream`, `pool web: connect_timeout 1s → 2s` is
//! `pools.web.connect_timeout`, `cache.memory changed: 64 MiB → 128 MiB` is `cache.memory`.
//! Values are shown as the file writes them (sizes and durations with units); secrets and
//! header values never are.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::cache::{AbandonedFill, CacheMode, CachePolicy};
use crate::config::types::{HealthCheckKind, RestartSettings};
use crate::config::{CertSpec, EdgeConfig, PoolSpec, RouteSpec, Selection, UpstreamTls};

/// Where a changed field lives: the top level, a route or a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// A top-level key (`reload.debounce`).
    Top,
    /// A route, by name.
    Route(String),
    /// A pool, by name.
    Pool(String),
}

/// One difference between the running config and the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// A restart-only setting the file changed; the running value stays.
    Restart {
        /// The config key.
        field: &'static str,
        /// The running value, as the file writes it.
        running: String,
        /// The value in the file.
        wanted: String,
    },
    /// A route that is new.
    RouteAdded {
        /// Its name.
        route: String,
        /// Its pool.
        pool: String,
    },
    /// A route that is gone.
    RouteRemoved(String),
    /// A pool that is new; its backends wait for a first check.
    PoolAdded(String),
    /// A pool whose selection, health check or TLS changed: it gets new members.
    PoolRebuilt(String),
    /// A pool that is gone; requests in flight finish.
    PoolRemoved(String),
    /// A field that took another value.
    Field {
        /// Whose field.
        scope: Scope,
        /// The key, below the scope.
        field: String,
        /// The old value, as the file writes it.
        old: String,
        /// The new value.
        new: String,
    },
    /// A change said without its values (a secret, a header, a backend).
    Note {
        /// Whose.
        scope: Scope,
        /// What changed.
        what: String,
    },
    /// A served certificate added, replaced, renamed or removed.
    Certificate(String),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Top => Ok(()),
            Scope::Route(name) => write!(f, "route {name}: "),
            Scope::Pool(name) => write!(f, "pool {name}: "),
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Restart {
                field,
                running,
                wanted,
            } => write!(f, "{field} changed: {running} → {wanted}"),
            Change::RouteAdded { route, pool } => write!(f, "route {route} added (pool {pool})"),
            Change::RouteRemoved(route) => write!(f, "route {route} removed"),
            Change::PoolAdded(pool) => write!(f, "pool {pool} added"),
            Change::PoolRebuilt(pool) => write!(
                f,
                "pool {pool} rebuilt (selection, health check or TLS changed; backends checked before traffic)"
            ),
            Change::PoolRemoved(pool) => {
                write!(f, "pool {pool} removed (requests in flight finish)")
            }
            Change::Field {
                scope,
                field,
                old,
                new,
            } => write!(f, "{scope}{field} {old} → {new}"),
            Change::Note { scope, what } => write!(f, "{scope}{what}"),
            Change::Certificate(line) => f.write_str(line),
        }
    }
}

/// Everything a reload changes, computed once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ConfigDiff {
    /// Restart-only settings the file changed ([`Change::Restart`]), in [`RestartSettings`]'
    /// field order.
    pub restart: Vec<Change>,
    /// What applies live, in the order the outcome lists it.
    pub live: Vec<Change>,
}

impl ConfigDiff {
    /// The difference between the running config and the next one.
    pub(crate) fn between(running: &EdgeConfig, next: &EdgeConfig) -> Self {
        let mut live = Vec::new();
        routes(&mut live, running, next);
        pools(&mut live, running, next);
        let mut top = Fields::top(&mut live);
        top.secret(
            "cache.purge_token",
            &running.cache.purge_token,
            &next.cache.purge_token,
        );
        top.secret("admin.token", &running.admin.token, &next.admin.token);
        top.field("reload.watch", &running.watch, &next.watch, bool_);
        top.field(
            "reload.debounce",
            &running.debounce,
            &next.debounce,
            duration,
        );
        top.field(
            "server.send_timeout",
            &running.server.send_timeout,
            &next.server.send_timeout,
            duration,
        );
        top.field(
            "server.max_connections",
            &running.server.max_connections,
            &next.server.max_connections,
            number,
        );
        top.field(
            "server.keepalive_timeout",
            &running.server.keepalive_timeout,
            &next.server.keepalive_timeout,
            duration,
        );
        top.field(
            "server.header_timeout",
            &running.server.header_timeout,
            &next.server.header_timeout,
            duration,
        );
        top.field(
            "server.keepalive_requests",
            &running.server.keepalive_requests,
            &next.server.keepalive_requests,
            number,
        );
        top.field(
            "server.max_request_header_size",
            &running.server.max_request_header_size,
            &next.server.max_request_header_size,
            size,
        );
        certificates(&mut live, &running.certificates, &next.certificates);
        ConfigDiff {
            restart: restart(&running.restart, &next.restart),
            live,
        }
    }

    /// Whether the pool called `name` gets new members (it is new, or its selection, health
    /// check or TLS changed); the other pools keep theirs and change only their backends.
    pub(crate) fn rebuilds(&self, name: &str) -> bool {
        self.live.iter().any(|c| match c {
            Change::PoolAdded(p) | Change::PoolRebuilt(p) => p == name,
            _ => false,
        })
    }

    /// Whether the set of served certificates changed.
    pub(crate) fn certificates_changed(&self) -> bool {
        self.live
            .iter()
            .any(|c| matches!(c, Change::Certificate(_)))
    }

    /// Puts the running restart-only settings back into `next`: what the diff reported in
    /// [`ConfigDiff::restart`] waits for a restart.
    pub(crate) fn hold(running: &RestartSettings, next: &mut EdgeConfig) {
        next.restart = running.clone();
    }

    /// The outcome's `restart_required` lines.
    pub(crate) fn restart_lines(&self) -> Vec<String> {
        self.restart.iter().map(ToString::to_string).collect()
    }

    /// The outcome's `changes` lines for what applies live.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.live.iter().map(ToString::to_string).collect()
    }
}

/// One [`Change::Restart`] per restart-only setting that differs. The destructuring names every
/// field of [`RestartSettings`], so a new one does not compile until it is compared here.
fn restart(running: &RestartSettings, next: &RestartSettings) -> Vec<Change> {
    let RestartSettings {
        http_listeners,
        https_listeners,
        upgrade_sock,
        admin_listener,
        threads,
        grace_period,
        cache_memory,
        cache_fill_memory,
        cache_lock_timeout,
        http2_max_concurrent_streams,
        http2_idle_timeout,
    } = next;
    let mut out = Vec::new();
    let mut note = |field: &'static str, differs: bool, running: String, wanted: String| {
        if differs {
            out.push(Change::Restart {
                field,
                running,
                wanted,
            });
        }
    };
    note(
        "listen.http",
        *http_listeners != running.http_listeners,
        addrs(&running.http_listeners),
        addrs(http_listeners),
    );
    note(
        "listen.https",
        *https_listeners != running.https_listeners,
        addrs(&running.https_listeners),
        addrs(https_listeners),
    );
    note(
        "server.upgrade_sock",
        *upgrade_sock != running.upgrade_sock,
        running.upgrade_sock.display().to_string(),
        upgrade_sock.display().to_string(),
    );
    note(
        "listen.admin",
        *admin_listener != running.admin_listener,
        running.admin_listener.to_string(),
        admin_listener.to_string(),
    );
    note(
        "server.threads",
        *threads != running.threads,
        running.threads.to_string(),
        threads.to_string(),
    );
    note(
        "server.grace_period",
        *grace_period != running.grace_period,
        duration(&running.grace_period),
        duration(grace_period),
    );
    note(
        "cache.memory",
        *cache_memory != running.cache_memory,
        size(&running.cache_memory),
        size(cache_memory),
    );
    note(
        "cache.fill_memory",
        *cache_fill_memory != running.cache_fill_memory,
        size(&running.cache_fill_memory),
        size(cache_fill_memory),
    );
    note(
        "cache.lock_timeout",
        *cache_lock_timeout != running.cache_lock_timeout,
        duration(&running.cache_lock_timeout),
        duration(cache_lock_timeout),
    );
    note(
        "server.http2_max_concurrent_streams",
        *http2_max_concurrent_streams != running.http2_max_concurrent_streams,
        running.http2_max_concurrent_streams.to_string(),
        http2_max_concurrent_streams.to_string(),
    );
    // HTTP/1.1 takes the new keepalive_timeout at once (a live field above); HTTP/2 reads it
    // once, when the process starts.
    note(
        "server.keepalive_timeout for HTTP/2",
        *http2_idle_timeout != running.http2_idle_timeout,
        duration(&running.http2_idle_timeout),
        duration(http2_idle_timeout),
    );
    out
}

fn routes(out: &mut Vec<Change>, old: &EdgeConfig, new: &EdgeConfig) {
    for r in &new.routes {
        match old.routes.iter().find(|o| o.name == r.name) {
            None => out.push(Change::RouteAdded {
                route: r.name.clone(),
                pool: r.pool.clone(),
            }),
            Some(o) => route(&mut Fields::new(out, Scope::Route(r.name.clone())), o, r),
        }
    }
    for o in &old.routes {
        if !new.routes.iter().any(|r| r.name == o.name) {
            out.push(Change::RouteRemoved(o.name.clone()));
        }
    }
}

/// Whether a pool's members can serve `new` by changing only their backend set: the same
/// selection and health check, and the same TLS (the health check speaks it).
fn keeps_members(old: &PoolSpec, new: &PoolSpec) -> bool {
    old.selection == new.selection && old.health_check == new.health_check && old.tls == new.tls
}

fn pools(out: &mut Vec<Change>, old: &EdgeConfig, new: &EdgeConfig) {
    for n in &new.pools {
        match old.pool(&n.name) {
            None => out.push(Change::PoolAdded(n.name.clone())),
            Some(o) => {
                if !keeps_members(o, n) {
                    out.push(Change::PoolRebuilt(n.name.clone()));
                }
                pool(&mut Fields::new(out, Scope::Pool(n.name.clone())), o, n);
            }
        }
    }
    for o in &old.pools {
        if new.pool(&o.name).is_none() {
            out.push(Change::PoolRemoved(o.name.clone()));
        }
    }
}

/// What one served certificate is, to tell what changed.
#[derive(Clone, PartialEq, Eq)]
struct Served {
    cert: String,
    names: Vec<String>,
    serial: String,
}

fn served(certificates: &[CertSpec]) -> Vec<Served> {
    certificates
        .iter()
        .map(|c| Served {
            cert: c.cert.display().to_string(),
            names: c.names.clone(),
            serial: c.loaded.serial.clone(),
        })
        .collect()
}

/// One change per certificate added, removed or replaced.
fn certificates(out: &mut Vec<Change>, old: &[CertSpec], new: &[CertSpec]) {
    let (old, new) = (served(old), served(new));
    for n in &new {
        match old.iter().find(|o| o.cert == n.cert) {
            None => out.push(Change::Certificate(format!(
                "certificate {} added ({})",
                n.cert,
                n.names.join(", ")
            ))),
            Some(o) if o.serial != n.serial => out.push(Change::Certificate(format!(
                "certificate {} replaced (serial {} -> {})",
                n.cert, o.serial, n.serial
            ))),
            Some(o) if o.names != n.names => out.push(Change::Certificate(format!(
                "certificate {} names changed ({})",
                n.cert,
                n.names.join(", ")
            ))),
            Some(_) => {}
        }
    }
    for o in &old {
        if !new.iter().any(|n| n.cert == o.cert) {
            out.push(Change::Certificate(format!(
                "certificate {} removed",
                o.cert
            )));
        }
    }
}

/// Changes about one route or pool (or the top level), each field named by its key below it.
struct Fields<'a> {
    out: &'a mut Vec<Change>,
    scope: Scope,
}

impl<'a> Fields<'a> {
    fn new(out: &'a mut Vec<Change>, scope: Scope) -> Self {
        Fields { out, scope }
    }

    fn top(out: &'a mut Vec<Change>) -> Self {
        Fields {
            out,
            scope: Scope::Top,
        }
    }

    /// `field old → new` when they differ (compared typed, shown as the file writes them).
    fn field<T: PartialEq>(&mut self, field: &str, old: &T, new: &T, show: fn(&T) -> String) {
        if old != new {
            self.out.push(Change::Field {
                scope: self.scope.clone(),
                field: field.to_string(),
                old: show(old),
                new: show(new),
            });
        }
    }

    /// A change without values.
    fn note(&mut self, what: String) {
        self.out.push(Change::Note {
            scope: self.scope.clone(),
            what,
        });
    }

    /// `field set`, `removed` or `changed`, never the value.
    fn secret(&mut self, field: &str, old: &Option<String>, new: &Option<String>) {
        match (old, new) {
            (None, Some(_)) => self.note(format!("{field} set")),
            (Some(_), None) => self.note(format!("{field} removed")),
            (Some(o), Some(n)) if o != n => self.note(format!("{field} changed")),
            _ => {}
        }
    }
}

fn route(s: &mut Fields, o: &RouteSpec, n: &RouteSpec) {
    s.field("host", &o.host, &n.host, |h| h.to_string());
    s.field("path", &o.prefix, &n.prefix, quoted);
    s.field("pool", &o.pool, &n.pool, |p| p.clone());
    s.field("strip_prefix", &o.strip_prefix, &n.strip_prefix, bool_);
    s.field(
        "redirect_https",
        &o.redirect_https,
        &n.redirect_https,
        bool_,
    );
    headers(
        s,
        "upstream_headers",
        &o.upstream_headers,
        &n.upstream_headers,
    );
    headers(
        s,
        "response_headers",
        &o.response_headers,
        &n.response_headers,
    );
    cache(s, &o.cache, &n.cache);
}

/// Header names added, removed or given another value; values can be secrets (an origin's
/// bearer token), so they are not shown, as `GET /config` hides them.
fn headers(
    s: &mut Fields,
    field: &str,
    old: &[(http::HeaderName, http::HeaderValue)],
    new: &[(http::HeaderName, http::HeaderValue)],
) {
    let find = |list: &[(http::HeaderName, http::HeaderValue)], name: &http::HeaderName| {
        list.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    };
    for (name, value) in new {
        match find(old, name) {
            None => s.note(format!("{field}.{name} added")),
            Some(v) if v != value => s.note(format!("{field}.{name} changed")),
            Some(_) => {}
        }
    }
    for (name, _) in old {
        if find(new, name).is_none() {
            s.note(format!("{field}.{name} removed"));
        }
    }
}

fn cache(s: &mut Fields, o: &CachePolicy, n: &CachePolicy) {
    s.field("cache.mode", &o.mode, &n.mode, |m| {
        match m {
            CacheMode::Off => "off",
            CacheMode::Rfc => "rfc",
            CacheMode::Video => "video",
        }
        .into()
    });
    s.field(
        "cache.max_object_size",
        &(o.max_object_size as u64),
        &(n.max_object_size as u64),
        size,
    );
    s.field(
        "cache.max_variants",
        &o.max_variants,
        &n.max_variants,
        number,
    );
    s.field(
        "cache.target_duration",
        &o.target_duration,
        &n.target_duration,
        duration,
    );
    s.field("cache.media_ttl", &o.media_ttl, &n.media_ttl, duration);
    s.field(
        "cache.negative_ttl",
        &o.negative_ttl,
        &n.negative_ttl,
        duration,
    );
    s.field(
        "cache.keep_query",
        &o.keep_query,
        &n.keep_query,
        |k| match k {
            None => "(the whole query)".into(),
            Some(list) => strings(list),
        },
    );
    s.field(
        "cache.stale_while_revalidate",
        &o.stale_while_revalidate,
        &n.stale_while_revalidate,
        duration,
    );
    s.field(
        "cache.stale_if_error",
        &o.stale_if_error,
        &n.stale_if_error,
        duration,
    );
    s.field(
        "cache.store_set_cookie",
        &o.store_set_cookie,
        &n.store_set_cookie,
        bool_,
    );
    s.field(
        "cache.targeted_fields",
        &o.targeted_fields,
        &n.targeted_fields,
        |fields| {
            let names: Vec<String> = fields.iter().map(|f| f.name.to_string()).collect();
            strings(&names)
        },
    );
    s.field(
        "cache.strip_targeted",
        &o.strip_targeted,
        &n.strip_targeted,
        bool_,
    );
    s.field(
        "cache.background_fill",
        &o.background_fill,
        &n.background_fill,
        bool_,
    );
    s.field(
        "cache.abandoned_fill",
        &o.abandoned_fill,
        &n.abandoned_fill,
        |a| {
            match a {
                AbandonedFill::Finish => "finish",
                AbandonedFill::Abort => "abort",
            }
            .into()
        },
    );
}

fn pool(s: &mut Fields, o: &PoolSpec, n: &PoolSpec) {
    for (addr, weight) in &n.backends {
        match o.backends.iter().find(|(a, _)| a == addr) {
            None => s.note(format!("backend {addr} added")),
            Some((_, w)) if w != weight => s.note(format!("backend {addr} weight {w} → {weight}")),
            Some(_) => {}
        }
    }
    for (addr, _) in &o.backends {
        if !n.backends.iter().any(|(a, _)| a == addr) {
            s.note(format!("backend {addr} removed"));
        }
    }
    s.field("selection", &o.selection, &n.selection, |x| {
        match x {
            Selection::RoundRobin => "round_robin",
            Selection::ConsistentHash => "consistent_hash",
        }
        .into()
    });
    s.field(
        "connect_timeout",
        &o.connect_timeout,
        &n.connect_timeout,
        duration,
    );
    s.field("read_timeout", &o.read_timeout, &n.read_timeout, duration);
    s.field(
        "write_timeout",
        &o.write_timeout,
        &n.write_timeout,
        duration,
    );
    s.field("total_timeout", &o.total_timeout, &n.total_timeout, |t| {
        t.as_ref().map_or("(none)".into(), duration)
    });
    s.field("idle_timeout", &o.idle_timeout, &n.idle_timeout, duration);
    s.field("retries", &o.retries, &n.retries, |r| r.to_string());
    s.field("panic_mode", &o.panic_mode, &n.panic_mode, bool_);
    s.field(
        "retry_on_status",
        &o.retry_on_status,
        &n.retry_on_status,
        |list| format!("{list:?}"),
    );
    let (oh, nh) = (&o.health_check, &n.health_check);
    let kind = |k: &HealthCheckKind| match k {
        HealthCheckKind::Tcp => "tcp",
        HealthCheckKind::Http { .. } => "http",
    };
    if kind(&oh.kind) != kind(&nh.kind) {
        s.note(format!(
            "health_check.type {} → {}",
            kind(&oh.kind),
            kind(&nh.kind)
        ));
    }
    if let (
        HealthCheckKind::Http {
            path: op,
            host: oho,
            expect_status: oe,
        },
        HealthCheckKind::Http {
            path: np,
            host: nho,
            expect_status: ne,
        },
    ) = (&oh.kind, &nh.kind)
    {
        s.field("health_check.path", op, np, quoted);
        s.field("health_check.host", oho, nho, |h| {
            h.as_ref().map_or("(the backend address)".into(), quoted)
        });
        s.field("health_check.expect_status", oe, ne, |x| x.to_string());
    }
    s.field(
        "health_check.interval",
        &oh.interval,
        &nh.interval,
        duration,
    );
    s.field("health_check.timeout", &oh.timeout, &nh.timeout, duration);
    s.field("health_check.rise", &oh.rise, &nh.rise, |x| x.to_string());
    s.field("health_check.fall", &oh.fall, &nh.fall, |x| x.to_string());
    tls(s, o.tls.as_ref(), n.tls.as_ref());
}

fn tls(s: &mut Fields, o: Option<&UpstreamTls>, n: Option<&UpstreamTls>) {
    match (o, n) {
        (None, Some(_)) => s.note("tls false → true".into()),
        (Some(_), None) => s.note("tls true → false".into()),
        (Some(o), Some(n)) => {
            s.field("sni", &o.sni, &n.sni, quoted);
            s.field("verify", &o.verify, &n.verify, bool_);
            s.field("ca_file", &o.ca_file, &n.ca_file, |f| {
                f.as_ref()
                    .map_or("(system roots)".into(), |p| p.display().to_string())
            });
            // The same file with new certificates in it: the trust set changed.
            if o.ca_file == n.ca_file && o.ca != n.ca {
                s.note("ca_file contents changed".into());
            }
        }
        (None, None) => {}
    }
}

/// A byte size with the largest unit that divides it exactly: `64 MiB`, `100 MB`, `1000 B`.
pub(crate) fn size(bytes: &u64) -> String {
    let b = *bytes;
    const UNITS: [(u64, &str); 8] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
        (1_000_000_000_000, "TB"),
        (1_000_000_000, "GB"),
        (1_000_000, "MB"),
        (1_000, "kB"),
    ];
    if b == 0 {
        return "0 B".into();
    }
    UNITS
        .iter()
        .find(|(unit, _)| b % unit == 0)
        .map_or(format!("{b} B"), |(unit, name)| {
            format!("{} {name}", b / unit)
        })
}

/// A duration as the config writes one: `10s`, `1m 30s`, `250ms`.
pub(crate) fn duration(d: &Duration) -> String {
    if d.is_zero() {
        "0s".into()
    } else {
        humantime::format_duration(*d).to_string()
    }
}

fn bool_(b: &bool) -> String {
    b.to_string()
}

fn number<T: ToString>(n: &T) -> String {
    n.to_string()
}

fn quoted(s: &String) -> String {
    format!("{s:?}")
}

fn strings(list: &[String]) -> String {
    let items: Vec<String> = list.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", items.join(", "))
}

fn addrs(list: &[SocketAddr]) -> String {
    let items: Vec<String> = list.iter().map(|a| a.to_string()).collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::compile;

    const BASE: &str = "[listen]\nhttp = [\"127.0.0.1:8080\"]\n\n";

    fn config(body: &str) -> EdgeConfig {
        compile("edge.toml", &format!("{BASE}{body}")).unwrap()
    }

    fn changes(old: &str, new: &str) -> Vec<String> {
        ConfigDiff::between(&config(old), &config(new)).lines()
    }

    fn held(old: &str, new: &str) -> Vec<String> {
        let (running, mut next) = (config(old), config(new));
        let diff = ConfigDiff::between(&running, &next);
        ConfigDiff::hold(&running.restart, &mut next);
        assert_eq!(next.restart, running.restart);
        diff.restart_lines()
    }

    const POOL: &str = "[pools.web]\nbackends = [\"127.0.0.1:9001\"]\n\n";

    fn stream_route(cache: &str) -> String {
        format!("{POOL}[[routes]]\nname = \"stream\"\npath = \"/stream/\"\npool = \"web\"\n\n[routes.cache]\n{cache}\n")
    }

    #[test]
    fn sizes_and_durations_have_units() {
        let cases: [(u64, &str); 7] = [
            (64 << 20, "64 MiB"),
            (128 << 20, "128 MiB"),
            (4 << 30, "4 GiB"),
            (1536 << 20, "1536 MiB"),
            (100_000_000, "100 MB"),
            (1000, "1 kB"),
            (1001, "1001 B"),
        ];
        for (bytes, shown) in cases {
            assert_eq!(size(&bytes), shown);
        }
        assert_eq!(duration(&Duration::from_secs(10)), "10s");
        assert_eq!(duration(&Duration::from_secs(90)), "1m 30s");
        assert_eq!(duration(&Duration::from_millis(250)), "250ms");
        assert_eq!(duration(&Duration::ZERO), "0s");
    }

    #[test]
    fn a_route_field_change_names_the_field_and_both_values() {
        assert_eq!(
            changes(
                &stream_route("mode = \"rfc\""),
                &stream_route("mode = \"video\"\nkeep_query = [\"_HLS_msn\"]")
            ),
            [
                "route stream: cache.mode rfc → video",
                "route stream: cache.keep_query (the whole query) → [\"_HLS_msn\"]",
                "route stream: cache.background_fill false → true",
            ]
        );
        assert_eq!(
            changes(
                &stream_route("media_ttl = \"10s\"\nmax_object_size = \"64MiB\""),
                &stream_route("media_ttl = \"30s\"\nmax_object_size = \"128MiB\"")
            ),
            [
                "route stream: cache.max_object_size 64 MiB → 128 MiB",
                "route stream: cache.media_ttl 10s → 30s",
            ]
        );
    }

    #[test]
    fn routes_added_removed_repointed_and_headers_without_values() {
        let two = format!("{POOL}[pools.api]\nbackends = [\"127.0.0.1:9003\"]\n\n");
        let old = format!("{two}[[routes]]\nname = \"a\"\npath = \"/\"\npool = \"web\"\nupstream_headers = {{ Authorization = \"Bearer old-secret\" }}\n\n[[routes]]\nname = \"gone\"\npath = \"/gone/\"\npool = \"web\"\n");
        let new = format!("{two}[[routes]]\nname = \"a\"\npath = \"/\"\npool = \"api\"\nupstream_headers = {{ Authorization = \"Bearer new-secret\", X-Tenant = \"blue\" }}\n\n[[routes]]\nname = \"b\"\npath = \"/b/\"\npool = \"web\"\n");
        let lines = changes(&old, &new);
        assert_eq!(
            lines,
            [
                "route a: pool web → api",
                "route a: upstream_headers.authorization changed",
                "route a: upstream_headers.x-tenant added",
                "route b added (pool web)",
                "route gone removed",
            ]
        );
        assert!(!lines.join("\n").contains("secret"), "{lines:?}");
    }

    #[test]
    fn pool_backends_and_settings() {
        let route = "[[routes]]\npath = \"/\"\npool = \"web\"\n";
        let old = format!("[pools.web]\nbackends = [\"127.0.0.1:9001\", {{ addr = \"127.0.0.1:9004\", weight = 2 }}]\nconnect_timeout = \"1s\"\n\n[pools.old]\nbackends = [\"127.0.0.1:9005\"]\n\n{route}");
        let new = format!("[pools.web]\nbackends = [\"127.0.0.1:9001\", \"127.0.0.1:9002\", {{ addr = \"127.0.0.1:9004\", weight = 5 }}]\nconnect_timeout = \"2s\"\nretries = 4\n\n[pools.web.health_check]\ntype = \"http\"\npath = \"/healthz\"\n\n[pools.fresh]\nbackends = [\"127.0.0.1:9006\"]\n\n{route}");
        let diff = ConfigDiff::between(&config(&old), &config(&new));
        assert!(diff.rebuilds("fresh") && diff.rebuilds("web"), "{diff:?}");
        let lines = diff.lines();
        assert_eq!(
            lines,
            [
                "pool fresh added",
                "pool web rebuilt (selection, health check or TLS changed; backends checked before traffic)",
                "pool web: backend 127.0.0.1:9002 added",
                "pool web: backend 127.0.0.1:9004 weight 2 → 5",
                "pool web: connect_timeout 1s → 2s",
                "pool web: retries 2 → 4",
                "pool web: health_check.type tcp → http",
                "pool old removed (requests in flight finish)",
            ]
        );
    }

    #[test]
    fn secrets_are_reported_without_their_values() {
        let route = format!("{POOL}[[routes]]\npath = \"/\"\npool = \"web\"\n");
        let lines = changes(
            &format!("[cache]\npurge_token = \"purge-secret-0123456789\"\n\n{route}"),
            &format!("[cache]\npurge_token = \"purge-secret-9876543210\"\n[admin]\ntoken = \"admin-secret-0123456789\"\n[reload]\ndebounce = \"200ms\"\n\n{route}"),
        );
        assert_eq!(
            lines,
            [
                "cache.purge_token changed",
                "admin.token set",
                "reload.debounce 50ms → 200ms"
            ]
        );
    }

    #[test]
    fn nothing_changed_says_nothing() {
        let text = stream_route("mode = \"video\"");
        assert!(changes(&text, &format!("# a comment\n{text}")).is_empty());
    }

    #[test]
    fn restart_only_settings_are_held_and_shown_with_units() {
        let route = format!("{POOL}[[routes]]\npath = \"/\"\npool = \"web\"\n");
        assert_eq!(
            held(
                &format!("[cache]\nmemory = \"64MiB\"\n\n[server]\ngrace_period = \"10s\"\n\n{route}"),
                &format!("[cache]\nmemory = \"128MiB\"\nfill_memory = \"32MiB\"\n\n[server]\ngrace_period = \"30s\"\n\n{route}"),
            ),
            [
                "server.grace_period changed: 10s → 30s",
                "cache.memory changed: 64 MiB → 128 MiB",
                "cache.fill_memory changed: 16 MiB → 32 MiB",
            ]
        );
    }

    #[test]
    fn every_restart_only_setting_is_reported_and_held_at_its_running_value() {
        let running = config(&format!("{POOL}[[routes]]\npath = \"/\"\npool = \"web\"\n"));
        let threads = running.restart.threads;
        type Edit = Box<dyn Fn(&mut RestartSettings)>;
        let cases: Vec<(Edit, String)> = vec![
            (
                Box::new(|r| r.http_listeners = vec!["127.0.0.1:8081".parse().unwrap()]),
                "listen.http changed: [127.0.0.1:8080] → [127.0.0.1:8081]".into(),
            ),
            (
                Box::new(|r| r.https_listeners = vec!["127.0.0.1:8443".parse().unwrap()]),
                "listen.https changed: [] → [127.0.0.1:8443]".into(),
            ),
            (
                Box::new(|r| r.upgrade_sock = "/tmp/dime.sock".into()),
                "server.upgrade_sock changed: /run/dime-edge/upgrade.sock → /tmp/dime.sock".into(),
            ),
            (
                Box::new(|r| r.admin_listener = "127.0.0.1:9191".parse().unwrap()),
                "listen.admin changed: 127.0.0.1:9090 → 127.0.0.1:9191".into(),
            ),
            (
                Box::new(|r| r.threads += 1),
                format!("server.threads changed: {threads} → {}", threads + 1),
            ),
            (
                Box::new(|r| r.grace_period = Duration::from_secs(7)),
                "server.grace_period changed: 5s → 7s".into(),
            ),
            (
                Box::new(|r| r.cache_memory = 1 << 30),
                "cache.memory changed: 512 MiB → 1 GiB".into(),
            ),
            (
                Box::new(|r| r.cache_fill_memory = 64 << 20),
                "cache.fill_memory changed: 128 MiB → 64 MiB".into(),
            ),
            (
                Box::new(|r| r.cache_lock_timeout = Duration::from_secs(60)),
                "cache.lock_timeout changed: 30s → 1m".into(),
            ),
            (
                Box::new(|r| r.http2_max_concurrent_streams = 64),
                "server.http2_max_concurrent_streams changed: 128 → 64".into(),
            ),
            (
                Box::new(|r| r.http2_idle_timeout = Duration::from_secs(30)),
                "server.keepalive_timeout for HTTP/2 changed: 1m 15s → 30s".into(),
            ),
        ];
        for (edit, line) in cases {
            let mut next = running.clone();
            edit(&mut next.restart);
            let diff = ConfigDiff::between(&running, &next);
            assert_eq!(diff.restart_lines(), std::slice::from_ref(&line));
            assert!(diff.lines().is_empty(), "{line}: {:?}", diff.lines());
            ConfigDiff::hold(&running.restart, &mut next);
            assert_eq!(next.restart, running.restart, "{line}");
        }
    }

    #[test]
    fn a_live_change_is_kept_by_hold_and_rendered_once() {
        let route = format!("{POOL}[[routes]]\npath = \"/\"\npool = \"web\"\n");
        let running = config(&route);
        let mut next = config(&format!(
            "[server]\nsend_timeout = \"90s\"\ngrace_period = \"9s\"\n\n{route}"
        ));
        let diff = ConfigDiff::between(&running, &next);
        ConfigDiff::hold(&running.restart, &mut next);
        // The live setting stays in the config that goes into service; the restart-only one
        // is back at its running value.
        assert_eq!(next.server.send_timeout, Duration::from_secs(90));
        assert_eq!(next.restart.grace_period, running.restart.grace_period);
        assert_eq!(
            diff.live,
            [Change::Field {
                scope: Scope::Top,
                field: "server.send_timeout".into(),
                old: "1m".into(),
                new: "1m 30s".into(),
            }]
        );
        assert_eq!(diff.lines(), ["server.send_timeout 1m → 1m 30s"]);
        assert_eq!(
            diff.restart_lines(),
            ["server.grace_period changed: 5s → 9s"]
        );
        // Only backends changed: the pool keeps its members.
        assert!(!diff.rebuilds("web"));
    }

    #[test]
    fn connection_settings_apply_live_except_what_http2_reads_once() {
        let route = format!("{POOL}[[routes]]\npath = \"/\"\npool = \"web\"\n");
        let running = config(&route);
        let mut next = config(&format!(
            "[server]\nmax_connections = 500\nkeepalive_timeout = \"30s\"\nheader_timeout = \"10s\"\nkeepalive_requests = 100\nhttp2_max_concurrent_streams = 64\n\n{route}"
        ));
        let diff = ConfigDiff::between(&running, &next);
        ConfigDiff::hold(&running.restart, &mut next);
        assert_eq!(
            diff.lines(),
            [
                "server.max_connections 10000 → 500",
                "server.keepalive_timeout 1m 15s → 30s",
                "server.header_timeout 1m → 10s",
                "server.keepalive_requests 1000 → 100",
            ]
        );
        assert_eq!(
            diff.restart_lines(),
            [
                "server.http2_max_concurrent_streams changed: 128 → 64",
                "server.keepalive_timeout for HTTP/2 changed: 1m 15s → 30s",
            ]
        );
        assert_eq!(next.server.keepalive_timeout, Duration::from_secs(30));
        assert_eq!(next.restart.http2_idle_timeout, Duration::from_secs(75));
        assert_eq!(next.restart.http2_max_concurrent_streams, 128);
    }
}
