//! Connection floods: 10,000 idle keep-alive connections and 500 slowloris clients at once,
//! and an edge out of file descriptors. Other viewers' hits stay fast, the slowloris clients
//! are cut at `server.header_timeout` and counted, and running out of descriptors refuses
//! connections (logged) without taking the edge down. The flood runs alone
//! (`.config/nextest.toml`): its latency figure means nothing beside other tests.

use crate::common;

use std::time::{Duration, Instant};

use common::{cached_edge, client, fetch, EdgeProc, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const IDLE: usize = 10_000;
const SLOWLORIS: usize = 500;

/// Raises this process's soft limit on open files to its hard limit, which must allow `need`.
fn open_files_for(need: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(
        lim.rlim_cur >= need,
        "this test needs {need} open files; the hard limit (ulimit -Hn) is {}",
        lim.rlim_cur
    );
}

/// A video edge with `server` settings in front of a new origin, and the URL of a stored hit.
async fn edge_with(server: &str) -> (Upstream, EdgeProc, String) {
    let origin = Upstream::start("o").await;
    let edge = cached_edge(&origin, "mode = \"video\"", server).await;
    edge.wait_ready().await;
    let hit = edge.url("/vod/hit.ts");
    fetch(&hit, &[]).await;
    (origin, edge, hit)
}

/// A connection that has sent one request and read the start of its answer.
async fn served_connection(edge: &EdgeProc) -> Option<TcpStream> {
    let mut s = TcpStream::connect(edge.http).await.ok()?;
    let req = format!("GET /vod/hit.ts HTTP/1.1\r\nHost: {}\r\n\r\n", edge.http);
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = [0u8; 4096];
    match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(s),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_and_slowloris_floods_leave_other_viewers_fast() {
    open_files_for(IDLE as u64 + SLOWLORIS as u64 + 200);
    let (_origin, edge, hit) =
        edge_with("[server]\nmax_connections = 12000\nheader_timeout = \"2s\"\n\n").await;
    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let s = served_connection(&edge).await;
        idle.push(s.unwrap_or_else(|| panic!("idle connection {i} was not served")));
    }
    // Each sends a header a byte every 300 ms: 2 s of header timeout cut them all.
    let addr = edge.http;
    let slowloris: Vec<_> = (0..SLOWLORIS)
        .map(|_| {
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                for b in b"GET /vod/hit.ts HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa" {
                    if s.write_all(&[*b]).await.is_err() {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                false
            })
        })
        .collect();
    let viewer = client();
    let mut latencies = Vec::new();
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let start = Instant::now();
        let r = viewer.get(&hit).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        latencies.push(start.elapsed());
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    assert!(
        latencies.len() >= 500 && p99 < Duration::from_millis(10),
        "{} hits, p99 {p99:?}",
        latencies.len()
    );
    let mut cut = 0;
    for s in slowloris {
        cut += usize::from(s.await.unwrap());
    }
    assert_eq!(cut, SLOWLORIS, "slowloris clients not cut");
    let metrics = edge.metrics().await;
    let listener = edge.http;
    let timeouts = format!(
        "dime_connection_timeouts_total{{kind=\"header\",listener=\"{listener}\"}} {SLOWLORIS}"
    );
    assert!(metrics.contains(&timeouts), "{metrics}");
    // The idle ones are still there, each one request away from its next hit.
    let open = edge
        .metric(&format!(
            "dime_listener_connections_open{{listener=\"{listener}\",protocol=\"http/1.1\"}}"
        ))
        .await;
    assert!(open >= Some(IDLE as f64), "{open:?} open");
    drop(idle);
    common::figure(
        "10,000 idle keep-alive connections and 500 slowloris clients",
        &format!(
            "another viewer's hits: p99 {:.1} ms over {}; slowloris cut at header_timeout: {cut} of {SLOWLORIS}; idle still open",
            p99.as_secs_f64() * 1000.0,
            latencies.len()
        ),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_file_descriptors_the_edge_refuses_connections_and_recovers() {
    open_files_for(1000);
    let (_origin, edge, hit) = edge_with("").await;
    // The running edge may now hold 200 files: listeners, its log, a few connections.
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &edge.pid().to_string(), "--nofile=200:200"])
        .status()
        .expect("prlimit (util-linux)");
    assert!(limited.success());
    let mut held = Vec::new();
    let mut refused = 0;
    // Until five in a row go unanswered (each waits 500 ms): the limit is reached.
    while refused < 5 && held.len() < 300 {
        match served_connection(&edge).await {
            Some(s) => {
                held.push(s);
                refused = 0;
            }
            None => refused += 1,
        }
    }
    assert!(refused == 5 && !held.is_empty(), "{} served", held.len());
    assert!(
        edge.logs().contains("Too many open files"),
        "{}",
        edge.logs()
    );
    // Descriptors free again: the edge serves as before.
    let served = held.len();
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client().get(&hit).send().await {
            Ok(r) if r.status() == 200 => break,
            other => assert!(Instant::now() < deadline, "not serving again: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(edge.healthz().await, 200);
    common::figure(
        "Out of file descriptors (the edge's limit lowered to 200)",
        &format!(
            "{served} connections served, then refused and logged; serving again once they closed"
        ),
    );
}
