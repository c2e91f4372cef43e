//! The transactional outbox: a service writes its events in the transaction
//! that makes the change, and the relay moves them to the bus after commit.
//! With [`begin_once`] on the consuming side, every event takes effect once.

use std::sync::Arc;
use std::time::Duration;

use kernel::Envelope;
use kernel::id::EventId;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::bus::EventBus;
use crate::db::{Db, DbError, Tx};
use crate::{on_db, on_tx, on_write};

/// Writes `event` into the outbox inside `tx`: it is published if and only
/// if `tx` commits.
pub async fn enqueue(tx: &mut Tx, event: &Envelope) -> Result<(), DbError> {
    let payload = serde_json::to_string(event).map_err(|e| DbError::Corrupt(e.to_string()))?;
    on_tx!(tx, conn => sqlx::query(
        "INSERT INTO outbox (id, event_type, payload, created_at) VALUES ($1, $2, $3, $4)")
        .bind(event.id.to_string())
        .bind(&event.event_type)
        .bind(payload)
        .bind(event.occurred_at)
        .execute(conn).await.map(|r| r.rows_affected()))?;
    tx.note_enqueued();
    Ok(())
}

/// Forgets events published before `before`; rows parked because they could
/// not be read stay for operators. Returns how many went.
pub async fn purge_published(db: &Db, before: OffsetDateTime) -> Result<u64, DbError> {
    let gone = on_write!(db, pool => sqlx::query(
        "DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < $1 \
         AND (last_error IS NULL OR last_error NOT LIKE 'unreadable:%')")
        .bind(before)
        .execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(gone)
}

/// Starts the transaction in which `consumer` applies `event`, or returns
/// `None` if it already applied it. The mark and the effect commit together.
pub async fn begin_once(db: &Db, consumer: &str, event: &EventId) -> Result<Option<Tx>, DbError> {
    let mut tx = db.begin().await?;
    let inserted = on_tx!(tx, conn => sqlx::query(
        "INSERT INTO processed_events (consumer, event_id, handled_at) VALUES ($1, $2, $3) \
         ON CONFLICT (consumer, event_id) DO NOTHING")
        .bind(consumer)
        .bind(event.to_string())
        .bind(OffsetDateTime::now_utc())
        .execute(conn).await.map(|r| r.rows_affected()))?;
    if inserted == 0 {
        tx.rollback().await?;
        return Ok(None);
    }
    Ok(Some(tx))
}

/// Rows of `db`'s outbox not yet published and the age in seconds of the
/// oldest (0 when none), for metrics.
pub async fn backlog(db: &Db) -> Result<(i64, f64), DbError> {
    let (count, oldest): (i64, Option<OffsetDateTime>) = on_db!(db, pool => sqlx::query_as(
        "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE published_at IS NULL")
        .fetch_one(pool).await)?;
    let lag = oldest.map_or(0.0, |t| (OffsetDateTime::now_utc() - t).as_seconds_f64().max(0.0));
    Ok((count, lag))
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Bus(#[from] crate::bus::BusError),
}

/// Moves one service's outbox rows to the bus, oldest first.
#[derive(Clone)]
pub struct Relay {
    db: Db,
    bus: Arc<dyn EventBus>,
    batch_size: u32,
    poll_interval: Duration,
    /// Raised after the first drain that published everything pending.
    drained: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Relay {
    pub fn new(db: Db, bus: Arc<dyn EventBus>, batch_size: u32, poll_interval: Duration) -> Self {
        Self { db, bus, batch_size, poll_interval, drained: None }
    }

    /// Raises `flag` once the relay has published everything that was
    /// waiting when it started (readiness waits for that).
    pub fn noting_drained(mut self, flag: Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.drained = Some(flag);
        self
    }

    /// Publishes everything pending. Stops at the first failure so events
    /// leave in order; returns how many were published.
    pub async fn drain(&self) -> Result<usize, RelayError> {
        let service = self.db.schema().to_owned();
        let mut published = 0;
        loop {
            let rows: Vec<(String, String)> = on_db!(self.db, pool => sqlx::query_as(
                "SELECT id, payload FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1")
                .bind(i64::from(self.batch_size))
                .fetch_all(pool).await).map_err(DbError::from)?;
            if rows.is_empty() {
                break;
            }
            let mut ids = Vec::with_capacity(rows.len());
            let mut events = Vec::with_capacity(rows.len());
            for (id, payload) in rows {
                match serde_json::from_str::<Envelope>(&payload) {
                    Ok(event) => {
                        ids.push(id);
                        events.push(event);
                    }
                    // Written by us, so unreadable means a bug or a hand
                    // edit: park it with its error rather than block all.
                    Err(e) => self.record_failure(&id, &format!("unreadable: {e}"), true).await?,
                }
            }
            // Published together (the in-process bus hands each consumer
            // its share at once), marked together.
            let (sent, failure) = self.bus.publish_all(&events).await;
            self.mark_published(&ids[..sent]).await?;
            published += sent;
            metrics::counter!("outbox_published_total", "service" => service.clone()).increment(sent as u64);
            if let Some(e) = failure {
                if let Some(id) = ids.get(sent) {
                    self.record_failure(id, &e.to_string(), false).await?;
                }
                metrics::counter!("outbox_publish_failures_total", "service" => service.clone()).increment(1);
                return Err(e.into());
            }
        }
        Ok(published)
    }

    /// Marks the rows `ids` published, in one statement.
    async fn mark_published(&self, ids: &[String]) -> Result<(), DbError> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!("UPDATE outbox SET published_at = $1 WHERE id IN ({})", crate::db::placeholders(2, ids.len()));
        on_write!(self.db, pool => {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(OffsetDateTime::now_utc());
            for id in ids {
                query = query.bind(id);
            }
            query.execute(pool).await.map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    async fn record_failure(&self, id: &str, error: &str, park: bool) -> Result<(), DbError> {
        let error: String = error.chars().take(1000).collect();
        // A parked row gets a published_at so it no longer blocks the queue;
        // its last_error says why, and `emporium` shows it to operators.
        if park {
            on_write!(self.db, pool => sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $1, published_at = $2 WHERE id = $3")
                .bind(&error).bind(OffsetDateTime::now_utc()).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
        } else {
            on_write!(self.db, pool => sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $1 WHERE id = $2")
                .bind(&error).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
        }
        Ok(())
    }

    /// Rows not yet published and the age in seconds of the oldest, for metrics.
    pub async fn backlog(&self) -> Result<(i64, f64), DbError> {
        backlog(&self.db).await
    }

    /// Runs until `shutdown`: woken by commits that wrote events, and by a
    /// timer for rows written by another process. After `shutdown` it drains
    /// once more, so nothing committed before shutdown waits for a restart.
    pub async fn run(self, shutdown: CancellationToken) {
        let service = self.db.schema().to_owned();
        let bell = self.db.outbox_bell().clone();
        let up = metrics::gauge!("worker_up", "worker" => format!("outbox_relay_{service}"));
        up.set(1.0);
        let mut backoff = Duration::ZERO;
        loop {
            match self.drain().await {
                Ok(_) => {
                    backoff = Duration::ZERO;
                    if let Some(flag) = &self.drained {
                        flag.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                Err(e) => {
                    backoff = (backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(30));
                    tracing::warn!(service = %service, error = %e, retry_in_ms = backoff.as_millis() as u64,
                        "outbox relay could not publish");
                }
            }
            self.report(&service).await;
            let wait = if backoff.is_zero() { self.poll_interval } else { backoff };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = bell.notified(), if backoff.is_zero() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        up.set(0.0);
        match self.drain().await {
            Ok(n) => tracing::info!(service = %service, published = n, "outbox relay flushed and stopped"),
            Err(e) => tracing::warn!(service = %service, error = %e,
                "outbox relay stopped with events pending; they are published on next start"),
        }
    }

    async fn report(&self, service: &str) {
        metrics::gauge!("worker_last_tick_seconds", "worker" => format!("outbox_relay_{service}"))
            .set(OffsetDateTime::now_utc().unix_timestamp() as f64);
        if let Ok((pending, lag)) = self.backlog().await {
            metrics::gauge!("outbox_pending", "service" => service.to_owned()).set(pending as f64);
            metrics::gauge!("outbox_lag_seconds", "service" => service.to_owned()).set(lag);
        }
    }
}
