//! A fresh hit's header kept with its object in wire form (`edge/hit_header.rs`): the same
//! bytes a hit built field by field sends, and rebuilt when a reload changes the route.

use crate::common;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::edge::pool;
use common::reload::WriteStyle;
use common::upstream::Script;
use common::{EdgeProc, Upstream};

/// One raw HTTP/1.1 request on a new connection: the status line, the header fields in the
/// order they came, the body, and whether the edge then closed the connection.
struct Raw {
    status_line: String,
    fields: Vec<(String, String)>,
    body: Vec<u8>,
    closed: bool,
}

impl Raw {
    fn field(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The fields as sent, less `Age`.
    fn without_age(&self) -> Vec<(String, String)> {
        let mut fields = self.fields.clone();
        fields.retain(|(n, _)| !n.eq_ignore_ascii_case("age"));
        fields
    }
}

async fn raw(edge: &EdgeProc, path: &str, extra: &str) -> Raw {
    let mut s = TcpStream::connect(edge.http).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: videos.example\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("the edge answers within 5 s")
            .unwrap();
        assert!(n > 0, "closed before the header ended: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap().to_string();
    let fields: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_string(), v.trim().to_string())
        })
        .collect();
    let length: usize = fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .expect("a Content-Length");
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed inside the body");
        body.extend_from_slice(&chunk[..n]);
    }
    let mut rest = [0u8; 1];
    let closed = matches!(
        tokio::time::timeout(Duration::from_millis(300), s.read(&mut rest)).await,
        Ok(Ok(0)) | Ok(Err(_))
    );
    Raw {
        status_line,
        fields,
        body,
        closed,
    }
}

fn config(origin: &Upstream, version: &str) -> String {
    format!(
        "{}[[routes]]\nname = \"main\"\npath = \"/\"\npool = \"p\"\nresponse_headers = {{ x-config-version = \"{version}\" }}\n",
        pool("p", &[origin.addr], "")
    )
}

fn playlist(origin: &Upstream) {
    origin.script(
        "/live/index.m3u8",
        Script::ok(
            &[
                ("content-type", "application/vnd.apple.mpegurl"),
                ("cache-control", "max-age=60"),
                ("etag", "\"v1\""),
                ("x-origin-field", "kept"),
                ("via", "1.1 packager"),
            ],
            "#EXTM3U\n#EXT-X-VERSION:3\n",
        ),
    );
}

#[tokio::test]
async fn a_plain_hit_sends_the_header_a_hit_built_field_by_field_sends() {
    let origin = Upstream::start("o").await;
    playlist(&origin);
    let edge = EdgeProc::start(&config(&origin, "1")).await;
    let miss = raw(&edge, "/live/index.m3u8", "").await;
    assert_eq!(miss.field("x-cache-status"), ["MISS"]);

    // A plain GET (kept header), then the same GET made conditional on another ETag, which
    // pingora answers with the whole object through the filters, field by field.
    let kept = raw(&edge, "/live/index.m3u8", "").await;
    let built = raw(&edge, "/live/index.m3u8", "If-None-Match: \"other\"\r\n").await;
    assert_eq!(origin.hits_for("/live/index.m3u8"), 1, "both are hits");
    for r in [&kept, &built] {
        assert_eq!(r.status_line, "HTTP/1.1 200 OK");
        assert_eq!(r.field("x-cache-status"), ["HIT"]);
        assert_eq!(r.field("age").len(), 1, "{:?}", r.fields);
        assert_eq!(r.field("connection"), ["keep-alive"]);
        assert_eq!(r.field("x-config-version"), ["1"]);
        assert_eq!(r.field("x-origin-field"), ["kept"]);
        assert_eq!(r.field("via"), ["1.1 packager, 1.1 dime"]);
        assert_eq!(r.body, b"#EXTM3U\n#EXT-X-VERSION:3\n");
        assert!(!r.closed, "a kept-alive hit closed its connection");
    }
    assert_eq!(kept.without_age(), built.without_age());
    let age = |r: &Raw| r.field("age")[0].parse::<u64>().unwrap();
    assert!(age(&kept) <= age(&built), "{} {}", age(&kept), age(&built));

    // A viewer that says it closes is told so, and the edge closes.
    let closing = raw(&edge, "/live/index.m3u8", "Connection: close\r\n").await;
    assert_eq!(closing.field("x-cache-status"), ["HIT"]);
    assert_eq!(closing.field("connection"), ["close"]);
    assert!(closing.closed);
    // Once per hit: the kept header never carries a second Age or Connection.
    let again = raw(&edge, "/live/index.m3u8", "").await;
    assert_eq!(again.without_age(), built.without_age());
}

#[tokio::test]
async fn a_reload_that_changes_a_routes_response_headers_reaches_hits_on_objects_stored_before() {
    let origin = Upstream::start("o").await;
    playlist(&origin);
    let edge = EdgeProc::start(&config(&origin, "1")).await;
    raw(&edge, "/live/index.m3u8", "").await;
    let before = raw(&edge, "/live/index.m3u8", "").await;
    assert_eq!(before.field("x-cache-status"), ["HIT"]);
    assert_eq!(before.field("x-config-version"), ["1"]);

    edge.rewrite(&config(&origin, "2"), WriteStyle::Rename);
    assert_eq!(edge.wait_reloads("applied", 1).await, 1, "{}", edge.logs());
    let after = raw(&edge, "/live/index.m3u8", "").await;
    assert_eq!(after.field("x-cache-status"), ["HIT"]);
    assert_eq!(after.field("x-config-version"), ["2"]);
    assert_eq!(
        origin.hits_for("/live/index.m3u8"),
        1,
        "the reload kept the cache"
    );
}
