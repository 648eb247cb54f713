//! Configuration: the TOML file as written (`file`), how it is read (`parse`, `env`), its
//! errors (`error`), the validated runtime form the proxy runs on (`compile`), and how that
//! form is shown (`dump`, `redact`).

pub mod compile;
pub mod dump;
pub mod env;
pub mod error;
pub mod file;
mod parse;

pub mod redact;

pub use compile::{
    compile, load, AdminSettings, CertSpec, EdgeConfig, HealthCheckSpec, LogSettings, LogTarget,
    PoolSpec, RouteSpec, Selection, ServerSettings, UpstreamTls,
};
pub use error::{ConfigError, ConfigErrors};
