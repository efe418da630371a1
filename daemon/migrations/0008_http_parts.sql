-- A message a plugin delivers as several HTTP requests (SMS segments, WeCom
-- parts): how many of its parts, in order, the provider has accepted. A retry
-- sends only the rest, so a provider never gets an accepted part twice.
ALTER TABLE outbox ADD COLUMN parts_done INTEGER NOT NULL DEFAULT 0;
