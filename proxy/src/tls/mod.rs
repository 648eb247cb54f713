//! TLS: certificate files, the SNI resolver the HTTPS listeners ask, and development certificates.

pub mod certs;
pub mod generate;
pub mod live;
pub mod resolver;

pub use certs::{CertError, CertSpec, LoadedCert};
pub use resolver::{CertSet, SniResolver};
