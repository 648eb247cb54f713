//! Running a GStreamer pipeline to the end, and turning its bus errors into one precise line.

use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;

/// A GStreamer failure: which element, what it said, and GStreamer's debug detail.
#[derive(Debug, thiserror::Error)]
pub enum GstError {
    /// GStreamer itself could not start (missing libraries or plugins registry).
    #[error("GStreamer failed to initialise: {0}; install gstreamer1.0-plugins-base")]
    Init(String),
    /// A required element is not installed.
    #[error("GStreamer element {element:?} is missing: install {package}")]
    MissingElement {
        /// The element factory name.
        element: &'static str,
        /// The Debian package that ships it.
        package: &'static str,
    },
    /// An element posted an error on the bus.
    #[error("{element}: {message}{}", debug.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Element {
        /// The element's path in the pipeline.
        element: String,
        /// The error's message.
        message: String,
        /// GStreamer's debug string, when there is one.
        debug: Option<String>,
    },
    /// A state change failed without an error message on the bus.
    #[error("the pipeline refused to change state to {0:?}")]
    StateChange(gst::State),
    /// The pipeline did not finish in time.
    #[error("the pipeline did not finish within {0:?}")]
    Timeout(Duration),
    /// Wiring the pipeline failed (a link or a property): a bug rather than bad input.
    #[error("cannot build the pipeline: {0}")]
    Build(String),
}

/// Initialises GStreamer once per process (and, with the `cmaf` feature, registers cmafmux).
pub fn init() -> Result<(), GstError> {
    gst::init().map_err(|e| GstError::Init(e.to_string()))?;
    #[cfg(feature = "cmaf")]
    {
        // Registering a static plugin twice fails: do it once, remember the outcome.
        static FMP4: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
        FMP4.get_or_init(|| gstfmp4::plugin_register_static().map_err(|e| e.to_string()))
            .clone()
            .map_err(GstError::Init)?;
    }
    Ok(())
}

/// Makes an element, naming the Debian package to install when it is missing.
pub fn make(element: &'static str) -> Result<gst::Element, GstError> {
    gst::ElementFactory::make(element)
        .build()
        .map_err(|_| GstError::MissingElement {
            element,
            package: package_of(element),
        })
}

/// The Debian package that ships an element Dime uses.
fn package_of(element: &str) -> &'static str {
    match element {
        "x264enc" => "gstreamer1.0-plugins-ugly",
        "clockoverlay" | "timeoverlay" | "textoverlay" => "gstreamer1.0-x",
        "v4l2src" | "jpegdec" | "jpegenc" | "splitmuxsink" | "mp4mux" | "qtdemux" => {
            "gstreamer1.0-plugins-good"
        }
        "mpegtsmux" | "h264parse" | "voaacenc" => "gstreamer1.0-plugins-bad",
        "avdec_h264" => "gstreamer1.0-libav",
        _ => "gstreamer1.0-plugins-base",
    }
}

/// Turns an error message from the bus into a [`GstError`].
pub fn bus_error(err: &gst::message::Error) -> GstError {
    GstError::Element {
        element: err
            .src()
            .map(|s| s.path_string().to_string())
            .unwrap_or_else(|| "pipeline".into()),
        message: err.error().to_string(),
        debug: err.debug().map(|d| d.to_string()),
    }
}

/// Sets a state, reporting the bus error that explains a failure when there is one.
pub fn set_state(pipeline: &gst::Pipeline, state: gst::State) -> Result<(), GstError> {
    if pipeline.set_state(state).is_ok() {
        return Ok(());
    }
    Err(first_error(pipeline).unwrap_or(GstError::StateChange(state)))
}

/// The first error message waiting on the pipeline's bus, if any.
pub fn first_error(pipeline: &gst::Pipeline) -> Option<GstError> {
    let bus = pipeline.bus()?;
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
        if let gst::MessageView::Error(err) = msg.view() {
            return Some(bus_error(err));
        }
    }
    None
}

/// Plays a finite pipeline until EOS, handing element messages to `on_element`; always
/// leaves the pipeline in NULL.
pub fn run_to_eos(
    pipeline: &gst::Pipeline,
    timeout: Duration,
    mut on_element: impl FnMut(&gst::StructureRef, Option<&gst::Object>),
) -> Result<(), GstError> {
    let result = (|| {
        set_state(pipeline, gst::State::Playing)?;
        let bus = pipeline
            .bus()
            .ok_or_else(|| GstError::Build("no bus".into()))?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(GstError::Timeout(timeout));
            }
            let Some(msg) = bus.timed_pop(gst::ClockTime::from_nseconds(left.as_nanos() as u64))
            else {
                continue;
            };
            match msg.view() {
                gst::MessageView::Eos(_) => return Ok(()),
                gst::MessageView::Error(err) => return Err(bus_error(err)),
                gst::MessageView::Element(element) => {
                    if let Some(structure) = element.structure() {
                        on_element(structure, msg.src());
                    }
                }
                _ => {}
            }
        }
    })();
    let _ = pipeline.set_state(gst::State::Null);
    result
}

/// A capsfilter restricting to `caps`.
pub fn caps_filter(caps: gst::Caps) -> Result<gst::Element, GstError> {
    let filter = make("capsfilter")?;
    filter.set_property("caps", caps);
    Ok(filter)
}

/// A capsfilter pinning raw video to 8-bit 4:2:0 (and to `size`, when given): left open, x264
/// negotiates 4:4:4, which doubles the CPU and which few players decode.
pub fn i420(size: Option<(u32, u32)>) -> Result<gst::Element, GstError> {
    let mut caps = gst::Caps::builder("video/x-raw").field("format", "I420");
    if let Some((width, height)) = size {
        caps = caps
            .field("width", width as i32)
            .field("height", height as i32);
    }
    caps_filter(caps.build())
}

/// x264 (veryfast, `bitrate_kbps`) held to the main profile, then h264parse: `[encoder, main
/// caps, parser]`, to link in that order. Callers set keyframe placement on the encoder.
pub fn h264_main(bitrate_kbps: u32) -> Result<[gst::Element; 3], GstError> {
    let encoder = make("x264enc")?;
    encoder.set_property_from_str("speed-preset", "veryfast");
    encoder.set_property("bitrate", bitrate_kbps);
    let main = caps_filter(
        gst::Caps::builder("video/x-h264")
            .field("profile", "main")
            .build(),
    )?;
    Ok([encoder, main, make("h264parse")?])
}

/// Links a chain of elements, reporting which pair refused.
pub fn link_chain(elements: &[&gst::Element]) -> Result<(), GstError> {
    for pair in elements.windows(2) {
        pair[0].link(pair[1]).map_err(|_| {
            GstError::Build(format!(
                "cannot link {} to {}",
                pair[0].name(),
                pair[1].name()
            ))
        })?;
    }
    Ok(())
}
