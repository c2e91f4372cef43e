-- Why an endpoint was switched off quoted its last error (resolver answers,
-- refused addresses, status codes) to `settings:write`; that detail stays in
-- the delivery log only.
UPDATE webhook_endpoints SET disabled_reason = 'deliveries kept failing; what failed is in the delivery log (staff with staff:manage)'
WHERE disabled_reason IS NOT NULL;
