//! Cache keys: normalised host + path + the query parameters a route keeps, identical over
//! HTTP/1.1 and HTTP/2.

use crate::route::normalize_host;

/// The key text for a request: `host/path` or `host/path?kept=params`.
pub fn key_text(host: &str, path: &str, query: Option<&str>, keep: Option<&[String]>) -> String {
    let host = normalize_host(host);
    let query = match (query, keep) {
        (None, _) | (Some(""), _) => None,
        (Some(q), None) => Some(q.to_string()),
        (Some(q), Some(keep)) => {
            // Sorted so parameter order in the URL does not split the cache.
            let mut kept: Vec<&str> = q
                .split('&')
                .filter(|kv| {
                    let name = kv.split('=').next().unwrap_or("");
                    keep.iter().any(|k| k == name)
                })
                .collect();
            kept.sort_unstable();
            (!kept.is_empty()).then(|| kept.join("&"))
        }
    };
    match query {
        Some(q) => format!("{host}{path}?{q}"),
        None => format!("{host}{path}"),
    }
}

/// The part of a key before its query: what "purge this URL" matches.
pub fn without_query(key: &str) -> &str {
    key.split_once('?').map_or(key, |(k, _)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_dropped_and_hls_parameters_kept_in_order() {
        let keep = vec!["_HLS_msn".to_string(), "_HLS_part".to_string()];
        assert_eq!(
            key_text(
                "CDN.example.com:443",
                "/live/a.m3u8",
                Some("token=x&_HLS_part=2&_HLS_msn=10"),
                Some(&keep)
            ),
            "cdn.example.com/live/a.m3u8?_HLS_msn=10&_HLS_part=2"
        );
        assert_eq!(
            key_text("a", "/s.ts", Some("token=x"), Some(&keep)),
            "a/s.ts"
        );
        assert_eq!(
            key_text("a", "/s.ts", Some("b=1&a=2"), None),
            "a/s.ts?b=1&a=2"
        );
        assert_eq!(without_query("a/s.ts?x=1"), "a/s.ts");
    }
}
