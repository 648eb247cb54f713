//! Low-latency HLS waits (RFC 8216bis §6.2.5.2 and §4.4.5.3): a playlist request carrying
//! `_HLS_msn` (and `_HLS_part`) is held until the playlist holds that segment or part, and a
//! request for the part a playlist's preload hint names is held until the part is written.
//!
//! The waits follow the filesystem: one inotify watch per directory somebody waits on, whose
//! events wake every waiter of that directory to look again. No request polls. A wait lasts at
//! most three target durations (the specification's limit), then the answer is 503.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::watch;

/// What a playlist request with `_HLS_msn` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    /// `_HLS_msn`: the media sequence number of the segment.
    pub msn: u64,
    /// `_HLS_part`: the index of the part within that segment, if any.
    pub part: Option<u64>,
}

/// Why a blocking request is refused at once (a 400, as the specification asks).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WantError {
    /// `_HLS_part` without `_HLS_msn`.
    #[error("_HLS_part needs _HLS_msn")]
    PartWithoutMsn,
    /// A value that is not a decimal number.
    #[error("{0} is not a decimal integer")]
    NotANumber(&'static str),
    /// A segment more than two past the last one the playlist lists.
    #[error("_HLS_msn={msn} is more than two segments past the playlist's last: {furthest} is the furthest a reload may ask for now")]
    TooFarAhead {
        /// What was asked.
        msn: u64,
        /// The furthest segment a reload may ask for now.
        furthest: u64,
    },
}

impl Want {
    /// The wait a query asks for: `None` without `_HLS_msn` (an ordinary request).
    pub fn of_query(query: Option<&str>) -> Result<Option<Want>, WantError> {
        let (mut msn, mut part) = (None, None);
        for pair in query.unwrap_or("").split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "_HLS_msn" => {
                    msn = Some(
                        value
                            .parse::<u64>()
                            .map_err(|_| WantError::NotANumber("_HLS_msn"))?,
                    )
                }
                "_HLS_part" => {
                    part = Some(
                        value
                            .parse::<u64>()
                            .map_err(|_| WantError::NotANumber("_HLS_part"))?,
                    )
                }
                _ => {}
            }
        }
        match (msn, part) {
            (None, Some(_)) => Err(WantError::PartWithoutMsn),
            (None, None) => Ok(None),
            (Some(msn), part) => Ok(Some(Want { msn, part })),
        }
    }
}

/// What a live media playlist says about where its stream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveEdge {
    /// `EXT-X-TARGETDURATION`, in seconds.
    pub target_duration: u64,
    /// The sequence number of the segment in progress: the last listed one's plus one.
    pub next_msn: u64,
    /// Parts listed of the segment in progress.
    pub parts: u64,
    /// `EXT-X-PRELOAD-HINT` URI, if any.
    pub hint: Option<String>,
}

impl LiveEdge {
    /// Reads the playlist text; `None` if it is not a media playlist.
    pub fn of(text: &str) -> Option<LiveEdge> {
        let mut target_duration = None;
        let mut sequence = 0u64;
        let mut segments = 0u64;
        let mut parts = 0u64;
        let mut hint = None;
        let mut after_extinf = false;
        for line in text.lines().map(str::trim) {
            if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
                target_duration = v.parse().ok();
            } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
                sequence = v.parse().ok()?;
            } else if line.starts_with("#EXTINF:") {
                after_extinf = true;
            } else if line.starts_with("#EXT-X-PART:") {
                parts += 1;
            } else if let Some(v) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
                hint = attribute(v, "URI");
            } else if !line.is_empty() && !line.starts_with('#') && after_extinf {
                // A segment URI: the parts counted so far were its own.
                segments += 1;
                parts = 0;
                after_extinf = false;
            }
        }
        Some(LiveEdge {
            target_duration: target_duration?,
            next_msn: sequence + segments,
            parts,
            hint,
        })
    }

    /// Whether the playlist holds what `want` asks for, or something later.
    pub fn holds(&self, want: Want) -> bool {
        match want.part {
            // The segment is complete once a later one is in progress.
            None => want.msn < self.next_msn,
            Some(part) => {
                want.msn < self.next_msn || (want.msn == self.next_msn && part < self.parts)
            }
        }
    }

    /// RFC 8216bis §6.2.5.2: a reload may ask for up to two segments past the last one listed
    /// (the one in progress and the next); further is a 400 at once.
    pub fn within_reach(&self, want: Want) -> Result<(), WantError> {
        let furthest = self.next_msn + 1;
        if want.msn > furthest {
            return Err(WantError::TooFarAhead {
                msn: want.msn,
                furthest,
            });
        }
        Ok(())
    }

    /// How long a request may be held: three target durations.
    pub fn longest_wait(&self) -> Duration {
        Duration::from_secs(3 * self.target_duration.max(1))
    }
}

/// The value of `name` in an attribute list (`TYPE=PART,URI="x"`), unquoted.
fn attribute(list: &str, name: &str) -> Option<String> {
    let mut rest = list;
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], quoted[end + 1..].trim_start_matches(','))
        } else {
            match after.split_once(',') {
                Some((v, n)) => (v, n),
                None => (after, ""),
            }
        };
        if key.trim() == name {
            return Some(value.to_string());
        }
        rest = next;
    }
    None
}

/// The directories being waited on, shared by every request: one inotify instance (made at
/// the first wait; the kernel allows a user few of them) watches each directory while somebody
/// waits there, and its events bump that directory's counter.
#[derive(Default)]
pub struct Waits {
    dirs: Arc<Mutex<HashMap<PathBuf, watch::Sender<u64>>>>,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
}

impl std::fmt::Debug for Waits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waits").finish_non_exhaustive()
    }
}

impl Waits {
    /// Waits until `ready` says yes, looking again at each change in `dir`, for at most
    /// `longest`; returns whether it said yes. `ready` is asked once before any wait.
    pub async fn until<T>(
        &self,
        dir: &Path,
        longest: Duration,
        mut ready: impl FnMut() -> Option<T>,
    ) -> std::io::Result<Option<T>> {
        // Subscribed before the first look, so a change between the two is not missed.
        let mut changes = self.subscribe(dir)?;
        let deadline = tokio::time::Instant::now() + longest;
        let found = loop {
            if let Some(found) = ready() {
                break Some(found);
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { break None },
                () = tokio::time::sleep_until(deadline) => break ready(),
            }
        };
        drop(changes);
        self.release(dir);
        Ok(found)
    }

    fn subscribe(&self, dir: &Path) -> std::io::Result<watch::Receiver<u64>> {
        let receiver = {
            let mut dirs = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(changes) = dirs.get(dir) {
                return Ok(changes.subscribe());
            }
            let (changes, receiver) = watch::channel(0u64);
            dirs.insert(dir.to_path_buf(), changes);
            receiver
        };
        // Watched without holding `dirs`: notify's event thread takes it to deliver an
        // event, and `watch` waits for that thread.
        let mut watcher = self.watcher.lock().unwrap_or_else(|p| p.into_inner());
        let watched = match watcher.as_mut() {
            Some(watcher) => watcher.watch(dir, RecursiveMode::NonRecursive),
            None => self.new_watcher().and_then(|mut made| {
                made.watch(dir, RecursiveMode::NonRecursive)?;
                *watcher = Some(made);
                Ok(())
            }),
        };
        if let Err(error) = watched {
            self.dirs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(dir);
            return Err(std::io::Error::other(format!(
                "cannot watch {}: {error}",
                dir.display()
            )));
        }
        Ok(receiver)
    }

    /// The inotify instance, whose events wake the waiters of the directory they happen in.
    fn new_watcher(&self) -> notify::Result<notify::RecommendedWatcher> {
        let dirs = Arc::clone(&self.dirs);
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else {
                return;
            };
            let dirs = dirs.lock().unwrap_or_else(|p| p.into_inner());
            for path in &event.paths {
                let changes = dirs
                    .get(path)
                    .or_else(|| path.parent().and_then(|p| dirs.get(p)));
                if let Some(changes) = changes {
                    changes.send_modify(|n| *n = n.wrapping_add(1));
                }
            }
        })
    }

    /// Stops watching `dir` once nobody waits on it.
    fn release(&self, dir: &Path) {
        // The watcher first, as `subscribe` takes it: a new waiter's watch of this directory
        // cannot come between the removal and the unwatch below.
        let mut watcher = self.watcher.lock().unwrap_or_else(|p| p.into_inner());
        let unused = {
            let mut dirs = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
            let unused = dirs.get(dir).is_some_and(|c| c.receiver_count() == 0);
            if unused {
                dirs.remove(dir);
            }
            unused
        };
        if let (true, Some(watcher)) = (unused, watcher.as_mut()) {
            let _ = watcher.unwatch(dir);
        }
    }

    /// Directories watched now.
    pub fn watched(&self) -> usize {
        self.dirs.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAYLIST: &str = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.6\n#EXT-X-PART-INF:PART-TARGET=0.2\n#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-MAP:URI=\"init-0.mp4\"\n#EXT-X-PART:DURATION=0.2,URI=\"segment-7.0.m4s\",INDEPENDENT=YES\n#EXTINF:1.000,\nsegment-7.m4s\n#EXTINF:1.000,\nsegment-8.m4s\n#EXT-X-PART:DURATION=0.2,URI=\"segment-9.0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.2,URI=\"segment-9.1.m4s\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"segment-9.2.m4s\"\n";

    #[test]
    fn the_live_edge_is_the_segment_in_progress_and_its_parts() {
        let edge = LiveEdge::of(PLAYLIST).unwrap();
        assert_eq!(
            edge,
            LiveEdge {
                target_duration: 1,
                next_msn: 9,
                parts: 2,
                hint: Some("segment-9.2.m4s".into()),
            }
        );
        let want = |msn, part| Want { msn, part };
        assert!(edge.holds(want(8, None)));
        assert!(!edge.holds(want(9, None)), "segment 9 is in progress");
        assert!(edge.holds(want(9, Some(1))));
        assert!(
            !edge.holds(want(9, Some(2))),
            "the hinted part is not written"
        );
        assert!(edge.holds(want(8, Some(5))), "a later segment counts");
        assert!(!edge.holds(want(10, Some(0))));
        assert_eq!(edge.longest_wait(), Duration::from_secs(3));
        // Segment 8 is the last listed: 10 is two past it, 11 three.
        assert_eq!(edge.within_reach(want(10, Some(3))), Ok(()));
        assert_eq!(
            edge.within_reach(want(11, None)),
            Err(WantError::TooFarAhead {
                msn: 11,
                furthest: 10
            })
        );
        assert_eq!(
            LiveEdge::of("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv.m3u8\n"),
            None
        );
    }

    #[test]
    fn queries_ask_for_a_segment_and_part_or_are_refused() {
        assert_eq!(Want::of_query(None), Ok(None));
        assert_eq!(Want::of_query(Some("token=abc")), Ok(None));
        assert_eq!(
            Want::of_query(Some("_HLS_msn=9&_HLS_part=2&x=1")),
            Ok(Some(Want {
                msn: 9,
                part: Some(2)
            }))
        );
        assert_eq!(
            Want::of_query(Some("_HLS_msn=9")),
            Ok(Some(Want { msn: 9, part: None }))
        );
        assert_eq!(
            Want::of_query(Some("_HLS_part=2")),
            Err(WantError::PartWithoutMsn)
        );
        assert_eq!(
            Want::of_query(Some("_HLS_msn=x")),
            Err(WantError::NotANumber("_HLS_msn"))
        );
        assert_eq!(
            Want::of_query(Some("_HLS_msn=1&_HLS_part=-1")),
            Err(WantError::NotANumber("_HLS_part"))
        );
    }

    #[tokio::test]
    async fn a_wait_ends_when_a_file_appears_and_leaves_no_watch_behind() {
        let dir = tempfile::tempdir().unwrap();
        let waits = Arc::new(Waits::default());
        let target = dir.path().join("part.m4s");
        let waiter = {
            let (waits, dir, target) = (waits.clone(), dir.path().to_path_buf(), target.clone());
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                let found = waits
                    .until(&dir, Duration::from_secs(10), || {
                        target.exists().then_some(())
                    })
                    .await
                    .unwrap();
                (found, started.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(waits.watched(), 1);
        std::fs::write(&target, "moof").unwrap();
        let (found, took) = waiter.await.unwrap();
        assert_eq!(found, Some(()));
        assert!(
            took < Duration::from_secs(2),
            "woken by the write: {took:?}"
        );
        assert_eq!(waits.watched(), 0);

        // Waiters of two directories share the one watcher; each is woken by its own.
        let other = tempfile::tempdir().unwrap();
        let waiters: Vec<_> = [dir.path(), other.path()]
            .into_iter()
            .map(|d| {
                let (waits, d) = (waits.clone(), d.to_path_buf());
                tokio::spawn(async move {
                    let file = d.join("next.m4s");
                    let found =
                        waits.until(&d, Duration::from_secs(10), || file.exists().then_some(()));
                    found.await.unwrap()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(waits.watched(), 2);
        std::fs::write(other.path().join("next.m4s"), "moof").unwrap();
        std::fs::write(dir.path().join("next.m4s"), "moof").unwrap();
        for waiter in waiters {
            assert_eq!(waiter.await.unwrap(), Some(()));
        }
        assert_eq!(waits.watched(), 0);

        // Nothing comes: the wait ends at its limit with nothing.
        let found = waits
            .until(dir.path(), Duration::from_millis(200), || None::<()>)
            .await
            .unwrap();
        assert_eq!(found, None);
        assert_eq!(waits.watched(), 0);
    }
}
