//! The active configuration: routes resolved to live pools, swapped whole on reload.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::cache::CacheStatus;
use crate::config::{EdgeConfig, RouteSpec};
use crate::metrics::{Metrics, RouteMetrics};
use crate::pool::{Members, Pool};
use crate::reload::diff::ConfigDiff;
use crate::reload::{BuildError, Generations, Swap};
use crate::route::{self, HttpsRedirect, RouteTable};

/// A route with its pool resolved.
pub(crate) struct Route {
    /// The validated route.
    pub spec: RouteSpec,
    /// The pool that serves it.
    pub pool: Arc<Pool>,
    /// Its metric series.
    pub metrics: RouteMetrics,
}

impl Route {
    /// The path forwarded upstream for the canonical request `path` (`strip_prefix` applied).
    pub(crate) fn upstream_path(&self, path: &str) -> String {
        route::upstream_path(path, &self.spec.prefix, self.spec.strip_prefix)
    }

    /// The origin-form target forwarded upstream for the canonical request `path` and its
    /// `query`: HTTP/2 viewers send absolute URIs, HTTP/1.1 origins want a path.
    pub(crate) fn upstream_uri(
        &self,
        path: &str,
        query: Option<&str>,
    ) -> Result<http::Uri, String> {
        let path = self.upstream_path(path);
        let target = match query {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        target
            .parse()
            .map_err(|e| format!("bad upstream path: {e}"))
    }

    /// The redirect this route answers a request with: `Some` when it redirects to HTTPS,
    /// the edge has an HTTPS listener (`https_port`, its first) and the request is not
    /// `secure` already.
    pub(crate) fn https_redirect(
        &self,
        raw_host: &str,
        uri: &http::Uri,
        https_port: Option<u16>,
        secure: bool,
    ) -> Option<HttpsRedirect> {
        match (self.spec.redirect_https, https_port, secure) {
            (true, Some(port), false) => Some(HttpsRedirect::new(raw_host, uri, port)),
            _ => None,
        }
    }
}

/// Everything a request needs to be routed, built from one validated config.
pub(crate) struct Active {
    /// The config it was built from.
    pub config: Arc<EdgeConfig>,
    /// Host and prefix matching.
    pub table: RouteTable,
    /// Routes, indexed like `table`.
    pub routes: Vec<Arc<Route>>,
    /// Pools by name order.
    pub pools: Vec<Arc<Pool>>,
}

impl Active {
    /// Builds pools and routes from a validated config, at startup: every backend takes
    /// traffic at once.
    pub(crate) fn build(config: EdgeConfig, metrics: &Metrics) -> Result<Self, BuildError> {
        Self::build_next(config, metrics, None)
    }

    /// Builds from a validated config. With `previous` and its diff to `config`, the pools the
    /// diff keeps keep their members (their health and connections survive; only their
    /// backend sets change), and the pools it rebuilds or adds start with every backend
    /// pending.
    pub(crate) fn build_next(
        config: EdgeConfig,
        metrics: &Metrics,
        previous: Option<(&Active, &ConfigDiff)>,
    ) -> Result<Self, BuildError> {
        let reusable = |name: &str| {
            let (previous, diff) = previous?;
            if diff.rebuilds(name) {
                return None;
            }
            previous
                .pools
                .iter()
                .find(|p| p.name() == name)
                .map(|p| p.members().clone())
        };
        let refused = |pool: &str| {
            let pool = pool.to_string();
            move |reason| BuildError::Pool { pool, reason }
        };
        // Everything that can fail happens before any shared member set is touched, so a
        // rejected build leaves the running pools as they were.
        let mut plan = Vec::new();
        for spec in &config.pools {
            match reusable(&spec.name) {
                Some(members) => plan.push((spec.clone(), members, false)),
                None => {
                    let members =
                        Members::new(spec, previous.is_some()).map_err(refused(&spec.name))?;
                    plan.push((spec.clone(), Arc::new(members), true));
                }
            }
        }
        let mut by_name = HashMap::new();
        let mut pools = Vec::new();
        for (spec, members, created) in plan {
            if !created {
                members
                    .set_backends(&spec.backends)
                    .map_err(refused(&spec.name))?;
            }
            let pool = Arc::new(Pool::with_members(spec, members));
            by_name.insert(pool.name().to_string(), pool.clone());
            pools.push(pool);
        }
        let routes =
            config
                .routes
                .iter()
                .map(|spec| {
                    let pool = by_name.get(&spec.pool).cloned().ok_or_else(|| {
                        BuildError::UnknownPool {
                            route: spec.name.clone(),
                            pool: spec.pool.clone(),
                        }
                    })?;
                    Ok(Arc::new(Route {
                        spec: spec.clone(),
                        pool,
                        metrics: RouteMetrics::new(metrics, &spec.name, &CacheStatus::LABELS),
                    }))
                })
                .collect::<Result<Vec<_>, BuildError>>()?;
        Ok(Active {
            table: RouteTable::new(
                config
                    .routes
                    .iter()
                    .map(|r| (r.host.clone(), r.prefix.clone())),
            ),
            config: Arc::new(config),
            routes,
            pools,
        })
    }

    /// Whether the edge should take traffic, and why not or why only degraded.
    pub(crate) fn readiness(&self) -> Readiness {
        let (mut blocking, mut degraded) = (Vec::new(), Vec::new());
        for pool in &self.pools {
            if !pool.checked_once() {
                blocking.push(format!(
                    "pool {}: first health check not finished",
                    pool.name()
                ));
                continue;
            }
            let health = pool.health();
            if !health.iter().any(|(_, up)| *up) {
                let down: Vec<String> = health.iter().map(|(a, _)| a.to_string()).collect();
                let reason = format!(
                    "pool {}: no healthy backend ({} down: {})",
                    pool.name(),
                    down.len(),
                    down.join(", ")
                );
                // In panic mode the pool still serves (cache hits, and backends tried
                // anyway); taking the edge out of its load balancer would only add the
                // cache's share to the outage, on every edge at once when they share origins.
                if pool.spec.panic_mode {
                    degraded.push(format!("{reason}; panic mode: trying them anyway"));
                } else {
                    blocking.push(reason);
                }
            }
        }
        if !blocking.is_empty() {
            blocking.extend(degraded);
            Readiness::NotReady(blocking.join("\n"))
        } else if !degraded.is_empty() {
            Readiness::Degraded(degraded.join("\n"))
        } else {
            Readiness::Ready
        }
    }
}

/// What `/readyz` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Readiness {
    /// Every pool has a healthy backend.
    Ready,
    /// Serving, but pools in panic mode have no healthy backend (one line each).
    Degraded(String),
    /// Not ready: a first health check is unfinished, or a pool without panic mode has no
    /// healthy backend (one line each).
    NotReady(String),
}

/// The generation in service as a reload sees it: built anew from each accepted config and
/// swapped in whole.
pub(crate) struct LiveRoutes {
    active: Arc<ArcSwap<Active>>,
    metrics: Arc<Metrics>,
}

impl LiveRoutes {
    /// Reloads replace what `active` holds.
    pub(crate) fn new(active: Arc<ArcSwap<Active>>, metrics: Arc<Metrics>) -> Self {
        LiveRoutes { active, metrics }
    }
}

#[async_trait::async_trait]
impl Generations for LiveRoutes {
    fn config(&self) -> Arc<EdgeConfig> {
        self.active.load().config.clone()
    }

    async fn prepare(&self, config: EdgeConfig, diff: &ConfigDiff) -> Result<Swap, BuildError> {
        let previous = self.active.load_full();
        let next = Active::build_next(config, &self.metrics, Some((&previous, diff)))?;
        // New backends are checked before the swap, so the first request routed to them finds
        // the healthy ones already in service; the rest wait for the health loop.
        let probes = next.pools.iter().filter_map(|p| {
            let created = diff.rebuilds(p.name());
            let members = p.members().clone();
            (created || !members.pending().is_empty()).then_some(async move {
                members.probe_pending().await;
                if created {
                    members.mark_checked();
                }
            })
        });
        futures_util::future::join_all(probes).await;
        let active = self.active.clone();
        Ok(Box::new(move || active.store(Arc::new(next))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pools: &str) -> EdgeConfig {
        crate::config::compile(
            "edge.toml",
            &format!("[listen]\nhttp = [\"127.0.0.1:8080\"]\n{pools}[[routes]]\npath = \"/\"\npool = \"web\"\n"),
        )
        .unwrap()
    }

    fn members(active: &Active, name: &str) -> Arc<Members> {
        let pool = active.pools.iter().find(|p| p.name() == name).unwrap();
        pool.members().clone()
    }

    #[test]
    fn a_reload_applies_the_diff_keeping_or_rebuilding_each_pools_members() {
        let metrics = Metrics::new();
        let old = config("[pools.web]\nbackends = [\"127.0.0.1:9001\"]\n[pools.api]\nbackends = [\"127.0.0.1:9002\"]\n");
        let new = config("[pools.web]\nbackends = [\"127.0.0.1:9001\", \"127.0.0.1:9003\"]\n[pools.api]\nbackends = [\"127.0.0.1:9002\"]\nselection = \"consistent_hash\"\n");
        let running = Active::build(old.clone(), &metrics).unwrap();
        let diff = ConfigDiff::between(&old, &new);
        let next = Active::build_next(new, &metrics, Some((&running, &diff))).unwrap();
        // web only gained a backend: the same members (health, connections) serve it, and the
        // new backend waits for a first check.
        assert!(Arc::ptr_eq(
            &members(&running, "web"),
            &members(&next, "web")
        ));
        let pending = members(&next, "web").pending();
        assert_eq!(pending.len(), 1, "{pending:?}");
        // api changed its selection: new members.
        assert!(!Arc::ptr_eq(
            &members(&running, "api"),
            &members(&next, "api")
        ));
        // The same diff is what the reload reports.
        assert_eq!(
            diff.lines(),
            [
                "pool api rebuilt (selection, health check or TLS changed; backends checked before traffic)",
                "pool api: selection round_robin → consistent_hash",
                "pool web: backend 127.0.0.1:9003 added",
            ]
        );
    }
}
