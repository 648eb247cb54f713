//! Interim (1xx) responses: a 103 Early Hints from the origin reaches the viewer whose request
//! brought it, on a cached route as on an uncached one; it is never stored and never stands in
//! for the answer (RFC 9110 §15.2, RFC 9111 §3, RFC 8297).

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::raw_origin::{End, RawOrigin};
use common::EdgeProc;

const HINTS: &[u8] = b"HTTP/1.1 103 Early Hints\r\nLink: </init.mp4>; rel=preload\r\n\r\n";
const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: 5\r\n\
Connection: close\r\n\r\nhello";

async fn edge_for(origin: &RawOrigin, cache: &str) -> EdgeProc {
    EdgeProc::start(&format!(
        "[pools.p]\nbackends = [\"{}\"]\nretries = 0\n\n\
         [[routes]]\npath = \"/\"\npool = \"p\"\n\n[routes.cache]\n{cache}\n",
        origin.addr
    ))
    .await
}

/// Everything the edge sends for one request, read until it closes the connection.
async fn raw_get(edge: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(edge).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: a.org\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut response))
        .await
        .expect("the edge answers within 10 s")
        .unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

/// The 103 first, with the origin's hint and none of the edge's own answer fields, then the 200.
fn assert_hinted(response: &str, context: &str) {
    let (interim, answer) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{context}: no header block in {response:?}"));
    assert!(
        interim.starts_with("HTTP/1.1 103"),
        "{context}: the viewer got no 103 first: {response:?}"
    );
    let interim = interim.to_ascii_lowercase();
    assert!(
        interim.contains("link: </init.mp4>; rel=preload"),
        "{interim}"
    );
    assert!(!interim.contains("x-cache-status"), "{context}: {interim}");
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{context}: {response:?}"
    );
    assert!(answer.ends_with("hello"), "{context}: {response:?}");
}

/// The 103 and the 200 reach the edge in one read, as from an origin that has its answer
/// ready: the viewer of a cacheable miss still gets the 103 before its answer. The stored
/// answer is served alone.
#[tokio::test(flavor = "multi_thread")]
async fn early_hints_on_a_cacheable_miss_reach_the_viewer_and_are_not_stored() {
    for cache in ["", "mode = \"off\""] {
        let origin = RawOrigin::start([HINTS, ANSWER].concat(), End::Close).await;
        let edge = edge_for(&origin, cache).await;
        for round in 0..5 {
            let path = format!("/seg{round}.m4s");
            let first = raw_get(edge.http, &path).await;
            assert_hinted(&first, &format!("[{cache}] {path}, first viewer"));
            if cache.contains("off") {
                continue;
            }
            let second = raw_get(edge.http, &path).await;
            assert!(
                second.starts_with("HTTP/1.1 200") && !second.contains(" 103 "),
                "[{cache}] {path}: the stored answer came with an interim response: {second:?}"
            );
            assert!(
                second.to_ascii_lowercase().contains("x-cache-status: hit"),
                "{second}"
            );
        }
    }
}

/// Viewers wait on a fill whose origin sends a 103 at once and its answer later: the 103 does
/// not release them as if the fill were over (each would then ask the origin itself); they are
/// served from the one fetch.
#[tokio::test(flavor = "multi_thread")]
async fn viewers_waiting_on_a_fill_are_not_released_by_its_early_hints() {
    for cache in ["", "background_fill = true"] {
        let origin = RawOrigin::start_paced(
            vec![HINTS.to_vec(), ANSWER.to_vec()],
            Duration::from_millis(600),
            End::Close,
        )
        .await;
        let edge = edge_for(&origin, cache).await;
        let viewers: Vec<_> = (0..6)
            .map(|_| tokio::spawn(raw_get(edge.http, "/live/seg7.m4s")))
            .collect();
        for viewer in viewers {
            let response = viewer.await.unwrap();
            assert!(response.contains("HTTP/1.1 200"), "[{cache}] {response:?}");
            assert!(response.ends_with("hello"), "[{cache}] {response:?}");
        }
        assert_eq!(
            origin.requests(),
            1,
            "[{cache}] the waiting viewers were let onto the origin\n{}",
            edge.logs()
        );
    }
}
