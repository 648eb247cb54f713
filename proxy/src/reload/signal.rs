//! SIGHUP: reload the config file, like nginx and HAProxy do.

use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use super::{Reloader, Trigger};

/// Reloads on every SIGHUP; in quick mode (no file) says there is nothing to reload. Either
/// way SIGHUP no longer ends the process, its default action.
pub(crate) struct SighupReload {
    /// The reloader; `None` in quick mode.
    pub reloader: Option<Arc<Reloader>>,
}

#[async_trait]
impl BackgroundService for SighupReload {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot watch SIGHUP; it will terminate the process");
            return;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => match &self.reloader {
                    Some(r) => {
                        r.reload(Trigger::Signal).await;
                    }
                    None => tracing::warn!(
                        "SIGHUP received: quick mode has no config file to reload; the running config is unchanged"
                    ),
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}
