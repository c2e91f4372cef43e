//! The HTTP listener and its guards against slow or greedy clients: a cap on
//! open connections, a header read timeout, a body read timeout and a
//! per-request timeout; and a graceful stop that lets requests finish.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use kernel::ApiError;
use kernel::config::HttpConfig;
use kernel::error::ErrorType;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// What a connection and a request may take (`http.*` settings).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// To send a request's headers (and the longest a kept-alive connection idles).
    pub header_timeout: Duration,
    /// The longest pause while a request body is read.
    pub body_timeout: Duration,
    /// Until the response starts.
    pub request_timeout: Duration,
    /// Open connections served at once.
    pub max_connections: usize,
}

impl Limits {
    pub fn from_config(http: &HttpConfig) -> Self {
        Self {
            header_timeout: Duration::from_secs(http.header_timeout_secs),
            body_timeout: Duration::from_secs(http.body_timeout_secs),
            request_timeout: Duration::from_secs(http.request_timeout_secs),
            max_connections: http.max_connections.max(1),
        }
    }
}

/// Serves `router` on `listener` until `stop` is cancelled; then stops
/// accepting, lets each connection finish the request it is on, and returns
/// when all are closed. Past `max_connections` open connections a new one is
/// answered 503 `too_many_connections` and closed at once, so a flood of idle
/// sockets costs the shop nothing but the accept.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                tokio::spawn(connection(stream, peer, router.clone(), limits, stop.clone(), slot));
            }
            Err(_) => refuse(&stream),
        }
    }
    drop(listener);
    // Each connection holds a slot until it closes: all slots back, all done.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    stop: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection closed with an error");
    }
}

/// Answers a connection over the cap without serving it.
fn refuse(stream: &TcpStream) {
    static BUSY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let busy = BUSY.get_or_init(|| {
        let mut e = ApiError::bad_request("too_many_connections", "the server is at its connection limit; retry shortly");
        e.status = StatusCode::SERVICE_UNAVAILABLE;
        e.kind = ErrorType::RateLimited;
        let body = serde_json::to_string(&e.body()).unwrap_or_default();
        format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
             connection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    });
    // Whatever the client sent already is read away (closing on unread
    // data resets the connection, and the answer with it); neither call waits.
    let mut sent = [0u8; 4096];
    let _ = stream.try_read(&mut sent);
    let _ = stream.try_write(busy);
    tracing::warn!("connection refused: at http.max_connections");
}

/// The body and request deadlines, as a layer of the router:
/// `middleware::from_fn_with_state(limits, server::deadlines)`.
///
/// A body that stalls longer than `body_timeout` ends the request with 408
/// `request_body_timeout` and the connection is closed (the rest of the body
/// would be read as the next request). A request whose response has not
/// started after `request_timeout` is abandoned with 503 `request_timeout`:
/// 503 rather than 504 because no upstream is at fault, and a client may
/// retry (idempotently) later.
pub async fn deadlines(State(limits): State<Limits>, request: Request, next: Next) -> Response {
    let stalled = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| Body::new(DeadlineBody::new(body, limits.body_timeout, stalled.clone())));
    let response = tokio::time::timeout(limits.request_timeout, next.run(request)).await;
    if stalled.load(Ordering::Relaxed) {
        let mut e = ApiError::bad_request(
            "request_body_timeout",
            format!("the request body did not arrive within {} s", limits.body_timeout.as_secs()),
        );
        e.status = StatusCode::REQUEST_TIMEOUT;
        let mut response = e.into_response();
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    match response {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(timeout_secs = limits.request_timeout.as_secs(), "request abandoned: http.request_timeout_secs");
            let mut e = ApiError::bad_request(
                "request_timeout",
                format!("the request took longer than {} s and was abandoned", limits.request_timeout.as_secs()),
            );
            e.status = StatusCode::SERVICE_UNAVAILABLE;
            e.kind = ErrorType::Internal;
            e.into_response()
        }
    }
}

/// A request body that fails when no data comes for `idle` while someone
/// waits for it, and says so through `stalled`.
struct DeadlineBody {
    inner: Body,
    idle: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    stalled: Arc<AtomicBool>,
}

impl DeadlineBody {
    fn new(inner: Body, idle: Duration, stalled: Arc<AtomicBool>) -> Self {
        Self { inner, idle, sleep: None, stalled }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the request body stalled")]
struct BodyStalled;

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.sleep = None;
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let idle = this.idle;
                let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if sleep.as_mut().poll(cx).is_ready() {
                    this.stalled.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(axum::Error::new(BodyStalled))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
