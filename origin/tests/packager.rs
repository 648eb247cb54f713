//! Scenarios for `dime-origin packager`: the real binary, real GStreamer, files checked with ffprobe.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use dime_origin_testing::media::{extinfs, ffprobe, tag};
// The streamer, for the scenario where the streamer serves what the packager writes.
use dime_origin_testing::streamer;

const BIN: &str = env!("CARGO_BIN_EXE_dime-origin");
/// Small and cheap: the machine is shared.
const SMALL: &[&str] = &[
    "--test-pattern",
    "--size",
    "320x180",
    "--fps",
    "15",
    "--bitrate",
    "300k",
    "--segment",
    "1s",
    "--window",
    "3",
];

/// `SMALL` with a window of `segments` instead of 3.
fn small_with_window(segments: &'static str) -> Vec<&'static str> {
    let mut args = SMALL.to_vec();
    let at = args.iter().position(|a| *a == "--window").unwrap();
    args[at + 1] = segments;
    args
}

/// A running live packager whose log lines are collected as they come.
struct Packager {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Packager {
    fn start(out: &Path, channel: &str, extra: &[&str]) -> Packager {
        let mut child = Command::new(BIN)
            .args(["packager", "--out"])
            .arg(out)
            .args(["--channel", channel])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Packager {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Waits for a log line containing `needle` and returns it.
    fn wait_for_log(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        if let Some(line) = self.log.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no log line with {needle:?}; log so far:\n{}",
            self.log.join("\n")
        );
    }

    /// Waits until `count` segments were written in this run.
    fn wait_for_segments(&mut self, count: usize) {
        let needle = "segment written";
        let mut seen = self.log.iter().filter(|l| l.contains(needle)).count();
        while seen < count {
            self.wait_for_new_line_with(needle);
            seen += 1;
        }
    }

    fn wait_for_new_line_with(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let line = self
                .lines
                .recv_timeout(left)
                .expect("the packager went quiet");
            self.log.push(line.clone());
            if line.contains(needle) {
                return;
            }
        }
        panic!("no new {needle:?} line");
    }

    /// Sends a signal and waits for the exit; returns the status and the whole log.
    fn stop(self, signal: i32) -> (ExitStatus, String) {
        unsafe { libc::kill(self.child.id() as i32, signal) };
        self.wait_exit()
    }

    /// Waits for the packager to exit on its own; returns the status and the whole log.
    fn wait_exit(mut self) -> (ExitStatus, String) {
        let status = self.child.wait().unwrap();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.log.push(line);
        }
        (status, self.log.join("\n"))
    }
}

impl Drop for Packager {
    /// A failed assertion must not leave an encoder running on the shared machine.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs the binary to completion: exit status, stdout and stderr together.
fn run(args: &[&str]) -> (ExitStatus, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

/// A plain HTTP/1.0 GET: the status code and the body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

fn program_date_times(text: &str) -> Vec<SystemTime> {
    text.lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:"))
        .map(|v| humantime::parse_rfc3339(v).unwrap())
        .collect()
}

fn segment_bytes(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.ends_with(".ts") || name.ends_with(".m4s")
        })
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Every listed segment exists, decodes as H.264 main 4:2:0 and starts with a keyframe.
fn assert_segments_decode(dir: &Path, text: &str) {
    for (_, uri) in extinfs(text) {
        assert_main_420_from_a_keyframe(&dir.join(&uri), &uri);
    }
}

/// `file` (segment `uri`) is H.264 main 4:2:0 and starts with a keyframe.
fn assert_main_420_from_a_keyframe(file: &Path, uri: &str) {
    let probe = ffprobe(file);
    assert_eq!(probe.streams, ["h264 Main yuv420p"], "{uri}");
    assert!(
        probe.starts_with_keyframe,
        "{uri} does not start with a keyframe"
    );
}

#[test]
fn a_test_pattern_channel_is_live_hls_and_drains_on_sigterm() {
    let media = tempfile::tempdir().unwrap();
    let mut extra = SMALL.to_vec();
    extra.extend(["--health-listen", "127.0.0.1:0"]);
    let mut packager = Packager::start(media.path(), "camera", &extra);
    let listening = packager.wait_for_log("health endpoint listening");
    let addr = listening
        .split("addr=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    packager.wait_for_segments(3);

    // While it runs: healthy, counting frames and segments, and exporting metrics.
    let (status, body) = http_get(&addr, "/healthz");
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["running"], true, "{body}");
    assert!(body["frames"].as_u64().unwrap() >= 30, "{body}");
    assert!(body["captured_frames"].as_u64().unwrap() >= body["frames"].as_u64().unwrap());
    assert!(body["segments"].as_u64().unwrap() >= 3, "{body}");
    assert!(
        body["last_segment_time"].as_str().unwrap().ends_with('Z'),
        "{body}"
    );
    assert_eq!(body["source"], "test-pattern");
    let (_, metrics) = http_get(&addr, "/metrics");
    assert!(
        metrics.contains("dime_packager_running{channel=\"camera\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE dime_packager_segments_total counter"),
        "{metrics}"
    );

    let dir = media.path().join("camera");
    let (status, log) = packager.stop(libc::SIGTERM);
    assert!(status.success(), "exit {status:?}\n{log}");
    assert!(log.contains("live packager stopped cleanly"), "{log}");

    let text = fs::read_to_string(dir.join("index.m3u8")).unwrap();
    assert_eq!(tag(&text, "#EXT-X-TARGETDURATION"), Some("1"), "{text}");
    assert!(
        !text.contains("#EXT-X-ENDLIST"),
        "a live channel that may restart has no end list"
    );
    let segments = extinfs(&text);
    assert_eq!(segments.len(), 3, "{text}");
    // Sequence continuity: the listed names are the media sequence numbers, consecutive.
    let first: u64 = tag(&text, "#EXT-X-MEDIA-SEQUENCE")
        .unwrap()
        .parse()
        .unwrap();
    for (i, (_, uri)) in segments.iter().enumerate() {
        assert_eq!(uri, &format!("segment-{}.ts", first + i as u64), "{text}");
    }
    // Exact durations, except the last one, cut short by the shutdown.
    let (last, full) = segments.split_last().unwrap();
    for (seconds, uri) in full {
        assert!(
            (seconds - 1.0).abs() < 0.005,
            "{uri} lasts {seconds} s\n{text}"
        );
    }
    // A stop right after a keyframe leaves that frame in the last segment: up to 16 frames.
    assert!(last.0 > 0.0 && last.0 <= 1.072, "{text}");
    let frames = last.0 * 15.0;
    assert!(
        (frames - frames.round()).abs() < 0.02,
        "the last segment lasts a whole number of frames, its last one included\n{text}"
    );
    // Program date times are as far apart as the durations say.
    let dates = program_date_times(&text);
    assert_eq!(dates.len(), 3);
    for (pair, (seconds, _)) in dates.windows(2).zip(full) {
        let gap = pair[1].duration_since(pair[0]).unwrap().as_secs_f64();
        assert!(
            (gap - seconds).abs() < 0.002,
            "gap {gap} for {seconds}\n{text}"
        );
    }
    // The last segment is listed and complete: it decodes like the others.
    assert_segments_decode(&dir, &text);
    let hidden: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.') && n != ".lock")
        .collect();
    assert!(hidden.is_empty(), "temporary files left: {hidden:?}");
    assert!(
        dir.join(".lock").is_file(),
        "the channel lock stays, hidden from the streamer"
    );
}

#[test]
fn a_restart_continues_the_sequence_and_never_rewrites_a_segment() {
    let media = tempfile::tempdir().unwrap();
    let dir = media.path().join("camera");
    // A window the restart's segments cannot fill: on a busy machine more than one can be
    // written between the log line this test waits for and the signal that stops it.
    let args = small_with_window("10");
    let mut first = Packager::start(media.path(), "camera", &args);
    first.wait_for_segments(2);
    let (status, log) = first.stop(libc::SIGINT);
    assert!(status.success(), "exit {status:?}\n{log}");
    let before = segment_bytes(&dir);
    let old_text = fs::read_to_string(dir.join("index.m3u8")).unwrap();
    let old_last = extinfs(&old_text).last().unwrap().1.clone();

    let mut second = Packager::start(media.path(), "camera", &args);
    // One segment plus the one the shutdown finalises (and any written before the signal
    // lands): the window of 10 still shows the old tail.
    second.wait_for_segments(1);
    let (status, log) = second.stop(libc::SIGTERM);
    assert!(status.success(), "exit {status:?}\n{log}");

    let after = segment_bytes(&dir);
    for (name, bytes) in &before {
        if let Some(now) = after.get(name) {
            assert!(now == bytes, "{name} was rewritten with different bytes");
        }
    }
    let text = fs::read_to_string(dir.join("index.m3u8")).unwrap();
    let uris: Vec<String> = extinfs(&text).into_iter().map(|(_, uri)| uri).collect();
    let old_number: u64 = old_last["segment-".len()..old_last.len() - 3]
        .parse()
        .unwrap();
    let resumed = format!("segment-{}.ts", old_number + 1);
    let at = uris
        .iter()
        .position(|u| *u == resumed)
        .unwrap_or_else(|| panic!("{resumed} not in\n{text}"));
    assert!(
        at > 0,
        "the old window's tail is still listed before the restart\n{text}"
    );
    // The restart is marked right before its first segment, and only there.
    let block = text.split(&format!("{}\n", uris[at - 1])).nth(1).unwrap();
    assert!(
        block.starts_with("#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:"),
        "{text}"
    );
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{text}");
    assert_segments_decode(&dir, &text);
}

#[test]
fn a_missing_camera_exits_1_naming_the_device_and_the_fixes() {
    let media = tempfile::tempdir().unwrap();
    let device = media.path().join("video9");
    let out = media.path().to_str().unwrap();
    let (status, text) = run(&[
        "packager",
        "--out",
        out,
        "--channel",
        "camera",
        "--device",
        device.to_str().unwrap(),
    ]);
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "dime-origin: no camera at {}: plug one in, pass --device /dev/videoN, or use --test-pattern",
            device.display()
        )),
        "{text}"
    );
    assert!(
        !media.path().join("camera").exists(),
        "nothing is created for a failed start"
    );
}

#[test]
fn a_device_that_is_not_a_camera_is_refused_with_the_reason() {
    let media = tempfile::tempdir().unwrap();
    let (status, text) = run(&[
        "packager",
        "--out",
        media.path().to_str().unwrap(),
        "--channel",
        "camera",
        "--device",
        "/dev/null",
    ]);
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains("dime-origin: cannot open the camera at /dev/null: "),
        "{text}"
    );
    assert!(text.contains("or use --test-pattern"), "{text}");
}

#[test]
fn device_auto_falls_back_to_the_test_pattern_when_no_camera_works() {
    let has_cameras = fs::read_dir("/dev").unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("video")
    });
    let media = tempfile::tempdir().unwrap();
    let mut extra: Vec<&str> = SMALL
        .iter()
        .copied()
        .filter(|a| *a != "--test-pattern")
        .collect();
    extra.extend(["--device", "auto"]);
    let mut packager = Packager::start(media.path(), "auto", &extra);
    let started = packager.wait_for_log("live packager starting");
    if has_cameras {
        // A machine with a camera uses it, or says why not and falls back.
        assert!(started.contains("source=/dev/video") || started.contains("source=test-pattern"));
    } else {
        packager.wait_for_log("found no usable camera; using the test pattern");
        assert!(started.contains("source=test-pattern"), "{started}");
    }
    packager.wait_for_segments(1);
    let (status, log) = packager.stop(libc::SIGTERM);
    assert!(status.success(), "{log}");
}

#[test]
fn bad_options_are_refused_before_anything_starts() {
    let media = tempfile::tempdir().unwrap();
    let out = media.path().to_str().unwrap();
    let base = ["packager", "--out", out, "--test-pattern"];

    let (status, text) = run(&[&base[..], &["--channel", "../escape"]].concat());
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("invalid --channel \"../escape\""), "{text}");

    let (status, text) = run(&[&base[..], &["--channel", "c", "--part", "200ms"]].concat());
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains("--part (low-latency HLS) needs --format cmaf"),
        "{text}"
    );

    for (part, segment) in [("50ms", "1s"), ("400ms", "1s")] {
        let (status, text) = run(&[
            &base[..],
            &["--channel", "c", "--fps", "15", "--format", "cmaf"],
            &["--part", part, "--segment", segment],
        ]
        .concat());
        assert_eq!(status.code(), Some(1), "{part}: {text}");
        assert!(
            text.contains(
                "a part must be a whole number of frames and a segment a whole number of parts"
            ),
            "{part}: {text}"
        );
    }

    let (status, text) = run(&[&base[..], &["--channel", "c", "--size", "321x180"]].concat());
    assert_eq!(status.code(), Some(2), "{text}");
    assert!(text.contains("width and height must be even"), "{text}");

    let (status, text) = run(&[
        &base[..],
        &["--channel", "c", "--fps", "15", "--segment", "1100ms"],
    ]
    .concat());
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("is not a whole number of frames"), "{text}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, text) = run(&[
        &base[..],
        &["--channel", "c", "--health-listen", addr.as_str()],
    ]
    .concat());
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("cannot listen on {addr} for --health-listen")),
        "{text}"
    );

    let (status, text) = run(&[
        "packager",
        "--out",
        out,
        "--channel",
        "c",
        "--test-pattern",
        "--device",
        "/dev/video1",
    ]);
    assert_eq!(status.code(), Some(2), "{text}");
    assert!(text.contains("cannot be used with"), "{text}");
}

#[test]
fn the_sample_and_vod_tools_make_a_playable_title() {
    let media = tempfile::tempdir().unwrap();
    let sample: PathBuf = media.path().join("sample.mp4");
    let (status, text) = run(&[
        "packager",
        "sample",
        "--out",
        sample.to_str().unwrap(),
        "--duration",
        "3s",
        "--size",
        "320x180",
        "--fps",
        "15",
    ]);
    assert!(status.success(), "{text}");
    assert_eq!(ffprobe(&sample).streams, ["h264 Main yuv420p", "aac LC"]);

    let title = media.path().join("vod/sample");
    let (status, text) = run(&[
        "packager",
        "vod",
        "--input",
        sample.to_str().unwrap(),
        "--out",
        title.to_str().unwrap(),
        "--segment",
        "1s",
    ]);
    assert!(status.success(), "{text}");
    let playlist = fs::read_to_string(title.join("index.m3u8")).unwrap();
    assert!(playlist.ends_with("#EXT-X-ENDLIST\n"), "{playlist}");
    assert_eq!(extinfs(&playlist).len(), 3, "{playlist}");
    assert!(title.join("poster.jpg").is_file());

    // Packaging into an existing title is refused, and says so.
    let (status, text) = run(&[
        "packager",
        "vod",
        "--input",
        sample.to_str().unwrap(),
        "--out",
        title.to_str().unwrap(),
    ]);
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains("already exists; remove it or package into another directory"),
        "{text}"
    );
}

#[test]
fn a_failure_while_running_exits_1_with_the_cause() {
    let media = tempfile::tempdir().unwrap();
    let mut packager = Packager::start(media.path(), "camera", SMALL);
    packager.wait_for_segments(1);
    // The channel directory disappears under the running packager (a wiped volume).
    fs::remove_dir_all(media.path().join("camera")).unwrap();
    let (status, log) = packager.wait_exit();
    assert_eq!(status.code(), Some(1), "{log}");
    let dir = media.path().join("camera");
    let error = log
        .lines()
        .find(|l| l.starts_with("dime-origin: "))
        .expect(&log);
    assert!(
        error.contains(&dir.display().to_string()),
        "the error names the place: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_streamer_serves_the_live_channel_it_writes() {
    let origin = streamer::Origin::start().await;
    // As `make run`: --out MEDIA/live --channel camera, so the URL is /live/camera/index.m3u8.
    let mut packager = Packager::start(&origin.root().join("live"), "camera", SMALL);
    tokio::task::block_in_place(|| packager.wait_for_segments(2));

    let response = origin.get("/live/camera/index.m3u8").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        streamer::header(&response, "content-type"),
        "application/vnd.apple.mpegurl"
    );
    let text = response.text().await.unwrap();
    let segments = extinfs(&text);
    assert!(segments.len() >= 2, "{text}");
    for (_, uri) in &segments {
        let response = origin
            .get(&format!("/live/camera/{uri}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{uri}");
        assert_eq!(streamer::header(&response, "content-type"), "video/mp2t");
        let body = response.bytes().await.unwrap();
        let on_disk = fs::read(origin.root().join("live/camera").join(uri)).unwrap();
        assert!(body == on_disk, "{uri} is served as written");
    }
    let (status, log) = tokio::task::block_in_place(|| packager.stop(libc::SIGTERM));
    assert!(status.success(), "{log}");
}

/// The media sequence number and part index of a part URI (`segment-9.2.m4s`).
fn part_numbers(uri: &str) -> (u64, u64) {
    let numbers = uri.trim_start_matches("segment-").trim_end_matches(".m4s");
    let (msn, part) = numbers.split_once('.').unwrap();
    (msn.parse().unwrap(), part.parse().unwrap())
}

/// GET `path`: the status, content type, body and how long the whole answer took.
async fn timed_get(origin: &streamer::Origin, path: String) -> (u16, String, Vec<u8>, Duration) {
    let started = Instant::now();
    let r = origin.get(&path).send().await.unwrap();
    let status = r.status().as_u16();
    let content_type = streamer::header(&r, "content-type").to_string();
    let body = r.bytes().await.unwrap().to_vec();
    (status, content_type, body, started.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_streamer_holds_blocking_reloads_and_hinted_parts_until_the_packager_writes_them() {
    let origin = streamer::Origin::start().await;
    let mut args = SMALL.to_vec();
    args.extend(["--format", "cmaf", "--part", "200ms"]);
    let mut packager = Packager::start(&origin.root().join("live"), "camera", &args);
    tokio::task::block_in_place(|| packager.wait_for_segments(1));
    let get = |path: String| timed_get(&origin, path);
    let playlist = "/live/camera/index.m3u8";
    let (_, _, text, _) = get(playlist.to_string()).await;
    let (_, hint) = parts_and_hint(std::str::from_utf8(&text).unwrap());
    let hint = hint.unwrap();
    let (msn, part) = part_numbers(&hint);

    // The hinted part and the playlist that lists it, asked for before either exists: both
    // are held until the packager writes them, then answered (parts come every 200 ms).
    let (part_answer, reload) = tokio::join!(
        get(format!("/live/camera/{hint}")),
        get(format!("{playlist}?_HLS_msn={msn}&_HLS_part={part}")),
    );
    let (status, content_type, body, took) = part_answer;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "video/iso.segment"),
        "{hint}"
    );
    let on_disk = fs::read(origin.root().join("live/camera").join(&hint)).unwrap();
    assert!(body == on_disk, "{hint} is served as written");
    assert!(took < Duration::from_secs(2), "{hint} took {took:?}");
    let (status, _, text, took) = reload;
    let text = String::from_utf8(text.to_vec()).unwrap();
    assert_eq!(status, 200, "{text}");
    let (parts, _) = parts_and_hint(&text);
    assert!(parts.contains(&hint), "the reload lists {hint}\n{text}");
    assert!(took < Duration::from_secs(2), "the reload took {took:?}");

    // Asked for at once: a part already listed, a segment already complete.
    let (status, _, _, took) = get(format!("{playlist}?_HLS_msn={}", msn - 1)).await;
    assert_eq!(status, 200);
    assert!(took < Duration::from_millis(500), "{took:?}");
    // An answer to a blocking reload lists what was asked for as long as the playlist lists
    // parts, three target durations (1 s here); the playlist itself, the streamer's default.
    let answer = origin
        .get(&format!("{playlist}?_HLS_msn={}", msn - 1))
        .send()
        .await
        .unwrap();
    assert_eq!(
        streamer::header(&answer, "cache-control"),
        "public, max-age=3"
    );
    let plain = origin.get(playlist).send().await.unwrap();
    assert_eq!(
        streamer::header(&plain, "cache-control"),
        "public, max-age=1"
    );

    // Refused at once: too far ahead, a part without a segment, a part never hinted.
    let (status, _, text, _) = get(format!("{playlist}?_HLS_msn={}", msn + 10)).await;
    assert_eq!(status, 400);
    assert!(std::str::from_utf8(&text)
        .unwrap()
        .contains("more than two segments past"));
    let (status, _, text, _) = get(format!("{playlist}?_HLS_part=1")).await;
    assert_eq!(
        (status, &text[..]),
        (400, &b"_HLS_part needs _HLS_msn\n"[..])
    );
    let (status, _, _, took) = get(format!("/live/camera/segment-{}.0.m4s", msn + 5)).await;
    assert_eq!(status, 404);
    assert!(took < Duration::from_millis(500), "{took:?}");

    // Stopped, the stream never gets there: a reload is answered 503 after three target
    // durations (1 s segments).
    let (status, log) = tokio::task::block_in_place(|| packager.stop(libc::SIGTERM));
    assert!(status.success(), "{log}");
    let (_, _, text, _) = get(playlist.to_string()).await;
    let (_, hint) = parts_and_hint(std::str::from_utf8(&text).unwrap());
    let (msn, _) = part_numbers(&hint.unwrap());
    let (status, _, text, took) = get(format!("{playlist}?_HLS_msn={msn}")).await;
    assert_eq!(
        (status, &text[..]),
        (503, &b"not in the playlist after 3 s\n"[..])
    );
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn a_second_packager_for_the_same_channel_is_refused() {
    let media = tempfile::tempdir().unwrap();
    let mut first = Packager::start(media.path(), "camera", SMALL);
    first.wait_for_log("live packager starting");
    let mut args = vec![
        "packager",
        "--out",
        media.path().to_str().unwrap(),
        "--channel",
        "camera",
    ];
    args.extend_from_slice(SMALL);
    let (status, text) = run(&args);
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "{} is already being packaged by another process",
            media.path().join("camera").display()
        )),
        "{text}"
    );
    let (status, log) = first.stop(libc::SIGTERM);
    assert!(
        status.success(),
        "the first one carries on undisturbed: {log}"
    );
}

/// Decodes `init + segment` as one file, as a player does with EXT-X-MAP.
fn assert_cmaf_segment_decodes(dir: &Path, init: &str, uri: &str) {
    let joined = tempfile::NamedTempFile::new().unwrap();
    let mut bytes = fs::read(dir.join(init)).unwrap();
    bytes.extend(fs::read(dir.join(uri)).unwrap());
    fs::write(joined.path(), bytes).unwrap();
    assert_main_420_from_a_keyframe(joined.path(), uri);
}

#[test]
fn a_cmaf_channel_has_an_init_section_per_run_and_m4s_segments() {
    let media = tempfile::tempdir().unwrap();
    let dir = media.path().join("camera");
    let mut args = SMALL.to_vec();
    args.extend(["--format", "cmaf"]);

    let mut first = Packager::start(media.path(), "camera", &args);
    first.wait_for_segments(2);
    let (status, log) = first.stop(libc::SIGTERM);
    assert!(status.success(), "{log}");
    let text = fs::read_to_string(dir.join("index.m3u8")).unwrap();
    assert!(text.starts_with("#EXTM3U\n#EXT-X-VERSION:7\n"), "{text}");
    assert_eq!(
        tag(&text, "#EXT-X-MAP"),
        Some("URI=\"init-0.mp4\""),
        "{text}"
    );
    let segments = extinfs(&text);
    assert_eq!(segments.len(), 3, "{text}");
    for (i, (seconds, uri)) in segments.iter().enumerate() {
        assert_eq!(uri, &format!("segment-{i}.m4s"));
        if i < 2 {
            assert!(
                (seconds - 1.0).abs() < 0.005,
                "{uri} lasts {seconds} s\n{text}"
            );
        }
        assert_cmaf_segment_decodes(&dir, "init-0.mp4", uri);
    }
    let init = fs::read(dir.join("init-0.mp4")).unwrap();

    // A restart gets its own init section: the old URL keeps its bytes.
    let mut second = Packager::start(media.path(), "camera", &args);
    second.wait_for_segments(1);
    let (status, log) = second.stop(libc::SIGTERM);
    assert!(status.success(), "{log}");
    let text = fs::read_to_string(dir.join("index.m3u8")).unwrap();
    assert!(
        text.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-3.mp4\"\n"),
        "{text}"
    );
    assert_eq!(fs::read(dir.join("init-0.mp4")).unwrap(), init);
    assert_cmaf_segment_decodes(&dir, "init-3.mp4", "segment-3.m4s");
}

/// The `EXT-X-PART` URIs of `text` and the preload hint's, in order.
fn parts_and_hint(text: &str) -> (Vec<String>, Option<String>) {
    let uri = |line: &str| {
        let start = line.find("URI=\"").unwrap() + 5;
        line[start..][..line[start..].find('"').unwrap()].to_string()
    };
    let parts = text
        .lines()
        .filter(|l| l.starts_with("#EXT-X-PART:"))
        .map(uri)
        .collect();
    let hint = text
        .lines()
        .find(|l| l.starts_with("#EXT-X-PRELOAD-HINT:"))
        .map(uri);
    (parts, hint)
}

#[test]
fn a_low_latency_channel_writes_parts_as_they_are_muxed_under_a_playlist_that_follows_the_rules() {
    let media = tempfile::tempdir().unwrap();
    let dir = media.path().join("camera");
    let mut args = SMALL.to_vec();
    args.extend(["--format", "cmaf", "--part", "200ms"]);
    let mut packager = Packager::start(media.path(), "camera", &args);
    packager.wait_for_segments(1);

    // Every playlist seen while it runs follows the LL-HLS rules, and its hint comes true:
    // the part it names is written next, within about a part.
    let mut hints = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let text = fs::read_to_string(dir.join("index.m3u8")).unwrap();
        assert_eq!(dime_packager::ll_rules::check(&text), vec![], "{text}");
        let (parts, hint) = parts_and_hint(&text);
        let hint = hint.unwrap_or_else(|| panic!("no preload hint\n{text}"));
        assert!(!parts.contains(&hint), "{text}");
        let written = Instant::now();
        while !dir.join(&hint).exists() {
            assert!(
                written.elapsed() < Duration::from_secs(1),
                "{hint} was not written\n{text}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        hints += 1;
    }
    assert!(hints >= 10, "only {hints} hints followed in 3 s");
    let (status, log) = packager.stop(libc::SIGTERM);
    assert!(status.success(), "{log}");

    let text = fs::read_to_string(dir.join("index.m3u8")).unwrap();
    assert_eq!(dime_packager::ll_rules::check(&text), vec![], "{text}");
    assert!(
        text.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.60000\n#EXT-X-PART-INF:PART-TARGET=0.20000\n"),
        "{text}"
    );
    let (parts, hint) = parts_and_hint(&text);
    let segments = extinfs(&text);
    // Stopped, the channel hints at the first part a restart writes.
    let next = segments.len() as u64
        + tag(&text, "#EXT-X-MEDIA-SEQUENCE")
            .unwrap()
            .parse::<u64>()
            .unwrap();
    assert_eq!(hint, Some(format!("segment-{next}.0.m4s")), "{text}");
    for (i, (seconds, uri)) in segments.iter().enumerate() {
        // A segment is its parts' bytes, in order; its first part plays from a key frame.
        let sequence = uri.trim_start_matches("segment-").trim_end_matches(".m4s");
        let own: Vec<&String> = parts
            .iter()
            .filter(|p| p.starts_with(&format!("segment-{sequence}.")))
            .collect();
        // Five parts of 200 ms, but the last segment ends at the drain.
        if i + 1 < segments.len() {
            assert_eq!(
                own.len(),
                5,
                "{uri} ({seconds} s) has parts {own:?}\n{text}"
            );
        }
        let joined: Vec<u8> = own
            .iter()
            .flat_map(|p| fs::read(dir.join(p)).unwrap())
            .collect();
        assert_eq!(joined, fs::read(dir.join(uri)).unwrap(), "{uri}");
        assert_cmaf_segment_decodes(&dir, "init-0.mp4", own[0]);
        assert_cmaf_segment_decodes(&dir, "init-0.mp4", uri);
    }

    // A restart writes the hinted part first, and never new bytes under an old part's URL.
    let before = segment_bytes(&dir);
    let mut again = Packager::start(media.path(), "camera", &args);
    again.wait_for_segments(1);
    let (status, log) = again.stop(libc::SIGTERM);
    assert!(status.success(), "{log}");
    let hinted = hint.unwrap();
    assert!(
        dir.join(&hinted).is_file(),
        "{hinted} was not written: {log}"
    );
    let after = segment_bytes(&dir);
    for (name, bytes) in &before {
        if let Some(now) = after.get(name) {
            assert!(now == bytes, "{name} was rewritten");
        }
    }
}

#[test]
fn old_segments_leave_the_disk_a_window_after_the_playlist() {
    let media = tempfile::tempdir().unwrap();
    let dir = media.path().join("camera");
    let args = small_with_window("1");
    let mut packager = Packager::start(media.path(), "camera", &args);
    packager.wait_for_segments(4);
    let (status, log) = packager.stop(libc::SIGTERM);
    assert!(status.success(), "{log}");
    let text = fs::read_to_string(dir.join("index.m3u8")).unwrap();
    let listed: u64 = tag(&text, "#EXT-X-MEDIA-SEQUENCE")
        .unwrap()
        .parse()
        .unwrap();
    let mut on_disk: Vec<u64> = segment_bytes(&dir)
        .keys()
        .map(|n| n["segment-".len()..n.len() - 3].parse().unwrap())
        .collect();
    on_disk.sort();
    // One segment listed, one more kept for players and caches a little behind.
    assert_eq!(on_disk, [listed - 1, listed], "{text}");
}

/// Runs the binary with `env` added to its environment: exit status, stdout and stderr together.
fn run_env(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

#[test]
fn help_names_the_environment_variable_of_every_live_flag() {
    let (status, help) = run(&["packager", "--help"]);
    assert!(status.success(), "{help}");
    for variable in [
        "DIME_PACKAGER_OUT",
        "DIME_PACKAGER_CHANNEL",
        "DIME_PACKAGER_DEVICE",
        "DIME_PACKAGER_TEST_PATTERN",
        "DIME_PACKAGER_SIZE",
        "DIME_PACKAGER_FPS",
        "DIME_PACKAGER_BITRATE",
        "DIME_PACKAGER_FORMAT",
        "DIME_PACKAGER_SEGMENT",
        "DIME_PACKAGER_WINDOW",
        "DIME_PACKAGER_HEALTH_LISTEN",
    ] {
        assert!(
            help.contains(&format!("[env: {variable}")),
            "{variable} missing from:\n{help}"
        );
    }
}

#[test]
fn the_live_packager_takes_its_configuration_from_the_environment_and_the_tools_ignore_it() {
    let media = tempfile::tempdir().unwrap();
    let out = media.path().to_str().unwrap();
    // A taken health port stops the packager before GStreamer starts: the error shows that
    // the channel's every setting was read from the environment, with no flag given.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let env = [
        ("DIME_PACKAGER_OUT", out),
        ("DIME_PACKAGER_CHANNEL", "env-channel"),
        ("DIME_PACKAGER_TEST_PATTERN", "true"),
        ("DIME_PACKAGER_SIZE", "320x180"),
        ("DIME_PACKAGER_FPS", "15"),
        ("DIME_PACKAGER_SEGMENT", "1s"),
        ("DIME_PACKAGER_HEALTH_LISTEN", addr.as_str()),
    ];
    let (status, text) = run_env(&["packager"], &env);
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("cannot listen on {addr} for --health-listen")),
        "{text}"
    );

    // A value from the environment is checked like a flag's.
    let (status, text) = run_env(
        &["packager"],
        &[
            ("DIME_PACKAGER_OUT", out),
            ("DIME_PACKAGER_CHANNEL", "../escape"),
            ("DIME_PACKAGER_TEST_PATTERN", "true"),
        ],
    );
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("invalid --channel \"../escape\""), "{text}");

    // The live settings in the environment do not stand in the way of a tool.
    let sample = media.path().join("sample.mp4");
    let (status, text) = run_env(
        &[
            "packager",
            "sample",
            "--out",
            sample.to_str().unwrap(),
            "--duration",
            "1s",
            "--size",
            "160x90",
        ],
        &env,
    );
    assert!(status.success(), "{text}");
    assert!(sample.exists());
}
