//! What can go wrong in the orders service, and the one place each case
//! becomes the documented error body.

use axum::response::{IntoResponse, Response};
use kernel::ApiError;
use platform::db::DbError;

use crate::domain::{BadTransition, Invalid, Refusal, Shortfall, shortfall_message};
use crate::gateway::GatewayError;
use crate::PortError;

#[derive(Debug, thiserror::Error)]
pub enum OrdersError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("no such cart")]
    CartNotFound,
    #[error("no such item in this cart")]
    ItemNotFound,
    #[error("no such order")]
    OrderNotFound,
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("this cart has been checked out")]
    CartClosed,
    #[error("the cart is empty")]
    EmptyCart,
    #[error("checkout needs {what}")]
    Missing { field: &'static str, what: &'static str },
    #[error("no product has the SKU {0}")]
    UnknownSku(String),
    #[error("{0} is not for sale")]
    NotPurchasable(String),
    #[error("{0} has no price in this cart's currency")]
    NoPrice(String),
    #[error("only {available} of {sku} left")]
    OutOfStock { sku: String, available: i64 },
    /// Fewer units of a product can be bought than a cart asks for (named as shoppers know it).
    #[error("{}", shortfall_message(name, *shortfall))]
    NotEnoughStock { name: String, shortfall: Shortfall },
    /// The total a checkout was sent with is not what it would charge.
    #[error("the total is now {} (not the {} shown); check it and pay again", shown(*now, currency), shown(*shown_total, currency))]
    TotalChanged { now: i64, shown_total: i64, currency: String },
    #[error("prices changed since the cart was shown: {0}; check the cart and try again")]
    PriceChanged(String),
    #[error("the chosen shipping method does not serve this address")]
    ShippingUnavailable,
    #[error("no such discount code")]
    UnknownCode,
    #[error("{0}")]
    CodeRefused(Refusal),
    #[error("this code was already used as many times as allowed for you")]
    CodeLimitReached,
    #[error(transparent)]
    RateLimited(#[from] platform::limit::Limited),
    #[error("{message}")]
    PaymentDeclined { code: String, message: String },
    #[error("the payment provider `{0}` is not available")]
    UnknownProvider(String),
    #[error("this form is out of date or was not sent from its page; reload the page and try again")]
    CsrfRejected,
    #[error("{message}")]
    PaymentRefused { code: String, message: String },
    #[error(transparent)]
    Transition(#[from] BadTransition),
    /// A code (`order_not_cancellable`) and the reason in words.
    #[error("{1}")]
    Conflict(&'static str, String),
    #[error("a refund of {} is more than the {} that can still be refunded", shown(*asked, currency), shown(*left, currency))]
    RefundTooLarge { asked: i64, left: i64, currency: String },
    #[error("the catalog is unavailable: {0}")]
    Catalog(String),
    #[error("the payment provider is unavailable: {0}")]
    Gateway(String),
    #[error(transparent)]
    Store(#[from] DbError),
}

impl From<GatewayError> for OrdersError {
    fn from(e: GatewayError) -> Self {
        match e {
            GatewayError::Refused { code, message } => OrdersError::PaymentRefused { code, message },
            GatewayError::Store(e) => OrdersError::Store(e),
            other => OrdersError::Gateway(other.to_string()),
        }
    }
}

impl From<PortError> for OrdersError {
    fn from(e: PortError) -> Self {
        match e {
            PortError::OutOfStock { sku, available } => OrdersError::OutOfStock { sku, available },
            PortError::UnknownSku(sku) => OrdersError::UnknownSku(sku),
            PortError::Unavailable(why) => OrdersError::Catalog(why),
        }
    }
}

/// How long a client is asked to wait when the catalog cannot be reached.
const CATALOG_RETRY_AFTER_SECS: u64 = 5;

impl From<&OrdersError> for ApiError {
    fn from(e: &OrdersError) -> Self {
        let msg = e.to_string();
        match e {
            OrdersError::Invalid(i) => ApiError::invalid(i.code, msg).with_field(i.field.clone()),
            OrdersError::CartNotFound => ApiError::not_found("cart_not_found", msg),
            OrdersError::ItemNotFound => ApiError::not_found("item_not_found", msg),
            OrdersError::OrderNotFound => ApiError::not_found("order_not_found", msg),
            OrdersError::NotFound(what) => ApiError::not_found(format!("{}_not_found", what.replace(' ', "_")), msg),
            OrdersError::CartClosed => ApiError::conflict("cart_closed", msg),
            OrdersError::EmptyCart => ApiError::invalid("cart_empty", msg).with_field("items"),
            OrdersError::Missing { field, .. } => ApiError::invalid("checkout_incomplete", msg).with_field(*field),
            OrdersError::UnknownSku(_) => ApiError::invalid("unknown_sku", msg).with_field("sku"),
            OrdersError::NotPurchasable(_) => ApiError::conflict("not_purchasable", msg),
            OrdersError::NoPrice(_) => ApiError::conflict("not_priced", msg),
            OrdersError::OutOfStock { .. } => ApiError::conflict("out_of_stock", msg),
            OrdersError::NotEnoughStock { .. } => ApiError::conflict("out_of_stock", msg).with_field("quantity"),
            OrdersError::TotalChanged { .. } => ApiError::conflict("total_changed", msg).with_field("expected_total"),
            OrdersError::PriceChanged(_) => ApiError::conflict("price_changed", msg),
            OrdersError::ShippingUnavailable => {
                ApiError::invalid("shipping_method_unavailable", msg).with_field("shipping_method")
            }
            OrdersError::UnknownCode => ApiError::invalid("discount_not_found", msg).with_field("code"),
            OrdersError::CodeRefused(r) => ApiError::invalid(r.code(), msg).with_field("code"),
            OrdersError::CodeLimitReached => ApiError::conflict("discount_limit_reached", msg),
            OrdersError::RateLimited(limited) => ApiError::from(*limited),
            OrdersError::PaymentDeclined { code, .. } => ApiError::payment_failed(code.clone(), msg),
            OrdersError::UnknownProvider(_) => ApiError::invalid("unknown_provider", msg).with_field("payment.provider"),
            OrdersError::CsrfRejected => ApiError::forbidden("csrf_failed", msg),
            OrdersError::PaymentRefused { code, .. } => ApiError::invalid(code.clone(), msg).with_field("payment.token"),
            OrdersError::Transition(_) => ApiError::conflict("invalid_transition", msg),
            OrdersError::Conflict(code, _) => ApiError::conflict(*code, msg),
            OrdersError::RefundTooLarge { .. } => ApiError::conflict("refund_exceeds_captured", msg),
            // The catalog out of reach (over HTTP, or its database in process): retry shortly.
            OrdersError::Catalog(cause) => ApiError::unavailable("the catalog", cause, CATALOG_RETRY_AFTER_SECS),
            OrdersError::Store(cause) => ApiError::from(cause),
            OrdersError::Gateway(_) => ApiError::internal(e),
        }
    }
}

impl IntoResponse for OrdersError {
    fn into_response(self) -> Response {
        ApiError::from(&self).into_response()
    }
}

/// An amount in minor units as people read it: `30.74 USD`.
fn shown(amount: i64, currency: &str) -> String {
    match kernel::money::Currency::parse(currency) {
        Ok(c) => c.format_with_code(amount),
        Err(_) => format!("{amount} (minor units of {currency})"),
    }
}
