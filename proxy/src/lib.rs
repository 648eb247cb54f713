//! Dime's edge: a caching reverse proxy for video, built on pingora.
//!
//! A request flows one way through these modules: [`request_path`] gives its path one
//! canonical spelling, [`route`] picks the route, [`pool`] the backend, [`forwarding`]
//! prepares the headers, [`edge`] drives the phases; [`config`] is compiled into [`active`]
//! before any of that runs, and [`reload`] swaps a new one in while the edge serves.

pub mod active;
pub mod admin;
pub mod cache;
pub mod config;
pub mod connections;
pub mod edge;
pub mod forwarding;
pub mod health;
pub mod host;
pub mod logging;
pub mod metrics;
pub mod pool;
pub mod quick;
pub mod reload;
pub mod request_path;
pub mod route;
pub mod server;
pub mod status;
pub mod systemd;
pub mod tls;
pub mod upgrade;
