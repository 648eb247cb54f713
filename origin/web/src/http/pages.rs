//! The viewer's pages: the home grid and the player pages of titles and channels.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;

use super::caching::PUBLIC_PAGE;
use super::errors::PageError;
use super::views::{catalog_views, PlayerView};
use super::AppState;

/// `GET /`: every live channel and title as a grid of cards.
pub async fn home(State(state): State<AppState>) -> Result<Response, PageError> {
    let (titles, channels) = catalog_views(&state.store, &state.media_base).await?;
    Ok(state.html(
        StatusCode::OK,
        "home.html",
        context! { page_title => "Home", titles, channels },
        PUBLIC_PAGE,
    ))
}

/// `GET /titles/{slug}`: a title's player page.
pub async fn title(
    State(state): State<AppState>,
    Path(slug): Path<String>,
) -> Result<Response, PageError> {
    let title = state.store.title_by_slug(&slug).await?.ok_or_else(|| {
        PageError::not_found(format!("There is no video `{slug}` in the catalog."))
    })?;
    let entry = PlayerView::title(&title, &state.media_base);
    Ok(state.html(
        StatusCode::OK,
        "player.html",
        context! { page_title => &entry.name, entry },
        PUBLIC_PAGE,
    ))
}

/// `GET /live/{slug}`: a live channel's player page.
pub async fn channel(
    State(state): State<AppState>,
    Path(slug): Path<String>,
) -> Result<Response, PageError> {
    let channel = state
        .store
        .channel_by_slug(&slug)
        .await?
        .ok_or_else(|| PageError::not_found(format!("There is no live channel `{slug}`.")))?;
    let entry = PlayerView::channel(&channel, &state.media_base);
    Ok(state.html(
        StatusCode::OK,
        "player.html",
        context! { page_title => &entry.name, entry },
        PUBLIC_PAGE,
    ))
}

/// Any other address: 404.
pub async fn not_found() -> PageError {
    PageError::not_found("There is nothing at this address.")
}
