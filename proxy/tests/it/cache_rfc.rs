//! HTTP caching semantics, clause by clause (RFC 9111, RFC 9110), against a real origin.

use crate::common;

use std::time::Duration;

use common::upstream::Script;
use common::{cached_edge, fetch, fetch_with, Upstream};

const BODY: &str = "the representation";

async fn setup(path: &str, headers: &[(&str, &str)]) -> (Upstream, common::EdgeProc) {
    let origin = Upstream::start("o").await;
    origin.script(path, Script::ok(headers, BODY));
    let edge = cached_edge(&origin, "", "").await;
    (origin, edge)
}

/// Asks twice; returns the origin's request count for `path`.
async fn twice(
    edge: &common::EdgeProc,
    origin: &Upstream,
    path: &str,
    headers: &[(&str, &str)],
) -> usize {
    for _ in 0..2 {
        let r = fetch(&edge.url(path), headers).await;
        assert_eq!(r.body, BODY, "{path}");
    }
    origin.hits_for(path)
}

#[tokio::test(flavor = "multi_thread")]
async fn max_age_response_is_stored_and_served_with_age() {
    // RFC 9111 §3, §4.2.1, §5.1: stored, served fresh, with an Age header.
    let (origin, edge) = setup("/a", &[("cache-control", "max-age=60")]).await;
    let first = fetch(&edge.url("/a"), &[]).await;
    assert_eq!(first.cache(), "MISS");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = fetch(&edge.url("/a"), &[]).await;
    assert_eq!(second.cache(), "HIT");
    assert_eq!(second.body, BODY);
    let age: u64 = second.header("age").parse().expect("Age on a hit");
    assert!((1..=2).contains(&age), "age {age}");
    assert_eq!(origin.hits_for("/a"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_store_is_never_stored() {
    // RFC 9111 §5.2.2.5.
    let (origin, edge) = setup("/n", &[("cache-control", "no-store, max-age=60")]).await;
    assert_eq!(twice(&edge, &origin, "/n", &[]).await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn private_is_not_stored_by_a_shared_cache() {
    // RFC 9111 §5.2.2.7.
    let (origin, edge) = setup("/p", &[("cache-control", "private, max-age=60")]).await;
    assert_eq!(twice(&edge, &origin, "/p", &[]).await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn s_maxage_wins_over_max_age_in_a_shared_cache() {
    // RFC 9111 §5.2.2.10.
    let (origin, edge) = setup("/s", &[("cache-control", "max-age=0, s-maxage=60")]).await;
    assert_eq!(twice(&edge, &origin, "/s", &[]).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn expires_without_cache_control_gives_freshness() {
    // RFC 9111 §5.3.
    let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(120));
    let (origin, edge) = setup("/e", &[("expires", &later)]).await;
    assert_eq!(twice(&edge, &origin, "/e", &[]).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_expires_means_already_expired() {
    // RFC 9111 §5.3: "0" is not a date, so the response is stale at once.
    let (origin, edge) = setup("/ie", &[("expires", "0")]).await;
    assert_eq!(twice(&edge, &origin, "/ie", &[]).await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn heuristic_freshness_needs_last_modified() {
    // RFC 9111 §4.2.2: without explicit freshness, 10% of the Last-Modified age.
    let old = httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(3600));
    let (origin, edge) = setup("/h", &[("last-modified", &old)]).await;
    assert_eq!(twice(&edge, &origin, "/h", &[]).await, 1);
    // With nothing to go on, nothing is stored.
    origin.script("/bare", Script::ok(&[], BODY));
    assert_eq!(twice(&edge, &origin, "/bare", &[]).await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_302_is_stored_only_with_explicit_freshness() {
    // RFC 9110 §15.4.3: not heuristically cacheable.
    let origin = Upstream::start("o").await;
    let old = httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(3600));
    origin.script(
        "/r",
        Script::ok(&[("location", "/x"), ("last-modified", &old)], BODY).status(302),
    );
    origin.script(
        "/r2",
        Script::ok(&[("location", "/x"), ("cache-control", "max-age=60")], BODY).status(302),
    );
    let edge = cached_edge(&origin, "", "").await;
    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for _ in 0..2 {
        no_redirects.get(edge.url("/r")).send().await.unwrap();
        no_redirects.get(edge.url("/r2")).send().await.unwrap();
    }
    assert_eq!(origin.hits_for("/r"), 2);
    assert_eq!(origin.hits_for("/r2"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn authorized_requests_are_shared_only_when_the_origin_says_so() {
    // RFC 9111 §3.5.
    let origin = Upstream::start("o").await;
    origin.script(
        "/auth",
        Script::ok(&[("cache-control", "max-age=60")], BODY),
    );
    origin.script(
        "/auth-public",
        Script::ok(&[("cache-control", "public, max-age=60")], BODY),
    );
    let edge = cached_edge(&origin, "", "").await;
    let auth = [("authorization", "Bearer viewer-1")];
    assert_eq!(twice(&edge, &origin, "/auth", &auth).await, 2);
    assert_eq!(twice(&edge, &origin, "/auth-public", &auth).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn set_cookie_responses_are_not_stored_unless_the_route_opts_in() {
    // A shared cache must not hand one viewer's cookie to the next: like nginx and Varnish,
    // a response with Set-Cookie is not stored, however public the origin says it is.
    let origin = Upstream::start("o").await;
    for path in ["/c", "/cp"] {
        let cc = if path == "/cp" {
            "public, max-age=60"
        } else {
            "max-age=60"
        };
        origin.script(
            path,
            Script::ok(
                &[("cache-control", cc), ("set-cookie", "sid=viewer-1")],
                BODY,
            ),
        );
    }
    let edge = cached_edge(&origin, "", "").await;
    assert_eq!(twice(&edge, &origin, "/c", &[]).await, 2);
    assert_eq!(twice(&edge, &origin, "/cp", &[]).await, 2);
    let second = fetch(&edge.url("/cp"), &[]).await;
    assert_ne!(second.cache(), "HIT", "never a hit that replays the cookie");

    // The route that opts in gets what RFC 9111 allows: stored, cookie and all.
    let origin = Upstream::start("o").await;
    origin.script(
        "/c",
        Script::ok(
            &[("cache-control", "max-age=60"), ("set-cookie", "lb=node-1")],
            BODY,
        ),
    );
    origin.script(
        "/private",
        Script::ok(
            &[
                ("cache-control", "private, max-age=60"),
                ("set-cookie", "lb=node-1"),
            ],
            BODY,
        ),
    );
    let edge = cached_edge(&origin, "store_set_cookie = true", "").await;
    assert_eq!(twice(&edge, &origin, "/c", &[]).await, 1);
    let hit = fetch(&edge.url("/c"), &[]).await;
    assert_eq!(hit.cache(), "HIT");
    assert_eq!(hit.header("set-cookie"), "lb=node-1");
    assert_eq!(twice(&edge, &origin, "/private", &[]).await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn vary_stores_one_variant_per_header_value() {
    // RFC 9111 §4.1.
    let (origin, edge) = setup(
        "/v",
        &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
    )
    .await;
    for _ in 0..2 {
        fetch(&edge.url("/v"), &[("accept-language", "en")]).await;
        fetch(&edge.url("/v"), &[("accept-language", "fr")]).await;
    }
    assert_eq!(origin.hits_for("/v"), 2);
    let en = fetch(&edge.url("/v"), &[("accept-language", "en")]).await;
    assert_eq!(en.cache(), "HIT");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_variant_older_than_the_first_one_stored_is_still_served() {
    // pingora serves a Vary variant only if it was stored after its URL's first (primary)
    // variant, which purges use as a tombstone. A response's age (its Date five seconds ago
    // here; a busy origin a second away does it too) must not date its storing: this variant
    // was stored last, and is a hit.
    let vary = [("cache-control", "max-age=60"), ("vary", "Accept-Language")];
    let (origin, edge) = setup("/v", &vary).await;
    assert_eq!(
        fetch(&edge.url("/v"), &[("accept-language", "en")])
            .await
            .cache(),
        "MISS"
    );
    let old = httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(5));
    let mut aged = vary.to_vec();
    aged.push(("date", old.as_str()));
    origin.script("/v", Script::ok(&aged, BODY));
    assert_eq!(
        fetch(&edge.url("/v"), &[("accept-language", "fr")])
            .await
            .cache(),
        "MISS"
    );
    let fr = fetch(&edge.url("/v"), &[("accept-language", "fr")]).await;
    assert_eq!(fr.cache(), "HIT");
    // Five seconds and a fraction since the Date's second began, less the second a Date
    // cuts off: four or more.
    let age: u64 = fr.header("age").parse().unwrap();
    assert!(
        (4..=7).contains(&age),
        "age {age}: counted from the origin's Date"
    );
    assert_eq!(
        fetch(&edge.url("/v"), &[("accept-language", "en")])
            .await
            .cache(),
        "HIT"
    );
    assert_eq!(origin.hits_for("/v"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn vary_star_is_never_served_from_cache() {
    // RFC 9111 §4.1: "*" always fails to match.
    let (origin, edge) = setup("/vs", &[("cache-control", "max-age=60"), ("vary", "*")]).await;
    assert_eq!(twice(&edge, &origin, "/vs", &[]).await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_304_from_the_origin_refreshes_the_stored_headers() {
    // RFC 9111 §4.3.4: revalidation with the stored ETag; the 304's headers replace ours.
    let origin = Upstream::start("o").await;
    let mut s = Script::ok(
        &[
            ("cache-control", "max-age=1"),
            ("etag", "\"v1\""),
            ("x-version", "1"),
        ],
        BODY,
    );
    s.not_modified_headers = vec![
        ("cache-control".into(), "max-age=60".into()),
        ("x-version".into(), "2".into()),
    ];
    origin.script("/r", s);
    let edge = cached_edge(&origin, "", "").await;
    assert_eq!(fetch(&edge.url("/r"), &[]).await.cache(), "MISS");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let revalidated = fetch(&edge.url("/r"), &[]).await;
    assert_eq!(revalidated.cache(), "REVALIDATED");
    assert_eq!(revalidated.body, BODY);
    assert_eq!(
        revalidated.header("x-version"),
        "2",
        "{:?}",
        revalidated.headers
    );
    let seen = origin.seen();
    assert_eq!(seen.last().unwrap().headers["if-none-match"], "\"v1\"");
    // Refreshed to max-age=60: the next one is a plain hit.
    let hit = fetch(&edge.url("/r"), &[]).await;
    assert_eq!(hit.cache(), "HIT");
    assert_eq!(hit.header("x-version"), "2");
    assert_eq!(origin.hits_for("/r"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_cache_responses_are_revalidated_every_time() {
    // RFC 9111 §5.2.2.4: stored, but never used without revalidation.
    let (origin, edge) = setup("/nc", &[("cache-control", "no-cache"), ("etag", "\"x\"")]).await;
    fetch(&edge.url("/nc"), &[]).await;
    let second = fetch(&edge.url("/nc"), &[]).await;
    assert_eq!(second.body, BODY);
    assert_eq!(second.cache(), "REVALIDATED");
    assert_eq!(origin.hits_for("/nc"), 2);
    assert_eq!(
        origin.seen().last().unwrap().headers["if-none-match"],
        "\"x\""
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_viewer_no_cache_or_max_age_0_forces_revalidation() {
    // RFC 9111 §5.2.1.4 and §5.2.1.1.
    let (origin, edge) = setup("/f", &[("cache-control", "max-age=60"), ("etag", "\"f\"")]).await;
    fetch(&edge.url("/f"), &[]).await;
    assert_eq!(fetch(&edge.url("/f"), &[]).await.cache(), "HIT");
    let r = fetch(&edge.url("/f"), &[("cache-control", "no-cache")]).await;
    assert_ne!(r.cache(), "HIT");
    let r = fetch(&edge.url("/f"), &[("cache-control", "max-age=0")]).await;
    assert_ne!(r.cache(), "HIT");
    assert_eq!(origin.hits_for("/f"), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_viewer_no_store_keeps_the_response_out_of_the_cache() {
    // RFC 9111 §5.2.1.5.
    let (origin, edge) = setup("/ns", &[("cache-control", "max-age=60")]).await;
    fetch(&edge.url("/ns"), &[("cache-control", "no-store")]).await;
    fetch(&edge.url("/ns"), &[]).await;
    assert_eq!(origin.hits_for("/ns"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn head_is_answered_from_a_cached_get() {
    // RFC 9110 §9.3.2.
    let (origin, edge) = setup("/hd", &[("cache-control", "max-age=60")]).await;
    fetch(&edge.url("/hd"), &[]).await;
    let head = fetch_with("HEAD", &edge.url("/hd"), &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.cache(), "HIT");
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), BODY.len().to_string());
    assert_eq!(origin.hits_for("/hd"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn unsafe_methods_pass_through_and_invalidate_the_url() {
    // RFC 9111 §4.4.
    let (origin, edge) = setup("/u", &[("cache-control", "max-age=60")]).await;
    fetch(&edge.url("/u"), &[]).await;
    assert_eq!(fetch(&edge.url("/u"), &[]).await.cache(), "HIT");
    let post = fetch_with("POST", &edge.url("/u"), &[]).await;
    assert_eq!(post.status, 200);
    assert_eq!(fetch(&edge.url("/u"), &[]).await.cache(), "MISS");
    assert_eq!(origin.hits_for("/u"), 3);
    let seen: Vec<String> = origin.seen().iter().map(|s| s.method.clone()).collect();
    assert_eq!(seen, ["GET", "POST", "GET"]);
}

/// GET `path` with `Host: host` and the extra headers; returns X-Cache-Status.
async fn status_on(
    edge: &common::EdgeProc,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> String {
    let mut headers = vec![("host", host)];
    headers.extend_from_slice(extra);
    let r = fetch(&edge.url(path), &headers).await;
    assert_eq!(r.status, 200, "{host}{path}");
    r.cache().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_accepted_post_invalidates_the_same_host_location_and_content_location() {
    // RFC 9111 §4.4: the target URI, and the Location and Content-Location URIs when they
    // are on the target's host; never another host's.
    let origin = Upstream::start("o").await;
    let cc = ("cache-control", "max-age=60");
    for path in ["/created", "/described", "/untouched", "/c"] {
        origin.script(path, Script::ok(&[cc], BODY));
    }
    origin.script(
        "/form",
        Script::ok(
            &[
                cc,
                ("location", "created"),
                ("content-location", "http://site.test:8443/described"),
            ],
            BODY,
        ),
    );
    origin.script(
        "/elsewhere",
        Script::ok(
            &[
                cc,
                ("location", "http://other.test/c"),
                ("content-location", "//other.test/c"),
            ],
            BODY,
        ),
    );
    let edge = cached_edge(&origin, "", "").await;
    let site = [
        "/form",
        "/created",
        "/described",
        "/untouched",
        "/c",
        "/elsewhere",
    ];
    for path in site {
        status_on(&edge, "site.test", path, &[]).await;
        assert_eq!(
            status_on(&edge, "site.test", path, &[]).await,
            "HIT",
            "{path}"
        );
    }
    status_on(&edge, "other.test", "/c", &[]).await;
    assert_eq!(status_on(&edge, "other.test", "/c", &[]).await, "HIT");

    let post = fetch_with("POST", &edge.url("/form"), &[("host", "site.test")]).await;
    assert_eq!(post.status, 200);
    for path in ["/form", "/created", "/described"] {
        assert_eq!(
            status_on(&edge, "site.test", path, &[]).await,
            "MISS",
            "{path}"
        );
    }
    assert_eq!(
        status_on(&edge, "site.test", "/untouched", &[]).await,
        "HIT"
    );

    // A Location on another host leaves that host's objects, and this host's same path, alone.
    let post = fetch_with("POST", &edge.url("/elsewhere"), &[("host", "site.test")]).await;
    assert_eq!(post.status, 200);
    assert_eq!(status_on(&edge, "other.test", "/c", &[]).await, "HIT");
    assert_eq!(status_on(&edge, "site.test", "/c", &[]).await, "HIT");
    assert_eq!(
        status_on(&edge, "site.test", "/elsewhere", &[]).await,
        "MISS"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalidation_removes_every_vary_variant_of_the_url() {
    // RFC 9111 §4.4 invalidates responses by target URI, whatever they vary on.
    let origin = Upstream::start("o").await;
    origin.script(
        "/v",
        Script::ok(
            &[("cache-control", "max-age=60"), ("vary", "accept-encoding")],
            BODY,
        ),
    );
    let edge = cached_edge(&origin, "", "").await;
    let variants = [[("accept-encoding", "gzip")], [("accept-encoding", "br")]];
    for v in &variants {
        assert_eq!(status_on(&edge, "site.test", "/v", v).await, "MISS");
        assert_eq!(status_on(&edge, "site.test", "/v", v).await, "HIT");
    }
    let put = fetch_with("PUT", &edge.url("/v"), &[("host", "site.test")]).await;
    assert_eq!(put.status, 200);
    for v in &variants {
        assert_eq!(
            status_on(&edge, "site.test", "/v", v).await,
            "MISS",
            "{v:?}"
        );
    }
    assert_eq!(origin.hits_for("/v"), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unsafe_request_the_origin_never_answered_invalidates_nothing() {
    // The edge's own 502: the origin saw nothing, so nothing it holds changed.
    let (origin, edge) = setup("/kept", &[("cache-control", "max-age=60")]).await;
    fetch(&edge.url("/kept"), &[]).await;
    origin.kill();
    let post = fetch_with("POST", &edge.url("/kept"), &[]).await;
    assert_eq!(post.status, 502);
    let r = fetch(&edge.url("/kept"), &[]).await;
    assert_eq!((r.status, r.cache()), (200, "HIT"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_edges_own_redirect_to_https_does_not_invalidate() {
    // An anonymous POST over plain HTTP gets the edge's 308; what HTTPS viewers use stays.
    let origin = Upstream::start("o").await;
    origin.script(
        "/page",
        Script::ok(&[("cache-control", "max-age=60")], BODY),
    );
    let pki = common::tls::Pki::new();
    let pair = pki.issue("a", &["a.test"]);
    let body = format!(
        "{}{}[[routes]]\npath = \"/\"\npool = \"p\"\nredirect_https = true\n",
        common::tls::cert_entry(&pair, None),
        common::edge::pool("p", &[origin.addr], ""),
    );
    let edge = common::tls::TlsEdge::start(pki.dir.path(), &body).await;
    let https = common::tls::https_client(pki.ca_pem(), &["a.test"], edge.https)
        .build()
        .unwrap();
    let get = || async {
        let r = https.get(edge.url("a.test", "/page")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.headers()["x-cache-status"].to_str().unwrap().to_string()
    };
    assert_eq!(get().await, "MISS");
    assert_eq!(get().await, "HIT");

    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let post = no_redirects
        .post(format!("http://{}/page", edge.edge.http))
        .header("host", "a.test")
        .body("anonymous")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 308);
    assert_eq!(get().await, "HIT");
    assert_eq!(origin.hits_for("/page"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn must_revalidate_is_never_served_stale_even_when_the_origin_is_down() {
    // RFC 9111 §5.2.2.2.
    let origin = Upstream::start("o").await;
    origin.script(
        "/mr",
        Script::ok(
            &[(
                "cache-control",
                "max-age=1, must-revalidate, stale-if-error=60",
            )],
            BODY,
        ),
    );
    let edge = cached_edge(&origin, "", "").await;
    fetch(&edge.url("/mr"), &[]).await;
    origin.kill();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = fetch(&edge.url("/mr"), &[]).await;
    assert!(r.status >= 500, "served {} {}", r.status, r.cache());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cached_response_is_byte_identical_to_the_origins() {
    // Property: for many sizes and contents, MISS and HIT bodies equal the origin's bytes.
    let origin = Upstream::start("o").await;
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut cases = Vec::new();
    for i in 0..24 {
        let len = match i % 4 {
            0 => (next() % 64) as usize,
            1 => (next() % 70_000) as usize,
            2 => (next() % 3_000_000) as usize,
            _ => 65_536 * (1 + (next() % 8) as usize),
        };
        let body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let path = format!("/prop/{i}");
        let mut s = Script::ok(&[("cache-control", "max-age=60")], body.clone());
        s.chunk = 1 + (next() % 100_000) as usize;
        origin.script(&path, s);
        cases.push((path, body));
    }
    let edge = cached_edge(&origin, "", "").await;
    for (path, body) in &cases {
        let miss = fetch(&edge.url(path), &[]).await;
        let hit = fetch(&edge.url(path), &[]).await;
        assert_eq!(miss.body.as_ref(), body.as_slice(), "{path} miss");
        assert_eq!(hit.body.as_ref(), body.as_slice(), "{path} hit");
        assert_eq!(hit.cache(), "HIT", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_viewer_conditional_request_gets_a_304_from_the_cache() {
    // RFC 9110 §13.1.2, evaluated by the cache against the stored response.
    let (origin, edge) = setup(
        "/cond",
        &[("cache-control", "max-age=60"), ("etag", "\"c1\"")],
    )
    .await;
    fetch(&edge.url("/cond"), &[]).await;
    let r = fetch(&edge.url("/cond"), &[("if-none-match", "\"c1\"")]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let r = fetch(&edge.url("/cond"), &[("if-none-match", "\"other\"")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(origin.hits_for("/cond"), 1);
    // The origin was never sent the viewer's condition.
    assert!(origin
        .seen()
        .iter()
        .all(|s| !s.headers.contains_key("if-none-match")));
}
