//! Sample media: an MP4 of a test pattern with a running clock and a tone, for demos and tests.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::options::Size;
use crate::pipeline::{self, caps_filter, GstError};

/// What the sample looks like.
#[derive(Debug, Clone)]
pub struct SampleOptions {
    /// Its length.
    pub duration: Duration,
    /// Its frame size.
    pub size: Size,
    /// Its frame rate.
    pub fps: u32,
    /// Whether it has a 440 Hz stereo AAC track.
    pub audio: bool,
}

impl Default for SampleOptions {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(20),
            size: Size {
                width: 640,
                height: 360,
            },
            fps: 25,
            audio: true,
        }
    }
}

/// Why a sample could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// The output file (or its directory) cannot be written.
    #[error("{path}: {error}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The encoding pipeline failed.
    #[error("cannot make the sample {path}: {error}")]
    Pipeline {
        /// The file being written.
        path: PathBuf,
        /// What GStreamer said.
        error: GstError,
    },
}

/// Writes an H.264 (+ AAC) MP4 test pattern to `out`, atomically (temporary file, then rename).
pub fn write_sample(out: &Path, options: &SampleOptions) -> Result<(), SampleError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| SampleError::Io { path, error }
    };
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let temp = out.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let failed = |source| SampleError::Pipeline {
        path: out.to_path_buf(),
        error: source,
    };
    let result = build(&temp, options).and_then(|pipeline| {
        // A minute of slack per ten seconds of media: x264 at veryfast is far quicker than that.
        let timeout = Duration::from_secs(60) + options.duration * 6;
        pipeline::run_to_eos(&pipeline, timeout, |_, _| {})
    });
    if let Err(err) = result {
        let _ = fs::remove_file(&temp);
        return Err(failed(err));
    }
    fs::rename(&temp, out).map_err(io(out))
}

/// The encoding pipeline: test pattern + time overlay → x264 main, tone → AAC, into mp4mux.
fn build(location: &Path, options: &SampleOptions) -> Result<gst::Pipeline, GstError> {
    pipeline::init()?;
    let pipeline = gst::Pipeline::new();
    let frames = (options.duration.as_secs_f64() * f64::from(options.fps)).round() as i32;
    let source = pipeline::make("videotestsrc")?;
    source.set_property("num-buffers", frames.max(1));
    source.set_property_from_str("pattern", "smpte");
    let raw = caps_filter(
        gst::Caps::builder("video/x-raw")
            .field("width", options.size.width as i32)
            .field("height", options.size.height as i32)
            .field("framerate", gst::Fraction::new(options.fps as i32, 1))
            .build(),
    )?;
    let overlay = pipeline::make("timeoverlay")?;
    overlay.set_property_from_str("halignment", "center");
    overlay.set_property_from_str("valignment", "center");
    overlay.set_property("font-desc", "Sans 32");
    let convert = pipeline::make("videoconvert")?;
    let i420 = pipeline::i420(None)?;
    let [encoder, main, parse] = pipeline::h264_main(1200)?;
    encoder.set_property("key-int-max", options.fps * 2);
    let mux = pipeline::make("mp4mux")?;
    // The index up front lets a browser start playing a progressive download at once.
    mux.set_property("faststart", true);
    let sink = pipeline::make("filesink")?;
    sink.set_property("location", location.to_string_lossy().to_string());
    let video = [
        &source, &raw, &overlay, &convert, &i420, &encoder, &main, &parse,
    ];
    pipeline
        .add_many(video)
        .and_then(|_| pipeline.add_many([&mux, &sink]))
        .map_err(|e| GstError::Build(e.to_string()))?;
    pipeline::link_chain(&video)?;
    pipeline::link_chain(&[&parse, &mux, &sink])?;
    if options.audio {
        let tone = pipeline::make("audiotestsrc")?;
        // 10 ms buffers, so the tone ends within 10 ms of the video.
        tone.set_property("samplesperbuffer", 480i32);
        tone.set_property(
            "num-buffers",
            ((options.duration.as_millis() / 10) as i32).max(1),
        );
        tone.set_property("volume", 0.2f64);
        let audio_caps = caps_filter(
            gst::Caps::builder("audio/x-raw")
                .field("rate", 48_000i32)
                .field("channels", 2i32)
                .build(),
        )?;
        let audio_convert = pipeline::make("audioconvert")?;
        let aac = pipeline::make("voaacenc")?;
        aac.set_property("bitrate", 128_000i32);
        let aac_parse = pipeline::make("aacparse")?;
        let audio = [&tone, &audio_caps, &audio_convert, &aac, &aac_parse, &mux];
        pipeline
            .add_many(&audio[..5])
            .map_err(|e| GstError::Build(e.to_string()))?;
        pipeline::link_chain(&audio)?;
    }
    Ok(pipeline)
}
