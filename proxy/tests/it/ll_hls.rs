//! Low-latency HLS through the edge: viewers blocked on one playlist reload (`_HLS_msn`,
//! `_HLS_part`) or on the part a preload hint names, which the origin holds until the packager
//! writes it, cost the origin one request, and the part streams to all of them from one fill
//! as the origin sends it.

use crate::common;

use std::time::{Duration, Instant};

use common::upstream::Script;
use common::{cached_edge, client, Upstream};

const VIDEO: &str = "mode = \"video\"\ntarget_duration = \"1s\"";

/// Viewers asking at once.
const VIEWERS: usize = 50;

/// `VIEWERS` GETs of `path` at once, each with its own viewer token: their statuses and bodies.
async fn crowd(edge: &common::EdgeProc, path: &str) -> Vec<(u16, Vec<u8>)> {
    let tasks: Vec<_> = (0..VIEWERS)
        .map(|i| {
            let url = edge.url(&format!("{path}&token=viewer{i}"));
            tokio::spawn(async move {
                let r = client().get(&url).send().await.unwrap();
                (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    answers
}

#[tokio::test(flavor = "multi_thread")]
async fn viewers_blocked_on_one_reload_cost_the_origin_one_request() {
    let origin = Upstream::start("o").await;
    let playlist =
        "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-PART:DURATION=0.2,URI=\"segment-12.2.m4s\"\n";
    // The origin holds a blocking reload until the part exists: 700 ms here.
    let mut held = Script::ok(&[], playlist);
    held.header_delay = Duration::from_millis(700);
    origin.script("/live/index.m3u8", held);
    let edge = cached_edge(&origin, VIDEO, "").await;
    let started = Instant::now();
    let answers = crowd(&edge, "/live/index.m3u8?_HLS_msn=12&_HLS_part=2").await;
    assert!(
        answers
            .iter()
            .all(|(s, b)| *s == 200 && b == playlist.as_bytes()),
        "{:?}",
        answers.iter().map(|(s, _)| s).collect::<Vec<_>>()
    );
    assert_eq!(origin.hits_for("/live/index.m3u8"), 1, "{}", edge.logs());
    // Answered when the origin answered, not a lock timeout later.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The next part's reload is another request.
    crowd(&edge, "/live/index.m3u8?_HLS_msn=12&_HLS_part=3").await;
    assert_eq!(origin.hits_for("/live/index.m3u8"), 2);
    common::figure(
        &format!("{VIEWERS} viewers blocked on one LL-HLS playlist reload"),
        "origin asked once per _HLS_msn/_HLS_part",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hinted_part_streams_from_one_fill_to_every_viewer_waiting_for_it() {
    let origin = Upstream::start("o").await;
    // The part comes as the origin has it: the header after 300 ms, then 8 pieces 50 ms apart.
    let part: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    let mut held = Script::ok(&[], part.clone());
    held.header_delay = Duration::from_millis(300);
    held.chunk = 8 * 1024;
    held.chunk_delay = Duration::from_millis(50);
    origin.script("/live/segment-12.3.m4s", held);
    let edge = cached_edge(&origin, VIDEO, "").await;
    let answers = crowd(&edge, "/live/segment-12.3.m4s?x=1").await;
    assert!(answers.iter().all(|(s, b)| *s == 200 && *b == part));
    assert_eq!(
        origin.hits_for("/live/segment-12.3.m4s"),
        1,
        "{}",
        edge.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_part_the_origin_does_not_have_is_a_404_for_a_second_at_most() {
    let origin = Upstream::start("o").await;
    let path = "/live/segment-20.0.m4s";
    // As the streamer answers a part that is neither written nor hinted.
    origin.script(path, Script::ok(&[], "not found\n").status(404));
    let edge = cached_edge(&origin, VIDEO, "").await;
    assert_eq!(common::fetch(&edge.url(path), &[]).await.status, 404);
    assert_eq!(common::fetch(&edge.url(path), &[]).await.status, 404);
    assert_eq!(origin.hits_for(path), 1, "the 404 is cached a moment");
    // A moment later the packager has written it.
    origin.script(path, Script::ok(&[], "moof"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = common::fetch(&edge.url(path), &[]).await;
    assert_eq!((r.status, &r.body[..]), (200, &b"moof"[..]));
    assert_eq!(origin.hits_for(path), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_viewer_gets_a_blocking_reload_from_the_cache_where_a_plain_reload_has_expired() {
    let origin = Upstream::start("o").await;
    let playlist =
        "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-PART:DURATION=0.2,URI=\"segment-12.2.m4s\"\n";
    // As dime-origin streamer answers: a blocking reload for three target durations, the
    // playlist itself for a second.
    origin.script(
        "/live/index.m3u8",
        Script::ok(&[("cache-control", "public, max-age=3")], playlist),
    );
    origin.script(
        "/live/plain.m3u8",
        Script::ok(&[("cache-control", "public, max-age=3")], playlist),
    );
    let edge = cached_edge(&origin, VIDEO, "").await;
    let get = |path: &str| {
        let url = edge.url(path);
        async move {
            let r = client().get(&url).send().await.unwrap();
            let status = r.headers()["x-cache-status"].to_str().unwrap().to_string();
            (r.status().as_u16(), status)
        }
    };
    let reload = "/live/index.m3u8?_HLS_msn=12&_HLS_part=2";
    assert_eq!(get(reload).await, (200, "MISS".to_string()));
    assert_eq!(get("/live/plain.m3u8").await, (200, "MISS".to_string()));
    // Past half a target duration, where a live playlist expires, and well inside three.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(get(reload).await, (200, "HIT".to_string()));
    assert_eq!(origin.hits_for("/live/index.m3u8"), 1, "{}", edge.logs());
    let (status, cache) = get("/live/plain.m3u8").await;
    assert_eq!(status, 200);
    assert_ne!(
        cache, "HIT",
        "a plain reload is held half a target duration"
    );
    assert_eq!(origin.hits_for("/live/plain.m3u8"), 2);
}
