//! Certificate files: a PEM chain and its key, checked to belong together and to be in date.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why a certificate or key file cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds no usable PEM certificate.
    #[error("{path}: no certificate: {reason} (expected PEM blocks \"-----BEGIN CERTIFICATE-----\", the leaf first)")]
    NoCertificate {
        /// The file.
        path: PathBuf,
        /// What the PEM reader said.
        reason: String,
    },
    /// The leaf certificate is not valid X.509.
    #[error("{path}: the first certificate cannot be parsed: {reason}")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The file holds no usable private key.
    #[error("{path}: no private key: {reason} (expected a PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" block)")]
    NoKey {
        /// The file.
        path: PathBuf,
        /// What the PEM reader or the signer said.
        reason: String,
    },
    /// The key does not sign for the certificate.
    #[error("{key} does not match the certificate in {cert}: they are not a pair")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate's validity period is over.
    #[error("{path}: the certificate expired on {not_after}; renew it")]
    Expired {
        /// The file.
        path: PathBuf,
        /// Its notAfter date.
        not_after: String,
    },
    /// The certificate's validity period has not started.
    #[error("{path}: the certificate is not valid before {not_before}")]
    NotYetValid {
        /// The file.
        path: PathBuf,
        /// Its notBefore date.
        not_before: String,
    },
}

/// One served certificate, read and checked when the config was compiled.
#[derive(Debug, Clone)]
pub struct CertSpec {
    /// The PEM chain file, resolved against the config file's directory.
    pub cert: PathBuf,
    /// The PEM key file.
    pub key: PathBuf,
    /// SNI names it serves, lowercase: `host` or `*.suffix`.
    pub names: Vec<String>,
    /// The chain and key as read.
    pub loaded: LoadedCert,
}

/// A certificate chain and key, read and checked, ready for the resolver.
#[derive(Clone)]
pub struct LoadedCert {
    /// What rustls serves: the chain and its signing key.
    pub key: Arc<CertifiedKey>,
    /// DNS names in the leaf's subjectAltName, lowercase (`*.example.com` kept as written).
    pub sans: Vec<String>,
    /// The leaf's notAfter, as text.
    pub not_after: String,
    /// The leaf's notAfter, Unix seconds.
    pub not_after_unix: i64,
    /// Time left until notAfter.
    pub expires_in: Duration,
    /// The leaf's serial number in hex, to tell certificates apart in logs.
    pub serial: String,
}

impl fmt::Debug for LoadedCert {
    // The key stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedCert")
            .field("sans", &self.sans)
            .field("not_after", &self.not_after)
            .field("serial", &self.serial)
            .finish()
    }
}

impl LoadedCert {
    /// Whether the leaf's SANs cover `name` (`host` or `*.suffix`), by RFC 6125 rules: a
    /// wildcard stands for exactly one leftmost label.
    pub fn covers(&self, name: &str) -> bool {
        self.sans.iter().any(|san| san_covers(san, name))
    }
}

/// Whether one SAN covers `name`.
pub(crate) fn san_covers(san: &str, name: &str) -> bool {
    if san == name {
        return true;
    }
    match (san.strip_prefix("*."), name.split_once('.')) {
        (Some(suffix), Some((label, rest))) => label != "*" && rest == suffix,
        _ => false,
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads `cert_path` (PEM chain, leaf first) and `key_path` (PEM key) and checks that the
/// key signs for the leaf and that the leaf is valid now.
pub(crate) fn load(cert_path: &Path, key_path: &Path) -> Result<LoadedCert, CertError> {
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let no_cert = |reason: String| CertError::NoCertificate {
        path: cert_path.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| no_cert(e.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(no_cert("the file has no CERTIFICATE block".into()));
    };
    let (_, x509) =
        X509Certificate::from_der(leaf.as_ref()).map_err(|e| CertError::BadCertificate {
            path: cert_path.to_path_buf(),
            reason: e.to_string(),
        })?;

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let validity = x509.validity();
    if validity.not_before.timestamp() > now {
        return Err(CertError::NotYetValid {
            path: cert_path.to_path_buf(),
            not_before: validity.not_before.to_string(),
        });
    }
    let not_after_ts = validity.not_after.timestamp();
    if not_after_ts <= now {
        return Err(CertError::Expired {
            path: cert_path.to_path_buf(),
            not_after: validity.not_after.to_string(),
        });
    }

    let mut sans = Vec::new();
    if let Ok(Some(ext)) = x509.subject_alternative_name() {
        for name in &ext.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                sans.push(dns.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }

    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| CertError::NoKey {
        path: key_path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let signer =
        rustls::crypto::ring::sign::any_supported_type(&key_der).map_err(|e| CertError::NoKey {
            path: key_path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain.clone(), signer);
    match certified.keys_match() {
        Ok(()) => {}
        // ring keys always expose their public half, so "unknown" cannot be a mismatch.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(CertError::Mismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            })
        }
    }
    let serial = x509.raw_serial_as_string();
    Ok(LoadedCert {
        key: Arc::new(certified),
        sans,
        not_after: validity.not_after.to_string(),
        not_after_unix: not_after_ts,
        expires_in: Duration::from_secs((not_after_ts - now) as u64),
        serial,
    })
}

#[cfg(test)]
mod tests {
    use super::san_covers;

    #[test]
    fn a_wildcard_san_covers_one_label_only() {
        assert!(san_covers("*.example.com", "a.example.com"));
        assert!(san_covers("*.example.com", "*.example.com"));
        assert!(!san_covers("*.example.com", "example.com"));
        assert!(!san_covers("*.example.com", "a.b.example.com"));
        assert!(san_covers("example.com", "example.com"));
        assert!(!san_covers("example.com", "a.example.com"));
    }
}
