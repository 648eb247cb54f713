-- Upload packaging jobs, shared by every replica of the web app, and the replicas' heartbeats.
-- heartbeat_at is milliseconds of the database's own clock, so the replicas' clocks need not
-- agree; the other times are Unix seconds like in 0001.

CREATE TABLE web_replicas (
    id           TEXT   PRIMARY KEY,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);

CREATE TABLE upload_jobs (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title       TEXT   NOT NULL,
    slug        TEXT   NOT NULL,
    admin       TEXT   NOT NULL,
    owner       TEXT   NOT NULL,
    state       TEXT   NOT NULL CHECK (state IN ('packaging', 'done', 'failed')),
    title_id    BIGINT,
    reason      TEXT,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT
);

-- One upload packages under a slug at a time, whichever replica received it.
CREATE UNIQUE INDEX upload_jobs_packaging_slug ON upload_jobs (slug) WHERE state = 'packaging';
CREATE INDEX upload_jobs_packaging_owner ON upload_jobs (owner) WHERE state = 'packaging';
