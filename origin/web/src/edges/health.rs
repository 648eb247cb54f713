//! The edge poller: each edge's `/readyz` (health) and `/metrics` (load), with rise and fall.
//!
//! One task per edge polls every `interval`; each request is bounded by `timeout` (connect
//! included), so a hung edge costs one timeout per round, never a stuck poller. An edge is
//! *up* until `fall` polls in a row fail, then *down* until `rise` polls in a row succeed
//! (defaults 2 and 1, like the edge's own pool health checks: one lost packet does not move
//! viewers, and a recovered edge takes viewers again at once). Before its first poll an edge
//! counts as up, so that the web app steers by region from its first request.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::task::JoinHandle;

use super::config::{EdgeSpec, PollSpec};

/// The gauge of the edge's open viewer connections (proxy/src/metrics.rs).
pub const LOAD_GAUGE: &str = "dime_connections_open";

/// What the poller knows about one edge now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EdgeHealth {
    /// Whether viewers should be sent there (after rise and fall).
    pub up: bool,
    /// `/readyz` said "ready, degraded" (a pool serving in panic mode): up, but ranked after
    /// the edges that are fully ready.
    pub degraded: bool,
    /// `dime_connections_open` from the last successful `/metrics`, if any.
    pub connections: Option<i64>,
    /// Whether at least one poll has finished.
    pub checked: bool,
    /// Failed polls in a row.
    pub failures: u32,
    /// Successful polls in a row.
    pub successes: u32,
    /// Why the last poll failed, if it did.
    pub last_error: Option<String>,
    /// Unix time (ms) of the last finished poll.
    pub last_poll_unix_ms: Option<u64>,
}

impl Default for EdgeHealth {
    fn default() -> Self {
        Self {
            up: true,
            degraded: false,
            connections: None,
            checked: false,
            failures: 0,
            successes: 0,
            last_error: None,
            last_poll_unix_ms: None,
        }
    }
}

/// The outcome of one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `/readyz` answered 200; `degraded` when its body says so.
    Ready {
        /// "ready, degraded".
        degraded: bool,
        /// The load gauge, when `/metrics` answered and had it.
        connections: Option<i64>,
    },
    /// Anything else: a status, a timeout, a refused connection.
    Failed(String),
}

impl EdgeHealth {
    /// Applies one poll's outcome with `rise` and `fall`.
    pub fn record(&mut self, probe: Probe, poll: &PollSpec) {
        self.checked = true;
        self.last_poll_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| u64::try_from(d.as_millis()).ok());
        match probe {
            Probe::Ready {
                degraded,
                connections,
            } => {
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                self.degraded = degraded;
                self.connections = connections;
                self.last_error = None;
                if !self.up && self.successes >= poll.rise {
                    self.up = true;
                }
            }
            Probe::Failed(why) => {
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                self.last_error = Some(why);
                if self.up && self.failures >= poll.fall {
                    self.up = false;
                }
            }
        }
    }
}

/// The health of every edge, in config order, shared by the poller and the handlers.
pub type HealthTable = Arc<Mutex<Vec<EdgeHealth>>>;

/// The running poller; dropping it stops the polls.
#[derive(Debug)]
pub struct Poller(Vec<JoinHandle<()>>);

impl Drop for Poller {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Poller {
    /// Starts one polling task per edge, writing into `table` (same order as `edges`).
    pub fn spawn(edges: &[EdgeSpec], poll: PollSpec, table: HealthTable) -> Poller {
        let client = reqwest::Client::builder()
            .timeout(poll.timeout)
            .connect_timeout(poll.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(1)
            .build();
        let client = match client {
            Ok(client) => client,
            Err(err) => {
                // Only a broken TLS backend fails here, and this client uses none.
                tracing::error!(error = %err, "cannot build the edge poller's HTTP client; edges stay as configured");
                return Poller(Vec::new());
            }
        };
        let tasks = edges
            .iter()
            .enumerate()
            .map(|(index, edge)| {
                let (client, table, edge) = (client.clone(), Arc::clone(&table), edge.clone());
                tokio::spawn(async move {
                    let mut ticks = tokio::time::interval(poll.interval);
                    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        ticks.tick().await;
                        let probe = probe(&client, &edge.admin).await;
                        let mut table = table.lock().unwrap_or_else(|e| e.into_inner());
                        let Some(health) = table.get_mut(index) else {
                            return;
                        };
                        let was_up = health.up;
                        health.record(probe, &poll);
                        if was_up != health.up {
                            if health.up {
                                tracing::info!(edge = %edge.name, "edge up: viewers are steered to it again");
                            } else {
                                tracing::warn!(edge = %edge.name, error = health.last_error.as_deref().unwrap_or(""), "edge down: viewers are steered away from it");
                            }
                        }
                    }
                })
            })
            .collect();
        Poller(tasks)
    }
}

/// Polls one edge once: `/readyz`, then `/metrics` for the load when it is ready.
pub async fn probe(client: &reqwest::Client, admin: &str) -> Probe {
    let ready = match client.get(format!("{admin}/readyz")).send().await {
        Err(err) => return Probe::Failed(format!("GET /readyz: {}", describe(&err))),
        Ok(response) if response.status() != reqwest::StatusCode::OK => {
            return Probe::Failed(format!("GET /readyz answered {}", response.status()))
        }
        Ok(response) => response,
    };
    let body = match ready.text().await {
        Ok(body) => body,
        Err(err) => return Probe::Failed(format!("GET /readyz body: {}", describe(&err))),
    };
    // "ready\n" or "ready, degraded:\n<why>" (proxy/src/admin.rs).
    let degraded = body.starts_with("ready, degraded");
    // The load is a ranking hint: an edge whose /metrics fails is still up, of unknown load.
    let connections = match client.get(format!("{admin}/metrics")).send().await {
        Ok(response) if response.status() == reqwest::StatusCode::OK => response
            .text()
            .await
            .ok()
            .and_then(|text| gauge(&text, LOAD_GAUGE)),
        _ => None,
    };
    Probe::Ready {
        degraded,
        connections,
    }
}

/// The value of an unlabelled gauge in Prometheus text.
pub fn gauge(text: &str, name: &str) -> Option<i64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        // `name 3`, not `name_other 3` nor `name{…} 3`.
        let value = rest.strip_prefix(' ')?;
        let value: f64 = value.split_whitespace().next()?.parse().ok()?;
        value.is_finite().then_some(value as i64)
    })
}

/// A request error in a few words: timeouts and refusals are what operators look for.
fn describe(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_connect() {
        "cannot connect".to_owned()
    } else {
        err.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gauge_is_read_by_exact_name() {
        let text = "# HELP dime_connections_open Viewer connections\n# TYPE dime_connections_open gauge\ndime_connections_open_total 9\ndime_connections_open 3\n";
        assert_eq!(gauge(text, LOAD_GAUGE), Some(3));
        assert_eq!(
            gauge("dime_connections_open{a=\"b\"} 4\n", LOAD_GAUGE),
            None
        );
        assert_eq!(gauge("", LOAD_GAUGE), None);
    }

    #[test]
    fn rise_and_fall_count_polls_in_a_row() {
        let poll = PollSpec {
            rise: 2,
            fall: 2,
            ..PollSpec::default()
        };
        let ready = || Probe::Ready {
            degraded: false,
            connections: Some(1),
        };
        let mut health = EdgeHealth::default();
        assert!(health.up && !health.checked);
        health.record(Probe::Failed("x".into()), &poll);
        assert!(health.up, "one failure is not enough");
        health.record(ready(), &poll);
        health.record(Probe::Failed("x".into()), &poll);
        assert!(health.up, "failures must be in a row");
        health.record(Probe::Failed("x".into()), &poll);
        assert!(!health.up);
        health.record(ready(), &poll);
        assert!(!health.up, "rise 2 needs two successes");
        health.record(ready(), &poll);
        assert!(health.up && health.connections == Some(1));
    }
}
