-- When `nudge status` last proved that the store takes a write: it commits
-- here, so a full disk or a read-only file shows in its answer.
CREATE TABLE store_checks (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at INTEGER NOT NULL
);
