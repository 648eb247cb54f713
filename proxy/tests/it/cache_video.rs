//! Video-aware policy and keys: HLS defaults when the origin says nothing, negative caching,
//! viewer tokens kept out of the key, and one key over HTTP/1.1 and HTTP/2.

use crate::common;

use std::time::Duration;

use common::upstream::Script;
use common::{cached_edge, fetch, Upstream};

const VIDEO: &str = "mode = \"video\"\ntarget_duration = \"2s\"";

#[tokio::test(flavor = "multi_thread")]
async fn segments_without_cache_headers_are_long_lived_and_playlists_short() {
    let origin = Upstream::start("o").await;
    origin.script("/live/seg100.ts", Script::ok(&[], vec![0x47u8; 1880]));
    origin.script("/live/index.m3u8", Script::ok(&[], "#EXTM3U\n"));
    let edge = cached_edge(&origin, VIDEO, "").await;
    fetch(&edge.url("/live/seg100.ts"), &[]).await;
    fetch(&edge.url("/live/index.m3u8"), &[]).await;
    assert_eq!(
        fetch(&edge.url("/live/seg100.ts"), &[]).await.cache(),
        "HIT"
    );
    assert_eq!(
        fetch(&edge.url("/live/index.m3u8"), &[]).await.cache(),
        "HIT"
    );
    // Half the 2 s target duration later, the playlist is stale; the segment is not.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        fetch(&edge.url("/live/seg100.ts"), &[]).await.cache(),
        "HIT"
    );
    assert_ne!(
        fetch(&edge.url("/live/index.m3u8"), &[]).await.cache(),
        "HIT"
    );
    assert_eq!(origin.hits_for("/live/seg100.ts"), 1);
    assert_eq!(origin.hits_for("/live/index.m3u8"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_origin_max_age_on_a_live_playlist_is_capped_at_half_the_target_duration() {
    let origin = Upstream::start("o").await;
    origin.script(
        "/live/index.m3u8",
        Script::ok(&[("cache-control", "max-age=30")], "#EXTM3U\n"),
    );
    let edge = cached_edge(&origin, VIDEO, "").await;
    fetch(&edge.url("/live/index.m3u8"), &[]).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    fetch(&edge.url("/live/index.m3u8"), &[]).await;
    assert_eq!(origin.hits_for("/live/index.m3u8"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_playlist_dated_the_second_before_it_arrived_is_stored_and_fetched_once() {
    // The origin made it a moment ago, late in a second its Date names: it arrives a little
    // over a second after that Date. Counted a second old, a playlist fresh for one second
    // (half the 2 s target duration) would be stale on arrival: not stored, and the viewer
    // waiting on the fill would ask the origin again.
    let origin = Upstream::start("o").await;
    let edge = cached_edge(&origin, VIDEO, "").await;
    let now = std::time::SystemTime::now();
    let into_second = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    tokio::time::sleep(Duration::from_nanos(u64::from(1_000_000_000 - into_second))).await;
    let date = httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(1));
    origin.script(
        "/live/index.m3u8",
        Script::ok(
            &[("cache-control", "max-age=30"), ("date", &date)],
            "#EXTM3U\n",
        ),
    );
    assert_eq!(
        fetch(&edge.url("/live/index.m3u8"), &[]).await.cache(),
        "MISS"
    );
    assert_eq!(origin.hits_for("/live/index.m3u8"), 1);
    assert_eq!(
        fetch(&edge.url("/live/index.m3u8"), &[]).await.cache(),
        "HIT"
    );
    assert_eq!(origin.hits_for("/live/index.m3u8"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_segment_is_cached_for_a_second_at_most() {
    let origin = Upstream::start("o").await;
    origin.script(
        "/live/seg101.ts",
        Script::ok(&[("cache-control", "max-age=300")], "not yet").status(404),
    );
    let edge = cached_edge(&origin, VIDEO, "").await;
    assert_eq!(fetch(&edge.url("/live/seg101.ts"), &[]).await.status, 404);
    assert_eq!(
        fetch(&edge.url("/live/seg101.ts"), &[]).await.cache(),
        "HIT"
    );
    // The segment appears; a second later viewers get it.
    origin.script("/live/seg101.ts", Script::ok(&[], vec![0x47u8; 188]));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = fetch(&edge.url("/live/seg101.ts"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(origin.hits_for("/live/seg101.ts"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn viewer_tokens_do_not_split_the_cache_but_hls_parameters_do() {
    let origin = Upstream::start("o").await;
    origin.script("/live/seg7.ts", Script::ok(&[], vec![1u8; 100]));
    origin.script("/live/ll.m3u8", Script::ok(&[], "#EXTM3U\n"));
    let edge = cached_edge(&origin, VIDEO, "").await;
    for token in ["a", "b", "c"] {
        fetch(
            &edge.url(&format!("/live/seg7.ts?token={token}&exp=1")),
            &[],
        )
        .await;
    }
    assert_eq!(origin.hits_for("/live/seg7.ts"), 1);
    fetch(
        &edge.url("/live/ll.m3u8?_HLS_msn=10&_HLS_part=1&token=a"),
        &[],
    )
    .await;
    fetch(
        &edge.url("/live/ll.m3u8?token=b&_HLS_part=1&_HLS_msn=10"),
        &[],
    )
    .await;
    fetch(&edge.url("/live/ll.m3u8?_HLS_msn=11&_HLS_part=0"), &[]).await;
    // A delta playlist (`_HLS_skip`) is another answer than the full one.
    fetch(
        &edge.url("/live/ll.m3u8?_HLS_msn=11&_HLS_part=0&_HLS_skip=YES"),
        &[],
    )
    .await;
    let asked: Vec<String> = origin.seen().into_iter().map(|s| s.uri).collect();
    assert_eq!(
        origin.hits_for("/live/ll.m3u8"),
        3,
        "the origin was asked for {asked:?}\n{}",
        edge.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_key_is_the_same_over_http1_and_http2() {
    let origin = Upstream::start("o").await;
    origin.script(
        "/vod/seg1.ts",
        Script::ok(&[("cache-control", "max-age=60")], vec![2u8; 5000]),
    );
    let edge = cached_edge(&origin, VIDEO, "").await;
    let h1 = fetch(&edge.url("/vod/seg1.ts"), &[("host", "Videos.Example.com")]).await;
    assert_eq!(h1.cache(), "MISS");
    // Over HTTP/2 the host travels in the URI authority, with no Host header.
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .resolve("videos.example.com", edge.http)
        .build()
        .unwrap();
    let r = h2
        .get(format!(
            "http://videos.example.com:{}/vod/seg1.ts",
            edge.http.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.headers());
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.headers()["x-cache-status"], "HIT");
    assert_eq!(r.bytes().await.unwrap().len(), 5000);
    assert_eq!(origin.hits_for("/vod/seg1.ts"), 1);
}
