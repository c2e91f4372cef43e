//! The one error shape every route answers with (API-CONVENTIONS.md):
//! `{"error": {"type", "code", "message", "field"?}}` plus the matching status.

use std::borrow::Cow;
use std::fmt;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The broad class of an error; clients switch on `code` for the detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    InvalidRequest,
    Authentication,
    PaymentFailed,
    Authorization,
    NotFound,
    Conflict,
    RateLimited,
    Internal,
    /// 503: something the request needs (another service, the database)
    /// cannot be reached now; `Retry-After` says when to try again.
    Unavailable,
}

/// An error on its way to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: ErrorType,
    pub code: Cow<'static, str>,
    pub message: String,
    pub field: Option<String>,
    pub retry_after_secs: Option<u64>,
}

/// The body as it goes on the wire.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    #[serde(rename = "type")]
    pub kind: ErrorType,
    /// Stable snake_case code, e.g. `out_of_stock`.
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    fn new(
        status: StatusCode,
        kind: ErrorType,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code: code.into(),
            message: message.into(),
            field: None,
            retry_after_secs: None,
        }
    }

    /// 400: the request could not be read at all (malformed JSON, wrong content type).
    pub fn bad_request(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorType::InvalidRequest, code, message)
    }

    /// 422: the request was read but a value is not acceptable.
    pub fn invalid(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorType::InvalidRequest, code, message)
    }

    pub fn payload_too_large(limit_bytes: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorType::InvalidRequest,
            "body_too_large",
            format!("request bodies are limited to {limit_bytes} bytes"),
        )
    }

    pub fn unauthenticated(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorType::Authentication, code, message)
    }

    pub fn payment_failed(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYMENT_REQUIRED, ErrorType::PaymentFailed, code, message)
    }

    pub fn forbidden(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorType::Authorization, code, message)
    }

    pub fn not_found(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorType::NotFound, code, message)
    }

    pub fn conflict(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, ErrorType::Conflict, code, message)
    }

    /// 429 with a code of its own (`account_locked`).
    pub fn too_many(code: impl Into<Cow<'static, str>>, message: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, ErrorType::RateLimited, code, message);
        e.retry_after_secs = Some(retry_after_secs.max(1));
        e
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorType::RateLimited,
            "rate_limited",
            format!("too many requests; retry in {retry_after_secs} s"),
        );
        e.retry_after_secs = Some(retry_after_secs.max(1));
        e
    }

    /// An internal error (500). The cause is logged here, inside the span of the
    /// request (so with its id), and is never sent to the client.
    pub fn internal(cause: &dyn fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::Internal,
            "internal",
            "something went wrong on our side; the request id identifies it in our logs",
        )
    }

    /// 503 `service_unavailable` with `Retry-After`: `what` (`the catalog`,
    /// `the database`) cannot be reached now. The cause is logged here,
    /// inside the span of the request, and never sent to the client.
    pub fn unavailable(what: &str, cause: &dyn fmt::Display, retry_after_secs: u64) -> Self {
        tracing::warn!(error = %cause, unavailable = what, "a dependency is unavailable");
        let retry_after_secs = retry_after_secs.max(1);
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::Unavailable,
            "service_unavailable",
            format!("{what} cannot be reached right now; retry in {retry_after_secs} s"),
        );
        e.retry_after_secs = Some(retry_after_secs);
        e
    }

    /// Names the request field at fault (`items[0].quantity`).
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                kind: self.kind,
                code: self.code.to_string(),
                message: self.message.clone(),
                field: self.field.clone(),
            },
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// An error and its causes, outermost first, each said once: "error sending
/// request: connection refused".
pub fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let said = inner.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_documented_shape() {
        let e = ApiError::invalid("out_of_stock", "Only 2 left").with_field("items[0].quantity");
        let json = serde_json::to_value(e.body()).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({"error": {"type": "invalid_request", "code": "out_of_stock",
                "message": "Only 2 left", "field": "items[0].quantity"}})
        );
    }

    #[test]
    fn rate_limits_carry_retry_after() {
        let response = ApiError::rate_limited(7).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response.headers().get(header::RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"7"[..])
        );
    }

    #[test]
    fn an_outage_is_503_with_retry_after_and_hides_its_cause() {
        let response = ApiError::unavailable("the catalog", &"connect to 10.0.0.7:8080 refused", 5).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers().get(header::RETRY_AFTER).map(|v| v.as_bytes()), Some(&b"5"[..]));
        let e = ApiError::unavailable("the database", &"10.0.0.7", 0);
        assert_eq!((e.code.as_ref(), e.retry_after_secs), ("service_unavailable", Some(1)));
        assert!(!e.message.contains("10.0.0.7") && e.message.contains("the database"), "{}", e.message);
        let json = serde_json::to_value(e.body()).unwrap_or_default();
        assert_eq!(json["error"]["type"], "unavailable");
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let e = ApiError::internal(&"password=hunter2 in a panic");
        assert!(!e.message.contains("hunter2"));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
