//! Per-component, per-dialect migrations embedded in the binary. Applying them
//! is safe to repeat and safe from two processes at once: the whole run holds
//! the database's write lock (SQLite) or an advisory lock (PostgreSQL).

use sha2::{Digest, Sha256};
use sqlx::AssertSqlSafe;
use time::OffsetDateTime;

use crate::db::{Db, DbError, Dialect, Tx};
use crate::on_tx;

/// One migration: a name (`0001_init`) and its SQL.
#[derive(Debug)]
pub struct Migration {
    pub name: &'static str,
    pub sql: &'static str,
}

/// A component's migrations for both dialects, in order.
#[derive(Debug)]
pub struct Migrations {
    pub component: &'static str,
    pub sqlite: &'static [Migration],
    pub postgres: &'static [Migration],
    /// Where the SQL files live, for the test that checks every file is listed.
    pub dir: &'static str,
}

/// Declares a crate's migrations from `migrations/{sqlite,postgres}/<name>.sql`;
/// both dialects must have a file of every name, or the crate does not compile.
#[macro_export]
macro_rules! migrations {
    ($component:literal, [$($name:literal),* $(,)?]) => {
        $crate::migrate::Migrations {
            component: $component,
            sqlite: &[$($crate::migrate::Migration {
                name: $name,
                sql: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite/", $name, ".sql")),
            }),*],
            postgres: &[$($crate::migrate::Migration {
                name: $name,
                sql: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres/", $name, ".sql")),
            }),*],
            dir: concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"),
        }
    };
}

/// The platform's own tables (outbox, processed events, idempotency keys),
/// present in every service's database.
pub static PLATFORM: Migrations = migrations!("platform", ["0001_platform", "0002_idempotency_lease"]);

impl Migrations {
    pub fn for_dialect(&self, dialect: Dialect) -> &'static [Migration] {
        match dialect {
            Dialect::Sqlite => self.sqlite,
            Dialect::Postgres => self.postgres,
        }
    }
}

fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

/// A 64-bit key for `pg_advisory_xact_lock`, stable across processes (FNV-1a).
fn lock_key(schema: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "emporium-migrate:".bytes().chain(schema.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// Applies what is missing of `sets`, in order, in one transaction. Returns
/// the names applied now (`component/name`). An applied migration whose text
/// changed since is an error: migrations are append-only.
pub async fn migrate(db: &Db, sets: &[&Migrations]) -> Result<Vec<String>, DbError> {
    let mut tx = db.begin().await?;
    if db.dialect() == Dialect::Postgres {
        on_tx!(tx, conn => sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(lock_key(db.schema())).execute(conn).await.map(|r| r.rows_affected()))?;
        let ident = quote_ident(db.schema());
        let sql = format!("CREATE SCHEMA IF NOT EXISTS {ident}");
        on_tx!(tx, conn => sqlx::query(AssertSqlSafe(sql)).execute(conn).await.map(|r| r.rows_affected()))?;
    }
    let ddl = match db.dialect() {
        Dialect::Sqlite => {
            "CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT NOT NULL, \
             name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at TEXT NOT NULL, \
             PRIMARY KEY (component, name))"
        }
        Dialect::Postgres => {
            "CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT NOT NULL, \
             name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL, \
             PRIMARY KEY (component, name))"
        }
    };
    on_tx!(tx, conn => sqlx::query(ddl).execute(conn).await.map(|r| r.rows_affected()))?;

    let mut applied = Vec::new();
    for set in sets {
        for m in set.for_dialect(db.dialect()) {
            apply_one(&mut tx, set.component, m, &mut applied).await?;
        }
    }
    tx.commit().await?;
    Ok(applied)
}

async fn apply_one(
    tx: &mut Tx,
    component: &str,
    m: &Migration,
    applied: &mut Vec<String>,
) -> Result<(), DbError> {
    let sum = checksum(m.sql);
    let existing: Option<String> = on_tx!(tx, conn => sqlx::query_scalar(
        "SELECT checksum FROM schema_migrations WHERE component = $1 AND name = $2")
        .bind(component).bind(m.name).fetch_optional(conn).await)?;
    match existing {
        Some(old) if old == sum => return Ok(()),
        Some(_) => {
            return Err(DbError::Migration {
                component: component.into(),
                name: m.name.into(),
                reason: "was changed after it was applied; add a new migration instead".into(),
            });
        }
        None => {}
    }
    let fail = |e: sqlx::Error| DbError::Migration {
        component: component.into(),
        name: m.name.into(),
        reason: e.to_string(),
    };
    on_tx!(tx, conn => sqlx::raw_sql(AssertSqlSafe(m.sql)).execute(conn).await.map(|r| r.rows_affected())).map_err(fail)?;
    on_tx!(tx, conn => sqlx::query(
        "INSERT INTO schema_migrations (component, name, checksum, applied_at) VALUES ($1, $2, $3, $4)")
        .bind(component).bind(m.name).bind(&sum).bind(OffsetDateTime::now_utc())
        .execute(conn).await.map(|r| r.rows_affected()))?;
    tracing::info!(component, migration = m.name, "applied migration");
    applied.push(format!("{component}/{}", m.name));
    Ok(())
}


/// Quotes a PostgreSQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The tables and their columns as the database sees them, for the test that
/// keeps the two dialects' migrations from drifting apart.
pub async fn describe_tables(db: &Db) -> Result<Vec<(String, Vec<String>)>, DbError> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let rows: Vec<(String, String)> = match db.pool() {
        crate::db::Pool::Sqlite(pool) => {
            sqlx::query_as(
                "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p \
                 WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' ORDER BY m.name, p.name",
            )
            .fetch_all(pool)
            .await?
        }
        crate::db::Pool::Postgres(pool) => {
            sqlx::query_as(
                "SELECT table_name::text, column_name::text FROM information_schema.columns \
                 WHERE table_schema = $1 ORDER BY table_name, column_name",
            )
            .bind(db.schema())
            .fetch_all(pool)
            .await?
        }
    };
    for (table, column) in rows {
        match out.last_mut() {
            Some((t, cols)) if *t == table => cols.push(column),
            _ => out.push((table, vec![column])),
        }
    }
    Ok(out)
}

/// Checks that every SQL file under a component's folder is listed, so a file
/// added without its entry (or in one dialect only) is caught by a test.
pub fn unlisted_files(set: &Migrations) -> Vec<String> {
    let mut missing = Vec::new();
    for (dialect, listed) in [("sqlite", set.sqlite), ("postgres", set.postgres)] {
        let dir = std::path::Path::new(set.dir).join(dialect);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            missing.push(format!("{}: unreadable", dir.display()));
            continue;
        };
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().to_string();
            if let Some(name) = file.strip_suffix(".sql")
                && !listed.iter().any(|m| m.name == name)
            {
                missing.push(format!("{dialect}/{file}"));
            }
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        assert_eq!(lock_key("orders"), lock_key("orders"));
        assert_ne!(lock_key("orders"), lock_key("catalog"));
    }

    #[test]
    fn every_platform_migration_file_is_listed() {
        assert_eq!(unlisted_files(&PLATFORM), Vec::<String>::new());
    }
}
