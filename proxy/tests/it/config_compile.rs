//! Config compilation in-process, as tables: TOML in, every error out with its file:line:col
//! and field. The command line around it (`check`'s exit codes, output and `--dump`) is tested
//! on the real binary in `cli.rs` and `config_check.rs`.

use dime_edge::config::{self, ConfigErrors};

/// The smallest file that compiles, before its routes.
const HEAD: &str = r#"[listen]
http = ["127.0.0.1:18080"]

[pools.web]
backends = ["127.0.0.1:18083"]
"#;

/// `cli.rs`'s valid file: a listener, a pool and a catch-all route.
const GOOD: &str = r#"
[listen]
http = ["127.0.0.1:18080"]

[pools.web]
backends = ["127.0.0.1:18083"]

[[routes]]
path = "/"
pool = "web"
"#;

const ROUTE: &str = "\n[[routes]]\npath = \"/\"\npool = \"web\"\n";

/// One broken file and what compiling it must say.
struct Case {
    /// What is broken.
    name: &'static str,
    toml: String,
    /// Substrings of the errors' `file:line:col: field: reason` lines.
    expected: &'static [&'static str],
    /// How many errors, when the case is about getting all of them.
    count: Option<usize>,
    /// Substrings that must not appear.
    absent: &'static [&'static str],
}

fn case(name: &'static str, toml: impl Into<String>, expected: &'static [&'static str]) -> Case {
    Case {
        name,
        toml: toml.into(),
        expected,
        count: None,
        absent: &[],
    }
}

/// The errors of compiling `text` as `edge.toml`; a file that compiles is a failure.
fn errors(name: &str, text: &str) -> ConfigErrors {
    match config::compile("edge.toml", text) {
        Ok(_) => panic!("{name}: compiled, expected errors:\n{text}"),
        Err(e) => e,
    }
}

fn assert_case(c: &Case, errors: &ConfigErrors) {
    let text = errors.to_string();
    for expected in c.expected {
        assert!(
            text.contains(expected),
            "{}: expected `{expected}` in:\n{text}",
            c.name
        );
    }
    if let Some(n) = c.count {
        assert_eq!(errors.0.len(), n, "{}: {text}", c.name);
    }
    for absent in c.absent {
        assert!(
            !text.contains(absent),
            "{}: `{absent}` not expected in:\n{text}",
            c.name
        );
    }
}

fn cases() -> Vec<Case> {
    vec![
        // Types, in the operator's words, with every error at once.
        Case {
            count: Some(2),
            ..case(
                "type errors in two routes",
                HEAD.to_string()
                    + "\n[[routes]]\npath = \"/a/\"\npool = \"web\"\nstrip_prefix = \"yes\"\n" // line 10
                    + "\n[[routes]]\npath = \"/b/\"\npool = \"web\"\n\n[routes.cache]\nmode = \"video\"\nmedia_ttl = 10\n", // line 18
                &[
                    "edge.toml:10:16: routes[0].strip_prefix: invalid type: string \"yes\", expected a boolean",
                    "edge.toml:18:13: routes[1].cache.media_ttl: expected a duration, found the integer 10: write it with a unit, e.g. \"10s\"",
                ],
            )
        },
        Case {
            count: Some(3),
            ..case(
                "two type errors in one pool and a validation error",
                HEAD.replace(
                    "backends = [",
                    "retries = \"three\"\nconnect_timeout = 5\nselection = \"random\"\nbackends = [",
                ) + ROUTE,
                &[
                    "edge.toml:5:11: pools.web.retries: invalid type: string \"three\", expected an integer",
                    "edge.toml:6:19: pools.web.connect_timeout: expected a duration, found the integer 5: write it with a unit, e.g. \"5s\"",
                    "edge.toml:7:13: pools.web.selection: unknown selection \"random\"",
                ],
            )
        },
        Case {
            count: Some(3),
            ..case(
                "every error, not just the first",
                GOOD.replace("pool = \"web\"", "pool = \"nope\"").replace(
                    "backends = [",
                    "connect_timeout = \"-1s\"\nretries = 99\nbackends = [",
                ),
                &[
                    "pools.web.connect_timeout",
                    "pools.web.retries: must be between 0 and 16, got 99",
                    "routes[0].pool: unknown pool \"nope\"",
                ],
            )
        },
        Case {
            count: Some(2),
            ..case(
                "retry_on_status: a status that is no error, and one listed twice",
                HEAD.replace(
                    "backends = [",
                    "retry_on_status = [503, 200, 503]\nbackends = [",
                ) + ROUTE,
                &[
                    "edge.toml:5:25: pools.web.retry_on_status[1]: 200 is not an error status: give statuses from 400 to 599",
                    "edge.toml:5:30: pools.web.retry_on_status[2]: 503 is listed twice",
                ],
            )
        },
        // Durations are called durations; an integer asks for a unit.
        Case {
            absent: &["timeout"],
            ..case(
                "integer duration",
                format!("[server]\ngrace_period = 10\n{HEAD}{ROUTE}"),
                &["edge.toml:2:16: server.grace_period: expected a duration, found the integer 10: write it with a unit, e.g. \"10s\""],
            )
        },
        Case {
            absent: &["timeout"],
            ..case(
                "unparsable duration",
                format!("[server]\ngrace_period = \"soon\"\n{HEAD}{ROUTE}"),
                &["edge.toml:2:16: server.grace_period: invalid duration \"soon\""],
            )
        },
        Case {
            absent: &["timeout"],
            ..case(
                "zero grace period",
                format!("[server]\ngrace_period = \"0s\"\n{HEAD}{ROUTE}"),
                &["edge.toml:2:16: server.grace_period: invalid duration: must be greater than zero"],
            )
        },
        // The connection limits: counts from 1, the keep-alive timeout in whole seconds, the
        // header timeout within pingora's own bound; every one reported.
        Case {
            count: Some(5),
            ..case(
                "connection limits out of range",
                format!("[server]\nmax_connections = 0\nkeepalive_requests = -1\nhttp2_max_concurrent_streams = 0\nkeepalive_timeout = \"1500ms\"\nheader_timeout = \"2m\"\n{HEAD}{ROUTE}"),
                &[
                    "edge.toml:2:19: server.max_connections: must be between 1 and 10000000, got 0",
                    "edge.toml:3:22: server.keepalive_requests: must be between 1 and 1000000000, got -1",
                    "edge.toml:4:32: server.http2_max_concurrent_streams: must be between 1 and 1000000, got 0",
                    "edge.toml:5:21: server.keepalive_timeout: must be whole seconds (pingora counts this timeout in seconds), e.g. \"75s\"",
                    "edge.toml:6:18: server.header_timeout: must be at most 60s",
                ],
            )
        },
        case(
            "a request header limit past what pingora reads",
            format!("[server]\nmax_request_header_size = \"2MiB\"\n{HEAD}{ROUTE}"),
            &["edge.toml:2:27: server.max_request_header_size: must be between 1KiB and 1MiB (pingora reads at most 1 MiB of header), got 2097152 bytes"],
        ),
        case(
            "zero keep-alive timeout",
            format!("[server]\nkeepalive_timeout = \"0s\"\n{HEAD}{ROUTE}"),
            &["edge.toml:2:21: server.keepalive_timeout: invalid duration: must be greater than zero"],
        ),
        case(
            "max_connections as a string",
            format!("[server]\nmax_connections = \"10k\"\n{HEAD}{ROUTE}"),
            &["edge.toml:2:19: server.max_connections: invalid type: string \"10k\", expected an integer"],
        ),
        case(
            "invalid pool duration",
            GOOD.replace("backends = [", "connect_timeout = \"soon\"\nbackends = ["),
            &["edge.toml:6:19: pools.web.connect_timeout: invalid duration \"soon\""],
        ),
        case(
            "zero pool duration",
            GOOD.replace("backends = [", "read_timeout = \"0s\"\nbackends = ["),
            &["edge.toml:6:16: pools.web.read_timeout: invalid duration: must be greater than zero"],
        ),
        case(
            "integer size",
            format!("[cache]\nmemory = 4096\n{HEAD}{ROUTE}"),
            &["edge.toml:2:10: cache.memory: expected a size, found the integer 4096: write it as a string with a unit, e.g. \"512MiB\" (\"4096\" is 4096 bytes)"],
        ),
        case(
            "wrong type",
            GOOD.replace("backends = [", "retries = \"three\"\nbackends = ["),
            &["edge.toml:6:11: pools.web.retries: invalid type: string \"three\", expected an integer"],
        ),
        // Syntax and unknown fields name the indexed route.
        case("TOML syntax", "[listen\nhttp = []\n", &["edge.toml:1:8: "]),
        case(
            "unknown field in a route",
            GOOD.replace("path = \"/\"", "path = \"/\"\npoool = \"x\""),
            &["edge.toml:10:1: routes[0].poool: unknown field `poool`"],
        ),
        case(
            "unknown field in the second route's cache",
            HEAD.to_string()
                + "\n[[routes]]\npath = \"/a/\"\npool = \"web\"\n"
                + "\n[[routes]]\npath = \"/b/\"\npool = \"web\"\n\n[routes.cache]\nmeda_ttl = \"1h\"\n", // line 16
            &["edge.toml:16:1: routes[1].cache.meda_ttl: unknown field `meda_ttl`"],
        ),
        case(
            "unterminated string in the second route's cache",
            HEAD.to_string()
                + "\n[[routes]]\npath = \"/a/\"\npool = \"web\"\n"
                + "\n[[routes]]\npath = \"/b/\"\npool = \"web\"\n\n[routes.cache]\nmedia_ttl = \"1h\n",
            &["edge.toml:16:16: routes[1].cache.media_ttl: invalid basic string"],
        ),
        case(
            "a route written as a table instead of an array of tables",
            HEAD.to_string() + "\n[routes]\npath = \"/\"\npool = \"web\"\n",
            &["routes: ", "[[routes]]"],
        ),
        // Validation: what parses but cannot run.
        case(
            "route to an unknown pool",
            GOOD.replace("pool = \"web\"", "pool = \"wbe\""),
            &["edge.toml:10:8: routes[0].pool: unknown pool \"wbe\" (defined pools: web)"],
        ),
        case(
            "empty pool",
            GOOD.replace("[\"127.0.0.1:18083\"]", "[]"),
            &["edge.toml:6:12: pools.web.backends: empty pool: list at least one backend"],
        ),
        case(
            "duplicate route",
            GOOD.to_string() + ROUTE,
            &["edge.toml:13:8: routes[1]: duplicate route: host (any host) and path \"/\" are already routed by routes[0]"],
        ),
        case(
            "duplicate route name and a bad health check host",
            GOOD.to_string()
                + "\n[pools.web.health_check]\ntype = \"http\"\nhost = \"bad host\"\n"
                + "\n[[routes]]\nname = \"/\"\npath = \"/x\"\npool = \"web\"\n",
            &[
                "pools.web.health_check.host: invalid host",
                "routes[1].name: route name \"/\" is already used by routes[0]",
            ],
        ),
        case(
            "unparsable listen address",
            GOOD.replace("127.0.0.1:18080", "127.0.0.1:80800"),
            &["edge.toml:3:9: listen.http[0]: unparsable address \"127.0.0.1:80800\""],
        ),
        case(
            "unparsable backend address",
            GOOD.replace("127.0.0.1:18083", "origin-without-port"),
            &["edge.toml:6:13: pools.web.backends[0]: unparsable address \"origin-without-port\""],
        ),
        case(
            "route path that no canonical request path starts with",
            GOOD.replace("path = \"/\"", "path = \"/stream//%6Cive/\""),
            &["edge.toml:9:8: routes[0].path: requests are routed by their canonical path, which never starts with \"/stream//%6Cive/\": write \"/stream/live/\""],
        ),
        case(
            "short admin token and a long reload debounce",
            "[listen]\nhttp = [\"127.0.0.1:18080\"]\n\n[admin]\ntoken = \"short\"\n\n[reload]\nwatch = true\ndebounce = \"20s\"\n\n[pools.web]\nbackends = [\"127.0.0.1:18083\"]\n\n[[routes]]\npath = \"/\"\npool = \"web\"\n",
            &[
                "edge.toml:5:9: admin.token: too short: use at least 16 characters",
                "edge.toml:9:12: reload.debounce: must be at most 10s",
            ],
        ),
    ]
}

#[test]
fn each_broken_file_gives_its_errors_with_file_line_and_field() {
    let cases = cases();
    for c in &cases {
        assert_case(c, &errors(c.name, &c.toml));
    }
    // Each of the tables above also compiles once fixed, so no row passes by accident.
    assert!(config::compile("edge.toml", GOOD).is_ok());
    assert!(config::compile("edge.toml", &format!("{HEAD}{ROUTE}")).is_ok());
}

/// Token files are read by the loader, relative to the config file.
#[test]
fn token_files_missing_empty_both_set_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("purge.token");
    std::fs::write(&good, "purge-secret-from-a-file\n").unwrap();
    let empty = dir.path().join("empty.token");
    std::fs::write(&empty, "\n").unwrap();
    let rows: Vec<(String, &str)> = vec![
        (
            "[cache]\npurge_token_file = \"/nonexistent/purge.token\"\n".into(),
            "cache.purge_token_file: cannot read /nonexistent/purge.token: No such file or directory",
        ),
        (
            format!("[admin]\ntoken_file = \"{}\"\n", empty.display()),
            "admin.token_file: is empty",
        ),
        (
            format!(
                "[cache]\npurge_token = \"purge-secret-inline-0123\"\npurge_token_file = \"{}\"\n",
                good.display()
            ),
            "cache.purge_token_file: set purge_token or purge_token_file, not both",
        ),
    ];
    let path = dir.path().join("edge.toml");
    for (section, expected) in rows {
        std::fs::write(&path, format!("{section}{HEAD}{ROUTE}")).unwrap();
        let text = match config::load(&path) {
            Ok(_) => panic!("{section}: loaded, expected `{expected}`"),
            Err(e) => e.to_string(),
        };
        assert!(text.contains(expected), "expected `{expected}` in:\n{text}");
    }
    // A relative path is read beside the config file; the newline an editor adds is trimmed.
    std::fs::write(
        &path,
        format!("[cache]\npurge_token_file = \"purge.token\"\n{HEAD}{ROUTE}"),
    )
    .unwrap();
    if let Err(e) = config::load(&path) {
        panic!("{e}");
    }
}
