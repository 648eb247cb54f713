//! Cache keys: normalised host + path + the query parameters a route keeps, identical over
//! HTTP/1.1 and HTTP/2; and [`PurgeTarget`], which key texts a purge or an invalidation removes.

use std::borrow::Cow;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

use pingora_cache::key::HashBinary;
use pingora_cache::CacheKey;
use siphasher::sip128::{Hasher128, SipHasher13};

use crate::host::normalize_host;

/// The key text for a request: `host/path` or `host/path?kept=params`.
pub(crate) fn key_text(
    host: &str,
    path: &str,
    query: Option<&str>,
    keep: Option<&[String]>,
) -> String {
    let host = normalize_host(host);
    let query = match (query, keep) {
        (None, _) | (Some(""), _) => None,
        (Some(q), None) => Some(Cow::Borrowed(q)),
        (Some(q), Some(keep)) => {
            // Sorted so parameter order in the URL does not split the cache; an empty
            // parameter (`a=1&&b=2`) carries nothing, even when keep_query names "".
            let mut kept: Vec<&str> = q
                .split('&')
                .filter(|kv| {
                    let name = kv.split('=').next().unwrap_or("");
                    !kv.is_empty() && keep.iter().any(|k| k == name)
                })
                .collect();
            kept.sort_unstable();
            (!kept.is_empty()).then(|| Cow::Owned(kept.join("&")))
        }
    };
    // Pushed, not format!ted: made on every request, and the formatter costs more than the copy.
    let mut text =
        String::with_capacity(host.len() + path.len() + query.as_ref().map_or(0, |q| q.len() + 1));
    text.push_str(&host);
    text.push_str(path);
    if let Some(q) = query {
        text.push('?');
        text.push_str(&q);
    }
    text
}

/// The cache key of a request: [`key_text`] of its host, canonical path and the query
/// parameters its route keeps.
pub(crate) fn cache_key(
    host: &str,
    path: &str,
    query: Option<&str>,
    keep: Option<&[String]>,
) -> CacheKey {
    let mut key = CacheKey::new(key_text(host, path, query, keep), "");
    // pingora would hash the key text each time it asks for the key's hash (the lookup, the
    // cache lock, the predictor): made once here, and by our own hash.
    key.set_primary_bin_override(text_hash(key.primary_key()));
    key
}

/// The hash that names a key text in the store, the cache lock and the predictor: SipHash-1-3
/// with 128 bits of output, keyed at random once per process. pingora's own is Blake2b-128,
/// about 1,800 instructions for a short key against about 150. The hash never leaves the
/// process (the store is in memory and starts empty), and its secret key keeps a viewer from
/// choosing two URLs whose hashes collide, which Blake2b did by being a cryptographic hash.
pub(crate) fn text_hash(text: &[u8]) -> HashBinary {
    static KEYS: OnceLock<(u64, u64)> = OnceLock::new();
    let &(k0, k1) = KEYS.get_or_init(|| {
        // std's RandomState is seeded from the OS's random source.
        let seed = std::collections::hash_map::RandomState::new();
        (seed.hash_one(0u8), seed.hash_one(1u8))
    });
    let mut hasher = SipHasher13::new_with_keys(k0, k1);
    hasher.write(text);
    hasher.finish128().as_bytes()
}

/// The part of a key before its query: what "purge this URL" matches.
pub(crate) fn without_query(key: &str) -> &str {
    key.split_once('?').map_or(key, |(k, _)| k)
}

/// What a purge (the admin API) or an invalidation (RFC 9111 §4.4) removes, matched against
/// key texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeTarget {
    /// One URL as its key text without query (`host/path`): every kept-query and Vary variant.
    Url(String),
    /// One key text (`host/path?kept-query`): every Vary variant of it. Other kept-query URLs
    /// of the same path are other resources and stay.
    Key(String),
    /// Every key text starting with `host/path`.
    HostPrefix(String),
    /// Every key whose path starts with `/path`, on any host.
    PathPrefix(String),
    /// Everything.
    All,
}

impl PurgeTarget {
    /// Whether the target removes the object stored under `key_text`.
    pub fn matches(&self, key_text: &str) -> bool {
        match self {
            PurgeTarget::Url(t) => without_query(key_text) == t,
            PurgeTarget::Key(t) => key_text == t,
            PurgeTarget::HostPrefix(t) => key_text.starts_with(t.as_str()),
            PurgeTarget::PathPrefix(p) => key_text
                .find('/')
                .is_some_and(|i| key_text[i..].starts_with(p.as_str())),
            PurgeTarget::All => true,
        }
    }

    /// The one path (`host/path`, key text without query) every key it matches has, when
    /// there is one: the store then finds them by lookup instead of a scan.
    pub fn path(&self) -> Option<&str> {
        match self {
            PurgeTarget::Url(t) | PurgeTarget::Key(t) => Some(without_query(t)),
            PurgeTarget::HostPrefix(_) | PurgeTarget::PathPrefix(_) | PurgeTarget::All => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_cache::key::CacheHashKey;

    #[test]
    fn a_key_is_named_by_the_hash_of_its_text_alone() {
        let a = cache_key("tv.example", "/live/a.m3u8", None, None);
        let again = cache_key("TV.example.", "/live/a.m3u8", Some(""), None);
        let b = cache_key("tv.example", "/live/b.m3u8", None, None);
        assert_eq!(a.primary_bin(), text_hash(b"tv.example/live/a.m3u8"));
        assert_eq!(a.primary_bin(), again.primary_bin());
        assert_ne!(a.primary_bin(), b.primary_bin());
        assert_ne!(text_hash(b""), text_hash(b"\0"));
    }

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

    #[test]
    fn empty_parameters_are_never_kept() {
        // Found by make fuzz (cache_key): with "" in keep_query, `?&x=1` keyed as `a/s.ts?`
        // and `?&&` as `a/s.ts?&&`, other keys than the query-less `a/s.ts`.
        let keep = vec![String::new(), "v".to_string()];
        for query in ["", "&", "&&", "&x=1", "x=1&&"] {
            assert_eq!(key_text("a", "/s.ts", Some(query), Some(&keep)), "a/s.ts");
        }
        assert_eq!(
            key_text("a", "/s.ts", Some("&v=2&&=1"), Some(&keep)),
            "a/s.ts?=1&v=2"
        );
    }

    #[test]
    fn a_purge_target_matches_the_key_texts_it_names() {
        let keys = ["h/a", "h/a?_HLS_msn=1", "h/ab", "h/a/b", "g/a", "g/x/a"];
        let matched = |t: PurgeTarget| -> Vec<&str> {
            keys.iter().copied().filter(|k| t.matches(k)).collect()
        };
        assert_eq!(
            matched(PurgeTarget::Url("h/a".into())),
            ["h/a", "h/a?_HLS_msn=1"]
        );
        assert_eq!(matched(PurgeTarget::Key("h/a".into())), ["h/a"]);
        assert_eq!(
            matched(PurgeTarget::Key("h/a?_HLS_msn=1".into())),
            ["h/a?_HLS_msn=1"]
        );
        assert_eq!(
            matched(PurgeTarget::HostPrefix("h/a".into())),
            ["h/a", "h/a?_HLS_msn=1", "h/ab", "h/a/b"]
        );
        assert_eq!(
            matched(PurgeTarget::PathPrefix("/a".into())),
            ["h/a", "h/a?_HLS_msn=1", "h/ab", "h/a/b", "g/a"]
        );
        assert_eq!(matched(PurgeTarget::All).len(), keys.len());
        assert_eq!(PurgeTarget::Key("h/a?x=1".into()).path(), Some("h/a"));
        assert_eq!(PurgeTarget::Url("h/a".into()).path(), Some("h/a"));
        assert_eq!(PurgeTarget::PathPrefix("/a".into()).path(), None);
    }
}
