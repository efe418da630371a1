-- A contact import recognises a contact without an email by phone, and one with
-- neither by name and company; without these a batch of such rows scanned every contact.
CREATE INDEX contacts_phone ON contacts(phone) WHERE phone IS NOT NULL;
CREATE INDEX contacts_unreachable ON contacts(name, company) WHERE email IS NULL AND phone IS NULL;
-- The report's overdue follow-ups and stage changes in a period, without a pass over
-- every contact or every history entry (most of which are classification changes,
-- which this index leaves out).
CREATE INDEX contacts_follow_up_due ON contacts(next_follow_up_at) WHERE next_follow_up_at IS NOT NULL;
CREATE INDEX contact_history_stage ON contact_history(at, contact_id) WHERE field = 'stage';
