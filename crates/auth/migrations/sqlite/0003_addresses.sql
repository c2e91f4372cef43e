-- A customer's address book, with at most one default of each kind.
CREATE TABLE addresses (
    id                  TEXT PRIMARY KEY,
    user_id             TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name                TEXT NOT NULL,
    line1               TEXT NOT NULL,
    line2               TEXT,
    city                TEXT NOT NULL,
    region              TEXT,
    postal_code         TEXT NOT NULL,
    country             TEXT NOT NULL,
    phone               TEXT,
    is_default_shipping BOOLEAN NOT NULL DEFAULT FALSE,
    is_default_billing  BOOLEAN NOT NULL DEFAULT FALSE,
    created_at          TEXT NOT NULL
);
CREATE INDEX addresses_user ON addresses (user_id);
