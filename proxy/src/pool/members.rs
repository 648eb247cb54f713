//! A pool's backends across reloads: the set (our own service discovery), health state,
//! selection, and backends waiting for their first passing check before they take traffic.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use futures_util::FutureExt;
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::health_check::HealthCheck;
use pingora_load_balancing::selection::consistent::KetamaHashing;
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backend, Backends, HealthRegistry, LoadBalancer};

use super::failures::{Failures, Recorded};
use super::health_check;
use crate::config::{HealthCheckSpec, PoolSpec, Selection};

/// How far a selection walks the ring (or list) looking for an acceptable backend.
const MAX_SELECT_ITERATIONS: usize = 256;

/// The long-lived part of a pool: what survives a reload that keeps the pool's name, selection
/// and health check.
pub(crate) struct Members {
    name: String,
    health_check: HealthCheckSpec,
    balancer: Balancer,
    roster: Arc<Roster>,
    /// A second instance of the pool's check, run on pending backends only: pingora's health
    /// state starts out healthy, so it cannot tell "never checked" from "passing".
    probe: Box<dyn HealthCheck + Send + Sync>,
    checked_once: AtomicBool,
    /// Why each failing backend's latest check failed (both checks record here).
    failures: Arc<Failures>,
}

enum Balancer {
    RoundRobin(LoadBalancer<RoundRobin>),
    Hash(LoadBalancer<KetamaHashing>),
}

/// The backend chosen for one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pick {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Chosen although marked down, because no healthy backend was left to try.
    pub panic: bool,
}

/// What a call to [`Members::set_backends`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct MemberChange {
    /// Addresses that joined; they wait for a passing check before taking traffic.
    pub added: Vec<SocketAddr>,
    /// Addresses that left; requests already sent to them finish.
    pub removed: Vec<SocketAddr>,
    /// Addresses that stayed with another weight.
    pub reweighted: Vec<SocketAddr>,
}

impl MemberChange {
    /// Whether nothing changed.
    pub(crate) fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.reweighted.is_empty()
    }
}

/// The backend set our discovery hands to pingora, and which of them are still pending.
struct Roster {
    backends: ArcSwap<BTreeSet<Backend>>,
    pending: Mutex<BTreeSet<SocketAddr>>,
}

impl Roster {
    fn pending(&self) -> MutexGuard<'_, BTreeSet<SocketAddr>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// pingora's `Static` discovery cannot be changed from outside its crate; this one can, and it
/// also keeps pending backends disabled.
struct RosterDiscovery(Arc<Roster>);

#[async_trait]
impl ServiceDiscovery for RosterDiscovery {
    async fn discover(&self) -> pingora_error::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let backends = BTreeSet::clone(&self.0.backends.load());
        let pending = self.0.pending();
        let enabled = backends
            .iter()
            .map(|b| {
                (
                    identity(b),
                    !b.as_inet().is_some_and(|a| pending.contains(a)),
                )
            })
            .collect();
        Ok((backends, enabled))
    }
}

/// The key pingora's enablement map uses: the backend's hash with the default hasher.
fn identity(b: &Backend) -> u64 {
    let mut h = DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

/// Health is tracked per address, so a weight change keeps a backend's health.
fn address_key(b: &Backend) -> u64 {
    let mut h = DefaultHasher::new();
    b.addr.hash(&mut h);
    h.finish()
}

fn backend_set(name: &str, list: &[(SocketAddr, usize)]) -> Result<BTreeSet<Backend>, String> {
    list.iter()
        .map(|(addr, weight)| {
            Backend::new_with_weight(&addr.to_string(), *weight)
                .map_err(|e| format!("pool {name}: backend {addr}: {e}"))
        })
        .collect()
}

impl Members {
    /// Members for `spec`'s backends. With `pending`, none takes traffic before its first
    /// passing check (a pool added by a reload); without, all do at once (startup).
    pub(crate) fn new(spec: &PoolSpec, pending: bool) -> Result<Self, String> {
        let set = backend_set(&spec.name, &spec.backends)?;
        let roster = Arc::new(Roster {
            pending: Mutex::new(if pending {
                spec.backends.iter().map(|(a, _)| *a).collect()
            } else {
                BTreeSet::new()
            }),
            backends: ArcSwap::from_pointee(set),
        });
        let failures = Arc::new(Failures::default());
        let registry = Arc::new(HealthRegistry::with_equivalence(address_key));
        registry.set_health_check(Box::new(Recorded::new(
            health_check(spec),
            failures.clone(),
        )));
        let backends =
            Backends::new_with_health_registry(Box::new(RosterDiscovery(roster.clone())), registry);
        let balancer = match spec.selection {
            Selection::RoundRobin => {
                Balancer::RoundRobin(LoadBalancer::<RoundRobin>::from_backends(backends))
            }
            Selection::ConsistentHash => {
                Balancer::Hash(LoadBalancer::<KetamaHashing>::from_backends(backends))
            }
        };
        let members = Members {
            name: spec.name.clone(),
            health_check: spec.health_check.clone(),
            balancer,
            roster,
            probe: Box::new(Recorded::new(health_check(spec), failures.clone())),
            checked_once: AtomicBool::new(false),
            failures,
        };
        members.rediscover()?;
        Ok(members)
    }

    /// Makes `list` the backend set. Backends that stay keep their health and connections;
    /// new addresses are pending until a check passes. Callers serialise calls (the reloader
    /// holds its lock).
    pub(crate) fn set_backends(
        &self,
        list: &[(SocketAddr, usize)],
    ) -> Result<MemberChange, String> {
        let new = backend_set(&self.name, list)?;
        let old = self.roster.backends.load_full();
        let old_addrs: HashMap<SocketAddr, usize> = old
            .iter()
            .filter_map(|b| b.as_inet().map(|a| (*a, b.weight)))
            .collect();
        let mut change = MemberChange::default();
        for (addr, weight) in list {
            match old_addrs.get(addr) {
                None => change.added.push(*addr),
                Some(w) if w != weight => change.reweighted.push(*addr),
                Some(_) => {}
            }
        }
        change.removed = old_addrs
            .keys()
            .filter(|a| !list.iter().any(|(b, _)| b == *a))
            .copied()
            .collect();
        change.removed.sort();
        if change.is_empty() {
            return Ok(change);
        }
        {
            let mut pending = self.roster.pending();
            pending.extend(change.added.iter().copied());
            for a in &change.removed {
                pending.remove(a);
            }
        }
        self.roster.backends.store(Arc::new(new));
        self.rediscover()?;
        Ok(change)
    }

    /// Hands the roster to pingora and rebuilds the selection. Our discovery answers at once.
    fn rediscover(&self) -> Result<(), String> {
        let updated = match &self.balancer {
            Balancer::RoundRobin(lb) => lb.update().now_or_never(),
            Balancer::Hash(lb) => lb.update().now_or_never(),
        };
        match updated {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(format!("pool {}: {e}", self.name)),
            None => Err(format!(
                "pool {}: backend discovery did not complete",
                self.name
            )),
        }
    }

    /// Checks every pending backend once, in parallel; those that pass take traffic from now
    /// on. Returns each pending address and whether it passed.
    pub(crate) async fn probe_pending(&self) -> Vec<(SocketAddr, bool)> {
        let pending: Vec<Backend> = {
            let pending = self.roster.pending();
            self.roster
                .backends
                .load()
                .iter()
                .filter(|b| b.as_inet().is_some_and(|a| pending.contains(a)))
                .cloned()
                .collect()
        };
        let checks = pending.iter().map(|b| async move {
            let ok = self.probe.check(b).await.is_ok();
            (b, ok)
        });
        let results = futures_util::future::join_all(checks).await;
        let mut out = Vec::new();
        for (b, ok) in results {
            let Some(addr) = b.as_inet().copied() else {
                continue;
            };
            if ok {
                self.roster.pending().remove(&addr);
                self.backends().set_enable(b, true);
            }
            out.push((addr, ok));
        }
        out
    }

    /// Addresses still waiting for their first passing check.
    pub(crate) fn pending(&self) -> Vec<SocketAddr> {
        self.roster.pending().iter().copied().collect()
    }

    /// Picks a backend that takes traffic and is not in `exclude`; `key` drives hashing.
    /// With `panic`, when no such backend is left, picks one marked down (still not in
    /// `exclude`) rather than none.
    pub(crate) fn select(&self, key: &[u8], exclude: &[SocketAddr], panic: bool) -> Option<Pick> {
        let untried = |b: &Backend| b.addr.as_inet().is_some_and(|a| !exclude.contains(a));
        if let Some(addr) = self.select_with(key, |b, ready| ready && untried(b)) {
            return Some(Pick { addr, panic: false });
        }
        // nginx's and Envoy's panic mode: health checks lag (an origin that starts after the
        // edge stays down for rise × interval), and a failed connect costs little because it
        // fails over at once, so trying a backend marked down beats a certain 502.
        if !panic {
            return None;
        }
        let addr = self.select_with(key, |b, _| untried(b))?;
        Some(Pick { addr, panic: true })
    }

    fn select_with(
        &self,
        key: &[u8],
        accept: impl Fn(&Backend, bool) -> bool,
    ) -> Option<SocketAddr> {
        let backend = match &self.balancer {
            Balancer::RoundRobin(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
            Balancer::Hash(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
        }?;
        backend.addr.as_inet().copied()
    }

    /// Each backend and whether it takes traffic now (healthy and not pending).
    pub(crate) fn health(&self) -> Vec<(SocketAddr, bool)> {
        let backends = self.backends();
        backends
            .get_backend()
            .iter()
            .filter_map(|b| b.addr.as_inet().map(|a| (*a, backends.ready(b))))
            .collect()
    }

    /// Runs one round of active health checks on every backend, in parallel, then gives
    /// pending backends their chance to join.
    pub(crate) async fn check_health(&self) {
        self.backends().run_health_check(true).await;
        self.probe_pending().await;
        self.checked_once.store(true, Ordering::Release);
    }

    /// Records that a check round covered every backend (the reloader probed them all).
    pub(crate) fn mark_checked(&self) {
        self.checked_once.store(true, Ordering::Release);
    }

    /// Whether at least one health-check round has completed.
    pub(crate) fn checked_once(&self) -> bool {
        self.checked_once.load(Ordering::Acquire)
    }

    /// Why `addr`'s latest health check failed, in a few words; `None` when it passed.
    pub(crate) fn failure(&self, addr: &SocketAddr) -> Option<String> {
        self.failures.reason(addr)
    }

    /// The pool's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Time between health-check rounds.
    pub(crate) fn interval(&self) -> Duration {
        self.health_check.interval
    }

    fn backends(&self) -> &Backends {
        match &self.balancer {
            Balancer::RoundRobin(lb) => lb.backends(),
            Balancer::Hash(lb) => lb.backends(),
        }
    }
}
