//! Slow, aborting and fast viewers on the same new live segments for a minute: the fast ones
//! get each segment at the origin's pace, not the slow ones'; the slow ones cost the edge their
//! socket buffers, not a copy of the segment each; every fill completes and is stored once.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

use common::upstream::Script;
use common::Upstream;

const SEGMENT: usize = 512 * 1024;
/// The origin sends a segment in 16 pieces 30 ms apart: about half a second.
const PIECE: usize = SEGMENT / 16;
const PIECE_DELAY: Duration = Duration::from_millis(30);
/// A slow viewer reads 64 KB a second: 8 s for one segment.
const SLOW_RATE: f64 = 64_000.0;
const RUN: Duration = Duration::from_secs(60);

fn segment_path(n: u64) -> String {
    format!("/live/seg-{n}.ts")
}

/// A fast viewer: each new segment as soon as it is published, read at once. Returns the time
/// each took to its last byte, and what failed.
async fn fast_viewer(
    edge: String,
    mut newest: watch::Receiver<u64>,
    until: Instant,
) -> (Vec<Duration>, Vec<String>) {
    let client = common::client();
    let (mut times, mut failed) = (Vec::new(), Vec::new());
    while Instant::now() < until {
        if newest.changed().await.is_err() {
            break;
        }
        let n = *newest.borrow_and_update();
        let url = format!("{edge}{}", segment_path(n));
        let started = Instant::now();
        match client.get(&url).send().await {
            Ok(r) if r.status() == 200 => match r.bytes().await {
                Ok(b) if b.len() == SEGMENT => times.push(started.elapsed()),
                Ok(b) => failed.push(format!("{url}: {} bytes", b.len())),
                Err(e) => failed.push(format!("{url}: {e}")),
            },
            Ok(r) => failed.push(format!("{url}: {}", r.status())),
            Err(e) => failed.push(format!("{url}: {e}")),
        }
    }
    (times, failed)
}

/// What a slow viewer did.
#[derive(Default)]
struct Slow {
    /// Segments read whole.
    whole: usize,
    /// Segments given up on purpose after 64 KiB.
    aborted: usize,
    /// Bytes read, and the seconds spent reading them.
    bytes: usize,
    seconds: f64,
    failed: Vec<String>,
}

/// Reads one response's header from `stream`: its status and Content-Length, and the body
/// bytes that came with it.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<(u16, usize, usize)> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::other("closed before the header ended"));
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
            let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
            let length = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            return Ok((status, length, head.len() - end - 4));
        }
    }
}

/// A slow viewer: the newest segment, read at 64 KB/s through an 8 KiB receive buffer, then
/// the newest again on the same connection. An aborting one closes each connection after
/// 64 KiB and opens another for the next segment.
async fn slow_viewer(
    edge: SocketAddr,
    newest: watch::Receiver<u64>,
    until: Instant,
    aborts: bool,
) -> Slow {
    let mut slow = Slow::default();
    let mut stream: Option<TcpStream> = None;
    while Instant::now() < until {
        let n = *newest.borrow();
        let mut s = match stream.take() {
            Some(s) => s,
            None => {
                let socket = TcpSocket::new_v4().unwrap();
                socket.set_recv_buffer_size(8192).unwrap();
                match socket.connect(edge).await {
                    Ok(s) => s,
                    Err(e) => {
                        slow.failed.push(format!("connect: {e}"));
                        continue;
                    }
                }
            }
        };
        // The Host the fast viewers send: one cache key for all.
        let request = format!("GET {} HTTP/1.1\r\nHost: {edge}\r\n\r\n", segment_path(n));
        if let Err(e) = s.write_all(request.as_bytes()).await {
            slow.failed.push(format!("seg {n}: {e}"));
            continue;
        }
        let started = Instant::now();
        let (status, length, mut read) = match read_head(&mut s).await {
            Ok(head) => head,
            Err(e) => {
                slow.failed.push(format!("seg {n}: {e}"));
                continue;
            }
        };
        if status != 200 || length != SEGMENT {
            slow.failed
                .push(format!("seg {n}: status {status}, length {length}"));
            continue;
        }
        let mut buf = vec![0u8; 8192];
        let mut broken = false;
        while read < length {
            if aborts && read >= 64 * 1024 {
                break;
            }
            // Paced: byte `read` is due at `read / rate` seconds.
            let due = started + Duration::from_secs_f64(read as f64 / SLOW_RATE);
            tokio::time::sleep_until(due.into()).await;
            let want = (length - read).min(buf.len());
            match s.read(&mut buf[..want]).await {
                Ok(0) => {
                    slow.failed
                        .push(format!("seg {n}: closed at {read} of {length}"));
                    broken = true;
                    break;
                }
                Ok(got) => read += got,
                Err(e) => {
                    slow.failed.push(format!("seg {n}: {e} at {read}"));
                    broken = true;
                    break;
                }
            }
        }
        slow.bytes += read;
        slow.seconds += started.elapsed().as_secs_f64();
        if broken {
            continue;
        }
        if read < length {
            slow.aborted += 1;
            drop(s);
        } else {
            slow.whole += 1;
            stream = Some(s);
        }
    }
    slow
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_aborting_viewers_do_not_pace_fast_ones_or_hold_copies_of_the_fill() {
    let origin = Upstream::start("o").await;
    let edge = common::cached_edge(&origin, "mode = \"video\"\ntarget_duration = \"1s\"", "").await;
    edge.wait_ready().await;
    let publish = |n: u64| {
        let body: Vec<u8> = (0..SEGMENT).map(|i| ((i as u64 + n) % 251) as u8).collect();
        let mut script = Script::ok(&[("content-type", "video/mp2t")], Bytes::from(body));
        script.chunk = PIECE;
        script.chunk_delay = PIECE_DELAY;
        origin.script(&segment_path(n), script);
    };
    publish(0);
    let idle = edge.rss_kib();
    let (tx, rx) = watch::channel(0u64);
    let until = Instant::now() + RUN;

    let fast: Vec<_> = (0..100)
        .map(|_| tokio::spawn(fast_viewer(edge.url(""), rx.clone(), until)))
        .collect();
    let slow: Vec<_> = (0..100)
        .map(|i| tokio::spawn(slow_viewer(edge.http, rx.clone(), until, i % 5 == 0)))
        .collect();
    // A new segment every second, and the edge's memory sampled meanwhile.
    let mut peak = idle;
    let mut newest = 0;
    while Instant::now() < until {
        let second = Instant::now() + Duration::from_secs(1);
        while Instant::now() < second {
            peak = peak.max(edge.rss_kib());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        newest += 1;
        publish(newest);
        tx.send(newest).unwrap();
    }
    let mut times = Vec::new();
    let mut failed = Vec::new();
    for f in fast {
        let (t, e) = f.await.unwrap();
        times.extend(t);
        failed.extend(e);
    }
    let mut slow_total = Slow::default();
    for s in slow {
        let s = s.await.unwrap();
        slow_total.whole += s.whole;
        slow_total.aborted += s.aborted;
        slow_total.bytes += s.bytes;
        slow_total.seconds += s.seconds;
        failed.extend(s.failed);
    }
    peak = peak.max(edge.rss_kib());
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );

    // Fast viewers: at the origin's pace (half a second; 4 s leaves room for a loaded CI
    // machine), far from a slow viewer's 8 s.
    times.sort();
    assert!(
        times.len() > 3000,
        "fast viewers read only {} segments",
        times.len()
    );
    let (p50, p95) = (percentile(&times, 0.5), percentile(&times, 0.95));
    assert!(p95 < Duration::from_secs(4), "fast viewers' p95 {p95:?}");
    // Slow viewers were slow, and got whole segments (the aborting fifth got 64 KiB each).
    let rate = slow_total.bytes as f64 / slow_total.seconds;
    assert!(rate < SLOW_RATE * 1.2, "slow viewers read at {rate:.0} B/s");
    assert!(
        slow_total.whole >= 100,
        "slow viewers finished {} segments",
        slow_total.whole
    );
    assert!(slow_total.aborted >= 100, "{} aborts", slow_total.aborted);

    // Every fill completed once: each segment was asked of the origin once and is stored.
    let mut stored = 0;
    let mut twice = Vec::new();
    for n in 0..newest {
        let path = segment_path(n);
        match origin.hits_for(&path) {
            0 => continue,
            1 => {}
            asked => twice.push(format!("{path}: {asked}")),
        }
        let again = common::fetch(&edge.url(&path), &[]).await;
        assert_eq!(
            (again.cache(), again.body.len()),
            ("HIT", SEGMENT),
            "{path}:\n{}",
            edge.logs()
                .lines()
                .filter(|l| l.contains(&path) && !l.contains("access"))
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
        stored += 1;
    }
    // Each segment once: a loaded CI run once saw 7 of 60 asked twice, a miss that took the
    // lock just after the fill let its waiters go (cache::lock closes that gap).
    assert!(
        twice.is_empty(),
        "segments the origin was asked for more than once: {twice:?}\n{}",
        edge.logs()
            .lines()
            .filter(|l| l.contains("WARN"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Memory: the stored segments, and little per slow viewer beside them.
    let growth_kib = peak - idle;
    let stored_kib = (stored * SEGMENT / 1024) as u64;
    let allowed_kib = stored_kib + 100 * 128 + 40 * 1024;
    assert!(
        growth_kib <= allowed_kib,
        "RSS grew {growth_kib} KiB; {stored_kib} KiB stored, {allowed_kib} KiB allowed"
    );
    common::figure(
        "100 fast, 80 slow (64 KB/s) and 20 aborting viewers on new 512 KiB live segments for 60 s",
        &format!(
            "fast: {} segments, p50 {} ms, p95 {} ms (origin sends one in ~480 ms); slow: {} whole at {:.0} KB/s, {} aborted; \
             {stored} segments stored, each asked of the origin once; RSS +{} MiB ({} MiB stored)",
            times.len(),
            p50.as_millis(),
            p95.as_millis(),
            slow_total.whole,
            rate / 1000.0,
            slow_total.aborted,
            growth_kib / 1024,
            stored_kib / 1024,
        ),
    );
}
