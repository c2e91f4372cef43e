-- Options a product declares ([{"name": "Size", "values": ["S", "M"]}]) and
-- the value of each option a variant takes (["S"]), in the same order.
ALTER TABLE products ADD COLUMN options TEXT NOT NULL DEFAULT '[]';
ALTER TABLE variants ADD COLUMN option_values TEXT NOT NULL DEFAULT '[]';

-- Stock locations are managed by staff; the default one stays.
ALTER TABLE stock_locations ADD COLUMN created_at TEXT;

-- A variant that allows backorders may sell more than is on hand, so on
-- hand may fall below zero; every other guard is in the conditional updates.
CREATE TABLE inventory_levels_new (
    sku         TEXT NOT NULL,
    location_id TEXT NOT NULL REFERENCES stock_locations (id),
    on_hand     BIGINT NOT NULL DEFAULT 0,
    reserved    BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    PRIMARY KEY (sku, location_id)
);
INSERT INTO inventory_levels_new (sku, location_id, on_hand, reserved)
    SELECT sku, location_id, on_hand, reserved FROM inventory_levels;
DROP TABLE inventory_levels;
ALTER TABLE inventory_levels_new RENAME TO inventory_levels;

-- Pictures of a product: uploaded (stored in the object store under
-- `object_key`, with thumbnails) or a recorded address (`source_url`).
CREATE TABLE product_media (
    id           TEXT PRIMARY KEY,
    product_id   TEXT NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    object_key   TEXT,
    source_url   TEXT,
    content_type TEXT,
    alt          TEXT NOT NULL DEFAULT '',
    position     INTEGER NOT NULL DEFAULT 0,
    width        INTEGER,
    height       INTEGER,
    byte_size    BIGINT,
    thumbnails   TEXT NOT NULL DEFAULT '[]',
    created_at   TEXT NOT NULL
);
CREATE INDEX product_media_product ON product_media (product_id, position);
