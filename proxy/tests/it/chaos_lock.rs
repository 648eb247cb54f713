//! Many viewers waiting on one fill when the origin is slower than the cache lock or fails:
//! the origin is asked a few times (the fill, then one more per lock the waiters recompete
//! for), never once per waiting viewer; the viewers left get a 504. Over a plain cached route
//! and a video route (whose misses fill in the background).

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::raw_origin::{End, RawOrigin};
use common::upstream::Script;
use common::{client, EdgeProc, Upstream};

/// Viewers asking at once.
const VIEWERS: usize = 30;

/// Origin requests the crowd may cost: the first fill and one per lock the waiters recompete
/// for (pingora lets a waiter do so twice); without the cap every viewer is one.
const AT_MOST: usize = 6;

/// `VIEWERS` requests for `url` at once: how many got each status (a cut body counts as 0).
async fn crowd(url: &str) -> BTreeMap<u16, usize> {
    let tasks: Vec<_> = (0..VIEWERS)
        .map(|_| {
            let url = url.to_string();
            tokio::spawn(async move {
                let r = client().get(&url).send().await.expect("a response header");
                let status = r.status().as_u16();
                if r.bytes().await.is_ok() {
                    status
                } else {
                    0
                }
            })
        })
        .collect();
    let mut statuses = BTreeMap::new();
    for t in tasks {
        *statuses.entry(t.await.unwrap()).or_default() += 1;
    }
    statuses
}

/// Asserts the crowd of `case` cost the origin at most [`AT_MOST`] requests (`asked`) and got
/// only `allowed` statuses, and reports the figure.
fn judge(case: &str, asked: usize, statuses: &BTreeMap<u16, usize>, allowed: &[u16]) {
    assert!(
        asked <= AT_MOST,
        "{case}: {VIEWERS} viewers cost the origin {asked} requests: {statuses:?}"
    );
    assert!(
        statuses.keys().all(|s| allowed.contains(s)),
        "{case}: {statuses:?}"
    );
    common::figure(
        case,
        &format!("origin asked {asked} times; viewers got {}", said(statuses)),
    );
}

/// `{200: 3, 504: 27}` as "3 × 200, 27 × 504".
fn said(statuses: &BTreeMap<u16, usize>) -> String {
    let parts: Vec<String> = statuses
        .iter()
        .map(|(s, n)| match s {
            0 => format!("{n} × a cut"),
            s => format!("{n} × {s}"),
        })
        .collect();
    parts.join(", ")
}

fn route(mode: &str) -> String {
    format!("[[routes]]\npath = \"/\"\npool = \"p\"\n\n[routes.cache]\nmode = \"{mode}\"\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_origin_slower_than_the_lock_is_asked_a_few_times_and_the_other_viewers_get_504() {
    for mode in ["rfc", "video"] {
        let origin = Upstream::start("o").await;
        let mut slow = Script::ok(&[("cache-control", "max-age=60")], vec![7u8; 1000]);
        slow.header_delay = Duration::from_secs(5);
        origin.script("/live/seg1.ts", slow);
        let pool = common::edge::pool("p", &[origin.addr], "");
        let edge = EdgeProc::start(&format!(
            "[cache]\nlock_timeout = \"1s\"\n\n{pool}{}",
            route(mode)
        ))
        .await;
        let statuses = crowd(&edge.url("/live/seg1.ts")).await;
        // Those whose fetch went through have the segment; the others a 504, nothing else.
        let case = format!("{VIEWERS} viewers, origin slower than lock_timeout ({mode} route)");
        judge(
            &case,
            origin.hits_for("/live/seg1.ts"),
            &statuses,
            &[200, 504],
        );
        assert!(statuses.contains_key(&200), "{mode}: {statuses:?}");
        assert!(
            edge.logs().contains("outlived cache.lock_timeout"),
            "{mode}: {}",
            edge.logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_origin_is_asked_a_few_times_not_once_per_waiting_viewer() {
    for mode in ["rfc", "video"] {
        // The garbage comes after a pause, so the whole crowd is waiting on the first fill:
        // answered at once, a viewer arriving after a failed fill starts a fill of its own, and
        // on a busy machine the crowd arrives over several fills (a CI run once saw 8).
        let origin = RawOrigin::start_paced(
            vec![
                Vec::new(),
                b"HTTP/1.1 2x0 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            ],
            Duration::from_millis(300),
            End::Close,
        )
        .await;
        let edge = EdgeProc::start(&format!(
            "[pools.p]\nbackends = [\"{}\"]\nretries = 0\n\n{}",
            origin.addr,
            route(mode)
        ))
        .await;
        let statuses = crowd(&edge.url("/live/seg1.ts")).await;
        let case = format!("{VIEWERS} viewers, origin answering garbage ({mode} route)");
        judge(&case, origin.requests(), &statuses, &[502, 504]);
    }
}
