-- The console's pages at millions of rows (issue 34): each filter and count
-- reads an index, never the whole outbox or runs table.

-- A message's workflow on its row (copied from its run when queued), so the
-- outbox filtered by workflow is a range of `outbox_workflow` walked newest
-- first; before, each row was joined to its run and the rows of a rare
-- workflow were found by reading the whole outbox.
ALTER TABLE outbox ADD COLUMN workflow TEXT;
UPDATE outbox SET workflow = (SELECT r.workflow FROM runs r WHERE r.id = outbox.run_id) WHERE run_id IS NOT NULL;
CREATE INDEX outbox_workflow ON outbox(workflow, id);

-- The recipient's domain, lowered, then id: a domain's page is a range of this
-- index (the query repeats the expression, which SQLite needs to use it).
CREATE INDEX outbox_domain ON outbox(lower(substr(recipient, instr(recipient, '@') + 1)), id);

-- Messages queued since a moment by status, read from the index alone; it
-- replaces `outbox_created` (created_at), which the report's ranges still read.
DROP INDEX outbox_created;
CREATE INDEX outbox_created_status ON outbox(created_at, status);

-- Runs not done, by workflow and state, read from the index alone. The runs
-- done (nearly all of a million) are not counted per workflow: that is a walk
-- of every one of them; the table's count less these is read from page counts.
CREATE INDEX runs_workflow_unfinished ON runs(workflow, status) WHERE status <> 'done';
