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

/// Parses `IP:port`, or resolves `name:port` once (the first address wins).
pub fn parse_backend_addr(s: &str) -> Result<SocketAddr, LoadError> {
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
    match s.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
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
