//! `dime-edge`: the command line.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dime_edge::config::{self, compile::DEFAULT_ADMIN};
use dime_edge::logging::{self, LogFormat};
use dime_edge::{quick, server};

const EXAMPLES: &str = "\
Examples:
  dime-edge run -c /etc/dime/edge.toml
  dime-edge check -c /etc/dime/edge.toml      # like nginx -t: 0 when valid, 1 and every error when not
  dime-edge proxy --listen 0.0.0.0:8080 --to 10.0.0.5:8081,10.0.0.6:8081
  dime-edge --log-format json run -c edge.toml";

/// Dime's edge: a caching reverse proxy for video, built on pingora.
#[derive(Parser)]
#[command(name = "dime-edge", version, about, after_help = EXAMPLES)]
struct Cli {
    /// Log line format.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with a configuration file.
    #[command(after_help = "Example:\n  dime-edge run -c config/dev.toml")]
    Run {
        /// The TOML configuration file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a configuration file and exit: 0 when valid, 1 with every error when not.
    #[command(
        after_help = "Example:\n  dime-edge check -c /etc/dime/edge.toml && systemctl restart dime-edge"
    )]
    Check {
        /// The TOML configuration file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Quick mode, no file: proxy everything on one listener to one pool.
    #[command(
        after_help = "Example:\n  dime-edge proxy --listen 127.0.0.1:8080 --to 127.0.0.1:8081,127.0.0.1:8082"
    )]
    Proxy {
        /// Address to listen on, IP:port.
        #[arg(long, value_name = "ADDR")]
        listen: String,
        /// Backends, host:port, comma-separated.
        #[arg(
            long,
            value_name = "ADDR[,ADDR...]",
            value_delimiter = ',',
            required = true
        )]
        to: Vec<String>,
        /// Admin listener (metrics, health).
        #[arg(long, value_name = "ADDR", default_value = DEFAULT_ADMIN)]
        admin: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match config::load(&config) {
            Ok(c) => {
                // A closed pipe (`| head`) is not an error worth a panic.
                let _ = writeln!(std::io::stdout(), "{}", c.summary());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("{}: {} error(s)", config.display(), errors.0.len());
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => match config::load(&config) {
            Ok(c) => serve(cli.log_format, c),
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!(
                    "{}: {} error(s); not starting",
                    config.display(),
                    errors.0.len()
                );
                ExitCode::FAILURE
            }
        },
        Command::Proxy { listen, to, admin } => {
            let q = quick::QuickMode {
                listen: &listen,
                to: &to,
                admin: &admin,
            };
            match quick::config(&q) {
                Ok(c) => serve(cli.log_format, c),
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn serve(format: LogFormat, config: config::EdgeConfig) -> ExitCode {
    logging::init(format);
    match server::serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dime-edge: {e:#}");
            ExitCode::FAILURE
        }
    }
}
