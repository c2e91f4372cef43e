//! Stock: levels per SKU and location, the ledger of every change, and the
//! reservation port checkout uses (reserve → commit or release), with a
//! sweeper that releases reservations nobody committed in time.

use std::collections::BTreeMap;
use std::time::Duration;

use kernel::Envelope;
use platform::db::{Db, Dialect, Tx, now_ms};
use platform::outbox;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::domain::{self, Sku};
use crate::error::CatalogError;
use crate::store::{self, DEFAULT_LOCATION, LedgerEntry};

impl Inventory {
    /// Products changed: every remembered public response is stale.
    pub(crate) fn changed(&self) {
        if let Some(cache) = &self.cache {
            cache.invalidate();
        }
    }

    /// The stock of these products changed: the responses that show them
    /// are stale, and every listing when one came into or ran out of stock.
    pub(crate) fn stock_changed(&self, touched: Touched) {
        if let Some(cache) = &self.cache
            && !touched.products.is_empty()
        {
            cache.changed(crate::cache::Change::Stock { products: touched.products, listings: touched.listings });
        }
    }
}

/// The products a stock change touched, gathered in its transaction.
#[derive(Debug, Default)]
pub(crate) struct Touched {
    products: Vec<String>,
    /// One came into or ran out of stock.
    listings: bool,
}

impl Touched {
    pub(crate) fn of(product: String, listings: bool) -> Touched {
        Touched { products: vec![product], listings }
    }

    fn add(&mut self, (product, flipped): (String, bool)) {
        if !self.products.contains(&product) {
            self.products.push(product);
        }
        self.listings |= flipped;
    }
}

/// One line to hold: this many of this SKU.
#[derive(Debug, Clone)]
pub struct Line {
    pub sku: String,
    pub quantity: i64,
}

/// A reservation as checkout sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub order_id: String,
    pub state: String,
    pub expires_at_ms: i64,
    pub lines: Vec<(String, i64)>,
}

/// A SKU as checkout sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Offer {
    pub sku: String,
    pub variant_id: String,
    pub product_id: String,
    pub title: String,
    pub variant_title: String,
    pub category_ids: Vec<String>,
    /// The product is active (drafts and archived products cannot be bought).
    pub purchasable: bool,
    pub weight_grams: i64,
    /// Units that can be sold now; `None` when stock is not counted or backorders are allowed.
    pub available: Option<i64>,
    /// The price in the asked currency; `None` when it has none.
    pub price: Option<i64>,
}

/// The catalog's stock, for staff routes and for checkout (in process; an
/// HTTP adapter serves the scaled-out shape).
#[derive(Clone)]
pub struct Inventory {
    pub db: Db,
    pub reservation_ttl: Duration,
    /// Told about every stock change (in-stock flags are in public pages).
    pub cache: Option<std::sync::Arc<crate::cache::ResponseCache>>,
}

impl Inventory {
    /// Holds every line or none. Calling it again for the same order returns
    /// the first reservation (idempotent on the order id).
    pub async fn reserve(&self, order_id: &str, lines: &[Line]) -> Result<Reservation, CatalogError> {
        // One entry per SKU, in a fixed order, so concurrent reservations
        // lock rows in the same order.
        let mut wanted: BTreeMap<Sku, i64> = BTreeMap::new();
        for (i, line) in lines.iter().enumerate() {
            let sku = Sku::parse(&line.sku, &format!("lines[{i}].sku"))?;
            let q = domain::parse_quantity(line.quantity, &format!("lines[{i}].quantity"))?;
            *wanted.entry(sku).or_default() += q;
        }
        if wanted.is_empty() {
            return Err(domain::invalid("lines", "no_lines", "reserve at least one line").into());
        }
        let expires = now_ms() + self.reservation_ttl.as_millis() as i64;
        let mut tx = self.db.begin().await?;
        // Idempotent on the order id: a reservation already there is answered as it is.
        if !store::insert_reservation(&mut tx, order_id, expires).await? {
            tx.rollback().await?;
            return self.reservation(order_id).await;
        }
        let mut locations = None;
        let mut touched = Touched::default();
        for (sku, quantity) in &wanted {
            let sku = sku.as_str();
            let (facts, available) = store::stock_facts(&mut tx, sku).await?.ok_or_else(|| CatalogError::UnknownSku(sku.to_owned()))?;
            if !facts.rules.track {
                store::insert_reservation_line(&mut tx, order_id, sku, DEFAULT_LOCATION, *quantity).await?;
                continue;
            }
            // The first location that has them all, in one statement. On
            // SQLite, whose writes run one at a time, its answer is final;
            // on PostgreSQL a concurrent hold may have taken the units of
            // the location it chose, so one conditional update per location
            // decides.
            let mut held = store::hold_first_fit(&mut tx, sku, *quantity).await?;
            if held.is_none() && tx.dialect() == Dialect::Postgres {
                let locations = match &mut locations {
                    Some(l) => l,
                    None => locations.insert(store::location_order(&mut tx).await?),
                };
                for location in locations.iter() {
                    if let Some(level) = store::hold(&mut tx, sku, location, *quantity).await? {
                        held = Some((location.clone(), level));
                        break;
                    }
                }
            }
            if held.is_none() && facts.rules.backorder {
                held = store::hold_backorder(&mut tx, sku, DEFAULT_LOCATION, *quantity).await?.map(|l| (DEFAULT_LOCATION.to_owned(), l));
            }
            let Some((location, level)) = held else {
                // What is left, after the holds that won: on SQLite as the
                // facts were read in this transaction, on PostgreSQL read again.
                let available = match tx.dialect() {
                    Dialect::Sqlite => available,
                    Dialect::Postgres => store::available(&mut tx, sku).await?,
                };
                tx.rollback().await?;
                return Err(CatalogError::OutOfStock { sku: sku.to_owned(), available: available.max(0) });
            };
            store::insert_reservation_line(&mut tx, order_id, sku, &location, *quantity).await?;
            touched.add(announce(&mut tx, sku, &location, level, -quantity, &facts).await?);
        }
        tx.commit().await?;
        self.stock_changed(touched);
        // What was just written: one line per SKU, held until `expires`.
        Ok(Reservation {
            order_id: order_id.to_owned(),
            state: "held".into(),
            expires_at_ms: expires,
            lines: wanted.into_iter().map(|(sku, q)| (sku.as_str().to_owned(), q)).collect(),
        })
    }

    /// A reservation as it stands, read without taking the write lock.
    pub async fn reservation(&self, order_id: &str) -> Result<Reservation, CatalogError> {
        let (state, expires_at_ms, lines) =
            store::reservation(&self.db, order_id).await?.ok_or_else(|| CatalogError::ReservationNotFound(order_id.to_owned()))?;
        Ok(Reservation { order_id: order_id.to_owned(), state, expires_at_ms, lines })
    }

    /// The order was paid: the held units leave the shelf. Idempotent.
    pub async fn commit(&self, order_id: &str) -> Result<(), CatalogError> {
        let mut tx = self.db.begin().await?;
        if !store::settle_reservation(&mut tx, order_id, "committed").await? {
            // It was not held: say why.
            let state = store::reservation_state(&mut tx, order_id).await?;
            return match state.as_ref().map(|s| s.0.as_str()) {
                None => Err(CatalogError::ReservationNotFound(order_id.to_owned())),
                Some("committed") => Ok(()),
                Some("released") => Err(CatalogError::ReservationReleased(order_id.to_owned())),
                Some(_) => Err(CatalogError::Contention),
            };
        }
        let mut touched = Touched::default();
        for (sku, location, quantity, facts) in store::reservation_lines(&mut tx, order_id).await? {
            let Some(facts) = facts.filter(|f| f.rules.track) else { continue };
            let level =
                store::ship(&mut tx, &sku, &location, quantity, facts.rules.backorder).await?.ok_or(CatalogError::Contention)?;
            store::record(&mut tx, &LedgerEntry {
                sku: &sku,
                location: &location,
                delta: -quantity,
                on_hand_after: level.on_hand,
                reason: "sold",
                actor: None,
                reference: Some(order_id),
            })
            .await?;
            // Available does not change when held units ship.
            touched.add(announce(&mut tx, &sku, &location, level, 0, &facts).await?);
        }
        tx.commit().await?;
        self.stock_changed(touched);
        Ok(())
    }

    /// The order will not be paid: held units become available again. Idempotent.
    pub async fn release(&self, order_id: &str) -> Result<(), CatalogError> {
        let mut tx = self.db.begin().await?;
        if !store::settle_reservation(&mut tx, order_id, "released").await? {
            return match store::reservation_state(&mut tx, order_id).await? {
                None => Err(CatalogError::ReservationNotFound(order_id.to_owned())),
                Some((s, _)) if s == "committed" => Err(CatalogError::Contention),
                Some(_) => Ok(()),
            };
        }
        let mut touched = Touched::default();
        for (sku, location, quantity, facts) in store::reservation_lines(&mut tx, order_id).await? {
            let Some(facts) = facts.filter(|f| f.rules.track) else { continue };
            let level = store::unhold(&mut tx, &sku, &location, quantity).await?.ok_or(CatalogError::Contention)?;
            touched.add(announce(&mut tx, &sku, &location, level, quantity, &facts).await?);
        }
        tx.commit().await?;
        self.stock_changed(touched);
        Ok(())
    }

    /// Staff: received, damaged, returned or corrected units at a location
    /// (the default one when `None`).
    pub async fn adjust(
        &self,
        sku: &str,
        location: Option<&str>,
        delta: i64,
        reason: &str,
        actor: &str,
    ) -> Result<(i64, i64), CatalogError> {
        let sku = Sku::parse(sku, "sku")?;
        if delta == 0 || delta.abs() > 1_000_000_000 {
            return Err(domain::invalid("delta", "invalid_delta", "a non-zero number of units").into());
        }
        let location = location.unwrap_or(DEFAULT_LOCATION);
        let mut tx = self.db.begin().await?;
        if !store::location_exists(&mut tx, location).await? {
            return Err(domain::invalid("location", "unknown_location", "no such stock location").into());
        }
        let (facts, _) = store::stock_facts(&mut tx, sku.as_str())
            .await?
            .ok_or_else(|| CatalogError::UnknownSku(sku.as_str().to_owned()))?;
        let Some(level) = store::adjust(&mut tx, sku.as_str(), location, delta).await? else {
            let reserved = store::level_in(&mut tx, sku.as_str(), location).await?.map_or(0, |l| l.1);
            return Err(CatalogError::BelowReserved { reserved });
        };
        store::record(&mut tx, &LedgerEntry {
            sku: sku.as_str(),
            location,
            delta,
            on_hand_after: level.on_hand,
            reason,
            actor: Some(actor),
            reference: None,
        })
        .await?;
        let mut touched = Touched::default();
        touched.add(announce(&mut tx, sku.as_str(), location, level, delta, &facts).await?);
        tx.commit().await?;
        self.stock_changed(touched);
        Ok((level.on_hand, level.reserved))
    }

    /// Staff: a stocktake sets the count at a location; the difference goes
    /// in the ledger (under `reason`, `stocktake` from the API).
    pub async fn set_count(
        &self,
        sku: &str,
        location: Option<&str>,
        on_hand: i64,
        reason: &str,
        actor: &str,
    ) -> Result<(i64, i64), CatalogError> {
        if !(0..=1_000_000_000).contains(&on_hand) {
            return Err(domain::invalid("on_hand", "invalid_count", "0 or more units").into());
        }
        let parsed = Sku::parse(sku, "sku")?;
        let location = location.unwrap_or(DEFAULT_LOCATION);
        let current = store::levels(&self.db, parsed.as_str()).await?;
        if current.is_empty() {
            return Err(CatalogError::UnknownSku(parsed.as_str().to_owned()));
        }
        let now = current.iter().find(|l| l.0 == location).map_or((0, 0), |l| (l.1, l.2));
        if on_hand == now.0 {
            return Ok(now);
        }
        self.adjust(parsed.as_str(), Some(location), on_hand - now.0, reason, actor).await
    }

    /// What checkout needs to know about `skus`, priced in `currency`
    /// (unknown SKUs are left out).
    pub async fn offers(&self, skus: &[String], currency: &str) -> Result<Vec<Offer>, CatalogError> {
        let rows = store::offers(&self.db, skus, currency).await?;
        Ok(rows
            .into_iter()
            .map(|(sku, variant_id, product_id, title, variant_title, status, weight_grams, track, backorder, available, price, category_ids)| Offer {
                category_ids,
                sku,
                variant_id,
                product_id,
                title,
                variant_title,
                purchasable: status == "active",
                weight_grams,
                available: (track && !backorder).then_some(available.max(0)),
                price,
            })
            .collect())
    }

    /// Units come back to the shelf (a refund or cancellation with restock):
    /// received at the default location, recorded in the ledger under
    /// `reference`. Idempotent on (`sku`, `reference`): a retry does not count twice.
    pub async fn restock(&self, sku: &str, quantity: i64, reference: &str) -> Result<(), CatalogError> {
        let parsed = Sku::parse(sku, "sku")?;
        let q = domain::parse_quantity(quantity, "quantity")?;
        let mut tx = self.db.begin().await?;
        let (facts, _) = store::stock_facts(&mut tx, parsed.as_str())
            .await?
            .ok_or_else(|| CatalogError::UnknownSku(parsed.as_str().to_owned()))?;
        if !facts.rules.track || store::ledger_has(&mut tx, parsed.as_str(), reference, "restocked").await? {
            tx.rollback().await?;
            return Ok(());
        }
        let level = store::adjust(&mut tx, parsed.as_str(), DEFAULT_LOCATION, q).await?.ok_or(CatalogError::Contention)?;
        store::record(&mut tx, &LedgerEntry {
            sku: parsed.as_str(),
            location: DEFAULT_LOCATION,
            delta: q,
            on_hand_after: level.on_hand,
            reason: "restocked",
            actor: None,
            reference: Some(reference),
        })
        .await?;
        let mut touched = Touched::default();
        touched.add(announce(&mut tx, parsed.as_str(), DEFAULT_LOCATION, level, q, &facts).await?);
        tx.commit().await?;
        self.stock_changed(touched);
        Ok(())
    }

    /// Releases reservations past their time, until `shutdown`.
    pub async fn sweep(self, every: Duration, shutdown: CancellationToken) {
        platform::worker::every("reservation_sweeper".into(), every, shutdown, || self.release_expired()).await;
    }

    pub async fn release_expired(&self) -> Result<usize, CatalogError> {
        let expired = store::expired_reservations(&self.db, now_ms(), 500).await?;
        for order in &expired {
            self.release(order).await?;
        }
        Ok(expired.len())
    }
}

/// Writes `inventory.changed` (the level at `location`, and what is
/// available over all locations), and `low_stock` / `back_in_stock` when
/// the total available crossed a line, in the transaction of the change.
/// `level` is as the change's statement left it; `change` is how far the
/// change moved available, so what it was before follows. Answers the
/// product, and whether it came into or ran out of stock.
async fn announce(
    tx: &mut Tx,
    sku: &str,
    location: &str,
    level: store::Level,
    change: i64,
    facts: &store::StockFacts,
) -> Result<(String, bool), CatalogError> {
    let (product_id, variant_id, title, variant_title, slug) = &facts.names;
    let available = level.available();
    let available_before = available - change;
    let data = json!({"sku": sku, "location": location, "on_hand": level.on_hand, "reserved": level.reserved,
                      "available": available, "available_before": available_before, "product_id": product_id, "variant_id": variant_id,
                      "title": title, "variant_title": variant_title, "slug": slug});
    outbox::enqueue(tx, &Envelope::new("inventory.changed", sku, data.clone())).await?;
    let signals = domain::stock_signals(available_before, available, facts.rules.threshold);
    if signals.low_stock {
        outbox::enqueue(tx, &Envelope::new("inventory.low_stock", sku, data.clone())).await?;
    }
    if signals.back_in_stock {
        outbox::enqueue(tx, &Envelope::new("inventory.back_in_stock", sku, data)).await?;
    }
    Ok((product_id.clone(), (available_before > 0) != (available > 0)))
}

impl Inventory {
    /// Reservations held now, and the age in seconds of the oldest (0 when none).
    pub async fn held(&self) -> Result<(i64, f64), CatalogError> {
        let (count, oldest) = store::held_reservations(&self.db).await?;
        let age = oldest.map_or(0.0, |t| (time::OffsetDateTime::now_utc() - t).as_seconds_f64().max(0.0));
        Ok((count, age))
    }
}

/// `reservations_held` and `reservations_oldest_age_seconds`, read on the
/// metrics timer (see [`platform::gauges`]).
pub struct HeldReservations(pub Inventory);

#[async_trait::async_trait]
impl platform::gauges::Reading for HeldReservations {
    fn name(&self) -> &str {
        "catalog.reservations"
    }

    fn describe(&self) {
        metrics::describe_gauge!("reservations_held", "Stock reservations held for checkouts that are neither paid (committed) nor released yet");
        metrics::describe_gauge!("reservations_oldest_age_seconds", "Age in seconds of the oldest reservation still held (0 when none)");
    }

    async fn read(&self) -> Result<(), platform::service::BoxError> {
        let (count, age) = self.0.held().await?;
        metrics::gauge!("reservations_held").set(count as f64);
        metrics::gauge!("reservations_oldest_age_seconds").set(age);
        Ok(())
    }
}
