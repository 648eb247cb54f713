//! RFC 9111 rules of issue 14: stale serving the origin forbade, updates from a 304, fields
//! named in `Connection`, and `must-understand`.

use crate::common;

use std::time::Duration;

use common::upstream::Script;
use common::{cached_edge, fetch, Upstream};

const BODY: &str = "the representation";

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_response_the_origin_forbade_serving_stale_is_a_504_when_the_origin_is_down() {
    // RFC 9111 §4.2.4, §5.2.2.2 (must-revalidate), §5.2.2.8 (proxy-revalidate), §5.2.2.4
    // (no-cache) and §5.2.2.10 (s-maxage carries proxy-revalidate): never served stale, even
    // inside a stale-if-error window, the response's own or the route's.
    let origin = Upstream::start("o").await;
    let forbidden = [
        ("/must", "max-age=1, must-revalidate, stale-if-error=60"),
        ("/proxy", "max-age=1, proxy-revalidate"),
        ("/no-cache", "no-cache, stale-if-error=60"),
        ("/shared", "s-maxage=1, stale-if-error=60"),
    ];
    for (path, cc) in forbidden {
        origin.script(
            path,
            Script::ok(&[("cache-control", cc), ("etag", "\"e1\"")], BODY),
        );
    }
    // The control: the route's window serves this one stale.
    origin.script(
        "/plain",
        Script::ok(&[("cache-control", "max-age=1")], BODY),
    );
    let edge = cached_edge(&origin, "stale_if_error = \"60s\"", "").await;
    for path in forbidden.iter().map(|(p, _)| *p).chain(["/plain"]) {
        let r = fetch(&edge.url(path), &[]).await;
        assert_eq!((r.status, r.cache()), (200, "MISS"), "{path}");
    }
    origin.kill();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let plain = fetch(&edge.url("/plain"), &[]).await;
    assert_eq!((plain.status, plain.cache()), (200, "STALE"));
    for (path, _) in forbidden {
        let r = fetch(&edge.url(path), &[]).await;
        assert_eq!(r.status, 504, "{path}: {} {:?}", r.cache(), r.body);
        assert_ne!(r.body, BODY, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_serving_is_decided_by_the_targeted_field_the_edge_obeys() {
    // RFC 9213 §2.1: a CDN-Cache-Control the edge obeys replaces Cache-Control for it, for
    // serving stale as for storing: its must-revalidate forbids it, and a Cache-Control
    // must-revalidate addressed to browsers does not. (Both have a validator, so that the
    // stale copy is still stored: one without any is dropped once its stale windows close.)
    let origin = Upstream::start("o").await;
    origin.script(
        "/cdn-forbids",
        Script::ok(
            &[
                ("cache-control", "max-age=1, stale-if-error=60"),
                ("cdn-cache-control", "max-age=1, must-revalidate"),
                ("etag", "\"e1\""),
            ],
            BODY,
        ),
    );
    origin.script(
        "/browser-forbids",
        Script::ok(
            &[
                ("cache-control", "max-age=1, must-revalidate"),
                ("cdn-cache-control", "max-age=1, stale-if-error=60"),
                ("etag", "\"e1\""),
            ],
            BODY,
        ),
    );
    let edge = cached_edge(&origin, "", "").await;
    for path in ["/cdn-forbids", "/browser-forbids"] {
        let r = fetch(&edge.url(path), &[]).await;
        assert_eq!((r.status, r.cache()), (200, "MISS"), "{path}");
        let r = fetch(&edge.url(path), &[]).await;
        assert_eq!(
            (r.status, r.cache()),
            (200, "HIT"),
            "{path} {:?}",
            r.headers
        );
    }
    origin.kill();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let forbidden = fetch(&edge.url("/cdn-forbids"), &[]).await;
    assert_eq!(forbidden.status, 504, "{:?}", forbidden.body);
    let allowed = fetch(&edge.url("/browser-forbids"), &[]).await;
    assert_eq!((allowed.status, allowed.cache()), (200, "STALE"));
    assert_eq!(allowed.body, BODY);
}

/// An origin whose `path` is fresh for a second, with `ETag: "v1"` and `headers`, and answers a
/// revalidation with a 304 carrying `not_modified` (and its own ETag, `"v1"`, unless
/// `not_modified` names another).
fn revalidated(
    origin: &Upstream,
    path: &str,
    headers: &[(&str, &str)],
    not_modified: &[(&str, &str)],
) {
    let mut all = vec![("cache-control", "max-age=1"), ("etag", "\"v1\"")];
    all.extend_from_slice(headers);
    let mut s = Script::ok(&all, BODY);
    s.not_modified_headers = not_modified
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    origin.script(path, s);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_304_updates_content_type_but_not_the_etag_or_content_md5() {
    // RFC 9111 §4.3.4 and §3.2: the 304's fields replace the stored ones, except those the
    // stored body depends on.
    let origin = Upstream::start("o").await;
    revalidated(
        &origin,
        "/u",
        &[
            ("content-type", "text/plain"),
            ("content-md5", "rL0Y20zC+Fzt72VPzMSk2A=="),
        ],
        &[
            ("cache-control", "max-age=60"),
            ("content-type", "text/plain;charset=utf-8"),
            ("content-md5", "N7UdGUp1E+RbVvZSTy1R8g=="),
            ("etag", "\"v2\""),
        ],
    );
    let edge = cached_edge(&origin, "", "").await;
    assert_eq!(fetch(&edge.url("/u"), &[]).await.cache(), "MISS");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let updated = fetch(&edge.url("/u"), &[]).await;
    assert_eq!(updated.cache(), "REVALIDATED");
    assert_eq!(origin.last().headers["if-none-match"], "\"v1\"");
    // What the viewer got from the 304, and then what was stored.
    let hit = fetch(&edge.url("/u"), &[]).await;
    assert_eq!(hit.cache(), "HIT");
    for r in [&updated, &hit] {
        assert_eq!(r.body, BODY);
        assert_eq!(r.header("content-type"), "text/plain;charset=utf-8");
        assert_eq!(r.header("etag"), "\"v1\"", "{:?}", r.headers);
        assert_eq!(r.header("content-md5"), "rL0Y20zC+Fzt72VPzMSk2A==");
    }
    assert_eq!(origin.hits_for("/u"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_304_carrying_set_cookie_is_handled_like_its_other_fields() {
    // RFC 9111 §4.3.4: the viewer gets the 304's Set-Cookie. A route that does not store
    // cookies (§7.3, our default) does not store it either; the 304 needs a stored response,
    // and so a conditional request, in the first place.
    let origin = Upstream::start("o").await;
    revalidated(
        &origin,
        "/s",
        &[],
        &[("cache-control", "max-age=60"), ("set-cookie", "a=c")],
    );
    let edge = cached_edge(&origin, "", "").await;
    assert_eq!(fetch(&edge.url("/s"), &[]).await.cache(), "MISS");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = fetch(&edge.url("/s"), &[]).await;
    assert_eq!(r.cache(), "REVALIDATED");
    assert_eq!(r.body, BODY);
    assert_eq!(r.header("set-cookie"), "a=c", "{:?}", r.headers);
    assert_eq!(origin.last().headers["if-none-match"], "\"v1\"");
    // Not stored: the next viewer goes to the origin again, and gets no cookie from the cache.
    revalidated(&origin, "/s", &[], &[("cache-control", "max-age=60")]);
    let r = fetch(&edge.url("/s"), &[]).await;
    assert_ne!(r.cache(), "HIT");
    assert_eq!(r.body, BODY);
    assert!(r.headers.get("set-cookie").is_none(), "{:?}", r.headers);
    assert_eq!(origin.hits_for("/s"), 3);

    // A route that stores cookies stores the 304's in place of the old one.
    let origin = Upstream::start("o").await;
    revalidated(
        &origin,
        "/s",
        &[("set-cookie", "a=b")],
        &[("cache-control", "max-age=60"), ("set-cookie", "a=c")],
    );
    let edge = cached_edge(&origin, "store_set_cookie = true", "").await;
    assert_eq!(
        fetch(&edge.url("/s"), &[]).await.header("set-cookie"),
        "a=b"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = fetch(&edge.url("/s"), &[]).await;
    assert_eq!(r.cache(), "REVALIDATED");
    let hit = fetch(&edge.url("/s"), &[]).await;
    assert_eq!(hit.cache(), "HIT");
    for r in [&r, &hit] {
        let cookies: Vec<_> = r.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=c"], "{:?}", r.headers);
    }
    assert_eq!(origin.hits_for("/s"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn fields_named_in_connection_are_neither_stored_nor_sent_on() {
    // RFC 9110 §7.6.1, RFC 9111 §3.1.
    let origin = Upstream::start("o").await;
    origin.script(
        "/c",
        Script::ok(
            &[
                ("cache-control", "max-age=60"),
                ("connection", "x-hop, x-other-hop"),
                ("x-hop", "1"),
                ("x-other-hop", "2"),
                ("x-end", "3"),
            ],
            BODY,
        ),
    );
    let edge = cached_edge(&origin, "", "").await;
    let miss = fetch(&edge.url("/c"), &[]).await;
    let hit = fetch(&edge.url("/c"), &[]).await;
    assert_eq!((miss.cache(), hit.cache()), ("MISS", "HIT"));
    for r in [&miss, &hit] {
        assert_eq!(r.body, BODY);
        assert_eq!(r.header("x-end"), "3");
        for gone in ["x-hop", "x-other-hop"] {
            assert!(r.headers.get(gone).is_none(), "{gone}: {:?}", r.headers);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn must_understand_stores_only_statuses_the_cache_understands() {
    // RFC 9111 §5.2.2.3 and §3: with must-understand, a status the cache does not understand
    // is not stored, and for one it does, no-store gives way.
    let origin = Upstream::start("o").await;
    origin.script(
        "/unknown",
        Script::ok(&[("cache-control", "max-age=3600, must-understand")], BODY).status(299),
    );
    origin.script(
        "/known",
        Script::ok(
            &[("cache-control", "max-age=3600, must-understand, no-store")],
            BODY,
        ),
    );
    let edge = cached_edge(&origin, "", "").await;
    for _ in 0..2 {
        let r = fetch(&edge.url("/unknown"), &[]).await;
        assert_eq!((r.status, r.body.as_ref()), (299, BODY.as_bytes()));
        assert_eq!(fetch(&edge.url("/known"), &[]).await.body, BODY);
    }
    assert_eq!(origin.hits_for("/unknown"), 2);
    assert_eq!(origin.hits_for("/known"), 1);
    assert_eq!(fetch(&edge.url("/known"), &[]).await.cache(), "HIT");
}
