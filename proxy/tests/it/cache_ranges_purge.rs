//! Ranges served from the cache, and the purge API on the admin listener.

use crate::common;

use std::time::{Duration, Instant};

use common::upstream::Script;
use common::{cached_edge, client, fetch, EdgeProc, Upstream};

fn body() -> Vec<u8> {
    (0..100_000u32).map(|i| (i % 251) as u8).collect()
}

async fn ranged_edge() -> (Upstream, EdgeProc) {
    let origin = Upstream::start("o").await;
    origin.script(
        "/vod/a.mp4",
        Script::ok(
            &[("cache-control", "max-age=600"), ("etag", "\"a1\"")],
            body(),
        ),
    );
    let edge = cached_edge(&origin, "", "").await;
    (origin, edge)
}

#[tokio::test(flavor = "multi_thread")]
async fn ranges_on_a_hit_are_answered_from_memory() {
    let (origin, edge) = ranged_edge().await;
    fetch(&edge.url("/vod/a.mp4"), &[]).await;
    let b = body();

    let r = fetch(&edge.url("/vod/a.mp4"), &[("range", "bytes=100-199")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), "bytes 100-199/100000");
    assert_eq!(r.body.as_ref(), &b[100..200]);
    assert_eq!(r.cache(), "HIT");

    let r = fetch(&edge.url("/vod/a.mp4"), &[("range", "bytes=-10")]).await;
    assert_eq!(r.body.as_ref(), &b[99_990..]);

    let r = fetch(&edge.url("/vod/a.mp4"), &[("range", "bytes=200000-")]).await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), "bytes */100000");

    let r = fetch(&edge.url("/vod/a.mp4"), &[("range", "bytes=0-9,20-29")]).await;
    assert_eq!(r.status, 206);
    assert!(
        r.header("content-type").starts_with("multipart/byteranges"),
        "{:?}",
        r.headers
    );

    // If-Range with the current ETag honours the range; a stale one gets the whole object.
    let r = fetch(
        &edge.url("/vod/a.mp4"),
        &[("range", "bytes=0-9"), ("if-range", "\"a1\"")],
    )
    .await;
    assert_eq!((r.status, r.body.len()), (206, 10));
    let r = fetch(
        &edge.url("/vod/a.mp4"),
        &[("range", "bytes=0-9"), ("if-range", "\"old\"")],
    )
    .await;
    assert_eq!((r.status, r.body.len()), (200, 100_000));

    assert_eq!(origin.hits_for("/vod/a.mp4"), 1);
    // The origin was never asked for a range: the cache fetched the whole object once.
    assert!(origin
        .seen()
        .iter()
        .all(|s| !s.headers.contains_key("range")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_range_on_a_miss_answers_as_soon_as_its_bytes_arrive() {
    let origin = Upstream::start("o").await;
    let big: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 249) as u8).collect();
    let mut s = Script::ok(&[("cache-control", "max-age=600")], big.clone());
    s.chunk = 256 * 1024;
    s.chunk_delay = Duration::from_millis(100);
    origin.script("/vod/seek.mp4", s);
    let edge = cached_edge(&origin, "", "").await;
    let started = Instant::now();
    let r = fetch(&edge.url("/vod/seek.mp4"), &[("range", "bytes=0-1023")]).await;
    let took = started.elapsed();
    assert_eq!(r.status, 206);
    assert_eq!(r.body.as_ref(), &big[..1024]);
    // The whole object takes over 3 s to arrive; the first KiB must not wait for it.
    assert!(
        took < Duration::from_secs(2),
        "a range on a miss waited {took:?}"
    );
    // The fill continues, and the object ends up cached whole.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let full = fetch(&edge.url("/vod/seek.mp4"), &[]).await;
    assert_eq!(full.cache(), "HIT");
    assert_eq!(full.body.len(), big.len());
    assert_eq!(origin.hits_for("/vod/seek.mp4"), 1);
}

const TOKEN: &str = "0123456789abcdef-purge";

async fn purge(edge: &EdgeProc, query: &str, token: Option<&str>) -> (u16, String) {
    let mut req = client().post(edge.admin_url(&format!("/cache/purge?{query}")));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_by_url_by_prefix_and_all_with_a_bearer_token() {
    let origin = Upstream::start("o").await;
    for p in [
        "/live/ch1/a.ts",
        "/live/ch1/b.ts",
        "/live/ch2/a.ts",
        "/vod/x.mp4",
    ] {
        origin.script(
            p,
            Script::ok(&[("cache-control", "max-age=600")], p.to_string()),
        );
    }
    let edge = cached_edge(
        &origin,
        "",
        &format!("[cache]\npurge_token = \"{TOKEN}\"\n"),
    )
    .await;
    let warm = |edge: &EdgeProc| {
        let urls: Vec<String> = [
            "/live/ch1/a.ts",
            "/live/ch1/b.ts",
            "/live/ch2/a.ts",
            "/vod/x.mp4",
        ]
        .iter()
        .map(|p| edge.url(p))
        .collect();
        async move {
            let mut statuses = Vec::new();
            for u in urls {
                statuses.push(
                    fetch(&u, &[("host", "tv.example.com")])
                        .await
                        .cache()
                        .to_string(),
                );
            }
            statuses
        }
    };
    warm(&edge).await;
    assert_eq!(warm(&edge).await, ["HIT", "HIT", "HIT", "HIT"]);

    // Without the token, or with a wrong one: 401, nothing purged.
    assert_eq!(purge(&edge, "all=true", None).await.0, 401);
    assert_eq!(
        purge(&edge, "all=true", Some("wrong-token-wrong")).await.0,
        401
    );
    assert_eq!(warm(&edge).await, ["HIT", "HIT", "HIT", "HIT"]);

    let (status, body) = purge(&edge, "url=http://tv.example.com/vod/x.mp4", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"purged\":1"), "{body}");
    assert_eq!(warm(&edge).await, ["HIT", "HIT", "HIT", "MISS"]);

    let (_, body) = purge(&edge, "prefix=tv.example.com/live/ch1/", Some(TOKEN)).await;
    assert!(body.contains("\"purged\":2"), "{body}");
    assert_eq!(warm(&edge).await, ["MISS", "MISS", "HIT", "HIT"]);

    let (_, body) = purge(&edge, "all=true", Some(TOKEN)).await;
    assert!(body.contains("\"kind\":\"all\""), "{body}");
    assert_eq!(warm(&edge).await, ["MISS", "MISS", "MISS", "MISS"]);

    assert_eq!(purge(&edge, "nothing=1", Some(TOKEN)).await.0, 400);
    assert_eq!(
        edge.metric("dime_cache_purges_total{kind=\"prefix\"}")
            .await,
        Some(1.0)
    );
    assert!(edge.logs().contains("cache purge"), "purges are logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_without_a_configured_token_is_disabled_with_a_clear_message() {
    let origin = Upstream::start("o").await;
    let edge = cached_edge(&origin, "", "").await;
    let (status, body) = purge(&edge, "all=true", Some("anything-anything")).await;
    assert_eq!(status, 403);
    assert!(body.contains("set cache.purge_token"), "{body}");
}

/// An edge holding four objects of `tv.example.com`, and a way to see which are still HITs.
async fn purge_edge() -> (Upstream, EdgeProc) {
    let origin = Upstream::start("o").await;
    for p in PURGE_PATHS {
        origin.script(
            p,
            Script::ok(&[("cache-control", "max-age=600")], p.to_string()),
        );
    }
    let edge = cached_edge(
        &origin,
        "",
        &format!("[cache]\npurge_token = \"{TOKEN}\"\n"),
    )
    .await;
    cache_states(&edge).await;
    assert_eq!(cache_states(&edge).await, ["HIT", "HIT", "HIT", "HIT"]);
    (origin, edge)
}

const PURGE_PATHS: [&str; 4] = [
    "/live/ch1/a.ts",
    "/live/ch1/b.ts",
    "/live/ch2/a.ts",
    "/vod/x.mp4",
];

async fn cache_states(edge: &EdgeProc) -> Vec<String> {
    let mut states = Vec::new();
    for p in PURGE_PATHS {
        let r = fetch(&edge.url(p), &[("host", "tv.example.com")]).await;
        states.push(r.cache().to_string());
    }
    states
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_reports_what_would_go_and_keeps_it() {
    let (_origin, edge) = purge_edge().await;
    for (query, count, keys) in [
        (
            "prefix=/live/ch1/&dry_run=1",
            2,
            &[
                "tv.example.com/live/ch1/a.ts",
                "tv.example.com/live/ch1/b.ts",
            ][..],
        ),
        (
            "dry_run=true&url=https://tv.example.com/vod/x.mp4",
            1,
            &["tv.example.com/vod/x.mp4"][..],
        ),
        ("all=1&dry_run=true", 4, &[][..]),
    ] {
        let (status, body) = purge(&edge, query, Some(TOKEN)).await;
        assert_eq!(status, 200, "{query}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["dry_run"], true, "{query}: {body}");
        assert_eq!(v["would_purge"], count, "{query}: {body}");
        assert!(v.get("purged").is_none(), "{query}: {body}");
        for k in keys {
            assert!(
                v["keys"].as_array().unwrap().iter().any(|x| x == k),
                "{query}: {k} not listed: {body}"
            );
        }
        assert_eq!(v["keys"].as_array().unwrap().len(), count, "{body}");
    }
    assert_eq!(
        cache_states(&edge).await,
        ["HIT", "HIT", "HIT", "HIT"],
        "a dry run purged"
    );
    // dry_run=false is a purge.
    let (status, body) = purge(&edge, "prefix=/live/ch1/&dry_run=false", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"purged\":2"), "{body}");
    assert_eq!(cache_states(&edge).await, ["MISS", "MISS", "HIT", "HIT"]);
    // Dry runs are not purges: only the real one is counted.
    assert_eq!(
        edge.metric("dime_cache_purges_total{kind=\"prefix\"}")
            .await,
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_refuses_what_it_does_not_understand() {
    let (_origin, edge) = purge_edge().await;
    let cases: &[(&str, &[&str])] = &[
        (
            "all=true&dryrun=1",
            &["unknown parameter \"dryrun\"", "url, prefix, all, dry_run"],
        ),
        (
            "prefix=/live/&dry_run=yes",
            &["dry_run=yes", "true", "false"],
        ),
        ("all=yes", &["all=yes", "true", "false"]),
        ("all=true&dry_run", &["dry_run", "true", "false"]),
        (
            "url=/vod/x.mp4",
            &[
                "url=/vod/x.mp4",
                "no host",
                "url=https://HOST/vod/x.mp4",
                "prefix=/vod/x.mp4",
            ],
        ),
        ("url=vod/x.mp4", &["\"vod\"", "url=https://HOST/vod/x.mp4"]),
        ("url=ftp://tv.example.com/vod/x.mp4", &["http or https"]),
        ("url=http:///vod/x.mp4", &["no host"]),
        ("url=", &["url= is empty"]),
        (
            "prefix=live/ch1/",
            &["\"live\"", "prefix=/live/ch1/", "prefix=HOST/live/ch1/"],
        ),
        ("prefix=live", &["prefix=/live"]),
        (
            "url=tv.example.com/vod/x.mp4&all=true",
            &["one of url, prefix or all"],
        ),
        ("prefix=/live/&prefix=/vod/", &["prefix is given twice"]),
        (
            "url=tv.example.com/../x",
            &["cannot purge", "above the root"],
        ),
        (
            "",
            &[
                "name what to purge",
                "url=https://HOST/PATH",
                "dry_run=true",
            ],
        ),
        ("all=false", &["name what to purge"]),
    ];
    for (query, expected) in cases {
        let (status, body) = purge(&edge, query, Some(TOKEN)).await;
        assert_eq!(status, 400, "{query}: {body}");
        for e in *expected {
            assert!(body.contains(e), "{query}: expected {e:?} in {body}");
        }
    }
    assert_eq!(
        cache_states(&edge).await,
        ["HIT", "HIT", "HIT", "HIT"],
        "a refused purge removed something"
    );
    // The forms the docs give all work: a full URL, HOST/PATH, and a host prefix with scheme.
    for (query, purged) in [
        ("url=https://TV.example.com:8443/vod//x.mp4?token=1", 1),
        ("prefix=http://tv.example.com/live/ch2/", 1),
        ("prefix=tv.example.com/live/", 2),
    ] {
        let (status, body) = purge(&edge, query, Some(TOKEN)).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert!(
            body.contains(&format!("\"purged\":{purged}")),
            "{query}: {body}"
        );
    }
    assert_eq!(cache_states(&edge).await, ["MISS", "MISS", "MISS", "MISS"]);
}
