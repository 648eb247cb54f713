//! Certificates in service: the reload step that swaps a new set into the listeners'
//! resolver, and the log lines that say what is served.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{CertSpec, ConfigErrors, EdgeConfig};
use crate::metrics::Metrics;
use crate::reload::{Commit, Component};
use crate::tls::SniResolver;

/// Certificates closer to their end than this are reported at startup and at each reload.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// Logs what each certificate serves, warns about those close to expiry, and publishes their
/// expiry dates (only the served ones: a removed certificate's series goes).
pub fn log_certificates(certificates: &[CertSpec], metrics: &Metrics) {
    metrics.tls_cert_expiry.reset();
    for c in certificates {
        metrics
            .tls_cert_expiry
            .with_label_values(&[&c.cert.display().to_string()])
            .set(c.loaded.not_after_unix);
        if c.loaded.expires_in < EXPIRY_WARNING {
            tracing::warn!(
                cert = %c.cert.display(),
                not_after = %c.loaded.not_after,
                "certificate expires in less than 14 days; renew it"
            );
        }
        tracing::info!(
            cert = %c.cert.display(),
            names = %c.names.join(", "),
            serial = %c.loaded.serial,
            not_after = %c.loaded.not_after,
            "serving certificate"
        );
    }
}

/// What one served certificate is, to tell a reload what changed.
#[derive(Clone, PartialEq, Eq)]
struct Served {
    cert: String,
    names: Vec<String>,
    serial: String,
}

fn served(certificates: &[CertSpec]) -> Vec<Served> {
    certificates
        .iter()
        .map(|c| Served {
            cert: c.cert.display().to_string(),
            names: c.names.clone(),
            serial: c.loaded.serial.clone(),
        })
        .collect()
}

/// The reload component of the HTTPS listeners. The config compiler has already read and
/// checked every certificate (a bad one rejects the whole reload, so the set in service
/// stays); committing stores the new set in the resolver with one pointer swap, so every
/// handshake gets the old set or the new one, never an error.
pub struct CertificateReload {
    resolver: Arc<SniResolver>,
    metrics: Arc<Metrics>,
    current: Arc<Mutex<Vec<Served>>>,
}

impl CertificateReload {
    /// The component for `resolver`, which serves `certificates` now.
    pub fn new(
        resolver: Arc<SniResolver>,
        metrics: Arc<Metrics>,
        certificates: &[CertSpec],
    ) -> Self {
        CertificateReload {
            resolver,
            metrics,
            current: Arc::new(Mutex::new(served(certificates))),
        }
    }
}

impl Component for CertificateReload {
    fn prepare(&self, config: &EdgeConfig) -> Result<Commit, ConfigErrors> {
        let set = config.cert_set();
        let next = served(&config.certificates);
        let certificates = config.certificates.clone();
        let resolver = self.resolver.clone();
        let metrics = self.metrics.clone();
        let current = self.current.clone();
        Ok(Box::new(move || {
            let mut current = current.lock().unwrap_or_else(|p| p.into_inner());
            let changes = describe(&current, &next);
            // Swapped even when nothing differs: a pointer store, and the set then always
            // matches the config in service.
            resolver.replace(set);
            if !changes.is_empty() {
                log_certificates(&certificates, &metrics);
            }
            *current = next;
            changes
        }))
    }
}

/// One line per certificate added, removed or replaced, for the reload's outcome.
fn describe(old: &[Served], new: &[Served]) -> Vec<String> {
    let mut out = Vec::new();
    for n in new {
        match old.iter().find(|o| o.cert == n.cert) {
            None => out.push(format!(
                "certificate {} added ({})",
                n.cert,
                n.names.join(", ")
            )),
            Some(o) if o.serial != n.serial => out.push(format!(
                "certificate {} replaced (serial {} -> {})",
                n.cert, o.serial, n.serial
            )),
            Some(o) if o.names != n.names => out.push(format!(
                "certificate {} names changed ({})",
                n.cert,
                n.names.join(", ")
            )),
            Some(_) => {}
        }
    }
    for o in old {
        if !new.iter().any(|n| n.cert == o.cert) {
            out.push(format!("certificate {} removed", o.cert));
        }
    }
    out
}
