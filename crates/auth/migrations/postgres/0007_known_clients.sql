-- Clients (a hash of the user and the address's prefix) that signed in to an account:
-- their requests for its reset mail are not held up by the cap for all
-- clients together, which strangers could use up. Kept 90 days from the last
-- sign-in; no address is kept in clear.
CREATE TABLE known_clients (
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_hash  TEXT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, client_hash)
);
