//! Uploads being packaged in the background: the upload form answers as soon as the file is
//! stored and checked, and the admin follows the job on its own page. Jobs live in the
//! database, so that every replica of the web app shows them under the same address; each
//! is owned by the replica packaging it ([`crate::replicas`]), and a partial unique index
//! lets one job package under a slug at a time across all replicas.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::catalog::{insert_title, TitleFields};
use crate::store::{is_unique_violation, now_secs, Store, StoreError};

/// How many finished jobs are kept for the admin list.
const KEEP_FINISHED: i64 = 50;

/// Where a job is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobState {
    /// GStreamer is transcoding.
    Packaging,
    /// Packaged and in the catalog.
    Done {
        /// The title's database id.
        title_id: i64,
    },
    /// Packaging or registering failed; nothing was added.
    Failed {
        /// What went wrong, for the admin.
        reason: String,
    },
}

/// One upload's packaging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Job {
    /// Its number: the page is `/admin/uploads/{id}`.
    pub id: i64,
    /// The title being added.
    pub title: String,
    /// Its slug (reserved while packaging).
    pub slug: String,
    /// Who uploaded it.
    pub admin: String,
    /// Unix seconds when packaging started.
    pub started_at: i64,
    /// Unix seconds when it finished, once it has.
    pub finished_at: Option<i64>,
    /// Where it is.
    #[serde(flatten)]
    pub state: JobState,
}

/// Another upload is packaging under this slug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlugBusy(pub String);

/// A packaging job that has lost its replica, as the sweep finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanJob {
    /// The job's id.
    pub id: i64,
    /// The slug it reserves.
    pub slug: String,
    /// The replica that stopped.
    pub owner: String,
}

const JOB_COLUMNS: &str =
    "id, title, slug, admin, state, title_id, reason, started_at, finished_at";

fn job_from_row(row: &AnyRow) -> Result<Job, sqlx::Error> {
    let state: String = row.try_get("state")?;
    let state = match state.as_str() {
        "packaging" => JobState::Packaging,
        "done" => JobState::Done {
            title_id: row.try_get::<Option<i64>, _>("title_id")?.unwrap_or(0),
        },
        _ => JobState::Failed {
            reason: row
                .try_get::<Option<String>, _>("reason")?
                .unwrap_or_default(),
        },
    };
    Ok(Job {
        id: row.try_get("id")?,
        title: row.try_get("title")?,
        slug: row.try_get("slug")?,
        admin: row.try_get("admin")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        state,
    })
}

impl Store {
    /// Registers a job for `slug` owned by replica `owner`, unless one is already packaging
    /// under it on any replica.
    pub async fn start_job(
        &self,
        title: &str,
        slug: &str,
        admin: &str,
        owner: &str,
    ) -> Result<Result<i64, SlugBusy>, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO upload_jobs (title, slug, admin, owner, state, started_at) \
             VALUES ($1, $2, $3, $4, 'packaging', $5) RETURNING id",
        )
        .bind(title)
        .bind(slug)
        .bind(admin)
        .bind(owner)
        .bind(now_secs())
        .fetch_one(&self.pool)
        .await;
        match inserted {
            Ok(row) => Ok(Ok(row.try_get("id")?)),
            // The partial unique index on packaging slugs: the rule holds across replicas.
            Err(err) if is_unique_violation(&err) => Ok(Err(SlugBusy(slug.to_owned()))),
            Err(err) => Err(err.into()),
        }
    }

    /// Records how job `id` ended, if `owner` still owns it and it is packaging; false when
    /// another replica took it over. The oldest finished jobs beyond the few kept go.
    pub async fn finish_job(
        &self,
        id: i64,
        owner: &str,
        state: &JobState,
    ) -> Result<bool, StoreError> {
        let (name, title_id, reason) = match state {
            JobState::Packaging => ("packaging", None, None),
            JobState::Done { title_id } => ("done", Some(*title_id), None),
            JobState::Failed { reason } => ("failed", None, Some(reason.as_str())),
        };
        let done = sqlx::query(
            "UPDATE upload_jobs SET state = $1, title_id = $2, reason = $3, finished_at = $4 \
             WHERE id = $5 AND owner = $6 AND state = 'packaging'",
        )
        .bind(name)
        .bind(title_id)
        .bind(reason)
        .bind(now_secs())
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        self.prune_jobs().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Adds the packaged title and marks job `id` done in one transaction, if `owner` still
    /// owns it: `None` (and nothing added) when another replica took the job over, so a
    /// title is never listed under a job shown as failed.
    pub async fn complete_job(
        &self,
        id: i64,
        owner: &str,
        fields: &TitleFields,
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let claimed = sqlx::query(
            "UPDATE upload_jobs SET state = 'done', finished_at = $1 \
             WHERE id = $2 AND owner = $3 AND state = 'packaging'",
        )
        .bind(now_secs())
        .bind(id)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        let title_id = insert_title(&mut *tx, fields).await?;
        sqlx::query("UPDATE upload_jobs SET title_id = $1 WHERE id = $2")
            .bind(title_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.prune_jobs().await?;
        Ok(Some(title_id))
    }

    /// Drops job `id` (its upload was refused before packaging started).
    pub async fn forget_job(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM upload_jobs WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Job `id`, if it is kept.
    pub async fn job(&self, id: i64) -> Result<Option<Job>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM upload_jobs WHERE id = $1");
        self.fetch_entry(sqlx::query(&sql).bind(id), job_from_row)
            .await
    }

    /// Every kept job, newest first.
    pub async fn recent_jobs(&self) -> Result<Vec<Job>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM upload_jobs ORDER BY id DESC");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(job_from_row).collect::<Result<_, _>>()?)
    }

    /// The ids of the jobs `owner` is packaging, as the database has them.
    pub async fn packaging_jobs_of(&self, owner: &str) -> Result<Vec<i64>, StoreError> {
        let rows =
            sqlx::query("SELECT id FROM upload_jobs WHERE owner = $1 AND state = 'packaging'")
                .bind(owner)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .iter()
            .map(|row| row.try_get("id"))
            .collect::<Result<_, _>>()?)
    }

    /// The slugs being packaged now, on any replica.
    pub async fn packaging_slugs(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT slug FROM upload_jobs WHERE state = 'packaging'")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|row| row.try_get("slug"))
            .collect::<Result<_, _>>()?)
    }

    /// Packaging jobs whose owner has not reported for `timeout_ms` (or is gone).
    pub async fn orphan_jobs(&self, timeout_ms: i64) -> Result<Vec<OrphanJob>, StoreError> {
        let sql = format!(
            "SELECT j.id, j.slug, j.owner FROM upload_jobs j WHERE j.state = 'packaging' \
             AND NOT EXISTS (SELECT 1 FROM web_replicas r \
             WHERE r.id = j.owner AND r.heartbeat_at > {} - $1)",
            self.now_ms_sql()
        );
        let rows = sqlx::query(&sql)
            .bind(timeout_ms)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                Ok(OrphanJob {
                    id: row.try_get("id")?,
                    slug: row.try_get("slug")?,
                    owner: row.try_get("owner")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?)
    }

    /// Makes `owner` the owner of `job` if it still belongs to the replica that stopped: only
    /// one sweeping replica wins, and the slug stays reserved while it cleans up.
    pub async fn take_over_job(&self, job: &OrphanJob, owner: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE upload_jobs SET owner = $1 \
             WHERE id = $2 AND owner = $3 AND state = 'packaging'",
        )
        .bind(owner)
        .bind(job.id)
        .bind(&job.owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Forgets the oldest finished jobs beyond the few kept; packaging ones stay.
    async fn prune_jobs(&self) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM upload_jobs WHERE state <> 'packaging' AND id NOT IN \
             (SELECT id FROM upload_jobs WHERE state <> 'packaging' ORDER BY id DESC LIMIT $1)",
        )
        .bind(KEEP_FINISHED)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh SQLite store in `dir`.
    async fn store(dir: &tempfile::TempDir) -> Store {
        let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
        Store::open(&url).await.unwrap()
    }

    fn failed(reason: &str) -> JobState {
        JobState::Failed {
            reason: reason.to_owned(),
        }
    }

    #[tokio::test]
    async fn a_slug_is_reserved_while_it_packages_on_any_replica_and_free_once_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let first = store
            .start_job("Holiday", "holiday", "alice", "a")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            store
                .start_job("Holiday again", "holiday", "bob", "b")
                .await
                .unwrap(),
            Err(SlugBusy("holiday".to_owned()))
        );
        assert!(store
            .finish_job(first, "a", &failed("broken"))
            .await
            .unwrap());
        let second = store
            .start_job("Holiday again", "holiday", "bob", "b")
            .await
            .unwrap()
            .unwrap();
        assert!(second > first);
        assert_eq!(
            store.job(second).await.unwrap().unwrap().state,
            JobState::Packaging
        );
        let ids: Vec<i64> = store
            .recent_jobs()
            .await
            .unwrap()
            .iter()
            .map(|job| job.id)
            .collect();
        assert_eq!(ids, [second, first], "newest first");
        assert_eq!(store.packaging_slugs().await.unwrap(), ["holiday"]);
        assert_eq!(store.packaging_jobs_of("b").await.unwrap(), [second]);
    }

    #[tokio::test]
    async fn only_the_newest_finished_jobs_are_kept_and_running_ones_never_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let running = store
            .start_job("Long", "long", "alice", "a")
            .await
            .unwrap()
            .unwrap();
        let mut last = 0;
        for n in 0..(KEEP_FINISHED + 5) {
            last = store
                .start_job("T", &format!("t{n}"), "alice", "a")
                .await
                .unwrap()
                .unwrap();
            let done = JobState::Done { title_id: n };
            assert!(store.finish_job(last, "a", &done).await.unwrap());
        }
        let recent = store.recent_jobs().await.unwrap();
        assert_eq!(recent.len() as i64, KEEP_FINISHED + 1);
        assert_eq!(recent[0].id, last);
        assert!(store.job(running).await.unwrap().is_some());
        assert!(
            store.job(running + 1).await.unwrap().is_none(),
            "the oldest finished job is gone"
        );
    }

    #[tokio::test]
    async fn a_job_taken_over_is_no_longer_its_first_owners_to_end_or_to_list() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let id = store
            .start_job("Film", "film", "alice", "a")
            .await
            .unwrap()
            .unwrap();
        // Replica `a` never reported: with no row in web_replicas, its job is an orphan.
        let orphans = store.orphan_jobs(60_000).await.unwrap();
        let orphan = OrphanJob {
            id,
            slug: "film".to_owned(),
            owner: "a".to_owned(),
        };
        assert_eq!(orphans, std::slice::from_ref(&orphan));
        assert!(store.take_over_job(&orphan, "b").await.unwrap());
        assert!(
            !store.take_over_job(&orphan, "c").await.unwrap(),
            "one sweeper wins"
        );

        let fields = TitleFields {
            slug: "film".to_owned(),
            title: "Film".to_owned(),
            description: String::new(),
            poster: None,
            duration_ms: Some(1000),
            stream_url: "vod/film/index.m3u8".to_owned(),
        };
        assert_eq!(store.complete_job(id, "a", &fields).await.unwrap(), None);
        assert!(store.title_by_slug("film").await.unwrap().is_none());
        assert!(!store.finish_job(id, "a", &failed("late")).await.unwrap());
        assert!(store.finish_job(id, "b", &failed("stopped")).await.unwrap());
        assert_eq!(
            store.job(id).await.unwrap().unwrap().state,
            failed("stopped")
        );
        assert!(store.orphan_jobs(60_000).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn completing_a_job_lists_its_title_and_marks_it_done_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let id = store
            .start_job("Film", "film", "alice", "a")
            .await
            .unwrap()
            .unwrap();
        let fields = TitleFields {
            slug: "film".to_owned(),
            title: "Film".to_owned(),
            description: String::new(),
            poster: None,
            duration_ms: Some(1000),
            stream_url: "vod/film/index.m3u8".to_owned(),
        };
        let title_id = store.complete_job(id, "a", &fields).await.unwrap().unwrap();
        assert_eq!(
            store.job(id).await.unwrap().unwrap().state,
            JobState::Done { title_id }
        );
        assert_eq!(
            store.title_by_slug("film").await.unwrap().unwrap().id,
            title_id
        );
    }
}
