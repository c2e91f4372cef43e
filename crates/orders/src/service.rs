//! Turning a cart into a paid order and following it to the door: checkout
//! (reserve → order → authorise → paid → commit), payment retries,
//! cancellation, fulfilment, refunds and returns, and the reconciler that
//! finishes or rolls back whatever a crash interrupted. Every step that
//! talks to another system is idempotent, so repeating it is always safe.

use std::sync::Arc;
use std::time::Duration;

use kernel::Envelope;
use kernel::config::{Config, OrdersConfig};
use kernel::id::{FulfilmentId, OrderId, RefundId, ReturnId};
use platform::db::{Db, now_ms};
use platform::fault;
use platform::outbox;
use platform::service::Ports;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::carts::{Access, Priced, hash_secret, new_secret};
use crate::domain::{self, Status};
use crate::error::OrdersError;
use crate::gateway::{Charge, GatewayError, Outcome, PaymentGateway, TestGateway};
use crate::store::{self, IntentRow, LineCount, LineRow, OrderRow, PaymentRow, RefundRow, UseOutcome};
use crate::{CatalogPort, PortError};

/// The orders service's state, shared by routes and background work.
#[derive(Clone)]
pub struct Orders {
    pub(crate) db: Db,
    pub(crate) ports: Ports,
    pub(crate) settings: Arc<OrdersConfig>,
    pub(crate) gateways: Arc<Vec<Arc<dyn PaymentGateway>>>,
    pub(crate) test_gateway: TestGateway,
    /// Signed-in customers must have verified their email to check out.
    pub(crate) require_verified_email: bool,
    /// Discount-code attempts per cart, carts per client address.
    pub(crate) limits: platform::limit::Limits,
    pub(crate) limit_settings: Arc<kernel::config::LimitsConfig>,
}

/// One unit count per SKU of an order, as staff and customers send them.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemCount {
    pub sku: String,
    pub quantity: i64,
}

/// What a checkout answered.
pub struct Placed {
    pub order: OrderRow,
    /// The order's lines, payments and the rest, as this request wrote
    /// them; `None` when they are to be read.
    pub parts: Option<OrderParts>,
    /// Shown once, to reach a guest order (and in the receipt email).
    pub lookup_token: Option<String>,
    /// The shopper must confirm the payment here first.
    pub next_action: Option<String>,
}

/// What an order's view shows beside the order's row.
#[derive(Debug, Default)]
pub struct OrderParts {
    pub lines: Vec<LineRow>,
    pub payments: Vec<PaymentRow>,
    pub fulfilments: Vec<store::FulfilmentRow>,
    pub refunds: Vec<store::RefundRow>,
    pub returns: Vec<store::ReturnRow>,
    pub timeline: Vec<store::TimelineRow>,
}

impl OrderParts {
    pub async fn read(db: &Db, order: &str) -> Result<OrderParts, platform::db::DbError> {
        Ok(OrderParts {
            lines: store::lines(db, order).await?,
            payments: store::payments(db, order).await?,
            fulfilments: store::fulfilments(db, order).await?,
            refunds: store::refunds(db, order).await?,
            returns: store::returns_of(db, order).await?,
            timeline: store::timeline(db, order).await?,
        })
    }
}

/// What recording a gateway's answer left: the confirmation URL when the
/// shopper must act, and the order and payment as this request wrote them
/// with the timeline entries it added (`None` when another request had
/// recorded the answer first).
pub(crate) struct Applied {
    pub next_action: Option<String>,
    pub written: Option<(OrderRow, PaymentRow, Vec<store::TimelineRow>)>,
}

/// An order's line as its events carry it.
fn event_line(l: &LineRow) -> serde_json::Value {
    json!({"sku": l.sku, "product_id": l.product_id, "title": l.title, "variant_title": l.variant_title,
           "quantity": l.quantity, "unit_price": l.unit_price, "total": l.total})
}

fn reservation_key(order: &str, attempt: i64) -> String {
    if attempt <= 1 { order.to_owned() } else { format!("{order}-{attempt}") }
}

fn capture_now(mode: &str) -> bool {
    mode == "on_authorise"
}

/// What a checkout reserves, as its intent records it.
fn lines_json(lines: &[(String, i64)]) -> String {
    serde_json::to_string(lines).unwrap_or_default()
}

/// The answer to a checkout whose intent the reconciler claimed while it
/// was still running (it took longer than `orders.reconcile_after_secs`
/// between holding the stock and writing the order): nothing was written
/// and the stock goes back, so the same request may simply be sent again.
fn given_up() -> OrdersError {
    OrdersError::Catalog("the checkout took too long and the stock it held was given back; try again".into())
}

/// Every key a "once per customer" code is counted against: the account
/// (or an order's recorded key) and the mailbox of the email, so neither a
/// new account nor a guest checkout with an alias of the address gives a
/// second use.
fn customer_keys(account: Option<&str>, email: Option<&str>) -> Vec<String> {
    let mut keys: Vec<String> = account.filter(|k| !k.is_empty()).map(str::to_owned).into_iter().collect();
    if let Some(mailbox) = email.map(kernel::email::mailbox_key).filter(|k| !k.is_empty() && !keys.contains(k)) {
        keys.push(mailbox);
    }
    keys
}

impl Orders {
    pub fn new(db: Db, ports: Ports, config: &Config) -> Result<Orders, GatewayError> {
        let test_gateway = TestGateway::new(db.clone(), config.public_url())?;
        let mut gateways: Vec<Arc<dyn PaymentGateway>> = Vec::new();
        // Never by default: a shop without Stripe takes no payments rather
        // than make-believe ones (`--demo` turns them on).
        if config.orders.test_payments == Some(true) {
            gateways.push(Arc::new(test_gateway.clone()));
        }
        if let Some(key) = &config.orders.stripe_secret_key {
            gateways.push(Arc::new(crate::stripe::StripeGateway::new(
                key.clone(),
                config.orders.stripe_webhook_secret.clone(),
                config.orders.stripe_api_base.clone(),
            )?));
        }
        let limits = platform::limit::Limits::from_ports(&ports);
        Ok(Orders {
            db,
            ports,
            settings: Arc::new(config.orders.clone()),
            gateways: Arc::new(gateways),
            test_gateway,
            require_verified_email: config.auth.require_verified_email,
            limits,
            limit_settings: Arc::new(config.limits.clone()),
        })
    }

    pub(crate) fn catalog(&self) -> Result<Arc<dyn CatalogPort>, OrdersError> {
        self.ports
            .get::<dyn CatalogPort>()
            .ok_or_else(|| OrdersError::Catalog("no catalog in this process and catalog.url is unset".into()))
    }

    pub fn stripe_publishable_key(&self) -> Option<String> {
        self.settings.stripe_publishable_key.clone()
    }

    pub(crate) fn gateway(&self, name: &str) -> Result<Arc<dyn PaymentGateway>, OrdersError> {
        self.gateways.iter().find(|g| g.name() == name).cloned().ok_or_else(|| OrdersError::UnknownProvider(name.to_owned()))
    }

    pub fn providers(&self) -> Vec<&'static str> {
        self.gateways.iter().map(|g| g.name()).collect()
    }

    // Checkout

    /// Checks a priced cart can become an order; a price the shopper has
    /// not seen is acknowledged (so the next try goes through) and refused.
    async fn ready(&self, priced: &Priced) -> Result<(), OrdersError> {
        if priced.items.is_empty() {
            return Err(OrdersError::EmptyCart);
        }
        for item in &priced.items {
            let sku = &item.item.sku;
            let offer = item.offer.as_ref().ok_or_else(|| OrdersError::UnknownSku(sku.clone()))?;
            if !offer.purchasable {
                return Err(OrdersError::NotPurchasable(sku.clone()));
            }
            if item.price.is_none() {
                return Err(OrdersError::NoPrice(sku.clone()));
            }
        }
        let changed: Vec<(String, Option<i64>)> = priced
            .items
            .iter()
            .filter(|i| i.item.seen_price.is_some() && i.item.seen_price != i.price)
            .map(|i| (i.item.sku.clone(), i.price))
            .collect();
        if !changed.is_empty() {
            store::acknowledge_prices(&self.db, &priced.cart.id, &changed).await?;
            let skus: Vec<&str> = changed.iter().map(|c| c.0.as_str()).collect();
            return Err(OrdersError::PriceChanged(skus.join(", ")));
        }
        if priced.cart.email.is_none() {
            return Err(OrdersError::Missing { field: "email", what: "an email address" });
        }
        if priced.shipping_address.is_none() {
            return Err(OrdersError::Missing { field: "shipping_address", what: "a shipping address" });
        }
        if priced.method.is_none() {
            return Err(OrdersError::Missing { field: "shipping_method", what: "a shipping method" });
        }
        if priced.shipping_quote.is_none() {
            return Err(OrdersError::ShippingUnavailable);
        }
        if let Some(code) = &priced.cart.discount_code
            && priced.discount.is_none()
        {
            let refusal = priced.notices.iter().find(|n| n.code == "discount_removed").map(|n| n.message.clone());
            return Err(OrdersError::Conflict("discount_removed", refusal.unwrap_or_else(|| format!("{code} no longer applies"))));
        }
        Ok(())
    }

    /// The whole checkout of a cart (or a new payment attempt on its order).
    /// With `shown_total` (what the shopper was shown), nothing is charged
    /// unless that is exactly the amount.
    ///
    /// `attempt` names the idempotent request (caller, `Idempotency-Key`
    /// and body) when there is one. It is recorded with the intent and the
    /// payment attempt, so a retry of that request after its process died
    /// finds the units its first try held, and, once the order exists, is
    /// answered with it as the first try would have been (a payment cut off
    /// before its answer is asked for again under the same payment id, which
    /// the provider never charges twice). Anyone else meets the usual rules.
    pub async fn checkout(&self, cart_id: &str, access: &Access, provider: &str, token: &str, shown_total: Option<kernel::money::Money>, attempt: Option<&str>) -> Result<Placed, OrdersError> {
        let (cart, items) = self.cart_and_items_for(cart_id, access).await?;
        let gateway = self.gateway(provider)?;
        let token = token.trim();
        if token.is_empty() || token.len() > 255 {
            return Err(domain::invalid("payment.token", "invalid_token", "a payment token from the provider").into());
        }
        match cart.status.as_str() {
            "open" => {}
            "ordered" => {
                let order_id = cart.order_id.clone().ok_or(OrdersError::CartClosed)?;
                if let Some(attempt) = attempt
                    && let Some(placed) = self.answer_again(&order_id, attempt, token).await?
                {
                    return Ok(placed);
                }
                return self.pay_again(&order_id, gateway, token, shown_total, attempt).await;
            }
            _ => return Err(OrdersError::CartClosed),
        }
        let priced = self.price_items(cart, items).await?;
        self.ready(&priced).await?;
        same_total(priced.totals.total, shown_total, &priced.cart.currency)?;

        // What the catalog just said is not there is refused before anything
        // is written or held (in a sale, most buyers are refused here).
        for item in &priced.items {
            if let Some(available) = item.offer.as_ref().and_then(|o| o.available).filter(|&a| a < item.item.quantity) {
                return Err(named_shortfall(PortError::OutOfStock { sku: item.item.sku.clone(), available }, &priced));
            }
        }
        let catalog = self.catalog()?;
        let lines: Vec<(String, i64)> = priced.items.iter().map(|i| (i.item.sku.clone(), i.item.quantity)).collect();
        let order_id = self.intend(&priced.cart.id, &lines, attempt).await?;
        if let Err(e) = catalog.reserve(&order_id, &lines).await {
            self.reserve_failed(&order_id, &e).await;
            return Err(named_shortfall(e, &priced));
        }
        fault::point("checkout.reserved");
        let lookup_token = new_secret();
        let created = self.create_order(&priced, &order_id, &lookup_token, gateway.name(), token, attempt).await;
        let (order, payment, lines, placed) = match created {
            Ok(done) => done,
            Err(e) => {
                self.give_back(catalog.as_ref(), &order_id).await;
                return Err(e);
            }
        };
        metrics::counter!("orders_placed_total").increment(1);
        fault::point("checkout.placed");
        let event_lines = lines.iter().map(event_line).collect();
        let applied = self.authorise(&order, &payment, gateway.as_ref(), token, Some(event_lines)).await?;
        let lookup_token = Some(lookup_token);
        let next_action = applied.next_action;
        // The answer is what this request wrote: the order is a moment old,
        // nothing is fulfilled, refunded or returned yet.
        Ok(match applied.written {
            Some((order, payment, noted)) => {
                let timeline = std::iter::once(placed).chain(noted).collect();
                let parts = OrderParts { lines, payments: vec![payment], timeline, ..OrderParts::default() };
                Placed { order, parts: Some(parts), lookup_token, next_action }
            }
            None => {
                let order = store::order(&self.db, &order.id).await?.ok_or(OrdersError::OrderNotFound)?;
                Placed { order, parts: None, lookup_token, next_action }
            }
        })
    }

    /// Records that a new order of `cart` is about to hold `lines`, before
    /// the catalog is asked: its order id to be. A retry of the same request
    /// whose first try died after that goes on under the first try's order
    /// id (the catalog's reservation is idempotent on it), so it finds the
    /// units that try held rather than running short of them.
    async fn intend(&self, cart: &str, lines: &[(String, i64)], attempt: Option<&str>) -> Result<String, OrdersError> {
        let lines = lines_json(lines);
        let order_id = OrderId::new().to_string();
        let intent = IntentRow {
            reservation_key: order_id.clone(),
            order_id: order_id.clone(),
            cart_id: cart.to_owned(),
            attempt: 1,
            lines,
            checkout_attempt: attempt.map(str::to_owned),
            state: "open".into(),
            created_ms: now_ms(),
        };
        let written = match attempt {
            None => store::insert_intent(&self.db, &intent).await?,
            // A retry of a request whose first try died goes on where it was,
            // unless the cart's lines have changed since.
            Some(attempt) => {
                store::insert_intent_unless_open(&self.db, &intent).await? || {
                    if let Some(open) = store::open_intent_of(&self.db, cart, attempt).await?
                        && open.lines == intent.lines
                    {
                        return Ok(open.order_id);
                    }
                    store::insert_intent(&self.db, &intent).await?
                }
            }
        };
        if !written {
            return Err(OrdersError::Conflict("checkout_in_progress", "this cart is being checked out by another request".into()));
        }
        Ok(order_id)
    }

    /// The catalog did not hold the stock. Refused outright, nothing is held
    /// and the intent goes; unanswered, something may be held, and the
    /// reconciler releases it.
    async fn reserve_failed(&self, key: &str, e: &PortError) {
        if matches!(e, PortError::Unavailable(_)) {
            return;
        }
        if let Err(e) = store::drop_intent(&self.db, key).await {
            tracing::warn!(key, error = %e, "dropping the intent of a refused reservation failed; the reconciler will");
        }
    }

    /// Gives back the stock a checkout holds that will not write its order
    /// (or payment attempt), and its intent; the reconciler does it when the
    /// catalog does not answer now.
    async fn give_back(&self, catalog: &dyn CatalogPort, key: &str) {
        match catalog.release(key).await {
            Ok(()) => {
                if let Err(e) = store::drop_intent(&self.db, key).await {
                    tracing::warn!(key, error = %e, "dropping the intent of released stock failed; the reconciler will");
                }
            }
            Err(e) => tracing::warn!(key, error = %e, "releasing the stock of an order not created failed; the reconciler will"),
        }
    }

    /// A retry of the request that made `order_id`'s latest payment attempt
    /// (the same caller, key and body), after that request's answer was lost
    /// with its process: the answer it would have given. `None` when this
    /// request made no payment attempt on the order.
    async fn answer_again(&self, order_id: &str, attempt: &str, token: &str) -> Result<Option<Placed>, OrdersError> {
        let Some(payment) = store::payment_of_attempt(&self.db, order_id, attempt).await? else {
            return Ok(None);
        };
        let order = store::order(&self.db, order_id).await?.ok_or(OrdersError::OrderNotFound)?;
        let next_action = match payment.status.as_str() {
            // Cut off before the provider's answer was written down: ask
            // again under the same payment id, which is never charged twice.
            "pending" => {
                let gateway = self.gateway(&payment.provider)?;
                let token = payment.token.clone().unwrap_or_else(|| token.to_owned());
                self.authorise(&order, &payment, gateway.as_ref(), &token, None).await?.next_action
            }
            "requires_action" => payment.next_action_url.clone(),
            "failed" => {
                return Err(OrdersError::PaymentDeclined {
                    code: payment.failure_code.unwrap_or_else(|| "card_declined".into()),
                    message: payment.failure_message.unwrap_or_else(|| "The payment was declined.".into()),
                });
            }
            _ => {
                // Paid: the stock step may have been cut off too.
                if let Err(e) = self.settle_stock(order_id).await {
                    tracing::warn!(order_id, error = %e, "settling the stock of a paid order failed; the reconciler will");
                }
                None
            }
        };
        let order = store::order(&self.db, order_id).await?.ok_or(OrdersError::OrderNotFound)?;
        Ok(Some(Placed { order, parts: None, lookup_token: None, next_action }))
    }

    /// Writes the order, its lines, its first payment attempt, the code's
    /// use and the `order.placed` event, closes the cart and resolves the
    /// checkout's intent: all or nothing.
    async fn create_order(
        &self,
        p: &Priced,
        id: &str,
        lookup: &str,
        provider: &str,
        token: &str,
        attempt: Option<&str>,
    ) -> Result<(OrderRow, PaymentRow, Vec<LineRow>, store::TimelineRow), OrdersError> {
        let cart = &p.cart;
        let email = cart.email.clone();
        // A guest is their mailbox, however its address is spelled; a
        // signed-in customer is their account and the mailbox they order to.
        let customer_keys = customer_keys(cart.user_id.as_deref(), email.as_deref());
        let customer_key = customer_keys.first().cloned().unwrap_or_default();
        let method = p.method.as_ref().map(|m| {
            json!({"id": m.method.id, "name": m.method.name, "amount": p.totals.shipping,
                   "min_days": m.method.min_days, "max_days": m.method.max_days})
            .to_string()
        });
        let billing = cart.billing_address.clone().or_else(|| cart.shipping_address.clone());
        let mut tx = self.db.begin().await?;
        if !store::resolve_intent(&mut tx, id).await? {
            tx.rollback().await?;
            return Err(given_up());
        }
        let now = now_ms();
        let mut order = OrderRow {
            id: id.to_owned(),
            number: 0, // numbered by `insert_order`
            cart_id: cart.id.clone(),
            user_id: cart.user_id.clone(),
            email,
            lookup_hash: hash_secret(lookup),
            status: Status::PendingPayment,
            currency: cart.currency.clone(),
            subtotal: p.totals.subtotal,
            discount_total: p.totals.discount,
            shipping_total: p.totals.shipping,
            tax_total: p.totals.tax,
            total: p.totals.total,
            prices_include_tax: self.settings.prices_include_tax,
            shipping_address: cart.shipping_address.clone(),
            billing_address: billing,
            shipping_method: method,
            discount_id: p.discount.as_ref().map(|d| d.id.clone()),
            discount_code: p.discount.as_ref().map(|d| d.rule.code.clone()),
            customer_key,
            capture_mode: self.settings.capture.clone(),
            attempt: 1,
            stock: "held".into(),
            captured: 0,
            refunded: 0,
            placed_ms: now,
            paid_ms: None,
            updated_ms: now,
        };
        if !store::close_cart(&mut tx, &cart.id, id).await? {
            tx.rollback().await?;
            return Err(OrdersError::Conflict("checkout_in_progress", "this cart is being checked out by another request".into()));
        }
        order.number = store::insert_order(&mut tx, &order).await?;
        let mut lines = Vec::with_capacity(p.items.len());
        for (n, (item, t)) in p.items.iter().zip(&p.totals.lines).enumerate() {
            let offer = item.offer.as_ref().ok_or_else(|| OrdersError::UnknownSku(item.item.sku.clone()))?;
            let line = LineRow {
                line_no: n as i64 + 1,
                sku: item.item.sku.clone(),
                product_id: offer.product_id.clone(),
                variant_id: offer.variant_id.clone(),
                title: offer.title.clone(),
                variant_title: offer.variant_title.clone(),
                unit_price: item.price.unwrap_or(0),
                quantity: item.item.quantity,
                discount: t.discount,
                tax: t.tax,
                total: t.total,
                fulfilled: 0,
                returned: 0,
                refunded: 0,
            };
            store::insert_line(&mut tx, id, &line).await?;
            lines.push(line);
        }
        if let Some(d) = &p.discount {
            match store::use_discount(&mut tx, &d.id, &customer_keys, d.per_customer_limit).await? {
                UseOutcome::Taken => {}
                UseOutcome::Exhausted => {
                    tx.rollback().await?;
                    return Err(OrdersError::CodeRefused(domain::Refusal::Exhausted));
                }
                UseOutcome::CustomerLimit => {
                    tx.rollback().await?;
                    return Err(OrdersError::CodeLimitReached);
                }
            }
        }
        let payment = PaymentRow::attempt(id, 1, provider, token, order.total);
        store::insert_payment(&mut tx, &payment, attempt).await?;
        let placed = store::record(&mut tx, id, "placed", order.user_id.as_deref(), &json!({"number": order.number, "total": order.total})).await?;
        let event_lines: Vec<serde_json::Value> = lines.iter().map(event_line).collect();
        let data = json!({"order_id": id, "number": order.number, "email": order.email, "user_id": order.user_id,
            "currency": order.currency, "subtotal": order.subtotal, "discount": order.discount_total,
            "shipping": order.shipping_total, "tax": order.tax_total, "total": order.total,
            "lookup_token": lookup, "lines": &event_lines,
            "shipping_address": p.shipping_address});
        outbox::enqueue(&mut tx, &Envelope::new("order.placed", id, data)).await?;
        tx.commit().await?;
        order.status = Status::PendingPayment;
        Ok((order, payment, lines, placed))
    }

    /// Asks the gateway, retrying what is worth retrying, and records the
    /// answer. Returns the confirmation URL when the shopper must act.
    /// `lines` are the order's lines as its events carry them, when the
    /// caller has them at hand.
    async fn authorise(
        &self,
        order: &OrderRow,
        payment: &PaymentRow,
        gateway: &dyn PaymentGateway,
        token: &str,
        lines: Option<Vec<serde_json::Value>>,
    ) -> Result<Applied, OrdersError> {
        let charge = Charge {
            payment_id: &payment.id,
            order_id: &order.id,
            order_number: order.number,
            amount: order.total,
            currency: &order.currency,
            token,
            capture: capture_now(&order.capture_mode),
            return_url: "",
        };
        let mut delay = Duration::from_millis(100);
        let mut tries = 0;
        let outcome = loop {
            tries += 1;
            match gateway.authorise(&charge).await {
                Ok(outcome) => break outcome,
                Err(GatewayError::Unavailable(why)) if tries < 3 => {
                    tracing::warn!(order_id = %order.id, payment_id = %payment.id, error = %why, "payment provider unavailable; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                }
                Err(GatewayError::Unavailable(why)) => {
                    break Outcome::Declined { reference: None, code: "processing_error".into(), message: format!("The payment could not be processed: {why}") };
                }
                Err(GatewayError::Refused { code, message }) => break Outcome::Declined { reference: None, code, message },
                Err(e) => return Err(e.into()),
            }
        };
        fault::point("checkout.authorised");
        // The rows as this request wrote or read them: no need to read them again.
        self.apply_outcome_to(order.clone(), payment.clone(), outcome, lines).await
    }

    /// Records a gateway's answer about one payment attempt (from checkout,
    /// a confirmation, a webhook or the reconciler). Idempotent.
    pub async fn apply_outcome(&self, order_id: &str, payment_id: &str, outcome: Outcome) -> Result<Option<String>, OrdersError> {
        let order = store::order(&self.db, order_id).await?.ok_or(OrdersError::OrderNotFound)?;
        let payment = store::payments(&self.db, order_id)
            .await?
            .into_iter()
            .find(|p| p.id == payment_id)
            .ok_or(OrdersError::NotFound("payment"))?;
        Ok(self.apply_outcome_to(order, payment, outcome, None).await?.next_action)
    }

    /// [`Self::apply_outcome`] to an order and payment attempt already read.
    /// `lines` as [`Self::authorise`] takes them.
    async fn apply_outcome_to(
        &self,
        mut order: OrderRow,
        mut payment: PaymentRow,
        outcome: Outcome,
        lines: Option<Vec<serde_json::Value>>,
    ) -> Result<Applied, OrdersError> {
        let key = reservation_key(&order.id, payment.attempt);
        if matches!(payment.status.as_str(), "captured" | "authorized" | "failed" | "voided") {
            // Settled before (a repeated webhook): only finish the stock step.
            self.settle_stock(&order.id).await?;
            return match payment.status.as_str() {
                "failed" => Err(OrdersError::PaymentDeclined {
                    code: payment.failure_code.unwrap_or_else(|| "card_declined".into()),
                    message: payment.failure_message.unwrap_or_else(|| "The payment was declined.".into()),
                }),
                _ => Ok(Applied { next_action: None, written: None }),
            };
        }
        match outcome {
            Outcome::Authorised { reference, captured } => {
                payment.provider_ref = Some(reference);
                payment.status = if captured { "captured" } else { "authorized" }.into();
                payment.captured = if captured { payment.amount } else { 0 };
                // Read before the transaction: on SQLite it holds the only
                // write lock, and must not wait for a pooled connection.
                let lines = match lines {
                    Some(lines) => lines,
                    None => self.event_lines(&order.id).await?,
                };
                let mut tx = self.db.begin().await?;
                store::settle_payment(&mut tx, &payment).await?;
                let paid_ms = store::mark_paid(&mut tx, &order.id, payment.captured).await?;
                let mut noted = Vec::new();
                if paid_ms.is_some() {
                    noted.push(store::record(&mut tx, &order.id, "paid", None, &json!({"payment_id": payment.id, "captured": payment.captured})).await?);
                    let data = json!({"order_id": order.id, "number": order.number, "email": order.email,
                        "user_id": order.user_id, "currency": order.currency, "subtotal": order.subtotal,
                        "discount": order.discount_total, "shipping": order.shipping_total, "tax": order.tax_total,
                        "total": order.total, "captured": payment.captured, "lines": lines,
                        "shipping_address": crate::carts::parse_address(order.shipping_address.as_deref())?});
                    outbox::enqueue(&mut tx, &Envelope::new("order.paid", &order.id, data)).await?;
                }
                tx.commit().await?;
                metrics::counter!("orders_paid_total").increment(1);
                fault::point("checkout.paid");
                let Some(paid_ms) = paid_ms else {
                    self.settle_stock(&order.id).await?;
                    return Ok(Applied { next_action: None, written: None });
                };
                // This request made it paid: its stock step follows from the row it has.
                order.status = Status::Paid;
                order.captured = payment.captured;
                order.paid_ms = Some(paid_ms);
                order.updated_ms = paid_ms;
                payment.token = None;
                self.settle_stock_of(&order).await?;
                Ok(Applied { next_action: None, written: Some((order, payment, noted)) })
            }
            Outcome::RequiresAction { reference, url } => {
                payment.provider_ref = Some(reference);
                payment.status = "requires_action".into();
                payment.next_action_url = Some(url.clone());
                let mut tx = self.db.begin().await?;
                store::settle_payment(&mut tx, &payment).await?;
                let noted = store::record(&mut tx, &order.id, "payment_action_required", None, &json!({"payment_id": payment.id})).await?;
                tx.commit().await?;
                Ok(Applied { next_action: Some(url), written: Some((order, payment, vec![noted])) })
            }
            Outcome::Declined { reference, code, message } => {
                payment.provider_ref = reference;
                payment.status = "failed".into();
                payment.failure_code = Some(code.clone());
                payment.failure_message = Some(message.clone());
                let mut tx = self.db.begin().await?;
                store::settle_payment(&mut tx, &payment).await?;
                if store::set_status(&mut tx, &order.id, Status::PendingPayment, Status::PaymentFailed).await? {
                    store::record(&mut tx, &order.id, "payment_failed", None, &json!({"payment_id": payment.id, "code": code})).await?;
                }
                tx.commit().await?;
                metrics::counter!("payments_failed_total", "code" => code.clone()).increment(1);
                self.release_stock(&order.id, &key, payment.attempt).await?;
                Err(OrdersError::PaymentDeclined { code, message })
            }
        }
    }

    async fn event_lines(&self, order: &str) -> Result<Vec<serde_json::Value>, OrdersError> {
        Ok(store::lines(&self.db, order).await?.iter().map(event_line).collect())
    }

    /// A paid order's held stock leaves the shelf; a failed or cancelled
    /// one's comes back. Safe to repeat.
    pub(crate) async fn settle_stock(&self, order_id: &str) -> Result<(), OrdersError> {
        let order = store::order(&self.db, order_id).await?.ok_or(OrdersError::OrderNotFound)?;
        self.settle_stock_of(&order).await
    }

    /// [`Self::settle_stock`] of an order already read.
    async fn settle_stock_of(&self, order: &OrderRow) -> Result<(), OrdersError> {
        if order.stock != "held" {
            return Ok(());
        }
        let key = reservation_key(&order.id, order.attempt);
        if order.status.is_paid() || order.status == Status::PartiallyFulfilled || order.status == Status::Fulfilled {
            self.catalog()?.commit(&key).await?;
            store::set_stock(&self.db, &order.id, order.attempt, "committed").await?;
        } else if matches!(order.status, Status::PaymentFailed | Status::Cancelled) {
            self.release_stock(&order.id, &key, order.attempt).await?;
        }
        Ok(())
    }

    async fn release_stock(&self, order: &str, key: &str, attempt: i64) -> Result<(), OrdersError> {
        match self.catalog()?.release(key).await {
            Ok(()) | Err(PortError::UnknownSku(_)) => {}
            Err(e) => return Err(e.into()),
        }
        store::set_stock(&self.db, order, attempt, "released").await?;
        Ok(())
    }

    /// Another card on an order whose payment failed.
    async fn pay_again(&self, order_id: &str, gateway: Arc<dyn PaymentGateway>, token: &str, shown_total: Option<kernel::money::Money>, attempt: Option<&str>) -> Result<Placed, OrdersError> {
        let order = store::order(&self.db, order_id).await?.ok_or(OrdersError::OrderNotFound)?;
        match order.status {
            Status::PaymentFailed => {}
            Status::PendingPayment => {
                let latest = store::payments(&self.db, order_id).await?.pop();
                if let Some(p) = latest.filter(|p| p.status == "requires_action") {
                    return Ok(Placed { order, parts: None, lookup_token: None, next_action: p.next_action_url });
                }
                return Err(OrdersError::Conflict("payment_in_progress", "this order's payment is being processed".into()));
            }
            Status::Cancelled => return Err(OrdersError::Conflict("order_cancelled", "this order was cancelled".into())),
            _ => return Err(OrdersError::Conflict("order_already_paid", "this order is already paid".into())),
        }
        same_total(order.total, shown_total, &order.currency)?;
        let catalog = self.catalog()?;
        let number = order.attempt + 1;
        let key = reservation_key(&order.id, number);
        let lines: Vec<(String, i64)> = store::lines(&self.db, order_id).await?.into_iter().map(|l| (l.sku, l.quantity)).collect();
        let busy = || OrdersError::Conflict("payment_in_progress", "another payment of this order is being processed".into());
        // The intent under the attempt's reservation key admits one payment
        // attempt at a time (or the same request again, after its first try died).
        let intent = IntentRow {
            reservation_key: key.clone(),
            order_id: order.id.clone(),
            cart_id: order.cart_id.clone(),
            attempt: number,
            lines: lines_json(&lines),
            checkout_attempt: attempt.map(str::to_owned),
            state: "open".into(),
            created_ms: now_ms(),
        };
        if !store::insert_intent(&self.db, &intent).await? {
            let ours = store::intent(&self.db, &key).await?.is_some_and(|i| i.state == "open" && attempt.is_some() && i.checkout_attempt.as_deref() == attempt);
            if !ours {
                return Err(busy());
            }
        }
        let now = store::order(&self.db, order_id).await?.ok_or(OrdersError::OrderNotFound)?;
        if now.attempt != order.attempt {
            // Another attempt was written since the order was read: the key is its.
            store::drop_intent(&self.db, &key).await?;
            return Err(busy());
        }
        if now.status != Status::PaymentFailed {
            self.give_back(catalog.as_ref(), &key).await;
            return Err(busy());
        }
        if let Err(e) = catalog.reserve(&key, &lines).await {
            self.reserve_failed(&key, &e).await;
            return Err(e.into());
        }
        let payment = PaymentRow::attempt(&order.id, number, gateway.name(), token, order.total);
        let mut tx = self.db.begin().await?;
        if !store::resolve_intent(&mut tx, &key).await? {
            tx.rollback().await?;
            return Err(given_up());
        }
        if !store::retry_order(&mut tx, &order.id, order.attempt).await? {
            tx.rollback().await?;
            self.give_back(catalog.as_ref(), &key).await;
            return Err(busy());
        }
        store::insert_payment(&mut tx, &payment, attempt).await?;
        store::record(&mut tx, &order.id, "payment_retried", None, &json!({"payment_id": payment.id, "attempt": number})).await?;
        tx.commit().await?;
        let order = store::order(&self.db, order_id).await?.ok_or(OrdersError::OrderNotFound)?;
        let next_action = self.authorise(&order, &payment, gateway.as_ref(), token, None).await?.next_action;
        let order = store::order(&self.db, order_id).await?.ok_or(OrdersError::OrderNotFound)?;
        Ok(Placed { order, parts: None, lookup_token: None, next_action })
    }

    /// A provider's word about a payment (webhook or confirmation page).
    pub async fn payment_update(&self, provider: &str, reference: &str, outcome: Outcome) -> Result<(), OrdersError> {
        let Some(payment) = store::payment_by_ref(&self.db, provider, reference).await? else {
            tracing::info!(provider, reference, "update about a payment we do not know; ignored");
            return Ok(());
        };
        match self.apply_outcome(&payment.order_id, &payment.id, outcome).await {
            Ok(_) | Err(OrdersError::PaymentDeclined { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A refund made at the provider (its dashboard): recorded as ours, once.
    /// `amount_refunded` is the provider's running total for the payment.
    pub async fn provider_refund(&self, provider: &str, reference: &str, amount_refunded: i64) -> Result<(), OrdersError> {
        let Some(payment) = store::payment_by_ref(&self.db, provider, reference).await? else {
            tracing::info!(provider, reference, "refund of a payment we do not know; ignored");
            return Ok(());
        };
        let refunds = store::refunds(&self.db, &payment.order_id).await?;
        // Ours in flight are counted when they finish (the reconciler sees to it).
        if refunds.iter().any(|r| r.payment_id == payment.id && r.status == "pending") {
            return Ok(());
        }
        let amount = amount_refunded - payment.refunded;
        if amount <= 0 {
            return Ok(());
        }
        let order = store::order(&self.db, &payment.order_id).await?.ok_or(OrdersError::OrderNotFound)?;
        let refund = RefundRow {
            id: RefundId::new().to_string(),
            order_id: order.id.clone(),
            payment_id: payment.id.clone(),
            amount,
            reason: "refunded at the payment provider".into(),
            restock: false,
            lines: "[]".into(),
            status: "pending".into(),
            provider_ref: None,
            actor: None,
            created_ms: now_ms(),
        };
        let mut tx = self.db.begin().await?;
        if !store::add_refunded(&mut tx, &order.id, amount).await? {
            tx.rollback().await?;
            return Err(OrdersError::RefundTooLarge { asked: amount, left: order.captured - order.refunded, currency: order.currency.clone() });
        }
        store::insert_refund(&mut tx, &refund).await?;
        tx.commit().await?;
        self.record_refund(refund, reference).await
    }

    // After payment

    /// Cancels an order that has not shipped: stock back, money back (void
    /// or refund), the code's use back.
    pub async fn cancel(&self, order_id: &str, actor: Option<&str>, reason: &str) -> Result<OrderRow, OrdersError> {
        let order = store::order(&self.db, order_id).await?.ok_or(OrdersError::OrderNotFound)?;
        if order.status == Status::Cancelled {
            return Ok(order);
        }
        if !order.status.cancellable() {
            return Err(OrdersError::Conflict("order_not_cancellable", format!("an order that is {} cannot be cancelled", order.status)));
        }
        let payments = store::payments(&self.db, order_id).await?;
        let mut refunded = 0;
        for p in &payments {
            let (Some(reference), Ok(gateway)) = (&p.provider_ref, self.gateway(&p.provider)) else { continue };
            match p.status.as_str() {
                "authorized" | "requires_action" => gateway.void(reference, &format!("{}-void", p.id)).await?,
                "captured" if p.captured > p.refunded => {
                    gateway.refund(reference, p.captured - p.refunded, &format!("{}-cancel", p.id)).await?;
                    refunded += p.captured - p.refunded;
                }
                _ => {}
            }
        }
        let mut tx = self.db.begin().await?;
        if !store::set_status(&mut tx, &order.id, order.status, domain::transition(order.status, Status::Cancelled)?).await? {
            tx.rollback().await?;
            return Err(OrdersError::Conflict("order_changed", "the order changed meanwhile; try again".into()));
        }
        if refunded > 0 && !store::add_refunded(&mut tx, &order.id, refunded).await? {
            tx.rollback().await?;
            return Err(OrdersError::RefundTooLarge { asked: refunded, left: order.captured - order.refunded, currency: order.currency.clone() });
        }
        if let Some(d) = &order.discount_id {
            store::return_discount(&mut tx, d, &customer_keys(Some(&order.customer_key), order.email.as_deref())).await?;
        }
        store::record(&mut tx, &order.id, "cancelled", actor, &json!({"reason": reason, "refunded": refunded})).await?;
        let data = json!({"order_id": order.id, "number": order.number, "email": order.email, "user_id": order.user_id,
            "reservation": reservation_key(&order.id, order.attempt), "refunded": refunded, "currency": order.currency,
            "reason": reason});
        outbox::enqueue(&mut tx, &Envelope::new("order.cancelled", &order.id, data)).await?;
        tx.commit().await?;
        if order.stock == "committed" {
            for line in store::lines(&self.db, &order.id).await? {
                self.catalog()?.restock(&line.sku, line.quantity, &format!("{}-cancel", order.id)).await?;
            }
        } else {
            self.settle_stock(&order.id).await?;
        }
        store::order(&self.db, order_id).await?.ok_or(OrdersError::OrderNotFound)
    }

    /// Ships some or all of what is left; the first parcel captures a
    /// payment that was only authorised.
    pub async fn fulfil(&self, order_id: &str, items: Option<Vec<ItemCount>>, tracking: Tracking, actor: &str) -> Result<OrderRow, OrdersError> {
        let order = store::order(&self.db, order_id).await?.ok_or(OrdersError::OrderNotFound)?;
        let lines = store::lines(&self.db, order_id).await?;
        let wanted = counts_for(&lines, items, |l| l.quantity - l.fulfilled)?;
        if !order.status.can_ship() {
            return Err(domain::BadTransition { from: order.status, to: Status::PartiallyFulfilled }.into());
        }
        if order.captured == 0 {
            self.capture(&order).await?;
        }
        let id = FulfilmentId::new().to_string();
        let lines_json = serde_json::to_string(&wanted.iter().map(|(l, n)| json!({"sku": l.sku, "quantity": n})).collect::<Vec<_>>())
            .map_err(|e| OrdersError::Store(platform::db::DbError::Corrupt(e.to_string())))?;
        let mut tx = self.db.begin().await?;
        for (line, n) in &wanted {
            if !store::add_line_counts(&mut tx, order_id, line.line_no, LineCount::Fulfilled, *n).await? {
                tx.rollback().await?;
                return Err(domain::invalid("items", "too_many_units", format!("more of {} than is left to ship", line.sku)).into());
            }
        }
        let (ordered, fulfilled) = store::line_totals(&mut tx, order_id).await?;
        let current = store::order_in(&mut tx, order_id).await?.ok_or(OrdersError::OrderNotFound)?;
        let to = if current.status == Status::PartiallyRefunded { Status::PartiallyRefunded } else { domain::after_fulfilment(ordered, fulfilled) };
        if to != current.status {
            domain::transition(current.status, to)?;
            store::set_status(&mut tx, order_id, current.status, to).await?;
        }
        store::insert_fulfilment(&mut tx, order_id, &(id.clone(), tracking.carrier.clone(), tracking.tracking_number.clone(), tracking.tracking_url.clone(), lines_json.clone(), now_ms(), None)).await?;
        store::record(&mut tx, order_id, "fulfilled", Some(actor), &json!({"fulfilment_id": id, "carrier": tracking.carrier,
            "tracking_number": tracking.tracking_number, "lines": serde_json::from_str::<serde_json::Value>(&lines_json).unwrap_or_default()})).await?;
        let data = json!({"order_id": order.id, "number": order.number, "email": order.email, "user_id": order.user_id,
            "fulfilment_id": id, "carrier": tracking.carrier, "tracking_number": tracking.tracking_number,
            "tracking_url": tracking.tracking_url, "complete": ordered == fulfilled,
            "phone": crate::carts::parse_address(order.shipping_address.as_deref())?.and_then(|a| a.phone)});
        outbox::enqueue(&mut tx, &Envelope::new("order.fulfilled", &order.id, data)).await?;
        tx.commit().await?;
        store::order(&self.db, order_id).await?.ok_or(OrdersError::OrderNotFound)
    }

    /// Captures an authorised payment in full (capture on fulfilment).
    async fn capture(&self, order: &OrderRow) -> Result<(), OrdersError> {
        let payment = store::payments(&self.db, &order.id).await?.into_iter().find(|p| p.status == "authorized");
        let Some(mut payment) = payment else { return Ok(()) };
        let reference = payment.provider_ref.clone().ok_or(OrdersError::NotFound("payment reference"))?;
        self.gateway(&payment.provider)?.capture(&reference, payment.amount, &format!("{}-capture", payment.id)).await?;
        payment.status = "captured".into();
        payment.captured = payment.amount;
        let mut tx = self.db.begin().await?;
        store::settle_payment(&mut tx, &payment).await?;
        store::add_captured(&mut tx, &order.id, payment.amount).await?;
        store::record(&mut tx, &order.id, "captured", None, &json!({"payment_id": payment.id, "amount": payment.amount})).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn mark_delivered(&self, order_id: &str, actor: &str) -> Result<OrderRow, OrdersError> {
        let order = store::order(&self.db, order_id).await?.ok_or(OrdersError::OrderNotFound)?;
        let to = domain::transition(order.status, Status::Delivered)?;
        let mut tx = self.db.begin().await?;
        if !store::set_status(&mut tx, order_id, order.status, to).await? {
            tx.rollback().await?;
            return Err(OrdersError::Conflict("order_changed", "the order changed meanwhile; try again".into()));
        }
        store::mark_delivered(&mut tx, order_id).await?;
        store::record(&mut tx, order_id, "delivered", Some(actor), &json!({})).await?;
        outbox::enqueue(&mut tx, &Envelope::new("order.delivered", order_id, json!({"order_id": order_id, "number": order.number, "email": order.email}))).await?;
        tx.commit().await?;
        store::order(&self.db, order_id).await?.ok_or(OrdersError::OrderNotFound)
    }

    /// Gives money back: an amount, or the value of some units. The amount
    /// is set aside first (so concurrent refunds cannot exceed what was
    /// captured), then the provider is asked (idempotent on the refund id),
    /// then the refund is recorded; the reconciler finishes one a crash cut short.
    pub async fn refund(&self, order_id: &str, r: RefundRequest, actor: Option<&str>) -> Result<RefundRow, OrdersError> {
        let order = store::order(&self.db, order_id).await?.ok_or(OrdersError::OrderNotFound)?;
        if !order.status.is_paid() || order.captured == 0 {
            return Err(OrdersError::Conflict("not_refundable", format!("an order that is {} has nothing captured to refund", order.status)));
        }
        let lines = store::lines(&self.db, order_id).await?;
        let units = match r.items {
            Some(items) if !items.is_empty() => counts_for(&lines, Some(items), |l| l.quantity - l.refunded)?,
            _ => Vec::new(),
        };
        let amount = match r.amount {
            Some(a) => a,
            None if !units.is_empty() => units.iter().map(|(l, n)| domain::refund_for_units(l.total, l.quantity, *n)).sum(),
            None => return Err(domain::invalid("amount", "amount_or_items", "give an amount or the items to refund").into()),
        };
        if amount <= 0 {
            return Err(domain::invalid("amount", "invalid_amount", "a positive amount in minor units").into());
        }
        let reason = r.reason.trim();
        if reason.is_empty() || reason.len() > 500 {
            return Err(domain::invalid("reason", "invalid_reason", "say why, in up to 500 characters").into());
        }
        let payment = store::payments(&self.db, order_id).await?.into_iter().find(|p| p.captured > 0).ok_or(OrdersError::NotFound("payment"))?;
        let refund = RefundRow {
            id: RefundId::new().to_string(),
            order_id: order.id.clone(),
            payment_id: payment.id.clone(),
            amount,
            reason: reason.to_owned(),
            restock: r.restock,
            lines: serde_json::to_string(&units.iter().map(|(l, n)| json!({"sku": l.sku, "quantity": n})).collect::<Vec<_>>())
                .map_err(|e| OrdersError::Store(platform::db::DbError::Corrupt(e.to_string())))?,
            status: "pending".into(),
            provider_ref: None,
            actor: actor.map(str::to_owned),
            created_ms: now_ms(),
        };
        let mut tx = self.db.begin().await?;
        if !store::add_refunded(&mut tx, order_id, amount).await? {
            tx.rollback().await?;
            return Err(OrdersError::RefundTooLarge { asked: amount, left: order.captured - order.refunded, currency: order.currency.clone() });
        }
        for (line, n) in &units {
            if !store::add_line_counts(&mut tx, order_id, line.line_no, LineCount::Refunded, *n).await? {
                tx.rollback().await?;
                return Err(domain::invalid("items", "too_many_units", format!("more of {} than is left to refund", line.sku)).into());
            }
        }
        store::insert_refund(&mut tx, &refund).await?;
        tx.commit().await?;
        fault::point("refund.reserved");
        self.complete_refund(refund).await
    }

    async fn complete_refund(&self, mut refund: RefundRow) -> Result<RefundRow, OrdersError> {
        let payment = store::payments(&self.db, &refund.order_id).await?.into_iter().find(|p| p.id == refund.payment_id).ok_or(OrdersError::NotFound("payment"))?;
        let reference = payment.provider_ref.clone().ok_or(OrdersError::NotFound("payment reference"))?;
        let answer = self.gateway(&payment.provider)?.refund(&reference, refund.amount, &refund.id).await;
        let provider_ref = match answer {
            Ok(r) => r,
            Err(GatewayError::Unavailable(why)) => return Err(OrdersError::Gateway(why)),
            Err(e) => {
                // Refused for good: give the amount back to what may be refunded.
                let mut tx = self.db.begin().await?;
                if store::finish_refund(&mut tx, &refund.id, "failed", None).await? {
                    store::add_refunded(&mut tx, &refund.order_id, -refund.amount).await?;
                }
                tx.commit().await?;
                return Err(e.into());
            }
        };
        let units: Vec<ItemCount> = serde_json::from_str(&refund.lines).unwrap_or_default();
        let restock = refund.restock;
        let refund_id = refund.id.clone();
        self.record_refund(refund.clone(), &provider_ref).await?;
        if restock {
            for u in units {
                self.catalog()?.restock(&u.sku, u.quantity, &refund_id).await?;
            }
        }
        refund.status = "succeeded".into();
        refund.provider_ref = Some(provider_ref);
        Ok(refund)
    }

    /// Marks a refund done: the payment's and order's totals, the status,
    /// the timeline and `order.refunded`, once.
    async fn record_refund(&self, refund: RefundRow, provider_ref: &str) -> Result<(), OrdersError> {
        let order = store::order(&self.db, &refund.order_id).await?.ok_or(OrdersError::OrderNotFound)?;
        let mut tx = self.db.begin().await?;
        if store::finish_refund(&mut tx, &refund.id, "succeeded", Some(provider_ref)).await? {
            store::add_payment_refunded(&mut tx, &refund.payment_id, refund.amount).await?;
            let to = domain::after_refund(order.captured, order.refunded);
            let to = domain::transition(order.status, to)?;
            store::set_status(&mut tx, &order.id, order.status, to).await?;
            store::record(&mut tx, &order.id, "refunded", refund.actor.as_deref(), &json!({"refund_id": refund.id, "amount": refund.amount, "reason": refund.reason})).await?;
            let data = json!({"order_id": order.id, "number": order.number, "email": order.email, "user_id": order.user_id,
                "refund_id": refund.id, "amount": refund.amount, "currency": order.currency, "reason": refund.reason,
                "total_refunded": order.refunded});
            outbox::enqueue(&mut tx, &Envelope::new("order.refunded", &order.id, data)).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn add_note(&self, order_id: &str, text: &str, actor: &str) -> Result<(), OrdersError> {
        let text = text.trim();
        if text.is_empty() || text.chars().count() > 2000 {
            return Err(domain::invalid("text", "invalid_note", "a note of up to 2000 characters").into());
        }
        store::order(&self.db, order_id).await?.ok_or(OrdersError::OrderNotFound)?;
        let mut tx = self.db.begin().await?;
        store::record(&mut tx, order_id, "note", Some(actor), &json!({"text": text})).await?;
        tx.commit().await?;
        Ok(())
    }

    // Returns

    pub async fn request_return(&self, order_id: &str, items: Vec<ItemCount>, reason: &str, actor: Option<&str>) -> Result<String, OrdersError> {
        let order = store::order(&self.db, order_id).await?.ok_or(OrdersError::OrderNotFound)?;
        if !matches!(order.status, Status::Fulfilled | Status::Delivered | Status::PartiallyFulfilled | Status::PartiallyRefunded) {
            return Err(OrdersError::Conflict("not_returnable", "only shipped items can be returned".into()));
        }
        let shipped_at = store::fulfilments(&self.db, order_id).await?.iter().map(|f| f.6.unwrap_or(f.5)).max();
        let window = i64::from(self.settings.return_window_days) * 86_400_000;
        if shipped_at.is_none_or(|at| now_ms() > at + window) {
            return Err(OrdersError::Conflict("return_window_closed", format!("returns are accepted for {} days", self.settings.return_window_days)));
        }
        let reason = reason.trim();
        if reason.is_empty() || reason.len() > 500 {
            return Err(domain::invalid("reason", "invalid_reason", "say why, in up to 500 characters").into());
        }
        let lines = store::lines(&self.db, order_id).await?;
        if items.is_empty() {
            return Err(domain::invalid("items", "no_items", "name the items to return").into());
        }
        let wanted = counts_for(&lines, Some(items), |l| l.fulfilled - l.returned)?;
        let id = ReturnId::new().to_string();
        let lines_json = serde_json::to_string(&wanted.iter().map(|(l, n)| json!({"sku": l.sku, "quantity": n})).collect::<Vec<_>>())
            .map_err(|e| OrdersError::Store(platform::db::DbError::Corrupt(e.to_string())))?;
        let mut tx = self.db.begin().await?;
        for (line, n) in &wanted {
            if !store::add_line_counts(&mut tx, order_id, line.line_no, LineCount::Returned, *n).await? {
                tx.rollback().await?;
                return Err(domain::invalid("items", "too_many_units", format!("more of {} than was shipped", line.sku)).into());
            }
        }
        let now = now_ms();
        store::insert_return(&mut tx, &(id.clone(), order_id.to_owned(), "requested".into(), reason.to_owned(), lines_json.clone(), None, now, now)).await?;
        store::record(&mut tx, order_id, "return_requested", actor, &json!({"return_id": id, "reason": reason})).await?;
        outbox::enqueue(&mut tx, &Envelope::new("return.requested", order_id, json!({"order_id": order_id, "number": order.number,
            "return_id": id, "email": order.email, "lines": serde_json::from_str::<serde_json::Value>(&lines_json).unwrap_or_default()}))).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Staff move a return on: approve, reject, receive, refund.
    pub async fn advance_return(&self, return_id: &str, step: ReturnStep, actor: &str) -> Result<(), OrdersError> {
        let row = store::return_by_id(&self.db, return_id).await?.ok_or(OrdersError::NotFound("return"))?;
        let (id, order_id, status, _, lines_json, ..) = row;
        let (from, to, kind) = match (&step, status.as_str()) {
            (ReturnStep::Approve, "requested") => ("requested", "approved", "return_approved"),
            (ReturnStep::Reject, "requested" | "approved") => (status.as_str(), "rejected", "return_rejected"),
            (ReturnStep::Receive, "approved") => ("approved", "received", "return_received"),
            (ReturnStep::Refund { .. }, "received") => ("received", "refunded", "return_refunded"),
            _ => return Err(OrdersError::Conflict("invalid_transition", format!("a return that is {status} cannot be moved that way"))),
        };
        let units: Vec<ItemCount> = serde_json::from_str(&lines_json).unwrap_or_default();
        let mut refund_id = None;
        if let ReturnStep::Refund { restock } = step {
            let refund = self
                .refund(&order_id, RefundRequest { amount: None, items: Some(units.clone()), reason: format!("return {id}"), restock }, Some(actor))
                .await?;
            refund_id = Some(refund.id);
        }
        let order = store::order(&self.db, &order_id).await?.ok_or(OrdersError::OrderNotFound)?;
        let lines = store::lines(&self.db, &order_id).await?;
        let mut tx = self.db.begin().await?;
        if !store::set_return_status(&mut tx, &id, from, to, refund_id.as_deref()).await? {
            tx.rollback().await?;
            return Err(OrdersError::Conflict("return_changed", "the return changed meanwhile; try again".into()));
        }
        if to == "rejected" {
            for u in &units {
                if let Some(l) = lines.iter().find(|l| l.sku == u.sku) {
                    store::add_line_counts(&mut tx, &order_id, l.line_no, LineCount::Returned, -u.quantity).await?;
                }
            }
        }
        store::record(&mut tx, &order_id, kind, Some(actor), &json!({"return_id": id, "refund_id": refund_id})).await?;
        if matches!(to, "approved" | "received") {
            let event = if to == "approved" { "return.approved" } else { "return.received" };
            outbox::enqueue(&mut tx, &Envelope::new(event, &order_id, json!({"order_id": order_id, "number": order.number,
                "return_id": id, "email": order.email}))).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // Recovery

    /// Finishes or rolls back checkouts and refunds a crash interrupted,
    /// releases the stock of checkouts that died before writing their
    /// order, and cancels orders left unpaid too long. Returns how many it
    /// touched. Safe to run in many processes at once.
    pub async fn reconcile(&self) -> Result<usize, OrdersError> {
        let now = now_ms();
        let stale = now - self.settings.reconcile_after_secs as i64 * 1000;
        let timeout = now - self.settings.payment_timeout_mins as i64 * 60_000;
        let mut touched = self.release_orphans(now).await?;
        for id in store::stale_orders(&self.db, &["pending_payment"], None, stale, 100).await? {
            let Some(payment) = store::payments(&self.db, &id).await?.pop() else { continue };
            let Ok(gateway) = self.gateway(&payment.provider) else { continue };
            let order = store::order(&self.db, &id).await?.ok_or(OrdersError::OrderNotFound)?;
            // The shopper is confirming: the confirmation or the provider's
            // webhook settles it; only once the time is up is it looked at.
            if payment.status == "requires_action" && order.updated_ms >= timeout {
                continue;
            }
            let outcome = match (&payment.provider_ref, payment.status.as_str(), &payment.token) {
                (Some(reference), _, _) => gateway.status(reference).await,
                // Cut off before the answer was written down: ask again with
                // the same idempotency key, which cannot charge twice.
                (None, "pending", Some(token)) => {
                    gateway.authorise(&Charge {
                        payment_id: &payment.id,
                        order_id: &order.id,
                        order_number: order.number,
                        amount: payment.amount,
                        currency: &order.currency,
                        token,
                        capture: capture_now(&order.capture_mode),
                        return_url: "",
                    })
                    .await
                }
                _ => Ok(Outcome::Declined { reference: None, code: "abandoned".into(), message: "The payment was not completed.".into() }),
            };
            let outcome = match outcome {
                Ok(Outcome::RequiresAction { .. }) if order.updated_ms < timeout => {
                    if let Some(reference) = &payment.provider_ref {
                        let _ = gateway.void(reference, &format!("{}-void", payment.id)).await;
                    }
                    Outcome::Declined { reference: payment.provider_ref.clone(), code: "authentication_timeout".into(), message: "The payment was not confirmed in time.".into() }
                }
                Ok(Outcome::RequiresAction { .. }) => continue,
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(order_id = %id, error = %e, "reconciling a payment failed; will retry");
                    continue;
                }
            };
            touched += 1;
            match self.apply_outcome(&id, &payment.id, outcome).await {
                Ok(_) | Err(OrdersError::PaymentDeclined { .. }) => tracing::info!(order_id = %id, "reconciled an interrupted checkout"),
                Err(e) => tracing::warn!(order_id = %id, error = %e, "reconciling an order failed; will retry"),
            }
        }
        let statuses = ["paid", "partially_fulfilled", "fulfilled", "payment_failed", "cancelled"];
        for id in store::stale_orders(&self.db, &statuses, Some("held"), stale, 100).await? {
            touched += 1;
            if let Err(e) = self.settle_stock(&id).await {
                tracing::warn!(order_id = %id, error = %e, "settling an order's stock failed; will retry");
            }
        }
        for id in store::stale_orders(&self.db, &["payment_failed"], None, timeout, 100).await? {
            touched += 1;
            if let Err(e) = self.cancel(&id, None, "payment not completed in time").await {
                tracing::warn!(order_id = %id, error = %e, "cancelling an unpaid order failed; will retry");
            }
        }
        for refund in store::pending_refunds(&self.db, stale).await? {
            touched += 1;
            let id = refund.id.clone();
            if let Err(e) = self.complete_refund(refund).await {
                tracing::warn!(refund_id = %id, error = %e, "finishing an interrupted refund failed; will retry");
            }
        }
        Ok(touched)
    }

    /// Releases what checkouts that died between holding stock and writing
    /// their order (or new payment attempt) left held: each intent older
    /// than `orders.reconcile_after_secs` (at least a second), claimed by
    /// one reconciler with a conditional update.
    async fn release_orphans(&self, now: i64) -> Result<usize, OrdersError> {
        let after_ms = (self.settings.reconcile_after_secs as i64 * 1000).max(1000);
        // A reconciler that dies while releasing leaves its claim to lapse.
        let claim_ms = after_ms.max(30_000);
        let mut touched = 0;
        for intent in store::stale_intents(&self.db, now - after_ms, now, 100).await? {
            if !store::claim_intent(&self.db, &intent.reservation_key, now - after_ms, now, now + claim_ms).await? {
                continue;
            }
            touched += 1;
            match self.release_orphan(&intent).await {
                Ok(()) => tracing::info!(key = %intent.reservation_key, "released the stock of a checkout that did not write its order"),
                Err(e) => tracing::warn!(key = %intent.reservation_key, error = %e, "releasing the stock of an interrupted checkout failed; will retry"),
            }
        }
        Ok(touched)
    }

    async fn release_orphan(&self, intent: &IntentRow) -> Result<(), OrdersError> {
        let order = store::order(&self.db, &intent.order_id).await?;
        if order.as_ref().is_some_and(|o| o.attempt >= intent.attempt) {
            // The attempt was written after all: its stock follows the order.
            store::drop_intent(&self.db, &intent.reservation_key).await?;
            return Ok(());
        }
        match self.catalog()?.release(&intent.reservation_key).await {
            Ok(()) | Err(PortError::UnknownSku(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let mut tx = self.db.begin().await?;
        if let Some(order) = &order {
            // Another card's attempt that never got written: the next one
            // takes a reservation key of its own.
            store::skip_attempt(&mut tx, &order.id, intent.attempt).await?;
        }
        store::drop_intent_in(&mut tx, &intent.reservation_key).await?;
        tx.commit().await?;
        metrics::counter!("orders_abandoned_reservations_released_total").increment(1);
        Ok(())
    }

    /// Checkouts holding stock (or about to) without their order written
    /// yet, across every replica: how many, and how long the oldest has
    /// been at it (ms). Those a crash left stay until the reconciler
    /// releases them.
    pub async fn checkouts_in_flight(&self) -> Result<(i64, Option<i64>), OrdersError> {
        let (count, oldest) = store::intents_summary(&self.db).await?;
        Ok((count, oldest.map(|t| (now_ms() - t).max(0))))
    }

    /// Runs [`Orders::reconcile`] every `every` until `shutdown`.
    pub async fn run_reconciler(self, every: Duration, shutdown: CancellationToken) {
        platform::worker::every("order_reconciler".into(), every, shutdown, || self.reconcile()).await;
    }

    /// A deleted customer's orders stay for the books, without their person.
    pub async fn forget(&self, user: &str) -> Result<u64, OrdersError> {
        let mut tx = self.db.begin().await?;
        let n = store::forget_customer(&mut tx, user).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// A customer's orders, for their data export.
    pub async fn export_for(&self, user: &str) -> Result<serde_json::Value, OrdersError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let filter = store::OrderFilter { user_id: Some(user), after: after.as_deref(), limit: 100, ..Default::default() };
            let mut page = store::orders(&self.db, &filter).await?;
            let more = page.len() > 100;
            page.truncate(100);
            for o in &page {
                let lines: Vec<serde_json::Value> = store::lines(&self.db, &o.id)
                    .await?
                    .into_iter()
                    .map(|l| json!({"sku": l.sku, "title": l.title, "variant_title": l.variant_title, "quantity": l.quantity, "unit_price": l.unit_price}))
                    .collect();
                out.push(json!({"id": o.id, "number": o.number, "status": o.status, "placed_ms": o.placed_ms,
                    "currency": o.currency, "total": o.total, "email": o.email,
                    "shipping_address": crate::carts::parse_address(o.shipping_address.as_deref())?,
                    "billing_address": crate::carts::parse_address(o.billing_address.as_deref())?, "lines": lines}));
            }
            match (more, page.last()) {
                (true, Some(last)) => after = Some(last.id.clone()),
                _ => break,
            }
        }
        Ok(json!({"orders": out}))
    }

    /// Whether `access` may see `order` (its customer, or a guest with the lookup token).
    pub fn may_see(order: &OrderRow, user: Option<&str>, lookup_token: Option<&str>) -> bool {
        match (&order.user_id, user) {
            (Some(owner), Some(u)) if owner == u => return true,
            _ => {}
        }
        lookup_token.is_some_and(|t| platform::auth::constant_time_eq(hash_secret(t).as_bytes(), order.lookup_hash.as_bytes()))
    }
}

/// Refuses to charge `total` when the shopper was shown another amount.
fn same_total(total: i64, shown: Option<kernel::money::Money>, currency: &str) -> Result<(), OrdersError> {
    match shown {
        Some(shown) if shown.amount != total || shown.currency.as_str() != currency => {
            Err(OrdersError::TotalChanged { now: total, shown_total: shown.amount, currency: currency.to_owned() })
        }
        _ => Ok(()),
    }
}

/// Stock that ran out between the cart and the checkout, named as the
/// shopper knows the product rather than by its SKU.
fn named_shortfall(e: PortError, priced: &Priced) -> OrdersError {
    if let PortError::OutOfStock { sku, available } = &e
        && let Some(item) = priced.items.iter().find(|i| &i.item.sku == sku)
        && let Some(offer) = &item.offer
    {
        let shortfall = domain::Shortfall { available: (*available).max(0), in_cart: 0 };
        return OrdersError::NotEnoughStock { name: domain::item_name(&offer.title, &offer.variant_title), shortfall };
    }
    e.into()
}

/// How a parcel travels.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Tracking {
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub tracking_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub amount: Option<i64>,
    pub items: Option<Vec<ItemCount>>,
    pub reason: String,
    pub restock: bool,
}

#[derive(Debug, Clone, Copy)]
pub enum ReturnStep {
    Approve,
    Reject,
    Receive,
    Refund { restock: bool },
}

/// Matches item counts to order lines by SKU; `None` means every unit
/// `left` allows. Each count must be positive and within `left`.
fn counts_for(lines: &[LineRow], items: Option<Vec<ItemCount>>, left: impl Fn(&LineRow) -> i64) -> Result<Vec<(LineRow, i64)>, OrdersError> {
    let Some(items) = items else {
        let all: Vec<(LineRow, i64)> = lines.iter().filter(|l| left(l) > 0).map(|l| (l.clone(), left(l))).collect();
        if all.is_empty() {
            return Err(OrdersError::Conflict("nothing_left", "every unit of this order has been handled".into()));
        }
        return Ok(all);
    };
    let mut out: Vec<(LineRow, i64)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let sku = item.sku.trim().to_uppercase();
        let line = lines.iter().find(|l| l.sku == sku).ok_or_else(|| domain::invalid(format!("items[{i}].sku"), "not_in_order", "this order has no such SKU"))?;
        if item.quantity < 1 || item.quantity > left(line) {
            return Err(domain::invalid(format!("items[{i}].quantity"), "too_many_units", format!("1 to {} of {}", left(line), line.sku)).into());
        }
        match out.iter_mut().find(|(l, _)| l.line_no == line.line_no) {
            Some(entry) => entry.1 += item.quantity,
            None => out.push((line.clone(), item.quantity)),
        }
    }
    Ok(out)
}
