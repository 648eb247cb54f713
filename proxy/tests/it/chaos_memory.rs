//! Memory under attack: a `Vary` field with many values cannot fill the cache with copies of
//! one URL (a route's `max_variants`), and far more segments than the cache holds churn
//! through it within its memory.

use crate::common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// The edge's peak RSS while `load` runs, sampled every 100 ms.
async fn peak_rss_kib<T>(edge: &EdgeProc, load: tokio::task::JoinHandle<T>) -> (u64, T) {
    let mut peak = edge.rss_kib();
    let mut load = load;
    loop {
        tokio::select! {
            done = &mut load => return (peak.max(edge.rss_kib()), done.unwrap()),
            _ = tokio::time::sleep(Duration::from_millis(100)) => peak = peak.max(edge.rss_kib()),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gib_of_segments_churn_through_a_256_mib_cache_within_its_memory() {
    const MIB: u64 = 1 << 20;
    const SEGMENT: u64 = MIB;
    const DISTINCT: u64 = 2048; // 2 GiB
    const VIEWERS: u64 = 8;
    let origin = Upstream::start("o").await;
    let edge = common::cached_edge(
        &origin,
        "mode = \"video\"\ntarget_duration = \"2s\"",
        "[cache]\nmemory = \"256MiB\"\n",
    )
    .await;
    edge.wait_ready().await;
    // Warm: the code paths and the allocator's first arenas are not the cache's growth.
    let warm = fetch(&edge.url(&format!("/gen/warm.ts?bytes={SEGMENT}")), &[]).await;
    assert_eq!(warm.status, 200);
    let idle = edge.rss_kib();

    // Each viewer asks for the next new segment, then for three it or others asked for
    // lately (hits while they last): new ones go on for two minutes and 2 GiB at least.
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let viewers: Vec<_> = (0..VIEWERS)
        .map(|v| {
            let (next, base) = (next.clone(), edge.url("/gen/"));
            tokio::spawn(async move {
                let client = common::client();
                let (mut served, mut failed, mut hits) = (0u64, Vec::new(), 0u64);
                let mut ask = async |n: u64| {
                    let url = format!("{base}seg-{n}.ts?bytes={SEGMENT}");
                    match client.get(&url).send().await {
                        Ok(r) if r.status() == 200 => {
                            let hit = r
                                .headers()
                                .get("x-cache-status")
                                .is_some_and(|h| h == "HIT");
                            match r.bytes().await {
                                Ok(b) if b.len() as u64 == SEGMENT => {
                                    served += 1;
                                    hits += u64::from(hit);
                                }
                                Ok(b) => failed.push(format!("{url}: {} bytes", b.len())),
                                Err(e) => failed.push(format!("{url}: {e}")),
                            }
                        }
                        Ok(r) => failed.push(format!("{url}: {}", r.status())),
                        Err(e) => failed.push(format!("{url}: {e}")),
                    }
                };
                let mut round = 0u64;
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= DISTINCT && started.elapsed() >= Duration::from_secs(120) {
                        break;
                    }
                    ask(n).await;
                    for back in [1 + v, 9 + round % 40, 50 + (round * 7) % 150] {
                        ask(n.saturating_sub(back)).await;
                    }
                    round += 1;
                }
                (served, hits, failed)
            })
        })
        .collect();
    let load = tokio::spawn(async move {
        let mut total = (0, 0, Vec::new());
        for v in viewers {
            let (served, hits, failed) = v.await.unwrap();
            total.0 += served;
            total.1 += hits;
            total.2.extend(failed);
        }
        total
    });
    let (peak, (served, hits, failed)) = peak_rss_kib(&edge, load).await;
    let seconds = started.elapsed().as_secs_f64();
    let distinct = next.load(Ordering::SeqCst) - VIEWERS;
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );
    assert!(distinct >= DISTINCT, "{distinct} distinct segments");
    let evictions = edge
        .metric("dime_cache_evictions_total")
        .await
        .unwrap_or(0.0);
    assert!(
        evictions as u64 >= distinct - 256,
        "{evictions} evictions for {distinct} distinct 1 MiB segments in 256 MiB"
    );
    let budget = 256 * 1024 * 13 / 10 + idle;
    let growth_mib = (peak - idle) as f64 / 1024.0;
    assert!(
        peak <= budget,
        "peak RSS {peak} KiB over 1.3 × 256 MiB + idle {idle} KiB = {budget} KiB"
    );
    common::figure(
        "2 GiB of distinct 1 MiB segments through cache.memory = 256MiB, 8 viewers",
        &format!(
            "{distinct} distinct, {served} served ({hits} hits) in {seconds:.0} s, 0 failed; \
             {evictions} evictions; peak RSS {:.0} MiB = idle {:.0} MiB + {growth_mib:.0} MiB \
             ({:.2}× the cache; limit 1.3×)",
            peak as f64 / 1024.0,
            idle as f64 / 1024.0,
            growth_mib / 256.0
        ),
    );
}
