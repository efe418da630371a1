-- `nudge status` shows every run and every message by state. A GROUP BY over
-- the tables read every row (seconds at five million messages); the states
-- that end a run or a message early are indexed here instead, like 0016's, and
-- the common end state (done, sent) is the rest of the table's count, which
-- SQLite takes from an index's page counts without reading rows. None of these
-- states is written on the hot path (queue, send, step).
CREATE INDEX runs_ended_early ON runs(status) WHERE status IN ('cancelled', 'failed');
CREATE INDEX outbox_withheld ON outbox(status) WHERE status IN ('suppressed', 'dropped');
