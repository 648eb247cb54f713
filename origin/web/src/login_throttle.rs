//! A brake on password guessing at the admin login: login attempts are counted per client
//! address and per username over a sliding window; past either limit, logins are refused
//! (HTTP 429) before the password is hashed, until the oldest counted failure leaves the window.
//!
//! An attempt counts as a failure from the moment it is let through, before its password is
//! checked, and only a success takes it back: concurrent guesses cannot all pass the check
//! while none has failed yet. Verifying a password costs argon2's 19 MiB for a moment, so at
//! most [`MAX_VERIFICATIONS`] run at once and at most [`MAX_WAITING`] more wait; beyond that a
//! login is refused (429) without counting.
//!
//! The per-address limit stops one client quickly (fail2ban's defaults: 5 tries in 15 minutes).
//! The per-username limit is higher and holds however many addresses a guesser rotates through
//! (a direct client can also forge `X-Forwarded-For`), at the cost that a determined attacker can
//! keep one username locked; the operator then sees the warnings in the log.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Password verifications (argon2 with 19 MiB each) that run at once.
pub const MAX_VERIFICATIONS: usize = 2;
/// Logins that may wait for a verification slot; more are refused.
pub const MAX_WAITING: usize = 8;

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

/// Failed-login counts and the verification slots, shared by all requests.
#[derive(Debug)]
pub struct LoginThrottle {
    limits: Limits,
    failures: Mutex<HashMap<Key, VecDeque<Instant>>>,
    /// Verifications running or waiting; a login that finds none left is refused.
    admitted: Arc<Semaphore>,
    /// Verifications running.
    running: Arc<Semaphore>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

/// A login let through [`LoginThrottle::attempt`]: already counted as a failure, until
/// [`LoginThrottle::succeeded`] or [`LoginThrottle::withdraw`] takes it back.
#[derive(Debug)]
#[must_use = "a dropped attempt stays counted as a failure"]
pub struct Attempt {
    address: IpAddr,
    username: String,
    at: Instant,
}

/// The right to run one password verification; hold it until the verification has ended
/// (move it into the blocking task, so a client that goes away does not free it early).
#[derive(Debug)]
pub struct VerificationSlot {
    _running: OwnedSemaphorePermit,
    _admitted: OwnedSemaphorePermit,
}

/// Every verification slot is taken and the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

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
            admitted: Arc::new(Semaphore::new(MAX_VERIFICATIONS + MAX_WAITING)),
            running: Arc::new(Semaphore::new(MAX_VERIFICATIONS)),
        }
    }

    /// Lets a login for `username` from `address` be tried, counting it as a failure at
    /// once (under the same lock as the check, so concurrent logins see each other), or
    /// refuses it when either limit is reached.
    pub fn attempt(&self, address: IpAddr, username: &str) -> Result<Attempt, Refused> {
        self.attempt_at(address, username, Instant::now())
    }

    fn attempt_at(
        &self,
        address: IpAddr,
        username: &str,
        now: Instant,
    ) -> Result<Attempt, Refused> {
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
        Ok(Attempt {
            address,
            username: username.to_owned(),
            at: now,
        })
    }

    /// A successful login clears its address's count, and takes back its own count for the
    /// username (not the others: guesses from elsewhere still count).
    pub fn succeeded(&self, attempt: Attempt) {
        let mut failures = self.lock();
        failures.remove(&Key::Address(attempt.address));
        Self::uncount(&mut failures, Key::Username(attempt.username), attempt.at);
    }

    /// Takes back an attempt whose password was never checked (no verification slot).
    pub fn withdraw(&self, attempt: Attempt) {
        let mut failures = self.lock();
        Self::uncount(&mut failures, Key::Address(attempt.address), attempt.at);
        Self::uncount(&mut failures, Key::Username(attempt.username), attempt.at);
    }

    /// Removes one count made at `at` under `key`.
    fn uncount(failures: &mut HashMap<Key, VecDeque<Instant>>, key: Key, at: Instant) {
        if let Some(times) = failures.get_mut(&key) {
            if let Some(index) = times.iter().rposition(|&time| time == at) {
                times.remove(index);
            }
            if times.is_empty() {
                failures.remove(&key);
            }
        }
    }

    /// A slot to verify one password in: waits while [`MAX_VERIFICATIONS`] run, or fails at
    /// once when [`MAX_WAITING`] logins wait already.
    pub async fn verification(&self) -> Result<VerificationSlot, Busy> {
        let admitted = Arc::clone(&self.admitted)
            .try_acquire_owned()
            .map_err(|_| Busy)?;
        let running = Arc::clone(&self.running)
            .acquire_owned()
            .await
            .map_err(|_| Busy)?;
        Ok(VerificationSlot {
            _running: running,
            _admitted: admitted,
        })
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
            window: Duration::from_secs(300),
            per_address: 3,
            per_username: 100,
        });
        let start = Instant::now();
        for n in 0..3 {
            // Each attempt counts as it is let through, before any password is checked.
            let _ = throttle
                .attempt_at(ip("10.0.0.1"), "alice", start + Duration::from_secs(n))
                .unwrap();
        }
        let later = start + Duration::from_secs(10);
        let refused = throttle
            .attempt_at(ip("10.0.0.1"), "bob", later)
            .unwrap_err();
        assert!(!refused.username_limit);
        assert_eq!(refused.retry_after, Duration::from_secs(290));
        // Another address is not affected.
        assert!(throttle.attempt_at(ip("10.0.0.2"), "alice", later).is_ok());
        // Once the oldest attempt is older than the window, one more is let through.
        let after = start + Duration::from_secs(300);
        assert!(throttle.attempt_at(ip("10.0.0.1"), "alice", after).is_ok());
        assert!(throttle.attempt_at(ip("10.0.0.1"), "alice", after).is_err());
    }

    #[test]
    fn a_username_is_refused_after_its_limit_from_any_address() {
        let throttle = LoginThrottle::new(Limits {
            window: Duration::from_secs(60),
            per_address: 100,
            per_username: 4,
        });
        for n in 0..4 {
            let _ = throttle
                .attempt(ip(&format!("10.0.1.{n}")), "alice")
                .unwrap();
        }
        let refused = throttle.attempt(ip("10.0.2.1"), "alice").unwrap_err();
        assert!(refused.username_limit);
        assert!(throttle.attempt(ip("10.0.2.1"), "bob").is_ok());
    }

    #[test]
    fn success_clears_the_address_and_takes_back_only_its_own_username_count() {
        let throttle = LoginThrottle::new(Limits {
            window: Duration::from_secs(60),
            per_address: 2,
            per_username: 3,
        });
        let _ = throttle.attempt(ip("10.0.0.1"), "alice").unwrap();
        let right = throttle.attempt(ip("10.0.0.1"), "alice").unwrap();
        assert!(throttle.attempt(ip("10.0.0.1"), "alice").is_err());
        throttle.succeeded(right);
        // The address is clear; the username keeps the one failure.
        let _ = throttle.attempt(ip("10.0.0.1"), "alice").unwrap();
        let _ = throttle.attempt(ip("10.0.0.3"), "alice").unwrap();
        assert!(
            throttle
                .attempt(ip("10.0.0.4"), "alice")
                .unwrap_err()
                .username_limit
        );
    }

    #[test]
    fn a_withdrawn_attempt_is_not_counted() {
        let throttle = LoginThrottle::new(Limits {
            window: Duration::from_secs(60),
            per_address: 1,
            per_username: 1,
        });
        let attempt = throttle.attempt(ip("10.0.0.1"), "alice").unwrap();
        assert!(throttle.attempt(ip("10.0.0.1"), "alice").is_err());
        throttle.withdraw(attempt);
        assert!(throttle.attempt(ip("10.0.0.1"), "alice").is_ok());
    }

    #[tokio::test]
    async fn verification_slots_are_few_and_the_queue_is_bounded() {
        let throttle = LoginThrottle::default();
        let mut running = Vec::new();
        for _ in 0..MAX_VERIFICATIONS {
            running.push(throttle.verification().await.unwrap());
        }
        // The next ones wait (they hold a place in the queue) until the queue is full.
        let mut waiting = Vec::new();
        for _ in 0..MAX_WAITING {
            let slot = Box::pin(throttle.verification());
            waiting.push(slot);
        }
        for slot in &mut waiting {
            assert!(
                futures_poll_once(slot.as_mut()).await.is_none(),
                "waits while the slots are taken"
            );
        }
        assert_eq!(throttle.verification().await.unwrap_err(), Busy);
        running.pop();
        let next = waiting.remove(0).await;
        assert!(next.is_ok(), "a freed slot goes to a waiting login");
    }

    /// Polls `future` once: its output if ready.
    async fn futures_poll_once<F: std::future::Future + Unpin>(future: F) -> Option<F::Output> {
        let mut future = future;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(cx) {
                std::task::Poll::Ready(output) => Some(output),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }

    #[test]
    fn forged_addresses_cannot_grow_the_table_without_bound() {
        let throttle = LoginThrottle::new(Limits {
            per_username: usize::MAX,
            ..Limits::default()
        });
        for n in 0..(MAX_KEYS as u32 + 10) {
            let _ = throttle
                .attempt(IpAddr::from(n.to_be_bytes()), "alice")
                .unwrap();
        }
        assert!(throttle.lock().len() <= MAX_KEYS + 2);
        // The username's count survived the purge of addresses.
        assert_eq!(
            throttle.lock()[&Key::Username("alice".to_owned())].len(),
            MAX_KEYS + 10
        );
    }
}
