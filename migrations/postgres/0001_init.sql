-- GKM controller schema, PostgreSQL dialect. Times are UNIX milliseconds.
CREATE TABLE groups (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    identity    BIGINT  NOT NULL UNIQUE,
    policy      TEXT    NOT NULL,           -- JSON, gkm_store::model::GroupPolicy
    version     BIGINT  NOT NULL,           -- bumped by every change (optimistic concurrency)
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);

CREATE TABLE key_servers (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    address     TEXT    NOT NULL UNIQUE,
    priority    BIGINT  NOT NULL,
    role        TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);

CREATE TABLE gms (
    group_id        BIGINT  NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    identity        TEXT    NOT NULL,
    address         TEXT    NOT NULL,
    class           TEXT    NOT NULL,
    version         TEXT,
    features        BIGINT  NOT NULL,
    state           TEXT    NOT NULL,
    registered_at   BIGINT  NOT NULL,
    last_seq_sent   BIGINT,
    last_seq_acked  BIGINT,
    misses          BIGINT  NOT NULL,
    PRIMARY KEY (group_id, identity)
);
CREATE INDEX gms_by_state ON gms (group_id, state, identity);
CREATE INDEX gms_by_class ON gms (group_id, class, identity);

CREATE TABLE rekeys (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    group_id     BIGINT  NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    seq          BIGINT  NOT NULL,
    reason       TEXT    NOT NULL,
    started_at   BIGINT  NOT NULL,
    sent         BIGINT  NOT NULL,
    acked        BIGINT  NOT NULL,
    duration_ms  BIGINT,
    UNIQUE (group_id, seq)
);

CREATE TABLE d3p_reports (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    group_id        BIGINT  NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    gm_identity     TEXT    NOT NULL,
    at              BIGINT  NOT NULL,
    input_packets   BIGINT  NOT NULL,
    output_packets  BIGINT  NOT NULL,
    input_errors    BIGINT  NOT NULL,
    output_errors   BIGINT  NOT NULL,
    history         TEXT    NOT NULL        -- JSON list of sampled errors
);
CREATE INDEX d3p_reports_by_gm ON d3p_reports (group_id, gm_identity, at);

CREATE TABLE audit (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      BIGINT  NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    target  TEXT    NOT NULL,
    detail  TEXT    NOT NULL
);

CREATE TABLE api_tokens (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    token_hash    BYTEA   NOT NULL UNIQUE,  -- SHA-256 of the token; the token itself is never stored
    role          TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL
);

CREATE TABLE secrets (
    name        TEXT    PRIMARY KEY,
    sealed      BYTEA   NOT NULL,           -- AES-256-GCM under the master key
    updated_at  BIGINT  NOT NULL
);
