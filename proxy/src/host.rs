//! Host names: normalising a request's Host (or HTTP/2 authority) and matching it against the
//! exact or wildcard hosts routes and certificates name.

use std::borrow::Cow;
use std::fmt;

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
    pub fn rank(&self) -> usize {
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

/// Lowercases a Host header or URI authority and drops the port and a trailing dot; borrowed
/// when that leaves nothing to lowercase, as for almost every request.
pub(crate) fn normalize_host(raw: &str) -> Cow<'_, str> {
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
    let host = without_port.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// The host a request names, as sent: its URI authority (HTTP/2 carries the host there and
/// may send no Host header), else its Host header, else empty.
pub(crate) fn request_host(uri: &http::Uri, headers: &http::HeaderMap) -> String {
    uri.authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_normalised() {
        assert_eq!(normalize_host("Example.COM:8080"), "example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
        assert_eq!(normalize_host("[::1]"), "[::1]");
        assert_eq!(normalize_host(" 127.0.0.1 "), "127.0.0.1");
        // A port that is not digits is not a port: left for the route match to refuse.
        assert_eq!(normalize_host("example.com:x"), "example.com:x");
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

    #[test]
    fn a_wildcard_matches_subdomains_only() {
        let w = HostMatch::parse("*.example.com").unwrap();
        assert!(w.matches("a.example.com"));
        assert!(w.matches("a.b.example.com"));
        assert!(!w.matches("example.com"));
        assert!(!w.matches("badexample.com"));
        assert!(HostMatch::parse("Example.com.")
            .unwrap()
            .matches("example.com"));
        assert!(HostMatch::Any.matches(""));
    }

    #[test]
    fn the_authority_names_the_host_before_the_host_header() {
        let mut headers = http::HeaderMap::new();
        let origin_form: http::Uri = "/a".parse().unwrap();
        assert_eq!(request_host(&origin_form, &headers), "");
        headers.insert(http::header::HOST, "Site.example:8080".parse().unwrap());
        assert_eq!(request_host(&origin_form, &headers), "Site.example:8080");
        let absolute: http::Uri = "https://other.example/a".parse().unwrap();
        assert_eq!(request_host(&absolute, &headers), "other.example");
    }
}
