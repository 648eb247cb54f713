//! `dime-origin web` from the shell: create-admin, add-channel, import, and serving with the
//! default SQLite file.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use dime_packager::options::Size;
use dime_packager::sample::{write_sample, SampleOptions};
use dime_web::Store;

const BIN: &str = env!("CARGO_BIN_EXE_dime-origin");

/// Runs `dime-origin web ARGS` in `dir`, with `stdin` piped in.
fn web(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .arg("web")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dime-origin");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for dime-origin")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The command succeeded; what it said on stdout.
#[track_caller]
fn succeeded(output: &Output) -> String {
    assert!(output.status.success(), "{}", stderr(output));
    stdout(output)
}

/// The command failed and said `expected` on stderr.
#[track_caller]
fn assert_fails_with(output: &Output, expected: &str) {
    let err = stderr(output);
    assert!(!output.status.success(), "{err}");
    assert!(err.contains(expected), "{err}");
}

fn db_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("web.db").display())
}

#[tokio::test]
async fn create_admin_takes_the_password_from_stdin_and_refuses_short_ones_and_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_url(dir.path());

    let short = web(
        dir.path(),
        &["create-admin", "--db", &db, "--username", "alice"],
        "short\n",
    );
    assert_fails_with(&short, "password too short: 5 characters, at least 12");

    let created = web(
        dir.path(),
        &[
            "create-admin",
            "--db",
            &db,
            "--username",
            "alice",
            "--password-stdin",
        ],
        "correct horse battery\n",
    );
    assert!(succeeded(&created).contains("created admin `alice`"));

    let again = web(
        dir.path(),
        &["create-admin", "--db", &db, "--username", "alice"],
        "another long password\n",
    );
    assert_fails_with(&again, "admin `alice` exists already");

    let store = Store::open(&db).await.unwrap();
    assert!(store
        .check_login("alice", "correct horse battery")
        .await
        .unwrap()
        .is_some());
    assert!(store
        .check_login("alice", "another long password")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn create_admin_can_generate_and_print_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_url(dir.path());
    let created = web(
        dir.path(),
        &[
            "create-admin",
            "--db",
            &db,
            "--username",
            "ops",
            "--generate-password",
        ],
        "",
    );
    let out = succeeded(&created);
    let password = out.trim_end();
    assert!(
        !password.contains(char::is_whitespace),
        "only the password on stdout: {out}"
    );
    assert!(stderr(&created).contains("created admin `ops`"));
    assert_eq!(password.len(), 32);
    let store = Store::open(&db).await.unwrap();
    assert!(store.check_login("ops", password).await.unwrap().is_some());
}

#[tokio::test]
async fn add_channel_creates_then_leaves_alone_then_updates_by_slug() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_url(dir.path());
    let args = |stream: &'static str| {
        vec![
            "add-channel".to_owned(),
            "--db".to_owned(),
            db.clone(),
            "--name".to_owned(),
            "Camera".to_owned(),
            "--slug".to_owned(),
            "camera".to_owned(),
            "--stream".to_owned(),
            stream.to_owned(),
        ]
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        web(dir.path(), &args, "")
    };

    let first = run(args("live/camera/index.m3u8"));
    assert!(succeeded(&first).contains("created: page /live/camera"));
    let second = run(args("live/camera/index.m3u8"));
    assert!(stdout(&second).contains("unchanged"), "{}", stdout(&second));
    let third = run(args("live/camera2/index.m3u8"));
    assert!(stdout(&third).contains("updated"), "{}", stdout(&third));
    let bad = run(args("/etc/passwd"));
    assert_fails_with(&bad, "invalid --stream");

    let store = Store::open(&db).await.unwrap();
    let channels = store.channels().await.unwrap();
    assert_eq!(channels.len(), 1);
    assert_eq!(channels[0].stream_url, "live/camera2/index.m3u8");
}

#[tokio::test]
async fn import_packages_a_video_under_the_media_root_and_registers_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_url(dir.path());
    let media = dir.path().join("media");
    std::fs::create_dir(&media).unwrap();
    let input = dir.path().join("clip.mp4");
    let options = SampleOptions {
        duration: Duration::from_secs(2),
        size: Size {
            width: 320,
            height: 180,
        },
        fps: 15,
        audio: false,
    };
    tokio::task::spawn_blocking({
        let input = input.clone();
        move || write_sample(&input, &options)
    })
    .await
    .unwrap()
    .expect("write the sample clip");

    let media_root = media.to_str().unwrap();
    let import = |file: &str, title: &str, extra: &[&str]| {
        let mut args = vec![
            "import",
            file,
            "--title",
            title,
            "--db",
            &db,
            "--media-root",
            media_root,
        ];
        args.extend_from_slice(extra);
        web(dir.path(), &args, "")
    };
    let imported = import(
        input.to_str().unwrap(),
        "Test Clip",
        &[
            "--description",
            "Two seconds of colour bars.",
            "--segment",
            "1",
        ],
    );
    let out = succeeded(&imported);
    assert!(out.contains("page /titles/test-clip"), "{out}");
    assert!(out.contains("stream vod/test-clip/index.m3u8"), "{out}");
    assert!(media.join("vod/test-clip/index.m3u8").is_file());
    assert!(media.join("vod/test-clip/poster.jpg").is_file());

    let store = Store::open(&db).await.unwrap();
    let title = store
        .title_by_slug("test-clip")
        .await
        .unwrap()
        .expect("registered");
    assert_eq!(title.title, "Test Clip");
    assert_eq!(title.stream_url, "vod/test-clip/index.m3u8");
    assert_eq!(title.poster.as_deref(), Some("vod/test-clip/poster.jpg"));
    let duration = title.duration_ms.expect("a duration");
    assert!((1500..=2600).contains(&duration), "{duration} ms");

    // The same slug again: refused before any packaging, files untouched.
    let again = import(input.to_str().unwrap(), "Test Clip", &[]);
    assert_fails_with(
        &again,
        "slug `test-clip` exists already: pass another --slug",
    );

    let missing = import("nope.mp4", "Nope", &[]);
    assert_fails_with(&missing, "nope.mp4");
    assert!(store.title_by_slug("nope").await.unwrap().is_none());
    assert!(!media.join("vod/nope").exists());
}

#[tokio::test]
async fn serving_creates_the_default_sqlite_file_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = dime_test_ports::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(BIN)
        .args(["web", "--listen", &listen, "--media-base", "/stream/"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dime-origin web");

    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = client.get(format!("http://{listen}/healthz")).send().await {
            assert_eq!(response.status(), 200);
            break;
        }
        assert!(Instant::now() < deadline, "the web app did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        dir.path().join("dime-web.db").is_file(),
        "the default database file is created"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "clean exit on SIGTERM: {exit:?}");
}

#[test]
fn an_unknown_database_url_is_refused_with_the_forms_that_work() {
    let dir = tempfile::tempdir().unwrap();
    let output = web(
        dir.path(),
        &[
            "add-channel",
            "--db",
            "mysql://x/y",
            "--name",
            "C",
            "--slug",
            "c",
            "--stream",
            "live/c/index.m3u8",
        ],
        "",
    );
    assert_fails_with(&output, "unsupported database URL `mysql://x/y`");
    assert_fails_with(&output, "sqlite://PATH");
}

#[test]
fn database_errors_say_what_is_wrong_and_hide_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let channel = [
        "--name",
        "C",
        "--slug",
        "c",
        "--stream",
        "live/c/index.m3u8",
    ];

    let missing = dir.path().join("no/such/dir/web.db");
    let url = format!("sqlite://{}", missing.display());
    let mut args = vec!["add-channel", "--db", &url];
    args.extend(channel);
    let output = web(dir.path(), &args, "");
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("does not exist; create it"), "{err}");
    assert_eq!(
        err.lines().count(),
        1,
        "one line, no repeated causes: {err}"
    );

    let port = dime_test_ports::free_port();
    let url = format!("postgres://dime:s3cret@127.0.0.1:{port}/dime");
    let mut args = vec!["add-channel", "--db", &url];
    args.extend(channel);
    let output = web(dir.path(), &args, "");
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(
        err.contains("Connection refused"),
        "the real cause, not a pool timeout: {err}"
    );
    assert!(err.contains("dime:***@"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

/// Peak resident memory of process `pid` (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read its status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmHWM line")
}

/// A `dime-origin web` process on a free port, killed on drop.
struct WebProcess {
    child: std::process::Child,
    listen: String,
}

impl WebProcess {
    /// Serves `db` with `extra` flags and waits for /healthz.
    async fn start(dir: &Path, db: &str, extra: &[&str]) -> Self {
        let port = dime_test_ports::free_port();
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(BIN)
            .args(["web", "--listen", &listen, "--db", db])
            .args(extra)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dime-origin web");
        let process = Self { child, listen };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.get(process.url("/healthz")).send().await.is_err() {
            assert!(Instant::now() < deadline, "the web app did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        process
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }
}

impl Drop for WebProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `dime_login` cookie and CSRF token of a fresh login form.
async fn login_form(client: &reqwest::Client, web: &WebProcess) -> (String, String) {
    let form = client.get(web.url("/admin/login")).send().await.unwrap();
    let cookie = form
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|line| line.starts_with("dime_login="))
        .and_then(|line| line.split(';').next())
        .expect("a login cookie")
        .to_owned();
    let html = form.text().await.unwrap();
    let marker = "name=\"csrf_token\" value=\"";
    let start = html.find(marker).expect("a token") + marker.len();
    let token = html[start..][..html[start..].find('"').unwrap()].to_owned();
    (cookie, token)
}

#[tokio::test]
async fn a_burst_of_wrong_logins_is_mostly_refused_and_stays_small() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_url(dir.path());
    let created = web(
        dir.path(),
        &["create-admin", "--db", &db, "--username", "alice"],
        "correct horse battery\n",
    );
    succeeded(&created);
    let web = WebProcess::start(dir.path(), &db, &[]).await;
    let client = reqwest::Client::new();
    let mut forms = Vec::new();
    for _ in 0..20 {
        forms.push(login_form(&client, &web).await);
    }
    let before = peak_rss_kib(web.child.id());

    let mut logins = tokio::task::JoinSet::new();
    for (cookie, token) in forms {
        let request = client
            .post(web.url("/admin/login"))
            .header("cookie", cookie)
            .form(&[
                ("csrf_token", token.as_str()),
                ("username", "alice"),
                ("password", "wrong guess"),
            ]);
        logins.spawn(async move { request.send().await.expect("POST").status() });
    }
    let statuses = logins.join_all().await;

    let throttled = statuses
        .iter()
        .filter(|status| status.as_u16() == 429)
        .count();
    let growth_mib = peak_rss_kib(web.child.id()).saturating_sub(before) / 1024;
    assert!(
        throttled >= 15,
        "{statuses:?}, RSS grew by {growth_mib} MiB"
    );
    // argon2 takes 19 MiB per verification: twenty at once would be ~380 MiB.
    assert!(growth_mib < 100, "peak RSS grew by {growth_mib} MiB");
}

#[test]
fn a_trusted_proxy_must_be_an_address_block() {
    let dir = tempfile::tempdir().unwrap();
    let output = web(dir.path(), &["--trusted-proxy", "edge.internal"], "");
    assert_fails_with(
        &output,
        "invalid value 'edge.internal' for '--trusted-proxy <CIDR>'",
    );
    assert_fails_with(&output, "use CIDR notation such as 10.0.0.0/8");
}

#[test]
fn a_wrong_edges_file_stops_the_server_with_every_error_placed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("edges.toml"),
        "default_region = \"eu\"\n\n[regions.eu]\nprefixes = [\"192.0.2.0/24\", \"10.0.0.0/40\"]\n\n\
         [[edges]]\nname = \"eu-1\"\nregion = \"us\"\nurl = \"https://eu-1.cdn.example/stream/\"\n\
         admin = \"10.99.0.2:9090\"\n",
    )
    .unwrap();
    let db = db_url(dir.path());
    // By flag and by variable alike; the database is never opened.
    for output in [
        web(dir.path(), &["--db", &db, "--edges", "edges.toml"], ""),
        web_env(
            dir.path(),
            &["--db", &db],
            &[("DIME_WEB_EDGES", "edges.toml")],
        ),
    ] {
        assert_fails_with(&output, "invalid --edges file:");
        assert_fails_with(
            &output,
            "edges.toml:4:29: regions.eu.prefixes[1]: `10.0.0.0/40` is not an address block",
        );
        assert_fails_with(
            &output,
            "edges.toml:8:10: edges[0].region: unknown region `us`: the regions are eu",
        );
        assert_fails_with(
            &output,
            "edges.toml:10:9: edges[0].admin: `10.99.0.2:9090` is not an http:// URL",
        );
        assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
        assert!(
            !dir.path().join("web.db").exists(),
            "the database was opened"
        );
    }
    let missing = web(dir.path(), &["--edges", "nowhere.toml"], "");
    assert_fails_with(
        &missing,
        "nowhere.toml: (file): cannot read it: No such file",
    );
    let syntax = dir.path().join("syntax.toml");
    std::fs::write(&syntax, "default_region = \"eu\"\n[[edges]]\nname = \n").unwrap();
    let output = web(dir.path(), &["--edges", "syntax.toml"], "");
    assert_fails_with(&output, "syntax.toml:3:8: edges[0].name:");
}

/// Runs `dime-origin web ARGS` in `dir` with extra environment variables.
fn web_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .arg("web")
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run dime-origin")
}

const CHANNEL: [&str; 7] = [
    "add-channel",
    "--name",
    "C",
    "--slug",
    "c",
    "--stream",
    "live/c/index.m3u8",
];

#[tokio::test]
async fn the_database_url_can_come_from_a_mounted_secret_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_url(dir.path());
    let secret = dir.path().join("db-url");
    // What `kubectl create secret` and most editors write: the value and a line break.
    std::fs::write(&secret, format!("{db}\n")).unwrap();
    let secret = secret.to_str().unwrap();

    let by_flag = web_env(
        dir.path(),
        &[&CHANNEL[..], &["--db-url-file", secret]].concat(),
        &[],
    );
    assert!(succeeded(&by_flag).contains("created"));
    let by_env = web_env(dir.path(), &CHANNEL, &[("DIME_DB_URL_FILE", secret)]);
    assert!(
        succeeded(&by_env).contains("unchanged"),
        "the same database"
    );
    assert_eq!(
        Store::open(&db)
            .await
            .unwrap()
            .channels()
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        !dir.path().join("dime-web.db").exists(),
        "not the default database"
    );
}

#[test]
fn a_database_url_given_twice_or_an_unreadable_secret_file_is_an_error_that_hides_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let port = dime_test_ports::free_port();
    let url = format!("postgres://dime:s3cret@127.0.0.1:{port}/dime");
    let secret = dir.path().join("db-url");
    std::fs::write(&secret, format!("{url}\n")).unwrap();
    let secret = secret.to_str().unwrap();

    // Both ways at once, in any mix of flags and environment: refused, not one of them picked.
    for (args, env) in [
        (vec!["--db", url.as_str(), "--db-url-file", secret], vec![]),
        (
            vec![],
            vec![("DIME_DB_URL", url.as_str()), ("DIME_DB_URL_FILE", secret)],
        ),
        (
            vec!["--db", url.as_str()],
            vec![("DIME_DB_URL_FILE", secret)],
        ),
    ] {
        let output = web_env(dir.path(), &[&CHANNEL[..], &args].concat(), &env);
        assert_fails_with(
            &output,
            "--db (DIME_DB_URL) and --db-url-file (DIME_DB_URL_FILE)",
        );
        assert!(!stderr(&output).contains("s3cret"), "{}", stderr(&output));
    }

    let missing = dir.path().join("no-such-secret");
    let output = web_env(
        dir.path(),
        &CHANNEL,
        &[("DIME_DB_URL_FILE", missing.to_str().unwrap())],
    );
    assert_fails_with(
        &output,
        &format!("cannot read the database URL from {}", missing.display()),
    );
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let output = web_env(
        dir.path(),
        &CHANNEL,
        &[("DIME_DB_URL_FILE", empty.to_str().unwrap())],
    );
    assert_fails_with(
        &output,
        &format!(
            "cannot read the database URL from {}: the file is empty",
            empty.display()
        ),
    );

    // A file holding only the password (a common mix-up) is not echoed back.
    let password_only = dir.path().join("password");
    std::fs::write(&password_only, "s3cret\n").unwrap();
    let output = web_env(
        dir.path(),
        &CHANNEL,
        &[("DIME_DB_URL_FILE", password_only.to_str().unwrap())],
    );
    assert_fails_with(&output, "sqlite://PATH");
    assert!(!stderr(&output).contains("s3cret"), "{}", stderr(&output));

    // A URL from the file that fails to connect: the cause, the password hidden.
    let output = web_env(dir.path(), &CHANNEL, &[("DIME_DB_URL_FILE", secret)]);
    assert_fails_with(&output, "Connection refused");
    assert_fails_with(&output, "dime:***@");
    assert!(!stderr(&output).contains("s3cret"), "{}", stderr(&output));
}

#[test]
fn help_names_the_environment_variable_of_every_flag_and_never_shows_the_database_url() {
    let dir = tempfile::tempdir().unwrap();
    let output = web_env(
        dir.path(),
        &["--help"],
        &[("DIME_DB_URL", "postgres://dime:s3cret@db/dime")],
    );
    let help = succeeded(&output);
    for env in [
        "DIME_WEB_LISTEN",
        "DIME_DB_URL",
        "DIME_DB_URL_FILE",
        "DIME_WEB_MEDIA_BASE",
        "DIME_WEB_MEDIA_ROOT",
        "DIME_WEB_TRUSTED_PROXY",
        "DIME_WEB_UPLOAD_MAX_SIZE",
        "DIME_WEB_UPLOAD_CONCURRENCY",
        "DIME_WEB_UPLOAD_MIN_FREE",
        "DIME_WEB_PACKAGER_MEMORY",
        "DIME_WEB_PACKAGER_CPU_SECS",
        "DIME_WEB_REPLICA_TIMEOUT",
        "DIME_WEB_EDGES",
        "DIME_LOG_FORMAT",
    ] {
        assert!(
            help.contains(&format!("[env: {env}")),
            "{env} missing in:\n{help}"
        );
    }
    assert!(!help.contains("s3cret"), "{help}");
}

#[tokio::test]
async fn the_server_takes_its_whole_configuration_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_url(dir.path());
    let secret = dir.path().join("db-url");
    std::fs::write(&secret, format!("{db}\n")).unwrap();
    let media = dir.path().join("media");
    std::fs::create_dir(&media).unwrap();
    let port = dime_test_ports::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(BIN)
        .arg("web")
        .envs([
            ("DIME_WEB_LISTEN", listen.as_str()),
            ("DIME_DB_URL_FILE", secret.to_str().unwrap()),
            ("DIME_WEB_MEDIA_BASE", "https://media.example/"),
            ("DIME_WEB_MEDIA_ROOT", media.to_str().unwrap()),
            // The shield's pod network and one more address; not loopback, this test's client.
            ("DIME_WEB_TRUSTED_PROXY", "10.42.0.0/16,192.0.2.1"),
            ("DIME_WEB_UPLOAD_MAX_SIZE", "1MiB"),
            ("DIME_WEB_REPLICA_TIMEOUT", "10"),
            ("DIME_LOG_FORMAT", "json"),
        ])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dime-origin web");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let catalog = loop {
        if let Ok(response) = client
            .get(format!("http://{listen}/api/catalog"))
            .send()
            .await
        {
            break response.text().await.unwrap();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the web app exited: {status}");
        }
        assert!(Instant::now() < deadline, "the web app did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The proxies trusted come from the environment and replace the default (loopback): this
    // test's client is not one, so the clients it names are ignored and it counts once.
    let created = web_env(
        dir.path(),
        &CHANNEL,
        &[("DIME_DB_URL_FILE", secret.to_str().unwrap())],
    );
    assert!(succeeded(&created).contains("created"));
    for (client_address, expected) in [("203.0.113.1", true), ("203.0.113.2", false)] {
        let counted = client
            .post(format!("http://{listen}/api/views/live/c"))
            .header("x-forwarded-for", client_address)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            counted.contains(&format!(r#""counted":{expected}"#)),
            "{counted}"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(catalog.contains("https://media.example/"), "{catalog}");
    assert!(
        dir.path().join("web.db").is_file(),
        "the database from the file"
    );
    assert!(!dir.path().join("dime-web.db").exists());

    // The maintenance commands share the database settings and ignore the server's.
    let channel = web_env(
        dir.path(),
        &CHANNEL,
        &[
            ("DIME_DB_URL_FILE", secret.to_str().unwrap()),
            ("DIME_WEB_LISTEN", listen.as_str()),
        ],
    );
    assert!(succeeded(&channel).contains("unchanged"));
}
