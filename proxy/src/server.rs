//! Process assembly: the pingora server, its services (proxy, admin, health checks, config
//! reload) and shutdown.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use arc_swap::ArcSwap;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::{ConnectionFilter, L4BufferSettings, ListenerConfig};
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{ExecutionPhase, Server};
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use pingora_proxy::HttpProxy;

use crate::active::Active;
use crate::admin::Admin;
use crate::cache::{BodyFileCounters, EdgeCache, FillBudget, StoreCounters};
use crate::config::types::RestartSettings;
use crate::config::EdgeConfig;
use crate::connections::{Admission, Counted, Limits, Listener, LiveLimits};
use crate::edge::Edge;
use crate::health::HealthChecks;
use crate::metrics::Metrics;
use crate::reload::components::{CertificateReload, FdBudget, LogReload};
use crate::reload::signal::SighupReload;
use crate::reload::watcher::ConfigWatcher;
use crate::reload::Reloader;
use crate::tls::live::log_certificates;
use crate::tls::SniResolver;

/// After shutdown starts, in-flight must stay at zero this long before the process exits:
/// a connection accepted just before the listeners closed gets its request parsed (and
/// counted) within it.
const DRAIN_SETTLE: Duration = Duration::from_millis(250);

/// How `run` starts.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Take the listening sockets over from a running edge (`run --upgrade`) instead of
    /// binding them.
    pub upgrade: bool,
}

/// Starts the edge with `config` and serves until a signal ends the process.
pub fn serve(config: EdgeConfig, run: RunOptions) -> anyhow::Result<()> {
    if run.upgrade {
        check_upgrade_sock(&config.restart.upgrade_sock)?;
    } else {
        // pingora binds inside its service threads and exits the process on failure with a
        // terse log line; binding once here first turns that into a clear error.
        // Held together, so listeners that conflict with each other (`0.0.0.0:P` beside
        // `[::]:P` on a dual-stack host) fail here too. An upgrade inherits its sockets.
        let mut probes = Vec::new();
        for addr in config
            .restart
            .http_listeners
            .iter()
            .chain(&config.restart.https_listeners)
            .chain([&config.restart.admin_listener])
        {
            probes
                .push(TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?);
        }
        drop(probes);
    }
    tracing::info!("{}", config.summary());
    // What `check` warns about, for an operator who never ran it.
    for w in &config.warnings {
        tracing::warn!("{}", w.as_warning());
    }
    let open_files = match crate::connections::raise_fd_limit() {
        Ok(limit) => {
            if let Some(w) = crate::connections::fd_warning(config.server.max_connections, limit) {
                tracing::warn!("{w}");
            }
            limit
        }
        Err(e) => {
            tracing::warn!("cannot read the limit on open files (RLIMIT_NOFILE): {e}");
            0
        }
    };
    // Before anything else can take a while (an upgrade's handover): from here on SIGUSR1
    // reopens the log files and unused signals no longer end the process.
    let log_outputs = crate::logging::outputs();
    crate::logging::signals::spawn(log_outputs.clone()).context("cannot handle signals")?;

    let grace = config.restart.grace_period;
    let conf = ServerConf {
        threads: config.restart.threads,
        // The drain watcher below ends the process as soon as nothing is in flight, or when
        // the grace period is over; pingora's own (whole-second) timer is only a backstop.
        grace_period_seconds: Some(grace.as_secs() + 2),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: config.restart.upgrade_sock.display().to_string(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: run.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    if run.upgrade {
        tracing::info!(
            socket = %config.restart.upgrade_sock.display(),
            "waiting for the running edge's listeners: send it SIGQUIT now"
        );
    }
    // With --upgrade this blocks until the old process sends its sockets (it does on SIGQUIT).
    server.bootstrap();
    if run.upgrade {
        tracing::info!("listeners taken over from the previous process");
    }

    let metrics = Arc::new(Metrics::new());
    // Big bodies go into files as far as descriptors allow beside max_connections viewers
    // and the margin for everything else.
    crate::cache::body_file::install(
        crate::cache::body_file::limit(
            open_files,
            config.server.max_connections as u64 + crate::connections::FD_MARGIN,
        ),
        BodyFileCounters {
            files: metrics.cache_body_files.clone(),
            sent_bytes: metrics.cache_sendfile_bytes.clone(),
            in_memory: metrics.cache_bodies_in_memory.clone(),
        },
    );
    let cache = EdgeCache::new(
        config.restart.cache_memory,
        StoreCounters {
            evictions: metrics.cache_evictions.clone(),
        },
        FillBudget::new(
            config.restart.cache_fill_memory,
            metrics.cache_fill_bytes.clone(),
            metrics.cache_fills_demoted.clone(),
        ),
        config.restart.cache_lock_timeout,
    );
    metrics
        .cache_capacity_bytes
        .set(i64::try_from(config.restart.cache_memory).unwrap_or(i64::MAX));
    let config_file = config.file.clone();
    let restart = config.restart.clone();
    let resolver = Arc::new(SniResolver::new(config.cert_set()));
    let certificates = config.certificates.clone();
    log_certificates(&certificates, &metrics);
    let active = Active::build(config, &metrics)?;
    if active.pools.is_empty() {
        bail!("no pools configured");
    }
    let active = Arc::new(ArcSwap::from_pointee(active));
    let mut components: Vec<Arc<dyn crate::reload::Component>> = vec![
        Arc::new(CertificateReload::new(resolver.clone(), metrics.clone())),
        Arc::new(FdBudget),
    ];
    if let Some(outputs) = log_outputs {
        components.push(Arc::new(LogReload(outputs)));
    }
    let reloader = match &config_file {
        Some(path) => Some(Arc::new(
            Reloader::new(
                path,
                Arc::new(crate::active::LiveRoutes::new(
                    active.clone(),
                    metrics.clone(),
                )),
                metrics.clone(),
                components,
            )
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

    let draining = Arc::new(AtomicBool::new(false));
    let app = pingora_proxy::http_proxy(
        &server.configuration,
        Edge::new(active.clone(), metrics.clone(), cache).with_draining(draining.clone()),
    );
    let proxy = proxy_service(app, &restart, &resolver, &active, &metrics)?;

    let mut admin = Service::new(
        "dime-edge admin".to_string(),
        Admin {
            active: active.clone(),
            metrics: metrics.clone(),
            cache,
            reloader: reloader.clone(),
        },
    );
    admin.add_tcp(&restart.admin_listener.to_string());
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
    server.add_service(background_service(
        "SIGUSR2",
        crate::upgrade::Respawn::new(config_file.as_deref()),
    ));
    server.add_service(background_service("systemd notify", SystemdReady));
    spawn_drain_watcher(&server, metrics, grace, draining);
    server.run_forever();
}

/// The proxy service: the edge behind every `http` and `https` listener, each listener with its
/// connection filter (`max_connections`), every connection counted and timed (`Counted`), and
/// pingora's HTTP/1.1 and HTTP/2 settings.
fn proxy_service(
    mut app: HttpProxy<Edge>,
    restart: &RestartSettings,
    resolver: &Arc<SniResolver>,
    active: &Arc<ArcSwap<Active>>,
    metrics: &Metrics,
) -> anyhow::Result<Service<Counted<HttpProxy<Edge>>>> {
    // HTTP/2 over cleartext (prior knowledge) beside HTTP/1.1, as Varnish and nginx offer.
    let mut options = pingora_core::apps::HttpServerOptions::default();
    options.h2c = true;
    // HTTP/1.1 takes server.keepalive_timeout per request (edge.rs); HTTP/2 reads it here, once.
    options.h2_idle_timeout = Some(restart.http2_idle_timeout);
    app.server_options = Some(options);
    let mut h2 = pingora_core::protocols::http::v2::server::default_h2_options();
    h2.max_concurrent_streams(restart.http2_max_concurrent_streams);
    app.h2_options = Some(h2);

    let limits: LiveLimits = {
        let active = active.clone();
        Arc::new(move || {
            let server = &active.load().config.server;
            Limits {
                max_connections: server.max_connections,
                header_timeout: server.header_timeout,
                keepalive_requests: server.keepalive_requests,
            }
        })
    };
    let listener = |addr: &SocketAddr| {
        Listener::new(
            *addr,
            &metrics.listener_connections_open,
            &metrics.connections_refused,
            &metrics.connection_timeouts,
        )
    };
    let http: Vec<Arc<Listener>> = restart.http_listeners.iter().map(listener).collect();
    let https: Vec<Arc<Listener>> = restart.https_listeners.iter().map(listener).collect();
    let admission = |l: &Arc<Listener>| -> Arc<dyn ConnectionFilter> {
        Arc::new(Admission::new(
            l.clone(),
            metrics.connections_open.clone(),
            limits.clone(),
        ))
    };
    let mut proxy = Service::new(
        "dime-edge proxy".to_string(),
        Counted::new(
            app,
            metrics.connections_open.clone(),
            http.iter().chain(&https).cloned().collect(),
            limits.clone(),
        ),
    );
    for (addr, l) in restart.http_listeners.iter().zip(&http) {
        proxy.add_listener(
            ListenerConfig::tcp(addr.to_string())
                .l4_buffer(viewer_buffers())
                .connection_filter(admission(l)),
        );
    }
    for (addr, l) in restart.https_listeners.iter().zip(&https) {
        // The paths are unused: the resolver supplies every certificate, by SNI.
        let mut tls = TlsSettings::intermediate("", "")
            .map_err(|e| anyhow::anyhow!("TLS settings for {addr}: {e}"))?;
        tls.set_cert_resolver(resolver.clone());
        // ALPN: h2 preferred, http/1.1 beside it. pingora's rustls acceptor allows TLS 1.2
        // and 1.3 only.
        tls.enable_h2();
        proxy.add_listener(
            ListenerConfig::tcp(addr.to_string())
                .tls(tls)
                .l4_buffer(viewer_buffers())
                .connection_filter(admission(l)),
        );
    }
    Ok(proxy)
}

/// The socket buffers of a viewer's connection. pingora puts a 64 KiB read buffer in front of
/// every accepted connection, allocated when it is accepted and kept while it idles: most of
/// an idle keep-alive connection's memory. A viewer sends small requests, which pingora reads
/// into its own header buffer, so the edge reads from the socket directly; writes keep
/// pingora's small buffer.
fn viewer_buffers() -> L4BufferSettings {
    L4BufferSettings::default().read(0)
}

/// `run --upgrade` binds the socket the old process connects to; pingora panics when it
/// cannot, so say why first.
fn check_upgrade_sock(path: &Path) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        bail!(
            "server.upgrade_sock {}: directory {} does not exist; create it or set [server] upgrade_sock",
            path.display(),
            dir.display()
        );
    }
    // Creating the socket needs write access to the directory.
    let probe = dir.join(format!(".dime-edge-upgrade-probe-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => bail!(
            "server.upgrade_sock {}: cannot create files in {}: {e}; run as a user who can, or set [server] upgrade_sock",
            path.display(),
            dir.display()
        ),
    }
}

/// Ends the process as soon as in-flight requests are done after SIGTERM or an upgrade,
/// instead of always sleeping the whole grace period as pingora does. During an upgrade's
/// handover it also sets `draining`, so keep-alive viewers are told to reconnect (to the new
/// process) after their current response instead of having idle connections cut.
fn spawn_drain_watcher(
    server: &Server,
    metrics: Arc<Metrics>,
    grace: Duration,
    draining: Arc<AtomicBool>,
) {
    let mut phases = server.watch_execution_phase();
    std::thread::spawn(move || loop {
        match phases.blocking_recv() {
            Ok(ExecutionPhase::GracefulUpgradeTransferringFds) => {
                tracing::info!("upgrade: handing the listeners to the new process");
                draining.store(true, Ordering::Release);
            }
            Ok(ExecutionPhase::ShutdownGracePeriod) => {
                draining.store(true, Ordering::Release);
                let deadline = Instant::now() + grace;
                let mut idle_since: Option<Instant> = None;
                while Instant::now() < deadline {
                    if metrics.in_flight.get() > 0 {
                        idle_since = None;
                    } else if idle_since.get_or_insert_with(Instant::now).elapsed() >= DRAIN_SETTLE
                    {
                        break;
                    }
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
                crate::logging::access::flush();
                std::process::exit(0);
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    });
}

/// Tells systemd, when it started us, that the edge is up and which pid it is.
struct SystemdReady;

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for SystemdReady {
    async fn start(&self, _shutdown: pingora_core::server::ShutdownWatch) {
        crate::systemd::ready();
    }
}
