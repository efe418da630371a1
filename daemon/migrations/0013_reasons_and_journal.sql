-- Why things did not happen, recorded where the engine decides (issue 32,
-- `nudge explain`): stable reason codes (src/model/reason.rs) beside the
-- human text that was already kept.

-- The code of `waiting_reason` while a run waits, of `outcome` once it ended.
ALTER TABLE runs ADD COLUMN reason TEXT;

-- The code of a step that happened without its message (consent, suppression,
-- no address); NULL when the step did what it says.
ALTER TABLE run_steps ADD COLUMN reason TEXT;

-- For each event, the workflows whose trigger takes its kind but that it did
-- not start, and why: a JSON array written by the update that marks the event
-- processed, so recording it costs no statement of its own. Enrolments are runs.
ALTER TABLE events ADD COLUMN decisions TEXT;

-- Every hold of a run at a step (send window, quiet hours, frequency cap, a
-- render held): `runs.waiting_reason` keeps only the latest. Written by the
-- statement that puts the run to wait. `counted`: for a frequency cap, the
-- outbox ids of the messages that counted against it (JSON array).
CREATE TABLE run_holds (
    run_id  INTEGER NOT NULL REFERENCES runs(id),
    step    INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    until   INTEGER NOT NULL,
    reason  TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT '',
    counted TEXT
);
CREATE INDEX run_holds_run ON run_holds(run_id, at);
