//! A real `dime-edge` process, started from the binary cargo built, with its own config file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{client, free_port};

/// How many sets of ports a test edge tries before its start fails.
const PORT_ATTEMPTS: usize = 5;

/// One try at starting an edge, as [`EdgeProc::start_on_free_ports`] asks for it: the directory
/// its files are in, the listeners it waits for, the config file and the arguments.
pub struct Launch {
    pub dir: tempfile::TempDir,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub config: PathBuf,
    pub args: Vec<String>,
}

/// The `[listen]` table of an edge with these plain HTTP and admin listeners, and a blank line.
fn listen_table(http: SocketAddr, admin: SocketAddr) -> String {
    format!("[listen]\nhttp = [\"{http}\"]\nadmin = \"{admin}\"\n\n")
}

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_dime-edge");

/// A running edge. Killed when dropped.
pub struct EdgeProc {
    child: Child,
    /// The HTTP listener.
    pub http: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// Where stdout and stderr go.
    pub log: PathBuf,
    /// The config file as passed to `-c` (quick mode: none is written).
    pub config: PathBuf,
    dir: tempfile::TempDir,
}

impl EdgeProc {
    /// Starts an edge whose config is `[listen]` (chosen here) followed by `body`, and waits
    /// until its admin listener answers.
    pub async fn start(body: &str) -> EdgeProc {
        Self::start_with_flags(body, &[]).await
    }

    /// Like [`EdgeProc::start`], with global flags (e.g. `--log-format json`) before `run`.
    pub async fn start_with_flags(body: &str, flags: &[&str]) -> EdgeProc {
        let (edge, _) = Self::start_on_free_ports(|[http, admin]| {
            let dir = tempfile::tempdir().unwrap();
            let config = dir.path().join("edge.toml");
            std::fs::write(&config, listen_table(http, admin) + body).unwrap();
            let mut args: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
            args.extend(["run".into(), "-c".into(), config.display().to_string()]);
            Launch {
                dir,
                http,
                admin,
                config,
                args,
            }
        })
        .await;
        edge
    }

    /// Like [`EdgeProc::start`], with the config laid out as a Kubernetes ConfigMap volume:
    /// `config.toml -> ..data/config.toml`, `..data -> ..<generation>/`.
    pub async fn start_configmap(body: &str) -> EdgeProc {
        let (edge, _) = Self::start_on_free_ports(|[http, admin]| {
            let dir = tempfile::tempdir().unwrap();
            let text = listen_table(http, admin) + body;
            super::reload::configmap_write(dir.path(), &text);
            std::os::unix::fs::symlink("..data/config.toml", dir.path().join("config.toml"))
                .unwrap();
            let config = dir.path().join("config.toml");
            let args = vec!["run".into(), "-c".into(), config.display().to_string()];
            Launch {
                dir,
                http,
                admin,
                config,
                args,
            }
        })
        .await;
        edge
    }

    /// Starts the edge `prepare` lays out on `N` loopback ports that were free a moment ago.
    /// Another test can take one before the edge binds it; then it tries again on others, at
    /// most [`PORT_ATTEMPTS`] times. Returns the edge and the ports it got.
    pub async fn start_on_free_ports<const N: usize>(
        mut prepare: impl FnMut([SocketAddr; N]) -> Launch,
    ) -> (EdgeProc, [SocketAddr; N]) {
        for attempt in 1.. {
            let ports = std::array::from_fn(|_| SocketAddr::from(([127, 0, 0, 1], free_port())));
            let launch = prepare(ports);
            let args: Vec<&str> = launch.args.iter().map(String::as_str).collect();
            let started =
                Self::try_spawn(launch.dir, launch.http, launch.admin, launch.config, &args).await;
            match started {
                Err(e) if e.contains("Address already in use") && attempt < PORT_ATTEMPTS => {
                    continue
                }
                started => return (started.unwrap_or_else(|e| panic!("{e}")), ports),
            }
        }
        unreachable!()
    }

    /// The `[listen]` table this edge started with, to put in front of a new config body.
    pub fn listen_lines(&self) -> String {
        listen_table(self.http, self.admin)
    }

    /// The directory holding the config file (and the log).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Starts quick mode: `dime-edge proxy --listen --to --admin`.
    pub async fn start_quick(to: &[SocketAddr]) -> EdgeProc {
        Self::start_quick_with(to, &[]).await
    }

    /// Like [`EdgeProc::start_quick`], with more `proxy` flags (e.g. `--purge-token T`).
    pub async fn start_quick_with(to: &[SocketAddr], flags: &[&str]) -> EdgeProc {
        let to: Vec<String> = to.iter().map(|a| a.to_string()).collect();
        let (edge, _) = Self::start_on_free_ports(|[http, admin]| {
            let dir = tempfile::tempdir().unwrap();
            let config = dir.path().join("(quick mode)");
            let mut args: Vec<String> = ["proxy", "--listen", &http.to_string(), "--to"]
                .iter()
                .map(|a| a.to_string())
                .collect();
            args.extend([to.join(","), "--admin".into(), admin.to_string()]);
            args.extend(flags.iter().map(|f| f.to_string()));
            Launch {
                dir,
                http,
                admin,
                config,
                args,
            }
        })
        .await;
        edge
    }

    /// Starts `dime-edge ARGS` with its log in `dir`, and waits until its admin and HTTP
    /// listeners answer.
    pub async fn spawn(
        dir: tempfile::TempDir,
        http: SocketAddr,
        admin: SocketAddr,
        config: PathBuf,
        args: &[&str],
    ) -> EdgeProc {
        Self::try_spawn(dir, http, admin, config, args)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`EdgeProc::spawn`]; an edge that exits or does not start is an error carrying its
    /// log, so [`EdgeProc::start_on_free_ports`] can try other ports when one was taken.
    async fn try_spawn(
        dir: tempfile::TempDir,
        http: SocketAddr,
        admin: SocketAddr,
        config: PathBuf,
        args: &[&str],
    ) -> Result<EdgeProc, String> {
        let log = dir.path().join("edge.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("EDGE_LOG").unwrap_or("info".into()),
            )
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("start dime-edge");
        let mut edge = EdgeProc {
            child,
            http,
            admin,
            log,
            config,
            dir,
        };
        edge.wait_admin().await?;
        Ok(edge)
    }

    async fn wait_admin(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let url = format!("http://{}/healthz", self.admin);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("dime-edge exited with {status}:\n{}", self.logs()));
            }
            if let Ok(r) = client().get(&url).send().await {
                if r.status() == 200 && tokio::net::TcpStream::connect(self.http).await.is_ok() {
                    // Another process may hold these ports: this edge must still be running.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if let Ok(Some(status)) = self.child.try_wait() {
                        return Err(format!("dime-edge exited with {status}:\n{}", self.logs()));
                    }
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("dime-edge did not start:\n{}", self.logs()))
    }

    /// Waits until `/readyz` answers 200 (every pool has a healthy backend).
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(r) = client().get(self.admin_url("/readyz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("dime-edge never became ready:\n{}", self.logs());
    }

    /// A URL on the HTTP listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// A URL on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The status of `GET /healthz` on the admin listener: 200 while the process serves.
    pub async fn healthz(&self) -> u16 {
        let r = client().get(self.admin_url("/healthz")).send().await;
        r.expect("the admin listener answers").status().as_u16()
    }

    /// The Prometheus text from `/metrics`.
    pub async fn metrics(&self) -> String {
        client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one series, e.g. `dime_requests_total{route="web",status_class="2xx"}`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
    }

    /// Returns once `series` reads at least `value`; panics after 10 s.
    pub async fn wait_for_metric(&self, series: &str, value: f64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.metric(series).await.unwrap_or(0.0);
            if now >= value {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{series} stayed at {now}, below {value}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// `/metrics` once it contains every one of `lines` (the logging phase that counts a
    /// request runs just after its last byte reaches the viewer), or after 5 s as it is.
    pub async fn metrics_with(&self, lines: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = self.metrics().await;
            if lines.iter().all(|l| text.contains(l)) || Instant::now() > deadline {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits up to 10 s for a log line containing `needle`; panics with the log if none comes.
    pub async fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.logs().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} in 10 s:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the process printed so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        rss_kib_of(self.pid())
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -TERM failed");
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

impl Drop for EdgeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `dime-edge check -c` on `text`, written to `dir/name`: the exit status and stdout then
/// stderr, with the file's path shortened to `name` so expectations read like the output.
pub fn check_in(dir: &std::path::Path, name: &str, text: &str) -> (ExitStatus, String) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .args(["check", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status, text.replace(path.to_str().unwrap(), name))
}

/// `check_in` a fresh temporary directory, as `edge.toml`.
pub fn check(text: &str) -> (ExitStatus, String) {
    check_in(tempfile::tempdir().unwrap().path(), "edge.toml", text)
}

/// A pool section for `backends`, with a fast HTTP health check.
pub fn pool(name: &str, backends: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        "[pools.{name}]\nbackends = [{}]\n{extra}\n\n[pools.{name}.health_check]\ntype = \"http\"\npath = \"/healthz\"\ninterval = \"200ms\"\nrise = 1\nfall = 1\n\n",
        list.join(", ")
    )
}

/// Resident memory of process `pid` in KiB, from /proc; 0 once it is gone.
pub fn rss_kib_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
