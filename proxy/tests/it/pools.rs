//! Pool scenarios: selection, failover, health-check ejection and recovery, dead pools.

use crate::common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::edge::pool;
use common::upstream::Script;
use common::{client, EdgeProc, Upstream};

fn route(pool: &str) -> String {
    format!("[[routes]]\npath = \"/\"\npool = \"{pool}\"\n")
}

async fn served_by(edge: &EdgeProc, path: &str) -> String {
    let r = client().get(edge.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.headers()["x-upstream"].to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_spreads_requests_over_every_backend() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let c = Upstream::start("c").await;
    let edge = EdgeProc::start(
        &(pool(
            "p",
            &[a.addr, b.addr, c.addr],
            "selection = \"round_robin\"",
        ) + &route("p")),
    )
    .await;
    edge.wait_ready().await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for i in 0..90 {
        *counts
            .entry(served_by(&edge, &format!("/same?{i}")).await)
            .or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    for (name, n) in &counts {
        assert!((20..=40).contains(n), "{name} served {n} of 90: {counts:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn consistent_hash_sends_one_object_to_one_backend() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let c = Upstream::start("c").await;
    let edge = EdgeProc::start(
        &(pool(
            "p",
            &[a.addr, b.addr, c.addr],
            "selection = \"consistent_hash\"",
        ) + &route("p")),
    )
    .await;
    edge.wait_ready().await;
    let mut owners = HashMap::new();
    for i in 0..30 {
        let path = format!("/vod/title{i}/seg.ts");
        let first = served_by(&edge, &path).await;
        for _ in 0..4 {
            // The query string (viewer tokens) does not move the object.
            assert_eq!(
                served_by(&edge, &format!("{path}?token={i}")).await,
                first,
                "{path} moved"
            );
        }
        owners.insert(path, first);
    }
    let distinct: std::collections::HashSet<_> = owners.values().collect();
    assert!(
        distinct.len() >= 2,
        "30 objects all hashed to one backend: {owners:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_a_backend_mid_load_fails_no_request_and_it_comes_back() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let b_addr = b.addr;
    let edge = EdgeProc::start(&(pool("p", &[a.addr, b.addr], "retries = 1") + &route("p"))).await;
    edge.wait_ready().await;

    // Four viewers in parallel, so some requests are in flight on the backend when it dies.
    let load: Vec<_> = (0..4)
        .map(|v| {
            let url = edge.url("/load");
            tokio::spawn(async move {
                let c = client();
                let mut failures = Vec::new();
                for i in 0..150 {
                    match c.get(format!("{url}?{v}-{i}")).send().await {
                        Ok(r) if r.status() == 200 => {
                            r.bytes().await.unwrap();
                        }
                        Ok(r) => failures.push(format!("#{v}-{i}: {}", r.status())),
                        Err(e) => failures.push(format!("#{v}-{i}: {e}")),
                    }
                }
                failures
            })
        })
        .collect();
    // Killed once it has served a tenth of the load (by count, not by time: a fast edge can
    // finish all 600 requests before a fixed sleep ends, and then nothing is in flight).
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.hits() < 60 {
        assert!(Instant::now() < deadline, "b served {} in 10 s", b.hits());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    b.kill();
    let mut failures = Vec::new();
    for l in load {
        failures.extend(l.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "failed requests while a backend died: {failures:?}\n{}",
        edge.logs()
    );
    assert!(a.hits() > 300, "the survivor served only {}", a.hits());

    // The health check ejects it...
    let metric = format!("dime_backend_healthy{{backend=\"{b_addr}\",pool=\"p\"}}");
    wait_for(|| async { edge.metric(&metric).await == Some(0.0) }).await;
    // ...and brings it back once it answers again.
    let b2 = Upstream::start_on("b", b_addr).await;
    wait_for(|| async { edge.metric(&metric).await == Some(1.0) }).await;
    for i in 0..20 {
        served_by(&edge, &format!("/again?{i}")).await;
    }
    assert!(b2.hits() > 0, "the recovered backend got no traffic");
    assert!(
        edge.logs().contains("ejected: health check failing"),
        "no ejection logged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_panic_mode_no_healthy_backend_answers_502_quickly_with_a_reason() {
    let a = Upstream::start("a").await;
    let edge = EdgeProc::start(&(pool("p", &[a.addr], "panic_mode = false") + &route("p"))).await;
    edge.wait_ready().await;
    a.kill();
    let started = Instant::now();
    let r = client().get(edge.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let body = r.text().await.unwrap();
    assert!(body.contains("bad gateway") && body.contains(&id), "{body}");
    // The reason, with the backend, is for the operator: in the log under the request id.
    assert_logged(&edge, &id, "cannot connect to backend").await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );

    // Once the health check has ejected it, the reason says so, and /readyz turns 503.
    wait_for(|| async {
        client()
            .get(edge.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            == 503
    })
    .await;
    let r = client().get(edge.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_logged(&edge, &id, "no healthy backend in pool \"p\"").await;
    let ready = client()
        .get(edge.admin_url("/readyz"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(ready.contains("pool p: no healthy backend"), "{ready}");
}

/// Waits (bounded) for a log line that carries request `id` and `reason`.
async fn assert_logged(edge: &EdgeProc, id: &str, reason: &str) {
    for _ in 0..100 {
        if edge
            .logs()
            .lines()
            .any(|l| l.contains(id) && l.contains(reason))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no log line with {id} and {reason}:\n{}", edge.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_slower_than_read_timeout_gives_504() {
    let a = Upstream::start("a").await;
    let edge = EdgeProc::start(
        &(pool("p", &[a.addr], "read_timeout = \"300ms\"\nretries = 0") + &route("p")),
    )
    .await;
    let started = Instant::now();
    let r = client()
        .get(edge.url("/slow?ms=3000"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert!(r.text().await.unwrap().contains("gateway timeout"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    // A fast answer on the same pool is unaffected.
    assert_eq!(
        client()
            .get(edge.url("/slow?ms=10"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// A backend like a process stopped with SIGSTOP: the kernel still accepts connections into
/// the listen backlog, and nothing ever answers. Frozen while the listener lives.
fn frozen_backend() -> (std::net::TcpListener, std::net::SocketAddr) {
    let listener = std::net::TcpListener::bind(("127.0.0.1", common::free_port())).unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// The series counting `backend`'s timed-out attempts in pool `p`.
fn timeouts_of(backend: std::net::SocketAddr) -> String {
    format!("dime_upstream_requests_total{{backend=\"{backend}\",outcome=\"timeout\",pool=\"p\"}}")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_backend_costs_its_viewers_a_read_timeout_not_an_error() {
    let (frozen, frozen_addr) = frozen_backend();
    let b = Upstream::start("b").await;
    let edge = EdgeProc::start(
        &(pool(
            "p",
            &[frozen_addr, b.addr],
            "selection = \"round_robin\"\nread_timeout = \"400ms\"\nretries = 1",
        ) + &route("p")),
    )
    .await;
    for i in 0..6 {
        let r = client()
            .get(edge.url(&format!("/frozen?{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "request {i}:\n{}", edge.logs());
        assert_eq!(r.headers()["x-upstream"], "b");
    }
    let timeouts = timeouts_of(frozen_addr);
    assert!(
        edge.metric(&timeouts).await.unwrap_or(0.0) >= 1.0,
        "no request went to the frozen backend:\n{}",
        edge.metrics().await
    );
    // The health check sees it too, and takes it out of the pool.
    let healthy = format!("dime_backend_healthy{{backend=\"{frozen_addr}\",pool=\"p\"}}");
    wait_for(|| async { edge.metric(&healthy).await == Some(0.0) }).await;
    drop(frozen);
}

#[tokio::test(flavor = "multi_thread")]
async fn viewers_waiting_on_a_fill_that_retries_past_a_frozen_backend_get_its_answer() {
    let (frozen, frozen_addr) = frozen_backend();
    let b = Upstream::start("b").await;
    let edge = EdgeProc::start(
        &(pool(
            "p",
            &[frozen_addr, b.addr],
            "selection = \"round_robin\"\nconnect_timeout = \"100ms\"\nread_timeout = \"1s\"\nretries = 1",
        ) + "[[routes]]\npath = \"/\"\npool = \"p\"\n\n[routes.cache]\nmode = \"video\"\n"),
    )
    .await;
    // Each fill that meets the frozen backend first takes its read_timeout (1 s) and then b's
    // 300 ms: longer than one attempt's connect and read timeouts (1.1 s), which is all the
    // waiters used to wait before answering 504.
    let mut slow = Script::ok(&[("cache-control", "max-age=60")], "segment");
    slow.header_delay = Duration::from_millis(300);
    let mut statuses = Vec::new();
    for n in 0..4 {
        let path = format!("/obj-{n}.ts");
        b.script(&path, slow.clone());
        let leader = tokio::spawn(common::fetch_owned(edge.url(&path)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let waiter = tokio::spawn(common::fetch_owned(edge.url(&path)));
        statuses.push((path.clone(), leader.await.unwrap(), waiter.await.unwrap()));
    }
    let timeouts = timeouts_of(frozen_addr);
    assert!(
        edge.metric(&timeouts).await.unwrap_or(0.0) >= 1.0,
        "no fill met the frozen backend:\n{}",
        edge.metrics().await
    );
    for (path, leader, waiter) in statuses {
        assert_eq!((leader, waiter), (200, 200), "{path}:\n{}", edge.logs());
    }
    drop(frozen);
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_on_status_sends_the_request_on_and_passes_the_last_answer() {
    let failing = Upstream::start("failing").await;
    failing.fail_with(503);
    let b = Upstream::start("b").await;
    let both = [failing.addr, b.addr];
    let edge = EdgeProc::start(
        &(pool(
            "p",
            &both,
            "selection = \"round_robin\"\nretry_on_status = [500, 503]",
        ) + &pool("alone", &[failing.addr], "retry_on_status = [503]")
            + &pool("plain", &both, "selection = \"round_robin\"")
            + "[[routes]]\npath = \"/alone/\"\npool = \"alone\"\n\n"
            + "[[routes]]\npath = \"/plain/\"\npool = \"plain\"\n\n"
            + &route("p")),
    )
    .await;
    edge.wait_ready().await;
    for i in 0..10 {
        let r = client()
            .get(edge.url(&format!("/x?{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.headers()["x-upstream"], "b");
    }
    assert!(failing.hits_for("/x") >= 4, "{}", failing.hits_for("/x"));
    let answered = format!(
        "dime_upstream_requests_total{{backend=\"{}\",outcome=\"5xx\",pool=\"p\"}}",
        failing.addr
    );
    assert_eq!(
        edge.metric(&answered).await,
        Some(failing.hits_for("/x") as f64)
    );
    // Nothing else to try: the origin's own answer, not the edge's 502.
    let r = client().get(edge.url("/alone/y")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.text().await.unwrap(), "failing failing");
    // A POST is not sent twice, and a pool without the list passes every answer on.
    let mut statuses = Vec::new();
    for i in 0..4 {
        let post = client().post(edge.url(&format!("/upload?{i}"))).body("x");
        statuses.push(post.send().await.unwrap().status().as_u16());
        let get = client().get(edge.url(&format!("/plain/z?{i}")));
        statuses.push(get.send().await.unwrap().status().as_u16());
    }
    assert!(statuses.contains(&503), "{statuses:?}");
}

/// A pool on `backends` whose health check ejects at the first failure but would take
/// almost a minute to bring a backend back (rise 100 × 500 ms): anything served before that is
/// served in panic mode.
fn slow_rise_pool(backends: &[std::net::SocketAddr], extra: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        "[pools.p]\nbackends = [{}]\n{extra}\n\n[pools.p.health_check]\ntype = \"http\"\npath = \"/healthz\"\ninterval = \"500ms\"\nrise = 100\nfall = 1\n\n",
        list.join(", ")
    ) + &route("p")
}

async fn readyz(edge: &EdgeProc) -> (u16, String) {
    let r = client()
        .get(edge.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_origin_that_starts_after_the_edge_is_used_at_once_in_panic_mode() {
    // Given an edge whose only origin is not up yet...
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let edge = EdgeProc::start(&slow_rise_pool(&[addr], "")).await;
    let down = format!("dime_backend_healthy{{backend=\"{addr}\",pool=\"p\"}}");
    wait_for(|| async { edge.metric(&down).await == Some(0.0) }).await;
    // ...it still counts as ready, and says the pool is degraded.
    let (status, body) = readyz(&edge).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("degraded") && body.contains("pool p: no healthy backend"),
        "{body}"
    );
    // A request now tries the backend anyway, and fails over nowhere: 502, the reason logged.
    let r = client().get(edge.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_logged(&edge, &id, "cannot connect to backend").await;

    // When the origin comes up, the very next request is served, long before the health
    // check would bring the backend back.
    let origin = Upstream::start_on("late", addr).await;
    let r = client().get(edge.url("/first")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", edge.logs());
    assert_eq!(origin.hits_for("/first"), 1);
    assert_eq!(
        edge.metric(&down).await,
        Some(0.0),
        "the check brought it back"
    );
    assert_eq!(
        edge.metric("dime_pool_panic_picks_total{pool=\"p\"}").await,
        Some(2.0)
    );
    let (status, body) = readyz(&edge).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("degraded"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn panic_mode_tries_each_backend_once_per_request() {
    // Three distinct ports nobody listens on.
    let dead: Vec<std::net::SocketAddr> = (0..3)
        .map(|_| std::net::SocketAddr::from(([127, 0, 0, 1], common::free_port())))
        .collect();
    let edge = EdgeProc::start(&slow_rise_pool(&dead, "retries = 5")).await;
    for a in &dead {
        let m = format!("dime_backend_healthy{{backend=\"{a}\",pool=\"p\"}}");
        wait_for(|| async { edge.metric(&m).await == Some(0.0) }).await;
    }
    let r = client().get(edge.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    // Three backends, a budget of six attempts: each was tried exactly once.
    for a in &dead {
        let m = format!(
            "dime_upstream_requests_total{{backend=\"{a}\",outcome=\"connect_error\",pool=\"p\"}}"
        );
        assert_eq!(edge.metric(&m).await, Some(1.0), "{m}");
    }
    assert_eq!(
        edge.metric("dime_pool_panic_picks_total{pool=\"p\"}").await,
        Some(3.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_panic_mode_an_origin_that_starts_late_waits_for_the_health_check() {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let edge = EdgeProc::start(&slow_rise_pool(&[addr], "panic_mode = false")).await;
    let down = format!("dime_backend_healthy{{backend=\"{addr}\",pool=\"p\"}}");
    wait_for(|| async { edge.metric(&down).await == Some(0.0) }).await;
    let (status, body) = readyz(&edge).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("pool p: no healthy backend"), "{body}");
    let origin = Upstream::start_on("late", addr).await;
    let r = client().get(edge.url("/first")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_logged(&edge, &id, "no healthy backend in pool \"p\"").await;
    assert_eq!(origin.hits(), 0);
    assert_eq!(
        edge.metric("dime_pool_panic_picks_total{pool=\"p\"}").await,
        None
    );
}

/// Polls `cond` for up to 10 s.
async fn wait_for<F, Fut>(cond: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not reached within 10 s");
}
