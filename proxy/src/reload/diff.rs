//! What a reload changes, field by field: the lines its outcome reports, and the settings only
//! a restart can change (held at their running values and reported, never silently ignored).
//!
//! Lines name fields by the config file's own keys: `route stream: cache.mode rfc → video` is
//! `routes[i].cache.mode` of the route named `stream`, `pool web: connect_timeout 1s → 2s` is
//! `pools.web.connect_timeout`, `cache.memory changed: 64 MiB → 128 MiB` is `cache.memory`.
//! Values are shown as the file writes them (sizes and durations with units); secrets and
//! header values never are.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::active::PoolChanges;
use crate::cache::{AbandonedFill, CacheMode, CachePolicy};
use crate::config::compile::HealthCheckKind;
use crate::config::{EdgeConfig, PoolSpec, RouteSpec, Selection, UpstreamTls};

/// The settings bound when the process started: listening sockets, worker threads, the
/// shutdown grace period and the cache's memory and lock table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartSettings {
    http_listeners: Vec<SocketAddr>,
    https_listeners: Vec<SocketAddr>,
    upgrade_sock: PathBuf,
    admin_listener: SocketAddr,
    threads: usize,
    grace_period: Duration,
    cache_memory: u64,
    cache_fill_memory: u64,
    cache_lock_timeout: Duration,
}

impl RestartSettings {
    /// The restart-only settings of `config`.
    pub fn of(config: &EdgeConfig) -> Self {
        RestartSettings {
            http_listeners: config.http_listeners.clone(),
            https_listeners: config.https_listeners.clone(),
            upgrade_sock: config.server.upgrade_sock.clone(),
            admin_listener: config.admin_listener,
            threads: config.server.threads,
            grace_period: config.server.grace_period,
            cache_memory: config.cache.memory,
            cache_fill_memory: config.cache.fill_memory,
            cache_lock_timeout: config.cache.lock_timeout,
        }
    }

    /// Puts the running values back into `next` wherever it differs, and says what differed:
    /// `listen.http changed: [a] → [b]`, `cache.memory changed: 64 MiB → 128 MiB`.
    pub fn hold(&self, next: &mut EdgeConfig) -> Vec<String> {
        let mut held = Vec::new();
        let mut note = |field: &str, running: String, wanted: String| {
            held.push(format!("{field} changed: {running} → {wanted}"));
        };
        if next.http_listeners != self.http_listeners {
            note(
                "listen.http",
                addrs(&self.http_listeners),
                addrs(&next.http_listeners),
            );
            next.http_listeners = self.http_listeners.clone();
        }
        if next.https_listeners != self.https_listeners {
            note(
                "listen.https",
                addrs(&self.https_listeners),
                addrs(&next.https_listeners),
            );
            next.https_listeners = self.https_listeners.clone();
        }
        if next.server.upgrade_sock != self.upgrade_sock {
            note(
                "server.upgrade_sock",
                self.upgrade_sock.display().to_string(),
                next.server.upgrade_sock.display().to_string(),
            );
            next.server.upgrade_sock = self.upgrade_sock.clone();
        }
        if next.admin_listener != self.admin_listener {
            note(
                "listen.admin",
                self.admin_listener.to_string(),
                next.admin_listener.to_string(),
            );
            next.admin_listener = self.admin_listener;
        }
        if next.server.threads != self.threads {
            note(
                "server.threads",
                self.threads.to_string(),
                next.server.threads.to_string(),
            );
            next.server.threads = self.threads;
        }
        if next.server.grace_period != self.grace_period {
            note(
                "server.grace_period",
                duration(&self.grace_period),
                duration(&next.server.grace_period),
            );
            next.server.grace_period = self.grace_period;
        }
        if next.cache.memory != self.cache_memory {
            note(
                "cache.memory",
                size(&self.cache_memory),
                size(&next.cache.memory),
            );
            next.cache.memory = self.cache_memory;
        }
        if next.cache.fill_memory != self.cache_fill_memory {
            note(
                "cache.fill_memory",
                size(&self.cache_fill_memory),
                size(&next.cache.fill_memory),
            );
            next.cache.fill_memory = self.cache_fill_memory;
        }
        if next.cache.lock_timeout != self.cache_lock_timeout {
            note(
                "cache.lock_timeout",
                duration(&self.cache_lock_timeout),
                duration(&next.cache.lock_timeout),
            );
            next.cache.lock_timeout = self.cache_lock_timeout;
        }
        held
    }
}

/// One line per route added or removed and per route field changed, per pool added, rebuilt
/// or removed and per pool field or backend changed, and per other live setting changed;
/// empty when nothing that applies live changed. `pools` says which pools were rebuilt.
pub fn describe(old: &EdgeConfig, new: &EdgeConfig, pools: &PoolChanges) -> Vec<String> {
    let mut out = Vec::new();
    for r in &new.routes {
        match old.routes.iter().find(|o| o.name == r.name) {
            None => out.push(format!("route {} added (pool {})", r.name, r.pool)),
            Some(o) => route(&mut Scope::new(&mut out, "route", &r.name), o, r),
        }
    }
    for o in &old.routes {
        if !new.routes.iter().any(|r| r.name == o.name) {
            out.push(format!("route {} removed", o.name));
        }
    }
    for n in &new.pools {
        match old.pool(&n.name) {
            None => out.push(format!("pool {} added", n.name)),
            Some(o) => {
                if pools.created.contains(&n.name) {
                    out.push(format!(
                        "pool {} rebuilt (selection, health check or TLS changed; backends checked before traffic)",
                        n.name
                    ));
                }
                pool(&mut Scope::new(&mut out, "pool", &n.name), o, n);
            }
        }
    }
    for o in &old.pools {
        if new.pool(&o.name).is_none() {
            out.push(format!(
                "pool {} removed (requests in flight finish)",
                o.name
            ));
        }
    }
    let mut top = Scope::top(&mut out);
    top.secret(
        "cache.purge_token",
        &old.cache.purge_token,
        &new.cache.purge_token,
    );
    top.secret("admin.token", &old.admin.token, &new.admin.token);
    top.field("reload.watch", &old.watch, &new.watch, bool_);
    top.field("reload.debounce", &old.debounce, &new.debounce, duration);
    top.field(
        "server.send_timeout",
        &old.server.send_timeout,
        &new.server.send_timeout,
        duration,
    );
    out
}

/// Lines about one route or pool (or the top level), each field named by its key below it.
struct Scope<'a> {
    out: &'a mut Vec<String>,
    prefix: String,
}

impl<'a> Scope<'a> {
    fn new(out: &'a mut Vec<String>, kind: &str, name: &str) -> Self {
        Scope {
            out,
            prefix: format!("{kind} {name}: "),
        }
    }

    fn top(out: &'a mut Vec<String>) -> Self {
        Scope {
            out,
            prefix: String::new(),
        }
    }

    /// `field old → new` when they differ.
    fn field<T: PartialEq>(&mut self, field: &str, old: &T, new: &T, show: fn(&T) -> String) {
        if old != new {
            self.out.push(format!(
                "{}{field} {} → {}",
                self.prefix,
                show(old),
                show(new)
            ));
        }
    }

    /// A line without values.
    fn note(&mut self, what: String) {
        self.out.push(format!("{}{what}", self.prefix));
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

fn route(s: &mut Scope, o: &RouteSpec, n: &RouteSpec) {
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
    s: &mut Scope,
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

fn cache(s: &mut Scope, o: &CachePolicy, n: &CachePolicy) {
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

fn pool(s: &mut Scope, o: &PoolSpec, n: &PoolSpec) {
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

fn tls(s: &mut Scope, o: Option<&UpstreamTls>, n: Option<&UpstreamTls>) {
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
pub fn size(bytes: &u64) -> String {
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
pub fn duration(d: &Duration) -> String {
    if d.is_zero() {
        "0s".into()
    } else {
        humantime::format_duration(*d).to_string()
    }
}

fn bool_(b: &bool) -> String {
    b.to_string()
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
    use crate::config::compile::compile;

    const BASE: &str = "[listen]\nhttp = [\"127.0.0.1:8080\"]\n\n";

    fn config(body: &str) -> EdgeConfig {
        compile("edge.toml", &format!("{BASE}{body}")).unwrap()
    }

    fn changes(old: &str, new: &str) -> Vec<String> {
        describe(&config(old), &config(new), &PoolChanges::default())
    }

    fn held(old: &str, new: &str) -> Vec<String> {
        let mut next = config(new);
        let lines = RestartSettings::of(&config(old)).hold(&mut next);
        assert_eq!(
            RestartSettings::of(&next),
            RestartSettings::of(&config(old))
        );
        lines
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
        let pools = PoolChanges {
            created: vec!["fresh".into(), "web".into()],
            ..Default::default()
        };
        let lines = describe(&config(&old), &config(&new), &pools);
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
}
