-- What is sold: products, their variants (one SKU each) and prices per currency.
CREATE TABLE products (
    id              TEXT PRIMARY KEY,
    slug            TEXT NOT NULL UNIQUE,
    title           TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    status          TEXT NOT NULL CHECK (status IN ('draft', 'active', 'archived')),
    brand           TEXT,
    tags            TEXT NOT NULL DEFAULT '',
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX products_status ON products (status, id);

CREATE TABLE variants (
    id                  TEXT PRIMARY KEY,
    product_id          TEXT NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    sku                 TEXT NOT NULL UNIQUE,
    title               TEXT NOT NULL,
    track_inventory     BOOLEAN NOT NULL DEFAULT TRUE,
    allow_backorder     BOOLEAN NOT NULL DEFAULT FALSE,
    low_stock_threshold BIGINT NOT NULL DEFAULT 5,
    position            INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX variants_product ON variants (product_id);

CREATE TABLE variant_prices (
    variant_id TEXT NOT NULL REFERENCES variants (id) ON DELETE CASCADE,
    currency   TEXT NOT NULL,
    amount     BIGINT NOT NULL CHECK (amount >= 0),
    PRIMARY KEY (variant_id, currency)
);

-- How many are left: per SKU and stock location. available = on_hand - reserved.
CREATE TABLE stock_locations (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    is_default BOOLEAN NOT NULL DEFAULT FALSE
);
INSERT INTO stock_locations (id, name, is_default) VALUES ('loc_default', 'Default', TRUE);

CREATE TABLE inventory_levels (
    sku         TEXT NOT NULL,
    location_id TEXT NOT NULL REFERENCES stock_locations (id),
    on_hand     BIGINT NOT NULL DEFAULT 0 CHECK (on_hand >= 0),
    reserved    BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    PRIMARY KEY (sku, location_id)
);

-- Every change of stock: who, when, why, by how much.
CREATE TABLE inventory_ledger (
    id            TEXT PRIMARY KEY,
    sku           TEXT NOT NULL,
    location_id   TEXT NOT NULL,
    delta         BIGINT NOT NULL,
    on_hand_after BIGINT NOT NULL,
    reason        TEXT NOT NULL,
    actor_id      TEXT,
    reference     TEXT,
    at            TIMESTAMPTZ NOT NULL
);
CREATE INDEX inventory_ledger_sku ON inventory_ledger (sku, id);

-- Stock held for an order between reservation and payment.
CREATE TABLE reservations (
    order_id      TEXT PRIMARY KEY,
    state         TEXT NOT NULL CHECK (state IN ('held', 'committed', 'released')),
    expires_at_ms BIGINT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX reservations_expiry ON reservations (state, expires_at_ms);

CREATE TABLE reservation_lines (
    order_id    TEXT NOT NULL REFERENCES reservations (order_id) ON DELETE CASCADE,
    sku         TEXT NOT NULL,
    location_id TEXT NOT NULL,
    quantity    BIGINT NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, sku, location_id)
);
