-- Customer insight (issue 7): orders, the classification computed from them, and the
-- history of every classification change.

-- What customers bought. Money is integer minor units (fen, cents), never floating point:
-- sums of amounts must be exact at the 500,000.00 boundary.
CREATE TABLE orders (
    id                INTEGER PRIMARY KEY,
    external_id       TEXT NOT NULL UNIQUE,              -- the shop's or ERP's order id
    contact_id        INTEGER NOT NULL REFERENCES contacts(id),
    amount_minor      INTEGER NOT NULL CHECK (amount_minor >= 0),
    currency          TEXT NOT NULL,
    -- The amount in the base currency at the rate configured when the order was recorded.
    base_amount_minor INTEGER NOT NULL CHECK (base_amount_minor >= 0),
    ordered_on        TEXT NOT NULL,                     -- YYYY-MM-DD in the classification's time zone
    items             TEXT NOT NULL DEFAULT '',
    created_at        INTEGER NOT NULL
);
CREATE INDEX orders_contact ON orders(contact_id, ordered_on);

-- Computed by the classification rules (workflows/classification.toml). value_tier, in
-- 0001, is computed too once a contact has orders.
ALTER TABLE contacts ADD COLUMN rfm_grade TEXT;           -- A / B / C
ALTER TABLE contacts ADD COLUMN rfm_scores TEXT;          -- e.g. R3 F2 M3
ALTER TABLE contacts ADD COLUMN behaviour TEXT;           -- active / dormant / churned
ALTER TABLE contacts ADD COLUMN customer_since TEXT;      -- date of the first order

-- The sales funnel (domain.md §1): the rep's two judgements, set through follow-up records,
-- and the funnel stage they make (potential, watching, intent, opportunity).
ALTER TABLE contacts ADD COLUMN attitude TEXT;            -- doubting / accepting
ALTER TABLE contacts ADD COLUMN understanding TEXT;       -- vague / specific
ALTER TABLE contacts ADD COLUMN funnel_stage TEXT;

-- Who changed what about a contact, when: stage, intent grade, owner, and the computed
-- classification. Events are the engine's inbox; this is the record people read.
CREATE TABLE contact_history (
    id         INTEGER PRIMARY KEY,
    contact_id INTEGER NOT NULL REFERENCES contacts(id),
    field      TEXT NOT NULL,
    from_value TEXT,
    to_value   TEXT,
    changed_by TEXT NOT NULL,                            -- cli, api, workflow:<name>, a rep's email, classification
    at         INTEGER NOT NULL
);
CREATE INDEX contact_history_contact ON contact_history(contact_id, at);

-- The last day the daily classification pass ran (what time alone changes: recency, dormancy).
CREATE TABLE classification_pass (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    day TEXT NOT NULL
);
