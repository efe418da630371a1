-- A contact import recognises a contact without an email by phone, and one with
-- neither by name and company; without these a batch of such rows scanned every contact.
CREATE INDEX contacts_phone ON contacts(phone) WHERE phone IS NOT NULL;
CREATE INDEX contacts_unreachable ON contacts(name, company) WHERE email IS NULL AND phone IS NULL;
