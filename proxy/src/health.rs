//! The active health-check loops: one per pool of the active config, started and stopped as
//! reloads add and remove pools, each publishing its backends' health.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::active::Active;
use crate::metrics::Metrics;
use crate::pool::Members;

/// Runs health checks for the active config's pools until shutdown.
pub(crate) struct HealthChecks {
    /// The config in force; its pools are the ones probed.
    pub active: Arc<ArcSwap<Active>>,
    /// Moves when a reload swapped the config; `None` when nothing reloads (quick mode).
    pub applied: Option<watch::Receiver<u64>>,
    /// Where backend health is published.
    pub metrics: Arc<Metrics>,
}

/// One running loop and the members it probes.
struct Loop {
    members: Arc<Members>,
    task: JoinHandle<()>,
}

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut loops: Vec<Loop> = Vec::new();
        let mut applied = self.applied.clone();
        loop {
            self.follow(&mut loops);
            let changed = async {
                match &mut applied {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                alive = changed => if !alive { applied = None },
                _ = shutdown.changed() => break,
            }
        }
        for l in loops {
            l.task.abort();
        }
    }
}

impl HealthChecks {
    /// Starts a loop for members new to the active config and stops those it dropped. Members
    /// a reload kept keep their loop, so their backends are not checked again from scratch.
    fn follow(&self, loops: &mut Vec<Loop>) {
        let active = self.active.load();
        let current: Vec<&Arc<Members>> = active.pools.iter().map(|p| p.members()).collect();
        loops.retain(|l| {
            let keep = current.iter().any(|m| Arc::ptr_eq(m, &l.members));
            if !keep {
                l.task.abort();
                for (addr, _) in l.members.health() {
                    let _ = self
                        .metrics
                        .backend_healthy
                        .remove_label_values(&[l.members.name(), &addr.to_string()]);
                }
            }
            keep
        });
        for members in current {
            if loops.iter().any(|l| Arc::ptr_eq(&l.members, members)) {
                continue;
            }
            let (m, metrics) = (members.clone(), self.metrics.clone());
            loops.push(Loop {
                members: members.clone(),
                task: tokio::spawn(async move { probe_forever(m, metrics).await }),
            });
        }
    }
}

async fn probe_forever(members: Arc<Members>, metrics: Arc<Metrics>) {
    let mut last: HashMap<SocketAddr, bool> = HashMap::new();
    loop {
        members.check_health().await;
        publish(&members, &metrics, &mut last);
        tokio::time::sleep(members.interval()).await;
    }
}

/// Updates the health gauges and logs every transition once; forgets backends that left.
fn publish(members: &Members, metrics: &Metrics, last: &mut HashMap<SocketAddr, bool>) {
    let health = members.health();
    let pending = members.pending();
    last.retain(|addr, _| {
        let stays = health.iter().any(|(a, _)| a == addr);
        if !stays {
            let _ = metrics
                .backend_healthy
                .remove_label_values(&[members.name(), &addr.to_string()]);
        }
        stays
    });
    for (addr, healthy) in health {
        let backend = addr.to_string();
        metrics
            .backend_healthy
            .with_label_values(&[members.name(), &backend])
            .set(i64::from(healthy));
        let before = last.insert(addr, healthy);
        let pool = members.name();
        let why = || {
            members
                .failure(&addr)
                .map_or_else(String::new, |r| format!(" ({r})"))
        };
        match (before, healthy) {
            (None, false) if pending.contains(&addr) => tracing::warn!(
                "pool {pool}: new backend {addr} kept out of service: its first health check has not passed{}",
                why()
            ),
            (Some(true) | None, false) => tracing::warn!(
                "pool {pool}: backend {addr} ejected: health check failing{}",
                why()
            ),
            (Some(false), true) => tracing::info!(
                "pool {pool}: backend {addr} back in service: health check passing"
            ),
            _ => {}
        }
    }
}
