//! TLS: certificate files, the SNI resolver the HTTPS listeners ask, and development certificates.

pub(crate) mod certs;
pub mod generate;
pub mod live;
pub(crate) mod resolver;

pub use certs::{CertError, CertSpec, LoadedCert};
pub use resolver::{CertSet, SniResolver};
