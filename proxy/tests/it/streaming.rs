//! Bodies stream through the edge both ways with bounded memory.

use crate::common;

use futures_util::StreamExt;

use common::edge::pool;
use common::{client, EdgeProc, Upstream};

const GIB: u64 = 1 << 30;
/// How much the edge's resident memory may grow while a 1 GiB body passes through: a body held
/// whole would be 1 GiB. Alone the growth stays under 8 MiB; a loaded CI run saw 10.1 MiB (the
/// stream may land on a worker thread, and its allocator heap, that the warm-up did not use).
const RSS_BUDGET_KIB: u64 = 16 * 1024;

async fn edge_for(origin: &Upstream) -> EdgeProc {
    let edge = EdgeProc::start(
        &(pool("p", &[origin.addr], "read_timeout = \"60s\"")
            + "[[routes]]\npath = \"/\"\npool = \"p\"\n"),
    )
    .await;
    // Warm up: the first requests allocate connection pools and buffers once.
    for _ in 0..3 {
        client()
            .get(edge.url("/big?bytes=4000000"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    edge
}

#[tokio::test(flavor = "multi_thread")]
async fn a_1_gib_download_streams_with_bounded_memory() {
    let origin = Upstream::start("o").await;
    let edge = edge_for(&origin).await;
    let baseline = edge.rss_kib();
    let r = client()
        .get(edge.url(&format!("/big?bytes={GIB}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.content_length(), Some(GIB));
    let mut body = r.bytes_stream();
    let (mut received, mut peak, mut offset_ok) = (0u64, baseline, true);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        // Spot-check the pattern (byte i is i % 251) at each chunk's start.
        if let Some(first) = chunk.first() {
            offset_ok &= u64::from(*first) == received % 251;
        }
        received += chunk.len() as u64;
        if received % (64 << 20) < chunk.len() as u64 {
            peak = peak.max(edge.rss_kib());
        }
    }
    assert_eq!(received, GIB);
    assert!(offset_ok, "body bytes were reordered or corrupted");
    assert!(
        peak - baseline < RSS_BUDGET_KIB,
        "RSS grew by {} KiB (from {baseline} to {peak}) while streaming 1 GiB",
        peak - baseline
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_1_gib_upload_streams_with_bounded_memory() {
    let origin = Upstream::start("o").await;
    let edge = edge_for(&origin).await;
    let baseline = edge.rss_kib();
    let pid = edge.pid();
    // Sample the edge's RSS from another task while the upload runs.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = tokio::spawn({
        let done = done.clone();
        async move {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(common::edge::rss_kib_of(pid));
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            peak
        }
    });
    let chunk = bytes::Bytes::from(vec![7u8; 1 << 20]);
    let stream =
        futures_util::stream::iter((0..1024).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let r = client()
        .post(edge.url("/upload"))
        .header("content-length", GIB.to_string())
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        GIB.to_string(),
        "the origin did not get every byte"
    );
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.await.unwrap().max(edge.rss_kib()).max(baseline);
    assert!(
        peak - baseline < RSS_BUDGET_KIB,
        "RSS grew by {} KiB while uploading 1 GiB",
        peak - baseline
    );
}
