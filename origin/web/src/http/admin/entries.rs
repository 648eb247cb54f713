//! The generic admin forms of catalog entries: one set of new/create/edit/update/delete
//! handlers serves titles and channels through [`EntryForm`].

use std::collections::BTreeMap;
use std::future::Future;

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Form;
use minijinja::context;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::session::{check_csrf, posted, see_other, AdminSession, CsrfOnly, Posted};
use crate::catalog::{Channel, ChannelFields, Title, TitleFields};
use crate::forms::{ChannelForm, FieldError, TitleForm};
use crate::http::caching::PRIVATE;
use crate::http::errors::PageError;
use crate::http::AppState;
use crate::sessions::Session;
use crate::store::{Store, StoreError};

/// An admin record id from the URL; anything that is not a number is simply not found.
fn record_id(raw: &str) -> Result<i64, PageError> {
    raw.parse()
        .map_err(|_| PageError::not_found(format!("There is no record `{raw}`.")))
}

/// Field errors as the form templates look them up: field name → message.
fn by_field(errors: &[FieldError]) -> BTreeMap<&'static str, &str> {
    errors
        .iter()
        .map(|error| (error.field, error.message.as_str()))
        .collect()
}

/// A duration in the form's own syntax (`h:mm:ss`, `m:ss`), milliseconds kept when present.
fn duration_field(ms: i64) -> String {
    let (seconds, millis) = (ms / 1000, ms % 1000);
    let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let fraction = if millis == 0 {
        String::new()
    } else {
        format!(".{millis:03}")
    };
    if hours > 0 {
        format!("{hours}:{minutes:02}:{seconds:02}{fraction}")
    } else {
        format!("{minutes}:{seconds:02}{fraction}")
    }
}

impl From<&Title> for TitleForm {
    fn from(title: &Title) -> Self {
        Self {
            title: title.title.clone(),
            slug: title.slug.clone(),
            description: title.description.clone(),
            poster: title.poster.clone().unwrap_or_default(),
            duration: title.duration_ms.map(duration_field).unwrap_or_default(),
            stream_url: title.stream_url.clone(),
        }
    }
}

impl From<&Channel> for ChannelForm {
    fn from(channel: &Channel) -> Self {
        Self {
            name: channel.name.clone(),
            slug: channel.slug.clone(),
            description: channel.description.clone(),
            poster: channel.poster.clone().unwrap_or_default(),
            stream_url: channel.stream_url.clone(),
        }
    }
}

/// One kind of catalog entry as the admin forms edit it, named by its form type: the same
/// new/create/edit/update/delete handlers serve titles and channels.
pub trait EntryForm:
    Default + Serialize + DeserializeOwned + for<'a> From<&'a Self::Record> + Send + Sync + 'static
{
    /// The stored entry.
    type Record;
    /// The validated, editable fields.
    type Fields: Send + Sync;
    /// What logs call it: `title`, `channel`.
    const NOUN: &'static str;
    /// What a 404 calls it: `video`, `channel`.
    const MISSING: &'static str;
    /// Where the form posts a new entry; an existing one is at `{PATH}/{id}`.
    const PATH: &'static str;
    /// The form's template.
    const TEMPLATE: &'static str;
    /// The heading of the empty form.
    const NEW_HEADING: &'static str;
    /// The heading of the filled-in form.
    const EDIT_HEADING: &'static str;

    /// The fields this form describes, or every problem found.
    fn validate(&self) -> Result<Self::Fields, Vec<FieldError>>;
    /// The URL name in `fields`.
    fn slug(fields: &Self::Fields) -> &str;
    /// The entry with this id.
    fn find(
        store: &Store,
        id: i64,
    ) -> impl Future<Output = Result<Option<Self::Record>, StoreError>> + Send;
    /// Adds an entry and returns its id.
    fn create(
        store: &Store,
        fields: &Self::Fields,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;
    /// Replaces an entry's fields; false if there is no such entry.
    fn update(
        store: &Store,
        id: i64,
        fields: &Self::Fields,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Removes an entry; false if there was no such entry.
    fn delete(store: &Store, id: i64) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

impl EntryForm for TitleForm {
    type Record = Title;
    type Fields = TitleFields;
    const NOUN: &'static str = "title";
    const MISSING: &'static str = "video";
    const PATH: &'static str = "/admin/titles";
    const TEMPLATE: &'static str = "admin/title_form.html";
    const NEW_HEADING: &'static str = "Add a video";
    const EDIT_HEADING: &'static str = "Edit video";

    fn validate(&self) -> Result<TitleFields, Vec<FieldError>> {
        TitleForm::validate(self)
    }
    fn slug(fields: &TitleFields) -> &str {
        &fields.slug
    }
    async fn find(store: &Store, id: i64) -> Result<Option<Title>, StoreError> {
        store.title_by_id(id).await
    }
    async fn create(store: &Store, fields: &TitleFields) -> Result<i64, StoreError> {
        store.create_title(fields).await
    }
    async fn update(store: &Store, id: i64, fields: &TitleFields) -> Result<bool, StoreError> {
        store.update_title(id, fields).await
    }
    async fn delete(store: &Store, id: i64) -> Result<bool, StoreError> {
        store.delete_title(id).await
    }
}

impl EntryForm for ChannelForm {
    type Record = Channel;
    type Fields = ChannelFields;
    const NOUN: &'static str = "channel";
    const MISSING: &'static str = "channel";
    const PATH: &'static str = "/admin/channels";
    const TEMPLATE: &'static str = "admin/channel_form.html";
    const NEW_HEADING: &'static str = "Add a live channel";
    const EDIT_HEADING: &'static str = "Edit channel";

    fn validate(&self) -> Result<ChannelFields, Vec<FieldError>> {
        ChannelForm::validate(self)
    }
    fn slug(fields: &ChannelFields) -> &str {
        &fields.slug
    }
    async fn find(store: &Store, id: i64) -> Result<Option<Channel>, StoreError> {
        store.channel_by_id(id).await
    }
    async fn create(store: &Store, fields: &ChannelFields) -> Result<i64, StoreError> {
        store.create_channel(fields).await
    }
    async fn update(store: &Store, id: i64, fields: &ChannelFields) -> Result<bool, StoreError> {
        store.update_channel(id, fields).await
    }
    async fn delete(store: &Store, id: i64) -> Result<bool, StoreError> {
        store.delete_channel(id).await
    }
}

/// An entry's form page; `status` is 400 or 409 when re-shown with errors.
fn form_page<F: EntryForm>(
    state: &AppState,
    session: &Session,
    status: StatusCode,
    target: Option<i64>,
    form: &F,
    errors: &[FieldError],
) -> Response {
    let (heading, action) = match target {
        Some(id) => (F::EDIT_HEADING, format!("{}/{id}", F::PATH)),
        None => (F::NEW_HEADING, F::PATH.to_owned()),
    };
    state.html(
        status,
        F::TEMPLATE,
        context! {
            page_title => heading, heading, action, form,
            errors => by_field(errors),
            username => &session.admin.username,
            csrf_token => &session.csrf_token,
            media_base => state.media_base.to_string(),
        },
        PRIVATE,
    )
}

/// 404 for an entry id that is not in the catalog.
fn missing<F: EntryForm>(id: i64) -> PageError {
    PageError::not_found(format!("There is no {} with id {id}.", F::MISSING))
}

/// A slug conflict as a field error, or any other store failure as it is.
fn slug_conflict(err: StoreError) -> Result<FieldError, PageError> {
    match err {
        StoreError::Conflict { what, slug } => Ok(FieldError {
            field: "slug",
            message: format!("another {what} uses `{slug}` already: choose another slug"),
        }),
        other => Err(other.into()),
    }
}

/// `GET /admin/titles/new`, `GET /admin/channels/new`: the empty form.
pub async fn new_entry<F: EntryForm>(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
) -> Response {
    form_page(&state, &session, StatusCode::OK, None, &F::default(), &[])
}

/// `POST /admin/titles`, `POST /admin/channels`: adds an entry.
pub async fn create_entry<F: EntryForm>(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    form: Result<Form<Posted<F>>, FormRejection>,
) -> Result<Response, PageError> {
    let posted = posted(form)?;
    check_csrf(&session, &posted.csrf_token)?;
    let form = posted.fields;
    let fields = match form.validate() {
        Ok(fields) => fields,
        Err(errors) => {
            return Ok(form_page(
                &state,
                &session,
                StatusCode::BAD_REQUEST,
                None,
                &form,
                &errors,
            ))
        }
    };
    match F::create(&state.store, &fields).await {
        Ok(id) => {
            tracing::info!(id, slug = %F::slug(&fields), admin = %session.admin.username, "{} created", F::NOUN);
            Ok(see_other("/admin/?notice=created"))
        }
        Err(err) => {
            let error = slug_conflict(err)?;
            Ok(form_page(
                &state,
                &session,
                StatusCode::CONFLICT,
                None,
                &form,
                &[error],
            ))
        }
    }
}

/// `GET /admin/titles/{id}/edit`, `GET /admin/channels/{id}/edit`: the form, filled in.
pub async fn edit_entry<F: EntryForm>(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id = record_id(&id)?;
    let record = F::find(&state.store, id)
        .await?
        .ok_or_else(|| missing::<F>(id))?;
    Ok(form_page(
        &state,
        &session,
        StatusCode::OK,
        Some(id),
        &F::from(&record),
        &[],
    ))
}

/// `POST /admin/titles/{id}`, `POST /admin/channels/{id}`: saves an entry's new fields.
pub async fn update_entry<F: EntryForm>(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    Path(id): Path<String>,
    form: Result<Form<Posted<F>>, FormRejection>,
) -> Result<Response, PageError> {
    let id = record_id(&id)?;
    let posted = posted(form)?;
    check_csrf(&session, &posted.csrf_token)?;
    let form = posted.fields;
    let fields = match form.validate() {
        Ok(fields) => fields,
        Err(errors) => {
            return Ok(form_page(
                &state,
                &session,
                StatusCode::BAD_REQUEST,
                Some(id),
                &form,
                &errors,
            ))
        }
    };
    match F::update(&state.store, id, &fields).await {
        Ok(true) => {
            tracing::info!(id, slug = %F::slug(&fields), admin = %session.admin.username, "{} updated", F::NOUN);
            Ok(see_other("/admin/?notice=updated"))
        }
        Ok(false) => Err(missing::<F>(id)),
        Err(err) => {
            let error = slug_conflict(err)?;
            Ok(form_page(
                &state,
                &session,
                StatusCode::CONFLICT,
                Some(id),
                &form,
                &[error],
            ))
        }
    }
}

/// `POST /admin/titles/{id}/delete`, `POST /admin/channels/{id}/delete`: removes an entry.
pub async fn delete_entry<F: EntryForm>(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    Path(id): Path<String>,
    form: Result<Form<CsrfOnly>, FormRejection>,
) -> Result<Response, PageError> {
    let id = record_id(&id)?;
    check_csrf(&session, &posted(form)?.csrf_token)?;
    if !F::delete(&state.store, id).await? {
        return Err(missing::<F>(id));
    }
    tracing::info!(id, admin = %session.admin.username, "{} deleted", F::NOUN);
    Ok(see_other("/admin/?notice=deleted"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forms::parse_duration;

    #[test]
    fn durations_round_trip_through_the_form() {
        for ms in [0, 42_000, 90_500, 3_723_000] {
            assert_eq!(parse_duration(&duration_field(ms)), Ok(Some(ms)), "{ms}");
        }
    }
}
