//! How pages reach the shop: through the same `/api/v1` routes every client
//! uses, so a page never holds a second copy of a rule (prices, stock,
//! permissions, validation all stay with their service). In a process that
//! runs every service the routes are called in process; a process of pages
//! alone (the `web` role) calls them over HTTP at `web.api_url` (the load
//! balancer in front of the services), on behalf of the shopper: their
//! credentials as the page passes them, their address in `X-Forwarded-For`
//! and the page request's id in `X-Request-Id`. Both ways give a page the
//! same answers.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tower::ServiceExt;

/// Finds the client behind a request from its connection's peer and its
/// headers, as the shop's HTTP core does (`X-Forwarded-For` from trusted
/// proxies only): the address the API is told it serves.
pub type ClientIp = Arc<dyn Fn(Option<IpAddr>, &HeaderMap) -> Option<IpAddr> + Send + Sync>;

/// The API as pages see it: in process, bound to the shop's router once the
/// shop has started (the pages are part of that router); or over HTTP
/// ([`Api::over_http`]).
#[derive(Clone, Default)]
pub struct Api {
    router: Arc<OnceLock<Router>>,
    remote: Option<Arc<Remote>>,
}

/// The API over HTTP: one client (its connections pooled) for every page.
struct Remote {
    http: reqwest::Client,
    /// `web.api_url`, without a trailing `/`.
    base: String,
    client_ip: ClientIp,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the shop is still starting")]
    NotBound,
    /// The API could not be reached, or stopped answering (refused, timed
    /// out, cut off).
    #[error("the API cannot be reached: {0}")]
    Transport(String),
    /// A request the page made that cannot be sent (a header it cannot carry).
    #[error("a request that cannot be sent: {0}")]
    Request(String),
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

    /// The API is away or overloaded (not reached, or it or the balancer in
    /// front of it answered 502, 503 or 504): the shopper may try again
    /// shortly.
    pub fn unavailable(&self) -> bool {
        match self {
            ApiError::NotBound | ApiError::Transport(_) => true,
            ApiError::Status { status, .. } => is_unavailable(*status),
            ApiError::Request(_) | ApiError::Shape { .. } => false,
        }
    }
}

/// 502, 503 or 504: what a service or a balancer answers while a service is away.
pub fn is_unavailable(status: StatusCode) -> bool {
    matches!(status, StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT)
}

/// The page request the API is called for: its browser (the connection's
/// peer and the `X-Forwarded-For` it came with) and its request id.
#[derive(Clone, Default)]
struct Caller {
    peer: Option<SocketAddr>,
    forwarded: HeaderMap,
    request_id: Option<HeaderValue>,
}

tokio::task_local! {
    static CALLER: Caller;
}

/// Middleware: the calls a page makes while it answers `request` are made
/// on behalf of that request's browser (see [`Api::over_http`]).
pub async fn on_behalf(request: axum::extract::Request, next: Next) -> Response {
    let mut forwarded = HeaderMap::new();
    for value in request.headers().get_all(X_FORWARDED_FOR) {
        forwarded.append(X_FORWARDED_FOR, value.clone());
    }
    let caller = Caller {
        peer: request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0),
        forwarded,
        request_id: request.headers().get(X_REQUEST_ID).cloned(),
    };
    CALLER.scope(caller, next.run(request)).await
}

const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_REQUEST_ID: &str = "x-request-id";

/// One call, whichever way it goes.
struct Outgoing<'a> {
    method: Method,
    path: &'a str,
    headers: &'a [(&'a str, String)],
    /// The content type and the bytes.
    body: Option<(&'a str, Bytes)>,
    /// The browser the call is for, when the page names it.
    client: Option<SocketAddr>,
}

/// An answer: status, content type and bytes.
type Answer = (StatusCode, String, Bytes);

impl Api {
    /// The API at `base_url` over HTTP (`web.api_url`). Calls time out after
    /// `timeout` (the connection after 3 seconds); idle connections are kept
    /// for reuse. `client_ip` finds the browser behind a page request, whose
    /// address is sent as `X-Forwarded-For` (the API believes it from the
    /// pages' address when that is one of its `http.trusted_proxies` and
    /// `auth.trust_forwarded_for` is on).
    pub fn over_http(base_url: &str, timeout: Duration, client_ip: ClientIp) -> Result<Api, ApiError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(50))
            .pool_max_idle_per_host(64)
            .tcp_keepalive(Duration::from_secs(30))
            // The page sees the API's own answers: a redirect is the page's to follow.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("emporium-web/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Request(kernel::error::causes(&e)))?;
        let remote = Remote { http, base: base_url.trim_end_matches('/').to_owned(), client_ip };
        Ok(Api { router: Arc::default(), remote: Some(Arc::new(remote)) })
    }

    /// Where the API is reached over HTTP; `None` when it is called in process.
    pub fn url(&self) -> Option<&str> {
        self.remote.as_deref().map(|r| r.base.as_str())
    }

    /// Binds the API to the shop's router (once; later calls change nothing).
    /// An API over HTTP is not bound.
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

    /// [`Api::send_as`] on behalf of the browser at `client` (with the
    /// `X-Forwarded-For` it came with among `headers`), so the API's
    /// per-client limits (sign-in attempts) count that browser, not the shop.
    pub async fn send_from(&self, client: Option<SocketAddr>, method: Method, path: &str, headers: &[(&str, String)], body: Option<Value>) -> Result<(StatusCode, Value), ApiError> {
        let body = body.map(|b| ("application/json", Bytes::from(b.to_string())));
        let (status, _, bytes) = self.exchange(Outgoing { method, path, headers, body, client }).await?;
        Ok((status, json_of(&bytes)))
    }

    /// Sends a body of another kind (a `multipart/form-data` upload).
    pub async fn send_bytes(&self, method: Method, path: &str, headers: &[(&str, String)], content_type: &str, body: Vec<u8>) -> Result<(StatusCode, Value), ApiError> {
        let body = Some((content_type, Bytes::from(body)));
        let (status, _, bytes) = self.exchange(Outgoing { method, path, headers, body, client: None }).await?;
        Ok((status, json_of(&bytes)))
    }

    /// `GET path` as it comes (a CSV download): status, content type and bytes.
    pub async fn get_raw(&self, path: &str, headers: &[(&str, String)]) -> Result<(StatusCode, String, Bytes), ApiError> {
        self.exchange(Outgoing { method: Method::GET, path, headers, body: None, client: None }).await
    }

    /// One call. An answer saying the API is away (502, 503, 504) is an
    /// error, so that every page says so alike (503 with `Retry-After`)
    /// rather than as a refusal of what the shopper sent.
    async fn exchange(&self, out: Outgoing<'_>) -> Result<Answer, ApiError> {
        let (status, kind, bytes) = match &self.remote {
            Some(remote) => remote.exchange(out).await?,
            None => self.in_process(out).await?,
        };
        if is_unavailable(status) {
            return Err(ApiError::Status { status, body: json_of(&bytes) });
        }
        Ok((status, kind, bytes))
    }

    async fn in_process(&self, out: Outgoing<'_>) -> Result<Answer, ApiError> {
        let router = self.router.get().ok_or(ApiError::NotBound)?.clone();
        let mut request = Request::builder().method(out.method).uri(out.path);
        if let Some(addr) = out.client
            && let Some(extensions) = request.extensions_mut()
        {
            extensions.insert(ConnectInfo(addr));
        }
        for (name, value) in out.headers {
            request = request.header(*name, value);
        }
        let request = match out.body {
            Some((kind, bytes)) => request.header(header::CONTENT_TYPE, kind).body(Body::from(bytes)),
            None => request.body(Body::empty()),
        }
        .map_err(|e| ApiError::Request(e.to_string()))?;
        let response = router.oneshot(request).await.map_err(|e| ApiError::Transport(e.to_string()))?;
        let status = response.status();
        let kind = content_type(response.headers());
        let bytes = response.into_body().collect().await.map_err(|e| ApiError::Transport(e.to_string()))?.to_bytes();
        Ok((status, kind, bytes))
    }
}

impl Remote {
    async fn exchange(&self, out: Outgoing<'_>) -> Result<Answer, ApiError> {
        if !out.path.starts_with('/') {
            return Err(ApiError::Request(format!("`{}` is not a path", out.path)));
        }
        let page = CALLER.try_with(Caller::clone).ok();
        // The browser: the one the call names (with the forwarded-for it
        // came with), else the one of the page being answered.
        let browser = match out.client {
            Some(peer) => {
                let mut forwarded = HeaderMap::new();
                for (_, value) in out.headers.iter().filter(|(name, _)| name.eq_ignore_ascii_case(X_FORWARDED_FOR)) {
                    let value = HeaderValue::from_str(value).map_err(|e| ApiError::Request(e.to_string()))?;
                    forwarded.append(X_FORWARDED_FOR, value);
                }
                (self.client_ip)(Some(peer.ip()), &forwarded)
            }
            None => page.as_ref().and_then(|p| (self.client_ip)(p.peer.map(|a| a.ip()), &p.forwarded)),
        };
        let mut request = self.http.request(out.method, format!("{}{}", self.base, out.path));
        for (name, value) in out.headers {
            // Said once below, as found here; a host or length is the client's own.
            let own = [X_FORWARDED_FOR, X_REQUEST_ID, "host", "content-length", "connection"];
            if !own.iter().any(|o| name.eq_ignore_ascii_case(o)) {
                request = request.header(*name, value.as_str());
            }
        }
        if let Some(ip) = browser {
            request = request.header(X_FORWARDED_FOR, ip.to_string());
        }
        if let Some(id) = page.and_then(|p| p.request_id) {
            request = request.header(X_REQUEST_ID, id);
        }
        if let Some((kind, bytes)) = out.body {
            request = request.header(header::CONTENT_TYPE, kind).body(bytes);
        }
        let response = request.send().await.map_err(|e| {
            // Without the address: a path may hold a token.
            let builder = e.is_builder();
            let text = kernel::error::causes(&e.without_url());
            if builder { ApiError::Request(text) } else { ApiError::Transport(text) }
        })?;
        let status = response.status();
        let kind = content_type(response.headers());
        let bytes = response.bytes().await.map_err(|e| ApiError::Transport(kernel::error::causes(&e.without_url())))?;
        Ok((status, kind, bytes))
    }
}

fn content_type(headers: &HeaderMap) -> String {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

fn json_of(bytes: &Bytes) -> Value {
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly
mod tests {
    use super::*;
    use axum::Json;
    use axum::routing::{any, get, post};
    use serde_json::json;

    /// An API that says what it was sent, redirects, refuses and is busy.
    fn echo() -> Router {
        Router::new()
            .route(
                "/api/v1/echo",
                any(|method: Method, headers: HeaderMap, body: Bytes| async move {
                    let seen = |name: &str| headers.get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>();
                    Json(json!({"method": method.as_str(), "authorization": seen("authorization"), "x-cart-secret": seen("x-cart-secret"),
                        "idempotency-key": seen("idempotency-key"), "cookie": seen("cookie"), "content-type": seen("content-type"),
                        "x-forwarded-for": seen("x-forwarded-for"), "x-request-id": seen("x-request-id"),
                        "body": String::from_utf8_lossy(&body)}))
                }),
            )
            .route("/api/v1/moved", get(|| async { axum::response::Redirect::to("/elsewhere") }))
            .route("/api/v1/busy", get(|| async { (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": {"code": "service_unavailable"}}))) }))
            .route("/api/v1/refused", post(|| async { (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error": {"code": "invalid"}}))) }))
            .route("/api/v1/export", get(|| async { ([(header::CONTENT_TYPE, "text/csv")], "a,b\n1,2\n") }))
    }

    /// The browser as the shop's HTTP core would find it behind a proxy:
    /// the last forwarded hop, else the peer.
    fn last_hop() -> ClientIp {
        Arc::new(|peer, headers: &HeaderMap| {
            let hops: Vec<&str> = headers.get_all(X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).collect();
            hops.last().and_then(|h| h.trim().parse().ok()).or(peer)
        })
    }

    /// The same API, in process and over HTTP on a loopback port.
    async fn both() -> (Api, Api) {
        let local = Api::default();
        local.bind(echo());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, echo()).await });
        let remote = Api::over_http(&base, Duration::from_secs(5), last_hop()).unwrap();
        assert_eq!(remote.url(), Some(base.trim_end_matches('/')));
        (local, remote)
    }

    fn without_forwarding(mut seen: Value) -> Value {
        seen.as_object_mut().unwrap().retain(|k, _| k != X_FORWARDED_FOR && k != X_REQUEST_ID);
        seen
    }

    #[tokio::test]
    async fn both_ways_give_the_same_answers_and_pass_the_same_credentials() {
        let (local, remote) = both().await;
        let headers = [("authorization", "Bearer t0k".to_owned()), ("x-cart-secret", "s3cret".to_owned()), ("Idempotency-Key", "k-1".to_owned()),
            ("cookie", "a=1".to_owned()), ("x-forwarded-for", "198.51.100.7".to_owned())];
        let browser: SocketAddr = "127.0.0.9:5000".parse().unwrap();
        let mut answers = Vec::new();
        for api in [&local, &remote] {
            let (status, seen) = api.send_from(Some(browser), Method::POST, "/api/v1/echo", &headers, Some(json!({"quantity": 2}))).await.unwrap();
            assert_eq!(status, StatusCode::OK);
            assert_eq!(seen["authorization"], json!(["Bearer t0k"]));
            assert_eq!(seen["x-cart-secret"], json!(["s3cret"]));
            assert_eq!(seen["idempotency-key"], json!(["k-1"]));
            assert_eq!(seen["content-type"], json!(["application/json"]));
            assert_eq!(seen["body"], r#"{"quantity":2}"#);
            answers.push(without_forwarding(seen));
            let refused = api.send(Method::POST, "/api/v1/refused", Some(json!({}))).await.unwrap();
            assert_eq!(refused, (StatusCode::UNPROCESSABLE_ENTITY, json!({"error": {"code": "invalid"}})));
            let moved = api.send(Method::GET, "/api/v1/moved", None).await.unwrap();
            assert_eq!(moved, (StatusCode::SEE_OTHER, Value::Null), "a redirect is the page's answer, not followed");
            let (status, kind, bytes) = api.get_raw("/api/v1/export", &[]).await.unwrap();
            assert_eq!((status, kind.as_str(), &bytes[..]), (StatusCode::OK, "text/csv", &b"a,b\n1,2\n"[..]));
            let (status, seen) = api.send_bytes(Method::PUT, "/api/v1/echo", &[], "text/csv", b"x,y".to_vec()).await.unwrap();
            assert_eq!((status, &seen["content-type"], &seen["body"]), (StatusCode::OK, &json!(["text/csv"]), &json!("x,y")));
            let missing = api.get::<Value>("/api/v1/nothing").await.unwrap_err();
            assert_eq!(missing.status(), Some(StatusCode::NOT_FOUND));
            let busy = api.get::<Value>("/api/v1/busy").await.unwrap_err();
            assert!(busy.unavailable() && busy.status() == Some(StatusCode::SERVICE_UNAVAILABLE), "{busy}");
            let busy = api.send(Method::GET, "/api/v1/busy", None).await.unwrap_err();
            assert!(busy.unavailable(), "an API that is away is an error for every call: {busy}");
        }
        assert_eq!(answers[0], answers[1]);
    }

    #[tokio::test]
    async fn over_http_the_api_is_told_the_browser_and_the_page_request() {
        let (_, remote) = both().await;
        // Named by the call: the browser as found from its connection and its forwarded-for, said once.
        let headers = [("x-forwarded-for", "198.51.100.7".to_owned())];
        let (_, seen) = remote.send_from(Some("127.0.0.9:5000".parse().unwrap()), Method::GET, "/api/v1/echo", &headers, None).await.unwrap();
        assert_eq!(seen["x-forwarded-for"], json!(["198.51.100.7"]));
        let (_, seen) = remote.send_from(Some("127.0.0.9:5000".parse().unwrap()), Method::GET, "/api/v1/echo", &[], None).await.unwrap();
        assert_eq!(seen["x-forwarded-for"], json!(["127.0.0.9"]));
        // Any other call a page makes: the browser of the page being answered, and its request id.
        let page = Caller { peer: Some("203.0.113.5:41000".parse().unwrap()), forwarded: HeaderMap::new(), request_id: Some(HeaderValue::from_static("req_page1")) };
        let (_, seen) = CALLER.scope(page, remote.send(Method::GET, "/api/v1/echo", None)).await.unwrap();
        assert_eq!((&seen["x-forwarded-for"], &seen["x-request-id"]), (&json!(["203.0.113.5"]), &json!(["req_page1"])));
        // Outside a page: nobody is named.
        let (_, seen) = remote.send(Method::GET, "/api/v1/echo", None).await.unwrap();
        assert_eq!(seen["x-forwarded-for"], json!([]));
    }

    #[tokio::test]
    async fn an_api_out_of_reach_is_unavailable_not_a_failure_of_the_page() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let api = Api::over_http(&base, Duration::from_secs(5), last_hop()).unwrap();
        let e = api.send(Method::GET, "/api/v1/products?token=secret-in-path", None).await.unwrap_err();
        assert!(matches!(e, ApiError::Transport(_)) && e.unavailable(), "{e}");
        assert!(!e.to_string().contains("secret-in-path"), "the address is not in the error: {e}");
        let e = api.send(Method::GET, "api/v1/products", None).await.unwrap_err();
        assert!(matches!(e, ApiError::Request(_)) && !e.unavailable(), "{e}");
        let unbound = Api::default().send(Method::GET, "/api/v1/products", None).await.unwrap_err();
        assert!(unbound.unavailable(), "{unbound}");
    }
}
