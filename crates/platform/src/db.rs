//! Database pools for SQLite and PostgreSQL behind one type, so one query body
//! serves both; statements that must differ branch on [`Dialect`] in the store.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Postgres, Sqlite, Transaction};
use tokio::sync::Notify;

/// Reads with the same expression from whichever pool is live:
/// `on_db!(db, pool => sqlx::query_scalar(SQL).fetch_one(pool).await)`.
/// On SQLite these are the reader connections, which may not write
/// (`PRAGMA query_only`): a write is [`on_write!`] or a [`Db::begin`].
#[macro_export]
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {{
        $crate::db::statement();
        match $db.pool() {
            $crate::db::Pool::Sqlite($pool) => $body,
            $crate::db::Pool::Postgres($pool) => $body,
        }
    }};
}

/// One autocommitted write with the same expression on whichever database is
/// live: `on_write!(db, pool => sqlx::query(SQL).execute(pool).await.map(|r| r.rows_affected()))`.
/// On SQLite it waits its turn for the one writer connection, in arrival order.
#[macro_export]
macro_rules! on_write {
    ($db:expr, $pool:ident => $body:expr) => {{
        $crate::db::statement();
        match $db.writer() {
            $crate::db::Pool::Sqlite($pool) => $body,
            $crate::db::Pool::Postgres($pool) => $body,
        }
    }};
}

/// Runs the same expression inside whichever transaction is live:
/// `on_tx!(tx, conn => sqlx::query(SQL).execute(conn).await.map(|r| r.rows_affected()))`.
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, $conn:ident => $body:expr) => {{
        $crate::db::statement();
        match $tx.inner_mut() {
            $crate::db::TxInner::Sqlite(t) => {
                let $conn = &mut **t;
                $body
            }
            $crate::db::TxInner::Postgres(t) => {
                let $conn = &mut **t;
                $body
            }
        }
    }};
}

/// `count` numbered parameters from `$first` on, for an `IN (…)` list:
/// `placeholders(2, 3)` is `"$2, $3, $4"`.
pub fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// Notes one statement (every [`on_db!`], [`on_write!`] and [`on_tx!`]) in
/// the log at debug level (`platform::db`), in the span of the request
/// that ran it: the checkout benchmark counts them.
#[inline]
#[track_caller]
pub fn statement() {
    tracing::debug!(target: "platform::db", at = %std::panic::Location::caller(), "statement");
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error("unsupported database url `{0}`: use sqlite:// or postgres://")]
    UnsupportedUrl(String),
    #[error("cannot reach PostgreSQL at {target}: {cause}")]
    Unreachable { target: String, cause: String },
    #[error("cannot create the data folder {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("migration {component}/{name}: {reason}")]
    Migration { component: String, name: String, reason: String },
    #[error("stored value is not valid: {0}")]
    Corrupt(String),
}

impl DbError {
    /// A unique or primary-key constraint refused the write.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, DbError::Sql(sqlx::Error::Database(e)) if e.is_unique_violation())
    }

    /// The database could not be reached or gave no connection in time
    /// (refused, reset, the pool waited out its timeout, PostgreSQL at its
    /// connection limit or shutting down, SQLite locked past its busy
    /// timeout): worth retrying shortly, unlike a failing statement.
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::Unreachable { .. } => true,
            DbError::Sql(sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_)) => true,
            DbError::Sql(sqlx::Error::Database(e)) => {
                let Some(code) = e.code() else { return false };
                if e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    // SQLite: busy (5) or locked (6), with their extended codes.
                    matches!(code.parse::<u32>().map(|c| c & 0xff), Ok(5 | 6))
                } else {
                    // PostgreSQL: connection exceptions (08…), too many
                    // connections, shutting down or starting up.
                    code.starts_with("08") || matches!(code.as_ref(), "53300" | "57P01" | "57P02" | "57P03")
                }
            }
            _ => false,
        }
    }
}

/// How long a client is asked to wait when the database is unavailable.
pub const RETRY_AFTER_SECS: u64 = 5;

/// The one mapping of a database failure to an answer: an outage is 503
/// with `Retry-After`; anything else is a 500 whose cause is only logged.
impl From<&DbError> for kernel::ApiError {
    fn from(e: &DbError) -> Self {
        if e.is_unavailable() { kernel::ApiError::unavailable("the database", e, RETRY_AFTER_SECS) } else { kernel::ApiError::internal(e) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Clone, Debug)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// One service's database: its pools, its name (the PostgreSQL schema), and
/// the bell its outbox relay listens to.
///
/// On SQLite, which lets one connection write at a time, writes go through
/// one writer connection: transactions and autocommitted writes take it in
/// arrival order (the pool's fair queue) instead of sleeping in SQLite's busy
/// handler, and reads have connections of their own that cannot write. On
/// PostgreSQL both are the same pool.
#[derive(Clone, Debug)]
pub struct Db {
    pool: Pool,
    writer: Pool,
    schema: Arc<str>,
    outbox_bell: Arc<Notify>,
    keys: Arc<Keys>,
}

/// Where a service's idempotency records are kept (see [`Db::keys`]).
#[derive(Debug, Default)]
struct Keys {
    /// The store once opened.
    opened: tokio::sync::OnceCell<Db>,
    /// How to open it on SQLite: the file beside the service's, and the
    /// service's options; `None` keeps them in the service's database.
    apart: Option<(SqliteConnectOptions, DbOptions)>,
}

#[derive(Debug, Clone)]
pub struct DbOptions {
    pub max_connections: u32,
    pub busy_timeout: Duration,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self { max_connections: 10, busy_timeout: Duration::from_secs(5) }
    }
}

impl Db {
    /// Opens `url` for the service `schema`. SQLite: WAL, foreign keys on, a
    /// busy timeout, the file and its folder created if missing. PostgreSQL:
    /// the connection's `search_path` is the service's own schema.
    pub async fn connect(url: &str, schema: &str, options: &DbOptions) -> Result<Db, DbError> {
        let pool = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(options.busy_timeout);
            let path = opts.get_filename();
            let keys_opts = opts.clone().filename(keys_file(path));
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| DbError::DataDir {
                    path: dir.display().to_string(),
                    source,
                })?;
            }
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            let mut db = Db::open_sqlite_file(opts, schema, options).await?;
            db.keys = Arc::new(Keys { opened: Default::default(), apart: (!in_memory).then(|| (keys_opts, options.clone())) });
            return Ok(db);
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let opts = PgConnectOptions::from_str(url)?
                .options([("search_path", schema)])
                .application_name(&format!("emporium-{schema}"));
            // No test before each use: it is one more round trip to the
            // server per statement. A connection that broke while idle (a
            // restart, a failover) fails its next statement, which answers
            // 503 with Retry-After, and the pool drops it (it also tests
            // each connection as it takes it back).
            let opened = PgPoolOptions::new()
                .test_before_acquire(false)
                .max_connections(options.max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts.clone())
                .await;
            match opened {
                Ok(pool) => Pool::Postgres(pool),
                // The pool waits out a refused connection (a server still
                // starting) and then says only that it timed out: one more
                // attempt names the cause.
                Err(sqlx::Error::PoolTimedOut) => return Err(unreachable(&opts).await),
                Err(e) => return Err(e.into()),
            }
        } else {
            return Err(DbError::UnsupportedUrl(kernel::config::mask_url(url)));
        };
        Ok(Db { writer: pool.clone(), pool, schema: schema.into(), outbox_bell: Arc::new(Notify::new()), keys: Default::default() })
    }

    /// A SQLite file's pools: one writer connection and readers that may
    /// not write. Its records stay in it ([`Db::keys`] is this database).
    async fn open_sqlite_file(opts: SqliteConnectOptions, schema: &str, options: &DbOptions) -> Result<Db, DbError> {
        // The writer first: it creates the file and switches it to WAL.
        let writer = open_sqlite(SqlitePoolOptions::new().max_connections(1).min_connections(1), opts.clone()).await?;
        // Readers never take the write lock: SQLite refuses them any write.
        let readers = SqlitePoolOptions::new().max_connections(options.max_connections.max(1)).min_connections(1);
        let readers = open_sqlite(readers, opts.pragma("query_only", "ON")).await?;
        Ok(Db {
            pool: Pool::Sqlite(readers),
            writer: Pool::Sqlite(writer),
            schema: schema.into(),
            outbox_bell: Arc::new(Notify::new()),
            keys: Default::default(),
        })
    }

    /// Opens `url` to look, creating nothing (`emporium doctor`): a SQLite
    /// file is opened read-only and `None` returned when it does not exist
    /// yet (nor its folder); PostgreSQL is connected to as by
    /// [`Db::connect`] (which creates nothing there either).
    pub async fn connect_existing(url: &str, schema: &str, options: &DbOptions) -> Result<Option<Db>, DbError> {
        if !url.starts_with("sqlite:") {
            return Db::connect(url, schema, options).await.map(Some);
        }
        let opts = SqliteConnectOptions::from_str(url)?.create_if_missing(false).read_only(true).busy_timeout(options.busy_timeout);
        let path = opts.get_filename();
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if !in_memory && !path.exists() {
            return Ok(None);
        }
        let pool = Pool::Sqlite(SqlitePoolOptions::new().max_connections(options.max_connections).connect_with(opts).await?);
        Ok(Some(Db { writer: pool.clone(), pool, schema: schema.into(), outbox_bell: Arc::new(Notify::new()), keys: Default::default() }))
    }

    /// The connections to read with ([`on_db!`]).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The connection to write with outside a transaction ([`on_write!`]).
    pub fn writer(&self) -> &Pool {
        &self.writer
    }

    pub fn dialect(&self) -> Dialect {
        match self.pool {
            Pool::Sqlite(_) => Dialect::Sqlite,
            Pool::Postgres(_) => Dialect::Postgres,
        }
    }

    /// The service this database belongs to (its PostgreSQL schema).
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Where this service's idempotency records are kept. On SQLite, a file
    /// of their own beside the service's (`orders.db` → `orders-keys.db`),
    /// opened and migrated on first use: a request's key is claimed and its
    /// answer stored by that file's writer, instead of queueing for the
    /// service's one writer with the writes the requests make (in a sale,
    /// most requests are refusals whose only writes are their key's). On
    /// PostgreSQL, which has no single writer, this database.
    pub async fn keys(&self) -> Result<&Db, DbError> {
        let Some((opts, options)) = &self.keys.apart else { return Ok(self) };
        self.keys
            .opened
            .get_or_try_init(|| async {
                let db = Db::open_sqlite_file(opts.clone(), &format!("{}_keys", self.schema), options).await?;
                crate::migrate::migrate(&db, &[&crate::migrate::PLATFORM]).await?;
                Ok(db)
            })
            .await
    }

    /// [`Db::keys`] if opened (or kept here), without opening it.
    pub fn keys_if_open(&self) -> Option<&Db> {
        match &self.keys.apart {
            None => Some(self),
            Some(_) => self.keys.opened.get(),
        }
    }

    pub(crate) fn outbox_bell(&self) -> &Arc<Notify> {
        &self.outbox_bell
    }

    /// Starts a write transaction. On SQLite it waits its turn for the
    /// writer connection and takes the write lock at once (`BEGIN
    /// IMMEDIATE`; another process holding it is waited for up to the busy
    /// timeout).
    pub async fn begin(&self) -> Result<Tx, DbError> {
        // Counted by the checkout benchmark from the statement log.
        tracing::debug!(target: "platform::db", service = &*self.schema, "transaction");
        let inner = match &self.writer {
            Pool::Sqlite(p) => TxInner::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
            Pool::Postgres(p) => TxInner::Postgres(p.begin().await?),
        };
        Ok(Tx { inner, bell: self.outbox_bell.clone(), enqueued: 0 })
    }

    /// `SELECT 1`, for readiness checks.
    pub async fn ping(&self) -> Result<(), DbError> {
        on_db!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn close(&self) {
        if let Some(keys) = self.keys.opened.get() {
            Box::pin(keys.close()).await;
        }
        on_write!(self, pool => pool.close().await);
        on_db!(self, pool => pool.close().await);
    }
}

/// The file of a service's idempotency records: `orders.db` → `orders-keys.db`.
fn keys_file(service_file: &std::path::Path) -> std::path::PathBuf {
    let stem = service_file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match service_file.extension() {
        Some(ext) => format!("{stem}-keys.{}", ext.to_string_lossy()),
        None => format!("{stem}-keys"),
    };
    service_file.with_file_name(name)
}

/// Opens a SQLite pool. A fresh file switched to WAL by several processes at
/// once answers "database is locked" before the busy timeout applies: the
/// loser waits a little and opens it again.
async fn open_sqlite(options: SqlitePoolOptions, connect: SqliteConnectOptions) -> Result<SqlitePool, DbError> {
    // A file in this process cannot hang up: testing the connection before
    // each use would cost one more round trip to its worker thread per
    // statement (the pool still tests it once more as it takes it back).
    let options = options.test_before_acquire(false);
    let mut tries = 0u64;
    loop {
        match options.clone().connect_with(connect.clone()).await {
            Err(e) if tries < 20 && e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c == "5") => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20 * tries)).await;
            }
            other => return Ok(other?),
        }
    }
}

/// Why PostgreSQL could not be reached, from one direct connection attempt.
async fn unreachable(opts: &PgConnectOptions) -> DbError {
    use sqlx::Connection;
    let target = match opts.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => format!("{}:{}", opts.get_host(), opts.get_port()),
    };
    let cause = match tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect_with(opts)).await {
        Ok(Err(sqlx::Error::Io(e))) => e.to_string(),
        Ok(Err(e)) => e.to_string(),
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            "it answered only after 10 seconds of trying (starting up, or at its connection limit)".into()
        }
        Err(_) => "no answer within 10 seconds".into(),
    };
    DbError::Unreachable { target, cause }
}

pub enum TxInner {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// A transaction on either database. Events written to the outbox inside it
/// wake the relay when it commits.
pub struct Tx {
    inner: TxInner,
    bell: Arc<Notify>,
    enqueued: usize,
}

impl Tx {
    pub fn inner_mut(&mut self) -> &mut TxInner {
        &mut self.inner
    }

    pub fn dialect(&self) -> Dialect {
        match self.inner {
            TxInner::Sqlite(_) => Dialect::Sqlite,
            TxInner::Postgres(_) => Dialect::Postgres,
        }
    }

    pub(crate) fn note_enqueued(&mut self) {
        self.enqueued += 1;
    }

    pub async fn commit(self) -> Result<(), DbError> {
        match self.inner {
            TxInner::Sqlite(t) => t.commit().await?,
            TxInner::Postgres(t) => t.commit().await?,
        }
        if self.enqueued > 0 {
            self.bell.notify_one();
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), DbError> {
        match self.inner {
            TxInner::Sqlite(t) => t.rollback().await?,
            TxInner::Postgres(t) => t.rollback().await?,
        }
        Ok(())
    }
}

/// Milliseconds since the Unix epoch: the portable column type for instants
/// that the database compares (expiries, locks).
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}
