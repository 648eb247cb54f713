//! Viewer connections at scale: what an idle keep-alive connection costs the edge in memory,
//! before its first request and between requests.

use crate::common;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::upstream::Script;
use common::{cached_edge, fetch, Upstream};

const CONNECTIONS: usize = 1000;

/// Reads one response with a `Content-Length` body off `conn`, leaving the connection open.
async fn read_response(conn: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if seen.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keep_alive_connection_costs_the_edge_little_memory() {
    // pingora gives every accepted connection a 64 KiB read buffer and keeps it while the
    // connection idles: 83 KiB of RSS per idle connection before its first request, 106 KiB
    // after one. The edge reads viewers' sockets unbuffered (server.rs), about 18 and 40.
    let origin = Upstream::start("o").await;
    origin.script(
        "/live/index.m3u8",
        Script::ok(&[("cache-control", "max-age=60")], "#EXTM3U\n"),
    );
    let edge = cached_edge(&origin, "", "").await;
    let warm = fetch(&edge.url("/live/index.m3u8"), &[("host", "tv.example.com")]).await;
    assert_eq!(warm.status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let before = edge.rss_kib();
    let mut held = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        held.push(TcpStream::connect(edge.http).await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = (edge.rss_kib().saturating_sub(before)) as f64 / CONNECTIONS as f64;

    for conn in &mut held {
        conn.write_all(b"GET /live/index.m3u8 HTTP/1.1\r\nHost: tv.example.com\r\n\r\n")
            .await
            .unwrap();
    }
    for conn in &mut held {
        let answer = read_response(conn).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = (edge.rss_kib().saturating_sub(before)) as f64 / CONNECTIONS as f64;
    assert_eq!(origin.hits_for("/live/index.m3u8"), 1);

    assert!(
        idle < 32.0,
        "{idle:.1} KiB of RSS per idle connection before its first request"
    );
    assert!(
        used < 64.0,
        "{used:.1} KiB of RSS per idle connection after one request"
    );
}
