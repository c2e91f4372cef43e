-- SQLite has no sequences, and needs none: its writes are made one at a
-- time through one writer connection, so the `counters` row bumped inside the
-- checkout's transaction is never waited on. Nothing changes here.
SELECT 1;
