//! Fills in progress: the body an origin is sending into the cache, the viewers reading it at
//! their own pace, and the memory budget every fill draws from.
//!
//! A fill keeps its whole body while the fill budget allows, so late viewers can start from the
//! first byte and the object can be committed. When the budget is spent, the fill is
//! *demoted*: it will not be stored, keeps only a bounded window ahead of its slowest viewer,
//! and the writer (and so the origin) waits for that viewer. Memory then stays bounded by the
//! budget plus one window per demoted fill, however many slow viewers there are.

use std::collections::{HashMap, VecDeque};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use pingora_error::{Error, ErrorType, Result};
use prometheus::{IntCounter, IntGauge};
use tokio::sync::{watch, Notify};

use super::store::MetaParts;

/// How far a demoted fill may run ahead of its slowest viewer: the per-viewer buffer.
pub(crate) const DEMOTED_WINDOW: usize = 1 << 20;

/// How long a demoted fill waits for a viewer that reads nothing before it gives up.
pub(crate) const DEMOTED_STALL_LIMIT: Duration = Duration::from_secs(30);

/// At most this much body is handed out per read, so a write to a slow viewer makes
/// progress within the send timeout and no reader pins a whole object in one write.
///
/// Each read is one write to the viewer's socket and one wake-up of its reader, so the size
/// sets what a segment hit costs per byte: fewer, larger writes cost less, up to the viewer's
/// receive window; past it the rest goes out a piece per window update and costs more again.
/// 512 KiB stays well inside the window seen on loopback (benches/analysis.md, "Segments and
/// the read size").
pub(crate) const READ_CHUNK: usize = 512 * 1024;

/// The memory every fill in progress draws from.
pub struct FillBudget {
    limit: u64,
    used: AtomicU64,
    used_gauge: IntGauge,
    demoted: IntCounter,
}

impl FillBudget {
    /// A budget of `limit` bytes, reported as `used_gauge`; demotions count in `demoted`.
    pub fn new(limit: u64, used_gauge: IntGauge, demoted: IntCounter) -> Self {
        FillBudget {
            limit,
            used: AtomicU64::new(0),
            used_gauge,
            demoted,
        }
    }

    /// Bytes held by fills now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Takes `n` bytes if they fit.
    fn try_take(&self, n: u64) -> bool {
        let taken = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u + n <= self.limit).then_some(u + n)
            })
            .is_ok();
        if taken {
            self.used_gauge.add(n as i64);
        }
        taken
    }

    /// Takes `n` bytes whether they fit or not (a demoted fill's window is bounded by itself).
    fn force_take(&self, n: u64) {
        self.used.fetch_add(n, Ordering::AcqRel);
        self.used_gauge.add(n as i64);
    }

    fn give(&self, n: u64) {
        if n > 0 {
            self.used.fetch_sub(n, Ordering::AcqRel);
            self.used_gauge.sub(n as i64);
        }
    }
}

/// How far a fill has got, as its readers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FillState {
    /// Bytes written so far; more may come.
    Writing(usize),
    /// The whole body is written.
    Done(usize),
    /// The writer gave up: what was written must not be served as complete.
    Aborted,
}

/// The bytes a fill holds: `chunks` start at body offset `base` (above 0 once a demoted fill
/// dropped what every viewer had read).
#[derive(Default)]
struct Held {
    chunks: VecDeque<Bytes>,
    base: usize,
    bytes: usize,
}

/// Who reads a fill, and where each one is.
#[derive(Default)]
struct Readers {
    next: u64,
    /// Reader id → (body offset, whether it is a viewer).
    at: HashMap<u64, (usize, bool)>,
    viewers_ever: bool,
}

/// A fill in progress.
pub(crate) struct Fill {
    /// The key text, for purges that match by URL.
    pub url: Arc<str>,
    /// The stored response header and freshness.
    pub meta: Arc<MetaParts>,
    /// Whether a background fill task writes it (its own reader is then not a viewer).
    pub background: bool,
    held: RwLock<Held>,
    state: watch::Sender<FillState>,
    readers: Mutex<Readers>,
    progress: Notify,
    demoted: AtomicBool,
    budget: Arc<FillBudget>,
}

impl Fill {
    /// An empty fill drawing on `budget`.
    pub(crate) fn new(
        url: Arc<str>,
        meta: Arc<MetaParts>,
        background: bool,
        budget: Arc<FillBudget>,
    ) -> Self {
        let (state, _) = watch::channel(FillState::Writing(0));
        Fill {
            url,
            meta,
            background,
            held: RwLock::new(Held::default()),
            state,
            readers: Mutex::new(Readers::default()),
            progress: Notify::new(),
            demoted: AtomicBool::new(false),
            budget,
        }
    }

    /// Whether the fill gave up on being stored.
    pub(crate) fn is_demoted(&self) -> bool {
        self.demoted.load(Ordering::Acquire)
    }

    /// Whether a new reader can still read it from the first byte.
    pub(crate) fn joinable(&self) -> bool {
        self.held.read().unwrap_or_else(|p| p.into_inner()).base == 0
    }

    /// Whether viewers came and all of them left.
    pub(crate) fn abandoned(&self) -> bool {
        let r = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        r.viewers_ever && !r.at.values().any(|(_, viewer)| *viewer)
    }

    /// Body bytes written so far.
    pub(crate) fn written(&self) -> usize {
        match *self.state.borrow() {
            FillState::Writing(n) | FillState::Done(n) => n,
            FillState::Aborted => 0,
        }
    }

    /// Sets the state readers see.
    pub(crate) fn set_state(&self, state: FillState) {
        self.state.send_replace(state);
    }

    /// Appends `data` once the budget (or, demoted, the slowest viewer) allows it.
    pub(crate) async fn append(&self, data: Bytes, written_before: usize) -> Result<()> {
        let len = data.len();
        if !self.is_demoted() && !self.budget.try_take(len as u64) {
            // The budget is spent: this object will not be stored, so only its viewers'
            // window is kept from now on.
            self.demoted.store(true, Ordering::Release);
            self.budget.demoted.inc();
            tracing::debug!(url = %self.url, "fill demoted: the fill budget is spent");
        }
        if self.is_demoted() {
            self.wait_for_room(written_before + len).await?;
            self.budget.force_take(len as u64);
        }
        let mut held = self.held.write().unwrap_or_else(|p| p.into_inner());
        held.bytes += len;
        held.chunks.push_back(data);
        Ok(())
    }

    /// Waits until the body up to `end` fits in the window ahead of the slowest viewer.
    async fn wait_for_room(&self, end: usize) -> Result<()> {
        let deadline = tokio::time::Instant::now() + DEMOTED_STALL_LIMIT;
        loop {
            let mut notified = pin!(self.progress.notified());
            notified.as_mut().enable();
            let (slowest, viewers_ever) = {
                let r = self.readers.lock().unwrap_or_else(|p| p.into_inner());
                let slowest = r.at.values().filter(|(_, v)| *v).map(|(at, _)| *at).min();
                (slowest, r.viewers_ever)
            };
            let from = match (slowest, viewers_ever) {
                (Some(at), _) => {
                    self.drop_below(at);
                    at
                }
                (None, true) => {
                    return Error::e_explain(
                        ErrorType::InternalError,
                        "every viewer left a fill too large for the fill budget",
                    )
                }
                // Nobody reads yet: keep the start for the viewer who is on the way.
                (None, false) => 0,
            };
            if end.saturating_sub(from) <= DEMOTED_WINDOW {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Error::e_explain(
                    ErrorType::InternalError,
                    format!(
                        "no viewer read from a demoted fill for {}s",
                        DEMOTED_STALL_LIMIT.as_secs()
                    ),
                );
            }
        }
    }

    /// Drops whole chunks that end at or before `offset`.
    fn drop_below(&self, offset: usize) {
        let mut held = self.held.write().unwrap_or_else(|p| p.into_inner());
        let mut freed = 0;
        while let Some(first) = held.chunks.front() {
            let len = first.len();
            if held.base + len > offset {
                break;
            }
            held.chunks.pop_front();
            held.base += len;
            freed += len;
        }
        held.bytes -= freed;
        drop(held);
        self.budget.give(freed as u64);
    }

    /// One contiguous copy of the whole body, which from now on is also what the fill holds
    /// (so readers and the stored object share it); the fill's budget is given back, as the
    /// stored object counts against the cache's own limit.
    pub(crate) fn seal(&self) -> Bytes {
        let mut held = self.held.write().unwrap_or_else(|p| p.into_inner());
        let body = super::body_file::body_of(&held.chunks);
        let was = held.bytes;
        held.chunks = VecDeque::from([body.clone()]);
        held.bytes = 0;
        drop(held);
        self.budget.give(was as u64);
        body
    }

    /// A new reader from offset 0; `viewer` is false for a background fill's own reader.
    pub(crate) fn reader(self: &Arc<Self>, viewer: bool) -> FillReader {
        let id = {
            let mut r = self.readers.lock().unwrap_or_else(|p| p.into_inner());
            let id = r.next;
            r.next += 1;
            r.at.insert(id, (0, viewer));
            r.viewers_ever |= viewer;
            id
        };
        FillReader {
            fill: self.clone(),
            state: self.state.subscribe(),
            id,
            pos: 0,
            end: None,
        }
    }

    /// The bytes from `pos` up to `limit`, within one held chunk: zero-copy. `None` when
    /// `pos` was already dropped.
    fn slice(&self, pos: usize, limit: usize) -> Option<Bytes> {
        let held = self.held.read().unwrap_or_else(|p| p.into_inner());
        if pos < held.base {
            return None;
        }
        let mut offset = held.base;
        for c in held.chunks.iter() {
            if pos < offset + c.len() {
                let from = pos - offset;
                let to = (limit - offset).min(c.len());
                return Some(c.slice(from..to));
            }
            offset += c.len();
        }
        Some(Bytes::new())
    }

    fn moved(&self, id: u64, pos: usize) {
        if let Some(slot) = self
            .readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .at
            .get_mut(&id)
        {
            slot.0 = pos;
        }
        self.progress.notify_waiters();
    }
}

impl Drop for Fill {
    fn drop(&mut self) {
        let held = self.held.get_mut().unwrap_or_else(|p| p.into_inner());
        self.budget.give(held.bytes as u64);
    }
}

/// One reader of a fill in progress.
pub(crate) struct FillReader {
    fill: Arc<Fill>,
    state: watch::Receiver<FillState>,
    id: u64,
    /// Next body offset to return.
    pos: usize,
    /// Exclusive end, when a range was asked for.
    end: Option<usize>,
}

impl FillReader {
    /// The next piece of body, `None` at its end, an error if the fill was aborted.
    pub(crate) async fn read(&mut self) -> Result<Option<Bytes>> {
        loop {
            let state = *self.state.borrow_and_update();
            let (available, complete) = match state {
                FillState::Aborted => {
                    return Error::e_explain(
                        ErrorType::InternalError,
                        "cache fill aborted before the end of the body",
                    )
                }
                FillState::Writing(n) => (n, false),
                FillState::Done(n) => (n, true),
            };
            let limit = self
                .end
                .map_or(available, |e| e.min(available))
                .min(self.pos + READ_CHUNK);
            if self.pos < limit {
                let Some(chunk) = self.fill.slice(self.pos, limit) else {
                    return Error::e_explain(
                        ErrorType::InternalError,
                        "a viewer fell behind the window of a fill too large to store",
                    );
                };
                self.pos += chunk.len();
                self.fill.moved(self.id, self.pos);
                return Ok(Some(chunk));
            }
            if complete || self.end.is_some_and(|e| self.pos >= e) {
                return Ok(None);
            }
            if self.state.changed().await.is_err() {
                // The writer vanished without saying Done or Aborted.
                return Error::e_explain(
                    ErrorType::InternalError,
                    "cache fill ended without completing",
                );
            }
        }
    }

    /// Restarts the read at `start`, up to `end`.
    pub(crate) fn seek(&mut self, start: usize, end: Option<usize>) {
        self.pos = start;
        self.end = end;
        self.fill.moved(self.id, start);
    }
}

impl Drop for FillReader {
    fn drop(&mut self) {
        self.fill
            .readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .at
            .remove(&self.id);
        self.fill.progress.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_http::ResponseHeader;
    use std::time::SystemTime;

    fn fill(limit: u64) -> (Arc<Fill>, Arc<FillBudget>) {
        let budget = Arc::new(FillBudget::new(
            limit,
            IntGauge::new("g", "g").unwrap(),
            IntCounter::new("c", "c").unwrap(),
        ));
        let meta = pingora_cache::CacheMeta::new(
            SystemTime::now(),
            SystemTime::now(),
            0,
            0,
            ResponseHeader::build(200, None).unwrap(),
        );
        let parts = Arc::new(MetaParts::of(&meta));
        (
            Arc::new(Fill::new("u".into(), parts, false, budget.clone())),
            budget,
        )
    }

    #[tokio::test]
    async fn a_fill_inside_the_budget_keeps_everything_and_gives_it_back_when_sealed() {
        let (f, budget) = fill(1000);
        f.append(Bytes::from(vec![1u8; 400]), 0).await.unwrap();
        f.append(Bytes::from(vec![2u8; 400]), 400).await.unwrap();
        assert_eq!(budget.used(), 800);
        assert!(!f.is_demoted());
        let body = f.seal();
        assert_eq!(body.len(), 800);
        assert_eq!(budget.used(), 0);
        assert!(f.joinable());
    }

    #[tokio::test]
    async fn a_fill_over_the_budget_is_demoted_and_trims_what_its_viewer_read() {
        let (f, budget) = fill(1000);
        let mut reader = f.reader(true);
        f.append(Bytes::from(vec![1u8; 800]), 0).await.unwrap();
        f.set_state(FillState::Writing(800));
        f.append(Bytes::from(vec![2u8; 800]), 800).await.unwrap();
        f.set_state(FillState::Writing(1600));
        assert!(f.is_demoted());
        // The viewer reads the first chunk: the next append drops it.
        assert_eq!(reader.read().await.unwrap().unwrap().len(), 800);
        f.append(Bytes::from(vec![3u8; 10]), 1600).await.unwrap();
        assert_eq!(budget.used(), 810);
        assert!(!f.joinable(), "a new reader could not start at byte 0");
        drop(reader);
        // Every viewer left: the writer gives up instead of filling for nobody.
        assert!(f.append(Bytes::from(vec![4u8; 10]), 1610).await.is_err());
        drop(f);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn an_aborted_fill_fails_its_readers() {
        let (f, _) = fill(1000);
        let mut reader = f.reader(true);
        f.append(Bytes::from_static(b"abc"), 0).await.unwrap();
        f.set_state(FillState::Writing(3));
        assert_eq!(reader.read().await.unwrap().unwrap(), "abc");
        f.set_state(FillState::Aborted);
        assert!(reader.read().await.is_err());
    }
}
