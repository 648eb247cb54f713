//! RFC 9111 conformance, ages and error statuses: how the `Age` field is read (§5.1, §4.2.3),
//! a response served from what the edge stored carries its current age (§4.2.3) and its stored
//! `Date` (§4),
//! and a 202 or 403 with only a `Last-Modified` is passed through, never reused (§4.2.2).

use crate::common;

use std::time::{Duration, SystemTime};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use common::upstream::Script;
use common::{cached_edge, fetch, Upstream};

const BODY: &str = "the representation";

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_age_is_ignored_and_a_listed_one_is_read_from_its_first_member() {
    // RFC 9111 §5.1 (`Age = delta-seconds`), §4.2.3 (`age_value` is 0 when not available) and
    // §1.2.2, with the HTTP cache test suite's cases (`age-parse-*`): a value that is not a
    // non-negative integer is ignored, a list (one line or several) counts by its first
    // member, parameters do not count, and a value too big is 2^31. "Old" is 7200 s against a
    // max-age of 3600: such a response is stale on arrival, and the second viewer's request
    // goes to the origin again; a fresh one is a hit.
    let cases: &[(&[&str], &str, bool)] = &[
        (&["abc"], "max-age=3600", true),
        (&["-7200"], "max-age=3600", true),
        (&["7200.0"], "max-age=3600", true),
        (&["2147483647"], "max-age=3600", false),
        (&["2147483648"], "max-age=3600", false),
        (&["7200, 0"], "max-age=3600", false),
        (&["0, 7200"], "max-age=3600", true),
        (&["7200", "0"], "max-age=3600", false),
        (&["0", "7200"], "max-age=3600", true),
        (&["0, 0"], "max-age=3600", true),
        (&["0", "0"], "max-age=3600", true),
        (&["3600", "3600"], "max-age=10000", true),
        (&["7200;foo=bar"], "max-age=3600", false),
        (&["7200;foo=111"], "max-age=3600", false),
        (&["30"], "max-age=3600", true),
    ];
    let origin = Upstream::start("o").await;
    let path = |i: usize| format!("/age/{i}");
    for (i, (lines, cc, _)) in cases.iter().enumerate() {
        let mut headers = vec![("cache-control", *cc)];
        headers.extend(lines.iter().map(|l| ("age", *l)));
        origin.script(&path(i), Script::ok(&headers, BODY));
    }
    let edge = cached_edge(&origin, "", "").await;
    let mut failures = Vec::new();
    for (i, (lines, _, fresh)) in cases.iter().enumerate() {
        let url = edge.url(&path(i));
        let first = fetch(&url, &[]).await;
        let second = fetch(&url, &[]).await;
        assert_eq!((first.status, &first.body[..]), (200, BODY.as_bytes()));
        assert_eq!((second.status, &second.body[..]), (200, BODY.as_bytes()));
        let asked = origin.hits_for(&path(i));
        let reused = second.cache() == "HIT" && asked == 1;
        if reused != *fresh {
            failures.push(format!(
                "Age {lines:?}: second answer {}, origin asked {asked} times, expected {}",
                second.cache(),
                if *fresh { "a hit" } else { "a new fetch" }
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The `Age` a response carries, in seconds.
fn age_of(r: &common::Fetched) -> u64 {
    r.header("age")
        .parse()
        .unwrap_or_else(|_| panic!("no Age on a {} answer: {:?}", r.cache(), r.headers))
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_from_the_cache_carry_the_age_from_age_date_and_the_response_delay() {
    // RFC 9111 §4.2.3: corrected_initial_age = max(apparent_age, age_value + response_delay),
    // and the age sent is that plus the time spent in the edge's store (§5.1).
    let origin = Upstream::start("o").await;
    let mut aged = Script::ok(&[("cache-control", "max-age=3600"), ("age", "30")], BODY);
    aged.header_delay = Duration::from_secs(2);
    origin.script("/aged", aged);
    // No Age, but a Date 100 s in the past: the apparent age, less the fraction of a second
    // the Date cut off (so 99 s or more).
    let old = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(100));
    origin.script(
        "/dated",
        Script::ok(&[("cache-control", "max-age=3600"), ("date", &old)], BODY),
    );
    let edge = cached_edge(&origin, "", "").await;

    // Age 30 when it left the cache upstream, 2 s more on the way: at least 32 s old, on the
    // miss that stored it as on the hits after.
    let miss = fetch(&edge.url("/aged"), &[]).await;
    assert_eq!(miss.cache(), "MISS");
    let hit = fetch(&edge.url("/aged"), &[]).await;
    assert_eq!(hit.cache(), "HIT");
    for r in [&miss, &hit] {
        let age = age_of(r);
        assert!((32..=40).contains(&age), "{}: Age {age}", r.cache());
    }
    assert!(age_of(&hit) >= age_of(&miss));
    assert_eq!(origin.hits_for("/aged"), 1);

    let miss = fetch(&edge.url("/dated"), &[]).await;
    let hit = fetch(&edge.url("/dated"), &[]).await;
    assert_eq!((miss.cache(), hit.cache()), ("MISS", "HIT"));
    for r in [&miss, &hit] {
        let age = age_of(r);
        assert!((99..=110).contains(&age), "{}: Age {age}", r.cache());
    }
    assert_eq!(origin.hits_for("/dated"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stored_date_is_sent_as_stored_over_http1_and_http2() {
    // RFC 9111 §4 and RFC 9110 §6.6.1: the edge passes the origin's Date on and sends a stored
    // response with the Date it was stored with; its own clock goes only on answers that have
    // none. Pingora writes its clock over Date unless
    // proxy/vendor/pingora-core.patch is applied.
    let origin = Upstream::start("o").await;
    let old = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(100));
    origin.script(
        "/dated",
        Script::ok(&[("cache-control", "max-age=3600"), ("date", &old)], BODY),
    );
    let edge = cached_edge(&origin, "", "").await;
    let miss = fetch(&edge.url("/dated"), &[]).await;
    let hit = fetch(&edge.url("/dated"), &[]).await;
    assert_eq!((miss.cache(), hit.cache()), ("MISS", "HIT"));
    assert_eq!(miss.header("date"), old);
    assert_eq!(hit.header("date"), old);

    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2.get(edge.url("/dated")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.headers()["x-cache-status"], "HIT");
    assert_eq!(r.headers()["date"], old.as_str());
    assert_eq!(origin.hits_for("/dated"), 1);

    // An answer of the edge's own (a path with a NUL in it is refused) gets the edge's clock.
    let own = fetch(&edge.url("/a%00.ts"), &[]).await;
    assert_eq!(own.status, 400);
    let date = own.header("date");
    let at = httpdate::parse_http_date(date).unwrap();
    let skew = SystemTime::now()
        .duration_since(at)
        .unwrap_or_else(|e| e.duration());
    assert!(skew < Duration::from_secs(5), "the edge's own Date {date}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_response_from_the_origin_has_no_age() {
    // RFC 9111 §5.1: Age says the response was not generated for this request; a miss the
    // origin answered at once is not aged.
    let origin = Upstream::start("o").await;
    origin.script(
        "/new",
        Script::ok(&[("cache-control", "max-age=3600")], BODY),
    );
    let edge = cached_edge(&origin, "", "").await;
    let miss = fetch(&edge.url("/new"), &[]).await;
    assert_eq!(miss.cache(), "MISS");
    // `Date` has a one-second granularity, so a response can look a second old; never `Age: 0`.
    assert!(matches!(miss.header("age"), "" | "1"), "{:?}", miss.headers);
}

/// One HTTP/1.1 answer read off a kept-alive connection.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads one answer: its head, then (unless it answers a HEAD) a body framed by Content-Length
/// or chunked coding.
async fn read_answer(conn: &mut BufReader<TcpStream>, head_request: bool) -> Answer {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = conn.read_line(&mut line).await.expect("read head");
        assert!(n > 0, "connection closed mid-head, after {head:?}");
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let mut answer = Answer {
        status,
        head,
        body: Vec::new(),
    };
    if head_request {
        return answer;
    }
    if let Some(len) = answer.header("content-length") {
        let mut body = vec![0u8; len.parse().expect("Content-Length")];
        conn.read_exact(&mut body).await.expect("body");
        answer.body = body;
    } else if answer
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            conn.read_line(&mut size).await.expect("chunk size");
            let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            let mut chunk = vec![0u8; size + 2];
            conn.read_exact(&mut chunk).await.expect("chunk");
            if size == 0 {
                break;
            }
            answer.body.extend_from_slice(&chunk[..size]);
        }
    }
    answer
}

#[tokio::test(flavor = "multi_thread")]
async fn a_202_or_403_with_only_last_modified_is_passed_through_and_not_reused() {
    // RFC 9111 §4.2.2 with RFC 9110 §15.1: neither status is heuristically cacheable, so
    // without explicit freshness nothing may be reused. Each answer arrives whole and the
    // viewer's connection stays open for the next request, which goes to the origin again.
    let origin = Upstream::start("o").await;
    let old = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(3600));
    for status in [202u16, 403] {
        let headers = [("last-modified", old.as_str())];
        origin.script(
            &format!("/s{status}"),
            Script::ok(&headers, BODY).status(status),
        );
    }
    let edge = cached_edge(&origin, "", "").await;
    for status in [202u16, 403] {
        let path = format!("/s{status}");
        let stream = TcpStream::connect(edge.http).await.expect("connect");
        let mut conn = BufReader::new(stream);
        // A plain GET, one that holds the Last-Modified it was given (a 403 is no 200: it
        // never becomes a 304), a HEAD, and a plain GET again.
        let rounds = [
            ("GET", String::new()),
            ("GET", format!("If-Modified-Since: {old}\r\n")),
            ("HEAD", String::new()),
            ("GET", String::new()),
        ];
        for (i, (method, extra)) in rounds.iter().enumerate() {
            let round = i + 1;
            let req = format!("{method} {path} HTTP/1.1\r\nHost: edge.test\r\n{extra}\r\n");
            conn.get_mut().write_all(req.as_bytes()).await.unwrap();
            let head = *method == "HEAD";
            let answer =
                tokio::time::timeout(Duration::from_secs(30), read_answer(&mut conn, head))
                    .await
                    .unwrap_or_else(|_| panic!("{path} round {round}: no answer in 30 s"));
            assert_eq!(answer.status, status, "{path} round {round}");
            let body = if head { "" } else { BODY };
            assert_eq!(answer.body, body.as_bytes(), "{path} round {round}");
            assert_ne!(answer.header("x-cache-status"), Some("HIT"), "{path}");
            assert_ne!(answer.header("connection"), Some("close"), "{path}");
            assert_eq!(origin.hits_for(&path), round, "{path}: reused");
        }
    }
}
