//! The view counter's brake: at most one counted view per viewer per catalog entry per hour.
//!
//! A viewer is its client address (after `--trusted-proxy`), an IPv6 client its /64 (one
//! subscriber's usual allocation, else a client could count once per address it picks).
//! Anonymous viewers have no session to key on, and a cookie is only ever sent back by honest
//! clients. The cost: viewers behind one NAT count once per hour between them. The marks are
//! in memory, per process: a restart forgets them, and each replica counts on its own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::catalog::Kind;

/// How long a counted view keeps the same viewer from counting again for that entry.
pub const WINDOW: Duration = Duration::from_secs(60 * 60);

/// Marks kept at most; past it expired ones go, and if all are fresh, views are not counted
/// (a flood of addresses must not grow memory without bound).
const MAX_MARKS: usize = 100_000;

/// Who is viewing, as far as counting goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Viewer {
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6Prefix([u8; 8]),
}

impl From<IpAddr> for Viewer {
    fn from(addr: IpAddr) -> Self {
        match addr.to_canonical() {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let mut prefix = [0; 8];
                prefix.copy_from_slice(&v6.octets()[..8]);
                Self::V6Prefix(prefix)
            }
        }
    }
}

type MarkKey = (Kind, String, Viewer);

/// The last counted view of each (entry, viewer).
#[derive(Debug)]
pub struct ViewLimiter {
    window: Duration,
    marks: Mutex<HashMap<MarkKey, Instant>>,
}

impl Default for ViewLimiter {
    fn default() -> Self {
        Self::new(WINDOW)
    }
}

/// Whether a view is counted.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Count it; [`ViewLimiter::forget`] takes the mark back if the entry does not exist.
    Count(Mark),
    /// This viewer's view of this entry was counted less than the window ago.
    Seen,
    /// Too many viewers are remembered to take a new one: not counted.
    Full,
}

/// The mark a counted view left.
#[derive(Debug, PartialEq, Eq)]
pub struct Mark(MarkKey);

impl ViewLimiter {
    /// A limiter that counts one view per viewer and entry per `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            marks: Mutex::default(),
        }
    }

    /// Whether the view of the entry `slug` of `kind` by `client` counts now.
    pub fn admit(&self, kind: Kind, slug: &str, client: IpAddr) -> Verdict {
        self.admit_at(kind, slug, client, Instant::now())
    }

    fn admit_at(&self, kind: Kind, slug: &str, client: IpAddr, now: Instant) -> Verdict {
        let key = (kind, slug.to_owned(), Viewer::from(client));
        let mut marks = self.lock();
        if let Some(&at) = marks.get(&key) {
            if now.duration_since(at) < self.window {
                return Verdict::Seen;
            }
        } else if marks.len() >= MAX_MARKS {
            marks.retain(|_, &mut at| now.duration_since(at) < self.window);
            if marks.len() >= MAX_MARKS {
                tracing::warn!(
                    viewers = marks.len(),
                    "too many viewers in the last hour to remember another: view not counted"
                );
                return Verdict::Full;
            }
        }
        marks.insert(key.clone(), now);
        Verdict::Count(Mark(key))
    }

    /// Takes back a mark (the entry it counted does not exist).
    pub fn forget(&self, Mark(key): Mark) {
        self.lock().remove(&key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<MarkKey, Instant>> {
        // A panic while holding the lock leaves only marks behind: still usable.
        self.marks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn counted(verdict: Verdict) -> bool {
        matches!(verdict, Verdict::Count(_))
    }

    #[test]
    fn one_view_per_viewer_and_entry_per_window() {
        let limiter = ViewLimiter::new(Duration::from_secs(3600));
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        let viewer = ip("198.51.100.7");
        assert!(counted(limiter.admit_at(Kind::Title, "a", viewer, at(0))));
        assert_eq!(
            limiter.admit_at(Kind::Title, "a", viewer, at(3599)),
            Verdict::Seen
        );
        // Another entry, another kind with the same slug, another viewer: each counts.
        assert!(counted(limiter.admit_at(Kind::Title, "b", viewer, at(1))));
        assert!(counted(limiter.admit_at(Kind::Channel, "a", viewer, at(1))));
        assert!(counted(limiter.admit_at(
            Kind::Title,
            "a",
            ip("198.51.100.8"),
            at(1)
        )));
        // An hour after the counted view, it counts again.
        assert!(counted(limiter.admit_at(
            Kind::Title,
            "a",
            viewer,
            at(3600)
        )));
    }

    #[test]
    fn an_ipv6_client_counts_once_for_its_whole_64() {
        let limiter = ViewLimiter::default();
        assert!(counted(limiter.admit(
            Kind::Title,
            "a",
            ip("2001:db8:1:2::1")
        )));
        assert_eq!(
            limiter.admit(Kind::Title, "a", ip("2001:db8:1:2:ffff::9")),
            Verdict::Seen
        );
        assert!(counted(limiter.admit(
            Kind::Title,
            "a",
            ip("2001:db8:1:3::1")
        )));
        // An IPv4-mapped address is its IPv4 viewer.
        assert!(counted(limiter.admit(Kind::Title, "a", ip("192.0.2.1"))));
        assert_eq!(
            limiter.admit(Kind::Title, "a", ip("::ffff:192.0.2.1")),
            Verdict::Seen
        );
    }

    #[test]
    fn a_forgotten_mark_counts_again_and_the_table_is_bounded() {
        let limiter = ViewLimiter::default();
        let Verdict::Count(mark) = limiter.admit(Kind::Title, "gone", ip("192.0.2.1")) else {
            panic!("counted");
        };
        limiter.forget(mark);
        assert!(counted(limiter.admit(Kind::Title, "gone", ip("192.0.2.1"))));

        let limiter = ViewLimiter::default();
        let start = Instant::now();
        for n in 0..MAX_MARKS as u32 {
            assert!(counted(limiter.admit_at(
                Kind::Title,
                "a",
                IpAddr::from(n.to_be_bytes()),
                start
            )));
        }
        let full = limiter.admit_at(Kind::Title, "a", ip("255.255.255.255"), start);
        assert_eq!(full, Verdict::Full);
        // Once the marks have expired, there is room again.
        let later = start + WINDOW;
        assert!(counted(limiter.admit_at(
            Kind::Title,
            "a",
            ip("255.255.255.255"),
            later
        )));
        assert_eq!(limiter.lock().len(), 1);
    }
}
