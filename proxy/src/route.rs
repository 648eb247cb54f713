//! Routing: which route serves a request, by host and longest path prefix.
//!
//! Precedence: the longest matching path prefix wins; between routes with the same prefix an
//! exact host beats a wildcard (the longer wildcard first), which beats a route with no host.
//! Two routes with the same host and prefix are rejected when the config is compiled.

use std::fmt;

use crate::config::RouteSpec;

/// The hosts a route serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostMatch {
    /// Any host (the route names none).
    Any,
    /// Exactly this host, lowercase.
    Exact(String),
    /// Any subdomain of this suffix; holds `.example.com` for `*.example.com`.
    Wildcard(String),
}

impl HostMatch {
    /// Parses `example.com` or `*.example.com`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let lower = s.trim_end_matches('.').to_ascii_lowercase();
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let labels_ok = !name.is_empty()
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !labels_ok {
            return Err(format!(
                "invalid host \"{s}\": write a host name (\"example.com\") or a wildcard (\"*.example.com\"), without port"
            ));
        }
        Ok(if wild {
            HostMatch::Wildcard(format!(".{name}"))
        } else {
            HostMatch::Exact(name.to_string())
        })
    }

    /// Whether a normalised request host matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(h) => h == host,
            HostMatch::Wildcard(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }

    /// Specificity: exact, then longer wildcards, then any.
    fn rank(&self) -> usize {
        match self {
            HostMatch::Any => 0,
            HostMatch::Wildcard(s) => 1 + s.len(),
            HostMatch::Exact(_) => usize::MAX,
        }
    }
}

impl fmt::Display for HostMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostMatch::Any => f.write_str("(any host)"),
            HostMatch::Exact(h) => f.write_str(h),
            HostMatch::Wildcard(s) => write!(f, "*{s}"),
        }
    }
}

/// The compiled routing table: answers "which route" for a host and path.
#[derive(Debug, Clone)]
pub struct RouteTable {
    entries: Vec<(HostMatch, String)>,
}

impl RouteTable {
    /// Builds the table from validated routes; indexes refer to `routes`.
    pub fn new(routes: &[RouteSpec]) -> Self {
        RouteTable {
            entries: routes
                .iter()
                .map(|r| (r.host.clone(), r.prefix.clone()))
                .collect(),
        }
    }

    /// The index of the route for a normalised host and a path, if any.
    pub fn lookup(&self, host: &str, path: &str) -> Option<usize> {
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

/// Lowercases a Host header or URI authority and drops the port and a trailing dot.
pub fn normalize_host(raw: &str) -> String {
    let raw = raw.trim();
    let without_port = if let Some(rest) = raw.strip_prefix('[') {
        // IPv6 literal: keep the brackets, drop ":port" after them.
        match rest.find(']') {
            Some(end) => &raw[..end + 2],
            None => raw,
        }
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => raw,
        }
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
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
    fn hosts_are_normalised() {
        assert_eq!(normalize_host("Example.COM:8080"), "example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
        assert_eq!(normalize_host("127.0.0.1"), "127.0.0.1");
    }

    #[test]
    fn bad_hosts_are_rejected() {
        for bad in [
            "",
            "exa mple.com",
            "*.",
            "a.*.com",
            "example.com:80",
            "-a.com",
        ] {
            assert!(HostMatch::parse(bad).is_err(), "{bad} should be rejected");
        }
        assert_eq!(
            HostMatch::parse("*.Example.com").unwrap(),
            HostMatch::Wildcard(".example.com".into())
        );
    }
}
