//! RFC 9111 for a CDN, against a real origin: invalidation by Location (§4.4), Set-Cookie (§7.3).

use crate::common;

use common::upstream::Script;
use common::{cached_edge, fetch, fetch_with, Upstream};

const BODY: &str = "the representation";

#[tokio::test(flavor = "multi_thread")]
async fn every_unsafe_method_invalidates_the_location_and_content_location_it_answers_with() {
    // RFC 9111 §4.4, as the HTTP cache conformance suite checks it: PUT, DELETE and a method
    // the edge does not know (M-SEARCH) invalidate their target and the path-absolute
    // Location and Content-Location of a 2xx answer; a 5xx answer invalidates nothing.
    let origin = Upstream::start("o").await;
    let cc = ("cache-control", "max-age=100000");
    for path in ["/t/location", "/t/content-location"] {
        origin.script(path, Script::ok(&[cc], BODY));
    }
    let named = [
        ("location", "/t/location"),
        ("content-location", "/t/content-location"),
    ];
    origin.script("/t/form", Script::ok(&named, BODY));
    origin.script("/t/failed", Script::ok(&named, BODY).status(500));
    let edge = cached_edge(&origin, "", "").await;
    let warm = || async {
        for path in ["/t/location", "/t/content-location"] {
            fetch(&edge.url(path), &[]).await;
            assert_eq!(fetch(&edge.url(path), &[]).await.cache(), "HIT", "{path}");
        }
    };
    for method in ["PUT", "DELETE", "M-SEARCH"] {
        warm().await;
        let failed = fetch_with(method, &edge.url("/t/failed"), &[]).await;
        assert_eq!(failed.status, 500, "{method}");
        for path in ["/t/location", "/t/content-location"] {
            let r = fetch(&edge.url(path), &[]).await;
            assert_eq!(r.cache(), "HIT", "{method} answered 500: {path}");
        }
        let done = fetch_with(method, &edge.url("/t/form"), &[]).await;
        assert_eq!(done.status, 200, "{method}");
        for path in ["/t/location", "/t/content-location"] {
            let r = fetch(&edge.url(path), &[]).await;
            assert_eq!(r.cache(), "MISS", "{method}: {path}");
        }
    }
    let methods: Vec<String> = origin.seen().iter().map(|s| s.method.clone()).collect();
    assert!(methods.iter().any(|m| m == "M-SEARCH"), "{methods:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_response_that_keeps_its_cookie_out_of_caches_is_stored_without_it() {
    // RFC 9111 §5.2.2.7 and §5.2.2.4: `private="Set-Cookie"` and `no-cache="Set-Cookie"` let a
    // shared cache store the response, never the cookie. Nothing of one viewer's session is
    // replayed, so the safe default (no Set-Cookie stored) holds without the route's opt-in.
    let origin = Upstream::start("o").await;
    let named = [
        ("/private", "max-age=60, private=\"Set-Cookie\""),
        ("/no-cache", "max-age=60, no-cache=\"X-Trace, set-cookie\""),
    ];
    for (path, cc) in named {
        origin.script(
            path,
            Script::ok(
                &[("cache-control", cc), ("set-cookie", "sid=viewer-1")],
                BODY,
            ),
        );
    }
    origin.script(
        "/plain",
        Script::ok(
            &[
                ("cache-control", "max-age=60"),
                ("set-cookie", "sid=viewer-1"),
            ],
            BODY,
        ),
    );
    let edge = cached_edge(&origin, "", "").await;
    for (path, _) in named {
        let first = fetch(&edge.url(path), &[]).await;
        assert_eq!(first.cache(), "MISS", "{path}");
        assert_eq!(
            first.header("set-cookie"),
            "sid=viewer-1",
            "{path}: its own cookie"
        );
        let second = fetch(&edge.url(path), &[]).await;
        assert_eq!((second.status, second.cache()), (200, "HIT"), "{path}");
        assert_eq!(second.body, BODY);
        assert!(
            second.headers.get("set-cookie").is_none(),
            "{path}: another viewer's cookie replayed: {:?}",
            second.headers
        );
        assert_eq!(origin.hits_for(path), 1, "{path}");
    }
    // A cookie the origin says nothing about still keeps the response out.
    for _ in 0..2 {
        let r = fetch(&edge.url("/plain"), &[]).await;
        assert_eq!(r.header("set-cookie"), "sid=viewer-1");
    }
    assert_eq!(origin.hits_for("/plain"), 2);
}
