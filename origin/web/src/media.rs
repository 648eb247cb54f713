//! Stream and poster locations: catalog entries store paths relative to the media base (the
//! URL prefix the edge routes to the streamers) or absolute http(s) URLs.

use std::fmt;

/// The URL prefix under which relative stream and poster paths are served, e.g. `/stream/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaBase(String);

/// Why a `--media-base` was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid --media-base `{0}`: use a path prefix such as /stream/ or an http(s):// URL")]
pub struct InvalidMediaBase(String);

impl MediaBase {
    /// Checks and normalises a media base: a path starting with `/` or an http(s) URL; a
    /// trailing `/` is added so that joining never glues two path segments together.
    pub fn new(base: &str) -> Result<Self, InvalidMediaBase> {
        let ok = (base.starts_with('/') || is_absolute_url(base))
            && !base
                .chars()
                .any(|c| c.is_whitespace() || c == '?' || c == '#');
        if !ok {
            return Err(InvalidMediaBase(base.to_owned()));
        }
        let mut base = base.to_owned();
        if !base.ends_with('/') {
            base.push('/');
        }
        Ok(Self(base))
    }

    /// The URL a browser loads for a stored location: absolute URLs as they are, relative
    /// paths under the base.
    pub fn resolve(&self, location: &str) -> String {
        if is_absolute_url(location) {
            location.to_owned()
        } else {
            format!("{}{}", self.0, location)
        }
    }
}

impl fmt::Display for MediaBase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Default for MediaBase {
    fn default() -> Self {
        Self("/stream/".to_owned())
    }
}

/// Whether `location` is an absolute http or https URL.
pub fn is_absolute_url(location: &str) -> bool {
    location.starts_with("http://") || location.starts_with("https://")
}

/// A running time for people: `42s`, `3:05`, `1:02:03`.
pub fn format_duration(ms: i64) -> String {
    let total = ms.max(0) / 1000;
    let (hours, minutes, seconds) = (total / 3600, total / 60 % 60, total % 60);
    if hours > 0 {
        format!("{hours}:{minutes:02}:{seconds:02}")
    } else if minutes > 0 {
        format!("{minutes}:{seconds:02}")
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_locations_go_under_the_base_and_absolute_ones_stay() {
        let base = MediaBase::new("/stream").unwrap();
        assert_eq!(base.to_string(), "/stream/");
        assert_eq!(
            base.resolve("vod/sample/index.m3u8"),
            "/stream/vod/sample/index.m3u8"
        );
        assert_eq!(
            base.resolve("https://cdn.example/live.m3u8"),
            "https://cdn.example/live.m3u8"
        );
    }

    #[test]
    fn a_base_must_be_a_path_or_a_url() {
        assert!(MediaBase::new("stream/").is_err());
        assert!(MediaBase::new("/stream/?x=1").is_err());
        assert!(MediaBase::new("https://media.example/").is_ok());
    }

    #[test]
    fn durations_read_like_a_player_shows_them() {
        assert_eq!(format_duration(42_000), "42s");
        assert_eq!(format_duration(185_000), "3:05");
        assert_eq!(format_duration(3_723_000), "1:02:03");
    }
}
