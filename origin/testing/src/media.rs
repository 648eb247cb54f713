//! What the packager tests share: ffprobe on the files the packager wrote, and playlist reading.

use std::path::Path;
use std::process::Command;

/// One ffprobe answer for a file: its streams and the first video frame.
#[derive(Debug)]
pub struct Probe {
    /// `codec_name profile pix_fmt` of each stream, e.g. `h264 Main yuv420p`, `aac LC `.
    pub streams: Vec<String>,
    /// Whether the first decoded video frame is a keyframe.
    pub starts_with_keyframe: bool,
}

/// Runs ffprobe on `path`; panics with ffprobe's stderr if the file does not decode.
pub fn ffprobe(path: &Path) -> Probe {
    let run = |args: &[&str]| {
        let out = Command::new("ffprobe")
            .args(["-v", "error"])
            .args(args)
            .arg(path)
            .output()
            .expect("ffprobe is installed (apt: ffmpeg)");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{} does not decode cleanly: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let streams = run(&[
        "-show_entries",
        "stream=codec_name,profile,pix_fmt",
        "-of",
        "csv=p=0",
    ]);
    let frames = run(&[
        "-select_streams",
        "v",
        "-read_intervals",
        "%+#1",
        "-show_entries",
        "frame=key_frame,pict_type",
        "-of",
        "csv=p=0",
    ]);
    // MPEG-TS lists its streams twice (once more under the program): keep each stream once.
    let mut unique: Vec<String> = Vec::new();
    for line in streams.lines() {
        let line = line.replace(',', " ").trim().to_string();
        if !line.is_empty() && !unique.contains(&line) {
            unique.push(line);
        }
    }
    Probe {
        streams: unique,
        starts_with_keyframe: frames.lines().next().is_some_and(|l| l.starts_with("1,I")),
    }
}

/// The `(duration seconds, uri)` pairs of a media playlist, in order.
pub fn extinfs(text: &str) -> Vec<(f64, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(value) = line.strip_prefix("#EXTINF:") {
            let seconds = value.trim_end_matches(',').parse().unwrap();
            out.push((seconds, lines.next().unwrap().to_string()));
        }
    }
    out
}

/// The value of a `#TAG:value` line.
pub fn tag<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
}
