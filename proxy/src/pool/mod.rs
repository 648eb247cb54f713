//! Upstream pools: backends, how one is picked for a request, and their health.
//!
//! A [`Pool`] belongs to one config generation (its timeouts, retries); its [`Members`] (the
//! backend set, health state and selection) live across reloads for as long as the pool keeps
//! its name, selection and health check, so a reload neither resets health nor opens new
//! connections to backends that stay.

pub(crate) mod attempts;
pub(crate) mod failures;
pub(crate) mod members;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pingora_core::protocols::tls::CaType;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::utils::tls::{parse_x509, WrappedX509};
use pingora_error::{Error, ErrorType};
use pingora_http::RequestHeader;
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};

use crate::config::compile::HealthCheckKind;
use crate::config::{PoolSpec, UpstreamTls};

pub(crate) use attempts::Attempts;
pub(crate) use members::{Members, Pick};

/// One pool of interchangeable origin backends, as one config generation sees it.
pub(crate) struct Pool {
    /// The validated settings it was built from.
    pub spec: PoolSpec,
    members: Arc<Members>,
    /// The CA bundle in the form pingora's connector takes, built once per generation.
    ca: Option<Arc<CaType>>,
}

impl Pool {
    /// This generation's view of `members`, which the caller has already given `spec`'s
    /// backends.
    pub(crate) fn with_members(spec: PoolSpec, members: Arc<Members>) -> Self {
        if spec.tls.as_ref().is_some_and(|t| !t.verify) {
            tracing::warn!(
                pool = %spec.name,
                "TLS to this pool's backends is NOT verified (verify = false): anyone on the path can impersonate them"
            );
        }
        let ca = spec.tls.as_ref().and_then(ca_of);
        Pool { spec, members, ca }
    }

    /// The backends, their health and their selection, shared across reloads.
    pub(crate) fn members(&self) -> &Arc<Members> {
        &self.members
    }

    /// The pool's name.
    pub(crate) fn name(&self) -> &str {
        &self.spec.name
    }

    /// Picks a backend not in `exclude`: a healthy one, or, in panic mode when none is left,
    /// one marked down; `key` drives consistent hashing.
    pub(crate) fn select(&self, key: &[u8], exclude: &[SocketAddr]) -> Option<Pick> {
        self.members.select(key, exclude, self.spec.panic_mode)
    }

    /// Each backend and whether it takes traffic now.
    pub(crate) fn health(&self) -> Vec<(SocketAddr, bool)> {
        self.members.health()
    }

    /// Whether at least one health-check round has completed.
    pub(crate) fn checked_once(&self) -> bool {
        self.members.checked_once()
    }

    /// The peer to connect to for `addr`, with this pool's timeouts.
    pub(crate) fn peer(&self, addr: SocketAddr) -> HttpPeer {
        let mut peer = match &self.spec.tls {
            None => HttpPeer::new(addr, false, String::new()),
            Some(tls) => {
                let mut peer = HttpPeer::new(addr, true, server_name(tls, addr));
                apply_tls(&mut peer, tls, self.ca.clone());
                peer
            }
        };
        let o = &mut peer.options;
        o.connection_timeout = Some(self.spec.connect_timeout);
        o.total_connection_timeout = Some(self.spec.connect_timeout);
        o.read_timeout = Some(self.spec.read_timeout);
        o.write_timeout = Some(self.spec.write_timeout);
        o.idle_timeout = Some(self.spec.idle_timeout);
        peer
    }
}

/// The bundle as pingora's per-peer CA list; `None` keeps the system roots.
fn ca_of(tls: &UpstreamTls) -> Option<Arc<CaType>> {
    let ders = tls.ca.as_ref()?;
    // Each DER was parsed when the config was compiled, so parse_x509 cannot fail here.
    let list: Vec<WrappedX509> = ders
        .iter()
        .map(|d| WrappedX509::new(d.clone(), parse_x509))
        .collect();
    Some(Arc::from(list.into_boxed_slice()))
}

/// The name the TLS client uses: the configured SNI, or (only possible with verify = false)
/// the backend's IP, which rustls accepts and which sends no SNI at all.
fn server_name(tls: &UpstreamTls, addr: SocketAddr) -> String {
    if tls.sni.is_empty() {
        addr.ip().to_string()
    } else {
        tls.sni.clone()
    }
}

/// Verification settings of a TLS peer.
fn apply_tls(peer: &mut HttpPeer, tls: &UpstreamTls, ca: Option<Arc<CaType>>) {
    peer.options.verify_cert = tls.verify;
    peer.options.verify_hostname = tls.verify;
    peer.options.ca = ca;
}

/// The active check the pool `pool` describes; over TLS when the pool uses TLS.
pub(crate) fn health_check(pool: &PoolSpec) -> Box<dyn HealthCheck + Send + Sync> {
    let spec = &pool.health_check;
    let tls = pool.tls.as_ref();
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
            let mut hc = HttpHealthCheck::new(host, tls.is_some());
            if let Some(tls) = tls {
                // The check speaks TLS like real requests, with the same name and trust. One
                // template serves every backend; without an SNI name (verify = false) any IP
                // literal does, since nothing is verified and no SNI is sent.
                hc.peer_template.sni = match pool.backends.first() {
                    Some((a, _)) => server_name(tls, *a),
                    None => tls.sni.clone(),
                };
                apply_tls(&mut hc.peer_template, tls, ca_of(tls));
            }
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
