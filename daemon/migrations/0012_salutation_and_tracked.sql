-- How a message addresses the contact (王总, 张女士, Dr. Smith): what a
-- sales team calls a customer is not derived from the name. Empty: the
-- templates fall back to the name.
ALTER TABLE contacts ADD COLUMN salutation TEXT NOT NULL DEFAULT '';

-- Whether a message could be tracked (an HTML part with the open pixel and
-- redirected links): a report shows "not tracked" rather than 0 % opened for
-- messages that never could be. Earlier rows: those whose HTML has the pixel.
ALTER TABLE outbox ADD COLUMN tracked INTEGER NOT NULL DEFAULT 0;
UPDATE outbox SET tracked = 1 WHERE instr(message ->> 'html', '/t/o/') > 0;
