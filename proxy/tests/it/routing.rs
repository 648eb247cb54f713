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
