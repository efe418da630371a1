-- Core state of nudge. Times are unix milliseconds (UTC) from the daemon's Clock.

CREATE TABLE contacts (
    id                INTEGER PRIMARY KEY,
    name              TEXT NOT NULL,
    company           TEXT NOT NULL DEFAULT '',
    email             TEXT UNIQUE,
    phone             TEXT,
    owner             TEXT NOT NULL DEFAULT '',          -- the owner's email address
    stage             TEXT NOT NULL DEFAULT 'lead',      -- lifecycle stage
    intent_grade      TEXT,                              -- A / B / C
    value_tier        TEXT,                              -- high / medium / low
    tags              TEXT NOT NULL DEFAULT '[]',        -- JSON array of strings
    source            TEXT NOT NULL DEFAULT '',
    time_zone         TEXT NOT NULL DEFAULT 'UTC',       -- IANA name
    locale            TEXT NOT NULL DEFAULT 'en',
    consent           TEXT NOT NULL DEFAULT 'unknown'
                      CHECK (consent IN ('granted', 'unknown', 'withdrawn')),
    next_follow_up_at INTEGER,
    next_goal         TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX contacts_owner ON contacts(owner);

-- domain.md §4: one row per logged contact with the customer.
CREATE TABLE follow_ups (
    id                INTEGER PRIMARY KEY,
    contact_id        INTEGER NOT NULL REFERENCES contacts(id),
    at                INTEGER NOT NULL,                  -- when the contact happened
    channel           TEXT NOT NULL,                     -- phone / wechat / email / visit / ...
    summary           TEXT NOT NULL DEFAULT '',
    feedback          TEXT NOT NULL DEFAULT '',
    status_change     TEXT,                              -- e.g. "intent B -> A"
    next_follow_up_at INTEGER,
    next_goal         TEXT,
    result            TEXT NOT NULL DEFAULT 'in_progress'
                      CHECK (result IN ('in_progress', 'won', 'needs_follow_up', 'lost')),
    owner             TEXT NOT NULL DEFAULT '',
    logged_at         INTEGER NOT NULL
);
CREATE INDEX follow_ups_contact ON follow_ups(contact_id, at);

CREATE TABLE inquiries (
    id          INTEGER PRIMARY KEY,
    contact_id  INTEGER NOT NULL REFERENCES contacts(id),
    message     TEXT NOT NULL DEFAULT '',
    channel     TEXT NOT NULL DEFAULT '',
    received_at INTEGER NOT NULL,
    answered_at INTEGER
);
CREATE INDEX inquiries_open ON inquiries(contact_id) WHERE answered_at IS NULL;

-- The inbox every source (API, CLI, scheduler, workflows) writes to.
CREATE TABLE events (
    id           INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL,
    contact_id   INTEGER NOT NULL REFERENCES contacts(id),
    payload      TEXT NOT NULL DEFAULT '{}',
    occurred_at  INTEGER NOT NULL,
    processed_at INTEGER
);
CREATE INDEX events_unprocessed ON events(id) WHERE processed_at IS NULL;

-- Every workflow set the daemon has run, so that a run finishes on the version it started with.
CREATE TABLE workflow_sets (
    hash       TEXT PRIMARY KEY,
    files      TEXT NOT NULL,                            -- JSON: [[relative path, source], ...]
    loaded_at  INTEGER NOT NULL
);

CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    workflow    TEXT NOT NULL,
    set_hash    TEXT NOT NULL REFERENCES workflow_sets(hash),
    contact_id  INTEGER NOT NULL REFERENCES contacts(id),
    event_id    INTEGER NOT NULL REFERENCES events(id),
    status      TEXT NOT NULL CHECK (status IN ('ready', 'waiting', 'done', 'cancelled', 'failed')),
    next_step   INTEGER NOT NULL DEFAULT 0,
    context     TEXT NOT NULL DEFAULT '{}',              -- the trigger's data: event payload
    outcome     TEXT,
    started_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (workflow, event_id)
);
CREATE INDEX runs_ready ON runs(id) WHERE status = 'ready';

CREATE TABLE run_steps (
    run_id      INTEGER NOT NULL REFERENCES runs(id),
    step        INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '',
    finished_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, step)
);

-- Everything that must happen at a time: resuming a run, a follow-up falling due.
CREATE TABLE timers (
    id         INTEGER PRIMARY KEY,
    due_at     INTEGER NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('resume_run', 'follow_up_due')),
    run_id     INTEGER REFERENCES runs(id),
    contact_id INTEGER REFERENCES contacts(id),
    fired_at   INTEGER
);
CREATE INDEX timers_pending ON timers(due_at) WHERE fired_at IS NULL;

-- One row per side effect, written in the transaction that decided it.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    message_id      TEXT NOT NULL,
    run_id          INTEGER REFERENCES runs(id),
    contact_id      INTEGER REFERENCES contacts(id),
    channel         TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    message         TEXT NOT NULL,                       -- JSON: the rendered message
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    sent_at         INTEGER
);
CREATE INDEX outbox_pending ON outbox(next_attempt_at) WHERE status = 'pending';

-- Every delivery attempt and what the server said.
CREATE TABLE deliveries (
    id          INTEGER PRIMARY KEY,
    outbox_id   INTEGER NOT NULL REFERENCES outbox(id),
    attempt     INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('sent', 'transient', 'permanent')),
    detail      TEXT NOT NULL DEFAULT ''
);

-- The virtual clock's reading when the daemon runs on virtual time (tests, simulation).
CREATE TABLE virtual_clock (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    now_ms INTEGER NOT NULL
);
