//! Big stored bodies live in memory files and plain HTTP/1.1 hits send them with sendfile:
//! counted, byte for byte the same as the origin's, ranges included, and a viewer still reading
//! an object that is purged and refilled meanwhile gets the old body whole.

use crate::common;

use std::time::Duration;

use bytes::Bytes;
use common::upstream::Script;
use common::{cached_edge, client, fetch, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const VIDEO: &str = "mode = \"video\"\ntarget_duration = \"2s\"";
const TOKEN: &str = "0123456789abcdef-purge";
const SENT: &str = "dime_cache_sendfile_bytes_total";
const FILES: &str = "dime_cache_body_files";

/// `len` bytes that differ from those of any other `seed`.
fn body(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed)
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_segment_hit_over_plain_http_is_sent_from_its_file_and_a_playlist_is_not() {
    let origin = Upstream::start("o").await;
    let segment = body(4 << 20, 0);
    origin.script("/live/seg1.ts", Script::ok(&[], segment.clone()));
    origin.script("/live/index.m3u8", Script::ok(&[], "#EXTM3U\n"));
    let edge = cached_edge(&origin, VIDEO, "").await;

    let miss = fetch(&edge.url("/live/seg1.ts"), &[]).await;
    assert_eq!(miss.body, segment, "the miss");
    assert_eq!(edge.metric(FILES).await, Some(1.0), "stored in a file");
    // The miss follows its fill; whatever it had not read yet when the fill was stored it
    // reads from the file.
    let before = edge.metric(SENT).await.expect("counted");

    let hit = fetch(&edge.url("/live/seg1.ts"), &[]).await;
    assert_eq!(hit.cache(), "HIT");
    assert!(hit.body == segment, "the hit's body is the origin's");
    assert_eq!(edge.metric(SENT).await, Some(before + segment.len() as f64));

    let part = fetch(
        &edge.url("/live/seg1.ts"),
        &[("range", "bytes=1000000-1999999")],
    )
    .await;
    assert_eq!(part.status, 206);
    assert!(
        part.body == segment.slice(1_000_000..2_000_000),
        "the range"
    );
    assert_eq!(
        edge.metric(SENT).await,
        Some(before + (segment.len() + 1_000_000) as f64)
    );

    fetch(&edge.url("/live/index.m3u8"), &[]).await;
    let playlist = fetch(&edge.url("/live/index.m3u8"), &[]).await;
    assert_eq!(playlist.cache(), "HIT");
    assert_eq!(playlist.body, "#EXTM3U\n");
    assert_eq!(edge.metric(FILES).await, Some(1.0), "a playlist is not");
    assert_eq!(
        edge.metric(SENT).await,
        Some(before + (segment.len() + 1_000_000) as f64),
        "nor sent from one"
    );
    assert_eq!(origin.hits_for("/live/seg1.ts"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_viewer_reading_a_segment_that_is_purged_and_refilled_gets_the_old_body_whole() {
    let origin = Upstream::start("o").await;
    let old = body(8 << 20, 0);
    let new = body(8 << 20, 0x5a);
    origin.script("/vod/seg.ts", Script::ok(&[], old.clone()));
    let top = format!("[cache]\npurge_token = \"{TOKEN}\"\n");
    let edge = cached_edge(&origin, VIDEO, &top).await;
    fetch(&edge.url("/vod/seg.ts"), &[]).await;

    // A viewer takes the hit's header and a little of its body, then stops reading: the edge
    // has queued what the socket holds and waits to send the rest.
    let mut viewer = tokio::net::TcpStream::connect(edge.http).await.unwrap();
    let request = format!("GET /vod/seg.ts HTTP/1.1\r\nHost: {}\r\n\r\n", edge.http);
    viewer.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let header_end = loop {
        let n = viewer.read(&mut buf).await.unwrap();
        assert!(n > 0, "the edge closed early");
        got.extend_from_slice(&buf[..n]);
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let header = String::from_utf8_lossy(&got[..header_end]).to_lowercase();
    assert!(header.contains("x-cache-status: hit"), "{header}");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Meanwhile the object is purged, and the origin's new body fills and is hit again.
    let purged = client()
        .post(edge.admin_url("/cache/purge?all=true"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(purged.status().as_u16(), 200);
    origin.script("/vod/seg.ts", Script::ok(&[], new.clone()));
    assert!(fetch(&edge.url("/vod/seg.ts"), &[]).await.body == new);
    let hit = fetch(&edge.url("/vod/seg.ts"), &[]).await;
    assert_eq!(hit.cache(), "HIT");
    assert!(hit.body == new, "the new hit");

    let mut rest = got.split_off(header_end);
    while rest.len() < old.len() {
        let n = tokio::time::timeout(Duration::from_secs(10), viewer.read(&mut buf))
            .await
            .expect("the rest of the body arrives")
            .unwrap();
        assert!(n > 0, "closed after {} bytes", rest.len());
        rest.extend_from_slice(&buf[..n]);
    }
    assert!(
        rest == old,
        "the first viewer got the old body, byte for byte"
    );
    edge.wait_for_metric(SENT, (old.len() + new.len()) as f64)
        .await;
    // The first viewer's hit ends with its last byte; then the purged file goes.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while edge.metric(FILES).await != Some(1.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the purged file stays open"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
