//! A real PostgreSQL server for tests: initdb into a temporary directory, listening on a free
//! loopback port with trust authentication, stopped (fast shutdown) on drop.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A running PostgreSQL server.
pub struct Postgres {
    child: Child,
    port: u16,
    dir: TempDir,
}

/// Where Debian puts the server binaries (initdb, postgres).
fn server_bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists() && bin.join("postgres").exists())
        .collect();
    dirs.sort();
    dirs.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: \
             install postgresql (apt-get install postgresql, or `make deps`)"
        )
    })
}

/// Runs `program` as the `postgres` user when we are root (initdb refuses root), as
/// ourselves otherwise.
fn command_as_server_user(program: &Path, as_root: bool) -> Command {
    if as_root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// Waits until the server accepts connections (pg_isready): true, or false when it exited
/// first (its port was taken). Panics if it neither answers nor exits within 60 s.
fn wait_ready(child: &mut Child, bin: &Path, as_root: bool, port: u16, log: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = command_as_server_user(&bin.join("pg_isready"), as_root)
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()
            .is_ok_and(|status| status.success());
        if ready {
            return true;
        }
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        assert!(
            Instant::now() < deadline,
            "postgres neither answered nor exited within 60 s; its log:\n{}",
            fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Postgres {
    /// Creates a cluster and starts the server; panics with the server's log on failure.
    pub fn start() -> Self {
        let bin = server_bin_dir();
        let as_root = fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let (data, sockets, log) = (
            dir.path().join("data"),
            dir.path().join("sockets"),
            dir.path().join("postgres.log"),
        );
        fs::create_dir(&data).expect("create the data directory");
        fs::create_dir(&sockets).expect("create the socket directory");
        if as_root {
            // The postgres user must reach its directories inside root's temporary one.
            fs::set_permissions(
                dir.path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .expect("open the temporary directory to the postgres user");
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&data)
                .arg(&sockets)
                .status()
                .expect("run chown");
            assert!(
                status.success(),
                "chown postgres failed: is there a `postgres` user? install postgresql"
            );
        }
        let output = command_as_server_user(&bin.join("initdb"), as_root)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .output()
            .expect("run initdb");
        assert!(
            output.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // No other test is given the port, but something else on the machine may take it
        // before postgres binds it: then postgres exits at once, and we try again on a new one.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let port = dime_test_ports::free_port();
            let log_file = fs::File::create(&log).expect("create the server log");
            if as_root {
                let _ = Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&log)
                    .status();
            }
            let mut child = command_as_server_user(&bin.join("postgres"), as_root)
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-k"])
                .arg(&sockets)
                // Throwaway data: durability costs time and buys nothing here.
                .args([
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                ])
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .expect("start postgres");
            if wait_ready(&mut child, &bin, as_root, port, &log) {
                return Self { child, port, dir };
            }
            assert!(
                attempts < 3,
                "postgres did not start (3 attempts); its log:\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
    }

    /// The URL of the server's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The temporary directory (data, sockets, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's fast shutdown. It goes to the postmaster itself (first line
        // of postmaster.pid), not to `runuser` in front of it, which may not forward it.
        let postmaster = fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next().map(str::to_owned))
            .unwrap_or_else(|| self.child.id().to_string());
        let _ = Command::new("kill").args(["-INT", &postmaster]).status();
        let _ = self.child.wait();
    }
}
