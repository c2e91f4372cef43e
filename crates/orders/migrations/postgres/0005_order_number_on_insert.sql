-- An order takes its number in its own INSERT, from the `order_numbers`
-- sequence (0004); nothing to change here.
SELECT 1;
