//! Configuration: the TOML file as written (`file`), its errors (`error`), and the validated
//! runtime form the proxy runs on (`compile`).

pub mod compile;
pub mod error;
pub mod file;

pub mod redact;

pub use compile::{
    compile, load, AdminSettings, CertSpec, EdgeConfig, HealthCheckSpec, LogSettings, LogTarget,
    PoolSpec, RouteSpec, Selection, ServerSettings, UpstreamTls,
};
pub use error::{ConfigError, ConfigErrors};
