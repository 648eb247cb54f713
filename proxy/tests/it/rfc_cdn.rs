//! CDN rules against a real origin: RFC 9111 §4.4 and §7.3, RFC 9213 targeted cache control.

use crate::common;

use common::upstream::Script;
use common::{cached_edge, client, fetch, fetch_with, EdgeProc, Upstream};
use serde_json::Value;

const BODY: &str = "the representation";

const TOKEN: &str = "0123456789abcdef-cdn-token";

/// An edge whose admin API answers lookups, with the given `[routes.cache]` lines.
async fn edge_with_lookup(origin: &Upstream, route_cache: &str) -> EdgeProc {
    cached_edge(
        origin,
        route_cache,
        &format!("[admin]\ntoken = \"{TOKEN}\"\n"),
    )
    .await
}

/// The lookup API's view of the one object stored for `path`.
async fn stored(edge: &EdgeProc, path: &str) -> Value {
    let r = client()
        .get(edge.admin_url("/cache/lookup"))
        .query(&[("url", format!("{}{path}", edge.http))])
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let l: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(l["cached"], true, "{path}: {l:#}");
    l["objects"][0].clone()
}

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

#[tokio::test(flavor = "multi_thread")]
async fn cdn_cache_control_sets_the_edges_freshness_and_viewers_keep_cache_control() {
    // RFC 9213: "keep this a day at the edge, browsers a minute". The edge obeys
    // CDN-Cache-Control and ignores Cache-Control for itself; the viewer gets the origin's
    // Cache-Control and never the field addressed to the CDN.
    let origin = Upstream::start("o").await;
    let day = [
        ("cache-control", "max-age=60"),
        ("cdn-cache-control", "max-age=86400"),
    ];
    origin.script("/day", Script::ok(&day, BODY));
    // Already two minutes old: stale by Cache-Control, fresh by CDN-Cache-Control.
    let aged = [day[0], day[1], ("age", "120")];
    origin.script("/aged", Script::ok(&aged, BODY));
    let edge = edge_with_lookup(&origin, "").await;
    for path in ["/day", "/aged"] {
        let miss = fetch(&edge.url(path), &[]).await;
        let hit = fetch(&edge.url(path), &[]).await;
        assert_eq!((miss.cache(), hit.cache()), ("MISS", "HIT"), "{path}");
        for r in [&miss, &hit] {
            assert_eq!(r.body, BODY);
            assert_eq!(
                r.header("cache-control"),
                "max-age=60",
                "{path}: {:?}",
                r.headers
            );
            assert!(
                r.headers.get("cdn-cache-control").is_none(),
                "{path}: {:?}",
                r.headers
            );
        }
        assert_eq!(origin.hits_for(path), 1, "{path}");
        let o = stored(&edge, path).await;
        assert_eq!(o["ttl_seconds"], 86_400, "{path}: {o:#}");
        assert_eq!(o["state"], "fresh", "{path}: {o:#}");
    }
    let aged = fetch(&edge.url("/aged"), &[]).await;
    let age: u64 = aged.header("age").parse().expect("Age on a hit");
    assert!(age >= 120, "age {age}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_targeted_no_store_wins_over_a_cache_control_that_allows_storing() {
    // RFC 9213 §2.1 and the Edge Architecture's Surrogate-Control: the targeted field decides
    // for the edge, however long Cache-Control says browsers may keep the response.
    let origin = Upstream::start("o").await;
    let cc = ("cache-control", "public, max-age=600");
    origin.script(
        "/cdn-no-store",
        Script::ok(&[cc, ("cdn-cache-control", "no-store")], BODY),
    );
    origin.script(
        "/surrogate-no-store",
        Script::ok(&[cc, ("surrogate-control", "no-store")], BODY),
    );
    // And the other way round: Cache-Control forbids, the edge's own field allows.
    origin.script(
        "/surrogate-day",
        Script::ok(
            &[
                ("cache-control", "no-store"),
                ("surrogate-control", "max-age=86400"),
            ],
            BODY,
        ),
    );
    let edge = edge_with_lookup(&origin, "").await;
    for path in ["/cdn-no-store", "/surrogate-no-store", "/surrogate-day"] {
        for _ in 0..2 {
            let r = fetch(&edge.url(path), &[]).await;
            assert_eq!(
                (r.status, r.body.as_ref()),
                (200, BODY.as_bytes()),
                "{path}"
            );
            for gone in ["cdn-cache-control", "surrogate-control"] {
                assert!(r.headers.get(gone).is_none(), "{path}: {:?}", r.headers);
            }
        }
    }
    assert_eq!(origin.hits_for("/cdn-no-store"), 2);
    assert_eq!(origin.hits_for("/surrogate-no-store"), 2);
    assert_eq!(origin.hits_for("/surrogate-day"), 1);
    let o = stored(&edge, "/surrogate-day").await;
    assert_eq!(o["ttl_seconds"], 86_400, "{o:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_routes_own_targeted_field_wins_over_cdn_cache_control() {
    // RFC 9213 §2.1: the first field in the cache's own order that is present and valid wins.
    let origin = Upstream::start("o").await;
    let cc = ("cache-control", "max-age=60");
    origin.script(
        "/ours-long",
        Script::ok(
            &[
                cc,
                ("cdn-cache-control", "no-store"),
                ("dime-cache-control", "max-age=600"),
            ],
            BODY,
        ),
    );
    origin.script(
        "/ours-no-store",
        Script::ok(
            &[
                cc,
                ("cdn-cache-control", "max-age=600"),
                ("dime-cache-control", "no-store"),
            ],
            BODY,
        ),
    );
    // Only CDN-Cache-Control: the next field in the route's list.
    origin.script(
        "/cdn-only",
        Script::ok(&[cc, ("cdn-cache-control", "max-age=900")], BODY),
    );
    let fields = "targeted_fields = [\"Dime-Cache-Control\", \"CDN-Cache-Control\"]";
    let edge = edge_with_lookup(&origin, fields).await;
    for path in ["/ours-long", "/ours-no-store", "/cdn-only"] {
        for _ in 0..2 {
            let r = fetch(&edge.url(path), &[]).await;
            assert_eq!(r.header("cache-control"), "max-age=60", "{path}");
            for gone in ["cdn-cache-control", "dime-cache-control"] {
                assert!(r.headers.get(gone).is_none(), "{path}: {:?}", r.headers);
            }
        }
    }
    assert_eq!(origin.hits_for("/ours-long"), 1);
    assert_eq!(origin.hits_for("/ours-no-store"), 2);
    assert_eq!(origin.hits_for("/cdn-only"), 1);
    assert_eq!(stored(&edge, "/ours-long").await["ttl_seconds"], 600);
    assert_eq!(stored(&edge, "/cdn-only").await["ttl_seconds"], 900);
}

#[tokio::test(flavor = "multi_thread")]
async fn strip_targeted_false_passes_cdn_cache_control_on() {
    // RFC 9213 lets CDN-Cache-Control reach another CDN further down: on request, the edge
    // obeys it and passes it on.
    let origin = Upstream::start("o").await;
    origin.script(
        "/a",
        Script::ok(
            &[
                ("cache-control", "max-age=60"),
                ("cdn-cache-control", "max-age=86400"),
            ],
            BODY,
        ),
    );
    let edge = edge_with_lookup(&origin, "strip_targeted = false").await;
    let miss = fetch(&edge.url("/a"), &[]).await;
    let hit = fetch(&edge.url("/a"), &[]).await;
    assert_eq!(hit.cache(), "HIT");
    for r in [&miss, &hit] {
        assert_eq!(r.header("cdn-cache-control"), "max-age=86400");
        assert_eq!(r.header("cache-control"), "max-age=60");
    }
    assert_eq!(stored(&edge, "/a").await["ttl_seconds"], 86_400);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_video_route_still_caps_live_playlists_whatever_cdn_cache_control_says() {
    // The video policy's cap on live playlists (half the target duration) applies to the
    // lifetime the targeted field gives, as it does to Cache-Control's.
    let origin = Upstream::start("o").await;
    origin.script(
        "/live/index.m3u8",
        Script::ok(&[("cdn-cache-control", "max-age=86400")], "#EXTM3U\n"),
    );
    let edge = edge_with_lookup(&origin, "mode = \"video\"\ntarget_duration = \"4s\"").await;
    let r = fetch(&edge.url("/live/index.m3u8"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.headers.get("cdn-cache-control").is_none(),
        "{:?}",
        r.headers
    );
    assert_eq!(stored(&edge, "/live/index.m3u8").await["ttl_seconds"], 2);
}

#[test]
fn targeted_fields_are_checked_when_the_config_compiles() {
    let text = |fields: &str| {
        format!(
            "[listen]\nhttp = [\"127.0.0.1:18080\"]\n\n[pools.web]\nbackends = [\"127.0.0.1:18083\"]\n\n\
             [[routes]]\npath = \"/\"\npool = \"web\"\n\n[routes.cache]\ntargeted_fields = {fields}\n"
        )
    };
    let errors = |fields: &str| match dime_edge::config::compile("edge.toml", &text(fields)) {
        Ok(_) => panic!("{fields}: compiled"),
        Err(e) => e.to_string(),
    };
    let e = errors("[\"CDN Cache Control\", \"Cache-Control\", \"X-Ours\", \"x-ours\"]");
    for wanted in [
        "routes[0].cache.targeted_fields",
        "\"CDN Cache Control\" is not a field name",
        "\"Cache-Control\" is what targeted fields take precedence over",
        "\"x-ours\" is listed twice",
    ] {
        assert!(e.contains(wanted), "expected `{wanted}` in:\n{e}");
    }
    // An empty list is allowed: Cache-Control alone, as RFC 9111 has it.
    dime_edge::config::compile("edge.toml", &text("[]")).expect("[] compiles");
    // `check --dump` shows the fields as the edge compiled them, and the defaults.
    let ours = text("[\"Dime-Cache-Control\", \"CDN-Cache-Control\"]\nstrip_targeted = false");
    let dump =
        dime_edge::config::dump::dump(&dime_edge::config::compile("edge.toml", &ours).unwrap());
    for wanted in [
        "targeted_fields = [\"dime-cache-control\", \"cdn-cache-control\"]",
        "strip_targeted = false",
    ] {
        assert!(dump.contains(wanted), "expected `{wanted}` in:\n{dump}");
    }
    let default =
        text("[\"CDN-Cache-Control\"]").replace("targeted_fields = [\"CDN-Cache-Control\"]\n", "");
    let dump =
        dime_edge::config::dump::dump(&dime_edge::config::compile("edge.toml", &default).unwrap());
    for wanted in [
        "targeted_fields = [\"cdn-cache-control\", \"surrogate-control\"]",
        "strip_targeted = true",
    ] {
        assert!(dump.contains(wanted), "expected `{wanted}` in:\n{dump}");
    }
}
