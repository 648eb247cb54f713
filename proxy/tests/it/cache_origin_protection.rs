//! Origin protection: coalesced misses, stale serving, and fills that abort.

use crate::common;

use std::time::Duration;

use bytes::Bytes;
use common::upstream::Script;
use common::{cached_edge, client, fetch, Upstream};

async fn concurrent_gets(url: String, n: usize) -> Vec<(u16, Bytes, String)> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let r = client().get(&url).send().await.unwrap();
                let status = r.status().as_u16();
                let cache = r
                    .headers()
                    .get("x-cache-status")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                (status, r.bytes().await.unwrap(), cache)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_misses_for_a_slow_playlist_cost_one_origin_request() {
    let origin = Upstream::start("o").await;
    let mut s = Script::ok(&[("cache-control", "max-age=60")], vec![b'#'; 1024]);
    // Long enough for all fifty to be in the edge before the origin answers, even in a debug
    // build on a busy machine; checked below, so a slow start fails loudly instead of passing.
    let delay = Duration::from_millis(2000);
    s.header_delay = delay;
    origin.script("/live/index.m3u8", s);
    // Playlists stay fresh for half the target duration (1 s by default): a long target
    // duration keeps this test about coalescing.
    let edge = cached_edge(&origin, "target_duration = \"20s\"", "").await;
    let start = std::time::Instant::now();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let url = edge.url("/live/index.m3u8");
            tokio::spawn(async move {
                let r = client().get(&url).send().await.unwrap();
                let status = r.status().as_u16();
                let body = r.bytes().await.unwrap();
                (status, body.len(), start.elapsed())
            })
        })
        .collect();
    // Every request is in the edge once the edge has counted them all.
    edge.wait_for_metric("dime_requests_in_flight", 50.0).await;
    let all_in = start.elapsed();
    assert!(
        all_in < delay,
        "the fifty requests took {all_in:?} to reach the edge, the origin answers after {delay:?}"
    );
    for t in tasks {
        let (status, len, done) = t.await.unwrap();
        assert_eq!((status, len), (200, 1024));
        // None was answered before the one fill had its response: all waited on it.
        assert!(done >= delay, "a response came after {done:?}");
    }
    assert_eq!(origin.hits_for("/live/index.m3u8"), 1);
    let waits = edge
        .metric("dime_cache_coalesced_waits_total{route=\"/\"}")
        .await
        .unwrap_or(0.0);
    assert_eq!(waits, 49.0, "49 of the 50 requests wait for the one fill");
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_misses_for_a_20_mb_file_filling_slowly_cost_one_origin_request() {
    let origin = Upstream::start("o").await;
    let body: Vec<u8> = (0..20 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
    let mut s = Script::ok(&[("cache-control", "max-age=600")], body.clone());
    // About 2 s to fill: waiters must follow the fill, not time out and stampede.
    s.chunk = 512 * 1024;
    s.chunk_delay = Duration::from_millis(50);
    origin.script("/vod/movie.mp4", s);
    let edge = cached_edge(&origin, "max_object_size = \"64MiB\"", "").await;
    let results = concurrent_gets(edge.url("/vod/movie.mp4"), 50).await;
    for (status, got, _) in &results {
        assert_eq!(*status, 200);
        assert!(
            got.as_ref() == body.as_slice(),
            "a reader got different bytes ({} bytes)",
            got.len()
        );
    }
    assert_eq!(origin.hits_for("/vod/movie.mp4"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_while_revalidate_serves_stale_and_refreshes_once_in_the_background() {
    let origin = Upstream::start("o").await;
    origin.script(
        "/swr",
        Script::ok(
            &[("cache-control", "max-age=1, stale-while-revalidate=30")],
            "v1",
        ),
    );
    let edge = cached_edge(&origin, "", "").await;
    fetch(&edge.url("/swr"), &[]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The refresh takes a while, so every viewer below arrives before it lands.
    let mut v2 = Script::ok(&[("cache-control", "max-age=60")], "v2");
    v2.header_delay = Duration::from_millis(1500);
    origin.script("/swr", v2);
    let results = concurrent_gets(edge.url("/swr"), 10).await;
    for (status, body, cache) in &results {
        assert_eq!(*status, 200);
        assert_eq!(
            body.as_ref(),
            b"v1",
            "stale content expected while revalidating ({cache})"
        );
    }
    assert!(
        results
            .iter()
            .any(|(_, _, c)| c == "UPDATING" || c == "STALE"),
        "{results:?}"
    );
    // The background refresh lands once.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(fetch(&edge.url("/swr"), &[]).await.body, "v2");
    assert_eq!(origin.hits_for("/swr"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_if_error_serves_stale_while_the_origin_is_dead() {
    let origin = Upstream::start("o").await;
    origin.script(
        "/sie",
        Script::ok(
            &[("cache-control", "max-age=1, stale-if-error=60")],
            "still good",
        ),
    );
    let edge = cached_edge(&origin, "", "").await;
    fetch(&edge.url("/sie"), &[]).await;
    origin.kill();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = fetch(&edge.url("/sie"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "still good");
    assert_eq!(r.cache(), "STALE");
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_if_error_from_route_config_covers_a_5xx() {
    let origin = Upstream::start("o").await;
    origin.script(
        "/cfg",
        Script::ok(&[("cache-control", "max-age=1")], "good"),
    );
    let edge = cached_edge(&origin, "stale_if_error = \"1m\"", "").await;
    fetch(&edge.url("/cfg"), &[]).await;
    origin.script("/cfg", Script::ok(&[], "broken").status(503));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = fetch(&edge.url("/cfg"), &[]).await;
    assert_eq!((r.status, r.body.as_ref()), (200, b"good".as_ref()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fill_that_aborts_is_never_served_as_complete_nor_kept() {
    let origin = Upstream::start("o").await;
    let mut s = Script::ok(
        &[("cache-control", "max-age=60")],
        vec![7u8; 4 * 1024 * 1024],
    );
    s.chunk = 256 * 1024;
    s.chunk_delay = Duration::from_millis(20);
    s.abort_after = Some(1024 * 1024);
    origin.script("/cut.mp4", s);
    let edge = cached_edge(&origin, "", "").await;
    let results: Vec<_> = (0..5)
        .map(|_| {
            let url = edge.url("/cut.mp4");
            tokio::spawn(async move {
                // Bytes received, and whether the body ended as if complete.
                let mut r = client().get(&url).send().await.unwrap();
                let mut got = 0;
                loop {
                    match r.chunk().await {
                        Ok(Some(chunk)) => got += chunk.len(),
                        Ok(None) => return (got, true),
                        Err(_) => return (got, false),
                    }
                }
            })
        })
        .collect();
    for r in results {
        let (got, complete) = r.await.unwrap();
        // Every reader followed the one fill (it received bytes of it) and saw it cut: a short
        // "success" is the bug.
        assert!(got > 0, "a reader got nothing of the fill");
        assert!(
            !complete || got == 4 * 1024 * 1024,
            "a truncated body of {got} bytes was delivered as complete"
        );
    }
    assert_eq!(
        origin.hits_for("/cut.mp4"),
        1,
        "the five readers shared one fill"
    );
    // Nothing truncated stayed in the cache: the next request goes to the origin again.
    origin.script(
        "/cut.mp4",
        Script::ok(
            &[("cache-control", "max-age=60")],
            vec![7u8; 4 * 1024 * 1024],
        ),
    );
    let next = fetch(&edge.url("/cut.mp4"), &[]).await;
    assert_eq!(next.body.len(), 4 * 1024 * 1024);
    assert_eq!(next.cache(), "MISS");
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_over_the_size_limit_stream_through_uncached() {
    let origin = Upstream::start("o").await;
    origin.script(
        "/big.mp4",
        Script::ok(
            &[("cache-control", "max-age=60")],
            vec![1u8; 3 * 1024 * 1024],
        ),
    );
    let edge = cached_edge(&origin, "max_object_size = \"1MiB\"", "").await;
    for _ in 0..2 {
        assert_eq!(
            fetch(&edge.url("/big.mp4"), &[]).await.body.len(),
            3 * 1024 * 1024
        );
    }
    assert_eq!(origin.hits_for("/big.mp4"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_small_cache_evicts_and_stays_within_its_limit() {
    let origin = Upstream::start("o").await;
    for i in 0..40 {
        origin.script(
            &format!("/seg{i}.ts"),
            Script::ok(
                &[("cache-control", "max-age=600")],
                vec![i as u8; 256 * 1024],
            ),
        );
    }
    let edge = cached_edge(&origin, "", "[cache]\nmemory = \"4MiB\"\n").await;
    for i in 0..40 {
        assert_eq!(
            fetch(&edge.url(&format!("/seg{i}.ts")), &[])
                .await
                .body
                .len(),
            256 * 1024
        );
    }
    let size = edge.metric("dime_cache_size_bytes").await.unwrap();
    assert!(
        size <= 4.0 * 1024.0 * 1024.0,
        "cache holds {size} bytes over a 4 MiB limit"
    );
    let objects = edge.metric("dime_cache_objects").await.unwrap();
    assert!((1.0..40.0).contains(&objects), "{objects} objects");
    assert!(edge.metric("dime_cache_evictions_total").await.unwrap() >= 1.0);
}
