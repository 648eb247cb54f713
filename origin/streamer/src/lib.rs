//! The media streamer: serves a directory of HLS playlists, segments and VoD files over HTTP.
//!
//! It replaces nginx in front of a media volume. A request flows through one module per
//! stage: [`path`] (request path → file under the root), [`media_type`] (content type and
//! cache lifetime), [`blocking`] (LL-HLS: holding a playlist request until it has the part
//! asked for, and a hinted part's request until it is written), [`conditional`] (RFC 9110 §13
//! preconditions), [`range`] (RFC 9110 §14 byte ranges), then [`body`] streams the bytes.
//! [`handler`] strings them together and [`server`] owns the socket.
//!
//! hyper writes bodies from user-space buffers and cannot hand a file to sendfile(2), so files
//! are read in [`body::CHUNK_SIZE`] chunks that hyper pulls as the socket drains: memory per
//! connection stays bounded whatever the file size, at the cost of one copy through user space.

pub mod args;
pub mod blocking;
pub mod body;
pub mod conditional;
pub mod handler;
pub mod media_type;
pub mod path;
pub mod range;
pub mod server;

use std::path::PathBuf;
use std::time::Duration;

pub use args::Args;
pub use media_type::CachePolicy;
pub use server::{Server, StartError};

/// Everything the streamer needs besides its listening address.
#[derive(Debug, Clone)]
pub struct Config {
    /// The directory to serve.
    pub root: PathBuf,
    /// `Cache-Control` values by kind of file.
    pub cache: CachePolicy,
    /// How long in-flight requests may run after shutdown is asked for.
    pub grace_period: Duration,
}

impl Config {
    /// A configuration serving `root` with the default cache lifetimes and grace period.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            cache: CachePolicy::default(),
            grace_period: Duration::from_secs(5),
        }
    }
}
