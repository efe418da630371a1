-- The exit checks look for a contact's events after the one that started a run
-- (a reply, an order); without this they scanned every later event.
CREATE INDEX events_contact ON events(contact_id, id);
