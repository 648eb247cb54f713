//! The listening socket and its lifetime: bind, serve until shutdown, drain.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::net::TcpListener;

use crate::assets::Assets;
use crate::client_address::TrustedProxies;
use crate::edges::Fleet;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::http::upload::UploadLimits;
use crate::http::{router, AppState, Shared};
use crate::login_throttle::{Limits, LoginThrottle};
use crate::media::MediaBase;
use crate::replicas::{remove_leftovers, Replica};
use crate::store::{Store, StoreError};
use crate::templates::Templates;
use crate::view_limit::ViewLimiter;

/// How long a stopping replica waits for its packaging tasks to record their end.
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the web app could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listening address is taken or not ours.
    #[error("cannot listen on {addr}: {cause}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        cause: io::Error,
    },
    /// A compiled-in template does not parse (a build defect, reported with its line).
    #[error("page templates are broken: {0}")]
    Templates(#[from] minijinja::Error),
    /// The database refused this replica's registration or its start-up sweep.
    #[error("cannot register this replica with the database: {0}")]
    Database(#[from] StoreError),
}

/// What the app serves besides its database.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// URL prefix of relative stream and poster paths.
    pub media_base: MediaBase,
    /// The streamers' directory; when set, admins can upload videos (packaged into
    /// `vod/<slug>/` under it), otherwise only `dime-origin web import` adds titles.
    pub media_root: Option<PathBuf>,
    /// How many failed admin logins are tolerated, per address and per username.
    pub login_limits: Limits,
    /// The proxies (the edge) whose `X-Forwarded-For` names the client; loopback by default.
    pub trusted_proxies: TrustedProxies,
    /// Size, concurrency and free-space limits of uploads, and the packager child's limits.
    pub upload_limits: UploadLimits,
    /// The edge fleet (`--edges`): player pages then list the viewer's edges, best first;
    /// without it, streams stay under `media_base` (the edge the site was loaded from).
    pub fleet: Option<Arc<Fleet>>,
}

/// A bound web app, ready to serve.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    state: AppState,
}

impl Server {
    /// Binds `listen` and prepares the app over an opened `store`.
    pub async fn bind(
        listen: SocketAddr,
        store: Store,
        options: Options,
    ) -> Result<Self, StartError> {
        let assets = Assets::embedded();
        let templates = Templates::new(&assets)?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|cause| StartError::Bind {
                addr: listen,
                cause,
            })?;
        let replica = Arc::new(Replica::new(options.upload_limits.replica_timeout));
        replica.register(&store).await?;
        if let Some(root) = &options.media_root {
            // Before any upload can start: what no live replica owns is a crash's leftover.
            remove_leftovers(root, &store, &replica).await?;
        }
        let state = AppState::new(Shared {
            store,
            templates,
            assets,
            media_base: options.media_base,
            media_root: options.media_root,
            login_throttle: LoginThrottle::new(options.login_limits),
            trusted_proxies: options.trusted_proxies,
            view_limiter: ViewLimiter::default(),
            upload_slots: Arc::new(Semaphore::new(options.upload_limits.max_concurrent)),
            upload_limits: options.upload_limits,
            replica,
            fleet: options.fleet,
        });
        Ok(Self { listener, state })
    }

    /// The address actually bound (tests bind port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
        let addr = self.local_addr();
        let trusted: Vec<String> = self
            .state
            .trusted_proxies
            .blocks()
            .iter()
            .map(ToString::to_string)
            .collect();
        tracing::info!(%addr, backend = ?self.state.store.backend(), media_base = %self.state.media_base, trusted_proxies = ?trusted, replica = %self.state.replica.id, "web app listening");
        let store = self.state.store.clone();
        let replica = Arc::clone(&self.state.replica);
        // Reports to the database and sweeps after stopped replicas while serving.
        let _heartbeat =
            Arc::clone(&self.state.replica).spawn(store.clone(), self.state.media_root.clone());
        // Polls the edges while serving; stops with the server.
        let _poller = self.state.fleet.as_ref().map(|fleet| fleet.spawn_poller());
        if let Some(fleet) = &self.state.fleet {
            let edges: Vec<&str> = fleet
                .config()
                .edges
                .iter()
                .map(|e| e.name.as_str())
                .collect();
            tracing::info!(?edges, interval = ?fleet.config().poll.interval, "steering viewers between edges");
        }
        let app = router(self.state);
        // The peer address is the client, unless it is a trusted proxy that names the client.
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let result = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        // A rolling update stops replicas with SIGTERM: their jobs fail now, not a timeout later.
        replica.stop_jobs(SHUTDOWN_WAIT).await;
        store.close().await;
        result
    }
}
