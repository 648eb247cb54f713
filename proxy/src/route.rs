//! Routing: which route serves a request, by host and longest path prefix, and what a route
//! does to it (the `strip_prefix` rewrite, the redirect to HTTPS).
//!
//! Precedence: the longest matching path prefix wins; between routes with the same prefix an
//! exact host beats a wildcard (the longer wildcard first), which beats a route with no host.
//! Two routes with the same host and prefix are rejected when the config is compiled.

pub(crate) use crate::host::{normalize_host, HostMatch};

/// The compiled routing table: answers "which route" for a host and path.
#[derive(Debug, Clone)]
pub(crate) struct RouteTable {
    entries: Vec<(HostMatch, String)>,
}

impl RouteTable {
    /// Builds the table from validated routes' hosts and path prefixes, in route order;
    /// indexes refer to that order.
    pub(crate) fn new(routes: impl IntoIterator<Item = (HostMatch, String)>) -> Self {
        RouteTable {
            entries: routes.into_iter().collect(),
        }
    }

    /// The index of the route for a normalised host and a path, if any.
    pub(crate) fn lookup(&self, host: &str, path: &str) -> Option<usize> {
        // A linear scan: route tables are tens of entries, and a scan of a few cache lines
        // beats a trie at that size.
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, (h, prefix))| path.starts_with(prefix.as_str()) && h.matches(host))
            .max_by_key(|(_, (h, prefix))| (prefix.len(), h.rank()))
            .map(|(i, _)| i)
    }
}

/// The path a route forwards upstream for the canonical request `path`: with `strip`, the
/// route's `prefix` is taken off, and what is left always starts with `/`.
pub(crate) fn upstream_path(path: &str, prefix: &str, strip: bool) -> String {
    if !strip {
        return path.to_string();
    }
    let rest = path.strip_prefix(prefix).unwrap_or(path);
    if rest.starts_with('/') {
        rest.to_string()
    } else {
        format!("/{rest}")
    }
}

/// What a route that redirects plain HTTP to HTTPS answers a plain-HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HttpsRedirect {
    /// A 308 to this `https://` URL.
    To(String),
    /// The Host is not a plain host name or IP literal: the viewer's Host header must not be
    /// able to point the redirect elsewhere, so the edge answers 400.
    NoPlainHost,
}

impl HttpsRedirect {
    /// `https://host[:port]/path?query` for a plain-HTTP request to `raw_host` and `uri`;
    /// the port is `https_port`, left out when it is 443.
    pub(crate) fn new(raw_host: &str, uri: &http::Uri, https_port: u16) -> Self {
        // normalize_host keeps an IPv6 literal in its brackets and drops the port.
        let host = normalize_host(raw_host);
        let plain = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c));
        if !plain {
            return HttpsRedirect::NoPlainHost;
        }
        let port = if https_port == 443 {
            String::new()
        } else {
            format!(":{https_port}")
        };
        // HTTP/2 requests carry an absolute URI: only its path and query are kept.
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        HttpsRedirect::To(format!("https://{host}{port}{path}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &[(&str, &str)]) -> RouteTable {
        RouteTable {
            entries: routes
                .iter()
                .map(|(h, p)| {
                    let host = if h.is_empty() {
                        HostMatch::Any
                    } else {
                        HostMatch::parse(h).unwrap()
                    };
                    (host, p.to_string())
                })
                .collect(),
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let t = table(&[("", "/"), ("", "/stream/"), ("", "/stream/live/")]);
        assert_eq!(t.lookup("a", "/stream/live/x.m3u8"), Some(2));
        assert_eq!(t.lookup("a", "/stream/vod/x.mp4"), Some(1));
        assert_eq!(t.lookup("a", "/index.html"), Some(0));
    }

    #[test]
    fn exact_host_beats_wildcard_beats_any_for_the_same_prefix() {
        let t = table(&[
            ("", "/"),
            ("*.example.com", "/"),
            ("*.eu.example.com", "/"),
            ("www.eu.example.com", "/"),
        ]);
        assert_eq!(t.lookup("www.eu.example.com", "/"), Some(3));
        assert_eq!(t.lookup("cdn.eu.example.com", "/"), Some(2));
        assert_eq!(t.lookup("cdn.example.com", "/"), Some(1));
        assert_eq!(t.lookup("example.com", "/"), Some(0));
        assert_eq!(t.lookup("other.org", "/"), Some(0));
    }

    #[test]
    fn no_match_without_a_catch_all() {
        let t = table(&[("example.com", "/stream/")]);
        assert_eq!(t.lookup("example.com", "/"), None);
        assert_eq!(t.lookup("other.com", "/stream/a"), None);
    }

    #[test]
    fn strip_prefix_forwards_the_rest_as_an_absolute_path() {
        // (path, prefix, strip, forwarded)
        let table = [
            ("/stream/live/a.m3u8", "/stream/", true, "/live/a.m3u8"),
            ("/stream/", "/stream/", true, "/"),
            ("/stream", "/stream", true, "/"),
            ("/stream/a", "/stream", true, "/a"),
            (
                "/stream/live/a.m3u8",
                "/stream/",
                false,
                "/stream/live/a.m3u8",
            ),
            ("/other", "/stream/", true, "/other"),
        ];
        for (path, prefix, strip, want) in table {
            assert_eq!(
                upstream_path(path, prefix, strip),
                want,
                "{path} {prefix} {strip}"
            );
        }
    }

    #[test]
    fn the_https_redirect_keeps_path_and_query_and_swaps_the_port() {
        let uri: http::Uri = "/a/b?x=1".parse().unwrap();
        let to = |s: &str| HttpsRedirect::To(s.to_string());
        assert_eq!(
            HttpsRedirect::new("Example.com:8080", &uri, 8443),
            to("https://example.com:8443/a/b?x=1")
        );
        assert_eq!(
            HttpsRedirect::new("example.com", &uri, 443),
            to("https://example.com/a/b?x=1")
        );
        assert_eq!(
            HttpsRedirect::new("[::1]:8080", &uri, 8443),
            to("https://[::1]:8443/a/b?x=1")
        );
        let absolute: http::Uri = "http://example.com/v.m3u8".parse().unwrap();
        assert_eq!(
            HttpsRedirect::new("example.com", &absolute, 443),
            to("https://example.com/v.m3u8")
        );
        for bad in ["evil.example/x", "user@evil.example", ""] {
            assert_eq!(
                HttpsRedirect::new(bad, &uri, 443),
                HttpsRedirect::NoPlainHost,
                "{bad}"
            );
        }
    }
}
