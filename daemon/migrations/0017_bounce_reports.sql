-- Bounces that come back as mail (DSN, ARF) name the report they came from:
-- a report read twice (a crash between recording it and filing it away)
-- counts once against the suppression rules.
ALTER TABLE bounces ADD COLUMN report_id TEXT;
CREATE UNIQUE INDEX bounces_report ON bounces(report_id, address) WHERE report_id IS NOT NULL;
