//! The cache lock: pingora's lock table, which lets one request of many that miss an object
//! fetch it while the others wait, with the check it lacks.
//!
//! pingora-cache looks a request up in the store and then takes the lock, in two steps
//! (`HttpCache::cache_lookup`). A fill that registers in the store and lets its waiters go
//! between the two leaves the lock free, and the request, which found nothing, would take it
//! and fetch the object a second time beside the fill. Under load the gap is wide enough to
//! hit: a loaded CI run saw 7 of 60 new live segments fetched twice. [`FillLock`] gives such a
//! request a lock already released instead, so it looks up again and follows the fill.

use std::time::Duration;

use http::Extensions;
use pingora_cache::lock::{CacheKeyLock, CacheLock, LockStatus, Locked, ReadLock, WritePermit};
use pingora_cache::trace::Span;
use pingora_cache::CacheKey;

use super::store::MemoryStore;

/// pingora's [`CacheLock`], which will not hand a miss the write lock for an object a lookup
/// would now find.
pub(crate) struct FillLock {
    table: CacheLock,
    store: &'static MemoryStore,
}

impl FillLock {
    /// A lock table whose writers may hold a lock for `age_timeout` before waiters take it over.
    pub(crate) fn new(age_timeout: Duration, store: &'static MemoryStore) -> Self {
        FillLock {
            table: CacheLock::new(age_timeout),
            store,
        }
    }
}

impl CacheKeyLock for FillLock {
    fn lock(&self, key: &CacheKey, stale_writer: bool) -> Locked {
        match self.table.lock(key, stale_writer) {
            // A revalidation locks an object that is stored by definition.
            Locked::Write(permit) if !stale_writer && self.store.findable(key) => {
                // The fill came after this request's lookup. Anyone who queued on the permit
                // in the meantime looks up again as well.
                self.table.release(key, permit, LockStatus::Done);
                Locked::Read(released())
            }
            locked => locked,
        }
    }

    fn release(&self, key: &CacheKey, permit: WritePermit, reason: LockStatus) {
        self.table.release(key, permit, reason);
    }

    fn trace_lock_wait(&self, span: &mut Span, read_lock: &ReadLock, lock_status: LockStatus) {
        self.table.trace_lock_wait(span, read_lock, lock_status);
    }

    fn custom_lock_status(&self, custom_no_cache: &'static str) -> LockStatus {
        self.table.custom_lock_status(custom_no_cache)
    }
}

/// A read lock whose writer is done: waiting on it returns at once, and the reader looks up
/// again.
fn released() -> ReadLock {
    let (mut permit, stub) = WritePermit::new(Duration::ZERO, false, Extensions::new());
    permit.unlock(LockStatus::Done);
    stub.read_lock()
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::SystemTime;

    use pingora_cache::storage::{MissHandler, Storage};
    use pingora_cache::CacheMeta;
    use pingora_http::ResponseHeader;

    /// A lock over a store in which `url` has a fill in progress (kept alive by the handler).
    async fn lock_with_fill_of(url: &str) -> (FillLock, CacheKey, MissHandler) {
        let store = MemoryStore::leaked_for_tests(1 << 20);
        let key = CacheKey::new(url, "");
        let now = SystemTime::now();
        let header = ResponseHeader::build(200, None).unwrap();
        let meta = CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header);
        let trace = pingora_cache::trace::Span::inactive().handle();
        let miss = store.get_miss_handler(&key, &meta, &trace).await.unwrap();
        (FillLock::new(Duration::from_secs(30), store), key, miss)
    }

    fn read_status(locked: Locked) -> Option<LockStatus> {
        match locked {
            Locked::Read(read) => Some(read.lock_status()),
            Locked::Write(_) => None,
        }
    }

    /// The race the lock closes: a request found nothing, then a fill registered (and, had it
    /// held the lock, released its waiters), then the request locks. It must follow the fill,
    /// not fetch the object again.
    #[tokio::test]
    async fn a_miss_that_locks_after_a_fill_registered_follows_the_fill() {
        let (lock, key, _miss) = lock_with_fill_of("h/live/seg-50.ts").await;

        assert_eq!(read_status(lock.lock(&key, false)), Some(LockStatus::Done));
        // Nothing was left in the table: another object's miss still gets the write lock.
        let other = CacheKey::new("h/live/seg-51.ts", "");
        let Locked::Write(permit) = lock.lock(&other, false) else {
            panic!("a miss of an object nobody fills must get the write lock");
        };
        // And the ones after it wait on it, as with pingora's own lock.
        assert_eq!(
            read_status(lock.lock(&other, false)),
            Some(LockStatus::Waiting)
        );
        lock.release(&other, permit, LockStatus::Done);
    }

    /// A revalidation (stale writer) locks an object that is stored: it keeps the write lock.
    #[tokio::test]
    async fn a_revalidation_of_a_stored_object_gets_the_write_lock() {
        let (lock, key, _miss) = lock_with_fill_of("h/vod/a.mp4").await;
        let Locked::Write(permit) = lock.lock(&key, true) else {
            panic!("a revalidation must get the write lock");
        };
        lock.release(&key, permit, LockStatus::Done);
    }
}
