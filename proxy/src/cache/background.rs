//! Background fills: a miss handed to a subrequest that reads the origin at the origin's
//! speed into the cache, so no single viewer paces the fill for the others.
//!
//! The first viewer of a missing object takes the cache lock itself, before pingora's lookup,
//! and gives it to a background subrequest (pingora's `SubrequestSpawner`, as its own
//! stale-while-revalidate does). The viewer then looks up like any other: it finds the lock
//! held, waits, and reads the fill's streaming partial write at its own pace. The subrequest
//! writes without a lock of its own and releases the viewers' lock once its fill is
//! registered in the store; if it fails first, dropping the permit lets a new writer be chosen.

use pingora_cache::lock::{CacheKeyLockImpl, LockStatus, Locked, WritePermit};
use pingora_cache::CacheKey;
use pingora_proxy::subrequest::Ctx as SubrequestCtx;
use pingora_proxy::Session;

use pingora_error::{Error, ErrorType, Result};

use super::store::MemoryStore;
use super::{AbandonedFill, EdgeCache};
use crate::connections;

/// The lock a background fill holds for the viewers waiting on it.
pub(crate) struct FillPermit {
    held: Option<WritePermit>,
    lock: &'static CacheKeyLockImpl,
    key: CacheKey,
}

impl FillPermit {
    /// Lets the waiting viewers look up again: `Done` when the fill is in the store, `GiveUp`
    /// when the response is not to be stored (each viewer then asks the origin itself).
    pub(crate) fn release(&mut self, status: LockStatus) {
        if let Some(permit) = self.held.take() {
            self.lock.release(&self.key, permit, status);
        }
    }

    /// Releases the waiting viewers once the response is registered in `store` (or will not
    /// be): they may look again.
    pub(crate) fn release_for(&mut self, store: &MemoryStore) {
        let status = if store.holds(&self.key) {
            LockStatus::Done
        } else {
            LockStatus::GiveUp
        };
        self.release(status);
    }

    /// An error once every viewer of the fill has left and `abandoned` says to abort then.
    pub(crate) fn check_abandoned(
        &self,
        store: &MemoryStore,
        abandoned: AbandonedFill,
    ) -> Result<()> {
        if abandoned == AbandonedFill::Abort && store.fill_abandoned(&self.key) {
            return Error::e_explain(
                ErrorType::InternalError,
                "background fill aborted: every viewer left (abandoned_fill = \"abort\")",
            );
        }
        Ok(())
    }
}

impl Drop for FillPermit {
    fn drop(&mut self) {
        // The fill failed before its response: the waiting viewers compete for a new writer.
        self.release(LockStatus::TransientError);
    }
}

/// Whether this request may start a background fill: a plain GET from a viewer, of a route
/// that asks for it, without request directives that would make the response unstorable.
pub(crate) fn wanted(session: &Session, route_wants: bool) -> bool {
    let req = session.req_header();
    route_wants
        && session.subrequest_ctx.is_none()
        && req.method == http::Method::GET
        && !req.headers.contains_key(http::header::AUTHORIZATION)
        && !req
            .headers
            .get_all(http::header::CACHE_CONTROL)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.contains("no-store")))
}

/// Starts a background fill for `key` when nothing is stored or filling under it and nobody
/// holds its lock. Returns whether one was started, or an error when the viewer reset its
/// HTTP/2 stream already: a fill completes without its viewer, so nobody would be left to
/// want it.
pub(crate) fn start(cache: &EdgeCache, session: &mut Session, key: &CacheKey) -> Result<bool> {
    // Most requests are hits: answer them without touching the lock table.
    if session.subrequest_spawner.is_none()
        || cache.store.holds(key)
        || !cache.predictor.cacheable_prediction(key)
    {
        return Ok(false);
    }
    connections::still_wanted(session)?;
    let permit = match cache.lock.lock(key, false) {
        Locked::Write(permit) => permit,
        // Someone is filling already: this viewer waits on it like any other.
        Locked::Read(_) => return Ok(false),
    };
    let mut permit = FillPermit {
        held: Some(permit),
        lock: cache.lock,
        key: key.clone(),
    };
    // A writer registers its fill before it releases the lock, so with the lock in hand the
    // store's answer cannot change under us.
    if cache.store.holds(key) {
        permit.release(LockStatus::Done);
        return Ok(false);
    }
    let Some(spawner) = session.subrequest_spawner.as_ref() else {
        return Ok(false);
    };
    tracing::debug!(key = ?key.primary_key_str(), "background fill started");
    spawner.spawn_background_subrequest(
        session.as_ref(),
        SubrequestCtx::builder().user_ctx(Box::new(permit)).build(),
    );
    Ok(true)
}

/// In the fill's own subrequest: the permit its parent handed over.
pub(crate) fn take_permit(session: &mut Session) -> Option<FillPermit> {
    let slot = session.subrequest_ctx.as_mut()?.user_ctx_mut()?;
    if !slot.is::<FillPermit>() {
        return None;
    }
    let taken = std::mem::replace(slot, Box::new(()));
    taken.downcast::<FillPermit>().ok().map(|p| *p)
}
