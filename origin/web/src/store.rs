//! The database: one connection pool for SQLite or PostgreSQL, chosen by the URL, with the
//! embedded migrations of that backend.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, AnyPool, Connection};

/// SQLite's migrations, compiled into the binary.
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
/// PostgreSQL's migrations, compiled into the binary.
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// The database URL used when `--db` is not given: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://dime-web.db";

/// Which database engine a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file (the default, created on first start).
    Sqlite,
    /// A PostgreSQL server (how it runs in Kubernetes).
    Postgres,
}

impl Backend {
    /// The backend a database URL names, if it names one Dime supports.
    pub fn of_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }
}

/// Why the database could not be opened or answered.
///
/// The driver's error is part of each message rather than a `source`: the binary prints
/// error chains, and sqlx's errors repeat their cause in their own text.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no supported database.
    #[error("unsupported database URL `{0}`: use sqlite://PATH (a file, created if missing) or postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE")]
    UnsupportedUrl(String),
    /// The directory of a SQLite file does not exist.
    #[error("cannot open database {url}: directory {dir} does not exist; create it, or point --db elsewhere")]
    NoDirectory {
        /// The URL.
        url: String,
        /// The missing directory.
        dir: String,
    },
    /// Connecting (or creating the SQLite file) failed.
    #[error("cannot open database {url}: {cause}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// What the driver said.
        cause: sqlx::Error,
    },
    /// Applying the migrations failed.
    #[error("cannot migrate database {url}: {cause}")]
    Migrate {
        /// The URL, password redacted.
        url: String,
        /// What the migrator said.
        cause: sqlx::migrate::MigrateError,
    },
    /// A row with this unique value exists already.
    #[error("a {what} with slug `{slug}` exists already: choose another slug")]
    Conflict {
        /// "title" or "channel".
        what: &'static str,
        /// The slug that is taken.
        slug: String,
    },
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        Self::Query(err)
    }
}

/// The catalog and admin database, shared by every request.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Opens the database at `url`, creating a SQLite file if it is missing, and applies the
    /// migrations that have not run yet.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let backend =
            Backend::of_url(url).ok_or_else(|| StoreError::UnsupportedUrl(redact(url)))?;
        sqlx::any::install_default_drivers();
        let connect_url = match backend {
            Backend::Sqlite => {
                check_sqlite_directory(url)?;
                sqlite_create_if_missing(url)
            }
            Backend::Postgres => url.to_owned(),
        };
        let connect_error = |cause| StoreError::Connect {
            url: redact(url),
            cause,
        };
        // One connection first: a pool that cannot connect only says "timed out", while a
        // single attempt says why (refused, unknown host, bad password, no such database).
        let probe = AnyConnection::connect(&connect_url)
            .await
            .map_err(connect_error)?;
        let _ = probe.close().await;
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .connect(&connect_url)
            .await
            .map_err(connect_error)?;
        if backend == Backend::Sqlite {
            // WAL lets viewers' pages read while a view count or an admin edit writes; the
            // mode is stored in the file, so setting it on every start is cheap.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
                .map_err(connect_error)?;
        }
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator
            .run(&pool)
            .await
            .map_err(|cause| StoreError::Migrate {
                url: redact(url),
                cause,
            })?;
        Ok(Self { pool, backend })
    }

    /// The engine behind this store.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// SQL for the database's clock in Unix milliseconds: replicas compare heartbeats on one
    /// clock, not on their own, which may disagree.
    pub(crate) fn now_ms_sql(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// Answers when the database answers a trivial query: what `/healthz` reports.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes every connection; pending queries finish first.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Fails early, and clearly, when a SQLite file's directory is missing (SQLite would only
/// say "unable to open database file").
fn check_sqlite_directory(url: &str) -> Result<(), StoreError> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    let dir = match std::path::Path::new(path).parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => return Ok(()),
    };
    if dir.is_dir() {
        Ok(())
    } else {
        Err(StoreError::NoDirectory {
            url: url.to_owned(),
            dir: dir.display().to_string(),
        })
    }
}

/// Adds `mode=rwc` to a SQLite URL that sets no mode, so that the file is created on first
/// start instead of failing with "unable to open database file".
fn sqlite_create_if_missing(url: &str) -> String {
    if url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// The URL with its password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// Seconds since the Unix epoch: how the tables store times.
pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or(0)
}

/// Whether a query failed on a UNIQUE constraint.
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|db| db.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://dime:s3cret@db:5432/dime"),
            "postgres://dime:***@db:5432/dime"
        );
        assert_eq!(redact("postgres://dime@db/dime"), "postgres://dime@db/dime");
        assert_eq!(redact("sqlite://dime-web.db"), "sqlite://dime-web.db");
    }

    #[test]
    fn sqlite_files_are_created_unless_a_mode_is_set() {
        assert_eq!(
            sqlite_create_if_missing("sqlite://a.db"),
            "sqlite://a.db?mode=rwc"
        );
        assert_eq!(
            sqlite_create_if_missing("sqlite://a.db?cache=shared"),
            "sqlite://a.db?cache=shared&mode=rwc"
        );
        assert_eq!(
            sqlite_create_if_missing("sqlite://a.db?mode=ro"),
            "sqlite://a.db?mode=ro"
        );
    }
}
