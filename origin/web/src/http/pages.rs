//! The viewer's pages: the home grid and the player pages of titles and channels.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use minijinja::context;

use super::caching::{PER_VIEWER_PAGE, PUBLIC_PAGE};
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
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(slug): Path<String>,
) -> Result<Response, PageError> {
    let title = state.store.title_by_slug(&slug).await?.ok_or_else(|| {
        PageError::not_found(format!("There is no video `{slug}` in the catalog."))
    })?;
    let mut entry = PlayerView::title(&title, &state.media_base);
    let (stream, poster) = (&title.stream_url, title.poster.as_deref());
    let cache = steer(&state, &headers, peer, stream, poster, &mut entry);
    Ok(state.html(
        StatusCode::OK,
        "player.html",
        context! { page_title => &entry.name, entry },
        cache,
    ))
}

/// `GET /live/{slug}`: a live channel's player page.
pub async fn channel(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(slug): Path<String>,
) -> Result<Response, PageError> {
    let channel = state
        .store
        .channel_by_slug(&slug)
        .await?
        .ok_or_else(|| PageError::not_found(format!("There is no live channel `{slug}`.")))?;
    let mut entry = PlayerView::channel(&channel, &state.media_base);
    let (stream, poster) = (&channel.stream_url, channel.poster.as_deref());
    let cache = steer(&state, &headers, peer, stream, poster, &mut entry);
    Ok(state.html(
        StatusCode::OK,
        "player.html",
        context! { page_title => &entry.name, entry },
        cache,
    ))
}

/// With `--edges`, gives the player this viewer's edges, best first; the page's
/// `Cache-Control`: the viewer's own then (see [`PER_VIEWER_PAGE`]), public otherwise.
fn steer(
    state: &AppState,
    headers: &HeaderMap,
    peer: SocketAddr,
    location: &str,
    poster: Option<&str>,
    entry: &mut PlayerView,
) -> &'static str {
    let Some(fleet) = &state.fleet else {
        return PUBLIC_PAGE;
    };
    let client = state.trusted_proxies.client_address(headers, peer.ip());
    if entry.steer(location, poster, &fleet.steer(client)) {
        PER_VIEWER_PAGE
    } else {
        PUBLIC_PAGE
    }
}

/// Any other address: 404.
pub async fn not_found() -> PageError {
    PageError::not_found("There is nothing at this address.")
}
