//! Cache policy: what a response may be stored as, for how long, and how stale it may be
//! served — RFC 9111 for a shared cache, plus the video defaults a route can ask for.

use std::time::{Duration, SystemTime};

use http::{header, StatusCode};
use pingora_cache::cache_control::CacheControl;
use pingora_cache::{CacheMeta, NoCacheReason, RespCacheable};
use pingora_error::{Error, ErrorSource, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};

/// How a route caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// Never store; pass everything through.
    Off,
    /// Store exactly what RFC 9111 allows a shared cache to store.
    Rfc,
    /// RFC 9111, plus defaults for HLS and VoD when the origin says nothing.
    Video,
}

impl CacheMode {
    /// The mode as the config file spells it: `off`, `rfc` or `video`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheMode::Off => "off",
            CacheMode::Rfc => "rfc",
            CacheMode::Video => "video",
        }
    }
}

/// What a background fill does when every viewer that was reading it has left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbandonedFill {
    /// Complete it and store the object: the next viewer gets a hit (ATS and nginx's
    /// `proxy_cache_background_update` behave so).
    Finish,
    /// Stop reading the origin: nothing is stored, the next viewer starts a new fill.
    Abort,
}

/// A route's compiled cache policy.
#[derive(Debug, Clone)]
pub struct CachePolicy {
    /// Off, RFC or video.
    pub mode: CacheMode,
    /// Bigger objects stream through uncached.
    pub max_object_size: usize,
    /// Video: live playlists are fresh for at most half of this.
    pub target_duration: Duration,
    /// Video: freshness of segments and VoD files the origin gives no lifetime.
    pub media_ttl: Duration,
    /// Video: longest freshness of a 404 or 5xx for media (negative caching).
    pub negative_ttl: Duration,
    /// Query parameters kept in the key; `None` keeps the whole query.
    pub keep_query: Option<Vec<String>>,
    /// Serve-stale-while-revalidate window when the response names none.
    pub stale_while_revalidate: Duration,
    /// Serve-stale-if-error window when the response names none.
    pub stale_if_error: Duration,
    /// Store responses that carry `Set-Cookie` (as RFC 9111 allows); off by default.
    pub store_set_cookie: bool,
    /// Misses are filled by a background task at the origin's speed, and every viewer,
    /// the first included, reads the fill at its own pace.
    pub background_fill: bool,
    /// What a background fill does when all its viewers left.
    pub abandoned_fill: AbandonedFill,
}

impl CachePolicy {
    /// Whether a request with `method` goes through the cache: GET and HEAD, unless caching
    /// is off.
    pub fn applies_to(&self, method: &http::Method) -> bool {
        self.mode != CacheMode::Off && (method == http::Method::GET || method == http::Method::HEAD)
    }

    /// The policy of a route that names none: RFC 9111, nothing more.
    pub fn rfc_default() -> Self {
        CachePolicy {
            mode: CacheMode::Rfc,
            max_object_size: 64 << 20,
            target_duration: Duration::from_secs(2),
            media_ttl: Duration::from_secs(24 * 3600),
            negative_ttl: Duration::from_secs(1),
            keep_query: None,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            store_set_cookie: false,
            background_fill: false,
            abandoned_fill: AbandonedFill::Finish,
        }
    }
}

/// What kind of object a path names, for the video defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// An HLS playlist (`.m3u8`) or DASH manifest (`.mpd`): live ones change every segment.
    Playlist,
    /// A segment, part, init segment or VoD file: immutable once published.
    Media,
    /// Anything else.
    Other,
}

impl MediaKind {
    /// Classifies by the path's extension.
    pub fn of(path: &str) -> Self {
        let ext = path
            .rsplit('/')
            .next()
            .and_then(|f| f.rsplit_once('.'))
            .map(|(_, e)| e.to_ascii_lowercase());
        match ext.as_deref() {
            Some("m3u8" | "mpd") => MediaKind::Playlist,
            Some(
                "ts" | "m4s" | "mp4" | "m4a" | "m4v" | "aac" | "cmfv" | "cmfa" | "vtt" | "webvtt",
            ) => MediaKind::Media,
            _ => MediaKind::Other,
        }
    }
}

/// Statuses a cache may store with heuristic freshness (RFC 9110 §15.1).
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Decides whether and how to store `resp` for `req`, whose canonical path is `path` (the kind
/// of media it names picks the video defaults, so `/a%2Ets` is a segment like `/a.ts`).
pub fn decide(
    policy: &CachePolicy,
    req: &RequestHeader,
    path: &str,
    resp: &ResponseHeader,
    now: SystemTime,
) -> RespCacheable {
    use RespCacheable::Uncacheable;
    let uncacheable = |why: &'static str| Uncacheable(NoCacheReason::Custom(why));
    if policy.mode == CacheMode::Off {
        return Uncacheable(NoCacheReason::NeverEnabled);
    }
    let status = resp.status;
    // 206 and 304 describe a representation, they are not one; 1xx are interim.
    if status.is_informational()
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return uncacheable("status not storable");
    }
    let req_cc = CacheControl::from_req_headers(req);
    // RFC 9111 §5.2.1.5: a request's no-store forbids storing its response.
    if req_cc.as_ref().is_some_and(|cc| cc.no_store()) {
        return uncacheable("request no-store");
    }
    let cc = CacheControl::from_resp_headers(resp);
    if cc.as_ref().is_some_and(|cc| cc.no_store()) {
        return Uncacheable(NoCacheReason::OriginNotCache);
    }
    // RFC 9111 §3: `private` (without field names) is for the user's own cache only.
    if cc
        .as_ref()
        .is_some_and(|cc| cc.private() && cc.private_field_names().is_none())
    {
        return Uncacheable(NoCacheReason::OriginNotCache);
    }
    // RFC 9111 §4.1: Vary: * never matches a later request.
    let vary_star = resp
        .headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == "*");
    if vary_star {
        return uncacheable("vary *");
    }
    let explicitly_shared = cc
        .as_ref()
        .is_some_and(|cc| cc.public() || cc.s_maxage().ok().flatten().is_some());
    // RFC 9111 §3.5: answers to authorized requests are shared only if the origin says so.
    if req.headers.contains_key(header::AUTHORIZATION)
        && !(explicitly_shared || cc.as_ref().is_some_and(|cc| cc.must_revalidate()))
    {
        return uncacheable("authorization");
    }
    // RFC 9111 lets a shared cache store Set-Cookie, and §7.3 leaves sensitive information to
    // the cache's judgement: a cookie is usually one viewer's session, and `public` on the
    // response does not make it anyone else's. Like nginx and Varnish, store it only when the
    // route says its cookies are shared.
    if resp.headers.contains_key(header::SET_COOKIE) && !policy.store_set_cookie {
        return uncacheable("set-cookie");
    }

    let initial_age = initial_age(resp, now);
    let explicit = explicit_lifetime(cc.as_ref(), resp);
    let kind = MediaKind::of(path);
    let video = policy.mode == CacheMode::Video;
    let error_status = status == StatusCode::NOT_FOUND || status.is_server_error();
    let must_revalidate_every_time = cc
        .as_ref()
        .is_some_and(|cc| cc.no_cache() && cc.no_cache_field_names().is_none());

    let lifetime = if must_revalidate_every_time {
        // RFC 9111 §5.2.2.4: storable, but never served without revalidation.
        Some(Duration::ZERO)
    } else if video && kind != MediaKind::Other && error_status {
        // Negative caching: a segment missing now may appear a moment later.
        Some(
            explicit
                .unwrap_or(policy.negative_ttl)
                .min(policy.negative_ttl),
        )
    } else if video && kind == MediaKind::Playlist {
        // A live playlist changes every target duration: never hold it longer than half.
        Some(
            explicit
                .unwrap_or(Duration::MAX)
                .min(policy.target_duration / 2),
        )
    } else if let Some(e) = explicit {
        Some(e)
    } else if video && kind == MediaKind::Media && status == StatusCode::OK {
        Some(policy.media_ttl)
    } else if heuristically_cacheable(status) {
        heuristic_lifetime(resp)
    } else {
        None
    };
    let Some(lifetime) = lifetime else {
        return uncacheable("no freshness information");
    };
    // A zero lifetime is only worth storing if it can be revalidated cheaply.
    let has_validator =
        resp.headers.contains_key(header::ETAG) || resp.headers.contains_key(header::LAST_MODIFIED);
    if lifetime.saturating_sub(initial_age).is_zero() && !has_validator {
        return uncacheable("stale on arrival without validators");
    }

    // RFC 9111 §4.2.4: must-revalidate, proxy-revalidate and no-cache forbid serving stale.
    let no_stale = must_revalidate_every_time
        || cc
            .as_ref()
            .is_some_and(|cc| cc.must_revalidate() || cc.proxy_revalidate());
    let (swr, sie) = if no_stale {
        (0, 0)
    } else {
        let from_cc = |v: Option<u32>, default: Duration| {
            v.unwrap_or(default.as_secs().min(u32::MAX as u64) as u32)
        };
        (
            from_cc(
                cc.as_ref()
                    .and_then(|cc| cc.stale_while_revalidate().ok().flatten()),
                policy.stale_while_revalidate,
            ),
            from_cc(
                cc.as_ref()
                    .and_then(|cc| cc.stale_if_error().ok().flatten()),
                policy.stale_if_error,
            ),
        )
    };
    let created = now.checked_sub(initial_age).unwrap_or(now);
    let fresh_until = if lifetime.is_zero() {
        // Already stale: pingora treats `fresh_until <= now` as needing revalidation.
        created
    } else {
        created
            .checked_add(lifetime)
            .unwrap_or(now + Duration::from_secs(365 * 24 * 3600))
    };
    let mut header = resp.clone();
    for h in CONNECTION_FIELDS {
        header.remove_header(h);
    }
    // `private="field"` and `no-cache="field"`: store the response without those fields.
    if let Some(cc) = cc.as_ref() {
        for names in [cc.private_field_names(), cc.no_cache_field_names()]
            .into_iter()
            .flatten()
        {
            for name in names {
                if let Ok(n) = std::str::from_utf8(name) {
                    header.remove_header(n.trim());
                }
            }
        }
    }
    header.remove_header("age");
    RespCacheable::Cacheable(CacheMeta::new(fresh_until, created, swr, sie, header))
}

/// RFC 9111 §3.1: fields that describe the connection, never stored.
const CONNECTION_FIELDS: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// RFC 9111 §4.3.4 and §3.2: the stored header updated with every field of a 304, except
/// those describing the connection or the stored body's encoding and length.
pub fn merge_not_modified(
    stored: &ResponseHeader,
    not_modified: &ResponseHeader,
) -> ResponseHeader {
    // Fields describing the stored body stay as stored.
    const BODY_FIELDS: [&str; 4] = [
        "content-length",
        "content-encoding",
        "content-range",
        "content-type",
    ];
    let mut merged = stored.clone();
    let names: Vec<header::HeaderName> = not_modified.headers.keys().cloned().collect();
    for name in names {
        if CONNECTION_FIELDS.contains(&name.as_str()) || BODY_FIELDS.contains(&name.as_str()) {
            continue;
        }
        merged.remove_header(&name);
        for value in not_modified.headers.get_all(&name) {
            let _ = merged.append_header(name.clone(), value.clone());
        }
    }
    merged
}

/// RFC 9111 §4.2.1: s-maxage, then max-age, then Expires minus Date.
fn explicit_lifetime(cc: Option<&CacheControl>, resp: &ResponseHeader) -> Option<Duration> {
    if let Some(cc) = cc {
        if let Ok(Some(s)) = cc.s_maxage() {
            return Some(Duration::from_secs(s.into()));
        }
        if let Ok(Some(m)) = cc.max_age() {
            return Some(Duration::from_secs(m.into()));
        }
    }
    let mut expires = resp.headers.get_all(header::EXPIRES).iter();
    let first = expires.next()?;
    // RFC 9111 §5.3: an invalid (or repeated) Expires means "already expired".
    let expires_at = first
        .to_str()
        .ok()
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let Some(expires_at) = expires_at.filter(|_| expires.next().is_none()) else {
        return Some(Duration::ZERO);
    };
    let date = header_date(resp, header::DATE).unwrap_or_else(SystemTime::now);
    Some(expires_at.duration_since(date).unwrap_or(Duration::ZERO))
}

/// RFC 9111 §4.2.2: 10% of the time since Last-Modified, at most a day.
fn heuristic_lifetime(resp: &ResponseHeader) -> Option<Duration> {
    let last_modified = header_date(resp, header::LAST_MODIFIED)?;
    let date = header_date(resp, header::DATE).unwrap_or_else(SystemTime::now);
    let age = date.duration_since(last_modified).ok()?;
    Some((age / 10).min(Duration::from_secs(24 * 3600)))
}

/// RFC 9111 §4.2.3: the response's age when it arrived (Age header, or Date in the past).
fn initial_age(resp: &ResponseHeader, now: SystemTime) -> Duration {
    let age_header = resp
        .headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::ZERO);
    let apparent = header_date(resp, header::DATE)
        .and_then(|d| now.duration_since(d).ok())
        .unwrap_or(Duration::ZERO);
    // Clock skew of a second is noise, not age.
    let apparent = if apparent <= Duration::from_secs(1) {
        Duration::ZERO
    } else {
        apparent
    };
    age_header.max(apparent)
}

fn header_date(resp: &ResponseHeader, name: header::HeaderName) -> Option<SystemTime> {
    resp.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
}

/// What a request's own Cache-Control asks of a stored response (RFC 9111 §5.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestDemand {
    /// Use the cache normally.
    Normal,
    /// Revalidate before using a stored response (`no-cache`, `max-age=0`, Pragma: no-cache).
    Revalidate,
}

/// Whether a stale object may answer: `error` is `None` for stale-while-revalidate, else
/// what the revalidation met (stale-if-error).
pub fn serve_stale(error: Option<&Error>) -> bool {
    match error {
        // stale-while-revalidate: pingora has already checked the stored window, which
        // the policy closes for must-revalidate and no-cache responses.
        None => true,
        // stale-if-error: the origin is unreachable, timed out or answered 5xx.
        Some(e) => match e.etype() {
            ErrorType::HTTPStatus(code) => *code >= 500,
            _ => e.esource() == &ErrorSource::Upstream,
        },
    }
}

/// Reads the request's cache directives against the stored response's age.
pub fn request_demand(req: &RequestHeader, meta: &CacheMeta) -> RequestDemand {
    match CacheControl::from_req_headers(req) {
        Some(cc) => {
            if cc.no_cache() {
                return RequestDemand::Revalidate;
            }
            if let Ok(Some(max_age)) = cc.max_age() {
                if meta.age() > Duration::from_secs(max_age.into()) || max_age == 0 {
                    return RequestDemand::Revalidate;
                }
            }
            RequestDemand::Normal
        }
        // RFC 9111 §5.4: Pragma: no-cache counts only when Cache-Control is absent.
        None => {
            let pragma_no_cache = req
                .headers
                .get(header::PRAGMA)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.to_ascii_lowercase().contains("no-cache"));
            if pragma_no_cache {
                RequestDemand::Revalidate
            } else {
                RequestDemand::Normal
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(headers: &[(&str, &str)]) -> ResponseHeader {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for (name, value) in headers {
            resp.append_header(name.to_string(), *value).unwrap();
        }
        resp
    }

    #[test]
    fn set_cookie_is_stored_only_on_routes_that_opt_in() {
        let req = RequestHeader::build("GET", b"/a", None).unwrap();
        let now = SystemTime::now();
        let cases = [
            // (response Cache-Control, route opts in, stored)
            ("max-age=60", false, false),
            ("public, max-age=60", false, false),
            ("s-maxage=60", false, false),
            ("max-age=60", true, true),
            ("public, max-age=60", true, true),
            ("private, max-age=60", true, false),
            ("no-store", true, false),
        ];
        for (cc, opt_in, stored) in cases {
            let policy = CachePolicy {
                store_set_cookie: opt_in,
                ..CachePolicy::rfc_default()
            };
            let resp = response(&[("cache-control", cc), ("set-cookie", "sid=1")]);
            let got = matches!(
                decide(&policy, &req, "/", &resp, now),
                RespCacheable::Cacheable(_)
            );
            assert_eq!(got, stored, "{cc}, store_set_cookie = {opt_in}");
        }
        // Without a cookie the route's choice changes nothing.
        let resp = response(&[("cache-control", "max-age=60")]);
        let policy = CachePolicy::rfc_default();
        assert!(matches!(
            decide(&policy, &req, "/", &resp, now),
            RespCacheable::Cacheable(_)
        ));
    }

    #[test]
    fn the_video_defaults_follow_the_canonical_path_not_the_spelling() {
        let now = SystemTime::now();
        let policy = CachePolicy {
            mode: CacheMode::Video,
            ..CachePolicy::rfc_default()
        };
        let mut req = RequestHeader::build("GET", b"/v/a%2Ets", None).unwrap();
        req.insert_header("host", "edge").unwrap();
        let resp = response(&[]);
        // No cache headers: a segment gets media_ttl, an unknown kind nothing at all.
        assert!(matches!(
            decide(&policy, &req, "/v/a.ts", &resp, now),
            RespCacheable::Cacheable(_)
        ));
        assert!(!matches!(
            decide(&policy, &req, "/v/a%2Ets", &resp, now),
            RespCacheable::Cacheable(_)
        ));
    }
}
