//! Seeing inside a running edge: the status page (`GET /status`) and the cache lookup
//! (`GET /cache/lookup?url=`) on the admin listener, against a real edge and origins.

use crate::common;

use std::time::{Duration, Instant};

use common::edge::pool;
use common::upstream::Script;
use common::{client, fetch, EdgeProc, Upstream};
use serde_json::Value;

const TOKEN: &str = "0123456789abcdef-status-token";

fn stream_route(pool: &str, cache: &str) -> String {
    format!(
        "[[routes]]\nname = \"stream\"\npath = \"/v/\"\npool = \"{pool}\"\n\n[routes.cache]\n{cache}\n"
    )
}

/// `GET /status` as JSON.
async fn status_json(edge: &EdgeProc) -> Value {
    let r = client()
        .get(edge.admin_url("/status"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{:?}",
        r.headers()
    );
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

/// `/status` as JSON once `done` accepts it, or after 10 s as it is.
async fn status_when(edge: &EdgeProc, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status_json(edge).await;
        if done(&s) || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list:#}"))
}

fn backend_state(status: &Value, pool: &str, addr: std::net::SocketAddr) -> String {
    named(&status["pools"], pool)["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == addr.to_string())
        .map(|b| b["state"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_json_counts_requests_hits_bytes_and_follows_backend_health() {
    let origin = Upstream::start("o").await;
    let spare = Upstream::start("spare").await;
    for o in [&origin, &spare] {
        o.script(
            "/v/seg.ts",
            Script::ok(&[("cache-control", "max-age=60")], vec![b's'; 1000]),
        );
    }
    let config = pool("p", &[origin.addr, spare.addr], "") + &stream_route("p", "mode = \"video\"");
    let edge = EdgeProc::start(&config).await;
    edge.wait_ready().await;
    let first = fetch(&edge.url("/v/seg.ts"), &[]).await;
    let second = fetch(&edge.url("/v/seg.ts"), &[]).await;
    assert_eq!((first.cache(), second.cache()), ("MISS", "HIT"));

    // Counted in the logging phase, just after the last byte; in flight until the request's
    // state is dropped.
    let s = status_when(&edge, |s| {
        s["connections"]["requests_in_flight"] == 0
            && s["routes"].as_array().is_some_and(|routes| {
                routes
                    .iter()
                    .any(|r| r["name"] == "stream" && r["requests"] == 2)
            })
    })
    .await;
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"), "{s:#}");
    assert!(s["uptime_seconds"].as_u64().is_some(), "{s:#}");
    assert!(s["started_at"].as_str().unwrap().ends_with('Z'), "{s:#}");
    let hash = edge
        .metrics()
        .await
        .lines()
        .find_map(|l| {
            l.strip_prefix("dime_config_info{hash=\"")
                .and_then(|r| r.split('"').next())
                .map(str::to_string)
        })
        .unwrap();
    assert_eq!(s["config"]["hash"], hash.as_str(), "{s:#}");
    assert!(s["config"]["loaded_at"].as_str().is_some(), "{s:#}");
    assert_eq!(s["config"]["last_reload"], Value::Null, "{s:#}");

    let route = named(&s["routes"], "stream");
    assert_eq!(route["pool"], "p");
    assert_eq!(route["requests"], 2, "{route:#}");
    assert_eq!(route["cache"]["HIT"], 1, "{route:#}");
    assert_eq!(route["cache"]["MISS"], 1, "{route:#}");
    assert_eq!(route["hit_ratio"], 0.5, "{route:#}");
    assert_eq!(route["sent_bytes"], 2000, "{route:#}");
    assert_eq!(route["cache_served_bytes"], 1000, "{route:#}");

    let cache = &s["cache"];
    assert_eq!(cache["objects"], 1, "{cache:#}");
    assert!(cache["size_bytes"].as_u64().unwrap() >= 1000, "{cache:#}");
    assert!(cache["capacity_bytes"].as_u64().unwrap() > 0, "{cache:#}");
    assert_eq!(cache["evictions"], 0, "{cache:#}");
    assert_eq!(cache["fills_in_progress"], 0, "{cache:#}");
    // This very request is in flight on the admin listener, not the proxy.
    assert!(s["connections"]["open"].as_u64().is_some(), "{s:#}");
    assert_eq!(s["connections"]["requests_in_flight"], 0, "{s:#}");

    assert_eq!(backend_state(&s, "p", origin.addr), "up", "{s:#}");
    assert_eq!(backend_state(&s, "p", spare.addr), "up", "{s:#}");
    spare.kill();
    let s = status_when(&edge, |s| backend_state(s, "p", spare.addr) == "down").await;
    assert_eq!(backend_state(&s, "p", spare.addr), "down", "{s:#}");
    assert_eq!(backend_state(&s, "p", origin.addr), "up", "{s:#}");

    // A rejected reload shows as the last one; the active config stays.
    let config_text = std::fs::read_to_string(&edge.config).unwrap();
    std::fs::write(&edge.config, config_text + "\nbogus = 1\n").unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &edge.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let s = status_when(&edge, |s| {
        s["config"]["last_reload"]["result"] == "rejected"
    })
    .await;
    let last = &s["config"]["last_reload"];
    assert_eq!(last["result"], "rejected", "{s:#}");
    assert_eq!(last["errors"], 1, "{s:#}");
    assert!(last["at"].as_str().unwrap().ends_with('Z'), "{s:#}");
    assert_eq!(s["config"]["hash"], hash.as_str(), "{s:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn open_viewer_connections_are_counted() {
    let origin = Upstream::start("o").await;
    let edge = EdgeProc::start(&(pool("p", &[origin.addr], "") + &stream_route("p", ""))).await;
    // Two idle keep-alive connections, held open by raw sockets.
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tokio::net::TcpStream::connect(edge.http).await.unwrap());
    }
    let s = status_when(&edge, |s| s["connections"]["open"] == 2).await;
    assert_eq!(s["connections"]["open"], 2, "{s:#}");
    drop(held);
    let s = status_when(&edge, |s| s["connections"]["open"] == 0).await;
    assert_eq!(s["connections"]["open"], 0, "{s:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_is_html_by_default_and_needs_no_token() {
    let origin = Upstream::start("o").await;
    // An admin token is configured: /status still answers without it, like /metrics.
    let config = format!("[admin]\ntoken = \"{TOKEN}\"\n\n")
        + &pool("p", &[origin.addr], "")
        + &stream_route("p", "");
    let edge = EdgeProc::start(&config).await;
    edge.wait_ready().await;
    let r = fetch(&edge.admin_url("/status"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type").starts_with("text/html"),
        "{:?}",
        r.headers
    );
    assert_eq!(r.header("cache-control"), "no-store");
    let body = String::from_utf8_lossy(&r.body);
    assert!(body.starts_with("<!DOCTYPE html>"), "{body}");
    for wanted in [
        "stream",
        &origin.addr.to_string(),
        env!("CARGO_PKG_VERSION"),
        "up",
    ] {
        assert!(body.contains(wanted), "missing {wanted:?} in {body}");
    }
    let text = fetch(&edge.admin_url("/status"), &[("accept", "text/plain")]).await;
    assert!(text.header("content-type").starts_with("text/plain"));
    let text = String::from_utf8_lossy(&text.body);
    assert!(text.contains("stream") && !text.contains('<'), "{text}");

    let post = common::fetch_with("POST", &edge.admin_url("/status"), &[]).await;
    assert_eq!(post.status, 405);
    let unknown = fetch(&edge.admin_url("/nope"), &[]).await;
    let unknown = String::from_utf8_lossy(&unknown.body);
    assert!(
        unknown.contains("/status") && unknown.contains("/cache/lookup"),
        "{unknown}"
    );
}

/// `GET /cache/lookup?url=URL` with the token, URL percent-encoded.
async fn lookup(edge: &EdgeProc, url: &str, token: Option<&str>) -> (u16, String) {
    let mut req = client()
        .get(edge.admin_url("/cache/lookup"))
        .query(&[("url", url)]);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn lookup_json(edge: &EdgeProc, url: &str) -> Value {
    let (status, body) = lookup(edge, url, Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn lookup_edge(origin: &Upstream) -> EdgeProc {
    let config = format!("[admin]\ntoken = \"{TOKEN}\"\n\n")
        + &pool("p", &[origin.addr], "")
        + &stream_route("p", "mode = \"video\"\nkeep_query = [\"_HLS_msn\"]")
        + "\n[[routes]]\nname = \"web\"\npath = \"/\"\npool = \"p\"\n";
    EdgeProc::start(&config).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lookup_shows_key_age_freshness_size_route_and_policy() {
    let origin = Upstream::start("o").await;
    origin.script(
        "/v/a.ts",
        Script::ok(&[("cache-control", "max-age=60")], vec![b'a'; 1234]),
    );
    let edge = lookup_edge(&origin).await;
    let r = fetch(&edge.url("/v/a.ts?token=secret&_HLS_msn=7"), &[]).await;
    assert_eq!(r.cache(), "MISS");
    let host = edge.http.to_string();

    // Another spelling of the same URL: canonical path, the route's kept query only.
    let l = lookup_json(
        &edge,
        &format!("http://{host}//v/./%61.ts?_HLS_msn=7&token=other"),
    )
    .await;
    assert_eq!(l["cached"], true, "{l:#}");
    assert_eq!(l["key"], "127.0.0.1/v/a.ts?_HLS_msn=7", "{l:#}");
    assert_eq!(l["route"], "stream", "{l:#}");
    let objects = l["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 1, "{l:#}");
    let o = &objects[0];
    assert_eq!(o["status"], 200, "{o:#}");
    assert_eq!(o["size"], 1234, "{o:#}");
    assert_eq!(o["stored_by"]["route"], "stream", "{o:#}");
    assert_eq!(o["stored_by"]["policy"], "video", "{o:#}");
    assert!(o["age_seconds"].as_u64().unwrap() <= 30, "{o:#}");
    let fresh = o["fresh_for_seconds"].as_u64().unwrap();
    assert!(fresh > 0 && fresh <= 60, "{o:#}");
    assert_eq!(o["ttl_seconds"], 60, "{o:#}");
    assert_eq!(o["state"], "fresh", "{o:#}");

    let (status, text) = lookup(&edge, &format!("{host}/v/a.ts?_HLS_msn=7"), Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert!(text.contains("\"cached\": true"), "{text}");

    // The readable form.
    let r = client()
        .get(edge.admin_url("/cache/lookup"))
        .query(&[("url", format!("{host}/v/a.ts?_HLS_msn=7"))])
        .bearer_auth(TOKEN)
        .header("accept", "text/plain")
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(
        text.contains("127.0.0.1/v/a.ts?_HLS_msn=7") && text.contains("route stream"),
        "{text}"
    );

    // Not cached: another msn, and a path nothing stored.
    for url in [
        format!("{host}/v/a.ts?_HLS_msn=8"),
        format!("{host}/v/none.ts"),
    ] {
        let l = lookup_json(&edge, &url).await;
        assert_eq!(l["cached"], false, "{l:#}");
        assert_eq!(l["objects"].as_array().unwrap().len(), 0, "{l:#}");
    }
    let l = lookup_json(&edge, &format!("{host}/other?x=1")).await;
    assert_eq!(l["route"], "web", "{l:#}");
    assert_eq!(l["key"], "127.0.0.1/other?x=1", "{l:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lookup_lists_every_vary_variant() {
    let origin = Upstream::start("o").await;
    origin.script(
        "/v/page",
        Script::ok(
            &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
            "hello",
        ),
    );
    let edge = lookup_edge(&origin).await;
    for lang in ["en", "fr"] {
        let r = fetch(&edge.url("/v/page"), &[("accept-language", lang)]).await;
        assert_eq!(r.cache(), "MISS");
    }
    let l = lookup_json(&edge, &format!("{}/v/page", edge.http)).await;
    let objects = l["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 2, "{l:#}");
    let mut langs: Vec<String> = objects
        .iter()
        .map(|o| {
            assert!(o["vary"]["accept-language"].is_string(), "{o:#}");
            o["vary"]["accept-language"].as_str().unwrap().to_string()
        })
        .collect();
    langs.sort();
    assert_eq!(langs, ["en", "fr"], "{l:#}");
    assert!(objects.iter().all(|o| o["variant"].as_str().is_some()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lookup_needs_the_admin_token_and_a_url_with_a_host() {
    let origin = Upstream::start("o").await;
    let edge = lookup_edge(&origin).await;
    let url = format!("{}/v/a.ts", edge.http);
    let (status, body) = lookup(&edge, &url, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = lookup(&edge, &url, Some("wrong-token-wrong-token")).await;
    assert_eq!(status, 401);

    for bad in ["", "/v/a.ts", "http:///v/a.ts", "h/v/%zz.ts", "h/../a.ts"] {
        let (status, body) = lookup(&edge, bad, Some(TOKEN)).await;
        assert_eq!(status, 400, "{bad:?}: {body}");
        assert!(body.contains("url=HOST/PATH"), "{bad:?}: {body}");
    }
    let r = client()
        .get(edge.admin_url("/cache/lookup"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("url=HOST/PATH"));

    // Without admin.token, the lookup is off.
    let plain = EdgeProc::start(&(pool("p", &[origin.addr], "") + &stream_route("p", ""))).await;
    let (status, body) = lookup(&plain, &url, Some(TOKEN)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("admin.token"), "{body}");
}
