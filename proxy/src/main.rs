//! `dime-edge`: the command line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use dime_edge::config::{self, compile::DEFAULT_ADMIN};
use dime_edge::logging::{self, LogFormat};
use dime_edge::tls::generate;
use dime_edge::tls::live::EXPIRY_WARNING;
use dime_edge::{quick, server};

#[global_allocator]
static ALLOCATOR: dime_edge::allocator::Mimalloc = dime_edge::allocator::Mimalloc;

/// Where `run` and `check` read their configuration when `-c` is not given.
const DEFAULT_CONFIG: &str = "/etc/dime/edge.toml";

const EXAMPLES: &str = "\
Examples:
  dime-edge run -c /etc/dime/edge.toml
  kill -HUP <pid>                             # reload the config, the cache is kept
  dime-edge upgrade -c /etc/dime/edge.toml    # new binary: hand the listeners over, cache starts empty
  dime-edge cert generate --out certs --name localhost
  dime-edge check -c /etc/dime/edge.toml      # like nginx -t: 0 when valid, 1 and every error when not
  dime-edge -t                                # the same, for /etc/dime/edge.toml
  dime-edge proxy --listen 0.0.0.0:8080 --to 10.0.0.5:8081,10.0.0.6:8081
  dime-edge --log-format json run -c edge.toml";

const UPGRADE_HELP: &str = "\
Config changes do not need this: `systemctl reload dime-edge` (SIGHUP) applies them and keeps
the cache. Upgrade after installing a new binary, or to apply listeners, threads or cache size.

Steps: check FILE; SIGUSR2 to the edge, which starts `run --upgrade` (under systemd, inside the
service); once that waits on server.upgrade_sock, SIGQUIT to the old edge, which hands over its
listeners, keeps serving 5 s, drains and exits. A new process that cannot start leaves the old
one serving.

Examples:
  install -m 0755 target/release/dime-edge /usr/local/bin/dime-edge
  dime-edge upgrade -c /etc/dime/edge.toml
  dime-edge upgrade -c /etc/dime/edge.toml --pid $(systemctl show -p MainPID --value dime-edge)";

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
        after_help = "Examples:\n  dime-edge run -c /etc/dime/edge.toml\n  dime-edge upgrade -c /etc/dime/edge.toml   # zero-downtime binary upgrade of the running edge"
    )]
    Run {
        /// The TOML configuration file.
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Take the listening sockets over from the running edge, through [server]
        /// upgrade_sock; then send the old process SIGQUIT and it drains and exits.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a configuration file and exit: 0 when valid, 1 with every error when not.
    #[command(short_flag = 't')]
    #[command(
        after_help = "Example:\n  dime-edge check -c /etc/dime/edge.toml && systemctl reload dime-edge   # applies it live, the cache is kept"
    )]
    Check {
        /// The TOML configuration file.
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Also print the compiled configuration (like nginx -T): every route's resolved cache
        /// policy, every pool's settings with defaults filled in, secrets redacted.
        #[arg(long)]
        dump: bool,
    },
    /// Zero-downtime binary upgrade: the running edge starts the binary now installed where it
    /// was started from, hands it the listeners, drains and exits (the cache starts empty).
    /// 0 when the new process serves; 1, with the reason, when not.
    #[command(after_help = UPGRADE_HELP)]
    Upgrade {
        /// The running edge's TOML configuration file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// The running edge's process id; default: the process listening on listen.admin.
        /// Either way it must be the one holding listen.admin, or nothing is signalled.
        #[arg(long, value_name = "PID")]
        pid: Option<u32>,
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
        /// Bearer token for the purge API (POST /cache/purge), at least 16 characters; without
        /// one, purge is refused.
        #[arg(long, value_name = "TOKEN", conflicts_with = "purge_token_file")]
        purge_token: Option<String>,
        /// Read the purge token from the first line of FILE (kept out of the process list).
        #[arg(long, value_name = "FILE")]
        purge_token_file: Option<PathBuf>,
        /// Bearer token for the config API (GET /config), at least 16 characters.
        #[arg(long, value_name = "TOKEN", conflicts_with = "admin_token_file")]
        admin_token: Option<String>,
        /// Read the config API's token from the first line of FILE.
        #[arg(long, value_name = "FILE")]
        admin_token_file: Option<PathBuf>,
    },
    /// Print a completion script for SHELL on stdout.
    #[command(
        after_help = "Examples:\n  dime-edge completions bash > /usr/share/bash-completion/completions/dime-edge\n  dime-edge completions zsh > /usr/local/share/zsh/site-functions/_dime-edge\n  dime-edge completions fish > /usr/share/fish/vendor_completions.d/dime-edge.fish"
    )]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages into DIR: dime-edge.1 and one per subcommand (dime-edge-run.1, ...).
    #[command(
        after_help = "Example:\n  dime-edge man --out /usr/local/share/man/man1 && mandb -q"
    )]
    Man {
        /// Directory for the pages; created if missing.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
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
    dime_edge::allocator::return_freed_memory_promptly();
    let cli = Cli::parse();
    let config_file = match &cli.command {
        Command::Check { config, .. } => Some((config, "check")),
        Command::Run { config, .. } => Some((config, "run")),
        _ => None,
    };
    if let Some((config, command)) = config_file {
        if !default_config_found(config, command) {
            return ExitCode::FAILURE;
        }
    }
    match cli.command {
        Command::Check { config, dump } => match config::load(&config) {
            Ok(c) => {
                // A closed pipe (`| head`) is not an error worth a panic.
                let _ = writeln!(std::io::stdout(), "{}", c.summary());
                if dump {
                    let _ = write!(std::io::stdout(), "{}", config::dump::dump(&c));
                }
                // Valid, but worth knowing before it becomes an outage.
                for w in expiry_warnings(&c) {
                    eprintln!("{w}");
                }
                for w in &c.warnings {
                    eprintln!("{}", w.as_warning());
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
        Command::Upgrade { config, pid } => upgrade(&config, pid),
        Command::Cert(CertCommand::Generate {
            out,
            names,
            valid_for,
        }) => cert_generate(&out, &names, valid_for),
        Command::Proxy {
            listen,
            to,
            admin,
            purge_token,
            purge_token_file,
            admin_token,
            admin_token_file,
        } => {
            let q = quick::QuickMode {
                listen: &listen,
                to: &to,
                admin: &admin,
                admin_token: token(admin_token.as_deref(), admin_token_file.as_deref()),
                purge_token: token(purge_token.as_deref(), purge_token_file.as_deref()),
            };
            match quick::config(&q) {
                Ok(c) => serve(cli.log_format, c, server::RunOptions::default()),
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Completions { shell } => {
            let mut out = std::io::stdout();
            clap_complete::generate(shell, &mut Cli::command(), "dime-edge", &mut out);
            ExitCode::SUCCESS
        }
        Command::Man { out } => man_pages(&out),
    }
}

/// False, said on stderr, when `config` is the default path and nothing is there: `load`
/// would report an unreadable file, where a first-time operator needs to hear about `-c`.
fn default_config_found(config: &Path, command: &str) -> bool {
    // Only "not found": any other error (permissions) is `load`'s to report.
    let missing =
        std::fs::metadata(config).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
    if config == Path::new(DEFAULT_CONFIG) && missing {
        eprintln!(
            "dime-edge: no configuration file at {DEFAULT_CONFIG} (the default): pass one with -c FILE, e.g. dime-edge {command} -c ./edge.toml"
        );
        return false;
    }
    true
}

/// Quick mode's token: the flag's value, or the file named by its `-file` twin.
fn token<'a>(value: Option<&'a str>, file: Option<&'a Path>) -> Option<quick::Token<'a>> {
    match (value, file) {
        (Some(v), _) => Some(quick::Token::Value(v)),
        (None, Some(f)) => Some(quick::Token::File(f)),
        (None, None) => None,
    }
}

/// Writes `dime-edge.1` and a page per subcommand into `out`, and names each file written.
fn man_pages(out: &Path) -> ExitCode {
    fn write(cmd: clap::Command, out: &Path) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            write(sub.clone(), out)?;
        }
        let page = clap_mangen::Man::new(cmd).generate_to(out)?;
        let _ = writeln!(std::io::stdout(), "{}", page.display());
        Ok(())
    }
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Built, so that subcommands carry their full names (dime-edge-run) and the global flags.
    cmd.build();
    match std::fs::create_dir_all(out).and_then(|()| write(cmd, out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dime-edge man: {}: {e}", out.display());
            ExitCode::FAILURE
        }
    }
}

fn upgrade(config: &std::path::Path, pid: Option<u32>) -> ExitCode {
    let c = match config::load(config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "{}: {} error(s); not upgrading, the running edge is unchanged",
                config.display(),
                errors.0.len()
            );
            return ExitCode::FAILURE;
        }
    };
    match dime_edge::upgrade::upgrade(&c, pid, Default::default()) {
        Ok(u) => {
            let _ = writeln!(
                std::io::stdout(),
                "dime-edge upgrade: pid {} handed its listeners to pid {}, drained and exited; pid {} serves",
                u.old,
                u.new,
                u.new
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dime-edge upgrade: {e}");
            ExitCode::FAILURE
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
