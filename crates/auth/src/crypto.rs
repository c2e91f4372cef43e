//! Auth's cryptography: Argon2id password hashes (parameters recorded in the
//! PHC string, so raising them rehashes at the next login), random opaque
//! tokens stored only as SHA-256 hashes, and Ed25519 signing keys encrypted
//! at rest with AES-256-GCM.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use kernel::config::AuthConfig;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("argon2: {0}")]
    Argon2(String),
    #[error("the system random source failed")]
    Random,
    #[error("a signing key cannot be decrypted: wrong or missing key-encryption key")]
    Decrypt,
    #[error("a signing key is encrypted but no key-encryption key is configured")]
    NoKek,
    #[error("the key-encryption key file {path}: {reason}")]
    KekFile { path: String, reason: String },
    #[error("the auth database holds signing keys or TOTP secrets sealed with a key-encryption key, but \
        auth.key_encryption_key (EMPORIUM_AUTH_KEY_ENCRYPTION_KEY) is not set and {path} does not exist: \
        set the key that sealed them, or put its file back; a new key could never open them, so none is generated")]
    KekLost { path: String },
}

/// Hashes and checks passwords with the configured Argon2id cost.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    /// A hash of a random password, checked when the email is unknown, so
    /// both failures take the same time.
    dummy: String,
}

impl PasswordHasher {
    pub fn new(config: &AuthConfig) -> Result<Self, CryptoError> {
        let params = Params::new(config.argon2_memory_kib, config.argon2_iterations, config.argon2_parallelism, None)
            .map_err(|e| CryptoError::Argon2(e.to_string()))?;
        let mut hasher = Self { params, dummy: String::new() };
        hasher.dummy = hasher.hash(&random_token(16)?)?;
        Ok(hasher)
    }

    fn argon2(&self) -> Argon2<'_> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    pub fn hash(&self, password: &str) -> Result<String, CryptoError> {
        let mut salt = [0u8; 16];
        SystemRandom::new().fill(&mut salt).map_err(|_| CryptoError::Random)?;
        let salt = SaltString::encode_b64(&salt).map_err(|e| CryptoError::Argon2(e.to_string()))?;
        self.argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| CryptoError::Argon2(e.to_string()))
    }

    /// Whether `password` matches `stored` (a PHC string, whatever its cost).
    pub fn verify(&self, password: &str, stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else { return false };
        // The parameters come from the stored string, not from `self`.
        Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
    }

    /// Burns the time of one verification, for unknown accounts.
    pub fn verify_dummy(&self, password: &str) {
        let _ = self.verify(password, &self.dummy);
    }

    /// Whether `stored` was made with other parameters than the configured ones.
    pub fn needs_rehash(&self, stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else { return true };
        let Ok(params) = Params::try_from(&parsed) else { return true };
        parsed.algorithm.as_str() != "argon2id"
            || params.m_cost() != self.params.m_cost()
            || params.t_cost() != self.params.t_cost()
            || params.p_cost() != self.params.p_cost()
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Long-lived threads, one per core, that compute password hashes. Each hash
/// takes the configured memory: a fixed set of threads bounds the memory in
/// use and reuses it hash after hash (fresh blocking threads would each
/// fault in their own), and hashes beyond the cores wait their turn instead
/// of slowing each other down.
pub struct HashPool {
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<Job>>,
}

impl HashPool {
    /// The process-wide pool (hashing is CPU-bound: one pool for all users).
    pub fn shared() -> std::sync::Arc<HashPool> {
        static POOL: std::sync::OnceLock<std::sync::Arc<HashPool>> = std::sync::OnceLock::new();
        POOL.get_or_init(|| {
            let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
            std::sync::Arc::new(HashPool::new(threads))
        })
        .clone()
    }

    pub fn new(threads: usize) -> HashPool {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("password-hash-{i}")).spawn(move || {
                loop {
                    let job = match rx.lock() {
                        Ok(guard) => guard.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return, // the pool is gone
                    }
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password-hash thread");
            }
        }
        HashPool { jobs: std::sync::Mutex::new(tx) }
    }

    /// Runs `work` on a pool thread; `None` if the pool has stopped.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(work());
        });
        self.jobs.lock().ok()?.send(job).ok()?;
        result.await.ok()
    }
}

/// Reads `<dir>/auth.kek`, or makes it (32 random bytes, base64, mode 0600)
/// if it is not there. Two processes starting at once agree on one key: the
/// file appears whole (a hard link of a finished temporary file) or not at all.
fn kek_from_file(dir: &std::path::Path) -> Result<String, CryptoError> {
    let path = dir.join(KEK_FILE);
    let shown = path.display().to_string();
    let fail = |e: std::io::Error| CryptoError::KekFile { path: shown.clone(), reason: e.to_string() };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            warn_if_readable_by_others(&path);
            tracing::info!(path = %shown, "using the key-encryption key generated in this file; \
                move it into auth.key_encryption_key (EMPORIUM_AUTH_KEY_ENCRYPTION_KEY) or your secret store");
            return Ok(text);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e)),
    }
    std::fs::create_dir_all(dir).map_err(fail)?;
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).map_err(|_| CryptoError::Random)?;
    let text = STANDARD.encode(bytes);
    let temporary = dir.join(format!("{KEK_FILE}.{}.tmp", random_token(8)?));
    let written = write_private(&temporary, text.as_bytes()).and_then(|()| std::fs::hard_link(&temporary, &path));
    let _ = std::fs::remove_file(&temporary);
    match written {
        Ok(()) => {
            tracing::warn!(path = %shown, "auth.key_encryption_key is not set: generated a key-encryption key into \
                this file (mode 0600); it seals the token signing keys and TOTP secrets. Move it into the setting \
                (EMPORIUM_AUTH_KEY_ENCRYPTION_KEY) or your secret store and keep a copy: without it they cannot be read");
            Ok(text)
        }
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read_to_string(&path).map_err(fail),
        Err(e) => Err(fail(e)),
    }
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn warn_if_readable_by_others(path: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), "the key-encryption key file is readable by others: chmod 600 it");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// `bytes` random bytes as URL-safe base64.
pub fn random_token(bytes: usize) -> Result<String, CryptoError> {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new().fill(&mut buf).map_err(|_| CryptoError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

/// How opaque tokens are stored: SHA-256, hex. The tokens carry 256 random
/// bits, so a fast hash is enough; a leaked table reveals no usable token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The file a generated key-encryption key is kept in, under `data_dir`.
pub const KEK_FILE: &str = "auth.kek";

/// Encrypts signing keys and TOTP secrets at rest (AES-256-GCM under the
/// key-encryption key).
#[derive(Clone)]
pub struct KeyVault {
    kek: Option<[u8; 32]>,
}

fn parse_kek(text: &str) -> Result<[u8; 32], CryptoError> {
    let bytes = STANDARD
        .decode(text.trim())
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text.trim()))
        .map_err(|_| CryptoError::Decrypt)?;
    bytes.try_into().map_err(|_| CryptoError::Decrypt)
}

impl KeyVault {
    pub fn new(config: &AuthConfig) -> Result<Self, CryptoError> {
        let kek = config.key_encryption_key.as_deref().map(parse_kek).transpose()?;
        Ok(Self { kek })
    }

    /// The vault of a service: the configured key-encryption key, else the
    /// one in `<data_dir>/auth.kek`, generated there on first start. There is
    /// no vault without a key, so nothing is ever stored in plaintext.
    pub fn for_service(config: &kernel::config::Config) -> Result<Self, CryptoError> {
        if config.auth.key_encryption_key.is_some() {
            return Self::new(&config.auth);
        }
        let text = kek_from_file(&config.data_dir)?;
        Ok(Self { kek: Some(parse_kek(&text)?) })
    }

    /// Refuses to start where a key would be generated although the data was
    /// sealed with another one (a lost `auth.kek`, ephemeral storage, a
    /// replica with its own data folder): `sealed` says whether the database
    /// holds sealed rows.
    pub fn check_kek_at_hand(config: &kernel::config::Config, sealed: bool) -> Result<(), CryptoError> {
        let path = config.data_dir.join(KEK_FILE);
        if sealed && config.auth.key_encryption_key.is_none() && !path.exists() {
            return Err(CryptoError::KekLost { path: path.display().to_string() });
        }
        Ok(())
    }

    /// Returns (stored bytes, encrypted = true): nonce ‖ ciphertext ‖ tag.
    /// Without a key-encryption key nothing is sealed: an error, never plaintext.
    pub fn seal(&self, plain: &[u8], kid: &str) -> Result<(Vec<u8>, bool), CryptoError> {
        let kek = self.kek.as_ref().ok_or(CryptoError::NoKek)?;
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, kek).map_err(|_| CryptoError::Decrypt)?);
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| CryptoError::Random)?;
        let mut data = plain.to_vec();
        // The kid is bound as associated data: a row's key cannot be swapped into another row.
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(kid.as_bytes()), &mut data)
            .map_err(|_| CryptoError::Decrypt)?;
        let mut out = nonce.to_vec();
        out.extend(data);
        Ok((out, true))
    }

    pub fn open(&self, stored: &[u8], encrypted: bool, kid: &str) -> Result<Vec<u8>, CryptoError> {
        if !encrypted {
            return Ok(stored.to_vec());
        }
        let kek = self.kek.as_ref().ok_or(CryptoError::NoKek)?;
        if stored.len() < NONCE_LEN {
            return Err(CryptoError::Decrypt);
        }
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, kek).map_err(|_| CryptoError::Decrypt)?);
        let (nonce, sealed) = stored.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Decrypt)?;
        let mut data = sealed.to_vec();
        let plain = key.open_in_place(nonce, Aad::from(kid.as_bytes()), &mut data).map_err(|_| CryptoError::Decrypt)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> AuthConfig {
        AuthConfig { argon2_memory_kib: 64, argon2_iterations: 1, ..AuthConfig::default() }
    }

    #[test]
    fn passwords_hash_verify_and_know_their_cost() {
        let hasher = PasswordHasher::new(&cheap()).unwrap();
        let stored = hasher.hash("correct horse battery").unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{stored}");
        assert!(hasher.verify("correct horse battery", &stored));
        assert!(!hasher.verify("wrong horse battery", &stored));
        assert!(!hasher.needs_rehash(&stored));
        let stronger = PasswordHasher::new(&AuthConfig { argon2_memory_kib: 128, ..cheap() }).unwrap();
        assert!(stronger.needs_rehash(&stored));
        assert!(stronger.verify("correct horse battery", &stored), "old hashes still verify");
    }

    #[test]
    fn keys_are_sealed_and_bound_to_their_kid() {
        let kek = STANDARD.encode([7u8; 32]);
        let vault = KeyVault::new(&AuthConfig { key_encryption_key: Some(kek), ..cheap() }).unwrap();
        let (sealed, encrypted) = vault.seal(b"secret key bytes", "k1").unwrap();
        assert!(encrypted && !sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(vault.open(&sealed, true, "k1").unwrap(), b"secret key bytes");
        assert!(vault.open(&sealed, true, "k2").is_err());
        let plain = KeyVault::new(&cheap()).unwrap();
        assert!(matches!(plain.open(&sealed, true, "k1"), Err(CryptoError::NoKek)));
        assert!(matches!(plain.seal(b"x", "k"), Err(CryptoError::NoKek)), "no plaintext path");
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = random_token(32).unwrap();
        assert_ne!(a, random_token(32).unwrap());
        assert_eq!(a.len(), 43);
        assert_eq!(token_hash(&a).len(), 64);
    }
}

/// RFC 4648 base32 without padding, as authenticator apps expect secrets.
pub fn base32_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let (mut buffer, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for c in text.trim_end_matches('=').bytes() {
        let v = match c.to_ascii_uppercase() {
            c @ b'A'..=b'Z' => c - b'A',
            c @ b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            out.push((buffer >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    Some(out)
}

/// TOTP (RFC 6238) with HMAC-SHA1, 6 digits, 30-second steps: the code for `step`.
pub fn totp_code(secret: &[u8], step: u64) -> String {
    use ring::hmac;
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let mac = hmac::sign(&key, &step.to_be_bytes());
    let mac = mac.as_ref();
    let offset = (mac[mac.len() - 1] & 0x0f) as usize;
    let binary = (u32::from(mac[offset] & 0x7f) << 24)
        | (u32::from(mac[offset + 1]) << 16)
        | (u32::from(mac[offset + 2]) << 8)
        | u32::from(mac[offset + 3]);
    format!("{:06}", binary % 1_000_000)
}

/// The step a Unix time falls in.
pub fn totp_step(unix_secs: i64) -> u64 {
    (unix_secs.max(0) / 30) as u64
}

/// Finds the step (now, one before, one after) whose code is `code`,
/// comparing in constant time.
pub fn totp_match(secret: &[u8], code: &str, unix_secs: i64) -> Option<u64> {
    let now = totp_step(unix_secs);
    [now, now.saturating_sub(1), now + 1]
        .into_iter()
        .find(|step| platform::auth::constant_time_eq(totp_code(secret, *step).as_bytes(), code.as_bytes()))
}

#[cfg(test)]
mod totp_tests {
    use super::*;

    #[test]
    fn rfc_6238_test_vectors() {
        // Appendix B of RFC 6238 (SHA1 column), last six digits.
        let secret = b"12345678901234567890";
        for (time, code) in [(59, "287082"), (1_111_111_109, "081804"), (1_111_111_111, "050471"),
                             (1_234_567_890, "005924"), (2_000_000_000, "279037"), (20_000_000_000, "353130")] {
            assert_eq!(totp_code(secret, totp_step(time)), code, "t={time}");
        }
        assert_eq!(totp_match(secret, "287082", 59 + 30), Some(1), "one step of drift is accepted");
        assert_eq!(totp_match(secret, "287082", 59 + 90), None);
    }

    #[test]
    fn base32_matches_rfc_4648() {
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32_decode("MZXW6YTBOI").unwrap(), b"foobar");
        assert_eq!(base32_decode("mzxw6ytboi======").unwrap(), b"foobar");
        assert!(base32_decode("not base32!").is_none());
    }
}
