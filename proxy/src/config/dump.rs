//! `dime-edge check --dump`: the compiled configuration as TOML, every default filled in and
//! every secret redacted, so an operator sees what the edge will run, not what the file says.

use std::time::Duration;

use toml::{Table, Value};

use super::compile::{EdgeConfig, HealthCheckKind, PoolSpec, RouteSpec, Selection};
use super::redact;
use crate::cache::{AbandonedFill, CacheMode, CachePolicy};
use crate::host::HostMatch;

/// The compiled `config` as TOML, in the file's field names, redacted by the same allow-list
/// as `GET /config` ([`redact::PUBLIC_FIELDS`]): tokens and header values never appear.
pub fn dump(config: &EdgeConfig) -> String {
    let mut root = Table::new();
    root.insert("server".into(), server(config).into());
    root.insert("listen".into(), listen(config).into());
    if !config.certificates.is_empty() {
        let certs: Vec<Value> = config
            .certificates
            .iter()
            .map(|c| {
                let mut t = Table::new();
                t.insert("cert".into(), c.cert.display().to_string().into());
                t.insert("key".into(), c.key.display().to_string().into());
                t.insert("names".into(), strings(&c.names));
                t.into()
            })
            .collect();
        let mut tls = Table::new();
        tls.insert("certificates".into(), certs.into());
        root.insert("tls".into(), tls.into());
    }
    root.insert("cache".into(), cache(config).into());
    root.insert("admin".into(), admin(config).into());
    let mut reload = Table::new();
    reload.insert("watch".into(), config.watch.into());
    reload.insert("debounce".into(), duration(config.debounce));
    root.insert("reload".into(), reload.into());
    let mut log = Table::new();
    log.insert("access_log".into(), config.log.access.to_string().into());
    log.insert("error_log".into(), config.log.error.to_string().into());
    root.insert("log".into(), log.into());
    let mut pools = Table::new();
    for p in &config.pools {
        pools.insert(p.name.clone(), pool(p).into());
    }
    root.insert("pools".into(), pools.into());
    let routes: Vec<Value> = config.routes.iter().map(|r| route(r).into()).collect();
    root.insert("routes".into(), routes.into());
    redact::redact(&mut root);
    let mut out = format!(
        "# {} as compiled (dime-edge check --dump): defaults filled in, ${{NAME}}s expanded,\n\
         # token files read, secrets redacted. A route without keep_query keys on the whole query.\n",
        config.source
    );
    // Sections in the reference's order (a table prints its keys sorted): the process, the
    // listeners, the shared settings, then the pools and routes that use them.
    for section in [
        "server", "listen", "tls", "cache", "admin", "reload", "log", "pools", "routes",
    ] {
        if let Some((key, value)) = root.remove_entry(section) {
            let mut one = Table::new();
            one.insert(key, value);
            out.push('\n');
            out.push_str(&one.to_string());
        }
    }
    out
}

fn server(c: &EdgeConfig) -> Table {
    let mut t = Table::new();
    t.insert("threads".into(), (c.restart.threads as i64).into());
    t.insert("grace_period".into(), duration(c.restart.grace_period));
    t.insert(
        "upgrade_sock".into(),
        c.restart.upgrade_sock.display().to_string().into(),
    );
    t.insert("send_timeout".into(), duration(c.server.send_timeout));
    t.insert(
        "max_connections".into(),
        (c.server.max_connections as i64).into(),
    );
    t.insert(
        "keepalive_timeout".into(),
        duration(c.server.keepalive_timeout),
    );
    t.insert("header_timeout".into(), duration(c.server.header_timeout));
    t.insert(
        "keepalive_requests".into(),
        i64::from(c.server.keepalive_requests).into(),
    );
    t.insert(
        "max_request_header_size".into(),
        size(c.server.max_request_header_size),
    );
    t.insert(
        "http2_max_concurrent_streams".into(),
        i64::from(c.restart.http2_max_concurrent_streams).into(),
    );
    t
}

fn listen(c: &EdgeConfig) -> Table {
    let addrs = |v: &[std::net::SocketAddr]| -> Value {
        v.iter()
            .map(|a| Value::from(a.to_string()))
            .collect::<Vec<_>>()
            .into()
    };
    let mut t = Table::new();
    t.insert("http".into(), addrs(&c.restart.http_listeners));
    t.insert("https".into(), addrs(&c.restart.https_listeners));
    t.insert("admin".into(), c.restart.admin_listener.to_string().into());
    t
}

fn cache(c: &EdgeConfig) -> Table {
    let mut t = Table::new();
    t.insert("memory".into(), size(c.restart.cache_memory));
    t.insert("fill_memory".into(), size(c.restart.cache_fill_memory));
    t.insert(
        "lock_timeout".into(),
        duration(c.restart.cache_lock_timeout),
    );
    // A token read from a file shows as its path; an inline one as its (redacted) value.
    match (&c.cache.purge_token_file, &c.cache.purge_token) {
        (Some(f), _) => {
            t.insert("purge_token_file".into(), f.display().to_string().into());
        }
        (None, Some(token)) => {
            t.insert("purge_token".into(), token.clone().into());
        }
        (None, None) => {}
    }
    t
}

fn admin(c: &EdgeConfig) -> Table {
    let mut t = Table::new();
    match (&c.admin.token_file, &c.admin.token) {
        (Some(f), _) => {
            t.insert("token_file".into(), f.display().to_string().into());
        }
        (None, Some(token)) => {
            t.insert("token".into(), token.clone().into());
        }
        (None, None) => {}
    }
    t
}

fn pool(p: &PoolSpec) -> Table {
    let mut t = Table::new();
    let backends: Vec<Value> = p
        .backends
        .iter()
        .map(|(addr, weight)| {
            let mut b = Table::new();
            b.insert("addr".into(), addr.to_string().into());
            b.insert("weight".into(), (*weight as i64).into());
            b.into()
        })
        .collect();
    t.insert("backends".into(), backends.into());
    let selection = match p.selection {
        Selection::RoundRobin => "round_robin",
        Selection::ConsistentHash => "consistent_hash",
    };
    t.insert("selection".into(), selection.into());
    t.insert("connect_timeout".into(), duration(p.connect_timeout));
    t.insert("read_timeout".into(), duration(p.read_timeout));
    t.insert("write_timeout".into(), duration(p.write_timeout));
    if let Some(total) = p.total_timeout {
        t.insert("total_timeout".into(), duration(total));
    }
    t.insert("idle_timeout".into(), duration(p.idle_timeout));
    t.insert("retries".into(), (p.retries as i64).into());
    t.insert("panic_mode".into(), p.panic_mode.into());
    let statuses = p.retry_on_status.iter().map(|s| i64::from(*s).into());
    t.insert("retry_on_status".into(), Value::Array(statuses.collect()));
    t.insert("tls".into(), p.tls.is_some().into());
    if let Some(tls) = &p.tls {
        if !tls.sni.is_empty() {
            t.insert("sni".into(), tls.sni.clone().into());
        }
        if let Some(f) = &tls.ca_file {
            t.insert("ca_file".into(), f.display().to_string().into());
        }
        t.insert("verify".into(), tls.verify.into());
    }
    let h = &p.health_check;
    let mut hc = Table::new();
    match &h.kind {
        HealthCheckKind::Tcp => {
            hc.insert("type".into(), "tcp".into());
        }
        HealthCheckKind::Http {
            path,
            host,
            expect_status,
        } => {
            hc.insert("type".into(), "http".into());
            hc.insert("path".into(), path.clone().into());
            if let Some(host) = host {
                hc.insert("host".into(), host.clone().into());
            }
            hc.insert("expect_status".into(), i64::from(*expect_status).into());
        }
    }
    hc.insert("interval".into(), duration(h.interval));
    hc.insert("timeout".into(), duration(h.timeout));
    hc.insert("rise".into(), (h.rise as i64).into());
    hc.insert("fall".into(), (h.fall as i64).into());
    t.insert("health_check".into(), hc.into());
    t
}

fn route(r: &RouteSpec) -> Table {
    let mut t = Table::new();
    t.insert("name".into(), r.name.clone().into());
    if r.host != HostMatch::Any {
        t.insert("host".into(), r.host.to_string().into());
    }
    t.insert("path".into(), r.prefix.clone().into());
    t.insert("pool".into(), r.pool.clone().into());
    t.insert("strip_prefix".into(), r.strip_prefix.into());
    t.insert("redirect_https".into(), r.redirect_https.into());
    let headers = |list: &[(http::HeaderName, http::HeaderValue)]| -> Value {
        let mut h = Table::new();
        for (name, value) in list {
            h.insert(
                name.to_string(),
                String::from_utf8_lossy(value.as_bytes())
                    .into_owned()
                    .into(),
            );
        }
        h.into()
    };
    if !r.upstream_headers.is_empty() {
        t.insert("upstream_headers".into(), headers(&r.upstream_headers));
    }
    if !r.response_headers.is_empty() {
        t.insert("response_headers".into(), headers(&r.response_headers));
    }
    t.insert("cache".into(), policy(&r.cache).into());
    t
}

fn policy(p: &CachePolicy) -> Table {
    let mut t = Table::new();
    let mode = match p.mode {
        CacheMode::Off => "off",
        CacheMode::Rfc => "rfc",
        CacheMode::Video => "video",
    };
    t.insert("mode".into(), mode.into());
    t.insert("max_object_size".into(), size(p.max_object_size as u64));
    t.insert("max_variants".into(), (p.max_variants as i64).into());
    t.insert("target_duration".into(), duration(p.target_duration));
    t.insert("media_ttl".into(), duration(p.media_ttl));
    t.insert("negative_ttl".into(), duration(p.negative_ttl));
    // Absent: the whole query is kept (what the file means when it names none).
    if let Some(list) = &p.keep_query {
        t.insert("keep_query".into(), strings(list));
    }
    t.insert(
        "stale_while_revalidate".into(),
        duration(p.stale_while_revalidate),
    );
    t.insert("stale_if_error".into(), duration(p.stale_if_error));
    t.insert("store_set_cookie".into(), p.store_set_cookie.into());
    let targeted: Vec<String> = p
        .targeted_fields
        .iter()
        .map(|f| f.name.to_string())
        .collect();
    t.insert("targeted_fields".into(), strings(&targeted));
    t.insert("strip_targeted".into(), p.strip_targeted.into());
    t.insert("background_fill".into(), p.background_fill.into());
    let abandoned = match p.abandoned_fill {
        AbandonedFill::Finish => "finish",
        AbandonedFill::Abort => "abort",
    };
    t.insert("abandoned_fill".into(), abandoned.into());
    t
}

fn strings(list: &[String]) -> Value {
    list.iter()
        .map(|s| Value::from(s.clone()))
        .collect::<Vec<_>>()
        .into()
}

/// A duration as the file would write it: `"2s"`, `"1h"`, `"500ms"`.
fn duration(d: Duration) -> Value {
    humantime::format_duration(d).to_string().into()
}

/// A size as the file would write it, in the largest binary unit that divides it.
fn size(bytes: u64) -> Value {
    let text = [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")]
        .iter()
        .find(|(shift, _)| bytes >= 1 << shift && bytes % (1 << shift) == 0)
        .map_or(format!("{bytes}B"), |(shift, unit)| {
            format!("{}{unit}", bytes >> shift)
        });
    text.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_as_the_file_writes_them() {
        assert_eq!(size(512 << 20), Value::from("512MiB"));
        assert_eq!(size(3 << 30), Value::from("3GiB"));
        assert_eq!(size(1_000_000), Value::from("1000000B"));
        assert_eq!(duration(Duration::from_millis(500)), Value::from("500ms"));
        assert_eq!(duration(Duration::from_secs(90)), Value::from("1m 30s"));
    }

    #[test]
    fn the_dump_of_a_compiled_config_compiles_back_to_the_same_policies() {
        let text = "[listen]\nhttp = [\"127.0.0.1:8080\"]\n[pools.p]\nbackends = [\"127.0.0.1:8081\"]\n[[routes]]\npath = \"/live/\"\npool = \"p\"\n[routes.cache]\nmode = \"video\"\nmedia_ttl = \"1h\"\n[[routes]]\npath = \"/\"\npool = \"p\"\n[routes.cache]\nkeep_query = [\"v\"]\n";
        let c = super::super::compile("edge.toml", text).unwrap();
        let out = dump(&c);
        let again = super::super::compile("dump.toml", &out).unwrap();
        for (a, b) in c.routes.iter().zip(&again.routes) {
            assert_eq!(format!("{:?}", a.cache), format!("{:?}", b.cache), "{out}");
        }
        assert_eq!(again.pools[0].connect_timeout, Duration::from_secs(2));
        assert_eq!(again.log, c.log, "{out}");
        assert!(out.contains("[log]\naccess_log = \"stdout\""), "{out}");
    }
}
