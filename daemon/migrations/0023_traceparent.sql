-- The trace context (W3C traceparent) a run's steps and a message's delivery
-- continue: the run's span, the step's span. NULL unless the daemon exports
-- traces (the `otel` feature with [tracing] set), and then what nudge wrote
-- before did not have one either: such work starts a trace of its own.
ALTER TABLE runs ADD COLUMN traceparent TEXT;
ALTER TABLE outbox ADD COLUMN traceparent TEXT;
