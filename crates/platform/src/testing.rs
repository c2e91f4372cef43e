//! Test support: every test gets its own database (a fresh SQLite file, or a
//! fresh PostgreSQL database when `EMPORIUM_TEST_DATABASE_URL` is set) and its
//! own JetStream stream, so tests run in parallel and re-run cleanly.

use std::path::PathBuf;
use std::sync::Arc;

use kernel::config::Config;
use sqlx::Connection;

use crate::db::{Db, DbOptions};
use crate::migrate::{self, Migrations, PLATFORM};

/// The PostgreSQL server tests use, when set (CI sets it).
pub fn database_url() -> Option<String> {
    non_empty("EMPORIUM_TEST_DATABASE_URL")
}

/// The NATS server tests use, when set (CI sets it).
pub fn nats_url() -> Option<String> {
    non_empty("EMPORIUM_TEST_NATS_URL")
}

/// An S3-compatible server for object-store tests (path-style, any keys).
pub fn s3_url() -> Option<String> {
    non_empty("EMPORIUM_TEST_S3_URL")
}

/// Makes `bucket` on the S3-compatible server at `endpoint` (path-style,
/// unsigned, as local test servers accept); panics unless it answers 200.
pub fn create_bucket(endpoint: &str, bucket: &str) {
    use std::io::{Read, Write};
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(host).unwrap_or_else(|e| panic!("cannot reach {host}: {e}"));
    write!(stream, "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap_or_else(|e| panic!("cannot ask {host} for a bucket: {e}"));
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap_or_else(|e| panic!("no answer from {host}: {e}"));
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

/// The Redis server tests use, when set (CI sets it).
pub fn redis_url() -> Option<String> {
    non_empty("EMPORIUM_TEST_REDIS_URL")
}

fn non_empty(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

/// RFC 6238 TOTP (SHA1, 6 digits, 30 s) for a base32 secret at `unix`,
/// written from the RFC rather than taken from the auth service, so the
/// tests check one implementation against another.
pub fn totp(secret_b32: &str, unix: u64) -> String {
    let mut bits = 0u32;
    let mut buffer = 0u32;
    let mut key = Vec::new();
    for c in secret_b32.bytes().filter(|c| *c != b'=') {
        let v = if c.is_ascii_uppercase() { c - b'A' } else { c.wrapping_sub(b'2') + 26 };
        buffer = (buffer << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            key.push((buffer >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    let mac = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &key), &(unix / 30).to_be_bytes());
    let m = mac.as_ref();
    let o = usize::from(m[19] & 15);
    let n = u32::from_be_bytes([m[o] & 0x7f, m[o + 1], m[o + 2], m[o + 3]]);
    format!("{:06}", n % 1_000_000)
}

/// A name no other test run uses: `prefix_<uuid>` in lower case.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// Where a test's files live. When the test ends its folder is removed, and
/// so are its PostgreSQL database and JetStream streams.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    /// `Some` on PostgreSQL: the URL of the test's own database.
    pub database_url: Option<String>,
    streams: std::sync::Mutex<Vec<String>>,
}

/// One JetStream stream that no test deletes. nats-server (2.9) removes an
/// account's folder of file streams when its last stream is deleted, and a
/// stream created at that moment fails ("could not create storage
/// directory", 10049/10077); tests create and delete streams all the time,
/// so this one keeps the folder.
async fn keep_the_stream_folder() {
    static KEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    KEPT.get_or_init(|| async {
        let Some(url) = nats_url() else { return };
        let Ok(client) = async_nats::connect(url).await else { return };
        let js = async_nats::jetstream::new(client);
        let keeper = async_nats::jetstream::stream::Config {
            name: "EMPORIUM_TEST_KEEPER".into(),
            subjects: vec!["emporium_test_keeper".into()],
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        };
        for _ in 0..20 {
            if js.get_or_create_stream(keeper.clone()).await.is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
}

impl Sandbox {
    /// A fresh folder and, on PostgreSQL, a fresh database.
    pub async fn new() -> Sandbox {
        keep_the_stream_folder().await;
        let dir = tempfile::Builder::new()
            .prefix("emporium-test-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot make a temporary folder: {e}"));
        let database_url = match database_url() {
            Some(admin) => Some(create_database(&admin).await),
            None => None,
        };
        Sandbox { dir, database_url, streams: std::sync::Mutex::new(Vec::new()) }
    }

    /// A JetStream stream name and subject prefix of this test's own,
    /// deleted when the sandbox is dropped.
    pub fn stream(&self) -> (String, String) {
        let prefix = unique("t");
        let stream = prefix.to_uppercase();
        if let Ok(mut streams) = self.streams.lock() {
            streams.push(stream.clone());
        }
        (stream, prefix)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// The database URL of `service`: the shared fresh PostgreSQL database, or
    /// a SQLite file in the sandbox.
    pub fn url_for(&self, service: &str) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!("sqlite://{}", self.dir.path().join(format!("{service}.db")).display())
        })
    }

    /// Opens (and migrates with the platform tables plus `sets`) the database
    /// of `service`.
    pub async fn db(&self, service: &str, sets: &[&Migrations]) -> Db {
        let db = Db::connect(&self.url_for(service), service, &DbOptions::default())
            .await
            .unwrap_or_else(|e| panic!("cannot open the test database: {e}"));
        let mut all: Vec<&Migrations> = vec![&PLATFORM];
        all.extend_from_slice(sets);
        migrate::migrate(&db, &all).await.unwrap_or_else(|e| panic!("migration failed: {e}"));
        db
    }

    /// A configuration for a whole app in this sandbox, with JetStream (on a
    /// stream of its own) and Redis when the test environment has them.
    pub fn config(&self) -> Arc<Config> {
        let mut config = Config { data_dir: self.data_dir(), ..Config::default() };
        config.database.url = self.database_url.clone();
        config.database.max_connections = 5;
        config.outbox.poll_interval_ms = 100;
        config.http.shutdown_grace_secs = 5;
        if let Some(url) = nats_url() {
            let (stream, prefix) = self.stream();
            config.nats.url = Some(url);
            config.nats.stream = stream;
            config.nats.subject_prefix = prefix;
        }
        config.redis.url = redis_url();
        config.redis.prefix = unique("t");
        // Tests pay with test cards; a shop takes them only when told to.
        config.orders.test_payments = Some(true);
        // Tests send many requests from one in-process "client" and reuse
        // addresses: every rate limit is off unless a test turns it on, and
        // counts in a shared Redis are this test's own.
        config.limits = kernel::config::LimitsConfig {
            per_ip_per_minute: 0,
            per_principal_per_minute: 0,
            password_resets_per_email_per_hour: 0,
            password_resets_per_email_all_clients_per_hour: 0,
            stock_alerts_per_email_per_hour: 0,
            discount_attempts_per_cart_per_10_min: 0,
            discount_attempts_per_client_per_hour: 0,
            sign_ups_per_ip_per_hour: 0,
            carts_per_ip_per_hour: 0,
            view_dedup_secs: 0,
        };
        Arc::new(config)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let streams = self.streams.lock().map(|s| s.clone()).unwrap_or_default();
        let database = self.database_url.clone();
        if streams.is_empty() && database.is_none() {
            return;
        }
        // Drop cannot await: clean up on a thread with a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                if let (Some(url), false) = (nats_url(), streams.is_empty())
                    && let Ok(client) = async_nats::connect(url).await
                {
                    let js = async_nats::jetstream::new(client);
                    for stream in streams {
                        let _ = js.delete_stream(&stream).await;
                    }
                }
                if let (Some(admin), Some(url)) = (database_url(), database) {
                    let name = url.rsplit('/').next().unwrap_or_default().split('?').next().unwrap_or_default().to_owned();
                    if name.starts_with("emporium_t_")
                        && let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await
                    {
                        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                        let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await;
                        let _ = conn.close().await;
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// Creates a database named after a fresh unique id on the server of
/// `admin_url` and returns its URL. Test databases are named `emporium_t_…`
/// so a CI run can drop what an interrupted run left behind.
pub async fn create_database(admin_url: &str) -> String {
    let name = unique("emporium_t");
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| panic!("EMPORIUM_TEST_DATABASE_URL is set but unreachable: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
    let _ = conn.close().await;
    replace_database(admin_url, &name)
}

/// `postgres://u@h:5432/postgres?x=y` with another database name.
fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_part = match base[authority_end..].find('/') {
        Some(i) => &base[..authority_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{name}?{q}"),
        None => format!("{host_part}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_names_are_replaced() {
        assert_eq!(super::replace_database("postgres://u@h:5432/postgres", "x"), "postgres://u@h:5432/x");
        assert_eq!(super::replace_database("postgres://h", "x"), "postgres://h/x");
        assert_eq!(super::replace_database("postgres://h/db?sslmode=disable", "x"), "postgres://h/x?sslmode=disable");
    }
}
