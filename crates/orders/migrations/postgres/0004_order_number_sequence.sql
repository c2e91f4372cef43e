-- Order numbers come from a sequence: handing one out takes no row lock, so
-- concurrent checkouts no longer queue on the `counters` row. A number taken
-- by a checkout that then fails is not reused (numbers may skip).
CREATE SEQUENCE order_numbers AS BIGINT;
SELECT setval('order_numbers', (SELECT value FROM counters WHERE name = 'order_number'), TRUE);
DELETE FROM counters WHERE name = 'order_number';
