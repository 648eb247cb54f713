//! Development certificates: a local CA and a leaf it signs, for `make run` and tests.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
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
        if !ip && crate::host::HostMatch::parse(n).is_err() {
            return Err(GenerateError::InvalidName(n.clone()));
        }
    }
    Ok(())
}

/// Writes through a new temporary file in the same directory and a rename, so readers never see
/// half a file. The temporary file is created with O_EXCL (`create_new`) and `mode` from the
/// start: a file or symlink planted under a predictable name can neither widen the key's
/// permissions nor redirect it elsewhere; it is skipped and left alone.
fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), GenerateError> {
    let err = |source| GenerateError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut attempt = 0u32;
    let (tmp, mut f) = loop {
        let tmp = dir.join(format!(
            ".{name}.{}.{nonce:08x}{attempt}.tmp",
            std::process::id()
        ));
        // O_CREAT|O_EXCL fails on any existing name, a symlink included (it is not followed).
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 16 => {
                attempt += 1;
            }
            Err(e) => return Err(err(e)),
        }
    };
    let written = (|| {
        // The umask may only have narrowed the mode; set it exactly (0644 for certificates).
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        // rename replaces `path` itself, even when it is a symlink, never the symlink's target.
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(err)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{symlink, PermissionsExt};

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn planted_temporary_files_and_symlinks_cannot_expose_the_keys() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("certs");
        fs::create_dir(&out).unwrap();
        // A world-readable file where the old code put its temporary key...
        fs::write(out.join("edge.tmp"), "planted").unwrap();
        fs::set_permissions(out.join("edge.tmp"), fs::Permissions::from_mode(0o666)).unwrap();
        // ...and a symlink that would send the CA key somewhere else.
        let elsewhere = dir.path().join("elsewhere");
        fs::write(&elsewhere, "untouched").unwrap();
        fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o644)).unwrap();
        symlink(&elsewhere, out.join("ca.tmp")).unwrap();
        // A symlink in the key's own place is replaced, not followed.
        symlink(&elsewhere, out.join("edge.key")).unwrap();

        let names = ["localhost".to_string()];
        let generated = generate_dir(&out, &names, Duration::from_secs(3600)).unwrap();

        for key in [&generated.key, &out.join("ca.key")] {
            assert!(fs::symlink_metadata(key).unwrap().is_file(), "{key:?}");
            assert_eq!(mode(key), 0o600, "{key:?}");
            assert!(fs::read_to_string(key).unwrap().contains("PRIVATE KEY"));
        }
        assert_eq!(fs::read_to_string(&elsewhere).unwrap(), "untouched");
        assert_eq!(fs::read_to_string(out.join("edge.tmp")).unwrap(), "planted");
        let mut left: Vec<String> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["ca.key", "ca.pem", "ca.tmp", "edge.key", "edge.pem", "edge.tmp"],
            "no temporary file is left behind"
        );
    }
}
