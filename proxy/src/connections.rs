//! Open viewer connections, counted around pingora's per-connection handler.

use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use prometheus::IntGauge;

/// Wraps a listener's application so `open` counts the connections it holds.
///
/// pingora has no connection hooks, but its accept loop runs one connection's whole life
/// through `process_new`: HTTP/2 stays inside it, and an HTTP/1.1 keep-alive connection comes
/// straight back into it for its next request, so the connection is counted while it waits
/// idle too (nginx's stub_status counts its waiting connections the same way).
pub(crate) struct Counted<A> {
    app: Arc<A>,
    open: IntGauge,
}

impl<A> Counted<A> {
    /// Counts `app`'s connections in `open`.
    pub(crate) fn new(app: A, open: IntGauge) -> Self {
        Counted {
            app: Arc::new(app),
            open,
        }
    }
}

/// Holds one count; dropped when the handler returns or its task is cancelled.
struct Open(IntGauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Counted<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.open.inc();
        let _open = Open(self.open.clone());
        self.app.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}
