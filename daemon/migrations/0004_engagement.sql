-- Engagement (issue 7): what recipients did with the messages they got (opens, clicks,
-- replies), and which A/B variant of its send step each message was.

-- The `name` of the send step's variant this message carries; NULL without an A/B test.
ALTER TABLE outbox ADD COLUMN variant TEXT;
-- The report counts the messages queued in a period.
CREATE INDEX outbox_created ON outbox(created_at);

-- One row per open (pixel fetched), click (signed redirect followed) or reply. The
-- workflow and variant are copied from the message, so the report groups without joins
-- back through runs; a reply that names no message and follows none has no outbox_id.
CREATE TABLE engagement (
    id         INTEGER PRIMARY KEY,
    outbox_id  INTEGER REFERENCES outbox(id),
    contact_id INTEGER NOT NULL REFERENCES contacts(id),
    workflow   TEXT,
    variant    TEXT,
    kind       TEXT NOT NULL CHECK (kind IN ('opened', 'clicked', 'replied')),
    url        TEXT,                                     -- clicked: where the link went
    at         INTEGER NOT NULL
);
CREATE INDEX engagement_outbox ON engagement(outbox_id, kind);
CREATE INDEX engagement_contact ON engagement(contact_id, at);
