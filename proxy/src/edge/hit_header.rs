//! A fresh hit's response header, kept with its stored object in HTTP/1.1 wire form.
//!
//! On a hit pingora copies the stored header, [`viewer_headers`] edits the copy and pingora's
//! HTTP/1 writer serialises it field by field: about a third of the user-space work of a 1 KB
//! hit. For the common hit (a GET over HTTP/1.1 for the whole of a fresh, complete object)
//! the result is the same on every hit but for `Age` and `Connection`. The first such hit
//! keeps its bytes with the object; the next ones are sent them, with their own `Age` and
//! `Connection` added by pingora (`ProxyHttp::cache_hit_wire_header`, a change to our copy of
//! pingora-proxy). The bytes are kept for the route that served them: after a reload that
//! replaces the route (its `response_headers`, its targeted fields), the next hit builds them
//! again. Any other hit (HEAD, a range, a conditional request, HTTP/1.0, a stale or partial
//! object, HTTP/2) takes pingora's usual way.

use std::sync::Arc;

use bytes::BytesMut;
use http::header::{
    AGE, CONNECTION, CONTENT_LENGTH, DATE, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE,
    IF_UNMODIFIED_SINCE, RANGE, TRANSFER_ENCODING,
};
use http::{HeaderMap, Method, Version};
use pingora_core::protocols::http::v1::server::http_resp_header_to_buf;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{range_header_filter, Session, WireHeader};

use super::{viewer_headers, RequestCtx};
use crate::active::Route;
use crate::cache::kept_header::Wire;
use crate::cache::store;
use crate::cache::CacheStatus;

/// Request fields that make pingora answer other than with the whole stored response.
const CHANGES_THE_ANSWER: [http::HeaderName; 6] = [
    RANGE,
    IF_NONE_MATCH,
    IF_MODIFIED_SINCE,
    IF_MATCH,
    IF_UNMODIFIED_SINCE,
    IF_RANGE,
];

/// The header to send for this request's hit as it is, or `None` when the hit must take
/// pingora's usual way. Sets what `response_filter` would have set in `ctx`.
pub(super) fn for_hit(session: &mut Session, ctx: &mut RequestCtx) -> Option<WireHeader> {
    let req = session.req_header();
    if req.version != Version::HTTP_11
        || req.method != Method::GET
        // One pass over the few fields a request has, not six hashed lookups.
        || req.headers.keys().any(|name| CHANGES_THE_ANSWER.contains(name))
        || session.ignore_downstream_range
        || ctx.fill.is_some()
        || !ctx.withheld.is_empty()
        || CacheStatus::of_request(&session.cache, ctx.started_fill) != CacheStatus::Hit
    {
        return None;
    }
    let object = store::stored_object(session.cache.hit_handler())?;
    let route = ctx.route.as_ref();
    let wire = match object.hit_header.get(route) {
        Some(known) => known?,
        None => {
            // Kept either way: a header that cannot be kept is not tried again on every hit.
            let wire = build(object.header, object.body_len, route);
            object.hit_header.keep(route, wire.clone());
            wire?
        }
    };
    ctx.cache_status = CacheStatus::Hit;
    Some(WireHeader {
        status: wire.status,
        content_length: wire.content_length,
        head: wire.head,
    })
}

/// What pingora's hit path makes of `stored` for a plain GET over HTTP/1.1, in wire form, but
/// for `Age` and `Connection`; `None` for a header that cannot be kept so (no `Date` or no
/// exact `Content-Length`, a status without a body, or a route that sets a field pingora
/// writes per response).
pub(crate) fn build(
    stored: &ResponseHeader,
    body_len: usize,
    route: Option<&Arc<Route>>,
) -> Option<Wire> {
    let status = stored.status;
    if status.is_informational() || matches!(status.as_u16(), 204 | 304) {
        return None;
    }
    if !keeps_framing(&stored.headers, body_len) {
        return None;
    }
    let mut resp = stored.clone();
    // As pingora's `cache_hit_header` does, but for `Age`, which each hit writes.
    resp.set_version(Version::HTTP_11);
    resp.remove_header(&AGE);
    // `Accept-Ranges`, as pingora's range filter gives a whole response that could be ranged.
    let plain_get = RequestHeader::build(Method::GET, b"/", None).ok()?;
    range_header_filter(&plain_get, &mut resp, None);
    let spec = route.map(|r| &r.spec);
    viewer_headers(
        &mut resp,
        Version::HTTP_11,
        CacheStatus::Hit,
        Vec::new(),
        spec,
    )
    .ok()?;
    let h = &resp.headers;
    if h.contains_key(AGE) || h.contains_key(CONNECTION) || !keeps_framing(h, body_len) {
        return None;
    }
    let mut buf = BytesMut::with_capacity(512);
    http_resp_header_to_buf(&resp, &mut buf).ok()?;
    // The blank line that ends the header: pingora writes it after `Age` and `Connection`.
    buf.truncate(buf.len().checked_sub(2)?);
    Some(Wire {
        status,
        content_length: body_len,
        head: buf.freeze(),
    })
}

/// Whether `headers` carry a `Date` and frame exactly `body_len` bytes with one
/// `Content-Length` and no `Transfer-Encoding`.
fn keeps_framing(headers: &HeaderMap, body_len: usize) -> bool {
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    let length = match (lengths.next(), lengths.next()) {
        (Some(v), None) => v.to_str().ok().and_then(|v| v.parse::<usize>().ok()),
        _ => None,
    };
    length == Some(body_len)
        && headers.contains_key(DATE)
        && !headers.contains_key(TRANSFER_ENCODING)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(fields: &[(&str, &str)]) -> ResponseHeader {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for (name, value) in fields {
            resp.append_header(name.to_string(), *value).unwrap();
        }
        resp
    }

    const DATE_VALUE: &str = "Wed, 02 Dec 2026 20:00:00 GMT";

    #[test]
    fn a_stored_header_is_kept_as_a_hit_sends_it_less_age_and_connection() {
        let resp = stored(&[
            ("Content-Type", "application/vnd.apple.mpegurl"),
            ("Content-Length", "5"),
            ("Date", DATE_VALUE),
            ("Age", "7"),
            ("Cache-Control", "max-age=1"),
        ]);
        let kept = build(&resp, 5, None).unwrap();
        let head = std::str::from_utf8(&kept.head).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.ends_with("\r\n") && !head.ends_with("\r\n\r\n"),
            "{head}"
        );
        let via = format!("via: 1.1 {}\r\n", crate::forwarding::VIA_NAME);
        for line in [
            "Content-Type: application/vnd.apple.mpegurl\r\n",
            "Content-Length: 5\r\n",
            "Cache-Control: max-age=1\r\n",
            &via,
            "x-cache-status: HIT\r\n",
            "Accept-Ranges: bytes\r\n",
        ] {
            assert!(head.contains(line), "{line:?} missing from {head}");
        }
        assert!(head.contains(&format!("Date: {DATE_VALUE}\r\n")), "{head}");
        assert!(!head.to_ascii_lowercase().contains("\r\nage:"), "{head}");
        assert!(!head.to_ascii_lowercase().contains("connection:"), "{head}");
        assert_eq!(kept.content_length, 5);
    }

    #[test]
    fn a_header_that_does_not_frame_its_body_exactly_is_not_kept() {
        let with = |fields: &[(&str, &str)], len| build(&stored(fields), len, None).is_some();
        assert!(with(&[("Content-Length", "5"), ("Date", DATE_VALUE)], 5));
        assert!(!with(&[("Content-Length", "5"), ("Date", DATE_VALUE)], 6));
        assert!(!with(&[("Content-Length", "5")], 5), "no Date");
        assert!(!with(&[("Date", DATE_VALUE)], 5), "no Content-Length");
        assert!(
            !with(
                &[
                    ("Content-Length", "5"),
                    ("Content-Length", "5"),
                    ("Date", DATE_VALUE)
                ],
                5
            ),
            "two Content-Lengths"
        );
        let mut no_content = stored(&[("Content-Length", "0"), ("Date", DATE_VALUE)]);
        no_content.set_status(204).unwrap();
        assert!(build(&no_content, 0, None).is_none());
    }
}
