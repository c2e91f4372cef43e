-- Revoking a user's access tokens raises their generation; tokens carry the
-- generation they were issued at and older ones are refused.
ALTER TABLE users ADD COLUMN token_generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN tokens_revoked_at_ms BIGINT;
