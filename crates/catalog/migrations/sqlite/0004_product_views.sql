-- A product's view as the API shows it, less its stock, kept on the
-- product's row so that a page reads one row per product instead of its
-- variants, prices, categories and pictures. `revision` moves on every
-- change to what the view shows (the triggers below, so that no writer can
-- forget); a kept view is current while `view_revision = revision`.
ALTER TABLE products ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
ALTER TABLE products ADD COLUMN view TEXT;
ALTER TABLE products ADD COLUMN view_revision BIGINT;

CREATE TRIGGER products_revision
AFTER UPDATE OF slug, title, description, status, brand, tags, seo_title, seo_description, attributes, options,
    created_at, updated_at ON products
BEGIN
    UPDATE products SET revision = revision + 1 WHERE id = NEW.id;
END;

CREATE TRIGGER variants_inserted AFTER INSERT ON variants
BEGIN
    UPDATE products SET revision = revision + 1 WHERE id = NEW.product_id;
END;
CREATE TRIGGER variants_updated AFTER UPDATE ON variants
BEGIN
    UPDATE products SET revision = revision + 1 WHERE id IN (OLD.product_id, NEW.product_id);
END;
CREATE TRIGGER variants_deleted AFTER DELETE ON variants
BEGIN
    UPDATE products SET revision = revision + 1 WHERE id = OLD.product_id;
END;

CREATE TRIGGER variant_prices_inserted AFTER INSERT ON variant_prices
BEGIN
    UPDATE products SET revision = revision + 1 WHERE id = (SELECT product_id FROM variants WHERE id = NEW.variant_id);
END;
CREATE TRIGGER variant_prices_updated AFTER UPDATE ON variant_prices
BEGIN
    UPDATE products SET revision = revision + 1
    WHERE id IN (SELECT product_id FROM variants WHERE id IN (OLD.variant_id, NEW.variant_id));
END;
CREATE TRIGGER variant_prices_deleted AFTER DELETE ON variant_prices
BEGIN
    UPDATE products SET revision = revision + 1 WHERE id = (SELECT product_id FROM variants WHERE id = OLD.variant_id);
END;

CREATE TRIGGER product_media_inserted AFTER INSERT ON product_media
BEGIN
    UPDATE products SET revision = revision + 1 WHERE id = NEW.product_id;
END;
CREATE TRIGGER product_media_updated AFTER UPDATE ON product_media
BEGIN
    UPDATE products SET revision = revision + 1 WHERE id IN (OLD.product_id, NEW.product_id);
END;
CREATE TRIGGER product_media_deleted AFTER DELETE ON product_media
BEGIN
    UPDATE products SET revision = revision + 1 WHERE id = OLD.product_id;
END;

CREATE TRIGGER product_categories_inserted AFTER INSERT ON product_categories
BEGIN
    UPDATE products SET revision = revision + 1 WHERE id = NEW.product_id;
END;
CREATE TRIGGER product_categories_updated AFTER UPDATE ON product_categories
BEGIN
    UPDATE products SET revision = revision + 1 WHERE id IN (OLD.product_id, NEW.product_id);
END;
CREATE TRIGGER product_categories_deleted AFTER DELETE ON product_categories
BEGIN
    UPDATE products SET revision = revision + 1 WHERE id = OLD.product_id;
END;

-- A product's view names its categories.
CREATE TRIGGER categories_renamed AFTER UPDATE OF slug, name ON categories
BEGIN
    UPDATE products SET revision = revision + 1
    WHERE id IN (SELECT product_id FROM product_categories WHERE category_id = NEW.id);
END;
