//! Log scenarios: log files that logrotate can rotate (SIGUSR1 reopens them, as nginx does),
//! signals the edge does not use, and pingora's own lines replaced by ours.

use crate::common;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::edge::{check_in, pool};
use common::{client, fetch, free_port, EdgeProc, Upstream};

fn route(pool: &str) -> String {
    format!("[[routes]]\npath = \"/\"\npool = \"{pool}\"\n")
}

fn signal(edge: &EdgeProc, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &edge.pid().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{name} failed");
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Polls `cond` every 20 ms for at most 10 s; panics with `what` and the edge's stdout when
/// it never holds.
async fn wait_for<F, Fut>(edge: &EdgeProc, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}:\n{}", edge.logs());
}

async fn get_ok(edge: &EdgeProc, path: &str) {
    let r = fetch(&edge.url(path), &[]).await;
    assert_eq!(r.status, 200, "{path}\n{}", edge.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigusr1_reopens_both_log_files_after_logrotate_renamed_them() {
    let origin = Upstream::start("o").await;
    let edge = EdgeProc::start(&format!(
        "[log]\naccess_log = \"access.log\"\nerror_log = \"error.log\"\n\n{}{}",
        pool("p", &[origin.addr], ""),
        route("p")
    ))
    .await;
    // Relative paths are the config file's directory's, like every path in the file.
    let access = edge.dir().join("access.log");
    let error = edge.dir().join("error.log");
    get_ok(&edge, "/before-rotation").await;
    wait_for(&edge, "the first access line", || async {
        read(&access).contains("/before-rotation")
    })
    .await;
    assert!(
        read(&error).contains("listening on"),
        "the startup lines go to the error log:\n{}",
        read(&error)
    );
    // stdout keeps nothing of either: the files have it all.
    assert!(!edge.logs().contains("/before-rotation"), "{}", edge.logs());

    // logrotate without copytruncate: rename, then postrotate sends SIGUSR1.
    std::fs::rename(&access, edge.dir().join("access.log.1")).unwrap();
    std::fs::rename(&error, edge.dir().join("error.log.1")).unwrap();
    signal(&edge, "USR1");
    wait_for(
        &edge,
        "a fresh error log saying the files were reopened",
        || async { read(&error).contains("reopened") },
    )
    .await;
    get_ok(&edge, "/after-rotation").await;
    wait_for(&edge, "the access line in the fresh file", || async {
        read(&access).contains("/after-rotation")
    })
    .await;
    let rotated = read(&edge.dir().join("access.log.1"));
    assert!(rotated.contains("/before-rotation"), "{rotated}");
    assert!(!rotated.contains("/after-rotation"), "{rotated}");
    assert!(!read(&access).contains("/before-rotation"));
}

#[tokio::test(flavor = "multi_thread")]
async fn signals_the_edge_does_not_use_leave_it_serving() {
    let origin = Upstream::start("o").await;
    let mut edge = EdgeProc::start(&(pool("p", &[origin.addr], "") + &route("p"))).await;
    // Logs on stdout: SIGUSR1 has nothing to reopen, and must not kill either. (SIGUSR2
    // starts a binary upgrade: tests/upgrade.rs.)
    for sig in ["USR1", "ALRM", "PIPE", "WINCH", "IO", "VTALRM", "PWR"] {
        signal(&edge, sig);
        get_ok(&edge, &format!("/after-{sig}")).await;
    }
    assert!(
        edge.wait_exit(Duration::from_millis(300)).await.is_none(),
        "{}",
        edge.logs()
    );
    wait_for(&edge, "the SIGALRM line", || async {
        edge.logs().contains("SIGALRM received: ignored")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_502_is_the_access_line_and_ours_without_pingoras_error() {
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let edge = EdgeProc::start(&(pool("p", &[dead], "") + &route("p"))).await;
    let r = client().get(edge.url("/gone")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    wait_for(&edge, "the access line", || async {
        edge.logs()
            .lines()
            .any(|l| l.contains("access") && l.contains(&id))
    })
    .await;
    let logs = edge.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("access") && l.contains(&id));
    // docs/operations.md: an answer the edge made itself is `BYPASS`.
    assert!(line.unwrap().contains(r#"cache="BYPASS""#), "{logs}");
    assert!(!logs.contains("Fail to proxy"), "{logs}");
    assert!(
        !logs
            .lines()
            .any(|l| l.contains("pingora") && (l.contains("ERROR") || l.contains("WARN"))),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_going_down_is_one_line_of_ours() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let b_addr = b.addr;
    let edge = EdgeProc::start(&(pool("p", &[a.addr, b.addr], "") + &route("p"))).await;
    edge.wait_ready().await;
    b.kill();
    let metric = format!("dime_backend_healthy{{backend=\"{b_addr}\",pool=\"p\"}}");
    wait_for(&edge, "the ejection", || async {
        edge.metric(&metric).await == Some(0.0)
    })
    .await;
    let wanted = format!("pool p: backend {b_addr} ejected");
    wait_for(&edge, "our line", || async {
        edge.logs().contains(&wanted)
    })
    .await;
    let logs = edge.logs();
    let ours: Vec<&str> = logs.lines().filter(|l| l.contains(&wanted)).collect();
    assert_eq!(ours.len(), 1, "{logs}");
    // The reason, in a few words, not pingora's error chain.
    assert!(ours[0].contains("connection refused"), "{logs}");
    assert!(!logs.contains("becomes unhealthy"), "{logs}");
    assert!(!logs.contains("Backend {"), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_moves_the_access_log_live() {
    let origin = Upstream::start("o").await;
    let body = |name: &str| {
        format!(
            "[log]\naccess_log = \"{name}\"\n\n{}{}",
            pool("p", &[origin.addr], ""),
            route("p")
        )
    };
    let edge = EdgeProc::start(&body("first.log")).await;
    get_ok(&edge, "/one").await;
    let first = edge.dir().join("first.log");
    wait_for(&edge, "the first line", || async {
        read(&first).contains("/one")
    })
    .await;

    std::fs::write(&edge.config, edge.listen_lines() + &body("second.log")).unwrap();
    signal(&edge, "HUP");
    wait_for(&edge, "the reload", || async {
        edge.logs().contains("log.access_log: ")
    })
    .await;
    get_ok(&edge, "/two").await;
    let second = edge.dir().join("second.log");
    wait_for(&edge, "the line in the new file", || async {
        read(&second).contains("/two")
    })
    .await;
    assert!(!read(&first).contains("/two"));
}

#[test]
fn check_names_a_log_directory_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[listen]\nhttp = [\"127.0.0.1:1\"]\n\n[log]\naccess_log = \"/nonexistent-dime/access.log\"\nerror_log = \"\"\n\n{}{}",
        pool("p", &["127.0.0.1:2".parse().unwrap()], ""),
        route("p")
    );
    let (status, out) = check_in(dir.path(), "edge.toml", &text);
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("log.access_log") && out.contains("/nonexistent-dime"),
        "{out}"
    );
    assert!(out.contains("log.error_log"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn config_warnings_are_logged_at_start_and_on_reload_not_only_by_check() {
    let origin = Upstream::start("o").await;
    let p = pool("p", &[origin.addr], "");
    // TOML attaches [routes.cache] to the route just above it: here the catch-all.
    let misplaced = format!(
        "{p}[[routes]]\npath = \"/stream/\"\npool = \"p\"\n\n[[routes]]\npath = \"/\"\npool = \"p\"\n\n[routes.cache]\nmode = \"video\"\n"
    );
    let fine = format!("{p}{}", route("p"));
    let edge = EdgeProc::start(&misplaced).await;
    wait_for(&edge, "the warning at start", || async {
        edge.logs().contains("warning: routes[1].cache:")
    })
    .await;
    assert!(edge.logs().contains("WARN"), "{}", edge.logs());

    // A reload to a clean file says nothing; one back to the misplaced table warns again.
    std::fs::write(&edge.config, edge.listen_lines() + &fine).unwrap();
    signal(&edge, "HUP");
    wait_for(&edge, "the first reload", || async {
        edge.logs().matches("config reloaded").count() == 1
    })
    .await;
    assert_eq!(edge.logs().matches("warning: routes[1].cache:").count(), 1);
    std::fs::write(&edge.config, edge.listen_lines() + &misplaced).unwrap();
    signal(&edge, "HUP");
    wait_for(&edge, "the warning on reload", || async {
        edge.logs().matches("warning: routes[1].cache:").count() == 2
    })
    .await;
}

/// docs/operations.md's `cache` field lists exactly the labels the edge writes there.
#[test]
fn the_access_logs_cache_field_is_what_operations_md_says() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md"),
    )
    .unwrap();
    let row = doc
        .lines()
        .find(|l| l.starts_with("| `cache` |") && l.contains("X-Cache-Status"))
        .expect("docs/operations.md describes the access log's `cache` field");
    let mut documented: Vec<&str> = row
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_uppercase()))
        .collect();
    documented.sort_unstable();
    documented.dedup();
    let mut labels = dime_edge::cache::CacheStatus::LABELS.to_vec();
    labels.sort_unstable();
    assert_eq!(documented, labels, "{row}");
}
