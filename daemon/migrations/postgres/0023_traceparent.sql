-- The twin of the SQLite migration 0023: the W3C traceparent a run's steps and a
-- message's delivery continue. NULL unless the daemon exports traces.
ALTER TABLE runs ADD COLUMN traceparent TEXT;
ALTER TABLE outbox ADD COLUMN traceparent TEXT;
