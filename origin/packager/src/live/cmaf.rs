//! fMP4/CMAF live output: cmafmux fragments, cut by an appsink into one init section and `.m4s` segments.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::pipeline::{self, GstError};

/// The element message posted for each segment written (fields: `location`, `running-time`,
/// `duration`, `map`), handled like splitmuxsink's `splitmuxsink-fragment-closed`.
pub const SEGMENT_WRITTEN: &str = "dime-cmaf-segment-written";

/// Builds `cmafmux ! appsink` writing `dir/init-<first>.mp4` and `dir/segment-<seq>.m4s`,
/// one fragment per segment, numbered from `first`; returns the first element of the tail.
pub fn tail(
    pipeline: &gst::Pipeline,
    dir: &Path,
    first: u64,
    segment: Duration,
) -> Result<gst::Element, GstError> {
    let mux = pipeline::make("cmafmux")?;
    mux.set_property("fragment-duration", segment.as_nanos() as u64);
    // cmafmux asks the encoder for a keyframe at each fragment start (the default, made explicit).
    mux.set_property("send-force-keyunit", true);
    let sink = gst_app::AppSink::builder()
        .sync(false)
        // One list per fragment: the moof header and its samples arrive together.
        .property("buffer-list", true)
        .build();
    pipeline
        .add_many([&mux, sink.upcast_ref()])
        .map_err(|e| GstError::Build(e.to_string()))?;
    pipeline::link_chain(&[&mux, sink.upcast_ref()])?;

    // The init section is named after the run's first sequence number: a restart (maybe with
    // other encoder settings) gets a new URL, never new bytes under an old one.
    let mut writer = Writer {
        dir: dir.to_path_buf(),
        map: format!("init-{first}.mp4"),
        next: first,
        init_written: false,
    };
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                writer.write(sink, &sample).map_err(|err| {
                    gst::element_error!(sink, gst::ResourceError::Write, ("{}", err));
                    gst::FlowError::Error
                })?;
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    Ok(mux)
}

/// Turns cmafmux output into files and messages.
struct Writer {
    dir: PathBuf,
    map: String,
    next: u64,
    init_written: bool,
}

impl Writer {
    fn write(&mut self, sink: &gst_app::AppSink, sample: &gst::Sample) -> Result<(), String> {
        let mut buffers: Vec<gst::Buffer> = match sample.buffer_list() {
            Some(list) => list.iter_owned().collect(),
            None => sample.buffer_owned().into_iter().collect(),
        };
        let init_flags = gst::BufferFlags::DISCONT | gst::BufferFlags::HEADER;
        if buffers
            .first()
            .is_some_and(|b| b.flags().contains(init_flags))
        {
            let init = buffers.remove(0);
            if !self.init_written {
                write_file(&self.dir.join(&self.map), &[init])?;
                self.init_written = true;
            }
        }
        let Some(header) = buffers.first() else {
            return Ok(());
        };
        let segment = sample
            .segment()
            .and_then(|s| s.downcast_ref::<gst::format::Time>().cloned())
            .ok_or("cmafmux output has no time segment")?;
        let start = header
            .pts()
            .and_then(|pts| segment.to_running_time(pts))
            .ok_or("a CMAF fragment has no timestamp")?;
        let duration = header.duration().ok_or("a CMAF fragment has no duration")?;
        let path = self.dir.join(format!("segment-{}.m4s", self.next));
        write_file(&path, &buffers)?;
        self.next += 1;
        let structure = gst::Structure::builder(SEGMENT_WRITTEN)
            .field("location", path.to_string_lossy().to_string())
            .field("running-time", start)
            .field("duration", duration)
            .field("map", self.map.as_str())
            .build();
        let _ = sink.post_message(gst::message::Element::builder(structure).src(sink).build());
        Ok(())
    }
}

/// Writes the buffers' bytes to `path` through a hidden temporary file and a rename, so the
/// streamer never serves a partial segment.
fn write_file(path: &Path, buffers: &[gst::Buffer]) -> Result<(), String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let temp = path.with_file_name(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = fs::File::create(&temp)?;
        for buffer in buffers {
            let map = buffer
                .map_readable()
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            file.write_all(map.as_slice())?;
        }
        fs::rename(&temp, path)
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))
}
