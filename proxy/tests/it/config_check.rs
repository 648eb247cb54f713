//! `dime-edge check` on the real binary: errors printed with their file:line and counted, the
//! exit code, `${ENV}` from the process's environment, `check --dump`, the misplaced-cache
//! warning, and a purge token read from a file and rotated. What the compiler says for each
//! broken file is tested in-process, as tables, in `config_compile.rs`.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use common::edge::{check, BIN};
use common::reload::{write_config, WriteStyle};
use common::{cached_edge, client, Upstream};

const HEAD: &str = r#"[listen]
http = ["127.0.0.1:18080"]

[pools.web]
backends = ["127.0.0.1:18083"]
"#;

/// `dime-edge check ARGS -c DIR/edge.toml` with `env` set (and `unset` removed); stdout and
/// stderr apart, the file's path shortened to `edge.toml`.
fn check_with(
    dir: &Path,
    text: &str,
    args: &[&str],
    env: &[(&str, &str)],
    unset: &[&str],
) -> (Output, String, String) {
    let path = dir.join("edge.toml");
    std::fs::write(&path, text).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("check")
        .args(args)
        .args(["-c", path.to_str().unwrap()]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    for k in unset {
        cmd.env_remove(k);
    }
    let out = cmd.output().unwrap();
    let p = path.to_str().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).replace(p, "edge.toml");
    let stderr = String::from_utf8_lossy(&out.stderr).replace(p, "edge.toml");
    (out, stdout, stderr)
}

/// The command line's side of the tables in `config_compile.rs`: every error on stderr with the
/// file's path, the count, exit code 1.
#[test]
fn type_errors_in_two_routes_are_both_reported_with_their_paths_and_lines() {
    let config = HEAD.to_string()
        + "\n[[routes]]\npath = \"/a/\"\npool = \"web\"\nstrip_prefix = \"yes\"\n" // line 10
        + "\n[[routes]]\npath = \"/b/\"\npool = \"web\"\n\n[routes.cache]\nmode = \"video\"\nmedia_ttl = 10\n"; // line 18
    let (status, text) = check(&config);
    assert_eq!(status.code(), Some(1), "{text}");
    for expected in [
        "edge.toml:10:16: routes[0].strip_prefix: invalid type: string \"yes\", expected a boolean",
        "edge.toml:18:13: routes[1].cache.media_ttl: expected a duration, found the integer 10: write it with a unit, e.g. \"10s\"",
        "edge.toml: 2 error(s)",
    ] {
        assert!(text.contains(expected), "expected `{expected}` in:\n{text}");
    }
}

#[test]
fn connection_limits_out_of_range_are_refused_with_their_fields() {
    let config = format!(
        "[server]\nmax_connections = 0\nkeepalive_timeout = \"0s\"\nheader_timeout = \"5m\"\nkeepalive_requests = 0\nhttp2_max_concurrent_streams = -7\n{HEAD}\n[[routes]]\npath = \"/\"\npool = \"web\"\n"
    );
    let (status, text) = check(&config);
    assert_eq!(status.code(), Some(1), "{text}");
    for expected in [
        "edge.toml:2:19: server.max_connections: must be between 1 and 10000000, got 0",
        "edge.toml:3:21: server.keepalive_timeout: invalid duration: must be greater than zero",
        "edge.toml:4:18: server.header_timeout: must be at most 60s",
        "edge.toml:5:22: server.keepalive_requests: must be between 1 and 1000000000, got 0",
        "edge.toml:6:32: server.http2_max_concurrent_streams: must be between 1 and 1000000, got -7",
        "edge.toml: 5 error(s)",
    ] {
        assert!(text.contains(expected), "expected `{expected}` in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_with_the_token_read_from_a_file_works_and_a_rotated_file_reloads_it() {
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("purge-token");
    std::fs::write(&token_file, "purge-secret-from-a-file\n").unwrap();
    let origin = Upstream::start("o").await;
    let edge = cached_edge(
        &origin,
        "",
        &format!("[cache]\npurge_token_file = \"{}\"\n", token_file.display()),
    )
    .await;
    let purge = |token: &'static str| {
        let url = edge.admin_url("/cache/purge?all=true");
        async move {
            let r = client().post(url).bearer_auth(token).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, body) = purge("purge-secret-from-a-file").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(purge("purge-secret-from-a-filf").await.0, 401);

    // Rotated the way a secret manager does it (a new file renamed over the old one): the
    // edge reloads for the token file alone, and only the new token purges.
    write_config(
        &token_file,
        "rotated-purge-secret-0123\n",
        WriteStyle::Rename,
    );
    assert_eq!(edge.wait_reloads("applied", 1).await, 1, "{}", edge.logs());
    assert!(
        edge.logs().contains("cache.purge_token changed"),
        "{}",
        edge.logs()
    );
    assert_eq!(purge("rotated-purge-secret-0123").await.0, 200);
    assert_eq!(purge("purge-secret-from-a-file").await.0, 401);
}

#[test]
fn env_variables_are_substituted_and_an_unset_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[admin]\ntoken = \"${{DIME_TEST_ADMIN_TOKEN}}\"\n{}\n[[routes]]\npath = \"/\"\npool = \"web\"\n",
        HEAD.replace("127.0.0.1:18083", "${DIME_TEST_ORIGIN}:18083")
    );
    let env = [
        ("DIME_TEST_ADMIN_TOKEN", "admin-secret-from-env-0123"),
        ("DIME_TEST_ORIGIN", "127.0.0.7"),
    ];
    let (out, dump, err) = check_with(dir.path(), &config, &["--dump"], &env, &[]);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(dump.contains("\"127.0.0.7:18083\""), "{dump}");
    assert!(!dump.contains("admin-secret-from-env"), "{dump}");

    let (out, _, err) = check_with(
        dir.path(),
        &config,
        &[],
        &env[1..],
        &["DIME_TEST_ADMIN_TOKEN"],
    );
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "edge.toml:2:9: admin.token: environment variable DIME_TEST_ADMIN_TOKEN is not set"
        ),
        "{err}"
    );
}

#[test]
fn check_dump_prints_resolved_policies_and_pool_defaults_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[admin]\ntoken = \"admin-secret-0123456789\"\n[cache]\npurge_token = \"purge-secret-0123456789\"\n{HEAD}
[[routes]]
name = \"stream\"
path = \"/stream/\"
pool = \"web\"
upstream_headers = {{ Authorization = \"Bearer origin-secret\" }}

[routes.cache]
mode = \"video\"
media_ttl = \"1h\"

[[routes]]
path = \"/\"
pool = \"web\"
"
    );
    let (out, dump, err) = check_with(dir.path(), &config, &["--dump"], &[], &[]);
    assert_eq!(out.status.code(), Some(0), "{err}");
    for expected in [
        "[[routes]]",
        "name = \"stream\"",
        "mode = \"video\"",
        "media_ttl = \"1h\"",
        "target_duration = \"2s\"",
        "keep_query = [\"_HLS_msn\", \"_HLS_part\", \"_HLS_skip\"]",
        "background_fill = true",
        "mode = \"rfc\"",
        "[pools.web]",
        "connect_timeout = \"2s\"",
        "read_timeout = \"30s\"",
        "retries = 2",
        "selection = \"round_robin\"",
        "addr = \"127.0.0.1:18083\"",
        "interval = \"5s\"",
        "memory = \"512MiB\"",
        "authorization = \"[redacted]\"",
        "max_connections = 10000",
        "keepalive_timeout = \"1m 15s\"",
        "header_timeout = \"1m\"",
        "keepalive_requests = 1000",
        "http2_max_concurrent_streams = 128",
    ] {
        assert!(dump.contains(expected), "expected `{expected}` in:\n{dump}");
    }
    for secret in ["admin-secret", "purge-secret", "origin-secret"] {
        assert!(!dump.contains(secret), "{secret} leaked:\n{dump}");
    }
}

#[test]
fn a_video_cache_table_on_the_catch_all_route_is_flagged_as_misplaced() {
    let dir = tempfile::tempdir().unwrap();
    // The operator meant the cache table for /stream/, but TOML attaches it to the route
    // just above it: the catch-all.
    let config = format!(
        "{HEAD}
[[routes]]
path = \"/stream/\"
pool = \"web\"

[[routes]]
path = \"/\"
pool = \"web\"

[routes.cache]
mode = \"video\"
"
    );
    let (out, stdout, err) = check_with(dir.path(), &config, &[], &[], &[]);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(stdout.contains("ok: 2 route(s)"), "{stdout}");
    for expected in [
        "edge.toml:15:1: warning: routes[1].cache:",
        "routes[0] (path \"/stream/\") has none",
        "[routes.cache] belongs to the [[routes]] entry just above it",
    ] {
        assert!(err.contains(expected), "expected `{expected}` in:\n{err}");
    }
    // Placed under /stream/, the same table is what the operator meant: no warning.
    let fixed = format!(
        "{HEAD}
[[routes]]
path = \"/stream/\"
pool = \"web\"

[routes.cache]
mode = \"video\"

[[routes]]
path = \"/\"
pool = \"web\"
"
    );
    let (out, _, err) = check_with(dir.path(), &fixed, &[], &[], &[]);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(err, "", "no warning expected");
}
