//! Dime's production cache storage for pingora-cache: committed objects in moka, bounded by
//! bytes with TinyLFU admission, and fills in progress that readers stream from.
//!
//! Modelled on pingora's test-only `MemCache`, with three differences that matter in
//! production: the store is bounded and evicts, hits are zero-copy slices, and a fill that is
//! abandoned makes its readers fail instead of ending cleanly on a truncated body (upstream
//! pingora issue #932). Fills in progress and their memory budget live in `fill`.

use std::any::Any;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
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

use super::kept_header::KeptHeader;
use super::key;
use super::CacheMode;

/// Fixed per-entry bookkeeping counted against the memory limit, beside body and headers.
const ENTRY_OVERHEAD: usize = 256;

/// A `CacheMeta` kept parsed. pingora's serialized form compresses the header with zstd, and
/// decoding it on every hit cost more than the rest of the hit; `CacheMeta` is not `Clone`,
/// so the parts are kept and a meta is rebuilt from them.
pub(crate) struct MetaParts {
    fresh_until: SystemTime,
    created: SystemTime,
    updated: SystemTime,
    epoch_override: Option<SystemTime>,
    stale_while_revalidate_sec: u32,
    stale_if_error_sec: u32,
    header: Arc<ResponseHeader>,
    variance: Option<HashBinary>,
    /// Approximate bytes the header holds, for the memory limit.
    header_bytes: usize,
    /// The route and policy that stored it, for the cache lookup.
    stored_by: Option<Arc<StoredBy>>,
}

/// Who stored an object: the route and cache policy in force, and the request's values of the
/// fields its Vary names. The edge puts it in the extensions of the `CacheMeta` of a response
/// to be stored; the store keeps it with the object, so the cache lookup can say where an
/// object came from.
#[derive(Debug)]
pub struct StoredBy {
    /// The route's name.
    pub route: String,
    /// The route's cache mode.
    pub policy: CacheMode,
    /// `(field, value)` for each field the response's Vary names, as the request sent them.
    pub vary: Mutex<Vec<(String, String)>>,
}

impl StoredBy {
    /// Stored by the route `route` in cache mode `policy`; the Vary fields come later.
    pub fn new(route: &str, policy: CacheMode) -> Self {
        StoredBy {
            route: route.to_string(),
            policy,
            vary: Mutex::new(Vec::new()),
        }
    }
}

/// One stored object or fill in progress, as the cache lookup shows it.
pub struct Inspected {
    /// The hash it is stored under (key and Vary variant).
    pub hash: HashBinary,
    /// Its response header and freshness.
    pub meta: CacheMeta,
    /// Body bytes; for a fill, written so far.
    pub body_bytes: usize,
    /// Bytes counted against the memory limit; 0 for a fill.
    pub weight: u32,
    /// The route and policy that stored it.
    pub stored_by: Option<Arc<StoredBy>>,
    /// Whether it is a fill in progress rather than a stored object.
    pub filling: bool,
}

impl MetaParts {
    /// The parts of `meta`.
    pub(crate) fn of(meta: &CacheMeta) -> Self {
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
            header: Arc::new(header),
            variance: meta.variance(),
            header_bytes,
            stored_by: None,
        }
    }

    /// The parts of `meta`, with who stored it (the edge puts a [`StoredBy`] in its
    /// extensions).
    fn of_stored(meta: &CacheMeta) -> Self {
        MetaParts {
            stored_by: meta.extensions().get::<Arc<StoredBy>>().cloned(),
            ..MetaParts::of(meta)
        }
    }

    fn meta(&self) -> CacheMeta {
        let mut meta = CacheMeta::new_shared(
            self.fresh_until,
            self.created,
            self.stale_while_revalidate_sec,
            self.stale_if_error_sec,
            Arc::clone(&self.header),
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
    /// The header a fresh hit sends, once a hit built it.
    hit_header: KeptHeader,
}

impl Entry {
    /// Counted with its header twice: the parsed one and the hit header built from it, about
    /// as long, which the first hit adds.
    fn weight(&self) -> u32 {
        let w = self.body.len() + 2 * self.meta.header_bytes + self.url.len() + ENTRY_OVERHEAD;
        u32::try_from(w).unwrap_or(u32::MAX)
    }
}

/// A complete stored object, as a hit that reads it from the start sees it.
pub(crate) struct StoredObject<'a> {
    /// Its response header, as stored.
    pub(crate) header: &'a ResponseHeader,
    /// Its body's length.
    pub(crate) body_len: usize,
    /// Where the header a fresh hit sends is kept.
    pub(crate) hit_header: &'a KeptHeader,
}

/// The object `hit` reads, if it is a complete stored object read from its start to its end
/// (not a fill in progress, not a range).
pub(crate) fn stored_object(hit: &HitHandler) -> Option<StoredObject<'_>> {
    match hit.as_any().downcast_ref::<Hit>()? {
        Hit::Complete(c) if c.pos == 0 && c.end == c.entry.body.len() => Some(StoredObject {
            header: &c.entry.meta.header,
            body_len: c.end,
            hit_header: &c.entry.hit_header,
        }),
        _ => None,
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
pub(crate) const BACKGROUND_FILL_TAG: &str = "background-fill";

/// The moka-backed cache store.
pub struct MemoryStore {
    committed: Cache<HashBinary, Arc<Entry>>,
    filling: RwLock<HashMap<HashBinary, HashMap<u64, Arc<Fill>>>>,
    next_fill: AtomicU64,
    budget: Arc<FillBudget>,
    index: Arc<UrlIndex>,
}

/// Which stored objects belong to which URL, so that invalidating one URL costs the number of
/// its variants, never a scan of the cache (RFC 9111 §4.4 invalidation runs on every
/// successful unsafe request).
///
/// Grouped by the key text without its query, so one lookup finds a URL's Vary variants (same
/// key text) and its kept-query siblings (what the purge API's `url=` removes). A slot is
/// written before its entry is stored, and only moka's removal notice takes it out; moka may
/// deliver that notice after a newer entry took the same hash, so each slot names the entry it
/// was written for (a `Weak`, whose allocation cannot be reused while the slot holds it).
struct UrlIndex {
    hasher: RandomState,
    by_path: Mutex<HashMap<u64, Variants>>,
}

/// The stored variants of one path: hash → (the entry the slot was written for, its key text).
type Variants = HashMap<HashBinary, (Weak<Entry>, Arc<str>)>;

impl UrlIndex {
    fn new() -> Self {
        UrlIndex {
            hasher: RandomState::new(),
            by_path: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, url: &str) -> u64 {
        self.hasher.hash_one(key::without_query(url))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Variants>> {
        self.by_path.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `entry`, about to be stored under `hash`.
    fn add(&self, hash: HashBinary, entry: &Arc<Entry>) {
        let slot = self.slot(&entry.url);
        self.lock()
            .entry(slot)
            .or_default()
            .insert(hash, (Arc::downgrade(entry), entry.url.clone()));
    }

    /// Forgets `entry`, which moka removed from `hash` for `cause`, unless another entry may
    /// be stored there.
    fn forget(&self, hash: &HashBinary, entry: &Arc<Entry>, cause: RemovalCause) {
        // Replaced: the hash holds a newer entry, whose slot was written before it was stored.
        if cause == RemovalCause::Replaced {
            return;
        }
        let slot = self.slot(&entry.url);
        let mut by_path = self.lock();
        let Some(variants) = by_path.get_mut(&slot) else {
            return;
        };
        // The slot is this entry's, or that of one already gone: two fills of one key that
        // commit at once can store the older after the newer wrote its slot, and then the
        // entry removed now is the last one written before that slot.
        let ours = variants.get(hash).is_some_and(|(w, _)| {
            std::ptr::eq(w.as_ptr(), Arc::as_ptr(entry)) || w.strong_count() == 0
        });
        if ours {
            variants.remove(hash);
            if variants.is_empty() {
                by_path.remove(&slot);
            }
        }
    }

    /// The hashes of the stored entries whose key text, without its query, is `path` and that
    /// `matches` accepts.
    fn find(&self, path: &str, matches: impl Fn(&str) -> bool) -> Vec<HashBinary> {
        let by_path = self.lock();
        let Some(variants) = by_path.get(&self.hasher.hash_one(path)) else {
            return Vec::new();
        };
        variants
            .iter()
            // Two paths may share a slot: the key text decides.
            .filter(|(_, (_, url))| key::without_query(url) == path && matches(url))
            .map(|(hash, _)| *hash)
            .collect()
    }

    /// The hashes and key texts of the entries recorded under `path` (key text without query).
    fn variants(&self, path: &str) -> Vec<(HashBinary, Arc<str>)> {
        let by_path = self.lock();
        let Some(variants) = by_path.get(&self.hasher.hash_one(path)) else {
            return Vec::new();
        };
        variants
            .iter()
            .filter(|(_, (_, url))| key::without_query(url) == path)
            .map(|(hash, (_, url))| (*hash, url.clone()))
            .collect()
    }

    /// How many entries it holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().values().map(HashMap::len).sum()
    }
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
        let index = Arc::new(UrlIndex::new());
        let listener_index = index.clone();
        let committed = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_k: &HashBinary, v: &Arc<Entry>| v.weight())
            .expire_after(UntilUsable)
            // Every removal (evicted, expired, replaced, invalidated) passes here, so the
            // index never outlives what it points at.
            .eviction_listener(move |k: Arc<HashBinary>, v: Arc<Entry>, cause| {
                if cause == RemovalCause::Size {
                    counters.evictions.inc();
                }
                listener_index.forget(&k, &v, cause);
            })
            .build();
        MemoryStore {
            committed,
            filling: RwLock::new(HashMap::new()),
            next_fill: AtomicU64::new(1),
            budget,
            index,
        }
    }

    /// A store of `max_bytes`, with as much for fills and counters of its own, alive until
    /// exit (pingora's storage API wants `'static`).
    #[cfg(test)]
    pub(crate) fn leaked_for_tests(max_bytes: u64) -> &'static MemoryStore {
        let budget = FillBudget::new(
            max_bytes,
            prometheus::IntGauge::new("fill", "fill").unwrap(),
            IntCounter::new("demoted", "demoted").unwrap(),
        );
        let evictions = IntCounter::new("evictions", "evictions").unwrap();
        Box::leak(Box::new(MemoryStore::new(
            max_bytes,
            StoreCounters { evictions },
            Arc::new(budget),
        )))
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

    /// Whether a lookup of `key` would find something now: a fill a new reader can join from
    /// its first byte, or a stored object.
    pub fn findable(&self, key: &CacheKey) -> bool {
        let hash = key.combined_bin();
        self.fill_for(&hash, None).is_some() || self.committed.contains_key(&hash)
    }

    /// How many responses are stored under exactly the key text `url`: its `Vary` variants
    /// (filling ones are not counted until stored).
    pub fn variants_of(&self, url: &str) -> usize {
        self.index
            .variants(key::without_query(url))
            .iter()
            .filter(|(_, stored)| **stored == *url)
            .count()
    }

    /// Whether the newest fill for `key` had viewers and all of them left.
    pub fn fill_abandoned(&self, key: &CacheKey) -> bool {
        self.fill_for(&key.combined_bin(), None)
            .is_some_and(|f| f.abandoned())
    }

    /// Stores a committed object under `hash`, indexed by its URL.
    fn commit(&self, hash: HashBinary, entry: Entry) {
        let entry = Arc::new(entry);
        // Indexed first: were moka to drop it at once, its removal would find the slot.
        self.index.add(hash, &entry);
        self.committed.insert(hash, entry);
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
    ///
    /// A scan of the whole cache, for operator purges by prefix. Each object is removed by its
    /// key: moka's `invalidate_entries_if` would keep the predicate until a sweep, and every
    /// lookup meanwhile pays for checking it.
    pub fn purge_where(&self, matches: impl Fn(&str) -> bool) -> usize {
        let keys: Vec<Arc<HashBinary>> = self
            .committed
            .iter()
            .filter(|(_, e)| matches(&e.url))
            .map(|(k, _)| k)
            .collect();
        let found = self.remove_committed(keys.iter().map(|k| **k));
        self.abandon_fills(matches);
        found
    }

    /// Removes what `target` names, and abandons its fills in progress: the purge API, and the
    /// invalidation of a URL after an unsafe request (RFC 9111 §4.4). A target with one path
    /// costs the variants of that path, not the size of the cache. Returns the number of
    /// committed objects removed.
    pub fn remove(&self, target: &key::PurgeTarget) -> usize {
        match (target, target.path()) {
            (key::PurgeTarget::All, _) => self.purge_all(),
            (_, Some(path)) => {
                let hashes = self.index.find(path, |u| target.matches(u));
                let found = self.remove_committed(hashes);
                self.abandon_fills(|u| target.matches(u));
                found
            }
            (_, None) => self.purge_where(|u| target.matches(u)),
        }
    }

    /// The stored objects `target` names: how many, and the first `limit` key texts. What
    /// [`MemoryStore::remove`] would remove, for a dry run; reading does not count as a use.
    pub fn find(&self, target: &key::PurgeTarget, limit: usize) -> (usize, Vec<String>) {
        let Some(path) = target.path() else {
            return self.find_where(|u| target.matches(u), limit);
        };
        let mut count = 0;
        let mut keys = Vec::new();
        for (hash, url) in self.index.variants(path) {
            // The index is written before the store: only what is stored counts.
            if target.matches(&url) && self.committed.contains_key(&hash) {
                count += 1;
                if keys.len() < limit {
                    keys.push(url.to_string());
                }
            }
        }
        (count, keys)
    }

    /// The stored objects whose key text `matches`: how many, and the first `limit` key texts.
    /// What `purge_where` would remove; reading does not count as a use of them.
    pub fn find_where(&self, matches: impl Fn(&str) -> bool, limit: usize) -> (usize, Vec<String>) {
        let mut count = 0;
        let mut keys = Vec::new();
        for (_, e) in self.committed.iter().filter(|(_, e)| matches(&e.url)) {
            count += 1;
            if keys.len() < limit {
                keys.push(e.url.to_string());
            }
        }
        (count, keys)
    }

    fn remove_committed(&self, hashes: impl IntoIterator<Item = HashBinary>) -> usize {
        // `remove` says whether it was still there; the listener updates the index.
        hashes
            .into_iter()
            .filter(|h| self.committed.remove(h).is_some())
            .count()
    }

    /// Drops the fills whose key text matches: they are not committed when they finish.
    fn abandon_fills(&self, matches: impl Fn(&str) -> bool) {
        let mut filling = self.filling.write().unwrap_or_else(|p| p.into_inner());
        if filling.is_empty() {
            return;
        }
        filling.retain(|_, fills| {
            fills.retain(|_, f| !matches(&f.url));
            !fills.is_empty()
        });
    }

    /// Fills in progress now.
    pub fn fills_in_progress(&self) -> usize {
        self.filling
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(HashMap::len)
            .sum()
    }

    /// Every stored object and fill in progress whose key text is `key` (one per Vary
    /// variant), by key lookup.
    pub fn inspect(&self, key: &str) -> Vec<Inspected> {
        let mut found: Vec<Inspected> = self
            .index
            .find(key::without_query(key), |u| u == key)
            .into_iter()
            .filter_map(|hash| {
                let entry = self.committed.get(&hash)?;
                Some(Inspected {
                    hash,
                    meta: entry.meta.meta(),
                    body_bytes: entry.body.len(),
                    weight: entry.weight(),
                    stored_by: entry.meta.stored_by.clone(),
                    filling: false,
                })
            })
            .collect();
        let filling = self.filling.read().unwrap_or_else(|p| p.into_inner());
        for (hash, fills) in filling.iter() {
            for fill in fills.values().filter(|f| &*f.url == key) {
                found.push(Inspected {
                    hash: *hash,
                    meta: fill.meta.meta(),
                    body_bytes: fill.written(),
                    weight: 0,
                    stored_by: fill.meta.stored_by.clone(),
                    filling: true,
                });
            }
        }
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
            Arc::new(MetaParts::of_stored(meta)),
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
        let mut parts = MetaParts::of_stored(meta);
        // A refresh by a request without a route keeps where the object came from.
        if parts.stored_by.is_none() {
            parts.stored_by = old.meta.stored_by.clone();
        }
        let parts = Arc::new(parts);
        let entry = Entry {
            url: old.url.clone(),
            usable_until: parts.usable_until(),
            meta: parts,
            body: old.body.clone(),
            hit_header: KeptHeader::default(),
        };
        self.commit(hash, entry);
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
        // A demoted fill kept only a window of its body: it cannot be stored.
        let stored = (!self.fill.is_demoted()).then(|| {
            let body = self.fill.seal();
            Entry {
                url: self.fill.url.clone(),
                meta: self.fill.meta.clone(),
                body,
                usable_until: self.fill.meta.usable_until(),
                hit_header: KeptHeader::default(),
            }
        });
        let size = stored.as_ref().map_or(0, |e| e.body.len());
        let mut filling = self
            .store
            .filling
            .write()
            .unwrap_or_else(|p| p.into_inner());
        // A purge during the fill removed it from `filling`: then it must not be committed.
        let still_wanted = filling
            .get(&self.hash)
            .is_some_and(|fills| fills.contains_key(&self.id));
        if let Some(entry) = stored {
            if still_wanted && entry.usable_until > SystemTime::now() {
                // Committed before the fill leaves `filling`, under its lock: a lookup finds
                // one or the other, never neither (which would send it to the origin again).
                self.store.commit(self.hash, entry);
            }
        }
        if let Some(fills) = filling.get_mut(&self.hash) {
            fills.remove(&self.id);
            if fills.is_empty() {
                filling.remove(&self.hash);
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn store(max_bytes: u64) -> &'static MemoryStore {
        MemoryStore::leaked_for_tests(max_bytes)
    }

    fn key(url: &str, variant: Option<u8>) -> CacheKey {
        let mut k = CacheKey::new(url, "");
        if let Some(v) = variant {
            k.set_variance_key([v; 16]);
        }
        k
    }

    /// Fills and commits `key` with a fresh 200 of `body_len` bytes, through the miss handler.
    async fn fill(store: &'static MemoryStore, key: &CacheKey, body_len: usize) {
        let now = SystemTime::now();
        let header = ResponseHeader::build(200, None).unwrap();
        let mut meta = CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header);
        if let Some(v) = key.variance_bin() {
            meta.set_variance(v);
        }
        let trace = pingora_cache::trace::Span::inactive().handle();
        let mut miss = store.get_miss_handler(key, &meta, &trace).await.unwrap();
        miss.write_body(Bytes::from(vec![b'x'; body_len]), true)
            .await
            .unwrap();
        miss.finish().await.unwrap();
    }

    async fn cached(store: &'static MemoryStore, key: &CacheKey) -> bool {
        let trace = pingora_cache::trace::Span::inactive().handle();
        store.lookup(key, &trace).await.unwrap().is_some()
    }

    /// The index holds exactly the stored objects.
    fn consistent(store: &MemoryStore) -> bool {
        store.committed.run_pending_tasks();
        store.index.len() as u64 == store.committed.entry_count()
    }

    #[tokio::test]
    async fn invalidating_a_url_removes_its_vary_variants_and_nothing_else() {
        let s = store(1 << 20);
        let a_gzip = key("h/a", Some(1));
        let a_br = key("h/a", Some(2));
        let a_msn = key("h/a?_HLS_msn=3", None);
        let b = key("h/b", None);
        for k in [&a_gzip, &a_br, &a_msn, &b] {
            fill(s, k, 10).await;
        }
        assert_eq!(s.object_count(), 4);
        assert!(consistent(s));

        assert_eq!(
            s.remove(&key::PurgeTarget::Key("h/a".into())),
            2,
            "both Vary variants"
        );
        assert!(!cached(s, &a_gzip).await && !cached(s, &a_br).await);
        assert!(
            cached(s, &a_msn).await,
            "another kept-query URL is another resource"
        );
        assert!(cached(s, &b).await);
        assert_eq!(
            s.remove(&key::PurgeTarget::Key("h/a".into())),
            0,
            "nothing left to invalidate"
        );
        assert!(consistent(s));

        assert_eq!(
            s.remove(&key::PurgeTarget::Url("h/a".into())),
            1,
            "the purge API's url= takes every query"
        );
        assert!(!cached(s, &a_msn).await);
        assert!(consistent(s));
        assert_eq!(s.object_count(), 1);
    }

    #[tokio::test]
    async fn the_index_follows_replacement_removal_eviction_and_purge_all() {
        let s = store(1 << 20);
        let a = key("h/a", None);
        fill(s, &a, 10).await;
        // A second fill of the same key replaces the first: the index keeps the new one.
        fill(s, &a, 20).await;
        let now = SystemTime::now();
        let header = ResponseHeader::build(200, None).unwrap();
        let meta = CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header);
        let trace = pingora_cache::trace::Span::inactive().handle();
        assert!(s.update_meta(&a, &meta, &trace).await.unwrap());
        assert!(consistent(s));
        assert_eq!(
            s.remove(&key::PurgeTarget::Key("h/a".into())),
            1,
            "the replaced entry is still found"
        );
        assert!(consistent(s));

        // pingora's own purge removes by hash; the index follows.
        fill(s, &a, 10).await;
        let outcome = s
            .purge(
                PurgeTarget::Active(&a.to_compact()),
                PurgeType::Invalidation,
                &trace,
            )
            .await
            .unwrap();
        assert!(matches!(outcome, PurgeOutcome::Purged(_)));
        assert!(consistent(s));
        assert_eq!(s.index.len(), 0);

        // Evictions: a store of about 10 objects receives 200.
        let small = store(10 * 2048);
        for i in 0..200 {
            fill(small, &key(&format!("h/e{i}"), None), 1024).await;
        }
        assert!(small.object_count() < 200, "some were evicted");
        assert!(consistent(small));

        small.purge_all();
        assert!(consistent(small));
        assert_eq!(small.index.len(), 0);
    }

    #[test]
    fn two_commits_of_one_key_racing_leave_the_stored_one_findable() {
        // Each commit writes its slot, then stores: here the older entry is stored last.
        let s = store(1 << 20);
        let now = SystemTime::now();
        let header = ResponseHeader::build(200, None).unwrap();
        let meta = CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header);
        let entry = || {
            let meta = Arc::new(MetaParts::of(&meta));
            Arc::new(Entry {
                url: "h/a".into(),
                usable_until: meta.usable_until(),
                meta,
                body: Bytes::from_static(b"x"),
                hit_header: KeptHeader::default(),
            })
        };
        let hash = key("h/a", None).combined_bin();
        let (older, newer) = (entry(), entry());
        s.index.add(hash, &older);
        s.index.add(hash, &newer);
        s.committed.insert(hash, newer);
        s.committed.insert(hash, older);
        assert_eq!(s.object_count(), 1);
        assert_eq!(s.remove(&key::PurgeTarget::Key("h/a".into())), 1);
        assert!(consistent(s));
        assert_eq!(s.index.len(), 0);
    }

    #[tokio::test]
    async fn a_fill_in_progress_of_an_invalidated_url_is_not_committed() {
        let s = store(1 << 20);
        let a = key("h/a", None);
        let now = SystemTime::now();
        let header = ResponseHeader::build(200, None).unwrap();
        let meta = CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header);
        let trace = pingora_cache::trace::Span::inactive().handle();
        let mut miss = s.get_miss_handler(&a, &meta, &trace).await.unwrap();
        miss.write_body(Bytes::from_static(b"old"), false)
            .await
            .unwrap();
        s.remove(&key::PurgeTarget::Key("h/a".into()));
        miss.write_body(Bytes::new(), true).await.unwrap();
        miss.finish().await.unwrap();
        assert!(!cached(s, &a).await);
        assert!(consistent(s));
    }

    #[test]
    fn a_prefix_purge_removes_by_key_and_keeps_the_rest() {
        let s = store(1 << 20);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            for u in ["h/live/a", "h/live/b", "h/vod/c"] {
                fill(s, &key(u, None), 10).await;
            }
        });
        assert_eq!(s.purge_where(|u| u.starts_with("h/live/")), 2);
        assert_eq!(s.object_count(), 1);
        assert!(consistent(s));
    }

    #[tokio::test]
    async fn finding_what_a_purge_would_remove_removes_nothing() {
        let s = store(1 << 20);
        for k in [
            key("h/a", Some(1)),
            key("h/a", Some(2)),
            key("h/a?_HLS_msn=3", None),
            key("h/b", None),
        ] {
            fill(s, &k, 10).await;
        }
        let (n, mut keys) = s.find(&key::PurgeTarget::Url("h/a".into()), 10);
        keys.sort();
        assert_eq!(
            (n, keys),
            (3, vec!["h/a".into(), "h/a".into(), "h/a?_HLS_msn=3".into()])
        );
        // The count is whole; the list stops at its limit.
        assert_eq!(s.find_where(|u| u.starts_with("h/"), 1).0, 4);
        assert_eq!(s.find_where(|u| u.starts_with("h/"), 1).1.len(), 1);
        assert_eq!(
            s.find(&key::PurgeTarget::Url("h/c".into()), 10),
            (0, vec![])
        );
        assert_eq!(s.object_count(), 4);
        assert_eq!(
            s.remove(&key::PurgeTarget::Url("h/a".into())),
            3,
            "what find_path found"
        );
    }

    // Through pingora's `Storage`, `HandleMiss` and `HandleHit` only, the way pingora-cache's
    // own `memory.rs` tests its `MemCache`: what the proxy sees of the store.

    fn span() -> SpanHandle {
        pingora_cache::trace::Span::inactive().handle()
    }

    /// A fresh 200 carrying `x-test: 1`, for a minute.
    fn meta() -> CacheMeta {
        let now = SystemTime::now();
        let mut header = ResponseHeader::build(200, None).unwrap();
        header.insert_header("x-test", "1").unwrap();
        CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header)
    }

    /// Every remaining piece of `hit`'s body, concatenated.
    async fn read_all(hit: &mut HitHandler) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        while let Some(chunk) = hit.read_body().await? {
            assert!(chunk.len() <= READ_CHUNK, "a chunk of {}", chunk.len());
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    async fn hit(s: &'static MemoryStore, k: &CacheKey) -> (CacheMeta, HitHandler) {
        s.lookup(k, &span()).await.unwrap().expect("a hit")
    }

    /// `len` bytes that differ at every offset a range could start at.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn storage_write_then_read() {
        // Room (and fill budget) for the body of two read chunks below.
        let s = store(4 * READ_CHUNK as u64);
        let k = key("h/a", None);
        assert!(s.lookup(&k, &span()).await.unwrap().is_none());
        let m = meta();
        let mut miss = s.get_miss_handler(&k, &m, &span()).await.unwrap();
        miss.write_body(Bytes::from_static(b"test1"), false)
            .await
            .unwrap();
        miss.write_body(Bytes::from_static(b"test2"), false)
            .await
            .unwrap();
        assert!(matches!(
            miss.finish().await.unwrap(),
            MissFinishType::Created(10)
        ));
        let (m2, mut h) = hit(s, &k).await;
        assert_eq!(m2.fresh_until(), m.fresh_until());
        assert_eq!(m2.created(), m.created());
        assert_eq!(m2.headers().get("x-test").unwrap(), "1");
        assert_eq!(read_all(&mut h).await.unwrap(), b"test1test2");
        assert!(
            h.read_body().await.unwrap().is_none(),
            "ends, and stays ended"
        );

        // A body larger than a read chunk comes back whole, in chunks.
        let big = key("h/big", None);
        let body = pattern(READ_CHUNK * 2 + 17);
        let mut miss = s.get_miss_handler(&big, &m, &span()).await.unwrap();
        for piece in body.chunks(100_000) {
            miss.write_body(Bytes::copy_from_slice(piece), false)
                .await
                .unwrap();
        }
        miss.write_body(Bytes::new(), true).await.unwrap();
        miss.finish().await.unwrap();
        let (_, mut h) = hit(s, &big).await;
        assert_eq!(h.get_eviction_weight(), body.len());
        assert_eq!(read_all(&mut h).await.unwrap(), body);
    }

    #[tokio::test]
    async fn storage_read_ranges_of_a_stored_object_and_of_a_fill() {
        let s = store(1 << 20);
        let k = key("h/r", None);
        let body = pattern(1000);
        fill_with(s, &k, &body).await;
        let (_, mut h) = hit(s, &k).await;
        assert!(h.can_seek());
        assert!(h.seek(1000, None).is_err(), "start at the length");
        assert!(h.seek(10_000, None).is_err(), "start beyond it");
        for (start, end) in [
            (0, Some(1)),
            (100, Some(200)),
            (999, None),
            (900, None),
            (5, Some(5000)),
        ] {
            h.seek(start, end).unwrap();
            let want = &body[start..end.unwrap_or(body.len()).min(body.len())];
            assert_eq!(read_all(&mut h).await.unwrap(), want, "{start}..{end:?}");
        }

        // A reader of a fill in progress seeks too, and waits for the bytes of its range.
        let f = key("h/f", None);
        let mut miss = s.get_miss_handler(&f, &meta(), &span()).await.unwrap();
        miss.write_body(Bytes::copy_from_slice(&body[..300]), false)
            .await
            .unwrap();
        let (_, mut h) = hit(s, &f).await;
        assert!(h.can_seek());
        h.seek(250, Some(400)).unwrap();
        assert_eq!(h.read_body().await.unwrap().unwrap(), &body[250..300]);
        assert!(h.read_body().now_or_never().is_none(), "waits for 300..400");
        miss.write_body(Bytes::copy_from_slice(&body[300..]), true)
            .await
            .unwrap();
        assert_eq!(read_all(&mut h).await.unwrap(), &body[300..400]);
        miss.finish().await.unwrap();
    }

    #[tokio::test]
    async fn storage_write_while_read() {
        let s = store(1 << 20);
        let k = key("h/w", None);
        let mut miss = s.get_miss_handler(&k, &meta(), &span()).await.unwrap();
        let tag = miss.streaming_write_tag().unwrap().to_vec();

        // A reader before any body, and the writer's own reader by its tag.
        let (_, mut first) = hit(s, &k).await;
        let (_, mut own) = s
            .lookup_streaming_write(&k, Some(&tag), &span())
            .await
            .unwrap()
            .expect("the writer's own fill");
        assert!(first.read_body().now_or_never().is_none(), "no body yet");
        miss.write_body(Bytes::from_static(b"test1"), false)
            .await
            .unwrap();
        assert_eq!(first.read_body().await.unwrap().unwrap(), "test1");
        assert!(first.read_body().now_or_never().is_none());
        miss.write_body(Bytes::from_static(b"test2"), false)
            .await
            .unwrap();
        assert_eq!(first.read_body().await.unwrap().unwrap(), "test2");

        // A reader arriving late starts from the first byte.
        let (_, mut second) = hit(s, &k).await;
        let mut early = Vec::new();
        while let Some(Some(c)) = second.read_body().now_or_never().map(|r| r.unwrap()) {
            early.extend_from_slice(&c);
        }
        assert_eq!(early, b"test1test2");
        // An unknown tag is no fill.
        let other = 0u64.to_be_bytes();
        assert!(s
            .lookup_streaming_write(&k, Some(&other), &span())
            .await
            .unwrap()
            .is_none());

        miss.write_body(Bytes::new(), true).await.unwrap();
        assert!(miss.finish().await.is_ok());
        assert!(first.read_body().await.unwrap().is_none());
        assert!(second.read_body().await.unwrap().is_none());
        assert_eq!(read_all(&mut own).await.unwrap(), b"test1test2");
        // Committed: a new lookup is a complete hit.
        let (_, mut h) = hit(s, &k).await;
        assert_eq!(read_all(&mut h).await.unwrap(), b"test1test2");
    }

    #[tokio::test]
    async fn storage_an_aborted_write_fails_its_readers_and_stores_nothing() {
        let s = store(1 << 20);
        let k = key("h/x", None);
        let mut miss = s.get_miss_handler(&k, &meta(), &span()).await.unwrap();
        miss.write_body(Bytes::from_static(b"abc"), false)
            .await
            .unwrap();
        let (_, mut caught_up) = hit(s, &k).await;
        assert_eq!(caught_up.read_body().await.unwrap().unwrap(), "abc");
        // One reader is waiting for more when the writer goes away, one has not started.
        let waiting = tokio::spawn(async move { caught_up.read_body().await });
        let (_, mut not_started) = hit(s, &k).await;
        tokio::task::yield_now().await;
        drop(miss);
        // Upstream #932: an error, never a clean end of a truncated body.
        assert!(waiting.await.unwrap().is_err());
        assert!(read_all(&mut not_started).await.is_err());
        assert!(s.lookup(&k, &span()).await.unwrap().is_none());
        assert!(!s.holds(&k));
        assert_eq!(s.fills_in_progress(), 0);
    }

    #[tokio::test]
    async fn storage_evicts_down_to_its_size_limit() {
        let evictions = IntCounter::new("evictions", "evictions").unwrap();
        let max = 64 * 1024;
        let s: &'static MemoryStore = Box::leak(Box::new(MemoryStore::new(
            max,
            StoreCounters {
                evictions: evictions.clone(),
            },
            Arc::new(FillBudget::new(
                1 << 20,
                prometheus::IntGauge::new("fill", "fill").unwrap(),
                IntCounter::new("demoted", "demoted").unwrap(),
            )),
        )));
        let keys: Vec<CacheKey> = (0..64).map(|i| key(&format!("h/e{i}"), None)).collect();
        for k in &keys {
            fill(s, k, 4096).await;
            s.committed.run_pending_tasks();
            assert!(s.size_bytes() <= max, "{} > {max}", s.size_bytes());
        }
        let mut kept = 0;
        for k in &keys {
            if let Some((_, mut h)) = s.lookup(k, &span()).await.unwrap() {
                assert_eq!(read_all(&mut h).await.unwrap().len(), 4096);
                kept += 1;
            }
        }
        assert!(
            kept > 0 && kept < keys.len(),
            "kept {kept} of {}",
            keys.len()
        );
        assert_eq!(s.object_count(), kept as u64);
        assert_eq!(evictions.get(), (keys.len() - kept) as u64);

        // An object larger than the whole store is served to its filler but never kept.
        let huge = key("h/huge", None);
        fill(s, &huge, 100 * 1024).await;
        s.committed.run_pending_tasks();
        assert!(s.lookup(&huge, &span()).await.unwrap().is_none());
        assert!(s.size_bytes() <= max);
    }

    #[tokio::test]
    async fn storage_purge_removes_stored_objects_and_fills_but_not_what_is_being_read() {
        let s = store(1 << 20);
        let k = key("h/p", None);
        let trace = span();
        let purge = |k: &CacheKey| {
            let compact = k.to_compact();
            async move {
                s.purge(
                    PurgeTarget::Active(&compact),
                    PurgeType::Invalidation,
                    &span(),
                )
                .await
                .unwrap()
            }
        };
        assert!(matches!(purge(&k).await, PurgeOutcome::NotFound));

        // A stored object: gone for new lookups; a hit already reading keeps its whole body.
        fill_with(s, &k, b"complete").await;
        let (_, mut reading) = hit(s, &k).await;
        assert!(matches!(purge(&k).await, PurgeOutcome::Purged(_)));
        assert!(s.lookup(&k, &trace).await.unwrap().is_none());
        assert_eq!(read_all(&mut reading).await.unwrap(), b"complete");
        assert!(matches!(purge(&k).await, PurgeOutcome::NotFound));

        // A fill in progress: new lookups miss, its reader still gets the whole response, and
        // the fill is not stored when it finishes.
        let mut miss = s.get_miss_handler(&k, &meta(), &trace).await.unwrap();
        miss.write_body(Bytes::from_static(b"part"), false)
            .await
            .unwrap();
        let (_, mut reader) = hit(s, &k).await;
        assert!(matches!(purge(&k).await, PurgeOutcome::Purged(_)));
        assert!(s.lookup(&k, &trace).await.unwrap().is_none());
        miss.write_body(Bytes::from_static(b"ial"), true)
            .await
            .unwrap();
        miss.finish().await.unwrap();
        assert_eq!(read_all(&mut reader).await.unwrap(), b"partial");
        assert!(s.lookup(&k, &trace).await.unwrap().is_none());
        assert!(consistent(s));
    }

    /// Fills and commits `key` with `body`, through the miss handler.
    async fn fill_with(s: &'static MemoryStore, k: &CacheKey, body: &[u8]) {
        let mut miss = s.get_miss_handler(k, &meta(), &span()).await.unwrap();
        miss.write_body(Bytes::copy_from_slice(body), true)
            .await
            .unwrap();
        miss.finish().await.unwrap();
    }
}
