//! Auth's routes for the other processes of the shop (`/internal/v1/…`),
//! guarded by `auth.service_token` (closed while it is unset): API keys
//! resolved for services that run elsewhere.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use kernel::ApiError;
use kernel::error::ErrorBody;
use platform::auth::{API_KEY_INACTIVE, ResolveApiKey, ResolvedApiKey, Service, ServiceTokenGuarded};
use platform::http::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::service::Auth;

/// The largest body the route reads: a key is at most
/// [`platform::auth::API_KEY_MAX_LEN`] characters.
const MAX_BODY_BYTES: usize = 1024;

#[derive(Clone)]
pub struct Internal {
    pub auth: Auth,
    pub token: Option<Arc<str>>,
}

/// The routes answer callers holding `auth.service_token`.
impl ServiceTokenGuarded for Internal {
    fn service_token(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

pub fn router(internal: Internal) -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(resolve_api_key)).with_state(internal)
}

/// The principal an API key stands for, as a process with auth resolves it:
/// its creator, and the key's permissions the creator still holds. 404
/// `api_key_inactive` for a key that is unknown, revoked or expired, or
/// whose creator is disabled.
#[utoipa::path(post, path = "/internal/v1/api-keys/resolve", tag = "internal", request_body = ResolveApiKey,
    responses((status = 200, body = ResolvedApiKey),
              (status = 404, description = "`api_key_inactive`; `route_not_found` while `auth.service_token` is unset", body = ErrorBody),
              (status = 401, description = "`invalid_service_token`", body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn resolve_api_key(State(s): State<Internal>, _: Service, body: Body) -> Result<Json<ResolvedApiKey>, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| ApiError::payload_too_large(MAX_BODY_BYTES))?;
    let asked: ResolveApiKey = platform::http::parse_json(&bytes)?;
    if !platform::auth::is_api_key_shaped(&asked.key) {
        return Err(ApiError::invalid("invalid_api_key", format!("an API key is `sk_` and at most {} URL-safe characters", platform::auth::API_KEY_MAX_LEN))
            .with_field("key"));
    }
    match s.auth.resolve_api_key(&asked.key).await.map_err(|e| ApiError::from(&e))? {
        Some(principal) => Ok(Json(ResolvedApiKey::from(&principal))),
        None => Err(ApiError::not_found(API_KEY_INACTIVE, "this API key is unknown, revoked or expired, or its creator is disabled")),
    }
}
