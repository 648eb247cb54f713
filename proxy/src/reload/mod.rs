//! Live config reload: one path (read, validate, compile, apply, swap) shared by every trigger
//! (file watcher, SIGHUP, `POST /config/reload`), serialised so two never interleave.

pub(crate) mod components;
pub(crate) mod diff;
pub(crate) mod signal;
pub(crate) mod watcher;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Mutex};

use crate::config::types::RestartSettings;
use crate::config::{self, ConfigError, ConfigErrors, EdgeConfig};
use crate::metrics::Metrics;
use diff::ConfigDiff;

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// The file watcher saw a watched file change.
    Watcher,
    /// The process received SIGHUP.
    Signal,
    /// `POST /config/reload` on the admin listener.
    Admin,
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Trigger::Watcher => "file change",
            Trigger::Signal => "SIGHUP",
            Trigger::Admin => "admin API",
        })
    }
}

/// What one reload did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub(crate) enum ReloadOutcome {
    /// The new config is active for every request that arrives from now on.
    Applied {
        /// Content hash of the new config (sha256 prefix).
        hash: String,
        /// What changed, one line each.
        changes: Vec<String>,
        /// Settings that changed in the file but only apply after a restart; the running
        /// values stay.
        restart_required: Vec<String>,
    },
    /// The watched files hold what is already active: nothing to do.
    Unchanged {
        /// Content hash of the active config.
        hash: String,
    },
    /// The new config is invalid; the old one keeps serving.
    Rejected {
        /// Content hash of the config that keeps serving.
        active_hash: String,
        /// Every problem found, with file, line, column and field.
        errors: Vec<ConfigError>,
    },
}

impl ReloadOutcome {
    /// The metric label: `applied`, `unchanged` or `rejected`.
    pub(crate) fn result(&self) -> &'static str {
        match self {
            ReloadOutcome::Applied { .. } => "applied",
            ReloadOutcome::Unchanged { .. } => "unchanged",
            ReloadOutcome::Rejected { .. } => "rejected",
        }
    }
}

/// What a component applies once every component has accepted a config; returns lines for
/// the outcome's `changes` beyond those of the diff.
pub(crate) type Commit = Box<dyn FnOnce() -> Vec<String> + Send>;

/// A part of the running edge that takes settings from each accepted config, beside routes and
/// pools (the TLS certificate resolver, for one). A reload calls `prepare` on every component
/// with the compiled config and its diff from the running one; only when all succeed does it
/// run their commits and swap routes and pools, so a failure anywhere leaves everything as it
/// was.
pub(crate) trait Component: Send + Sync {
    /// Validates `config` for this component and builds what it needs, changing nothing live.
    /// Errors reject the whole reload.
    fn prepare(&self, config: &EdgeConfig, diff: &ConfigDiff) -> Result<Commit, ConfigErrors>;
}

/// Swaps a prepared generation into service.
pub(crate) type Swap = Box<dyn FnOnce() + Send>;

/// The routes and pools in service, which each accepted config replaces whole (implemented by
/// `active`, which sits above this module).
#[async_trait::async_trait]
pub(crate) trait Generations: Send + Sync {
    /// The config in service.
    fn config(&self) -> Arc<EdgeConfig>;

    /// Builds routes and pools for `config` beside those in service, keeping or rebuilding each
    /// pool's members as `diff` says, and checks the backends that wait for a first check;
    /// nothing in service changes until the returned swap runs.
    async fn prepare(&self, config: EdgeConfig, diff: &ConfigDiff) -> Result<Swap, BuildError>;
}

/// Why routes and pools cannot be built from a valid config.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    /// A pool's backend set was refused by the load balancer.
    #[error("{reason}")]
    Pool {
        /// The pool.
        pool: String,
        /// What the pool said, naming the pool and the backend.
        reason: String,
    },
    /// A route names a pool that was not built.
    #[error("route {route}: unknown pool {pool}")]
    UnknownPool {
        /// The route.
        route: String,
        /// The pool it names.
        pool: String,
    },
}

impl BuildError {
    /// The error as the reload's outcome lists it, at the config key it concerns.
    fn at(&self, path: &Path) -> ConfigErrors {
        let field = match self {
            BuildError::Pool { pool, .. } => format!("pools.{pool}"),
            BuildError::UnknownPool { pool, .. } => format!("pools.{pool}"),
        };
        whole_file_error(path, &field, self.to_string())
    }
}

/// Reloads the config file on demand and swaps it in when valid.
pub(crate) struct Reloader {
    path: PathBuf,
    live: Arc<dyn Generations>,
    metrics: Arc<Metrics>,
    components: Vec<Arc<dyn Component>>,
    /// The settings bound at startup, which a reload cannot change.
    running: RestartSettings,
    /// Fingerprint of the active config's watched files; held across the whole reload so
    /// triggers never interleave.
    state: Mutex<[u8; 32]>,
    restart: std::sync::Mutex<Vec<String>>,
    /// Short hash of the active config, as `dime_config_info` shows it.
    hash: std::sync::Mutex<String>,
    applied: watch::Sender<u64>,
    /// The last reload attempt, for the status page.
    last: std::sync::Mutex<Option<LastReload>>,
}

/// One reload attempt, as the status page shows it.
#[derive(Debug, Clone)]
pub(crate) struct LastReload {
    /// When it finished.
    pub at: SystemTime,
    /// What asked for it.
    pub trigger: Trigger,
    /// `applied`, `unchanged` or `rejected`.
    pub result: &'static str,
    /// How many errors rejected it.
    pub errors: usize,
}

impl Reloader {
    /// A reloader for the config file at `path`, whose compiled form is in service in `live`.
    /// Publishes the active config's metrics.
    pub(crate) fn new(
        path: &Path,
        live: Arc<dyn Generations>,
        metrics: Arc<Metrics>,
        components: Vec<Arc<dyn Component>>,
    ) -> Result<Self, ConfigErrors> {
        let current = live.config();
        let fingerprint = fingerprint(&current)?;
        let (applied, _) = watch::channel(0);
        let reloader = Reloader {
            path: path.to_path_buf(),
            running: current.restart.clone(),
            live,
            metrics,
            components,
            state: Mutex::new(fingerprint),
            restart: std::sync::Mutex::new(Vec::new()),
            hash: std::sync::Mutex::new(String::new()),
            applied,
            last: std::sync::Mutex::new(None),
        };
        reloader.publish(&fingerprint, &[]);
        Ok(reloader)
    }

    /// The files the active config was built from.
    pub(crate) fn watched_files(&self) -> Vec<PathBuf> {
        self.live.config().watched_files()
    }

    /// How long the watcher waits for quiet after a file event, from the active config.
    pub(crate) fn debounce(&self) -> std::time::Duration {
        self.live.config().debounce
    }

    /// Whether the active config asks to reload on file changes.
    pub(crate) fn watching(&self) -> bool {
        self.live.config().watch
    }

    /// Counts applied reloads; watchers re-read the active config when it moves.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Reads, validates and compiles the file; swaps it in when valid and different. Logs and
    /// counts the result either way. Runs as its own task: a caller that goes away (an admin
    /// client hanging up) cannot stop a reload halfway, between updating pools and the swap.
    pub(crate) async fn reload(self: &Arc<Self>, trigger: Trigger) -> ReloadOutcome {
        let this = self.clone();
        match tokio::spawn(async move { this.reload_now(trigger).await }).await {
            Ok(outcome) => outcome,
            // Only a panic gets here; the lock it held is released, the old config serves.
            Err(e) => self.rejected(whole_file_error(
                &self.path,
                "(reload)",
                format!("the reload failed unexpectedly: {e}"),
            )),
        }
    }

    async fn reload_now(&self, trigger: Trigger) -> ReloadOutcome {
        let mut current = self.state.lock().await;
        let started = Instant::now();
        // Reading files and resolving backend names block: off the admin runtime's threads.
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let config = config::load(&path)?;
            let fingerprint = fingerprint(&config)?;
            Ok::<_, ConfigErrors>((config, fingerprint))
        })
        .await
        .unwrap_or_else(|e| {
            Err(whole_file_error(
                &self.path,
                "(reload)",
                format!("the reload failed unexpectedly: {e}"),
            ))
        });
        let outcome = match loaded {
            Err(errors) => self.rejected(errors),
            Ok((_, next)) if next == *current => ReloadOutcome::Unchanged {
                hash: short_hash(&next),
            },
            Ok((config, next)) => match self.apply(config, &next).await {
                Ok(outcome) => {
                    *current = next;
                    outcome
                }
                Err(errors) => self.rejected(errors),
            },
        };
        self.metrics
            .config_reloads
            .with_label_values(&[outcome.result()])
            .inc();
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(LastReload {
            at: SystemTime::now(),
            trigger,
            result: outcome.result(),
            errors: match &outcome {
                ReloadOutcome::Rejected { errors, .. } => errors.len(),
                _ => 0,
            },
        });
        let took_ms = started.elapsed().as_millis() as u64;
        match &outcome {
            ReloadOutcome::Applied {
                hash,
                changes,
                restart_required,
            } => {
                for r in restart_required {
                    tracing::warn!(
                        "restart needed: {r}; the running value stays until an upgrade (dime-edge upgrade) or a restart"
                    );
                }
                tracing::info!(
                    %trigger, hash, took_ms, changes = %changes.join("; "),
                    "config reloaded: {}", self.path.display()
                );
            }
            ReloadOutcome::Unchanged { hash } => {
                tracing::info!(%trigger, hash, "config unchanged: nothing to reload");
            }
            ReloadOutcome::Rejected {
                active_hash,
                errors,
            } => {
                for e in errors {
                    tracing::error!(%trigger, "config reload rejected: {e}");
                }
                tracing::error!(
                    %trigger, active_hash,
                    "config reload rejected: {} error(s); still serving the previous config",
                    errors.len()
                );
            }
        }
        outcome
    }

    /// Builds the new generation beside the running one and swaps it in.
    async fn apply(
        &self,
        mut config: EdgeConfig,
        fingerprint: &[u8; 32],
    ) -> Result<ReloadOutcome, ConfigErrors> {
        let previous = self.live.config();
        let diff = ConfigDiff::between(&previous, &config);
        ConfigDiff::hold(&self.running, &mut config);
        let restart_required = diff.restart_lines();
        let mut commits = Vec::new();
        let mut errors = Vec::new();
        for c in &self.components {
            match c.prepare(&config, &diff) {
                Ok(commit) => commits.push(commit),
                Err(e) => errors.extend(e.0),
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        // Valid, so it applies; what `check` would warn about is said here too.
        for w in &config.warnings {
            tracing::warn!("{}", w.as_warning());
        }
        let swap = self
            .live
            .prepare(config, &diff)
            .await
            .map_err(|e| e.at(&self.path))?;
        let mut changes = diff.lines();
        for commit in commits {
            changes.extend(commit());
        }
        // Only after the components: what they swap (a log file) is a change too.
        if changes.is_empty() {
            changes.push(if restart_required.is_empty() {
                "no effective change (formatting or comments only)".into()
            } else {
                "nothing that applies without a restart".into()
            });
        }
        swap();
        self.publish(fingerprint, &restart_required);
        self.applied.send_modify(|n| *n += 1);
        Ok(ReloadOutcome::Applied {
            hash: short_hash(fingerprint),
            changes,
            restart_required,
        })
    }

    fn rejected(&self, errors: ConfigErrors) -> ReloadOutcome {
        ReloadOutcome::Rejected {
            active_hash: self.active_hash(),
            errors: errors.0,
        }
    }

    /// Short hash of the active config (files changed on disk but not reloaded do not count).
    pub(crate) fn active_hash(&self) -> String {
        self.hash.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The active config's hash, the time it became active, and whether it waits on a restart.
    fn publish(&self, fingerprint: &[u8; 32], restart_required: &[String]) {
        let m = &self.metrics;
        let hash = short_hash(fingerprint);
        m.config_info.reset();
        m.config_info.with_label_values(&[&hash]).set(1);
        *self.hash.lock().unwrap_or_else(|p| p.into_inner()) = hash;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        m.config_last_success.set(now);
        m.config_restart_required
            .set(i64::from(!restart_required.is_empty()));
        *self.restart.lock().unwrap_or_else(|p| p.into_inner()) = restart_required.to_vec();
    }

    /// The last reload attempt since the process started, if any.
    pub(crate) fn last_reload(&self) -> Option<LastReload> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Settings in the active config's file that wait on a restart.
    pub(crate) fn restart_required(&self) -> Vec<String> {
        self.restart
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The content hash of everything `config` was built from: its text, every other watched file,
/// and the addresses its backend host names resolved to (so a reload after a DNS change applies
/// it even when no file changed). Equal fingerprints mean a reload would change nothing.
pub(crate) fn fingerprint(config: &EdgeConfig) -> Result<[u8; 32], ConfigErrors> {
    let mut h = Sha256::new();
    h.update(config.text.as_bytes());
    for pool in &config.pools {
        for (addr, weight) in &pool.backends {
            h.update(format!("\n{} {addr} {weight}", pool.name).as_bytes());
        }
    }
    for path in config.watched_files() {
        if config.file.as_deref() == Some(path.as_path()) {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|e| {
            whole_file_error(
                &path,
                "(file)",
                format!("cannot read a file the config references: {e}"),
            )
        })?;
        h.update(path.as_os_str().as_encoded_bytes());
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(&bytes);
    }
    Ok(h.finalize().into())
}

/// The first 16 hex digits of a fingerprint: what metrics, logs and the admin API show.
pub(crate) fn short_hash(fingerprint: &[u8; 32]) -> String {
    fingerprint[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn whole_file_error(path: &Path, field: &str, reason: impl Into<String>) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        field: field.to_string(),
        reason: reason.into(),
    }])
}
