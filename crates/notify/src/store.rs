//! Every SQL statement of the notify service.

use platform::db::{Db, DbError, Tx, now_ms};
use platform::{on_db, on_tx, on_write};
use sqlx::Row;

use crate::templates::Source;

// Contacts

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub user_id: String,
    pub email: String,
    pub name: String,
    pub phone: Option<String>,
}

pub async fn upsert_contact(
    tx: &mut Tx,
    c: &Contact,
    permissions: &[String],
    disabled: bool,
) -> Result<(), DbError> {
    let permissions = permissions.join(" ");
    on_tx!(tx, conn => sqlx::query(
        "INSERT INTO contacts (user_id, email, name, phone, permissions, disabled, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, name = excluded.name, phone = excluded.phone, \
         permissions = excluded.permissions, disabled = excluded.disabled, updated_ms = excluded.updated_ms")
        .bind(&c.user_id).bind(&c.email).bind(&c.name).bind(&c.phone).bind(permissions).bind(disabled).bind(now_ms())
        .execute(conn).await.map(|_| ()))?;
    Ok(())
}

pub async fn contact(db: &Db, user_id: &str) -> Result<Option<Contact>, DbError> {
    let row: Option<(String, String, String, Option<String>)> = on_db!(db, pool => sqlx::query_as(
        "SELECT user_id, email, name, phone FROM contacts WHERE user_id = $1").bind(user_id).fetch_optional(pool).await)?;
    Ok(row.map(|(user_id, email, name, phone)| Contact { user_id, email, name, phone }))
}

type StaffRow = (String, String, String, Option<String>, String, Option<bool>);

/// Staff who hold `permission` and have not switched off `stock_digest`
/// (when `digest_only`), and whose account is not disabled.
pub async fn staff_with(db: &Db, permission: &str, digest_only: bool) -> Result<Vec<Contact>, DbError> {
    let rows: Vec<StaffRow> = on_db!(db, pool => sqlx::query_as(
        "SELECT c.user_id, c.email, c.name, c.phone, c.permissions, p.stock_digest FROM contacts c \
         LEFT JOIN notification_preferences p ON p.user_id = c.user_id \
         WHERE c.disabled = FALSE ORDER BY c.user_id").fetch_all(pool).await)?;
    Ok(rows
        .into_iter()
        .filter(|r| r.4.split(' ').any(|p| p == permission))
        .filter(|r| !digest_only || r.5.unwrap_or(true))
        .map(|(user_id, email, name, phone, _, _)| Contact { user_id, email, name, phone })
        .collect())
}

// Preferences

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preferences {
    pub order_sms: bool,
    pub phone: Option<String>,
    pub marketing_email: bool,
    pub stock_digest: bool,
}

impl Default for Preferences {
    fn default() -> Self {
        Self { order_sms: false, phone: None, marketing_email: false, stock_digest: true }
    }
}

pub async fn preferences(db: &Db, user_id: &str) -> Result<Option<Preferences>, DbError> {
    let row: Option<(bool, Option<String>, bool, bool)> = on_db!(db, pool => sqlx::query_as(
        "SELECT order_sms, phone, marketing_email, stock_digest FROM notification_preferences WHERE user_id = $1")
        .bind(user_id).fetch_optional(pool).await)?;
    Ok(row.map(|(order_sms, phone, marketing_email, stock_digest)| Preferences { order_sms, phone, marketing_email, stock_digest }))
}

pub async fn save_preferences(db: &Db, user_id: &str, p: &Preferences) -> Result<(), DbError> {
    on_write!(db, pool => sqlx::query(
        "INSERT INTO notification_preferences (user_id, order_sms, phone, marketing_email, stock_digest, updated_ms) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id) DO UPDATE SET order_sms = excluded.order_sms, \
         phone = excluded.phone, marketing_email = excluded.marketing_email, stock_digest = excluded.stock_digest, \
         updated_ms = excluded.updated_ms")
        .bind(user_id).bind(p.order_sms).bind(&p.phone).bind(p.marketing_email).bind(p.stock_digest).bind(now_ms())
        .execute(pool).await.map(|_| ()))?;
    Ok(())
}

// Templates

#[derive(Debug, Clone)]
pub struct SavedTemplate {
    pub source: Source,
    pub updated_ms: i64,
    pub updated_by: Option<String>,
}

pub async fn template(db: &Db, key: &str) -> Result<Option<SavedTemplate>, DbError> {
    let row: Option<(String, String, String, i64, Option<String>)> = on_db!(db, pool => sqlx::query_as(
        "SELECT subject, html, text, updated_ms, updated_by FROM notification_templates WHERE key = $1")
        .bind(key).fetch_optional(pool).await)?;
    Ok(row.map(|(subject, html, text, updated_ms, updated_by)| SavedTemplate {
        source: Source { subject, html, text },
        updated_ms,
        updated_by,
    }))
}

pub async fn save_template(db: &Db, key: &str, s: &Source, by: &str) -> Result<(), DbError> {
    on_write!(db, pool => sqlx::query(
        "INSERT INTO notification_templates (key, subject, html, text, updated_ms, updated_by) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (key) DO UPDATE SET subject = excluded.subject, html = excluded.html, text = excluded.text, \
         updated_ms = excluded.updated_ms, updated_by = excluded.updated_by")
        .bind(key).bind(&s.subject).bind(&s.html).bind(&s.text).bind(now_ms()).bind(by)
        .execute(pool).await.map(|_| ()))?;
    Ok(())
}

pub async fn delete_template(db: &Db, key: &str) -> Result<bool, DbError> {
    let n = on_write!(db, pool => sqlx::query("DELETE FROM notification_templates WHERE key = $1").bind(key)
        .execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n > 0)
}

// Deliveries

/// A message to queue.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: String,
    pub dedupe_key: String,
    pub event_id: Option<String>,
    pub event_type: String,
    pub template: Option<String>,
    pub channel: &'static str,
    pub recipient: String,
    pub user_id: Option<String>,
    pub endpoint_id: Option<String>,
    pub subject: String,
    pub body: String,
    pub html: Option<String>,
    pub unsubscribe_url: Option<String>,
    /// When retrying stops (webhooks); email and SMS count attempts instead.
    pub give_up_ms: Option<i64>,
    /// Queued already taken (and its first attempt counted) by whoever sends it now; 0 for the sender.
    pub lease_until_ms: i64,
    /// Not sent before this time (0: at once).
    pub send_at_ms: i64,
    /// The secret links the stored copy withholds, sealed (`domain::seal`); put back only when sending.
    pub secret: Option<String>,
}

impl NewDelivery {
    /// `event` (as merchants see it, serialised in `body`) for `endpoint`, retried until `give_up_ms`.
    pub fn webhook(event: &kernel::Envelope, endpoint: &Endpoint, body: String, give_up_ms: i64) -> Self {
        NewDelivery {
            id: kernel::id::NotificationId::new().to_string(),
            dedupe_key: format!("{}:webhook:{}", event.id, endpoint.id),
            event_id: Some(event.id.to_string()),
            event_type: event.event_type.clone(),
            template: None,
            channel: "webhook",
            recipient: endpoint.url.clone(),
            user_id: None,
            endpoint_id: Some(endpoint.id.clone()),
            subject: String::new(),
            body,
            html: None,
            unsubscribe_url: None,
            give_up_ms: Some(give_up_ms),
            lease_until_ms: 0,
            send_at_ms: 0,
            secret: None,
        }
    }
}

/// Queues a message unless one with its `dedupe_key` exists. Answers whether it was new.
pub async fn insert_delivery(tx: &mut Tx, d: &NewDelivery) -> Result<bool, DbError> {
    let now = now_ms();
    let n = on_tx!(tx, c => sqlx::query(
        "INSERT INTO deliveries (id, dedupe_key, event_id, event_type, template, channel, recipient, user_id, endpoint_id, \
         subject, body, html, unsubscribe_url, status, attempts, next_attempt_ms, give_up_ms, created_ms, updated_ms, lease_until_ms, secret) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'queued', $16, $18, $15, $14, $14, $17, $19) \
         ON CONFLICT (dedupe_key) DO NOTHING")
        .bind(&d.id).bind(&d.dedupe_key).bind(&d.event_id).bind(&d.event_type).bind(&d.template).bind(d.channel)
        .bind(&d.recipient).bind(&d.user_id).bind(&d.endpoint_id).bind(&d.subject).bind(&d.body).bind(&d.html)
        .bind(&d.unsubscribe_url).bind(now).bind(d.give_up_ms).bind(i32::from(d.lease_until_ms > 0)).bind(d.lease_until_ms)
        .bind(d.send_at_ms.max(now)).bind(&d.secret).execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub event_id: Option<String>,
    pub event_type: String,
    pub template: Option<String>,
    pub channel: String,
    pub recipient: String,
    pub user_id: Option<String>,
    pub endpoint_id: Option<String>,
    pub subject: String,
    pub body: String,
    pub html: Option<String>,
    pub unsubscribe_url: Option<String>,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_ms: i64,
    pub give_up_ms: Option<i64>,
    pub last_error: Option<String>,
    pub provider_message_id: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub sent_ms: Option<i64>,
    /// The sealed secret links of a private message while it may still be
    /// sent; `""` once they were dropped (sent, failed or dead); `None` when it has none.
    pub secret: Option<String>,
}

const DELIVERY_COLUMNS: &str = "id, event_id, event_type, template, channel, recipient, user_id, endpoint_id, subject, body, \
     html, unsubscribe_url, status, attempts, next_attempt_ms, give_up_ms, last_error, provider_message_id, created_ms, \
     updated_ms, sent_ms, secret";

macro_rules! delivery_row {
    ($r:expr) => {{
        Delivery {
            id: $r.try_get(0)?,
            event_id: $r.try_get(1)?,
            event_type: $r.try_get(2)?,
            template: $r.try_get(3)?,
            channel: $r.try_get(4)?,
            recipient: $r.try_get(5)?,
            user_id: $r.try_get(6)?,
            endpoint_id: $r.try_get(7)?,
            subject: $r.try_get(8)?,
            body: $r.try_get(9)?,
            html: $r.try_get(10)?,
            unsubscribe_url: $r.try_get(11)?,
            status: $r.try_get(12)?,
            attempts: $r.try_get(13)?,
            next_attempt_ms: $r.try_get(14)?,
            give_up_ms: $r.try_get(15)?,
            last_error: $r.try_get(16)?,
            provider_message_id: $r.try_get(17)?,
            created_ms: $r.try_get(18)?,
            updated_ms: $r.try_get(19)?,
            sent_ms: $r.try_get(20)?,
            secret: $r.try_get(21)?,
        }
    }};
}

pub async fn delivery(db: &Db, id: &str) -> Result<Option<Delivery>, DbError> {
    let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1");
    let row = on_db!(db, pool => {
        let r = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?;
        r.map(|r| -> Result<Delivery, sqlx::Error> { Ok(delivery_row!(r)) }).transpose()
    })?;
    Ok(row)
}

/// Takes up to `limit` due messages for this sender in one statement: each
/// is leased (so two senders never take the same one; PostgreSQL checks the
/// condition again on the row it locks) and its attempt counted before it is tried.
pub async fn claim_due(db: &Db, now: i64, lease_ms: i64, limit: u32) -> Result<Vec<Delivery>, DbError> {
    let sql = format!(
        "UPDATE deliveries SET lease_until_ms = $1, attempts = attempts + 1, updated_ms = $2 \
         WHERE id IN (SELECT id FROM deliveries WHERE status = 'queued' AND next_attempt_ms <= $2 AND lease_until_ms < $2 \
         ORDER BY next_attempt_ms LIMIT $3) AND status = 'queued' AND lease_until_ms < $2 RETURNING {DELIVERY_COLUMNS}"
    );
    let rows = on_write!(db, pool => {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now + lease_ms).bind(now).bind(i64::from(limit))
            .fetch_all(pool).await?;
        rows.iter().map(|r| -> Result<Delivery, sqlx::Error> { Ok(delivery_row!(r)) }).collect::<Result<Vec<_>, _>>()
    })?;
    Ok(rows)
}

/// Drops messages under `dedupe_prefix` that have not been tried yet
/// (an "order received" the receipt made needless).
pub async fn supersede(tx: &mut Tx, dedupe_prefix: &str) -> Result<u64, DbError> {
    let pattern = format!("{}%", dedupe_prefix.replace('%', "").replace('_', "\\_"));
    let n = on_tx!(tx, c => sqlx::query(
        "DELETE FROM deliveries WHERE dedupe_key LIKE $1 ESCAPE '\\' AND status = 'queued' AND attempts = 0")
        .bind(pattern).execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n)
}

/// Drops the claimed message `id` when it is an "order received" (its
/// dedupe key under `placed:<order id>:`) whose order was paid or
/// cancelled meanwhile: decided when the message is due, from the order's
/// state, whatever order its events were handled in (two replicas may
/// handle `order.placed` and `order.paid` at the same moment, and the
/// receipt's cleanup can run before the "order received" is queued).
pub async fn drop_if_settled(db: &Db, id: &str) -> Result<bool, DbError> {
    let n = on_write!(db, pool => sqlx::query(
        "DELETE FROM deliveries WHERE id = $1 AND event_type = 'order.placed' AND status = 'queued' AND EXISTS ( \
           SELECT 1 FROM order_facts f WHERE f.settled_ms IS NOT NULL \
             AND substr(deliveries.dedupe_key, 1, length('placed:' || f.order_id || ':')) = 'placed:' || f.order_id || ':')")
        .bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n > 0)
}

/// When the next message falls due, if any waits.
pub async fn next_due(db: &Db) -> Result<Option<i64>, DbError> {
    let row: Option<(Option<i64>,)> = on_db!(db, pool => sqlx::query_as(
        "SELECT MIN(CASE WHEN lease_until_ms > next_attempt_ms THEN lease_until_ms ELSE next_attempt_ms END) \
         FROM deliveries WHERE status = 'queued'").fetch_optional(pool).await)?;
    Ok(row.and_then(|r| r.0))
}

/// Messages waiting, by channel, for the queue-depth gauge.
pub async fn queue_depth(db: &Db) -> Result<Vec<(String, i64)>, DbError> {
    let rows = on_db!(db, pool => sqlx::query_as(
        "SELECT channel, COUNT(*) FROM deliveries WHERE status = 'queued' GROUP BY channel").fetch_all(pool).await)?;
    Ok(rows)
}

/// Deliveries waiting to be sent or retried (`queued`) and given up
/// (`dead`), by channel and status, for the delivery gauges.
pub async fn queued_and_dead(db: &Db) -> Result<Vec<(String, String, i64)>, DbError> {
    let rows = on_db!(db, pool => sqlx::query_as(
        "SELECT channel, status, COUNT(*) FROM deliveries WHERE status IN ('queued', 'dead') GROUP BY channel, status")
        .fetch_all(pool).await)?;
    Ok(rows)
}

/// How an attempt went.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub attempt: i32,
    pub at_ms: i64,
    pub ok: bool,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// Records an attempt and the state it leaves the delivery in: `sent`, back
/// to `queued` for `next_attempt_ms`, or `failed` / `dead`.
pub async fn finish_attempt(
    db: &Db,
    d: &Delivery,
    a: &Attempt,
    status: &str,
    next_attempt_ms: i64,
    provider_message_id: Option<&str>,
) -> Result<(), DbError> {
    let mut tx = db.begin().await?;
    record_attempt(&mut tx, d, a, status, next_attempt_ms, provider_message_id).await?;
    tx.commit().await?;
    Ok(())
}

/// Writes an attempt and the delivery's new status in `tx`.
pub async fn record_attempt(
    tx: &mut Tx,
    d: &Delivery,
    a: &Attempt,
    status: &str,
    next_attempt_ms: i64,
    provider_message_id: Option<&str>,
) -> Result<(), DbError> {
    let now = now_ms();
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO delivery_attempts (delivery_id, attempt, at_ms, ok, status_code, error, duration_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (delivery_id, attempt) DO UPDATE SET at_ms = excluded.at_ms, \
         ok = excluded.ok, status_code = excluded.status_code, error = excluded.error, duration_ms = excluded.duration_ms")
        .bind(&d.id).bind(a.attempt).bind(a.at_ms).bind(a.ok).bind(a.status_code).bind(&a.error).bind(a.duration_ms)
        .execute(c).await.map(|_| ()))?;
    on_tx!(tx, c => sqlx::query(
        "UPDATE deliveries SET status = $1, next_attempt_ms = $2, lease_until_ms = 0, last_error = $3, \
         provider_message_id = COALESCE($4, provider_message_id), sent_ms = CASE WHEN $1 = 'sent' THEN $5 ELSE sent_ms END, \
         secret = CASE WHEN $1 = 'queued' OR secret IS NULL THEN secret ELSE '' END, updated_ms = $5 WHERE id = $6")
        .bind(status).bind(next_attempt_ms).bind(if a.ok { None } else { a.error.clone() }).bind(provider_message_id)
        .bind(now).bind(&d.id).execute(c).await.map(|_| ()))?;
    Ok(())
}

type AttemptRow = (i32, i64, bool, Option<i32>, Option<String>, i64);

pub async fn attempts(db: &Db, delivery_id: &str) -> Result<Vec<Attempt>, DbError> {
    let rows: Vec<AttemptRow> = on_db!(db, pool => sqlx::query_as(
        "SELECT attempt, at_ms, ok, status_code, error, duration_ms FROM delivery_attempts WHERE delivery_id = $1 ORDER BY attempt")
        .bind(delivery_id).fetch_all(pool).await)?;
    Ok(rows
        .into_iter()
        .map(|(attempt, at_ms, ok, status_code, error, duration_ms)| Attempt { attempt, at_ms, ok, status_code, error, duration_ms })
        .collect())
}

/// Puts a failed or dead delivery back in the queue, with its retries afresh.
pub async fn requeue(db: &Db, id: &str, give_up_ms: Option<i64>) -> Result<bool, DbError> {
    let now = now_ms();
    let n = on_write!(db, pool => sqlx::query(
        "UPDATE deliveries SET status = 'queued', attempts = 0, next_attempt_ms = $1, lease_until_ms = 0, \
         give_up_ms = CASE WHEN give_up_ms IS NULL THEN NULL ELSE $2 END, updated_ms = $1 \
         WHERE id = $3 AND status IN ('failed', 'dead') AND (secret IS NULL OR secret <> '')")
        .bind(now).bind(give_up_ms).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

#[derive(Debug, Default)]
pub struct DeliveryFilter<'a> {
    pub status: Option<&'a str>,
    pub channel: Option<&'a str>,
    pub recipient: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub endpoint_id: Option<&'a str>,
    pub after: Option<&'a str>,
    pub limit: u32,
}

/// Newest first; ids are time-ordered, so the cursor is the last id seen.
pub async fn deliveries(db: &Db, f: &DeliveryFilter<'_>) -> Result<Vec<Delivery>, DbError> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR channel = $2) \
         AND ($3 IS NULL OR recipient = $3) AND ($4 IS NULL OR event_type = $4) AND ($5 IS NULL OR endpoint_id = $5) \
         AND ($6 IS NULL OR id < $6) ORDER BY id DESC LIMIT $7"
    );
    let rows = on_db!(db, pool => {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(f.status).bind(f.channel).bind(f.recipient).bind(f.event_type).bind(f.endpoint_id).bind(f.after)
            .bind(i64::from(f.limit) + 1).fetch_all(pool).await?;
        rows.iter().map(|r| -> Result<Delivery, sqlx::Error> { Ok(delivery_row!(r)) }).collect::<Result<Vec<_>, _>>()
    })?;
    Ok(rows)
}

/// Marks every waiting delivery of an endpoint dead (the endpoint was switched off or deleted).
pub async fn bury_endpoint_queue(tx: &mut Tx, endpoint_id: &str, why: &str) -> Result<u64, DbError> {
    let n = on_tx!(tx, c => sqlx::query(
        "UPDATE deliveries SET status = 'dead', last_error = $1, lease_until_ms = 0, updated_ms = $2 \
         WHERE endpoint_id = $3 AND status = 'queued'")
        .bind(why).bind(now_ms()).bind(endpoint_id).execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n)
}

// The dev mailbox

#[derive(Debug, Clone)]
pub struct Mail {
    pub id: String,
    pub delivery_id: String,
    pub channel: String,
    pub sender: String,
    pub recipient: String,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    pub headers: String,
    pub created_ms: i64,
}

pub async fn insert_mail(db: &Db, m: &Mail) -> Result<(), DbError> {
    on_write!(db, pool => sqlx::query(
        "INSERT INTO mailbox (id, delivery_id, channel, sender, recipient, subject, text, html, headers, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
        .bind(&m.id).bind(&m.delivery_id).bind(&m.channel).bind(&m.sender).bind(&m.recipient).bind(&m.subject)
        .bind(&m.text).bind(&m.html).bind(&m.headers).bind(m.created_ms).execute(pool).await.map(|_| ()))?;
    Ok(())
}

type MailTuple = (String, String, String, String, String, String, String, Option<String>, String, i64);

fn mail_of(t: MailTuple) -> Mail {
    let (id, delivery_id, channel, sender, recipient, subject, text, html, headers, created_ms) = t;
    Mail { id, delivery_id, channel, sender, recipient, subject, text, html, headers, created_ms }
}

pub async fn mails(db: &Db, recipient: Option<&str>, channel: Option<&str>, after: Option<&str>, limit: u32) -> Result<Vec<Mail>, DbError> {
    let rows: Vec<MailTuple> = on_db!(db, pool => sqlx::query_as(
        "SELECT id, delivery_id, channel, sender, recipient, subject, text, html, headers, created_ms FROM mailbox \
         WHERE ($1 IS NULL OR recipient = $1) AND ($2 IS NULL OR channel = $2) AND ($3 IS NULL OR id < $3) \
         ORDER BY id DESC LIMIT $4")
        .bind(recipient).bind(channel).bind(after).bind(i64::from(limit) + 1).fetch_all(pool).await)?;
    Ok(rows.into_iter().map(mail_of).collect())
}

pub async fn mail(db: &Db, id: &str) -> Result<Option<Mail>, DbError> {
    let row: Option<MailTuple> = on_db!(db, pool => sqlx::query_as(
        "SELECT id, delivery_id, channel, sender, recipient, subject, text, html, headers, created_ms FROM mailbox WHERE id = $1")
        .bind(id).fetch_optional(pool).await)?;
    Ok(row.map(mail_of))
}

// Back-in-stock alerts

#[derive(Debug, Clone)]
pub struct StockAlert {
    pub id: String,
    pub product_id: String,
    pub sku: String,
    pub email: String,
    pub user_id: Option<String>,
    pub title: String,
    pub slug: String,
}

/// Adds an alert, or re-arms one already sent.
pub async fn add_alert(db: &Db, a: &StockAlert) -> Result<(), DbError> {
    on_write!(db, pool => sqlx::query(
        "INSERT INTO stock_alerts (id, product_id, sku, email, user_id, title, slug, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (product_id, sku, email) DO UPDATE SET notified_ms = NULL, title = excluded.title, \
         user_id = COALESCE(excluded.user_id, stock_alerts.user_id)")
        .bind(&a.id).bind(&a.product_id).bind(&a.sku).bind(&a.email).bind(&a.user_id).bind(&a.title).bind(&a.slug)
        .bind(now_ms()).execute(pool).await.map(|_| ()))?;
    Ok(())
}

type AlertRow = (String, String, String, String, Option<String>, String, String);

/// Waiting alerts for a product, for `sku` or for any of its SKUs.
pub async fn waiting_alerts(db: &Db, product_id: &str, sku: &str) -> Result<Vec<StockAlert>, DbError> {
    let rows: Vec<AlertRow> = on_db!(db, pool => sqlx::query_as(
        "SELECT id, product_id, sku, email, user_id, title, slug FROM stock_alerts \
         WHERE product_id = $1 AND (sku = '' OR sku = $2) AND notified_ms IS NULL ORDER BY id")
        .bind(product_id).bind(sku).fetch_all(pool).await)?;
    Ok(rows
        .into_iter()
        .map(|(id, product_id, sku, email, user_id, title, slug)| StockAlert { id, product_id, sku, email, user_id, title, slug })
        .collect())
}

pub async fn mark_alert_sent(tx: &mut Tx, id: &str) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query("UPDATE stock_alerts SET notified_ms = $1 WHERE id = $2 AND notified_ms IS NULL")
        .bind(now_ms()).bind(id).execute(c).await.map(|_| ()))?;
    Ok(())
}

pub async fn drop_alerts_of(db: &Db, email: &str) -> Result<u64, DbError> {
    let n = on_write!(db, pool => sqlx::query("DELETE FROM stock_alerts WHERE email = $1 AND notified_ms IS NULL")
        .bind(email).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n)
}

// Low stock

/// Notes that a SKU ran low today; a second time the same day changes nothing.
pub async fn note_low_stock(tx: &mut Tx, sku: &str, day: &str, product_id: &str, title: &str, available: i64) -> Result<bool, DbError> {
    let n = on_tx!(tx, c => sqlx::query(
        "INSERT INTO low_stock (sku, day, product_id, title, available, created_ms) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (sku, day) DO NOTHING")
        .bind(sku).bind(day).bind(product_id).bind(title).bind(available).bind(now_ms())
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// (sku, day, title, available) not yet in a digest.
pub async fn undigested(db: &Db) -> Result<Vec<(String, String, String, i64)>, DbError> {
    let rows = on_db!(db, pool => sqlx::query_as(
        "SELECT sku, day, title, available FROM low_stock WHERE digested_ms IS NULL ORDER BY created_ms, sku LIMIT 500")
        .fetch_all(pool).await)?;
    Ok(rows)
}

pub async fn mark_digested(tx: &mut Tx, sku: &str, day: &str) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query("UPDATE low_stock SET digested_ms = $1 WHERE sku = $2 AND day = $3")
        .bind(now_ms()).bind(sku).bind(day).execute(c).await.map(|_| ()))?;
    Ok(())
}

// Orders as messages need them

/// `sealed_lookup` is a guest's lookup token as `domain::seal` keeps it (never in clear), `placed` the event without it.
pub async fn save_order(tx: &mut Tx, order_id: &str, number: i64, email: Option<&str>, user_id: Option<&str>, sealed_lookup: Option<&str>, placed: &str) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO order_facts (order_id, number, email, user_id, lookup_token, placed, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (order_id) DO UPDATE SET number = excluded.number, email = excluded.email, user_id = excluded.user_id, \
         lookup_token = excluded.lookup_token, placed = excluded.placed")
        .bind(order_id).bind(number).bind(email).bind(user_id).bind(sealed_lookup).bind(placed).bind(now_ms())
        .execute(c).await.map(|_| ()))?;
    Ok(())
}

/// Notes that an order was paid or cancelled (it may come before `order.placed` is handled).
pub async fn settle_order(tx: &mut Tx, order_id: &str, number: i64) -> Result<(), DbError> {
    let now = now_ms();
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO order_facts (order_id, number, placed, settled_ms, created_ms) VALUES ($1, $2, '{}', $3, $3) \
         ON CONFLICT (order_id) DO UPDATE SET settled_ms = COALESCE(order_facts.settled_ms, excluded.settled_ms)")
        .bind(order_id).bind(number).bind(now).execute(c).await.map(|_| ()))?;
    Ok(())
}

pub async fn order_settled(db: &Db, order_id: &str) -> Result<bool, DbError> {
    let row: Option<(Option<i64>,)> = on_db!(db, pool => sqlx::query_as("SELECT settled_ms FROM order_facts WHERE order_id = $1")
        .bind(order_id).fetch_optional(pool).await)?;
    Ok(row.is_some_and(|r| r.0.is_some()))
}

/// (sealed lookup token, the `order.placed` data) of an order.
pub async fn order_facts(db: &Db, order_id: &str) -> Result<Option<(Option<String>, String)>, DbError> {
    let row = on_db!(db, pool => sqlx::query_as("SELECT lookup_token, placed FROM order_facts WHERE order_id = $1 AND placed <> '{}'")
        .bind(order_id).fetch_optional(pool).await)?;
    Ok(row)
}

// Webhook endpoints

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub description: String,
    pub secret: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub last_success_ms: Option<i64>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

type EndpointTuple = (String, String, String, String, String, bool, Option<String>, Option<i64>, i64, i64);

fn endpoint_of(t: EndpointTuple) -> Endpoint {
    let (id, url, description, secret, types, enabled, disabled_reason, last_success_ms, created_ms, updated_ms) = t;
    let event_types = serde_json::from_str(&types).unwrap_or_default();
    Endpoint { id, url, description, secret, event_types, enabled, disabled_reason, last_success_ms, created_ms, updated_ms }
}

const ENDPOINT_COLUMNS: &str =
    "id, url, description, secret, event_types, enabled, disabled_reason, last_success_ms, created_ms, updated_ms";

pub async fn endpoints(db: &Db, enabled_only: bool) -> Result<Vec<Endpoint>, DbError> {
    let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE ($1 = FALSE OR enabled = TRUE) ORDER BY id");
    let rows: Vec<EndpointTuple> =
        on_db!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(enabled_only).fetch_all(pool).await)?;
    Ok(rows.into_iter().map(endpoint_of).collect())
}

pub async fn endpoint(db: &Db, id: &str) -> Result<Option<Endpoint>, DbError> {
    let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1");
    let row: Option<EndpointTuple> =
        on_db!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await)?;
    Ok(row.map(endpoint_of))
}

pub async fn save_endpoint(tx: &mut Tx, e: &Endpoint) -> Result<(), DbError> {
    let types = serde_json::to_string(&e.event_types).map_err(|err| DbError::Corrupt(err.to_string()))?;
    on_tx!(tx, c => sqlx::query(
        "INSERT INTO webhook_endpoints (id, url, description, secret, event_types, enabled, disabled_reason, last_success_ms, created_ms, updated_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO UPDATE SET url = excluded.url, \
         description = excluded.description, secret = excluded.secret, event_types = excluded.event_types, \
         enabled = excluded.enabled, disabled_reason = excluded.disabled_reason, updated_ms = excluded.updated_ms")
        .bind(&e.id).bind(&e.url).bind(&e.description).bind(&e.secret).bind(types).bind(e.enabled).bind(&e.disabled_reason)
        .bind(e.last_success_ms).bind(e.created_ms).bind(e.updated_ms).execute(c).await.map(|_| ()))?;
    Ok(())
}

pub async fn delete_endpoint(tx: &mut Tx, id: &str) -> Result<bool, DbError> {
    let n = on_tx!(tx, c => sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1").bind(id)
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n > 0)
}

pub async fn endpoint_succeeded(tx: &mut Tx, id: &str, at_ms: i64) -> Result<(), DbError> {
    on_tx!(tx, c => sqlx::query("UPDATE webhook_endpoints SET last_success_ms = $1 WHERE id = $2 AND (last_success_ms IS NULL OR last_success_ms < $1)")
        .bind(at_ms).bind(id).execute(c).await.map(|_| ()))?;
    Ok(())
}

/// Switches an endpoint off unless it succeeded at or after `since_ms`; answers whether it did.
pub async fn disable_endpoint_unless_recovered(tx: &mut Tx, id: &str, since_ms: i64, reason: &str) -> Result<bool, DbError> {
    let n = on_tx!(tx, c => sqlx::query(
        "UPDATE webhook_endpoints SET enabled = FALSE, disabled_reason = $1, updated_ms = $2 \
         WHERE id = $3 AND enabled = TRUE AND (last_success_ms IS NULL OR last_success_ms < $4)")
        .bind(reason).bind(now_ms()).bind(id).bind(since_ms).execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

// Settings

pub async fn setting(db: &Db, name: &str) -> Result<Option<String>, DbError> {
    let row: Option<(String,)> = on_db!(db, pool => sqlx::query_as("SELECT value FROM notify_settings WHERE name = $1")
        .bind(name).fetch_optional(pool).await)?;
    Ok(row.map(|r| r.0))
}

/// Keeps the first value written under `name` (two processes starting at once agree).
pub async fn setting_or_insert(db: &Db, name: &str, value: &str) -> Result<String, DbError> {
    on_write!(db, pool => sqlx::query("INSERT INTO notify_settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
        .bind(name).bind(value).execute(pool).await.map(|_| ()))?;
    Ok(setting(db, name).await?.unwrap_or_else(|| value.to_owned()))
}

// Erasure

/// Removes a deleted user's personal data: contact, preferences, alerts,
/// and the content of every message to them (kept as an erased row for the counts).
pub async fn erase_user(tx: &mut Tx, user_id: &str, email: Option<&str>) -> Result<u64, DbError> {
    let erased = "[erased]";
    on_tx!(tx, c => sqlx::query(
        "UPDATE mailbox SET recipient = $1, subject = $1, text = $1, html = NULL, headers = '{}' WHERE delivery_id IN \
         (SELECT id FROM deliveries WHERE user_id = $2 OR ($3 IS NOT NULL AND recipient = $3 AND channel = 'email'))")
        .bind(erased).bind(user_id).bind(email).execute(c).await.map(|_| ()))?;
    let n = on_tx!(tx, c => sqlx::query(
        "UPDATE deliveries SET recipient = $1, subject = $1, body = $1, html = NULL, unsubscribe_url = NULL, user_id = NULL, secret = NULL \
         WHERE user_id = $2 OR ($3 IS NOT NULL AND recipient = $3 AND channel = 'email')")
        .bind(erased).bind(user_id).bind(email).execute(c).await.map(|r| r.rows_affected()))?;
    on_tx!(tx, c => sqlx::query("DELETE FROM stock_alerts WHERE user_id = $1 OR email = $2")
        .bind(user_id).bind(email.unwrap_or("")).execute(c).await.map(|_| ()))?;
    on_tx!(tx, c => sqlx::query("UPDATE order_facts SET email = NULL, user_id = NULL, placed = '{}' WHERE user_id = $1 OR email = $2")
        .bind(user_id).bind(email.unwrap_or("")).execute(c).await.map(|_| ()))?;
    on_tx!(tx, c => sqlx::query("DELETE FROM notification_preferences WHERE user_id = $1").bind(user_id).execute(c).await.map(|_| ()))?;
    on_tx!(tx, c => sqlx::query("DELETE FROM contacts WHERE user_id = $1").bind(user_id).execute(c).await.map(|_| ()))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashSet;

    use super::*;

    fn message(n: usize) -> NewDelivery {
        NewDelivery {
            id: kernel::id::NotificationId::new().to_string(),
            dedupe_key: format!("test:{n}"),
            event_id: None,
            event_type: "test".into(),
            template: None,
            channel: "email",
            recipient: format!("r{n}@example.com"),
            user_id: None,
            endpoint_id: None,
            subject: "s".into(),
            body: "b".into(),
            html: None,
            unsubscribe_url: None,
            give_up_ms: None,
            lease_until_ms: 0,
            send_at_ms: 0,
            secret: None,
        }
    }

    #[tokio::test]
    async fn an_order_received_message_is_dropped_when_due_if_the_order_was_settled_meanwhile() {
        let sandbox = platform::testing::Sandbox::new().await;
        let db = sandbox.db("notify", &[&crate::MIGRATIONS]).await;
        let received = |order: &str| NewDelivery {
            dedupe_key: format!("placed:{order}:order.placed.email"),
            event_type: "order.placed".into(),
            ..message(0)
        };
        let (paid, open) = (received("ord_paid"), received("ord_open"));
        let mut tx = db.begin().await.unwrap();
        // Queued as if the receipt's cleanup had already run: nothing superseded it.
        insert_delivery(&mut tx, &paid).await.unwrap();
        insert_delivery(&mut tx, &open).await.unwrap();
        // Another order's id that begins like this one's settles nothing here.
        settle_order(&mut tx, "ord_pai", 1).await.unwrap();
        tx.commit().await.unwrap();
        assert!(!drop_if_settled(&db, &paid.id).await.unwrap(), "not settled yet: it goes");
        let mut tx = db.begin().await.unwrap();
        settle_order(&mut tx, "ord_paid", 2).await.unwrap();
        tx.commit().await.unwrap();
        assert!(drop_if_settled(&db, &paid.id).await.unwrap(), "paid meanwhile: dropped when due");
        assert!(!drop_if_settled(&db, &open.id).await.unwrap(), "an open order's message stays");
        let left: Vec<String> = claim_due(&db, now_ms(), 60_000, 16).await.unwrap().into_iter().map(|d| d.id).collect();
        assert_eq!(left, std::slice::from_ref(&open.id));
    }

    #[tokio::test]
    async fn concurrent_senders_never_take_the_same_message() {
        let sandbox = platform::testing::Sandbox::new().await;
        let db = sandbox.db("notify", &[&crate::MIGRATIONS]).await;
        let mut tx = db.begin().await.unwrap();
        for n in 0..300 {
            assert!(insert_delivery(&mut tx, &message(n)).await.unwrap());
        }
        assert!(!insert_delivery(&mut tx, &message(0)).await.unwrap(), "a dedupe key queues once");
        tx.commit().await.unwrap();
        let senders: Vec<_> = (0..4)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move {
                    let mut taken = Vec::new();
                    let mut busy = 0;
                    loop {
                        match claim_due(&db, now_ms(), 60_000, 16).await {
                            Ok(batch) if batch.is_empty() => break taken,
                            Ok(batch) => taken.extend(batch.into_iter().map(|d| (d.id, d.attempts))),
                            // SQLite may answer "busy" to one of four writers; it tries again.
                            Err(e) => {
                                busy += 1;
                                assert!(busy < 1000, "{e}");
                                tokio::task::yield_now().await;
                            }
                        }
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for s in senders {
            all.extend(s.await.unwrap());
        }
        let distinct: HashSet<&String> = all.iter().map(|(id, _)| id).collect();
        assert_eq!((all.len(), distinct.len()), (300, 300), "every message taken exactly once");
        assert!(all.iter().all(|(_, attempts)| *attempts == 1));
        assert!(claim_due(&db, now_ms(), 60_000, 16).await.unwrap().is_empty(), "leased messages wait for their lease");
        assert_eq!(claim_due(&db, now_ms() + 61_000, 60_000, 500).await.unwrap().len(), 300, "an expired lease frees them");
    }
}
