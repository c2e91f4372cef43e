//! How pages reach the shop: through the same `/api/v1` routes every client
//! uses, called in process, so a page never holds a second copy of a rule
//! (prices, stock, permissions, validation all stay with their service).

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tower::ServiceExt;

/// The API as pages see it. It is bound to the shop's router once the shop
/// has started (the pages are part of that router).
#[derive(Clone, Default)]
pub struct Api {
    router: Arc<OnceLock<Router>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the shop is still starting")]
    NotBound,
    #[error("{0}")]
    Transport(String),
    #[error("{status}: {body}")]
    Status { status: StatusCode, body: Value },
    #[error("an unexpected answer from {path}: {reason}")]
    Shape { path: String, reason: String },
}

impl ApiError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl Api {
    /// Binds the API to the shop's router (once; later calls change nothing).
    pub fn bind(&self, router: Router) {
        let _ = self.router.set(router);
    }

    /// `GET path` as JSON of type `T`; any non-2xx answer is an error.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        let (status, body) = self.send(Method::GET, path, None).await?;
        if !status.is_success() {
            return Err(ApiError::Status { status, body });
        }
        serde_json::from_value(body).map_err(|e| ApiError::Shape { path: path.to_owned(), reason: e.to_string() })
    }

    /// Sends one request; answers the status and the JSON body (`Null` when empty).
    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Result<(StatusCode, Value), ApiError> {
        self.send_as(method, path, &[], body).await
    }

    /// [`Api::send`] with headers (a cart's secret, a bearer token, an idempotency key).
    pub async fn send_as(&self, method: Method, path: &str, headers: &[(&str, String)], body: Option<Value>) -> Result<(StatusCode, Value), ApiError> {
        self.send_from(None, method, path, headers, body).await
    }

    /// [`Api::send_as`] on behalf of the browser at `client`, so the API's
    /// per-client limits (sign-in attempts) count that browser, not the shop.
    pub async fn send_from(&self, client: Option<std::net::SocketAddr>, method: Method, path: &str, headers: &[(&str, String)], body: Option<Value>) -> Result<(StatusCode, Value), ApiError> {
        let router = self.router.get().ok_or(ApiError::NotBound)?.clone();
        let mut request = Request::builder().method(method).uri(path);
        if let Some(addr) = client
            && let Some(extensions) = request.extensions_mut()
        {
            extensions.insert(axum::extract::ConnectInfo(addr));
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = match body {
            Some(b) => request.header("content-type", "application/json").body(Body::from(b.to_string())),
            None => request.body(Body::empty()),
        }
        .map_err(|e| ApiError::Transport(e.to_string()))?;
        self.finish(router, request).await
    }

    /// Sends a body of another kind (a `multipart/form-data` upload).
    pub async fn send_bytes(&self, method: Method, path: &str, headers: &[(&str, String)], content_type: &str, body: Vec<u8>) -> Result<(StatusCode, Value), ApiError> {
        let router = self.router.get().ok_or(ApiError::NotBound)?.clone();
        let mut request = Request::builder().method(method).uri(path).header("content-type", content_type);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request.body(Body::from(body)).map_err(|e| ApiError::Transport(e.to_string()))?;
        self.finish(router, request).await
    }

    /// `GET path` as it comes (a CSV download): status, content type and bytes.
    pub async fn get_raw(&self, path: &str, headers: &[(&str, String)]) -> Result<(StatusCode, String, axum::body::Bytes), ApiError> {
        let router = self.router.get().ok_or(ApiError::NotBound)?.clone();
        let mut request = Request::builder().method(Method::GET).uri(path);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request.body(Body::empty()).map_err(|e| ApiError::Transport(e.to_string()))?;
        let response = router.oneshot(request).await.map_err(|e| ApiError::Transport(e.to_string()))?;
        let status = response.status();
        let kind = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let bytes = response.into_body().collect().await.map_err(|e| ApiError::Transport(e.to_string()))?.to_bytes();
        Ok((status, kind, bytes))
    }

    async fn finish(&self, router: Router, request: Request<Body>) -> Result<(StatusCode, Value), ApiError> {
        let response = router.oneshot(request).await.map_err(|e| ApiError::Transport(e.to_string()))?;
        let status = response.status();
        let bytes = response.into_body().collect().await.map_err(|e| ApiError::Transport(e.to_string()))?.to_bytes();
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }
}

/// A path segment or query value, percent-encoded.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(char::from(b)),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
