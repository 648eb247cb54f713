//! Admin accounts: creation with argon2id-hashed passwords, and login checks.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use sqlx::Row;

use crate::store::{is_unique_violation, now_secs, Store, StoreError};

/// The shortest password `create-admin` accepts.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The longest username, in bytes (usernames are ASCII).
pub const MAX_USERNAME_BYTES: usize = 64;
/// The longest password, in bytes: argon2 reads all of it, and no one types more.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// An admin who logged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// Database id.
    pub id: i64,
    /// Login name.
    pub username: String,
}

/// Why an admin account could not be created.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The username is empty, too long or has characters outside `[A-Za-z0-9._@-]`.
    #[error("invalid username `{0}`: use 1 to 64 letters, digits, `.`, `_`, `-` or `@`")]
    InvalidUsername(String),
    /// The password is shorter than [`MIN_PASSWORD_CHARS`].
    #[error("password too short: {chars} characters, at least {MIN_PASSWORD_CHARS} required (or use --generate-password)")]
    PasswordTooShort {
        /// Characters given.
        chars: usize,
    },
    /// The password is longer than [`MAX_PASSWORD_BYTES`].
    #[error("password too long: {bytes} bytes, at most {MAX_PASSWORD_BYTES}")]
    PasswordTooLong {
        /// Bytes given.
        bytes: usize,
    },
    /// An admin with that name exists already.
    #[error("admin `{0}` exists already: choose another --username")]
    UserExists(String),
    /// Hashing failed (argon2 refused its parameters; not expected with the defaults).
    #[error("cannot hash the password: {0}")]
    Hash(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether `username` is acceptable as a login name.
fn valid_username(username: &str) -> bool {
    (1..=MAX_USERNAME_BYTES).contains(&username.len())
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

/// Hashes `password` with argon2id and a fresh random salt, in PHC string form.
fn hash_password(password: &str) -> Result<String, AccountError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| AccountError::Hash(err.to_string()))
}

/// Whether `password` matches the PHC string `hash`; a malformed hash never matches.
fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A hash of no one's password, verified when the username is unknown so that a login for
/// a missing user costs as long as a wrong password (no username probing by timing).
const DECOY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2wMLSaQ3lBrlRH3ddSR8DyjmM8F2SkLb7Uv9iLfVGnA";

impl Store {
    /// Creates an admin account after checking the name and password length.
    pub async fn create_admin(&self, username: &str, password: &str) -> Result<i64, AccountError> {
        if !valid_username(username) {
            return Err(AccountError::InvalidUsername(username.to_owned()));
        }
        let chars = password.chars().count();
        if chars < MIN_PASSWORD_CHARS {
            return Err(AccountError::PasswordTooShort { chars });
        }
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(AccountError::PasswordTooLong {
                bytes: password.len(),
            });
        }
        let password = password.to_owned();
        // argon2 is deliberately slow: keep it off the async workers.
        let hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|err| AccountError::Hash(err.to_string()))??;
        let row = sqlx::query(
            "INSERT INTO admins (username, password_hash, created_at) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(username)
        .bind(hash)
        .bind(now_secs())
        .fetch_one(&self.pool)
        .await
        .map_err(|err| {
            if is_unique_violation(&err) {
                AccountError::UserExists(username.to_owned())
            } else {
                AccountError::Store(err.into())
            }
        })?;
        Ok(row.try_get("id").map_err(StoreError::from)?)
    }

    /// The admin whose name and password these are, or `None` whichever of the two is wrong.
    pub async fn check_login(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<Admin>, StoreError> {
        self.check_login_holding(username, password, ()).await
    }

    /// [`Store::check_login`] holding `slot` (a verification slot of the login throttle)
    /// until the password has been verified, even if this future is dropped first.
    pub async fn check_login_holding(
        &self,
        username: &str,
        password: &str,
        slot: impl Send + 'static,
    ) -> Result<Option<Admin>, StoreError> {
        let row = sqlx::query("SELECT id, password_hash FROM admins WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        let (id, hash) = match row {
            Some(row) => (
                Some(row.try_get::<i64, _>("id")?),
                row.try_get("password_hash")?,
            ),
            None => (None, DECOY_HASH.to_owned()),
        };
        let password = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || {
            let matches = verify_password(&password, &hash);
            drop(slot);
            matches
        })
        .await
        .unwrap_or(false);
        Ok(match (id, matches) {
            (Some(id), true) => Some(Admin {
                id,
                username: username.to_owned(),
            }),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_plain_identifiers() {
        assert!(valid_username("admin"));
        assert!(valid_username("ops@dime.example"));
        assert!(!valid_username(""));
        assert!(!valid_username("two words"));
        assert!(!valid_username(&"a".repeat(65)));
    }

    #[test]
    fn the_decoy_hash_is_well_formed_and_matches_nothing_typed() {
        assert!(PasswordHash::new(DECOY_HASH).is_ok());
        assert!(!verify_password("admin", DECOY_HASH));
    }
}
