//! Zero-downtime upgrade: `run --upgrade` takes the listening sockets over from the running
//! edge (SIGQUIT makes it hand them over), the old process drains and exits, and viewers see
//! no failed request.

use crate::common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::edge::{pool, BIN};
use common::tls::{cert_entry, https_client, signal, Pki, TlsEdge};
use common::{client, fresh_client, Upstream};

/// A process started by the test, killed when dropped.
struct Proc {
    child: Child,
    log: std::path::PathBuf,
}

impl Proc {
    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `run --upgrade`, with systemd's notify socket at `notify`.
fn start_upgrade(config: &Path, log_dir: &Path, notify: &Path) -> Proc {
    let log = log_dir.join("new.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(BIN)
        .args(["run", "--upgrade", "-c", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env("NOTIFY_SOCKET", notify)
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap();
    Proc { child, log }
}

/// Shared tallies of a load loop.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

/// Requests `url_of(i)` with `client` until `stop`, checking each answer's status and body.
fn load(
    client: reqwest::Client,
    url_of: impl Fn(usize) -> (String, String) + Send + 'static,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let (url, want) = url_of(i);
            let outcome = match client.get(&url).send().await {
                Ok(r) if r.status() == 200 => match r.text().await {
                    Ok(body) if body == want => Ok(()),
                    Ok(body) => Err(format!("{url}: body {body:?}")),
                    Err(e) => Err(format!("{url}: body: {e:?}")),
                },
                Ok(r) => Err(format!("{url}: status {}", r.status())),
                Err(e) => Err(format!("{url}: {e:?}")),
            };
            match outcome {
                Ok(()) => {
                    tally.ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tally.failures.lock().unwrap().push(e),
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_under_load_hands_the_listeners_over_without_a_failed_request() {
    let origin = Upstream::start("o").await;
    let pki = Pki::new();
    let site = pki.issue("a", &["a.test"]);
    let sock = pki.dir.path().join("upgrade.sock");
    let body = format!(
        "[server]\ngrace_period = \"10s\"\nupgrade_sock = \"{}\"\n\n{}{}[[routes]]\npath = \"/\"\npool = \"p\"\n",
        sock.display(),
        cert_entry(&site, None),
        pool("p", &[origin.addr], "")
    );
    let mut old = TlsEdge::start(pki.dir.path(), &body).await;
    old.edge.wait_ready().await;
    let old_pid = old.edge.pid();

    // Viewers of every kind: HTTP/1.1 keep-alive and fresh connections, HTTPS fresh
    // connections (a full handshake each) and one HTTP/2 connection.
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let http = old.edge.http;
    let https_port = old.https.port();
    let plain = move |kind: &'static str| {
        move |i: usize| {
            let path = format!("/{kind}/{i}");
            (format!("http://{http}{path}"), format!("o {path}"))
        }
    };
    let tls = move |kind: &'static str| {
        move |i: usize| {
            let path = format!("/{kind}/{i}");
            (
                format!("https://a.test:{https_port}{path}"),
                format!("o {path}"),
            )
        }
    };
    let h2 = https_client(pki.ca_pem(), &["a.test"], old.https)
        .build()
        .unwrap();
    let https_fresh = https_client(pki.ca_pem(), &["a.test"], old.https)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let loops = vec![
        load(client(), plain("keepalive-1"), stop.clone(), tally.clone()),
        load(client(), plain("keepalive-2"), stop.clone(), tally.clone()),
        load(fresh_client(), plain("fresh"), stop.clone(), tally.clone()),
        load(https_fresh, tls("tls-fresh"), stop.clone(), tally.clone()),
        load(h2, tls("h2"), stop.clone(), tally.clone()),
    ];
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The new process waits on the upgrade socket; the old one sends its listeners on SIGQUIT.
    // Under systemd, the new one then says it is the service's main process.
    let notify_path = pki.dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let new = start_upgrade(&old.config, pki.dir.path(), &notify_path);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "the new process never opened {}:\n{}",
            sock.display(),
            new.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(old_pid, "QUIT");

    let exit = old
        .edge
        .wait_exit(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("the old process did not exit:\n{}", old.edge.logs()));
    assert!(exit.success(), "old process: {exit}\n{}", old.edge.logs());
    let at_exit = tally.ok.load(Ordering::Relaxed);

    // After the old one is gone, every listener still answers: the new process holds them.
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    let failures = std::mem::take(&mut *tally.failures.lock().unwrap());
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}\nold:\n{}\nnew:\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        old.edge.logs(),
        new.logs()
    );
    let total = tally.ok.load(Ordering::Relaxed);
    assert!(
        at_exit > 100,
        "too little load before the handover: {at_exit}"
    );
    assert!(
        total > at_exit + 20,
        "the new process served too little after the old one left: {} requests",
        total - at_exit
    );
    let r = client()
        .get(format!("http://{}/healthz", old.edge.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the admin listener was handed over too");
    let mut buf = [0u8; 256];
    let n = notify
        .recv(&mut buf)
        .expect("no sd_notify message from the new process");
    assert_eq!(
        std::str::from_utf8(&buf[..n]).unwrap(),
        format!("READY=1\nMAINPID={}", new.child.id())
    );
    assert!(
        new.logs()
            .contains("listeners taken over from the previous process"),
        "{}",
        new.logs()
    );
    assert!(
        old.edge
            .logs()
            .contains("drained: no request in flight, exiting"),
        "{}",
        old.edge.logs()
    );
}

#[test]
fn upgrade_without_a_place_for_its_socket_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge.toml");
    let run = |sock: &str| {
        std::fs::write(
            &config,
            format!("[listen]\nhttp = [\"127.0.0.1:18080\"]\n\n[server]\nupgrade_sock = \"{sock}\"\n\n[pools.p]\nbackends = [\"127.0.0.1:18081\"]\n\n[[routes]]\npath = \"/\"\npool = \"p\"\n"),
        )
        .unwrap();
        let out = Command::new(BIN)
            .args(["run", "--upgrade", "-c", config.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let text = run("/nonexistent/dir/upgrade.sock");
    assert!(
        text.contains("server.upgrade_sock /nonexistent/dir/upgrade.sock: directory /nonexistent/dir does not exist"),
        "{text}"
    );
    // /proc refuses new files even to root.
    let text = run("/proc/upgrade.sock");
    assert!(
        text.contains("server.upgrade_sock /proc/upgrade.sock: cannot create files in /proc"),
        "{text}"
    );
}

#[test]
fn upgrade_with_no_running_edge_gives_up_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\nhttp = [\"127.0.0.1:{}\"]\n\n[server]\nupgrade_sock = \"{}\"\n\n[pools.p]\nbackends = [\"127.0.0.1:18081\"]\n\n[[routes]]\npath = \"/\"\npool = \"p\"\n",
            common::free_port(),
            dir.path().join("upgrade.sock").display()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["run", "--upgrade", "-c", config.to_str().unwrap()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("Bootstrap failed"), "{text}");
    // The wait is announced once; pingora's once-a-second ERROR retries are DEBUG.
    assert!(
        text.contains("waiting for the running edge's listeners"),
        "{text}"
    );
    assert!(!text.contains("No incoming socket transfer"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "it waited {:?}",
        started.elapsed()
    );
}

/// `dime-edge upgrade ARGS`: exit code and stdout then stderr.
fn upgrade_command(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .arg("upgrade")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A process the edge started (not the test), killed when dropped.
struct Adopted(u32);

impl Drop for Adopted {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upgrade_command_hands_a_running_edge_over_without_a_failed_request() {
    let origin = Upstream::start("o").await;
    let run = tempfile::tempdir().unwrap();
    let sock = run.path().join("upgrade.sock");
    let mut old = common::EdgeProc::start(&format!(
        "[server]\ngrace_period = \"10s\"\nupgrade_sock = \"{}\"\n\n{}[[routes]]\npath = \"/\"\npool = \"p\"\n",
        sock.display(),
        pool("p", &[origin.addr], "")
    ))
    .await;
    old.wait_ready().await;
    let old_pid = old.pid();

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let http = old.http;
    let plain = move |kind: &'static str| {
        move |i: usize| {
            let path = format!("/{kind}/{i}");
            (format!("http://{http}{path}"), format!("o {path}"))
        }
    };
    let loops = vec![
        load(client(), plain("keepalive"), stop.clone(), tally.clone()),
        load(fresh_client(), plain("fresh"), stop.clone(), tally.clone()),
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;

    // As an operator types it: the config file only; the edge is found by its admin listener.
    let config = old.config.display().to_string();
    let (code, text) = tokio::task::spawn_blocking(move || upgrade_command(&["-c", &config]))
        .await
        .unwrap();
    let new_pid: u32 = text
        .rsplit("pid ")
        .next()
        .and_then(|t| t.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let _new = Adopted(new_pid);
    assert_eq!(code, Some(0), "{text}\n{}", old.logs());
    assert!(
        text.contains(&format!(
            "pid {old_pid} handed its listeners to pid {new_pid}, drained and exited"
        )),
        "{text}"
    );
    assert_ne!(new_pid, old_pid);
    let exit = old.wait_exit(Duration::from_secs(5)).await;
    assert!(exit.is_some_and(|e| e.success()), "{exit:?}");
    let at_exit = tally.ok.load(Ordering::Relaxed);

    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    let failures = std::mem::take(&mut *tally.failures.lock().unwrap());
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        old.logs()
    );
    assert!(
        at_exit > 100,
        "too little load before the handover: {at_exit}"
    );
    let total = tally.ok.load(Ordering::Relaxed);
    assert!(
        total > at_exit + 20,
        "the new process served too little after the old one left: {} requests",
        total - at_exit
    );
    // The new process serves, and logs where the old one did.
    let r = client().get(old.url("/after")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "o /after");
    let logs = old.logs();
    assert!(logs.contains("upgrade: started the new process"), "{logs}");
    assert!(
        logs.contains("listeners taken over from the previous process"),
        "{logs}"
    );
}

#[tokio::test]
async fn an_upgrade_that_cannot_start_leaves_the_old_edge_serving() {
    let origin = Upstream::start("o").await;
    // The new process cannot create its socket there: it fails before taking anything over.
    let body = format!(
        "[server]\nupgrade_sock = \"/nonexistent/dir/upgrade.sock\"\n\n{}[[routes]]\npath = \"/\"\npool = \"p\"\n",
        pool("p", &[origin.addr], "")
    );
    let edge = common::EdgeProc::start(&body).await;
    edge.wait_ready().await;
    let (config, pid) = (edge.config.display().to_string(), edge.pid().to_string());
    let (code, text) =
        tokio::task::spawn_blocking(move || upgrade_command(&["-c", &config, "--pid", &pid]))
            .await
            .unwrap();
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("exited before taking over") && text.contains("still serves"),
        "{text}"
    );
    let r = client().get(edge.url("/still")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "o /still");
    assert!(
        edge.logs()
            .contains("directory /nonexistent/dir does not exist"),
        "{}",
        edge.logs()
    );

    // A pid that is not this edge is not signalled (SIGUSR2 would end it).
    let mut bystander = Command::new("sleep").arg("60").spawn().unwrap();
    let (config, pid) = (
        edge.config.display().to_string(),
        bystander.id().to_string(),
    );
    let (code, text) = upgrade_command(&["-c", &config, "--pid", &pid]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!("pid {pid} does not listen on {}", edge.admin)),
        "{text}"
    );
    assert!(bystander.try_wait().unwrap().is_none(), "it was signalled");
    let _ = bystander.kill();
    let _ = bystander.wait();

    // An invalid config upgrades nothing; neither does a config no edge runs with.
    std::fs::write(&edge.config, "[listen]\nhttp = [\"nowhere\"]\n").unwrap();
    let config = edge.config.display().to_string();
    let (code, text) = upgrade_command(&["-c", &config]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("not upgrading"), "{text}");
    let other = format!(
        "[listen]\nhttp = [\"127.0.0.1:{}\"]\nadmin = \"127.0.0.1:{}\"\n\n{body}",
        common::free_port(),
        common::free_port()
    );
    std::fs::write(&edge.config, other).unwrap();
    let (code, text) = upgrade_command(&["-c", &config]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("no process listens on"), "{text}");
    let r = client().get(edge.url("/still")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
