//! Catalog entries as pages and the JSON API show them: locations resolved against the
//! media base, durations formatted, page URLs filled in.

use serde::Serialize;

use crate::catalog::{Channel, Kind, Title};
use crate::edges::Steering;
use crate::media::{format_duration, is_absolute_url, MediaBase};
use crate::store::{Store, StoreError};

/// Every title and channel as the home grid, the admin list and `GET /api/catalog` show them.
pub async fn catalog_views(
    store: &Store,
    base: &MediaBase,
) -> Result<(Vec<TitleView>, Vec<ChannelView>), StoreError> {
    let titles = store.titles().await?;
    let channels = store.channels().await?;
    Ok((
        titles
            .iter()
            .map(|title| TitleView::new(title, base))
            .collect(),
        channels
            .iter()
            .map(|channel| ChannelView::new(channel, base))
            .collect(),
    ))
}

/// A title as the home grid, the admin list and `GET /api/catalog` show it.
#[derive(Debug, Clone, Serialize)]
pub struct TitleView {
    /// Database id.
    pub id: i64,
    /// URL name.
    pub slug: String,
    /// Display title.
    pub title: String,
    /// Free text.
    pub description: String,
    /// Poster URL for the browser, if any.
    pub poster: Option<String>,
    /// Running time in milliseconds, if known.
    pub duration_ms: Option<i64>,
    /// Running time for people (`1:02:03`), if known.
    pub duration: Option<String>,
    /// The stored playlist location (relative to the media base, or absolute).
    pub stream_url: String,
    /// The playlist URL for the browser.
    pub src: String,
    /// The title's page, `/titles/{slug}`.
    pub page: String,
    /// Playbacks started.
    pub views: i64,
}

/// A channel as the home grid, the admin list and `GET /api/catalog` show it.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelView {
    /// Database id.
    pub id: i64,
    /// URL name.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Poster URL for the browser, if any.
    pub poster: Option<String>,
    /// The stored playlist location.
    pub stream_url: String,
    /// The playlist URL for the browser.
    pub src: String,
    /// The channel's page, `/live/{slug}`.
    pub page: String,
    /// Playbacks started.
    pub views: i64,
}

/// What the player page needs, for a title or a channel alike.
#[derive(Debug, Clone, Serialize)]
pub struct PlayerView {
    /// `titles` or `live`.
    pub kind: &'static str,
    /// URL name.
    pub slug: String,
    /// Title or channel name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Poster URL, if any.
    pub poster: Option<String>,
    /// Running time for people, for titles whose duration is known.
    pub duration: Option<String>,
    /// Playlist URL: the video element's `data-src`.
    pub src: String,
    /// Where the player posts its view: `/api/views/{kind}/{slug}`.
    pub views_url: String,
    /// Playbacks started.
    pub views: i64,
    /// Whether this is a live channel.
    pub live: bool,
    /// With `--edges`: the viewer's stream bases, best first, as a JSON array (the video
    /// element's `data-bases`; `src` then starts with the first).
    pub bases: Option<String>,
}

impl TitleView {
    /// The view of `title` under `base`.
    pub fn new(title: &Title, base: &MediaBase) -> Self {
        Self {
            id: title.id,
            slug: title.slug.clone(),
            title: title.title.clone(),
            description: title.description.clone(),
            poster: title.poster.as_deref().map(|poster| base.resolve(poster)),
            duration_ms: title.duration_ms,
            duration: title.duration_ms.map(format_duration),
            stream_url: title.stream_url.clone(),
            src: base.resolve(&title.stream_url),
            page: format!("/{}/{}", Kind::Title.segment(), title.slug),
            views: title.views,
        }
    }
}

impl ChannelView {
    /// The view of `channel` under `base`.
    pub fn new(channel: &Channel, base: &MediaBase) -> Self {
        Self {
            id: channel.id,
            slug: channel.slug.clone(),
            name: channel.name.clone(),
            description: channel.description.clone(),
            poster: channel.poster.as_deref().map(|poster| base.resolve(poster)),
            stream_url: channel.stream_url.clone(),
            src: base.resolve(&channel.stream_url),
            page: format!("/{}/{}", Kind::Channel.segment(), channel.slug),
            views: channel.views,
        }
    }
}

impl PlayerView {
    /// Points the player at the edges of `steering`, best first, when the stored playlist
    /// `location` is relative (a stream on our edges; an absolute URL is played as it is);
    /// a relative stored `poster` comes from the first edge too. Whether it did: the page is
    /// then the viewer's own.
    pub fn steer(&mut self, location: &str, poster: Option<&str>, steering: &Steering) -> bool {
        let Some(first) = steering.bases.first() else {
            return false;
        };
        if let Some(poster) = poster.filter(|poster| !is_absolute_url(poster)) {
            self.poster = Some(format!("{first}{poster}"));
        }
        if is_absolute_url(location) {
            return false;
        }
        self.src = format!("{first}{location}");
        self.bases = serde_json::to_string(&steering.bases).ok();
        self.bases.is_some()
    }

    /// The player for a title.
    pub fn title(title: &Title, base: &MediaBase) -> Self {
        let view = TitleView::new(title, base);
        Self {
            kind: Kind::Title.segment(),
            views_url: format!("/api/views/{}/{}", Kind::Title.segment(), view.slug),
            slug: view.slug,
            name: view.title,
            description: view.description,
            poster: view.poster,
            duration: view.duration,
            src: view.src,
            views: view.views,
            live: false,
            bases: None,
        }
    }

    /// The player for a live channel.
    pub fn channel(channel: &Channel, base: &MediaBase) -> Self {
        let view = ChannelView::new(channel, base);
        Self {
            kind: Kind::Channel.segment(),
            views_url: format!("/api/views/{}/{}", Kind::Channel.segment(), view.slug),
            slug: view.slug,
            name: view.name,
            description: view.description,
            poster: view.poster,
            duration: None,
            src: view.src,
            views: view.views,
            live: true,
            bases: None,
        }
    }
}
