//! Viewer connections at scale: what an idle keep-alive connection costs the edge in memory,
//! and what an operator bounds: connections open at once, how long a new one may take to send
//! its request header, how long an idle one is kept, requests per connection, HTTP/2 streams;
//! each seen from a raw client, with the counts `/metrics` shows.

use crate::common;

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::edge::pool;
use common::reload::WriteStyle;
use common::tls::{cert_entry, client_config, Pki, TlsEdge};
use common::upstream::Script;
use common::{cached_edge, fetch, EdgeProc, Upstream};

// Enough that their memory shows above what the allocator already holds (with 1,000 the
// edge's RSS did not move before the first request).
const CONNECTIONS: usize = 4000;

const REQUEST: &[u8] = b"GET /live/index.m3u8 HTTP/1.1\r\nHost: tv.example.com\r\n\r\n";

/// An origin with a cacheable playlist.
async fn origin() -> Upstream {
    let origin = Upstream::start("o").await;
    origin.script(
        "/live/index.m3u8",
        Script::ok(&[("cache-control", "max-age=60")], "#EXTM3U\n"),
    );
    origin
}

/// Waits at most `limit` for the edge to close `conn`: how long it took and what the edge sent
/// before closing, or `None` if the connection is still open.
async fn closed_within(
    conn: &mut (impl AsyncRead + Unpin),
    limit: Duration,
) -> Option<(Duration, Vec<u8>)> {
    let start = Instant::now();
    let mut sent = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, conn.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((start.elapsed(), sent)),
            Ok(Ok(n)) => sent.extend_from_slice(&buf[..n]),
        }
    }
}

/// `/metrics` once it has every one of `lines`, asserted.
async fn metrics_show(edge: &EdgeProc, lines: &[&str]) -> String {
    let text = edge.metrics_with(lines).await;
    for l in lines {
        assert!(text.contains(l), "expected `{l}` in:\n{text}");
    }
    text
}

fn timeouts(listener: std::net::SocketAddr, kind: &str, n: u64) -> String {
    format!("dime_connection_timeouts_total{{kind=\"{kind}\",listener=\"{listener}\"}} {n}\n")
}

fn open(listener: std::net::SocketAddr, protocol: &str, n: u64) -> String {
    format!(
        "dime_listener_connections_open{{listener=\"{listener}\",protocol=\"{protocol}\"}} {n}\n"
    )
}

/// An HTTP/2 connection with prior knowledge (h2c) to `addr`, after one request through it.
async fn h2c(
    addr: std::net::SocketAddr,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<()>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.unwrap();
    let request = http::Request::get("http://tv.example.com/live/index.m3u8")
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    (client, driver)
}

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
    // after one. The edge reads viewers' sockets unbuffered (server.rs), about 18 and 40; a
    // kept-alive connection waits for its next request before pingora builds the request's
    // state (vendor/README.md, change 4), about 13 and 18; and a connection's task is no
    // longer sized for a TLS handshake or an HTTP/2 connection, nor holds a write buffer
    // while idle (change 7), about 1.5 and 3 (nginx: 0.5). The issue's target is 4 KiB.
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

    // One request at a time, so what is measured is what each connection keeps, not how many
    // requests' transient state the allocator held at the peak of a burst.
    for conn in &mut held {
        conn.write_all(b"GET /live/index.m3u8 HTTP/1.1\r\nHost: tv.example.com\r\n\r\n")
            .await
            .unwrap();
        let answer = read_response(conn).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = (edge.rss_kib().saturating_sub(before)) as f64 / CONNECTIONS as f64;
    assert_eq!(origin.hits_for("/live/index.m3u8"), 1);

    assert!(
        idle <= 4.0,
        "{idle:.1} KiB of RSS per idle connection before its first request"
    );
    assert!(
        used <= 4.0,
        "{used:.1} KiB of RSS per idle connection after one request"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn past_max_connections_a_new_connection_is_closed_unanswered_and_counted() {
    let origin = origin().await;
    let edge = cached_edge(&origin, "", "[server]\nmax_connections = 3\n").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(edge.http).await.unwrap());
    }
    metrics_show(&edge, &["dime_connections_open 3\n"]).await;

    // The kernel completes the handshake; the edge closes the connection before reading it.
    let mut fourth = TcpStream::connect(edge.http).await.unwrap();
    let _ = fourth.write_all(REQUEST).await;
    let (_, sent) = closed_within(&mut fourth, Duration::from_secs(3))
        .await
        .expect("the fourth connection is still open");
    assert!(sent.is_empty(), "{}", String::from_utf8_lossy(&sent));
    let refused = format!(
        "dime_connections_refused_total{{listener=\"{}\"}} 1\n",
        edge.http
    );
    metrics_show(&edge, &[&refused, "dime_connections_open 3\n"]).await;

    // The three held are served; once one closes, a new connection is too.
    held[0].write_all(REQUEST).await.unwrap();
    assert!(read_response(&mut held[0])
        .await
        .starts_with("HTTP/1.1 200"));
    drop(held.pop());
    metrics_show(&edge, &["dime_connections_open 2\n"]).await;
    let mut next = TcpStream::connect(edge.http).await.unwrap();
    next.write_all(REQUEST).await.unwrap();
    assert!(read_response(&mut next).await.starts_with("HTTP/1.1 200"));
    metrics_show(&edge, &[&refused, "dime_connections_open 3\n"]).await;

    // The limit is live: a reload that raises it lets a fourth connection in.
    edge.rewrite(
        &format!(
            "[server]\nmax_connections = 4\n\n{}[[routes]]\npath = \"/\"\npool = \"p\"\n",
            pool("p", &[origin.addr], "")
        ),
        WriteStyle::InPlace,
    );
    assert_eq!(edge.wait_reloads("applied", 1).await, 1, "{}", edge.logs());
    let mut fourth = TcpStream::connect(edge.http).await.unwrap();
    fourth.write_all(REQUEST).await.unwrap();
    assert!(read_response(&mut fourth).await.starts_with("HTTP/1.1 200"));
    metrics_show(&edge, &[&refused, "dime_connections_open 4\n"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keep_alive_connection_is_closed_after_keepalive_timeout_and_counted() {
    let origin = origin().await;
    let edge = cached_edge(&origin, "", "[server]\nkeepalive_timeout = \"1s\"\n").await;
    let mut conn = TcpStream::connect(edge.http).await.unwrap();
    conn.write_all(REQUEST).await.unwrap();
    let answer = read_response(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (after, sent) = closed_within(&mut conn, Duration::from_secs(4))
        .await
        .expect("the idle connection is still open after 4 s");
    assert!(sent.is_empty(), "{}", String::from_utf8_lossy(&sent));
    assert!(
        after >= Duration::from_millis(500),
        "closed after {after:?}"
    );
    metrics_show(
        &edge,
        &[
            &timeouts(edge.http, "keepalive", 1),
            &timeouts(edge.http, "header", 0),
        ],
    )
    .await;

    // An HTTP/2 connection with no stream open is closed after the same timeout.
    let (_client, driver) = h2c(edge.http).await;
    tokio::time::timeout(Duration::from_secs(4), driver)
        .await
        .expect("the idle HTTP/2 connection is still open after 4 s")
        .unwrap();
    metrics_show(&edge, &[&timeouts(edge.http, "keepalive", 2)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_without_a_request_header_in_time_is_closed_and_counted() {
    let origin = origin().await;
    let edge = cached_edge(&origin, "", "[server]\nheader_timeout = \"1s\"\n").await;
    // One sends nothing; one starts a request and stalls (past the 24 bytes the edge peeks at
    // for HTTP/2); one sends its request at once.
    let mut silent = TcpStream::connect(edge.http).await.unwrap();
    let mut stalled = TcpStream::connect(edge.http).await.unwrap();
    stalled
        .write_all(b"GET /live/index.m3u8 HTTP/1.1\r\nHost: tv.exa")
        .await
        .unwrap();
    let mut served = TcpStream::connect(edge.http).await.unwrap();
    served.write_all(REQUEST).await.unwrap();
    assert!(read_response(&mut served).await.starts_with("HTTP/1.1 200"));

    for conn in [&mut silent, &mut stalled] {
        let (_, sent) = closed_within(conn, Duration::from_secs(4))
            .await
            .expect("a connection with no request header is still open after 4 s");
        assert!(sent.is_empty(), "{}", String::from_utf8_lossy(&sent));
    }
    metrics_show(&edge, &[&timeouts(edge.http, "header", 2)]).await;

    // After its first request the header timeout is over; the default keep-alive timeout keeps
    // the idle connection open.
    tokio::time::sleep(Duration::from_secs(2)).await;
    served.write_all(REQUEST).await.unwrap();
    assert!(read_response(&mut served).await.starts_with("HTTP/1.1 200"));
    metrics_show(
        &edge,
        &[
            &timeouts(edge.http, "header", 2),
            &timeouts(edge.http, "keepalive", 0),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_of_keepalive_requests_is_answered_with_connection_close() {
    let origin = origin().await;
    let edge = cached_edge(&origin, "", "[server]\nkeepalive_requests = 2\n").await;
    let mut conn = TcpStream::connect(edge.http).await.unwrap();
    conn.write_all(REQUEST).await.unwrap();
    let first = read_response(&mut conn).await.to_ascii_lowercase();
    assert!(first.starts_with("http/1.1 200"), "{first}");
    assert!(!first.contains("connection: close"), "{first}");
    conn.write_all(REQUEST).await.unwrap();
    let second = read_response(&mut conn).await.to_ascii_lowercase();
    assert!(second.starts_with("http/1.1 200"), "{second}");
    assert!(second.contains("connection: close"), "{second}");
    closed_within(&mut conn, Duration::from_secs(3))
        .await
        .expect("the connection is still open after its last request");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_connection_takes_keepalive_requests_streams_then_goes_away() {
    let origin = origin().await;
    let edge = cached_edge(&origin, "", "[server]\nkeepalive_requests = 3\n").await;
    // One request is in, two more are answered, the connection is then closed.
    let (mut client, driver) = h2c(edge.http).await;
    for _ in 0..2 {
        client = client.ready().await.unwrap();
        let request = http::Request::get("http://tv.example.com/live/index.m3u8")
            .body(())
            .unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        assert_eq!(response.await.unwrap().status(), 200);
    }
    tokio::time::timeout(Duration::from_secs(3), driver)
        .await
        .expect("the connection is still open after its last request")
        .unwrap();
    let refused = match client.ready().await {
        Err(e) => e.is_go_away() || e.is_io(),
        Ok(mut ready) => {
            let request = http::Request::get("http://tv.example.com/live/index.m3u8")
                .body(())
                .unwrap();
            ready.send_request(request, true).is_err()
        }
    };
    assert!(refused, "a fourth request was taken");
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_clients_are_told_the_configured_max_concurrent_streams() {
    let origin = origin().await;
    let edge = cached_edge(&origin, "", "[server]\nhttp2_max_concurrent_streams = 7\n").await;
    let (client, _driver) = h2c(edge.http).await;
    assert_eq!(client.current_max_send_streams(), 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn open_connections_are_counted_by_listener_and_protocol() {
    let origin = origin().await;
    let edge = cached_edge(&origin, "", "").await;
    let mut http1 = TcpStream::connect(edge.http).await.unwrap();
    http1.write_all(REQUEST).await.unwrap();
    assert!(read_response(&mut http1).await.starts_with("HTTP/1.1 200"));
    let (client, driver) = h2c(edge.http).await;
    // nginx's default, which the edge keeps.
    assert_eq!(client.current_max_send_streams(), 128);
    metrics_show(
        &edge,
        &[
            &open(edge.http, "http/1.1", 1),
            &open(edge.http, "h2", 1),
            "dime_connections_open 2\n",
        ],
    )
    .await;
    drop(client);
    driver.abort();
    drop(http1);
    metrics_show(
        &edge,
        &[
            &open(edge.http, "http/1.1", 0),
            &open(edge.http, "h2", 0),
            "dime_connections_open 0\n",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn over_tls_alpn_names_the_protocol_and_the_header_timeout_follows_the_handshake() {
    let origin = origin().await;
    let pki = Pki::new();
    let pair = pki.issue("a", &["a.test"]);
    let body = format!(
        "[server]\nheader_timeout = \"1s\"\n\n{}{}[[routes]]\npath = \"/\"\npool = \"p\"\n",
        cert_entry(&pair, None),
        pool("p", &[origin.addr], "")
    );
    let edge = TlsEdge::start(pki.dir.path(), &body).await;
    let connect = |alpn: &'static [u8]| {
        let config = client_config(pki.ca_pem(), &[alpn]);
        async move {
            let tcp = TcpStream::connect(edge.https).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("a.test").unwrap();
            tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .unwrap()
        }
    };
    let _h2 = connect(b"h2").await;
    let mut http1 = connect(b"http/1.1").await;
    metrics_show(
        &edge.edge,
        &[&open(edge.https, "h2", 1), &open(edge.https, "http/1.1", 1)],
    )
    .await;
    // The HTTP/1.1 one sends no request after its handshake.
    let (_, sent) = closed_within(&mut http1, Duration::from_secs(4))
        .await
        .expect("a TLS connection with no request is still open after 4 s");
    assert!(sent.is_empty(), "{}", String::from_utf8_lossy(&sent));
    metrics_show(
        &edge.edge,
        &[
            &timeouts(edge.https, "header", 1),
            &open(edge.https, "http/1.1", 0),
            &open(edge.https, "h2", 1),
        ],
    )
    .await;
}
