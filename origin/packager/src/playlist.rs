//! HLS media playlists (RFC 8216): the model, its text form, a parser for restarts, atomic writes.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A problem reading or writing a playlist file.
#[derive(Debug, thiserror::Error)]
pub enum PlaylistError {
    /// The file could not be read, written or renamed.
    #[error("{path}: {error}")]
    Io {
        /// The playlist (or its temporary file).
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A line of an existing playlist does not parse.
    #[error("{path}:{line}: {message}")]
    Syntax {
        /// The playlist.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
}

/// One media segment as listed in a playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Its media sequence number.
    pub sequence: u64,
    /// Its URI relative to the playlist (a file name in the same directory).
    pub uri: String,
    /// Its exact duration (EXTINF).
    pub duration: Duration,
    /// The wall-clock time of its first frame (EXT-X-PROGRAM-DATE-TIME), when known.
    pub program_date_time: Option<SystemTime>,
    /// Whether it follows a discontinuity (a restart, a new encoder).
    pub discontinuity: bool,
    /// Its media initialization section (EXT-X-MAP URI) for fMP4 segments; None for MPEG-TS.
    pub map: Option<String>,
}

/// Whether a playlist is a sliding live window or a finished video on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaylistKind {
    /// A live window: no playlist type, no end list; the server keeps adding segments.
    Live,
    /// A complete title: `#EXT-X-PLAYLIST-TYPE:VOD` and `#EXT-X-ENDLIST`.
    Vod,
}

/// An HLS media playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlaylist {
    /// Live window or VoD.
    pub kind: PlaylistKind,
    /// The smallest target duration the writer promises (seconds); grown if a segment needs it.
    pub min_target_duration: u64,
    /// The discontinuity sequence number of the first listed segment.
    pub discontinuity_sequence: u64,
    /// The listed segments, in order; the first one's sequence is the media sequence.
    pub segments: Vec<Segment>,
}

impl MediaPlaylist {
    /// An empty playlist of the given kind whose segments last about `segment` each.
    pub fn new(kind: PlaylistKind, segment: Duration) -> Self {
        Self {
            kind,
            min_target_duration: ceil_seconds(segment).max(1),
            discontinuity_sequence: 0,
            segments: Vec::new(),
        }
    }

    /// The media sequence number of the first listed segment (the next one when empty).
    pub fn media_sequence(&self) -> u64 {
        self.segments.first().map_or(0, |s| s.sequence)
    }

    /// EXT-X-TARGETDURATION: RFC 8216 §4.3.3.1 requires every EXTINF, rounded to the nearest
    /// integer, to be at most this; rounding (not ceiling) keeps a 1.004 s segment from
    /// doubling the players' reload interval.
    pub fn target_duration(&self) -> u64 {
        let longest = self
            .segments
            .iter()
            .map(|s| (s.duration.as_secs_f64()).round() as u64)
            .max()
            .unwrap_or(0);
        longest.max(self.min_target_duration)
    }

    /// Appends a segment and, for a live window, drops the oldest ones beyond `window`;
    /// returns the dropped segments.
    pub fn push(&mut self, segment: Segment, window: usize) -> Vec<Segment> {
        self.segments.push(segment);
        let excess = self.segments.len().saturating_sub(window.max(1));
        let dropped: Vec<Segment> = self.segments.drain(..excess).collect();
        // §6.2.2: the discontinuity sequence counts the discontinuities that left the window.
        self.discontinuity_sequence += dropped.iter().filter(|s| s.discontinuity).count() as u64;
        dropped
    }

    /// The playlist's text.
    pub fn render(&self) -> String {
        // EXT-X-MAP in a media playlist without I-frames-only needs version 6; 7 is what
        // fMP4 packagers announce and players expect. MPEG-TS with decimal EXTINF needs 3.
        let version = if self.segments.iter().any(|s| s.map.is_some()) {
            7
        } else {
            3
        };
        let mut out = format!("#EXTM3U\n#EXT-X-VERSION:{version}\n");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", self.target_duration());
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", self.media_sequence());
        if self.discontinuity_sequence > 0 {
            let _ = writeln!(
                out,
                "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
                self.discontinuity_sequence
            );
        }
        if self.kind == PlaylistKind::Vod {
            out.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n");
        }
        // Every segment starts with an IDR frame (forced keyframes at each split).
        out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
        let mut map: Option<&str> = None;
        for segment in &self.segments {
            if segment.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if segment.map.is_some() && segment.map.as_deref() != map {
                map = segment.map.as_deref();
                let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", map.unwrap_or_default());
            }
            if let Some(time) = segment.program_date_time {
                let _ = writeln!(
                    out,
                    "#EXT-X-PROGRAM-DATE-TIME:{}",
                    humantime::format_rfc3339_millis(time)
                );
            }
            let _ = writeln!(
                out,
                "#EXTINF:{:.3},\n{}",
                segment.duration.as_secs_f64(),
                segment.uri
            );
        }
        if self.kind == PlaylistKind::Vod {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
    }

    /// Writes the playlist to `path` through a hidden temporary file and a rename, so a
    /// reader (and the streamer, which refuses dotfiles) never sees a half-written one.
    pub fn write_atomic(&self, path: &Path) -> Result<(), PlaylistError> {
        write_atomic(path, self.render().as_bytes())
    }

    /// Parses a playlist this module wrote (or any simple media playlist), for a restart.
    pub fn parse(path: &Path, text: &str) -> Result<Self, PlaylistError> {
        let syntax = |line: usize, message: String| PlaylistError::Syntax {
            path: path.to_path_buf(),
            line,
            message,
        };
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
        match lines.next() {
            Some((_, "#EXTM3U")) => {}
            _ => {
                return Err(syntax(
                    1,
                    "not an HLS playlist: the first line is not #EXTM3U".into(),
                ))
            }
        }
        let mut playlist = MediaPlaylist {
            kind: PlaylistKind::Live,
            min_target_duration: 1,
            discontinuity_sequence: 0,
            segments: Vec::new(),
        };
        // None once the sequence has passed u64::MAX: a segment then has no number.
        let mut next_sequence = Some(0u64);
        let mut duration: Option<Duration> = None;
        let mut program_date_time = None;
        let mut discontinuity = false;
        let mut map: Option<String> = None;
        for (number, line) in lines {
            if line.is_empty() {
                continue;
            }
            if let Some(value) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
                playlist.min_target_duration = parse_number(value)
                    .ok_or_else(|| syntax(number, format!("bad target duration {value:?}")))?;
            } else if let Some(value) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
                // RFC 8216 §4.3.3.2: it MUST appear before the first segment; after one, it
                // would number two segments alike.
                if !playlist.segments.is_empty() {
                    return Err(syntax(
                        number,
                        "#EXT-X-MEDIA-SEQUENCE after the first segment".into(),
                    ));
                }
                next_sequence = Some(
                    parse_number(value)
                        .ok_or_else(|| syntax(number, format!("bad media sequence {value:?}")))?,
                );
            } else if let Some(value) = line.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:") {
                playlist.discontinuity_sequence = parse_number(value).ok_or_else(|| {
                    syntax(number, format!("bad discontinuity sequence {value:?}"))
                })?;
            } else if line == "#EXT-X-PLAYLIST-TYPE:VOD" {
                playlist.kind = PlaylistKind::Vod;
            } else if let Some(value) = line.strip_prefix("#EXT-X-MAP:") {
                let uri = value
                    .strip_prefix("URI=\"")
                    .and_then(|v| v.split('"').next())
                    .ok_or_else(|| syntax(number, format!("bad EXT-X-MAP {value:?}")))?;
                map = Some(uri.to_string());
            } else if line == "#EXT-X-DISCONTINUITY" {
                discontinuity = true;
            } else if let Some(value) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
                let time = humantime::parse_rfc3339_weak(value.trim_end_matches('Z'))
                    .or_else(|_| humantime::parse_rfc3339(value))
                    .map_err(|e| syntax(number, format!("bad program date time {value:?}: {e}")))?;
                program_date_time = Some(time);
            } else if let Some(value) = line.strip_prefix("#EXTINF:") {
                let seconds = value.split(',').next().unwrap_or_default();
                // try_from: a duration past Duration's range (1e30) is an error, not a panic.
                let parsed = seconds
                    .parse::<f64>()
                    .ok()
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .ok_or_else(|| syntax(number, format!("bad EXTINF duration {seconds:?}")))?;
                duration = Some(parsed);
            } else if line.starts_with('#') {
                // Other tags (version, independent segments, end list) carry nothing to resume.
            } else {
                let duration = duration
                    .take()
                    .ok_or_else(|| syntax(number, format!("segment {line:?} has no #EXTINF")))?;
                let sequence = next_sequence
                    .ok_or_else(|| syntax(number, "media sequence number past 2^64-1".into()))?;
                playlist.segments.push(Segment {
                    sequence,
                    uri: line.to_string(),
                    duration,
                    program_date_time: program_date_time.take(),
                    discontinuity: std::mem::take(&mut discontinuity),
                    map: map.clone(),
                });
                next_sequence = sequence.checked_add(1);
            }
        }
        Ok(playlist)
    }
}

/// Writes `bytes` to `path` through a hidden temporary file in the same directory and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PlaylistError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| PlaylistError::Io { path, error }
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let temp = path.with_file_name(format!(".{name}.tmp"));
    let mut file = fs::File::create(&temp).map_err(io(&temp))?;
    file.write_all(bytes).map_err(io(&temp))?;
    file.sync_data().map_err(io(&temp))?;
    fs::rename(&temp, path).map_err(io(path))
}

/// Seconds rounded up, for a configured segment length.
fn ceil_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

fn parse_number(value: &str) -> Option<u64> {
    value.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(sequence: u64, millis: u64, discontinuity: bool) -> Segment {
        Segment {
            sequence,
            uri: format!("segment-{sequence}.ts"),
            duration: Duration::from_millis(millis),
            program_date_time: Some(
                SystemTime::UNIX_EPOCH + Duration::from_millis(1_790_000_000_000 + sequence * 1000),
            ),
            discontinuity,
            map: None,
        }
    }

    #[test]
    fn a_live_window_slides_and_counts_discontinuities_that_leave_it() {
        let mut playlist = MediaPlaylist::new(PlaylistKind::Live, Duration::from_secs(1));
        playlist.push(segment(4, 1000, false), 3);
        playlist.push(segment(5, 1000, true), 3);
        playlist.push(segment(6, 1000, false), 3);
        assert_eq!(
            playlist.push(segment(7, 1000, false), 3),
            vec![segment(4, 1000, false)]
        );
        assert_eq!(playlist.discontinuity_sequence, 0);
        playlist.push(segment(8, 1000, false), 3);
        assert_eq!(playlist.media_sequence(), 6);
        assert_eq!(
            playlist.discontinuity_sequence, 1,
            "the discontinuity at 5 left the window"
        );
    }

    #[test]
    fn live_text_has_exact_durations_dates_and_no_end() {
        let mut playlist = MediaPlaylist::new(PlaylistKind::Live, Duration::from_secs(1));
        playlist.push(segment(10, 1000, false), 6);
        playlist.push(segment(11, 933, true), 6);
        let text = playlist.render();
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:10\n\
             #EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-09-21T14:13:30.000Z\n#EXTINF:1.000,\nsegment-10.ts\n\
             #EXT-X-DISCONTINUITY\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-09-21T14:13:31.000Z\n#EXTINF:0.933,\nsegment-11.ts\n"
        );
    }

    #[test]
    fn target_duration_grows_only_when_a_rounded_segment_needs_it() {
        let mut playlist = MediaPlaylist::new(PlaylistKind::Vod, Duration::from_secs(4));
        playlist.push(segment(0, 4_400, false), usize::MAX);
        assert_eq!(playlist.target_duration(), 4);
        playlist.push(segment(1, 4_600, false), usize::MAX);
        assert_eq!(playlist.target_duration(), 5);
        let text = playlist.render();
        assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"));
        assert!(text.ends_with("#EXT-X-ENDLIST\n"));
    }

    #[test]
    fn what_is_written_parses_back_the_same() {
        let mut playlist = MediaPlaylist::new(PlaylistKind::Live, Duration::from_secs(2));
        playlist.discontinuity_sequence = 3;
        for sequence in 20..24 {
            playlist.push(segment(sequence, 2000 - sequence, sequence == 22), 6);
        }
        let parsed = MediaPlaylist::parse(Path::new("index.m3u8"), &playlist.render()).unwrap();
        assert_eq!(parsed, playlist);
    }

    #[test]
    fn fmp4_segments_carry_their_map_and_version_7() {
        let mut playlist = MediaPlaylist::new(PlaylistKind::Live, Duration::from_secs(1));
        for sequence in 3..6 {
            let mut s = segment(sequence, 1000, sequence == 5);
            s.uri = format!("segment-{sequence}.m4s");
            s.map = Some(
                if sequence < 5 {
                    "init-0.mp4"
                } else {
                    "init-5.mp4"
                }
                .into(),
            );
            playlist.push(s, 6);
        }
        let text = playlist.render();
        assert!(text.starts_with("#EXTM3U\n#EXT-X-VERSION:7\n"), "{text}");
        assert_eq!(text.matches("#EXT-X-MAP:").count(), 2, "{text}");
        assert!(
            text.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-5.mp4\"\n"),
            "{text}"
        );
        let parsed = MediaPlaylist::parse(Path::new("index.m3u8"), &text).unwrap();
        assert_eq!(parsed, playlist);
    }

    #[test]
    fn a_broken_playlist_names_the_file_and_line() {
        let text = "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:5\n#EXTINF:abc,\nsegment-5.ts\n";
        let err = MediaPlaylist::parse(Path::new("/m/live/index.m3u8"), text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/m/live/index.m3u8:3: bad EXTINF duration \"abc\""
        );
        let err = MediaPlaylist::parse(Path::new("x.m3u8"), "hello\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.m3u8:1: not an HLS playlist: the first line is not #EXTM3U"
        );
    }

    #[test]
    fn playlists_that_cannot_be_resumed_are_errors_not_panics() {
        // Found by make fuzz (playlist): a duration past Duration's range panicked; a media
        // sequence after a segment, or one past u64::MAX, numbered two segments alike.
        for (text, line, message) in [
            ("#EXTM3U\n#EXTINF:1e30,\na.ts\n", 2, "bad EXTINF duration \"1e30\""),
            ("#EXTM3U\n#EXTINF:-1,\na.ts\n", 2, "bad EXTINF duration \"-1\""),
            (
                "#EXTM3U\n#EXTINF:1,\na.ts\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:1,\nb.ts\n",
                4,
                "#EXT-X-MEDIA-SEQUENCE after the first segment",
            ),
            (
                "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:18446744073709551615\n#EXTINF:1,\na.ts\n#EXTINF:1,\nb.ts\n",
                6,
                "media sequence number past 2^64-1",
            ),
        ] {
            let err = MediaPlaylist::parse(Path::new("p.m3u8"), text).unwrap_err();
            assert_eq!(err.to_string(), format!("p.m3u8:{line}: {message}"), "{text}");
        }
        let last = "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:18446744073709551615\n#EXTINF:1,\na.ts\n";
        let playlist = MediaPlaylist::parse(Path::new("p.m3u8"), last).unwrap();
        assert_eq!(playlist.media_sequence(), u64::MAX);
    }

    #[test]
    fn atomic_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.m3u8");
        let playlist = MediaPlaylist::new(PlaylistKind::Live, Duration::from_secs(1));
        playlist.write_atomic(&path).unwrap();
        playlist.write_atomic(&path).unwrap();
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["index.m3u8"]);
        assert_eq!(fs::read_to_string(&path).unwrap(), playlist.render());
    }
}
