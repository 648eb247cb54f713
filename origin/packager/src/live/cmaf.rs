//! fMP4/CMAF live output: cmafmux fragments, cut by an appsink into one init section and `.m4s`
//! segments, and for low-latency HLS into parts (`segment-N.I.m4s`) as each chunk is muxed.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::pipeline::{self, GstError};

/// The element message posted for each segment written (fields: `location`, `running-time`,
/// `duration`, `map`), handled like splitmuxsink's `splitmuxsink-fragment-closed`.
pub const SEGMENT_WRITTEN: &str = "dime-cmaf-segment-written";

/// The element message posted for each part written (fields: `location`, `duration`,
/// `independent`, `next`: the URI of the part that follows, for the preload hint).
pub const PART_WRITTEN: &str = "dime-cmaf-part-written";

/// Builds `cmafmux ! appsink` writing `dir/init-<first>.mp4` and `dir/segment-<seq>.m4s`,
/// one fragment per segment, numbered from `first`; with `part`, also each chunk of about
/// `part` as `dir/segment-<seq>.<i>.m4s` the moment it is muxed. Returns the first element of
/// the tail.
pub fn tail(
    pipeline: &gst::Pipeline,
    dir: &Path,
    first: u64,
    segment: Duration,
    part: Option<Duration>,
) -> Result<gst::Element, GstError> {
    let mux = pipeline::make("cmafmux")?;
    mux.set_property("fragment-duration", segment.as_nanos() as u64);
    if let Some(part) = part {
        // Each chunk (its own moof and mdat) is one part; the chunks of a fragment, one after
        // the other, are its segment.
        mux.set_property("chunk-duration", part.as_nanos() as u64);
    }
    // cmafmux asks the encoder for a keyframe at each fragment start (the default, made explicit).
    mux.set_property("send-force-keyunit", true);
    let sink = gst_app::AppSink::builder()
        .sync(false)
        // One list per fragment (per chunk with parts): the moof header and its samples
        // arrive together.
        .property("buffer-list", true)
        .build();
    pipeline
        .add_many([&mux, sink.upcast_ref()])
        .map_err(|e| GstError::Build(e.to_string()))?;
    pipeline::link_chain(&[&mux, sink.upcast_ref()])?;

    // The init section is named after the run's first sequence number: a restart (maybe with
    // other encoder settings) gets a new URL, never new bytes under an old one.
    let writer = Arc::new(Mutex::new(Writer {
        dir: dir.to_path_buf(),
        map: format!("init-{first}.mp4"),
        next: first,
        init_written: false,
        parts: part.map(|part| Parts {
            segment,
            part,
            chunks: Vec::new(),
            start: None,
            duration: gst::ClockTime::ZERO,
        }),
    }));
    let at_eos = writer.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let mut writer = writer.lock().unwrap_or_else(|e| e.into_inner());
                writer.write(sink, &sample).map_err(|err| {
                    gst::element_error!(sink, gst::ResourceError::Write, ("{}", err));
                    gst::FlowError::Error
                })?;
                Ok(gst::FlowSuccess::Ok)
            })
            // The segment whose parts are written so far is the last one: it is complete.
            // (appsink calls this before its EOS reaches the bus.)
            .eos(move |sink| {
                let mut writer = at_eos.lock().unwrap_or_else(|e| e.into_inner());
                if let Err(err) = writer.finish_segment(sink) {
                    gst::element_error!(sink, gst::ResourceError::Write, ("{}", err));
                }
            })
            .build(),
    );
    Ok(mux)
}

/// Turns cmafmux output into files and messages.
struct Writer {
    dir: PathBuf,
    map: String,
    /// The sequence number of the segment being written.
    next: u64,
    init_written: bool,
    /// For low-latency HLS: the segment being written, part by part.
    parts: Option<Parts>,
}

/// The parts written so far of the segment in progress.
struct Parts {
    /// The segment length cmafmux aims at.
    segment: Duration,
    /// The part length cmafmux aims at.
    part: Duration,
    /// Each part's buffers, in order: together they are the segment.
    chunks: Vec<Vec<gst::Buffer>>,
    /// The running time at which the segment starts.
    start: Option<gst::ClockTime>,
    /// The parts' durations added up.
    duration: gst::ClockTime,
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
        if self.parts.is_some() {
            // A chunk header without DELTA_UNIT opens a fragment, that is a segment.
            let opens = !header.flags().contains(gst::BufferFlags::DELTA_UNIT);
            return self.write_part(sink, buffers, start, duration, opens);
        }
        let path = self.dir.join(format!("segment-{}.m4s", self.next));
        write_file(&path, &buffers)?;
        self.next += 1;
        self.segment_written(sink, &path, start, duration);
        Ok(())
    }

    /// Writes one chunk as the next part (after the previous segment, if this chunk opens a
    /// new one) and posts [`PART_WRITTEN`].
    fn write_part(
        &mut self,
        sink: &gst_app::AppSink,
        buffers: Vec<gst::Buffer>,
        start: gst::ClockTime,
        duration: gst::ClockTime,
        opens: bool,
    ) -> Result<(), String> {
        if opens {
            self.finish_segment(sink)?;
        }
        let sequence = self.next;
        let Some(parts) = &mut self.parts else {
            return Ok(());
        };
        let index = parts.chunks.len();
        let path = self.dir.join(format!("segment-{sequence}.{index}.m4s"));
        write_file(&path, &buffers)?;
        parts.start.get_or_insert(start);
        parts.duration += duration;
        parts.chunks.push(buffers);
        // The hint names the part cmafmux writes next: the segment's next one, or the first
        // of the next segment once this one is (within half a part) as long as asked.
        let written = Duration::from_nanos(parts.duration.nseconds());
        let next = if written + parts.part / 2 >= parts.segment {
            format!("segment-{}.0.m4s", sequence + 1)
        } else {
            format!("segment-{sequence}.{}.m4s", index + 1)
        };
        let structure = gst::Structure::builder(PART_WRITTEN)
            .field("location", path.to_string_lossy().to_string())
            .field("duration", duration)
            .field("independent", index == 0)
            .field("next", next)
            .build();
        let _ = sink.post_message(gst::message::Element::builder(structure).src(sink).build());
        Ok(())
    }

    /// Writes the parts written so far as one segment file (their bytes in order), if there
    /// are any, and posts [`SEGMENT_WRITTEN`].
    fn finish_segment(&mut self, sink: &gst_app::AppSink) -> Result<(), String> {
        let Some(parts) = &mut self.parts else {
            return Ok(());
        };
        let Some(start) = parts.start.take() else {
            return Ok(());
        };
        let chunks = std::mem::take(&mut parts.chunks);
        let duration = std::mem::replace(&mut parts.duration, gst::ClockTime::ZERO);
        let path = self.dir.join(format!("segment-{}.m4s", self.next));
        write_file(&path, &chunks.concat())?;
        self.next += 1;
        self.segment_written(sink, &path, start, duration);
        Ok(())
    }

    fn segment_written(
        &self,
        sink: &gst_app::AppSink,
        path: &Path,
        start: gst::ClockTime,
        duration: gst::ClockTime,
    ) {
        let structure = gst::Structure::builder(SEGMENT_WRITTEN)
            .field("location", path.to_string_lossy().to_string())
            .field("running-time", start)
            .field("duration", duration)
            .field("map", self.map.as_str())
            .build();
        let _ = sink.post_message(gst::message::Element::builder(structure).src(sink).build());
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
