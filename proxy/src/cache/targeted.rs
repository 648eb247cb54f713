//! Targeted cache control: the fields that set the edge's own caching ahead of Cache-Control
//! (RFC 9213 `CDN-Cache-Control`, a route's own field, the Edge Architecture `Surrogate-Control`).

use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use pingora_cache::cache_control::CacheControl;
use pingora_http::ResponseHeader;

use super::age;

/// How a targeted field is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetedSyntax {
    /// RFC 9213 §2.1: a Structured Fields dictionary (RFC 8941) of Cache-Control directives.
    Dictionary,
    /// Edge Architecture Specification 1.0: `max-age=N[+M]`, `no-store`, `no-store-remote`.
    Surrogate,
}

/// One field a route takes its own cache directives from, ahead of Cache-Control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetedField {
    /// The field's name (lowercase).
    pub name: HeaderName,
    /// How its value is parsed: `Surrogate-Control` has its own syntax, every other one is a
    /// Structured Fields dictionary, as RFC 9213 defines targeted fields.
    pub syntax: TargetedSyntax,
}

impl TargetedField {
    /// The targeted field `name`, parsed as its name says.
    pub fn new(name: HeaderName) -> Self {
        let syntax = if name == "surrogate-control" {
            TargetedSyntax::Surrogate
        } else {
            TargetedSyntax::Dictionary
        };
        TargetedField { name, syntax }
    }
}

/// The targeted fields of a route that names none, in precedence order.
pub(crate) fn default_fields() -> Vec<TargetedField> {
    ["cdn-cache-control", "surrogate-control"]
        .into_iter()
        .map(|n| TargetedField::new(HeaderName::from_static(n)))
        .collect()
}

/// The cache directives the edge obeys for one response.
pub(crate) struct EdgeDirectives {
    /// From the first targeted field with a valid, non-empty value, else from Cache-Control.
    pub cc: Option<CacheControl>,
    /// The targeted field they came from; `None` for Cache-Control.
    pub field: Option<HeaderName>,
}

/// The explicit freshness lifetime from a targeted field's directives: `s-maxage`, then
/// `max-age`. Never `Expires`: RFC 9213 §2.1 has the cache ignore it as well as Cache-Control.
pub(crate) fn explicit_lifetime(cc: Option<&CacheControl>) -> Option<Duration> {
    let cc = cc?;
    let secs = match cc.s_maxage() {
        Ok(Some(s)) => Some(s),
        _ => cc.max_age().ok().flatten(),
    };
    secs.map(|s| Duration::from_secs(s.into()))
}

/// RFC 9213 §2.1: the first of `fields`, in order, whose value in `resp` is valid and
/// non-empty gives the edge's directives, and Cache-Control is then ignored for them; with
/// none, Cache-Control gives them. The viewer still gets the origin's Cache-Control.
pub(crate) fn select(fields: &[TargetedField], resp: &ResponseHeader) -> EdgeDirectives {
    for f in fields {
        let text = match f.syntax {
            TargetedSyntax::Dictionary => dictionary_directives(&resp.headers, &f.name),
            TargetedSyntax::Surrogate => surrogate_directives(&resp.headers, &f.name),
        };
        if let Some(text) = text {
            return EdgeDirectives {
                cc: as_cache_control(&text),
                field: Some(f.name.clone()),
            };
        }
    }
    EdgeDirectives {
        cc: CacheControl::from_resp_headers(resp),
        field: None,
    }
}

/// Removes `fields` from a response about to leave the edge: they were addressed to it.
pub(crate) fn strip(fields: &[TargetedField], resp: &mut ResponseHeader) {
    for f in fields {
        resp.remove_header(&f.name);
    }
}

/// Directives written as Cache-Control, parsed as pingora parses Cache-Control.
fn as_cache_control(text: &str) -> Option<CacheControl> {
    let mut map = HeaderMap::new();
    map.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_str(text).ok()?,
    );
    CacheControl::from_headers_named("cache-control", &map)
}

/// Every line of `name`, joined as RFC 9110 §5.3 combines them; `None` when absent or not
/// text.
fn combined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut lines = headers.get_all(name).iter().peekable();
    lines.peek()?;
    let parts: Option<Vec<&str>> = lines.map(|v| v.to_str().ok()).collect();
    Some(parts?.join(", "))
}

/// Directives whose value is delta-seconds: a non-negative Integer in a dictionary.
const DELTA_SECONDS: [&str; 4] = [
    "max-age",
    "s-maxage",
    "stale-while-revalidate",
    "stale-if-error",
];

/// RFC 9213 §2.1: the field as Cache-Control text, or `None` when it is absent, empty or not a
/// valid Structured Fields dictionary (then the cache ignores it). A directive whose value has
/// the wrong type (`max-age="60"`, `max-age=1.5`, `max-age=-1`) is ignored on its own.
fn dictionary_directives(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    use sfv::{BareItem, ListEntry, Parser};
    let value = combined(headers, name)?;
    let dict = Parser::parse_dictionary(value.as_bytes()).ok()?;
    if dict.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for (key, entry) in &dict {
        let delta = DELTA_SECONDS.contains(&key.as_str());
        let field_names = key == "private" || key == "no-cache";
        match entry {
            ListEntry::Item(item) => match &item.bare_item {
                BareItem::Boolean(true) if !delta => out.push(key.clone()),
                BareItem::Integer(n) if delta && *n >= 0 => {
                    out.push(format!(
                        "{key}={}",
                        n.unsigned_abs().min(age::DELTA_SECONDS_CAP)
                    ));
                }
                BareItem::String(s) if field_names && quotable(s) => {
                    out.push(format!("{key}=\"{s}\""));
                }
                BareItem::Token(t) if field_names => out.push(format!("{key}=\"{t}\"")),
                _ => {}
            },
            ListEntry::InnerList(list) if field_names => {
                let names: Option<Vec<&str>> = list
                    .items
                    .iter()
                    .map(|i| match &i.bare_item {
                        BareItem::Token(t) => Some(t.as_str()),
                        BareItem::String(s) if quotable(s) => Some(s.as_str()),
                        _ => None,
                    })
                    .collect();
                if let Some(names) = names.filter(|n| !n.is_empty()) {
                    out.push(format!("{key}=\"{}\"", names.join(", ")));
                }
            }
            ListEntry::InnerList(_) => {}
        }
    }
    Some(out.join(", "))
}

/// Whether `s` can sit inside a quoted string as it is.
fn quotable(s: &str) -> bool {
    !s.contains(['"', '\\'])
}

/// Edge Architecture Specification 1.0 §3: `Surrogate-Control` as Cache-Control text, or
/// `None` when it is absent, malformed (`max-age =60`, `max-age=x`) or says nothing about
/// caching (only `content="ESI/1.0"`, say). Directives names are case-insensitive. A directive
/// targeted at a named surrogate (`no-store;abc`) is for that one, not for this edge.
/// `max-age=N+M` gives M seconds of stale-if-error; `no-store-remote` is `no-store` here,
/// since an edge is the surrogate furthest from the origin.
fn surrogate_directives(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let value = combined(headers, name)?;
    let mut out = Vec::new();
    for directive in value.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if directive.contains(';') {
            continue;
        }
        let (key, arg) = match directive.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (directive, None),
        };
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return None;
        }
        match (key.to_ascii_lowercase().as_str(), arg) {
            ("max-age", Some(arg)) => {
                let (fresh, stale) = match arg.split_once('+') {
                    Some((f, s)) => (f, Some(s)),
                    None => (arg, None),
                };
                out.push(format!("max-age={}", age::delta_seconds(fresh.as_bytes())?));
                if let Some(stale) = stale {
                    out.push(format!(
                        "stale-if-error={}",
                        age::delta_seconds(stale.as_bytes())?
                    ));
                }
            }
            ("max-age", None) => return None,
            ("no-store" | "no-store-remote", None) => out.push("no-store".to_string()),
            ("no-store" | "no-store-remote", Some(_)) => return None,
            // `content` asks for processing (ESI) the edge does not do; others are unknown.
            _ => {}
        }
    }
    (!out.is_empty()).then(|| out.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(names: &[&'static str]) -> Vec<TargetedField> {
        names
            .iter()
            .map(|n| TargetedField::new(HeaderName::from_static(n)))
            .collect()
    }

    fn response(headers: &[(&str, &str)]) -> ResponseHeader {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for (name, value) in headers {
            resp.append_header(name.to_string(), *value).unwrap();
        }
        resp
    }

    /// The directives `select` picks, written back as `field: key[=value], ...` (pingora keeps
    /// them in order), so a row reads like the header it stands for.
    fn picked(targeted: &[TargetedField], headers: &[(&str, &str)]) -> String {
        let d = select(targeted, &response(headers));
        let from = d.field.as_ref().map_or("cache-control", |f| f.as_str());
        let directives: Vec<String> =
            d.cc.map(|cc| {
                cc.directives
                    .iter()
                    .map(|(k, v)| match v {
                        Some(v) => format!("{}={}", k.as_str(), String::from_utf8_lossy(&v.0)),
                        None => k.as_str().to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        format!("{from}: {}", directives.join(", "))
    }

    #[test]
    fn the_first_valid_targeted_field_wins_and_cache_control_is_ignored() {
        // The route's targeted fields: the default, its own ahead of CDN-Cache-Control, none.
        let (default, ours) = (
            default_fields(),
            fields(&["dime-cache-control", "cdn-cache-control"]),
        );
        let (default, ours) = (&default[..], &ours[..]);
        let none: &[TargetedField] = &[];
        let cc = ("cache-control", "max-age=60");
        // Targeted fields, response headers, what the edge obeys.
        type Row<'a> = (&'a [TargetedField], &'a [(&'a str, &'a str)], &'a str);
        let rows: &[Row] = &[
            (default, &[cc], "cache-control: max-age=60"),
            (
                default,
                &[cc, ("cdn-cache-control", "max-age=86400")],
                "cdn-cache-control: max-age=86400",
            ),
            (
                default,
                &[cc, ("cdn-cache-control", "no-store")],
                "cdn-cache-control: no-store",
            ),
            // RFC 9213 §2.1: a valid, non-empty value is used even with no directive known.
            (
                default,
                &[cc, ("cdn-cache-control", "foo")],
                "cdn-cache-control: foo",
            ),
            // Not a Structured Field: ignored, the next field or Cache-Control decides.
            (
                default,
                &[cc, ("cdn-cache-control", "max-age =100")],
                "cache-control: max-age=60",
            ),
            (
                default,
                &[cc, ("cdn-cache-control", "MaX-aGe=3600")],
                "cache-control: max-age=60",
            ),
            (
                default,
                &[cc, ("cdn-cache-control", "max-age=10, &&&")],
                "cache-control: max-age=60",
            ),
            (
                default,
                &[cc, ("cdn-cache-control", "")],
                "cache-control: max-age=60",
            ),
            // Wrong types lose the directive, not the field.
            (
                default,
                &[cc, ("cdn-cache-control", "max-age=\"600\", private")],
                "cdn-cache-control: private",
            ),
            (
                default,
                &[cc, ("cdn-cache-control", "max-age=1.5, s-maxage=-1")],
                "cdn-cache-control: ",
            ),
            (
                default,
                &[(
                    "cdn-cache-control",
                    "max-age=99999999999, stale-if-error=30",
                )],
                "cdn-cache-control: max-age=2147483648, stale-if-error=30",
            ),
            (
                default,
                &[(
                    "cdn-cache-control",
                    "private=(x-user \"x-id\"), no-cache=x-trace",
                )],
                "cdn-cache-control: private=\"x-user, x-id\", no-cache=\"x-trace\"",
            ),
            // Two lines are one dictionary.
            (
                default,
                &[
                    ("cdn-cache-control", "public"),
                    ("cdn-cache-control", "max-age=5"),
                ],
                "cdn-cache-control: public, max-age=5",
            ),
            // Surrogate-Control: after CDN-Cache-Control by default, ahead of Cache-Control.
            (
                default,
                &[cc, ("surrogate-control", "max-age=3600+600")],
                "surrogate-control: max-age=3600, stale-if-error=600",
            ),
            (
                default,
                &[cc, ("surrogate-control", "content=\"ESI/1.0\", No-Store")],
                "surrogate-control: no-store",
            ),
            (
                default,
                &[cc, ("surrogate-control", "no-store-remote")],
                "surrogate-control: no-store",
            ),
            (
                default,
                &[cc, ("surrogate-control", "MaX-aGe=3600")],
                "surrogate-control: max-age=3600",
            ),
            (
                default,
                &[
                    ("cdn-cache-control", "max-age=10"),
                    ("surrogate-control", "max-age=20"),
                ],
                "cdn-cache-control: max-age=10",
            ),
            // Malformed, targeted elsewhere, or silent about caching: Cache-Control decides.
            (
                default,
                &[cc, ("surrogate-control", "max-age =100")],
                "cache-control: max-age=60",
            ),
            (
                default,
                &[cc, ("surrogate-control", "max-age= 100")],
                "cache-control: max-age=60",
            ),
            (
                default,
                &[cc, ("surrogate-control", "no-store;other-cdn")],
                "cache-control: max-age=60",
            ),
            (
                default,
                &[cc, ("surrogate-control", "content=\"ESI/1.0\"")],
                "cache-control: max-age=60",
            ),
            // The route's order decides.
            (
                ours,
                &[
                    cc,
                    ("cdn-cache-control", "no-store"),
                    ("dime-cache-control", "max-age=600"),
                ],
                "dime-cache-control: max-age=600",
            ),
            (
                ours,
                &[cc, ("cdn-cache-control", "max-age=600")],
                "cdn-cache-control: max-age=600",
            ),
            // Not listed: Surrogate-Control means nothing to this route.
            (
                ours,
                &[cc, ("surrogate-control", "no-store")],
                "cache-control: max-age=60",
            ),
            // No targeted fields: Cache-Control alone, as RFC 9111 has it.
            (
                none,
                &[cc, ("cdn-cache-control", "no-store")],
                "cache-control: max-age=60",
            ),
        ];
        for &(targeted, headers, want) in rows {
            assert_eq!(picked(targeted, headers), want, "{headers:?}");
        }
    }

    #[test]
    fn a_targeted_lifetime_is_its_s_maxage_or_max_age() {
        let lifetime = |headers: &[(&str, &str)]| {
            let d = select(&default_fields(), &response(headers));
            explicit_lifetime(d.cc.as_ref()).map(|d| d.as_secs())
        };
        let both = ("cdn-cache-control", "s-maxage=30, max-age=86400");
        assert_eq!(lifetime(&[("cache-control", "max-age=60"), both]), Some(30));
        assert_eq!(
            lifetime(&[("cdn-cache-control", "max-age=86400")]),
            Some(86400)
        );
        assert_eq!(lifetime(&[("cdn-cache-control", "public")]), None);
    }

    #[test]
    fn decide_takes_the_edges_storing_and_lifetime_from_the_targeted_field() {
        use crate::cache::policy::{decide, CacheMode, CachePolicy};
        use pingora_cache::RespCacheable;
        use pingora_http::RequestHeader;
        use std::time::SystemTime;

        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let date = httpdate::fmt_http_date(now);
        let expires = httpdate::fmt_http_date(now + Duration::from_secs(600));
        let req = RequestHeader::build("GET", b"/a", None).unwrap();
        // The freshness lifetime stored, `None` when not stored.
        let lifetime = |policy: &CachePolicy, path: &str, headers: &[(&str, &str)]| {
            let mut resp = response(headers);
            resp.append_header("date", date.as_str()).unwrap();
            match decide(policy, &req, path, &resp, now) {
                RespCacheable::Cacheable(meta) => {
                    let life = meta.fresh_until().duration_since(meta.created()).unwrap();
                    Some(life.as_secs())
                }
                RespCacheable::Uncacheable(_) => None,
            }
        };
        let rfc = CachePolicy::rfc_default();
        let video = CachePolicy {
            mode: CacheMode::Video,
            ..CachePolicy::rfc_default()
        };
        let untargeted = CachePolicy {
            targeted_fields: Vec::new(),
            ..CachePolicy::rfc_default()
        };
        let cdn = |v| ("cdn-cache-control", v);
        let cc = |v| ("cache-control", v);
        type Row<'a> = (
            &'a CachePolicy,
            &'a str,
            Vec<(&'a str, &'a str)>,
            Option<u64>,
        );
        let rows: Vec<Row> = vec![
            (
                &rfc,
                "/a",
                vec![cc("max-age=60"), cdn("max-age=86400")],
                Some(86_400),
            ),
            (&rfc, "/a", vec![cc("max-age=60"), cdn("no-store")], None),
            (
                &rfc,
                "/a",
                vec![cc("no-store"), cdn("max-age=600")],
                Some(600),
            ),
            (
                &rfc,
                "/a",
                vec![cc("private"), cdn("max-age=600")],
                Some(600),
            ),
            (&rfc, "/a", vec![cc("max-age=600"), cdn("private")], None),
            (&rfc, "/a", vec![cc("max-age=600"), cdn("max-age=0")], None),
            // RFC 9213 §2.1: Expires is ignored with Cache-Control...
            (
                &rfc,
                "/a",
                vec![("expires", expires.as_str()), cdn("public")],
                None,
            ),
            // ...unless the targeted field is invalid, and so ignored itself.
            (
                &rfc,
                "/a",
                vec![("expires", expires.as_str()), cdn("max-age=60, &&")],
                Some(600),
            ),
            (&rfc, "/a", vec![cdn("max-age=60"), ("age", "100")], None),
            (
                &untargeted,
                "/a",
                vec![cc("max-age=60"), cdn("no-store")],
                Some(60),
            ),
            // The video policy caps what a targeted field gives, as it caps Cache-Control.
            (&video, "/live/i.m3u8", vec![cdn("max-age=86400")], Some(1)),
            (
                &video,
                "/v/s.ts",
                vec![cc("max-age=5"), cdn("max-age=30")],
                Some(30),
            ),
        ];
        for (policy, path, headers, want) in rows {
            assert_eq!(lifetime(policy, path, &headers), want, "{path} {headers:?}");
        }
    }

    #[test]
    fn strip_removes_only_the_targeted_fields() {
        let mut resp = response(&[
            ("cache-control", "max-age=60"),
            ("cdn-cache-control", "max-age=86400"),
            ("surrogate-control", "max-age=86400"),
            ("dime-cache-control", "max-age=86400"),
        ]);
        strip(&default_fields(), &mut resp);
        assert_eq!(resp.headers.get("cache-control").unwrap(), "max-age=60");
        assert!(resp.headers.get("cdn-cache-control").is_none());
        assert!(resp.headers.get("surrogate-control").is_none());
        assert!(resp.headers.get("dime-cache-control").is_some());
    }
}
