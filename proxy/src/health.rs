//! The active health-check loop: probes every pool on its interval and publishes the result.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use crate::metrics::Metrics;
use crate::pool::Pool;

/// Runs health checks for a set of pools until shutdown.
pub struct HealthChecks {
    /// The pools to probe.
    pub pools: Vec<Arc<Pool>>,
    /// Where backend health is published.
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let loops = self.pools.iter().map(|pool| {
            let pool = pool.clone();
            let metrics = self.metrics.clone();
            async move { probe_forever(pool, metrics).await }
        });
        tokio::select! {
            _ = futures_util::future::join_all(loops) => {}
            _ = shutdown.changed() => {}
        }
    }
}

async fn probe_forever(pool: Arc<Pool>, metrics: Arc<Metrics>) {
    let mut last: HashMap<SocketAddr, bool> = HashMap::new();
    loop {
        pool.check_health().await;
        publish(&pool, &metrics, &mut last);
        tokio::time::sleep(pool.spec.health_check.interval).await;
    }
}

/// Updates the health gauges and logs every transition once.
fn publish(pool: &Pool, metrics: &Metrics, last: &mut HashMap<SocketAddr, bool>) {
    for (addr, healthy) in pool.health() {
        let backend = addr.to_string();
        metrics
            .backend_healthy
            .with_label_values(&[pool.name(), &backend])
            .set(i64::from(healthy));
        let before = last.insert(addr, healthy);
        match (before, healthy) {
            (Some(true) | None, false) => {
                tracing::warn!(pool = pool.name(), backend = %addr, "backend ejected: health check failing")
            }
            (Some(false), true) => {
                tracing::info!(pool = pool.name(), backend = %addr, "backend back in service: health check passing")
            }
            _ => {}
        }
    }
}
