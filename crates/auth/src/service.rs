//! Auth's use cases: each is one transaction or a short sequence of store
//! calls around the rules of `domain.rs`. Handlers call exactly one of these.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kernel::Envelope;
use kernel::auth::{Audience, Claims, Role, permissions_of};
use kernel::config::Config;
use kernel::id::UserId;
use platform::db::{Db, now_ms};
use platform::outbox;
use serde_json::json;

use crate::crypto::{self, KeyVault, PasswordHasher, random_token, token_hash};
use crate::domain::{self, Email, Password};
use crate::error::AuthError;
use crate::keys::KeyRing;
use crate::store::{self, AuditEntry, NewUser, Purpose, User};

const VERIFY_EMAIL_TTL_MS: i64 = 48 * 3600 * 1000;
const RESET_PASSWORD_TTL_MS: i64 = 3600 * 1000;
/// How long an address's failed sign-ins for an email are remembered after
/// the last one (or after its wait ends).
const SIGN_IN_FAILURES_KEPT_MS: i64 = 24 * 3600 * 1000;
/// How often an attempt tries to be counted while parallel ones of the same
/// email and address keep winning; after that it is refused like a waiting one.
const SIGN_IN_ATTEMPT_TRIES: usize = 8;
/// How long a client that signed in to an account is known as one of its
/// owner's (for the reset mails) after its last sign-in.
const KNOWN_CLIENT_KEPT_MS: i64 = 90 * 24 * 3600 * 1000;

/// Everything the use cases need.
#[derive(Clone)]
pub struct Auth {
    pub db: Db,
    pub config: Arc<Config>,
    pub hasher: Arc<PasswordHasher>,
    pub keys: Arc<KeyRing>,
    pub vault: KeyVault,
    pub ip_limiter: Arc<IpLimiter>,
    /// Per-target limits (reset mails per address, sign-ups per IP), shared
    /// by replicas when Redis is configured.
    pub limits: platform::limit::Limits,
    /// Other services' parts of a data export.
    pub personal_data: Option<Arc<platform::service::PersonalDataSources>>,
    /// Where password hashes are computed (one thread per core).
    pub hash_pool: Arc<crypto::HashPool>,
    /// This process's marks of revoked access tokens, raised as soon as a
    /// revocation commits (other processes learn it from the event).
    pub revocations: Arc<platform::auth::Revocations>,
}

/// What a user gets when TOTP enrolment starts.
pub struct TotpEnrolment {
    /// Base32, for typing into an authenticator.
    pub secret: String,
    /// `otpauth://` URI, for a QR code.
    pub uri: String,
}

/// Tokens handed out at login and refresh.
pub struct Tokens {
    pub access_token: String,
    pub expires_in: u64,
    pub refresh_token: String,
}

impl Auth {
    async fn hash(&self, password: &str) -> Result<String, AuthError> {
        let hasher = self.hasher.clone();
        let password = password.to_owned();
        self.hash_pool.run(move || hasher.hash(&password)).await.ok_or(AuthError::Busy)?.map_err(AuthError::from)
    }

    async fn verify(&self, password: &str, stored: Option<String>) -> Result<bool, AuthError> {
        let hasher = self.hasher.clone();
        let password = password.to_owned();
        self.hash_pool
            .run(move || match stored {
                Some(stored) => hasher.verify(&password, &stored),
                None => {
                    hasher.verify_dummy(&password);
                    false
                }
            })
            .await
            .ok_or(AuthError::Busy)
    }

    /// Creates a customer account and asks for its email to be verified.
    /// For an address that has an account the answer looks the same (a new,
    /// unconfirmed customer) and the owner is mailed instead: the answer never
    /// says whether an address is known.
    /// Counts a sign-up from `ip` (the client's address, `unknown` when the
    /// process does not know it) against the hourly limit.
    pub async fn sign_up_allowed(&self, ip: &str) -> Result<(), AuthError> {
        let per_hour = self.config.limits.sign_ups_per_ip_per_hour;
        self.limits
            .hit("sign_up", &client_of(ip), per_hour, platform::limit::HOUR)
            .await
            .map_err(|l| AuthError::RateLimited { retry_after_secs: l.retry_after_secs })
    }

    pub async fn register(&self, email: &str, password: &str, name: &str) -> Result<User, AuthError> {
        let email = Email::parse(email)?;
        let password = Password::parse(password, &email, "password")?;
        let name = domain::parse_name(name)?;
        let existing = store::user_by_email(&self.db, email.as_str()).await?;
        // Hashed either way, so both answers take as long.
        let hash = self.hash(password.expose()).await?;
        if let Some(owner) = existing {
            return self.registered_elsewhere(&owner, &email, &name).await;
        }
        match self.create_user(&email, &name, &hash, &[Role::Customer]).await {
            // Someone registered the address meanwhile.
            Err(AuthError::EmailTaken) => {
                let owner = store::user_by_email(&self.db, email.as_str()).await?.ok_or(AuthError::EmailTaken)?;
                self.registered_elsewhere(&owner, &email, &name).await
            }
            other => other,
        }
    }

    /// A sign-up with a known address: the owner hears of it; the caller gets
    /// an account that looks new and is nowhere.
    async fn registered_elsewhere(&self, owner: &User, email: &Email, name: &str) -> Result<User, AuthError> {
        let mut tx = self.db.begin().await?;
        outbox::enqueue(&mut tx, &email_reuse(owner, "register")).await?;
        tx.commit().await?;
        self.audit(None, "registration_with_existing_email", Some(&owner.id), None, json!({})).await?;
        Ok(User {
            id: UserId::new(),
            email: email.as_str().to_owned(),
            email_verified_at: None,
            name: name.to_owned(),
            phone: None,
            locale: None,
            password_hash: None,
            roles: vec![Role::Customer],
            disabled_at: None,
            failed_logins: 0,
            lockouts: 0,
            locked_until_ms: None,
            totp_secret: None,
            totp_enabled_at: None,
            created_at: time::OffsetDateTime::now_utc(),
        })
    }

    /// Writes a new account, its verification token and its events in one transaction.
    pub async fn create_user(&self, email: &Email, name: &str, hash: &str, roles: &[Role]) -> Result<User, AuthError> {
        let id = UserId::new();
        let mut tx = self.db.begin().await?;
        let inserted = store::insert_user(&mut tx, &NewUser { id, email: email.as_str(), name, password_hash: hash, roles }).await;
        match inserted {
            Err(e) if e.is_unique_violation() => return Err(AuthError::EmailTaken),
            other => other?,
        }
        outbox::enqueue(
            &mut tx,
            &Envelope::new("user.registered", id, json!({"user_id": id, "email": email.as_str(), "name": name,
                "roles": roles, "permissions": kernel::auth::permissions_of(roles)})),
        )
        .await?;
        self.request_verification(&mut tx, &id, email.as_str(), name).await?;
        tx.commit().await?;
        store::user_by_id(&self.db, &id).await?.ok_or(AuthError::UserNotFound)
    }

    async fn request_verification(
        &self,
        tx: &mut platform::Tx,
        id: &UserId,
        email: &str,
        name: &str,
    ) -> Result<(), AuthError> {
        let token = random_token(32)?;
        let expires = now_ms() + VERIFY_EMAIL_TTL_MS;
        store::insert_one_time_token(tx, &token_hash(&token), id, Purpose::VerifyEmail, email, expires).await?;
        let url = format!("{}/account/verify-email?token={token}", self.config.public_url());
        outbox::enqueue(
            tx,
            &Envelope::new(
                "user.email_verification_requested",
                id,
                json!({"user_id": id, "email": email, "name": name, "token": token, "url": url,
                       "expires_at_ms": expires}),
            ),
        )
        .await?;
        Ok(())
    }

    /// Signs in. Unknown email and wrong password fail alike, and take alike long.
    /// With TOTP on, `totp_code` (or a recovery code) is required too.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        totp_code: Option<&str>,
        ip: &str,
    ) -> Result<(User, Tokens), AuthError> {
        if let Some(retry_after_secs) = self.ip_limiter.hit(ip, self.config.auth.login_attempts_per_ip_per_minute) {
            return Err(AuthError::RateLimited { retry_after_secs });
        }
        // The attempt is counted before the account is looked up, so a known
        // and an unknown email are held up, and answered, alike; and before
        // the password is checked, so parallel guesses cannot all get in.
        let throttle = ThrottleKey::new(email, ip);
        let attempt = self.take_attempt(&throttle).await?;
        let user = match Email::parse(email) {
            Ok(email) => store::user_by_email(&self.db, email.as_str()).await?,
            Err(_) => None,
        };
        let Some(user) = user else {
            self.verify(password, None).await?;
            self.count_failure(None, &attempt, ip, "unknown_email").await?;
            return Err(AuthError::InvalidCredentials);
        };
        if !self.verify(password, user.password_hash.clone()).await? {
            self.count_failure(Some(&user.id), &attempt, ip, "wrong_password").await?;
            return Err(AuthError::InvalidCredentials);
        }
        if user.disabled_at.is_some() {
            return Err(AuthError::Disabled);
        }
        if user.totp_enabled_at.is_some() {
            let code = totp_code.ok_or(AuthError::MfaRequired)?;
            if !self.second_factor(&user, code).await? {
                self.count_failure(Some(&user.id), &attempt, ip, "wrong_mfa_code").await?;
                return Err(AuthError::InvalidMfaCode);
            }
        }
        store::clear_sign_in_throttle(&self.db, &throttle.pair).await?;
        if let Some(client) = known_client_hash(&user.id, ip) {
            let now = now_ms();
            store::note_known_client(&self.db, &user.id, &client, now, now - KNOWN_CLIENT_KEPT_MS).await?;
        }
        if let Some(stored) = &user.password_hash
            && self.hasher.needs_rehash(stored)
        {
            let rehashed = self.hash(password).await?;
            // Not over a password changed meanwhile.
            store::rehash_password(&self.db, &user.id, stored, &rehashed).await?;
        }
        let family = format!("fam_{}", random_token(12)?);
        let generation = store::token_generation(&self.db, &user.id).await?;
        self.issue_current(&user.id, &family, generation).await
    }

    /// Counts an attempt of this email from this address before its password
    /// is checked: an address that must wait is refused (nothing counted);
    /// otherwise the attempt counts as a failure until a success clears it,
    /// and the one that makes enough starts the wait at once. Compare and
    /// set, so of any number sent at once only as many get through as one
    /// after another would.
    async fn take_attempt(&self, throttle: &ThrottleKey) -> Result<Attempt, AuthError> {
        let a = &self.config.auth;
        for _ in 0..SIGN_IN_ATTEMPT_TRIES {
            let now = now_ms();
            let seen = store::sign_in_throttle(&self.db, &throttle.pair).await?;
            let live = seen.filter(|(_, _, forget_at)| *forget_at > now);
            if let Some((_, until, _)) = live.filter(|(_, until, _)| *until > now) {
                return Err(AuthError::SignInThrottled { retry_after_secs: ((until - now) as u64).div_ceil(1000) });
            }
            let failures = live.map_or(0, |(failures, _, _)| failures.max(0)) + 1;
            let wait_secs = domain::sign_in_wait_secs(failures as u64, a.sign_in_throttle_after, a.sign_in_throttle_base_secs, a.sign_in_throttle_max_secs);
            let until = if wait_secs > 0 { now.saturating_add(i64::try_from(wait_secs.saturating_mul(1000)).unwrap_or(i64::MAX)) } else { 0 };
            let forget_at = until.max(now).saturating_add(SIGN_IN_FAILURES_KEPT_MS);
            if store::record_sign_in_attempt(&self.db, &throttle.pair, &throttle.email, seen, (failures, until, forget_at)).await? {
                if seen.is_none() {
                    // A new pair: the moment to drop the ones past their time.
                    store::forget_old_sign_in_throttles(&self.db, now).await?;
                }
                return Ok(Attempt { failures, wait_secs });
            }
        }
        // Lost every race: others are guessing at this very moment.
        Err(AuthError::SignInThrottled { retry_after_secs: 1 })
    }

    /// Records an attempt that failed (it was counted already), and the wait it started.
    async fn count_failure(&self, user: Option<&UserId>, attempt: &Attempt, ip: &str, reason: &str) -> Result<(), AuthError> {
        self.audit(None, "login_failed", user, Some(ip), json!({"reason": reason})).await?;
        if attempt.wait_secs > 0 {
            self.audit(None, "sign_in_throttled", user, Some(ip), json!({"failures": attempt.failures, "wait_secs": attempt.wait_secs})).await?;
        }
        Ok(())
    }

    /// Staff: forgets every address's failed sign-ins for a user's email, so
    /// they can try again at once. A staff account's waits are lifted only
    /// by those who manage staff (else support could help a guesser along). Audited.
    pub async fn clear_sign_in_throttles(&self, actor: &platform::auth::Principal, target: &UserId) -> Result<(), AuthError> {
        let user = self.user(target).await?;
        if user.roles.iter().any(|r| r.is_staff()) && !actor.has(kernel::auth::Permission::StaffManage) {
            return Err(AuthError::MissingPermission(kernel::auth::Permission::StaffManage));
        }
        let cleared = store::clear_sign_in_throttles_of(&self.db, &ThrottleKey::new(&user.email, "").email).await?;
        self.audit(Some(&actor.user_id), "sign_in_throttles_cleared", Some(target), None, json!({"addresses": cleared})).await
    }

    /// For actions a signed-in user confirms with their password. Each try
    /// counts in the account's sign-in throttle for the client's address, so
    /// a stolen access token is no faster a way to guess it than signing in.
    async fn confirm_password(&self, user: &User, password: &str, ip: &str) -> Result<(), AuthError> {
        let throttle = ThrottleKey::new(&user.email, ip);
        let attempt = self.take_attempt(&throttle).await?;
        if self.verify(password, user.password_hash.clone()).await? {
            store::clear_sign_in_throttle(&self.db, &throttle.pair).await?;
            Ok(())
        } else {
            self.count_failure(Some(&user.id), &attempt, ip, "wrong_current_password").await?;
            Err(AuthError::WrongPassword)
        }
    }

    /// Checks a TOTP code (each step once) or uses up a recovery code.
    async fn second_factor(&self, user: &User, code: &str) -> Result<bool, AuthError> {
        let code: String = code.chars().filter(|c| !c.is_whitespace() && *c != '-').collect();
        if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
            let secret = self.totp_secret(user)?;
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            return match crypto::totp_match(&secret, &code, now) {
                Some(step) => Ok(store::accept_totp_step(&self.db, &user.id, step as i64).await?),
                None => Ok(false),
            };
        }
        let used = store::use_recovery_code(&self.db, &user.id, &token_hash(&code.to_uppercase())).await?;
        if used {
            self.audit(Some(&user.id), "recovery_code_used", Some(&user.id), None, json!({})).await?;
        }
        Ok(used)
    }

    /// A TOTP secret as stored: always sealed, bound to its user.
    fn seal_totp(&self, id: &UserId, secret: &[u8]) -> Result<String, AuthError> {
        use base64::Engine;
        let (sealed, _) = self.vault.seal(secret, &format!("totp:{id}"))?;
        Ok(format!("enc:{}", base64::engine::general_purpose::STANDARD.encode(sealed)))
    }

    /// Seals what an older version stored in plaintext: signing keys and
    /// TOTP secrets. Runs at start; a row sealed meanwhile is left alone.
    pub async fn seal_plaintext_secrets(&self) -> Result<(), AuthError> {
        for (kid, plain) in store::plaintext_signing_keys(&self.db).await? {
            let (sealed, _) = self.vault.seal(&plain, &kid)?;
            store::seal_signing_key(&self.db, &kid, &sealed).await?;
            tracing::info!(kid = %kid, "sealed a signing key stored in plaintext");
        }
        for (id, stored) in store::plaintext_totp_secrets(&self.db).await? {
            let Some(secret) = stored.strip_prefix("raw:").and_then(crypto::base32_decode) else { continue };
            let user = UserId::parse(&id).map_err(|e| platform::DbError::Corrupt(e.to_string()))?;
            store::seal_totp_secret(&self.db, &user, &stored, &self.seal_totp(&user, &secret)?).await?;
            tracing::info!(user = %user, "sealed a TOTP secret stored in plaintext");
        }
        Ok(())
    }

    fn totp_secret(&self, user: &User) -> Result<Vec<u8>, AuthError> {
        let stored = user.totp_secret.as_deref().ok_or(AuthError::MfaNotStarted)?;
        let aad = format!("totp:{}", user.id);
        let secret = match stored.split_once(':') {
            Some(("enc", b64)) => {
                use base64::Engine;
                let sealed = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| crypto::CryptoError::Decrypt)?;
                self.vault.open(&sealed, true, &aad)?
            }
            Some(("raw", b32)) => crypto::base32_decode(b32).ok_or(crypto::CryptoError::Decrypt)?,
            _ => return Err(crypto::CryptoError::Decrypt.into()),
        };
        Ok(secret)
    }

    /// Starts TOTP enrolment: a new secret, pending until confirmed with a
    /// code. Needs the password: a stolen access token must not be enough to
    /// put the thief's phone on the account.
    pub async fn start_totp(&self, id: &UserId, password: Option<&str>, ip: &str) -> Result<TotpEnrolment, AuthError> {
        let user = self.user(id).await?;
        if user.totp_enabled_at.is_some() {
            return Err(AuthError::MfaAlreadyEnabled);
        }
        self.confirm_password(&user, password.ok_or(AuthError::PasswordRequired)?, ip).await?;
        let mut secret = [0u8; 20];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret).map_err(|_| crypto::CryptoError::Random)?;
        let stored = self.seal_totp(id, &secret)?;
        if !store::set_pending_totp(&self.db, id, &stored).await? {
            return Err(AuthError::MfaAlreadyEnabled);
        }
        let b32 = crypto::base32_encode(&secret);
        let issuer = "Emporium";
        let uri = format!(
            "otpauth://totp/{issuer}:{}?secret={b32}&issuer={issuer}&algorithm=SHA1&digits=6&period=30",
            percent_encode(&user.email)
        );
        Ok(TotpEnrolment { secret: b32, uri })
    }

    /// Confirms enrolment with a first code; returns ten one-time recovery codes.
    pub async fn confirm_totp(&self, id: &UserId, code: &str) -> Result<Vec<String>, AuthError> {
        let user = self.user(id).await?;
        if user.totp_enabled_at.is_some() {
            return Err(AuthError::MfaAlreadyEnabled);
        }
        let secret = self.totp_secret(&user)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let step = crypto::totp_match(&secret, code.trim(), now).ok_or(AuthError::InvalidMfaCode)?;
        let mut codes = Vec::with_capacity(10);
        for _ in 0..10 {
            let mut raw = [0u8; 7];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw).map_err(|_| crypto::CryptoError::Random)?;
            let text: String = crypto::base32_encode(&raw).chars().take(10).collect();
            codes.push(text);
        }
        let hashes: Vec<String> = codes.iter().map(|c| token_hash(c)).collect();
        let mut tx = self.db.begin().await?;
        if !store::enable_totp(&mut tx, id, step as i64, &hashes).await? {
            return Err(AuthError::MfaAlreadyEnabled);
        }
        tx.commit().await?;
        self.audit(Some(id), "mfa_enabled", Some(id), None, json!({"method": "totp"})).await?;
        Ok(codes.into_iter().map(|c| format!("{}-{}", &c[..5], &c[5..])).collect())
    }

    /// Turns TOTP off; needs the password.
    pub async fn disable_totp(&self, id: &UserId, password: &str, ip: &str) -> Result<(), AuthError> {
        let user = self.user(id).await?;
        self.confirm_password(&user, password, ip).await?;
        let mut tx = self.db.begin().await?;
        store::disable_totp(&mut tx, id).await?;
        tx.commit().await?;
        self.audit(Some(id), "mfa_disabled", Some(id), None, json!({"method": "totp"})).await?;
        Ok(())
    }

    /// Staff: turns another user's TOTP off (a lost phone), audited. Not on
    /// oneself: that takes the password, through `disable_totp`.
    pub async fn reset_mfa(&self, actor: &UserId, target: &UserId) -> Result<(), AuthError> {
        if actor == target {
            return Err(AuthError::NotOnSelf);
        }
        let user = self.user(target).await?;
        let mut tx = self.db.begin().await?;
        store::disable_totp(&mut tx, target).await?;
        // What a staff account may do depends on MFA (`staff_mfa_required`):
        // tokens issued with it on are stale.
        let generation = self.revoke_access_in(&mut tx, target).await?;
        tx.commit().await?;
        self.revocations.raise(&target.to_string(), generation);
        self.audit(Some(actor), "mfa_reset", Some(target), None, json!({"method": "totp", "was_enabled": user.totp_enabled_at.is_some()}))
            .await
    }

    /// What `user` may do now. Where staff must use MFA, a staff account
    /// without it has no permissions: enough to enrol, not enough to act.
    fn permissions_now(&self, user: &User) -> Vec<kernel::auth::Permission> {
        let must_enrol = self.config.auth.staff_mfa_required
            && user.roles.iter().any(|r| r.is_staff())
            && user.totp_enabled_at.is_none();
        if must_enrol { Vec::new() } else { permissions_of(&user.roles) }
    }

    /// Tokens for `user_id`'s session `family`, from the account as stored
    /// now. `generation` was read before the account (its roles, whether it
    /// is disabled) and before the old refresh token was used: a sign-out,
    /// password change or role change committed since moves it on, and then
    /// no refresh token is written. A moved generation of a session still
    /// live (a role change) is read again, with the account after it.
    async fn issue_current(&self, user_id: &UserId, family: &str, generation: i64) -> Result<(User, Tokens), AuthError> {
        let mut generation = generation;
        for _ in 0..3 {
            let user = store::user_by_id(&self.db, user_id).await?.ok_or(AuthError::InvalidRefreshToken)?;
            if user.disabled_at.is_some() {
                store::revoke_family(&self.db, user_id, family).await?;
                return Err(AuthError::Disabled);
            }
            match self.issue(&user, family, generation).await? {
                (store::RefreshWrite::Written, tokens) => return Ok((user, tokens)),
                (store::RefreshWrite::GenerationMoved, _) => generation = store::token_generation(&self.db, user_id).await?,
                (store::RefreshWrite::FamilyRevoked, _) => break,
            }
        }
        Err(AuthError::InvalidRefreshToken)
    }

    /// An access token for `user` carrying `generation`, and the next refresh
    /// token of `family` if the generation is still current and the family
    /// live; the tokens are worth nothing unless written.
    async fn issue(&self, user: &User, family: &str, generation: i64) -> Result<(store::RefreshWrite, Tokens), AuthError> {
        let key = self.keys.active().await?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let ttl = self.config.auth.access_token_ttl_secs;
        let permissions = self.permissions_now(user);
        let claims = Claims {
            sub: user.id.to_string(),
            roles: user.roles.clone(),
            permissions,
            iat: now,
            exp: now + ttl as i64,
            iss: self.config.public_url(),
            aud: Audience::One(self.config.auth.audience.clone()),
            jti: random_token(16)?,
            email_verified: user.email_verified_at.is_some(),
            generation,
        };
        let access_token = platform::auth::sign(&claims, &key.kid, &key.pair)
            .map_err(|e| platform::DbError::Corrupt(e.to_string()))?;
        let refresh_token = random_token(32)?;
        let expires = now_ms() + (self.config.auth.refresh_token_ttl_days * 86_400_000) as i64;
        let written = store::insert_refresh_token_if_current(&self.db, family, &user.id, &token_hash(&refresh_token), expires, generation).await?;
        Ok((written, Tokens { access_token, expires_in: ttl, refresh_token }))
    }

    /// Trades a refresh token for new tokens. A token used twice revokes its family.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, AuthError> {
        let stored = store::refresh_token_by_hash(&self.db, &token_hash(refresh_token))
            .await?
            .ok_or(AuthError::InvalidRefreshToken)?;
        if stored.revoked_at_ms.is_some() {
            return Err(AuthError::InvalidRefreshToken);
        }
        // Read before the token is used up and the account loaded: see `issue_current`.
        let generation = store::token_generation(&self.db, &stored.user_id).await?;
        if stored.used_at_ms.is_some() || !store::use_refresh_token(&self.db, &stored.id).await? {
            store::revoke_family(&self.db, &stored.user_id, &stored.family_id).await?;
            self.audit(None, "refresh_token_reused", Some(&stored.user_id), None, json!({"family": stored.family_id}))
                .await?;
            return Err(AuthError::RefreshTokenReused);
        }
        if stored.expires_at_ms <= now_ms() {
            return Err(AuthError::InvalidRefreshToken);
        }
        let (_, tokens) = self.issue_current(&stored.user_id, &stored.family_id, generation).await?;
        Ok(tokens)
    }

    /// Signs out the session the refresh token belongs to. A token already
    /// revoked or expired signs nothing out (its session is over).
    pub async fn logout(&self, refresh_token: &str) -> Result<(), AuthError> {
        let Some(stored) = store::refresh_token_by_hash(&self.db, &token_hash(refresh_token)).await? else { return Ok(()) };
        if stored.revoked_at_ms.is_some() || stored.expires_at_ms <= now_ms() {
            return Ok(());
        }
        // Access tokens do not say which session they belong to: all of
        // the user's are revoked, and other sessions refresh.
        self.sign_out(&stored.user_id, Some(&stored.family_id)).await
    }

    pub async fn logout_all(&self, user: &UserId) -> Result<(), AuthError> {
        self.sign_out(user, None).await
    }

    /// Refuses every access token `user` holds now and revokes the refresh
    /// tokens of `family` (all sessions when `None`); pending links to change
    /// the address go too. One transaction, the generation first (see
    /// `store::insert_refresh_token_if_current`).
    async fn sign_out(&self, user: &UserId, family: Option<&str>) -> Result<(), AuthError> {
        let mut tx = self.db.begin().await?;
        let generation = self.sign_out_in(&mut tx, user, family).await?;
        tx.commit().await?;
        self.revocations.raise(&user.to_string(), generation);
        Ok(())
    }

    /// [`Auth::sign_out`] in `tx`, for a change that must not happen without
    /// it (a new password); the caller raises [`Auth::revocations`] with the
    /// generation returned once `tx` commits. The user's row is written
    /// first, as everywhere (see `store::lock_user`).
    async fn sign_out_in(&self, tx: &mut platform::Tx, user: &UserId, family: Option<&str>) -> Result<i64, AuthError> {
        let generation = self.revoke_access_in(tx, user).await?;
        store::revoke_refresh_tokens_in(tx, user, family).await?;
        if family.is_none() {
            store::void_email_change_tokens(tx, user).await?;
        }
        Ok(generation)
    }

    /// Raises `user`'s token generation in `tx` and tells the other
    /// processes; the caller raises [`Auth::revocations`] once `tx` commits.
    async fn revoke_access_in(&self, tx: &mut platform::Tx, user: &UserId) -> Result<i64, AuthError> {
        let generation = store::revoke_access_tokens(tx, user).await?;
        let revoked = platform::auth::TokensRevoked { user_id: *user, generation };
        let data = serde_json::to_value(&revoked).map_err(|e| platform::DbError::Corrupt(e.to_string()))?;
        outbox::enqueue(tx, &Envelope::new(platform::auth::TOKENS_REVOKED, user, data)).await?;
        Ok(generation)
    }

    /// Raises this process's marks from the database, for revocations made
    /// before it started whose tokens may still be alive.
    pub async fn load_revocations(&self) -> Result<(), AuthError> {
        let window_secs = self.config.auth.access_token_ttl_secs as i64 + 2 * platform::auth::LEEWAY_SECS + 60;
        for (user, generation) in store::recent_revocations(&self.db, now_ms() - window_secs * 1000).await? {
            self.revocations.raise(&user, generation);
        }
        Ok(())
    }

    pub async fn verify_email(&self, token: &str) -> Result<(), AuthError> {
        let hash = token_hash(token);
        let user_id = store::one_time_token_user(&self.db, &hash, Purpose::VerifyEmail).await?.ok_or(AuthError::InvalidOneTimeToken)?;
        // The account before its token, like a sign-out (which voids the
        // token): the other order deadlocks against it.
        let mut tx = self.db.begin().await?;
        if !store::lock_user(&mut tx, &user_id).await? {
            return Err(AuthError::InvalidOneTimeToken);
        }
        let email = store::consume_one_time_token(&mut tx, &hash, Purpose::VerifyEmail, &user_id).await?.ok_or(AuthError::InvalidOneTimeToken)?;
        // Read while the row is locked, in the transaction (a second
        // connection here would let a burst of one link's uses hold the pool).
        let user = store::user_by_id_in(&mut tx, &user_id).await?.ok_or(AuthError::InvalidOneTimeToken)?;
        // A link to another address than the account's confirms a change of
        // address: it went to the new one, which is now proven.
        if user.email != email {
            return self.apply_email_change(tx, &user, &email).await;
        }
        store::mark_email_verified(&mut tx, &user_id).await?;
        // The other links to this address have nothing left to prove.
        store::void_one_time_tokens(&mut tx, &user_id, Purpose::VerifyEmail, Some(&email)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Moves the account to `new` (confirmed), voids every other pending
    /// link, and mails the old address that it happened.
    async fn apply_email_change(&self, mut tx: platform::Tx, user: &User, new: &str) -> Result<(), AuthError> {
        match store::set_verified_email(&mut tx, &user.id, new).await {
            // Taken since the link was sent.
            Err(e) if e.is_unique_violation() => return Err(AuthError::InvalidOneTimeToken),
            other => other?,
        }
        store::void_verification_tokens(&mut tx, &user.id).await?;
        // Reset links still in the old mailbox must not take the account back.
        store::void_one_time_tokens(&mut tx, &user.id, Purpose::ResetPassword, None).await?;
        let mut after = user.clone();
        after.email = new.to_owned();
        outbox::enqueue(&mut tx, &contact_changed(&after)).await?;
        outbox::enqueue(
            &mut tx,
            &Envelope::new(
                "user.email_changed",
                user.id,
                json!({"user_id": user.id, "name": user.name, "old_email": user.email, "new_email": new}),
            ),
        )
        .await?;
        tx.commit().await?;
        self.audit(Some(&user.id), "email_changed", Some(&user.id), None, json!({"from": user.email, "to": new})).await
    }

    /// Mails a reset link to a known address; says nothing either way.
    pub async fn forgot_password(&self, email: &str, ip: &str) -> Result<(), AuthError> {
        let Ok(email) = Email::parse(email) else { return Ok(()) };
        // Counted for unknown addresses too, and answered alike: no mail past
        // the limit, no tell. Per client first, so one client's requests
        // cannot use up the owner's; then a higher cap for all clients,
        // which a client that signed in to the account before is spared:
        // strangers using the cap up must not keep the owner's mail away.
        let limits = &self.config.limits;
        let per_client = format!("{}\n{}", email.as_str(), client_of(ip));
        let not_mailed = || {
            tracing::info!("password reset not mailed: the address had its hourly limit");
            Ok(())
        };
        if self.limits.hit("password_reset", &per_client, limits.password_resets_per_email_per_hour, platform::limit::HOUR).await.is_err() {
            return not_mailed();
        }
        let user = store::user_by_email(&self.db, email.as_str()).await?;
        let known = match (&user, user.as_ref().and_then(|u| known_client_hash(&u.id, ip))) {
            (Some(user), Some(client)) => store::is_known_client(&self.db, &user.id, &client, now_ms() - KNOWN_CLIENT_KEPT_MS).await?,
            _ => false,
        };
        if !known
            && self.limits.hit("password_reset_all", email.as_str(), limits.password_resets_per_email_all_clients_per_hour, platform::limit::HOUR).await.is_err()
        {
            return not_mailed();
        }
        let Some(user) = user else { return Ok(()) };
        if user.disabled_at.is_some() {
            return Ok(());
        }
        let token = random_token(32)?;
        let expires = now_ms() + RESET_PASSWORD_TTL_MS;
        let mut tx = self.db.begin().await?;
        store::insert_one_time_token(&mut tx, &token_hash(&token), &user.id, Purpose::ResetPassword, &user.email, expires)
            .await?;
        let url = format!("{}/account/reset-password?token={token}", self.config.public_url());
        outbox::enqueue(
            &mut tx,
            &Envelope::new(
                "user.password_reset_requested",
                user.id,
                json!({"user_id": user.id, "email": user.email, "name": user.name, "token": token, "url": url,
                       "expires_at_ms": expires}),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets a new password with a mailed token; signs out every session.
    /// The link is used up, the password set and every session signed out
    /// in one transaction: all of it or none.
    pub async fn reset_password(&self, token: &str, password: &str) -> Result<(), AuthError> {
        let token = token_hash(token);
        let user_id = store::one_time_token_user(&self.db, &token, Purpose::ResetPassword).await?.ok_or(AuthError::InvalidOneTimeToken)?;
        let user = store::user_by_id(&self.db, &user_id).await?.ok_or(AuthError::InvalidOneTimeToken)?;
        let email = Email::parse(&user.email)?;
        let password = Password::parse(password, &email, "password")?;
        // Hashed before anything is locked: it takes a while.
        let hash = self.hash(password.expose()).await?;
        // The account before its token (see `store::lock_user`).
        let mut tx = self.db.begin().await?;
        if !store::lock_user(&mut tx, &user_id).await? {
            return Err(AuthError::InvalidOneTimeToken);
        }
        let sent_to = store::consume_one_time_token(&mut tx, &token, Purpose::ResetPassword, &user_id).await?.ok_or(AuthError::InvalidOneTimeToken)?;
        // Read again under the lock, in the transaction: the address may have moved since.
        let user = store::user_by_id_in(&mut tx, &user_id).await?.ok_or(AuthError::InvalidOneTimeToken)?;
        // A link mailed to an address the account has left is not the owner's to use.
        if sent_to != user.email {
            tx.commit().await?;
            return Err(AuthError::InvalidOneTimeToken);
        }
        store::set_password_hash(&mut tx, &user_id, &hash).await?;
        // One link used, every other reset link of the account is void.
        store::void_one_time_tokens(&mut tx, &user_id, Purpose::ResetPassword, None).await?;
        let generation = self.sign_out_in(&mut tx, &user_id, None).await?;
        tx.commit().await?;
        self.revocations.raise(&user_id.to_string(), generation);
        // Whoever holds the mailbox may sign in at once, from anywhere.
        store::clear_sign_in_throttles_of(&self.db, &ThrottleKey::new(&user.email, "").email).await?;
        self.audit(Some(&user_id), "password_reset", Some(&user_id), None, json!({})).await?;
        Ok(())
    }

    /// Changes the password of a signed-in user; other sessions are signed out.
    pub async fn change_password(&self, user_id: &UserId, current: &str, new: &str, ip: &str) -> Result<(), AuthError> {
        let user = self.user(user_id).await?;
        self.confirm_password(&user, current, ip).await?;
        let email = Email::parse(&user.email)?;
        let password = Password::parse(new, &email, "new_password")?;
        let hash = self.hash(password.expose()).await?;
        // The new password, the sign-out and the void links in one
        // transaction, the account's row first: all of it or none.
        let confirmed = user.password_hash.as_deref().ok_or(AuthError::WrongPassword)?;
        let mut tx = self.db.begin().await?;
        // Only over the password just confirmed: a reset that committed
        // meanwhile stands, and this change is refused.
        if !store::replace_password_hash(&mut tx, user_id, confirmed, &hash).await? {
            tx.rollback().await?;
            return Err(AuthError::WrongPassword);
        }
        // A reset link mailed before the change must not undo it.
        store::void_one_time_tokens(&mut tx, user_id, Purpose::ResetPassword, None).await?;
        let generation = self.sign_out_in(&mut tx, user_id, None).await?;
        tx.commit().await?;
        self.revocations.raise(&user_id.to_string(), generation);
        self.audit(Some(user_id), "password_changed", Some(user_id), None, json!({})).await?;
        Ok(())
    }

    pub async fn user(&self, id: &UserId) -> Result<User, AuthError> {
        store::user_by_id(&self.db, id).await?.ok_or(AuthError::UserNotFound)
    }

    /// Updates the profile. A new email needs the password and waits for the
    /// link mailed to it; if another account has the address, its owner is
    /// mailed instead, and the answer is the same either way.
    pub async fn update_profile(&self, id: &UserId, change: ProfileUpdate) -> Result<User, AuthError> {
        let user = self.user(id).await?;
        let name = change.name.as_deref().map(domain::parse_name).transpose()?;
        let phone = match &change.phone {
            Some(Some(p)) => Some(Some(domain::parse_phone(p)?)),
            Some(None) => Some(None),
            None => None,
        };
        let locale = match &change.locale {
            Some(Some(l)) => Some(Some(domain::parse_locale(l)?)),
            Some(None) => Some(None),
            None => None,
        };
        let email = change.email.as_deref().map(Email::parse).transpose()?.filter(|e| e.as_str() != user.email);
        // A stolen access token must not be enough to move the account to another mailbox.
        let owner = match &email {
            Some(email) => {
                self.confirm_password(&user, change.password.as_deref().ok_or(AuthError::PasswordRequired)?, &change.ip).await?;
                store::user_by_email(&self.db, email.as_str()).await?
            }
            None => None,
        };
        let mut tx = self.db.begin().await?;
        store::update_profile(
            &mut tx,
            id,
            &store::ProfileChange {
                name: name.as_deref(),
                phone: phone.as_ref().map(|p| p.as_deref()),
                locale: locale.as_ref().map(|l| l.as_deref()),
                email: None,
            },
        )
        .await?;
        match (&email, &owner) {
            (Some(_), Some(owner)) => outbox::enqueue(&mut tx, &email_reuse(owner, "email_change")).await?,
            (Some(email), None) => {
                let name = name.as_deref().unwrap_or(&user.name);
                self.request_verification(&mut tx, id, email.as_str(), name).await?;
            }
            (None, _) => {}
        }
        let mut after = user.clone();
        after.name = name.unwrap_or(after.name);
        after.phone = phone.unwrap_or(after.phone);
        outbox::enqueue(&mut tx, &contact_changed(&after)).await?;
        tx.commit().await?;
        self.user(id).await
    }

    /// Staff: changes roles or disables an account. Disabling signs it out.
    pub async fn administer(
        &self,
        actor: &UserId,
        target: &UserId,
        roles: Option<Vec<Role>>,
        disabled: Option<bool>,
    ) -> Result<User, AuthError> {
        let before = self.user(target).await?;
        if actor == target && (disabled == Some(true) || roles.as_ref().is_some_and(|r| !r.contains(&Role::Admin))) {
            return Err(AuthError::NotOnSelf);
        }
        let roles = roles.map(|mut r| {
            r.sort();
            r.dedup();
            if r.is_empty() {
                r.push(Role::Customer);
            }
            r
        });
        let mut tx = self.db.begin().await?;
        store::set_roles_and_status(&mut tx, target, roles.as_deref(), disabled).await?;
        let mut after = before.clone();
        if let Some(roles) = &roles {
            after.roles = roles.clone();
        }
        if let Some(disabled) = disabled {
            after.disabled_at = disabled.then(time::OffsetDateTime::now_utc);
        }
        outbox::enqueue(&mut tx, &contact_changed(&after)).await?;
        // Tokens carry roles and permissions: any change makes them stale.
        let changed = after.roles != before.roles || after.disabled_at.is_some() != before.disabled_at.is_some();
        let generation = if changed { Some(self.revoke_access_in(&mut tx, target).await?) } else { None };
        if disabled == Some(true) {
            store::revoke_refresh_tokens_in(&mut tx, target, None).await?;
        }
        tx.commit().await?;
        if let Some(generation) = generation {
            self.revocations.raise(&target.to_string(), generation);
        }
        if let Some(roles) = &roles
            && *roles != before.roles
        {
            self.audit(Some(actor), "roles_changed", Some(target), None, json!({"from": before.roles, "to": roles}))
                .await?;
        }
        if let Some(disabled) = disabled {
            let action = if disabled { "user_disabled" } else { "user_enabled" };
            self.audit(Some(actor), action, Some(target), None, json!({})).await?;
        }
        self.user(target).await
    }

    pub async fn addresses(&self, user: &UserId) -> Result<Vec<store::StoredAddress>, AuthError> {
        Ok(store::addresses(&self.db, user).await?)
    }

    /// Adds an address or changes one; `patch` is merged over what is stored.
    pub async fn save_address(
        &self,
        user: &UserId,
        id: Option<&str>,
        patch: AddressPatch,
    ) -> Result<store::StoredAddress, AuthError> {
        let existing = match id {
            Some(id) => Some(store::address(&self.db, user, id).await?.ok_or(AuthError::AddressNotFound)?),
            None => None,
        };
        let base = existing.clone().map(|e| e.address);
        let pick = |new: Option<String>, old: Option<String>, field: &'static str| {
            new.or(old).ok_or(AuthError::Invalid(domain::Invalid {
                field,
                code: "missing_field",
                reason: "required".into(),
            }))
        };
        let address = kernel::address::Address {
            name: pick(patch.name, base.as_ref().map(|b| b.name.clone()), "name")?,
            line1: pick(patch.line1, base.as_ref().map(|b| b.line1.clone()), "line1")?,
            line2: patch.line2.unwrap_or_else(|| base.as_ref().and_then(|b| b.line2.clone())),
            city: pick(patch.city, base.as_ref().map(|b| b.city.clone()), "city")?,
            region: patch.region.unwrap_or_else(|| base.as_ref().and_then(|b| b.region.clone())),
            postal_code: pick(patch.postal_code, base.as_ref().map(|b| b.postal_code.clone()), "postal_code")?,
            country: pick(patch.country, base.as_ref().map(|b| b.country.clone()), "country")?,
            phone: patch.phone.unwrap_or_else(|| base.as_ref().and_then(|b| b.phone.clone())),
        }
        .normalise()
        .map_err(|e| domain::Invalid { field: e.field, code: "invalid_address", reason: e.reason.into() })?;
        let first = existing.is_none() && store::addresses(&self.db, user).await?.is_empty();
        let saved = store::StoredAddress {
            id: existing.as_ref().map_or_else(|| format!("adr_{}", kernel::id::encode_base32(kernel::id::Uuid::now_v7().as_u128())), |e| e.id.clone()),
            address,
            // The first address is the default of both kinds.
            default_shipping: patch.default_shipping.unwrap_or(first || existing.as_ref().is_some_and(|e| e.default_shipping)),
            default_billing: patch.default_billing.unwrap_or(first || existing.as_ref().is_some_and(|e| e.default_billing)),
            created_at: existing.map_or_else(time::OffsetDateTime::now_utc, |e| e.created_at),
        };
        let mut tx = self.db.begin().await?;
        if !store::save_address(&mut tx, user, &saved).await? {
            return Err(AuthError::AddressNotFound);
        }
        tx.commit().await?;
        Ok(saved)
    }

    pub async fn delete_address(&self, user: &UserId, id: &str) -> Result<(), AuthError> {
        if store::delete_address(&self.db, user, id).await? { Ok(()) } else { Err(AuthError::AddressNotFound) }
    }

    /// Everything the platform holds about `user`: auth's part and every other
    /// service's, through the personal-data port.
    pub async fn export(&self, user_id: &UserId) -> Result<serde_json::Value, AuthError> {
        let user = self.user(user_id).await?;
        let addresses = self.addresses(user_id).await?;
        let audit = store::audit_about(&self.db, user_id).await?;
        let mut services = serde_json::Map::new();
        for source in self.personal_data.as_ref().map(|p| p.all()).unwrap_or_default() {
            let part = source.export(user_id).await.map_err(|e| platform::DbError::Corrupt(e.to_string()))?;
            services.insert(source.service().to_owned(), part);
        }
        let ts = |t: time::OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        Ok(json!({
            "generated_at": ts(time::OffsetDateTime::now_utc()),
            "account": {
                "id": user.id, "email": user.email, "email_verified_at": user.email_verified_at.map(ts),
                "name": user.name, "phone": user.phone, "locale": user.locale, "roles": user.roles,
                "mfa_enabled": user.totp_enabled_at.is_some(), "created_at": ts(user.created_at),
            },
            "addresses": addresses.iter().map(|a| json!({
                "id": a.id, "address": a.address, "default_shipping": a.default_shipping,
                "default_billing": a.default_billing, "created_at": ts(a.created_at),
            })).collect::<Vec<_>>(),
            "security_events": audit.iter().map(|(id, at, actor, action, _, ip, detail)| json!({
                "id": id, "at": ts(*at), "actor_id": actor, "action": action, "ip": ip,
                "detail": serde_json::from_str::<serde_json::Value>(detail).unwrap_or_default(),
            })).collect::<Vec<_>>(),
            "services": services,
        }))
    }

    /// Erases the account's personal data (needs the password) and tells the
    /// other services (`user.deleted`) to anonymise their copies.
    pub async fn delete_account(&self, user_id: &UserId, password: &str, ip: &str) -> Result<(), AuthError> {
        let user = self.user(user_id).await?;
        self.confirm_password(&user, password, ip).await?;
        let mut tx = self.db.begin().await?;
        store::erase_user(&mut tx, user_id).await?;
        let generation = self.revoke_access_in(&mut tx, user_id).await?;
        outbox::enqueue(&mut tx, &Envelope::new("user.deleted", user_id, json!({"user_id": user_id}))).await?;
        tx.commit().await?;
        self.revocations.raise(&user_id.to_string(), generation);
        self.audit(Some(user_id), "account_deleted", Some(user_id), None, json!({})).await?;
        Ok(())
    }

    /// Creates an API key with `permissions`, which must all be the creator's
    /// own. Returns the key and its secret, shown this once.
    pub async fn create_api_key(
        &self,
        creator: &platform::auth::Principal,
        name: &str,
        permissions: Vec<kernel::auth::Permission>,
        expires_at: Option<time::OffsetDateTime>,
    ) -> Result<(store::ApiKey, String), AuthError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(domain::Invalid { field: "name", code: "invalid_name", reason: "1 to 100 characters".into() }.into());
        }
        if permissions.is_empty() {
            return Err(domain::Invalid { field: "permissions", code: "no_permissions", reason: "name at least one".into() }.into());
        }
        if let Some(p) = permissions.iter().find(|p| !creator.has(**p)) {
            return Err(AuthError::CannotGrant(*p));
        }
        if expires_at.is_some_and(|t| t <= time::OffsetDateTime::now_utc()) {
            return Err(domain::Invalid { field: "expires_at", code: "in_the_past", reason: "must be in the future".into() }.into());
        }
        // Every key expires: no expiry asked for means the longest allowed.
        let max_days = self.config.auth.api_key_max_days;
        let latest = time::OffsetDateTime::now_utc() + time::Duration::days(i64::from(max_days));
        if expires_at.is_some_and(|t| t > latest) {
            return Err(domain::Invalid {
                field: "expires_at",
                code: "too_far",
                reason: format!("API keys live at most {max_days} days"),
            }
            .into());
        }
        let expires_at = Some(expires_at.unwrap_or(latest));
        let secret = format!("sk_{}", random_token(32)?);
        let mut permissions = permissions;
        permissions.sort();
        permissions.dedup();
        let key = store::ApiKey {
            id: format!("key_{}", kernel::id::encode_base32(kernel::id::Uuid::now_v7().as_u128())),
            name: name.to_owned(),
            prefix: secret.chars().take(10).collect(),
            permissions,
            created_by: creator.user_id,
            created_at: time::OffsetDateTime::now_utc(),
            expires_at,
            last_used_at: None,
            revoked_at: None,
        };
        store::insert_api_key(&self.db, &key, &token_hash(&secret)).await?;
        self.audit(Some(&creator.user_id), "api_key_created", None, None, json!({"key": key.id, "permissions": key.permissions}))
            .await?;
        Ok((key, secret))
    }

    pub async fn api_keys(&self) -> Result<Vec<store::ApiKey>, AuthError> {
        Ok(store::api_keys(&self.db).await?)
    }

    pub async fn revoke_api_key(&self, actor: &UserId, id: &str) -> Result<(), AuthError> {
        if !store::revoke_api_key(&self.db, id).await? {
            return Err(AuthError::ApiKeyNotFound);
        }
        self.audit(Some(actor), "api_key_revoked", None, None, json!({"key": id})).await
    }

    /// The principal of an `sk_…` key, if it is known, live, and its creator
    /// is still enabled. The key may do what it was given and its creator may
    /// still do now: a demoted creator's keys shrink with them.
    pub async fn resolve_api_key(&self, secret: &str) -> Result<Option<platform::auth::Principal>, AuthError> {
        let Some(key) = store::api_key_by_hash(&self.db, &token_hash(secret)).await? else { return Ok(None) };
        let now = time::OffsetDateTime::now_utc();
        // Keys made before expiry was required live the longest allowed.
        let max_life = time::Duration::days(i64::from(self.config.auth.api_key_max_days));
        let expires_at = key.expires_at.unwrap_or(key.created_at + max_life);
        if key.revoked_at.is_some() || expires_at <= now {
            return Ok(None);
        }
        let Some(creator) = store::user_by_id(&self.db, &key.created_by).await? else { return Ok(None) };
        if creator.disabled_at.is_some() {
            return Ok(None);
        }
        let held = self.permissions_now(&creator);
        let permissions: Vec<_> = key.permissions.into_iter().filter(|p| held.contains(p)).collect();
        // Last use is kept to the minute: no write on every request.
        if key.last_used_at.is_none_or(|t| now - t > time::Duration::minutes(1)) {
            store::touch_api_key(&self.db, &key.id, now).await?;
        }
        Ok(Some(platform::auth::Principal {
            user_id: key.created_by,
            roles: Vec::new(),
            permissions,
            credential_id: key.id,
            credential: platform::auth::Credential::ApiKey,
            email_verified: false,
        }))
    }

    pub async fn audit(
        &self,
        actor: Option<&UserId>,
        action: &str,
        subject: Option<&UserId>,
        ip: Option<&str>,
        detail: serde_json::Value,
    ) -> Result<(), AuthError> {
        store::audit(&self.db, AuditEntry { actor, action, subject, ip, detail }).await?;
        Ok(())
    }
}

/// Percent-encodes what is not unreserved (RFC 3986), for the otpauth label.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Address fields to set; absent ones keep their stored value. For the
/// optional lines, `Some(None)` clears.
#[derive(Default)]
pub struct AddressPatch {
    pub name: Option<String>,
    pub line1: Option<String>,
    pub line2: Option<Option<String>>,
    pub city: Option<String>,
    pub region: Option<Option<String>>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
    pub phone: Option<Option<String>>,
    pub default_shipping: Option<bool>,
    pub default_billing: Option<bool>,
}

/// A partial profile update: `None` leaves a field alone, `Some(None)` clears it.
#[derive(Default)]
pub struct ProfileUpdate {
    pub name: Option<String>,
    pub phone: Option<Option<String>>,
    pub locale: Option<Option<String>>,
    /// Takes effect when the link mailed to it is used.
    pub email: Option<String>,
    /// The current password, which a change of email needs.
    pub password: Option<String>,
    /// The client's address, where a wrong password is counted.
    pub ip: String,
}

/// A counted sign-in attempt: the failures it makes if it fails, and the wait it started.
struct Attempt {
    failures: i64,
    wait_secs: u64,
}

/// What a sign-in throttle is keyed by: hashes of the email as typed
/// (normalised when it is an address) with and without the client address.
/// Hashes, so rows for unknown emails keep nothing anyone typed.
struct ThrottleKey {
    pair: String,
    email: String,
}

impl ThrottleKey {
    fn new(email: &str, ip: &str) -> ThrottleKey {
        let email = Email::parse(email).map_or_else(|_| email.trim().to_lowercase(), |e| e.as_str().to_owned());
        ThrottleKey { pair: token_hash(&format!("{email}\n{}", client_of(ip))), email: token_hash(&email) }
    }
}

/// The client a per-client count keys by: the address's
/// [`kernel::net::client_prefix`] (an IPv6 client is its /64), `unknown` as is.
fn client_of(ip: &str) -> String {
    ip.parse::<std::net::IpAddr>().map_or_else(|_| ip.to_owned(), |ip| kernel::net::client_prefix(ip).to_string())
}

/// What a client that signed in to `user` is known by: a hash of the user and
/// the address's [`kernel::net::client_prefix`]; `None` when the address is
/// not known (`unknown`), which is no one's in particular.
fn known_client_hash(user: &UserId, ip: &str) -> Option<String> {
    let ip = ip.parse::<std::net::IpAddr>().ok()?;
    Some(token_hash(&format!("{user}\n{}", kernel::net::client_prefix(ip))))
}

/// Login attempts per client address per minute, in process. (Replicas each
/// count their own; the per-email-and-address throttle lives in the database and is shared.)
#[derive(Default)]
pub struct IpLimiter {
    windows: Mutex<HashMap<String, (i64, u32)>>,
}

impl IpLimiter {
    /// Counts an attempt; returns the seconds to wait if over `per_minute`.
    pub fn hit(&self, ip: &str, per_minute: u32) -> Option<u64> {
        let now = now_ms();
        let minute = now / 60_000;
        let Ok(mut windows) = self.windows.lock() else { return None };
        if windows.len() > 100_000 {
            windows.retain(|_, (m, _)| *m == minute);
        }
        let entry = windows.entry(client_of(ip)).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 += 1;
        (entry.1 > per_minute).then(|| ((minute + 1) * 60_000 - now).max(1000) as u64 / 1000)
    }
}

/// The port other services use to accept API keys.
pub struct ApiKeys(pub Auth);

#[async_trait::async_trait]
impl platform::auth::ApiKeyResolver for ApiKeys {
    async fn resolve(&self, secret: &str) -> Result<Option<platform::auth::Principal>, platform::service::BoxError> {
        Ok(self.0.resolve_api_key(secret).await?)
    }
}

/// `user.email_reuse_attempted`: someone used `owner`'s address to sign up
/// (`attempt` = `register`) or as another account's new address
/// (`email_change`). The owner is mailed; the one who tried learns nothing.
fn email_reuse(owner: &User, attempt: &str) -> Envelope {
    Envelope::new(
        "user.email_reuse_attempted",
        owner.id,
        json!({"user_id": owner.id, "email": owner.email, "name": owner.name, "attempt": attempt}),
    )
}

/// `user.updated`: how to reach a user and what they may do, for the
/// services that keep a copy (notify's contact book).
fn contact_changed(user: &User) -> Envelope {
    Envelope::new(
        "user.updated",
        user.id,
        json!({"user_id": user.id, "email": user.email, "name": user.name, "phone": user.phone,
               "roles": user.roles, "permissions": kernel::auth::permissions_of(&user.roles),
               "disabled": user.disabled_at.is_some()}),
    )
}
