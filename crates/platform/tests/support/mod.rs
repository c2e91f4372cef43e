//! Consumers used by the event tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // shared by several test files


use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use kernel::Envelope;
use platform::bus::{EventHandler, HandlerError};
use platform::db::Db;
use platform::migrate::{Migration, Migrations};
use platform::outbox;
use platform::{on_db, on_tx};
use tokio::sync::Mutex;

/// A consumer's own table of effects: one row per applied event.
pub static EFFECTS: Migrations = Migrations {
    component: "effects",
    sqlite: &[Migration { name: "0001_effects", sql: "CREATE TABLE effects (event_id TEXT NOT NULL, applied INTEGER NOT NULL);" }],
    postgres: &[Migration { name: "0001_effects", sql: "CREATE TABLE effects (event_id TEXT NOT NULL, applied INTEGER NOT NULL);" }],
    dir: "",
};

/// Records what it receives; fails its first `fail_first` deliveries; when it
/// has a database, applies each event once through the inbox.
pub struct Recorder {
    pub name: String,
    pub pattern: String,
    pub seen: Mutex<Vec<Envelope>>,
    pub fail_first: AtomicUsize,
    pub db: Option<Db>,
}

impl Recorder {
    pub fn new(name: &str) -> Arc<Self> {
        Self::build(name, "*", 0, None)
    }

    pub fn build(name: &str, pattern: &str, fail_first: usize, db: Option<Db>) -> Arc<Self> {
        Arc::new(Recorder {
            name: name.to_owned(),
            pattern: pattern.to_owned(),
            seen: Mutex::new(Vec::new()),
            fail_first: AtomicUsize::new(fail_first),
            db,
        })
    }

    pub async fn ids(&self) -> Vec<String> {
        self.seen.lock().await.iter().map(|e| e.id.to_string()).collect()
    }

    /// Waits until `n` deliveries arrived (or a generous deadline passed).
    pub async fn wait_for(&self, n: usize) -> Vec<String> {
        for _ in 0..400 {
            if self.seen.lock().await.len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.ids().await
    }

    /// Waits until the event's effect is committed (a delivery is seen
    /// before its transaction commits), then counts the effects.
    pub async fn settled_effects(&self, event_id: &str) -> i64 {
        for _ in 0..400 {
            if self.effects(event_id).await > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.effects(event_id).await
    }

    pub async fn effects(&self, event_id: &str) -> i64 {
        let Some(db) = self.db.as_ref() else { return -1 };
        on_db!(db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM effects WHERE event_id = $1")
            .bind(event_id).fetch_one(pool).await).unwrap()
    }
}

#[async_trait]
impl EventHandler for Recorder {
    fn consumer(&self) -> &str {
        &self.name
    }

    fn interested_in(&self, event_type: &str) -> bool {
        kernel::event::type_matches(&self.pattern, event_type)
    }

    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        self.seen.lock().await.push(event.clone());
        if self
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err("simulated failure".into());
        }
        if let Some(db) = &self.db
            && let Some(mut tx) = outbox::begin_once(db, &self.name, &event.id).await?
        {
            on_tx!(tx, conn => sqlx::query("INSERT INTO effects (event_id, applied) VALUES ($1, 1)")
                .bind(event.id.to_string()).execute(conn).await.map(|_| ()))?;
            tx.commit().await?;
        }
        Ok(())
    }
}

pub fn event(kind: &str) -> Envelope {
    Envelope::new(kind, "agg_1", serde_json::json!({"n": 1}))
}

/// Commits `event` through the outbox of `db`.
pub async fn commit(db: &Db, event: &Envelope) {
    let mut tx = db.begin().await.unwrap();
    outbox::enqueue(&mut tx, event).await.unwrap();
    tx.commit().await.unwrap();
}

pub async fn unpublished(db: &Db) -> i64 {
    on_db!(db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(pool).await).unwrap()
}
