//! Storage on both databases: pool settings, migrations that are safe to
//! repeat and to run from several processes at once, dialects that agree.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use platform::db::{Db, DbOptions, Dialect};
use platform::migrate::{self, Migration, Migrations, PLATFORM};
use platform::testing::Sandbox;
use platform::{on_db, on_write, testing};

static SAMPLE: Migrations = Migrations {
    component: "sample",
    sqlite: &[Migration { name: "0001_items", sql: "CREATE TABLE items (id TEXT PRIMARY KEY, qty INTEGER NOT NULL CHECK (qty >= 0));" }],
    postgres: &[Migration { name: "0001_items", sql: "CREATE TABLE items (id TEXT PRIMARY KEY, qty BIGINT NOT NULL CHECK (qty >= 0));" }],
    dir: "",
};

static SAMPLE_EDITED: Migrations = Migrations {
    component: "sample",
    sqlite: &[Migration { name: "0001_items", sql: "CREATE TABLE items (id TEXT PRIMARY KEY);" }],
    postgres: &[Migration { name: "0001_items", sql: "CREATE TABLE items (id TEXT PRIMARY KEY);" }],
    dir: "",
};

#[tokio::test]
async fn migrations_apply_once_even_from_many_connections_at_once() {
    let sandbox = Sandbox::new().await;
    let url = sandbox.url_for("sample");
    // Separate pools behave like separate processes: separate connections,
    // separate locks.
    let mut runs = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        runs.push(tokio::spawn(async move {
            let db = Db::connect(&url, "sample", &DbOptions::default()).await.unwrap();
            migrate::migrate(&db, &[&PLATFORM, &SAMPLE]).await
        }));
    }
    let mut applied = Vec::new();
    for run in runs {
        applied.extend(run.await.unwrap().unwrap());
    }
    let expected = PLATFORM.sqlite.len() + SAMPLE.sqlite.len();
    assert_eq!(applied.len(), expected, "each migration applied exactly once: {applied:?}");

    let db = Db::connect(&url, "sample", &DbOptions::default()).await.unwrap();
    assert!(migrate::migrate(&db, &[&PLATFORM, &SAMPLE]).await.unwrap().is_empty(), "second run applies nothing");
}

#[tokio::test]
async fn an_edited_migration_is_refused() {
    let sandbox = Sandbox::new().await;
    let db = sandbox.db("sample", &[&SAMPLE]).await;
    let err = migrate::migrate(&db, &[&PLATFORM, &SAMPLE_EDITED]).await.unwrap_err();
    assert!(err.to_string().contains("changed after it was applied"), "{err}");
}

#[tokio::test]
async fn a_failing_migration_leaves_nothing_half_applied() {
    static BROKEN: Migrations = Migrations {
        component: "broken",
        sqlite: &[Migration { name: "0001_half", sql: "CREATE TABLE half (a INTEGER); CREATE TABLE half (a INTEGER);" }],
        postgres: &[Migration { name: "0001_half", sql: "CREATE TABLE half (a INTEGER); CREATE TABLE half (a INTEGER);" }],
        dir: "",
    };
    let sandbox = Sandbox::new().await;
    let db = Db::connect(&sandbox.url_for("broken"), "broken", &DbOptions::default()).await.unwrap();
    assert!(migrate::migrate(&db, &[&PLATFORM, &BROKEN]).await.is_err());
    let tables = migrate::describe_tables(&db).await.unwrap();
    assert!(tables.iter().all(|(t, _)| t != "half" && t != "outbox"), "rolled back whole: {tables:?}");
}

#[tokio::test]
async fn connections_have_the_documented_settings() {
    let sandbox = Sandbox::new().await;
    let db = sandbox.db("sample", &[&SAMPLE]).await;
    match db.dialect() {
        Dialect::Sqlite => {
            let mode: String = on_db!(db, pool => sqlx::query_scalar("PRAGMA journal_mode").fetch_one(pool).await).unwrap();
            assert_eq!(mode, "wal");
            let fk: i64 = on_db!(db, pool => sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(pool).await).unwrap();
            assert_eq!(fk, 1);
            let busy: i64 = on_db!(db, pool => sqlx::query_scalar("PRAGMA busy_timeout").fetch_one(pool).await).unwrap();
            assert_eq!(busy, 5000);
        }
        Dialect::Postgres => {
            let schema: String = on_db!(db, pool => sqlx::query_scalar("SELECT current_schema()::text").fetch_one(pool).await).unwrap();
            assert_eq!(schema, "sample", "each service lives in its own schema");
        }
    }
}

#[tokio::test]
async fn conditional_updates_keep_stock_from_going_negative() {
    let sandbox = Sandbox::new().await;
    let db = sandbox.db("sample", &[&SAMPLE]).await;
    on_write!(db, pool => sqlx::query("INSERT INTO items (id, qty) VALUES ('a', 10)").execute(pool).await.map(|_| ())).unwrap();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(16));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (db, barrier) = (db.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            on_write!(db, pool => sqlx::query("UPDATE items SET qty = qty - $1 WHERE id = 'a' AND qty >= $1")
                .bind(1i64).execute(pool).await.map(|r| r.rows_affected())).unwrap()
        }));
    }
    let mut taken = 0;
    for t in tasks {
        taken += t.await.unwrap();
    }
    assert_eq!(taken, 10);
    let left: i64 = on_db!(db, pool => sqlx::query_scalar("SELECT qty FROM items WHERE id = 'a'").fetch_one(pool).await).unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn sqlite_and_postgres_migrations_describe_the_same_tables() {
    let dir = tempfile_dir();
    let sqlite = Db::connect(&format!("sqlite://{}/x.db", dir.display()), "sample", &DbOptions::default())
        .await
        .unwrap();
    migrate::migrate(&sqlite, &[&PLATFORM, &SAMPLE]).await.unwrap();
    let sqlite_tables = migrate::describe_tables(&sqlite).await.unwrap();
    assert!(sqlite_tables.iter().any(|(t, _)| t == "outbox"));
    let Some(admin) = testing::database_url() else {
        eprintln!("EMPORIUM_TEST_DATABASE_URL unset: the PostgreSQL side runs in CI's PostgreSQL pass");
        return;
    };
    let pg = Db::connect(&testing::create_database(&admin).await, "sample", &DbOptions::default())
        .await
        .unwrap();
    migrate::migrate(&pg, &[&PLATFORM, &SAMPLE]).await.unwrap();
    assert_eq!(sqlite_tables, migrate::describe_tables(&pg).await.unwrap());
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(testing::unique("emporium-dialects"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
