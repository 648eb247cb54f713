//! SIGTERM: stop accepting, let in-flight requests finish within the grace period, then exit.

use crate::common;

use std::time::{Duration, Instant};

use common::edge::pool;
use common::{client, EdgeProc, Upstream};

fn config(origin: &Upstream, grace: &str) -> String {
    format!(
        "[server]\ngrace_period = \"{grace}\"\n\n{}[[routes]]\npath = \"/\"\npool = \"p\"\n",
        pool("p", &[origin.addr], "")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_an_in_flight_request_finish_then_exits() {
    let origin = Upstream::start("o").await;
    let mut edge = EdgeProc::start(&config(&origin, "10s")).await;
    let slow = tokio::spawn({
        let url = edge.url("/slow?ms=1500");
        async move {
            let r = client().get(url).send().await.unwrap();
            (r.status(), r.text().await.unwrap())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    edge.terminate();

    // New viewers are turned away while the old one is still being served.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tokio::net::TcpStream::connect(edge.http).await.is_err(),
        "the listener still accepts after SIGTERM"
    );

    let (status, body) = slow.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "slow done");
    let exit = edge
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("did not exit");
    assert!(exit.success(), "{exit}");
    // It left as soon as the request was done, not after the 10 s grace period.
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "took {:?}",
        signalled.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_nothing_in_flight_exits_at_once() {
    let origin = Upstream::start("o").await;
    let mut edge = EdgeProc::start(&config(&origin, "30s")).await;
    client().get(edge.url("/x")).send().await.unwrap();
    let signalled = Instant::now();
    edge.terminate();
    let exit = edge
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("did not exit");
    assert!(exit.success());
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "took {:?}",
        signalled.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_grace_period_bounds_how_long_a_slow_request_can_hold_shutdown() {
    let origin = Upstream::start("o").await;
    let mut edge = EdgeProc::start(&config(&origin, "1s")).await;
    let slow = tokio::spawn({
        let url = edge.url("/slow?ms=20000");
        async move { client().get(url).send().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    edge.terminate();
    edge.wait_exit(Duration::from_secs(6))
        .await
        .expect("did not exit");
    assert!(
        signalled.elapsed() < Duration::from_secs(4),
        "took {:?}",
        signalled.elapsed()
    );
    assert!(edge.logs().contains("grace period over"), "{}", edge.logs());
    slow.abort();
}
