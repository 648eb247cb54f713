//! VoD ingest: package a video file into HLS under the streamer's root with
//! `dime_packager::vod`, then register it in the catalog.

use std::fs;
use std::path::{Path, PathBuf};

use dime_packager::vod::{self, VodError, VodOptions};

use crate::catalog::TitleFields;
use crate::forms::{slugify, FieldError, TitleForm};
use crate::store::{Store, StoreError};

/// What to import.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// The video file (anything GStreamer decodes, e.g. an mp4).
    pub input: PathBuf,
    /// Display title.
    pub title: String,
    /// Free text.
    pub description: String,
    /// URL name; derived from the title when `None`.
    pub slug: Option<String>,
    /// The streamer's root: the title lands in `media_root/vod/<slug>/`.
    pub media_root: PathBuf,
    /// How to package it.
    pub options: VodOptions,
}

/// An imported title.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// Database id.
    pub id: i64,
    /// URL name: the page is `/titles/{slug}`.
    pub slug: String,
    /// Stream location relative to the media base: `vod/<slug>/index.m3u8`.
    pub stream_url: String,
    /// Poster location relative to the media base: `vod/<slug>/poster.jpg`.
    pub poster: String,
    /// Running time in milliseconds.
    pub duration_ms: i64,
    /// Where the files are on disk.
    pub dir: PathBuf,
}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The title, slug or description is not acceptable.
    #[error("invalid {}: {}", .0.field, .0.message)]
    Invalid(FieldError),
    /// The slug is taken in the catalog.
    #[error("a title with slug `{0}` exists already: pass another --slug")]
    SlugTaken(String),
    /// The media root is not a directory.
    #[error("--media-root {path}: {reason}")]
    MediaRoot {
        /// The directory given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Packaging failed (input unreadable, not a video, output exists, GStreamer error).
    #[error(transparent)]
    Package(#[from] VodError),
    /// The packaging thread died.
    #[error("the packaging thread failed: {0}")]
    Task(String),
    /// Registering the title failed; the packaged files were removed again.
    #[error("packaged, but could not register the title (files removed): {0}")]
    Register(StoreError),
    /// Checking the catalog failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ImportRequest {
    /// The slug this import uses.
    pub fn slug(&self) -> String {
        self.slug.clone().unwrap_or_else(|| slugify(&self.title))
    }
}

/// Packages and registers `request`; nothing is registered unless packaging succeeded, and
/// nothing stays on disk unless registering did.
pub async fn import(store: &Store, request: ImportRequest) -> Result<Imported, ImportError> {
    prepare(store, request).await?.run(store).await
}

/// An import whose fields, slug and media root have been checked, not yet its input.
#[derive(Debug)]
pub struct Checked {
    input: PathBuf,
    options: VodOptions,
    fields: TitleFields,
    dir: PathBuf,
}

/// An import whose input has been probed too: what is left is the long part, packaging,
/// then registering.
#[derive(Debug)]
pub struct Prepared {
    input: vod::Input,
    checked: Checked,
}

/// Checks what can be checked without decoding the input: the same rules as the admin form,
/// the slug is free, the media root exists.
pub async fn check(store: &Store, request: ImportRequest) -> Result<Checked, ImportError> {
    let slug = request.slug();
    // The same rules as the admin form, so that the CLI cannot register what the form refuses.
    let form = TitleForm {
        title: request.title,
        slug: slug.clone(),
        description: request.description,
        poster: format!("vod/{slug}/{}", vod::POSTER),
        duration: String::new(),
        stream_url: format!("vod/{slug}/{}", vod::PLAYLIST),
    };
    let fields = form
        .validate()
        .map_err(|mut errors| ImportError::Invalid(errors.remove(0)))?;
    if store.title_by_slug(&slug).await?.is_some() {
        return Err(ImportError::SlugTaken(slug));
    }
    check_media_root(&request.media_root)?;
    Ok(Checked {
        input: request.input,
        options: request.options,
        dir: request.media_root.join("vod").join(&slug),
        fields,
    })
}

/// [`check`], then probes the input in this process (the command line's trusted files; the
/// upload form probes in a child, see [`crate::packaging_child`]).
pub async fn prepare(store: &Store, request: ImportRequest) -> Result<Prepared, ImportError> {
    let checked = check(store, request).await?;
    let path = checked.input.clone();
    let input = tokio::task::spawn_blocking(move || vod::open_input(&path))
        .await
        .map_err(|err| ImportError::Task(err.to_string()))??;
    Ok(Prepared { input, checked })
}

impl Checked {
    /// The slug the title gets.
    pub fn slug(&self) -> &str {
        &self.fields.slug
    }

    /// Where the title is packaged: `media_root/vod/<slug>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How it is packaged.
    pub fn options(&self) -> &VodOptions {
        &self.options
    }

    /// Registers the title packaged in [`Checked::dir`] with its playable length; the
    /// packaged files are removed again if registering fails.
    pub async fn register(
        self,
        store: &Store,
        duration_secs: f64,
    ) -> Result<Imported, ImportError> {
        let Checked {
            mut fields, dir, ..
        } = self;
        let duration_ms = (duration_secs * 1000.0).round() as i64;
        fields.duration_ms = Some(duration_ms);
        match store.create_title(&fields).await {
            Ok(id) => Ok(Imported {
                id,
                poster: fields.poster.unwrap_or_default(),
                stream_url: fields.stream_url,
                slug: fields.slug,
                duration_ms,
                dir,
            }),
            Err(err) => {
                if let Err(cleanup) = fs::remove_dir_all(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %cleanup, "cannot remove the packaged title");
                }
                Err(ImportError::Register(err))
            }
        }
    }
}

impl Checked {
    /// Registers the title like [`Checked::register`], in one transaction with marking
    /// upload job `job` done, if replica `owner` still owns it; `None` when another replica
    /// took the job over (the packaged files are removed again, as nothing lists them).
    pub async fn register_job(
        self,
        store: &Store,
        duration_secs: f64,
        job: i64,
        owner: &str,
    ) -> Result<Option<Imported>, ImportError> {
        let Checked {
            mut fields, dir, ..
        } = self;
        let duration_ms = (duration_secs * 1000.0).round() as i64;
        fields.duration_ms = Some(duration_ms);
        let completed = store.complete_job(job, owner, &fields).await;
        let id = match completed {
            Ok(Some(id)) => id,
            Ok(None) | Err(_) => {
                if let Err(cleanup) = fs::remove_dir_all(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %cleanup, "cannot remove the packaged title");
                }
                return completed.map(|_| None).map_err(ImportError::Register);
            }
        };
        Ok(Some(Imported {
            id,
            poster: fields.poster.unwrap_or_default(),
            stream_url: fields.stream_url,
            slug: fields.slug,
            duration_ms,
            dir,
        }))
    }
}

impl Prepared {
    /// The slug the title gets.
    pub fn slug(&self) -> &str {
        self.checked.slug()
    }

    /// Packages (on a blocking thread: GStreamer holds it for the whole transcode), then
    /// registers the title; the packaged files are removed again if registering fails.
    pub async fn run(self, store: &Store) -> Result<Imported, ImportError> {
        let Prepared { input, checked } = self;
        let out_dir = checked.dir.clone();
        let options = checked.options.clone();
        let package = tokio::task::spawn_blocking(move || vod::package(&input, &out_dir, &options))
            .await
            .map_err(|err| ImportError::Task(err.to_string()))??;
        checked.register(store, package.duration).await
    }
}

/// The media root must exist: a typo should fail here, not create a tree nobody serves.
fn check_media_root(root: &Path) -> Result<(), ImportError> {
    match fs::metadata(root) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(ImportError::MediaRoot {
            path: root.to_path_buf(),
            reason: "not a directory".to_owned(),
        }),
        Err(err) => Err(ImportError::MediaRoot {
            path: root.to_path_buf(),
            reason: format!("{err} (pass the directory the streamer serves with --root)"),
        }),
    }
}
