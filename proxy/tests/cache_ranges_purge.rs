//! Ranges served from the cache, and the purge API on the admin listener.

mod common;

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
