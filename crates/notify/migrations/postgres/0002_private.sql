-- Private messages (password resets, verification and guest order links)
-- are stored with their links withheld; the links wait here, sealed, until
-- the message is sent or given up, then are dropped ('').
ALTER TABLE deliveries ADD COLUMN secret TEXT;

-- Guests' lookup tokens were kept in clear: they are sealed from now on, and
-- the old ones are forgotten.
UPDATE order_facts SET lookup_token = NULL;
UPDATE order_facts SET placed = (placed::jsonb - 'lookup_token')::text WHERE placed <> '{}';

-- Messages already sent with a key in them keep their metadata only.
UPDATE deliveries SET body = '[content withheld]', html = NULL
WHERE status <> 'queued' AND (body LIKE '%token=%' OR html LIKE '%token=%');
