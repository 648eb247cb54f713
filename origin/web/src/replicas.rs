//! This process as one of several replicas of the web app on one database: its id, its
//! heartbeat, and the sweep that fails the packaging jobs of replicas that stopped and
//! removes what they left on the media volume.
//!
//! Every replica reports to `web_replicas` every fifth of the timeout, on the database's
//! clock. A replica that finds a packaging job whose owner has not reported for the timeout
//! takes the job over (one conditional UPDATE, so one sweeper wins), removes its work
//! directory while the slug is still reserved and that replica's uploads, then marks it
//! failed. A replica that learns it lost a job (its row was taken over, or it could not report
//! for the timeout) stops that job's packager and leaves the job alone: it is no longer its
//! own. A replica shutting down stops its packagers and fails their jobs itself.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::packaging_jobs::JobState;
use crate::sessions::random_token;
use crate::store::{now_secs, Store, StoreError};

/// Where uploads wait for packaging, under the media root: a dot name, which the streamer
/// never serves. Each file is named `<replica id>.<random>.upload`, so a sweep knows whose it is.
pub const UPLOAD_DIR: &str = ".uploads";

/// What the admin reads on the job page of a job whose replica stopped.
pub const STOPPED_REASON: &str =
    "the replica packaging it stopped (it was restarted, killed or cut off from the database)";

/// What the replica reports on the job page of a job it stopped at its own shutdown.
pub const SHUTDOWN_REASON: &str =
    "the web app replica packaging it was stopped (a restart, an update or a scale-down): upload the file again";

/// Why a packaging task must end before its packager has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Another replica took the job over: stop, and leave the job to it.
    Lost,
    /// This replica is shutting down: stop, clean up, and fail the job at once.
    Stopping,
}

/// This process's place among the replicas.
#[derive(Debug)]
pub struct Replica {
    /// Unique per process start: `<host>-<random>`.
    pub id: String,
    /// How long a replica may go without reporting before the others take it as dead.
    pub timeout: Duration,
    /// The jobs this process packages, each with the way to tell its task to end early.
    running: Mutex<HashMap<i64, oneshot::Sender<Ending>>>,
    /// Packaging tasks not ended yet, whether still in `running` or not.
    tasks: AtomicUsize,
}

/// Removes a job from [`Replica`]'s running set when its task ends.
#[derive(Debug)]
pub struct Tracked {
    replica: Arc<Replica>,
    id: i64,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.replica.lock().remove(&self.id);
        self.replica.tasks.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Replica {
    /// A replica with a fresh id and `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        // Only [a-z0-9-]: the id prefixes upload file names, up to the first dot.
        let host: String = host
            .trim()
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(40)
            .collect();
        let host = if host.is_empty() {
            "web".to_owned()
        } else {
            host
        };
        Self {
            id: format!("{host}-{}", &random_token()[..12]),
            timeout,
            running: Mutex::default(),
            tasks: AtomicUsize::new(0),
        }
    }

    /// How often this replica reports: a fifth of the timeout, so that a late report or two
    /// never makes it look dead.
    pub fn interval(&self) -> Duration {
        (self.timeout / 5).max(Duration::from_millis(100))
    }

    fn timeout_ms(&self) -> i64 {
        i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX)
    }

    /// Notes that this process packages job `id`; the receiver says if it must end early.
    pub fn track(self: &Arc<Self>, id: i64) -> (Tracked, oneshot::Receiver<Ending>) {
        let (lost, on_lost) = oneshot::channel();
        self.lock().insert(id, lost);
        self.tasks.fetch_add(1, Ordering::AcqRel);
        let replica = Arc::clone(self);
        (Tracked { replica, id }, on_lost)
    }

    /// Tells the tasks of jobs in `ids` that they lost their job.
    fn lose(&self, ids: &[i64]) {
        let mut running = self.lock();
        for id in ids {
            if let Some(lost) = running.remove(id) {
                tracing::error!(
                    job = id,
                    "this replica lost its packaging job; stopping the packager"
                );
                let _ = lost.send(Ending::Lost);
            }
        }
    }

    /// At shutdown: has every packaging task stop its packager and fail its job, and waits
    /// for them, at most `wait`, so that no job waits a whole timeout for a sweep.
    pub async fn stop_jobs(&self, wait: Duration) {
        let stopping: Vec<(i64, oneshot::Sender<Ending>)> = self.lock().drain().collect();
        if stopping.is_empty() {
            return;
        }
        let ids: Vec<i64> = stopping.iter().map(|(id, _)| *id).collect();
        tracing::warn!(jobs = ?ids, "shutting down: failing the uploads still packaging");
        for (_, stop) in stopping {
            let _ = stop.send(Ending::Stopping);
        }
        // Each task drops its `Tracked` once its job is recorded.
        let deadline = Instant::now() + wait;
        while self.tasks.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, oneshot::Sender<Ending>>> {
        // A panic while holding the lock leaves consistent entries behind: keep going.
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds this replica to `web_replicas`.
    pub async fn register(&self, store: &Store) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO web_replicas (id, started_at, heartbeat_at) VALUES ($1, $2, {})",
            store.now_ms_sql()
        );
        sqlx::query(&sql)
            .bind(&self.id)
            .bind(now_secs())
            .execute(&store.pool)
            .await?;
        Ok(())
    }

    /// Reports that this replica lives; false when its row was gone (others took it as dead),
    /// in which case it is added again.
    async fn heartbeat(&self, store: &Store) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE web_replicas SET heartbeat_at = {} WHERE id = $1",
            store.now_ms_sql()
        );
        let done = sqlx::query(&sql)
            .bind(&self.id)
            .execute(&store.pool)
            .await?;
        if done.rows_affected() == 1 {
            return Ok(true);
        }
        self.register(store).await?;
        Ok(false)
    }

    /// One round: report, stop the jobs this replica lost, sweep after replicas that stopped.
    async fn round(&self, store: &Store, media_root: Option<&Path>) -> Result<(), StoreError> {
        // The ids first: a job tracked after this snapshot may not be in the query's answer.
        let tracked: Vec<i64> = self.lock().keys().copied().collect();
        if !self.heartbeat(store).await? {
            tracing::error!(replica = %self.id, "this replica was taken as dead by the others");
        }
        let owned = store.packaging_jobs_of(&self.id).await?;
        let lost: Vec<i64> = tracked
            .into_iter()
            .filter(|id| !owned.contains(id))
            .collect();
        self.lose(&lost);
        if let Some(root) = media_root {
            self.sweep(store, root).await?;
        }
        Ok(())
    }

    /// Fails the packaging jobs of replicas that stopped, removes their work directories and
    /// uploads, and forgets those replicas.
    pub async fn sweep(&self, store: &Store, root: &Path) -> Result<(), StoreError> {
        for job in store.orphan_jobs(self.timeout_ms()).await? {
            if !store.take_over_job(&job, &self.id).await? {
                continue; // another replica's sweep was first
            }
            // The slug is still reserved: no other job can have a work directory under it.
            remove_work_dirs_of(&work_dirs(root), |slug| slug == job.slug);
            // And its replica, gone, writes no upload any more: whoever reads the job failed
            // finds neither its output nor its upload left.
            remove_uploads_of(&upload_files(root), |replica| replica == job.owner);
            let failed = JobState::Failed {
                reason: STOPPED_REASON.to_owned(),
            };
            store.finish_job(job.id, &self.id, &failed).await?;
            tracing::warn!(job = job.id, slug = %job.slug, replica = %job.owner, "failed a packaging job whose replica stopped");
        }
        // Listed before the live replicas are asked: a file is made after its replica's row.
        let uploads = upload_files(root);
        let live = self.live_replicas(store).await?;
        remove_uploads_of(&uploads, |replica| !live.iter().any(|id| id == replica));
        let sql = format!(
            "DELETE FROM web_replicas WHERE heartbeat_at <= {} - $1",
            store.now_ms_sql()
        );
        sqlx::query(&sql)
            .bind(self.timeout_ms())
            .execute(&store.pool)
            .await?;
        Ok(())
    }

    /// The replicas that reported within the timeout, this one included.
    async fn live_replicas(&self, store: &Store) -> Result<Vec<String>, StoreError> {
        let sql = format!(
            "SELECT id FROM web_replicas WHERE heartbeat_at > {} - $1",
            store.now_ms_sql()
        );
        let rows = sqlx::query(&sql)
            .bind(self.timeout_ms())
            .fetch_all(&store.pool)
            .await?;
        use sqlx::Row as _;
        let mut ids: Vec<String> = rows
            .iter()
            .map(|row| row.try_get("id"))
            .collect::<Result<_, _>>()?;
        ids.push(self.id.clone());
        Ok(ids)
    }

    /// Reports and sweeps every [`Replica::interval`] until dropped. When reporting keeps
    /// failing for the whole timeout, the others take this replica as dead: it stops its own
    /// packagers rather than race their sweep.
    pub fn spawn(
        self: Arc<Self>,
        store: Store,
        media_root: Option<std::path::PathBuf>,
    ) -> Heartbeat {
        Heartbeat(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(self.interval());
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_report = Instant::now();
            loop {
                ticks.tick().await;
                match self.round(&store, media_root.as_deref()).await {
                    Ok(()) => last_report = Instant::now(),
                    Err(err) => {
                        tracing::error!(error = %err, "cannot report to the database");
                        if last_report.elapsed() >= self.timeout {
                            let all: Vec<i64> = self.lock().keys().copied().collect();
                            self.lose(&all);
                        }
                    }
                }
            }
        }))
    }
}

/// The reporting task; stops when dropped.
#[derive(Debug)]
pub struct Heartbeat(JoinHandle<()>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Files and directories in the upload directory, with the replica each belongs to.
fn upload_files(root: &Path) -> Vec<(std::path::PathBuf, String)> {
    std::fs::read_dir(root.join(UPLOAD_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let replica = name.split('.').next().unwrap_or_default().to_owned();
            (entry.path(), replica)
        })
        .collect()
}

/// Removes the uploads whose replica `gone` says is gone.
fn remove_uploads_of(
    uploads: &[(std::path::PathBuf, String)],
    gone: impl Fn(&str) -> bool,
) -> usize {
    let mut removed = 0;
    for (path, replica) in uploads {
        if gone(replica) {
            remove(path, &mut removed);
        }
    }
    removed
}

/// The packaging work directories (`vod/.<slug>.packaging-*`), with their slug.
fn work_dirs(root: &Path) -> Vec<(std::path::PathBuf, String)> {
    std::fs::read_dir(root.join("vod"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let (slug, _) = name.strip_prefix('.')?.split_once(".packaging-")?;
            Some((entry.path(), slug.to_owned()))
        })
        .collect()
}

/// Removes the work directories in `dirs` whose slug `matches`.
fn remove_work_dirs_of(
    dirs: &[(std::path::PathBuf, String)],
    matches: impl Fn(&str) -> bool,
) -> usize {
    let mut removed = 0;
    for (path, slug) in dirs {
        if matches(slug) {
            remove(path, &mut removed);
        }
    }
    removed
}

fn remove(path: &Path, removed: &mut usize) {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match result {
        Ok(()) => *removed += 1,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            tracing::warn!(path = %path.display(), error = %err, "cannot remove a leftover upload")
        }
    }
}

/// Removes what crashes left under `root` that no live replica owns: uploads of replicas
/// that are gone (and of versions that did not name them), and packaging work directories
/// of slugs no job packages. Run at start, before this replica takes any upload.
pub async fn remove_leftovers(
    root: &Path,
    store: &Store,
    replica: &Replica,
) -> Result<(), StoreError> {
    // Listed before the database is asked: a live job's files are made after its rows.
    let uploads = upload_files(root);
    let dirs = work_dirs(root);
    let live = replica.live_replicas(store).await?;
    let packaging = store.packaging_slugs().await?;
    let mut removed = remove_uploads_of(&uploads, |owner| !live.iter().any(|id| id == owner));
    removed += remove_work_dirs_of(&dirs, |slug| !packaging.iter().any(|busy| busy == slug));
    if removed > 0 {
        tracing::info!(removed, "removed leftovers of interrupted uploads");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_and_work_dirs_are_known_by_their_names() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        for dir in [
            ".uploads",
            "vod/.film.packaging-12-0",
            "vod/film",
            "vod/.hidden",
        ] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::write(root.join(".uploads/web-7-abc.d00d.upload"), b"x").unwrap();
        std::fs::write(root.join(".uploads/d00d.upload"), b"x").unwrap();
        let mut uploads: Vec<String> = upload_files(root).into_iter().map(|(_, r)| r).collect();
        uploads.sort();
        assert_eq!(uploads, ["d00d", "web-7-abc"]);
        let dirs: Vec<String> = work_dirs(root).into_iter().map(|(_, s)| s).collect();
        assert_eq!(dirs, ["film"]);
    }

    #[test]
    fn a_replica_id_is_unique_and_has_no_dot() {
        let (a, b) = (
            Replica::new(Duration::from_secs(30)),
            Replica::new(Duration::from_secs(30)),
        );
        assert_ne!(a.id, b.id);
        assert!(!a.id.contains('.'), "{}", a.id);
        assert_eq!(a.interval(), Duration::from_secs(6));
    }
}
