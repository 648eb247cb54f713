//! Big cached bodies in files the kernel can send from.
//!
//! A stored body of at least [`MIN_FILE_BODY`] bytes is committed into a memfd of its own, mapped
//! so that every reader still gets plain `Bytes`. Its hits on HTTP/1.1 over plain TCP then go out
//! with sendfile(2): pingora-core asks [`find`] (its `BODY_FILES` hooks) whether a body slice lies
//! in such a file, and the kernel hands the file's pages to the socket instead of copying the
//! body into it, the copy that is most of what a segment hit costs (benches/analysis.md). HTTPS
//! and HTTP/2 read the same mapping, as they read any other body.
//!
//! A file is written once, before any reader can see it, and never changed. Evicting its object
//! unmaps and closes it once the last reader lets go; pages still queued in a socket stay alive
//! by the kernel's own references. Each file takes a descriptor and a mapping, so their number is
//! bounded ([`install`]): past the bound, or if the kernel refuses one, a body stays in ordinary
//! memory (counted in `dime_cache_bodies_in_memory_total`) and its hits are copied as before.

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{OnceLock, RwLock};

use bytes::{Bytes, BytesMut};
use prometheus::{IntCounter, IntGauge};

/// Bodies this large or larger are stored in a file: video segments, not playlists, whose
/// hits cost their header more than their body.
pub(crate) const MIN_FILE_BODY: usize = 256 * 1024;

/// The metrics of body files.
#[derive(Clone)]
pub struct BodyFileCounters {
    /// `dime_cache_body_files`: stored bodies held in files.
    pub files: IntGauge,
    /// `dime_cache_sendfile_bytes_total`: body bytes sent from those files with sendfile.
    pub sent_bytes: IntCounter,
    /// `dime_cache_bodies_in_memory_total`: bodies large enough for a file that stayed in
    /// ordinary memory (the bound reached, or the kernel refused a file).
    pub in_memory: IntCounter,
}

/// Every open body file: its mapping's address → (length, descriptor).
static FILES: RwLock<BTreeMap<usize, (usize, RawFd)>> = RwLock::new(BTreeMap::new());
/// How many body files may be open at once; 0 until [`install`].
static LIMIT: AtomicU64 = AtomicU64::new(0);
/// How many are open.
static OPEN: AtomicU64 = AtomicU64::new(0);
static COUNTERS: OnceLock<BodyFileCounters> = OnceLock::new();
/// Whether a refused file was logged already (the counter keeps counting).
static WARNED: AtomicBool = AtomicBool::new(false);

/// Lets stored bodies go into files, at most `limit` at once, and lets pingora send from them.
pub(crate) fn install(limit: u64, counters: BodyFileCounters) {
    LIMIT.store(limit, Ordering::Relaxed);
    let _ = COUNTERS.set(counters);
    let _ = pingora_core::protocols::http::BODY_FILES
        .set(pingora_core::protocols::http::BodyFiles { find, sent });
}

/// How many body files a process may keep open: what its descriptors leave beside
/// `reserved` (connections and everything else), and at most half its mappings.
pub(crate) fn limit(open_files: u64, reserved: u64) -> u64 {
    let maps = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(65_530);
    open_files.saturating_sub(reserved).min(maps / 2)
}

/// The body made of `chunks`: in a file if it is large enough and one can be had, else in one
/// buffer.
pub(crate) fn body_of(chunks: &VecDeque<Bytes>) -> Bytes {
    // Counted here, from the chunks themselves: the file is sized by it and they are copied in.
    let len = chunks.iter().map(Bytes::len).sum();
    if len >= MIN_FILE_BODY {
        if let Some(body) = in_file(chunks, len) {
            return body;
        }
    }
    let mut buf = BytesMut::with_capacity(len);
    for c in chunks {
        buf.extend_from_slice(c);
    }
    buf.freeze()
}

fn in_file(chunks: &VecDeque<Bytes>, len: usize) -> Option<Bytes> {
    let counters = COUNTERS.get()?;
    let limit = LIMIT.load(Ordering::Relaxed);
    let taken = OPEN.fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
        (open < limit).then_some(open + 1)
    });
    if taken.is_err() {
        counters.in_memory.inc();
        return None;
    }
    match BodyFile::write(chunks, len) {
        Ok(file) => {
            counters.files.inc();
            Some(Bytes::from_owner(file))
        }
        Err(e) => {
            OPEN.fetch_sub(1, Ordering::AcqRel);
            counters.in_memory.inc();
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "cannot keep a {len}-byte cached body in a memfd ({e}): it stays in memory and its plain HTTP hits are copied (counted in dime_cache_bodies_in_memory_total; logged once)"
                );
            }
            None
        }
    }
}

/// pingora-core's question, on every body write: the file and offset holding exactly `buf`, if
/// any.
pub(crate) fn find(buf: &[u8]) -> Option<(RawFd, u64)> {
    let at = buf.as_ptr() as usize;
    let files = FILES.read().unwrap_or_else(|p| p.into_inner());
    let (&start, &(len, fd)) = files.range(..=at).next_back()?;
    (at + buf.len() <= start + len).then_some((fd, (at - start) as u64))
}

fn sent(bytes: usize) {
    if let Some(c) = COUNTERS.get() {
        c.sent_bytes.inc_by(bytes as u64);
    }
}

/// One body in a memfd, mapped read-only.
struct BodyFile {
    fd: OwnedFd,
    at: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only once written and lives as long as the value.
unsafe impl Send for BodyFile {}
unsafe impl Sync for BodyFile {}

impl BodyFile {
    fn write(chunks: &VecDeque<Bytes>, len: usize) -> std::io::Result<BodyFile> {
        let os = std::io::Error::last_os_error;
        // SAFETY: the name is a NUL-terminated literal; the descriptor returned is ours.
        let fd = unsafe { libc::memfd_create(c"dime-body".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(os());
        }
        // SAFETY: memfd_create returned a descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let size = libc::off_t::try_from(len).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        // SAFETY: plain syscalls on our descriptor; the mapping is `len` bytes long, within the
        // file, and written only within its bounds.
        unsafe {
            if libc::ftruncate(fd.as_raw_fd(), size) != 0 {
                return Err(os());
            }
            let at = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            );
            if at == libc::MAP_FAILED {
                return Err(os());
            }
            let file = BodyFile { fd, at, len };
            let mut to = at.cast::<u8>();
            for c in chunks {
                std::ptr::copy_nonoverlapping(c.as_ptr(), to, c.len());
                to = to.add(c.len());
            }
            if libc::mprotect(at, len, libc::PROT_READ) != 0 {
                return Err(os());
            }
            FILES
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(at as usize, (len, file.fd.as_raw_fd()));
            Ok(file)
        }
    }
}

impl AsRef<[u8]> for BodyFile {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `at` maps `len` readable bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.at.cast::<u8>(), self.len) }
    }
}

impl Drop for BodyFile {
    fn drop(&mut self) {
        let mut files = FILES.write().unwrap_or_else(|p| p.into_inner());
        // Only a file that was registered counts as open (one that failed after the mapping
        // was not).
        if files.remove(&(self.at as usize)).is_some() {
            OPEN.fetch_sub(1, Ordering::AcqRel);
            if let Some(c) = COUNTERS.get() {
                c.files.dec();
            }
        }
        drop(files);
        // SAFETY: the mapping is ours and no slice of it outlives `self` (Bytes owns it).
        unsafe {
            libc::munmap(self.at, self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(len: usize) -> (VecDeque<Bytes>, Vec<u8>) {
        let whole: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let parts = whole.chunks(100_000).map(Bytes::copy_from_slice).collect();
        (parts, whole)
    }

    fn installed() -> &'static BodyFileCounters {
        install(
            1000,
            BodyFileCounters {
                files: IntGauge::new("files", "files").unwrap(),
                sent_bytes: IntCounter::new("sent", "sent").unwrap(),
                in_memory: IntCounter::new("in_memory", "in_memory").unwrap(),
            },
        );
        COUNTERS.get().unwrap()
    }

    #[test]
    fn a_big_body_is_found_in_its_file_by_any_slice_of_it_until_dropped() {
        installed();
        let (parts, whole) = chunks(MIN_FILE_BODY + 12_345);
        let body = body_of(&parts);
        assert_eq!(&body[..], &whole[..]);
        let (fd, offset) = find(&body.slice(1000..5000)).expect("in a file");
        assert_eq!(offset, 1000);
        let mut read = vec![0u8; 4000];
        // SAFETY: reads into our buffer from a descriptor the body keeps open.
        let n = unsafe { libc::pread(fd, read.as_mut_ptr().cast(), 4000, 1000) };
        assert_eq!(n, 4000);
        assert_eq!(&read[..], &whole[1000..5000]);
        let start = body.as_ptr() as usize;
        drop(body);
        assert!(
            !FILES.read().unwrap().contains_key(&start),
            "dropped, no longer found"
        );
    }

    #[test]
    fn a_small_body_and_a_heap_slice_are_not_in_a_file() {
        installed();
        let (parts, whole) = chunks(MIN_FILE_BODY - 1);
        let body = body_of(&parts);
        assert_eq!(&body[..], &whole[..]);
        assert!(find(&body).is_none());
    }
}
