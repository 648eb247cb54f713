//! Fills under slow viewers: the origin is read at its own speed, every viewer reads the cache at
//! its own pace, fills in progress stay inside their memory budget, and a viewer that stops
//! reading is cut off.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::upstream::Script;
use common::{fetch, EdgeProc, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A viewer on a raw HTTP/1.1 connection with a small receive buffer, so the edge feels how
/// fast it reads.
struct RawViewer {
    stream: TcpStream,
    /// Bytes read so far, response header included.
    read: usize,
}

impl RawViewer {
    async fn get(edge: SocketAddr, path: &str) -> RawViewer {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(8 * 1024).unwrap();
        let mut stream = socket.connect(edge).await.unwrap();
        // The host reqwest sends too, so both kinds of viewer share one cache key.
        let req = format!("GET {path} HTTP/1.1\r\nHost: {edge}\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        RawViewer { stream, read: 0 }
    }

    /// Reads about `rate` bytes per second for `time`; returns false once the edge closed.
    async fn trickle(&mut self, rate: usize, time: Duration) -> bool {
        let step = Duration::from_millis(100);
        let per_step = rate / 10;
        let deadline = Instant::now() + time;
        let mut buf = vec![0u8; per_step.max(1)];
        while Instant::now() < deadline {
            let mut got = 0;
            while got < per_step {
                match tokio::time::timeout(
                    Duration::from_secs(10),
                    self.stream.read(&mut buf[..per_step - got]),
                )
                .await
                {
                    Ok(Ok(0)) | Ok(Err(_)) => return false,
                    Ok(Ok(n)) => got += n,
                    Err(_) => panic!("the edge sent nothing for 10 s"),
                }
            }
            self.read += got;
            tokio::time::sleep(step).await;
        }
        true
    }

    /// Reads whatever is left until the edge closes or `limit` passes; returns the bytes read.
    async fn drain(&mut self, limit: Duration) -> Option<usize> {
        let mut buf = vec![0u8; 64 * 1024];
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Some(self.read),
                Ok(Ok(n)) => self.read += n,
                Err(_) => return None,
            }
        }
    }
}

const MIB: usize = 1 << 20;

fn body(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

/// One `video` route on `origin`, with `extra` lines in its cache table and `top` before it.
async fn video_edge(origin: &Upstream, extra: &str, top: &str) -> EdgeProc {
    common::cached_edge(origin, &format!("mode = \"video\"\n{extra}"), top).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_first_viewer_does_not_pace_the_fill_for_fast_viewers() {
    let origin = Upstream::start("o").await;
    let object = body(20 * MIB);
    origin.script(
        "/vod/big.mp4",
        Script::ok(&[("cache-control", "max-age=3600")], object.clone()),
    );
    let edge = video_edge(&origin, "", "").await;

    // Given a viewer reading at 100 KB/s who starts the fill,
    let mut slow = RawViewer::get(edge.http, "/vod/big.mp4").await;
    assert!(slow.trickle(100_000, Duration::from_secs(1)).await);

    // when two fast viewers join a second later,
    let started = Instant::now();
    let url = edge.url("/vod/big.mp4");
    let fast = |url: String| async move {
        tokio::time::timeout(Duration::from_secs(20), fetch(&url, &[])).await
    };
    let (a, b) = tokio::join!(fast(url.clone()), fast(url.clone()));
    let fast_time = started.elapsed();
    let (a, b) = (
        a.expect("a fast viewer was paced by the slow one (20 s)"),
        b.expect("a fast viewer was paced by the slow one (20 s)"),
    );
    assert_eq!(a.body, object, "fast viewer A got other bytes");
    assert_eq!(b.body, object, "fast viewer B got other bytes");

    // then they finish at least 10x faster than the slow one reads (20 MB at 100 KB/s is 200 s),
    let fast_rate = object.len() as f64 / fast_time.as_secs_f64();
    assert!(
        fast_rate >= 10.0 * 100_000.0,
        "fast viewers got {fast_rate:.0} B/s, under 10x the slow viewer's 100 KB/s"
    );
    // and the object is cached while the slow viewer is still reading, from one origin request.
    assert!(slow.trickle(100_000, Duration::from_millis(300)).await);
    assert!(slow.read < object.len() / 2, "the slow viewer was not slow");
    let again = fetch(&url, &[]).await;
    assert_eq!(again.cache(), "HIT");
    assert_eq!(origin.hits_for("/vod/big.mp4"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_viewer_who_started_a_fill_leaving_does_not_cut_off_the_others() {
    let origin = Upstream::start("o").await;
    let object = body(4 * MIB);
    let mut script = Script::ok(&[("cache-control", "max-age=3600")], object.clone());
    // About 2 s for the whole body, so the first viewer can leave in the middle.
    script.chunk = 128 * 1024;
    script.chunk_delay = Duration::from_millis(60);
    origin.script("/vod/mid.mp4", script);
    let edge = video_edge(&origin, "", "").await;

    let mut first = RawViewer::get(edge.http, "/vod/mid.mp4").await;
    assert!(first.trickle(100_000, Duration::from_millis(300)).await);
    let second = tokio::spawn({
        let url = edge.url("/vod/mid.mp4");
        async move { fetch(&url, &[]).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(first);

    let second = second.await.unwrap();
    assert_eq!(second.status, 200);
    assert_eq!(
        second.body, object,
        "the second viewer's body was cut or corrupted"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fetch(&edge.url("/vod/mid.mp4"), &[]).await.cache(), "HIT");
    assert_eq!(origin.hits_for("/vod/mid.mp4"), 1);
}

/// A fill whose only viewer leaves: `abandoned_fill` decides whether it still completes.
async fn viewer_leaves_a_slow_fill(setting: &str) -> (Upstream, EdgeProc) {
    let origin = Upstream::start("o").await;
    let mut script = Script::ok(&[("cache-control", "max-age=3600")], body(2 * MIB));
    script.chunk = 64 * 1024;
    script.chunk_delay = Duration::from_millis(40);
    origin.script("/vod/left.mp4", script);
    let edge = video_edge(&origin, setting, "").await;
    let mut only = RawViewer::get(edge.http, "/vod/left.mp4").await;
    assert!(only.trickle(100_000, Duration::from_millis(300)).await);
    drop(only);
    // The whole body takes about 1.3 s from the origin.
    tokio::time::sleep(Duration::from_secs(2)).await;
    (origin, edge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fill_left_by_its_only_viewer_completes_by_default() {
    let (origin, edge) = viewer_leaves_a_slow_fill("").await;
    assert_eq!(fetch(&edge.url("/vod/left.mp4"), &[]).await.cache(), "HIT");
    assert_eq!(origin.hits_for("/vod/left.mp4"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fill_left_by_its_only_viewer_is_aborted_when_the_route_says_so() {
    let (origin, edge) = viewer_leaves_a_slow_fill("abandoned_fill = \"abort\"").await;
    let next = fetch(&edge.url("/vod/left.mp4"), &[]).await;
    assert_eq!(next.cache(), "MISS");
    assert_eq!(next.body.len(), 2 * MIB);
    assert_eq!(origin.hits_for("/vod/left.mp4"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forty_slow_readers_of_large_objects_stay_inside_the_memory_bound() {
    let origin = Upstream::start("o").await;
    let large = body(60 * MIB);
    for i in 0..40 {
        origin.script(
            &format!("/vod/large{i}.mp4"),
            Script::ok(&[("cache-control", "max-age=3600")], large.clone()),
        );
    }
    for i in 0..10 {
        origin.script(
            &format!("/vod/small{i}.ts"),
            Script::ok(&[("cache-control", "max-age=3600")], body(100 * 1024)),
        );
    }
    let edge = video_edge(&origin, "", "[cache]\nmemory = \"64MiB\"\n").await;
    for i in 0..10 {
        assert_eq!(
            fetch(&edge.url(&format!("/vod/small{i}.ts")), &[])
                .await
                .status,
            200
        );
    }
    let before = edge.rss_kib();

    // Forty viewers each start a 60 MiB object and read it at 50 KB/s,
    let mut readers = Vec::new();
    for i in 0..40 {
        readers.push(RawViewer::get(edge.http, &format!("/vod/large{i}.mp4")).await);
    }
    let trickle = tokio::spawn(async move {
        let all = readers
            .iter_mut()
            .map(|r| r.trickle(50_000, Duration::from_secs(4)));
        let alive = futures_util::future::join_all(all).await;
        (readers, alive)
    });
    // while fast viewers of other objects keep asking.
    let mut peak = before;
    for _ in 0..8 {
        for i in 0..10 {
            let f = fetch(&edge.url(&format!("/vod/small{i}.ts")), &[]).await;
            assert_eq!(
                f.cache(),
                "HIT",
                "a fast viewer lost its hit on small{i}.ts"
            );
        }
        peak = peak.max(edge.rss_kib());
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let (readers, alive) = trickle.await.unwrap();
    peak = peak.max(edge.rss_kib());
    assert!(alive.iter().all(|a| *a), "a slow reader was cut off");
    assert!(readers.iter().all(|r| r.read > 100_000));
    assert!(
        peak < 200 * 1024,
        "edge RSS reached {peak} KiB (started at {before} KiB) with 40 slow fills"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_viewer_that_stops_reading_is_cut_off_after_send_timeout() {
    let origin = Upstream::start("o").await;
    let object = body(8 * MIB);
    origin.script(
        "/vod/stall.mp4",
        Script::ok(&[("cache-control", "max-age=3600")], object.clone()),
    );
    let edge = video_edge(&origin, "", "[server]\nsend_timeout = \"1s\"\n").await;
    assert_eq!(
        fetch(&edge.url("/vod/stall.mp4"), &[]).await.cache(),
        "MISS"
    );

    let mut stalled = RawViewer::get(edge.http, "/vod/stall.mp4").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let read = stalled
        .drain(Duration::from_secs(10))
        .await
        .expect("the edge kept a viewer that read nothing for 4 s");
    assert!(
        read < object.len(),
        "the whole body arrived: the viewer was not cut off"
    );
    let in_flight = edge.metric("dime_requests_in_flight").await.unwrap();
    assert_eq!(in_flight, 0.0);
}
