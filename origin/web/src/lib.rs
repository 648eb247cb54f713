//! Dime's web app: the catalog of VoD titles and live channels, the viewer's pages with an
//! HLS player, the admin side, and the commands that fill the catalog (`create-admin`,
//! `import`, `add-channel`).
//!
//! A request flows through [`http::context`] (session and cache headers) to a handler in
//! [`http`], which reads the [`store`] (SQLite or PostgreSQL through [`catalog`],
//! [`accounts`] and [`sessions`]) and renders a [`templates`] page or JSON.

pub mod accounts;
pub mod assets;
pub mod catalog;
pub mod cli;
pub mod client_address;
pub mod edges;
pub mod forms;
pub mod http;
pub mod import;
pub mod login_throttle;
pub mod media;
pub mod packaging_child;
pub mod packaging_jobs;
pub mod replicas;
pub mod server;
pub mod sessions;
pub mod store;
pub mod templates;
pub mod view_limit;

pub use cli::Args;
pub use media::MediaBase;
pub use server::{Options, Server, StartError};
pub use store::{Backend, Store, StoreError};
