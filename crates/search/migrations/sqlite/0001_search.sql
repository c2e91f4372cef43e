-- Words shoppers use for the same thing (tee, t-shirt), applied at query time.
CREATE TABLE synonym_groups (
    position BIGINT PRIMARY KEY,
    words    TEXT NOT NULL
);

-- Searches that found nothing: what shoppers want and cannot find.
CREATE TABLE no_results (
    query      TEXT PRIMARY KEY,
    searches   BIGINT NOT NULL,
    last_ms    BIGINT NOT NULL
);
CREATE INDEX no_results_count ON no_results (searches DESC, query);
