//! Admin sessions: random ids kept server-side (as hashes) with an expiry and a CSRF token.

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::accounts::Admin;
use crate::store::{now_secs, Store, StoreError};

/// How long a session lasts after login.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

/// A logged-in admin's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The random id the cookie carries.
    pub id: String,
    /// Who logged in.
    pub admin: Admin,
    /// The token every state-changing form of this session must echo.
    pub csrf_token: String,
    /// Unix seconds after which the session is void.
    pub expires_at: i64,
}

/// 32 bytes from the operating system's generator, as 64 hex digits: session ids, CSRF
/// tokens, generated passwords.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // The OS generator only fails on platforms Dime does not run on; there is no safe fallback.
    getrandom::fill(&mut bytes).expect("the operating system's random generator failed");
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// What the sessions table stores for a session id: its SHA-256, so that a copy of the
/// database (a backup, a leaked dump) holds no cookie that logs anyone in.
fn stored_id(id: &str) -> String {
    Sha256::digest(id.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Compares two secrets in time that does not depend on where they differ.
pub fn tokens_match(expected: &str, given: &str) -> bool {
    let (expected, given) = (expected.as_bytes(), given.as_bytes());
    expected.len() == given.len()
        && expected
            .iter()
            .zip(given)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

impl Store {
    /// Starts a session for `admin`, dropping every expired one on the way.
    pub async fn create_session(&self, admin: &Admin) -> Result<Session, StoreError> {
        let now = now_secs();
        sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        let session = Session {
            id: random_token(),
            admin: admin.clone(),
            csrf_token: random_token(),
            expires_at: now + SESSION_LIFETIME.as_secs() as i64,
        };
        sqlx::query(
            "INSERT INTO sessions (id, admin_id, csrf_token, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(stored_id(&session.id))
        .bind(admin.id)
        .bind(&session.csrf_token)
        .bind(session.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(session)
    }

    /// The unexpired session with this id.
    pub async fn session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(
            "SELECT s.admin_id, a.username, s.csrf_token, s.expires_at \
             FROM sessions s JOIN admins a ON a.id = s.admin_id \
             WHERE s.id = $1 AND s.expires_at > $2",
        )
        .bind(stored_id(id))
        .bind(now_secs())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(Session {
            id: id.to_owned(),
            admin: Admin {
                id: row.try_get("admin_id")?,
                username: row.try_get("username")?,
            },
            csrf_token: row.try_get("csrf_token")?,
            expires_at: row.try_get("expires_at")?,
        }))
    }

    /// Ends a session (logout).
    pub async fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(stored_id(id))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_64_hex_digits_and_differ() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn stored_ids_are_hashes_of_the_cookie() {
        let id = random_token();
        assert_eq!(stored_id(&id), stored_id(&id));
        assert_ne!(stored_id(&id), id);
        assert_eq!(stored_id(&id).len(), 64);
    }

    #[test]
    fn token_comparison_needs_every_byte() {
        assert!(tokens_match("abcd", "abcd"));
        assert!(!tokens_match("abcd", "abce"));
        assert!(!tokens_match("abcd", "abc"));
        assert!(!tokens_match("abcd", ""));
    }
}
