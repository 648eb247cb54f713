//! VoD packaging scenarios: real GStreamer transcodes of a generated sample, checked with ffprobe.

use std::fs;
use std::path::Path;
use std::time::Duration;

use dime_origin_testing::media::{extinfs, ffprobe, tag};
use dime_packager::options::Size;
use dime_packager::sample::{write_sample, SampleOptions};
use dime_packager::vod::{package_file, VodError, VodOptions};

fn sample(path: &Path, seconds: u64, audio: bool) {
    let options = SampleOptions {
        duration: Duration::from_secs(seconds),
        size: Size {
            width: 320,
            height: 180,
        },
        fps: 15,
        audio,
    };
    write_sample(path, &options).unwrap();
}

fn two_second_segments() -> VodOptions {
    VodOptions {
        segment: Duration::from_secs(2),
        ..VodOptions::default()
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn a_sample_with_audio_becomes_a_vod_title_of_keyframe_aligned_segments() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("sample.mp4");
    sample(&input, 7, true);
    let sample_probe = ffprobe(&input);
    assert_eq!(sample_probe.streams, ["h264 Main yuv420p", "aac LC"]);

    let out = dir.path().join("titles/abc");
    let package = package_file(&input, &out, &two_second_segments()).unwrap();

    assert!(package.has_audio);
    assert_eq!((package.width, package.height), (320, 180));
    // Exact to the frame, the last one included.
    assert!(
        (package.duration - 7.0).abs() < 0.002,
        "{}",
        package.duration
    );
    let text = fs::read_to_string(&package.playlist).unwrap();
    assert_eq!(tag(&text, "#EXT-X-PLAYLIST-TYPE"), Some("VOD"));
    assert!(text.ends_with("#EXT-X-ENDLIST\n"));
    assert_eq!(tag(&text, "#EXT-X-TARGETDURATION"), Some("2"));
    let segments = extinfs(&text);
    assert_eq!(segments.len(), 4, "{text}");
    for (seconds, _) in &segments[..3] {
        assert!(
            (seconds - 2.0).abs() < 0.005,
            "segment of {seconds} s in\n{text}"
        );
    }
    assert_eq!(package.segments.len(), 4);
    for ((_, uri), path) in segments.iter().zip(&package.segments) {
        assert_eq!(path, &out.join(uri));
        let probe = ffprobe(path);
        assert_eq!(probe.streams, ["h264 Main yuv420p", "aac LC"], "{uri}");
        assert!(
            probe.starts_with_keyframe,
            "{uri} does not start with a keyframe"
        );
    }
    let poster = fs::read(&package.poster).unwrap();
    assert_eq!(&poster[..2], [0xFF, 0xD8], "the poster is a JPEG");
    assert_eq!(
        ffprobe(&package.poster).streams,
        ["mjpeg Baseline yuvj420p"]
    );
    // Only the finished title is left in its parent: no work directory.
    assert_eq!(names(&dir.path().join("titles")), ["abc"]);
}

#[test]
fn a_silent_input_makes_a_video_only_title() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("silent.mp4");
    sample(&input, 3, false);
    let package = package_file(&input, &dir.path().join("t"), &two_second_segments()).unwrap();
    assert!(!package.has_audio);
    assert_eq!(ffprobe(&package.segments[0]).streams, ["h264 Main yuv420p"]);
}

#[test]
fn an_existing_title_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("taken");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("index.m3u8"), "keep me").unwrap();
    let input = dir.path().join("in.mp4");
    fs::write(&input, "whatever").unwrap();
    let err = package_file(&input, &out, &VodOptions::default()).unwrap_err();
    assert!(matches!(err, VodError::OutputExists { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "{}: already exists; remove it or package into another directory",
            out.display()
        )
    );
    assert_eq!(
        fs::read_to_string(out.join("index.m3u8")).unwrap(),
        "keep me"
    );
}

#[test]
fn a_file_that_is_not_video_is_refused_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("notes.mp4");
    fs::write(&input, "these are not frames\n".repeat(100)).unwrap();
    let out = dir.path().join("titles/notes");
    let err = package_file(&input, &out, &VodOptions::default()).unwrap_err();
    assert!(matches!(err, VodError::NotMedia { .. }), "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "{}: not a video GStreamer can decode",
            input.display()
        )),
        "{err}"
    );
    assert!(!dir.path().join("titles").exists() || names(&dir.path().join("titles")).is_empty());
}

#[test]
fn a_missing_input_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("nope.mp4");
    let err = package_file(&input, &dir.path().join("t"), &VodOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: cannot read the input: No such file or directory (os error 2)",
            input.display()
        )
    );
}

#[test]
fn odd_dimensions_are_trimmed_to_even_for_4_2_0() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("odd.mp4");
    // x264 accepts odd sizes only in 4:4:4, which is exactly what such uploads tend to be.
    let status = std::process::Command::new("gst-launch-1.0")
        .args(["-q", "videotestsrc", "num-buffers=30", "!"])
        .args([
            "video/x-raw,width=321,height=181,framerate=15/1",
            "!",
            "x264enc",
            "!",
        ])
        .args(["mp4mux", "!", "filesink"])
        .arg(format!("location={}", input.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let package = package_file(&input, &dir.path().join("t"), &VodOptions::default()).unwrap();
    assert_eq!((package.width, package.height), (320, 180));
    assert_eq!(ffprobe(&package.segments[0]).streams, ["h264 Main yuv420p"]);
}

#[test]
fn an_audio_only_file_is_refused_as_having_no_video() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("tone.m4a");
    let status = std::process::Command::new("gst-launch-1.0")
        .args([
            "-q",
            "audiotestsrc",
            "num-buffers=50",
            "!",
            "audioconvert",
            "!",
        ])
        .args(["voaacenc", "!", "aacparse", "!", "mp4mux", "!", "filesink"])
        .arg(format!("location={}", input.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let err = package_file(&input, &dir.path().join("t"), &VodOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: the file has no video stream (audio-only titles are not supported)",
            input.display()
        )
    );
    assert!(!dir.path().join("t").exists());
}

#[test]
fn tall_inputs_are_scaled_down_to_the_maximum_height() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.mp4");
    sample(&input, 2, false);
    let options = VodOptions {
        max_height: Some(90),
        ..VodOptions::default()
    };
    let package = package_file(&input, &dir.path().join("t"), &options).unwrap();
    assert_eq!((package.width, package.height), (160, 90));
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(&package.segments[0])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().next(),
        Some("160,90")
    );
}
