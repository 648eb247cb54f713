//! What the origin crates' tests share: servers on loopback ports, databases, and ffprobe.
//!
//! A dev-dependency only. [`media`] checks the files a packager wrote; the `streamer` feature
//! adds [`streamer`] (a streamer over a temporary root), the `web` feature adds [`web`] (the
//! web app over SQLite or a PostgreSQL of its own, and real `dime-edge` processes).

pub mod media;
#[cfg(feature = "streamer")]
pub mod streamer;
#[cfg(feature = "web")]
pub mod web;
