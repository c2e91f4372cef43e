-- What was bought together and by whom, and what is selling or being
-- looked at now: the statistics behind recommendations, kept up to date by
-- order.paid events and product views (each event counted once).
CREATE TABLE purchases (
    order_id   TEXT NOT NULL,
    product_id TEXT NOT NULL,
    buyer      TEXT NOT NULL,
    at_ms      BIGINT NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
CREATE INDEX purchases_buyer ON purchases (buyer, at_ms);

-- Customers who bought a product, and customers who bought both of two
-- ("customers who bought this also bought"), each customer counted once.
CREATE TABLE product_buyers (
    product_id TEXT PRIMARY KEY,
    buyers     BIGINT NOT NULL
);
CREATE TABLE co_purchases (
    a      TEXT NOT NULL,
    b      TEXT NOT NULL,
    buyers BIGINT NOT NULL,
    PRIMARY KEY (a, b)
);

-- Exponentially decayed popularity: `score` as of `at_ms`.
CREATE TABLE trend (
    product_id TEXT PRIMARY KEY,
    score      DOUBLE PRECISION NOT NULL,
    at_ms      BIGINT NOT NULL
);

CREATE TABLE views (
    viewer     TEXT NOT NULL,
    product_id TEXT NOT NULL,
    at_ms      BIGINT NOT NULL
);
CREATE INDEX views_viewer ON views (viewer, at_ms);
