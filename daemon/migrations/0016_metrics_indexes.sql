-- What `GET /metrics` reads at each scrape, from indexes instead of the tables,
-- so that a scrape stays cheap at a million rows and takes no turn to write:
-- outbox rows not settled for good by status, with the oldest queued one, and
-- runs not yet ended by state. Rows settled (sent, dropped, done...) leave them.
CREATE INDEX outbox_unsettled ON outbox(status, created_at)
    WHERE status IN ('pending', 'unknown', 'dead', 'failed');
CREATE INDEX runs_live ON runs(status) WHERE status IN ('ready', 'waiting');
