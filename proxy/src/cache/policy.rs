//! Cache policy: what a response may be stored as, for how long, and how stale it may be
//! served — RFC 9111 for a shared cache, plus the video defaults a route can ask for.

use std::time::{Duration, SystemTime};

use http::{header, StatusCode};
use pingora_cache::cache_control::CacheControl;
use pingora_cache::{CacheMeta, NoCacheReason, RespCacheable};
use pingora_error::{Error, ErrorSource, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};

use super::age::{self, Arrival};
use super::targeted::{self, EdgeDirectives, TargetedField};

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

/// `max_variants` when the route names none: a response that varies on a field with many
/// values (`Vary: User-Agent`, a cookie) cannot fill the cache with copies of one URL.
pub(crate) const DEFAULT_MAX_VARIANTS: usize = 32;

/// A route's compiled cache policy.
#[derive(Debug, Clone)]
pub struct CachePolicy {
    /// Off, RFC or video.
    pub mode: CacheMode,
    /// Bigger objects stream through uncached.
    pub max_object_size: usize,
    /// Responses stored under one URL at most, one per set of values of the fields its
    /// `Vary` names; past it, new variants stream through uncached.
    pub max_variants: usize,
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
    /// Fields whose directives set the edge's own caching ahead of Cache-Control, first
    /// valid one wins (RFC 9213 §2.1); default `CDN-Cache-Control`, `Surrogate-Control`.
    pub targeted_fields: Vec<TargetedField>,
    /// Remove the targeted fields from responses before they leave the edge.
    pub strip_targeted: bool,
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

    /// RFC 9213: removes the targeted fields, addressed to this edge, from a response about to
    /// leave it, unless the route passes them on.
    pub(crate) fn strip_targeted_fields(&self, resp: &mut ResponseHeader) {
        if self.strip_targeted {
            targeted::strip(&self.targeted_fields, resp);
        }
    }

    /// Whether a stored response may not be served stale (see [`forbids_stale`]), read from
    /// the directives the edge obeys (a targeted field ahead of Cache-Control, as when it was
    /// stored): when the origin cannot be reached, such a response is answered with 504
    /// (RFC 9111 §5.2.2.2).
    pub(crate) fn stale_forbidden(&self, meta: &CacheMeta) -> bool {
        let directives = targeted::select(&self.targeted_fields, meta.response_header());
        forbids_stale(directives.cc.as_ref())
    }

    /// The policy of a route that names none: RFC 9111, nothing more.
    pub fn rfc_default() -> Self {
        CachePolicy {
            mode: CacheMode::Rfc,
            max_object_size: 64 << 20,
            max_variants: DEFAULT_MAX_VARIANTS,
            target_duration: Duration::from_secs(2),
            media_ttl: Duration::from_secs(24 * 3600),
            negative_ttl: Duration::from_secs(1),
            keep_query: None,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            store_set_cookie: false,
            targeted_fields: targeted::default_fields(),
            strip_targeted: true,
            background_fill: false,
            abandoned_fill: AbandonedFill::Finish,
        }
    }
}

/// What kind of object a path names, for the video defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MediaKind {
    /// An HLS playlist (`.m3u8`) or DASH manifest (`.mpd`): live ones change every segment.
    Playlist,
    /// A segment, part, init segment or VoD file: immutable once published.
    Media,
    /// Anything else.
    Other,
}

impl MediaKind {
    /// Classifies by the path's extension.
    pub(crate) fn of(path: &str) -> Self {
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

/// Whether `req` is a low-latency HLS blocking playlist reload: its query names `_HLS_msn`.
fn is_blocking_reload(req: &RequestHeader) -> bool {
    req.uri.query().is_some_and(|q| {
        q.split('&')
            .any(|p| p.split('=').next() == Some("_HLS_msn"))
    })
}

/// Statuses a cache may store with heuristic freshness (RFC 9110 §15.1).
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Final statuses whose semantics RFC 9110 §15 defines: the ones this cache understands
/// (for `must-understand`, RFC 9111 §5.2.2.3).
fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200..=206 | 300..=305 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 500..=505
    )
}

/// Whether the response's Cache-Control forbids serving it stale, whatever the route's
/// windows: must-revalidate (RFC 9111 §5.2.2.2), proxy-revalidate (§5.2.2.8), s-maxage,
/// which carries proxy-revalidate's semantics for a shared cache (§5.2.2.10), and no-cache,
/// which needs revalidation before every use (§5.2.2.4).
fn forbids_stale(cc: Option<&CacheControl>) -> bool {
    cc.is_some_and(|cc| {
        cc.must_revalidate() || cc.proxy_revalidate() || cc.has_key("s-maxage") || cc.no_cache()
    })
}

/// Decides whether and how to store `resp` for `req`, whose canonical path is `path` (the kind
/// of media it names picks the video defaults, so `/a%2Ets` is a segment like `/a.ts`), as it
/// arrived at `arrival` (a bare `SystemTime`: with no measured response delay).
pub(crate) fn decide(
    policy: &CachePolicy,
    req: &RequestHeader,
    path: &str,
    resp: &ResponseHeader,
    arrival: impl Into<Arrival>,
) -> RespCacheable {
    let arrival = arrival.into();
    let now = arrival.at;
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
    // RFC 9213: a targeted field (CDN-Cache-Control...) replaces Cache-Control for the edge.
    let EdgeDirectives {
        cc,
        field: targeted_by,
    } = targeted::select(&policy.targeted_fields, resp);
    // RFC 9111 §5.2.2.3: must-understand limits storing to caches that know the status's
    // semantics, and for those it overrides no-store (§3).
    let must_understand = cc.as_ref().is_some_and(|cc| cc.has_key("must-understand"));
    if must_understand && !understood(status) {
        return uncacheable("must-understand, status not understood");
    }
    if cc.as_ref().is_some_and(|cc| cc.no_store()) && !must_understand {
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
    // route says its cookies are shared. A response whose `private="Set-Cookie"` or
    // `no-cache="Set-Cookie"` keeps the cookie out (§5.2.2.7, §5.2.2.4) is stored without it.
    if resp.headers.contains_key(header::SET_COOKIE)
        && !policy.store_set_cookie
        && !withholds(cc.as_ref(), "set-cookie")
    {
        return uncacheable("set-cookie");
    }

    let initial_age = age::corrected_initial_age(resp, arrival);
    let explicit = match targeted_by {
        Some(_) => targeted::explicit_lifetime(cc.as_ref()),
        None => explicit_lifetime(cc.as_ref(), resp),
    };
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
        // A live playlist changes every target duration: never hold it longer than half. The
        // answer to a blocking reload (`_HLS_msn`, RFC 8216bis §6.2.5.2) lists the part it
        // waited for, which is all a later request for that part wants, for as long as the
        // playlist lists parts: three target durations.
        let cap = if is_blocking_reload(req) {
            policy.target_duration * 3
        } else {
            policy.target_duration / 2
        };
        Some(explicit.unwrap_or(Duration::MAX).min(cap))
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

    let (swr, sie) = if forbids_stale(cc.as_ref()) {
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
    // Age and freshness count from when the origin made the response (its epoch); the object
    // is created now. pingora serves a Vary variant only if it was created after its URL's
    // first (primary) variant: a variant that arrives already aged is still stored after it.
    let epoch = now.checked_sub(initial_age).unwrap_or(now);
    let fresh_until = if lifetime.is_zero() {
        // Already stale: pingora treats `fresh_until <= now` as needing revalidation.
        epoch
    } else {
        epoch
            .checked_add(lifetime)
            .unwrap_or(now + Duration::from_secs(365 * 24 * 3600))
    };
    let mut header = resp.clone();
    for h in CONNECTION_FIELDS {
        header.remove_header(h);
    }
    // `private="field"` and `no-cache="field"`: store the response without those fields.
    if let Some(cc) = cc.as_ref() {
        for name in withheld_names(cc) {
            if let Ok(n) = std::str::from_utf8(name) {
                header.remove_header(n);
            }
        }
    }
    header.remove_header("age");
    let mut meta = CacheMeta::new(fresh_until, now, swr, sie, header);
    if epoch != now {
        meta.set_epoch_override(epoch);
    }
    RespCacheable::Cacheable(meta)
}

/// The fields of `resp` its `private="…"` or `no-cache="…"` keep out of the stored copy, with
/// their values: the viewer whose request brought the response still gets them.
pub(crate) fn withheld_fields(
    policy: &CachePolicy,
    resp: &ResponseHeader,
) -> Vec<(header::HeaderName, header::HeaderValue)> {
    // The directives `decide` obeys: a targeted field's when there is one (RFC 9213).
    let Some(cc) = (policy.mode != CacheMode::Off)
        .then(|| targeted::select(&policy.targeted_fields, resp).cc)
        .flatten()
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for name in withheld_names(&cc) {
        let Ok(name) = header::HeaderName::from_bytes(name) else {
            continue;
        };
        for value in resp.headers.get_all(&name) {
            out.push((name.clone(), value.clone()));
        }
    }
    out
}

/// The field names `private="…"` and `no-cache="…"` keep out of the stored copy.
fn withheld_names(cc: &CacheControl) -> impl Iterator<Item = &[u8]> {
    [cc.private_field_names(), cc.no_cache_field_names()]
        .into_iter()
        .flatten()
        .flatten()
        .map(<[u8]>::trim_ascii)
}

/// Whether `private="…"` or `no-cache="…"` names the field `name` (lowercase): the response
/// is then stored without it.
fn withholds(cc: Option<&CacheControl>, name: &str) -> bool {
    cc.is_some_and(|cc| withheld_names(cc).any(|n| n.eq_ignore_ascii_case(name.as_bytes())))
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

/// RFC 9111 §3.2: fields a 304 does not update, as the stored response depends on them: they
/// describe the stored body (its length, coding and range, and the validator and digest that
/// name those exact bytes), which the 304 did not send. `Content-Type` is not among them: a 304
/// may correct it (§4.3.4).
const KEPT_ON_304: [&str; 5] = [
    "content-length",
    "content-encoding",
    "content-range",
    "etag",
    "content-md5",
];

/// Takes out of a 304 that revalidates a stored response the fields that must not replace the
/// stored ones, before anything merges it (pingora's own merge copies a 304's `ETag`).
pub(crate) fn strip_not_modified(not_modified: &mut ResponseHeader) {
    for name in KEPT_ON_304 {
        not_modified.remove_header(name);
    }
}

/// RFC 9111 §4.3.4 and §3.2: the stored header updated with every field of a 304, except
/// those describing the connection or the stored body.
pub(crate) fn merge_not_modified(
    stored: &ResponseHeader,
    not_modified: &ResponseHeader,
) -> ResponseHeader {
    let mut merged = stored.clone();
    apply_not_modified(&mut merged, not_modified);
    merged
}

/// Updates `resp` in place with the fields of a 304 (see [`merge_not_modified`]): also for the
/// viewer's copy of a revalidated response that is not stored again, so a 304's `Set-Cookie`
/// or `Content-Type` reaches the viewer like any other field.
pub(crate) fn apply_not_modified(resp: &mut ResponseHeader, not_modified: &ResponseHeader) {
    let names: Vec<header::HeaderName> = not_modified.headers.keys().cloned().collect();
    for name in names {
        if CONNECTION_FIELDS.contains(&name.as_str()) || KEPT_ON_304.contains(&name.as_str()) {
            continue;
        }
        resp.remove_header(&name);
        for value in not_modified.headers.get_all(&name) {
            let _ = resp.append_header(name.clone(), value.clone());
        }
    }
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
    let date = age::header_date(resp, header::DATE).unwrap_or_else(SystemTime::now);
    Some(expires_at.duration_since(date).unwrap_or(Duration::ZERO))
}

/// RFC 9111 §4.2.2: 10% of the time since Last-Modified, at most a day.
fn heuristic_lifetime(resp: &ResponseHeader) -> Option<Duration> {
    let last_modified = age::header_date(resp, header::LAST_MODIFIED)?;
    let date = age::header_date(resp, header::DATE).unwrap_or_else(SystemTime::now);
    let age = date.duration_since(last_modified).ok()?;
    Some((age / 10).min(Duration::from_secs(24 * 3600)))
}

/// What a request's own Cache-Control asks of a stored response (RFC 9111 §5.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestDemand {
    /// Use the cache normally.
    Normal,
    /// Revalidate before using a stored response (`no-cache`, `max-age=0`, Pragma: no-cache).
    Revalidate,
}

/// Whether a stale object may answer: `error` is `None` for stale-while-revalidate, else
/// what the revalidation met (stale-if-error).
pub(crate) fn serve_stale(error: Option<&Error>) -> bool {
    match error {
        // stale-while-revalidate: pingora has already checked the stored window, which
        // the policy closes for responses that forbid serving stale (`forbids_stale`).
        None => true,
        // stale-if-error: the origin is unreachable, timed out or answered 5xx.
        Some(e) => match e.etype() {
            ErrorType::HTTPStatus(code) => *code >= 500,
            _ => e.esource() == &ErrorSource::Upstream,
        },
    }
}

/// Reads the request's cache directives against the stored response's age.
pub(crate) fn request_demand(req: &RequestHeader, meta: &CacheMeta) -> RequestDemand {
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
            // Kept out of the stored copy by the origin: stored without it, opt-in or not.
            ("private=\"Set-Cookie\", max-age=60", false, true),
            ("no-cache=\"x-a, set-cookie\", max-age=60", false, true),
            ("private=\"x-user\", max-age=60", false, false),
        ];
        for (cc, opt_in, stored) in cases {
            let policy = CachePolicy {
                store_set_cookie: opt_in,
                ..CachePolicy::rfc_default()
            };
            let resp = response(&[("cache-control", cc), ("set-cookie", "sid=1")]);
            let got = match decide(&policy, &req, "/", &resp, now) {
                RespCacheable::Cacheable(meta) => {
                    let kept = meta.headers().get("set-cookie").is_some();
                    assert_eq!(kept, opt_in, "{cc}: the cookie stored");
                    true
                }
                RespCacheable::Uncacheable(_) => false,
            };
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

    /// The clock every row is decided at; the Date header says the same unless a row moves it.
    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn date(offset_secs: i64) -> String {
        let t = if offset_secs < 0 {
            now() - Duration::from_secs(offset_secs.unsigned_abs())
        } else {
            now() + Duration::from_secs(offset_secs as u64)
        };
        httpdate::fmt_http_date(t)
    }

    /// What `decide` should say about one response.
    #[derive(Debug)]
    enum Want {
        /// Stored: fresh for `fresh` from its creation, `age` old on arrival, with these
        /// serve-stale windows (seconds past `fresh_until`).
        Stored {
            fresh: u64,
            age: u64,
            swr: u32,
            sie: u32,
        },
        /// Not stored, for this reason.
        NotStored(NoCacheReason),
    }

    use NoCacheReason::{Custom, NeverEnabled, OriginNotCache};
    use Want::{NotStored, Stored};

    const fn stored(fresh: u64, age: u64, swr: u32, sie: u32) -> Want {
        Stored {
            fresh,
            age,
            swr,
            sie,
        }
    }

    /// One response, the route's policy and the request, and what `decide` must make of them.
    struct Row {
        name: &'static str,
        policy: CachePolicy,
        path: &'static str,
        /// The request's query (`?a=1`), after `path`.
        query: &'static str,
        request: Vec<(&'static str, String)>,
        status: u16,
        /// Response headers; `Date: now()` is added unless the row sets a Date itself.
        headers: Vec<(&'static str, String)>,
        want: Want,
    }

    fn row(name: &'static str, cc: &str, want: Want) -> Row {
        let headers = if cc.is_empty() {
            vec![]
        } else {
            vec![("cache-control", cc.to_string())]
        };
        Row {
            name,
            policy: CachePolicy::rfc_default(),
            path: "/a",
            query: "",
            request: vec![],
            status: 200,
            headers,
            want,
        }
    }

    impl Row {
        fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
            self.headers.push((name, value.into()));
            self
        }
        fn query(mut self, query: &'static str) -> Self {
            self.query = query;
            self
        }
        fn request(mut self, name: &'static str, value: &str) -> Self {
            self.request.push((name, value.to_string()));
            self
        }
        fn status(mut self, status: u16) -> Self {
            self.status = status;
            self
        }
        fn video(mut self, path: &'static str) -> Self {
            self.policy.mode = CacheMode::Video;
            self.path = path;
            self
        }
        fn policy(mut self, f: impl FnOnce(&mut CachePolicy)) -> Self {
            f(&mut self.policy);
            self
        }
    }

    fn rows() -> Vec<Row> {
        let s = Duration::from_secs;
        vec![
            // RFC 9111 §4.2.1: the explicit lifetime, s-maxage first for a shared cache.
            row("max-age", "max-age=60", stored(60, 0, 0, 0)),
            row(
                "s-maxage over max-age",
                "s-maxage=30, max-age=60",
                stored(30, 0, 0, 0),
            ),
            row("public max-age", "public, max-age=60", stored(60, 0, 0, 0)),
            row("Expires minus Date", "", stored(120, 0, 0, 0)).header("expires", date(120)),
            row("max-age over Expires", "max-age=10", stored(10, 0, 0, 0))
                .header("expires", date(120)),
            // RFC 9111 §5.3: an invalid Expires means already expired.
            row(
                "invalid Expires, no validator",
                "",
                NotStored(Custom("stale on arrival without validators")),
            )
            .header("expires", "0"),
            row("invalid Expires, with an ETag", "", stored(0, 0, 0, 0))
                .header("expires", "0")
                .header("etag", "\"v1\""),
            // RFC 9111 §4.2.3: the age it arrives with counts against its lifetime.
            row("Age header", "max-age=60", stored(60, 20, 0, 0)).header("age", "20"),
            // A Date names a whole second, so it ages a response a second less than it reads.
            row("Date in the past", "max-age=60", stored(60, 29, 0, 0)).header("date", date(-30)),
            row(
                "a Date a second back is not age",
                "max-age=60",
                stored(60, 0, 0, 0),
            )
            .header("date", date(-1)),
            row(
                "older than its lifetime, no validator",
                "max-age=60",
                NotStored(Custom("stale on arrival without validators")),
            )
            .header("age", "90"),
            row(
                "older than its lifetime, with Last-Modified",
                "max-age=60",
                stored(60, 90, 0, 0),
            )
            .header("age", "90")
            .header("last-modified", date(-3600)),
            // RFC 9111 §4.2.2: heuristic freshness, 10% since Last-Modified, at most a day.
            row("heuristic", "", stored(100, 0, 0, 0)).header("last-modified", date(-1000)),
            row("heuristic capped at a day", "", stored(86_400, 0, 0, 0))
                .header("last-modified", date(-30 * 86_400)),
            row(
                "no freshness information",
                "",
                NotStored(Custom("no freshness information")),
            ),
            row(
                "a 500 gets no heuristic",
                "",
                NotStored(Custom("no freshness information")),
            )
            .status(500)
            .header("last-modified", date(-1000)),
            // RFC 5861: serve-stale windows, from the response or the route's defaults.
            row(
                "windows from the response",
                "max-age=60, stale-while-revalidate=30, stale-if-error=600",
                stored(60, 0, 30, 600),
            ),
            row(
                "windows from the route",
                "max-age=60",
                stored(60, 0, 10, 60),
            )
            .policy(|p| {
                p.stale_while_revalidate = s(10);
                p.stale_if_error = s(60);
            }),
            row(
                "the response's window wins",
                "max-age=60, stale-while-revalidate=5",
                stored(60, 0, 5, 60),
            )
            .policy(|p| {
                p.stale_while_revalidate = s(10);
                p.stale_if_error = s(60);
            }),
            // RFC 9111 §4.2.4: must-revalidate and proxy-revalidate close both windows.
            row(
                "must-revalidate",
                "max-age=60, must-revalidate, stale-if-error=60",
                stored(60, 0, 0, 0),
            ),
            row(
                "proxy-revalidate",
                "max-age=60, proxy-revalidate, stale-while-revalidate=60",
                stored(60, 0, 0, 0),
            ),
            row(
                "must-revalidate over the route's windows",
                "max-age=60, must-revalidate",
                stored(60, 0, 0, 0),
            )
            .policy(|p| {
                p.stale_while_revalidate = s(10);
                p.stale_if_error = s(60);
            }),
            // RFC 9111 §5.2.2.10: s-maxage carries proxy-revalidate for a shared cache.
            row(
                "s-maxage",
                "s-maxage=60, stale-while-revalidate=30, stale-if-error=600",
                stored(60, 0, 0, 0),
            ),
            row(
                "s-maxage over the route's windows",
                "max-age=60, s-maxage=60",
                stored(60, 0, 0, 0),
            )
            .policy(|p| {
                p.stale_while_revalidate = s(10);
                p.stale_if_error = s(60);
            }),
            // RFC 9111 §5.2.2.3: must-understand, for statuses the cache understands only,
            // and for those it overrides no-store (§3).
            row(
                "must-understand, unknown status",
                "max-age=60, must-understand",
                NotStored(Custom("must-understand, status not understood")),
            )
            .status(299),
            row(
                "must-understand and no-store, unknown status",
                "max-age=60, must-understand, no-store",
                NotStored(Custom("must-understand, status not understood")),
            )
            .status(599),
            row(
                "must-understand overrides no-store",
                "max-age=60, must-understand, no-store",
                stored(60, 0, 0, 0),
            ),
            row(
                "must-understand, a 404",
                "max-age=60, must-understand",
                stored(60, 0, 0, 0),
            )
            .status(404),
            row(
                "unknown status, explicit freshness",
                "max-age=60",
                stored(60, 0, 0, 0),
            )
            .status(299),
            // RFC 9111 §5.2.2.4: no-cache is stored stale, for revalidation.
            row(
                "no-cache with an ETag",
                "no-cache, max-age=60",
                stored(0, 0, 0, 0),
            )
            .header("etag", "\"v1\""),
            row(
                "no-cache without a validator",
                "no-cache",
                NotStored(Custom("stale on arrival without validators")),
            ),
            // What is never stored.
            row(
                "no-store",
                "no-store, max-age=60",
                NotStored(OriginNotCache),
            ),
            row("private", "private, max-age=60", NotStored(OriginNotCache)),
            row(
                "private with field names",
                "private=\"x-user\", max-age=60",
                stored(60, 0, 0, 0),
            ),
            row("Vary: *", "max-age=60", NotStored(Custom("vary *"))).header("vary", "*"),
            row(
                "206",
                "max-age=60",
                NotStored(Custom("status not storable")),
            )
            .status(206),
            row(
                "304",
                "max-age=60",
                NotStored(Custom("status not storable")),
            )
            .status(304),
            row(
                "request no-store",
                "max-age=60",
                NotStored(Custom("request no-store")),
            )
            .request("cache-control", "no-store"),
            row(
                "authorized request",
                "max-age=60",
                NotStored(Custom("authorization")),
            )
            .request("authorization", "Bearer x"),
            row(
                "authorized request, public",
                "public, max-age=60",
                stored(60, 0, 0, 0),
            )
            .request("authorization", "Bearer x"),
            row(
                "authorized request, s-maxage",
                "s-maxage=60",
                stored(60, 0, 0, 0),
            )
            .request("authorization", "Bearer x"),
            row("mode off", "max-age=60", NotStored(NeverEnabled))
                .policy(|p| p.mode = CacheMode::Off),
            // Video: the defaults when the origin says nothing, and the caps when it does.
            row("segment, no headers", "", stored(86_400, 0, 0, 0)).video("/live/seg1.ts"),
            row(
                "segment, its own max-age",
                "max-age=60",
                stored(60, 0, 0, 0),
            )
            .video("/live/seg1.ts"),
            row("init segment, media_ttl", "", stored(3_600, 0, 0, 0))
                .video("/v/init.mp4")
                .policy(|p| p.media_ttl = s(3_600)),
            row("playlist, no headers", "", stored(1, 0, 0, 0)).video("/live/index.m3u8"),
            row(
                "playlist capped at half the target duration",
                "max-age=30",
                stored(3, 0, 0, 0),
            )
            .video("/live/index.m3u8")
            .policy(|p| p.target_duration = s(6)),
            row(
                "blocking reload's answer kept three target durations",
                "max-age=30",
                stored(18, 0, 0, 0),
            )
            .video("/live/index.m3u8")
            .query("?_HLS_msn=41&_HLS_part=2")
            .policy(|p| p.target_duration = s(6)),
            row(
                "blocking reload's answer, the origin's shorter max-age",
                "max-age=4",
                stored(4, 0, 0, 0),
            )
            .video("/live/index.m3u8")
            .query("?_HLS_msn=41")
            .policy(|p| p.target_duration = s(6)),
            row(
                "not a blocking reload: a parameter named like one",
                "max-age=30",
                stored(3, 0, 0, 0),
            )
            .video("/live/index.m3u8")
            .query("?x_HLS_msn=41")
            .policy(|p| p.target_duration = s(6)),
            row(
                "DASH manifest is a playlist",
                "max-age=30",
                stored(1, 0, 0, 0),
            )
            .video("/live/a.mpd"),
            row(
                "playlist, max-age=0",
                "max-age=0",
                NotStored(Custom("stale on arrival without validators")),
            )
            .video("/live/index.m3u8"),
            row(
                "missing segment capped at negative_ttl",
                "max-age=300",
                stored(1, 0, 0, 0),
            )
            .video("/live/seg2.ts")
            .status(404),
            row("failing segment, no headers", "", stored(1, 0, 0, 0))
                .video("/live/seg2.ts")
                .status(503),
            row(
                "missing segment, shorter max-age",
                "max-age=0",
                NotStored(Custom("stale on arrival without validators")),
            )
            .video("/live/seg2.ts")
            .status(404),
            row(
                "a page gets no video default",
                "",
                NotStored(Custom("no freshness information")),
            )
            .video("/index.html"),
            row(
                "a missing page is not negative-cached",
                "",
                NotStored(Custom("no freshness information")),
            )
            .video("/index.html")
            .status(404),
            row(
                "a 206 segment is still not storable",
                "",
                NotStored(Custom("status not storable")),
            )
            .video("/live/seg1.ts")
            .status(206),
        ]
    }

    /// Every row decided at `now()`, and the stored ones read back through pingora's own
    /// freshness checks at the edges of their windows: no sleeps, the clock is an argument.
    #[test]
    fn decide_table_lifetimes_ages_and_serve_stale_windows() {
        let rows = rows();
        for r in &rows {
            let target = format!("{}{}", r.path, r.query);
            let mut req = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
            for (n, v) in &r.request {
                req.insert_header(*n, v.as_str()).unwrap();
            }
            let mut resp = ResponseHeader::build(r.status, None).unwrap();
            if !r.headers.iter().any(|(n, _)| *n == "date") {
                resp.append_header("date", date(0)).unwrap();
            }
            for (n, v) in &r.headers {
                resp.append_header(*n, v.as_str()).unwrap();
            }
            let got = decide(&r.policy, &req, r.path, &resp, now());
            let name = r.name;
            match (&r.want, got) {
                (NotStored(want), RespCacheable::Uncacheable(got)) => {
                    assert_eq!(&got, want, "{name}")
                }
                (
                    &Stored {
                        fresh,
                        age,
                        swr,
                        sie,
                    },
                    RespCacheable::Cacheable(meta),
                ) => {
                    let epoch = now() - Duration::from_secs(age);
                    assert_eq!(meta.epoch(), epoch, "{name}: epoch");
                    assert_eq!(meta.created(), now(), "{name}: created");
                    assert_eq!(
                        meta.fresh_until(),
                        epoch + Duration::from_secs(fresh),
                        "{name}: fresh_until"
                    );
                    assert_eq!(meta.stale_while_revalidate_sec(), swr, "{name}: swr");
                    assert_eq!(meta.stale_if_error_sec(), sie, "{name}: sie");
                    let until = meta.fresh_until();
                    let after = |secs: u32| until + Duration::from_secs(secs.into());
                    let second = Duration::from_secs(1);
                    assert!(meta.is_fresh(until), "{name}: fresh at its end");
                    assert!(!meta.is_fresh(until + second), "{name}: stale after");
                    assert_eq!(
                        meta.serve_stale_while_revalidate(after(swr)),
                        swr > 0,
                        "{name}"
                    );
                    assert!(
                        !meta.serve_stale_while_revalidate(after(swr) + second),
                        "{name}"
                    );
                    assert_eq!(meta.serve_stale_if_error(after(sie)), sie > 0, "{name}");
                    assert!(!meta.serve_stale_if_error(after(sie) + second), "{name}");
                    // Never stored: the Age it arrived with and the connection's fields.
                    assert!(meta.headers().get("age").is_none(), "{name}");
                }
                (want, got) => panic!("{name}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn a_304_updates_every_field_but_those_the_stored_body_depends_on() {
        let stored = response(&[
            ("etag", "\"v1\""),
            ("content-md5", "stored"),
            ("content-type", "text/plain"),
            ("content-length", "18"),
            ("set-cookie", "a=b"),
            ("x-kept", "yes"),
        ]);
        let mut not_modified = ResponseHeader::build(304, None).unwrap();
        for (n, v) in [
            ("etag", "\"v2\""),
            ("content-md5", "new"),
            ("content-type", "text/plain;charset=utf-8"),
            ("content-length", "0"),
            ("set-cookie", "a=c"),
            ("set-cookie", "d=e"),
            ("connection", "close"),
            ("x-new", "1"),
        ] {
            not_modified.append_header(n, v).unwrap();
        }
        strip_not_modified(&mut not_modified);
        let merged = merge_not_modified(&stored, &not_modified);
        let values = |name: &str| -> Vec<&str> {
            merged
                .headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect()
        };
        assert_eq!(values("etag"), ["\"v1\""]);
        assert_eq!(values("content-md5"), ["stored"]);
        assert_eq!(values("content-length"), ["18"]);
        assert_eq!(values("content-type"), ["text/plain;charset=utf-8"]);
        assert_eq!(values("set-cookie"), ["a=c", "d=e"]);
        assert_eq!(values("x-kept"), ["yes"]);
        assert_eq!(values("x-new"), ["1"]);
        assert!(values("connection").is_empty());
        assert_eq!(merged.status, 200);
    }

    #[test]
    fn the_origins_directives_that_forbid_serving_stale() {
        let cases = [
            ("max-age=60", false),
            ("max-age=60, stale-if-error=60", false),
            ("max-age=60, must-revalidate", true),
            ("max-age=60, proxy-revalidate", true),
            ("s-maxage=60", true),
            ("no-cache", true),
            ("no-cache=\"set-cookie\", max-age=60", false),
            ("", false),
        ];
        for (cc, forbidden) in cases {
            let resp = if cc.is_empty() {
                response(&[])
            } else {
                response(&[("cache-control", cc)])
            };
            let meta = CacheMeta::new(now(), now(), 0, 0, resp);
            assert_eq!(
                CachePolicy::rfc_default().stale_forbidden(&meta),
                forbidden,
                "{cc:?}"
            );
        }
    }

    #[test]
    fn stored_headers_drop_connection_fields_and_named_private_fields() {
        let req = RequestHeader::build("GET", b"/a", None).unwrap();
        let resp = response(&[
            ("date", &date(0)),
            (
                "cache-control",
                "private=\"x-user\", no-cache=\"x-trace\", max-age=60",
            ),
            ("x-user", "alice"),
            ("x-trace", "1"),
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("age", "3"),
            ("x-kept", "yes"),
        ]);
        let RespCacheable::Cacheable(meta) =
            decide(&CachePolicy::rfc_default(), &req, "/a", &resp, now())
        else {
            panic!("not stored");
        };
        let h = meta.headers();
        for gone in ["x-user", "x-trace", "connection", "keep-alive", "age"] {
            assert!(h.get(gone).is_none(), "{gone} stored: {h:?}");
        }
        assert_eq!(h.get("x-kept").unwrap(), "yes");
    }

    /// RFC 9111 §5.1, §4.2.3, §1.2.2, as the HTTP cache test suite reads them: an Age that is
    /// not a non-negative integer is ignored, a list is read from its first member, parameters
    /// do not count, and a value too big to hold is 2^31 seconds.
    #[test]
    fn the_age_is_read_from_the_first_member_and_an_invalid_one_is_ignored() {
        let req = RequestHeader::build("GET", b"/a", None).unwrap();
        let policy = CachePolicy::rfc_default();
        // (Age lines, max-age, fresh when stored)
        let cases: &[(&[&str], &str, bool)] = &[
            (&["abc"], "max-age=3600", true),
            (&["-7200"], "max-age=3600", true),
            (&["7200.0"], "max-age=3600", true),
            (&["2147483647"], "max-age=3600", false),
            (&["2147483648"], "max-age=3600", false),
            (&["2147483649"], "max-age=3600", false),
            (&["7200, 0"], "max-age=3600", false),
            (&["0, 7200"], "max-age=3600", true),
            (&["7200", "0"], "max-age=3600", false),
            (&["0", "7200"], "max-age=3600", true),
            (&["0, 0"], "max-age=3600", true),
            (&["0", "0"], "max-age=3600", true),
            (&["3600", "3600"], "max-age=10000", true),
            (&["7200;foo=bar"], "max-age=3600", false),
            (&["7200;foo=111"], "max-age=3600", false),
            (&["30"], "max-age=3600", true),
        ];
        for (lines, cc, fresh) in cases {
            let mut resp = response(&[("date", &date(0)), ("cache-control", cc)]);
            for a in *lines {
                resp.append_header("age", *a).unwrap();
            }
            match decide(&policy, &req, "/a", &resp, now()) {
                RespCacheable::Cacheable(meta) => {
                    assert!(
                        *fresh,
                        "{lines:?}: stored fresh, should be stale on arrival"
                    );
                    assert!(meta.is_fresh(now()), "{lines:?}");
                }
                RespCacheable::Uncacheable(r) => {
                    assert!(!fresh, "{lines:?}: not stored ({r:?})");
                    assert_eq!(
                        r,
                        NoCacheReason::Custom("stale on arrival without validators"),
                        "{lines:?}"
                    );
                }
            }
        }
        // A valid Age within the lifetime ages the stored response.
        let mut resp = response(&[("date", &date(0)), ("cache-control", "max-age=3600")]);
        resp.append_header("age", "30").unwrap();
        let RespCacheable::Cacheable(meta) = decide(&policy, &req, "/a", &resp, now()) else {
            panic!("Age: 30 not stored");
        };
        assert_eq!(meta.epoch(), now() - Duration::from_secs(30));
        assert_eq!(meta.created(), now(), "stored now, aged 30 s");
    }

    /// RFC 9111 §4.2.3: the response delay is added to the Age a cache upstream stamped.
    #[test]
    fn the_response_delay_ages_a_response_that_carries_age() {
        let req = RequestHeader::build("GET", b"/a", None).unwrap();
        let policy = CachePolicy::rfc_default();
        let mut resp = response(&[("date", &date(0)), ("cache-control", "max-age=3600")]);
        resp.append_header("age", "30").unwrap();
        let arrival = Arrival {
            at: now(),
            response_delay: Duration::from_secs(2),
        };
        let RespCacheable::Cacheable(meta) = decide(&policy, &req, "/a", &resp, arrival) else {
            panic!("not stored");
        };
        assert_eq!(meta.epoch(), now() - Duration::from_secs(32));
    }
}
