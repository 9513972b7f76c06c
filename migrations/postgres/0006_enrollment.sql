-- Enrollment (issue 21): setup keys, stored as hashes, and the agents
-- enrolled with them. An agent's name is its GM identity: its
-- certificate's CN and DNS name, and the ID_FQDN it registers with.
-- An enrolled agent's token names the agent; revoking the agent deletes
-- its tokens and keeps its row (revoked_at), so the name stays blocked.
CREATE TABLE setup_keys (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    key_hash      BYTEA   NOT NULL UNIQUE,  -- SHA-256 of the key; the key itself is never stored
    groups_json   TEXT    NOT NULL,         -- JSON array of group identity numbers
    tags_json     TEXT    NOT NULL,         -- JSON array of tags
    usage_limit   BIGINT,                  -- NULL: a reusable key without a limit
    uses          BIGINT  NOT NULL DEFAULT 0,
    expires_at    BIGINT  NOT NULL,
    created_at    BIGINT  NOT NULL
);

CREATE TABLE agents (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            TEXT    NOT NULL UNIQUE,
    groups_json     TEXT    NOT NULL,
    tags_json       TEXT    NOT NULL,
    setup_key       TEXT    NOT NULL,       -- the name of the key it enrolled with
    cert_serial     TEXT    NOT NULL,       -- hex, of its newest certificate
    cert_not_after  BIGINT  NOT NULL,
    enrolled_at     BIGINT  NOT NULL,
    renewed_at      BIGINT,
    revoked_at      BIGINT
);

ALTER TABLE api_tokens ADD COLUMN agent TEXT;
