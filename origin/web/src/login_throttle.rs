//! A brake on password guessing at the admin login: failed logins are counted per client
//! address and per username over a sliding window; past either limit, logins are refused
//! (HTTP 429) before the password is hashed, until the oldest counted failure leaves the window.
//!
//! The per-address limit stops one client quickly (fail2ban's defaults: 5 tries in 15 minutes).
//! The per-username limit is higher and holds however many addresses a guesser rotates through
//! (a direct client can also forge `X-Forwarded-For`), at the cost that a determined attacker can
//! keep one username locked; the operator then sees the warnings in the log.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many failures are allowed, and over how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a failure counts.
    pub window: Duration,
    /// Failures from one client address within the window before it is refused.
    pub per_address: usize,
    /// Failures for one username, from anywhere, within the window before it is refused.
    pub per_username: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(15 * 60),
            per_address: 5,
            per_username: 50,
        }
    }
}

/// What is counted: a client address or a username.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Address(IpAddr),
    Username(String),
}

/// Past this many tracked keys, expired ones are dropped; if that is not enough, the address
/// records go (usernames stay, so forged addresses cannot reset a username's count).
const MAX_KEYS: usize = 10_000;

/// Failed-login counts, shared by all requests.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    limits: Limits,
    failures: Mutex<HashMap<Key, VecDeque<Instant>>>,
}

/// Why a login is refused without trying the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// Whether it was the username's limit (else the address's).
    pub username_limit: bool,
    /// How long until a try is allowed again.
    pub retry_after: Duration,
}

impl LoginThrottle {
    /// A throttle with `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            failures: Mutex::default(),
        }
    }

    /// Whether a login for `username` from `address` may be tried now.
    pub fn check(&self, address: IpAddr, username: &str) -> Result<(), Refused> {
        let now = Instant::now();
        let mut failures = self.lock();
        let mut limited = |key: Key, limit: usize| -> Option<Duration> {
            let times = failures.get_mut(&key)?;
            self.expire(times, now);
            (times.len() >= limit).then(|| {
                // The oldest failure that must leave for the count to drop below the limit.
                let oldest = times[times.len() - limit];
                (oldest + self.limits.window).saturating_duration_since(now)
            })
        };
        if let Some(wait) = limited(Key::Address(address), self.limits.per_address) {
            return Err(Refused {
                username_limit: false,
                retry_after: wait,
            });
        }
        if let Some(wait) = limited(Key::Username(username.to_owned()), self.limits.per_username) {
            return Err(Refused {
                username_limit: true,
                retry_after: wait,
            });
        }
        Ok(())
    }

    /// Counts a failed login for `username` from `address`.
    pub fn failed(&self, address: IpAddr, username: &str) {
        let now = Instant::now();
        let mut failures = self.lock();
        for key in [Key::Address(address), Key::Username(username.to_owned())] {
            failures.entry(key).or_default().push_back(now);
        }
        if failures.len() > MAX_KEYS {
            failures.retain(|_, times| {
                self.expire(times, now);
                !times.is_empty()
            });
        }
        if failures.len() > MAX_KEYS {
            tracing::warn!(
                tracked = failures.len(),
                "too many addresses with failed admin logins; forgetting their counts"
            );
            failures.retain(|key, _| matches!(key, Key::Username(_)));
        }
    }

    /// A successful login from `address` clears that address's count (not the username's:
    /// guesses from elsewhere still count).
    pub fn succeeded(&self, address: IpAddr) {
        self.lock().remove(&Key::Address(address));
    }

    /// Drops failures older than the window.
    fn expire(&self, times: &mut VecDeque<Instant>, now: Instant) {
        while times
            .front()
            .is_some_and(|&at| now.duration_since(at) >= self.limits.window)
        {
            times.pop_front();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, VecDeque<Instant>>> {
        // A panic while holding the lock leaves only counts behind: still usable.
        self.failures
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

    #[test]
    fn an_address_is_refused_after_its_limit_until_the_window_passes() {
        let throttle = LoginThrottle::new(Limits {
            window: Duration::from_millis(300),
            per_address: 3,
            per_username: 100,
        });
        for _ in 0..3 {
            assert!(throttle.check(ip("10.0.0.1"), "alice").is_ok());
            throttle.failed(ip("10.0.0.1"), "alice");
        }
        let refused = throttle.check(ip("10.0.0.1"), "bob").unwrap_err();
        assert!(!refused.username_limit);
        assert!(refused.retry_after <= Duration::from_millis(300));
        assert!(refused.retry_after > Duration::ZERO);
        // Another address is not affected.
        assert!(throttle.check(ip("10.0.0.2"), "alice").is_ok());
        std::thread::sleep(Duration::from_millis(320));
        assert!(throttle.check(ip("10.0.0.1"), "alice").is_ok());
    }

    #[test]
    fn a_username_is_refused_after_its_limit_from_any_address() {
        let throttle = LoginThrottle::new(Limits {
            window: Duration::from_secs(60),
            per_address: 100,
            per_username: 4,
        });
        for n in 0..4 {
            throttle.failed(ip(&format!("10.0.1.{n}")), "alice");
        }
        let refused = throttle.check(ip("10.0.2.1"), "alice").unwrap_err();
        assert!(refused.username_limit);
        assert!(throttle.check(ip("10.0.2.1"), "bob").is_ok());
    }

    #[test]
    fn success_clears_the_address_but_not_the_username() {
        let throttle = LoginThrottle::new(Limits {
            window: Duration::from_secs(60),
            per_address: 2,
            per_username: 3,
        });
        throttle.failed(ip("10.0.0.1"), "alice");
        throttle.failed(ip("10.0.0.1"), "alice");
        assert!(throttle.check(ip("10.0.0.1"), "alice").is_err());
        throttle.succeeded(ip("10.0.0.1"));
        assert!(throttle.check(ip("10.0.0.1"), "alice").is_ok());
        throttle.failed(ip("10.0.0.1"), "alice");
        assert!(
            throttle
                .check(ip("10.0.0.1"), "alice")
                .unwrap_err()
                .username_limit
        );
    }

    #[test]
    fn forged_addresses_cannot_grow_the_table_without_bound() {
        let throttle = LoginThrottle::new(Limits::default());
        for n in 0..(MAX_KEYS as u32 + 10) {
            throttle.failed(IpAddr::from(n.to_be_bytes()), "alice");
        }
        assert!(throttle.lock().len() <= MAX_KEYS + 2);
        // The username's count survived the purge of addresses.
        assert!(
            throttle
                .check(ip("10.9.9.9"), "alice")
                .unwrap_err()
                .username_limit
        );
    }
}
