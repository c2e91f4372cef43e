//! The notify routes: a customer's preferences, back-in-stock alerts,
//! unsubscribe links; and for staff the delivery log, the dev mailbox,
//! templates and webhook endpoints. Each staff route names its permission.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use kernel::Envelope;
use kernel::error::ErrorBody;
use kernel::auth::Permission;
use kernel::id::{NotificationId, ProductId, WebhookId};
use kernel::page::{Page, PageParams};
use platform::auth::{Principal, RequirePermission, perm};
use platform::db::now_ms;
use platform::http::{Json, nullable};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::{self, Channel, Topic};
use crate::error::{NotifyError, invalid};
use crate::store::{self, Delivery, Endpoint, Mail, NewDelivery, Preferences, StockAlert};
use crate::templates::{self, Source};
use crate::Notify;

pub fn router(notify: Notify) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(get_preferences, put_preferences))
        .routes(routes!(notify_me))
        .routes(routes!(unsubscribe_page, unsubscribe))
        .routes(routes!(list_notifications))
        .routes(routes!(get_notification))
        .routes(routes!(retry_notification))
        .routes(routes!(list_mailbox))
        .routes(routes!(get_mail))
        .routes(routes!(list_templates))
        .routes(routes!(get_template, put_template, reset_template))
        .routes(routes!(preview_template))
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(get_webhook, update_webhook, delete_webhook))
        .routes(routes!(test_webhook))
        .with_state(notify)
}

pub(crate) fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

fn page_of(limit: Option<u32>, starting_after: Option<String>) -> Result<kernel::page::PageRequest, NotifyError> {
    PageParams { limit, starting_after }
        .parse()
        .map_err(|e| invalid(e.field.clone().unwrap_or_default(), "invalid_page", e.message))
}

// Preferences

/// What a customer hears beyond the transactional email they always get.
#[derive(Serialize, ToSchema)]
pub struct PreferencesView {
    /// Account and order email: always on.
    pub transactional_email: bool,
    /// Order updates by SMS, to `phone`.
    pub order_sms: bool,
    /// E.164, e.g. `+14155550100`.
    pub phone: Option<String>,
    pub marketing_email: bool,
    /// Staff: the daily low-stock digest.
    pub stock_digest: bool,
}

fn preferences_view(p: &Preferences) -> PreferencesView {
    PreferencesView {
        transactional_email: true,
        order_sms: p.order_sms,
        phone: p.phone.clone(),
        marketing_email: p.marketing_email,
        stock_digest: p.stock_digest,
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreferencesUpdate {
    /// Must be true when given: transactional email cannot be switched off.
    pub transactional_email: Option<bool>,
    pub order_sms: Option<bool>,
    /// E.164; `null` removes it (and SMS with it).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub phone: Option<Option<String>>,
    pub marketing_email: Option<bool>,
    pub stock_digest: Option<bool>,
}

async fn current_preferences(n: &Notify, user: &str) -> Result<Preferences, NotifyError> {
    if let Some(p) = store::preferences(&n.db, user).await? {
        return Ok(p);
    }
    // Until they choose, the phone on their profile is the one offered.
    let phone = store::contact(&n.db, user).await?.and_then(|c| c.phone);
    Ok(Preferences { phone, ..Preferences::default() })
}

/// The signed-in customer's notification preferences.
#[utoipa::path(get, path = "/api/v1/me/notification-preferences", tag = "notifications",
    responses((status = 200, body = PreferencesView), (status = 401, body = ErrorBody)))]
async fn get_preferences(State(n): State<Notify>, who: Principal) -> Result<Json<PreferencesView>, NotifyError> {
    Ok(Json(preferences_view(&current_preferences(&n, &who.user_id.to_string()).await?)))
}

/// Changes the given preferences; the others stay. SMS needs a phone number.
#[utoipa::path(put, path = "/api/v1/me/notification-preferences", tag = "notifications", request_body = PreferencesUpdate,
    responses((status = 200, body = PreferencesView), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn put_preferences(State(n): State<Notify>, who: Principal, Json(b): Json<PreferencesUpdate>) -> Result<Json<PreferencesView>, NotifyError> {
    if b.transactional_email == Some(false) {
        return Err(invalid("transactional_email", "always_on", "account and order emails cannot be switched off"));
    }
    let user = who.user_id.to_string();
    let mut p = current_preferences(&n, &user).await?;
    match b.phone {
        Some(Some(phone)) => p.phone = Some(domain::parse_phone(&phone).map_err(|e| invalid("phone", "invalid_phone", e.0))?),
        Some(None) => {
            p.phone = None;
            p.order_sms = false;
        }
        None => {}
    }
    if let Some(v) = b.order_sms {
        p.order_sms = v;
    }
    if p.order_sms && p.phone.is_none() {
        return Err(invalid("phone", "phone_required", "order updates by SMS need a phone number"));
    }
    if let Some(v) = b.marketing_email {
        p.marketing_email = v;
    }
    if let Some(v) = b.stock_digest {
        p.stock_digest = v;
    }
    store::save_preferences(&n.db, &user, &p).await?;
    Ok(Json(preferences_view(&p)))
}

// Back-in-stock alerts

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyMeRequest {
    /// Where to write; a signed-in customer's own address when omitted.
    pub email: Option<String>,
    /// One SKU of the product; any of them when omitted.
    pub sku: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct NotifyMeView {
    pub product_id: String,
    pub sku: Option<String>,
    pub email: String,
    /// `waiting`: one email when it is back.
    pub status: &'static str,
}

/// Asks for one email when a product (or one SKU of it) is back in stock.
#[utoipa::path(post, path = "/api/v1/products/{id}/notify-me", tag = "notifications", params(("id" = String, Path)), request_body = NotifyMeRequest,
    responses((status = 201, body = NotifyMeView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 429, description = "too many requests for this address; see Retry-After", body = ErrorBody)))]
async fn notify_me(State(n): State<Notify>, who: Option<Principal>, Path(id): Path<String>, Json(b): Json<NotifyMeRequest>) -> Result<Response, NotifyError> {
    ProductId::parse(&id).map_err(|_| NotifyError::NotFound("product"))?;
    let user = who.map(|p| p.user_id.to_string());
    let email = match (&b.email, &user) {
        (Some(e), _) => domain::parse_email(e).map_err(|e| invalid("email", "invalid_email", e.0))?,
        (None, Some(u)) => store::contact(&n.db, u)
            .await?
            .map(|c| c.email)
            .ok_or_else(|| invalid("email", "email_required", "an email address to write to"))?,
        (None, None) => return Err(invalid("email", "email_required", "an email address to write to")),
    };
    let products = n.products().ok_or_else(|| NotifyError::Catalog("no catalog port in this process".into()))?;
    let product = products.product(&id).await.map_err(|e| NotifyError::Catalog(e.to_string()))?;
    let product = product.filter(|p| p.active).ok_or(NotifyError::NotFound("product"))?;
    if let Some(sku) = &b.sku
        && !product.skus.contains(sku)
    {
        return Err(invalid("sku", "unknown_sku", format!("{sku} is not a SKU of this product")));
    }
    if b.sku.is_none() && product.in_stock {
        return Err(NotifyError::Conflict("in_stock", "this product is in stock now".into()));
    }
    // Counted once there is something to wait for, per mailbox (`+tag` and
    // Gmail's dots are one inbox), so spellings do not multiply the limit.
    let per_hour = n.config.limits.stock_alerts_per_email_per_hour;
    n.limits.hit("stock_alert", &kernel::email::mailbox_key(&email), per_hour, platform::limit::HOUR).await?;
    let alert = StockAlert {
        id: NotificationId::new().to_string(),
        product_id: product.id.clone(),
        sku: b.sku.clone().unwrap_or_default(),
        email: email.clone(),
        user_id: user,
        title: product.title.clone(),
        slug: product.slug.clone(),
    };
    store::add_alert(&n.db, &alert).await?;
    let view = NotifyMeView { product_id: product.id, sku: b.sku, email, status: "waiting" };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

// Unsubscribe links (no sign-in: the token is signed)

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    pub token: String,
}

fn topic_words(topic: Topic) -> &'static str {
    match topic {
        Topic::OrderSms => "order updates by SMS",
        Topic::MarketingEmail => "news and offers by email",
        Topic::StockDigest => "the low-stock digest",
        Topic::StockAlerts => "back-in-stock alerts",
    }
}

fn bad_token() -> NotifyError {
    invalid("token", "invalid_token", "this unsubscribe link is not valid")
}

/// A page confirming what the link unsubscribes from, with one button.
#[utoipa::path(get, path = "/api/v1/unsubscribe", tag = "notifications", params(TokenQuery),
    responses((status = 200, description = "an HTML page with a confirmation form"), (status = 422, body = ErrorBody)))]
async fn unsubscribe_page(State(n): State<Notify>, Query(q): Query<TokenQuery>) -> Result<Html<String>, NotifyError> {
    let (topic, _) = domain::verify_unsubscribe(&n.key, &q.token).ok_or_else(bad_token)?;
    let shop = templates::escape(&n.config.notify.shop_name);
    let body = format!(
        r#"<p>Stop receiving <strong>{}</strong> from {shop}?</p><form method="post" action="?token={}"><input type="hidden" name="List-Unsubscribe" value="One-Click"><button type="submit">Unsubscribe</button></form>"#,
        topic_words(topic),
        templates::escape(&q.token)
    );
    Ok(Html(templates::layout(&n.config.notify.shop_name, &body, None)))
}

#[derive(Serialize, ToSchema)]
pub struct Unsubscribed {
    /// `order_sms`, `marketing_email`, `stock_digest` or `stock_alerts`.
    pub unsubscribed: &'static str,
}

/// Unsubscribes (RFC 8058 one-click, or the page's button). Safe to repeat.
#[utoipa::path(post, path = "/api/v1/unsubscribe", tag = "notifications", params(TokenQuery),
    responses((status = 200, body = Unsubscribed), (status = 422, body = ErrorBody)))]
async fn unsubscribe(State(n): State<Notify>, headers: HeaderMap, Query(q): Query<TokenQuery>) -> Result<Response, NotifyError> {
    let (topic, subject) = domain::verify_unsubscribe(&n.key, &q.token).ok_or_else(bad_token)?;
    match topic {
        Topic::StockAlerts => {
            store::drop_alerts_of(&n.db, &subject).await?;
        }
        Topic::OrderSms | Topic::MarketingEmail | Topic::StockDigest => {
            let mut p = current_preferences(&n, &subject).await?;
            match topic {
                Topic::OrderSms => p.order_sms = false,
                Topic::MarketingEmail => p.marketing_email = false,
                _ => p.stock_digest = false,
            }
            store::save_preferences(&n.db, &subject, &p).await?;
        }
    }
    let wants_html = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"));
    if wants_html {
        let body = format!("<p>Done: you will not receive {} any more.</p>", topic_words(topic));
        return Ok(Html(templates::layout(&n.config.notify.shop_name, &body, None)).into_response());
    }
    Ok(Json(Unsubscribed { unsubscribed: topic.as_str() }).into_response())
}

// The delivery log

#[derive(Serialize, ToSchema)]
pub struct NotificationView {
    pub id: String,
    pub event_id: Option<String>,
    pub event_type: String,
    pub template: Option<String>,
    /// `email`, `sms` or `webhook`.
    pub channel: String,
    pub recipient: String,
    pub user_id: Option<String>,
    pub endpoint_id: Option<String>,
    pub subject: String,
    /// `queued`, `sent`, `failed` (refused for good) or `dead` (retries exhausted).
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<String>,
    /// What the last failure said; only for staff with `staff:manage` (a
    /// webhook's refusals and status codes map the network behind it).
    pub last_error: Option<String>,
    pub provider_message_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub sent_at: Option<String>,
}

fn notification_view(d: &Delivery, detail: bool) -> NotificationView {
    NotificationView {
        id: d.id.clone(),
        event_id: d.event_id.clone(),
        event_type: d.event_type.clone(),
        template: d.template.clone(),
        channel: d.channel.clone(),
        recipient: d.recipient.clone(),
        user_id: d.user_id.clone(),
        endpoint_id: d.endpoint_id.clone(),
        subject: d.subject.clone(),
        status: d.status.clone(),
        attempts: d.attempts,
        next_attempt_at: (d.status == "queued").then(|| rfc3339(d.next_attempt_ms)),
        last_error: d.last_error.clone().filter(|_| detail),
        provider_message_id: d.provider_message_id.clone(),
        created_at: rfc3339(d.created_ms),
        updated_at: rfc3339(d.updated_ms),
        sent_at: d.sent_ms.map(rfc3339),
    }
}

#[derive(Serialize, ToSchema)]
pub struct AttemptView {
    pub attempt: i32,
    pub at: String,
    pub ok: bool,
    /// The answer's status and what failed; only for staff with `staff:manage`.
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

#[derive(Serialize, ToSchema)]
pub struct NotificationDetail {
    #[serde(flatten)]
    pub summary: NotificationView,
    /// The message as stored (secret links withheld); only for staff with `staff:manage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    pub attempt_log: Vec<AttemptView>,
}

/// Whether `who` may read what messages say, beyond to whom and about what:
/// mail carries sign-in links and guests' order links, keys to accounts.
fn reads_content(who: &Principal) -> bool {
    who.has(Permission::StaffManage)
}

/// Whether `who` may read why a delivery failed (status codes, connection
/// errors): for a webhook that is a scan of the network behind its address.
fn reads_failures(who: &Principal) -> bool {
    who.has(Permission::StaffManage)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NotificationQuery {
    pub status: Option<String>,
    pub channel: Option<String>,
    pub recipient: Option<String>,
    pub event_type: Option<String>,
    pub endpoint_id: Option<String>,
    pub limit: Option<u32>,
    pub starting_after: Option<String>,
}

/// Every message sent or to send, newest first, filtered.
#[utoipa::path(get, path = "/api/v1/admin/notifications", tag = "admin", params(NotificationQuery),
    responses((status = 200, body = Page<NotificationView>), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_notifications(State(n): State<Notify>, RequirePermission(who, ..): RequirePermission<perm::CustomersRead>, Query(q): Query<NotificationQuery>) -> Result<Json<Page<NotificationView>>, NotifyError> {
    let page = page_of(q.limit, q.starting_after)?;
    if q.status.as_deref().is_some_and(|s| !domain::STATUSES.contains(&s)) {
        return Err(invalid("status", "invalid_status", "queued, sent, failed or dead"));
    }
    if q.channel.as_deref().is_some_and(|c| Channel::parse(c).is_none()) {
        return Err(invalid("channel", "invalid_channel", "email, sms or webhook"));
    }
    let filter = store::DeliveryFilter {
        status: q.status.as_deref(),
        channel: q.channel.as_deref(),
        recipient: q.recipient.as_deref(),
        event_type: q.event_type.as_deref(),
        endpoint_id: q.endpoint_id.as_deref(),
        after: page.after.as_deref(),
        limit: page.limit,
    };
    let detail = reads_failures(&who);
    let rows: Vec<NotificationView> = store::deliveries(&n.db, &filter).await?.iter().map(|d| notification_view(d, detail)).collect();
    Ok(Json(Page::from_rows(rows, page.limit, |v| v.id.clone())))
}

async fn found_delivery(n: &Notify, id: &str) -> Result<Delivery, NotifyError> {
    NotificationId::parse(id).map_err(|_| NotifyError::NotFound("notification"))?;
    store::delivery(&n.db, id).await?.ok_or(NotifyError::NotFound("notification"))
}

/// One message with its content and every attempt.
#[utoipa::path(get, path = "/api/v1/admin/notifications/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = NotificationDetail), (status = 404, body = ErrorBody)))]
async fn get_notification(State(n): State<Notify>, RequirePermission(who, ..): RequirePermission<perm::CustomersRead>, Path(id): Path<String>) -> Result<Json<NotificationDetail>, NotifyError> {
    let d = found_delivery(&n, &id).await?;
    let detail = reads_failures(&who);
    let attempt_log = store::attempts(&n.db, &d.id)
        .await?
        .into_iter()
        .map(|a| AttemptView {
            attempt: a.attempt,
            at: rfc3339(a.at_ms),
            ok: a.ok,
            status_code: a.status_code.filter(|_| detail),
            error: a.error.filter(|_| detail),
            duration_ms: a.duration_ms,
        })
        .collect();
    let content = reads_content(&who);
    Ok(Json(NotificationDetail {
        summary: notification_view(&d, detail),
        body: content.then(|| d.body.clone()),
        html: d.html.clone().filter(|_| content),
        attempt_log,
    }))
}

/// Sends a failed or dead message again, with its retries afresh.
#[utoipa::path(post, path = "/api/v1/admin/notifications/{id}/retry", tag = "admin", params(("id" = String, Path)),
    responses((status = 202, body = NotificationView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn retry_notification(State(n): State<Notify>, RequirePermission(who, ..): RequirePermission<perm::CustomersWrite>, Path(id): Path<String>) -> Result<Response, NotifyError> {
    let d = found_delivery(&n, &id).await?;
    if d.secret.as_deref() == Some("") {
        return Err(NotifyError::Conflict("not_retryable", "this message carried a one-time link that is no longer kept; the customer can ask for a new one".into()));
    }
    let give_up = now_ms() + (n.config.notify.webhook_retry_secs as i64) * 1000;
    if !store::requeue(&n.db, &d.id, Some(give_up)).await? {
        return Err(NotifyError::Conflict("not_retryable", format!("only failed or dead messages are retried; this one is {}", d.status)));
    }
    n.wake();
    let d = found_delivery(&n, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(notification_view(&d, reads_failures(&who)))).into_response())
}

// The dev mailbox

#[derive(Serialize, ToSchema)]
pub struct MailView {
    pub id: String,
    pub notification_id: String,
    /// `email` or `sms`.
    pub channel: String,
    pub from: String,
    pub to: String,
    pub subject: String,
    /// What the recipient got; only for staff with `staff:manage` (the
    /// mailbox stands in for people's inboxes, links and all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[schema(value_type = Object)]
    pub headers: Value,
    pub received_at: String,
}

fn mail_view(m: Mail, content: bool) -> MailView {
    MailView {
        id: m.id,
        notification_id: m.delivery_id,
        channel: m.channel,
        from: m.sender,
        to: m.recipient,
        subject: m.subject,
        text: content.then_some(m.text),
        html: m.html.filter(|_| content),
        headers: serde_json::from_str(&m.headers).unwrap_or_else(|_| json!({})),
        received_at: rfc3339(m.created_ms),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MailboxQuery {
    /// Only messages to this address or number.
    pub to: Option<String>,
    /// `email` or `sms`.
    pub channel: Option<String>,
    pub limit: Option<u32>,
    pub starting_after: Option<String>,
}

/// Email and SMS that went to the dev mailbox (no provider configured), newest first.
#[utoipa::path(get, path = "/api/v1/admin/mailbox", tag = "admin", params(MailboxQuery),
    responses((status = 200, body = Page<MailView>), (status = 403, body = ErrorBody)))]
async fn list_mailbox(State(n): State<Notify>, RequirePermission(who, ..): RequirePermission<perm::CustomersRead>, Query(q): Query<MailboxQuery>) -> Result<Json<Page<MailView>>, NotifyError> {
    let page = page_of(q.limit, q.starting_after)?;
    let to = q.to.map(|t| t.trim().to_lowercase());
    let rows: Vec<MailView> = store::mails(&n.db, to.as_deref(), q.channel.as_deref(), page.after.as_deref(), page.limit)
        .await?
        .into_iter()
        .map(|m| mail_view(m, reads_content(&who)))
        .collect();
    Ok(Json(Page::from_rows(rows, page.limit, |m| m.id.clone())))
}

/// One message of the dev mailbox.
#[utoipa::path(get, path = "/api/v1/admin/mailbox/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = MailView), (status = 404, body = ErrorBody)))]
async fn get_mail(State(n): State<Notify>, RequirePermission(who, ..): RequirePermission<perm::CustomersRead>, Path(id): Path<String>) -> Result<Json<MailView>, NotifyError> {
    let mail = store::mail(&n.db, &id).await?.ok_or(NotifyError::NotFound("message"))?;
    Ok(Json(mail_view(mail, reads_content(&who))))
}

// Templates

#[derive(Serialize, ToSchema)]
pub struct TemplateView {
    /// `order.paid.email`: the event, then the channel.
    pub key: String,
    pub channel: &'static str,
    pub description: &'static str,
    pub subject: String,
    pub html: String,
    pub text: String,
    /// Whether staff changed it (else the shipped wording is used).
    pub customised: bool,
    pub updated_at: Option<String>,
    pub updated_by: Option<String>,
}

async fn template_view(n: &Notify, shipped: &templates::Shipped) -> Result<TemplateView, NotifyError> {
    let saved = store::template(&n.db, shipped.key).await?;
    let source = saved.as_ref().map(|s| s.source.clone()).unwrap_or_else(|| shipped.source());
    Ok(TemplateView {
        key: shipped.key.into(),
        channel: shipped.channel.as_str(),
        description: shipped.description,
        subject: source.subject,
        html: source.html,
        text: source.text,
        customised: saved.is_some(),
        updated_at: saved.as_ref().map(|s| rfc3339(s.updated_ms)),
        updated_by: saved.and_then(|s| s.updated_by),
    })
}

fn shipped_or_404(key: &str) -> Result<&'static templates::Shipped, NotifyError> {
    templates::shipped(key).ok_or(NotifyError::NotFound("template"))
}

/// Every message kind, with the wording in use.
#[utoipa::path(get, path = "/api/v1/admin/notification-templates", tag = "admin",
    responses((status = 200, body = Vec<TemplateView>), (status = 403, body = ErrorBody)))]
async fn list_templates(State(n): State<Notify>, _: RequirePermission<perm::SettingsWrite>) -> Result<Json<Vec<TemplateView>>, NotifyError> {
    let mut all = Vec::new();
    for t in templates::SHIPPED {
        all.push(template_view(&n, t).await?);
    }
    Ok(Json(all))
}

#[utoipa::path(get, path = "/api/v1/admin/notification-templates/{key}", tag = "admin", params(("key" = String, Path)),
    responses((status = 200, body = TemplateView), (status = 404, body = ErrorBody)))]
async fn get_template(State(n): State<Notify>, _: RequirePermission<perm::SettingsWrite>, Path(key): Path<String>) -> Result<Json<TemplateView>, NotifyError> {
    Ok(Json(template_view(&n, shipped_or_404(&key)?).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    /// Email only.
    #[serde(default)]
    pub subject: String,
    /// Email only; auto-escaped. Empty sends plain text only.
    #[serde(default)]
    pub html: String,
    pub text: String,
}

fn checked(shipped: &templates::Shipped, body: TemplateBody, n: &Notify) -> Result<(Source, templates::Rendered), NotifyError> {
    let source = Source { subject: body.subject, html: body.html, text: body.text };
    if shipped.channel == Channel::Sms && !(source.subject.is_empty() && source.html.is_empty()) {
        return Err(invalid("subject", "not_for_sms", "an SMS has text only"));
    }
    for (field, value) in [("subject", &source.subject), ("html", &source.html), ("text", &source.text)] {
        if value.len() > 100_000 {
            return Err(invalid(field, "too_long", "at most 100 000 characters"));
        }
    }
    let sample = templates::sample_context(shipped.key, &n.config.notify.shop_name, &n.shop_url());
    let rendered = templates::render(&source, shipped.channel, &sample)?;
    Ok((source, rendered))
}

/// Saves staff's wording, once it renders with sample data.
#[utoipa::path(put, path = "/api/v1/admin/notification-templates/{key}", tag = "admin", params(("key" = String, Path)), request_body = TemplateBody,
    responses((status = 200, body = TemplateView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn put_template(State(n): State<Notify>, RequirePermission(who, ..): RequirePermission<perm::SettingsWrite>, Path(key): Path<String>, Json(b): Json<TemplateBody>) -> Result<Json<TemplateView>, NotifyError> {
    let shipped = shipped_or_404(&key)?;
    let (source, _) = checked(shipped, b, &n)?;
    store::save_template(&n.db, shipped.key, &source, &who.user_id.to_string()).await?;
    Ok(Json(template_view(&n, shipped).await?))
}

/// Goes back to the shipped wording.
#[utoipa::path(delete, path = "/api/v1/admin/notification-templates/{key}", tag = "admin", params(("key" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn reset_template(State(n): State<Notify>, _: RequirePermission<perm::SettingsWrite>, Path(key): Path<String>) -> Result<StatusCode, NotifyError> {
    let shipped = shipped_or_404(&key)?;
    store::delete_template(&n.db, shipped.key).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct Preview {
    pub subject: String,
    pub text: String,
    /// The full email as sent, in the shop's layout.
    pub html: Option<String>,
}

/// Renders wording (the body given, or the one in use) with sample data.
#[utoipa::path(post, path = "/api/v1/admin/notification-templates/{key}/preview", tag = "admin", params(("key" = String, Path)), request_body = Option<TemplateBody>,
    responses((status = 200, body = Preview), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn preview_template(State(n): State<Notify>, _: RequirePermission<perm::SettingsWrite>, Path(key): Path<String>, body: axum::body::Bytes) -> Result<Response, NotifyError> {
    let shipped = shipped_or_404(&key)?;
    let body = match body.is_empty() {
        false => match platform::http::parse_json::<TemplateBody>(&body) {
            Ok(b) => b,
            Err(e) => return Ok(e.into_response()),
        },
        true => {
            let s = n.source(&key).await?.unwrap_or_else(|| shipped.source());
            TemplateBody { subject: s.subject, html: s.html, text: s.text }
        }
    };
    let (_, r) = checked(shipped, body, &n)?;
    let html = r.html.map(|h| templates::layout(&n.config.notify.shop_name, &h, None));
    Ok(Json(Preview { subject: r.subject, text: r.text, html }).into_response())
}

// Webhook endpoints

#[derive(Serialize, ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub description: String,
    /// `*`, `order.*` or event types.
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// Why it was switched off, when it was.
    pub disabled_reason: Option<String>,
    /// Signs every delivery (`Emporium-Signature`); shown to staff with `settings:write`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub last_success_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

fn webhook_view(e: &Endpoint, with_secret: bool) -> WebhookView {
    WebhookView {
        id: e.id.clone(),
        url: e.url.clone(),
        description: e.description.clone(),
        event_types: e.event_types.clone(),
        enabled: e.enabled,
        disabled_reason: e.disabled_reason.clone(),
        secret: with_secret.then(|| e.secret.clone()),
        last_success_at: e.last_success_ms.map(rfc3339),
        created_at: rfc3339(e.created_ms),
        updated_at: rfc3339(e.updated_ms),
    }
}

fn check_url(url: &str, allow_private: bool) -> Result<String, NotifyError> {
    let url = url.trim();
    if !domain::valid_endpoint_url(url) {
        return Err(invalid("url", "invalid_url", "an absolute http(s) address without credentials"));
    }
    // Checked again, address by address, whenever a delivery connects.
    if !allow_private && let Some(why) = domain::endpoint_host_refused(url) {
        return Err(invalid("url", "private_address", why));
    }
    Ok(url.to_owned())
}

fn check_types(types: &[String]) -> Result<Vec<String>, NotifyError> {
    if types.is_empty() || types.len() > 50 {
        return Err(invalid("event_types", "invalid_event_types", "1 to 50 event types, `area.*` or `*`"));
    }
    for (i, t) in types.iter().enumerate() {
        if !domain::valid_event_pattern(t) {
            return Err(invalid(format!("event_types[{i}]"), "unknown_event_type", format!("`{t}` is not an event type, `area.*` or `*`")));
        }
    }
    let mut types = types.to_vec();
    types.sort();
    types.dedup();
    Ok(types)
}

fn check_description(d: Option<String>) -> Result<String, NotifyError> {
    let d = d.unwrap_or_default().trim().to_owned();
    if d.chars().count() > 500 {
        return Err(invalid("description", "too_long", "at most 500 characters"));
    }
    Ok(d)
}

fn new_secret() -> Result<String, NotifyError> {
    Ok(format!("whsec_{}", domain::random_hex(24).map_err(|e| NotifyError::Conflict("no_randomness", e.0.into()))?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    pub url: String,
    pub event_types: Vec<String>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

#[utoipa::path(get, path = "/api/v1/admin/webhooks", tag = "admin",
    responses((status = 200, body = Vec<WebhookView>), (status = 403, body = ErrorBody)))]
async fn list_webhooks(State(n): State<Notify>, _: RequirePermission<perm::SettingsWrite>) -> Result<Json<Vec<WebhookView>>, NotifyError> {
    Ok(Json(store::endpoints(&n.db, false).await?.iter().map(|e| webhook_view(e, false)).collect()))
}

/// Registers an endpoint; the answer holds its signing secret.
#[utoipa::path(post, path = "/api/v1/admin/webhooks", tag = "admin", request_body = NewWebhook,
    responses((status = 201, body = WebhookView), (status = 422, body = ErrorBody)))]
async fn create_webhook(State(n): State<Notify>, _: RequirePermission<perm::SettingsWrite>, Json(b): Json<NewWebhook>) -> Result<Response, NotifyError> {
    let now = now_ms();
    let e = Endpoint {
        id: WebhookId::new().to_string(),
        url: check_url(&b.url, n.config.notify.webhooks_allow_private)?,
        description: check_description(b.description)?,
        secret: new_secret()?,
        event_types: check_types(&b.event_types)?,
        enabled: b.enabled.unwrap_or(true),
        disabled_reason: None,
        last_success_ms: None,
        created_ms: now,
        updated_ms: now,
    };
    let mut tx = n.db.begin().await?;
    store::save_endpoint(&mut tx, &e).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(webhook_view(&e, true))).into_response())
}

async fn found_endpoint(n: &Notify, id: &str) -> Result<Endpoint, NotifyError> {
    WebhookId::parse(id).map_err(|_| NotifyError::NotFound("webhook endpoint"))?;
    store::endpoint(&n.db, id).await?.ok_or(NotifyError::NotFound("webhook endpoint"))
}

#[utoipa::path(get, path = "/api/v1/admin/webhooks/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = WebhookView), (status = 404, body = ErrorBody)))]
async fn get_webhook(State(n): State<Notify>, _: RequirePermission<perm::SettingsWrite>, Path(id): Path<String>) -> Result<Json<WebhookView>, NotifyError> {
    Ok(Json(webhook_view(&found_endpoint(&n, &id).await?, true)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookChange {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub description: Option<String>,
    /// Switching an endpoint on again clears why it was switched off.
    pub enabled: Option<bool>,
    /// Issues a new signing secret (the old one stops working at once).
    pub rotate_secret: Option<bool>,
}

#[utoipa::path(patch, path = "/api/v1/admin/webhooks/{id}", tag = "admin", params(("id" = String, Path)), request_body = WebhookChange,
    responses((status = 200, body = WebhookView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_webhook(State(n): State<Notify>, _: RequirePermission<perm::SettingsWrite>, Path(id): Path<String>, Json(b): Json<WebhookChange>) -> Result<Json<WebhookView>, NotifyError> {
    let mut e = found_endpoint(&n, &id).await?;
    if let Some(url) = &b.url {
        e.url = check_url(url, n.config.notify.webhooks_allow_private)?;
    }
    if let Some(types) = &b.event_types {
        e.event_types = check_types(types)?;
    }
    if b.description.is_some() {
        e.description = check_description(b.description)?;
    }
    if let Some(enabled) = b.enabled {
        if enabled && !e.enabled {
            e.disabled_reason = None;
        }
        e.enabled = enabled;
    }
    if b.rotate_secret == Some(true) {
        e.secret = new_secret()?;
    }
    e.updated_ms = now_ms();
    let mut tx = n.db.begin().await?;
    store::save_endpoint(&mut tx, &e).await?;
    if !e.enabled {
        store::bury_endpoint_queue(&mut tx, &e.id, "the endpoint was switched off").await?;
    }
    tx.commit().await?;
    Ok(Json(webhook_view(&e, true)))
}

#[utoipa::path(delete, path = "/api/v1/admin/webhooks/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_webhook(State(n): State<Notify>, _: RequirePermission<perm::SettingsWrite>, Path(id): Path<String>) -> Result<StatusCode, NotifyError> {
    let e = found_endpoint(&n, &id).await?;
    let mut tx = n.db.begin().await?;
    store::bury_endpoint_queue(&mut tx, &e.id, "the endpoint was deleted").await?;
    store::delete_endpoint(&mut tx, &e.id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Only whether it arrived: what the other side answered, or why nothing
/// did, would make this a probe of whatever the URL points at.
#[derive(Serialize, ToSchema)]
pub struct TestDelivery {
    /// Whether the endpoint answered 2xx.
    pub ok: bool,
    /// `delivered` or `failed`.
    pub result: &'static str,
}

/// Sends a signed `webhook.test` event to the endpoint now and says whether it was delivered (logged, not retried).
#[utoipa::path(post, path = "/api/v1/admin/webhooks/{id}/test", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = TestDelivery), (status = 404, body = ErrorBody)))]
async fn test_webhook(State(n): State<Notify>, _: RequirePermission<perm::SettingsWrite>, Path(id): Path<String>) -> Result<Json<TestDelivery>, NotifyError> {
    let e = found_endpoint(&n, &id).await?;
    let event = Envelope::new("webhook.test", &e.id, json!({"endpoint_id": e.id, "message": "A test delivery from the shop"}));
    let body = serde_json::to_string(&event).map_err(|err| platform::db::DbError::Corrupt(err.to_string()))?;
    // A test is never retried: its deadline is now, and it is sent here, not by the queue.
    let mut delivery = NewDelivery::webhook(&event, &e, body, now_ms());
    delivery.dedupe_key = format!("test:{}", delivery.id);
    delivery.lease_until_ms = now_ms() + 60_000;
    let ok = n.send_now(&delivery).await?.is_ok();
    Ok(Json(TestDelivery { ok, result: if ok { "delivered" } else { "failed" } }))
}
