-- Health reports from agents (DESIGN.md data flow 5). The unused
-- d3p_reports table of 0001 is replaced by two: the latest report of each
-- GM, and the D3P errors over time: per GM and minute, the increases its
-- reports brought (one row per GM and minute at most, however often it
-- reports), kept 7 days.
DROP TABLE d3p_reports;

CREATE TABLE gm_health (
    group_id        INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    identity        TEXT    NOT NULL,
    received_at     INTEGER NOT NULL,       -- the controller's clock, UNIX ms
    agent_version   TEXT    NOT NULL,
    registered      INTEGER NOT NULL,       -- 0 or 1
    d3p_window_ms   INTEGER,
    d3p_window_source TEXT,
    agent_time_ms   INTEGER NOT NULL,       -- the agent's clock when it sampled
    input_packets   INTEGER NOT NULL,
    output_packets  INTEGER NOT NULL,
    input_errors    INTEGER NOT NULL,
    output_errors   INTEGER NOT NULL,
    history         TEXT    NOT NULL,       -- JSON list of sampled D3P errors
    PRIMARY KEY (group_id, identity)
);

CREATE TABLE d3p_errors (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id        INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    identity        TEXT    NOT NULL,
    at              INTEGER NOT NULL,       -- the minute, UNIX ms
    input_errors    INTEGER NOT NULL,       -- increases reported in that minute
    output_errors   INTEGER NOT NULL,
    UNIQUE (group_id, identity, at)
);
CREATE INDEX d3p_errors_by_group ON d3p_errors (group_id, at);
