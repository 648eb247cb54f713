//! The command line: `check` exit codes and error reports, `run` refusing bad config,
//! `--version`, `--help`, and quick mode behaving as a full edge.

mod common;

use std::path::Path;
use std::process::Command;

use common::edge::{check, BIN};
use common::{client, EdgeProc, Upstream};

const GOOD: &str = r#"
[listen]
http = ["127.0.0.1:18080"]

[pools.web]
backends = ["127.0.0.1:18083"]

[[routes]]
path = "/"
pool = "web"
"#;

#[test]
fn check_accepts_a_valid_file_with_a_one_line_summary() {
    let (status, text) = check(GOOD);
    assert_eq!(status.code(), Some(0), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with("edge.toml: ok: 1 route(s), 1 pool(s), 1 backend(s)"),
        "{text}"
    );
}

/// Each broken config, and the `file:line:col: field: reason` line `check` must print.
#[test]
fn check_reports_each_config_error_with_its_place() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "TOML syntax",
            "[listen\nhttp = []\n",
            "edge.toml:1:8: ",
        ),
        (
            "unknown field",
            &GOOD.replace("path = \"/\"", "path = \"/\"\npoool = \"x\""),
            "edge.toml:10:1: routes[0].poool: unknown field `poool`",
        ),
        (
            "route to an unknown pool",
            &GOOD.replace("pool = \"web\"", "pool = \"wbe\""),
            "edge.toml:10:8: routes[0].pool: unknown pool \"wbe\" (defined pools: web)",
        ),
        (
            "empty pool",
            &GOOD.replace("[\"127.0.0.1:18083\"]", "[]"),
            "edge.toml:6:12: pools.web.backends: empty pool: list at least one backend",
        ),
        (
            "duplicate route",
            &(GOOD.to_string() + "\n[[routes]]\npath = \"/\"\npool = \"web\"\n"),
            "edge.toml:13:8: routes[1]: duplicate route: host (any host) and path \"/\" are already routed by routes[0]",
        ),
        (
            "unparsable listen address",
            &GOOD.replace("127.0.0.1:18080", "127.0.0.1:80800"),
            "edge.toml:3:9: listen.http[0]: unparsable address \"127.0.0.1:80800\"",
        ),
        (
            "unparsable backend address",
            &GOOD.replace("127.0.0.1:18083", "origin-without-port"),
            "edge.toml:6:13: pools.web.backends[0]: unparsable address \"origin-without-port\"",
        ),
        (
            "invalid duration",
            &GOOD.replace("backends = [", "connect_timeout = \"soon\"\nbackends = ["),
            "edge.toml:6:19: pools.web.connect_timeout: invalid duration \"soon\"",
        ),
        (
            "zero duration",
            &GOOD.replace("backends = [", "read_timeout = \"0s\"\nbackends = ["),
            "edge.toml:6:16: pools.web.read_timeout: invalid duration: must be greater than zero",
        ),
        (
            "route path that no canonical request path starts with",
            &GOOD.replace("path = \"/\"", "path = \"/stream//%6Cive/\""),
            "edge.toml:9:8: routes[0].path: requests are routed by their canonical path, which never starts with \"/stream//%6Cive/\": write \"/stream/live/\"",
        ),
        (
            "wrong type",
            &GOOD.replace("backends = [", "retries = \"three\"\nbackends = ["),
            "edge.toml:6:11: pools.web.retries: invalid type: string \"three\", expected an integer",
        ),
    ];
    for (what, config, expected) in cases {
        let (status, text) = check(config);
        assert_eq!(status.code(), Some(1), "{what}: expected exit 1:\n{text}");
        assert!(
            text.contains(expected),
            "{what}: expected `{expected}` in:\n{text}"
        );
        assert!(!text.contains("panicked"), "{what}: panicked:\n{text}");
    }
}

#[test]
fn check_reports_every_error_not_just_the_first() {
    let config = GOOD.replace("pool = \"web\"", "pool = \"nope\"").replace(
        "backends = [",
        "connect_timeout = \"-1s\"\nretries = 99\nbackends = [",
    );
    let (status, text) = check(&config);
    assert_eq!(status.code(), Some(1));
    assert!(text.contains("pools.web.connect_timeout"), "{text}");
    assert!(
        text.contains("pools.web.retries: must be between 0 and 16, got 99"),
        "{text}"
    );
    assert!(
        text.contains("routes[0].pool: unknown pool \"nope\""),
        "{text}"
    );
    assert!(text.contains("3 error(s)"), "{text}");
}

#[test]
fn check_on_a_missing_file_says_so() {
    let out = Command::new(BIN)
        .args(["check", "-c", "/nonexistent/edge.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/edge.toml: (file): cannot read"),
        "{err}"
    );
}

#[test]
fn run_refuses_an_invalid_config_without_starting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, GOOD.replace("pool = \"web\"", "pool = \"nope\"")).unwrap();
    let out = Command::new(BIN)
        .args(["run", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown pool \"nope\""), "{err}");
    assert!(err.contains("not starting"), "{err}");
}

#[test]
fn run_reports_a_listener_it_cannot_bind() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, GOOD.replace("127.0.0.1:18080", &addr.to_string())).unwrap();
    let out = Command::new(BIN)
        .args(["run", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}

#[test]
fn every_example_config_in_the_repository_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    // The examples name the development certificates in ../.dev/certs, which `make run`
    // generates; here a copy of config/ gets its own, beside it.
    let stage = tempfile::tempdir().unwrap();
    let certs = stage.path().join(".dev/certs");
    let generated = Command::new(BIN)
        .args(["cert", "generate", "--out", certs.to_str().unwrap()])
        .args(["--name", "localhost", "--name", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(generated.status.success(), "{generated:?}");
    std::fs::create_dir(stage.path().join("config")).unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let original = entry.unwrap().path();
        if original.extension().is_some_and(|e| e == "toml") {
            let path = stage
                .path()
                .join("config")
                .join(original.file_name().unwrap());
            std::fs::copy(&original, &path).unwrap();
            let out = Command::new(BIN)
                .args(["check", "-c", path.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "expected config/dev.toml and a reference example"
    );
}

#[test]
fn version_and_help_with_examples() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("dime-edge {}", env!("CARGO_PKG_VERSION"))
    );
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "run",
        "check",
        "proxy",
        "Examples:",
        "dime-edge proxy --listen",
    ] {
        assert!(help.contains(expected), "--help lacks {expected}:\n{help}");
    }
}

#[test]
fn quick_mode_rejects_a_bad_address_clearly() {
    let out = Command::new(BIN)
        .args(["proxy", "--listen", "localhost", "--to", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--listen localhost: unparsable address"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn quick_mode_is_a_full_edge_over_a_pool() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let edge = EdgeProc::start_quick(&[a.addr, b.addr]).await;
    edge.wait_ready().await;
    for i in 0..10 {
        let r = client()
            .get(edge.url(&format!("/x{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["via"], "1.1 dime");
    }
    assert!(
        a.hits() > 0 && b.hits() > 0,
        "a={} b={}",
        a.hits(),
        b.hits()
    );
    // With one backend gone, the other takes every request at once.
    a.kill();
    for i in 0..10 {
        let r = client()
            .get(edge.url(&format!("/y{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let line = "dime_requests_total{route=\"default\",status_class=\"2xx\"} 20";
    let m = edge.metrics_with(&[line]).await;
    assert!(m.contains(line), "{m}");
}

#[test]
fn check_rejects_duplicate_route_names_and_a_bad_health_check_host() {
    let config = GOOD.to_string()
        + "\n[pools.web.health_check]\ntype = \"http\"\nhost = \"bad host\"\n"
        + "\n[[routes]]\nname = \"/\"\npath = \"/x\"\npool = \"web\"\n";
    let (status, text) = check(&config);
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains("pools.web.health_check.host: invalid host"),
        "{text}"
    );
    assert!(
        text.contains("routes[1].name: route name \"/\" is already used by routes[0]"),
        "{text}"
    );
}
