//! Binary upgrade, as nginx does it: SIGUSR2 makes the running edge start the binary now on
//! disk with `run --upgrade`, and `dime-edge upgrade` drives the whole handover safely.
//!
//! The flow of `dime-edge upgrade -c FILE`:
//! 1. check FILE (an invalid config upgrades nothing);
//! 2. find the running edge: `--pid`, or the process that holds `listen.admin`;
//! 3. SIGUSR2 to it: it starts its own successor, so the successor runs in the same service
//!    (systemd cgroup, logs) as the edge it replaces;
//! 4. wait until the successor listens on `server.upgrade_sock`; only then SIGQUIT to the old
//!    edge, so a successor that cannot start leaves the old one serving, untouched;
//! 5. wait until the old edge has handed its listeners over, drained and exited, and the
//!    successor holds `listen.admin`.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use crate::config::EdgeConfig;

/// How long a successor that failed stays visible (unreaped) to `dime-edge upgrade`.
const ZOMBIE_KEPT: Duration = Duration::from_secs(10);

/// The old side: on SIGUSR2, starts this edge's successor with `run --upgrade`.
pub struct Respawn {
    /// The program and arguments to start; `None` in quick mode, which cannot upgrade.
    command: Option<(PathBuf, Vec<OsString>)>,
    /// The successor started and not yet exited.
    running: Arc<Mutex<Option<u32>>>,
}

impl Respawn {
    /// The successor's command line: this process's own, with `--upgrade` added, run from
    /// the path this binary was started by (the new binary once it is installed there).
    /// `file` is `None` in quick mode.
    pub fn new(file: Option<&Path>) -> Self {
        let command = file.and_then(|_| {
            let mut args = std::env::args_os();
            let program = own_path(args.next()?)?;
            let mut args: Vec<OsString> = args.collect();
            if !args.iter().any(|a| a == "--upgrade") {
                args.push("--upgrade".into());
            }
            Some((program, args))
        });
        Respawn {
            command,
            running: Arc::new(Mutex::new(None)),
        }
    }

    fn spawn(&self) {
        let Some((program, args)) = &self.command else {
            tracing::warn!("SIGUSR2 received: quick mode cannot upgrade; restart it instead");
            return;
        };
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pid) = *running {
            tracing::warn!(pid, "SIGUSR2 received: an upgrade is already under way");
            return;
        }
        // stdout and stderr are inherited: the successor logs where this process does.
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .spawn();
        match child {
            Ok(mut child) => {
                let pid = child.id();
                *running = Some(pid);
                tracing::info!(
                    pid,
                    program = %program.display(),
                    "upgrade: started the new process; it takes the listeners over on SIGQUIT to this one"
                );
                let slot = self.running.clone();
                std::thread::spawn(move || {
                    // Waits for its exit without reaping it (WNOWAIT): a successor that fails
                    // stays visible as a zombie for a while, so `dime-edge upgrade` can tell
                    // "exited" from "not started yet". After a successful handover this
                    // process exits first and the wait never ends.
                    // SAFETY: waitid(2) writes only into `info`, which outlives the call.
                    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
                    let flags = libc::WEXITED | libc::WNOWAIT;
                    unsafe { libc::waitid(libc::P_PID, pid, &mut info, flags) };
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    tracing::error!(
                        pid,
                        "upgrade: the new process exited while this one still runs"
                    );
                    std::thread::sleep(ZOMBIE_KEPT);
                    let _ = child.wait();
                });
            }
            Err(e) => tracing::error!(
                program = %program.display(),
                "upgrade: cannot start the new process: {e}; still serving"
            ),
        }
    }
}

#[async_trait]
impl BackgroundService for Respawn {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut usr2) = signal(SignalKind::user_defined2()) else {
            tracing::warn!("cannot watch SIGUSR2; `dime-edge upgrade` will not work");
            return;
        };
        loop {
            tokio::select! {
                _ = usr2.recv() => self.spawn(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// argv[0] as a path that still names the installed binary later: relative paths are made
/// absolute now (the working directory may change), a bare name is this executable.
fn own_path(argv0: OsString) -> Option<PathBuf> {
    let p = PathBuf::from(argv0);
    if p.components().count() > 1 {
        // Not canonicalized: a symlink (`/usr/local/bin/dime-edge -> dime-edge-1.4`) must be
        // followed again at upgrade time, to the new version.
        Some(std::env::current_dir().ok()?.join(p))
    } else {
        std::env::current_exe().ok()
    }
}

/// A finished upgrade: which process handed over to which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upgraded {
    /// The process that served before.
    pub old: u32,
    /// The process that serves now.
    pub new: u32,
}

/// How long to wait for each step of an upgrade.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// For the successor to start and wait for the listeners.
    pub start: Duration,
    /// For the old edge to hand over, drain and exit (its grace period is added).
    pub exit: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            start: Duration::from_secs(15),
            exit: Duration::from_secs(20),
        }
    }
}

/// Upgrades the edge running `config` (the process `pid`, or the one holding `listen.admin`)
/// to the binary now installed where it was started from. Errors say what happened and whether
/// the old edge still serves.
pub fn upgrade(config: &EdgeConfig, pid: Option<u32>, limits: Limits) -> Result<Upgraded, String> {
    let admin = config.restart.admin_listener;
    // Whatever names it, the process signalled must be the edge this config runs: SIGUSR2
    // ends most other programs.
    let holders = listener_pids(admin);
    let old = match (pid, holders.as_slice()) {
        (Some(pid), _) if holders.contains(&pid) => pid,
        (Some(pid), _) => return Err(format!(
            "pid {pid} does not listen on {admin} (listen.admin): it is not the edge running with this config (or it belongs to another user: run as that user or root); nothing was signalled"
        )),
        (None, [pid]) => *pid,
        (None, []) => return Err(format!(
            "no process listens on {admin} (listen.admin): is the edge running, with this config? (Another user's edge is only seen by that user or root)"
        )),
        (None, many) => return Err(format!(
            "several processes hold {admin} (listen.admin): {many:?}; is an upgrade already under way? Pass --pid PID to name the edge"
        )),
    };
    if !alive(old) {
        return Err(format!("no process {old}"));
    }
    let sock = &config.restart.upgrade_sock;
    if unix_listening(sock) {
        return Err(format!(
            "something already waits on {} (server.upgrade_sock): is an upgrade already under way?",
            sock.display()
        ));
    }
    let before = children(old);
    send(old, libc::SIGUSR2)?;

    // The successor is the old edge's child; it waits on the upgrade socket for ~6 s.
    let deadline = Instant::now() + limits.start;
    let mut new = None;
    loop {
        if !alive(old) {
            return Err(format!("the edge (pid {old}) exited before the handover"));
        }
        if new.is_none() {
            new = children(old).into_iter().find(|c| !before.contains(c));
        }
        if let Some(n) = new {
            if !alive(n) {
                return Err(format!(
                    "the new process (pid {n}) exited before taking over; see the edge's log. Pid {old} still serves"
                ));
            }
            if unix_listening(sock) {
                break;
            }
        }
        if Instant::now() > deadline {
            if let Some(n) = new {
                let _ = send(n, libc::SIGTERM);
            }
            return Err(format!(
                "the new process did not wait on {} within {:?} (is SIGUSR2 handled by pid {old}? is it a dime-edge run with this config?). Pid {old} still serves",
                sock.display(),
                limits.start
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let new = new.expect("set before the loop ends");
    send(old, libc::SIGQUIT)?;

    // The old edge keeps serving for 5 s after sending the listeners, then drains.
    let deadline = Instant::now() + limits.exit + config.restart.grace_period;
    while alive(old) {
        if !alive(new) {
            return Err(format!(
                "the new process (pid {new}) exited during the handover; see the edge's log"
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "pid {old} has not exited {:?} after SIGQUIT; pid {new} holds the listeners",
                limits.exit + config.restart.grace_period
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !alive(new) {
        return Err(format!(
            "the new process (pid {new}) exited after the handover; see the edge's log"
        ));
    }
    let holders = listener_pids(admin);
    if holders != [new] {
        return Err(format!(
            "after the handover {admin} (listen.admin) is held by {holders:?}, not by the new process (pid {new})"
        ));
    }
    Ok(Upgraded { old, new })
}

fn send(pid: u32, signal: libc::c_int) -> Result<(), String> {
    let target = libc::pid_t::try_from(pid).map_err(|_| format!("invalid pid {pid}"))?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(target, signal) } == 0 {
        Ok(())
    } else {
        Err(format!(
            "cannot signal pid {pid}: {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// Whether `pid` runs (a zombie, exited but not reaped, does not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat_fields(&stat).is_some_and(|f| f.first() != Some(&"Z")),
        Err(_) => false,
    }
}

/// The fields of /proc/PID/stat after the command name (which may hold spaces): state,
/// ppid, ...
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().collect())
}

/// Processes whose parent is `pid`, exited ones (zombies) included.
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parent = pid.to_string();
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| stat_fields(&s).map(|f| f.get(1) == Some(&parent.as_str())))
                .unwrap_or(false)
        })
        .collect()
}

/// Whether a Unix socket listens at `path` (from /proc/net/unix: a listening socket has the
/// `__SO_ACCEPTCON` flag, 00010000). A socket file left by an earlier upgrade does not count.
fn unix_listening(path: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return false;
    };
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        f.len() >= 8 && f[3] == "00010000" && Path::new(f[7]) == path
    })
}

/// The processes holding the listening TCP socket bound to `addr`, from /proc/net/tcp{,6}
/// and each process's open files (other users' processes need root to be seen).
fn listener_pids(addr: SocketAddr) -> Vec<u32> {
    let table = if addr.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let Ok(text) = std::fs::read_to_string(table) else {
        return Vec::new();
    };
    // State 0A is LISTEN.
    let inodes: Vec<String> = text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() > 9 && f[3] == "0A" && proc_addr(f[1]) == Some(addr))
                .then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    if inodes.is_empty() {
        return Vec::new();
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                    .any(|link| inodes.iter().any(|i| link.as_os_str() == i.as_str()))
            })
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6), as /proc/net/tcp writes an
/// address: each 32-bit word in the kernel's (little-endian) byte order, the port big-endian.
fn proc_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Option<Vec<[u8; 4]>> = (0..ip.len() / 8)
        .map(|i| {
            u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16)
                .ok()
                .map(u32::to_le_bytes)
        })
        .collect();
    let bytes: Vec<u8> = words?.concat();
    match bytes.len() {
        4 => Some(SocketAddr::from((<[u8; 4]>::try_from(bytes).ok()?, port))),
        16 => Some(SocketAddr::from((<[u8; 16]>::try_from(bytes).ok()?, port))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_addresses() {
        assert_eq!(proc_addr("0100007F:1F90"), "127.0.0.1:8080".parse().ok());
        assert_eq!(proc_addr("00000000:0050"), "0.0.0.0:80".parse().ok());
        assert_eq!(
            proc_addr("00000000000000000000000001000000:2382"),
            "[::1]:9090".parse().ok()
        );
        assert_eq!(proc_addr("nonsense"), None);
    }

    #[test]
    fn finds_the_process_that_holds_a_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert_eq!(listener_pids(addr), [std::process::id()]);
        drop(l);
        assert!(listener_pids(addr).is_empty());
    }

    #[test]
    fn sees_a_listening_unix_socket_but_not_a_stale_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upgrade.sock");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(unix_listening(&path));
        drop(l);
        assert!(path.exists());
        assert!(!unix_listening(&path));
    }
}
