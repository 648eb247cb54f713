//! The active configuration: routes resolved to live pools, swapped whole on reload.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{EdgeConfig, RouteSpec};
use crate::metrics::{Metrics, RouteMetrics};
use crate::pool::Pool;
use crate::route::RouteTable;

/// A route with its pool resolved.
pub struct Route {
    /// The validated route.
    pub spec: RouteSpec,
    /// The pool that serves it.
    pub pool: Arc<Pool>,
    /// Its metric series.
    pub metrics: RouteMetrics,
}

/// Everything a request needs to be routed, built from one validated config.
pub struct Active {
    /// The config it was built from.
    pub config: EdgeConfig,
    /// Host and prefix matching.
    pub table: RouteTable,
    /// Routes, indexed like `table`.
    pub routes: Vec<Arc<Route>>,
    /// Pools by name order.
    pub pools: Vec<Arc<Pool>>,
}

impl Active {
    /// Builds pools and routes from a validated config.
    pub fn build(config: EdgeConfig, metrics: &Metrics) -> Result<Self, String> {
        let mut by_name = HashMap::new();
        let mut pools = Vec::new();
        for spec in &config.pools {
            let pool = Arc::new(Pool::new(spec.clone())?);
            by_name.insert(spec.name.clone(), pool.clone());
            pools.push(pool);
        }
        let routes = config
            .routes
            .iter()
            .map(|spec| {
                let pool = by_name
                    .get(&spec.pool)
                    .cloned()
                    .ok_or_else(|| format!("route {}: unknown pool {}", spec.name, spec.pool))?;
                Ok(Arc::new(Route {
                    spec: spec.clone(),
                    pool,
                    metrics: RouteMetrics::new(metrics, &spec.name),
                }))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Active {
            table: RouteTable::new(&config.routes),
            config,
            routes,
            pools,
        })
    }

    /// Why the edge is not ready, or `None` when every pool has a healthy backend.
    pub fn not_ready(&self) -> Option<String> {
        let mut reasons = Vec::new();
        for pool in &self.pools {
            if !pool.checked_once() {
                reasons.push(format!(
                    "pool {}: first health check not finished",
                    pool.name()
                ));
                continue;
            }
            let health = pool.health();
            if !health.iter().any(|(_, up)| *up) {
                let down: Vec<String> = health.iter().map(|(a, _)| a.to_string()).collect();
                reasons.push(format!(
                    "pool {}: no healthy backend ({} down: {})",
                    pool.name(),
                    down.len(),
                    down.join(", ")
                ));
            }
        }
        (!reasons.is_empty()).then(|| reasons.join("\n"))
    }
}
