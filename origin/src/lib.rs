//! Dime's origin servers: the media streamer; the packager and the web app are their own crates.

pub mod streamer;
