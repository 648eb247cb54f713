//! SIGUSR1 reopens the log files (logrotate's `postrotate`, as for nginx); the other signals
//! the edge does not use are logged and ignored instead of ending the process.

use std::sync::Arc;

use tokio::signal::unix::{signal, Signal, SignalKind};

use super::files::Outputs;

/// Signals whose default action would end the process and that the edge has no use for.
/// pingora handles QUIT (upgrade handover), TERM and INT (shutdown); the reloader handles HUP;
/// `upgrade::Respawn` handles USR2; Rust already ignores PIPE; WINCH, CHLD and URG are ignored
/// by default. SIGPROF is left to profilers.
const IGNORED: &[(&str, libc::c_int)] = &[
    ("SIGALRM", libc::SIGALRM),
    ("SIGIO", libc::SIGIO),
    ("SIGVTALRM", libc::SIGVTALRM),
    ("SIGPWR", libc::SIGPWR),
];

/// Installs the handlers now, so no signal sent after this returns can end the process, and
/// serves them on a thread of their own until the process exits. `outputs` is `None` when
/// the logging was not set up by this process (a test harness's subscriber).
pub(crate) fn spawn(outputs: Option<Arc<Outputs>>) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let (usr1, ignored) = {
        let _in_runtime = runtime.enter();
        let usr1 = signal(SignalKind::user_defined1())?;
        // The reloader registers its own SIGHUP stream when its service starts, which can be
        // after the listeners answer: a handler installed now means an early SIGHUP is lost
        // at worst, never fatal. Handlers stay for the process's life; this stream is unread.
        drop(signal(SignalKind::hangup())?);
        // The same for SIGUSR2, which `upgrade::Respawn` serves once its service starts.
        drop(signal(SignalKind::user_defined2())?);
        let mut ignored = Vec::new();
        for (name, number) in IGNORED {
            ignored.push((*name, signal(SignalKind::from_raw(*number))?));
        }
        (usr1, ignored)
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || runtime.block_on(serve(outputs, usr1, ignored)))?;
    Ok(())
}

async fn serve(
    outputs: Option<Arc<Outputs>>,
    mut usr1: Signal,
    ignored: Vec<(&'static str, Signal)>,
) {
    for (name, mut sig) in ignored {
        tokio::spawn(async move {
            while sig.recv().await.is_some() {
                tracing::warn!("{name} received: ignored");
            }
        });
    }
    while usr1.recv().await.is_some() {
        match outputs.as_deref() {
            Some(o) if o.has_files() => match o.reopen() {
                Ok(n) => tracing::info!("SIGUSR1 received: {n} log file(s) reopened"),
                Err(failed) => {
                    for f in failed {
                        tracing::error!("SIGUSR1 received: {f}");
                    }
                }
            },
            _ => tracing::info!(
                "SIGUSR1 received: the logs go to stdout or stderr, no file to reopen"
            ),
        }
    }
}
