//! CDN rules of RFC 9111 against a real origin: invalidation by Location (§4.4).

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
