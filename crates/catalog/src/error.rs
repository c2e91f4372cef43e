//! The catalog's errors and their one mapping to the API error shape.

use kernel::ApiError;

use crate::domain::Invalid;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("no such product")]
    ProductNotFound,
    #[error("no such category")]
    CategoryNotFound,
    #[error("this was ordered; archive it instead (status: archived)")]
    ProductWasOrdered,
    #[error("a product keeps at least one variant")]
    LastVariant,
    #[error("the category has sub-categories; move or delete them first")]
    CategoryHasChildren,
    #[error("no variant has SKU {0}")]
    UnknownSku(String),
    #[error("SKU {0} exists already")]
    SkuTaken(String),
    #[error("the slug {0} is taken")]
    SlugTaken(String),
    #[error("only {available} of {sku} available")]
    OutOfStock { sku: String, available: i64 },
    #[error("this would leave less on hand than is reserved ({reserved})")]
    BelowReserved { reserved: i64 },
    #[error("the reservation of {0} was released or expired")]
    ReservationReleased(String),
    #[error("no reservation for {0}")]
    ReservationNotFound(String),
    #[error("the stock changed meanwhile; try again")]
    Contention,
    #[error("no such picture")]
    MediaNotFound,
    #[error("no such stock location")]
    LocationNotFound,
    #[error("the location is the default or still holds stock")]
    LocationInUse,
    #[error("larger than {0} bytes")]
    TooLarge(usize),
    #[error("media store: {0}")]
    Media(String),
    #[error(transparent)]
    Store(#[from] platform::DbError),
}

impl From<&CatalogError> for ApiError {
    fn from(e: &CatalogError) -> Self {
        match e {
            CatalogError::Invalid(i) => ApiError::invalid(i.code, i.reason.clone()).with_field(i.field.clone()),
            CatalogError::ProductNotFound => ApiError::not_found("product_not_found", e.to_string()),
            CatalogError::CategoryNotFound => ApiError::not_found("category_not_found", e.to_string()),
            CatalogError::ProductWasOrdered => ApiError::conflict("was_ordered", e.to_string()),
            CatalogError::LastVariant => ApiError::conflict("last_variant", e.to_string()),
            CatalogError::CategoryHasChildren => ApiError::conflict("category_has_children", e.to_string()),
            CatalogError::UnknownSku(_) => ApiError::not_found("sku_not_found", e.to_string()),
            CatalogError::SkuTaken(_) => ApiError::conflict("sku_taken", e.to_string()),
            CatalogError::SlugTaken(_) => ApiError::conflict("slug_taken", e.to_string()).with_field("slug"),
            CatalogError::OutOfStock { .. } => ApiError::conflict("out_of_stock", e.to_string()),
            CatalogError::BelowReserved { .. } => ApiError::conflict("below_reserved", e.to_string()),
            CatalogError::ReservationReleased(_) => ApiError::conflict("reservation_released", e.to_string()),
            CatalogError::ReservationNotFound(_) => ApiError::not_found("reservation_not_found", e.to_string()),
            CatalogError::Contention => ApiError::conflict("contention", e.to_string()),
            CatalogError::MediaNotFound => ApiError::not_found("media_not_found", e.to_string()),
            CatalogError::LocationNotFound => ApiError::not_found("location_not_found", e.to_string()),
            CatalogError::LocationInUse => ApiError::conflict("location_in_use", e.to_string()),
            CatalogError::TooLarge(limit) => ApiError::payload_too_large(*limit).with_field("file"),
            CatalogError::Media(cause) => ApiError::internal(cause),
            CatalogError::Store(cause) => ApiError::from(cause),
        }
    }
}

impl axum::response::IntoResponse for CatalogError {
    fn into_response(self) -> axum::response::Response {
        ApiError::from(&self).into_response()
    }
}
