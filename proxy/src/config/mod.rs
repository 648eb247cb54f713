//! Configuration: the TOML file as written (`file`), how it is read (`parse`, `env`), its
//! errors (`error`), the validated form the proxy runs on (`types`, built by `compile`, one
//! file per section), the I/O it needs (`loader`), and how that form is shown (`dump`, `redact`).

pub mod compile;
pub mod dump;
pub mod env;
pub mod error;
pub mod file;
pub mod loader;
mod parse;
pub mod types;

pub mod redact;

pub use compile::{
    compile, compile_with, load, AdminSettings, CertSpec, EdgeConfig, HealthCheckSpec, LogSettings,
    LogTarget, Lookups, PoolSpec, RouteSpec, Selection, ServerSettings, UpstreamTls,
};
pub use error::{ConfigError, ConfigErrors};
