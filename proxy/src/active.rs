//! The active configuration: routes resolved to live pools, swapped whole on reload.

use std::collections::HashMap;
use std::sync::Arc;

use crate::cache::CacheStatus;
use crate::config::{EdgeConfig, PoolSpec, RouteSpec};
use crate::metrics::{Metrics, RouteMetrics};
use crate::pool::{MemberChange, Members, Pool};
use crate::route::{self, HttpsRedirect, RouteTable};

/// A route with its pool resolved.
pub struct Route {
    /// The validated route.
    pub spec: RouteSpec,
    /// The pool that serves it.
    pub pool: Arc<Pool>,
    /// Its metric series.
    pub metrics: RouteMetrics,
}

impl Route {
    /// The path forwarded upstream for the canonical request `path` (`strip_prefix` applied).
    pub fn upstream_path(&self, path: &str) -> String {
        route::upstream_path(path, &self.spec.prefix, self.spec.strip_prefix)
    }

    /// The origin-form target forwarded upstream for the canonical request `path` and its
    /// `query`: HTTP/2 viewers send absolute URIs, HTTP/1.1 origins want a path.
    pub fn upstream_uri(&self, path: &str, query: Option<&str>) -> Result<http::Uri, String> {
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
    pub fn https_redirect(
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

/// What building an [`Active`] from a previous one changed in the pools.
#[derive(Debug, Default)]
pub struct PoolChanges {
    /// Pools built afresh (new names, or a changed selection or health check); their backends
    /// are pending until checked.
    pub created: Vec<String>,
    /// Pools that kept their members, with what changed in their backend sets.
    pub kept: Vec<(String, MemberChange)>,
    /// Pools no longer in the config.
    pub dropped: Vec<String>,
}

impl Active {
    /// Builds pools and routes from a validated config, at startup: every backend takes
    /// traffic at once.
    pub fn build(config: EdgeConfig, metrics: &Metrics) -> Result<Self, String> {
        Self::build_next(config, metrics, None).map(|(active, _)| active)
    }

    /// Builds from a validated config, keeping the members of `previous`'s pools that keep
    /// their name, selection and health check (their health and connections survive; only
    /// their backend sets change). New members start with every backend pending.
    pub fn build_next(
        config: EdgeConfig,
        metrics: &Metrics,
        previous: Option<&Active>,
    ) -> Result<(Self, PoolChanges), String> {
        let mut changes = PoolChanges::default();
        let reusable = |spec: &PoolSpec| {
            previous?
                .pools
                .iter()
                .find(|p| p.members().fits(spec))
                .map(|p| p.members().clone())
        };
        // Everything that can fail happens before any shared member set is touched, so a
        // rejected build leaves the running pools as they were.
        let mut plan = Vec::new();
        for spec in &config.pools {
            match reusable(spec) {
                Some(members) => plan.push((spec.clone(), members, false)),
                None => {
                    let members = match previous {
                        Some(_) => Members::new(spec, true)?,
                        None => Members::new(spec, false)?,
                    };
                    plan.push((spec.clone(), Arc::new(members), true));
                }
            }
        }
        let mut by_name = HashMap::new();
        let mut pools = Vec::new();
        for (spec, members, created) in plan {
            if created {
                changes.created.push(spec.name.clone());
            } else {
                let change = members.set_backends(&spec.backends)?;
                changes.kept.push((spec.name.clone(), change));
            }
            let pool = Arc::new(Pool::with_members(spec, members));
            by_name.insert(pool.name().to_string(), pool.clone());
            pools.push(pool);
        }
        if let Some(previous) = previous {
            changes.dropped = previous
                .pools
                .iter()
                .filter(|p| !by_name.contains_key(p.name()))
                .map(|p| p.name().to_string())
                .collect();
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
                    metrics: RouteMetrics::new(metrics, &spec.name, &CacheStatus::LABELS),
                }))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let active = Active {
            table: RouteTable::new(
                config
                    .routes
                    .iter()
                    .map(|r| (r.host.clone(), r.prefix.clone())),
            ),
            config,
            routes,
            pools,
        };
        Ok((active, changes))
    }

    /// Whether the edge should take traffic, and why not or why only degraded.
    pub fn readiness(&self) -> Readiness {
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
pub enum Readiness {
    /// Every pool has a healthy backend.
    Ready,
    /// Serving, but pools in panic mode have no healthy backend (one line each).
    Degraded(String),
    /// Not ready: a first health check is unfinished, or a pool without panic mode has no
    /// healthy backend (one line each).
    NotReady(String),
}
