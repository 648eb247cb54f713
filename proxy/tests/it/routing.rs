//! Routing scenarios: hosts, prefixes, longest match, prefix strip, route headers.

use crate::common;

use common::edge::pool;
use common::{client, EdgeProc, Upstream};

async fn get(edge: &EdgeProc, host: &str, path: &str) -> reqwest::Response {
    client()
        .get(edge.url(path))
        .header("host", host)
        .send()
        .await
        .unwrap()
}

fn upstream_of(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-upstream")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn host_and_longest_prefix_pick_the_route() {
    let web = Upstream::start("web").await;
    let streams = Upstream::start("streams").await;
    let live = Upstream::start("live").await;
    let tenant = Upstream::start("tenant").await;
    let wild = Upstream::start("wild").await;
    let config = [
        pool("web", &[web.addr], ""),
        pool("streams", &[streams.addr], ""),
        pool("live", &[live.addr], ""),
        pool("tenant", &[tenant.addr], ""),
        pool("wild", &[wild.addr], ""),
        r#"
[[routes]]
path = "/"
pool = "web"

[[routes]]
path = "/stream/"
pool = "streams"

[[routes]]
path = "/stream/live/"
pool = "live"

[[routes]]
host = "tenant.example.com"
path = "/"
pool = "tenant"

[[routes]]
host = "*.example.com"
path = "/"
pool = "wild"
"#
        .to_string(),
    ]
    .concat();
    let edge = EdgeProc::start(&config).await;

    // Given routes for "/", "/stream/" and "/stream/live/", the longest prefix wins.
    assert_eq!(
        upstream_of(&get(&edge, "a.org", "/index.html").await),
        "web"
    );
    assert_eq!(
        upstream_of(&get(&edge, "a.org", "/stream/vod/1.ts").await),
        "streams"
    );
    assert_eq!(
        upstream_of(&get(&edge, "a.org", "/stream/live/c.m3u8").await),
        "live"
    );
    // For the same prefix, an exact host beats a wildcard beats no host; ports and case are ignored.
    assert_eq!(
        upstream_of(&get(&edge, "Tenant.Example.com:8080", "/").await),
        "tenant"
    );
    assert_eq!(
        upstream_of(&get(&edge, "cdn.example.com", "/").await),
        "wild"
    );
    assert_eq!(upstream_of(&get(&edge, "example.com", "/").await), "web");
    // A longer prefix on a route without host still beats a shorter one with a host.
    assert_eq!(
        upstream_of(&get(&edge, "tenant.example.com", "/stream/x").await),
        "streams"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_no_route_matches_gets_a_plain_404() {
    let origin = Upstream::start("o").await;
    let config = pool("p", &[origin.addr], "")
        + "[[routes]]\nhost = \"example.com\"\npath = \"/stream/\"\npool = \"p\"\n";
    let edge = EdgeProc::start(&config).await;
    let r = get(&edge, "other.org", "/stream/a.ts").await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    let body = r.text().await.unwrap();
    assert!(
        body.contains("no route for other.org/stream/a.ts"),
        "{body}"
    );
    assert_eq!(origin.hits(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn strip_prefix_and_route_headers_reach_origin_and_viewer() {
    let origin = Upstream::start("o").await;
    let config = pool("p", &[origin.addr], "")
        + r#"
[[routes]]
path = "/stream/"
pool = "p"
strip_prefix = true
upstream_headers = { "X-Edge-Node" = "eu-1" }
response_headers = { "Access-Control-Allow-Origin" = "*", "X-Served-By" = "dime" }
"#;
    let edge = EdgeProc::start(&config).await;
    let r = get(&edge, "a.org", "/stream/vod/title/index.m3u8?token=abc").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert_eq!(r.headers()["x-served-by"], "dime");
    let seen = origin.last();
    assert_eq!(seen.uri, "/vod/title/index.m3u8?token=abc");
    assert_eq!(seen.headers["x-edge-node"], "eu-1");

    // The bare prefix maps to the origin's root.
    get(&edge, "a.org", "/stream/").await;
    assert_eq!(origin.last().uri, "/");
}

#[tokio::test(flavor = "multi_thread")]
async fn error_pages_carry_the_routes_response_headers() {
    let origin = Upstream::start("o").await;
    let config = pool("p", &[origin.addr], "retries = 0")
        + "[[routes]]\npath = \"/\"\npool = \"p\"\nresponse_headers = { \"Access-Control-Allow-Origin\" = \"*\" }\n";
    let edge = EdgeProc::start(&config).await;
    origin.kill();
    let r = get(&edge, "a.org", "/gone").await;
    assert_eq!(r.status(), 502);
    // A browser player can read why its request failed only if CORS allows it.
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_error_answer_says_the_connection_closes_and_closes_it() {
    // The edge does not keep a viewer's connection after a failed request; an answer saying
    // keep-alive sent the client's next request on that connection into a reset.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Upstream::start("o").await;
    let config =
        pool("p", &[origin.addr], "retries = 0") + "[[routes]]\npath = \"/\"\npool = \"p\"\n";
    let edge = EdgeProc::start(&config).await;
    origin.kill();
    let mut conn = tokio::net::TcpStream::connect(edge.http).await.unwrap();
    conn.write_all(b"GET /gone HTTP/1.1\r\nHost: a.org\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        conn.read_to_end(&mut answer),
    )
    .await
    .expect("the edge closes the connection after its answer")
    .unwrap();
    let text = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(text.starts_with("http/1.1 502"), "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
}
