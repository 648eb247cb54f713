//! Origins that break HTTP (the chaos suite's first part): for each way, a viewer gets a 502 or
//! a cut connection, never a body that looks whole but is not; nothing is stored, so the next
//! request asks the origin again; and the edge logs the cause. Over a plain cached route and a
//! video route (whose misses fill in the background), since the two fail in different places.
//! A viewer's own oversized header is refused before it reaches any origin.

use crate::common;

use std::time::{Duration, Instant};

use common::raw_origin::{End, RawOrigin};
use common::{cached_edge, client, EdgeProc, Upstream};

/// What a viewer saw.
#[derive(Debug)]
enum Seen {
    /// A whole response, with its status.
    Whole(u16),
    /// A response header, then the connection cut before the body was whole.
    Cut,
}

impl Seen {
    /// How the table says it.
    fn said(&self) -> String {
        match self {
            Seen::Whole(status) => status.to_string(),
            Seen::Cut => "a cut".to_string(),
        }
    }

    /// A failure the viewer can tell from a success.
    fn is_honest_failure(&self) -> bool {
        matches!(self, Seen::Whole(502 | 504) | Seen::Cut)
    }
}

async fn view(url: &str) -> Seen {
    let r = client().get(url).send().await.expect("a response header");
    let status = r.status().as_u16();
    match r.bytes().await {
        Ok(_) => Seen::Whole(status),
        Err(_) => Seen::Cut,
    }
}

/// One way an origin breaks HTTP, and what the edge's log must say of it.
struct Fault {
    name: &'static str,
    response: Vec<u8>,
    end: End,
    cause: &'static str,
}

/// A response header that would be stored for a minute, with `fields` added.
fn head(fields: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\n{fields}\r\n").into_bytes()
}

fn then(mut bytes: Vec<u8>, more: &[u8]) -> Vec<u8> {
    bytes.extend_from_slice(more);
    bytes
}

fn faults() -> Vec<Fault> {
    let x = |n: usize| vec![b'x'; n];
    let many: String = (0..1000).map(|i| format!("x-{i}: 1\r\n")).collect();
    let big: String = (0..1700)
        .map(|i| format!("x-big-{i:04}: {}\r\n", "a".repeat(50)))
        .collect();
    vec![
        Fault {
            name: "invalid chunked encoding",
            response: then(
                head("transfer-encoding: chunked\r\n"),
                b"5\r\nhello\r\nZZZ\r\nmore\r\n0\r\n\r\n",
            ),
            end: End::Close,
            cause: "InvalidChunk",
        },
        Fault {
            name: "Content-Length longer than the body",
            response: then(head("content-length: 100\r\n"), &x(50)),
            end: End::Close,
            cause: "50 bytes of body remaining",
        },
        Fault {
            name: "Content-Length shorter than the body",
            response: then(head("content-length: 10\r\n"), &x(20)),
            end: End::Close,
            cause: "the origin sent 10 bytes past its Content-Length of 10",
        },
        Fault {
            name: "malformed status line",
            response: b"HTTP/1.1 2x0 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            end: End::Close,
            cause: "invalid response status",
        },
        Fault {
            name: "100 KB of header fields",
            response: then(head(&format!("{big}content-length: 2\r\n")), b"ok"),
            end: End::Close,
            cause: "too many headers",
        },
        Fault {
            name: "1,000 header fields",
            response: then(head(&format!("{many}content-length: 2\r\n")), b"ok"),
            end: End::Close,
            cause: "too many headers",
        },
        Fault {
            name: "a body that never ends",
            response: then(head("content-length: 1000000\r\n"), &x(100)),
            end: End::Hang,
            cause: "ReadTimedout (reading body, timeout: 1s)",
        },
        Fault {
            name: "a chunked body that never ends",
            response: then(head("transfer-encoding: chunked\r\n"), b"5\r\nhello\r\n"),
            end: End::Hang,
            cause: "ReadTimedout (reading body, timeout: 1s)",
        },
        Fault {
            name: "a reset mid-body",
            response: then(head("content-length: 100000\r\n"), &x(1000)),
            end: End::Reset,
            cause: "Connection reset by peer",
        },
        Fault {
            name: "a close before the last chunk",
            response: then(head("transfer-encoding: chunked\r\n"), b"5\r\nhello\r\n"),
            end: End::Close,
            cause: "without the termination chunk",
        },
    ]
}

/// An edge with one route to `origin`, cached in `mode`; no retries, so each viewer request
/// is one origin request, and a 1 s read timeout.
async fn edge_for(origin: &RawOrigin, mode: &str) -> EdgeProc {
    EdgeProc::start(&format!(
        "[pools.p]\nbackends = [\"{}\"]\nread_timeout = \"1s\"\nretries = 0\n\n\
         [[routes]]\npath = \"/\"\npool = \"p\"\n\n[routes.cache]\nmode = \"{mode}\"\n",
        origin.addr
    ))
    .await
}

/// Every fault, through a route cached in `mode`.
async fn each_fault(mode: &str) {
    for fault in faults() {
        let origin = RawOrigin::start(fault.response, fault.end).await;
        let edge = edge_for(&origin, mode).await;
        let url = edge.url("/live/seg1.ts");
        let first = view(&url).await;
        let asked = origin.requests();
        assert!(
            first.is_honest_failure(),
            "{}: the viewer saw {first:?}\n{}",
            fault.name,
            edge.logs()
        );
        // Nothing was stored: the next viewer's request goes to the origin again.
        let second = view(&url).await;
        assert!(second.is_honest_failure(), "{}: {second:?}", fault.name);
        assert!(
            origin.requests() > asked,
            "{}: the second request was answered from the cache\n{}",
            fault.name,
            edge.logs()
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while !warned(&edge, fault.cause) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            warned(&edge, fault.cause),
            "{}: no warning says {:?}\n{}",
            fault.name,
            fault.cause,
            edge.logs()
        );
        common::figure(
            &format!("Origin: {} ({mode} route)", fault.name),
            &format!(
                "viewers saw {} then {}; origin asked {} times; WARN names the cause",
                first.said(),
                second.said(),
                origin.requests()
            ),
        );
    }
}

fn warned(edge: &EdgeProc, cause: &str) -> bool {
    edge.logs()
        .lines()
        .any(|l| l.contains("WARN") && l.contains(cause))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_origin_is_a_502_or_a_cut_connection_never_stored_and_logged() {
    each_fault("rfc").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_origin_behind_a_background_fill_is_a_502_or_a_cut_never_stored_and_logged() {
    each_fault("video").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_header_past_the_limit_is_431_and_never_reaches_the_origin() {
    let origin = Upstream::start("o").await;
    // 64 KB of fields against the default limit (32 KiB).
    let edge = cached_edge(&origin, "", "").await;
    let field = "b".repeat(8_000);
    let mut req = client().get(edge.url("/big"));
    for i in 0..8 {
        req = req.header(format!("x-field-{i}"), field.as_str());
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 431);
    assert_eq!(r.headers()["connection"], "close");
    let text = r.text().await.unwrap();
    assert!(text.contains("request header fields too large"), "{text}");
    assert!(text.contains("past the 32768-byte limit"), "{text}");
    assert_eq!(origin.hits(), 0);
    // 2 KB passes under the default, and is refused under a 1 KiB limit.
    let two_kb = "c".repeat(2_000);
    let r = client()
        .get(edge.url("/small"))
        .header("x-field", two_kb.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let tight = cached_edge(
        &origin,
        "",
        "[server]\nmax_request_header_size = \"1KiB\"\n",
    )
    .await;
    let r = client()
        .get(tight.url("/small"))
        .header("x-field", two_kb.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    assert_eq!(origin.hits(), 1);
    common::figure(
        "A request with 64 KB of header fields",
        "431, connection closed; origin asked 0 times",
    );
}
