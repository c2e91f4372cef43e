-- A tree of categories; a product may sit in several.
CREATE TABLE categories (
    id         TEXT PRIMARY KEY,
    parent_id  TEXT REFERENCES categories (id),
    slug       TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    position   INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE INDEX categories_parent ON categories (parent_id);

CREATE TABLE product_categories (
    product_id  TEXT NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    category_id TEXT NOT NULL REFERENCES categories (id) ON DELETE CASCADE,
    PRIMARY KEY (product_id, category_id)
);
CREATE INDEX product_categories_category ON product_categories (category_id);

-- Search-engine texts and free-form attributes (material, colour, ...) as JSON.
ALTER TABLE products ADD COLUMN seo_title TEXT;
ALTER TABLE products ADD COLUMN seo_description TEXT;
ALTER TABLE products ADD COLUMN attributes TEXT NOT NULL DEFAULT '{}';
ALTER TABLE variants ADD COLUMN barcode TEXT;
ALTER TABLE variants ADD COLUMN weight_grams BIGINT;
ALTER TABLE variant_prices ADD COLUMN compare_at BIGINT;
CREATE INDEX variant_prices_currency ON variant_prices (currency, amount);
