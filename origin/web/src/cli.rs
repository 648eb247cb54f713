//! The `dime-origin web` command line: serve the app, or fill the catalog from a shell
//! (`create-admin`, `import`, `add-channel`).

use std::future::Future;
use std::io::{IsTerminal, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use dime_packager::vod::VodOptions;

use crate::accounts::{AccountError, MIN_PASSWORD_CHARS};
use crate::catalog::ChannelFields;
use crate::client_address::{Cidr, TrustedProxies};
use crate::edges::{EdgesErrors, Fleet, FleetConfig};
use crate::forms::{ChannelForm, FieldError};
use crate::http::upload::UploadLimits;
use crate::import::{import, ImportError, ImportRequest};
use crate::media::{format_duration, InvalidMediaBase, MediaBase};
use crate::packaging_child::PackagerLimits;
use crate::server::{Options, Server, StartError};
use crate::sessions::random_token;
use crate::store::{Backend, Store, StoreError, DEFAULT_DATABASE_URL};

/// Flags of `dime-origin web`: serve, unless a subcommand is given.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// A maintenance command instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// How to serve.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Flags of the server. Each can also come from the environment variable its `--help` names
/// (`DIME_WEB_…`), so that a container needs no command line; a flag wins over its variable.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (HTTP/1.1), e.g. 0.0.0.0:8083.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:8083",
        env = "DIME_WEB_LISTEN"
    )]
    pub listen: SocketAddr,

    /// The database.
    #[command(flatten)]
    pub db: DbArg,

    /// URL prefix of the streams: relative stream and poster paths in the catalog are
    /// served under it (the edge routes /stream/ to the streamers).
    #[arg(
        long,
        value_name = "URL",
        default_value = "/stream/",
        env = "DIME_WEB_MEDIA_BASE"
    )]
    pub media_base: String,

    /// The streamers' directory: turns on the admin upload form, which packages videos into
    /// DIR/vod/<slug>/ (without it, titles come from `dime-origin web import`).
    #[arg(long, value_name = "DIR", env = "DIME_WEB_MEDIA_ROOT")]
    pub media_root: Option<PathBuf>,

    /// A proxy (the edge, or in Kubernetes the shield's pod network) whose X-Forwarded-For
    /// names the client, as CIDR (10.42.0.0/16) or an address; repeatable, or a
    /// comma-separated list. Other peers are the client themselves. Default: loopback.
    #[arg(long = "trusted-proxy", value_name = "CIDR", default_values = ["127.0.0.0/8", "::1/128"], value_delimiter = ',', env = "DIME_WEB_TRUSTED_PROXY")]
    pub trusted_proxies: Vec<Cidr>,

    /// The largest file the upload form takes (e.g. 4GiB, 500MiB; bytes without a unit).
    #[arg(long, value_name = "SIZE", default_value = "4GiB", value_parser = parse_size, env = "DIME_WEB_UPLOAD_MAX_SIZE")]
    pub upload_max_size: u64,

    /// Uploads received or packaged at once; more are refused with 429.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64), env = "DIME_WEB_UPLOAD_CONCURRENCY")]
    pub upload_concurrency: u32,

    /// Free space to keep on the media volume: an upload that would leave less is refused
    /// with 507 before it is written.
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = parse_size, env = "DIME_WEB_UPLOAD_MIN_FREE")]
    pub upload_min_free: u64,

    /// Address space of the child process that packages an upload (RLIMIT_AS).
    #[arg(long, value_name = "SIZE", default_value = "2GiB", value_parser = parse_size, env = "DIME_WEB_PACKAGER_MEMORY")]
    pub packager_memory: u64,

    /// CPU seconds of that child (RLIMIT_CPU); it is also stopped after as many seconds of
    /// wall-clock time.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..), env = "DIME_WEB_PACKAGER_CPU_SECS")]
    pub packager_cpu_secs: u64,

    /// How long a replica of the web app may go without reporting to the database before the
    /// others take it as dead: its packaging jobs are failed and their leftovers removed. It
    /// reports every fifth of this.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600), env = "DIME_WEB_REPLICA_TIMEOUT")]
    pub replica_timeout: u64,

    /// The edge fleet: a TOML file of edges, regions, client prefixes and fallback orders
    /// (see the README). Player pages then list the viewer's edges, nearest healthy first;
    /// without it, streams stay under --media-base.
    #[arg(long, value_name = "FILE", env = "DIME_WEB_EDGES")]
    pub edges: Option<PathBuf>,
}

/// A byte count: a number with an optional unit B, KiB, MiB, GiB or TiB.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        "TiB" => 40,
        other => {
            return Err(format!(
                "unknown unit `{other}`: use B, KiB, MiB, GiB or TiB (e.g. 4GiB)"
            ))
        }
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size: use a number and a unit, e.g. 4GiB"))?;
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// `--db` or `--db-url-file`, shared by every subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct DbArg {
    /// Database URL: sqlite://PATH (a file, created if missing) or
    /// postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE. Default: sqlite://dime-web.db.
    // The value may hold a password: --help must not print what the variable holds.
    #[arg(
        long = "db",
        value_name = "URL",
        env = "DIME_DB_URL",
        hide_env_values = true
    )]
    pub url: Option<String>,

    /// A file holding the database URL (a mounted secret), instead of --db: a password then
    /// never sits on a command line. One trailing line break is ignored.
    #[arg(long, value_name = "PATH", env = "DIME_DB_URL_FILE")]
    pub db_url_file: Option<PathBuf>,
}

impl DbArg {
    /// The database URL: `--db`, the contents of `--db-url-file`, or the default.
    pub fn resolve(&self) -> Result<String, CliError> {
        match (&self.url, &self.db_url_file) {
            // Checked here, not by clap, so that the message names the variables too.
            (Some(_), Some(_)) => Err(CliError::DbUrlTwice),
            (Some(url), None) => Ok(url.clone()),
            (None, None) => Ok(DEFAULT_DATABASE_URL.to_owned()),
            (None, Some(path)) => read_db_url_file(path),
        }
    }
}

/// The URL in a secret file, without its trailing line break; never echoed in errors.
fn read_db_url_file(path: &std::path::Path) -> Result<String, CliError> {
    let text = std::fs::read_to_string(path).map_err(|cause| CliError::DbUrlFile {
        path: path.to_path_buf(),
        reason: cause.to_string(),
    })?;
    let url = text.trim_end_matches(['\n', '\r']);
    if url.trim().is_empty() {
        return Err(CliError::DbUrlFile {
            path: path.to_path_buf(),
            reason: "the file is empty: it must hold the database URL".to_owned(),
        });
    }
    if Backend::of_url(url).is_none() {
        // Not `UnsupportedUrl(url)`: a file holding only the password would be printed.
        return Err(CliError::DbUrlFile {
            path: path.to_path_buf(),
            reason: "its contents are not a database URL: use sqlite://PATH or postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE".to_owned(),
        });
    }
    Ok(url.to_owned())
}

/// The maintenance commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create an admin account (there is no built-in one). The password comes from stdin
    /// when it is not a terminal, else from a prompt, or is generated and printed.
    CreateAdmin(CreateAdminArgs),
    /// Package a video file into HLS under the streamer's root and add it to the catalog.
    Import(ImportArgs),
    /// Add a live channel to the catalog, or update the one with the same slug.
    AddChannel(AddChannelArgs),
}

/// Flags of `create-admin`.
#[derive(Debug, clap::Args)]
pub struct CreateAdminArgs {
    /// The database.
    #[command(flatten)]
    pub db: DbArg,
    /// Login name.
    #[arg(long, value_name = "NAME")]
    pub username: String,
    /// Read the password from stdin (the default when stdin is not a terminal).
    #[arg(long, conflicts_with = "generate_password")]
    pub password_stdin: bool,
    /// Generate a random password and print it, alone, on stdout.
    #[arg(long)]
    pub generate_password: bool,
}

/// Flags of `import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The video file to import (mp4, mkv, mov, webm: anything GStreamer decodes).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Display title.
    #[arg(long)]
    pub title: String,
    /// Free text shown on the title page.
    #[arg(long, default_value = "")]
    pub description: String,
    /// URL name (default: made from the title).
    #[arg(long)]
    pub slug: Option<String>,
    /// The directory the streamers serve; the title lands in DIR/vod/<slug>/.
    #[arg(long, value_name = "DIR")]
    pub media_root: PathBuf,
    /// Segment length in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=30))]
    pub segment: u64,
    /// The database.
    #[command(flatten)]
    pub db: DbArg,
}

/// Flags of `add-channel`.
#[derive(Debug, clap::Args)]
pub struct AddChannelArgs {
    /// The database.
    #[command(flatten)]
    pub db: DbArg,
    /// Display name.
    #[arg(long)]
    pub name: String,
    /// URL name: the page is /live/SLUG.
    #[arg(long)]
    pub slug: String,
    /// The live playlist, relative to the media base (live/camera/index.m3u8) or http(s)://.
    #[arg(long, value_name = "URL")]
    pub stream: String,
    /// Free text shown on the channel page.
    #[arg(long, default_value = "")]
    pub description: String,
    /// Poster image, relative to the media base or http(s)://.
    #[arg(long, value_name = "URL")]
    pub poster: Option<String>,
}

/// Why a `dime-origin web` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// `--media-base` is malformed.
    #[error(transparent)]
    MediaBase(#[from] InvalidMediaBase),
    /// The database could not be opened or answered.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The server could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Serving failed.
    #[error("serving failed: {0}")]
    Serve(std::io::Error),
    /// The admin account could not be created.
    #[error(transparent)]
    Account(#[from] AccountError),
    /// The password could not be read.
    #[error("cannot read the password: {0}")]
    Password(std::io::Error),
    /// The two typed passwords differ.
    #[error("the passwords do not match; nothing was created")]
    PasswordMismatch,
    /// The import failed.
    #[error(transparent)]
    Import(#[from] ImportError),
    /// Both `--db` and `--db-url-file` were given.
    #[error("both --db (DIME_DB_URL) and --db-url-file (DIME_DB_URL_FILE) are set: give the database URL one way only")]
    DbUrlTwice,
    /// The database URL file is unusable.
    #[error("cannot read the database URL from {}: {reason}", path.display())]
    DbUrlFile {
        /// The file given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The `--edges` file is unreadable or wrong (every problem, with file, line and field).
    #[error(transparent)]
    Edges(#[from] EdgesErrors),
    /// A flag's value is not acceptable.
    #[error("invalid {flag}: {message}")]
    Invalid {
        /// The flag, e.g. `--stream`.
        flag: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// Serves the web app until `shutdown` resolves.
pub async fn serve(
    args: ServeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CliError> {
    // Before the database: a wrong file fails at once, whatever the database does.
    let fleet = match &args.edges {
        Some(path) => Some(std::sync::Arc::new(Fleet::new(FleetConfig::load(path)?))),
        None => None,
    };
    let options = Options {
        fleet,
        media_base: MediaBase::new(&args.media_base)?,
        media_root: args.media_root,
        trusted_proxies: TrustedProxies::new(args.trusted_proxies),
        upload_limits: UploadLimits {
            max_bytes: args.upload_max_size,
            max_concurrent: args.upload_concurrency as usize,
            min_free_bytes: args.upload_min_free,
            packager: PackagerLimits {
                // This very binary: `dime-origin packager vod --report`.
                program: None,
                memory_bytes: args.packager_memory,
                cpu_secs: args.packager_cpu_secs,
            },
            replica_timeout: Duration::from_secs(args.replica_timeout),
        },
        ..Options::default()
    };
    let store = Store::open(&args.db.resolve()?).await?;
    let server = Server::bind(args.listen, store, options).await?;
    server.run(shutdown).await.map_err(CliError::Serve)
}

/// Runs one maintenance command.
pub async fn run_command(command: Command) -> Result<(), CliError> {
    match command {
        Command::CreateAdmin(args) => create_admin(args).await,
        Command::Import(args) => import_file(args).await,
        Command::AddChannel(args) => add_channel(args).await,
    }
}

/// `create-admin`.
async fn create_admin(args: CreateAdminArgs) -> Result<(), CliError> {
    // The database first: a wrong --db should fail before anyone types a password.
    let store = Store::open(&args.db.resolve()?).await?;
    let password = if args.generate_password {
        random_token()[..32].to_owned()
    } else if args.password_stdin || !std::io::stdin().is_terminal() {
        read_password_from_stdin()?
    } else {
        prompt_password(&args.username)?
    };
    let id = store.create_admin(&args.username, &password).await?;
    store.close().await;
    if args.generate_password {
        // The password alone on stdout, so that scripts can capture it; the rest on stderr.
        eprintln!("created admin `{}` (id {id}); its password:", args.username);
        println!("{password}");
    } else {
        println!("created admin `{}` (id {id})", args.username);
    }
    Ok(())
}

/// The whole of stdin minus one trailing line break (what `echo` or a file adds).
fn read_password_from_stdin() -> Result<String, CliError> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(CliError::Password)?;
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    Ok(text.to_owned())
}

/// Asks twice on the terminal, without echo.
fn prompt_password(username: &str) -> Result<String, CliError> {
    let first = rpassword::prompt_password(format!(
        "Password for admin `{username}` (at least {MIN_PASSWORD_CHARS} characters): "
    ))
    .map_err(CliError::Password)?;
    let second = rpassword::prompt_password("Repeat the password: ").map_err(CliError::Password)?;
    if first != second {
        return Err(CliError::PasswordMismatch);
    }
    Ok(first)
}

/// `import`.
async fn import_file(args: ImportArgs) -> Result<(), CliError> {
    let store = Store::open(&args.db.resolve()?).await?;
    let request = ImportRequest {
        input: args.file,
        title: args.title,
        description: args.description,
        slug: args.slug,
        media_root: args.media_root,
        options: VodOptions {
            segment: Duration::from_secs(args.segment),
            ..VodOptions::default()
        },
    };
    let imported = import(&store, request).await?;
    store.close().await;
    println!(
        "imported title {} `{}`: page /titles/{}, stream {}, poster {}, duration {} ({})",
        imported.id,
        imported.slug,
        imported.slug,
        imported.stream_url,
        imported.poster,
        format_duration(imported.duration_ms),
        imported.dir.display(),
    );
    Ok(())
}

/// The flag a channel form field comes from, for messages.
fn channel_flag(error: &FieldError) -> &'static str {
    match error.field {
        "name" => "--name",
        "slug" => "--slug",
        "description" => "--description",
        "poster" => "--poster",
        _ => "--stream",
    }
}

/// `add-channel`: creates the channel, or brings the one with this slug up to date, so that
/// scripts (`make run`) can call it on every start.
async fn add_channel(args: AddChannelArgs) -> Result<(), CliError> {
    let form = ChannelForm {
        name: args.name,
        slug: args.slug,
        description: args.description,
        poster: args.poster.unwrap_or_default(),
        stream_url: args.stream,
    };
    let fields = form.validate().map_err(|mut errors| {
        let error = errors.remove(0);
        CliError::Invalid {
            flag: channel_flag(&error),
            message: error.message,
        }
    })?;
    let store = Store::open(&args.db.resolve()?).await?;
    let (id, outcome) = match store.channel_by_slug(&fields.slug).await? {
        None => (store.create_channel(&fields).await?, "created"),
        Some(existing) => {
            let current = ChannelFields {
                slug: existing.slug.clone(),
                name: existing.name.clone(),
                description: existing.description.clone(),
                poster: existing.poster.clone(),
                stream_url: existing.stream_url.clone(),
            };
            if current == fields {
                (existing.id, "unchanged")
            } else {
                store.update_channel(existing.id, &fields).await?;
                (existing.id, "updated")
            }
        }
    };
    store.close().await;
    println!(
        "channel `{}` (id {id}) {outcome}: page /live/{}, stream {}",
        fields.slug, fields.slug, fields.stream_url
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("500MiB"), Ok(500 << 20));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("7 KiB"), Ok(7 << 10));
        assert!(parse_size("4GB").unwrap_err().contains("unknown unit `GB`"));
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("99999999TiB").unwrap_err().contains("too large"));
    }
}
