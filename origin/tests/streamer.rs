//! Scenarios for `dime-origin streamer`, each against a real server on a loopback port.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dime_origin_testing::streamer::{header, Origin, RawResponse};
use dime_streamer::CachePolicy;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SEGMENT: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
const MEDIA_CACHE: &str = "public, max-age=31536000, immutable";

// ---- content types and caching ----

#[tokio::test]
async fn each_extension_gets_its_content_type() {
    let origin = Origin::start().await;
    let cases = [
        ("index.m3u8", "application/vnd.apple.mpegurl"),
        ("manifest.mpd", "application/dash+xml"),
        ("seg.ts", "video/mp2t"),
        ("seg.m4s", "video/iso.segment"),
        ("vod.mp4", "video/mp4"),
        ("audio.m4a", "audio/mp4"),
        ("audio.aac", "audio/aac"),
        ("subs.vtt", "text/vtt"),
        ("poster.jpg", "image/jpeg"),
        ("poster.JPEG", "image/jpeg"),
        ("poster.png", "image/png"),
        ("poster.webp", "image/webp"),
        ("meta.json", "application/json"),
        ("page.html", "text/html; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("app.js", "text/javascript; charset=utf-8"),
        ("notes.txt", "text/plain; charset=utf-8"),
        ("blob.bin", "application/octet-stream"),
        ("LICENSE", "application/octet-stream"),
    ];
    for (name, content_type) in cases {
        origin.write(name, SEGMENT);
        let response = origin.get(&format!("/{name}")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{name}");
        assert_eq!(header(&response, "content-type"), content_type, "{name}");
    }
}

#[tokio::test]
async fn playlists_are_short_lived_and_segments_immutable() {
    let origin = Origin::start().await;
    let cases = [
        ("live/index.m3u8", "public, max-age=1"),
        ("live/seg_001.ts", MEDIA_CACHE),
        ("live/seg_001.m4s", MEDIA_CACHE),
        ("live/init.mp4", MEDIA_CACHE),
        ("vod/movie.mp4", MEDIA_CACHE),
        ("vod/audio.m4a", MEDIA_CACHE),
        ("vod/audio.aac", MEDIA_CACHE),
        ("live/subs_001.vtt", MEDIA_CACHE),
        ("poster.png", "public, max-age=300"),
    ];
    for (name, cache_control) in cases {
        origin.write(name, SEGMENT);
        let response = origin.get(&format!("/{name}")).send().await.unwrap();
        assert_eq!(header(&response, "cache-control"), cache_control, "{name}");
    }
}

#[tokio::test]
async fn cache_lifetimes_are_configurable() {
    let origin = Origin::start_with(|config| config.cache = CachePolicy::new(2, 600, 30)).await;
    origin.write("index.m3u8", "#EXTM3U\n");
    origin.write("seg.ts", SEGMENT);
    origin.write("poster.png", SEGMENT);
    let cache_control = |path: &'static str| {
        let request = origin.get(path).send();
        async move { header(&request.await.unwrap(), "cache-control").to_owned() }
    };
    assert_eq!(cache_control("/index.m3u8").await, "public, max-age=2");
    assert_eq!(
        cache_control("/seg.ts").await,
        "public, max-age=600, immutable"
    );
    assert_eq!(cache_control("/poster.png").await, "public, max-age=30");
}

// ---- validators and conditional requests (RFC 9110 §8.8, §13) ----

#[tokio::test]
async fn files_carry_validators_and_length() {
    let origin = Origin::start().await;
    origin.write("seg.ts", SEGMENT);
    let response = origin.get("/seg.ts").send().await.unwrap();
    let etag = header(&response, "etag");
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "{etag}"
    );
    assert!(httpdate::parse_http_date(header(&response, "last-modified")).is_ok());
    assert_eq!(header(&response, "accept-ranges"), "bytes");
    assert_eq!(
        header(&response, "content-length"),
        SEGMENT.len().to_string()
    );
    assert_eq!(response.bytes().await.unwrap(), SEGMENT);
}

#[tokio::test]
async fn a_replaced_playlist_gets_a_new_etag() {
    let origin = Origin::start().await;
    origin.write("index.m3u8", "#EXTM3U\n#1\n");
    let before = origin.get("/index.m3u8").send().await.unwrap();
    // Same length, same second: the packager's write-then-rename still changes the inode.
    origin.write(".index.m3u8.tmp", "#EXTM3U\n#2\n");
    std::fs::rename(
        origin.root().join(".index.m3u8.tmp"),
        origin.root().join("index.m3u8"),
    )
    .unwrap();
    let after = origin.get("/index.m3u8").send().await.unwrap();
    assert_ne!(header(&before, "etag"), header(&after, "etag"));
}

#[tokio::test]
async fn if_none_match_with_the_current_etag_is_not_modified() {
    let origin = Origin::start().await;
    origin.write("seg.ts", SEGMENT);
    let first = origin.get("/seg.ts").send().await.unwrap();
    let etag = header(&first, "etag").to_owned();
    for if_none_match in [
        etag.clone(),
        "*".to_owned(),
        format!("\"stale\", {etag}"),
        format!("W/{etag}"),
    ] {
        let response = origin
            .get("/seg.ts")
            .header("if-none-match", &if_none_match)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::NOT_MODIFIED,
            "{if_none_match}"
        );
        assert_eq!(header(&response, "etag"), etag);
        assert_eq!(
            header(&response, "last-modified"),
            header(&first, "last-modified")
        );
        assert_eq!(header(&response, "cache-control"), MEDIA_CACHE);
        assert!(response.bytes().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn if_none_match_with_another_etag_gets_the_file() {
    let origin = Origin::start().await;
    origin.write("seg.ts", SEGMENT);
    let response = origin
        .get("/seg.ts")
        .header("if-none-match", "\"other\", W/\"more\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap(), SEGMENT);
}

#[tokio::test]
async fn head_with_matching_if_none_match_is_not_modified() {
    let origin = Origin::start().await;
    origin.write("seg.ts", SEGMENT);
    let etag = header(&origin.get("/seg.ts").send().await.unwrap(), "etag").to_owned();
    let response = origin
        .client
        .head(origin.url("/seg.ts"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn if_modified_since_last_modified_is_not_modified() {
    let origin = Origin::start().await;
    origin.write_aged("poster.png", SEGMENT, Duration::from_secs(3600));
    let first = origin.get("/poster.png").send().await.unwrap();
    let last_modified = header(&first, "last-modified").to_owned();

    let unchanged = origin
        .get("/poster.png")
        .header("if-modified-since", &last_modified)
        .send()
        .await
        .unwrap();
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&unchanged, "etag"), header(&first, "etag"));

    let long_ago = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(86_400));
    let changed = origin
        .get("/poster.png")
        .header("if-modified-since", long_ago)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
}

#[tokio::test]
async fn if_modified_since_is_ignored_when_if_none_match_is_sent() {
    let origin = Origin::start().await;
    origin.write_aged("poster.png", SEGMENT, Duration::from_secs(3600));
    let now = httpdate::fmt_http_date(SystemTime::now());
    let response = origin
        .get("/poster.png")
        .header("if-none-match", "\"other\"")
        .header("if-modified-since", now)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn if_match_with_another_etag_fails() {
    let origin = Origin::start().await;
    origin.write("seg.ts", SEGMENT);
    let etag = header(&origin.get("/seg.ts").send().await.unwrap(), "etag").to_owned();

    let stale = origin
        .get("/seg.ts")
        .header("if-match", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);

    // RFC 9110 §13.1.1: If-Match uses the strong comparison, so a weak tag fails too.
    let weak = origin
        .get("/seg.ts")
        .header("if-match", format!("W/{etag}"))
        .send()
        .await
        .unwrap();
    assert_eq!(weak.status(), StatusCode::PRECONDITION_FAILED);

    let current = origin
        .get("/seg.ts")
        .header("if-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(current.status(), StatusCode::OK);
}

#[tokio::test]
async fn if_unmodified_since_before_last_modified_fails() {
    let origin = Origin::start().await;
    origin.write("seg.ts", SEGMENT);
    let long_ago = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(86_400));
    let response = origin
        .get("/seg.ts")
        .header("if-unmodified-since", long_ago)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED);
}

#[tokio::test]
async fn a_file_dated_before_1970_is_served() {
    let origin = Origin::start().await;
    let path = origin.write("old.ts", SEGMENT);
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(UNIX_EPOCH - Duration::from_secs(86_400 * 365))
        .unwrap();
    let response = origin.get("/old.ts").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "last-modified"),
        "Thu, 01 Jan 1970 00:00:00 GMT"
    );
}

// ---- ranges (RFC 9110 §14) ----

/// GETs `/seg.ts` (holding [`SEGMENT`]) with `Range: range`.
async fn get_range(origin: &Origin, range: &str) -> reqwest::Response {
    origin.write("seg.ts", SEGMENT);
    origin
        .get("/seg.ts")
        .header("range", range)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn single_ranges_get_exactly_their_bytes() {
    let origin = Origin::start().await;
    let size = SEGMENT.len();
    let cases = [
        ("bytes=0-9", 0..10),
        ("bytes=10-", 10..size),
        ("bytes=-6", size - 6..size),
        ("bytes=30-1000", 30..size),
    ];
    for (range, expected) in cases {
        let response = get_range(&origin, range).await;
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            header(&response, "content-range"),
            format!("bytes {}-{}/{size}", expected.start, expected.end - 1),
            "{range}"
        );
        assert_eq!(
            header(&response, "content-length"),
            expected.len().to_string()
        );
        assert_eq!(header(&response, "content-type"), "video/mp2t");
        assert_eq!(
            response.bytes().await.unwrap(),
            &SEGMENT[expected],
            "{range}"
        );
    }
}

#[tokio::test]
async fn a_range_past_the_end_is_unsatisfiable() {
    let origin = Origin::start().await;
    for range in ["bytes=36-", "bytes=100-200", "bytes=-0"] {
        let response = get_range(&origin, range).await;
        assert_eq!(
            response.status(),
            StatusCode::RANGE_NOT_SATISFIABLE,
            "{range}"
        );
        assert_eq!(header(&response, "content-range"), "bytes */36", "{range}");
    }
}

#[tokio::test]
async fn several_ranges_get_the_whole_file() {
    let origin = Origin::start().await;
    let response = get_range(&origin, "bytes=0-1, 5-9").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap(), SEGMENT);
}

#[tokio::test]
async fn a_malformed_range_is_ignored() {
    let origin = Origin::start().await;
    for range in ["bytes=9-1", "bytes=x-y", "pages=1-2", "bytes"] {
        let response = get_range(&origin, range).await;
        assert_eq!(response.status(), StatusCode::OK, "{range}");
        assert_eq!(response.bytes().await.unwrap(), SEGMENT, "{range}");
    }
}

#[tokio::test]
async fn if_range_with_a_stale_validator_gets_the_whole_file() {
    let origin = Origin::start().await;
    origin.write("seg.ts", SEGMENT);
    for if_range in ["\"stale\"", "Thu, 01 Jan 1970 00:00:00 GMT", "garbage"] {
        let response = origin
            .get("/seg.ts")
            .header("range", "bytes=0-3")
            .header("if-range", if_range)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{if_range}");
        assert_eq!(response.bytes().await.unwrap(), SEGMENT, "{if_range}");
    }
}

#[tokio::test]
async fn if_range_with_the_current_validator_gets_the_range() {
    let origin = Origin::start().await;
    origin.write_aged("seg.ts", SEGMENT, Duration::from_secs(60));
    let first = origin.get("/seg.ts").send().await.unwrap();
    let validators = [header(&first, "etag"), header(&first, "last-modified")];
    for if_range in validators {
        let response = origin
            .get("/seg.ts")
            .header("range", "bytes=0-3")
            .header("if-range", if_range)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "{if_range}");
        assert_eq!(response.bytes().await.unwrap(), &SEGMENT[..4]);
    }
}

// ---- methods ----

#[tokio::test]
async fn head_has_the_headers_of_get_and_no_body() {
    let origin = Origin::start().await;
    origin.write("vod.mp4", SEGMENT);
    let response = origin
        .raw("HEAD /vod.mp4 HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-length"),
        Some(SEGMENT.len().to_string().as_str())
    );
    assert_eq!(response.header("content-type"), Some("video/mp4"));
    assert!(response.header("etag").is_some());
    assert!(response.body.is_empty());
}

#[tokio::test]
async fn other_methods_are_not_allowed() {
    let origin = Origin::start().await;
    origin.write("seg.ts", SEGMENT);
    for method in [
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let response = origin
            .client
            .request(method.clone(), origin.url("/seg.ts"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method}"
        );
        assert_eq!(header(&response, "allow"), "GET, HEAD");
    }
}

// ---- what is never served ----

#[tokio::test]
async fn dotfiles_are_not_found() {
    let origin = Origin::start().await;
    origin.write(".env", "SECRET=1");
    origin.write(".hidden/file.ts", SEGMENT);
    origin.write("live/.index.m3u8.tmp", "#EXTM3U\n");
    for path in [
        "/.env",
        "/.hidden/file.ts",
        "/live/.index.m3u8.tmp",
        "/%2eenv",
    ] {
        let response = origin.raw_get(path).await;
        assert_eq!(response.status, 404, "{path}");
    }
}

#[tokio::test]
async fn traversal_never_leaves_the_root() {
    let origin = Origin::start().await;
    let response = origin.raw_get("/../etc/passwd").await;
    assert!(matches!(response.status, 400 | 404), "{}", response.status);
    assert!(!String::from_utf8_lossy(&response.body).contains("root:"));

    let response = origin.raw_get("/live/../../etc/passwd").await;
    assert!(matches!(response.status, 400 | 404), "{}", response.status);
    assert!(!String::from_utf8_lossy(&response.body).contains("root:"));
}

#[tokio::test]
async fn encoded_traversal_and_smuggled_bytes_are_bad_requests() {
    let origin = Origin::start().await;
    origin.write("secret", "in the root, but not by that name");
    for path in [
        "/%2e%2e/%2e%2e/etc/passwd",
        "/%2E%2e/%2e%2E/etc/passwd",
        "/..%2fsecret",
        "/a/..%2F..%2fsecret",
        "/..%5csecret",
        "/seg%00.ts",
        "/%ff.ts",
        "/%zz.ts",
    ] {
        let response = origin.raw_get(path).await;
        assert_eq!(response.status, 400, "{path}");
    }
}

#[tokio::test]
async fn a_symlink_out_of_the_root_is_not_found() {
    let origin = Origin::start().await;
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.ts");
    std::fs::write(&secret, "outside").unwrap();
    std::os::unix::fs::symlink(&secret, origin.root().join("leak.ts")).unwrap();
    std::os::unix::fs::symlink(outside.path(), origin.root().join("leakdir")).unwrap();

    for path in ["/leak.ts", "/leakdir/secret.ts"] {
        let response = origin.raw_get(path).await;
        assert_eq!(response.status, 404, "{path}");
        assert!(!String::from_utf8_lossy(&response.body).contains("outside"));
    }
}

#[tokio::test]
async fn a_symlink_within_the_root_is_served_with_its_own_name() {
    let origin = Origin::start().await;
    origin.write("vod/v1/movie.mp4", SEGMENT);
    std::os::unix::fs::symlink("v1/movie.mp4", origin.root().join("vod/latest.mp4")).unwrap();
    origin.write("live/.next.bin", SEGMENT);
    std::os::unix::fs::symlink(".next.bin", origin.root().join("live/next.ts")).unwrap();

    let response = origin.get("/vod/latest.mp4").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-type"), "video/mp4");
    // A visible name does not unhide a hidden target.
    let response = origin.get("/live/next.ts").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn directories_are_not_listed() {
    let origin = Origin::start().await;
    origin.write("live/index.m3u8", "#EXTM3U\n");
    for path in ["/", "/live", "/live/"] {
        let response = origin.get(path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn a_missing_file_is_not_found_and_cacheable_for_a_second() {
    // A cache in front answers the viewers asking for a segment before it is written, and
    // sees it a second later.
    let origin = Origin::start().await;
    let response = origin.get("/live/seg_999.ts").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&response, "cache-control"), "public, max-age=1");
}

#[tokio::test]
async fn the_not_found_lifetime_is_configurable_and_zero_means_no_store() {
    let origin = Origin::start_with(|config| {
        config.cache = CachePolicy::default().with_not_found_max_age(3)
    })
    .await;
    let response = origin.get("/live/seg_999.ts").send().await.unwrap();
    assert_eq!(header(&response, "cache-control"), "public, max-age=3");
    let origin = Origin::start_with(|config| {
        config.cache = CachePolicy::default().with_not_found_max_age(0)
    })
    .await;
    let response = origin.get("/live/seg_999.ts").send().await.unwrap();
    assert_eq!(header(&response, "cache-control"), "no-store");
}

#[tokio::test]
async fn refused_paths_are_never_cacheable() {
    let origin = Origin::start().await;
    let response = origin.raw_get("/seg%00.ts").await;
    assert_eq!(response.status, 400);
    assert_eq!(response.header("cache-control"), Some("no-store"));
}

// ---- operations ----

#[tokio::test]
async fn healthz_answers_ok() {
    let origin = Origin::start().await;
    let response = origin.get("/healthz").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "content-type"),
        "text/plain; charset=utf-8"
    );
    assert_eq!(response.text().await.unwrap(), "ok");
}

#[tokio::test]
async fn a_large_file_streams_intact() {
    const SIZE: u64 = 64 * 1024 * 1024;
    let origin = Origin::start().await;
    let path = origin.root().join("big.mp4");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(SIZE).unwrap();
    // Marks at the edges of the file and of the 256 KiB chunks; the rest is a sparse hole.
    let marks: [u64; 5] = [
        0,
        256 * 1024 - 3,
        32 * 1024 * 1024 + 7,
        SIZE - 1024,
        SIZE - 8,
    ];
    for offset in marks {
        std::os::unix::fs::FileExt::write_all_at(&file, &offset.to_be_bytes(), offset).unwrap();
    }

    let response = origin.get("/big.mp4").send().await.unwrap();
    assert_eq!(header(&response, "content-length"), SIZE.to_string());
    let body = response.bytes().await.unwrap();
    assert_eq!(body.len() as u64, SIZE);
    for offset in marks {
        let at = offset as usize;
        assert_eq!(body[at..at + 8], offset.to_be_bytes(), "mark at {offset}");
    }
    assert!(body[1024..2048].iter().all(|&b| b == 0));

    let tail = get_bytes(&origin, "/big.mp4", "bytes=-8").await;
    assert_eq!(tail, (SIZE - 8).to_be_bytes());
}

/// The body of a ranged GET.
async fn get_bytes(origin: &Origin, path: &str, range: &str) -> Vec<u8> {
    let response = origin
        .get(path)
        .header("range", range)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    response.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served_on_the_same_port() {
    let origin = Origin::start().await;
    origin.write("seg.m4s", SEGMENT);
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = client.get(origin.url("/seg.m4s")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(header(&response, "content-type"), "video/iso.segment");
    assert_eq!(response.bytes().await.unwrap(), SEGMENT);
}

#[tokio::test]
async fn one_connection_serves_several_requests() {
    let origin = Origin::start().await;
    origin.write("seg.ts", SEGMENT);
    let mut stream = TcpStream::connect(origin.addr).await.unwrap();
    stream
        .write_all(b"GET /seg.ts HTTP/1.1\r\nHost: origin\r\n\r\n")
        .await
        .unwrap();
    // Read exactly one response: head, then Content-Length bytes.
    let mut first = Vec::new();
    let mut byte = [0u8; 1];
    while !first.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        first.push(byte[0]);
    }
    let mut body = vec![0u8; SEGMENT.len()];
    stream.read_exact(&mut body).await.unwrap();
    first.extend_from_slice(&body);
    assert_eq!(RawResponse::parse(&first).body, SEGMENT);

    stream
        .write_all(b"GET /seg.ts HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut second = Vec::new();
    stream.read_to_end(&mut second).await.unwrap();
    let second = RawResponse::parse(&second);
    assert_eq!(second.status, 200);
    assert_eq!(second.body, SEGMENT);
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_download_finish_then_closes_the_port() {
    const SIZE: usize = 8 * 1024 * 1024;
    let origin = Origin::start().await;
    origin.write("big.mp4", vec![7u8; SIZE]);
    let addr = origin.addr;
    let response = origin.get("/big.mp4").send().await.unwrap();

    let stopping = tokio::spawn(origin.stop());
    let body = response.bytes().await.unwrap();
    assert_eq!(body.len(), SIZE);
    stopping.await.unwrap();
    assert!(TcpStream::connect(addr).await.is_err());
}

// ---- the binary ----

/// Runs `dime-origin` with `args` to completion.
fn run_binary(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dime-origin"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_missing_root_is_a_clear_startup_error() {
    let output = run_binary(&[
        "streamer",
        "--root",
        "/nonexistent/dime-media",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/dime-media"), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn a_file_as_root_is_a_clear_startup_error() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let root = file.path().to_str().unwrap();
    let output = run_binary(&["streamer", "--root", root, "--listen", "127.0.0.1:0"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(root), "{stderr}");
    assert!(stderr.contains("not a directory"), "{stderr}");
}

#[test]
fn a_busy_or_bad_listen_address_is_a_clear_startup_error() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path().to_str().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = busy.local_addr().unwrap().to_string();

    let output = run_binary(&["streamer", "--root", root, "--listen", &busy]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&busy), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let output = run_binary(&["streamer", "--root", root, "--listen", "not-an-address"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not-an-address"), "{stderr}");
}

#[test]
fn the_binary_logs_its_address_and_exits_cleanly_on_sigterm() {
    let root = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dime-origin"))
        .args([
            "--log-format",
            "json",
            "streamer",
            "--listen",
            "127.0.0.1:0",
            "--root",
        ])
        .arg(root.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let listening = lines
        .by_ref()
        .map(Result::unwrap)
        .find(|line| line.contains("streamer listening"))
        .expect("startup log line");
    assert!(listening.contains("\"addr\":\"127.0.0.1:"), "{listening}");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(child.wait().unwrap().success());
}

#[test]
fn help_names_every_server_and_promises_none_for_later() {
    let output = Command::new(env!("CARGO_BIN_EXE_dime-origin"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for server in ["streamer", "packager", "web"] {
        assert!(help.contains(server), "{server} missing from:\n{help}");
    }
    assert!(!help.contains("later"), "{help}");
}

#[test]
fn help_names_the_environment_variable_of_every_flag() {
    let output = run_binary(&["streamer", "--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for variable in [
        "DIME_STREAMER_ROOT",
        "DIME_STREAMER_LISTEN",
        "DIME_STREAMER_PLAYLIST_MAX_AGE",
        "DIME_STREAMER_MEDIA_MAX_AGE",
        "DIME_STREAMER_OTHER_MAX_AGE",
        "DIME_STREAMER_NOT_FOUND_MAX_AGE",
        "DIME_STREAMER_GRACE_PERIOD",
        "DIME_LOG_FORMAT",
    ] {
        assert!(
            help.contains(&format!("[env: {variable}")),
            "{variable} missing from:\n{help}"
        );
    }
}

#[tokio::test]
async fn the_streamer_takes_its_whole_configuration_from_the_environment() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("seg.ts"), SEGMENT).unwrap();
    std::fs::write(root.path().join("poster.png"), SEGMENT).unwrap();
    // No flag at all after the subcommand: every setting comes from a variable.
    let mut child = Command::new(env!("CARGO_BIN_EXE_dime-origin"))
        .arg("streamer")
        .env("DIME_LOG_FORMAT", "json")
        .env("DIME_STREAMER_ROOT", root.path())
        .env("DIME_STREAMER_LISTEN", "127.0.0.1:0")
        .env("DIME_STREAMER_MEDIA_MAX_AGE", "600")
        .env("DIME_STREAMER_OTHER_MAX_AGE", "30")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let listening = BufReader::new(stdout)
        .lines()
        .map(Result::unwrap)
        .find(|line| line.contains("streamer listening"))
        .expect("startup log line");
    let addr = listening
        .split("\"addr\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the address in the log line")
        .to_owned();
    let client = reqwest::Client::new();
    for (path, expected) in [
        ("/seg.ts", "public, max-age=600, immutable"),
        ("/poster.png", "public, max-age=30"),
    ] {
        let response = client
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&response, "cache-control"), expected, "{path}");
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(child.wait().unwrap().success());
}
