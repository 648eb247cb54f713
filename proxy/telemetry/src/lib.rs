//! Dime's telemetry, shared by the edge and the origins: log set-up and format, and the Prometheus registry.

pub mod logs;
pub mod metrics;

pub use logs::LogFormat;
pub use metrics::Registry;
// The metric types, from the same `prometheus` the registry encodes.
pub use prometheus;
