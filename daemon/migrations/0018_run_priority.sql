-- Ready runs are taken most urgent first, as outbox rows are: an SLA run
-- that becomes ready during a marketing burst (a nurture window opening for
-- a whole segment) is stepped before the burst's runs, not after them.
-- 0 sla, 1 transactional and internal, 2 marketing (model::Category::priority).
-- Runs started before this keep 1: their workflow's category is in its set's files.
ALTER TABLE runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 1;
DROP INDEX runs_ready;
CREATE INDEX runs_ready ON runs(priority, id) WHERE status = 'ready';
