-- A product's view as the API shows it, less its stock, kept on the
-- product's row so that a page reads one row per product instead of its
-- variants, prices, categories and pictures. `revision` moves on every
-- change to what the view shows (the triggers below, so that no writer can
-- forget); a kept view is current while `view_revision = revision`.
ALTER TABLE products ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
ALTER TABLE products ADD COLUMN view TEXT;
ALTER TABLE products ADD COLUMN view_revision BIGINT;

CREATE FUNCTION products_revision() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.revision := OLD.revision + 1;
    RETURN NEW;
END $$;
CREATE TRIGGER products_revision
BEFORE UPDATE OF slug, title, description, status, brand, tags, seo_title, seo_description, attributes, options,
    created_at, updated_at ON products
FOR EACH ROW EXECUTE FUNCTION products_revision();

-- For the tables that name their product in `product_id`.
CREATE FUNCTION product_part_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE products SET revision = revision + 1 WHERE id = OLD.product_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        UPDATE products SET revision = revision + 1 WHERE id = NEW.product_id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER variants_changed AFTER INSERT OR UPDATE OR DELETE ON variants
FOR EACH ROW EXECUTE FUNCTION product_part_changed();
CREATE TRIGGER product_media_changed AFTER INSERT OR UPDATE OR DELETE ON product_media
FOR EACH ROW EXECUTE FUNCTION product_part_changed();

-- A product's view names its categories. A new link waits for a rename of
-- its category in flight (FOR SHARE against the rename's row lock), so a
-- reader never keeps, as current, a view with the name from before it.
CREATE FUNCTION product_categories_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE products SET revision = revision + 1 WHERE id = OLD.product_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM 1 FROM categories WHERE id = NEW.category_id FOR SHARE;
        UPDATE products SET revision = revision + 1 WHERE id = NEW.product_id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER product_categories_changed AFTER INSERT OR UPDATE OR DELETE ON product_categories
FOR EACH ROW EXECUTE FUNCTION product_categories_changed();

CREATE FUNCTION variant_prices_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE products SET revision = revision + 1 WHERE id = (SELECT product_id FROM variants WHERE id = OLD.variant_id);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        UPDATE products SET revision = revision + 1 WHERE id = (SELECT product_id FROM variants WHERE id = NEW.variant_id);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER variant_prices_changed AFTER INSERT OR UPDATE OR DELETE ON variant_prices
FOR EACH ROW EXECUTE FUNCTION variant_prices_changed();

-- A product's view names its categories.
CREATE FUNCTION categories_renamed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE products SET revision = revision + 1
    WHERE id IN (SELECT product_id FROM product_categories WHERE category_id = NEW.id);
    RETURN NULL;
END $$;
CREATE TRIGGER categories_renamed AFTER UPDATE OF slug, name ON categories
FOR EACH ROW EXECUTE FUNCTION categories_renamed();
