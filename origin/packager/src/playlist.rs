//! HLS media playlists (RFC 8216): the model, its text form, a parser for restarts, atomic writes.

use std::collections::VecDeque;
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

/// One partial segment of a low-latency playlist (RFC 8216bis §4.4.4.9): a piece of the
/// segment being written, which a player may fetch before the whole segment exists.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// Its URI relative to the playlist.
    pub uri: String,
    /// Its exact duration.
    pub duration: Duration,
    /// Whether it starts with a key frame (`INDEPENDENT=YES`).
    pub independent: bool,
}

/// What a low-latency live playlist adds to a classic one: the parts of its last segments and
/// of the segment in progress, and a hint naming the part that comes next.
#[derive(Debug, Clone, PartialEq)]
pub struct LowLatency {
    /// `EXT-X-PART-INF:PART-TARGET`: no part lasts longer; it never changes during a stream.
    pub part_target: Duration,
    /// The parts of the last segments, by their sequence number, oldest first: those that
    /// started less than three target durations before the playlist's end (§6.2.2).
    pub listed: VecDeque<(u64, Vec<Part>)>,
    /// The parts written so far of the segment in progress.
    pub in_progress: Vec<Part>,
    /// The URI of the part being written now (`EXT-X-PRELOAD-HINT`).
    pub next_part: Option<String>,
}

impl LowLatency {
    /// No part yet, with parts of at most `part_target`.
    pub fn new(part_target: Duration) -> Self {
        Self {
            part_target,
            listed: VecDeque::new(),
            in_progress: Vec::new(),
            next_part: None,
        }
    }

    /// `EXT-X-SERVER-CONTROL`'s `PART-HOLD-BACK`: how far behind the live edge a player
    /// starts, three part targets as Apple advises (the specification asks at least two).
    pub fn part_hold_back(&self) -> Duration {
        self.part_target * 3
    }
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
    /// Parts and blocking reload for low-latency players; `None` for a classic playlist.
    pub low_latency: Option<LowLatency>,
}

impl MediaPlaylist {
    /// An empty playlist of the given kind whose segments last about `segment` each.
    pub fn new(kind: PlaylistKind, segment: Duration) -> Self {
        Self {
            kind,
            min_target_duration: ceil_seconds(segment).max(1),
            discontinuity_sequence: 0,
            segments: Vec::new(),
            low_latency: None,
        }
    }

    /// A low-latency live playlist (LL-HLS) whose segments last about `segment` and their
    /// parts at most `part_target` each.
    pub fn low_latency(segment: Duration, part_target: Duration) -> Self {
        Self {
            low_latency: Some(LowLatency::new(part_target)),
            ..Self::new(PlaylistKind::Live, segment)
        }
    }

    /// Adds a part of the segment in progress, and names the one written next (the preload
    /// hint). Does nothing to a classic playlist.
    pub fn push_part(&mut self, part: Part, next: String) {
        if let Some(ll) = &mut self.low_latency {
            ll.in_progress.push(part);
            ll.next_part = Some(next);
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
        let sequence = segment.sequence;
        self.segments.push(segment);
        let excess = self.segments.len().saturating_sub(window.max(1));
        let dropped: Vec<Segment> = self.segments.drain(..excess).collect();
        // §6.2.2: the discontinuity sequence counts the discontinuities that left the window.
        self.discontinuity_sequence += dropped.iter().filter(|s| s.discontinuity).count() as u64;
        if self.low_latency.is_some() {
            self.list_parts(sequence);
        }
        dropped
    }

    /// The segment in progress is done as `sequence`: its parts join the listed ones, and the
    /// parts of segments that started three target durations or more before the end go
    /// (RFC 8216bis §6.2.2: a server should remove them then).
    fn list_parts(&mut self, sequence: u64) {
        let horizon = Duration::from_secs(3 * self.target_duration());
        // The sequence of the oldest segment that started within the horizon.
        let mut from = sequence;
        let mut span = Duration::ZERO;
        for s in self.segments.iter().rev() {
            span += s.duration;
            if span > horizon {
                break;
            }
            from = s.sequence;
        }
        let Some(ll) = &mut self.low_latency else {
            return;
        };
        let parts = std::mem::take(&mut ll.in_progress);
        if !parts.is_empty() {
            ll.listed.push_back((sequence, parts));
        }
        ll.listed.retain(|(s, _)| *s >= from);
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
        if let Some(ll) = &self.low_latency {
            let _ = writeln!(
                out,
                "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.5}",
                ll.part_hold_back().as_secs_f64()
            );
            let _ = writeln!(
                out,
                "#EXT-X-PART-INF:PART-TARGET={:.5}",
                ll.part_target.as_secs_f64()
            );
        }
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
            if let Some(ll) = &self.low_latency {
                if let Some((_, parts)) = ll.listed.iter().find(|(s, _)| *s == segment.sequence) {
                    render_parts(&mut out, parts);
                }
            }
            let _ = writeln!(
                out,
                "#EXTINF:{:.3},\n{}",
                segment.duration.as_secs_f64(),
                segment.uri
            );
        }
        if let Some(ll) = &self.low_latency {
            render_parts(&mut out, &ll.in_progress);
            if let Some(next) = &ll.next_part {
                let _ = writeln!(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{next}\"");
            }
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
            // Parts are not resumed: a restart begins a new segment after a discontinuity.
            low_latency: None,
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

/// `EXT-X-PART` lines for `parts`, their durations to the 10 µs.
fn render_parts(out: &mut String, parts: &[Part]) {
    for p in parts {
        let _ = write!(
            out,
            "#EXT-X-PART:DURATION={:.5},URI=\"{}\"",
            p.duration.as_secs_f64(),
            p.uri
        );
        out.push_str(if p.independent {
            ",INDEPENDENT=YES\n"
        } else {
            "\n"
        });
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
    /// Writes the six parts of segment `sequence` (2 s, 30 frames a second: ten frames each,
    /// the first one a key frame) and then the segment, as the live packager does.
    fn write_low_latency_segment(p: &mut MediaPlaylist, sequence: u64, window: usize) {
        for i in 0..6 {
            let part = Part {
                uri: format!("segment-{sequence}.{i}.m4s"),
                duration: Duration::from_nanos(if i < 5 { 333_333_333 } else { 333_333_335 }),
                independent: i == 0,
            };
            let next = if i < 5 {
                format!("segment-{sequence}.{}.m4s", i + 1)
            } else {
                format!("segment-{}.0.m4s", sequence + 1)
            };
            p.push_part(part, next);
        }
        let mut s = segment(sequence, 2000, false);
        s.uri = format!("segment-{sequence}.m4s");
        s.map = Some("init-0.mp4".into());
        p.push(s, window);
    }

    #[test]
    fn a_low_latency_playlist_follows_the_ll_hls_rules() {
        let mut p = MediaPlaylist::low_latency(Duration::from_secs(2), Duration::from_millis(334));
        for sequence in 0..10 {
            write_low_latency_segment(&mut p, sequence, 6);
        }
        for i in 0..2 {
            let part = Part {
                uri: format!("segment-10.{i}.m4s"),
                duration: Duration::from_nanos(333_333_333),
                independent: i == 0,
            };
            p.push_part(part, format!("segment-10.{}.m4s", i + 1));
        }
        let text = p.render();
        assert_eq!(crate::ll_rules::check(&text), vec![], "{text}");
        // Parts of the segments that started in the last three target durations (6 s) only.
        let listed: Vec<u64> = p
            .low_latency
            .as_ref()
            .unwrap()
            .listed
            .iter()
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(listed, vec![7, 8, 9]);
        assert!(!text.contains("segment-6.0.m4s"), "{text}");
        assert!(
            text.contains("#EXT-X-PART:DURATION=0.33333,URI=\"segment-7.0.m4s\",INDEPENDENT=YES\n"),
            "{text}"
        );
        assert!(text.ends_with(
            "#EXT-X-PART:DURATION=0.33333,URI=\"segment-10.1.m4s\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"segment-10.2.m4s\"\n"
        ), "{text}");
        assert!(text.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.00200\n#EXT-X-PART-INF:PART-TARGET=0.33400\n"), "{text}");
    }

    #[test]
    fn a_low_latency_playlist_resumes_as_its_segments() {
        let mut p = MediaPlaylist::low_latency(Duration::from_secs(2), Duration::from_millis(334));
        for sequence in 0..4 {
            write_low_latency_segment(&mut p, sequence, 6);
        }
        let parsed = MediaPlaylist::parse(Path::new("live.m3u8"), &p.render()).unwrap();
        assert_eq!(parsed.segments, p.segments);
        assert_eq!(parsed.low_latency, None);
    }

    #[test]
    fn a_classic_playlist_takes_no_parts() {
        let mut p = MediaPlaylist::new(PlaylistKind::Live, Duration::from_secs(2));
        write_low_latency_segment(&mut p, 0, 6);
        let text = p.render();
        assert!(
            !text.contains("EXT-X-PART") && !text.contains("SERVER-CONTROL"),
            "{text}"
        );
        assert!(!text.contains("PRELOAD-HINT"), "{text}");
    }
}
