-- How to reach the shop's users, copied from auth's user events.
CREATE TABLE contacts (
    user_id     TEXT PRIMARY KEY,
    email       TEXT NOT NULL,
    name        TEXT NOT NULL DEFAULT '',
    phone       TEXT,
    permissions TEXT NOT NULL DEFAULT '',
    disabled    BOOLEAN NOT NULL DEFAULT FALSE,
    updated_ms  BIGINT NOT NULL
);

-- What a customer agreed to receive beyond transactional email.
CREATE TABLE notification_preferences (
    user_id         TEXT PRIMARY KEY,
    order_sms       BOOLEAN NOT NULL DEFAULT FALSE,
    phone           TEXT,
    marketing_email BOOLEAN NOT NULL DEFAULT FALSE,
    stock_digest    BOOLEAN NOT NULL DEFAULT TRUE,
    updated_ms      BIGINT NOT NULL
);

-- Staff's versions of the shipped templates (a key without a row uses the shipped one).
CREATE TABLE notification_templates (
    key        TEXT PRIMARY KEY,
    subject    TEXT NOT NULL DEFAULT '',
    html       TEXT NOT NULL DEFAULT '',
    text       TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    updated_by TEXT
);

-- Every message to send or sent: email, SMS or webhook. Rendered when
-- queued, so a retry sends the same thing. `dedupe_key` makes an event
-- delivered twice queue each message once.
CREATE TABLE deliveries (
    id                  TEXT PRIMARY KEY,
    dedupe_key          TEXT NOT NULL UNIQUE,
    event_id            TEXT,
    event_type          TEXT NOT NULL,
    template            TEXT,
    channel             TEXT NOT NULL CHECK (channel IN ('email', 'sms', 'webhook')),
    recipient           TEXT NOT NULL,
    user_id             TEXT,
    endpoint_id         TEXT,
    subject             TEXT NOT NULL DEFAULT '',
    body                TEXT NOT NULL,
    html                TEXT,
    unsubscribe_url     TEXT,
    status              TEXT NOT NULL CHECK (status IN ('queued', 'sent', 'failed', 'dead')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms     BIGINT NOT NULL,
    lease_until_ms      BIGINT NOT NULL DEFAULT 0,
    give_up_ms          BIGINT,
    last_error          TEXT,
    provider_message_id TEXT,
    created_ms          BIGINT NOT NULL,
    updated_ms          BIGINT NOT NULL,
    sent_ms             BIGINT
);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_ms);
CREATE INDEX deliveries_user ON deliveries (user_id);
CREATE INDEX deliveries_endpoint ON deliveries (endpoint_id, created_ms);

-- Each attempt at a delivery, as it went.
CREATE TABLE delivery_attempts (
    delivery_id TEXT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    at_ms       BIGINT NOT NULL,
    ok          BOOLEAN NOT NULL,
    status_code INTEGER,
    error       TEXT,
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

-- The dev mailbox: email and SMS that went nowhere but here (no provider configured).
CREATE TABLE mailbox (
    id          TEXT PRIMARY KEY,
    delivery_id TEXT NOT NULL,
    channel     TEXT NOT NULL,
    sender      TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    subject     TEXT NOT NULL DEFAULT '',
    text        TEXT NOT NULL,
    html        TEXT,
    headers     TEXT NOT NULL DEFAULT '{}',
    created_ms  BIGINT NOT NULL
);
CREATE INDEX mailbox_delivery ON mailbox (delivery_id);

-- Shoppers waiting for a product (or one SKU of it, `sku` '' for any) to be back.
CREATE TABLE stock_alerts (
    id          TEXT PRIMARY KEY,
    product_id  TEXT NOT NULL,
    sku         TEXT NOT NULL DEFAULT '',
    email       TEXT NOT NULL,
    user_id     TEXT,
    title       TEXT NOT NULL,
    slug        TEXT NOT NULL DEFAULT '',
    created_ms  BIGINT NOT NULL,
    notified_ms BIGINT,
    UNIQUE (product_id, sku, email)
);

-- SKUs that ran low, at most one line a day each, until the digest takes them.
CREATE TABLE low_stock (
    sku         TEXT NOT NULL,
    day         TEXT NOT NULL,
    product_id  TEXT NOT NULL DEFAULT '',
    title       TEXT NOT NULL DEFAULT '',
    available   BIGINT NOT NULL,
    created_ms  BIGINT NOT NULL,
    digested_ms BIGINT,
    PRIMARY KEY (sku, day)
);

-- Orders as the messages about them need them (number, link, receipt).
CREATE TABLE order_facts (
    order_id     TEXT PRIMARY KEY,
    number       BIGINT NOT NULL,
    email        TEXT,
    user_id      TEXT,
    lookup_token TEXT,
    placed       TEXT NOT NULL,
    -- When the order was paid or cancelled (an "order received" is needless then).
    settled_ms   BIGINT,
    created_ms   BIGINT NOT NULL
);

-- Merchants' endpoints and the events they want.
CREATE TABLE webhook_endpoints (
    id              TEXT PRIMARY KEY,
    url             TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    secret          TEXT NOT NULL,
    event_types     TEXT NOT NULL,
    enabled         BOOLEAN NOT NULL DEFAULT TRUE,
    disabled_reason TEXT,
    last_success_ms BIGINT,
    created_ms      BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL
);

CREATE TABLE notify_settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
