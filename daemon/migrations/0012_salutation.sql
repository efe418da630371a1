-- How a message addresses the contact (王总, 张女士, Dr. Smith): what a
-- sales team calls a customer is not derived from the name. Empty: the
-- templates fall back to the name.
ALTER TABLE contacts ADD COLUMN salutation TEXT NOT NULL DEFAULT '';
