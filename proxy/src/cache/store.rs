//! Dime's production cache storage for pingora-cache: committed objects in moka, bounded by
//! bytes with TinyLFU admission, and fills in progress that readers stream from.
//!
//! Modelled on pingora's test-only `MemCache`, with three differences that matter in
//! production: the store is bounded and evicts, hits are zero-copy slices, and a fill that is
//! abandoned makes its readers fail instead of ending cleanly on a truncated body (upstream
//! pingora issue #932). Fills in progress and their memory budget live in `fill`.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use moka::notification::RemovalCause;
use moka::sync::Cache;
use moka::Expiry;
use pingora_cache::eviction::CacheEntryKey;
use pingora_cache::key::CacheHashKey;
use pingora_cache::key::HashBinary;
use pingora_cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
    PurgeType, Storage,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, CacheMeta};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use prometheus::IntCounter;

use super::fill::{Fill, FillBudget, FillReader, FillState, READ_CHUNK};

/// Fixed per-entry bookkeeping counted against the memory limit, beside body and headers.
const ENTRY_OVERHEAD: usize = 256;

/// A `CacheMeta` kept parsed. pingora's serialized form compresses the header with zstd, and
/// decoding it on every hit cost more than the rest of the hit; `CacheMeta` is not `Clone`,
/// so the parts are kept and a meta is rebuilt from them.
pub struct MetaParts {
    fresh_until: SystemTime,
    created: SystemTime,
    updated: SystemTime,
    epoch_override: Option<SystemTime>,
    stale_while_revalidate_sec: u32,
    stale_if_error_sec: u32,
    header: ResponseHeader,
    variance: Option<HashBinary>,
    /// Approximate bytes the header holds, for the memory limit.
    header_bytes: usize,
}

impl MetaParts {
    /// The parts of `meta`.
    pub fn of(meta: &CacheMeta) -> Self {
        let header = meta.response_header_copy();
        let header_bytes = header
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum::<usize>()
            + 64;
        MetaParts {
            fresh_until: meta.fresh_until(),
            created: meta.created(),
            updated: meta.updated(),
            epoch_override: meta.epoch_override(),
            stale_while_revalidate_sec: meta.stale_while_revalidate_sec(),
            stale_if_error_sec: meta.stale_if_error_sec(),
            header,
            variance: meta.variance(),
            header_bytes,
        }
    }

    fn meta(&self) -> CacheMeta {
        let mut meta = CacheMeta::new(
            self.fresh_until,
            self.created,
            self.stale_while_revalidate_sec,
            self.stale_if_error_sec,
            self.header.clone(),
        );
        // `new` sets updated = created; the epoch carries a later revalidation, so Age stays right.
        match self.epoch_override {
            Some(epoch) => meta.set_epoch_override(epoch),
            None if self.updated != self.created => meta.set_epoch_override(self.updated),
            None => {}
        }
        if let Some(v) = self.variance {
            meta.set_variance(v);
        }
        meta
    }

    /// Freshness plus the longest stale window, plus the revalidation window when the object
    /// carries an ETag or Last-Modified.
    fn usable_until(&self) -> SystemTime {
        let stale = self.stale_while_revalidate_sec.max(self.stale_if_error_sec);
        let stale = Duration::from_secs(u64::from(stale));
        let h = &self.header.headers;
        let revalidatable =
            h.contains_key(http::header::ETAG) || h.contains_key(http::header::LAST_MODIFIED);
        let keep = if revalidatable {
            stale.max(REVALIDATION_WINDOW)
        } else {
            stale
        };
        self.fresh_until + keep
    }
}

/// One committed object: its key text, parsed meta, and body.
struct Entry {
    url: Arc<str>,
    meta: Arc<MetaParts>,
    body: Bytes,
    /// Freshness plus the longest stale window: after this nothing can use it.
    usable_until: SystemTime,
}

impl Entry {
    fn weight(&self) -> u32 {
        let w = self.body.len() + self.meta.header_bytes + self.url.len() + ENTRY_OVERHEAD;
        u32::try_from(w).unwrap_or(u32::MAX)
    }
}

/// Counters the store reports into.
#[derive(Clone)]
pub struct StoreCounters {
    /// Objects evicted to make room.
    pub evictions: IntCounter,
}

/// The `user_tag` of the cache key a background fill writes under: its own reader of the
/// fill is then not counted as a viewer.
pub const BACKGROUND_FILL_TAG: &str = "background-fill";

/// The moka-backed cache store.
pub struct MemoryStore {
    committed: Cache<HashBinary, Arc<Entry>>,
    filling: RwLock<HashMap<HashBinary, HashMap<u64, Arc<Fill>>>>,
    next_fill: AtomicU64,
    budget: Arc<FillBudget>,
}

struct UntilUsable;

impl Expiry<HashBinary, Arc<Entry>> for UntilUsable {
    fn expire_after_create(
        &self,
        _k: &HashBinary,
        v: &Arc<Entry>,
        _now: Instant,
    ) -> Option<Duration> {
        Some(remaining(v.usable_until))
    }

    fn expire_after_update(
        &self,
        _k: &HashBinary,
        v: &Arc<Entry>,
        _now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(remaining(v.usable_until))
    }
}

fn remaining(until: SystemTime) -> Duration {
    until
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
}

impl MemoryStore {
    /// A store holding at most `max_bytes` of objects (bodies, headers and bookkeeping), with
    /// fills in progress drawing on `budget`.
    pub fn new(max_bytes: u64, counters: StoreCounters, budget: Arc<FillBudget>) -> Self {
        let committed = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_k: &HashBinary, v: &Arc<Entry>| v.weight())
            .expire_after(UntilUsable)
            .support_invalidation_closures()
            .eviction_listener(move |_k, _v, cause| {
                if cause == RemovalCause::Size {
                    counters.evictions.inc();
                }
            })
            .build();
        MemoryStore {
            committed,
            filling: RwLock::new(HashMap::new()),
            next_fill: AtomicU64::new(1),
            budget,
        }
    }

    /// Bytes held by fills in progress.
    pub fn fill_bytes(&self) -> u64 {
        self.budget.used()
    }

    /// Whether `key` has anything stored or filling, under any variant.
    pub fn holds(&self, key: &CacheKey) -> bool {
        let hash = key.combined_bin();
        self.committed.contains_key(&hash)
            || self
                .filling
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&hash)
    }

    /// Whether the newest fill for `key` had viewers and all of them left.
    pub fn fill_abandoned(&self, key: &CacheKey) -> bool {
        self.fill_for(&key.combined_bin(), None)
            .is_some_and(|f| f.abandoned())
    }

    /// Objects stored now.
    pub fn object_count(&self) -> u64 {
        self.committed.run_pending_tasks();
        self.committed.entry_count()
    }

    /// Bytes stored now, as counted against the limit.
    pub fn size_bytes(&self) -> u64 {
        self.committed.run_pending_tasks();
        self.committed.weighted_size()
    }

    /// Removes every object whose key text matches, and abandons matching fills.
    /// Returns the number of committed objects it found.
    pub fn purge_where(&self, matches: impl Fn(&str) -> bool + Send + Sync + 'static) -> usize {
        let matches = Arc::new(matches);
        let found = self
            .committed
            .iter()
            .filter(|(_, e)| matches(&e.url))
            .count();
        let m = matches.clone();
        // Invalidated entries are never returned again, even before moka sweeps them.
        if self
            .committed
            .invalidate_entries_if(move |_, e| m(&e.url))
            .is_err()
        {
            // Closures are enabled at build time, so this cannot happen; fall back to a sweep.
            let keys: Vec<_> = self
                .committed
                .iter()
                .filter(|(_, e)| matches(&e.url))
                .map(|(k, _)| k)
                .collect();
            for k in keys {
                self.committed.invalidate(k.as_ref());
            }
        }
        self.filling
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, fills| {
                fills.retain(|_, f| !matches(&f.url));
                !fills.is_empty()
            });
        found
    }

    /// Removes everything.
    pub fn purge_all(&self) -> usize {
        let n = self.object_count() as usize;
        self.committed.invalidate_all();
        self.filling
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        n
    }

    fn fill_for(&self, hash: &HashBinary, tag: Option<u64>) -> Option<Arc<Fill>> {
        let filling = self.filling.read().unwrap_or_else(|p| p.into_inner());
        let fills = filling.get(hash)?;
        match tag {
            Some(t) => fills.get(&t).cloned(),
            // The newest fill a new reader can start from byte 0 is the one to follow.
            None => fills
                .iter()
                .filter(|(_, f)| f.joinable())
                .max_by_key(|(id, _)| **id)
                .map(|(_, f)| f.clone()),
        }
    }
}

fn partial_hit(fill: Arc<Fill>, viewer: bool) -> Result<Option<(CacheMeta, HitHandler)>> {
    let meta = fill.meta.meta();
    Ok(Some((meta, Box::new(Hit::Partial(fill.reader(viewer))))))
}

#[async_trait]
impl Storage for MemoryStore {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let hash = key.combined_bin();
        if let Some(fill) = self.fill_for(&hash, None) {
            return partial_hit(fill, true);
        }
        match self.committed.get(&hash) {
            Some(entry) => {
                let meta = entry.meta.meta();
                let end = entry.body.len();
                Ok(Some((
                    meta,
                    Box::new(Hit::Complete(CompleteHit { entry, pos: 0, end })),
                )))
            }
            None => Ok(None),
        }
    }

    async fn lookup_streaming_write(
        &'static self,
        key: &CacheKey,
        tag: Option<&[u8]>,
        trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some(tag) = tag
            .and_then(|t| <[u8; 8]>::try_from(t).ok())
            .map(u64::from_be_bytes)
        else {
            return self.lookup(key, trace).await;
        };
        match self.fill_for(&key.combined_bin(), Some(tag)) {
            // The writer's own reader: a viewer, unless a background task writes the fill.
            Some(fill) => {
                let viewer = !fill.background;
                partial_hit(fill, viewer)
            }
            None => Ok(None),
        }
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let hash = key.combined_bin();
        let url: Arc<str> = key.primary_key_str().unwrap_or("").into();
        let fill = Arc::new(Fill::new(
            url,
            Arc::new(MetaParts::of(meta)),
            key.user_tag == BACKGROUND_FILL_TAG,
            self.budget.clone(),
        ));
        let id = self.next_fill.fetch_add(1, Ordering::Relaxed);
        self.filling
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(hash)
            .or_default()
            .insert(id, fill.clone());
        Ok(Box::new(Miss {
            store: self,
            hash,
            fill,
            id,
            tag: id.to_be_bytes(),
            written: 0,
            finished: false,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        if matches!(target, PurgeTarget::Exact(CacheEntryKey::Identified { .. })) {
            return Ok(PurgeOutcome::NotFound);
        }
        let hash = target.key().combined_bin();
        let fill_removed = self
            .filling
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&hash)
            .is_some();
        let removed = self.committed.remove(&hash).is_some();
        Ok(if removed || fill_removed {
            PurgeOutcome::Purged(None)
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let hash = key.combined_bin();
        let Some(old) = self.committed.get(&hash) else {
            return Ok(false);
        };
        let parts = Arc::new(MetaParts::of(meta));
        let entry = Entry {
            url: old.url.clone(),
            usable_until: parts.usable_until(),
            meta: parts,
            body: old.body.clone(),
        };
        self.committed.insert(hash, Arc::new(entry));
        Ok(true)
    }

    fn support_streaming_partial_write(&self) -> bool {
        true
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

/// How long past its stale windows an object with a validator is kept, so that it can be
/// revalidated with a cheap 304 instead of fetched again (nginx's `proxy_cache_revalidate`
/// relies on the same: its `inactive` time defaults to 10 minutes).
const REVALIDATION_WINDOW: Duration = Duration::from_secs(600);

/// Reads one cached object.
enum Hit {
    Complete(CompleteHit),
    Partial(FillReader),
}

struct CompleteHit {
    entry: Arc<Entry>,
    /// Next body offset to return.
    pos: usize,
    /// Exclusive end.
    end: usize,
}

#[async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        match self {
            Hit::Complete(c) => {
                if c.pos >= c.end {
                    return Ok(None);
                }
                let to = c.end.min(c.pos + READ_CHUNK);
                let chunk = c.entry.body.slice(c.pos..to);
                c.pos = to;
                Ok(Some(chunk))
            }
            Hit::Partial(p) => p.read().await,
        }
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        match self {
            Hit::Complete(c) => {
                let len = c.entry.body.len();
                if start >= len {
                    return Error::e_explain(
                        ErrorType::InternalError,
                        format!("seek start {start} beyond body length {len}"),
                    );
                }
                c.pos = start;
                c.end = end.map_or(len, |e| e.min(len));
                Ok(())
            }
            Hit::Partial(p) => {
                p.seek(start, end);
                Ok(())
            }
        }
    }

    fn get_eviction_weight(&self) -> usize {
        match self {
            Hit::Complete(c) => c.entry.body.len(),
            Hit::Partial(_) => 0,
        }
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// Writes one fill, committing it on `finish`.
struct Miss {
    store: &'static MemoryStore,
    hash: HashBinary,
    fill: Arc<Fill>,
    id: u64,
    tag: [u8; 8],
    written: usize,
    finished: bool,
}

#[async_trait]
impl HandleMiss for Miss {
    async fn write_body(&mut self, data: Bytes, eof: bool) -> Result<()> {
        if !data.is_empty() {
            let len = data.len();
            self.fill.append(data, self.written).await?;
            self.written += len;
        }
        let state = if eof {
            FillState::Done(self.written)
        } else {
            FillState::Writing(self.written)
        };
        self.fill.set_state(state);
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        self.finished = true;
        self.fill.set_state(FillState::Done(self.written));
        // A purge during the fill removed it from `filling`: then it must not be committed.
        let still_wanted = {
            let mut filling = self
                .store
                .filling
                .write()
                .unwrap_or_else(|p| p.into_inner());
            let removed = filling
                .get_mut(&self.hash)
                .and_then(|fills| fills.remove(&self.id))
                .is_some();
            if filling.get(&self.hash).is_some_and(|f| f.is_empty()) {
                filling.remove(&self.hash);
            }
            removed
        };
        // A demoted fill kept only a window of its body: it cannot be stored.
        if self.fill.is_demoted() {
            return Ok(MissFinishType::Created(0));
        }
        let body = self.fill.seal();
        let size = body.len();
        let entry = Entry {
            url: self.fill.url.clone(),
            meta: self.fill.meta.clone(),
            body,
            usable_until: self.fill.meta.usable_until(),
        };
        if still_wanted && entry.usable_until > SystemTime::now() {
            self.store.committed.insert(self.hash, Arc::new(entry));
        }
        Ok(MissFinishType::Created(size))
    }

    fn streaming_write_tag(&self) -> Option<&[u8]> {
        Some(&self.tag)
    }
}

impl Drop for Miss {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Readers following this fill must see an error, never a clean end of a short body.
        self.fill.set_state(FillState::Aborted);
        let mut filling = self
            .store
            .filling
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(fills) = filling.get_mut(&self.hash) {
            fills.remove(&self.id);
            if fills.is_empty() {
                filling.remove(&self.hash);
            }
        }
    }
}
