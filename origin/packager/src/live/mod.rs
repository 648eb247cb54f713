//! The live packager: camera or test pattern → H.264 main → TS or CMAF segments and a rolling playlist.

pub mod channel;
#[cfg(feature = "cmaf")]
pub mod cmaf;
pub mod source;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use gstreamer as gst;
use gstreamer::prelude::*;

use crate::health::{self, LiveState};
use crate::options::{Bitrate, Size};
use crate::pipeline::{self, caps_filter, GstError};
use channel::{ChannelDir, ChannelError};
use source::{CameraFormat, DeviceError, Source, SourceChoice};

/// How long a shutdown waits for the last segment to be finalised.
const EOS_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything the live packager needs to run.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// The media root: the channel is written to `out/channel/`.
    pub out: PathBuf,
    /// The channel name, one path component.
    pub channel: String,
    /// Camera, auto-detection or test pattern.
    pub source: SourceChoice,
    /// Encoded frame size.
    pub size: Size,
    /// Frames per second.
    pub fps: u32,
    /// H.264 bitrate.
    pub bitrate: Bitrate,
    /// Segment container.
    pub format: Format,
    /// Segment length (one keyframe at the start of each).
    pub segment: Duration,
    /// Low-latency HLS: each segment is also written as parts of this length, listed with
    /// a preload hint in a playlist that allows blocking reloads (CMAF only). `None` is
    /// classic HLS.
    pub part: Option<Duration>,
    /// Segments listed in the playlist; about twice as many stay on disk.
    pub window: usize,
    /// Where to serve `/healthz` and `/metrics`, if anywhere.
    pub health_listen: Option<SocketAddr>,
}

/// The segment container of a live channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// MPEG-TS segments (`segment-N.ts`), muxed by splitmuxsink + mpegtsmux.
    Ts,
    /// fMP4/CMAF segments (`segment-N.m4s`) and an init section (`init-N.mp4`), by cmafmux.
    Cmaf,
}

impl Format {
    /// The segment files' extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Ts => ".ts",
            Format::Cmaf => ".m4s",
        }
    }
}

/// Why the live packager could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The channel name would escape the media root or be hidden from the streamer.
    #[error(
        "invalid --channel {0:?}: use letters, digits, '-', '_' or '.', not starting with '.'"
    )]
    Channel(String),
    /// The segment length and frame rate do not make whole frames per segment.
    #[error("--segment {segment:?} at --fps {fps} is not a whole number of frames: pick a segment length that is")]
    Cadence {
        /// The segment length.
        segment: Duration,
        /// The frame rate.
        fps: u32,
    },
    /// The camera cannot be used.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The channel directory cannot be prepared or written.
    #[error(transparent)]
    ChannelDir(#[from] ChannelError),
    /// The health listener cannot be bound.
    #[error("cannot listen on {addr} for --health-listen: {error}")]
    Health {
        /// The address asked for.
        addr: SocketAddr,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The part length is no whole number of frames, or does not divide the segment.
    #[error("--part {part:?} with --segment {segment:?} at --fps {fps}: a part must be a whole number of frames and a segment a whole number of parts (e.g. --part 200ms with --segment 1s at 30 fps)")]
    PartCadence {
        /// The part length.
        part: Duration,
        /// The segment length.
        segment: Duration,
        /// The frame rate.
        fps: u32,
    },
    /// Parts asked for with MPEG-TS segments.
    #[error("--part (low-latency HLS) needs --format cmaf: low-latency parts are fMP4 chunks")]
    PartNeedsCmaf,
    /// `--format cmaf` on a build without the `cmaf` feature.
    #[error("this build has no fMP4/CMAF support: use --format ts, or build dime-packager with its cmaf feature")]
    CmafUnavailable,
    /// The media sequence no longer fits splitmuxsink's index.
    #[error("media sequence {0} is beyond what splitmuxsink can number: start a new channel name")]
    SequenceOverflow(u64),
    /// The pipeline failed (at start or while running).
    #[error("{source_name}: {error}")]
    Pipeline {
        /// What was being captured.
        source_name: String,
        /// What GStreamer said.
        error: GstError,
    },
    /// A shutdown did not finish in time: the last segment may not be listed.
    #[error("the pipeline did not drain within {0:?} of the shutdown request; the last segment is not listed")]
    DrainTimeout(Duration),
}

/// What a run did, for the final log line.
#[derive(Debug, Clone)]
pub struct LiveSummary {
    /// Frames encoded.
    pub frames: u64,
    /// Segments written and listed.
    pub segments: u64,
}

/// Checks the channel name: one visible path component.
fn check_channel(name: &str) -> Result<(), LiveError> {
    let valid = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(LiveError::Channel(name.into()))
    }
}

/// Runs the live packager until `shutdown` resolves (then drains: EOS, last segment listed)
/// or the pipeline fails.
pub async fn run(
    config: LiveConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<LiveSummary, LiveError> {
    check_channel(&config.channel)?;
    if config.format == Format::Cmaf && !cfg!(feature = "cmaf") {
        return Err(LiveError::CmafUnavailable);
    }
    let frames_per_segment = config.segment.as_secs_f64() * f64::from(config.fps);
    if (frames_per_segment - frames_per_segment.round()).abs() > 1e-6 || frames_per_segment < 1.0 {
        return Err(LiveError::Cadence {
            segment: config.segment,
            fps: config.fps,
        });
    }
    if let Some(part) = config.part {
        if config.format != Format::Cmaf {
            return Err(LiveError::PartNeedsCmaf);
        }
        let frames_per_part = part.as_secs_f64() * f64::from(config.fps);
        let parts = config.segment.as_secs_f64() / part.as_secs_f64();
        let whole = |x: f64| (x - x.round()).abs() <= 1e-6 && x >= 1.0;
        if !whole(frames_per_part) || !whole(parts) {
            return Err(LiveError::PartCadence {
                part,
                segment: config.segment,
                fps: config.fps,
            });
        }
    }
    let gst_failed = |source| LiveError::Pipeline {
        source_name: "GStreamer".into(),
        error: source,
    };
    pipeline::init().map_err(gst_failed)?;
    let source = source::resolve(&config.source, config.size, config.fps)?;
    let mut channel = ChannelDir::open(
        &config.out.join(&config.channel),
        config.segment,
        config.window,
        config.format.extension(),
        config.part,
    )?;
    let start_index = i32::try_from(channel.next_sequence())
        .map_err(|_| LiveError::SequenceOverflow(channel.next_sequence()))?;
    let state = Arc::new(LiveState::new(
        &config.channel,
        &source.describe(),
        channel.playlist().target_duration(),
    ));
    let health_task = match config.health_listen {
        Some(addr) => {
            let listener = health::bind(addr)
                .await
                .map_err(|source| LiveError::Health {
                    addr,
                    error: source,
                })?;
            tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "health endpoint listening");
            Some(tokio::spawn(health::serve(listener, state.clone())))
        }
        None => None,
    };
    let name = source_name(&source);
    let failed = |err| LiveError::Pipeline {
        source_name: name.clone(),
        error: err,
    };
    let pipeline = build(&config, &source, &channel, start_index, &state).map_err(failed)?;
    tracing::info!(
        channel = %config.channel,
        source = %source.describe(),
        dir = %channel.dir().display(),
        first_sequence = channel.next_sequence(),
        size = %config.size,
        fps = config.fps,
        bitrate = %config.bitrate,
        format = ?config.format,
        segment = ?config.segment,
        part = ?config.part,
        window = config.window,
        "live packager starting"
    );
    let frame = gst::ClockTime::SECOND / u64::from(config.fps);
    let result = drive(&pipeline, &mut channel, &state, frame, shutdown).await;
    let _ = pipeline.set_state(gst::State::Null);
    state.set_running(false);
    if let Some(task) = health_task {
        task.abort();
    }
    result.map_err(|err| match err {
        Stop::Gst(source) => failed(source),
        Stop::Channel(err) => err.into(),
        Stop::DrainTimeout => LiveError::DrainTimeout(EOS_TIMEOUT),
    })?;
    Ok(LiveSummary {
        frames: state.frames(),
        segments: state.segments(),
    })
}

/// Why the bus loop stopped early.
enum Stop {
    Gst(GstError),
    Channel(ChannelError),
    DrainTimeout,
}

/// What a failing pipeline was capturing, for the first words of its error.
fn source_name(source: &Source) -> String {
    match source {
        Source::TestPattern => "test pattern".into(),
        Source::Camera { device, .. } => format!("camera at {}", device.display()),
    }
}

/// Plays the pipeline and follows its bus: segments into the playlist, errors out, and on
/// shutdown an EOS whose arrival means the last segment is finalised.
async fn drive(
    pipeline: &gst::Pipeline,
    channel: &mut ChannelDir,
    state: &LiveState,
    frame: gst::ClockTime,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Stop> {
    let bus = pipeline
        .bus()
        .ok_or_else(|| Stop::Gst(GstError::Build("no bus".into())))?;
    let mut messages = bus.stream();
    pipeline::set_state(pipeline, gst::State::Playing).map_err(Stop::Gst)?;
    state.set_running(true);
    let mut shutdown = pin!(shutdown);
    let mut draining: Option<tokio::time::Instant> = None;
    // Wall clock = anchor + running time: one anchor per run keeps the program date times
    // exactly as far apart as the EXTINF durations say.
    let mut anchor: Option<SystemTime> = None;
    let mut opened: Option<gst::ClockTime> = None;
    let mut held: Option<Closed> = None;
    loop {
        let deadline =
            draining.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        let message = tokio::select! {
            () = &mut shutdown, if draining.is_none() => {
                tracing::info!("draining: sending EOS to finalise the last segment");
                pipeline.send_event(gst::event::Eos::new());
                draining = Some(tokio::time::Instant::now() + EOS_TIMEOUT);
                continue;
            }
            () = tokio::time::sleep_until(deadline), if draining.is_some() => {
                return Err(Stop::DrainTimeout);
            }
            message = messages.next() => message,
        };
        let Some(message) = message else {
            return Err(Stop::Gst(GstError::Build("the bus closed".into())));
        };
        match message.view() {
            gst::MessageView::Eos(_) => {
                if let Some(mut last) = held.take() {
                    // splitmuxsink closes the final fragment at its last frame's start.
                    last.duration += frame;
                    record(channel, state, &mut anchor, pipeline, last)?;
                }
                channel.hint_the_next_run().map_err(Stop::Channel)?;
                return Ok(());
            }
            gst::MessageView::Error(err) => return Err(Stop::Gst(pipeline::bus_error(err))),
            gst::MessageView::Element(element) => {
                let Some(structure) = element.structure() else {
                    continue;
                };
                let running_time = structure.get::<gst::ClockTime>("running-time").ok();
                tracing::debug!(message = %structure.name(), ?running_time, location = ?structure.get::<String>("location").ok(), "element message");
                match structure.name().as_str() {
                    "splitmuxsink-fragment-opened" => {
                        if anchor.is_none() {
                            anchor = Some(wall_clock_at_zero(pipeline));
                        }
                        if let Some(closed) = held.take() {
                            // A new fragment: the held one was an ordinary split, exact as is.
                            record(channel, state, &mut anchor, pipeline, closed)?;
                        }
                        opened = running_time;
                    }
                    "splitmuxsink-fragment-closed" => {
                        let (Some(start), Some(end)) = (opened.take(), running_time) else {
                            continue;
                        };
                        let closed = Closed {
                            location: structure.get::<String>("location").unwrap_or_default(),
                            start,
                            duration: end.saturating_sub(start),
                            map: None,
                        };
                        if draining.is_some() {
                            // Possibly the final fragment, whose end splitmuxsink reports one
                            // frame early: hold it until a new fragment opens or EOS arrives.
                            held = Some(closed);
                        } else {
                            record(channel, state, &mut anchor, pipeline, closed)?;
                        }
                    }
                    #[cfg(feature = "cmaf")]
                    cmaf::SEGMENT_WRITTEN => {
                        let (Some(start), Ok(duration)) =
                            (running_time, structure.get::<gst::ClockTime>("duration"))
                        else {
                            continue;
                        };
                        let closed = Closed {
                            location: structure.get::<String>("location").unwrap_or_default(),
                            start,
                            duration,
                            map: structure.get::<String>("map").ok(),
                        };
                        record(channel, state, &mut anchor, pipeline, closed)?;
                    }
                    #[cfg(feature = "cmaf")]
                    cmaf::PART_WRITTEN => {
                        let (Ok(location), Ok(duration), Ok(independent), Ok(next)) = (
                            structure.get::<String>("location"),
                            structure.get::<gst::ClockTime>("duration"),
                            structure.get::<bool>("independent"),
                            structure.get::<String>("next"),
                        ) else {
                            continue;
                        };
                        let duration = Duration::from_nanos(duration.nseconds());
                        channel
                            .add_part(Path::new(&location), duration, independent, next)
                            .map_err(Stop::Channel)?;
                    }
                    _ => {}
                }
            }
            gst::MessageView::Warning(warning) => {
                tracing::warn!(error = %warning.error(), debug = ?warning.debug(), "GStreamer warning");
            }
            _ => {}
        }
    }
}

/// A finished segment file, from either muxer.
struct Closed {
    location: String,
    start: gst::ClockTime,
    duration: gst::ClockTime,
    map: Option<String>,
}

/// Lists a finished segment in the playlist and updates the health state.
fn record(
    channel: &mut ChannelDir,
    state: &LiveState,
    anchor: &mut Option<SystemTime>,
    pipeline: &gst::Pipeline,
    closed: Closed,
) -> Result<(), Stop> {
    let anchor = *anchor.get_or_insert_with(|| wall_clock_at_zero(pipeline));
    let duration = Duration::from_nanos(closed.duration.nseconds());
    let started = anchor + Duration::from_nanos(closed.start.nseconds());
    let segment = channel
        .add(Path::new(&closed.location), duration, started, closed.map)
        .map_err(Stop::Channel)?;
    state.segment_written(
        duration,
        channel.playlist().media_sequence(),
        channel.playlist().target_duration(),
    );
    tracing::info!(
        sequence = segment.sequence,
        uri = %segment.uri,
        duration = format_args!("{:.3}", duration.as_secs_f64()),
        "segment written"
    );
    Ok(())
}

/// The wall-clock time at which the pipeline's running time was zero.
fn wall_clock_at_zero(pipeline: &gst::Pipeline) -> SystemTime {
    let now = SystemTime::now();
    let running = pipeline.current_running_time().map_or(0, |t| t.nseconds());
    now - Duration::from_nanos(running)
}

/// Builds source → I420 → x264 (main, keyframe per segment) → h264parse → splitmuxsink.
fn build(
    config: &LiveConfig,
    source: &Source,
    channel: &ChannelDir,
    start_index: i32,
    state: &Arc<LiveState>,
) -> Result<gst::Pipeline, GstError> {
    let pipeline = gst::Pipeline::new();
    let add = |elements: &[&gst::Element]| {
        pipeline
            .add_many(elements.iter().copied())
            .map_err(|e| GstError::Build(e.to_string()))
    };
    let raw_caps = |name: &str| {
        gst::Caps::builder(name)
            .field("width", config.size.width as i32)
            .field("height", config.size.height as i32)
            .field("framerate", gst::Fraction::new(config.fps as i32, 1))
            .build()
    };
    let mut chain: Vec<gst::Element> = Vec::new();
    match source {
        Source::TestPattern => {
            let test = pipeline::make("videotestsrc")?;
            test.set_property("is-live", true);
            test.set_property_from_str("pattern", "smpte");
            let clock = pipeline::make("clockoverlay")?;
            clock.set_property("time-format", "%Y-%m-%d %H:%M:%S");
            clock.set_property("text", config.channel.as_str());
            clock.set_property_from_str("halignment", "center");
            clock.set_property_from_str("valignment", "center");
            chain.extend([test, caps_filter(raw_caps("video/x-raw"))?, clock]);
        }
        Source::Camera { device, format } => {
            let camera = pipeline::make("v4l2src")?;
            camera.set_property("device", device.to_string_lossy().to_string());
            chain.push(camera);
            match format {
                CameraFormat::Raw => chain.push(caps_filter(raw_caps("video/x-raw"))?),
                CameraFormat::Mjpeg => {
                    chain.push(caps_filter(raw_caps("image/jpeg"))?);
                    chain.push(pipeline::make("jpegdec")?);
                }
            }
        }
    }
    let convert = pipeline::make("videoconvert")?;
    let i420 = pipeline::i420(None)?;
    let queue = pipeline::make("queue")?;
    // A slow encoder drops frames rather than delaying the live edge.
    queue.set_property_from_str("leaky", "downstream");
    queue.set_property("max-size-buffers", 5u32);
    queue.set_property("max-size-bytes", 0u32);
    queue.set_property("max-size-time", 0u64);
    let [encoder, main, parse] = pipeline::h264_main(config.bitrate.kbps)?;
    encoder.set_property_from_str("tune", "zerolatency");
    let gop = (config.segment.as_secs_f64() * f64::from(config.fps)).round() as u32;
    encoder.set_property("key-int-max", gop);
    // Keyframes only at segment starts (requested by splitmuxsink), never on scene cuts.
    encoder.set_property("option-string", "scenecut=0");
    chain.extend([convert, i420, queue.clone(), encoder.clone(), main, parse]);
    match config.format {
        Format::Ts => {
            let split = crate::vod::splitmux(channel.dir(), config.segment)?;
            split.set_property("start-index", start_index);
            chain.push(split);
        }
        #[cfg(feature = "cmaf")]
        Format::Cmaf => {}
        #[cfg(not(feature = "cmaf"))]
        Format::Cmaf => return Err(GstError::Build("built without the cmaf feature".into())),
    }
    let refs: Vec<&gst::Element> = chain.iter().collect();
    add(&refs)?;
    pipeline::link_chain(&refs)?;
    #[cfg(feature = "cmaf")]
    if config.format == Format::Cmaf {
        let first = u64::try_from(start_index).unwrap_or_default();
        let mux = cmaf::tail(&pipeline, channel.dir(), first, config.segment, config.part)?;
        let last = chain
            .last()
            .ok_or_else(|| GstError::Build("empty chain".into()))?;
        pipeline::link_chain(&[last, &mux])?;
    }

    let counter = state.clone();
    if let Some(pad) = encoder.static_pad("sink") {
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            counter.count_frame();
            gst::PadProbeReturn::Ok
        });
    }
    let counter = state.clone();
    if let Some(pad) = queue.static_pad("sink") {
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            counter.count_captured();
            gst::PadProbeReturn::Ok
        });
    }
    Ok(pipeline)
}
