//! A real `dime-edge` process in quick mode (`dime-edge proxy --listen --to --admin`), from the
//! binary cargo built next to this test, killed when dropped and restartable on its ports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `dime-edge` in the target directory this test binary was built into (`target/debug/deps/..`
/// → `target/debug/dime-edge`); `cargo build --workspace` (or nextest on the workspace) builds it.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let debug = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/debug/deps");
    let bin = debug.join("dime-edge");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --workspace`",
        bin.display()
    );
    bin
}

/// A loopback port handed out once per machine, so an edge killed there can start there again.
pub use dime_test_ports::free_port;

/// A running edge.
pub struct Edge {
    child: Option<Child>,
    /// Viewers' listener.
    pub http: SocketAddr,
    /// Admin listener (`/readyz`, `/metrics`).
    pub admin: SocketAddr,
    to: SocketAddr,
    dir: tempfile::TempDir,
}

impl Edge {
    /// Starts an edge in front of `to` on fresh ports and waits for its admin listener.
    pub async fn start(to: SocketAddr) -> Edge {
        let mut edge = Edge {
            child: None,
            http: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
            admin: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
            to,
            dir: tempfile::tempdir().expect("temporary directory"),
        };
        edge.restart().await;
        edge
    }

    /// Starts the process again on the same ports (after [`Edge::kill`]).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the edge is still running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("edge log");
        let (http, admin, to) = (
            self.http.to_string(),
            self.admin.to_string(),
            self.to.to_string(),
        );
        let child = Command::new(binary())
            .args(["proxy", "--listen", &http, "--to", &to, "--admin", &admin])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start dime-edge");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = format!("http://{}/healthz", self.admin);
        let client = reqwest::Client::new();
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("dime-edge exited with {status}:\n{}", self.logs());
            }
            if client
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("dime-edge did not start:\n{}", self.logs());
    }

    /// Kills the process (SIGKILL: an edge that dies, not one that drains).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The stream base viewers use on this edge.
    pub fn stream_base(&self) -> String {
        format!("http://{}/stream/", self.http)
    }

    /// The admin base the web app polls.
    pub fn admin_base(&self) -> String {
        format!("http://{}", self.admin)
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("edge.log")
    }

    /// What the process printed.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// `dime_connections_open` from its `/metrics`.
    pub async fn connections_open(&self) -> Option<i64> {
        let text = reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix("dime_connections_open "))
            .and_then(|value| value.trim().parse().ok())
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.kill();
    }
}
