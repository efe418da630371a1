-- What `GET /metrics` reads at each scrape, from indexes instead of the tables,
-- so that a scrape stays cheap at a million rows and takes no turn to write.
-- Only rows off the hot path are indexed here: a message that failed, died or
-- is held as unknown, and a waiting run. Pending messages and ready runs are
-- counted from the partial indexes the claims already use (outbox_pending,
-- runs_ready), so queuing, sending and stepping write no extra index.
CREATE INDEX outbox_unsettled ON outbox(status) WHERE status IN ('unknown', 'dead', 'failed');
CREATE INDEX runs_waiting ON runs(status) WHERE status = 'waiting';
