//! The HTTP cache: storage (`store`), big bodies in files the kernel sends from (`body_file`),
//! fills in progress (`fill`) and in the background (`background`), the lock that lets one of
//! many misses fetch (`lock`), what may be stored and for how long (`policy`), a response's age
//! (`age`), keys and what a purge or an invalidation removes (`key`), variants under Vary
//! (`vary`), what an unsafe request invalidates (`invalidation`), the operator's purge API
//! (`purge`), what is stored for one URL (`lookup`), the fields that set the edge's own caching
//! ahead of Cache-Control (`targeted`), and the status a viewer sees ([`CacheStatus`], `status`).

pub(crate) mod age;
pub(crate) mod background;
pub(crate) mod body_file;
pub(crate) mod fill;
pub(crate) mod invalidation;
pub(crate) mod kept_header;
pub(crate) mod key;
pub(crate) mod lock;
pub(crate) mod lookup;
pub(crate) mod policy;
pub(crate) mod purge;
pub(crate) mod status;
pub(crate) mod store;
pub(crate) mod targeted;
pub(crate) mod vary;

use std::sync::Arc;
use std::time::Duration;

use pingora_cache::lock::CacheKeyLockImpl;
use pingora_cache::predictor::{CacheablePredictor, Predictor};
use pingora_cache::{CacheOptionOverrides, CachePhase, HttpCache, NoCacheReason};

pub use body_file::BodyFileCounters;
pub use fill::FillBudget;
pub use policy::{AbandonedFill, CacheMode, CachePolicy};
pub use status::CacheStatus;
pub use store::{MemoryStore, StoreCounters};
pub use targeted::{TargetedField, TargetedSyntax};

/// Why a response is not stored when its URL already has the route's `max_variants`.
pub(crate) const TOO_MANY_VARIANTS: &str = "too many variants";

/// The process-wide cache: one store and one lock table, alive as long as the process.
#[derive(Clone, Copy)]
pub struct EdgeCache {
    /// Where objects live.
    pub store: &'static MemoryStore,
    /// Coalesces concurrent misses for one key into one origin fetch.
    pub lock: &'static CacheKeyLockImpl,
    /// Remembers keys whose responses were uncacheable, so requests for them skip the lock
    /// instead of queueing behind each other (Varnish's hit-for-miss, without its stampede).
    pub predictor: &'static (dyn CacheablePredictor + Sync),
}

impl EdgeCache {
    /// Creates the store (at most `max_bytes`, fills drawing on `fills`) and the lock table.
    /// Both live until exit, as pingora's cache API requires `'static` storage; a reload keeps
    /// them.
    pub fn new(
        max_bytes: u64,
        counters: StoreCounters,
        fills: FillBudget,
        lock_age_timeout: Duration,
    ) -> Self {
        let store: &'static MemoryStore = Box::leak(Box::new(MemoryStore::new(
            max_bytes,
            counters,
            Arc::new(fills),
        )));
        let lock: &'static lock::FillLock =
            Box::leak(Box::new(lock::FillLock::new(lock_age_timeout, store)));
        // Reasons that depend on one viewer's request must not mark the URL for everyone;
        // nor must a variant past `max_variants`, or the stored ones would be bypassed too.
        fn per_request(reason: &'static str) -> bool {
            matches!(
                reason,
                "request no-store" | "authorization" | TOO_MANY_VARIANTS
            )
        }
        let predictor: &'static Predictor<16> =
            Box::leak(Box::new(Predictor::new(4096, Some(per_request))));
        EdgeCache {
            store,
            lock,
            predictor,
        }
    }

    /// Turns caching on for one request under `policy`. `wait_timeout` bounds how long it
    /// waits for another request's fill; `locked` makes its miss take the lock the others wait
    /// on (a background fill writes without it: its viewers wait on the one it holds).
    pub fn enable(
        &self,
        cache: &mut HttpCache,
        policy: &CachePolicy,
        wait_timeout: Duration,
        locked: bool,
    ) {
        let mut overrides = CacheOptionOverrides::default();
        // Waiters follow the fill as soon as its headers arrive (streaming partial writes),
        // so this only bounds a fill whose origin sends no headers at all.
        overrides.wait_timeout = Some(wait_timeout);
        let lock = locked.then_some(self.lock);
        cache.enable(
            self.store,
            None,
            Some(self.predictor),
            lock,
            Some(overrides),
        );
        cache.set_max_file_size_bytes(policy.max_object_size);
    }
}

/// Why a request that waited on other requests' fills of its object must not ask the origin
/// itself, or `None` when it may. pingora sends a waiter upstream, uncached, once it has waited
/// `wait` for a fill that never got a response header (`CacheLockTimeout`), or once the fills
/// it waited on failed or outlived `cache.lock_timeout` too often (`CacheLockRetryLimit`): with
/// a slow or failing origin, that releases every waiting viewer onto it at once. Those viewers
/// get a 504 instead, when nothing is stored or filling for the object (the edge checks); the
/// origin sees one fetch per lock, as when it was healthy.
pub(crate) fn waited_in_vain(phase: CachePhase, wait: Duration) -> Option<String> {
    match phase {
        CachePhase::Disabled(NoCacheReason::CacheLockTimeout) => Some(format!(
            "waited {wait:?} on another request's fetch of this object, which got no response \
             in that time; not asking the origin once more"
        )),
        CachePhase::Disabled(NoCacheReason::CacheLockRetryLimit) => Some(
            "the fetches of this object it waited on failed or outlived cache.lock_timeout, \
             one after another; not asking the origin once more"
                .to_string(),
        ),
        _ => None,
    }
}
