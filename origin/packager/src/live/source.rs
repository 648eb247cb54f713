//! Where live frames come from: a V4L2 camera (raw or MJPEG), probed before start, or a test pattern.

use std::fs;
use std::path::{Path, PathBuf};

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::options::Size;
use crate::pipeline::{self, GstError};

/// What the operator asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceChoice {
    /// `--test-pattern`: a live test pattern with a clock overlay.
    TestPattern,
    /// `--device /dev/videoN`: that camera, or an error.
    Device(PathBuf),
    /// `--device auto`: the first usable `/dev/video*`, else the test pattern (with a warning).
    Auto,
}

/// How a camera delivers frames at the requested size and rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraFormat {
    /// Uncompressed frames (YUYV, NV12, ...), converted to I420.
    Raw,
    /// Motion JPEG, decoded with jpegdec (many webcams give 720p only this way).
    Mjpeg,
}

/// The source the pipeline is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A live test pattern with a clock overlay.
    TestPattern,
    /// A probed V4L2 camera.
    Camera {
        /// Its device node.
        device: PathBuf,
        /// How it delivers the requested size and rate.
        format: CameraFormat,
    },
}

impl Source {
    /// A short name for logs and the health endpoint.
    pub fn describe(&self) -> String {
        match self {
            Source::TestPattern => "test-pattern".into(),
            Source::Camera { device, format } => format!("{} ({format:?})", device.display()),
        }
    }
}

/// Why a camera cannot be used; every message names the device and a fix.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Nothing at that path.
    #[error(
        "no camera at {device}: plug one in, pass --device /dev/videoN, or use --test-pattern"
    )]
    Missing {
        /// The device path given.
        device: PathBuf,
    },
    /// The device exists but is not a usable V4L2 capture device.
    #[error(
        "cannot open the camera at {device}: {reason}: check that it is a V4L2 capture device \
         you may read (group video), pass another --device, or use --test-pattern"
    )]
    Open {
        /// The device path given.
        device: PathBuf,
        /// What V4L2 (through v4l2src) said.
        reason: String,
    },
    /// The camera works but not at the requested size and frame rate.
    #[error(
        "the camera at {device} cannot deliver {size} at {fps} fps as raw video or MJPEG \
         (it offers {offers}): pass a --size and --fps it supports, or use --test-pattern"
    )]
    Unsupported {
        /// The device path given.
        device: PathBuf,
        /// The requested frame size.
        size: Size,
        /// The requested frame rate.
        fps: u32,
        /// A summary of the formats it offers.
        offers: String,
    },
    /// GStreamer itself failed while probing.
    #[error(transparent)]
    Gst(#[from] GstError),
}

/// Turns the operator's choice into a usable source, probing cameras before anything starts.
pub fn resolve(choice: &SourceChoice, size: Size, fps: u32) -> Result<Source, DeviceError> {
    match choice {
        SourceChoice::TestPattern => Ok(Source::TestPattern),
        SourceChoice::Device(device) => {
            let format = probe(device, size, fps)?;
            Ok(Source::Camera {
                device: device.clone(),
                format,
            })
        }
        SourceChoice::Auto => {
            let devices = video_devices();
            for device in &devices {
                match probe(device, size, fps) {
                    Ok(format) => {
                        return Ok(Source::Camera {
                            device: device.clone(),
                            format,
                        })
                    }
                    Err(err) => tracing::info!(%err, "skipping a camera"),
                }
            }
            tracing::warn!(
                probed = devices.len(),
                "--device auto found no usable camera; using the test pattern"
            );
            Ok(Source::TestPattern)
        }
    }
}

/// The `/dev/video*` nodes, in name order.
fn video_devices() -> Vec<PathBuf> {
    let mut devices: Vec<PathBuf> = fs::read_dir("/dev")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("video"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    devices.sort();
    devices
}

/// Opens the device with v4l2src and checks it can give `size` at `fps` as raw or MJPEG.
fn probe(device: &Path, size: Size, fps: u32) -> Result<CameraFormat, DeviceError> {
    if fs::metadata(device).is_err() {
        return Err(DeviceError::Missing {
            device: device.to_path_buf(),
        });
    }
    pipeline::init()?;
    let probe = gst::Pipeline::new();
    let source = pipeline::make("v4l2src")?;
    source.set_property("device", device.to_string_lossy().to_string());
    let sink = pipeline::make("fakesink")?;
    probe
        .add_many([&source, &sink])
        .map_err(|e| GstError::Build(e.to_string()))?;
    pipeline::link_chain(&[&source, &sink])?;
    // READY opens the device and reads its capabilities; no frame is captured.
    let opened = pipeline::set_state(&probe, gst::State::Ready);
    let result = opened
        .map_err(|err| DeviceError::Open {
            device: device.to_path_buf(),
            reason: match err {
                GstError::Element { message, .. } => message,
                other => other.to_string(),
            },
        })
        .and_then(|()| {
            let offered = source
                .static_pad("src")
                .map(|pad| pad.query_caps(None))
                .unwrap_or_else(gst::Caps::new_empty);
            let wanted = |name: &str| {
                gst::Caps::builder(name)
                    .field("width", size.width as i32)
                    .field("height", size.height as i32)
                    .field("framerate", gst::Fraction::new(fps as i32, 1))
                    .build()
            };
            if offered.can_intersect(&wanted("video/x-raw")) {
                Ok(CameraFormat::Raw)
            } else if offered.can_intersect(&wanted("image/jpeg")) {
                Ok(CameraFormat::Mjpeg)
            } else {
                Err(DeviceError::Unsupported {
                    device: device.to_path_buf(),
                    size,
                    fps,
                    offers: summarise(&offered),
                })
            }
        });
    let _ = probe.set_state(gst::State::Null);
    result
}

/// A one-line summary of a camera's caps: `raw YUY2 640x480, mjpeg 1280x720, ...`.
fn summarise(caps: &gst::Caps) -> String {
    let mut seen: Vec<String> = Vec::new();
    for s in caps.iter() {
        let kind = match s.name().as_str() {
            "video/x-raw" => format!("raw {}", s.get::<String>("format").unwrap_or_default()),
            "image/jpeg" => "mjpeg".into(),
            other => other.to_string(),
        };
        let dims = match (s.get::<i32>("width"), s.get::<i32>("height")) {
            (Ok(w), Ok(h)) => format!(" {w}x{h}"),
            _ => String::new(),
        };
        let entry = format!("{kind}{dims}");
        if !seen.contains(&entry) {
            seen.push(entry);
        }
    }
    if seen.is_empty() {
        "nothing".into()
    } else {
        seen.join(", ")
    }
}
