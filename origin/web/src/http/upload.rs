//! The admin upload form: a video file streamed to disk under the media root, checked, then
//! packaged and registered in the background by [`crate::import`] (the same path as
//! `dime-origin web import`), followed on a job page ([`crate::packaging_jobs`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::extract::multipart::{Field, MultipartRejection};
use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::Response;
use dime_packager::vod::{VodError, VodOptions};
use minijinja::context;
use tokio::io::AsyncWriteExt;

use super::admin::{check_csrf, see_other, AdminSession};
use super::caching::PRIVATE;
use super::errors::PageError;
use super::AppState;
use crate::import::{prepare, ImportError, ImportRequest};
use crate::packaging_jobs::{JobState, SlugBusy};
use crate::sessions::{random_token, Session};

/// The largest upload accepted (4 GiB); larger files go through `dime-origin web import`.
pub const MAX_UPLOAD_BYTES: usize = 4 << 30;
/// Segment length of uploaded titles, in seconds.
const SEGMENT_SECS: u64 = 4;
/// Where uploads wait for packaging, under the media root: a dot name, which the streamer
/// never serves.
const UPLOAD_DIR: &str = ".uploads";

/// The text fields of the upload form, kept to show them again after an error.
#[derive(Debug, Default, serde::Serialize)]
struct UploadFields {
    title: String,
    slug: String,
    description: String,
}

/// The media root, or 404 when uploads are off.
fn media_root(state: &AppState) -> Result<&Path, PageError> {
    state.media_root.as_deref().ok_or_else(|| {
        PageError::not_found(
            "Uploads are off: start the web app with --media-root DIR (the streamers' directory), or use `dime-origin web import`.",
        )
    })
}

/// The form page; `status` and `error` after a failed upload.
fn page(
    state: &AppState,
    session: &Session,
    status: StatusCode,
    fields: &UploadFields,
    errors: BTreeMap<&str, String>,
    error: Option<String>,
) -> Response {
    state.html(
        status,
        "admin/upload.html",
        context! {
            page_title => "Upload a video",
            form => fields, errors, error,
            segment => SEGMENT_SECS,
            username => &session.admin.username,
            csrf_token => &session.csrf_token,
        },
        PRIVATE,
    )
}

/// `GET /admin/titles/upload`.
pub async fn form(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
) -> Result<Response, PageError> {
    media_root(&state)?;
    Ok(page(
        &state,
        &session,
        StatusCode::OK,
        &UploadFields::default(),
        BTreeMap::new(),
        None,
    ))
}

/// Deletes the uploaded file whatever happens after it was written.
struct UploadFile(PathBuf);

impl Drop for UploadFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A multipart body that cannot be read: 400.
fn malformed(err: impl std::fmt::Display) -> PageError {
    PageError::new(StatusCode::BAD_REQUEST, format!("Malformed upload: {err}"))
}

/// Streams one file field to `path`.
async fn save(mut field: Field<'_>, path: &Path) -> Result<u64, PageError> {
    let io_error = |err: std::io::Error| {
        tracing::error!(path = %path.display(), error = %err, "cannot store an upload");
        PageError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Cannot store the upload under the media root: {err}"),
        )
    };
    let mut file = tokio::fs::File::create(path).await.map_err(io_error)?;
    let mut written = 0u64;
    while let Some(chunk) = field.chunk().await.map_err(malformed)? {
        file.write_all(&chunk).await.map_err(io_error)?;
        written += chunk.len() as u64;
    }
    file.flush().await.map_err(io_error)?;
    Ok(written)
}

/// `POST /admin/titles/upload`: checks the session's CSRF token (which the form sends before
/// the file, so a forged upload is refused before a byte is stored), stores the file, checks
/// it and the fields, then packages and registers it in the background and sends the admin
/// to the job's page.
pub async fn receive(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, PageError> {
    let root = media_root(&state)?.to_path_buf();
    let mut multipart = multipart.map_err(|rejection| malformed(rejection.body_text()))?;
    let mut fields = UploadFields::default();
    let mut csrf_checked = false;
    let mut upload: Option<(UploadFile, u64)> = None;
    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "csrf_token" => {
                let token = field.text().await.map_err(malformed)?;
                check_csrf(&session, &token)?;
                csrf_checked = true;
            }
            "file" => {
                if !csrf_checked {
                    return Err(malformed("csrf_token must come before the file"));
                }
                let dir = root.join(UPLOAD_DIR);
                tokio::fs::create_dir_all(&dir).await.map_err(|err| {
                    PageError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("Cannot create {}: {err}", dir.display()),
                    )
                })?;
                let file = UploadFile(dir.join(format!("{}.upload", random_token())));
                let size = save(field, &file.0).await?;
                upload = Some((file, size));
            }
            "title" => fields.title = field.text().await.map_err(malformed)?,
            "slug" => fields.slug = field.text().await.map_err(malformed)?,
            "description" => fields.description = field.text().await.map_err(malformed)?,
            _ => {}
        }
    }
    if !csrf_checked {
        return Err(malformed("missing field csrf_token"));
    }
    let file = match upload {
        Some((file, size)) if size > 0 => file,
        _ => {
            let errors = BTreeMap::from([("file", "choose a video file".to_owned())]);
            return Ok(page(
                &state,
                &session,
                StatusCode::BAD_REQUEST,
                &fields,
                errors,
                None,
            ));
        }
    };
    let slug = fields.slug.trim();
    let request = ImportRequest {
        input: file.0.clone(),
        title: fields.title.clone(),
        description: fields.description.clone(),
        slug: (!slug.is_empty()).then(|| slug.to_owned()),
        media_root: root,
        options: VodOptions {
            segment: Duration::from_secs(SEGMENT_SECS),
            ..VodOptions::default()
        },
    };
    let refused = |error: ImportError| {
        let (status, errors, message) = refusal(&error);
        if status.is_server_error() {
            tracing::error!(error = %error, "upload refused");
        }
        page(&state, &session, status, &fields, errors, message)
    };
    let prepared = match prepare(&state.store, request).await {
        Ok(prepared) => prepared,
        Err(error) => return Ok(refused(error)),
    };
    let id = match state.packaging_jobs.start(
        fields.title.trim(),
        prepared.slug(),
        &session.admin.username,
    ) {
        Ok(id) => id,
        Err(SlugBusy(slug)) => return Ok(refused(ImportError::SlugTaken(slug))),
    };
    tracing::info!(job = id, slug = %prepared.slug(), admin = %session.admin.username, "upload stored; packaging");
    let job_state = state.clone();
    tokio::spawn(async move {
        let outcome = prepared.run(&job_state.store).await;
        // The uploaded file goes whatever the outcome.
        drop(file);
        let ended = match outcome {
            Ok(imported) => {
                tracing::info!(job = id, title = imported.id, slug = %imported.slug, "upload packaged and listed");
                JobState::Done {
                    title_id: imported.id,
                }
            }
            Err(error) => {
                tracing::error!(job = id, error = %error, "upload packaging failed");
                let (_, errors, error) = refusal(&error);
                JobState::Failed {
                    reason: error
                        .or_else(|| errors.into_values().next())
                        .unwrap_or_default(),
                }
            }
        };
        job_state.packaging_jobs.finish(id, ended);
    });
    Ok(see_other(&format!("/admin/uploads/{id}")))
}

/// How a refused or failed import is shown: status, field errors, page error.
fn refusal(error: &ImportError) -> (StatusCode, BTreeMap<&'static str, String>, Option<String>) {
    match error {
        ImportError::Invalid(error) => (
            StatusCode::BAD_REQUEST,
            BTreeMap::from([(error.field, error.message.clone())]),
            None,
        ),
        ImportError::SlugTaken(slug) => (
            StatusCode::CONFLICT,
            BTreeMap::from([(
                "slug",
                format!("another title uses `{slug}` already: choose another slug"),
            )]),
            None,
        ),
        ImportError::Package(
            err @ (VodError::NotMedia { .. } | VodError::NoVideo { .. } | VodError::Empty { .. }),
        ) => {
            // The message names the stored file; the admin knows it by its own name.
            let reason = match err {
                VodError::NoVideo { .. } => "the file has no video stream".to_owned(),
                VodError::Empty { .. } => "the video is empty".to_owned(),
                other => other
                    .to_string()
                    .rsplit(": ")
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            };
            (
                StatusCode::BAD_REQUEST,
                BTreeMap::from([("file", format!("not a video we can package: {reason}"))]),
                None,
            )
        }
        err => (
            StatusCode::INTERNAL_SERVER_ERROR,
            BTreeMap::new(),
            Some(format!("Packaging failed: {err}")),
        ),
    }
}

/// `GET /admin/uploads/{id}`: how an upload's packaging is going; the page reloads itself
/// until the job has ended.
pub async fn job(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    axum::extract::Path(id): axum::extract::Path<u64>,
) -> Result<Response, PageError> {
    let job = state.packaging_jobs.get(id).ok_or_else(|| {
        PageError::not_found(
            "No such upload: jobs are kept in memory, so a restart of the web app forgets them.",
        )
    })?;
    let title_page = match &job.state {
        JobState::Done { .. } => Some(format!("/titles/{}", job.slug)),
        _ => None,
    };
    Ok(state.html(
        StatusCode::OK,
        "admin/upload_job.html",
        context! {
            page_title => format!("Upload: {}", job.title),
            job, title_page,
            username => &session.admin.username,
            csrf_token => &session.csrf_token,
        },
        PRIVATE,
    ))
}
