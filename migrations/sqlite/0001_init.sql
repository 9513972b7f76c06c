-- GKM controller schema, SQLite dialect. Times are UNIX milliseconds.
CREATE TABLE groups (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    identity    INTEGER NOT NULL UNIQUE,
    policy      TEXT    NOT NULL,           -- JSON, gkm_store::model::GroupPolicy
    version     INTEGER NOT NULL,           -- bumped by every change (optimistic concurrency)
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE key_servers (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    address     TEXT    NOT NULL UNIQUE,
    priority    INTEGER NOT NULL,
    role        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE gms (
    group_id        INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    identity        TEXT    NOT NULL,
    address         TEXT    NOT NULL,
    class           TEXT    NOT NULL,
    version         TEXT,
    features        INTEGER NOT NULL,
    state           TEXT    NOT NULL,
    registered_at   INTEGER NOT NULL,
    last_seq_sent   INTEGER,
    last_seq_acked  INTEGER,
    misses          INTEGER NOT NULL,
    PRIMARY KEY (group_id, identity)
);
CREATE INDEX gms_by_state ON gms (group_id, state, identity);
CREATE INDEX gms_by_class ON gms (group_id, class, identity);

CREATE TABLE rekeys (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id     INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    seq          INTEGER NOT NULL,
    reason       TEXT    NOT NULL,
    started_at   INTEGER NOT NULL,
    sent         INTEGER NOT NULL,
    acked        INTEGER NOT NULL,
    duration_ms  INTEGER,
    UNIQUE (group_id, seq)
);

CREATE TABLE d3p_reports (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id        INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    gm_identity     TEXT    NOT NULL,
    at              INTEGER NOT NULL,
    input_packets   INTEGER NOT NULL,
    output_packets  INTEGER NOT NULL,
    input_errors    INTEGER NOT NULL,
    output_errors   INTEGER NOT NULL,
    history         TEXT    NOT NULL        -- JSON list of sampled errors
);
CREATE INDEX d3p_reports_by_gm ON d3p_reports (group_id, gm_identity, at);

CREATE TABLE audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    target  TEXT    NOT NULL,
    detail  TEXT    NOT NULL
);

CREATE TABLE api_tokens (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL UNIQUE,
    token_hash    BLOB    NOT NULL UNIQUE,  -- SHA-256 of the token; the token itself is never stored
    role          TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE secrets (
    name        TEXT    PRIMARY KEY,
    sealed      BLOB    NOT NULL,           -- AES-256-GCM under the master key
    updated_at  INTEGER NOT NULL
);
