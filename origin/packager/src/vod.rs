//! VoD packaging: any file GStreamer decodes becomes an HLS title (H.264 main + AAC, poster).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_pbutils as pbutils;

use crate::live::channel::segment_pattern;
use crate::options::Bitrate;
use crate::pipeline::{self, GstError};
use crate::playlist::{MediaPlaylist, PlaylistError, PlaylistKind, Segment};

/// The playlist's file name inside a packaged title.
pub const PLAYLIST: &str = "index.m3u8";
/// The poster's file name inside a packaged title.
pub const POSTER: &str = "poster.jpg";

/// How a title is packaged.
#[derive(Debug, Clone)]
pub struct VodOptions {
    /// Target segment length; segments start on keyframes forced at these boundaries.
    pub segment: Duration,
    /// H.264 bitrate.
    pub video_bitrate: Bitrate,
    /// Whether to keep the first audio track (as AAC) when the input has one.
    pub audio: bool,
    /// Where in the title the poster frame is taken (earlier if the title is shorter).
    pub poster_at: Duration,
    /// Taller inputs are scaled down to this height (aspect kept); None keeps every size.
    pub max_height: Option<u32>,
}

impl Default for VodOptions {
    fn default() -> Self {
        Self {
            segment: Duration::from_secs(4),
            video_bitrate: Bitrate { kbps: 2500 },
            audio: true,
            poster_at: Duration::from_secs(1),
            max_height: Some(1080),
        }
    }
}

/// A packaged title.
#[derive(Debug, Clone)]
pub struct VodPackage {
    /// The title's directory (the `out_dir` given).
    pub dir: PathBuf,
    /// `dir/index.m3u8`.
    pub playlist: PathBuf,
    /// `dir/poster.jpg`.
    pub poster: PathBuf,
    /// The segments, in order.
    pub segments: Vec<PathBuf>,
    /// Playable length in seconds (the sum of the segment durations).
    pub duration: f64,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Whether the title has an audio track.
    pub has_audio: bool,
}

/// Why a file could not be packaged.
#[derive(Debug, thiserror::Error)]
pub enum VodError {
    /// The input is missing or unreadable.
    #[error("{path}: cannot read the input: {error}")]
    Input {
        /// The input file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// GStreamer cannot make sense of the input.
    #[error("{path}: not a video GStreamer can decode: {reason}")]
    NotMedia {
        /// The input file.
        path: PathBuf,
        /// What the discoverer said.
        reason: String,
    },
    /// The input has no video stream.
    #[error("{path}: the file has no video stream (audio-only titles are not supported)")]
    NoVideo {
        /// The input file.
        path: PathBuf,
    },
    /// The destination already exists; titles are never overwritten in place.
    #[error("{path}: already exists; remove it or package into another directory")]
    OutputExists {
        /// The output directory.
        path: PathBuf,
    },
    /// A file or directory of the output could not be written.
    #[error("{path}: {error}")]
    Output {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// Transcoding or the poster grab failed.
    #[error("{path}: packaging failed: {error}")]
    Pipeline {
        /// The input file.
        path: PathBuf,
        /// What GStreamer said.
        error: GstError,
    },
    /// The transcode produced no segment (an empty or zero-length input).
    #[error("{path}: packaging produced no segment: is the video empty?")]
    Empty {
        /// The input file.
        path: PathBuf,
    },
    /// The playlist could not be written.
    #[error(transparent)]
    Playlist(#[from] PlaylistError),
}

impl VodError {
    /// Whether the input itself is at fault (not video, no video stream, empty), as opposed
    /// to the output, GStreamer or the machine.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Self::NotMedia { .. } | Self::NoVideo { .. } | Self::Empty { .. }
        )
    }

    /// What went wrong in words for someone who knows neither the server's paths nor
    /// GStreamer's element names: no file path, no pipeline detail (those go to the log).
    pub fn summary(&self) -> String {
        match self {
            Self::Input { error, .. } => format!("the file cannot be read ({})", error.kind()),
            Self::NotMedia { reason, .. } => {
                // The discoverer's message can name the file's URI: keep its last clause.
                let reason = reason.rsplit(": ").next().unwrap_or_default();
                if reason.contains('/') {
                    "GStreamer cannot decode it".to_owned()
                } else {
                    reason.to_owned()
                }
            }
            Self::NoVideo { .. } => "the file has no video stream".to_owned(),
            Self::Empty { .. } => "the video is empty".to_owned(),
            Self::OutputExists { .. } => {
                "the title's directory exists already on the media volume: remove it or choose another slug".to_owned()
            }
            Self::Output { error, .. } => {
                format!("the packaged files cannot be written ({})", error.kind())
            }
            Self::Pipeline { error, .. } => match error {
                GstError::Timeout(limit) => {
                    format!("decoding did not finish within {} s", limit.as_secs())
                }
                _ => "decoding or encoding failed (details in the server log)".to_owned(),
            },
            Self::Playlist(_) => "the playlist cannot be written".to_owned(),
        }
    }
}

/// Packages `input` into an HLS title at `out_dir` (`index.m3u8`, `segment-N.ts`,
/// `poster.jpg`). Blocks until done. Works in a hidden directory next to `out_dir` and
/// renames it into place on success, so a half-packaged title is never visible.
pub fn package_file(
    input: &Path,
    out_dir: &Path,
    options: &VodOptions,
) -> Result<VodPackage, VodError> {
    // Refused before the input is probed: an existing title is the first thing to report.
    refuse_existing(out_dir)?;
    package(&open_input(input)?, out_dir, options)
}

/// Titles are never overwritten in place.
pub(crate) fn refuse_existing(out_dir: &Path) -> Result<(), VodError> {
    if out_dir.exists() {
        return Err(VodError::OutputExists {
            path: out_dir.to_path_buf(),
        });
    }
    Ok(())
}

/// An input file that opened and that GStreamer decodes as video: what [`package`] starts
/// from. [`open_input`] takes a second or two, so callers that package later (a background
/// job) refuse a bad file at once and do not probe it twice.
#[derive(Debug)]
pub struct Input {
    path: PathBuf,
    probe: Probe,
}

/// Opens `input` and checks that it is decodable video. Blocks.
pub fn open_input(input: &Path) -> Result<Input, VodError> {
    let path = fs::canonicalize(input).map_err(|source| VodError::Input {
        path: input.to_path_buf(),
        error: source,
    })?;
    fs::File::open(&path).map_err(|source| VodError::Input {
        path: path.clone(),
        error: source,
    })?;
    pipeline::init().map_err(|source| VodError::Pipeline {
        path: path.clone(),
        error: source,
    })?;
    let probe = discover(&path)?;
    Ok(Input { path, probe })
}

/// [`package_file`] for an input already opened with [`open_input`].
pub fn package(
    input: &Input,
    out_dir: &Path,
    options: &VodOptions,
) -> Result<VodPackage, VodError> {
    refuse_existing(out_dir)?;
    let Input { path: input, probe } = input;
    let pipeline_error = |source| VodError::Pipeline {
        path: input.clone(),
        error: source,
    };

    let parent = out_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let output = |path: &Path| {
        let path = path.to_path_buf();
        move |error| VodError::Output { path, error }
    };
    fs::create_dir_all(parent).map_err(output(parent))?;
    let name = out_dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "title".into());
    // A dot name: the streamer refuses dotfiles, so the work in progress is never served.
    // Unique per process and call, so concurrent packagings never share a work directory.
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let work = TempDir(parent.join(format!(".{name}.packaging-{}-{call}", std::process::id())));
    let _ = fs::remove_dir_all(&work.0);
    fs::create_dir(&work.0).map_err(output(&work.0))?;

    let with_audio = options.audio && probe.has_audio;
    let (width, height) = output_size(probe.width, probe.height, options.max_height);
    // Transcoding at veryfast runs faster than real time; this limit only catches a hang.
    let limit = Duration::from_secs(600) + probe.duration * 10;
    let mut segments = transcode(input, &work.0, options, with_audio, (width, height), limit)
        .map_err(pipeline_error)?;
    let Some(last) = segments.last_mut() else {
        return Err(VodError::Empty {
            path: input.clone(),
        });
    };
    // splitmuxsink closes the final fragment at its last frame's start: count that frame.
    last.duration += probe.frame.unwrap_or_default();
    let mut playlist = MediaPlaylist::new(PlaylistKind::Vod, options.segment);
    let mut files = Vec::new();
    for segment in segments {
        files.push(out_dir.join(&segment.uri));
        playlist.push(segment, usize::MAX);
    }
    let duration: f64 = playlist
        .segments
        .iter()
        .map(|s| s.duration.as_secs_f64())
        .sum();
    playlist.write_atomic(&work.0.join(PLAYLIST))?;

    // The poster frame: `poster_at` in, or the middle of a title shorter than twice that.
    let at = options
        .poster_at
        .min(Duration::from_secs_f64(duration / 2.0));
    let jpeg = poster(input, at).map_err(pipeline_error)?;
    fs::write(work.0.join(POSTER), jpeg).map_err(output(&work.0.join(POSTER)))?;

    fs::rename(&work.0, out_dir).map_err(output(out_dir))?;
    Ok(VodPackage {
        dir: out_dir.to_path_buf(),
        playlist: out_dir.join(PLAYLIST),
        poster: out_dir.join(POSTER),
        segments: files,
        duration,
        width,
        height,
        has_audio: with_audio,
    })
}

/// The encoded size: at most `max_height` tall with the aspect kept, and even in both
/// dimensions (H.264 4:2:0 needs that; an odd one loses its last row or column).
fn output_size(width: u32, height: u32, max_height: Option<u32>) -> (u32, u32) {
    match max_height {
        Some(max) if height > max && max >= 2 => {
            let scaled = (f64::from(width) * f64::from(max) / f64::from(height)).round() as u32;
            ((scaled & !1).max(2), max & !1)
        }
        _ => (width & !1, height & !1),
    }
}

/// What the discoverer learnt about an input.
#[derive(Debug)]
struct Probe {
    duration: Duration,
    /// One frame's duration, when the input has a fixed frame rate.
    frame: Option<Duration>,
    width: u32,
    height: u32,
    has_audio: bool,
}

/// Checks that the input is decodable video before any output is made.
fn discover(input: &Path) -> Result<Probe, VodError> {
    let not_media = |reason: String| VodError::NotMedia {
        path: input.to_path_buf(),
        reason,
    };
    let uri = gst::glib::filename_to_uri(input, None).map_err(|e| not_media(e.to_string()))?;
    let discoverer = pbutils::Discoverer::new(gst::ClockTime::from_seconds(30))
        .map_err(|e| not_media(e.to_string()))?;
    let info = discoverer
        .discover_uri(&uri)
        .map_err(|e| not_media(e.to_string()))?;
    let video = info.video_streams();
    let Some(first) = video.first() else {
        return Err(VodError::NoVideo {
            path: input.to_path_buf(),
        });
    };
    Ok(Probe {
        duration: info
            .duration()
            .map_or(Duration::ZERO, |d| Duration::from_nanos(d.nseconds())),
        frame: {
            let rate = first.framerate();
            (rate.numer() > 0 && rate.denom() > 0)
                .then(|| Duration::from_secs_f64(f64::from(rate.denom()) / f64::from(rate.numer())))
        },
        width: first.width(),
        height: first.height(),
        has_audio: !info.audio_streams().is_empty(),
    })
}

/// Decodes the input and re-encodes it into keyframe-aligned MPEG-TS segments in `dir`;
/// returns the segments with their exact durations.
fn transcode(
    input: &Path,
    dir: &Path,
    options: &VodOptions,
    with_audio: bool,
    (width, height): (u32, u32),
    limit: Duration,
) -> Result<Vec<Segment>, GstError> {
    let pipeline = gst::Pipeline::new();
    let build = |e: gst::glib::BoolError| GstError::Build(e.to_string());
    let source = pipeline::make("filesrc")?;
    source.set_property("location", input.to_string_lossy().to_string());
    let decode = pipeline::make("decodebin")?;

    let video_queue = pipeline::make("queue")?;
    let convert = pipeline::make("videoconvert")?;
    let scale = pipeline::make("videoscale")?;
    let i420 = pipeline::i420(Some((width, height)))?;
    let [encoder, main, parse] = pipeline::h264_main(options.video_bitrate.kbps)?;
    // Keyframes only where splitmuxsink asks for them (every segment), not on scene cuts.
    encoder.set_property("option-string", "scenecut=0");
    let split = splitmux(dir, options.segment)?;

    let video = [
        &video_queue,
        &convert,
        &scale,
        &i420,
        &encoder,
        &main,
        &parse,
    ];
    pipeline
        .add_many([&source, &decode, &split])
        .and_then(|_| pipeline.add_many(video))
        .map_err(build)?;
    pipeline::link_chain(&[&source, &decode])?;
    pipeline::link_chain(&video)?;
    parse
        .link_pads(None, &split, Some("video"))
        .map_err(|e| GstError::Build(format!("cannot link h264parse to splitmuxsink: {e}")))?;

    let audio_entry = if with_audio {
        let queue = pipeline::make("queue")?;
        let convert = pipeline::make("audioconvert")?;
        let resample = pipeline::make("audioresample")?;
        let aac = pipeline::make("voaacenc")?;
        aac.set_property("bitrate", 128_000i32);
        let aac_parse = pipeline::make("aacparse")?;
        pipeline
            .add_many([&queue, &convert, &resample, &aac, &aac_parse])
            .map_err(build)?;
        pipeline::link_chain(&[&queue, &convert, &resample, &aac, &aac_parse])?;
        aac_parse
            .link_pads(None, &split, Some("audio_%u"))
            .map_err(|e| GstError::Build(format!("cannot link aacparse to splitmuxsink: {e}")))?;
        Some(queue)
    } else {
        None
    };

    // decodebin exposes its streams once it has typed the file: the first video and (if kept)
    // the first audio stream are packaged, any other stream is drained into a fakesink, since
    // an unlinked stream would stop the demuxer.
    let entries = Arc::new(Mutex::new((Some(video_queue), audio_entry)));
    let weak = pipeline.downgrade();
    decode.connect_pad_added(move |_, pad| {
        let Some(pipeline) = weak.upgrade() else {
            return;
        };
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let kind = caps
            .structure(0)
            .map(|s| s.name().to_string())
            .unwrap_or_default();
        let mut entries = entries.lock().unwrap_or_else(|e| e.into_inner());
        let target = if kind.starts_with("video/") {
            entries.0.take()
        } else if kind.starts_with("audio/") {
            entries.1.take()
        } else {
            None
        };
        let target = target.or_else(|| {
            let sink = gst::ElementFactory::make("fakesink").build().ok()?;
            sink.set_property("sync", false);
            pipeline.add(&sink).ok()?;
            sink.sync_state_with_parent().ok()?;
            Some(sink)
        });
        if let Some(sink_pad) = target.and_then(|t| t.static_pad("sink")) {
            if let Err(err) = pad.link(&sink_pad) {
                tracing::warn!(%err, caps = %caps, "cannot link a decoded stream");
            }
        }
    });

    let mut opened: Option<gst::ClockTime> = None;
    let mut segments = Vec::new();
    let mut sequence = 0u64;
    pipeline::run_to_eos(&pipeline, limit, |structure, _| {
        let running_time = structure.get::<gst::ClockTime>("running-time").ok();
        match structure.name().as_str() {
            "splitmuxsink-fragment-opened" => opened = running_time,
            "splitmuxsink-fragment-closed" => {
                let (Some(start), Some(end)) = (opened.take(), running_time) else {
                    return;
                };
                let location = structure.get::<String>("location").unwrap_or_default();
                let uri = Path::new(&location)
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                segments.push(Segment {
                    sequence,
                    uri,
                    duration: Duration::from_nanos(end.saturating_sub(start).nseconds()),
                    program_date_time: None,
                    discontinuity: false,
                    map: None,
                });
                sequence += 1;
            }
            _ => {}
        }
    })?;
    Ok(segments)
}

/// A splitmuxsink writing `dir/segment-N.ts`, cutting at a keyframe it requests every `segment`.
pub(crate) fn splitmux(dir: &Path, segment: Duration) -> Result<gst::Element, GstError> {
    let split = pipeline::make("splitmuxsink")?;
    let mux = pipeline::make("mpegtsmux")?;
    split.set_property("muxer", &mux);
    split.set_property("max-size-time", segment.as_nanos() as u64);
    split.set_property("send-keyframe-requests", true);
    split.set_property("location", segment_pattern(dir));
    Ok(split)
}

/// Grabs one frame `at` into the title as a JPEG, through playbin's `convert-sample`.
fn poster(input: &Path, at: Duration) -> Result<Vec<u8>, GstError> {
    let playbin = pipeline::make("playbin")?;
    let uri =
        gst::glib::filename_to_uri(input, None).map_err(|e| GstError::Build(e.to_string()))?;
    playbin.set_property("uri", uri.as_str());
    // No audio output and no window: the frame is read from the video sink's last sample.
    playbin.set_property("video-sink", pipeline::make("fakesink")?);
    playbin.set_property("audio-sink", pipeline::make("fakesink")?);
    let pipeline = playbin
        .clone()
        .downcast::<gst::Pipeline>()
        .map_err(|_| GstError::Build("playbin is not a pipeline".into()))?;
    let result = (|| {
        pipeline::set_state(&pipeline, gst::State::Paused)?;
        wait_async_done(&pipeline)?;
        pipeline
            .seek_simple(
                gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
                gst::ClockTime::from_nseconds(at.as_nanos() as u64),
            )
            .map_err(|e| GstError::Build(format!("cannot seek to {at:?}: {e}")))?;
        wait_async_done(&pipeline)?;
        let caps = gst::Caps::builder("image/jpeg").build();
        let sample = playbin
            .emit_by_name::<Option<gst::Sample>>("convert-sample", &[&caps])
            .ok_or_else(|| GstError::Build("no frame to make a poster from".into()))?;
        let buffer = sample
            .buffer()
            .ok_or_else(|| GstError::Build("the poster sample has no buffer".into()))?;
        let map = buffer
            .map_readable()
            .map_err(|e| GstError::Build(e.to_string()))?;
        Ok(map.as_slice().to_vec())
    })();
    let _ = pipeline.set_state(gst::State::Null);
    result
}

/// Waits for a paused pipeline to preroll (after a state change or a flushing seek).
fn wait_async_done(pipeline: &gst::Pipeline) -> Result<(), GstError> {
    let bus = pipeline
        .bus()
        .ok_or_else(|| GstError::Build("no bus".into()))?;
    let timeout = Duration::from_secs(30);
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(timeout.as_secs()),
        &[gst::MessageType::AsyncDone, gst::MessageType::Error],
    );
    match msg.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Error(err)) => Err(pipeline::bus_error(err)),
        Some(_) => Ok(()),
        None => Err(GstError::Timeout(timeout)),
    }
}

/// A working directory removed on drop unless it was renamed into place.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_sizes_are_even_and_no_taller_than_asked() {
        assert_eq!(output_size(1920, 1080, Some(1080)), (1920, 1080));
        assert_eq!(output_size(3840, 2160, Some(1080)), (1920, 1080));
        assert_eq!(output_size(321, 181, Some(1080)), (320, 180));
        assert_eq!(
            output_size(1080, 1920, Some(720)),
            (404, 720),
            "portrait keeps its aspect"
        );
        assert_eq!(output_size(3840, 2160, None), (3840, 2160));
    }
}
