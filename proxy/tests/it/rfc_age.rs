//! RFC 9111 conformance, ages: an `Age` that is not one integer is never fresh (§5.1), and a
//! response served from what the edge stored carries its current age (§4.2.3).

use crate::common;

use std::time::{Duration, SystemTime};

use common::upstream::Script;
use common::{cached_edge, fetch, Upstream};

const BODY: &str = "the representation";

#[tokio::test(flavor = "multi_thread")]
async fn an_age_that_is_not_one_non_negative_integer_is_never_fresh() {
    // RFC 9111 §5.1 (`Age = delta-seconds`) and §1.2.2: anything else leaves the age unknown,
    // so the stored response is stale: the second viewer's request goes to the origin again.
    let bad: &[&[&str]] = &[
        &["abc"],
        &["-1"],
        &["1.5"],
        &["old, 0"],
        &["1", "2"],
        &["0, 0"],
        &["3600", "3600"],
        &["1;x"],
        &["1;2"],
    ];
    let origin = Upstream::start("o").await;
    let path = |i: usize| format!("/bad-age/{i}");
    for (i, lines) in bad.iter().enumerate() {
        let mut headers = vec![("cache-control", "max-age=3600")];
        headers.extend(lines.iter().map(|l| ("age", *l)));
        origin.script(&path(i), Script::ok(&headers, BODY));
    }
    // The control: a valid Age within the lifetime is a fresh hit.
    origin.script(
        "/good-age",
        Script::ok(&[("cache-control", "max-age=3600"), ("age", "30")], BODY),
    );
    let edge = cached_edge(&origin, "", "").await;
    let mut failures = Vec::new();
    for (i, lines) in bad.iter().enumerate() {
        let url = edge.url(&path(i));
        let first = fetch(&url, &[]).await;
        let second = fetch(&url, &[]).await;
        assert_eq!((first.status, &first.body[..]), (200, BODY.as_bytes()));
        assert_eq!((second.status, &second.body[..]), (200, BODY.as_bytes()));
        let asked = origin.hits_for(&path(i));
        if second.cache() == "HIT" || asked != 2 {
            failures.push(format!(
                "Age {lines:?}: second answer {}, origin asked {asked} times",
                second.cache()
            ));
        }
    }
    assert!(failures.is_empty(), "served fresh: {failures:#?}");
    for _ in 0..2 {
        fetch(&edge.url("/good-age"), &[]).await;
    }
    assert_eq!(fetch(&edge.url("/good-age"), &[]).await.cache(), "HIT");
    assert_eq!(origin.hits_for("/good-age"), 1);
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
    // No Age, but a Date 100 s in the past: the apparent age.
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
        assert!((100..=110).contains(&age), "{}: Age {age}", r.cache());
    }
    assert_eq!(origin.hits_for("/dated"), 1);
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
