//! The catalog: VoD titles and live channels, their queries and their view counters.

use sqlx::any::{Any, AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::Row;

use crate::store::{is_unique_violation, now_secs, Store, StoreError};

/// A video on demand in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Title {
    /// Database id (admin URLs use it).
    pub id: i64,
    /// URL name: `/titles/{slug}`.
    pub slug: String,
    /// Display title.
    pub title: String,
    /// Free text shown on the title page.
    pub description: String,
    /// Poster image, relative to the media base or an absolute http(s) URL.
    pub poster: Option<String>,
    /// Running time in milliseconds, when known.
    pub duration_ms: Option<i64>,
    /// The HLS playlist, relative to the media base or an absolute http(s) URL.
    pub stream_url: String,
    /// Playbacks started.
    pub views: i64,
}

/// The editable fields of a title: what forms and `import` create or update.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TitleFields {
    /// URL name.
    pub slug: String,
    /// Display title.
    pub title: String,
    /// Free text.
    pub description: String,
    /// Poster image, if any.
    pub poster: Option<String>,
    /// Running time in milliseconds, if known.
    pub duration_ms: Option<i64>,
    /// The HLS playlist.
    pub stream_url: String,
}

/// A live channel in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// Database id (admin URLs use it).
    pub id: i64,
    /// URL name: `/live/{slug}`.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Free text shown on the channel page.
    pub description: String,
    /// Poster image, relative to the media base or an absolute http(s) URL.
    pub poster: Option<String>,
    /// The live HLS playlist, relative to the media base or an absolute http(s) URL.
    pub stream_url: String,
    /// Playbacks started.
    pub views: i64,
}

/// The editable fields of a channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelFields {
    /// URL name.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Poster image, if any.
    pub poster: Option<String>,
    /// The live HLS playlist.
    pub stream_url: String,
}

/// The two kinds of catalog entries, as they appear in URLs (`/titles/..`, `/live/..`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A VoD title.
    Title,
    /// A live channel.
    Channel,
}

impl Kind {
    /// The URL segment of this kind: `titles` or `live`.
    pub fn segment(self) -> &'static str {
        match self {
            Self::Title => "titles",
            Self::Channel => "live",
        }
    }

    /// The kind a URL segment names.
    pub fn from_segment(segment: &str) -> Option<Self> {
        match segment {
            "titles" => Some(Self::Title),
            "live" => Some(Self::Channel),
            _ => None,
        }
    }
}

const TITLE_COLUMNS: &str = "id, slug, title, description, poster, duration_ms, stream_url, views";
const CHANNEL_COLUMNS: &str = "id, slug, name, description, poster, stream_url, views";

fn title_from_row(row: &AnyRow) -> Result<Title, sqlx::Error> {
    Ok(Title {
        id: row.try_get("id")?,
        slug: row.try_get("slug")?,
        title: row.try_get("title")?,
        description: row.try_get("description")?,
        poster: row.try_get("poster")?,
        duration_ms: row.try_get("duration_ms")?,
        stream_url: row.try_get("stream_url")?,
        views: row.try_get("views")?,
    })
}

fn channel_from_row(row: &AnyRow) -> Result<Channel, sqlx::Error> {
    Ok(Channel {
        id: row.try_get("id")?,
        slug: row.try_get("slug")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        poster: row.try_get("poster")?,
        stream_url: row.try_get("stream_url")?,
        views: row.try_get("views")?,
    })
}

/// Adds a title through `executor` (the pool, or a transaction); its id.
pub(crate) async fn insert_title<'e, E>(
    executor: E,
    fields: &TitleFields,
) -> Result<i64, StoreError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let row = sqlx::query(
        "INSERT INTO titles (slug, title, description, poster, duration_ms, stream_url, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(&fields.slug)
    .bind(&fields.title)
    .bind(&fields.description)
    .bind(fields.poster.as_deref())
    .bind(fields.duration_ms)
    .bind(&fields.stream_url)
    .bind(now_secs())
    .fetch_one(executor)
    .await
    .map_err(conflict("title", &fields.slug))?;
    Ok(row.try_get("id")?)
}

/// Maps a UNIQUE violation on insert or update to [`StoreError::Conflict`].
fn conflict<'a>(what: &'static str, slug: &'a str) -> impl FnOnce(sqlx::Error) -> StoreError + 'a {
    move |err| {
        if is_unique_violation(&err) {
            StoreError::Conflict {
                what,
                slug: slug.to_owned(),
            }
        } else {
            StoreError::Query(err)
        }
    }
}

impl Store {
    /// The one entry `query` finds, if any, read by `from_row`.
    pub(crate) async fn fetch_entry<'q, T>(
        &self,
        query: Query<'q, Any, AnyArguments<'q>>,
        from_row: fn(&AnyRow) -> Result<T, sqlx::Error>,
    ) -> Result<Option<T>, StoreError> {
        let row = query.fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// Every title, newest first.
    pub async fn titles(&self) -> Result<Vec<Title>, StoreError> {
        let sql = format!("SELECT {TITLE_COLUMNS} FROM titles ORDER BY id DESC");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(title_from_row).collect::<Result<_, _>>()?)
    }

    /// The title with this slug.
    pub async fn title_by_slug(&self, slug: &str) -> Result<Option<Title>, StoreError> {
        let sql = format!("SELECT {TITLE_COLUMNS} FROM titles WHERE slug = $1");
        self.fetch_entry(sqlx::query(&sql).bind(slug), title_from_row)
            .await
    }

    /// The title with this id.
    pub async fn title_by_id(&self, id: i64) -> Result<Option<Title>, StoreError> {
        let sql = format!("SELECT {TITLE_COLUMNS} FROM titles WHERE id = $1");
        self.fetch_entry(sqlx::query(&sql).bind(id), title_from_row)
            .await
    }

    /// Adds a title and returns its id; [`StoreError::Conflict`] if the slug is taken.
    pub async fn create_title(&self, fields: &TitleFields) -> Result<i64, StoreError> {
        insert_title(&self.pool, fields).await
    }

    /// Replaces a title's fields (its views stay); false if there is no such title.
    pub async fn update_title(&self, id: i64, fields: &TitleFields) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE titles SET slug = $1, title = $2, description = $3, poster = $4, \
             duration_ms = $5, stream_url = $6 WHERE id = $7",
        )
        .bind(&fields.slug)
        .bind(&fields.title)
        .bind(&fields.description)
        .bind(fields.poster.as_deref())
        .bind(fields.duration_ms)
        .bind(&fields.stream_url)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(conflict("title", &fields.slug))?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes a title; false if there was no such title.
    pub async fn delete_title(&self, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM titles WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every channel, by name.
    pub async fn channels(&self) -> Result<Vec<Channel>, StoreError> {
        let sql = format!("SELECT {CHANNEL_COLUMNS} FROM channels ORDER BY name, id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(channel_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// The channel with this slug.
    pub async fn channel_by_slug(&self, slug: &str) -> Result<Option<Channel>, StoreError> {
        let sql = format!("SELECT {CHANNEL_COLUMNS} FROM channels WHERE slug = $1");
        self.fetch_entry(sqlx::query(&sql).bind(slug), channel_from_row)
            .await
    }

    /// The channel with this id.
    pub async fn channel_by_id(&self, id: i64) -> Result<Option<Channel>, StoreError> {
        let sql = format!("SELECT {CHANNEL_COLUMNS} FROM channels WHERE id = $1");
        self.fetch_entry(sqlx::query(&sql).bind(id), channel_from_row)
            .await
    }

    /// Adds a channel and returns its id; [`StoreError::Conflict`] if the slug is taken.
    pub async fn create_channel(&self, fields: &ChannelFields) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO channels (slug, name, description, poster, stream_url, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(&fields.slug)
        .bind(&fields.name)
        .bind(&fields.description)
        .bind(fields.poster.as_deref())
        .bind(&fields.stream_url)
        .bind(now_secs())
        .fetch_one(&self.pool)
        .await
        .map_err(conflict("channel", &fields.slug))?;
        Ok(row.try_get("id")?)
    }

    /// Replaces a channel's fields (its views stay); false if there is no such channel.
    pub async fn update_channel(
        &self,
        id: i64,
        fields: &ChannelFields,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE channels SET slug = $1, name = $2, description = $3, poster = $4, \
             stream_url = $5 WHERE id = $6",
        )
        .bind(&fields.slug)
        .bind(&fields.name)
        .bind(&fields.description)
        .bind(fields.poster.as_deref())
        .bind(&fields.stream_url)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(conflict("channel", &fields.slug))?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes a channel; false if there was no such channel.
    pub async fn delete_channel(&self, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM channels WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Counts one playback of the entry `slug` of `kind` and returns its new total, or `None`
    /// if there is no such entry. One atomic UPDATE, so concurrent viewers are never lost.
    pub async fn count_view(&self, kind: Kind, slug: &str) -> Result<Option<i64>, StoreError> {
        let sql = match kind {
            Kind::Title => "UPDATE titles SET views = views + 1 WHERE slug = $1 RETURNING views",
            Kind::Channel => {
                "UPDATE channels SET views = views + 1 WHERE slug = $1 RETURNING views"
            }
        };
        let row = sqlx::query(sql)
            .bind(slug)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.try_get("views")).transpose()?)
    }

    /// The view count of the entry `slug` of `kind`, or `None` if there is no such entry.
    pub async fn views(&self, kind: Kind, slug: &str) -> Result<Option<i64>, StoreError> {
        let sql = match kind {
            Kind::Title => "SELECT views FROM titles WHERE slug = $1",
            Kind::Channel => "SELECT views FROM channels WHERE slug = $1",
        };
        let row = sqlx::query(sql)
            .bind(slug)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.try_get("views")).transpose()?)
    }
}
