-- A contact's pending follow-up timers, which setting its next follow-up retires
-- (store::set_next_follow_up): without this, each follow-up set read every
-- pending timer, and a workflow step setting follow-ups for a whole segment
-- (or `nudge simulate` running a month of them) cost the square of their number.
-- Partial like timers_pending: a timer leaves it when it fires.
CREATE INDEX timers_contact_pending ON timers(contact_id) WHERE fired_at IS NULL AND contact_id IS NOT NULL;
