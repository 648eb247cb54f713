//! The `dime-origin streamer` command-line flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{CachePolicy, Config};

/// Flags of `dime-origin streamer`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Directory to serve (the media volume).
    #[arg(long, value_name = "DIR", env = "DIME_STREAMER_ROOT")]
    pub root: PathBuf,

    /// Address to listen on, for HTTP/1.1 and HTTP/2 (h2c) alike, e.g. 0.0.0.0:8080.
    #[arg(long, value_name = "ADDR", env = "DIME_STREAMER_LISTEN")]
    pub listen: SocketAddr,

    /// `max-age` of playlists (.m3u8, .mpd), which live packagers rewrite constantly. The
    /// answer to a blocking reload (`_HLS_msn`) gets three target durations instead: it lists
    /// the part it waited for for as long as the playlist lists parts.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 1,
        env = "DIME_STREAMER_PLAYLIST_MAX_AGE"
    )]
    pub playlist_max_age: u32,

    /// `max-age` of media segments and files (.ts, .m4s, .mp4, .m4v, .m4a, .aac, .cmfv, .cmfa,
    /// and .vtt/.webvtt subtitle segments), sent as immutable.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 31_536_000,
        env = "DIME_STREAMER_MEDIA_MAX_AGE"
    )]
    pub media_max_age: u32,

    /// `max-age` of every other file (images, player assets).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 300,
        env = "DIME_STREAMER_OTHER_MAX_AGE"
    )]
    pub other_max_age: u32,

    /// `max-age` of a 404, so a cache in front answers repeated requests for a segment that is
    /// not written yet (0: `no-store`).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 1,
        env = "DIME_STREAMER_NOT_FOUND_MAX_AGE"
    )]
    pub not_found_max_age: u32,

    /// How long in-flight requests may run after SIGTERM or SIGINT.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 5,
        env = "DIME_STREAMER_GRACE_PERIOD"
    )]
    pub grace_period: u64,
}

impl Args {
    /// The streamer configuration these flags describe.
    pub fn config(&self) -> Config {
        Config {
            root: self.root.clone(),
            cache: CachePolicy::new(
                self.playlist_max_age,
                self.media_max_age,
                self.other_max_age,
            )
            .with_not_found_max_age(self.not_found_max_age),
            grace_period: Duration::from_secs(self.grace_period),
        }
    }
}
