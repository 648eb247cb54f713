-- The catalog (VoD titles and live channels) and the admin side (accounts, sessions).
-- Times are Unix seconds; durations are milliseconds. Every integer is BIGINT so that the
-- sqlx Any driver decodes the same Rust type (i64) as on SQLite.

CREATE TABLE titles (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug        TEXT   NOT NULL UNIQUE,
    title       TEXT   NOT NULL,
    description TEXT   NOT NULL DEFAULT '',
    poster      TEXT,
    duration_ms BIGINT,
    stream_url  TEXT   NOT NULL,
    views       BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL
);

CREATE TABLE channels (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug        TEXT   NOT NULL UNIQUE,
    name        TEXT   NOT NULL,
    description TEXT   NOT NULL DEFAULT '',
    poster      TEXT,
    stream_url  TEXT   NOT NULL,
    views       BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL
);

CREATE TABLE admins (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      TEXT   NOT NULL UNIQUE,
    password_hash TEXT   NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE sessions (
    id         TEXT   PRIMARY KEY,
    admin_id   BIGINT NOT NULL REFERENCES admins (id) ON DELETE CASCADE,
    csrf_token TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX sessions_expires_at ON sessions (expires_at);
