//! The sender: takes due deliveries from the queue, tries them (several at
//! once), and records each attempt. A failure that can pass is retried with
//! back-off; email and SMS die after `max_attempts`, webhooks after
//! `webhook_retry_secs`. An endpoint whose delivery dies without it having
//! succeeded since is switched off, and staff are told.

use std::time::{Duration, Instant};

use futures::StreamExt;
use platform::db::now_ms;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::channels::{SendError, Sent};
use crate::domain::{self, Topic};
use crate::error::NotifyError;
use crate::store::{self, Attempt, Delivery};
use crate::Notify;

/// A taken delivery is the sender's for this long; after that (a crash) another may take it.
const LEASE_MS: i64 = 120_000;
const WORKER: &str = "notify-sender";

impl Notify {
    /// Sends until `shutdown`: whenever something is queued (the consumer
    /// rings) or falls due, and at least every second.
    pub async fn run_sender(self, shutdown: CancellationToken) {
        let up = metrics::gauge!("worker_up", "worker" => WORKER);
        up.set(1.0);
        let mut depth_at = Instant::now() - Duration::from_secs(10);
        loop {
            let sent = match self.send_due().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(worker = WORKER, error = %e, "sender pass failed; will retry");
                    0
                }
            };
            metrics::gauge!("worker_last_tick_seconds", "worker" => WORKER).set(now_ms() as f64 / 1000.0);
            if depth_at.elapsed() >= Duration::from_secs(1) {
                depth_at = Instant::now();
                if let Ok(depths) = store::queue_depth(&self.db).await {
                    for channel in ["email", "sms", "webhook"] {
                        let n = depths.iter().find(|(c, _)| c == channel).map_or(0, |d| d.1);
                        metrics::gauge!("notifications_queue_depth", "channel" => channel).set(n as f64);
                    }
                }
            }
            if sent > 0 {
                continue;
            }
            let wait = match store::next_due(&self.db).await {
                Ok(Some(due)) => (due - now_ms()).clamp(0, 1000),
                _ => 1000,
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
            }
        }
        up.set(0.0);
    }

    /// Takes what is due and tries it; answers how many it took.
    pub async fn send_due(&self) -> Result<usize, NotifyError> {
        let concurrency = self.config.notify.concurrency.max(1);
        let batch = store::claim_due(&self.db, now_ms(), LEASE_MS, (concurrency * 4) as u32).await?;
        let n = batch.len();
        futures::stream::iter(batch)
            .for_each_concurrent(concurrency, |d| async move {
                if let Err(e) = self.deliver(&d).await {
                    tracing::warn!(delivery = %d.id, error = %e, "cannot record a delivery attempt; it will be tried again");
                }
            })
            .await;
        Ok(n)
    }

    async fn deliver(&self, d: &Delivery) -> Result<(), NotifyError> {
        // "Order received" goes only if the order is still unsettled now.
        if d.event_type == "order.placed" && store::drop_if_settled(&self.db, &d.id).await? {
            metrics::counter!("notifications_superseded_total", "channel" => d.channel.clone()).increment(1);
            return Ok(());
        }
        let started = Instant::now();
        let at_ms = now_ms();
        let result = match self.reveal(d) {
            Err(e) => Err(e),
            Ok(whole) => match whole.channel.as_str() {
                "email" => self.email.send(&whole).await,
                "sms" => self.sms.send(&whole).await,
                _ => self.post_webhook(&whole).await,
            },
        };
        let attempt = attempt_of(d.attempts, at_ms, started, &result);
        let channel = d.channel.clone();
        match result {
            Ok(Sent { provider_message_id, .. }) => {
                let mut tx = self.db.begin().await?;
                store::record_attempt(&mut tx, d, &attempt, "sent", d.next_attempt_ms, provider_message_id.as_deref()).await?;
                if let Some(endpoint) = &d.endpoint_id {
                    store::endpoint_succeeded(&mut tx, endpoint, at_ms).await?;
                }
                tx.commit().await?;
                metrics::counter!("notifications_sent_total", "channel" => channel).increment(1);
                metrics::histogram!("notification_delivery_seconds", "channel" => d.channel.clone())
                    .record((now_ms() - d.created_ms) as f64 / 1000.0);
            }
            Err(SendError { permanent: true, .. }) => {
                store::finish_attempt(&self.db, d, &attempt, "failed", d.next_attempt_ms, None).await?;
                metrics::counter!("notifications_failed_total", "channel" => channel, "final" => "failed").increment(1);
            }
            Err(_) => {
                let n = &self.config.notify;
                let exhausted = match d.give_up_ms {
                    Some(give_up) => now_ms() >= give_up,
                    None => d.attempts >= n.max_attempts as i32,
                };
                if exhausted {
                    match &d.endpoint_id {
                        Some(endpoint) => self.endpoint_gave_up(endpoint, d, &attempt).await?,
                        None => store::finish_attempt(&self.db, d, &attempt, "dead", d.next_attempt_ms, None).await?,
                    }
                    metrics::counter!("notifications_failed_total", "channel" => channel, "final" => "dead").increment(1);
                } else {
                    let wait = domain::backoff_ms(n.retry_base_ms, d.attempts.max(1) as u32, domain::jitter());
                    let next = match d.give_up_ms {
                        // The last webhook try happens at the deadline, not after it.
                        Some(give_up) => (now_ms() + wait).min(give_up.max(now_ms())),
                        None => now_ms() + wait,
                    };
                    store::finish_attempt(&self.db, d, &attempt, "queued", next, None).await?;
                    metrics::counter!("notifications_retried_total", "channel" => channel).increment(1);
                }
            }
        }
        Ok(())
    }

    /// The message as its recipient gets it: the withheld links, kept
    /// sealed in the row until now, put back (escaped in the HTML part).
    fn reveal(&self, d: &Delivery) -> Result<Delivery, SendError> {
        let mut whole = d.clone();
        whole.secret = None;
        let Some(sealed) = &d.secret else { return Ok(whole) };
        let gone = || SendError { permanent: true, status_code: None, message: "the message's link is no longer kept".into() };
        let links: Vec<String> = domain::unseal(&self.key, sealed).and_then(|l| serde_json::from_str(&l).ok()).ok_or_else(gone)?;
        for (n, link) in links.iter().enumerate() {
            let words = domain::withheld(n);
            whole.subject = whole.subject.replace(&words, link);
            whole.body = whole.body.replace(&words, link);
            whole.html = whole.html.map(|h| h.replace(&words, &crate::templates::escape(link)));
        }
        Ok(whole)
    }

    async fn post_webhook(&self, d: &Delivery) -> Result<Sent, SendError> {
        let gone = |why: &str| SendError { permanent: true, status_code: None, message: why.to_owned() };
        let Some(id) = &d.endpoint_id else { return Err(gone("a webhook delivery without an endpoint")) };
        let endpoint = match store::endpoint(&self.db, id).await {
            Ok(Some(e)) => e,
            Ok(None) => return Err(gone("the endpoint was deleted")),
            Err(e) => return Err(SendError { permanent: false, status_code: None, message: e.to_string() }),
        };
        if !endpoint.enabled {
            return Err(gone("the endpoint is switched off"));
        }
        self.webhooks.post(&endpoint, d).await
    }

    /// A delivery to `endpoint_id` died: unless the endpoint succeeded since
    /// that delivery was made, it is switched off, its queue buried, and
    /// staff who manage settings are told.
    async fn endpoint_gave_up(&self, endpoint_id: &str, d: &Delivery, attempt: &Attempt) -> Result<(), NotifyError> {
        let failing_for = humanise_ms(now_ms() - d.created_ms);
        // Shown to and mailed to `settings:write`: what failed (a name that
        // does not resolve, one resolving to a private address, a status)
        // would map the inside network, so it stays in the delivery log,
        // which only `staff:manage` reads.
        let reason = domain::endpoint_disabled_reason(&failing_for);
        let mut notices = Vec::new();
        if let Some(endpoint) = store::endpoint(&self.db, endpoint_id).await?.filter(|e| e.enabled) {
            for person in store::staff_with(&self.db, "settings:write", false).await? {
                let ctx = json!({"shop": self.shop(), "staff": {"name": person.name, "email": person.email},
                    "endpoint": {"id": endpoint.id, "url": endpoint.url, "reason": reason, "failing_for": failing_for}});
                let dedupe = format!("webhook-disabled:{}:{}:{}", endpoint.id, d.id, person.user_id);
                if let Some(msg) = self.compose("webhook.disabled.email", &ctx, &person.email, Some(&person.user_id), dedupe, None, "webhook.disabled", None).await? {
                    notices.push(msg);
                }
            }
        }
        // The delivery's death, the switch-off, the queue buried behind it
        // and staff's notices are one write: a crash between them would
        // leave a dead endpoint switched on, or switched off unannounced.
        let mut tx = self.db.begin().await?;
        store::record_attempt(&mut tx, d, attempt, "dead", d.next_attempt_ms, None).await?;
        let switched_off = store::disable_endpoint_unless_recovered(&mut tx, endpoint_id, d.created_ms, &reason).await?;
        if switched_off {
            let buried = store::bury_endpoint_queue(&mut tx, endpoint_id, "the endpoint was switched off").await?;
            for m in &notices {
                store::insert_delivery(&mut tx, m).await?;
            }
            tracing::warn!(endpoint = endpoint_id, buried, "switched off a webhook endpoint that kept failing");
        }
        tx.commit().await?;
        if switched_off && !notices.is_empty() {
            self.wake();
        }
        Ok(())
    }

    /// Sends staff with `inventory:write` one email listing the SKUs that ran
    /// low since the last digest (each SKU at most once a day).
    pub async fn send_digest(&self) -> Result<usize, NotifyError> {
        let rows = store::undigested(&self.db).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let staff = store::staff_with(&self.db, "inventory:write", true).await?;
        let items: Vec<_> = rows.iter().map(|(sku, _, title, available)| json!({"sku": sku, "title": title, "available": available})).collect();
        let digest = kernel::id::NotificationId::new().to_string();
        let mut messages = Vec::new();
        for person in &staff {
            let ctx = json!({"shop": self.shop(), "staff": {"name": person.name, "email": person.email}, "items": items});
            let unsubscribe = self.unsubscribe_url(Topic::StockDigest, &person.user_id);
            let dedupe = format!("digest:{digest}:{}", person.user_id);
            if let Some(m) = self.compose("inventory.low_stock.email", &ctx, &person.email, Some(&person.user_id), dedupe, None, "inventory.low_stock", Some(unsubscribe)).await? {
                messages.push(m);
            }
        }
        let mut tx = self.db.begin().await?;
        for m in &messages {
            store::insert_delivery(&mut tx, m).await?;
        }
        for (sku, day, _, _) in &rows {
            store::mark_digested(&mut tx, sku, day).await?;
        }
        tx.commit().await?;
        self.wake();
        Ok(messages.len())
    }

    /// Sends one message now, outside the queue (a webhook test): it is
    /// logged like any other, but a failure is final and switches nothing off.
    pub(crate) async fn send_now(&self, m: &store::NewDelivery) -> Result<Result<Sent, SendError>, NotifyError> {
        let mut tx = self.db.begin().await?;
        store::insert_delivery(&mut tx, m).await?;
        tx.commit().await?;
        let Some(d) = store::delivery(&self.db, &m.id).await? else { return Err(NotifyError::NotFound("notification")) };
        let started = Instant::now();
        let at_ms = now_ms();
        let result = self.post_webhook(&d).await;
        let attempt = attempt_of(d.attempts, at_ms, started, &result);
        let status = if result.is_ok() { "sent" } else { "failed" };
        let mut tx = self.db.begin().await?;
        store::record_attempt(&mut tx, &d, &attempt, status, d.next_attempt_ms, None).await?;
        if result.is_ok()
            && let Some(endpoint) = &d.endpoint_id
        {
            store::endpoint_succeeded(&mut tx, endpoint, at_ms).await?;
        }
        tx.commit().await?;
        Ok(result)
    }

    pub(crate) fn unsubscribe_url(&self, topic: Topic, subject: &str) -> String {
        let token = domain::unsubscribe_token(&self.key, topic, subject);
        format!("{}/api/v1/unsubscribe?token={token}", self.shop_url())
    }
}

fn humanise_ms(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    match secs {
        s if s >= 2 * 86_400 => format!("{} days", s / 86_400),
        s if s >= 2 * 3600 => format!("{} hours", s / 3600),
        s if s >= 120 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

fn attempt_of(attempt: i32, at_ms: i64, started: Instant, result: &Result<Sent, SendError>) -> Attempt {
    Attempt {
        attempt,
        at_ms,
        ok: result.is_ok(),
        status_code: match result {
            Ok(sent) => sent.status_code,
            Err(e) => e.status_code,
        },
        error: result.as_ref().err().map(|e| e.message.clone()),
        duration_ms: started.elapsed().as_millis() as i64,
    }
}

/// `notify_deliveries_queued{channel}` and `notify_deliveries_dead{channel}`,
/// read on the metrics timer (see [`platform::gauges`]).
pub(crate) struct DeliveryGauges {
    pub db: platform::db::Db,
}

#[async_trait::async_trait]
impl platform::gauges::Reading for DeliveryGauges {
    fn name(&self) -> &str {
        "notify.deliveries"
    }

    fn describe(&self) {
        metrics::describe_gauge!("notify_deliveries_queued", "Messages and webhook deliveries waiting to be sent or retried");
        metrics::describe_gauge!("notify_deliveries_dead", "Messages and webhook deliveries given up after their retries (until retried by hand)");
    }

    async fn read(&self) -> Result<(), platform::service::BoxError> {
        let counts = store::queued_and_dead(&self.db).await?;
        let count = |channel: &str, status: &str| counts.iter().find(|(c, s, _)| c == channel && s == status).map_or(0, |r| r.2);
        for channel in ["email", "sms", "webhook"] {
            metrics::gauge!("notify_deliveries_queued", "channel" => channel).set(count(channel, "queued") as f64);
            metrics::gauge!("notify_deliveries_dead", "channel" => channel).set(count(channel, "dead") as f64);
        }
        Ok(())
    }
}
