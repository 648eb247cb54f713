//! Dime's edge: a caching reverse proxy for video, built on pingora.
//!
//! A request flows one way through these modules: [`request_path`] gives its path one
//! canonical spelling, [`route`] picks the route, [`pool`] the backend, [`forwarding`]
//! prepares the headers, [`edge`] drives the phases; [`config`] is compiled into [`active`]
//! before any of that runs, and [`reload`] swaps a new one in while the edge serves.

#![warn(unreachable_pub)]

pub(crate) mod active;
pub(crate) mod admin;
pub mod allocator;
pub mod cache;
pub mod config;
pub(crate) mod connections;
pub(crate) mod edge;
pub(crate) mod forwarding;
/// The parsers' doors for `proxy/fuzz` alone; not an API.
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod health;
pub(crate) mod host;
pub mod logging;
pub(crate) mod metrics;
/// The hit path's pieces for `proxy/benches/hit_path.rs` alone; not an API.
#[doc(hidden)]
pub mod microbench;
pub(crate) mod pool;
pub mod quick;
pub(crate) mod reload;
pub(crate) mod request_path;
pub(crate) mod route;
pub mod server;
pub(crate) mod status;
pub(crate) mod systemd;
pub mod tls;
pub mod upgrade;
