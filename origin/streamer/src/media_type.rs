//! Content types and cache lifetimes, decided by a file's extension.

use std::path::Path;

use http::HeaderValue;

/// How a file behaves in a video CDN, which decides how long edges may cache it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A manifest that a live packager rewrites every segment duration (`.m3u8`, `.mpd`).
    Playlist,
    /// A segment (video, audio or WebVTT subtitles) or VoD file that is written once and never
    /// changes under its name.
    Media,
    /// Anything else: posters, player assets.
    Other,
}

/// The content type and caching kind of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaType {
    /// The `Content-Type` value.
    pub content_type: &'static str,
    /// The caching kind.
    pub kind: Kind,
}

/// The fallback for unknown extensions: RFC 9110 §8.3 lets a recipient treat data of unknown
/// type as `application/octet-stream`, and we never sniff.
const UNKNOWN: MediaType = MediaType {
    content_type: "application/octet-stream",
    kind: Kind::Other,
};

/// Returns the media type of `path` from its extension, case-insensitively.
pub fn of(path: &Path) -> MediaType {
    let Some(ext) = path.extension().and_then(|ext| ext.to_str()) else {
        return UNKNOWN;
    };
    let (content_type, kind) = match ext.to_ascii_lowercase().as_str() {
        // RFC 8216 §4: the registered type for HLS playlists.
        "m3u8" => ("application/vnd.apple.mpegurl", Kind::Playlist),
        "mpd" => ("application/dash+xml", Kind::Playlist),
        "ts" => ("video/mp2t", Kind::Media),
        // Fragmented-MP4 segments, including CMAF init segments named `init.m4s`.
        "m4s" => ("video/iso.segment", Kind::Media),
        // VoD files and `init.mp4` init segments alike.
        "mp4" => ("video/mp4", Kind::Media),
        "m4v" => ("video/mp4", Kind::Media),
        "m4a" => ("audio/mp4", Kind::Media),
        // CMAF track files (ISO/IEC 23000-19): fragmented MP4 by another name.
        "cmfv" => ("video/mp4", Kind::Media),
        "cmfa" => ("audio/mp4", Kind::Media),
        "aac" => ("audio/aac", Kind::Media),
        // RFC 8216 §3.5: WebVTT files in HLS are media segments of a subtitle rendition, written
        // once under a new name like any segment (the edge's media policy says the same).
        "vtt" | "webvtt" => ("text/vtt", Kind::Media),
        "jpg" | "jpeg" => ("image/jpeg", Kind::Other),
        "png" => ("image/png", Kind::Other),
        "webp" => ("image/webp", Kind::Other),
        "json" => ("application/json", Kind::Other),
        "html" => ("text/html; charset=utf-8", Kind::Other),
        "css" => ("text/css; charset=utf-8", Kind::Other),
        // RFC 9239 §6: `text/javascript` is the one type to use.
        "js" => ("text/javascript; charset=utf-8", Kind::Other),
        "txt" => ("text/plain; charset=utf-8", Kind::Other),
        _ => return UNKNOWN,
    };
    MediaType { content_type, kind }
}

/// The `Cache-Control` values sent for each kind, built once at startup.
#[derive(Debug, Clone)]
pub struct CachePolicy {
    playlist: HeaderValue,
    media: HeaderValue,
    other: HeaderValue,
    not_found: HeaderValue,
}

impl CachePolicy {
    /// Builds the policy from the three lifetimes, in seconds.
    pub fn new(playlist_max_age: u32, media_max_age: u32, other_max_age: u32) -> Self {
        Self {
            playlist: header(format!("public, max-age={playlist_max_age}")),
            // RFC 8246: `immutable` spares revalidation on reload; a segment's name is never reused.
            media: header(format!("public, max-age={media_max_age}, immutable")),
            other: header(format!("public, max-age={other_max_age}")),
            not_found: header("public, max-age=1".to_string()),
        }
    }

    /// Sets how long a cache may keep a 404: briefly, so the edge answers the viewers that ask
    /// for a segment before the packager writes it (RFC 9111 §4.2.1 negative caching), yet
    /// sees the segment a moment later. 0 sends `no-store`.
    pub fn with_not_found_max_age(mut self, seconds: u32) -> Self {
        self.not_found = if seconds == 0 {
            HeaderValue::from_static("no-store")
        } else {
            header(format!("public, max-age={seconds}"))
        };
        self
    }

    /// Returns the `Cache-Control` value of a 404.
    pub fn not_found(&self) -> HeaderValue {
        self.not_found.clone()
    }

    /// Returns the `Cache-Control` value for `kind`.
    pub fn cache_control(&self, kind: Kind) -> HeaderValue {
        match kind {
            Kind::Playlist => self.playlist.clone(),
            Kind::Media => self.media.clone(),
            Kind::Other => self.other.clone(),
        }
    }
}

/// Wraps a directive we formatted ourselves; runs at startup, never per request.
fn header(value: String) -> HeaderValue {
    HeaderValue::try_from(value).expect("ASCII letters, digits and commas are valid in a header")
}

impl Default for CachePolicy {
    /// One second for playlists (a live playlist changes every segment), a year for media,
    /// five minutes for the rest, one second for a 404.
    fn default() -> Self {
        Self::new(1, 31_536_000, 300)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_case_insensitive() {
        assert_eq!(of(Path::new("a/INDEX.M3U8")).kind, Kind::Playlist);
        assert_eq!(of(Path::new("seg.TS")).content_type, "video/mp2t");
    }

    #[test]
    fn webvtt_subtitle_segments_are_immutable_media_like_the_edge_says() {
        let subtitles = of(Path::new("live/subs_00042.vtt"));
        assert_eq!(subtitles.content_type, "text/vtt");
        assert_eq!(subtitles.kind, Kind::Media);
        assert_eq!(
            CachePolicy::default().cache_control(subtitles.kind),
            "public, max-age=31536000, immutable"
        );
    }

    /// The edge's video policy (proxy/src/cache/policy.rs) gives these the media lifetime when
    /// an origin sends no freshness; the streamer must say the same of them.
    #[test]
    fn every_extension_the_edge_treats_as_media_is_media_here() {
        for ext in [
            "ts", "m4s", "mp4", "m4a", "m4v", "aac", "cmfv", "cmfa", "vtt", "webvtt",
        ] {
            let file = format!("seg.{ext}");
            assert_eq!(of(Path::new(&file)).kind, Kind::Media, "{file}");
        }
    }

    #[test]
    fn unknown_and_missing_extensions_fall_back() {
        assert_eq!(of(Path::new("README")), UNKNOWN);
        assert_eq!(of(Path::new("a.bin")), UNKNOWN);
    }
}
