//! What notify does when events arrive: keep its contact book, work out who
//! hears what by which channel, render it, and queue it, all in the
//! transaction that marks the event handled (so a redelivered event queues
//! nothing twice). Sending is the sender's business, never the consumer's.

use async_trait::async_trait;
use kernel::Envelope;
use kernel::id::NotificationId;
use platform::bus::{EventHandler, HandlerError};
use platform::db::now_ms;
use platform::outbox;
use serde_json::{Value, json};

use crate::domain::{self, Channel, Topic};
use crate::error::NotifyError;
use crate::store::{self, Contact, NewDelivery};
use crate::templates;
use crate::{NAME, Notify};

pub struct Consumer {
    pub notify: Notify,
}

#[async_trait]
impl EventHandler for Consumer {
    fn consumer(&self) -> &str {
        NAME
    }

    /// Merchants' webhooks may want any event.
    fn interested_in(&self, _event_type: &str) -> bool {
        true
    }

    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        self.notify.on_event(event).await.map_err(|e| Box::new(e) as HandlerError)
    }
}

/// A change to notify's own tables that goes with an event.
enum Effect {
    Contact(Contact, Vec<String>, bool),
    Order { id: String, number: i64, email: Option<String>, user_id: Option<String>, lookup: Option<String>, data: String },
    LowStock { sku: String, product_id: String, title: String, available: i64 },
    AlertSent(String),
    /// The order was paid or cancelled: its untried "order received" messages are no longer wanted.
    Settled { order_id: String, number: i64 },
    Erase { user_id: String, email: Option<String> },
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned).filter(|s| !s.is_empty())
}

fn day_of(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms / 1000).map(|t| t.date().to_string()).unwrap_or_default()
}

impl Notify {
    pub async fn on_event(&self, event: &Envelope) -> Result<(), NotifyError> {
        // Everything is read and rendered before the transaction: on SQLite
        // it holds the only write lock and must not wait for a connection.
        let (effects, messages) = self.plan(event).await?;
        let Some(mut tx) = outbox::begin_once(&self.db, NAME, &event.id).await? else { return Ok(()) };
        for effect in &effects {
            match effect {
                Effect::Contact(c, permissions, disabled) => store::upsert_contact(&mut tx, c, permissions, *disabled).await?,
                Effect::Order { id, number, email, user_id, lookup, data } => {
                    store::save_order(&mut tx, id, *number, email.as_deref(), user_id.as_deref(), lookup.as_deref(), data).await?
                }
                Effect::LowStock { sku, product_id, title, available } => {
                    store::note_low_stock(&mut tx, sku, &day_of(event.occurred_at.unix_timestamp() * 1000), product_id, title, *available)
                        .await?;
                }
                Effect::AlertSent(id) => store::mark_alert_sent(&mut tx, id).await?,
                Effect::Settled { order_id, number } => {
                    store::settle_order(&mut tx, order_id, *number).await?;
                    store::supersede(&mut tx, &placed_prefix(order_id)).await?;
                }
                Effect::Erase { user_id, email } => {
                    store::erase_user(&mut tx, user_id, email.as_deref()).await?;
                }
            }
        }
        for m in &messages {
            store::insert_delivery(&mut tx, m).await?;
        }
        tx.commit().await?;
        if !messages.is_empty() {
            self.wake();
        }
        Ok(())
    }

    async fn plan(&self, event: &Envelope) -> Result<(Vec<Effect>, Vec<NewDelivery>), NotifyError> {
        let data = &event.data;
        let mut effects = Vec::new();
        let mut messages = Vec::new();
        let kind = event.event_type.as_str();
        match kind {
            "user.registered" | "user.updated" => {
                if let (Some(user_id), Some(email)) = (text(data, "user_id"), text(data, "email")) {
                    let contact = Contact { user_id, email, name: text(data, "name").unwrap_or_default(), phone: text(data, "phone") };
                    let permissions = data
                        .get("permissions")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(|p| p.as_str().map(str::to_owned)).collect())
                        .unwrap_or_default();
                    let disabled = data.get("disabled").and_then(Value::as_bool).unwrap_or(false);
                    effects.push(Effect::Contact(contact, permissions, disabled));
                }
            }
            "user.email_verification_requested" | "user.password_reset_requested" => {
                if let Some(email) = text(data, "email") {
                    let expires = data.get("expires_at_ms").and_then(Value::as_i64).unwrap_or(0);
                    let left_ms = expires - event.occurred_at.unix_timestamp() * 1000;
                    let ctx = json!({"shop": self.shop(), "user": {"name": text(data, "name").unwrap_or_default(), "email": email},
                        "url": text(data, "url").unwrap_or_default(), "expires_in_hours": ((left_ms + 3_599_999) / 3_600_000).max(1)});
                    let key = format!("{kind}.email");
                    let dedupe = format!("{}:{key}", event.id);
                    messages.extend(self.compose(&key, &ctx, &email, text(data, "user_id").as_deref(), dedupe, Some(event), kind, None).await?);
                }
            }
            // Security notices to an account's owner: its address was used by
            // someone else, or the account moved to another address.
            "user.email_reuse_attempted" | "user.email_changed" => {
                let to = if kind == "user.email_changed" { text(data, "old_email") } else { text(data, "email") };
                if let Some(email) = to {
                    let shop = self.shop_url();
                    let ctx = json!({"shop": self.shop(), "user": {"name": text(data, "name").unwrap_or_default(), "email": email},
                        "attempt": text(data, "attempt").unwrap_or_default(), "new_email": text(data, "new_email").unwrap_or_default(),
                        "sign_in_url": format!("{shop}/account/sign-in"), "reset_url": format!("{shop}/account/forgot-password")});
                    let key = format!("{kind}.email");
                    let dedupe = format!("{}:{key}", event.id);
                    messages.extend(self.compose(&key, &ctx, &email, text(data, "user_id").as_deref(), dedupe, Some(event), kind, None).await?);
                }
            }
            "user.deleted" => {
                let user_id = text(data, "user_id").unwrap_or_else(|| event.aggregate_id.clone());
                let email = store::contact(&self.db, &user_id).await?.map(|c| c.email);
                effects.push(Effect::Erase { user_id, email });
            }
            "order.placed" | "order.paid" | "order.fulfilled" | "order.cancelled" | "order.refunded" => {
                self.plan_order(event, &mut effects, &mut messages).await?;
            }
            "inventory.low_stock" => {
                if let Some(sku) = text(data, "sku") {
                    let title = match (text(data, "title"), text(data, "variant_title")) {
                        (Some(t), Some(v)) => format!("{t} — {v}"),
                        (Some(t), None) => t,
                        _ => sku.clone(),
                    };
                    effects.push(Effect::LowStock {
                        sku,
                        product_id: text(data, "product_id").unwrap_or_default(),
                        title,
                        available: data.get("available").and_then(Value::as_i64).unwrap_or(0),
                    });
                }
            }
            "inventory.back_in_stock" => {
                if let (Some(sku), Some(product)) = (text(data, "sku"), text(data, "product_id")) {
                    for alert in store::waiting_alerts(&self.db, &product, &sku).await? {
                        let url = format!("{}/products/{}", self.shop_url(), if alert.slug.is_empty() { &alert.product_id } else { &alert.slug });
                        let ctx = json!({"shop": self.shop(), "product": {"title": alert.title, "url": url, "sku": sku}});
                        let unsubscribe = self.unsubscribe_url(Topic::StockAlerts, &alert.email);
                        let dedupe = format!("{}:back_in_stock:{}", event.id, alert.id);
                        messages.extend(
                            self.compose("inventory.back_in_stock.email", &ctx, &alert.email, alert.user_id.as_deref(), dedupe, Some(event), kind, Some(unsubscribe))
                                .await?,
                        );
                        effects.push(Effect::AlertSent(alert.id));
                    }
                }
            }
            _ => {}
        }
        messages.extend(self.plan_webhooks(event).await?);
        Ok((effects, messages))
    }

    async fn plan_order(&self, event: &Envelope, effects: &mut Vec<Effect>, messages: &mut Vec<NewDelivery>) -> Result<(), NotifyError> {
        let data = &event.data;
        let kind = event.event_type.as_str();
        let order_id = text(data, "order_id").unwrap_or_else(|| event.aggregate_id.clone());
        let number = data.get("number").and_then(Value::as_i64).unwrap_or(0);
        let facts = store::order_facts(&self.db, &order_id).await?;
        let placed: Value = match (&facts, kind) {
            (_, "order.placed") => data.clone(),
            (Some((_, placed)), _) => serde_json::from_str(placed).unwrap_or_default(),
            (None, _) => Value::Null,
        };
        // A guest's lookup token is kept only sealed, and only for the links of the order's messages.
        let lookup = text(data, "lookup_token").or_else(|| facts.as_ref().and_then(|f| f.0.as_deref()).and_then(|s| domain::unseal(&self.key, s)));
        let email = text(data, "email").or_else(|| text(&placed, "email"));
        let user_id = text(data, "user_id").or_else(|| text(&placed, "user_id"));
        if kind == "order.placed" {
            let sealed = lookup.as_deref().map(|l| domain::seal(&self.key, l)).transpose().map_err(|e| NotifyError::Secret(e.0.to_owned()))?;
            let mut kept = data.clone();
            if let Value::Object(map) = &mut kept {
                map.remove("lookup_token");
            }
            effects.push(Effect::Order {
                id: order_id.clone(),
                number,
                email: email.clone(),
                user_id: user_id.clone(),
                lookup: sealed,
                data: kept.to_string(),
            });
        }
        // The storefront's order page: a signed-in customer's session shows it, a guest's link carries the token.
        let url = match (&user_id, &lookup) {
            (None, Some(token)) => format!("{}/orders/{order_id}?token={token}", self.shop_url()),
            _ => format!("{}/orders/{order_id}", self.shop_url()),
        };
        let mut ctx = json!({"shop": self.shop(), "order": order_context(&order_id, number, &url, data, &placed)});
        match kind {
            "order.fulfilled" => {
                ctx["fulfilment"] = json!({"carrier": text(data, "carrier"), "tracking_number": text(data, "tracking_number"),
                    "tracking_url": text(data, "tracking_url"), "complete": data.get("complete").and_then(Value::as_bool).unwrap_or(true)});
            }
            "order.cancelled" => {
                let currency = text(data, "currency").unwrap_or_default();
                let refunded = data.get("refunded").and_then(Value::as_i64).filter(|r| *r > 0).map(|r| domain::format_money(r, &currency));
                ctx["cancellation"] = json!({"reason": text(data, "reason"), "refunded": refunded});
            }
            "order.refunded" => {
                let currency = text(data, "currency").unwrap_or_default();
                let money = |k: &str| domain::format_money(data.get(k).and_then(Value::as_i64).unwrap_or(0), &currency);
                ctx["refund"] = json!({"amount": money("amount"), "reason": text(data, "reason"), "total_refunded": money("total_refunded")});
            }
            _ => {}
        }
        // "Order received" waits, and goes only if nothing settled the order
        // meanwhile: the receipt or the cancellation says more.
        let (send_at, dedupe_of) = match kind {
            "order.placed" => {
                if store::order_settled(&self.db, &order_id).await? {
                    return Ok(());
                }
                let delay = (self.config.notify.order_placed_delay_secs as i64) * 1000;
                (now_ms() + delay, placed_prefix(&order_id))
            }
            _ => (0, format!("{}:", event.id)),
        };
        if matches!(kind, "order.paid" | "order.cancelled") {
            effects.push(Effect::Settled { order_id: order_id.clone(), number });
        }
        let mut queue = |m: Option<NewDelivery>| {
            messages.extend(m.map(|m| NewDelivery { send_at_ms: send_at, ..m }));
        };
        if let Some(email) = &email {
            let key = format!("{kind}.email");
            let dedupe = format!("{dedupe_of}{key}");
            queue(self.compose(&key, &ctx, email, user_id.as_deref(), dedupe, Some(event), kind, None).await?);
        }
        let sms_key = format!("{kind}.sms");
        if templates::shipped(&sms_key).is_some()
            && let Some(user) = &user_id
            && let Some(prefs) = store::preferences(&self.db, user).await?
            && prefs.order_sms
            && let Some(phone) = prefs.phone
        {
            let dedupe = format!("{dedupe_of}{sms_key}");
            queue(self.compose(&sms_key, &ctx, &phone, Some(user), dedupe, Some(event), kind, None).await?);
        }
        Ok(())
    }

    async fn plan_webhooks(&self, event: &Envelope) -> Result<Vec<NewDelivery>, NotifyError> {
        let Some(public) = domain::public_event(event) else { return Ok(Vec::new()) };
        let endpoints = store::endpoints(&self.db, true).await?;
        let body = serde_json::to_string(&public).map_err(|e| platform::db::DbError::Corrupt(e.to_string()))?;
        let give_up = now_ms() + (self.config.notify.webhook_retry_secs as i64) * 1000;
        Ok(endpoints
            .into_iter()
            .filter(|e| e.event_types.iter().any(|p| event.matches(p)))
            .map(|e| NewDelivery::webhook(&public, &e, body.clone(), give_up))
            .collect())
    }

    /// Renders template `key` for one recipient into a delivery. A staff
    /// template that fails on real data falls back to the shipped one (and
    /// says so in the log); `None` when nothing renders.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn compose(
        &self,
        key: &str,
        ctx: &Value,
        recipient: &str,
        user_id: Option<&str>,
        dedupe_key: String,
        event: Option<&Envelope>,
        event_type: &str,
        unsubscribe_url: Option<String>,
    ) -> Result<Option<NewDelivery>, NotifyError> {
        let Some(shipped) = templates::shipped(key) else { return Ok(None) };
        let source = self.source(key).await?.unwrap_or_else(|| shipped.source());
        // Secret links (a reset, a guest's order) are rendered as words the
        // log may show; the links wait sealed for the sender to put back.
        let mut ctx = ctx.clone();
        let links = domain::withhold_links(&mut ctx);
        let secret = match links.is_empty() {
            true => None,
            false => {
                let links = serde_json::to_string(&links).map_err(|e| NotifyError::Secret(e.to_string()))?;
                Some(domain::seal(&self.key, &links).map_err(|e| NotifyError::Secret(e.0.to_owned()))?)
            }
        };
        let ctx = &ctx;
        let rendered = match templates::render(&source, shipped.channel, ctx) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(template = key, error = %e, "a saved template does not render; sending the shipped one");
                match templates::render(&shipped.source(), shipped.channel, ctx) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(template = key, error = %e, "cannot render a message; it is not sent");
                        return Ok(None);
                    }
                }
            }
        };
        let shop_name = &self.config.notify.shop_name;
        let html = rendered.html.map(|h| templates::layout(shop_name, &h, unsubscribe_url.as_deref()));
        let body = if shipped.channel == Channel::Email {
            templates::text_footer(&rendered.text, unsubscribe_url.as_deref())
        } else {
            rendered.text
        };
        Ok(Some(NewDelivery {
            id: NotificationId::new().to_string(),
            dedupe_key,
            event_id: event.map(|e| e.id.to_string()),
            event_type: event_type.to_owned(),
            template: Some(key.to_owned()),
            channel: shipped.channel.as_str(),
            recipient: recipient.to_owned(),
            user_id: user_id.map(str::to_owned),
            endpoint_id: None,
            subject: rendered.subject,
            body,
            html,
            unsubscribe_url,
            give_up_ms: None,
            lease_until_ms: 0,
            send_at_ms: 0,
            secret,
        }))
    }
}

/// The dedupe keys of an order's "order received" messages start with this.
fn placed_prefix(order_id: &str) -> String {
    format!("placed:{order_id}:")
}

/// The `order` of a message's context, from the event and what
/// `order.placed` said (lines and totals as people read them).
fn order_context(order_id: &str, number: i64, url: &str, data: &Value, placed: &Value) -> Value {
    let pick = |k: &str| data.get(k).filter(|v| !v.is_null()).or_else(|| placed.get(k).filter(|v| !v.is_null())).cloned();
    let currency = pick("currency").and_then(|c| c.as_str().map(str::to_owned)).unwrap_or_default();
    let money = |k: &str| pick(k).and_then(|v| v.as_i64()).map(|a| domain::format_money(a, &currency));
    let lines: Vec<Value> = pick("lines")
        .and_then(|l| l.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|l| {
            let quantity = l.get("quantity").and_then(Value::as_i64).unwrap_or(0);
            let unit_price = l.get("unit_price").and_then(Value::as_i64).unwrap_or(0);
            // The line as priced: discounts and tax are shown once, under the lines.
            json!({"title": text(l, "title").unwrap_or_default(), "variant_title": text(l, "variant_title").unwrap_or_default(),
                   "sku": text(l, "sku").unwrap_or_default(), "quantity": quantity,
                   "unit_price": domain::format_money(unit_price, &currency),
                   "total": domain::format_money(unit_price.saturating_mul(quantity), &currency)})
        })
        .collect();
    let address = pick("shipping_address").map(|a| {
        ["name", "line1", "line2", "postal_code", "city", "region", "country"]
            .iter()
            .filter_map(|k| text(&a, k))
            .collect::<Vec<_>>()
            .join(", ")
    });
    let discount = pick("discount").and_then(|d| d.as_i64()).unwrap_or(0);
    json!({
        "id": order_id, "number": number, "url": url, "email": pick("email"), "lines": lines,
        "subtotal": money("subtotal"), "discount": money("discount"), "has_discount": discount > 0,
        "shipping": money("shipping"), "tax": money("tax"), "total": money("total"),
        "shipping_address": address.filter(|a| !a.is_empty()),
    })
}
