//! The HTTP side: routes, the per-request middleware (session, cache headers, error pages)
//! and the handlers, one module per audience (viewers, the player API, admins).

pub mod admin;
pub mod api;
pub mod caching;
pub mod context;
pub mod cookies;
pub mod errors;
pub mod pages;
pub mod static_files;
pub mod upload;
pub mod views;

use std::ops::Deref;
use std::sync::Arc;

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;

use crate::assets::Assets;
use crate::client_address::TrustedProxies;
use crate::edges::Fleet;
use crate::forms::{ChannelForm, TitleForm};
use crate::login_throttle::LoginThrottle;
use crate::media::MediaBase;
use crate::replicas::Replica;
use crate::store::Store;
use crate::templates::Templates;
use crate::view_limit::ViewLimiter;

/// What every handler shares.
#[derive(Debug)]
pub struct Shared {
    /// The catalog and admin database.
    pub store: Store,
    /// Compiled page templates.
    pub templates: Templates,
    /// Embedded static files.
    pub assets: Assets,
    /// URL prefix of relative stream and poster paths.
    pub media_base: MediaBase,
    /// Where uploaded videos are packaged, if uploads are on.
    pub media_root: Option<std::path::PathBuf>,
    /// Failed admin logins, per address and username.
    pub login_throttle: LoginThrottle,
    /// Whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
    /// Which viewers' views were counted in the last hour.
    pub view_limiter: ViewLimiter,
    /// This process among the web app's replicas: its id, and the jobs it packages.
    pub replica: Arc<Replica>,
    /// The upload form's limits.
    pub upload_limits: upload::UploadLimits,
    /// One permit per upload being received or packaged.
    pub upload_slots: Arc<tokio::sync::Semaphore>,
    /// The edge fleet and its health, when `--edges` is given.
    pub fleet: Option<Arc<Fleet>>,
}

/// Cheap handle on [`Shared`], cloned into each request.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// Wraps the shared parts.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }

    /// Renders template `name` as an HTML response with `status` and `Cache-Control: cache`;
    /// a rendering failure is logged and becomes a 500.
    pub fn html(
        &self,
        status: StatusCode,
        name: &str,
        context: impl Serialize,
        cache: &'static str,
    ) -> Response {
        match self.templates.render(name, context) {
            Ok(body) => (
                status,
                [
                    (
                        CONTENT_TYPE,
                        HeaderValue::from_static("text/html; charset=utf-8"),
                    ),
                    (CACHE_CONTROL, HeaderValue::from_static(cache)),
                ],
                body,
            )
                .into_response(),
            Err(err) => {
                tracing::error!(template = name, error = %err, "template failed to render");
                errors::PageError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "This page failed to render; the error is in the server log.",
                )
                .into_response()
            }
        }
    }
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Every route of the web app, wrapped in the request middleware.
pub fn router(state: AppState) -> Router {
    // The form's text fields and multipart framing come on top of the file.
    let upload_body_limit = usize::try_from(state.upload_limits.max_bytes.saturating_add(1 << 20))
        .unwrap_or(usize::MAX);
    Router::new()
        .route("/", get(pages::home))
        .route("/titles/{slug}", get(pages::title))
        .route("/live/{slug}", get(pages::channel))
        .route("/static/{*path}", get(static_files::serve))
        .route("/healthz", get(api::healthz))
        .route("/api/catalog", get(api::catalog))
        .route("/api/edges", get(api::edges))
        .route("/api/views/{kind}/{slug}", post(api::count_view))
        .route("/admin", get(admin::to_index))
        .route("/admin/", get(admin::index))
        .route("/admin/login", get(admin::login_form).post(admin::login))
        .route("/admin/logout", post(admin::logout))
        .route("/admin/titles", post(admin::create_entry::<TitleForm>))
        .route("/admin/titles/new", get(admin::new_entry::<TitleForm>))
        .route(
            "/admin/titles/upload",
            get(upload::form)
                .post(upload::receive)
                .layer(axum::extract::DefaultBodyLimit::max(upload_body_limit)),
        )
        .route("/admin/uploads/{id}", get(upload::job))
        .route("/admin/titles/{id}", post(admin::update_entry::<TitleForm>))
        .route(
            "/admin/titles/{id}/edit",
            get(admin::edit_entry::<TitleForm>),
        )
        .route(
            "/admin/titles/{id}/delete",
            post(admin::delete_entry::<TitleForm>),
        )
        .route("/admin/channels", post(admin::create_entry::<ChannelForm>))
        .route("/admin/channels/new", get(admin::new_entry::<ChannelForm>))
        .route(
            "/admin/channels/{id}",
            post(admin::update_entry::<ChannelForm>),
        )
        .route(
            "/admin/channels/{id}/edit",
            get(admin::edit_entry::<ChannelForm>),
        )
        .route(
            "/admin/channels/{id}/delete",
            post(admin::delete_entry::<ChannelForm>),
        )
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            context::middleware,
        ))
        .with_state(state)
}
