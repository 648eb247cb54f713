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
use dime_packager::vod::VodOptions;
use minijinja::context;
use tokio::io::AsyncWriteExt;
use tokio::sync::OwnedSemaphorePermit;

use super::admin::{check_csrf, see_other, AdminSession};
use super::caching::PRIVATE;
use super::errors::PageError;
use super::AppState;
use crate::import::{check, ImportError, ImportRequest};
use crate::packaging_child::{remove_work_dirs, ChildFailure, PackagerChild, PackagerLimits};
use crate::packaging_jobs::{JobState, SlugBusy};
use crate::replicas::{Ending, Tracked, SHUTDOWN_REASON, UPLOAD_DIR};
use crate::sessions::{random_token, Session};

/// The limits of the upload form (`--upload-*`, `--packager-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadLimits {
    /// The largest file accepted, in bytes; larger files go through `dime-origin web import`.
    pub max_bytes: u64,
    /// Uploads received or packaged at once; more are refused with 429.
    pub max_concurrent: usize,
    /// Free space the media volume keeps: an upload that would leave less is refused (507).
    pub min_free_bytes: u64,
    /// How the packager child runs.
    pub packager: PackagerLimits,
    /// How long a replica may go without reporting to the database before the others fail
    /// its packaging jobs (`--replica-timeout`).
    pub replica_timeout: Duration,
}

impl Default for UploadLimits {
    fn default() -> Self {
        Self {
            max_bytes: 4 << 30,
            max_concurrent: 2,
            min_free_bytes: 1 << 30,
            packager: PackagerLimits::default(),
            replica_timeout: Duration::from_secs(30),
        }
    }
}

/// How often, while an upload is written, the free space is checked again.
const FREE_SPACE_CHECK_BYTES: u64 = 64 << 20;
/// Segment length of uploaded titles, in seconds.
const SEGMENT_SECS: u64 = 4;

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

/// The form again, with 400 and `reason` under its file field.
fn file_refused(
    state: &AppState,
    session: &Session,
    fields: &UploadFields,
    reason: String,
) -> Response {
    let errors = BTreeMap::from([("file", reason)]);
    page(
        state,
        session,
        StatusCode::BAD_REQUEST,
        fields,
        errors,
        None,
    )
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

/// A failure to store the upload: logged with its path, shown without.
fn store_error(path: &Path, err: std::io::Error) -> PageError {
    tracing::error!(path = %path.display(), error = %err, "cannot store an upload");
    PageError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!(
            "Cannot store the upload on the media volume ({}); the details are in the server log.",
            err.kind()
        ),
    )
}

/// 507 when the media volume has less than `needed` bytes free.
fn check_free_space(root: &Path, needed: u64) -> Result<(), PageError> {
    match free_bytes(root) {
        Ok(free) if free < needed => {
            tracing::warn!(
                free,
                needed,
                "upload refused: the media volume is nearly full"
            );
            Err(PageError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "Not enough free space on the media volume for this upload: free some space or ask the operator.",
            ))
        }
        Ok(_) => Ok(()),
        Err(err) => Err(store_error(root, err)),
    }
}

/// Bytes available to us on the filesystem holding `path`.
fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a NUL-terminated path and a buffer of the right type, filled on success.
    if unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let stat = unsafe { stat.assume_init() };
    // The field types differ across targets (u32 on some 32-bit ones).
    #[allow(clippy::useless_conversion)]
    Ok(u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize)))
}

/// Streams one file field to `path`, within the size limit and the free-space floor.
async fn save(
    mut field: Field<'_>,
    path: &Path,
    root: &Path,
    limits: &UploadLimits,
) -> Result<u64, PageError> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|err| store_error(path, err))?;
    let mut written = 0u64;
    let mut next_check = FREE_SPACE_CHECK_BYTES;
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        written += chunk.len() as u64;
        if written > limits.max_bytes {
            return Err(too_large(limits));
        }
        file.write_all(&chunk)
            .await
            .map_err(|err| store_error(path, err))?;
        if written >= next_check {
            check_free_space(root, limits.min_free_bytes)?;
            next_check += FREE_SPACE_CHECK_BYTES;
        }
    }
    file.flush().await.map_err(|err| store_error(path, err))?;
    Ok(written)
}

/// 413 for a file over the limit.
fn too_large(limits: &UploadLimits) -> PageError {
    PageError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "The file is larger than the upload limit ({} MiB): use `dime-origin web import` on the server.",
            limits.max_bytes >> 20
        ),
    )
}

/// A multipart error: 413 past the body limit, else 400.
fn multipart_error(err: axum::extract::multipart::MultipartError) -> PageError {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        PageError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The upload is larger than the limit: use `dime-origin web import` on the server.",
        )
    } else {
        malformed(err)
    }
}

/// `POST /admin/titles/upload`: takes one of the upload slots (429 without), checks the free
/// space (507), checks the session's CSRF token (which the form sends before the file, so a
/// forged upload is refused before a byte is stored), stores the file within the size limit,
/// checks the fields, then has a packager child probe it (a file that is not video: 400) and
/// package it in the background, and sends the admin to the job's page.
pub async fn receive(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    headers: axum::http::HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, PageError> {
    let root = media_root(&state)?.to_path_buf();
    let limits = &state.upload_limits;
    let Ok(slot) = state.upload_slots.clone().try_acquire_owned() else {
        return Err(PageError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{} uploads are being received or packaged already: try again when one has finished.",
                limits.max_concurrent
            ),
        ));
    };
    // The body's length bounds the file's: refuse before writing what would not fit.
    let length: u64 = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    check_free_space(&root, limits.min_free_bytes.saturating_add(length))?;
    let mut multipart = multipart.map_err(|rejection| malformed(rejection.body_text()))?;
    let mut fields = UploadFields::default();
    let mut csrf_checked = false;
    let mut upload: Option<(UploadFile, u64)> = None;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "csrf_token" => {
                let token = field.text().await.map_err(multipart_error)?;
                check_csrf(&session, &token)?;
                csrf_checked = true;
            }
            "file" => {
                if !csrf_checked {
                    return Err(malformed("csrf_token must come before the file"));
                }
                let dir = root.join(UPLOAD_DIR);
                tokio::fs::create_dir_all(&dir)
                    .await
                    .map_err(|err| store_error(&dir, err))?;
                // Named after this replica: a sweep removes the uploads of replicas that stopped.
                let name = format!("{}.{}.upload", state.replica.id, random_token());
                let file = UploadFile(dir.join(name));
                let size = save(field, &file.0, &root, limits).await?;
                upload = Some((file, size));
            }
            "title" => fields.title = field.text().await.map_err(multipart_error)?,
            "slug" => fields.slug = field.text().await.map_err(multipart_error)?,
            "description" => fields.description = field.text().await.map_err(multipart_error)?,
            _ => {}
        }
    }
    if !csrf_checked {
        return Err(malformed("missing field csrf_token"));
    }
    let file = match upload {
        Some((file, size)) if size > 0 => file,
        _ => {
            return Ok(file_refused(
                &state,
                &session,
                &fields,
                "choose a video file".to_owned(),
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
    let checked = match check(&state.store, request).await {
        Ok(checked) => checked,
        Err(error) => return Ok(refused(error)),
    };
    let started = state
        .store
        .start_job(
            fields.title.trim(),
            checked.slug(),
            &session.admin.username,
            &state.replica.id,
        )
        .await;
    let id = match started {
        Ok(Ok(id)) => id,
        Ok(Err(SlugBusy(slug))) => return Ok(refused(ImportError::SlugTaken(slug))),
        Err(err) => return Ok(refused(ImportError::Store(err))),
    };
    let (tracked, lost) = state.replica.track(id);
    let job_page = format!("/admin/uploads/{id}");
    // Until the background task owns the job, a dropped request (the admin went away while
    // the child probed) must not leave the job "packaging" and its slug reserved forever.
    let mut pending = PendingJob {
        state: state.clone(),
        id,
        dir: checked.dir().to_path_buf(),
        pid: None,
    };
    let spawned = PackagerChild::spawn(
        &limits.packager,
        &file.0,
        checked.dir(),
        checked.options().segment,
    );
    let mut child = match spawned {
        Ok(child) => child,
        Err(failure) => {
            pending.fail(&failure).await;
            return Ok(see_other(&job_page));
        }
    };
    pending.pid = child.id();
    match child.probed().await {
        Ok(()) => {}
        Err(ChildFailure::BadInput(reason)) => {
            // Refused at once, on the form: the file is not video.
            pending.forget().await;
            return Ok(file_refused(
                &state,
                &session,
                &fields,
                format!("not a video we can package: {reason}"),
            ));
        }
        Err(failure) => {
            pending.fail(&failure).await;
            return Ok(see_other(&job_page));
        }
    }
    let pid = pending.hand_over();
    tracing::info!(job = id, slug = %checked.slug(), admin = %session.admin.username, ?pid, "upload stored; packaging in a child process");
    let job_state = state.clone();
    tokio::spawn(package_in_background(
        job_state,
        Background {
            id,
            file,
            checked,
            child,
            pid,
            slot,
            tracked,
            ending: lost,
        },
    ));
    Ok(see_other(&job_page))
}

/// A job the request registered and has not handed to the background task yet.
struct PendingJob {
    state: AppState,
    /// 0 once handled (job ids start at 1).
    id: i64,
    dir: PathBuf,
    pid: Option<u32>,
}

impl PendingJob {
    /// The child failed: the job ends with its reason.
    async fn fail(mut self, failure: &ChildFailure) {
        cleanup_child(&self.dir, self.pid);
        fail_job(self.state.clone(), self.id, failure.reason()).await;
        // Only now: a request dropped while the database answers leaves the job to `Drop`.
        self.id = 0;
    }

    /// The upload was refused on the form: no job at all.
    async fn forget(mut self) {
        match self.state.store.forget_job(self.id).await {
            Ok(()) => self.id = 0,
            // Dropped with its id: the job is failed instead, so its slug is not held.
            Err(err) => {
                tracing::error!(job = self.id, error = %err, "cannot forget a refused upload's job")
            }
        }
    }

    /// The background task takes over; the child's pid.
    fn hand_over(mut self) -> Option<u32> {
        self.id = 0;
        self.pid
    }
}

impl Drop for PendingJob {
    fn drop(&mut self) {
        if self.id != 0 {
            cleanup_child(&self.dir, self.pid);
            let failure = ChildFailure::Failed(
                "the upload was interrupted before packaging started".to_owned(),
            );
            // Drop cannot wait for the database: a task of its own records the end.
            tokio::spawn(fail_job(
                self.state.clone(),
                self.id,
                failure.reason().to_owned(),
            ));
        }
    }
}

/// What the background task of one upload holds.
struct Background {
    id: i64,
    file: UploadFile,
    checked: crate::import::Checked,
    child: PackagerChild,
    pid: Option<u32>,
    slot: OwnedSemaphorePermit,
    tracked: Tracked,
    ending: tokio::sync::oneshot::Receiver<Ending>,
}

/// The rest of an upload's life: the child packages, the title is registered, the upload
/// file and the upload slot go whatever the outcome. If this replica loses the job (another
/// took it over as dead), the child is stopped and the job left to its new owner; if this
/// replica shuts down, the child is stopped and the job failed at once.
async fn package_in_background(state: AppState, job: Background) {
    let Background {
        id,
        file,
        checked,
        mut child,
        pid,
        slot,
        tracked,
        ending,
    } = job;
    let owner = state.replica.id.clone();
    let outcome = tokio::select! {
        outcome = child.finish() => Ok(outcome),
        Ok(ending) = ending => Err(ending),
    };
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(ending) => {
            child.stop().await;
            cleanup_child(checked.dir(), pid);
            if ending == Ending::Stopping {
                fail_job(state, id, SHUTDOWN_REASON).await;
            } else {
                tracing::error!(
                    job = id,
                    "packaging stopped: another replica took the job over"
                );
            }
            // The upload file, the slot and the tracking go with their owners.
            drop((file, slot, tracked));
            return;
        }
    };
    drop(file);
    let ended = match outcome {
        Ok(duration) => match checked
            .register_job(&state.store, duration, id, &owner)
            .await
        {
            Ok(Some(imported)) => {
                tracing::info!(job = id, title = imported.id, slug = %imported.slug, "upload packaged and listed");
                None
            }
            Ok(None) => {
                tracing::error!(
                    job = id,
                    "upload packaged, but another replica took the job over: not listed"
                );
                None
            }
            Err(error) => {
                tracing::error!(job = id, error = %error, "upload packaged but not registered");
                let (_, errors, error) = refusal(&error);
                Some(
                    error
                        .or_else(|| errors.into_values().next())
                        .unwrap_or_default(),
                )
            }
        },
        Err(failure) => {
            cleanup_child(checked.dir(), pid);
            Some(failure.reason().to_owned())
        }
    };
    if let Some(reason) = ended {
        fail_job(state, id, reason).await;
    }
    drop(tracked);
    drop(slot);
}

/// Ends job `id` as failed with `reason`, if this replica still owns it.
async fn fail_job(state: AppState, id: i64, reason: impl Into<String>) {
    let reason = reason.into();
    tracing::error!(job = id, reason = %reason, "upload packaging failed");
    let failed = JobState::Failed { reason };
    match state.store.finish_job(id, &state.replica.id, &failed).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(job = id, "the job had been taken over by another replica"),
        // The job stays "packaging" in the database until this replica stops and another
        // sweeps it: the log says why.
        Err(err) => tracing::error!(job = id, error = %err, "cannot record a failed upload"),
    }
}

/// Removes the work directory of a child that did not finish.
fn cleanup_child(out_dir: &Path, pid: Option<u32>) {
    if let Some(pid) = pid {
        remove_work_dirs(out_dir, pid);
    }
}

/// How a refused or failed import is shown: status, field errors, page error. No message
/// names a path: the admin knows the file by its own name, and the server's layout is not
/// theirs to see (the log has it).
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
        ImportError::Package(err) if err.is_bad_input() => (
            StatusCode::BAD_REQUEST,
            BTreeMap::from([(
                "file",
                format!("not a video we can package: {}", err.summary()),
            )]),
            None,
        ),
        ImportError::Package(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            BTreeMap::new(),
            Some(format!("Packaging failed: {}.", err.summary())),
        ),
        ImportError::MediaRoot { .. } => (
            StatusCode::INTERNAL_SERVER_ERROR,
            BTreeMap::new(),
            Some(
                "The media directory is not usable; the details are in the server log.".to_owned(),
            ),
        ),
        ImportError::Register(_) | ImportError::Store(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            BTreeMap::new(),
            Some("The catalog database failed; the details are in the server log.".to_owned()),
        ),
        ImportError::Task(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            BTreeMap::new(),
            Some("Packaging failed; the details are in the server log.".to_owned()),
        ),
    }
}

/// `GET /admin/uploads/{id}`: how an upload's packaging is going; the page reloads itself
/// until the job has ended.
pub async fn job(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    axum::extract::Path(id): axum::extract::Path<i64>,
) -> Result<Response, PageError> {
    let job = state.store.job(id).await?.ok_or_else(|| {
        PageError::not_found(
            "No such upload: the list keeps the last 50 finished uploads and every one in progress.",
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
