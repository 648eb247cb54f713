//! Memory under attack: a `Vary` field with many values cannot fill the cache with copies of
//! one URL (a route's `max_variants`).

use crate::common;

use common::upstream::Script;
use common::{fetch, EdgeProc, Upstream};

async fn varying_edge(origin: &Upstream, cache: &str) -> EdgeProc {
    origin.script(
        "/page",
        Script::ok(
            &[("cache-control", "max-age=60"), ("vary", "x-variant")],
            "one variant",
        ),
    );
    let pool = common::edge::pool("p", &[origin.addr], "");
    EdgeProc::start(&format!(
        "{pool}[[routes]]\npath = \"/\"\npool = \"p\"\n\n[routes.cache]\nmode = \"rfc\"\n{cache}"
    ))
    .await
}

async fn ask(edge: &EdgeProc, variant: usize) -> String {
    let value = variant.to_string();
    fetch(&edge.url("/page"), &[("x-variant", value.as_str())])
        .await
        .cache()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_url_keeps_at_most_max_variants_and_the_rest_stream_through() {
    let origin = Upstream::start("o").await;
    let edge = varying_edge(&origin, "max_variants = 8\n").await;
    for v in 0..100 {
        ask(&edge, v).await;
    }
    assert_eq!(origin.hits_for("/page"), 100);
    // The first eight are stored; the others went through and go through again.
    for v in 0..8 {
        assert_eq!(ask(&edge, v).await, "HIT", "variant {v}");
    }
    assert_ne!(ask(&edge, 50).await, "HIT");
    assert_eq!(origin.hits_for("/page"), 101);
    assert_eq!(
        edge.metric("dime_cache_variants_refused_total").await,
        Some(93.0)
    );
    common::figure(
        "Vary with 100 values on one URL, max_variants = 8",
        "8 stored and served as hits; 92 streamed through uncached, counted",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn by_default_a_url_keeps_32_variants() {
    let origin = Upstream::start("o").await;
    let edge = varying_edge(&origin, "").await;
    for v in 0..200 {
        ask(&edge, v).await;
    }
    let hits = {
        let mut n = 0;
        for v in 0..200 {
            n += usize::from(ask(&edge, v).await == "HIT");
        }
        n
    };
    assert_eq!(hits, 32);
}
