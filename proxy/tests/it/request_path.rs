//! Request-path scenarios: every spelling of one path is one object (RFC 3986 §6), for
//! routing, the cache key, the origin and the purge API alike; paths that have no canonical
//! form are refused with 400, and those whose canonical form is too long with 414.

use crate::common;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::edge::pool;
use common::upstream::Script;
use common::{client, EdgeProc, Upstream};

const TOKEN: &str = "purge-token-0123456789";
const HOST: &str = "tv.example.com";

/// One answer read off the wire.
struct Raw {
    status: u16,
    head: String,
    body: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// `GET target` sent byte for byte: HTTP client libraries resolve dot-segments themselves,
/// which would hide exactly what this file tests.
async fn raw_get(edge: &EdgeProc, target: &str) -> Raw {
    let mut s = tokio::net::TcpStream::connect(edge.http).await.unwrap();
    let req = format!("GET {target} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    Raw {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// An edge whose only cached route is `/v/` (no catch-all, so routing must see the canonical
/// path too), plus `/s/` with strip_prefix.
async fn edge_for(origin: &Upstream) -> EdgeProc {
    let config = format!(
        "[cache]\npurge_token = \"{TOKEN}\"\n\n{}",
        pool("p", &[origin.addr], "")
    ) + r#"
[[routes]]
path = "/v/"
pool = "p"

[[routes]]
path = "/s/"
pool = "p"
strip_prefix = true
"#;
    EdgeProc::start(&config).await
}

#[tokio::test(flavor = "multi_thread")]
async fn six_spellings_of_one_segment_cost_the_origin_one_request() {
    let origin = Upstream::start("o").await;
    origin.script(
        "/v/a.ts",
        Script::ok(&[("cache-control", "max-age=600")], "segment a"),
    );
    let edge = edge_for(&origin).await;
    let spellings = [
        "/v/a.ts",
        "//v/a.ts",
        "/v//a.ts",
        "/%76/a.ts",
        "/v/./a.ts",
        "/x/../v/a.ts",
        "/v/%61.ts",
        "/v/a%2ets",
        "/v/b/../a.ts",
    ];
    for (i, s) in spellings.iter().enumerate() {
        let r = raw_get(&edge, s).await;
        assert_eq!(r.status, 200, "{s}: {}{}", r.head, r.body);
        assert_eq!(r.body, "segment a", "{s}");
        let want = if i == 0 { "MISS" } else { "HIT" };
        assert_eq!(r.header("x-cache-status"), Some(want), "{s}");
    }
    assert_eq!(
        origin.hits_for("/v/a.ts"),
        1,
        "the origin saw {:?}",
        origin.seen()
    );
    assert_eq!(origin.hits(), 1, "the origin saw {:?}", origin.seen());

    // A miss goes upstream canonical, with its query exactly as the viewer sent it.
    let r = raw_get(&edge, "/v//./%62.ts?token=a%2Fb&x=..%2f&_=%7e").await;
    assert_eq!(r.status, 200, "{}{}", r.head, r.body);
    assert_eq!(origin.last().uri, "/v/b.ts?token=a%2Fb&x=..%2f&_=%7e");

    // Reserved characters stay escaped (a %2F is not a '/'); their hex is uppercased.
    let r = raw_get(&edge, "/v/c%2fd.ts").await;
    assert_eq!(r.status, 200, "{}{}", r.head, r.body);
    assert_eq!(origin.last().uri, "/v/c%2Fd.ts");
    assert_eq!(origin.hits_for("/v/c/d.ts"), 0);

    // strip_prefix applies to the canonical path.
    let r = raw_get(&edge, "/s/./x/..//v/%61.ts").await;
    assert_eq!(r.status, 200, "{}{}", r.head, r.body);
    assert_eq!(origin.last().uri, "/v/a.ts");
}

#[tokio::test(flavor = "multi_thread")]
async fn paths_without_a_canonical_form_are_refused_with_400() {
    let origin = Upstream::start("o").await;
    let edge = edge_for(&origin).await;
    for (target, reason) in [
        ("/v/../../etc/passwd", "above the root"),
        ("/v/%2e%2e/%2E%2E/x.ts", "above the root"),
        ("/v/%zz.ts", "invalid percent-escape"),
        ("/v/a.ts%", "invalid percent-escape"),
        ("/v/a%2.ts", "invalid percent-escape"),
        ("/v/a%00.ts", "NUL"),
    ] {
        let r = raw_get(&edge, target).await;
        assert_eq!(r.status, 400, "{target}: {}{}", r.head, r.body);
        assert!(r.body.contains(reason), "{target}: {}", r.body);
    }
    assert_eq!(origin.hits(), 0, "the origin saw {:?}", origin.seen());
}

/// Found by fuzzing: a path of 22,000 `"`, each escaped to `%22`, is 66,001 bytes canonical,
/// more than a request target can hold upstream. It is a 414 (a path of 10,000 is passed on).
#[tokio::test(flavor = "multi_thread")]
async fn a_path_too_long_once_escaped_is_a_414_and_a_long_one_is_passed_on() {
    let origin = Upstream::start("o").await;
    let edge = edge_for(&origin).await;
    let r = raw_get(&edge, &format!("/v/{}", "\"".repeat(22_000))).await;
    assert_eq!(r.status, 414, "{}{}", r.head, r.body);
    assert!(r.body.contains("past the 32768-byte limit"), "{}", r.body);
    assert_eq!(origin.hits(), 0, "the origin saw {:?}", origin.seen());
    let r = raw_get(&edge, &format!("/v/{}", "\"".repeat(10_000))).await;
    assert_eq!(r.status, 200, "{}{}", r.head, r.body);
    assert_eq!(origin.last().uri, format!("/v/{}", "%22".repeat(10_000)));
}

#[tokio::test(flavor = "multi_thread")]
async fn purging_any_spelling_removes_the_one_object() {
    let origin = Upstream::start("o").await;
    origin.script(
        "/v/a.ts",
        Script::ok(&[("cache-control", "max-age=600")], "segment a"),
    );
    let edge = edge_for(&origin).await;
    assert_eq!(
        raw_get(&edge, "/v/a.ts").await.header("x-cache-status"),
        Some("MISS")
    );
    assert_eq!(
        raw_get(&edge, "/v/a.ts").await.header("x-cache-status"),
        Some("HIT")
    );

    let purge = |url: &'static str| {
        let req = client()
            .post(edge.admin_url("/cache/purge"))
            .query(&[("url", url)])
            .bearer_auth(TOKEN);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, body) = purge("tv.example.com/v//./a.ts").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"purged\":1"), "{body}");
    assert!(body.contains("tv.example.com/v/a.ts"), "{body}");
    assert_eq!(
        raw_get(&edge, "/v/a.ts").await.header("x-cache-status"),
        Some("MISS")
    );

    // A URL that has no canonical form is refused, not silently matched against nothing.
    let (status, body) = purge("tv.example.com/../a.ts").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("above the root"), "{body}");
}
