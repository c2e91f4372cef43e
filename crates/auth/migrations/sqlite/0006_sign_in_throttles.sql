-- Failed sign-ins per (email, client address), replacing the per-account
-- lock: an address that keeps failing waits longer and longer for that email,
-- while the owner elsewhere signs in. Unknown emails are counted alike. Rows
-- are keyed by hashes, so nothing typed is kept, and are dropped once expired.
CREATE TABLE sign_in_throttles (
    key_hash         TEXT PRIMARY KEY,
    email_hash       TEXT NOT NULL,
    failures         BIGINT NOT NULL,
    blocked_until_ms BIGINT NOT NULL,
    expires_at_ms    BIGINT NOT NULL
);
CREATE INDEX sign_in_throttles_email ON sign_in_throttles (email_hash);
CREATE INDEX sign_in_throttles_expiry ON sign_in_throttles (expires_at_ms);

-- Using one token of a purpose voids the user's others.
CREATE INDEX one_time_tokens_user ON one_time_tokens (user_id, purpose);
