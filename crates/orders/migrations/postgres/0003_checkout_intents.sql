-- A checkout about to hold stock, written before the catalog is asked to
-- reserve it (under `reservation_key`: the order id to be, or the order's
-- key for a new payment attempt) and removed in the transaction that
-- writes the order or its new attempt. One left behind belongs to a
-- checkout that died in between: the reconciler claims it (`releasing`,
-- until `claimed_until_ms`) and releases its reservation.
CREATE TABLE checkout_intents (
    reservation_key  TEXT PRIMARY KEY,
    order_id         TEXT NOT NULL,
    cart_id          TEXT NOT NULL,
    -- 1 for a cart's checkout, the new attempt's number for another card on an order.
    attempt          BIGINT NOT NULL,
    -- What is reserved, as JSON: a retry reuses the intent only for the same lines.
    lines            TEXT NOT NULL,
    -- The idempotent request that made it (see payments.checkout_attempt).
    checkout_attempt TEXT,
    state            TEXT NOT NULL CHECK (state IN ('open', 'releasing')),
    created_ms       BIGINT NOT NULL,
    claimed_until_ms BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX checkout_intents_cart ON checkout_intents (cart_id, checkout_attempt);
CREATE INDEX checkout_intents_created ON checkout_intents (created_ms);

-- The idempotent request (caller, Idempotency-Key and body, hashed) that
-- made a payment attempt: a retry of that request, even one that took its
-- key over from a process that died, is answered with the order.
ALTER TABLE payments ADD COLUMN checkout_attempt TEXT;
CREATE INDEX payments_checkout_attempt ON payments (order_id, checkout_attempt);
