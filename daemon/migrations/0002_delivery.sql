-- Durable delivery: outcome classes beyond sent/failed, priorities, suppression,
-- unsubscribe secrets, segment enrolment, and why a waiting run waits.

-- SQLite cannot change a CHECK constraint in place: rebuild outbox and deliveries.
-- deliveries (the only table that references outbox) is set aside first, so that
-- dropping the old outbox leaves no reference dangling, then rebuilt on the new one.
CREATE TABLE deliveries_old AS SELECT * FROM deliveries;
DROP TABLE deliveries;

CREATE TABLE outbox_new (
    id              INTEGER PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    message_id      TEXT NOT NULL,
    run_id          INTEGER REFERENCES runs(id),
    contact_id      INTEGER REFERENCES contacts(id),
    channel         TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    message         TEXT NOT NULL,                       -- JSON: the rendered message
    -- sla and transactional messages go before marketing; internal ones go to staff.
    category        TEXT NOT NULL DEFAULT 'transactional'
                    CHECK (category IN ('sla', 'transactional', 'marketing', 'internal')),
    priority        INTEGER NOT NULL DEFAULT 1,          -- lower goes first
    -- pending: due at next_attempt_at; sent; failed: refused for good (5xx);
    -- dead: retries used up; unknown: the server may or may not have it (held for an operator);
    -- suppressed: the recipient is suppressed; dropped: an operator dropped it.
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'failed', 'dead', 'unknown', 'suppressed', 'dropped')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    sent_at         INTEGER
);
INSERT INTO outbox_new (id, idempotency_key, message_id, run_id, contact_id, channel, recipient, message,
                        status, attempts, next_attempt_at, created_at, sent_at)
    SELECT id, idempotency_key, message_id, run_id, contact_id, channel, recipient, message,
           status, attempts, next_attempt_at, created_at, sent_at FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_new RENAME TO outbox;
CREATE INDEX outbox_pending ON outbox(priority, next_attempt_at) WHERE status = 'pending';
CREATE INDEX outbox_contact ON outbox(contact_id, channel, created_at);

CREATE TABLE deliveries (
    id          INTEGER PRIMARY KEY,
    outbox_id   INTEGER NOT NULL REFERENCES outbox(id),
    attempt     INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('sent', 'transient', 'permanent', 'unknown', 'suppressed')),
    detail      TEXT NOT NULL DEFAULT ''
);
INSERT INTO deliveries (id, outbox_id, attempt, started_at, finished_at, outcome, detail)
    SELECT id, outbox_id, attempt, started_at, finished_at, outcome, detail FROM deliveries_old;
DROP TABLE deliveries_old;
CREATE INDEX deliveries_outbox ON deliveries(outbox_id);

-- Addresses (email or phone, lower-cased) that get nothing on a channel ('*': any channel).
CREATE TABLE suppressions (
    address    TEXT NOT NULL,
    channel    TEXT NOT NULL DEFAULT '*',
    reason     TEXT NOT NULL CHECK (reason IN ('unsubscribed', 'hard_bounce', 'soft_bounce', 'complaint', 'manual')),
    detail     TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    PRIMARY KEY (address, channel)
);

-- Every bounce and complaint, counted against the suppression rules.
CREATE TABLE bounces (
    id         INTEGER PRIMARY KEY,
    address    TEXT NOT NULL,
    channel    TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('hard', 'soft', 'complaint')),
    detail     TEXT NOT NULL DEFAULT '',
    outbox_id  INTEGER REFERENCES outbox(id),
    at         INTEGER NOT NULL
);
CREATE INDEX bounces_address ON bounces(address, kind);

-- Secrets the daemon generates for itself (the unsubscribe token key), unless the environment sets them.
CREATE TABLE secrets (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

-- One pass of a segment workflow over all contacts, enrolled in batches from a cursor.
CREATE TABLE enrolments (
    id          INTEGER PRIMARY KEY,
    workflow    TEXT NOT NULL,
    set_hash    TEXT NOT NULL REFERENCES workflow_sets(hash),
    due_at      INTEGER NOT NULL,                        -- the scheduled time this pass is for
    cursor      INTEGER NOT NULL DEFAULT 0,              -- last contact id looked at
    scanned     INTEGER NOT NULL DEFAULT 0,
    enrolled    INTEGER NOT NULL DEFAULT 0,
    total       INTEGER NOT NULL DEFAULT 0,              -- contacts when the pass began
    status      TEXT NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done')),
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    UNIQUE (workflow, due_at)
);

-- Why a waiting run waits (a send window, a frequency cap, a retry after an error).
ALTER TABLE runs ADD COLUMN waiting_reason TEXT;
-- Errors in a row while running the current step; the run is retried with backoff until the limit.
ALTER TABLE runs ADD COLUMN step_errors INTEGER NOT NULL DEFAULT 0;
-- The contact's stage when the run began, for the `stage_changed` exit condition.
ALTER TABLE runs ADD COLUMN start_stage TEXT;
CREATE INDEX runs_workflow_contact ON runs(workflow, contact_id);
