//! One module per target, each with its `check`.

pub mod cache_key;
pub mod canonical_path;
pub mod config;
pub mod forms;
pub mod playlist;
pub mod range;
pub mod streamer_path;
