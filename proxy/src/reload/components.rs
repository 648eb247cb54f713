//! The reload components beside routes and pools: the certificates the HTTPS listeners serve,
//! the log destinations and the file descriptors `max_connections` needs. Each applies its part
//! of an accepted config's diff.

use std::sync::Arc;

use super::diff::ConfigDiff;
use super::{Commit, Component};
use crate::config::{ConfigError, ConfigErrors, EdgeConfig};
use crate::connections::{fd_warning, raise_fd_limit};
use crate::logging::files::Outputs;
use crate::metrics::Metrics;
use crate::tls::live::log_certificates;
use crate::tls::SniResolver;

/// The reload component of the HTTPS listeners. The config compiler has already read and
/// checked every certificate (a bad one rejects the whole reload, so the set in service
/// stays); committing stores the new set in the resolver with one pointer swap, so every
/// handshake gets the old set or the new one, never an error.
pub(crate) struct CertificateReload {
    resolver: Arc<SniResolver>,
    metrics: Arc<Metrics>,
}

impl CertificateReload {
    /// The component for `resolver`, which serves the running config's certificates.
    pub(crate) fn new(resolver: Arc<SniResolver>, metrics: Arc<Metrics>) -> Self {
        CertificateReload { resolver, metrics }
    }
}

impl Component for CertificateReload {
    fn prepare(&self, config: &EdgeConfig, diff: &ConfigDiff) -> Result<Commit, ConfigErrors> {
        let set = config.cert_set();
        let changed = diff.certificates_changed();
        let certificates = config.certificates.clone();
        let resolver = self.resolver.clone();
        let metrics = self.metrics.clone();
        Ok(Box::new(move || {
            // Swapped even when nothing differs: a pointer store, and the set then always
            // matches the config in service.
            resolver.replace(set);
            if changed {
                log_certificates(&certificates, &metrics);
            }
            // The diff's lines say what changed.
            Vec::new()
        }))
    }
}

/// Applies `[log]` on reload, as nginx does: a changed path is opened before the reload
/// commits (a file that cannot be opened rejects the reload) and takes the next line.
pub(crate) struct LogReload(pub Arc<Outputs>);

impl Component for LogReload {
    fn prepare(&self, config: &EdgeConfig, _diff: &ConfigDiff) -> Result<Commit, ConfigErrors> {
        match self.0.prepare_move(&config.log) {
            Ok(pending) => Ok(Box::new(move || pending.commit())),
            Err(errors) => Err(ConfigErrors(
                errors
                    .into_iter()
                    .map(|e| ConfigError {
                        file: config.source.clone(),
                        line: 0,
                        column: 0,
                        field: e.field.into(),
                        reason: e.to_string(),
                    })
                    .collect(),
            )),
        }
    }
}

/// Warns, as startup does, when a reload's `server.max_connections` needs more file
/// descriptors than the process may open. The setting applies all the same.
pub(crate) struct FdBudget;

impl Component for FdBudget {
    fn prepare(&self, config: &EdgeConfig, _diff: &ConfigDiff) -> Result<Commit, ConfigErrors> {
        let max_connections = config.server.max_connections;
        Ok(Box::new(move || {
            if let Ok(limit) = raise_fd_limit() {
                if let Some(w) = fd_warning(max_connections, limit) {
                    tracing::warn!("{w}");
                }
            }
            Vec::new()
        }))
    }
}
