//! Uploads being packaged in the background: the upload form answers as soon as the file is
//! stored and checked, and the admin follows the job on its own page. Jobs live in memory (a
//! restart forgets them and abandons any packaging in progress); the newest finished ones are
//! kept for the admin list.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use crate::store::now_secs;

/// How many finished jobs are remembered.
const KEEP_FINISHED: usize = 50;

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
    pub id: u64,
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

/// Every job of this process.
#[derive(Debug, Default)]
pub struct PackagingJobs {
    jobs: Mutex<Jobs>,
}

#[derive(Debug, Default)]
struct Jobs {
    last_id: u64,
    by_id: BTreeMap<u64, Job>,
}

/// Another upload is packaging under this slug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlugBusy(pub String);

impl PackagingJobs {
    /// Registers a job for `slug`, unless one is already packaging under it.
    pub fn start(&self, title: &str, slug: &str, admin: &str) -> Result<u64, SlugBusy> {
        let mut jobs = self.lock();
        if jobs
            .by_id
            .values()
            .any(|job| job.slug == slug && job.state == JobState::Packaging)
        {
            return Err(SlugBusy(slug.to_owned()));
        }
        jobs.last_id += 1;
        let id = jobs.last_id;
        jobs.by_id.insert(
            id,
            Job {
                id,
                title: title.to_owned(),
                slug: slug.to_owned(),
                admin: admin.to_owned(),
                started_at: now_secs(),
                finished_at: None,
                state: JobState::Packaging,
            },
        );
        Ok(id)
    }

    /// Records how job `id` ended, and forgets the oldest finished jobs beyond the few kept.
    pub fn finish(&self, id: u64, state: JobState) {
        let mut jobs = self.lock();
        if let Some(job) = jobs.by_id.get_mut(&id) {
            job.state = state;
            job.finished_at = Some(now_secs());
        }
        let finished: Vec<u64> = jobs
            .by_id
            .values()
            .filter(|job| job.state != JobState::Packaging)
            .map(|job| job.id)
            .collect();
        for old in finished
            .iter()
            .take(finished.len().saturating_sub(KEEP_FINISHED))
        {
            jobs.by_id.remove(old);
        }
    }

    /// Drops job `id` (its upload was refused before packaging started).
    pub fn forget(&self, id: u64) {
        self.lock().by_id.remove(&id);
    }

    /// Job `id`, if it is remembered.
    pub fn get(&self, id: u64) -> Option<Job> {
        self.lock().by_id.get(&id).cloned()
    }

    /// Every remembered job, newest first.
    pub fn recent(&self) -> Vec<Job> {
        self.lock().by_id.values().rev().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Jobs> {
        // A panic while holding the lock leaves consistent entries behind: keep going.
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slug_is_reserved_while_it_packages_and_free_once_it_ends() {
        let jobs = PackagingJobs::default();
        let first = jobs.start("Holiday", "holiday", "alice").unwrap();
        assert_eq!(
            jobs.start("Holiday again", "holiday", "bob"),
            Err(SlugBusy("holiday".to_owned()))
        );
        jobs.finish(
            first,
            JobState::Failed {
                reason: "broken".to_owned(),
            },
        );
        let second = jobs.start("Holiday again", "holiday", "bob").unwrap();
        assert!(second > first);
        assert_eq!(jobs.get(second).unwrap().state, JobState::Packaging);
        let ids: Vec<u64> = jobs.recent().iter().map(|job| job.id).collect();
        assert_eq!(ids, [second, first], "newest first");
    }

    #[test]
    fn only_the_newest_finished_jobs_are_kept_and_running_ones_never_dropped() {
        let jobs = PackagingJobs::default();
        let running = jobs.start("Long", "long", "alice").unwrap();
        let mut last = 0;
        for n in 0..(KEEP_FINISHED + 5) {
            last = jobs.start("T", &format!("t{n}"), "alice").unwrap();
            jobs.finish(last, JobState::Done { title_id: n as i64 });
        }
        let recent = jobs.recent();
        assert_eq!(recent.len(), KEEP_FINISHED + 1);
        assert_eq!(recent[0].id, last);
        assert!(jobs.get(running).is_some());
        assert!(
            jobs.get(running + 1).is_none(),
            "the oldest finished job is gone"
        );
    }
}
