//! Gauges of the shop's state that cost a query or a question to the
//! broker: consumer lag, outbox backlog, idempotency keys in flight, and
//! what services add (held reservations, queued and dead deliveries).
//! One task per process reads them every `metrics.sample_interval_ms`;
//! a scrape of `/metrics` only shows the last readings, so a slow database
//! or broker never holds a scrape up. A reading that fails or takes longer
//! than [`READING_TIMEOUT`] leaves its gauges at their last values, counts
//! in `metrics_reading_failures_total{reading}` and is logged: a warning
//! when it starts failing, then at debug level until it works again.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::bus::EventBus;
use crate::db::Db;
use crate::service::BoxError;
use crate::{idempotency, outbox};

/// How long one reading may take; the round goes on without it after that.
pub const READING_TIMEOUT: Duration = Duration::from_secs(5);

/// One reading: asks its source and sets its gauges, only from a complete
/// answer (a failure leaves the last values).
#[async_trait]
pub trait Reading: Send + Sync + 'static {
    /// What it reads, for logs and the failure counter (`catalog.reservations`).
    fn name(&self) -> &str;

    /// Gives its gauges their help text (called once, before the first reading).
    fn describe(&self) {}

    async fn read(&self) -> Result<(), BoxError>;
}

/// Every [`Reading`] of this process (a port: a service adds its own when
/// it mounts; the platform adds the bus's and each database's).
#[derive(Clone, Default)]
pub struct Readings {
    readings: Arc<RwLock<Vec<Arc<dyn Reading>>>>,
}

impl Readings {
    pub fn add(&self, reading: Arc<dyn Reading>) {
        if let Ok(mut all) = self.readings.write() {
            all.push(reading);
        }
    }

    pub fn all(&self) -> Vec<Arc<dyn Reading>> {
        self.readings.read().map(|r| r.clone()).unwrap_or_default()
    }
}

/// Takes every reading now and then every `every` until `shutdown`; the
/// readings of one round run side by side.
pub async fn run(readings: Vec<Arc<dyn Reading>>, every: Duration, shutdown: CancellationToken) {
    metrics::describe_counter!("metrics_reading_failures_total", "Readings of the gauges sampled on a timer that failed or timed out (their gauges keep the last value)");
    for reading in &readings {
        reading.describe();
    }
    let mut failing = vec![false; readings.len()];
    loop {
        let round = futures::future::join_all(readings.iter().map(|r| async move {
            match tokio::time::timeout(READING_TIMEOUT, r.read()).await {
                Ok(outcome) => outcome.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {} s", READING_TIMEOUT.as_secs())),
            }
        }));
        let outcomes = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcomes = round => outcomes,
        };
        for ((reading, outcome), failing) in readings.iter().zip(outcomes).zip(failing.iter_mut()) {
            match outcome {
                Ok(()) if *failing => {
                    tracing::info!(reading = reading.name(), "metrics reading works again");
                    *failing = false;
                }
                Ok(()) => {}
                Err(e) => {
                    metrics::counter!("metrics_reading_failures_total", "reading" => reading.name().to_owned()).increment(1);
                    if *failing {
                        tracing::debug!(reading = reading.name(), error = %e, "metrics reading still failing");
                    } else {
                        tracing::warn!(reading = reading.name(), error = %e, "metrics reading failed; its gauges keep their last value");
                    }
                    *failing = true;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// `events_consumer_lag{consumer}`: for each consumer of this process (the
/// durable ones it shares with replicas and its per-process ones), the
/// events not applied yet: not yet handed to it, or handed and not yet
/// acknowledged (JetStream: `num_pending + num_ack_pending`).
pub struct ConsumerLag {
    pub bus: Arc<dyn EventBus>,
    pub consumers: Vec<String>,
}

#[async_trait]
impl Reading for ConsumerLag {
    fn name(&self) -> &str {
        "bus.consumers"
    }

    fn describe(&self) {
        metrics::describe_gauge!("events_consumer_lag", "Events a consumer of this process has not applied yet: not yet delivered to it, or delivered and not yet acknowledged");
    }

    async fn read(&self) -> Result<(), BoxError> {
        let positions = futures::future::join_all(self.consumers.iter().map(|c| self.bus.position(c))).await;
        let mut failed = Vec::new();
        for (consumer, position) in self.consumers.iter().zip(positions) {
            match position {
                Ok(p) => metrics::gauge!("events_consumer_lag", "consumer" => consumer.clone()).set(p.in_flight.saturating_add(p.waiting) as f64),
                Err(e) => failed.push(format!("{consumer}: {e}")),
            }
        }
        if failed.is_empty() { Ok(()) } else { Err(failed.join("; ").into()) }
    }
}

/// A service database's own backlog: `outbox_pending{service}` and
/// `outbox_lag_seconds{service}` (also set by the relay after each pass,
/// read here too so that a relay stuck on a publish still shows its
/// backlog growing), and `idempotency_in_flight{service}`.
pub struct DatabaseBacklog {
    db: Db,
    name: String,
}

impl DatabaseBacklog {
    pub fn new(db: Db) -> Self {
        let name = format!("{}.database", db.schema());
        Self { db, name }
    }
}

#[async_trait]
impl Reading for DatabaseBacklog {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) {
        metrics::describe_gauge!("outbox_pending", "Events a service has written and the relay has not yet published");
        metrics::describe_gauge!("outbox_lag_seconds", "Age in seconds of the oldest event a service has not yet published (0 when none)");
        metrics::describe_gauge!("idempotency_in_flight", "Idempotency keys held by a request still running (its lease live), in this service across its replicas");
    }

    async fn read(&self) -> Result<(), BoxError> {
        let service = self.db.schema().to_owned();
        let (pending, lag) = outbox::backlog(&self.db).await?;
        let running = match self.db.keys_if_open() {
            Some(keys) => idempotency::in_flight(keys).await?,
            None => 0,
        };
        metrics::gauge!("outbox_pending", "service" => service.clone()).set(pending as f64);
        metrics::gauge!("outbox_lag_seconds", "service" => service.clone()).set(lag);
        metrics::gauge!("idempotency_in_flight", "service" => service).set(running as f64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;
    use tokio_util::sync::CancellationToken;

    use super::{Reading, run};
    use crate::service::BoxError;

    /// Sets its gauge to `value`, or fails, or never answers.
    struct Source {
        name: &'static str,
        value: Arc<AtomicU64>,
        failing: Arc<AtomicBool>,
        hangs: bool,
    }

    #[async_trait]
    impl Reading for Source {
        fn name(&self) -> &str {
            self.name
        }
        async fn read(&self) -> Result<(), BoxError> {
            if self.hangs {
                std::future::pending::<()>().await;
            }
            if self.failing.load(Ordering::SeqCst) {
                return Err("the source is down".into());
            }
            metrics::gauge!(self.name).set(self.value.load(Ordering::SeqCst) as f64);
            Ok(())
        }
    }

    fn shown(name: &str) -> Option<f64> {
        let page = crate::telemetry::metrics_handle().render();
        page.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    async fn until_shown(name: &str, wanted: impl Fn(f64) -> bool) {
        for _ in 0..200 {
            if shown(name).is_some_and(&wanted) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{name} never showed what was wanted; it shows {:?}", shown(name));
    }

    #[tokio::test]
    async fn a_hung_reading_holds_up_neither_the_others_nor_shutdown() {
        crate::telemetry::metrics_handle();
        let good = Source { name: "gauges_test_reading", value: Arc::new(AtomicU64::new(3)), failing: Arc::new(AtomicBool::new(false)), hangs: false };
        let hung = Source { name: "gauges_test_hung", value: Arc::new(AtomicU64::new(0)), failing: Arc::new(AtomicBool::new(false)), hangs: true };
        let shutdown = CancellationToken::new();
        let runner = tokio::spawn(run(vec![Arc::new(hung), Arc::new(good)], Duration::from_millis(10), shutdown.clone()));
        until_shown("gauges_test_reading", |v| v == 3.0).await;
        assert_eq!(shown("gauges_test_hung"), None, "never read");
        tokio::time::timeout(Duration::from_secs(2), async {
            shutdown.cancel();
            runner.await.unwrap();
        })
        .await
        .expect("stopped at once, the hung reading notwithstanding");
    }

    #[tokio::test]
    async fn a_failing_reading_keeps_its_last_value_until_it_works_again() {
        crate::telemetry::metrics_handle();
        let (value, failing) = (Arc::new(AtomicU64::new(1)), Arc::new(AtomicBool::new(false)));
        let source = Source { name: "gauges_test_recovers", value: value.clone(), failing: failing.clone(), hangs: false };
        let shutdown = CancellationToken::new();
        let runner = tokio::spawn(run(vec![Arc::new(source)], Duration::from_millis(10), shutdown.clone()));
        until_shown("gauges_test_recovers", |v| v == 1.0).await;
        failing.store(true, Ordering::SeqCst);
        value.store(5, Ordering::SeqCst);
        until_shown(r#"metrics_reading_failures_total{reading="gauges_test_recovers"}"#, |v| v >= 3.0).await;
        assert_eq!(shown("gauges_test_recovers"), Some(1.0), "the last value read");
        failing.store(false, Ordering::SeqCst);
        until_shown("gauges_test_recovers", |v| v == 5.0).await;
        shutdown.cancel();
        runner.await.unwrap();
    }
}
