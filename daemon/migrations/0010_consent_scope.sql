-- What a suppression withdraws (docs/domain.md §5, "a clear opt-out that is honoured at
-- once"): `marketing` (the one-click unsubscribe of a marketing email: answers,
-- sample and after-sale checks still go out) or `all` customer-facing mail (the
-- unsubscribe page's "stop all email", and what every suppression meant before).
ALTER TABLE suppressions ADD COLUMN scope TEXT NOT NULL DEFAULT 'all' CHECK (scope IN ('marketing', 'all'));
