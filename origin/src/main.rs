//! `dime-origin`: the command line of Dime's origin servers, one subcommand per server.

use std::future::Future;
use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use dime_telemetry::LogFormat;
use tokio::signal::unix::{signal, SignalKind};

/// Dime's origin servers.
#[derive(Debug, Parser)]
#[command(name = "dime-origin", version, about)]
struct Cli {
    /// Format of log lines on stdout; RUST_LOG filters them (default: info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "DIME_LOG_FORMAT")]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

/// The servers this binary can run.
#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a media directory (HLS playlists, segments, VoD files) over HTTP.
    Streamer(dime_streamer::Args),
    /// Package a live camera or test pattern into HLS; `sample` and `vod` tools for files.
    Packager(dime_packager::cli::Args),
    /// The web app (catalog, player pages, admin), or `create-admin`, `import`, `add-channel`.
    Web(dime_web::Args),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // `packager vod --report` speaks JSON lines on stdout to its parent: its logs go to stderr.
    let logs_to_stderr = matches!(
        &cli.command,
        Command::Packager(dime_packager::cli::Args {
            tool: Some(dime_packager::cli::Tool::Vod(vod)),
            ..
        }) if vod.report
    );
    if let Err(err) = init_logging(cli.log_format, logs_to_stderr) {
        eprintln!("dime-origin: cannot set up logging: {err}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Streamer(args) => run_streamer(args).await,
        Command::Packager(args) => run_packager(args).await,
        Command::Web(args) => run_web(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line on stderr, causes included, so the operator sees it even with logs off.
            eprintln!("dime-origin: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the streamer until SIGTERM or SIGINT.
async fn run_streamer(args: dime_streamer::Args) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    let server = dime_streamer::Server::bind(args.listen, args.config()).await?;
    server.run(shutdown).await;
    Ok(())
}

/// Runs the live packager until SIGTERM or SIGINT (then drains), or a packager tool.
async fn run_packager(args: dime_packager::cli::Args) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    dime_packager::cli::run(args, shutdown).await?;
    Ok(())
}

/// Serves the web app until SIGTERM or SIGINT, or runs one of its maintenance commands
/// (which install no signal handler, so Ctrl-C at a password prompt still quits).
async fn run_web(args: dime_web::Args) -> anyhow::Result<()> {
    match args.command {
        Some(command) => dime_web::cli::run_command(command).await?,
        None => dime_web::cli::serve(args.serve, shutdown_signal()?).await?,
    }
    Ok(())
}

/// Resolves on the first SIGTERM (orchestrators) or SIGINT (a terminal).
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    // Installed before binding, so a signal that arrives during startup is not lost.
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutdown requested");
    })
}

/// Sends tracing output, and the `log` crate's records, to stdout (or stderr) in the chosen
/// format.
fn init_logging(
    format: LogFormat,
    to_stderr: bool,
) -> Result<(), tracing::subscriber::SetGlobalDefaultError> {
    // Colours only for a person at a terminal; log collectors get plain bytes.
    let terminal = if to_stderr {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    let writer = move || -> Box<dyn std::io::Write> {
        if to_stderr {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::stdout())
        }
    };
    dime_telemetry::logs::init(format, terminal, writer, dime_telemetry::logs::log_bridge())
}
