//! Every SQL statement of the auth service.

use kernel::auth::Role;
use kernel::id::UserId;
use platform::db::{Db, DbError, Tx, now_ms};
use platform::{on_db, on_tx, on_write};
use time::OffsetDateTime;

/// An account as stored.
#[derive(Debug, Clone)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub email_verified_at: Option<OffsetDateTime>,
    pub name: String,
    pub phone: Option<String>,
    pub locale: Option<String>,
    pub password_hash: Option<String>,
    pub roles: Vec<Role>,
    pub disabled_at: Option<OffsetDateTime>,
    pub failed_logins: i32,
    pub lockouts: i32,
    pub locked_until_ms: Option<i64>,
    pub totp_secret: Option<String>,
    pub totp_enabled_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
}

const USER_COLUMNS: &str = "id, email, email_verified_at, name, phone, locale, password_hash, roles, \
    disabled_at, failed_logins, lockouts, locked_until_ms, totp_secret, totp_enabled_at, created_at";

type UserTuple = (
    String,
    String,
    Option<OffsetDateTime>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    Option<OffsetDateTime>,
    i32,
    i32,
    Option<i64>,
    Option<String>,
    Option<OffsetDateTime>,
    OffsetDateTime,
);

fn user_from(t: UserTuple) -> Result<User, DbError> {
    let id = UserId::parse(&t.0).map_err(|e| DbError::Corrupt(e.to_string()))?;
    Ok(User {
        id,
        email: t.1,
        email_verified_at: t.2,
        name: t.3,
        phone: t.4,
        locale: t.5,
        password_hash: t.6,
        roles: parse_roles(&t.7),
        disabled_at: t.8,
        failed_logins: t.9,
        lockouts: t.10,
        locked_until_ms: t.11,
        totp_secret: t.12,
        totp_enabled_at: t.13,
        created_at: t.14,
    })
}

pub fn parse_roles(text: &str) -> Vec<Role> {
    let mut roles: Vec<Role> = text.split(',').filter_map(|r| Role::parse(r.trim())).collect();
    if roles.is_empty() {
        roles.push(Role::Customer);
    }
    roles
}

pub fn roles_text(roles: &[Role]) -> String {
    roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",")
}

pub struct NewUser<'a> {
    pub id: UserId,
    pub email: &'a str,
    pub name: &'a str,
    pub password_hash: &'a str,
    pub roles: &'a [Role],
}

pub async fn insert_user(tx: &mut Tx, user: &NewUser<'_>) -> Result<(), DbError> {
    let now = OffsetDateTime::now_utc();
    on_tx!(tx, conn => sqlx::query(
        "INSERT INTO users (id, email, name, password_hash, roles, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6)")
        .bind(user.id.to_string()).bind(user.email).bind(user.name).bind(user.password_hash)
        .bind(roles_text(user.roles)).bind(now)
        .execute(conn).await.map(|_| ()))?;
    Ok(())
}

pub async fn user_by_email(db: &Db, email: &str) -> Result<Option<User>, DbError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1");
    let row: Option<UserTuple> = on_db!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(email).fetch_optional(pool).await)?;
    row.map(user_from).transpose()
}

pub async fn user_by_id(db: &Db, id: &UserId) -> Result<Option<User>, DbError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
    let row: Option<UserTuple> =
        on_db!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id.to_string()).fetch_optional(pool).await)?;
    row.map(user_from).transpose()
}

/// Users in id order after `after`, optionally filtered, `limit + 1` of them.
pub async fn list_users(
    db: &Db,
    email_contains: Option<&str>,
    role: Option<Role>,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<User>, DbError> {
    // Roles are stored comma-separated; wrapping both sides in commas makes
    // the match exact.
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM users WHERE ($1 IS NULL OR email LIKE $1) \
         AND ($2 IS NULL OR (',' || roles || ',') LIKE $2) AND ($3 IS NULL OR id > $3) \
         ORDER BY id LIMIT $4"
    );
    let pattern = email_contains.map(|e| format!("%{}%", e.to_lowercase().replace(['%', '_'], "")));
    let role = role.map(|r| format!("%,{},%", r.as_str()));
    let rows: Vec<UserTuple> = on_db!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(pattern).bind(role).bind(after).bind(i64::from(limit) + 1)
        .fetch_all(pool).await)?;
    rows.into_iter().map(user_from).collect()
}

/// Replaces a password hash with a stronger one of the same password, unless
/// the password changed since `old` was read.
pub async fn rehash_password(db: &Db, id: &UserId, old: &str, hash: &str) -> Result<(), DbError> {
    on_write!(db, pool => sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3 AND password_hash = $4")
        .bind(hash).bind(OffsetDateTime::now_utc()).bind(id.to_string()).bind(old).execute(pool).await.map(|_| ()))?;
    Ok(())
}

/// Sets a new password, in the transaction that signs the user out.
pub async fn set_password_hash(tx: &mut Tx, id: &UserId, hash: &str) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
        .bind(hash).bind(OffsetDateTime::now_utc()).bind(id.to_string()).execute(c).await.map(|_| ()))?;
    Ok(())
}

/// Replaces the password the caller just confirmed, in the transaction that
/// signs the user out; false (nothing written) when the hash is no longer
/// `old`, so a change confirmed with the old password cannot undo a reset
/// that committed meanwhile.
pub async fn replace_password_hash(tx: &mut Tx, id: &UserId, old: &str, hash: &str) -> Result<bool, DbError> {
    let n = on_tx!(tx, c => sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3 AND password_hash = $4")
        .bind(hash).bind(OffsetDateTime::now_utc()).bind(id.to_string()).bind(old).execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// A user read inside `tx` (after [`lock_user`], what it says holds until commit).
pub async fn user_by_id_in(tx: &mut Tx, id: &UserId) -> Result<Option<User>, DbError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
    let row: Option<UserTuple> =
        on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id.to_string()).fetch_optional(c).await)?;
    row.map(user_from).transpose()
}

/// Locks a user's row for the rest of `tx`; false if there is none. Every
/// transaction that writes a user's row and their tokens (refresh, one-time)
/// locks the row first, so two of them never wait on each other in a circle.
pub async fn lock_user(tx: &mut Tx, id: &UserId) -> Result<bool, DbError> {
    let n = on_tx!(tx, c => sqlx::query("UPDATE users SET token_generation = token_generation WHERE id = $1")
        .bind(id.to_string()).execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

pub struct ProfileChange<'a> {
    pub name: Option<&'a str>,
    pub phone: Option<Option<&'a str>>,
    pub locale: Option<Option<&'a str>>,
    /// A new email address: it becomes unverified.
    pub email: Option<&'a str>,
}

pub async fn update_profile(tx: &mut Tx, id: &UserId, change: &ProfileChange<'_>) -> Result<(), DbError> {
    let now = OffsetDateTime::now_utc();
    let id = id.to_string();
    if let Some(name) = change.name {
        on_tx!(tx, c => sqlx::query("UPDATE users SET name = $1, updated_at = $2 WHERE id = $3")
            .bind(name).bind(now).bind(&id).execute(c).await.map(|_| ()))?;
    }
    if let Some(phone) = change.phone {
        on_tx!(tx, c => sqlx::query("UPDATE users SET phone = $1, updated_at = $2 WHERE id = $3")
            .bind(phone).bind(now).bind(&id).execute(c).await.map(|_| ()))?;
    }
    if let Some(locale) = change.locale {
        on_tx!(tx, c => sqlx::query("UPDATE users SET locale = $1, updated_at = $2 WHERE id = $3")
            .bind(locale).bind(now).bind(&id).execute(c).await.map(|_| ()))?;
    }
    if let Some(email) = change.email {
        on_tx!(tx, c => sqlx::query(
            "UPDATE users SET email = $1, email_verified_at = NULL, updated_at = $2 WHERE id = $3")
            .bind(email).bind(now).bind(&id).execute(c).await.map(|_| ()))?;
    }
    Ok(())
}

pub async fn set_roles_and_status(
    tx: &mut Tx,
    id: &UserId,
    roles: Option<&[Role]>,
    disabled: Option<bool>,
) -> Result<(), DbError> {
    let now = OffsetDateTime::now_utc();
    if let Some(roles) = roles {
        on_tx!(tx, c => sqlx::query("UPDATE users SET roles = $1, updated_at = $2 WHERE id = $3")
            .bind(roles_text(roles)).bind(now).bind(id.to_string()).execute(c).await.map(|_| ()))?;
    }
    if let Some(disabled) = disabled {
        let at = disabled.then_some(now);
        on_tx!(tx, c => sqlx::query("UPDATE users SET disabled_at = $1, updated_at = $2 WHERE id = $3")
            .bind(at).bind(now).bind(id.to_string()).execute(c).await.map(|_| ()))?;
    }
    Ok(())
}

pub async fn mark_email_verified(tx: &mut Tx, id: &UserId) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query("UPDATE users SET email_verified_at = $1 WHERE id = $2 AND email_verified_at IS NULL")
        .bind(OffsetDateTime::now_utc()).bind(id.to_string()).execute(c).await.map(|_| ()))?;
    Ok(())
}

// Refresh tokens

pub struct RefreshToken {
    pub id: String,
    pub family_id: String,
    pub user_id: UserId,
    pub expires_at_ms: i64,
    pub used_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
}

/// What became of a refresh token to be written for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshWrite {
    Written,
    /// The user's token generation is no longer the one the tokens carry.
    GenerationMoved,
    /// The session was signed out meanwhile.
    FamilyRevoked,
}

/// Writes the next refresh token of `family` only if the user's token
/// generation is still `generation` and no token of the family was revoked.
/// The user's row is locked first, and every sign-out moves the generation
/// before it revokes refresh tokens, in one transaction: either this write
/// sees the sign-out and is refused, or it commits first and the sign-out's
/// revocation then covers the new row.
pub async fn insert_refresh_token_if_current(
    db: &Db,
    family_id: &str,
    user_id: &UserId,
    token_hash: &str,
    expires_at_ms: i64,
    generation: i64,
) -> Result<RefreshWrite, DbError> {
    let id = format!("rt_{}", kernel::id::encode_base32(kernel::id::Uuid::now_v7().as_u128()));
    let mut tx = db.begin().await?;
    let locked = on_tx!(tx, c => sqlx::query(
        "UPDATE users SET token_generation = token_generation WHERE id = $1 AND token_generation = $2")
        .bind(user_id.to_string()).bind(generation).execute(c).await.map(|r| r.rows_affected()))?;
    if locked != 1 {
        return Ok(RefreshWrite::GenerationMoved);
    }
    let written = on_tx!(tx, c => sqlx::query(
        "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, created_at, expires_at_ms) \
         SELECT $1, $2, $3, $4, $5, $6 \
         WHERE NOT EXISTS (SELECT 1 FROM refresh_tokens WHERE family_id = $2 AND revoked_at_ms IS NOT NULL) \
         AND (SELECT token_generation FROM users WHERE id = $3) = $7")
        .bind(id).bind(family_id).bind(user_id.to_string()).bind(token_hash)
        .bind(OffsetDateTime::now_utc()).bind(expires_at_ms).bind(generation)
        .execute(c).await.map(|r| r.rows_affected()))?;
    if written != 1 {
        return Ok(RefreshWrite::FamilyRevoked);
    }
    tx.commit().await?;
    Ok(RefreshWrite::Written)
}

pub async fn refresh_token_by_hash(db: &Db, token_hash: &str) -> Result<Option<RefreshToken>, DbError> {
    type Row = (String, String, String, i64, Option<i64>, Option<i64>);
    let row: Option<Row> = on_db!(db, pool => sqlx::query_as(
        "SELECT id, family_id, user_id, expires_at_ms, used_at_ms, revoked_at_ms FROM refresh_tokens WHERE token_hash = $1")
        .bind(token_hash).fetch_optional(pool).await)?;
    row.map(|(id, family_id, user_id, expires_at_ms, used_at_ms, revoked_at_ms)| {
        Ok(RefreshToken {
            id,
            family_id,
            user_id: UserId::parse(&user_id).map_err(|e| DbError::Corrupt(e.to_string()))?,
            expires_at_ms,
            used_at_ms,
            revoked_at_ms,
        })
    })
    .transpose()
}

/// Uses a refresh token up; false if it was used or revoked meanwhile (a
/// concurrent refresh with the same token).
pub async fn use_refresh_token(db: &Db, id: &str) -> Result<bool, DbError> {
    let n = on_write!(db, pool => sqlx::query(
        "UPDATE refresh_tokens SET used_at_ms = $1 WHERE id = $2 AND used_at_ms IS NULL AND revoked_at_ms IS NULL")
        .bind(now_ms()).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Revokes a session's refresh tokens, the user's row locked first like
/// `insert_refresh_token_if_current` does, so a token written meanwhile is
/// either seen here or refused there.
pub async fn revoke_family(db: &Db, user_id: &UserId, family_id: &str) -> Result<u64, DbError> {
    let mut tx = db.begin().await?;
    on_tx!(tx, c => sqlx::query("UPDATE users SET token_generation = token_generation WHERE id = $1")
        .bind(user_id.to_string()).execute(c).await.map(|_| ()))?;
    let n = revoke_refresh_tokens_in(&mut tx, user_id, Some(family_id)).await?;
    tx.commit().await?;
    Ok(n)
}

/// Revokes `user`'s refresh tokens of `family` (all of them when `None`), in
/// the transaction that moved their token generation first.
pub async fn revoke_refresh_tokens_in(tx: &mut Tx, user_id: &UserId, family_id: Option<&str>) -> Result<u64, DbError> {
    let n = on_tx!(tx, c => sqlx::query(
        "UPDATE refresh_tokens SET revoked_at_ms = $1 \
         WHERE user_id = $2 AND ($3 IS NULL OR family_id = $3) AND revoked_at_ms IS NULL")
        .bind(now_ms()).bind(user_id.to_string()).bind(family_id).execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n)
}

// Access-token revocation

/// The generation `user`'s new access tokens carry.
pub async fn token_generation(db: &Db, user: &UserId) -> Result<i64, DbError> {
    let generation: Option<i64> = on_db!(db, pool => sqlx::query_scalar("SELECT token_generation FROM users WHERE id = $1")
        .bind(user.to_string()).fetch_optional(pool).await)?;
    Ok(generation.unwrap_or(0))
}

/// Raises `user`'s token generation (every access token issued before is
/// refused from now on); returns the new one.
pub async fn revoke_access_tokens(tx: &mut Tx, user: &UserId) -> Result<i64, DbError> {
    let generation: i64 = on_tx!(tx, c => sqlx::query_scalar(
        "UPDATE users SET token_generation = token_generation + 1, tokens_revoked_at_ms = $1 WHERE id = $2 \
         RETURNING token_generation")
        .bind(now_ms()).bind(user.to_string()).fetch_one(c).await)?;
    Ok(generation)
}

/// Users whose tokens were revoked after `since_ms`, with their generation.
pub async fn recent_revocations(db: &Db, since_ms: i64) -> Result<Vec<(String, i64)>, DbError> {
    let rows: Vec<(String, i64)> = on_db!(db, pool => sqlx::query_as(
        "SELECT id, token_generation FROM users WHERE tokens_revoked_at_ms > $1")
        .bind(since_ms).fetch_all(pool).await)?;
    Ok(rows)
}

// Single-use tokens

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    VerifyEmail,
    ResetPassword,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::VerifyEmail => "verify_email",
            Purpose::ResetPassword => "reset_password",
        }
    }
}

pub async fn insert_one_time_token(
    tx: &mut Tx,
    token_hash: &str,
    user_id: &UserId,
    purpose: Purpose,
    email: &str,
    expires_at_ms: i64,
) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO one_time_tokens (token_hash, user_id, purpose, email, expires_at_ms, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(token_hash).bind(user_id.to_string()).bind(purpose.as_str()).bind(email)
        .bind(expires_at_ms).bind(OffsetDateTime::now_utc())
        .execute(c).await.map(|_| ()))?;
    Ok(())
}

/// The user a live single-use token is for, read without locking anything:
/// the caller locks that user ([`lock_user`]) before it uses the token up.
pub async fn one_time_token_user(db: &Db, token_hash: &str, purpose: Purpose) -> Result<Option<UserId>, DbError> {
    let user: Option<String> = on_db!(db, pool => sqlx::query_scalar(
        "SELECT user_id FROM one_time_tokens \
         WHERE token_hash = $1 AND purpose = $2 AND used_at_ms IS NULL AND expires_at_ms > $3")
        .bind(token_hash).bind(purpose.as_str()).bind(now_ms()).fetch_optional(pool).await)?;
    user.map(|u| UserId::parse(&u).map_err(|err| DbError::Corrupt(err.to_string()))).transpose()
}

/// Uses a single-use token of `user` up, atomically, in the transaction that
/// locked `user` first; returns the email it was sent to, or `None` if it is
/// unknown, used, expired, for another purpose or another user.
pub async fn consume_one_time_token(
    tx: &mut Tx,
    token_hash: &str,
    purpose: Purpose,
    user: &UserId,
) -> Result<Option<String>, DbError> {
    let now = now_ms();
    let email: Option<String> = on_tx!(tx, c => sqlx::query_scalar(
        "UPDATE one_time_tokens SET used_at_ms = $1 \
         WHERE token_hash = $2 AND purpose = $3 AND user_id = $4 AND used_at_ms IS NULL AND expires_at_ms > $1 \
         RETURNING email")
        .bind(now).bind(token_hash).bind(purpose.as_str()).bind(user.to_string()).fetch_optional(c).await)?;
    Ok(email)
}

/// Uses up every unused email link of a user (verification and pending
/// address changes): once the address changes, none of them may apply.
pub async fn void_verification_tokens(tx: &mut Tx, user_id: &UserId) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query(
        "UPDATE one_time_tokens SET used_at_ms = $1 WHERE user_id = $2 AND purpose = $3 AND used_at_ms IS NULL")
        .bind(now_ms()).bind(user_id.to_string()).bind(Purpose::VerifyEmail.as_str()).execute(c).await.map(|_| ()))?;
    Ok(())
}

/// Uses up every unused link to move a user to another address (a
/// verification link sent to an address other than the current one).
pub async fn void_email_change_tokens(tx: &mut Tx, user_id: &UserId) -> Result<u64, DbError> {
    let n = on_tx!(tx, c => sqlx::query(
        "UPDATE one_time_tokens SET used_at_ms = $1 WHERE user_id = $2 AND purpose = $3 AND used_at_ms IS NULL \
         AND email <> (SELECT email FROM users WHERE id = $2)")
        .bind(now_ms()).bind(user_id.to_string()).bind(Purpose::VerifyEmail.as_str())
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n)
}

/// Sets a user's address, confirmed (the link mailed to it was used).
pub async fn set_verified_email(tx: &mut Tx, id: &UserId, email: &str) -> Result<(), DbError> {
    let now = OffsetDateTime::now_utc();
    on_tx!(tx, c => sqlx::query("UPDATE users SET email = $1, email_verified_at = $2, updated_at = $2 WHERE id = $3")
        .bind(email).bind(now).bind(id.to_string()).execute(c).await.map(|_| ()))?;
    Ok(())
}

/// Uses up every unused token of `purpose` of a user (those sent to `email`
/// only, when given): using one reset link, or changing the password, voids
/// the others.
pub async fn void_one_time_tokens(tx: &mut Tx, user_id: &UserId, purpose: Purpose, email: Option<&str>) -> Result<u64, DbError> {
    let n = on_tx!(tx, c => sqlx::query(
        "UPDATE one_time_tokens SET used_at_ms = $1 \
         WHERE user_id = $2 AND purpose = $3 AND ($4 IS NULL OR email = $4) AND used_at_ms IS NULL")
        .bind(now_ms()).bind(user_id.to_string()).bind(purpose.as_str()).bind(email)
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n)
}

// Sign-in throttles, per hash of (email, client address)

/// One pair's row: failures (attempts not yet followed by a success), the
/// end of the current wait, and when the row is forgotten.
pub type SignInThrottle = (i64, i64, i64);

/// A pair's row as stored, live or past its time.
pub async fn sign_in_throttle(db: &Db, key_hash: &str) -> Result<Option<SignInThrottle>, DbError> {
    let row: Option<SignInThrottle> = on_db!(db, pool => sqlx::query_as(
        "SELECT failures, blocked_until_ms, expires_at_ms FROM sign_in_throttles WHERE key_hash = $1")
        .bind(key_hash).fetch_optional(pool).await)?;
    Ok(row)
}

/// Moves a pair from `seen` (`None`: no row) to `next`, unless another
/// attempt moved it first (compare and set, so parallel attempts are each
/// counted once). Whether it moved.
pub async fn record_sign_in_attempt(db: &Db, key_hash: &str, email_hash: &str, seen: Option<SignInThrottle>, next: SignInThrottle) -> Result<bool, DbError> {
    let (failures, blocked_until, forget_at) = next;
    let n = match seen {
        None => on_write!(db, pool => sqlx::query(
            "INSERT INTO sign_in_throttles (key_hash, email_hash, failures, blocked_until_ms, expires_at_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key_hash) DO NOTHING")
            .bind(key_hash).bind(email_hash).bind(failures).bind(blocked_until).bind(forget_at)
            .execute(pool).await.map(|r| r.rows_affected()))?,
        Some((was_failures, was_blocked_until, was_forget_at)) => on_write!(db, pool => sqlx::query(
            "UPDATE sign_in_throttles SET failures = $1, blocked_until_ms = $2, expires_at_ms = $3 \
             WHERE key_hash = $4 AND failures = $5 AND blocked_until_ms = $6 AND expires_at_ms = $7")
            .bind(failures).bind(blocked_until).bind(forget_at)
            .bind(key_hash).bind(was_failures).bind(was_blocked_until).bind(was_forget_at)
            .execute(pool).await.map(|r| r.rows_affected()))?,
    };
    Ok(n == 1)
}

/// Forgets one pair (a successful sign-in from that address).
pub async fn clear_sign_in_throttle(db: &Db, key_hash: &str) -> Result<(), DbError> {
    on_write!(db, pool => sqlx::query("DELETE FROM sign_in_throttles WHERE key_hash = $1")
        .bind(key_hash).execute(pool).await.map(|_| ()))?;
    Ok(())
}

/// Forgets every address's failures for one email; how many there were.
pub async fn clear_sign_in_throttles_of(db: &Db, email_hash: &str) -> Result<u64, DbError> {
    let n = on_write!(db, pool => sqlx::query("DELETE FROM sign_in_throttles WHERE email_hash = $1")
        .bind(email_hash).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n)
}

/// Drops rows past their time, so the table stays as small as the last day's failures.
pub async fn forget_old_sign_in_throttles(db: &Db, now: i64) -> Result<(), DbError> {
    on_write!(db, pool => sqlx::query("DELETE FROM sign_in_throttles WHERE expires_at_ms <= $1")
        .bind(now).execute(pool).await.map(|_| ()))?;
    Ok(())
}

// Clients that signed in, per user (hashes of their address's prefix)

/// Notes that `client_hash` signed in to `user` at `now`, and forgets the
/// user's clients not seen since `forget_before`.
pub async fn note_known_client(db: &Db, user: &UserId, client_hash: &str, now: i64, forget_before: i64) -> Result<(), DbError> {
    let mut tx = db.begin().await?;
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO known_clients (user_id, client_hash, last_seen_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id, client_hash) DO UPDATE SET last_seen_ms = $3")
        .bind(user.to_string()).bind(client_hash).bind(now).execute(c).await.map(|_| ()))?;
    on_tx!(tx, c => sqlx::query("DELETE FROM known_clients WHERE user_id = $1 AND last_seen_ms < $2")
        .bind(user.to_string()).bind(forget_before).execute(c).await.map(|_| ()))?;
    tx.commit().await?;
    Ok(())
}

/// Whether `client_hash` signed in to `user` at or after `since`.
pub async fn is_known_client(db: &Db, user: &UserId, client_hash: &str, since: i64) -> Result<bool, DbError> {
    let n: i64 = on_db!(db, pool => sqlx::query_scalar(
        "SELECT COUNT(*) FROM known_clients WHERE user_id = $1 AND client_hash = $2 AND last_seen_ms >= $3")
        .bind(user.to_string()).bind(client_hash).bind(since).fetch_one(pool).await)?;
    Ok(n > 0)
}

// Signing keys

pub struct StoredKey {
    pub kid: String,
    pub private_key: Vec<u8>,
    pub encrypted: bool,
    pub public_key: Vec<u8>,
    pub created_at_ms: i64,
    pub retired_at_ms: Option<i64>,
}

pub async fn insert_signing_key(db: &Db, key: &StoredKey) -> Result<(), DbError> {
    on_write!(db, pool => sqlx::query(
        "INSERT INTO signing_keys (kid, algorithm, private_key, encrypted, public_key, created_at_ms) \
         VALUES ($1, 'EdDSA', $2, $3, $4, $5)")
        .bind(&key.kid).bind(&key.private_key).bind(key.encrypted).bind(&key.public_key).bind(key.created_at_ms)
        .execute(pool).await.map(|_| ()))?;
    Ok(())
}

/// Keys not retired, and keys retired after `published_since_ms`, newest first.
pub async fn published_keys(db: &Db, published_since_ms: i64) -> Result<Vec<StoredKey>, DbError> {
    type Row = (String, Vec<u8>, bool, Vec<u8>, i64, Option<i64>);
    let rows: Vec<Row> = on_db!(db, pool => sqlx::query_as(
        "SELECT kid, private_key, encrypted, public_key, created_at_ms, retired_at_ms FROM signing_keys \
         WHERE retired_at_ms IS NULL OR retired_at_ms > $1 ORDER BY created_at_ms DESC, kid DESC")
        .bind(published_since_ms).fetch_all(pool).await)?;
    Ok(rows
        .into_iter()
        .map(|(kid, private_key, encrypted, public_key, created_at_ms, retired_at_ms)| StoredKey {
            kid,
            private_key,
            encrypted,
            public_key,
            created_at_ms,
            retired_at_ms,
        })
        .collect())
}

/// Whether anything here was sealed with a key-encryption key (signing keys, TOTP secrets).
pub async fn holds_sealed_secrets(db: &Db) -> Result<bool, DbError> {
    let n: i64 = on_db!(db, pool => sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM signing_keys WHERE encrypted = TRUE) + \
         (SELECT COUNT(*) FROM users WHERE totp_secret LIKE 'enc:%')").fetch_one(pool).await)?;
    Ok(n > 0)
}

/// Signing keys stored in plaintext (by an older version), to be sealed.
pub async fn plaintext_signing_keys(db: &Db) -> Result<Vec<(String, Vec<u8>)>, DbError> {
    let rows: Vec<(String, Vec<u8>)> = on_db!(db, pool => sqlx::query_as(
        "SELECT kid, private_key FROM signing_keys WHERE encrypted = FALSE").fetch_all(pool).await)?;
    Ok(rows)
}

pub async fn seal_signing_key(db: &Db, kid: &str, sealed: &[u8]) -> Result<(), DbError> {
    on_write!(db, pool => sqlx::query(
        "UPDATE signing_keys SET private_key = $1, encrypted = TRUE WHERE kid = $2 AND encrypted = FALSE")
        .bind(sealed).bind(kid).execute(pool).await.map(|_| ()))?;
    Ok(())
}

/// Users whose TOTP secret is stored in plaintext (`raw:…`, by an older version).
pub async fn plaintext_totp_secrets(db: &Db) -> Result<Vec<(String, String)>, DbError> {
    let rows: Vec<(String, String)> = on_db!(db, pool => sqlx::query_as(
        "SELECT id, totp_secret FROM users WHERE totp_secret LIKE 'raw:%'").fetch_all(pool).await)?;
    Ok(rows)
}

/// Replaces a plaintext TOTP secret with its sealed form, if it is still the one read.
pub async fn seal_totp_secret(db: &Db, id: &UserId, plain: &str, sealed: &str) -> Result<(), DbError> {
    on_write!(db, pool => sqlx::query("UPDATE users SET totp_secret = $1 WHERE id = $2 AND totp_secret = $3")
        .bind(sealed).bind(id.to_string()).bind(plain).execute(pool).await.map(|_| ()))?;
    Ok(())
}

/// Retires every active key except `keep`.
pub async fn retire_keys_except(db: &Db, keep: &str) -> Result<u64, DbError> {
    let n = on_write!(db, pool => sqlx::query(
        "UPDATE signing_keys SET retired_at_ms = $1 WHERE retired_at_ms IS NULL AND kid <> $2")
        .bind(now_ms()).bind(keep).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n)
}

// Audit log

pub struct AuditEntry<'a> {
    pub actor: Option<&'a UserId>,
    pub action: &'a str,
    pub subject: Option<&'a UserId>,
    pub ip: Option<&'a str>,
    pub detail: serde_json::Value,
}

pub async fn audit(db: &Db, entry: AuditEntry<'_>) -> Result<(), DbError> {
    let id = format!("aud_{}", kernel::id::encode_base32(kernel::id::Uuid::now_v7().as_u128()));
    on_write!(db, pool => sqlx::query(
        "INSERT INTO audit_log (id, at, actor_id, action, subject_id, ip, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(id).bind(OffsetDateTime::now_utc())
        .bind(entry.actor.map(|a| a.to_string())).bind(entry.action)
        .bind(entry.subject.map(|s| s.to_string())).bind(entry.ip).bind(entry.detail.to_string())
        .execute(pool).await.map(|_| ()))?;
    Ok(())
}

pub type AuditRow = (String, OffsetDateTime, Option<String>, String, Option<String>, Option<String>, String);

pub async fn audit_entries(db: &Db, after: Option<&str>, limit: u32) -> Result<Vec<AuditRow>, DbError> {
    let rows: Vec<AuditRow> = on_db!(db, pool => sqlx::query_as(
        "SELECT id, at, actor_id, action, subject_id, ip, detail FROM audit_log \
         WHERE ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2")
        .bind(after).bind(i64::from(limit) + 1).fetch_all(pool).await)?;
    Ok(rows)
}

// Multi-factor authentication

/// Stores a secret awaiting confirmation; false if TOTP is already on.
pub async fn set_pending_totp(db: &Db, id: &UserId, secret: &str) -> Result<bool, DbError> {
    let n = on_write!(db, pool => sqlx::query(
        "UPDATE users SET totp_secret = $1, totp_last_step = NULL WHERE id = $2 AND totp_enabled_at IS NULL")
        .bind(secret).bind(id.to_string()).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

pub async fn enable_totp(tx: &mut Tx, id: &UserId, step: i64, recovery_hashes: &[String]) -> Result<bool, DbError> {
    let n = on_tx!(tx, c => sqlx::query(
        "UPDATE users SET totp_enabled_at = $1, totp_last_step = $2 \
         WHERE id = $3 AND totp_enabled_at IS NULL AND totp_secret IS NOT NULL")
        .bind(OffsetDateTime::now_utc()).bind(step).bind(id.to_string())
        .execute(c).await.map(|r| r.rows_affected()))?;
    if n != 1 {
        return Ok(false);
    }
    on_tx!(tx, c => sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .bind(id.to_string()).execute(c).await.map(|_| ()))?;
    for hash in recovery_hashes {
        on_tx!(tx, c => sqlx::query("INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)")
            .bind(id.to_string()).bind(hash).execute(c).await.map(|_| ()))?;
    }
    Ok(true)
}

/// Accepts a TOTP step once: a code seen before (or an older one) is refused.
pub async fn accept_totp_step(db: &Db, id: &UserId, step: i64) -> Result<bool, DbError> {
    let n = on_write!(db, pool => sqlx::query(
        "UPDATE users SET totp_last_step = $1 WHERE id = $2 AND (totp_last_step IS NULL OR totp_last_step < $1)")
        .bind(step).bind(id.to_string()).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

pub async fn use_recovery_code(db: &Db, id: &UserId, code_hash: &str) -> Result<bool, DbError> {
    let n = on_write!(db, pool => sqlx::query(
        "UPDATE recovery_codes SET used_at_ms = $1 WHERE user_id = $2 AND code_hash = $3 AND used_at_ms IS NULL")
        .bind(now_ms()).bind(id.to_string()).bind(code_hash).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

pub async fn disable_totp(tx: &mut Tx, id: &UserId) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query(
        "UPDATE users SET totp_secret = NULL, totp_enabled_at = NULL, totp_last_step = NULL WHERE id = $1")
        .bind(id.to_string()).execute(c).await.map(|_| ()))?;
    on_tx!(tx, c => sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .bind(id.to_string()).execute(c).await.map(|_| ()))?;
    Ok(())
}

// Addresses

#[derive(Debug, Clone)]
pub struct StoredAddress {
    pub id: String,
    pub address: kernel::address::Address,
    pub default_shipping: bool,
    pub default_billing: bool,
    pub created_at: OffsetDateTime,
}

type AddressTuple = (
    String,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    String,
    String,
    Option<String>,
    bool,
    bool,
    OffsetDateTime,
);

const ADDRESS_COLUMNS: &str = "id, name, line1, line2, city, region, postal_code, country, phone, \
    is_default_shipping, is_default_billing, created_at";

fn address_from(t: AddressTuple) -> StoredAddress {
    StoredAddress {
        id: t.0,
        address: kernel::address::Address {
            name: t.1,
            line1: t.2,
            line2: t.3,
            city: t.4,
            region: t.5,
            postal_code: t.6,
            country: t.7,
            phone: t.8,
        },
        default_shipping: t.9,
        default_billing: t.10,
        created_at: t.11,
    }
}

pub async fn addresses(db: &Db, user: &UserId) -> Result<Vec<StoredAddress>, DbError> {
    let sql = format!("SELECT {ADDRESS_COLUMNS} FROM addresses WHERE user_id = $1 ORDER BY id");
    let rows: Vec<AddressTuple> =
        on_db!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(user.to_string()).fetch_all(pool).await)?;
    Ok(rows.into_iter().map(address_from).collect())
}

pub async fn address(db: &Db, user: &UserId, id: &str) -> Result<Option<StoredAddress>, DbError> {
    let sql = format!("SELECT {ADDRESS_COLUMNS} FROM addresses WHERE user_id = $1 AND id = $2");
    let row: Option<AddressTuple> = on_db!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(user.to_string()).bind(id).fetch_optional(pool).await)?;
    Ok(row.map(address_from))
}

/// Inserts or replaces an address of `user` (the id is checked against the owner).
pub async fn save_address(tx: &mut Tx, user: &UserId, a: &StoredAddress) -> Result<bool, DbError> {
    let x = &a.address;
    let n = on_tx!(tx, c => sqlx::query(
        "INSERT INTO addresses (id, user_id, name, line1, line2, city, region, postal_code, country, phone, \
         is_default_shipping, is_default_billing, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (id) DO UPDATE SET name = $3, line1 = $4, line2 = $5, city = $6, region = $7, \
         postal_code = $8, country = $9, phone = $10, is_default_shipping = $11, is_default_billing = $12 \
         WHERE addresses.user_id = $2")
        .bind(&a.id).bind(user.to_string()).bind(&x.name).bind(&x.line1).bind(&x.line2).bind(&x.city)
        .bind(&x.region).bind(&x.postal_code).bind(&x.country).bind(&x.phone)
        .bind(a.default_shipping).bind(a.default_billing).bind(a.created_at)
        .execute(c).await.map(|r| r.rows_affected()))?;
    if a.default_shipping {
        on_tx!(tx, c => sqlx::query("UPDATE addresses SET is_default_shipping = FALSE WHERE user_id = $1 AND id <> $2")
            .bind(user.to_string()).bind(&a.id).execute(c).await.map(|_| ()))?;
    }
    if a.default_billing {
        on_tx!(tx, c => sqlx::query("UPDATE addresses SET is_default_billing = FALSE WHERE user_id = $1 AND id <> $2")
            .bind(user.to_string()).bind(&a.id).execute(c).await.map(|_| ()))?;
    }
    Ok(n == 1)
}

pub async fn delete_address(db: &Db, user: &UserId, id: &str) -> Result<bool, DbError> {
    let n = on_write!(db, pool => sqlx::query("DELETE FROM addresses WHERE user_id = $1 AND id = $2")
        .bind(user.to_string()).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// The audit entries about `user`, oldest first, for their data export.
pub async fn audit_about(db: &Db, user: &UserId) -> Result<Vec<AuditRow>, DbError> {
    let rows: Vec<AuditRow> = on_db!(db, pool => sqlx::query_as(
        "SELECT id, at, actor_id, action, subject_id, ip, detail FROM audit_log WHERE subject_id = $1 ORDER BY id")
        .bind(user.to_string()).fetch_all(pool).await)?;
    Ok(rows)
}

/// Erases the personal data of an account, keeping a tombstone row so ids in
/// other services' records still point somewhere.
pub async fn erase_user(tx: &mut Tx, user: &UserId) -> Result<(), DbError> {
    let id = user.to_string();
    let now = OffsetDateTime::now_utc();
    on_tx!(tx, c => sqlx::query(
        "UPDATE users SET email = $1, email_verified_at = NULL, name = 'Deleted user', phone = NULL, locale = NULL, \
         password_hash = NULL, roles = 'customer', disabled_at = $2, totp_secret = NULL, totp_enabled_at = NULL, \
         totp_last_step = NULL, updated_at = $2 WHERE id = $3")
        .bind(format!("deleted+{id}@invalid")).bind(now).bind(&id).execute(c).await.map(|_| ()))?;
    for sql in [
        "DELETE FROM addresses WHERE user_id = $1",
        "DELETE FROM recovery_codes WHERE user_id = $1",
        "DELETE FROM one_time_tokens WHERE user_id = $1",
        "DELETE FROM refresh_tokens WHERE user_id = $1",
        "DELETE FROM known_clients WHERE user_id = $1",
    ] {
        on_tx!(tx, c => sqlx::query(sql).bind(&id).execute(c).await.map(|_| ()))?;
    }
    // Security records stay, without the addresses they were made from.
    on_tx!(tx, c => sqlx::query("UPDATE audit_log SET ip = NULL WHERE subject_id = $1 OR actor_id = $1")
        .bind(&id).execute(c).await.map(|_| ()))?;
    Ok(())
}

// API keys

#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub permissions: Vec<kernel::auth::Permission>,
    pub created_by: UserId,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub last_used_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
}

type ApiKeyTuple = (
    String,
    String,
    String,
    String,
    String,
    OffsetDateTime,
    Option<OffsetDateTime>,
    Option<OffsetDateTime>,
    Option<OffsetDateTime>,
);

const API_KEY_COLUMNS: &str = "id, name, prefix, permissions, created_by, created_at, expires_at, last_used_at, revoked_at";

fn api_key_from(t: ApiKeyTuple) -> Result<ApiKey, DbError> {
    Ok(ApiKey {
        id: t.0,
        name: t.1,
        prefix: t.2,
        permissions: t.3.split(',').filter_map(kernel::auth::Permission::parse).collect(),
        created_by: UserId::parse(&t.4).map_err(|e| DbError::Corrupt(e.to_string()))?,
        created_at: t.5,
        expires_at: t.6,
        last_used_at: t.7,
        revoked_at: t.8,
    })
}

pub async fn insert_api_key(db: &Db, key: &ApiKey, secret_hash: &str) -> Result<(), DbError> {
    let permissions: Vec<&str> = key.permissions.iter().map(|p| p.as_str()).collect();
    on_write!(db, pool => sqlx::query(
        "INSERT INTO api_keys (id, name, prefix, secret_hash, permissions, created_by, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
        .bind(&key.id).bind(&key.name).bind(&key.prefix).bind(secret_hash).bind(permissions.join(","))
        .bind(key.created_by.to_string()).bind(key.created_at).bind(key.expires_at)
        .execute(pool).await.map(|_| ()))?;
    Ok(())
}

pub async fn api_keys(db: &Db) -> Result<Vec<ApiKey>, DbError> {
    let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY id DESC");
    let rows: Vec<ApiKeyTuple> = on_db!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await)?;
    rows.into_iter().map(api_key_from).collect()
}

pub async fn api_key_by_hash(db: &Db, secret_hash: &str) -> Result<Option<ApiKey>, DbError> {
    let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE secret_hash = $1");
    let row: Option<ApiKeyTuple> =
        on_db!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(secret_hash).fetch_optional(pool).await)?;
    row.map(api_key_from).transpose()
}

pub async fn touch_api_key(db: &Db, id: &str, at: OffsetDateTime) -> Result<(), DbError> {
    on_write!(db, pool => sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
        .bind(at).bind(id).execute(pool).await.map(|_| ()))?;
    Ok(())
}

pub async fn revoke_api_key(db: &Db, id: &str) -> Result<bool, DbError> {
    let n = on_write!(db, pool => sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(OffsetDateTime::now_utc()).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}
