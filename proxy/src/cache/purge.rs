//! The purge API's requests: `POST /cache/purge?…` parsed into a [`PurgeRequest`], refused
//! precisely when it is not understood, and applied to the store (or only counted, dry run).

use serde::Serialize;

use super::key;
pub(crate) use super::key::PurgeTarget;
use super::store::MemoryStore;
use crate::request_path::{self, PathError};

/// The query parameters the purge API accepts, as its refusals list them.
pub(crate) const PARAMS: &str = "url, prefix, all, dry_run";

/// How many key texts a dry run lists; `would_purge` counts them all.
pub(crate) const DRY_RUN_KEYS: usize = 100;

/// A purge request the API understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PurgeRequest {
    /// What to remove.
    pub target: PurgeTarget,
    /// Report what would be removed, and remove nothing.
    pub dry_run: bool,
}

/// Why a purge request is refused (400), each with what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PurgeError {
    /// A parameter the API does not know: a typo must not purge with its defaults.
    #[error("unknown parameter {0:?}: the purge API accepts {PARAMS}")]
    Unknown(String),
    /// A parameter given twice: which one was meant is a guess.
    #[error("{0} is given twice: give each of {PARAMS} at most once")]
    Repeated(&'static str),
    /// A boolean that is not one.
    #[error("{name}={value}: write {name}=true or {name}=false (or 1, 0)")]
    NotABool {
        /// The parameter.
        name: &'static str,
        /// What was sent.
        value: String,
    },
    /// No target.
    #[error("name what to purge: ?url=https://HOST/PATH, ?prefix=/PATH (every host), ?prefix=HOST/PATH or ?all=true; add &dry_run=true to see what would be purged")]
    Nothing,
    /// More than one target.
    #[error("name one of url, prefix or all=true, not several")]
    Several,
    /// `url=` or `prefix=` with nothing after it.
    #[error("{0}= is empty: write {0}=https://HOST/PATH")]
    Empty(&'static str),
    /// A `url` that is a path: keys hold the host, so a path alone names no object.
    #[error("url={0} names no host: cache keys hold the host viewers sent, so write url=https://HOST{0}, or prefix={0} to purge it on every host")]
    UrlWithoutHost(String),
    /// A scheme with no host after it (`http:///x`).
    #[error("{name}={value} names no host: write {name}=https://HOST/PATH")]
    SchemeWithoutHost {
        /// The parameter.
        name: &'static str,
        /// What was sent.
        value: String,
    },
    /// A scheme other than http or https.
    #[error("{name}={value}: only http or https URLs are cached")]
    Scheme {
        /// The parameter.
        name: &'static str,
        /// What was sent.
        value: String,
    },
    /// Text before the first `/` that is no host name, without a scheme to say it is one.
    #[error("{}", not_a_host(.name, .value, .host))]
    NotAHost {
        /// The parameter.
        name: &'static str,
        /// What was sent.
        value: String,
        /// The text taken for a host.
        host: String,
    },
    /// A host that is not a valid URI authority.
    #[error("{name}={value}: invalid host {host:?}")]
    BadHost {
        /// The parameter.
        name: &'static str,
        /// What was sent.
        value: String,
        /// The host part.
        host: String,
    },
    /// A path with no canonical form matches no key: saying so beats answering "purged": 0.
    #[error("cannot purge {value:?}: {source}")]
    Path {
        /// What was sent.
        value: String,
        /// Why its path has no canonical form.
        source: PathError,
    },
}

/// Parses the decoded query parameters of a purge request.
pub(crate) fn parse(params: &[(String, String)]) -> Result<PurgeRequest, PurgeError> {
    let (mut url, mut prefix, mut all, mut dry_run) = (None, None, None, None);
    for (name, value) in params {
        let (slot, name) = match name.as_str() {
            "url" => (&mut url, "url"),
            "prefix" => (&mut prefix, "prefix"),
            "all" => (&mut all, "all"),
            "dry_run" => (&mut dry_run, "dry_run"),
            _ => return Err(PurgeError::Unknown(name.clone())),
        };
        if slot.replace(value.as_str()).is_some() {
            return Err(PurgeError::Repeated(name));
        }
    }
    let all = all.map(|v| boolean("all", v)).transpose()?.unwrap_or(false);
    let dry_run = dry_run
        .map(|v| boolean("dry_run", v))
        .transpose()?
        .unwrap_or(false);
    let target = match (url, prefix, all) {
        (Some(u), None, false) => PurgeTarget::Url(url_key(u)?),
        (None, Some(p), false) => prefix_target(p)?,
        (None, None, true) => PurgeTarget::All,
        (None, None, false) => return Err(PurgeError::Nothing),
        _ => return Err(PurgeError::Several),
    };
    Ok(PurgeRequest { target, dry_run })
}

/// `true`/`1` or `false`/`0`; nothing else, so `dry_run=yes` is not read as a real purge.
fn boolean(name: &'static str, value: &str) -> Result<bool, PurgeError> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(PurgeError::NotABool {
            name,
            value: value.to_string(),
        }),
    }
}

/// `https://Host:443/a//b?q`, `http://…` or `host.example/a` → the key text `host/a/b`.
fn url_key(value: &str) -> Result<String, PurgeError> {
    if value.starts_with('/') {
        return Err(PurgeError::UrlWithoutHost(value.to_string()));
    }
    let (host, path) = host_and_path("url", value)?;
    Ok(key::key_text(&host, &path, None, None))
}

/// `/path` for every host; `host.example/path` or `https://host/path` for one.
fn prefix_target(value: &str) -> Result<PurgeTarget, PurgeError> {
    if value.starts_with('/') {
        return Ok(PurgeTarget::PathPrefix(canonical(value, value)?));
    }
    let (host, path) = host_and_path("prefix", value)?;
    Ok(PurgeTarget::HostPrefix(key::key_text(
        &host, &path, None, None,
    )))
}

/// Splits a URL, with or without its scheme, into its host and canonical path. Without a
/// scheme the text before the first `/` must look like a host (a dot, a port, an IPv6 literal
/// or `localhost`): `live/ch1/` is a path missing its `/`, not host `live`.
fn host_and_path(name: &'static str, value: &str) -> Result<(String, String), PurgeError> {
    if value.is_empty() {
        return Err(PurgeError::Empty(name));
    }
    let (scheme, rest) = match value.split_once("://") {
        Some((s, rest)) => (Some(s), rest),
        None => (None, value),
    };
    if let Some(s) = scheme {
        if !s.eq_ignore_ascii_case("http") && !s.eq_ignore_ascii_case("https") {
            return Err(PurgeError::Scheme {
                name,
                value: value.to_string(),
            });
        }
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (host, path) = rest.split_at(end);
    if host.is_empty() {
        return Err(PurgeError::SchemeWithoutHost {
            name,
            value: value.to_string(),
        });
    }
    let looks_like_host = host.contains(['.', ':', '[']) || host.eq_ignore_ascii_case("localhost");
    if scheme.is_none() && !looks_like_host {
        return Err(PurgeError::NotAHost {
            name,
            value: value.to_string(),
            host: host.to_string(),
        });
    }
    // The host as a URI authority (RFC 3986 §3.2), without user information: keys hold the
    // Host header, which never carries it.
    if host.contains('@') || host.parse::<http::uri::Authority>().is_err() {
        return Err(PurgeError::BadHost {
            name,
            value: value.to_string(),
            host: host.to_string(),
        });
    }
    // A query or fragment names no narrower object: `url=` takes every query variant.
    let path = path.split(['?', '#']).next().unwrap_or("");
    let path = if path.is_empty() { "/" } else { path };
    Ok((host.to_string(), canonical(value, path)?))
}

/// The refusal of `name=value` whose first segment, `host`, was taken for a host: the forms
/// that say what was meant.
fn not_a_host(name: &str, value: &str, host: &str) -> String {
    let intro = format!("{name}={value}: {host:?} is not a host name (no dot or port): write");
    match name {
        "prefix" => format!(
            "{intro} prefix=/{value} for every host, prefix=HOST/{value} for one, or prefix=http://{value} if {host:?} is the host"
        ),
        _ => format!(
            "{intro} {name}=https://HOST/{value}, or {name}=http://{value} if {host:?} is the host"
        ),
    }
}

/// Keys hold canonical paths, so the purge target is made canonical the same way.
fn canonical(value: &str, path: &str) -> Result<String, PurgeError> {
    request_path::canonicalize(path).map_err(|source| PurgeError::Path {
        value: value.to_string(),
        source,
    })
}

/// What a purge did, or in a dry run would do: the JSON the API answers.
#[derive(Debug, Serialize)]
pub(crate) struct PurgeOutcome {
    /// `url`, `prefix` or `all`, as in `dime_cache_purges_total{kind}`.
    pub kind: &'static str,
    /// The target as matched against key texts.
    pub target: String,
    /// Objects removed; absent in a dry run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purged: Option<usize>,
    /// Present (true) only in a dry run.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Dry run: the objects that would be removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_purge: Option<usize>,
    /// Dry run: the first [`DRY_RUN_KEYS`] of their key texts, sorted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
}

impl PurgeTarget {
    /// The label of `dime_cache_purges_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            PurgeTarget::Url(_) | PurgeTarget::Key(_) => "url",
            PurgeTarget::HostPrefix(_) | PurgeTarget::PathPrefix(_) => "prefix",
            PurgeTarget::All => "all",
        }
    }

    /// The target as the API reports and logs it.
    pub fn shown(&self) -> String {
        match self {
            PurgeTarget::Url(t) | PurgeTarget::Key(t) | PurgeTarget::HostPrefix(t) => t.clone(),
            PurgeTarget::PathPrefix(p) => format!("(any host){p}"),
            PurgeTarget::All => "*".to_string(),
        }
    }
}

impl PurgeRequest {
    /// Removes what the request names from `store` (its fills in progress too), or in a dry run
    /// only finds it.
    pub(crate) fn apply(&self, store: &MemoryStore) -> PurgeOutcome {
        let t = &self.target;
        let mut outcome = PurgeOutcome {
            kind: t.kind(),
            target: t.shown(),
            purged: None,
            dry_run: self.dry_run,
            would_purge: None,
            keys: None,
        };
        if self.dry_run {
            let (count, mut keys) = store.find(t, DRY_RUN_KEYS);
            keys.sort_unstable();
            outcome.would_purge = Some(count);
            outcome.keys = Some(keys);
        } else {
            outcome.purged = Some(store.remove(t));
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(query: &str) -> Result<PurgeRequest, PurgeError> {
        let params: Vec<(String, String)> = query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        parse(&params)
    }

    fn target(query: &str) -> PurgeTarget {
        parsed(query)
            .unwrap_or_else(|e| panic!("{query}: {e}"))
            .target
    }

    #[test]
    fn the_accepted_forms_become_key_texts() {
        use PurgeTarget::*;
        let table: &[(&str, PurgeTarget)] = &[
            (
                "url=https://TV.example.com:8443/vod//a.ts?token=x#t",
                Url("tv.example.com/vod/a.ts".into()),
            ),
            ("url=http://tv.example.com", Url("tv.example.com/".into())),
            (
                "url=tv.example.com/vod/%61.ts",
                Url("tv.example.com/vod/a.ts".into()),
            ),
            ("url=localhost:8080/a", Url("localhost/a".into())),
            ("url=127.0.0.1/a", Url("127.0.0.1/a".into())),
            ("url=[::1]:8080/a", Url("[::1]/a".into())),
            // With a scheme, a one-label host is a host.
            ("url=http://edge/a", Url("edge/a".into())),
            ("prefix=/live/ch1/", PathPrefix("/live/ch1/".into())),
            ("prefix=/live//ch1/", PathPrefix("/live/ch1/".into())),
            (
                "prefix=tv.example.com/live/",
                HostPrefix("tv.example.com/live/".into()),
            ),
            (
                "prefix=https://tv.example.com/live/",
                HostPrefix("tv.example.com/live/".into()),
            ),
            ("all=true", All),
            ("all=1", All),
            (
                "url=tv.example.com/a&all=false",
                Url("tv.example.com/a".into()),
            ),
        ];
        for (query, want) in table {
            assert_eq!(&target(query), want, "{query}");
        }
    }

    #[test]
    fn dry_run_is_an_explicit_boolean() {
        for (v, want) in [("true", true), ("1", true), ("false", false), ("0", false)] {
            let r = parsed(&format!("all=true&dry_run={v}")).unwrap();
            assert_eq!(r.dry_run, want, "{v}");
        }
        assert!(!parsed("all=true").unwrap().dry_run);
        for v in ["yes", "", "TRUE", "2", "on"] {
            assert_eq!(
                parsed(&format!("all=true&dry_run={v}")),
                Err(PurgeError::NotABool {
                    name: "dry_run",
                    value: v.into()
                }),
                "{v}"
            );
        }
    }

    #[test]
    fn what_is_not_understood_is_refused_with_what_would_be() {
        let table: &[(&str, &str)] = &[
            ("all=true&dryrun=1", "unknown parameter \"dryrun\": the purge API accepts url, prefix, all, dry_run"),
            ("all=true&all=true", "all is given twice"),
            ("", "name what to purge: ?url=https://HOST/PATH"),
            ("all=false", "name what to purge"),
            ("dry_run=true", "name what to purge"),
            ("url=a.example/x&prefix=/x", "name one of url, prefix or all=true"),
            ("prefix=/x&all=1", "name one of url, prefix or all=true"),
            ("url=", "url= is empty"),
            ("prefix=", "prefix= is empty"),
            ("url=/vod/a.ts", "url=/vod/a.ts names no host: cache keys hold the host viewers sent, so write url=https://HOST/vod/a.ts, or prefix=/vod/a.ts to purge it on every host"),
            ("url=http:///vod/a.ts", "url=http:///vod/a.ts names no host"),
            ("url=ftp://a.example/x", "only http or https"),
            ("url=vod/a.ts", "url=vod/a.ts: \"vod\" is not a host name (no dot or port): write url=https://HOST/vod/a.ts, or url=http://vod/a.ts if \"vod\" is the host"),
            ("prefix=live/ch1/", "prefix=live/ch1/: \"live\" is not a host name (no dot or port): write prefix=/live/ch1/ for every host, prefix=HOST/live/ch1/ for one, or prefix=http://live/ch1/ if \"live\" is the host"),
            ("prefix=live", "prefix=/live for every host"),
            ("url=user@a.example/x", "invalid host \"user@a.example\""),
            ("url=a b.example/x", "invalid host"),
            ("url=a.example/../x", "cannot purge \"a.example/../x\": the path climbs above the root"),
            ("prefix=/a/%zz", "cannot purge \"/a/%zz\": invalid percent-escape"),
        ];
        for (query, want) in table {
            let got = parsed(query).map(|r| r.target);
            match got {
                Err(e) => assert!(e.to_string().contains(want), "{query}: {e}\nwanted: {want}"),
                Ok(t) => panic!("{query}: accepted as {t:?}"),
            }
        }
    }

    #[test]
    fn prefixes_match_their_keys_only() {
        let host = PurgeTarget::HostPrefix("a.example/live/".into());
        let any = PurgeTarget::PathPrefix("/live/".into());
        assert!(host.matches("a.example/live/x.ts"));
        assert!(!host.matches("b.example/live/x.ts"));
        assert!(any.matches("b.example/live/x.ts?_HLS_msn=1"));
        assert!(!any.matches("live.example/vod/live/x.ts"));
        assert_eq!(any.shown(), "(any host)/live/");
    }
}
