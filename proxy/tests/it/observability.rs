//! What operators watch: Prometheus metrics, the access log, liveness and readiness.

use crate::common;

use common::edge::pool;
use common::{client, fetch, EdgeProc, Upstream};

fn routes(pool: &str) -> String {
    format!(
        "[[routes]]\nname = \"stream\"\npath = \"/stream/\"\npool = \"{pool}\"\nstrip_prefix = true\n\n[[routes]]\nname = \"web\"\npath = \"/\"\npool = \"{pool}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_durations_upstreams_health_and_bytes() {
    let origin = Upstream::start("o").await;
    let edge = EdgeProc::start(&(pool("p", &[origin.addr], "") + &routes("p"))).await;
    edge.wait_ready().await;
    for _ in 0..3 {
        let r = client()
            .get(edge.url("/stream/big?bytes=1000"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.bytes().await.unwrap().len(), 1000);
    }
    let r = client()
        .get(edge.url("/status?code=503"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);

    let b = origin.addr;
    let expected = [
        "dime_requests_total{route=\"stream\",status_class=\"2xx\"} 3".to_string(),
        "dime_requests_total{route=\"web\",status_class=\"5xx\"} 1".to_string(),
        "dime_request_duration_seconds_count{route=\"stream\"} 3".to_string(),
        format!("dime_upstream_requests_total{{backend=\"{b}\",outcome=\"2xx\",pool=\"p\"}} 3"),
        format!("dime_upstream_requests_total{{backend=\"{b}\",outcome=\"5xx\",pool=\"p\"}} 1"),
        format!("dime_backend_healthy{{backend=\"{b}\",pool=\"p\"}} 1"),
        "dime_sent_bytes_total{route=\"stream\"} 3000".to_string(),
        "dime_requests_in_flight 0".to_string(),
        "# TYPE dime_request_duration_seconds histogram".to_string(),
    ];
    let wanted: Vec<&str> = expected.iter().map(String::as_str).collect();
    let m = edge.metrics_with(&wanted).await;
    for line in &expected {
        assert!(m.contains(line.as_str()), "missing `{line}` in:\n{m}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_connect_is_counted_against_the_dead_backend() {
    let live = Upstream::start("live").await;
    let dead = Upstream::start("dead").await;
    let dead_addr = dead.addr;
    drop(dead);
    // Health checks every 10 minutes: only the request path can notice the dead backend.
    let config = format!(
        "[pools.p]\nbackends = [\"{}\", \"{dead_addr}\"]\n[pools.p.health_check]\ninterval = \"10m\"\n\n{}",
        live.addr,
        routes("p")
    );
    let edge = EdgeProc::start(&config).await;
    for i in 0..6 {
        let r = client()
            .get(edge.url(&format!("/a{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let failed = edge
        .metric(&format!(
            "dime_upstream_requests_total{{backend=\"{dead_addr}\",outcome=\"connect_error\",pool=\"p\"}}"
        ))
        .await;
    // Round robin offers the dead backend a share of first attempts; each one fails over.
    assert!(
        failed.is_some_and(|n| n >= 1.0),
        "no connect error counted: {failed:?}"
    );
    assert_eq!(live.hits(), 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_access_log_has_one_json_line_per_request() {
    let origin = Upstream::start("o").await;
    let edge = EdgeProc::start_with_flags(
        &(pool("p", &[origin.addr], "") + &routes("p")),
        &["--log-format", "json"],
    )
    .await;
    client()
        .get(edge.url("/stream/big?bytes=1234"))
        .header("host", "videos.example.com")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    // The line is written after the response completes: give it a moment.
    let mut line = None;
    for _ in 0..50 {
        line = edge
            .logs()
            .lines()
            .find(|l| l.contains("\"target\":\"access\""))
            .map(str::to_string);
        if line.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let line = line.expect("no access log line");
    for field in [
        "\"timestamp\":",
        "\"client\":\"127.0.0.1\"",
        "\"method\":\"GET\"",
        "\"host\":\"videos.example.com\"",
        "\"path\":\"/stream/big?bytes=1234\"",
        "\"status\":200",
        "\"bytes\":1234",
        "\"duration_ms\":",
        "\"route\":\"stream\"",
        &format!("\"backend\":\"{}\"", origin.addr),
        "\"cache\":",
        "\"request_id\":\"",
    ] {
        assert!(line.contains(field), "access log lacks {field}: {line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_is_liveness_and_readyz_follows_the_pools() {
    let origin = Upstream::start("o").await;
    let addr = origin.addr;
    let edge = EdgeProc::start(&(pool("p", &[addr], "") + &routes("p"))).await;
    let healthz = client()
        .get(edge.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);
    edge.wait_ready().await;
    let readyz = || async {
        let r = client()
            .get(edge.admin_url("/readyz"))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    origin.kill();
    let mut answer = readyz().await;
    for _ in 0..200 {
        if answer.1.contains("degraded") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        answer = readyz().await;
    }
    // In panic mode (the default) the edge still serves the pool: ready, but degraded.
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert!(
        answer.1.contains("pool p: no healthy backend"),
        "readyz did not notice every backend dead: {}",
        answer.1
    );
    // Liveness is about the process, not the origins.
    assert_eq!(
        client()
            .get(edge.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let _back = Upstream::start_on("o", addr).await;
    for _ in 0..200 {
        if readyz().await == (200, "ready\n".to_string()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(readyz().await, (200, "ready\n".to_string()));
    let unknown = client().get(edge.admin_url("/nope")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
}

/// The first log line that contains every one of `needles`, waiting for it a moment (the
/// access log is written after the response completes).
async fn log_line(edge: &EdgeProc, needles: &[&str]) -> String {
    for _ in 0..100 {
        let logs = edge.logs();
        if let Some(line) = logs.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return line.to_string();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no log line with {needles:?} in:\n{}", edge.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn error_pages_give_a_request_id_and_keep_backends_and_pools_in_the_log() {
    let live = Upstream::start("live").await;
    let dead = Upstream::start("dead").await;
    let dead_addr = dead.addr;
    drop(dead);
    // No health check reaches the dead backend first: the request itself finds it down.
    let config = format!(
        "[pools.secret-gone]\nbackends = [\"{dead_addr}\"]\n[pools.secret-gone.health_check]\ninterval = \"10m\"\n\n{}\
[[routes]]\npath = \"/gone/\"\npool = \"secret-gone\"\n\n[[routes]]\npath = \"/\"\npool = \"secret-slow\"\n",
        pool("secret-slow", &[live.addr], "read_timeout = \"300ms\"")
    );
    let edge = EdgeProc::start_with_flags(&config, &["--log-format", "json"]).await;
    let mut ids = Vec::new();
    for (path, status, backend) in [
        ("/gone/x", 502, dead_addr),
        ("/slow?ms=3000", 504, live.addr),
    ] {
        let r = fetch(&edge.url(path), &[]).await;
        assert_eq!(r.status, status, "{path}");
        let body = String::from_utf8_lossy(&r.body).to_string();
        let id = r.header("x-request-id").to_string();
        assert!(id.len() >= 8, "{path}: no request id: {:?}", r.headers);
        assert!(
            body.contains(&id),
            "{path}: the body names the request id: {body}"
        );
        for internal in [
            backend.to_string(),
            backend.port().to_string(),
            "secret".to_string(),
            "pool".to_string(),
        ] {
            assert!(
                !body.contains(&internal),
                "{path}: {internal} leaked: {body}"
            );
        }
        assert_eq!(r.header("x-content-type-options"), "nosniff", "{path}");
        // The operator finds the details under the same id.
        let access = log_line(
            &edge,
            &["\"target\":\"access\"", &format!("\"request_id\":\"{id}\"")],
        )
        .await;
        assert!(access.contains(&format!("\"status\":{status}")), "{access}");
        let why = log_line(&edge, &[&id, &backend.to_string(), "secret-"]).await;
        assert!(!why.is_empty());
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1], "one id per request");
}

#[tokio::test(flavor = "multi_thread")]
async fn edge_made_answers_are_never_sniffed_and_text_logs_carry_the_request_id() {
    let origin = Upstream::start("o").await;
    let config = pool("p", &[origin.addr], "")
        + "[[routes]]\nhost = \"videos.example.com\"\npath = \"/\"\npool = \"p\"\n";
    let edge = EdgeProc::start(&config).await;
    let unrouted = fetch(&edge.url("/nowhere"), &[]).await;
    assert_eq!(unrouted.status, 404);
    assert_eq!(unrouted.header("x-content-type-options"), "nosniff");
    for path in ["/healthz", "/metrics", "/nope", "/config"] {
        let r = fetch(&edge.admin_url(path), &[]).await;
        assert_eq!(
            r.header("x-content-type-options"),
            "nosniff",
            "admin {path} ({})",
            r.status
        );
    }
    let line = log_line(&edge, &["path=\"/nowhere\"", "request_id="]).await;
    assert!(line.contains("status=404"), "{line}");
}
