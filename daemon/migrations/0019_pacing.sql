-- Per-domain pacing and the warm-up plan (README "Pacing and warm-up").
-- throttled: the attempts a provider's throttling reply ended (421 4.7.x,
-- 450 4.2.1, ...). They stay in `attempts` and in deliveries, but the retry
-- budget (`[delivery] max_attempts`) counts attempts - throttled: a provider
-- slowing us down is not the message's fault.
-- held_reason: why a pending row waits without being tried (a reason code of
-- model/reason.rs: domain_paced, warmup_cap); NULL once it is tried.
ALTER TABLE outbox ADD COLUMN throttled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN held_reason TEXT;
