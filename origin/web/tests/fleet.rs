//! Steering viewers between real `dime-edge` processes (`--edges`): the region by client
//! prefix, the order by health (an edge killed goes last, restarted comes back) and by load
//! (open connections held on one edge), and the per-viewer page's cache headers.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dime_origin_testing::web::edge::{free_port, Edge};
use dime_origin_testing::web::{cache_control, App, Db};
use dime_web::catalog::TitleFields;
use dime_web::edges::{Fleet, FleetConfig};
use dime_web::Options;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Viewers in region eu claim this address (the app trusts loopback's X-Forwarded-For).
const EU_VIEWER: &str = "192.0.2.10";
/// A viewer in region us.
const US_VIEWER: &str = "198.51.100.10";
/// A viewer no prefix matches: the default region (us).
const ELSEWHERE: &str = "203.0.113.10";
/// Long enough for fall (2 polls of 200 ms, each bounded by 200 ms) on a busy machine.
const SETTLE: Duration = Duration::from_secs(20);

/// An origin that answers 200 to anything: the edges' health checks pass against it.
async fn origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().expect("origin address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    addr
}

/// A fleet file: regions eu (192.0.2.0/24, falls back to us) and us (198.51.100.0/24 and the
/// default, falls back to eu), and `edges` as (name, region, edge).
fn write_fleet(dir: &Path, edges: &[(&str, &str, &Edge)]) -> FleetConfig {
    let mut text = String::from(
        "default_region = \"us\"\n\n[poll]\ninterval = \"200ms\"\ntimeout = \"200ms\"\nfall = 2\nrise = 1\n\n\
         [regions.eu]\nprefixes = [\"192.0.2.0/24\"]\nfallback = [\"us\"]\n\n\
         [regions.us]\nprefixes = [\"198.51.100.0/24\"]\nfallback = [\"eu\"]\n",
    );
    for (name, region, edge) in edges {
        text.push_str(&format!(
            "\n[[edges]]\nname = \"{name}\"\nregion = \"{region}\"\nurl = \"{}\"\nadmin = \"{}\"\n",
            edge.stream_base(),
            edge.admin_base()
        ));
    }
    let path = dir.join("edges.toml");
    std::fs::write(&path, text).expect("write the fleet file");
    FleetConfig::load(&path).expect("a valid fleet file")
}

async fn app_with(config: FleetConfig) -> App {
    App::start_options(
        Db::sqlite().await,
        Options {
            fleet: Some(Arc::new(Fleet::new(config))),
            ..Options::default()
        },
    )
    .await
}

/// A response's JSON body.
async fn json(response: reqwest::Response) -> Value {
    let text = response.text().await.expect("a body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `GET /api/edges?for=me` as `viewer`.
async fn steering(app: &App, viewer: &str) -> Value {
    let response = app
        .client
        .get(app.url("/api/edges?for=me"))
        .header("x-forwarded-for", viewer)
        .send()
        .await
        .expect("GET /api/edges?for=me");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(cache_control(&response), "no-store");
    json(response).await
}

/// The edge names `viewer` gets, best first.
async fn order(app: &App, viewer: &str) -> Vec<String> {
    steering(app, viewer)
        .await
        .get("edges")
        .and_then(Value::as_array)
        .expect("edges")
        .iter()
        .map(|name| name.as_str().expect("a name").to_owned())
        .collect()
}

/// Waits until `viewer` gets `expected`; panics with the last order and `/api/edges`.
async fn wait_order(app: &App, viewer: &str, expected: &[&str]) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let got = order(app, viewer).await;
        if got == expected {
            return;
        }
        if Instant::now() > deadline {
            let state = app.get("/api/edges").await.text().await.unwrap_or_default();
            panic!("{viewer} got {got:?}, expected {expected:?}; edges: {state}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /api/edges`: the edge named `name`.
async fn edge_state(app: &App, name: &str) -> Value {
    let all: Value = json(app.get("/api/edges").await).await;
    all["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .find(|edge| edge["name"] == name)
        .cloned()
        .expect("the edge is listed")
}

/// Waits until edge `name` satisfies `ready` in `GET /api/edges`; panics with its state.
async fn wait_edge(app: &App, name: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + SETTLE;
    loop {
        let state = edge_state(app, name).await;
        if ready(&state) {
            return state;
        }
        assert!(Instant::now() < deadline, "{name} never {what}: {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polled at least once successfully, with a known load.
fn polled(state: &Value) -> bool {
    state["up"] == true && state["successes"].as_u64() >= Some(1) && state["connections"].is_i64()
}

#[tokio::test]
async fn viewers_get_their_regions_edges_first_and_dead_ones_last() {
    let origin = origin().await;
    let dead_origin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut eu = Edge::start(origin).await;
    let us = Edge::start(origin).await;
    // Its only origin is down: the pool serves in panic mode, /readyz says "ready, degraded".
    let eu_degraded = Edge::start(dead_origin).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_fleet(
        dir.path(),
        &[
            ("eu-1", "eu", &eu),
            ("us-1", "us", &us),
            ("eu-2", "eu", &eu_degraded),
        ],
    );
    let app = app_with(config).await;
    for name in ["eu-1", "us-1"] {
        wait_edge(&app, name, "was polled", polled).await;
    }

    // By prefix; the degraded edge of the viewer's own region comes after clean ones.
    wait_order(&app, EU_VIEWER, &["eu-1", "us-1", "eu-2"]).await;
    wait_order(&app, US_VIEWER, &["us-1", "eu-1", "eu-2"]).await;
    wait_order(&app, ELSEWHERE, &["us-1", "eu-1", "eu-2"]).await;
    let answer = steering(&app, EU_VIEWER).await;
    assert_eq!(answer["region"], "eu");
    assert_eq!(answer["client"], EU_VIEWER);
    assert_eq!(answer["bases"][0], eu.stream_base());
    assert_eq!(answer["bases"][1], us.stream_base());
    assert_eq!(steering(&app, ELSEWHERE).await["region"], "us");
    // Up and degraded (not down: a first "not ready" while its health check starts is one
    // failure, and it comes back with the next success).
    wait_edge(&app, "eu-2", "was up and degraded", |s| {
        s["up"] == true && s["degraded"] == true
    })
    .await;
    wait_order(&app, EU_VIEWER, &["eu-1", "us-1", "eu-2"]).await;

    // The player page carries the same list, and is the viewer's own.
    app.store
        .create_title(&TitleFields {
            slug: "sample".to_owned(),
            title: "Sample".to_owned(),
            description: String::new(),
            poster: Some("vod/sample/poster.jpg".to_owned()),
            duration_ms: None,
            stream_url: "vod/sample/index.m3u8".to_owned(),
        })
        .await
        .expect("create a title");
    let page = app
        .client
        .get(app.url("/titles/sample"))
        .header("x-forwarded-for", EU_VIEWER)
        .send()
        .await
        .expect("the player page");
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(cache_control(&page), "private, max-age=10");
    let html = page.text().await.unwrap();
    let src = format!("data-src=\"{}vod/sample/index.m3u8\"", eu.stream_base());
    assert!(html.contains(&src), "{html}");
    let poster = format!("poster=\"{}vod/sample/poster.jpg\"", eu.stream_base());
    assert!(html.contains(&poster), "{html}");
    let bases = format!(
        "data-bases=\"[&quot;{}&quot;,&quot;{}&quot;,&quot;{}&quot;]\"",
        eu.stream_base(),
        us.stream_base(),
        eu_degraded.stream_base()
    );
    assert!(html.contains(&bases), "{html}");
    let catalog = app
        .client
        .get(app.url("/api/catalog"))
        .header("x-forwarded-for", US_VIEWER)
        .send()
        .await
        .unwrap();
    let catalog = json(catalog).await;
    assert_eq!(catalog["steering"]["edges"][0], "us-1", "{catalog}");

    // eu-1 dies: its viewers are sent to us-1 first, eu-1 goes last (after the degraded one).
    eu.kill();
    wait_order(&app, EU_VIEWER, &["us-1", "eu-2", "eu-1"]).await;
    let dead = edge_state(&app, "eu-1").await;
    assert_eq!(dead["up"], false, "{dead}");
    assert!(
        dead["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("/readyz")),
        "{dead}"
    );

    // It comes back: first again for its region.
    eu.restart().await;
    wait_order(&app, EU_VIEWER, &["eu-1", "us-1", "eu-2"]).await;
}

#[tokio::test]
async fn the_least_loaded_edge_of_a_region_comes_first() {
    let origin = origin().await;
    let a = Edge::start(origin).await;
    let b = Edge::start(origin).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_fleet(dir.path(), &[("eu-a", "eu", &a), ("eu-b", "eu", &b)]);
    let app = app_with(config).await;
    // Equal load once both are polled: file order.
    for name in ["eu-a", "eu-b"] {
        wait_edge(&app, name, "was polled", polled).await;
    }
    wait_order(&app, EU_VIEWER, &["eu-a", "eu-b"]).await;

    // Three viewers' connections held open on eu-a: it counts them in dime_connections_open.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = tokio::net::TcpStream::connect(a.http)
            .await
            .expect("connect");
        // A request started but not finished: the connection stays open on the edge.
        stream
            .write_all(b"GET /stream/x HTTP/1.1\r\n")
            .await
            .expect("write");
        held.push(stream);
    }
    let deadline = Instant::now() + SETTLE;
    while a.connections_open().await != Some(3) {
        assert!(
            Instant::now() < deadline,
            "eu-a never counted 3 connections"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_order(&app, EU_VIEWER, &["eu-b", "eu-a"]).await;
    assert_eq!(edge_state(&app, "eu-a").await["connections"], 3);

    drop(held);
    wait_order(&app, EU_VIEWER, &["eu-a", "eu-b"]).await;
}

#[tokio::test]
async fn without_a_fleet_pages_stay_relative_and_public() {
    let app = App::start(Db::sqlite().await).await;
    let edges = app.get("/api/edges").await;
    assert_eq!(edges.status(), StatusCode::NOT_FOUND);
    app.store
        .create_title(&TitleFields {
            slug: "sample".to_owned(),
            title: "Sample".to_owned(),
            description: String::new(),
            poster: None,
            duration_ms: None,
            stream_url: "vod/sample/index.m3u8".to_owned(),
        })
        .await
        .expect("create a title");
    let page = app.get("/titles/sample").await;
    assert_eq!(cache_control(&page), "public, max-age=10");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("data-src=\"/stream/vod/sample/index.m3u8\""),
        "{html}"
    );
    assert!(!html.contains("data-bases"), "{html}");
}

#[tokio::test]
async fn an_edge_that_accepts_but_never_answers_is_taken_down_by_the_timeout() {
    let origin = origin().await;
    let alive = Edge::start(origin).await;
    // An admin listener that accepts connections and never answers (a hung process).
    let hung = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hung_addr = hung.local_addr().expect("address");
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = hung.accept().await {
            held.push(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "default_region = \"eu\"\n[poll]\ninterval = \"200ms\"\ntimeout = \"200ms\"\n\
         [regions.eu]\nprefixes = [\"192.0.2.0/24\"]\n\
         [[edges]]\nname = \"hung\"\nregion = \"eu\"\nurl = \"http://{hung_addr}/stream/\"\nadmin = \"http://{hung_addr}\"\n\
         [[edges]]\nname = \"alive\"\nregion = \"eu\"\nurl = \"{}\"\nadmin = \"{}\"\n",
        alive.stream_base(),
        alive.admin_base()
    );
    let path = dir.path().join("edges.toml");
    std::fs::write(&path, text).unwrap();
    let app = app_with(FleetConfig::load(&path).expect("a valid file")).await;

    let hung_state = wait_edge(&app, "hung", "went down", |s| s["up"] == false).await;
    wait_order(&app, EU_VIEWER, &["alive", "hung"]).await;
    assert_eq!(
        hung_state["last_error"], "GET /readyz: timed out",
        "{hung_state}"
    );
    // The poller kept polling the other edge meanwhile.
    assert!(edge_state(&app, "alive").await["successes"].as_u64() >= Some(2));
    holder.abort();
}
