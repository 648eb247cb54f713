//! Live config reload: each way operators write files, SIGHUP, the admin API, invalid files,
//! settings that need a restart, pools that keep their health, the cache across reloads, and
//! fifty reloads under load.

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::edge::pool;
use common::reload::{WriteStyle, TOKEN};
use common::upstream::Script;
use common::{client, fetch, free_port, EdgeProc, Upstream};

/// Two pools, `a` and `b`, and one route `/` to `to`, stamped with `version` in a header.
fn two_pools(a: &Upstream, b: &Upstream, to: &str, version: u32, extra: &str) -> String {
    format!(
        "{extra}\n{}{}[[routes]]\nname = \"main\"\npath = \"/\"\npool = \"{to}\"\nresponse_headers = {{ x-config-version = \"{version}\" }}\n\n[routes.cache]\nmode = \"off\"\n",
        pool("a", &[a.addr], ""),
        pool("b", &[b.addr], ""),
    )
}

async fn upstream_of(edge: &EdgeProc) -> (String, String) {
    let r = fetch(&edge.url("/who"), &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    (
        r.header("x-upstream").to_string(),
        r.header("x-config-version").to_string(),
    )
}

/// Given an edge routing to `a`, when the file is rewritten in `style` to route to `b`, then
/// exactly one reload is applied and the next request goes to `b`.
async fn one_write_one_reload(style: WriteStyle) {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let body = two_pools(&a, &b, "a", 1, "");
    let edge = match style {
        WriteStyle::ConfigMap => EdgeProc::start_configmap(&body).await,
        _ => EdgeProc::start(&body).await,
    };
    edge.wait_ready().await;
    assert_eq!(upstream_of(&edge).await, ("a".into(), "1".into()));
    let before = edge.config_hash().await;

    edge.rewrite(&two_pools(&a, &b, "b", 2, ""), style);

    assert_eq!(edge.wait_reloads("applied", 1).await, 1, "{}", edge.logs());
    assert_eq!(upstream_of(&edge).await, ("b".into(), "2".into()));
    assert_ne!(edge.config_hash().await, before);
    // Late events of the same write must not make a second reload.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(edge.reloads("applied").await, 1, "{}", edge.logs());
    assert_eq!(edge.reloads("rejected").await, 0, "{}", edge.logs());
    assert_eq!(edge.log_count("config reloaded"), 1, "{}", edge.logs());
}

#[tokio::test]
async fn an_in_place_write_reloads_once() {
    one_write_one_reload(WriteStyle::InPlace).await;
}

#[tokio::test]
async fn a_temp_file_renamed_over_the_config_reloads_once() {
    one_write_one_reload(WriteStyle::Rename).await;
}

#[tokio::test]
async fn a_configmap_symlink_swap_reloads_once() {
    one_write_one_reload(WriteStyle::ConfigMap).await;
}

#[tokio::test]
async fn five_quick_writes_reload_once_with_the_final_content() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    // A quiet time well above any scheduling hiccup of a busy test machine.
    let slow = "[reload]\ndebounce = \"250ms\"\n";
    let edge = EdgeProc::start(&two_pools(&a, &b, "a", 1, slow)).await;
    edge.wait_ready().await;

    // Back to back, as a tool that saves a file in several steps does.
    let versions: Vec<String> = (2..=6)
        .map(|v| two_pools(&a, &b, if v % 2 == 0 { "b" } else { "a" }, v, slow))
        .collect();
    for text in &versions {
        edge.rewrite(text, WriteStyle::InPlace);
    }

    assert_eq!(edge.wait_reloads("applied", 1).await, 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(edge.reloads("applied").await, 1, "{}", edge.logs());
    assert_eq!(upstream_of(&edge).await, ("b".into(), "6".into()));
}

#[tokio::test]
async fn touching_or_rewriting_the_same_content_reloads_nothing() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let body = two_pools(&a, &b, "a", 1, "");
    let edge = EdgeProc::start(&body).await;
    edge.wait_ready().await;
    let hash = edge.config_hash().await;

    // touch: only the modification time changes.
    let f = std::fs::File::options()
        .append(true)
        .open(&edge.config)
        .unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
    drop(f);
    // The same bytes written again: an event, but nothing new.
    edge.rewrite(&body, WriteStyle::InPlace);

    assert!(
        edge.wait_reloads("unchanged", 1).await >= 1,
        "{}",
        edge.logs()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(edge.reloads("applied").await, 0, "{}", edge.logs());
    assert_eq!(edge.config_hash().await, hash);
    assert_eq!(upstream_of(&edge).await, ("a".into(), "1".into()));
}

#[tokio::test]
async fn an_invalid_file_keeps_the_old_config_and_is_counted_and_logged() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let edge = EdgeProc::start(&two_pools(&a, &b, "a", 1, "")).await;
    edge.wait_ready().await;
    let hash = edge.config_hash().await;
    let since = edge
        .metric("dime_config_last_reload_success_timestamp_seconds")
        .await
        .unwrap();

    // Two mistakes: a pool that does not exist, a timeout without a unit.
    let broken = two_pools(&a, &b, "nowhere", 2, "")
        .replace("[pools.b]\n", "[pools.b]\nconnect_timeout = \"5\"\n");
    edge.rewrite(&broken, WriteStyle::Rename);

    assert_eq!(edge.wait_reloads("rejected", 1).await, 1, "{}", edge.logs());
    assert_eq!(upstream_of(&edge).await, ("a".into(), "1".into()));
    assert_eq!(edge.reloads("applied").await, 0);
    assert_eq!(edge.config_hash().await, hash);
    assert_eq!(
        edge.metric("dime_config_last_reload_success_timestamp_seconds")
            .await
            .unwrap(),
        since
    );
    let logs = edge.logs();
    let file = edge.config.display().to_string();
    let pool_error = logs
        .lines()
        .find(|l| l.contains("config reload rejected") && l.contains("routes[0].pool"))
        .unwrap_or_else(|| panic!("no routes[0].pool error:\n{logs}"));
    assert!(pool_error.contains(&format!("{file}:")), "{pool_error}");
    assert!(
        pool_error.contains("unknown pool \"nowhere\""),
        "{pool_error}"
    );
    assert!(
        logs.contains("pools.b.connect_timeout: invalid duration"),
        "{logs}"
    );

    // Fixed: the next write applies.
    edge.rewrite(&two_pools(&a, &b, "b", 3, ""), WriteStyle::Rename);
    assert_eq!(edge.wait_reloads("applied", 1).await, 1, "{}", edge.logs());
    assert_eq!(upstream_of(&edge).await, ("b".into(), "3".into()));
}

#[tokio::test]
async fn sighup_reloads_when_watching_is_off() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let off = "[reload]\nwatch = false\n";
    let edge = EdgeProc::start(&two_pools(&a, &b, "a", 1, off)).await;
    edge.wait_ready().await;

    edge.rewrite(&two_pools(&a, &b, "b", 2, off), WriteStyle::Rename);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(edge.reloads("applied").await, 0, "{}", edge.logs());
    assert_eq!(upstream_of(&edge).await, ("a".into(), "1".into()));

    edge.hangup();
    assert_eq!(edge.wait_reloads("applied", 1).await, 1, "{}", edge.logs());
    assert_eq!(upstream_of(&edge).await, ("b".into(), "2".into()));
    assert!(edge.logs().contains("trigger=SIGHUP"), "{}", edge.logs());
}

#[tokio::test]
async fn the_admin_reload_api_needs_the_token_and_answers_with_the_outcome() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let edge = EdgeProc::start(&two_pools(&a, &b, "a", 1, "")).await;
    edge.wait_ready().await;

    // No token configured: the config API is off.
    let (status, body) = edge.admin_reload(Some(TOKEN)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("admin.token"), "{body}");
    let r = client()
        .get(edge.admin_url("/config"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // The watcher applies a file with a token and watching off; from then on, only the API.
    let with_token = format!("[admin]\ntoken = \"{TOKEN}\"\n[reload]\nwatch = false\n");
    edge.rewrite(&two_pools(&a, &b, "a", 1, &with_token), WriteStyle::Rename);
    assert_eq!(edge.wait_reloads("applied", 1).await, 1, "{}", edge.logs());

    assert_eq!(edge.admin_reload(None).await.0, 401);
    assert_eq!(
        edge.admin_reload(Some("wrong-token-0123456789")).await.0,
        401
    );
    let (status, body) = edge.admin_reload(Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let outcome: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(outcome["result"], "unchanged", "{body}");

    let broken = two_pools(&a, &b, "nowhere", 2, &with_token)
        .replace("[pools.b]\n", "[pools.b]\nretries = 99\n");
    edge.rewrite(&broken, WriteStyle::InPlace);
    let (status, body) = edge.admin_reload(Some(TOKEN)).await;
    assert_eq!(status, 422, "{body}");
    let outcome: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(outcome["result"], "rejected", "{body}");
    let errors = outcome["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{body}");
    let fields: Vec<&str> = errors
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"routes[0].pool"), "{body}");
    assert!(fields.contains(&"pools.b.retries"), "{body}");
    assert!(
        errors.iter().all(|e| e["line"].as_u64().unwrap() > 0),
        "{body}"
    );
    assert_eq!(upstream_of(&edge).await, ("a".into(), "1".into()));

    edge.rewrite(&two_pools(&a, &b, "b", 2, &with_token), WriteStyle::InPlace);
    let (status, body) = edge.admin_reload(Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let outcome: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(outcome["result"], "applied", "{body}");
    assert_eq!(outcome["hash"].as_str().unwrap(), edge.config_hash().await);
    assert!(
        outcome["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "route main: pool a → b"),
        "{body}"
    );
    assert_eq!(upstream_of(&edge).await, ("b".into(), "2".into()));
    assert_eq!(edge.reloads("rejected").await, 1);
    assert_eq!(edge.reloads("applied").await, 2);
}

#[tokio::test]
async fn get_config_shows_the_active_config_with_secrets_redacted() {
    let a = Upstream::start("a").await;
    let body = format!(
        "[admin]\ntoken = \"{TOKEN}\"\n\n[cache]\npurge_token = \"purge-secret-0123456789\"\n\n{}[[routes]]\npath = \"/\"\npool = \"a\"\nupstream_headers = {{ Authorization = \"Bearer origin-secret\", X-Origin-Token = \"shared-origin-secret\", X-Tenant = \"blue\" }}\n\n[routes.cache]\nmode = \"video\"\n",
        pool("a", &[a.addr], "")
    );
    let edge = EdgeProc::start(&body).await;

    let r = client()
        .get(edge.admin_url("/config"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let hash = r
        .headers()
        .get("x-dime-config-hash")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let text = r.text().await.unwrap();
    // An allow-list: every token and every header value is hidden, whatever its name.
    for secret in [TOKEN, "purge-secret", "origin-secret", "blue"] {
        assert!(!text.contains(secret), "{secret} shown:\n{text}");
    }
    assert_eq!(text.matches("[redacted]").count(), 5, "{text}");
    assert!(text.contains("X-Origin-Token = \"[redacted]\""), "{text}");
    assert!(text.contains(&a.addr.to_string()), "{text}");
    assert!(text.contains("mode = \"video\""), "{text}");
    assert_eq!(hash, edge.config_hash().await);

    let r = client()
        .get(edge.admin_url("/config"))
        .bearer_auth("not-the-token-0123456")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_listener_change_is_reported_as_needing_a_restart() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let extra = format!("[admin]\ntoken = \"{TOKEN}\"\n[reload]\nwatch = false\n");
    let edge = EdgeProc::start(&two_pools(&a, &b, "a", 1, &extra)).await;
    edge.wait_ready().await;
    assert_eq!(edge.metric("dime_config_restart_required").await, Some(0.0));

    let moved: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let text = format!(
        "[listen]\nhttp = [\"{moved}\"]\nadmin = \"{}\"\n\n{}",
        edge.admin,
        two_pools(&a, &b, "b", 2, &extra)
    );
    std::fs::write(&edge.config, text).unwrap();
    let (status, body) = edge.admin_reload(Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let outcome: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(outcome["result"], "applied", "{body}");
    let restart = outcome["restart_required"].as_array().unwrap();
    assert_eq!(restart.len(), 1, "{body}");
    let line = restart[0].as_str().unwrap();
    assert!(line.starts_with("listen.http changed: ["), "{line}");
    assert!(line.contains("] → ["), "{line}");
    assert!(line.contains(&moved.to_string()), "{line}");

    // The route change applied; the listener stayed where it was.
    assert_eq!(upstream_of(&edge).await, ("b".into(), "2".into()));
    assert!(tokio::net::TcpStream::connect(moved).await.is_err());
    assert_eq!(edge.metric("dime_config_restart_required").await, Some(1.0));
    assert!(
        edge.logs().contains("restart needed: listen.http changed"),
        "{}",
        edge.logs()
    );
    let shown = client()
        .get(edge.admin_url("/config"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(shown.contains("# restart required: listen.http"), "{shown}");
}

/// The dead address of a backend nobody listens on.
fn dead_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

fn healthy_series(pool: &str, backend: SocketAddr) -> String {
    format!("dime_backend_healthy{{backend=\"{backend}\",pool=\"{pool}\"}}")
}

async fn wait_metric(edge: &EdgeProc, series: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while edge.metric(series).await != Some(value) {
        assert!(
            Instant::now() < deadline,
            "{series} never became {value}:\n{}",
            edge.metrics().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_pool_change_keeps_the_health_and_connections_of_backends_that_stay() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let dead = dead_addr();
    // One health-check round at startup, then none for a minute: any later connection to
    // `a` would be a re-check or a new upstream connection, which a reload must not cause.
    let cfg = |backends: &[SocketAddr], version: u32| {
        let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
        format!(
            "[pools.p]\nbackends = [{}]\n\n[pools.p.health_check]\ntype = \"http\"\npath = \"/healthz\"\ninterval = \"60s\"\nrise = 1\nfall = 1\n\n[[routes]]\nname = \"main\"\npath = \"/\"\npool = \"p\"\nresponse_headers = {{ x-config-version = \"{version}\" }}\n\n[routes.cache]\nmode = \"off\"\n",
            list.join(", ")
        )
    };
    let edge = EdgeProc::start(&cfg(&[a.addr, dead], 1)).await;
    // The dead backend is ejected by the health check before any request is sent.
    wait_metric(&edge, &healthy_series("p", dead), 0.0).await;
    for _ in 0..4 {
        assert_eq!(upstream_of(&edge).await.0, "a");
    }
    let (connections, checks, served) = (a.connections(), a.health_checks(), a.hits());

    edge.rewrite(&cfg(&[a.addr, dead, b.addr], 2), WriteStyle::Rename);
    assert_eq!(edge.wait_reloads("applied", 1).await, 1, "{}", edge.logs());

    // At once: the dead backend is still known to be down (not healthy again by default),
    // the new live one was checked before the swap, and `a` is not checked again and is
    // reached over the connection the pool kept.
    let mut seen = Vec::new();
    for _ in 0..8 {
        let (who, version) = upstream_of(&edge).await;
        assert_eq!(version, "2");
        seen.push(who);
    }
    assert!(seen.iter().any(|w| w == "b"), "{seen:?}");
    assert!(seen.iter().any(|w| w == "a"), "{seen:?}");
    let text = edge.metrics().await;
    assert!(
        !text.contains(&format!("backend=\"{dead}\",outcome")),
        "the dead backend got traffic:\n{text}"
    );
    assert_eq!(a.health_checks(), checks, "a was checked again");
    // A pool rebuilt by the reload would reach `a` over new connections only. (A new one may
    // also open beside the kept one when the test's next request reaches the edge before it
    // has put the last upstream connection back in its pool: a busy machine did so.)
    let after: Vec<usize> = a.seen()[served..].iter().map(|s| s.connection).collect();
    assert!(
        after.iter().any(|&c| c <= connections),
        "no request reached a over a connection opened before the reload: {after:?} (then {connections})"
    );
}

#[tokio::test]
async fn an_added_backend_with_a_dead_address_never_gets_traffic() {
    let a = Upstream::start("a").await;
    let dead = dead_addr();
    let cfg = |backends: &[SocketAddr]| {
        format!(
            "{}[[routes]]\npath = \"/\"\npool = \"p\"\n\n[routes.cache]\nmode = \"off\"\n",
            pool("p", backends, "")
        )
    };
    let edge = EdgeProc::start(&cfg(&[a.addr])).await;
    edge.wait_ready().await;

    edge.rewrite(&cfg(&[a.addr, dead]), WriteStyle::InPlace);
    assert_eq!(edge.wait_reloads("applied", 1).await, 1, "{}", edge.logs());
    for _ in 0..20 {
        assert_eq!(upstream_of(&edge).await.0, "a");
    }
    wait_metric(&edge, &healthy_series("p", dead), 0.0).await;
    let text = edge.metrics().await;
    assert!(
        !text.contains(&format!("backend=\"{dead}\",outcome")),
        "the dead backend got traffic:\n{text}"
    );
    assert!(
        edge.logs().contains("kept out of service"),
        "{}",
        edge.logs()
    );

    // Removed again: its health series goes with it.
    edge.rewrite(&cfg(&[a.addr]), WriteStyle::InPlace);
    assert_eq!(edge.wait_reloads("applied", 2).await, 2, "{}", edge.logs());
    let deadline = Instant::now() + Duration::from_secs(5);
    while edge.metric(&healthy_series("p", dead)).await.is_some() {
        assert!(Instant::now() < deadline, "{}", edge.metrics().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_reload_keeps_the_cache_and_a_new_policy_applies_to_new_requests() {
    let a = Upstream::start("a").await;
    a.script(
        "/obj",
        Script::ok(&[("cache-control", "max-age=60")], "cached body"),
    );
    let cfg = |mode: &str, extra_route: &str| {
        format!(
            "{}[[routes]]\npath = \"/\"\npool = \"p\"\n\n[routes.cache]\nmode = \"{mode}\"\n{extra_route}",
            pool("p", &[a.addr], "")
        )
    };
    let edge = EdgeProc::start(&cfg("rfc", "")).await;
    edge.wait_ready().await;
    assert_eq!(fetch(&edge.url("/obj"), &[]).await.cache(), "MISS");
    assert_eq!(fetch(&edge.url("/obj"), &[]).await.cache(), "HIT");

    let other = "\n[[routes]]\npath = \"/other\"\npool = \"p\"\n";
    edge.rewrite(&cfg("rfc", other), WriteStyle::Rename);
    assert_eq!(edge.wait_reloads("applied", 1).await, 1, "{}", edge.logs());
    assert_eq!(fetch(&edge.url("/obj"), &[]).await.cache(), "HIT");
    assert_eq!(a.hits_for("/obj"), 1);

    edge.rewrite(&cfg("off", other), WriteStyle::Rename);
    assert_eq!(edge.wait_reloads("applied", 2).await, 2, "{}", edge.logs());
    let r = fetch(&edge.url("/obj"), &[]).await;
    assert_eq!(r.cache(), "BYPASS");
    assert_eq!(&r.body[..], b"cached body");
    assert_eq!(a.hits_for("/obj"), 2);
}

/// One request of the load loop.
struct Sample {
    sent: Instant,
    received: Instant,
    upstream: String,
    version: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_load_fail_no_request_and_route_each_by_an_active_config() {
    const RELOADS: u32 = 50;
    const CLIENTS: usize = 4;
    // The load is bounded by time, not by a count: a count ran out before the last reloads on a
    // machine that reloads slowly, and the later versions then saw no traffic.
    const LOAD_LIMIT: Duration = Duration::from_secs(60);
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    // Odd versions route to `b` and add a third pool; even ones route to `a` and drop it, and
    // pool `b` alternates its timeouts: routes and pools change on every reload.
    let version_body = |v: u32| {
        let (to, spare, b_extra) = if v % 2 == 1 {
            (
                "b",
                pool("spare", &[a.addr, b.addr], ""),
                "connect_timeout = \"1s\"",
            )
        } else {
            ("a", String::new(), "connect_timeout = \"2s\"")
        };
        format!(
            "{}{}{spare}[[routes]]\nname = \"main\"\npath = \"/\"\npool = \"{to}\"\nresponse_headers = {{ x-config-version = \"{v}\" }}\n\n[routes.cache]\nmode = \"off\"\n",
            pool("a", &[a.addr], ""),
            pool("b", &[b.addr], b_extra),
        )
    };
    let edge = Arc::new(EdgeProc::start(&version_body(0)).await);
    edge.wait_ready().await;

    // Version 0 is active from before the first request: a client may send and be answered
    // before the reload loop starts.
    let start = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (edge, done) = (edge.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let http = client();
            let mut samples = Vec::new();
            let mut failures = Vec::new();
            let deadline = Instant::now() + LOAD_LIMIT;
            while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                let sent = Instant::now();
                match http.get(edge.url("/load")).send().await {
                    Ok(r) if r.status() == 200 => {
                        let upstream = r.headers()["x-upstream"].to_str().unwrap().to_string();
                        let version = r.headers()["x-config-version"]
                            .to_str()
                            .unwrap()
                            .parse()
                            .unwrap();
                        let _ = r.bytes().await.unwrap();
                        samples.push(Sample {
                            sent,
                            received: Instant::now(),
                            upstream,
                            version,
                        });
                    }
                    Ok(r) => failures.push(format!("status {}", r.status())),
                    Err(e) => failures.push(e.to_string()),
                }
                // A short pause keeps the reloads from competing with a flood on two cores.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            (samples, failures)
        }));
    }

    // written[v]: just before version v was written; seen[v]: once the edge said it applied it.
    let mut written = vec![start];
    let mut seen = vec![start];
    for v in 1..=RELOADS {
        tokio::time::sleep(Duration::from_millis(20)).await;
        written.push(Instant::now());
        edge.rewrite(&version_body(v), WriteStyle::Rename);
        let applied = edge.wait_reloads("applied", u64::from(v)).await;
        assert_eq!(applied, u64::from(v), "{}", edge.logs());
        seen.push(Instant::now());
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    done.store(true, Ordering::Relaxed);

    let mut samples = Vec::new();
    for c in clients {
        let (s, failures) = c.await.unwrap();
        assert!(failures.is_empty(), "failed requests: {failures:?}");
        samples.extend(s);
    }
    assert!(samples.len() >= 500, "only {} requests", samples.len());
    let last = RELOADS as usize;
    for s in &samples {
        let v = s.version as usize;
        assert!(v <= last, "unknown version {v}");
        // Version v was active from some time in [written[v], seen[v]] until some time in
        // [written[v+1], seen[v+1]]; the request must overlap that.
        let active_from = written[v];
        let active_until = seen.get(v + 1).copied();
        assert!(
            s.received >= active_from && active_until.is_none_or(|u| s.sent <= u),
            "a request sent at {:?} and answered at {:?} was routed by version {v}, active from {:?} to {:?}",
            s.sent - start,
            s.received - start,
            active_from - start,
            active_until.map(|u| u - start)
        );
        let expected = if v % 2 == 1 { "b" } else { "a" };
        assert_eq!(s.upstream, expected, "version {v} routes to {expected}");
    }
    let versions: std::collections::BTreeSet<u32> = samples.iter().map(|s| s.version).collect();
    assert!(
        versions.len() > 25,
        "traffic saw only versions {versions:?}"
    );
    assert_eq!(edge.reloads("rejected").await, 0);
}

#[tokio::test]
async fn quick_mode_survives_sighup_and_has_no_config_api() {
    let a = Upstream::start("a").await;
    let edge = EdgeProc::start_quick(&[a.addr]).await;
    edge.wait_ready().await;

    edge.hangup();
    // The edge says it saw the signal: only then is "nothing changed" worth checking.
    edge.wait_for_log("quick mode has no config file to reload")
        .await;
    assert_eq!(upstream_of(&edge).await.0, "a");
    assert_eq!(edge.admin_reload(Some(TOKEN)).await.0, 403);
    assert!(!edge.config_hash().await.is_empty());
}

#[tokio::test]
async fn a_new_health_check_rebuilds_the_pool_and_a_dropped_pool_is_no_longer_checked() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let token = format!("[admin]\ntoken = \"{TOKEN}\"\n[reload]\nwatch = false\n");
    let both = format!(
        "{token}{}{}[[routes]]\npath = \"/\"\npool = \"p\"\n\n[[routes]]\npath = \"/q\"\npool = \"q\"\n",
        pool("p", &[a.addr], ""),
        pool("q", &[b.addr], ""),
    );
    let edge = EdgeProc::start(&both).await;
    edge.wait_ready().await;
    wait_metric(&edge, &healthy_series("q", b.addr), 1.0).await;

    // p's check moves to another path; q and its route go.
    let one = format!(
        "{token}{}[[routes]]\npath = \"/\"\npool = \"p\"\n",
        pool("p", &[a.addr], "").replace("/healthz", "/healthz?v=2")
    );
    edge.rewrite(&one, WriteStyle::InPlace);
    let (status, body) = edge.admin_reload(Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let outcome: serde_json::Value = serde_json::from_str(&body).unwrap();
    let changes: Vec<&str> = outcome["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        changes.iter().any(|c| c.starts_with("pool p rebuilt")),
        "{body}"
    );
    assert!(
        changes.contains(&"pool q removed (requests in flight finish)"),
        "{body}"
    );
    assert!(changes.contains(&"route /q removed"), "{body}");

    // The rebuilt pool's backend was checked before the swap: it serves at once.
    assert_eq!(upstream_of(&edge).await.0, "a");
    let deadline = Instant::now() + Duration::from_secs(5);
    while edge.metric(&healthy_series("q", b.addr)).await.is_some() {
        assert!(Instant::now() < deadline, "{}", edge.metrics().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fetch(&edge.url("/q/x"), &[]).await.status, 200);
    assert_eq!(
        fetch(&edge.url("/q/x"), &[]).await.header("x-upstream"),
        "a"
    );
    edge.wait_ready().await;
}

#[tokio::test]
async fn a_request_in_flight_finishes_on_the_config_it_started_with() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let edge = Arc::new(EdgeProc::start(&two_pools(&a, &b, "a", 1, "")).await);
    edge.wait_ready().await;
    let slow = {
        let edge = edge.clone();
        tokio::spawn(async move { fetch(&edge.url("/slow?ms=1500"), &[]).await })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.hits_for("/slow") == 0 {
        assert!(
            Instant::now() < deadline,
            "the slow request never reached a"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Pool `a` disappears from the config while it is still sending that answer.
    let only_b = format!(
        "{}[[routes]]\nname = \"main\"\npath = \"/\"\npool = \"b\"\nresponse_headers = {{ x-config-version = \"2\" }}\n",
        pool("b", &[b.addr], "")
    );
    edge.rewrite(&only_b, WriteStyle::Rename);
    assert_eq!(edge.wait_reloads("applied", 1).await, 1, "{}", edge.logs());
    assert_eq!(upstream_of(&edge).await, ("b".into(), "2".into()));

    let r = slow.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"slow done");
    assert_eq!(r.header("x-upstream"), "a");
    assert_eq!(r.header("x-config-version"), "1");
}

/// The `ExecReload=` command lines of the shipped systemd unit, in order.
fn unit_exec_reload() -> Vec<String> {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/systemd/dime-edge.service"
    ))
    .unwrap();
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix("ExecReload="))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_systemd_unit_reloads_with_a_check_then_sighup_and_never_upgrades() {
    let lines = unit_exec_reload();
    assert_eq!(
        lines,
        [
            "/usr/local/bin/dime-edge check -c /etc/dime/edge.toml",
            "/bin/kill -HUP $MAINPID"
        ],
        "{lines:?}"
    );
    for l in &lines {
        assert!(
            !l.contains("--upgrade") && !l.contains("QUIT") && !l.contains(" run "),
            "{l}"
        );
    }
}

#[test]
fn check_help_suggests_a_reload_not_a_restart() {
    let out = std::process::Command::new(common::edge::BIN)
        .args(["check", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("systemctl reload dime-edge"), "{help}");
    assert!(!help.contains("systemctl restart"), "{help}");
}

#[tokio::test]
async fn systemctl_reload_as_the_unit_runs_it_keeps_the_cache_and_logs_each_changed_field() {
    let a = Upstream::start("a").await;
    a.script(
        "/obj",
        Script::ok(&[("cache-control", "max-age=60")], "cached body"),
    );
    // Watching off: only the reload the unit sends applies the file.
    let cfg = |mode: &str, memory: &str, ttl: &str| {
        format!(
            "[reload]\nwatch = false\n\n[cache]\nmemory = \"{memory}\"\n\n{}[[routes]]\nname = \"site\"\npath = \"/\"\npool = \"p\"\n\n[[routes]]\nname = \"stream\"\npath = \"/stream/\"\npool = \"p\"\n\n[routes.cache]\nmode = \"{mode}\"\nmedia_ttl = \"{ttl}\"\n",
            pool("p", &[a.addr], "")
        )
    };
    let edge = EdgeProc::start(&cfg("rfc", "64MiB", "10s")).await;
    edge.wait_ready().await;
    assert_eq!(fetch(&edge.url("/obj"), &[]).await.cache(), "MISS");
    assert_eq!(fetch(&edge.url("/obj"), &[]).await.cache(), "HIT");

    edge.rewrite(&cfg("video", "128MiB", "30s"), WriteStyle::Rename);
    // `systemctl reload dime-edge`: each ExecReload line, with systemd's substitutions.
    for line in unit_exec_reload() {
        let args: Vec<String> = line
            .split_whitespace()
            .map(|w| match w {
                "/usr/local/bin/dime-edge" => common::edge::BIN.to_string(),
                "/etc/dime/edge.toml" => edge.config.display().to_string(),
                "$MAINPID" => edge.pid().to_string(),
                w => w.to_string(),
            })
            .collect();
        let out = std::process::Command::new(&args[0])
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(out.status.success(), "{line}: {out:?}");
    }
    assert_eq!(edge.wait_reloads("applied", 1).await, 1, "{}", edge.logs());

    // Same process, same cache: the object is still a hit, the origin saw it once.
    assert_eq!(fetch(&edge.url("/obj"), &[]).await.cache(), "HIT");
    assert_eq!(a.hits_for("/obj"), 1);
    let logs = edge.logs();
    let reloaded = logs
        .lines()
        .find(|l| l.contains("config reloaded"))
        .unwrap_or_else(|| panic!("no reload line:\n{logs}"));
    assert!(
        reloaded.contains("route stream: cache.mode rfc → video"),
        "{reloaded}"
    );
    assert!(
        reloaded.contains("route stream: cache.media_ttl 10s → 30s"),
        "{reloaded}"
    );
    assert!(
        logs.contains("restart needed: cache.memory changed: 64 MiB → 128 MiB; the running value stays until an upgrade (dime-edge upgrade) or a restart"),
        "{logs}"
    );
}

#[tokio::test]
async fn a_reload_that_adds_a_backend_names_it() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let extra = format!("[admin]\ntoken = \"{TOKEN}\"\n[reload]\nwatch = false\n");
    let cfg = |backends: &[SocketAddr]| {
        format!(
            "{extra}{}[[routes]]\npath = \"/\"\npool = \"web\"\n",
            pool("web", backends, "connect_timeout = \"1s\"")
        )
    };
    let edge = EdgeProc::start(&cfg(&[a.addr])).await;
    edge.wait_ready().await;
    std::fs::write(
        &edge.config,
        format!("{}{}", edge.listen_lines(), cfg(&[a.addr, b.addr])),
    )
    .unwrap();
    let (status, body) = edge.admin_reload(Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let outcome: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        outcome["changes"],
        serde_json::json!([format!("pool web: backend {} added", b.addr)]),
        "{body}"
    );
}
