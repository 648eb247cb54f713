//! The configuration's I/O, in one place: the config file, the files it references (tokens,
//! certificates, CA bundles, log directories) and the backend names it resolves. Everything
//! here blocks, so a reload calls it off the async runtime (`reload::Reloader`).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use super::error::{ConfigError, ConfigErrors};
use super::types::EdgeConfig;
use crate::tls::{self, CertError, LoadedCert};

/// Why a file the config references, or a name it resolves, cannot be used. Each message is
/// the reason a config error shows at the field that names the file or the address.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A token file cannot be read.
    #[error("cannot read {}: {reason}", path.display())]
    Secret {
        /// The file.
        path: PathBuf,
        /// The I/O error, without Rust's `(os error N)` suffix.
        reason: String,
    },
    /// A token file holds nothing but line ends.
    #[error("is empty: {} holds no token", path.display())]
    EmptySecret {
        /// The file.
        path: PathBuf,
    },
    /// A CA bundle cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Bundle {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A CA bundle is not PEM.
    #[error("{}: not a PEM certificate bundle: {reason}", path.display())]
    NotPem {
        /// The file.
        path: PathBuf,
        /// What the PEM reader said.
        reason: String,
    },
    /// A CA bundle has no certificate in it.
    #[error("{}: no CERTIFICATE block: expected PEM CA certificates", path.display())]
    NoCa {
        /// The file.
        path: PathBuf,
    },
    /// One certificate of a CA bundle is not valid X.509.
    #[error("{}: certificate #{number} cannot be parsed: {reason}", path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
        /// Its place in the bundle, from 1.
        number: usize,
        /// What the parser said.
        reason: String,
    },
    /// A backend address that is neither `IP:port` nor `name:port`.
    #[error("unparsable address \"{0}\": write host:port, e.g. \"10.0.0.5:8080\"")]
    Address(String),
    /// A backend name that resolves to nothing.
    #[error("host \"{0}\" resolves to no address")]
    NoAddress(String),
    /// A backend name that cannot be resolved.
    #[error("cannot resolve \"{host}\": {source}")]
    Resolve {
        /// The name.
        host: String,
        /// The resolver's error.
        source: std::io::Error,
    },
}

/// Reads and compiles the file at `path`.
pub fn load(path: &Path) -> Result<EdgeConfig, ConfigErrors> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => super::compile::compile(&name, &text).map(|mut c| {
            c.file = Some(path.to_path_buf());
            c
        }),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file: name,
            line: 0,
            column: 0,
            field: "(file)".into(),
            reason: format!("cannot read: {e}"),
        }])),
    }
}

/// A token read from a file, without the line end that `echo secret > file` and most editors
/// add. It is read when the config is compiled, so a missing or empty one is an error of this
/// config, with its path, never a token that silently stops matching.
pub fn secret(path: &Path) -> Result<String, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::Secret {
        path: path.to_path_buf(),
        reason: io_reason(&e),
    })?;
    let token = text.trim_end_matches(['\n', '\r']);
    if token.is_empty() {
        return Err(LoadError::EmptySecret {
            path: path.to_path_buf(),
        });
    }
    Ok(token.to_string())
}

/// A served certificate chain and its key, checked to belong together and to be in date.
pub fn certificate(cert: &Path, key: &Path) -> Result<LoadedCert, CertError> {
    tls::certs::load(cert, key)
}

/// A PEM bundle of CA certificates as DER, each one checked to parse.
pub fn ca_bundle(path: &Path) -> Result<Vec<Vec<u8>>, LoadError> {
    use rustls_pki_types::pem::PemObject;
    use x509_parser::prelude::{FromDer, X509Certificate};
    let pem = std::fs::read(path).map_err(|source| LoadError::Bundle {
        path: path.to_path_buf(),
        source,
    })?;
    let ders = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LoadError::NotPem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if ders.is_empty() {
        return Err(LoadError::NoCa {
            path: path.to_path_buf(),
        });
    }
    let mut out = Vec::new();
    for (i, d) in ders.iter().enumerate() {
        X509Certificate::from_der(d.as_ref()).map_err(|e| LoadError::BadCa {
            path: path.to_path_buf(),
            number: i + 1,
            reason: e.to_string(),
        })?;
        out.push(d.to_vec());
    }
    Ok(out)
}

/// Parses `IP:port`, or resolves `name:port` once with the system's resolver (the first
/// address wins).
pub fn parse_backend_addr(s: &str) -> Result<SocketAddr, LoadError> {
    backend_addr(s, &resolve_system)
}

/// The system's resolver (`/etc/hosts`, then DNS) for a `name:port`.
pub fn resolve_system(name_port: &str) -> std::io::Result<Vec<SocketAddr>> {
    name_port.to_socket_addrs().map(Iterator::collect)
}

/// [`parse_backend_addr`] with `resolve` looking up a well-formed `name:port`.
pub fn backend_addr(
    s: &str,
    resolve: &dyn Fn(&str) -> std::io::Result<Vec<SocketAddr>>,
) -> Result<SocketAddr, LoadError> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let bad = || LoadError::Address(s.to_string());
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let _: u16 = port.parse().map_err(|_| bad())?;
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !host_ok {
        return Err(bad());
    }
    match resolve(s) {
        Ok(addrs) => addrs
            .first()
            .copied()
            .ok_or_else(|| LoadError::NoAddress(host.to_string())),
        Err(source) => Err(LoadError::Resolve {
            host: host.to_string(),
            source,
        }),
    }
}

/// What stands in the way of writing a log to `path`, if anything: the edge creates the file,
/// not directories, as nginx does.
pub fn log_file_problem(path: &Path) -> Option<String> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    if path.is_dir() {
        Some(format!(
            "{} is a directory: name the file, e.g. \"{}/dime.log\"",
            path.display(),
            path.display()
        ))
    } else if !dir.is_dir() {
        Some(format!("{}: directory {} does not exist; create it (the edge creates the file, not its directory)", path.display(), dir.display()))
    } else {
        None
    }
}

/// An I/O error without Rust's `(os error 2)` suffix.
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_loses_its_line_end_and_an_empty_or_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "0123456789abcdef\r\n").unwrap();
        assert_eq!(secret(&token).unwrap(), "0123456789abcdef");

        std::fs::write(&token, "\n").unwrap();
        assert_eq!(
            secret(&token).unwrap_err().to_string(),
            format!("is empty: {} holds no token", token.display())
        );

        let missing = dir.path().join("missing");
        assert_eq!(
            secret(&missing).unwrap_err().to_string(),
            format!(
                "cannot read {}: No such file or directory",
                missing.display()
            )
        );
    }

    #[test]
    fn a_ca_bundle_without_a_certificate_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("ca.pem");
        std::fs::write(&bundle, "not a certificate\n").unwrap();
        assert_eq!(
            ca_bundle(&bundle).unwrap_err().to_string(),
            format!(
                "{}: no CERTIFICATE block: expected PEM CA certificates",
                bundle.display()
            )
        );
    }

    #[test]
    fn backend_addresses_parse_resolve_or_say_how_to_write_them() {
        assert_eq!(
            parse_backend_addr("10.0.0.5:8080").unwrap(),
            "10.0.0.5:8080".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            parse_backend_addr("localhost:8080").unwrap().port(),
            8080,
            "a name is resolved once"
        );
        for bad in ["origin", "origin:http", "or igin:80", ":80"] {
            assert_eq!(
                parse_backend_addr(bad).unwrap_err().to_string(),
                format!("unparsable address \"{bad}\": write host:port, e.g. \"10.0.0.5:8080\"")
            );
        }
    }

    #[test]
    fn load_reads_the_file_and_says_when_it_cannot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.toml");
        std::fs::write(
            &path,
            "[listen]\nhttp = [\"127.0.0.1:8080\"]\n[pools.p]\nbackends = [\"127.0.0.1:8081\"]\n[[routes]]\npool = \"p\"\n",
        )
        .unwrap();
        let config = load(&path).unwrap();
        assert_eq!(config.file.as_deref(), Some(path.as_path()));
        assert_eq!(config.source, path.display().to_string());

        let missing = dir.path().join("gone.toml");
        let errors = load(&missing).unwrap_err().0;
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "(file)");
        assert!(
            errors[0].reason.starts_with("cannot read: "),
            "{}",
            errors[0].reason
        );
    }

    #[test]
    fn a_log_file_needs_an_existing_directory_and_must_not_be_one() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(log_file_problem(&dir.path().join("access.log")), None);
        let problem = log_file_problem(dir.path()).unwrap();
        assert!(problem.contains("is a directory"), "{problem}");
        let problem = log_file_problem(&dir.path().join("no/access.log")).unwrap();
        assert!(problem.contains("does not exist"), "{problem}");
    }
}
