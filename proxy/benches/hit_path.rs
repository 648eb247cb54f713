//! The edge's own work on a cache hit, piece by piece in the order a hit runs them, then
//! chained: `make microbench` (or `cargo bench -p dime-edge --bench hit_path -- FILTER`).
//!
//! Each piece calls the edge's code through `dime_edge::microbench`, which adds none of its
//! own. pingora's part of a hit (parsing, the store lookup, writing the response) is not here:
//! `make bench` measures the whole, against nginx and Varnish. The numbers compare two builds
//! on one machine; they are never results to quote.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use dime_edge::cache::CacheStatus;
use dime_edge::logging::{self, AccessRecord, LogFormat};
use dime_edge::microbench::{self as hit, Routes};
use http::{HeaderMap, HeaderValue, Uri, Version};
use pingora_http::ResponseHeader;

/// A live and a VoD service, the web app and an uncached API, on a few hosts: the routes a
/// production edge has, with `config/reference.toml`'s live route.
const CONFIG: &str = r#"
[listen]
http = ["127.0.0.1:8080"]

[pools.streamers]
backends = ["127.0.0.1:8081", "127.0.0.1:8082"]
selection = "consistent_hash"

[pools.web]
backends = ["127.0.0.1:8083"]

[[routes]]
name = "live"
host = "*.example.com"
path = "/stream/"
pool = "streamers"
strip_prefix = true
response_headers = { "Access-Control-Allow-Origin" = "*" }

[routes.cache]
mode = "video"
target_duration = "2s"
keep_query = ["_HLS_msn", "_HLS_part"]
targeted_fields = ["Dime-Cache-Control", "CDN-Cache-Control", "Surrogate-Control"]

[[routes]]
name = "live-eu"
host = "eu.cdn.example.com"
path = "/stream/"
pool = "streamers"
strip_prefix = true

[routes.cache]
mode = "video"

[[routes]]
name = "vod"
path = "/vod/"
pool = "streamers"

[routes.cache]
mode = "video"

[[routes]]
name = "api"
path = "/api/"
pool = "web"

[routes.cache]
mode = "off"

[[routes]]
name = "web"
path = "/"
pool = "web"
"#;

/// A viewer's request for the live playlist, as HTTP/1.1 brings it: a token the key drops,
/// the blocking-reload parameter it keeps.
const TARGET: &str = "/stream/live/index.m3u8?token=eyJhbGciOiJIUzI1NiJ9.e30.c2ln&_HLS_msn=1042";
const HOST: &str = "CDN.Example.com";

/// The length of the stored playlist's body, as its `Content-Length` says.
const STORED_BODY_LEN: usize = 450;

/// The stored response a hit serves: the origin's live playlist.
fn stored_playlist() -> ResponseHeader {
    let mut resp = ResponseHeader::build(200, Some(8)).unwrap();
    for (name, value) in [
        ("content-type", "application/vnd.apple.mpegurl"),
        ("cache-control", "public, max-age=1"),
        ("etag", "\"65f1c0de-1c2\""),
        ("last-modified", "Wed, 13 Mar 2024 16:20:14 GMT"),
        ("date", "Wed, 13 Mar 2024 16:20:15 GMT"),
        ("content-length", "450"),
        ("age", "0"),
    ] {
        resp.append_header(name, value).unwrap();
    }
    resp
}

fn request() -> (Uri, HeaderMap) {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::HOST, HeaderValue::from_static(HOST));
    (TARGET.parse().unwrap(), headers)
}

fn canonicalize(c: &mut Criterion) {
    let mut g = c.benchmark_group("1 canonicalize path");
    for (name, path) in [
        ("playlist", "/stream/live/index.m3u8"),
        ("segment", "/stream/live/seg_001042.ts"),
        (
            "escapes and dot segments",
            "/stream//live/./%73eg_001042.ts",
        ),
    ] {
        g.bench_function(name, |b| b.iter(|| hit::canonicalize(black_box(path))));
    }
    g.finish();
}

fn route(c: &mut Criterion) {
    let routes = Routes::from_config(CONFIG);
    let (uri, headers) = request();
    let mut g = c.benchmark_group("2 route lookup");
    g.bench_function("request host", |b| {
        b.iter(|| hit::request_host(black_box(&uri), black_box(&headers)))
    });
    g.bench_function("normalize host", |b| {
        b.iter(|| hit::normalize_host(black_box(HOST)))
    });
    g.bench_function("lookup in 5 routes", |b| {
        b.iter(|| {
            hit::lookup(
                &routes,
                black_box("cdn.example.com"),
                black_box("/stream/live/index.m3u8"),
            )
        })
    });
    g.finish();
}

fn cache_key(c: &mut Criterion) {
    let keep = vec!["_HLS_msn".to_string(), "_HLS_part".to_string()];
    let path = "/stream/live/index.m3u8";
    let query = TARGET.split_once('?').map(|(_, q)| q);
    let mut g = c.benchmark_group("3 cache key");
    g.bench_function("no query", |b| {
        b.iter(|| hit::cache_key(black_box(HOST), black_box(path), None, Some(&keep)))
    });
    g.bench_function("token dropped, _HLS_msn kept", |b| {
        b.iter(|| hit::cache_key(black_box(HOST), black_box(path), query, Some(&keep)))
    });
    g.bench_function("key text alone, _HLS_msn kept", |b| {
        b.iter(|| hit::key_text(black_box(HOST), black_box(path), query, Some(&keep)))
    });
    g.finish();
}

fn response_headers(c: &mut Criterion) {
    let routes = Routes::from_config(CONFIG);
    let route = hit::lookup(&routes, "cdn.example.com", "/stream/live/index.m3u8").unwrap();
    let stored = stored_playlist();
    let mut g = c.benchmark_group("4 response headers");
    // A plain GET over HTTP/1.1: the header kept with the object.
    let kept = hit::keep_hit_header(&stored, STORED_BODY_LEN, &route).expect("kept");
    g.bench_function("kept for the route, plain GET over HTTP/1.1", |b| {
        b.iter(|| hit::kept_hit_header(black_box(&kept), &route).unwrap())
    });
    // What the first such hit does once, and every other hit (HEAD, ranges, conditional
    // requests, HTTP/1.0 and HTTP/2) each time, field by field.
    g.bench_function("built once for the route", |b| {
        b.iter(|| hit::keep_hit_header(black_box(&stored), STORED_BODY_LEN, &route).unwrap())
    });
    g.bench_function("stored playlist, HTTP/1.1, field by field", |b| {
        b.iter_batched(
            || stored.clone(),
            |mut resp| {
                hit::response_headers(&mut resp, Version::HTTP_11, CacheStatus::Hit, &route)
                    .unwrap();
                resp
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn metrics(c: &mut Criterion) {
    let routes = Routes::from_config(CONFIG);
    let route = hit::lookup(&routes, "cdn.example.com", "/stream/live/index.m3u8").unwrap();
    let hit_status = CacheStatus::Hit.as_str();
    let mut g = c.benchmark_group("5 metrics record");
    g.bench_function("hit", |b| {
        b.iter(|| {
            hit::record(
                &route,
                black_box(200),
                black_box(0.000_35),
                black_box(450),
                hit_status,
                true,
                false,
            )
        })
    });
    g.finish();
}

fn access_log(c: &mut Criterion) {
    let client: SocketAddr = "198.51.100.23:50412".parse().unwrap();
    let record = AccessRecord {
        client: Some(&client),
        method: "GET",
        host: HOST,
        path: TARGET,
        status: 200,
        bytes: 450,
        duration: Duration::from_micros(350),
        route: "live",
        backend: None,
        cache: CacheStatus::Hit.as_str(),
        error: None,
        request_id: "5f3a9c0e00000001",
    };
    let mut out = Vec::with_capacity(64 << 10);
    let mut g = c.benchmark_group("6 access log line");
    for (name, format) in [("text", LogFormat::Text), ("json", LogFormat::Json)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                hit::access_line(&mut out, format, black_box(&record), SystemTime::now()).unwrap();
            })
        });
    }
    g.finish();
}

/// The question pingora-core asks before writing each body slice: is it in a body file? Among
/// 1,000 stored segments' files, for a playlist's body (on the heap, every 1 KB hit asks) and a
/// slice of a segment (sent with sendfile).
fn body_file(c: &mut Criterion) {
    let segments = hit::body_files(1000, 256 << 10);
    let playlist = bytes::Bytes::from(vec![b'#'; 1024]);
    let slice = segments[500].slice(4096..(128 << 10));
    assert!(hit::in_body_file(&slice), "the segments are in files");
    let mut g = c.benchmark_group("7 body file lookup");
    g.bench_function("playlist body, not in a file", |b| {
        b.iter(|| hit::in_body_file(black_box(&playlist)))
    });
    g.bench_function("segment slice, in a file", |b| {
        b.iter(|| hit::in_body_file(black_box(&slice)))
    });
    g.finish();
}

/// Every piece above, chained as the edge runs them on one hit.
fn whole(c: &mut Criterion) {
    let routes = Routes::from_config(CONFIG);
    let (uri, headers) = request();
    let stored = stored_playlist();
    let route = hit::lookup(&routes, "cdn.example.com", "/stream/live/index.m3u8").unwrap();
    let kept = hit::keep_hit_header(&stored, STORED_BODY_LEN, &route).expect("kept");
    let client: SocketAddr = "198.51.100.23:50412".parse().unwrap();
    let mut out = Vec::with_capacity(64 << 10);
    let mut g = c.benchmark_group("whole hit path (our code)");
    g.bench_function("live playlist, HTTP/1.1", |b| {
        b.iter(|| {
            let request_id = logging::RequestId::next();
            let raw_host = hit::request_host(&uri, &headers);
            let path = hit::canonicalize(uri.path()).unwrap();
            let host = hit::normalize_host(&raw_host);
            let route = hit::lookup(&routes, &host, &path).unwrap();
            let key = hit::cache_key(&raw_host, &path, uri.query(), route.keep_query());
            let head = hit::kept_hit_header(&kept, &route).unwrap();
            let cache = CacheStatus::Hit.as_str();
            hit::record(&route, 200, 0.000_35, 450, cache, true, false);
            out.clear();
            let record = AccessRecord {
                client: Some(&client),
                method: "GET",
                host: &raw_host,
                path: uri.path_and_query().map_or("/", |p| p.as_str()),
                status: 200,
                bytes: 450,
                duration: Duration::from_micros(350),
                route: route.name(),
                backend: None,
                cache,
                error: None,
                request_id: &request_id,
            };
            hit::access_line(&mut out, LogFormat::Text, &record, SystemTime::now()).unwrap();
            (key, head)
        })
    });
    g.finish();
}

criterion_group! {
    name = hit_path;
    // Short runs: a piece takes nanoseconds, and the point is an answer in under a minute.
    // `-- --warm-up-time N --measurement-time N` overrides both.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = canonicalize, route, cache_key, response_headers, metrics, access_log, body_file, whole
}
criterion_main!(hit_path);
