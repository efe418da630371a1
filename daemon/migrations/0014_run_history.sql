-- Run history (`nudge runs`, `GET /runs`) and the retention pass that prunes it.

-- `nudge runs` lists newest first and pages by key (started_at, id): without
-- these, a filtered page sorted every matching run. All three columns are set
-- when a run starts and never change, so a step's write never touches them.
CREATE INDEX runs_started ON runs(started_at);
CREATE INDEX runs_contact ON runs(contact_id, started_at);
CREATE INDEX runs_workflow_started ON runs(workflow, started_at);
-- A run's timers and messages (`nudge runs show`, and the retention pass,
-- which deletes a run only with them): without these, a scan of each table.
CREATE INDEX timers_run ON timers(run_id) WHERE run_id IS NOT NULL;
CREATE INDEX outbox_run ON outbox(run_id) WHERE run_id IS NOT NULL;
-- A pruned message leaves its bounces (which the suppression rules count) in
-- place, detached from it.
CREATE INDEX bounces_outbox ON bounces(outbox_id) WHERE outbox_id IS NOT NULL;

-- When the retention pass last ran: it runs once a day on the daemon's clock.
CREATE TABLE retention_pass (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    ran_at INTEGER NOT NULL
);
