//! Packaging an upload in a child process (`dime-origin packager vod --report`) with a memory
//! and CPU-time limit: decoding runs GStreamer's demuxers and decoders on whatever the admin
//! uploaded, so a crafted file may crash or stall only that child, never the web app.

use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::Instant;

/// How the packager child is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackagerLimits {
    /// The `dime-origin` binary; `None`: this process's own executable.
    pub program: Option<PathBuf>,
    /// Address space the child may use (RLIMIT_AS), in bytes.
    pub memory_bytes: u64,
    /// CPU seconds the child may use (RLIMIT_CPU); it is also killed after as many seconds
    /// of wall-clock time, which only a stalled child reaches.
    pub cpu_secs: u64,
}

impl Default for PackagerLimits {
    fn default() -> Self {
        Self {
            program: None,
            memory_bytes: 2 << 30,
            cpu_secs: 3600,
        }
    }
}

/// Why packaging in the child failed, in words fit for the admin (no paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildFailure {
    /// The file is not video the packager can use.
    BadInput(String),
    /// Anything else: a crash, a limit, an output error.
    Failed(String),
}

impl ChildFailure {
    /// The text shown to the admin.
    pub fn reason(&self) -> &str {
        match self {
            Self::BadInput(reason) | Self::Failed(reason) => reason,
        }
    }
}

/// A running packager child.
#[derive(Debug)]
pub struct PackagerChild {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    deadline: Instant,
    limits: PackagerLimits,
}

/// One line of the child's report.
#[derive(Debug, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Event {
    Probed,
    Done { duration: f64 },
    Failed { bad_input: bool, reason: String },
}

impl PackagerChild {
    /// Starts packaging `input` into `out_dir` with `segment`-long segments.
    pub fn spawn(
        limits: &PackagerLimits,
        input: &Path,
        out_dir: &Path,
        segment: Duration,
    ) -> Result<Self, ChildFailure> {
        let program = match &limits.program {
            Some(program) => program.clone(),
            None => std::env::current_exe().map_err(|err| {
                tracing::error!(error = %err, "cannot find this program to run the packager");
                ChildFailure::Failed(
                    "the packager could not be started (see the server log)".to_owned(),
                )
            })?,
        };
        let mut command = Command::new(&program);
        command
            .arg("packager")
            .arg("vod")
            .arg("--report")
            .arg("--input")
            .arg(input)
            .arg("--out")
            .arg(out_dir)
            .arg("--segment")
            .arg(format!("{}s", segment.as_secs()))
            // glibc reserves 64 MiB of address space per thread arena: two keep the memory
            // limit about memory, not about how many cores the machine has.
            .env("MALLOC_ARENA_MAX", "2")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let (memory, cpu) = (limits.memory_bytes, limits.cpu_secs);
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        // SAFETY: only setrlimit, which is async-signal-safe, runs between fork and exec.
        unsafe {
            command.pre_exec(move || {
                set_limit(libc::RLIMIT_AS, memory, memory)?;
                // SIGXCPU at the soft limit, SIGKILL a little later if it is ignored.
                set_limit(libc::RLIMIT_CPU, cpu, cpu.saturating_add(5))?;
                // A crash on a crafted file must not fill the disk with core dumps.
                set_limit(libc::RLIMIT_CORE, 0, 0)?;
                // The child dies with the web app: a replica killed mid-packaging leaves no
                // packager writing into the work directory another replica's sweep removes.
                // (Linux sends it when the forking thread exits: a runtime worker, which
                // lives as long as the app.)
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(std::io::Error::other(
                        "the web app ended before the packager started",
                    ));
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|err| {
            tracing::error!(program = %program.display(), error = %err, "cannot start the packager");
            ChildFailure::Failed("the packager could not be started (see the server log)".to_owned())
        })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        Ok(Self {
            child,
            lines: BufReader::new(stdout).lines(),
            deadline: Instant::now() + Duration::from_secs(cpu),
            limits: limits.clone(),
        })
    }

    /// The child's process id, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits until the input is known to decode as video.
    pub async fn probed(&mut self) -> Result<(), ChildFailure> {
        match self.next_event().await? {
            Event::Probed => Ok(()),
            Event::Done { .. } => Err(ChildFailure::Failed(
                "the packager reported out of order".to_owned(),
            )),
            Event::Failed { bad_input, reason } => Err(self.failed(bad_input, reason).await),
        }
    }

    /// Stops the child (SIGKILL) and waits until it is gone.
    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Waits until the title is packaged; its playable length in seconds.
    pub async fn finish(&mut self) -> Result<f64, ChildFailure> {
        match self.next_event().await? {
            Event::Done { duration } => {
                let _ = self.child.wait().await;
                Ok(duration)
            }
            Event::Probed => Err(ChildFailure::Failed(
                "the packager reported out of order".to_owned(),
            )),
            Event::Failed { bad_input, reason } => Err(self.failed(bad_input, reason).await),
        }
    }

    async fn failed(&mut self, bad_input: bool, reason: String) -> ChildFailure {
        let _ = self.child.wait().await;
        if bad_input {
            ChildFailure::BadInput(reason)
        } else {
            ChildFailure::Failed(reason)
        }
    }

    /// The next report line, or how the child ended without one.
    async fn next_event(&mut self) -> Result<Event, ChildFailure> {
        let line = tokio::time::timeout_at(self.deadline, self.lines.next_line()).await;
        match line {
            Ok(Ok(Some(line))) => serde_json::from_str(&line).map_err(|err| {
                tracing::error!(line = %line, error = %err, "the packager's report does not parse");
                ChildFailure::Failed(
                    "the packager's report was unreadable (see the server log)".to_owned(),
                )
            }),
            Ok(Ok(None) | Err(_)) => Err(self.ended().await),
            Err(_elapsed) => {
                let _ = self.child.kill().await;
                Err(ChildFailure::Failed(format!(
                    "the packager stalled: stopped at its time limit ({} s)",
                    self.limits.cpu_secs
                )))
            }
        }
    }

    /// Why a child that stopped reporting ended.
    async fn ended(&mut self) -> ChildFailure {
        let status = match tokio::time::timeout_at(self.deadline, self.child.wait()).await {
            Ok(Ok(status)) => status,
            _ => {
                let _ = self.child.kill().await;
                return ChildFailure::Failed(format!(
                    "the packager stalled: stopped at its time limit ({} s)",
                    self.limits.cpu_secs
                ));
            }
        };
        tracing::warn!(%status, "the packager ended without a report");
        let mib = self.limits.memory_bytes >> 20;
        ChildFailure::Failed(match status.signal() {
            Some(libc::SIGXCPU) | Some(libc::SIGKILL) => format!(
                "the packager used up its CPU time limit ({} s) and was stopped",
                self.limits.cpu_secs
            ),
            Some(signal) => format!(
                "the packager crashed (signal {signal}): the file may be malformed, or need more than its memory limit ({mib} MiB)"
            ),
            None => format!("the packager failed ({status})"),
        })
    }
}

/// `setrlimit(resource, soft, hard)`, between fork and exec.
fn set_limit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: a plain system call on a valid struct.
    if unsafe { libc::setrlimit(resource, &limit) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Removes what a packager child killed before its end left next to `out_dir`: its hidden
/// work directory (`.<name>.packaging-<pid>-<n>`, see `dime_packager::vod::package`).
pub fn remove_work_dirs(out_dir: &Path, pid: u32) {
    let (Some(parent), Some(name)) = (out_dir.parent(), out_dir.file_name()) else {
        return;
    };
    let prefix = format!(".{}.packaging-{pid}-", name.to_string_lossy());
    for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            if let Err(err) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(dir = %entry.path().display(), error = %err, "cannot remove a packaging work directory");
            }
        }
    }
}
