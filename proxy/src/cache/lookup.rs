//! The cache lookup (`GET /cache/lookup?url=`): what the cache holds for one URL, found by
//! key the way a viewer's request would find it, without touching the origin.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use thiserror::Error;

use super::key;
use super::store::{Inspected, MemoryStore};
use super::CachePolicy;
use crate::request_path::{self, PathError};

/// The form the lookup accepts, for every 400 it answers.
pub(crate) const ACCEPTED_FORM: &str = "name the object as ?url=HOST/PATH or ?url=http://HOST/PATH (https:// too), with the query a viewer sends, percent-encoded: curl -G --data-urlencode 'url=cdn.example.com/live/a.m3u8?_HLS_msn=3'";

/// Why a lookup target names no object.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum TargetError {
    /// No `url` parameter, or an empty one.
    #[error("no url given")]
    Missing,
    /// The URL has no host before its path.
    #[error("{0:?} has no host: the cache key starts with the host the viewer asked for")]
    NoHost(String),
    /// A scheme other than http and https, or a host that is not a host name or address.
    #[error("{0:?} is not an http(s) URL or HOST/PATH")]
    NotHttp(String),
    /// The path has no canonical form, so no key holds it.
    #[error("{url:?}: {error}")]
    BadPath {
        /// The URL as given.
        url: String,
        /// Why its path has no canonical form.
        error: PathError,
    },
}

/// A lookup target: host, canonical path and query, as a viewer's request would carry them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The host, with any port (the key drops it).
    pub host: String,
    /// The canonical path.
    pub path: String,
    /// The query, if any.
    pub query: Option<String>,
}

/// Parses `http(s)://HOST/PATH?QUERY` or `HOST/PATH?QUERY`; the path is made canonical as a
/// request's is ([`request_path::canonicalize`]), so every spelling finds the same key.
pub(crate) fn parse_target(url: &str) -> Result<Target, TargetError> {
    let url = url.trim();
    if url.is_empty() {
        return Err(TargetError::Missing);
    }
    let lower = url.to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &url[7..]
    } else if lower.starts_with("https://") {
        &url[8..]
    } else if url.contains("://") {
        return Err(TargetError::NotHttp(url.to_string()));
    } else {
        url
    };
    // A fragment never reaches the origin (RFC 9110 §7.1).
    let rest = rest.split('#').next().unwrap_or(rest);
    let (host, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    if host.is_empty() {
        return Err(TargetError::NoHost(url.to_string()));
    }
    let plain = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._[]:".contains(c));
    if !plain {
        return Err(TargetError::NotHttp(url.to_string()));
    }
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (path, None),
    };
    let path = if path.is_empty() { "/" } else { path };
    let path = request_path::canonicalize(path).map_err(|error| TargetError::BadPath {
        url: url.to_string(),
        error,
    })?;
    Ok(Target {
        host: host.to_string(),
        path,
        query: query.filter(|q| !q.is_empty()),
    })
}

/// What the cache holds for one URL.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// The URL as asked.
    pub url: String,
    /// The cache key a viewer's request for it uses.
    pub key: String,
    /// The route that serves it now; `None` when no route matches (the edge answers 404).
    pub route: Option<String>,
    /// That route's cache mode now.
    pub policy: Option<&'static str>,
    /// Whether a stored object answers it (under some Vary variant).
    pub cached: bool,
    /// Whether a fill for it is in progress.
    pub filling: bool,
    /// Every stored variant and fill in progress.
    pub objects: Vec<Object>,
}

/// One stored variant or fill in progress.
#[derive(Debug, Serialize)]
pub(crate) struct Object {
    /// The hash it is stored under (key and Vary variant), in hex.
    pub variant: String,
    /// The request field values this variant answers, for the fields its Vary names.
    pub vary: BTreeMap<String, String>,
    /// Whether this is a fill in progress rather than a stored object.
    pub filling: bool,
    /// `fresh`; `stale-while-revalidate` or `stale-if-error` (stale, inside that window);
    /// `stale` (used only after revalidation).
    pub state: &'static str,
    /// The stored status code.
    pub status: u16,
    /// Body bytes; for a fill, written so far.
    pub size: usize,
    /// Bytes counted against `cache.memory` (body, header and bookkeeping); 0 for a fill.
    pub stored_bytes: u32,
    /// The Age a viewer would see now, in seconds.
    pub age_seconds: u64,
    /// Freshness lifetime, from storing or the last revalidation.
    pub ttl_seconds: u64,
    /// Freshness left; 0 once stale.
    pub fresh_for_seconds: u64,
    /// Stale-while-revalidate window after freshness ends.
    pub stale_while_revalidate_seconds: u32,
    /// Stale-if-error window after freshness ends.
    pub stale_if_error_seconds: u32,
    /// When it was stored (RFC 3339, less any Age the origin sent).
    pub stored_at: String,
    /// When it was last revalidated, if ever.
    pub revalidated_at: Option<String>,
    /// Its Content-Type.
    pub content_type: Option<String>,
    /// Its ETag.
    pub etag: Option<String>,
    /// Its Last-Modified.
    pub last_modified: Option<String>,
    /// The route and cache mode that stored it.
    pub stored_by: Option<StoredByView>,
}

/// The route and cache mode that stored an object.
#[derive(Debug, Serialize)]
pub(crate) struct StoredByView {
    /// Route name.
    pub route: String,
    /// Cache mode: `rfc` or `video`.
    pub policy: &'static str,
}

/// Looks `target` up in `store` under the key that `route` (its name and cache policy, `None`
/// when no route serves it) gives it.
pub(crate) fn lookup(
    store: &MemoryStore,
    url: &str,
    target: &Target,
    route: Option<(&str, &CachePolicy)>,
) -> Report {
    // The route decides which query parameters are part of the key; without one, nothing
    // is cached, and the whole query is shown.
    let keep = route.and_then(|(_, policy)| policy.keep_query.as_deref());
    let key = key::key_text(&target.host, &target.path, target.query.as_deref(), keep);
    let now = SystemTime::now();
    let mut objects: Vec<Object> = store
        .inspect(&key)
        .into_iter()
        .map(|i| object(i, now))
        .collect();
    objects.sort_by(|a, b| (a.filling, &a.vary).cmp(&(b.filling, &b.vary)));
    Report {
        url: url.to_string(),
        route: route.map(|(name, _)| name.to_string()),
        policy: route.map(|(_, policy)| policy.mode.as_str()),
        cached: objects.iter().any(|o| !o.filling),
        filling: objects.iter().any(|o| o.filling),
        key,
        objects,
    }
}

fn object(i: Inspected, now: SystemTime) -> Object {
    let meta = &i.meta;
    let header = |name: http::header::HeaderName| {
        meta.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let fresh_for = meta
        .fresh_until()
        .duration_since(now)
        .unwrap_or(Duration::ZERO);
    let state = if meta.is_fresh(now) {
        "fresh"
    } else if meta.serve_stale_while_revalidate(now) {
        "stale-while-revalidate"
    } else if meta.serve_stale_if_error(now) {
        "stale-if-error"
    } else {
        "stale"
    };
    let vary = match &i.stored_by {
        Some(s) => s
            .vary
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect(),
        None => BTreeMap::new(),
    };
    Object {
        variant: i.hash.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        }),
        vary,
        filling: i.filling,
        state,
        status: meta.response_header().status.as_u16(),
        size: i.body_bytes,
        stored_bytes: i.weight,
        age_seconds: meta.age().as_secs(),
        ttl_seconds: meta.fresh_sec(),
        // Rounded up: "fresh for 0s" would read as stale.
        fresh_for_seconds: fresh_for.as_secs() + u64::from(fresh_for.subsec_nanos() > 0),
        stale_while_revalidate_seconds: meta.stale_while_revalidate_sec(),
        stale_if_error_seconds: meta.stale_if_error_sec(),
        stored_at: rfc3339(meta.created()),
        revalidated_at: (meta.updated() != meta.created()).then(|| rfc3339(meta.updated())),
        content_type: header(http::header::CONTENT_TYPE),
        etag: header(http::header::ETAG),
        last_modified: header(http::header::LAST_MODIFIED),
        stored_by: i.stored_by.as_ref().map(|s| StoredByView {
            route: s.route.clone(),
            policy: s.policy.as_str(),
        }),
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Report {
    /// The report as text for a person, one object per paragraph.
    pub(crate) fn text(&self) -> String {
        let mut out = format!("url     {}\nkey     {}\n", self.url, self.key);
        match (&self.route, self.policy) {
            (Some(r), Some(p)) => {
                let _ = writeln!(out, "route   {r} (policy {p})");
            }
            _ => out.push_str("route   none: the edge answers 404 and stores nothing\n"),
        }
        let stored = self.objects.iter().filter(|o| !o.filling).count();
        let _ = writeln!(
            out,
            "cached  {}",
            match stored {
                0 => "no".to_string(),
                1 => "yes, 1 object".to_string(),
                n => format!("yes, {n} Vary variants"),
            }
        );
        for o in &self.objects {
            let what = if o.filling { "filling" } else { "variant" };
            let _ = writeln!(
                out,
                "\n{what} {}: {} {}, {} bytes, age {}s, {} (ttl {}s, fresh for {}s, stale-while-revalidate {}s, stale-if-error {}s)",
                o.variant,
                o.status,
                o.content_type.as_deref().unwrap_or("(no content-type)"),
                o.size,
                o.age_seconds,
                o.state,
                o.ttl_seconds,
                o.fresh_for_seconds,
                o.stale_while_revalidate_seconds,
                o.stale_if_error_seconds,
            );
            match &o.stored_by {
                Some(s) => {
                    let _ = writeln!(
                        out,
                        "  stored at {} by route {} (policy {})",
                        o.stored_at, s.route, s.policy
                    );
                }
                None => {
                    let _ = writeln!(out, "  stored at {}", o.stored_at);
                }
            }
            if let Some(at) = &o.revalidated_at {
                let _ = writeln!(out, "  revalidated at {at}");
            }
            for (name, value) in &o.vary {
                let _ = writeln!(out, "  vary {name}: {value}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, path: &str, query: Option<&str>) -> Target {
        Target {
            host: host.into(),
            path: path.into(),
            query: query.map(str::to_string),
        }
    }

    #[test]
    fn every_accepted_spelling_names_one_target() {
        for url in [
            "cdn.example.com/v/a.ts?x=1",
            "http://cdn.example.com/v/a.ts?x=1",
            "HTTPS://cdn.example.com//v/./%61.ts?x=1#frag",
        ] {
            assert_eq!(
                parse_target(url),
                Ok(target("cdn.example.com", "/v/a.ts", Some("x=1"))),
                "{url}"
            );
        }
        assert_eq!(
            parse_target("127.0.0.1:8080"),
            Ok(target("127.0.0.1:8080", "/", None))
        );
        assert_eq!(
            parse_target("[::1]:8080/a?"),
            Ok(target("[::1]:8080", "/a", None))
        );
    }

    #[test]
    fn targets_without_a_host_or_a_canonical_path_are_refused() {
        assert_eq!(parse_target(" "), Err(TargetError::Missing));
        for url in ["/v/a.ts", "http:///v/a.ts", "https://?x=1"] {
            assert_eq!(
                parse_target(url),
                Err(TargetError::NoHost(url.into())),
                "{url}"
            );
        }
        for url in ["ftp://h/a", "user@h/a", "h h/a"] {
            assert_eq!(
                parse_target(url),
                Err(TargetError::NotHttp(url.into())),
                "{url}"
            );
        }
        assert_eq!(
            parse_target("h/../a"),
            Err(TargetError::BadPath {
                url: "h/../a".into(),
                error: PathError::AboveRoot
            })
        );
    }
}
