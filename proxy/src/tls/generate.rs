//! Development certificates: a local CA and a leaf it signs, for `make run` and tests.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The subject every development CA gets: a CA read back from disk is rebuilt from it.
const CA_NAME: &str = "Dime development CA";

/// Why development certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// rcgen refused the parameters (e.g. an invalid DNS name).
    #[error("cannot create the certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A name that is neither a host name, a `*.wildcard` nor an IP address.
    #[error("--name {0:?}: not a host name (\"localhost\", \"*.example.test\") or an IP address")]
    InvalidName(String),
    /// No name at all.
    #[error("at least one --name is required")]
    NoName,
    /// An existing `ca.pem` / `ca.key` pair is not one this tool made.
    #[error("{0}: not a CA made by `dime-edge cert generate` (or ca.key does not match it); move ca.pem and ca.key away to make a new one")]
    ForeignCa(PathBuf),
}

/// A certificate authority that signs development certificates.
pub struct DevAuthority {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// The CA private key, PEM.
    pub key_pem: String,
}

/// A leaf certificate and its key, PEM.
pub struct Issued {
    /// The leaf certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    dn.push(DnType::OrganizationName, "Dime");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

impl DevAuthority {
    /// A new CA, valid for ten years from yesterday (so clock skew does not bite).
    pub fn new() -> Result<Self, GenerateError> {
        let key = KeyPair::generate()?;
        let mut params = ca_params();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(3650);
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(DevAuthority {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA written earlier by [`DevAuthority::new`], from its PEM files, so that browsers
    /// that trust it keep trusting the leaves it signs.
    pub fn from_pem(
        cert_path: &Path,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<Self, GenerateError> {
        let foreign = || GenerateError::ForeignCa(cert_path.to_path_buf());
        let key = KeyPair::from_pem(key_pem).map_err(|_| foreign())?;
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map(|c: rustls_pki_types::CertificateDer<'static>| c.to_vec())
            .map_err(|_| foreign())?;
        let (_, x509) = X509Certificate::from_der(&der).map_err(|_| foreign())?;
        let cn_ok = x509
            .subject()
            .iter_common_name()
            .any(|cn| cn.as_str() == Ok(CA_NAME));
        let key_ok = x509.public_key().subject_public_key.data.as_ref() == key.public_key_raw();
        if !cn_ok || !key_ok {
            return Err(foreign());
        }
        Ok(DevAuthority {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            issuer: Issuer::new(ca_params(), key),
        })
    }

    /// A server certificate for `names` (DNS names, `*.wildcards` or IP addresses), valid
    /// from yesterday for `valid_for`.
    pub fn issue(&self, names: &[String], valid_for: Duration) -> Result<Issued, GenerateError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().map_or("dime-edge", String::as_str),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::seconds(valid_for.as_secs() as i64);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// What [`generate_dir`] wrote.
pub struct Generated {
    /// The CA certificate to trust.
    pub ca_cert: PathBuf,
    /// Whether the CA was made now (false: an existing one was reused).
    pub new_ca: bool,
    /// The server certificate chain (leaf, then CA).
    pub cert: PathBuf,
    /// The server key.
    pub key: PathBuf,
}

/// Writes `ca.pem`, `ca.key`, `edge.pem` and `edge.key` into `out` for `names`. An existing
/// CA in `out` is reused, so a browser that trusts it keeps working after a regeneration.
pub fn generate_dir(
    out: &Path,
    names: &[String],
    valid_for: Duration,
) -> Result<Generated, GenerateError> {
    check_names(names)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| GenerateError::Io { path, source }
    };
    fs::create_dir_all(out).map_err(io(out))?;
    let ca_cert = out.join("ca.pem");
    let ca_key = out.join("ca.key");
    let (ca, new_ca) = if ca_cert.exists() && ca_key.exists() {
        let cert_pem = fs::read_to_string(&ca_cert).map_err(io(&ca_cert))?;
        let key_pem = fs::read_to_string(&ca_key).map_err(io(&ca_key))?;
        (
            DevAuthority::from_pem(&ca_cert, &cert_pem, &key_pem)?,
            false,
        )
    } else {
        let ca = DevAuthority::new()?;
        write_file(&ca_key, &ca.key_pem, 0o600)?;
        write_file(&ca_cert, &ca.cert_pem, 0o644)?;
        (ca, true)
    };
    let leaf = ca.issue(names, valid_for)?;
    let cert = out.join("edge.pem");
    let key = out.join("edge.key");
    // Key first: a watcher that sees the new certificate must find its key already there.
    write_file(&key, &leaf.key_pem, 0o600)?;
    write_file(&cert, &format!("{}{}", leaf.cert_pem, ca.cert_pem), 0o644)?;
    Ok(Generated {
        ca_cert,
        new_ca,
        cert,
        key,
    })
}

/// Every name must be a host name, a one-label wildcard or an IP literal: what a client can
/// ask for, so what a certificate can usefully carry.
fn check_names(names: &[String]) -> Result<(), GenerateError> {
    if names.is_empty() {
        return Err(GenerateError::NoName);
    }
    for n in names {
        let ip = n.parse::<std::net::IpAddr>().is_ok();
        if !ip && crate::route::HostMatch::parse(n).is_err() {
            return Err(GenerateError::InvalidName(n.clone()));
        }
    }
    Ok(())
}

/// Writes through a temporary file and a rename, so readers never see half a file.
fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), GenerateError> {
    let tmp = path.with_extension("tmp");
    let err = |source| GenerateError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}
