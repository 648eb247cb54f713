//! Which cached URLs a successful unsafe request invalidates (RFC 9111 §4.4).

use http::{HeaderMap, Method};
use url::Url;

use super::key::{self, PurgeTarget};
use super::store::MemoryStore;
use crate::host::normalize_host;
use crate::request_path;

/// Whether a request invalidates what the cache holds: an unsafe method (or one whose safety
/// is unknown) answered 2xx or 3xx by the origin. `upstream_status` is the origin's status,
/// `None` when the edge answered by itself (its 308 to HTTPS, a 404 for no route, a 502 when no
/// backend answered): then the origin never saw the request and nothing about it changed.
pub(crate) fn invalidates(method: &Method, upstream_status: Option<u16>) -> bool {
    // RFC 9111 §4.4: a "non-error response" is 2xx or 3xx.
    !method.is_safe() && upstream_status.is_some_and(|s| (200..400).contains(&s))
}

/// The key texts a request's non-error response invalidates: its target URI (its canonical
/// `path` and its `query`), keyed with the route's kept query parameters (`target_keep`), then
/// the URIs in the response's Location and Content-Location, resolved against the target URI,
/// when they are on the same host, with their paths made canonical as requests' are.
///
/// `keep_for(host, path)` gives the kept query parameters of the route that serves a URL, or
/// `None` when no route does (nothing can be cached under it). Hosts are compared as cache
/// keys hold them: normalised, without scheme or port, since one key serves HTTP and HTTPS.
pub(crate) fn invalidated_keys<'a>(
    raw_host: &str,
    path: &str,
    query: Option<&str>,
    target_keep: Option<&[String]>,
    response: &HeaderMap,
    keep_for: impl Fn(&str, &str) -> Option<Option<&'a [String]>>,
) -> Vec<String> {
    let mut keys = vec![key::key_text(raw_host, path, query, target_keep)];
    let host = normalize_host(raw_host);
    let path_and_query = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    // A Host header that is not a plain authority has no same-host URIs to offer.
    let Ok(base) = Url::parse(&format!("http://{host}{path_and_query}")) else {
        return keys;
    };
    let named = [http::header::LOCATION, http::header::CONTENT_LOCATION]
        .into_iter()
        .flat_map(|name| response.get_all(name).iter());
    for value in named {
        let Some(url) = value.to_str().ok().and_then(|v| base.join(v.trim()).ok()) else {
            continue;
        };
        if !matches!(url.scheme(), "http" | "https") {
            continue;
        }
        // RFC 9111 §4.4: never for another origin, so that one site cannot evict another's
        // objects.
        let Some(other) = url.host_str().map(normalize_host) else {
            continue;
        };
        if other != host {
            continue;
        }
        // A URI with no canonical form names nothing the cache could hold.
        let Ok(other_path) = request_path::canonicalize(url.path()) else {
            continue;
        };
        let Some(keep) = keep_for(&host, &other_path) else {
            continue;
        };
        let k = key::key_text(&host, &other_path, url.query(), keep);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys
}

/// A request the origin answered, as invalidation sees it.
pub(crate) struct Answered<'a> {
    /// Its method.
    pub method: &'a Method,
    /// The origin's status; `None` when the edge answered by itself.
    pub upstream_status: Option<u16>,
    /// The Host (or HTTP/2 authority) the viewer sent.
    pub raw_host: &'a str,
    /// Its canonical path.
    pub path: &'a str,
    /// Its query.
    pub query: Option<&'a str>,
    /// The query parameters its route keeps in keys.
    pub keep: Option<&'a [String]>,
}

/// RFC 9111 §4.4: when the origin answered an unsafe `request` with 2xx or 3xx, removes its
/// target URI and the same-host URIs in `response`'s Location and Content-Location from
/// `store`, each by key lookup ([`invalidated_keys`] says which, with `keep_for`). Returns the
/// number of objects removed.
pub(crate) fn after_response<'a>(
    store: &MemoryStore,
    request: &Answered<'_>,
    response: &HeaderMap,
    keep_for: impl Fn(&str, &str) -> Option<Option<&'a [String]>>,
) -> usize {
    if !invalidates(request.method, request.upstream_status) {
        return 0;
    }
    invalidated_keys(
        request.raw_host,
        request.path,
        request.query,
        request.keep,
        response,
        keep_for,
    )
    .into_iter()
    .map(|k| store.remove(&PurgeTarget::Key(k)))
    .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_origins_non_error_answer_to_an_unsafe_method_invalidates() {
        let table: &[(&str, Option<u16>, bool)] = &[
            ("POST", Some(200), true),
            ("PUT", Some(204), true),
            ("DELETE", Some(301), true),
            ("PATCH", Some(399), true),
            ("PURGEX", Some(200), true), // safety unknown
            ("POST", Some(404), false),
            ("POST", Some(502), false),
            ("POST", Some(100), false),
            ("POST", None, false), // the edge's own 308, 404 or 502
            ("GET", Some(200), false),
            ("HEAD", Some(200), false),
            ("OPTIONS", Some(200), false),
        ];
        for (method, status, want) in table {
            let m: Method = method.parse().unwrap();
            assert_eq!(invalidates(&m, *status), *want, "{method} {status:?}");
        }
    }

    fn keys(target: &str, headers: &[(&str, &str)]) -> Vec<String> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let hls = ["_HLS_msn".to_string()];
        // The edge passes the path and query of the request URI, origin-form or absolute.
        let uri: http::Uri = target.parse().unwrap();
        invalidated_keys(
            "Site.example:8080",
            uri.path(),
            uri.query(),
            None,
            &h,
            |host, path| {
                assert_eq!(host, "site.example");
                if path.starts_with("/live/") {
                    Some(Some(&hls[..]))
                } else if path.starts_with("/none/") {
                    None
                } else {
                    Some(None)
                }
            },
        )
    }

    #[test]
    fn the_target_and_same_host_locations_are_invalidated() {
        // Request target, response headers, the keys invalidated.
        type Case = (
            &'static str,
            &'static [(&'static str, &'static str)],
            &'static [&'static str],
        );
        let table: &[Case] = &[
            ("/a/b?x=1", &[], &["site.example/a/b?x=1"]),
            (
                "/a/b",
                &[("location", "/c"), ("content-location", "d?y=2")],
                &["site.example/a/b", "site.example/c", "site.example/a/d?y=2"],
            ),
            // Absolute, other scheme or port on the same host: the same cache key.
            (
                "/a/b",
                &[("location", "https://SITE.example:8443/e#frag")],
                &["site.example/a/b", "site.example/e"],
            ),
            (
                "/a/b",
                &[("location", "../f/./g")],
                &["site.example/a/b", "site.example/f/g"],
            ),
            // The Location's own route decides which query parameters are in its key.
            (
                "/a/b",
                &[("location", "/live/x.m3u8?token=t&_HLS_msn=4")],
                &["site.example/a/b", "site.example/live/x.m3u8?_HLS_msn=4"],
            ),
            // Never another host, nor another scheme, nor a path no route serves.
            (
                "/a/b",
                &[
                    ("location", "https://other.example/a/b"),
                    ("location", "//other.example/c"),
                    ("content-location", "mailto:x@site.example"),
                    ("location", "/none/z"),
                ],
                &["site.example/a/b"],
            ),
            // The target itself named again is one key.
            (
                "/a/b",
                &[("content-location", "/a/b")],
                &["site.example/a/b"],
            ),
            // An absolute request URI (HTTP/2) keys like an origin-form one.
            (
                "http://site.example/a/b",
                &[("location", "c")],
                &["site.example/a/b", "site.example/a/c"],
            ),
        ];
        for (target, headers, want) in table {
            assert_eq!(keys(target, headers), *want, "{target} {headers:?}");
        }
    }

    #[test]
    fn a_host_header_that_is_no_authority_invalidates_only_the_target() {
        let mut h = HeaderMap::new();
        h.insert(http::header::LOCATION, "/c".parse().unwrap());
        let got = invalidated_keys("bad host/x", "/a", None, None, &h, |_, _| Some(None));
        assert_eq!(got, ["bad host/x/a"]);
    }
}
