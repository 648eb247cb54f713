//! Dime's origin servers: the media streamer today, the packager and the web app later.

pub mod streamer;
