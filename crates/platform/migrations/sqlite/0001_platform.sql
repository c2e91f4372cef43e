-- Events written in the same transaction as the change they announce;
-- the relay publishes them and stamps published_at.
CREATE TABLE outbox (
    id           TEXT PRIMARY KEY,
    event_type   TEXT NOT NULL,
    payload      TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    published_at TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT
);
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;

-- Events a consumer of this service has applied, so redelivery is harmless.
CREATE TABLE processed_events (
    consumer   TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    handled_at TEXT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

-- Idempotency-Key records: the first response for a key, replayed for 24 hours.
CREATE TABLE idempotency_keys (
    scope            TEXT NOT NULL,
    idem_key         TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('running', 'done')),
    locked_until_ms  INTEGER NOT NULL,
    expires_at_ms    INTEGER NOT NULL,
    response_status  INTEGER,
    response_headers TEXT,
    response_body    BLOB,
    PRIMARY KEY (scope, idem_key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at_ms);
