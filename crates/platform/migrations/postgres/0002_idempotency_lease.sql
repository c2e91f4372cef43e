-- A running request holds its key with a short lease that it renews while
-- its handler runs (`locked_until_ms` is the lease's end); `lease_holder`
-- names the request, so only it renews, completes or gives the key up.
-- A lease that lapsed belongs to a request that died: the next request
-- with the same key and body takes it over.
ALTER TABLE idempotency_keys ADD COLUMN lease_holder TEXT;
CREATE INDEX idempotency_keys_running ON idempotency_keys (locked_until_ms) WHERE state = 'running';
