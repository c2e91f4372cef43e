-- Carts: what a shopper is about to buy. A guest cart is reached with its
-- secret (only its hash is kept); a customer's cart with their token.
CREATE TABLE carts (
    id                 TEXT PRIMARY KEY,
    secret_hash        TEXT,
    user_id            TEXT,
    currency           TEXT NOT NULL,
    email              TEXT,
    shipping_address   TEXT,
    billing_address    TEXT,
    shipping_method_id TEXT,
    discount_code      TEXT,
    status             TEXT NOT NULL CHECK (status IN ('open', 'ordered', 'merged')),
    order_id           TEXT,
    created_ms         BIGINT NOT NULL,
    updated_ms         BIGINT NOT NULL
);
CREATE INDEX carts_user ON carts (user_id, status);

-- `unit_price` is the price the shopper was last shown: a catalog price that
-- differs from it is reported on the cart, never taken silently at payment.
CREATE TABLE cart_items (
    id         TEXT PRIMARY KEY,
    cart_id    TEXT NOT NULL REFERENCES carts (id) ON DELETE CASCADE,
    sku        TEXT NOT NULL,
    quantity   BIGINT NOT NULL CHECK (quantity > 0),
    unit_price BIGINT,
    UNIQUE (cart_id, sku)
);

-- Discount codes. `percent_off` in whole percent or `amount_off` in minor units.
CREATE TABLE discounts (
    id                 TEXT PRIMARY KEY,
    code               TEXT NOT NULL UNIQUE,
    kind               TEXT NOT NULL CHECK (kind IN ('percentage', 'fixed', 'free_shipping')),
    percent_off        BIGINT,
    amount_off         BIGINT,
    currency           TEXT,
    product_ids        TEXT NOT NULL DEFAULT '[]',
    category_ids       TEXT NOT NULL DEFAULT '[]',
    min_subtotal       BIGINT,
    free_shipping      BOOLEAN NOT NULL DEFAULT FALSE,
    starts_ms          BIGINT,
    ends_ms            BIGINT,
    usage_limit        BIGINT,
    per_customer_limit BIGINT,
    times_used         BIGINT NOT NULL DEFAULT 0,
    active             BOOLEAN NOT NULL DEFAULT TRUE,
    created_ms         BIGINT NOT NULL,
    CHECK (usage_limit IS NULL OR times_used <= usage_limit)
);

-- One row per customer and code: the counter the per-customer limit is
-- enforced on, with one conditional upsert.
CREATE TABLE discount_uses (
    discount_id  TEXT NOT NULL REFERENCES discounts (id) ON DELETE CASCADE,
    customer_key TEXT NOT NULL,
    uses         BIGINT NOT NULL,
    PRIMARY KEY (discount_id, customer_key)
);

CREATE TABLE shipping_methods (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    countries    TEXT NOT NULL,
    currency     TEXT NOT NULL,
    flat_amount  BIGINT,
    weight_bands TEXT,
    free_above   BIGINT,
    min_days     BIGINT NOT NULL,
    max_days     BIGINT NOT NULL,
    active       BOOLEAN NOT NULL DEFAULT TRUE,
    created_ms   BIGINT NOT NULL
);

-- Basis points: 1900 is 19 %. An empty region is the whole country.
CREATE TABLE tax_rates (
    id               TEXT PRIMARY KEY,
    country          TEXT NOT NULL,
    region           TEXT NOT NULL DEFAULT '',
    name             TEXT NOT NULL,
    rate_bp          BIGINT NOT NULL CHECK (rate_bp >= 0 AND rate_bp <= 10000),
    shipping_taxable BOOLEAN NOT NULL DEFAULT TRUE,
    UNIQUE (country, region)
);

CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('order_number', 1000);

-- An order keeps what was bought as it was: titles, prices, addresses.
CREATE TABLE orders (
    id                 TEXT PRIMARY KEY,
    number             BIGINT NOT NULL UNIQUE,
    cart_id            TEXT NOT NULL UNIQUE,
    user_id            TEXT,
    email              TEXT,
    lookup_hash        TEXT NOT NULL,
    status             TEXT NOT NULL,
    currency           TEXT NOT NULL,
    subtotal           BIGINT NOT NULL,
    discount_total     BIGINT NOT NULL,
    shipping_total     BIGINT NOT NULL,
    tax_total          BIGINT NOT NULL,
    total              BIGINT NOT NULL,
    prices_include_tax BOOLEAN NOT NULL,
    shipping_address   TEXT,
    billing_address    TEXT,
    shipping_method    TEXT,
    discount_id        TEXT,
    discount_code      TEXT,
    customer_key       TEXT NOT NULL,
    capture_mode       TEXT NOT NULL,
    attempt            BIGINT NOT NULL DEFAULT 1,
    -- The stock held for the current attempt: held, committed or released.
    stock              TEXT NOT NULL DEFAULT 'held',
    captured           BIGINT NOT NULL DEFAULT 0,
    refunded           BIGINT NOT NULL DEFAULT 0,
    placed_ms          BIGINT NOT NULL,
    paid_ms            BIGINT,
    updated_ms         BIGINT NOT NULL
);
CREATE INDEX orders_user ON orders (user_id, id);
CREATE INDEX orders_status ON orders (status, updated_ms);
CREATE INDEX orders_placed ON orders (placed_ms);

CREATE TABLE order_lines (
    order_id      TEXT NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no       BIGINT NOT NULL,
    sku           TEXT NOT NULL,
    product_id    TEXT NOT NULL,
    variant_id    TEXT NOT NULL,
    title         TEXT NOT NULL,
    variant_title TEXT NOT NULL,
    unit_price    BIGINT NOT NULL,
    quantity      BIGINT NOT NULL CHECK (quantity > 0),
    discount      BIGINT NOT NULL,
    tax           BIGINT NOT NULL,
    total         BIGINT NOT NULL,
    fulfilled     BIGINT NOT NULL DEFAULT 0,
    returned      BIGINT NOT NULL DEFAULT 0,
    refunded      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (order_id, line_no),
    CHECK (fulfilled <= quantity AND returned <= quantity AND refunded <= quantity)
);

-- Every change of an order: what, when, by whom.
CREATE TABLE order_timeline (
    id       TEXT PRIMARY KEY,
    order_id TEXT NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    at_ms    BIGINT NOT NULL,
    kind     TEXT NOT NULL,
    actor    TEXT,
    data     TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX order_timeline_order ON order_timeline (order_id, id);

-- One row per attempt to pay an order.
CREATE TABLE payments (
    id              TEXT PRIMARY KEY,
    order_id        TEXT NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    attempt         BIGINT NOT NULL,
    provider        TEXT NOT NULL,
    provider_ref    TEXT,
    -- The single-use card token, kept only until the attempt is settled.
    token           TEXT,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'requires_action', 'authorized', 'captured', 'failed', 'voided')),
    amount          BIGINT NOT NULL,
    captured        BIGINT NOT NULL DEFAULT 0,
    refunded        BIGINT NOT NULL DEFAULT 0,
    failure_code    TEXT,
    failure_message TEXT,
    next_action_url TEXT,
    created_ms      BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL,
    UNIQUE (order_id, attempt)
);
CREATE INDEX payments_ref ON payments (provider, provider_ref);

CREATE TABLE fulfilments (
    id              TEXT PRIMARY KEY,
    order_id        TEXT NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    carrier         TEXT,
    tracking_number TEXT,
    tracking_url    TEXT,
    lines           TEXT NOT NULL,
    created_ms      BIGINT NOT NULL,
    delivered_ms    BIGINT
);
CREATE INDEX fulfilments_order ON fulfilments (order_id);

CREATE TABLE refunds (
    id           TEXT PRIMARY KEY,
    order_id     TEXT NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    payment_id   TEXT NOT NULL,
    amount       BIGINT NOT NULL CHECK (amount > 0),
    reason       TEXT NOT NULL,
    restock      BOOLEAN NOT NULL,
    lines        TEXT NOT NULL DEFAULT '[]',
    status       TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    provider_ref TEXT,
    actor        TEXT,
    created_ms   BIGINT NOT NULL
);
CREATE INDEX refunds_order ON refunds (order_id);

CREATE TABLE returns (
    id         TEXT PRIMARY KEY,
    order_id   TEXT NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    status     TEXT NOT NULL CHECK (status IN ('requested', 'approved', 'rejected', 'received', 'refunded')),
    reason     TEXT NOT NULL,
    lines      TEXT NOT NULL,
    refund_id  TEXT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX returns_status ON returns (status, id);

-- The built-in test gateway's own book of charges: what a card network
-- would remember, so a repeated request is recognised and never charged twice.
CREATE TABLE test_gateway_charges (
    reference       TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    token           TEXT NOT NULL,
    amount          BIGINT NOT NULL,
    currency        TEXT NOT NULL,
    status          TEXT NOT NULL,
    captured        BIGINT NOT NULL DEFAULT 0,
    refunded        BIGINT NOT NULL DEFAULT 0,
    created_ms      BIGINT NOT NULL
);
