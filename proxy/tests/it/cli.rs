//! The command line: `check` (and nginx's `-t`) exit codes and error reports, the default
//! config path, `run` refusing bad config, `--version`, `--help`, completions and man pages,
//! and quick mode behaving as a full edge, its admin APIs included.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::edge::{check, BIN};
use common::upstream::Script;
use common::{client, fetch, EdgeProc, Upstream};

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
fn dash_t_checks_like_nginx() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, GOOD).unwrap();
    let path = path.to_str().unwrap();
    for args in [vec!["-t", "-c", path], vec!["-t", "--config", path]] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        assert!(stdout.contains(": ok: 1 route(s)"), "{args:?}: {stdout}");
    }
    std::fs::write(
        dir.path().join("edge.toml"),
        GOOD.replace("\"web\"\n", "\"nope\"\n"),
    )
    .unwrap();
    let out = Command::new(BIN).args(["-t", "-c", path]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown pool \"nope\""),
        "{out:?}"
    );
}

#[test]
fn without_c_a_missing_default_path_is_explained() {
    const DEFAULT: &str = "/etc/dime/edge.toml";
    if Path::new(DEFAULT).exists() {
        eprintln!("{DEFAULT} exists on this machine: the missing-default case cannot be seen");
        return;
    }
    for args in [&["check"][..], &["-t"], &["run"]] {
        let out = Command::new(BIN).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(DEFAULT) && err.contains("-c FILE"),
            "{args:?}: the error must name the default path and -c: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn completions_name_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8_lossy(&out.stdout);
        for sub in ["run", "check", "proxy", "cert", "completions", "man"] {
            assert!(script.contains(sub), "{shell} completions lack {sub}");
        }
        assert!(script.contains("dime-edge"), "{shell}");
    }
    let bash = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    let bash = String::from_utf8_lossy(&bash.stdout);
    assert!(bash.contains("complete -F"), "{bash}");
    assert!(
        bash.contains("--purge-token"),
        "quick mode's flags complete too"
    );
    let out = Command::new(BIN)
        .args(["completions", "powershell-7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn man_writes_roff_pages_for_the_command_and_each_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["man", "--out", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let main = std::fs::read_to_string(dir.path().join("dime-edge.1")).unwrap();
    assert!(main.contains(".TH dime-edge 1"), "not roff:\n{main}");
    assert!(main.contains(".SH SUBCOMMANDS"), "{main}");
    for sub in ["run", "check", "proxy", "cert", "completions", "man"] {
        assert!(
            main.contains(&format!("dime\\-edge\\-{sub}(1)")),
            "the main page lists {sub}:\n{main}"
        );
    }
    for page in [
        "dime-edge-run.1",
        "dime-edge-check.1",
        "dime-edge-proxy.1",
        "dime-edge-cert-generate.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH "), "{page} is not roff");
    }
    let check = std::fs::read_to_string(dir.path().join("dime-edge-check.1")).unwrap();
    assert!(check.contains("/etc/dime/edge.toml"), "{check}");
    // What was written is said, for an install script's log.
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("dime-edge-run.1"), "{said}");
}

const QUICK_TOKEN: &str = "0123456789abcdef-quick";

async fn post(edge: &EdgeProc, path: &str, token: Option<&str>) -> (u16, String) {
    let mut req = client().post(edge.admin_url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn quick_mode_purges_with_its_purge_token_flag() {
    let origin = Upstream::start("o").await;
    origin.script(
        "/vod/a.ts",
        Script::ok(&[("cache-control", "max-age=600")], "segment"),
    );
    let edge = EdgeProc::start_quick_with(&[origin.addr], &["--purge-token", QUICK_TOKEN]).await;
    edge.wait_ready().await;
    fetch(&edge.url("/vod/a.ts"), &[]).await;
    assert_eq!(fetch(&edge.url("/vod/a.ts"), &[]).await.cache(), "HIT");

    let (status, body) = post(&edge, "/cache/purge?prefix=/vod/", None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("--purge-token"), "{body}");
    assert!(!body.contains("cache.purge_token"), "{body}");

    let (status, body) = post(&edge, "/cache/purge?prefix=/vod/", Some(QUICK_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"purged\":1"), "{body}");
    assert_eq!(fetch(&edge.url("/vod/a.ts"), &[]).await.cache(), "MISS");

    // No --admin-token: the config API says which flag enables it, not a config field.
    let (status, body) = post(&edge, "/config/reload", Some(QUICK_TOKEN)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("--admin-token"), "{body}");
    assert!(!body.contains("in the config"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn quick_mode_without_a_purge_token_names_the_flag() {
    let origin = Upstream::start("o").await;
    let edge = EdgeProc::start_quick(&[origin.addr]).await;
    let (status, body) = post(&edge, "/cache/purge?all=true", Some(QUICK_TOKEN)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("--purge-token"), "{body}");
    assert!(!body.contains("in the config"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn quick_mode_reads_tokens_from_files() {
    let origin = Upstream::start("o").await;
    let dir = tempfile::tempdir().unwrap();
    let admin_file = dir.path().join("admin-token");
    let purge_file = dir.path().join("purge-token");
    // A trailing newline, as `echo TOKEN > file` and Kubernetes Secrets leave it.
    std::fs::write(&admin_file, "0123456789abcdef-admin\n").unwrap();
    std::fs::write(&purge_file, format!("{QUICK_TOKEN}\n")).unwrap();
    let edge = EdgeProc::start_quick_with(
        &[origin.addr],
        &[
            "--admin-token-file",
            admin_file.to_str().unwrap(),
            "--purge-token-file",
            purge_file.to_str().unwrap(),
        ],
    )
    .await;
    let (status, body) = post(&edge, "/cache/purge?all=true", Some(QUICK_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    // With the admin token the config API answers; quick mode has no file to reload.
    let (status, body) = post(&edge, "/config/reload", Some("0123456789abcdef-admin")).await;
    assert_eq!(status, 409, "{body}");
    let r = client()
        .get(edge.admin_url("/config"))
        .bearer_auth("0123456789abcdef-admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("[redacted]"));
}

#[test]
fn quick_mode_refuses_bad_tokens_by_their_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["--purge-token", "short"], "--purge-token: too short"),
        (&["--admin-token", "short"], "--admin-token: too short"),
        (
            &["--purge-token-file", "/nonexistent/token"],
            "--purge-token-file /nonexistent/token: cannot read",
        ),
        (
            &["--purge-token", QUICK_TOKEN, "--purge-token-file", "/x"],
            "cannot be used with",
        ),
    ];
    for (flags, expected) in cases {
        let mut cmd = Command::new(BIN);
        cmd.args(["proxy", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:2"])
            .args(["--admin", "127.0.0.1:0"])
            .args(*flags);
        let out = output_within(cmd, Duration::from_secs(20));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?}");
        assert!(
            err.contains(expected),
            "{flags:?}: expected {expected:?} in {err}"
        );
        assert!(!err.contains("cache.purge_token"), "{flags:?}: {err}");
    }
}

/// The command's output, or a panic (after killing it) if it still runs after `limit`: a
/// refused start must not turn into a running edge that hangs the test.
fn output_within(mut cmd: Command, limit: Duration) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    panic!("still running after {limit:?}: {out:?}");
}

/// README's sample of `dime-edge check -c config/dev.toml` is what the command prints.
#[test]
fn readme_shows_what_check_prints_for_the_dev_config() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut lines = readme.lines();
    lines
        .by_ref()
        .find(|l| l.starts_with("$ dime-edge check -c config/dev.toml"))
        .expect("README shows `$ dime-edge check -c config/dev.toml`");
    let shown = lines.next().expect("a line of output after the command");
    // config/dev.toml names the development certificates `make run` generates in .dev/certs.
    let stage = tempfile::tempdir().unwrap();
    let generated = Command::new(BIN)
        .args(["cert", "generate", "--out", ".dev/certs"])
        .args(["--name", "localhost", "--name", "127.0.0.1"])
        .current_dir(stage.path())
        .output()
        .unwrap();
    assert!(generated.status.success(), "{generated:?}");
    std::fs::create_dir(stage.path().join("config")).unwrap();
    std::fs::copy(
        root.join("config/dev.toml"),
        stage.path().join("config/dev.toml"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "-c", "config/dev.toml"])
        .current_dir(stage.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        printed.trim_end(),
        shown,
        "README.md's sample of `check` is stale"
    );
}
