//! Certificates in service: the log lines and metrics that say what is served (the reload
//! step that swaps a new set in is `reload::components::CertificateReload`).

use std::time::Duration;

use crate::metrics::Metrics;
use crate::tls::CertSpec;

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
