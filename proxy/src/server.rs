//! Process assembly: the pingora server, its services (proxy, admin, health checks, config
//! reload) and shutdown.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use arc_swap::ArcSwap;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{ExecutionPhase, Server};
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;

use crate::active::Active;
use crate::admin::Admin;
use crate::cache::{EdgeCache, StoreCounters};
use crate::config::EdgeConfig;
use crate::edge::Edge;
use crate::health::HealthChecks;
use crate::metrics::Metrics;
use crate::reload::signal::SighupReload;
use crate::reload::watcher::ConfigWatcher;
use crate::reload::Reloader;

/// Starts the edge with `config` and serves until a signal ends the process.
pub fn serve(config: EdgeConfig) -> anyhow::Result<()> {
    // pingora binds inside its service threads and exits the process on failure with a
    // terse log line; binding once here first turns that into a clear error.
    // Held together, so listeners that conflict with each other (`0.0.0.0:P` beside `[::]:P`
    // on a dual-stack host) fail here too.
    let mut probes = Vec::new();
    for addr in config.http_listeners.iter().chain([&config.admin_listener]) {
        probes.push(TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?);
    }
    drop(probes);
    tracing::info!("{}", config.summary());

    let grace = config.server.grace_period;
    let conf = ServerConf {
        threads: config.server.threads,
        // The drain watcher below ends the process as soon as nothing is in flight, or when
        // the grace period is over; pingora's own (whole-second) timer is only a backstop.
        grace_period_seconds: Some(grace.as_secs() + 2),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let metrics = Arc::new(Metrics::new());
    let cache = EdgeCache::new(
        config.cache.memory,
        StoreCounters {
            evictions: metrics.cache_evictions.clone(),
        },
        config.cache.lock_timeout,
    );
    metrics
        .cache_capacity_bytes
        .set(i64::try_from(config.cache.memory).unwrap_or(i64::MAX));
    let config_file = config.file.clone();
    let http_listeners = config.http_listeners.clone();
    let admin_listener = config.admin_listener;
    let active = Active::build(config, &metrics).map_err(anyhow::Error::msg)?;
    if active.pools.is_empty() {
        bail!("no pools configured");
    }
    let active = Arc::new(ArcSwap::from_pointee(active));
    let reloader = match &config_file {
        Some(path) => Some(Arc::new(
            Reloader::new(path, active.clone(), metrics.clone(), Vec::new())
                .map_err(anyhow::Error::msg)?,
        )),
        None => {
            // Quick mode reloads nothing, but still says which config it runs.
            let hash = crate::reload::fingerprint(&active.load().config)
                .map(|f| crate::reload::short_hash(&f))
                .map_err(anyhow::Error::msg)?;
            metrics.config_info.with_label_values(&[&hash]).set(1);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            metrics.config_last_success.set(now);
            None
        }
    };

    let mut proxy = pingora_proxy::http_proxy_service_with_name(
        &server.configuration,
        Edge::new(active.clone(), metrics.clone(), cache),
        "dime-edge proxy",
    );
    // HTTP/2 over cleartext (prior knowledge) beside HTTP/1.1, as Varnish and nginx offer.
    let mut options = pingora_core::apps::HttpServerOptions::default();
    options.h2c = true;
    if let Some(app) = proxy.app_logic_mut() {
        app.server_options = Some(options);
    }
    for addr in &http_listeners {
        proxy.add_tcp(&addr.to_string());
    }

    let mut admin = Service::new(
        "dime-edge admin".to_string(),
        Admin {
            active: active.clone(),
            metrics: metrics.clone(),
            cache,
            reloader: reloader.clone(),
        },
    );
    admin.add_tcp(&admin_listener.to_string());
    admin.threads = Some(1);

    let health = background_service(
        "health checks",
        HealthChecks {
            active: active.clone(),
            applied: reloader.as_ref().map(|r| r.subscribe()),
            metrics: metrics.clone(),
        },
    );

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(health);
    if let Some(r) = &reloader {
        server.add_service(background_service(
            "config watcher",
            ConfigWatcher {
                reloader: r.clone(),
            },
        ));
    }
    server.add_service(background_service("SIGHUP", SighupReload { reloader }));
    spawn_drain_watcher(&server, metrics, grace);
    server.run_forever();
}

/// Ends the process as soon as in-flight requests are done after SIGTERM, instead of always
/// sleeping the whole grace period as pingora does.
fn spawn_drain_watcher(server: &Server, metrics: Arc<Metrics>, grace: Duration) {
    let mut phases = server.watch_execution_phase();
    std::thread::spawn(move || loop {
        match phases.blocking_recv() {
            Ok(ExecutionPhase::ShutdownGracePeriod) => {
                let deadline = Instant::now() + grace;
                while metrics.in_flight.get() > 0 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let left = metrics.in_flight.get();
                if left > 0 {
                    tracing::warn!(
                        in_flight = left,
                        "grace period over: exiting with requests in flight"
                    );
                } else {
                    tracing::info!("drained: no request in flight, exiting");
                }
                std::process::exit(0);
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    });
}
