//! The HTTP core every route shares: a JSON extractor that answers in the
//! error shape and refuses unknown fields, request ids, per-route metrics,
//! body limits, JSON 404/405, panics turned into 500s.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequest, MatchedPath, Request};
use axum::http::{Extensions, HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kernel::ApiError;
use kernel::id::RequestId;
use serde::de::DeserializeOwned;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// `Json<T>` for request bodies. Errors come in the documented shape: 400 for
/// malformed JSON or a wrong content type, 422 with `field` for a value that
/// does not fit, 413 over the body limit. Request types are declared with
/// `#[serde(deny_unknown_fields)]`, so unknown fields are a 422 too.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim();
                mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::bad_request(
                "unsupported_content_type",
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            use axum::extract::rejection::BytesRejection;
            match rejection {
                BytesRejection::FailedToBufferBody(_) if rejection.status().as_u16() == 413 => {
                    ApiError::payload_too_large(crate::http::body_limit())
                }
                other => ApiError::bad_request("unreadable_body", other.body_text()),
            }
        })?;
        parse_json(&bytes).map(Json)
    }
}

/// Deserializes JSON, naming the field at fault (`items[0].quantity`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize(&mut de) {
        Ok(value) => {
            de.end().map_err(|e| ApiError::bad_request("malformed_json", e.to_string()))?;
            Ok(value)
        }
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            use serde_json::error::Category;
            match inner.classify() {
                Category::Syntax | Category::Eof | Category::Io => {
                    Err(ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {inner}")))
                }
                Category::Data => {
                    let message = strip_position(&inner.to_string());
                    let base = (path != ".").then_some(path);
                    let field = match (base, unknown_field_name(&message)) {
                        (Some(b), Some(u)) if b == u || b.ends_with(&format!(".{u}")) => Some(b),
                        (Some(b), Some(u)) => Some(format!("{b}.{u}")),
                        (None, u) => u,
                        (b, None) => b,
                    };
                    let error = ApiError::invalid("invalid_field", message);
                    Err(match field {
                        Some(f) => error.with_field(f),
                        None => error,
                    })
                }
            }
        }
    }
}

/// "unknown field `colour`, expected one of …" names the field itself.
fn unknown_field_name(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_owned())
}

/// serde_json appends " at line 1 column 12"; the field says where.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// For PATCH bodies: `Some(None)` for an explicit `null` (clear the field),
/// `None` for an absent one (leave it). Use with
/// `#[serde(default, deserialize_with = "platform::http::nullable")]`.
pub fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

static BODY_LIMIT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1024 * 1024);

/// The configured request body limit, for error messages.
pub fn body_limit() -> usize {
    BODY_LIMIT.load(std::sync::atomic::Ordering::Relaxed)
}

pub(crate) fn set_body_limit(limit: usize) {
    BODY_LIMIT.store(limit, std::sync::atomic::Ordering::Relaxed);
}

/// Keeps a sane incoming `X-Request-Id` or makes one, runs the request in a
/// span that carries it (so every log line has it), and echoes it back.
pub async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<RequestId>().ok())
        .unwrap_or_else(RequestId::generate);
    // As found here, also for handlers that pass it on (the pages, to the API).
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        request.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    request.extensions_mut().insert(id.clone());
    let span = tracing::info_span!("request", request_id = id.as_str());
    let mut response = {
        use tracing::Instrument;
        let started = Instant::now();
        let method = method_label(request.method());
        let path = request.uri().path().to_owned();
        let response = next.run(request).instrument(span).await;
        let status = response.status().as_u16();
        crate::telemetry::access_log(id.as_str(), method, &path, status, started.elapsed().as_secs_f64() * 1000.0);
        response
    };
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// Records `http_request_duration_seconds{method,route,status}` per matched
/// route (the pattern, not the raw path, so ids do not explode the series).
/// The histogram's `_count` is the request counter.
pub async fn track_metrics(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    latency_histogram(method, route, response.status().as_u16()).record(started.elapsed().as_secs_f64());
    response
}

/// The histogram of one (method, route, status), looked up once and then
/// kept: the recorder's own lookup builds and hashes the labels each time.
fn latency_histogram(method: &'static str, route: &str, status: u16) -> metrics::Histogram {
    type Handles = std::collections::HashMap<(&'static str, u16), std::collections::HashMap<String, metrics::Histogram>>;
    static HANDLES: std::sync::OnceLock<std::sync::RwLock<Handles>> = std::sync::OnceLock::new();
    let handles = HANDLES.get_or_init(Default::default);
    if let Ok(known) = handles.read()
        && let Some(h) = known.get(&(method, status)).and_then(|by_route| by_route.get(route))
    {
        return h.clone();
    }
    let h = metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route.to_owned(),
        "status" => status.to_string());
    if let Ok(mut known) = handles.write() {
        known.entry((method, status)).or_default().insert(route.to_owned(), h.clone());
    }
    h
}

/// Methods as static labels: no allocation per request, and no unbounded
/// label values from clients inventing methods.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Turns the framework's bare 413 into the documented error shape.
pub async fn shape_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE
        && response.headers().get(header::CONTENT_TYPE).is_none_or(|ct| ct != "application/json")
    {
        return ApiError::payload_too_large(body_limit()).into_response();
    }
    response
}

/// The policy of HTML the API serves (the API reference, the unsubscribe
/// page, the test gateway's page): scripts and forms of this origin only,
/// never framed. Inline styles are allowed: those pages' layouts use them.
const HTML_CSP: &str = "default-src 'self'; img-src 'self' data: https:; style-src 'self' 'unsafe-inline'; \
                        script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Gives every HTML response the pages' security headers (CSP, framing,
/// sniffing, referrer), in one place for all routes; a header a route (the
/// storefront) already set is kept.
pub async fn html_security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("text/html"));
    if is_html {
        let headers = response.headers_mut();
        for (name, value) in [
            (header::CONTENT_SECURITY_POLICY, HTML_CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "strict-origin-when-cross-origin"),
        ] {
            headers.entry(name).or_insert(HeaderValue::from_static(value));
        }
    }
    response
}

/// Keeps the API's answers out of caches (they carry tokens, secrets and
/// personal data): every `/api/` response without a `Cache-Control` of its
/// own gets `no-store`; the public catalog's cacheable answers set theirs.
pub async fn api_no_store(request: Request, next: Next) -> Response {
    let is_api = request.uri().path().starts_with("/api/");
    let mut response = next.run(request).await;
    if is_api {
        response.headers_mut().entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    }
    response
}

/// Whether an answer may be compressed, besides the usual rules: not a
/// page for one person. Such a page (its `Cache-Control` says `no-store` or
/// `private`) holds the visitor's form token and personal data next to text
/// the request chose (a filter, a link's token); compressed, its size on the
/// wire would let an onlooker who can make the browser ask again and again
/// guess the secret a character at a time (BREACH). Shared pages, assets and
/// the API's JSON (whose credentials travel in headers, never sent by a
/// cross-site request) are compressed.
pub fn shared_or_not_html(_: axum::http::StatusCode, _: axum::http::Version, headers: &HeaderMap, _: &Extensions) -> bool {
    let html = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| t.starts_with("text/html"));
    let personal = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|d| matches!(d.trim().to_ascii_lowercase().as_str(), "no-store" | "private")));
    !(html && personal)
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("route_not_found", "no such route")
}

pub async fn method_not_allowed() -> Response {
    let mut e = ApiError::bad_request("method_not_allowed", "this route does not take that method");
    e.status = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    e.into_response()
}

/// The address of the client behind a request: the connection's peer, or,
/// when `auth.trust_forwarded_for` is on and the peer is one of
/// `http.trusted_proxies`, the right-most `X-Forwarded-For` hop that is not a
/// trusted proxy. Hops further left were written by the client and prove
/// nothing. `None` when the peer is unknown (a request made in process).
/// Every per-client limit and every audit record takes its address from here.
pub fn client_ip(config: &kernel::config::Config, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let trusted = |ip: IpAddr| config.http.trusted_proxies.iter().any(|net| net.contains(ip));
    if !config.auth.trust_forwarded_for || !trusted(peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        // Some proxies write `ip:port` or `[v6]:port`; anything else ends the
        // chain, and the last address known stands.
        let Some(ip) = hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip())) else {
            break;
        };
        client = ip.to_canonical();
        if !trusted(client) {
            break;
        }
    }
    Some(client)
}

/// [`client_ip`] of a request, its peer read from the connection info.
pub fn request_client_ip(config: &kernel::config::Config, extensions: &Extensions, headers: &HeaderMap) -> Option<IpAddr> {
    let peer = extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    client_ip(config, peer, headers)
}

/// What a panic in a handler becomes: a logged 500, never a dropped connection.
pub fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    let detail = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".to_owned());
    ApiError::internal(&format!("handler panicked: {detail}")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        sku: String,
        quantity: u32,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        items: Vec<Item>,
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn forwarded(hops: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in hops {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_client_is_the_right_most_hop_not_a_trusted_proxy() {
        let mut config = kernel::config::Config::default();
        let spoofed = forwarded(&["6.6.6.6, 10.9.8.7"]);
        // Off by default: the peer, whatever the header says.
        assert_eq!(client_ip(&config, Some(ip("127.0.0.1")), &spoofed), Some(ip("127.0.0.1")));
        config.auth.trust_forwarded_for = true;
        // From the (default-trusted) local proxy: the hop it appended, not the client-written one.
        assert_eq!(client_ip(&config, Some(ip("127.0.0.1")), &spoofed), Some(ip("10.9.8.7")));
        assert_eq!(client_ip(&config, Some(ip("::ffff:127.0.0.1")), &spoofed), Some(ip("10.9.8.7")));
        // From an untrusted peer the header is ignored.
        assert_eq!(client_ip(&config, Some(ip("192.0.2.1")), &spoofed), Some(ip("192.0.2.1")));
        // A chain of trusted proxies is walked through; split headers are one list.
        config.http.trusted_proxies = vec!["127.0.0.1".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
        assert_eq!(client_ip(&config, Some(ip("127.0.0.1")), &spoofed), Some(ip("6.6.6.6")));
        let split = forwarded(&["1.1.1.1, 203.0.113.5", "10.1.1.1"]);
        assert_eq!(client_ip(&config, Some(ip("127.0.0.1")), &split), Some(ip("203.0.113.5")));
        // Ports and brackets are understood; junk stops the walk at the last known address.
        assert_eq!(client_ip(&config, Some(ip("127.0.0.1")), &forwarded(&["[2001:db8::1]:443, 10.0.0.9"])), Some(ip("2001:db8::1")));
        assert_eq!(client_ip(&config, Some(ip("127.0.0.1")), &forwarded(&["1.1.1.1, junk, 10.0.0.9"])), Some(ip("10.0.0.9")));
        assert_eq!(client_ip(&config, Some(ip("127.0.0.1")), &HeaderMap::new()), Some(ip("127.0.0.1")));
        assert_eq!(client_ip(&config, None, &spoofed), None);
    }

    #[test]
    fn field_errors_name_the_field() {
        let e = parse_json::<Body>(br#"{"items":[{"sku":"A","quantity":-1}]}"#).unwrap_err();
        assert_eq!(e.status.as_u16(), 422);
        assert_eq!(e.field.as_deref(), Some("items[0].quantity"));
        let e = parse_json::<Body>(br#"{"items":[], "admin": true}"#).unwrap_err();
        assert_eq!(e.status.as_u16(), 422);
        assert_eq!(e.field.as_deref(), Some("admin"), "{e}");
        let e = parse_json::<Body>(br#"{"items":[{"sku":"A","quantity":1,"price":0}]}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("items[0].price"), "{e}");
        assert!(e.message.contains("price"));
        let e = parse_json::<Body>(br#"{"items": ["#).unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        assert_eq!(e.code, "malformed_json");
        let e = parse_json::<Body>(br#"{"items": []} trailing"#).unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
    }
}
