//! `dime-edge`: the command line.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dime_edge::config::{self, compile::DEFAULT_ADMIN};
use dime_edge::logging::{self, LogFormat};
use dime_edge::tls::generate;
use dime_edge::tls::live::EXPIRY_WARNING;
use dime_edge::{quick, server};

const EXAMPLES: &str = "\
Examples:
  dime-edge run -c /etc/dime/edge.toml
  dime-edge run --upgrade -c /etc/dime/edge.toml   # then: kill -QUIT <old pid>
  dime-edge cert generate --out certs --name localhost
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
    #[command(
        after_help = "Examples:\n  dime-edge run -c /etc/dime/edge.toml\n  dime-edge run --upgrade -c /etc/dime/edge.toml & kill -QUIT $OLD_PID   # zero-downtime upgrade"
    )]
    Run {
        /// The TOML configuration file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Take the listening sockets over from the running edge, through [server]
        /// upgrade_sock; then send the old process SIGQUIT and it drains and exits.
        #[arg(long)]
        upgrade: bool,
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
    /// Certificates for development and tests.
    #[command(subcommand)]
    Cert(CertCommand),
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

#[derive(Subcommand)]
enum CertCommand {
    /// Write a local CA (ca.pem, ca.key; kept if present) and a server certificate it signs
    /// (edge.pem, edge.key) into DIR, and print how to trust the CA.
    #[command(
        after_help = "Example:\n  dime-edge cert generate --out .dev/certs --name localhost --name 127.0.0.1"
    )]
    Generate {
        /// Directory for the files; created if missing.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// DNS name, *.wildcard or IP address the certificate serves (repeat for more).
        #[arg(long = "name", value_name = "NAME", required = true)]
        names: Vec<String>,
        /// Validity of the server certificate, e.g. 90d.
        #[arg(long, value_name = "DURATION", default_value = "90d", value_parser = humantime::parse_duration)]
        valid_for: std::time::Duration,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match config::load(&config) {
            Ok(c) => {
                // A closed pipe (`| head`) is not an error worth a panic.
                let _ = writeln!(std::io::stdout(), "{}", c.summary());
                // Valid, but worth knowing before it becomes an outage.
                for w in expiry_warnings(&c) {
                    eprintln!("{w}");
                }
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("{}: {} error(s)", config.display(), errors.0.len());
                ExitCode::FAILURE
            }
        },
        Command::Run { config, upgrade } => match config::load(&config) {
            Ok(c) => serve(cli.log_format, c, server::RunOptions { upgrade }),
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
        Command::Cert(CertCommand::Generate {
            out,
            names,
            valid_for,
        }) => cert_generate(&out, &names, valid_for),
        Command::Proxy { listen, to, admin } => {
            let q = quick::QuickMode {
                listen: &listen,
                to: &to,
                admin: &admin,
            };
            match quick::config(&q) {
                Ok(c) => serve(cli.log_format, c, server::RunOptions::default()),
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn cert_generate(
    out: &std::path::Path,
    names: &[String],
    valid_for: std::time::Duration,
) -> ExitCode {
    match generate::generate_dir(out, names, valid_for) {
        Ok(g) => {
            let ca = g.ca_cert.display();
            let _ = writeln!(
                std::io::stdout(),
                "{} CA: {ca}\nserver certificate for {}: {} (key {})\n\n\
                 Use it in the config:\n  [listen]\n  https = [\"127.0.0.1:8443\"]\n  [[tls.certificates]]\n  cert = \"{}\"\n  key = \"{}\"\n\n\
                 Trust the CA (once; it is reused by later runs):\n  \
                 curl:      curl --cacert {ca} https://localhost:8443/\n  \
                 Debian:    sudo cp {ca} /usr/local/share/ca-certificates/dime-dev-ca.crt && sudo update-ca-certificates\n  \
                 Chromium:  certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n dime-dev-ca -i {ca}\n  \
                 Firefox:   Settings > Privacy & Security > Certificates > View Certificates > Authorities > Import {ca}",
                if g.new_ca { "new" } else { "reused" },
                names.join(", "),
                g.cert.display(),
                g.key.display(),
                g.cert.display(),
                g.key.display(),
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dime-edge cert generate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `check`'s warnings: certificates that expire within the warning window.
fn expiry_warnings(c: &config::EdgeConfig) -> Vec<String> {
    c.certificates
        .iter()
        .enumerate()
        .filter(|(_, cert)| cert.loaded.expires_in < EXPIRY_WARNING)
        .map(|(i, cert)| {
            format!(
                "{}: warning: tls.certificates[{i}].cert: {} expires on {} (in {} day(s)); renew it",
                c.source,
                cert.cert.display(),
                cert.loaded.not_after,
                cert.loaded.expires_in.as_secs() / 86400
            )
        })
        .collect()
}

fn serve(format: LogFormat, config: config::EdgeConfig, options: server::RunOptions) -> ExitCode {
    if let Err(e) = logging::init(format, &config.log) {
        eprintln!("dime-edge: {e}");
        return ExitCode::FAILURE;
    }
    match server::serve(config, options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dime-edge: {e:#}");
            ExitCode::FAILURE
        }
    }
}
