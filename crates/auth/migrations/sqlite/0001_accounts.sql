-- Accounts. The email is stored normalised (trimmed, lower case) and unique.
CREATE TABLE users (
    id                TEXT PRIMARY KEY,
    email             TEXT NOT NULL UNIQUE,
    email_verified_at TEXT,
    name              TEXT NOT NULL,
    phone             TEXT,
    locale            TEXT,
    password_hash     TEXT,
    roles             TEXT NOT NULL DEFAULT 'customer',
    disabled_at       TEXT,
    failed_logins     INTEGER NOT NULL DEFAULT 0,
    lockouts          INTEGER NOT NULL DEFAULT 0,
    locked_until_ms   BIGINT,
    totp_secret       TEXT,
    totp_enabled_at   TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);

-- Refresh tokens, stored as hashes. A login starts a family; each refresh
-- uses one token up and adds the next. Reusing a used token revokes the family.
CREATE TABLE refresh_tokens (
    id            TEXT PRIMARY KEY,
    family_id     TEXT NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    used_at_ms    BIGINT,
    revoked_at_ms BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

-- Single-use tokens mailed to users (email verification, password reset), as hashes.
CREATE TABLE one_time_tokens (
    token_hash    TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose       TEXT NOT NULL CHECK (purpose IN ('verify_email', 'reset_password')),
    email         TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    used_at_ms    BIGINT,
    created_at    TEXT NOT NULL
);

-- Access-token signing keys (Ed25519). The private key is encrypted when a
-- key-encryption key is configured. Retired keys stay published until the
-- tokens they signed have expired.
CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY,
    algorithm     TEXT NOT NULL,
    private_key   BLOB NOT NULL,
    encrypted     BOOLEAN NOT NULL,
    public_key    BLOB NOT NULL,
    created_at_ms BIGINT NOT NULL,
    retired_at_ms BIGINT
);

-- Staff actions and security events.
CREATE TABLE audit_log (
    id         TEXT PRIMARY KEY,
    at         TEXT NOT NULL,
    actor_id   TEXT,
    action     TEXT NOT NULL,
    subject_id TEXT,
    ip         TEXT,
    detail     TEXT NOT NULL
);
CREATE INDEX audit_log_subject ON audit_log (subject_id);
