//! What the edge adds and removes on the way through: forwarding headers, Via, hop-by-hop.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::edge::pool;
use common::{client, fresh_client, EdgeProc, Upstream};

async fn edge_for(origin: &Upstream) -> EdgeProc {
    EdgeProc::start(&(pool("p", &[origin.addr], "") + "[[routes]]\npath = \"/\"\npool = \"p\"\n"))
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarding_headers_and_via_are_added() {
    let origin = Upstream::start("o").await;
    let edge = edge_for(&origin).await;
    let r = client()
        .get(edge.url("/a"))
        .header("host", "videos.example.com")
        .header("x-forwarded-for", "203.0.113.7")
        .header("via", "1.1 upstream-proxy")
        .header("forwarded", "for=203.0.113.7;proto=https")
        .header("x-real-ip", "198.51.100.66")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Via on the response too: RFC 9110 §7.6.3 asks it of every forwarded message.
    assert_eq!(r.headers()["via"], "1.1 dime");
    let seen = origin.last();
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "videos.example.com");
    assert_eq!(seen.headers["host"], "videos.example.com");
    assert_eq!(seen.headers["via"], "1.1 upstream-proxy, 1.1 dime");
    // RFC 7239 §4: appended like X-Forwarded-For, so earlier proxies stay visible.
    assert_eq!(
        seen.headers["forwarded"],
        "for=203.0.113.7;proto=https, for=127.0.0.1;proto=http;host=videos.example.com"
    );
    // X-Real-IP is not a list: whatever a viewer sends would be taken as its address.
    assert!(
        !seen.headers.contains_key("x-real-ip"),
        "{:?}",
        seen.headers
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_forwarded_header_is_replaced_not_extended() {
    let origin = Upstream::start("o").await;
    let edge = edge_for(&origin).await;
    let r = client()
        .get(edge.url("/f"))
        .header("host", "[::1]:8080")
        .header("forwarded", "for=\"unterminated")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = origin.last();
    assert_eq!(
        seen.headers.get_all("forwarded").iter().collect::<Vec<_>>(),
        ["for=127.0.0.1;proto=http;host=\"[::1]:8080\""]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hop_by_hop_headers_do_not_reach_the_origin() {
    let origin = Upstream::start("o").await;
    let edge = edge_for(&origin).await;
    // Raw HTTP/1.1 so the client library cannot tidy the headers first.
    let mut s = TcpStream::connect(edge.http).unwrap();
    s.write_all(
        b"GET /hop HTTP/1.1\r\nHost: a.org\r\nConnection: close, X-Private-Hop\r\n\
X-Private-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\
TE: trailers\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nX-Normal: kept\r\n\r\n",
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = origin.last();
    for h in [
        "x-private-hop",
        "keep-alive",
        "proxy-connection",
        "te",
        "proxy-authorization",
        "connection",
    ] {
        assert!(
            !seen.headers.contains_key(h),
            "{h} reached the origin: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.headers["x-normal"], "kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_connections_are_kept_alive_and_reused() {
    let origin = Upstream::start("o").await;
    let edge = edge_for(&origin).await;
    // Each viewer request on its own connection: the edge must still reuse its origin ones.
    let viewers = fresh_client();
    for i in 0..50 {
        let r = viewers
            .get(edge.url(&format!("/k{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    assert_eq!(origin.hits(), 50);
    // Health checks open their own connections; requests must not add one each.
    assert!(
        origin.connections() < 25,
        "{} origin connections for 50 requests",
        origin.connections()
    );
}
