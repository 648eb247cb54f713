//! The admin side: login and logout, the catalog list, and create/edit/delete forms for
//! titles and channels. Every state-changing form carries the session's CSRF token.
//!
//! [`session`] is the session extractor and the CSRF check, [`login`] the login form with its
//! throttle and logout, [`entries`] the generic forms of catalog entries; the list is here.

pub mod entries;
pub mod login;
pub mod session;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;
use serde::Deserialize;

use super::caching::PRIVATE;
use super::errors::PageError;
use super::views::catalog_views;
use super::AppState;

pub use entries::{create_entry, delete_entry, edit_entry, new_entry, update_entry, EntryForm};
pub use login::{login, login_form, logout, LoginForm};
pub(crate) use session::{check_csrf, see_other};
pub use session::{AdminSession, CsrfOnly, Posted};

/// Where the session cookie is sent: only the admin side, so public pages stay cacheable for
/// admins too.
const COOKIE_PATH: &str = "/admin";
/// Where the login form's CSRF cookie is sent.
const LOGIN_PATH: &str = "/admin/login";

/// `?notice=` after a redirect: which confirmation the list shows.
#[derive(Debug, Deserialize)]
pub struct NoticeQuery {
    /// `created`, `updated` or `deleted`.
    pub notice: Option<String>,
}

/// `GET /admin`: to the list.
pub async fn to_index() -> Response {
    see_other("/admin/")
}

/// `GET /admin/`: the catalog with edit and delete buttons.
pub async fn index(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    Query(query): Query<NoticeQuery>,
) -> Result<Response, PageError> {
    let (titles, channels) = catalog_views(&state.store, &state.media_base).await?;
    let notice = match query.notice.as_deref() {
        Some("created") => Some("Saved: the new entry is in the catalog."),
        Some("updated") => Some("Saved."),
        Some("deleted") => Some("Deleted."),
        _ => None,
    };
    Ok(state.html(
        StatusCode::OK,
        "admin/index.html",
        context! {
            page_title => "Admin",
            username => session.admin.username,
            csrf_token => session.csrf_token,
            titles, channels, notice,
            uploads => state.media_root.is_some(),
            upload_jobs => state.store.recent_jobs().await?,
        },
        PRIVATE,
    ))
}
