//! `dime-origin packager`: the command line (live by default, `sample` and `vod` tools) and its runner.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::live::source::SourceChoice;
use crate::live::{self, Format, LiveConfig, LiveError};
use crate::options::{parse_duration, parse_fps, Bitrate, Size};
use crate::sample::{self, SampleError, SampleOptions};
use crate::vod::{self, VodError, VodOptions};

/// Package a live channel into HLS (default), or run one of the tools.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    /// A one-off tool instead of the live packager.
    #[command(subcommand)]
    pub tool: Option<Tool>,

    /// The live packager's options.
    #[command(flatten)]
    pub live: LiveArgs,
}

/// The one-off tools.
#[derive(Debug, clap::Subcommand)]
pub enum Tool {
    /// Write a sample MP4 (test pattern with a running clock and a tone).
    Sample(SampleArgs),
    /// Package a video file into a VoD HLS title (index.m3u8, segments, poster.jpg).
    Vod(VodArgs),
}

/// Options of the live packager.
#[derive(Debug, clap::Args)]
pub struct LiveArgs {
    /// The media root; the channel is written to OUT/CHANNEL/index.m3u8 and segment-N.ts.
    #[arg(long, value_name = "DIR", required = true, env = "DIME_PACKAGER_OUT")]
    pub out: Option<PathBuf>,
    /// The channel name (one path component).
    #[arg(
        long,
        value_name = "NAME",
        required = true,
        env = "DIME_PACKAGER_CHANNEL"
    )]
    pub channel: Option<String>,
    /// The V4L2 camera, or `auto` for the first usable /dev/video* (test pattern if none).
    #[arg(
        long,
        value_name = "/dev/videoN|auto",
        default_value = "/dev/video0",
        env = "DIME_PACKAGER_DEVICE"
    )]
    pub device: String,
    /// Encode a live test pattern with a clock overlay instead of a camera.
    #[arg(long, conflicts_with = "device", env = "DIME_PACKAGER_TEST_PATTERN")]
    pub test_pattern: bool,
    /// Frame size, WIDTHxHEIGHT.
    #[arg(long, default_value = "1280x720", env = "DIME_PACKAGER_SIZE")]
    pub size: Size,
    /// Frames per second.
    #[arg(long, default_value = "30", value_parser = parse_fps, env = "DIME_PACKAGER_FPS")]
    pub fps: u32,
    /// H.264 bitrate (e.g. 2500k, 4M).
    #[arg(long, default_value = "2500k", env = "DIME_PACKAGER_BITRATE")]
    pub bitrate: Bitrate,
    /// Segment container: MPEG-TS, or fMP4/CMAF (init-N.mp4 + segment-N.m4s).
    #[arg(long, value_enum, default_value = "ts", env = "DIME_PACKAGER_FORMAT")]
    pub format: Format,
    /// Segment length; each segment starts with a keyframe.
    #[arg(long, default_value = "1s", value_parser = parse_duration, env = "DIME_PACKAGER_SEGMENT")]
    pub segment: Duration,
    /// Low-latency HLS: also write each segment as parts of this length (e.g. 200ms), listed
    /// with a preload hint in a playlist that allows blocking reloads. Needs --format cmaf;
    /// without it, classic HLS.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, env = "DIME_PACKAGER_PART")]
    pub part: Option<Duration>,
    /// Segments listed in the playlist (about twice as many stay on disk).
    #[arg(long, default_value = "6", value_parser = clap::value_parser!(u32).range(1..=1000), env = "DIME_PACKAGER_WINDOW")]
    pub window: u32,
    /// Serve GET /healthz and /metrics on this address (e.g. 127.0.0.1:9091).
    #[arg(long, value_name = "ADDR", env = "DIME_PACKAGER_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
}

/// Options of `packager sample`.
#[derive(Debug, clap::Args)]
pub struct SampleArgs {
    /// The MP4 file to write (replaced atomically if it exists).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Its length.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Frame size, WIDTHxHEIGHT.
    #[arg(long, default_value = "640x360")]
    pub size: Size,
    /// Frames per second.
    #[arg(long, default_value = "25", value_parser = parse_fps)]
    pub fps: u32,
    /// Leave out the audio track.
    #[arg(long)]
    pub no_audio: bool,
}

/// Options of `packager vod`.
#[derive(Debug, clap::Args)]
pub struct VodArgs {
    /// The video file to package (anything GStreamer decodes).
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// The title directory to create (must not exist yet).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Segment length.
    #[arg(long, default_value = "4s", value_parser = parse_duration)]
    pub segment: Duration,
    /// H.264 bitrate.
    #[arg(long, default_value = "2500k")]
    pub bitrate: Bitrate,
    /// Drop the audio track.
    #[arg(long)]
    pub no_audio: bool,
    /// Scale taller inputs down to this height (aspect kept); 0 keeps every size.
    #[arg(long, default_value = "1080")]
    pub max_height: u32,
    /// Report progress as JSON lines on stdout (logs go to stderr): `{"event":"probed"}`
    /// once the input decodes, then `{"event":"done","duration":SECONDS}`, or
    /// `{"event":"failed","bad_input":BOOL,"reason":TEXT}` (no paths). For the web app, which
    /// packages uploads in a child process.
    #[arg(long)]
    pub report: bool,
}

/// One line of `packager vod --report`.
fn report(event: &serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // A parent that went away cannot be told anything more: the exit status is all that is left.
    let _ = writeln!(out, "{event}").and_then(|()| out.flush());
}

/// Probes, then packages, reporting each step when asked to.
fn package_reporting(vod: &VodArgs, options: &VodOptions) -> Result<vod::VodPackage, VodError> {
    // An existing title is the first thing to report, before the input is probed.
    let result = vod::refuse_existing(&vod.out)
        .and_then(|()| vod::open_input(&vod.input))
        .and_then(|input| {
            if vod.report {
                report(&serde_json::json!({ "event": "probed" }));
            }
            vod::package(&input, &vod.out, options)
        });
    if vod.report {
        match &result {
            Ok(package) => {
                report(&serde_json::json!({ "event": "done", "duration": package.duration }))
            }
            Err(err) => report(&serde_json::json!({
                "event": "failed",
                "bad_input": err.is_bad_input(),
                "reason": err.summary(),
            })),
        }
    }
    result
}

/// Why `dime-origin packager` failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The live packager failed.
    #[error(transparent)]
    Live(#[from] LiveError),
    /// `packager sample` failed.
    #[error(transparent)]
    Sample(#[from] SampleError),
    /// `packager vod` failed.
    #[error(transparent)]
    Vod(#[from] VodError),
    /// A required option is missing (clap normally reports this first).
    #[error("{0} is required")]
    Missing(&'static str),
    /// The blocking worker died.
    #[error("the packaging worker stopped unexpectedly: {0}")]
    Worker(String),
}

/// Runs the command: the live packager until `shutdown`, or a tool to completion.
pub async fn run(args: Args, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    match args.tool {
        Some(Tool::Sample(sample)) => {
            let options = SampleOptions {
                duration: sample.duration,
                size: sample.size,
                fps: sample.fps,
                audio: !sample.no_audio,
            };
            let out = sample.out.clone();
            blocking(move || sample::write_sample(&out, &options)).await??;
            tracing::info!(file = %sample.out.display(), duration = ?sample.duration, "sample written");
            Ok(())
        }
        Some(Tool::Vod(vod)) => {
            let options = VodOptions {
                segment: vod.segment,
                video_bitrate: vod.bitrate,
                audio: !vod.no_audio,
                max_height: (vod.max_height > 0).then_some(vod.max_height),
                ..VodOptions::default()
            };
            let package = blocking(move || package_reporting(&vod, &options)).await??;
            tracing::info!(
                dir = %package.dir.display(),
                duration = format_args!("{:.3}", package.duration),
                segments = package.segments.len(),
                size = format_args!("{}x{}", package.width, package.height),
                audio = package.has_audio,
                "title packaged"
            );
            Ok(())
        }
        None => {
            let live = args.live;
            let source = if live.test_pattern {
                SourceChoice::TestPattern
            } else if live.device == "auto" {
                SourceChoice::Auto
            } else {
                SourceChoice::Device(PathBuf::from(&live.device))
            };
            let config = LiveConfig {
                out: live.out.ok_or(RunError::Missing("--out"))?,
                channel: live.channel.ok_or(RunError::Missing("--channel"))?,
                source,
                size: live.size,
                fps: live.fps,
                bitrate: live.bitrate,
                format: live.format,
                segment: live.segment,
                part: live.part,
                window: live.window as usize,
                health_listen: live.health_listen,
            };
            let summary = live::run(config, shutdown).await?;
            tracing::info!(
                frames = summary.frames,
                segments = summary.segments,
                "live packager stopped cleanly"
            );
            Ok(())
        }
    }
}

/// Runs GStreamer work that blocks off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, RunError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| RunError::Worker(e.to_string()))
}
