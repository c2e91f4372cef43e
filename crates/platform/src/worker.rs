//! Periodic background work (sweepers, reconcilers) with the metrics every
//! worker shows: `worker_up{worker}` while it runs and
//! `worker_last_tick_seconds{worker}` after each pass, so a stopped loop is
//! seen on a dashboard and not only in its missing effects.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Runs `pass` now and then every `period` until `shutdown`. A pass answers
/// how much it did (logged when not zero) or why it failed (logged; the next
/// pass tries again).
pub async fn every<F, Fut, E>(name: String, period: Duration, shutdown: CancellationToken, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<usize, E>>,
    E: Display,
{
    let up = metrics::gauge!("worker_up", "worker" => name.clone());
    up.set(1.0);
    loop {
        match pass().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(worker = %name, done = n, "worker pass"),
            Err(e) => tracing::warn!(worker = %name, error = %e, "worker pass failed; will retry"),
        }
        metrics::gauge!("worker_last_tick_seconds", "worker" => name.clone())
            .set(time::OffsetDateTime::now_utc().unix_timestamp() as f64);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(period) => {}
        }
    }
    up.set(0.0);
}
