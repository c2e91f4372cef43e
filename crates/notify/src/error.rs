//! What can go wrong in the notify service, and the one place each case
//! becomes the documented error body.

use axum::response::{IntoResponse, Response};
use kernel::ApiError;
use platform::db::DbError;

use crate::templates::TemplateError;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("{message}")]
    Invalid { field: String, code: &'static str, message: String },
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("{1}")]
    Conflict(&'static str, String),
    #[error("the template's {0}")]
    Template(#[from] TemplateError),
    #[error("the catalog is unavailable: {0}")]
    Catalog(String),
    /// A secret could not be sealed or opened.
    #[error("a message's secret: {0}")]
    Secret(String),
    #[error(transparent)]
    Store(#[from] DbError),
    #[error(transparent)]
    RateLimited(#[from] platform::limit::Limited),
}

pub fn invalid(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> NotifyError {
    NotifyError::Invalid { field: field.into(), code, message: message.into() }
}

impl From<&NotifyError> for ApiError {
    fn from(e: &NotifyError) -> Self {
        match e {
            NotifyError::Invalid { field, code, message } => ApiError::invalid(*code, message.clone()).with_field(field.clone()),
            NotifyError::NotFound(what) => ApiError::not_found("not_found", format!("no such {what}")),
            NotifyError::Conflict(code, message) => ApiError::conflict(*code, message.clone()),
            NotifyError::Template(t) => ApiError::invalid("template_error", t.to_string()).with_field(t.part),
            NotifyError::RateLimited(limited) => ApiError::from(*limited),
            NotifyError::Catalog(cause) => ApiError::unavailable("the catalog", cause, 5),
            NotifyError::Store(cause) => ApiError::from(cause),
            NotifyError::Secret(_) => ApiError::internal(e),
        }
    }
}

impl IntoResponse for NotifyError {
    fn into_response(self) -> Response {
        ApiError::from(&self).into_response()
    }
}
