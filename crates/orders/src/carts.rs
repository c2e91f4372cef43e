//! Carts: who may touch one, what is in it, and what it costs now, priced
//! from the catalog at the moment it is shown. Changes since the shopper
//! last looked (a new price, stock gone) are reported as notices; checkout
//! refuses to charge a price the shopper has not seen.

use std::collections::BTreeMap;

use kernel::address::Address;
use kernel::id::{CartId, CartItemId};
use platform::auth::constant_time_eq;
use platform::db::now_ms;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::domain::{self, PricedLine, Totals, TotalsInput};
use crate::error::OrdersError;
use crate::service::Orders;
use crate::store::{self, CartField, CartRow, DiscountRow, ItemRow, ShippingRow};
use crate::Offer;

/// Most units of one SKU a cart may hold.
pub const MAX_QUANTITY: i64 = 999;

/// Who is asking for a cart: a signed-in customer, and/or the holder of a
/// guest cart's secret.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub user: Option<String>,
    pub secret: Option<String>,
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A random secret, base32-ish, for guest carts and order lookups.
pub fn new_secret() -> String {
    let a = kernel::id::Uuid::new_v4().simple().to_string();
    let b = kernel::id::Uuid::new_v4().simple().to_string();
    format!("{a}{b}")
}

/// A cart line as priced now.
#[derive(Debug, Clone, Serialize)]
pub struct PricedItem {
    pub item: ItemRowView,
    pub offer: Option<Offer>,
    /// The catalog's price now, when it has one.
    pub price: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ItemRowView {
    pub id: String,
    pub sku: String,
    pub quantity: i64,
    /// The price the shopper was last shown.
    pub seen_price: Option<i64>,
}

impl From<ItemRow> for ItemRowView {
    fn from(r: ItemRow) -> Self {
        ItemRowView { id: r.id, sku: r.sku, quantity: r.quantity, seen_price: r.unit_price }
    }
}

/// Something the shopper should know about the cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Notice {
    /// `price_changed`, `out_of_stock`, `unavailable`, `not_priced`,
    /// `discount_removed`, `shipping_method_unavailable`.
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    pub message: String,
}

fn notice(code: &str, sku: Option<&str>, message: String) -> Notice {
    Notice { code: code.into(), sku: sku.map(str::to_owned), message }
}

/// A cart with everything worked out.
#[derive(Debug, Clone)]
pub struct Priced {
    pub cart: CartRow,
    pub items: Vec<PricedItem>,
    pub shipping_address: Option<Address>,
    pub billing_address: Option<Address>,
    pub method: Option<ShippingRow>,
    /// The method's price for this cart, when it serves the address.
    pub shipping_quote: Option<i64>,
    pub discount: Option<DiscountRow>,
    pub totals: Totals,
    pub notices: Vec<Notice>,
    pub weight_grams: i64,
}

pub fn parse_address(json: Option<&str>) -> Result<Option<Address>, OrdersError> {
    json.map(|j| serde_json::from_str(j).map_err(|e| OrdersError::Store(platform::db::DbError::Corrupt(format!("address: {e}")))))
        .transpose()
}

impl Orders {
    /// The cart, if `access` may see it (anyone else gets the same 404).
    pub async fn cart_for(&self, id: &str, access: &Access) -> Result<CartRow, OrdersError> {
        CartId::parse(id).map_err(|_| OrdersError::CartNotFound)?;
        let cart = store::cart(&self.db, id).await?.ok_or(OrdersError::CartNotFound)?;
        if allowed(&cart, access) { Ok(cart) } else { Err(OrdersError::CartNotFound) }
    }

    /// [`Self::cart_for`] with the cart's items, read together (for [`Self::price_items`]).
    pub async fn cart_and_items_for(&self, id: &str, access: &Access) -> Result<(CartRow, Vec<ItemRow>), OrdersError> {
        CartId::parse(id).map_err(|_| OrdersError::CartNotFound)?;
        let (cart, items) = store::cart_with_items(&self.db, id).await?.ok_or(OrdersError::CartNotFound)?;
        if allowed(&cart, access) { Ok((cart, items)) } else { Err(OrdersError::CartNotFound) }
    }

    fn open(cart: &CartRow) -> Result<(), OrdersError> {
        if cart.status == "open" { Ok(()) } else { Err(OrdersError::CartClosed) }
    }

    /// A new cart: a customer's open cart is returned instead of a second
    /// one. The secret of a guest cart is returned once.
    pub async fn create_cart(&self, user: Option<&str>) -> Result<(CartRow, Option<String>, bool), OrdersError> {
        if let Some(user) = user
            && let Some(cart) = store::open_cart_of(&self.db, user).await?
        {
            return Ok((cart, None, false));
        }
        let id = CartId::new().to_string();
        let secret = user.is_none().then(new_secret);
        store::insert_cart(&self.db, &id, secret.as_deref().map(hash_secret).as_deref(), user, &self.settings.currency).await?;
        let cart = store::cart(&self.db, &id).await?.ok_or(OrdersError::CartNotFound)?;
        Ok((cart, secret, true))
    }

    pub async fn add_item(&self, cart: &CartRow, sku: &str, quantity: i64) -> Result<(), OrdersError> {
        Self::open(cart)?;
        let quantity = domain::parse_quantity(quantity, "quantity")?;
        let sku = sku.trim().to_uppercase();
        let offer = self.catalog()?.offers(std::slice::from_ref(&sku), &cart.currency).await?.into_iter().next();
        let offer = offer.ok_or_else(|| OrdersError::UnknownSku(sku.clone()))?;
        if !offer.purchasable {
            return Err(OrdersError::NotPurchasable(sku));
        }
        let price = offer.price.ok_or_else(|| OrdersError::NoPrice(sku.clone()))?;
        // What the cart would hold is checked against what can be bought now
        // (checkout holds the stock; this only spares the shopper a cart that cannot be).
        let in_cart = store::items(&self.db, &cart.id).await?.iter().find(|i| i.sku == offer.sku).map_or(0, |i| i.quantity);
        Self::check_stock(&offer, (in_cart + quantity).min(MAX_QUANTITY), in_cart)?;
        let id = CartItemId::new().to_string();
        store::add_item(&self.db, &cart.id, &id, &offer.sku, quantity, Some(price), MAX_QUANTITY).await?;
        Ok(())
    }

    pub async fn set_quantity(&self, cart: &CartRow, item: &str, quantity: i64) -> Result<(), OrdersError> {
        Self::open(cart)?;
        let quantity = domain::parse_quantity(quantity, "quantity")?;
        let items = store::items(&self.db, &cart.id).await?;
        let row = items.iter().find(|i| i.id == item).ok_or(OrdersError::ItemNotFound)?;
        let offer = self.catalog()?.offers(std::slice::from_ref(&row.sku), &cart.currency).await?.into_iter().next();
        if let Some(offer) = &offer {
            Self::check_stock(offer, quantity, 0)?;
        }
        // Changing a line is looking at it: its current price is now seen.
        let price = offer.and_then(|o| o.price);
        store::set_quantity(&self.db, &cart.id, item, quantity, price.or(row.unit_price)).await?;
        Ok(())
    }

    /// Whether `wanted` units of `offer` can be bought (backorders and
    /// uncounted stock have no cap), refused with the product's name.
    fn check_stock(offer: &Offer, wanted: i64, in_cart: i64) -> Result<(), OrdersError> {
        domain::check_stock(wanted, offer.available, in_cart)
            .map_err(|shortfall| OrdersError::NotEnoughStock { name: domain::item_name(&offer.title, &offer.variant_title), shortfall })
    }

    pub async fn remove_item(&self, cart: &CartRow, item: &str) -> Result<(), OrdersError> {
        Self::open(cart)?;
        if store::remove_item(&self.db, &cart.id, item).await? { Ok(()) } else { Err(OrdersError::ItemNotFound) }
    }

    pub async fn set_email(&self, cart: &CartRow, email: &str) -> Result<(), OrdersError> {
        let email = domain::parse_email(email, "email")?;
        self.set_field(cart, CartField::Email, Some(&email)).await
    }

    pub async fn set_address(&self, cart: &CartRow, billing: bool, address: Address) -> Result<(), OrdersError> {
        let address = address.normalise().map_err(|e| domain::invalid(e.field, "invalid_address", e.reason))?;
        let json = serde_json::to_string(&address).map_err(|e| OrdersError::Store(platform::db::DbError::Corrupt(e.to_string())))?;
        let field = if billing { CartField::BillingAddress } else { CartField::ShippingAddress };
        self.set_field(cart, field, Some(&json)).await
    }

    pub async fn set_shipping_method(&self, cart: &CartRow, id: &str) -> Result<(), OrdersError> {
        let method = store::shipping_method(&self.db, id).await?.filter(|m| m.active);
        let Some(method) = method else {
            return Err(domain::invalid("id", "unknown_shipping_method", "no such shipping method").into());
        };
        let priced = self.price(cart.clone()).await?;
        let country = priced.shipping_address.as_ref().map(|a| a.country.clone()).ok_or(OrdersError::Missing {
            field: "shipping_address",
            what: "a shipping address before a shipping method",
        })?;
        let goods = priced.totals.subtotal - priced.totals.discount;
        if method.method.quote(&country, &cart.currency, goods, priced.weight_grams).is_none() {
            return Err(OrdersError::ShippingUnavailable);
        }
        self.set_field(cart, CartField::ShippingMethod, Some(id)).await
    }

    pub async fn apply_code(&self, cart: &CartRow, code: &str) -> Result<(), OrdersError> {
        let code = domain::parse_code(code, "code")?;
        let discount = store::discount_by_code(&self.db, &code).await?.ok_or(OrdersError::UnknownCode)?;
        let priced = self.price(cart.clone()).await?;
        let lines = priced_lines(&priced.items);
        discount.rule.check(&lines, &cart.currency, now_ms()).map_err(OrdersError::CodeRefused)?;
        self.set_field(cart, CartField::DiscountCode, Some(&code)).await
    }

    pub async fn remove_code(&self, cart: &CartRow) -> Result<(), OrdersError> {
        self.set_field(cart, CartField::DiscountCode, None).await
    }

    async fn set_field(&self, cart: &CartRow, field: CartField, value: Option<&str>) -> Result<(), OrdersError> {
        if store::set_cart_field(&self.db, &cart.id, field, value).await? { Ok(()) } else { Err(OrdersError::CartClosed) }
    }

    /// A signed-in customer takes a guest cart: its items join their open
    /// cart, or it becomes their cart when they have none.
    pub async fn claim(&self, guest: &CartRow, user: &str) -> Result<CartRow, OrdersError> {
        Self::open(guest)?;
        if guest.user_id.as_deref() == Some(user) {
            return Ok(guest.clone());
        }
        let target = match store::open_cart_of(&self.db, user).await? {
            Some(mine) if mine.id != guest.id => {
                if !store::merge_carts(&self.db, &guest.id, &mine.id, MAX_QUANTITY).await? {
                    return Err(OrdersError::CartClosed);
                }
                mine.id
            }
            _ => {
                if !store::adopt_cart(&self.db, &guest.id, user).await? {
                    return Err(OrdersError::CartClosed);
                }
                guest.id.clone()
            }
        };
        store::cart(&self.db, &target).await?.ok_or(OrdersError::CartNotFound)
    }

    /// Prices a cart with the catalog's prices now; never fails for a
    /// problem the shopper can fix (those become notices).
    pub async fn price(&self, cart: CartRow) -> Result<Priced, OrdersError> {
        let rows = store::items(&self.db, &cart.id).await?;
        self.price_items(cart, rows).await
    }

    /// [`Self::price`] of a cart whose items were read with it.
    pub async fn price_items(&self, cart: CartRow, rows: Vec<ItemRow>) -> Result<Priced, OrdersError> {
        let skus: Vec<String> = rows.iter().map(|r| r.sku.clone()).collect();
        let offers: BTreeMap<String, Offer> = if skus.is_empty() {
            BTreeMap::new()
        } else {
            self.catalog()?.offers(&skus, &cart.currency).await?.into_iter().map(|o| (o.sku.clone(), o)).collect()
        };
        let mut notices = Vec::new();
        let mut items = Vec::with_capacity(rows.len());
        let mut weight_grams = 0;
        for row in rows {
            let offer = offers.get(&row.sku).cloned();
            let price = offer.as_ref().filter(|o| o.purchasable).and_then(|o| o.price);
            match &offer {
                None => notices.push(notice("unavailable", Some(&row.sku), format!("{} is no longer sold", row.sku))),
                Some(o) if !o.purchasable => {
                    notices.push(notice("unavailable", Some(&row.sku), format!("{} is no longer sold", o.title)))
                }
                Some(o) if o.price.is_none() => {
                    notices.push(notice("not_priced", Some(&row.sku), format!("{} has no price in {}", o.title, cart.currency)))
                }
                Some(o) => {
                    if let (Some(seen), Some(now)) = (row.unit_price, o.price)
                        && seen != now
                    {
                        notices.push(notice(
                            "price_changed",
                            Some(&row.sku),
                            format!("the price of {} changed from {seen} to {now}", o.title),
                        ));
                    }
                    if let Some(available) = o.available
                        && available < row.quantity
                    {
                        notices.push(notice(
                            "out_of_stock",
                            Some(&row.sku),
                            format!("only {} of {} left", available.max(0), o.title),
                        ));
                    }
                    weight_grams += o.weight_grams * row.quantity;
                }
            }
            items.push(PricedItem { item: row.into(), offer, price });
        }
        let shipping_address = parse_address(cart.shipping_address.as_deref())?;
        let billing_address = parse_address(cart.billing_address.as_deref())?;
        let lines = priced_lines(&items);
        let mut discount = None;
        if let Some(code) = &cart.discount_code {
            match store::discount_by_code(&self.db, code).await? {
                Some(d) => match d.rule.check(&lines, &cart.currency, now_ms()) {
                    Ok(()) => discount = Some(d),
                    Err(refusal) => notices.push(notice("discount_removed", None, format!("{code}: {refusal}"))),
                },
                None => notices.push(notice("discount_removed", None, format!("{code} no longer exists"))),
            }
        }
        let (tax, chosen) = match (&shipping_address, &cart.shipping_method_id) {
            (Some(a), Some(id)) => store::tax_and_method(&self.db, &a.country, a.region.as_deref(), id).await?,
            (Some(a), None) => (store::tax_for(&self.db, &a.country, a.region.as_deref()).await?, None),
            (None, Some(id)) => (domain::TaxRule::default(), store::shipping_method(&self.db, id).await?),
            (None, None) => (domain::TaxRule::default(), None),
        };
        // The goods' price after discount decides free shipping.
        let goods = domain::totals(&TotalsInput {
            lines: &lines,
            discount: discount.as_ref().map(|d| &d.rule),
            shipping: None,
            tax: domain::TaxRule::default(),
            prices_include_tax: self.settings.prices_include_tax,
        });
        let mut method = None;
        let mut shipping_quote = None;
        if cart.shipping_method_id.is_some() {
            method = chosen.filter(|m| m.active);
            shipping_quote = match (&method, &shipping_address) {
                (Some(m), Some(a)) => m.method.quote(&a.country, &cart.currency, goods.subtotal - goods.discount, weight_grams),
                _ => None,
            };
            if shipping_quote.is_none() {
                notices.push(notice("shipping_method_unavailable", None, "the chosen shipping method does not serve this cart".into()));
            }
        }
        let totals = domain::totals(&TotalsInput {
            lines: &lines,
            discount: discount.as_ref().map(|d| &d.rule),
            shipping: shipping_quote,
            tax,
            prices_include_tax: self.settings.prices_include_tax,
        });
        Ok(Priced { cart, items, shipping_address, billing_address, method, shipping_quote, discount, totals, notices, weight_grams })
    }

    /// The countries the shop's active shipping methods (in its currency) serve, sorted.
    pub async fn shipping_countries(&self) -> Result<Vec<String>, OrdersError> {
        let served: std::collections::BTreeSet<String> = store::shipping_methods(&self.db)
            .await?
            .into_iter()
            .filter(|m| m.active && m.method.currency == self.settings.currency)
            .flat_map(|m| m.method.countries)
            .collect();
        Ok(served.into_iter().collect())
    }

    /// The methods that serve the cart's address, with their price for it.
    pub async fn shipping_options(&self, priced: &Priced) -> Result<Vec<(ShippingRow, i64)>, OrdersError> {
        let Some(address) = &priced.shipping_address else {
            return Err(OrdersError::Missing { field: "shipping_address", what: "a shipping address" });
        };
        let goods = priced.totals.subtotal - priced.totals.discount;
        Ok(store::shipping_methods(&self.db)
            .await?
            .into_iter()
            .filter(|m| m.active)
            .filter_map(|m| {
                let price = m.method.quote(&address.country, &priced.cart.currency, goods, priced.weight_grams)?;
                Some((m, price))
            })
            .collect())
    }
}

/// Whether `access` reaches `cart`: its owner, or for a guest cart its secret.
fn allowed(cart: &CartRow, access: &Access) -> bool {
    match (&cart.user_id, &cart.secret_hash) {
        (Some(owner), _) => access.user.as_deref() == Some(owner.as_str()),
        (None, Some(hash)) => access.secret.as_deref().is_some_and(|s| constant_time_eq(hash_secret(s).as_bytes(), hash.as_bytes())),
        (None, None) => false,
    }
}

/// The lines the totals work on (lines without a price count for nothing).
pub fn priced_lines(items: &[PricedItem]) -> Vec<PricedLine> {
    items
        .iter()
        .map(|i| PricedLine {
            product_id: i.offer.as_ref().map(|o| o.product_id.clone()).unwrap_or_default(),
            category_ids: i.offer.as_ref().map(|o| o.category_ids.clone()).unwrap_or_default(),
            unit_price: i.price.unwrap_or(0),
            quantity: i.item.quantity,
        })
        .collect()
}
