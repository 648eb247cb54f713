//! Upstream pools: backends, how one is picked for a request, and their health.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType};
use pingora_http::RequestHeader;
use pingora_load_balancing::discovery::Static;
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora_load_balancing::selection::consistent::KetamaHashing;
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backend, Backends, LoadBalancer};

use crate::config::compile::HealthCheckKind;
use crate::config::{HealthCheckSpec, PoolSpec, Selection};

/// How far a selection walks the ring (or list) looking for an acceptable backend.
const MAX_SELECT_ITERATIONS: usize = 256;

/// One pool of interchangeable origin backends.
pub struct Pool {
    /// The validated settings it was built from.
    pub spec: PoolSpec,
    balancer: Balancer,
    checked_once: AtomicBool,
}

enum Balancer {
    RoundRobin(LoadBalancer<RoundRobin>),
    Hash(LoadBalancer<KetamaHashing>),
}

impl Pool {
    /// Builds the pool and its health check from validated settings.
    pub fn new(spec: PoolSpec) -> Result<Self, String> {
        let mut set = BTreeSet::new();
        for (addr, weight) in &spec.backends {
            let b = Backend::new_with_weight(&addr.to_string(), *weight)
                .map_err(|e| format!("pool {}: backend {addr}: {e}", spec.name))?;
            set.insert(b);
        }
        let backends = Backends::new(Static::new(set));
        let health = health_check(&spec.health_check);
        let balancer = match spec.selection {
            Selection::RoundRobin => {
                let mut lb = LoadBalancer::<RoundRobin>::from_backends(backends);
                lb.set_health_check(health);
                Balancer::RoundRobin(lb)
            }
            Selection::ConsistentHash => {
                let mut lb = LoadBalancer::<KetamaHashing>::from_backends(backends);
                lb.set_health_check(health);
                Balancer::Hash(lb)
            }
        };
        // Static discovery answers at once: no I/O, no waiting.
        let updated = match &balancer {
            Balancer::RoundRobin(lb) => lb.update().now_or_never(),
            Balancer::Hash(lb) => lb.update().now_or_never(),
        };
        match updated {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(format!("pool {}: {e}", spec.name)),
            None => {
                return Err(format!(
                    "pool {}: backend discovery did not complete",
                    spec.name
                ))
            }
        }
        Ok(Pool {
            spec,
            balancer,
            checked_once: AtomicBool::new(false),
        })
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Picks a healthy backend not in `exclude`; `key` drives consistent hashing.
    pub fn select(&self, key: &[u8], exclude: &[SocketAddr]) -> Option<SocketAddr> {
        let accept = |b: &Backend, healthy: bool| {
            healthy && b.addr.as_inet().is_some_and(|a| !exclude.contains(a))
        };
        let backend = match &self.balancer {
            Balancer::RoundRobin(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
            Balancer::Hash(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
        }?;
        backend.addr.as_inet().copied()
    }

    /// Each backend and whether it is currently healthy.
    pub fn health(&self) -> Vec<(SocketAddr, bool)> {
        let backends = self.backends();
        backends
            .get_backend()
            .iter()
            .filter_map(|b| b.addr.as_inet().map(|a| (*a, backends.ready(b))))
            .collect()
    }

    /// Runs one round of active health checks on every backend, in parallel.
    pub async fn check_health(&self) {
        self.backends().run_health_check(true).await;
        self.checked_once.store(true, Ordering::Release);
    }

    /// Whether at least one health-check round has completed.
    pub fn checked_once(&self) -> bool {
        self.checked_once.load(Ordering::Acquire)
    }

    /// The peer to connect to for `addr`, with this pool's timeouts.
    pub fn peer(&self, addr: SocketAddr) -> HttpPeer {
        let mut peer = HttpPeer::new(addr, false, String::new());
        let o = &mut peer.options;
        o.connection_timeout = Some(self.spec.connect_timeout);
        o.total_connection_timeout = Some(self.spec.connect_timeout);
        o.read_timeout = Some(self.spec.read_timeout);
        o.write_timeout = Some(self.spec.write_timeout);
        o.idle_timeout = Some(self.spec.idle_timeout);
        peer
    }

    fn backends(&self) -> &Backends {
        match &self.balancer {
            Balancer::RoundRobin(lb) => lb.backends(),
            Balancer::Hash(lb) => lb.backends(),
        }
    }
}

fn health_check(spec: &HealthCheckSpec) -> Box<dyn HealthCheck + Send + Sync> {
    match &spec.kind {
        HealthCheckKind::Tcp => {
            let mut hc = TcpHealthCheck::new();
            hc.consecutive_success = spec.rise;
            hc.consecutive_failure = spec.fall;
            hc.peer_template.options.connection_timeout = Some(spec.timeout);
            hc.peer_template.options.total_connection_timeout = Some(spec.timeout);
            hc
        }
        HealthCheckKind::Http {
            path,
            host,
            expect_status,
        } => {
            let host = host.as_deref().unwrap_or("localhost");
            let mut hc = HttpHealthCheck::new(host, false);
            hc.consecutive_success = spec.rise;
            hc.consecutive_failure = spec.fall;
            set_timeouts(&mut hc.peer_template, spec.timeout);
            if let Ok(mut req) = RequestHeader::build("GET", path.as_bytes(), None) {
                let _ = req.append_header("Host", host);
                let _ = req.append_header("User-Agent", "dime-edge-health-check");
                hc.req = req;
            }
            let expect = *expect_status;
            hc.validator = Some(Box::new(move |resp| {
                let got = resp.status.as_u16();
                if got == expect {
                    Ok(())
                } else {
                    Error::e_explain(
                        ErrorType::CustomCode("unexpected health check status", got),
                        format!("expected {expect}, got {got}"),
                    )
                }
            }));
            Box::new(hc)
        }
    }
}

fn set_timeouts(peer: &mut HttpPeer, timeout: Duration) {
    peer.options.connection_timeout = Some(timeout);
    peer.options.total_connection_timeout = Some(timeout);
    peer.options.read_timeout = Some(timeout);
    peer.options.write_timeout = Some(timeout);
}
