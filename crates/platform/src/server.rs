//! The HTTP listener and its guards against slow or greedy clients: a cap on
//! open connections (in all and per client), a header read timeout, a body
//! read timeout, a per-request timeout and a write-stall timeout; and a
//! graceful stop that lets requests finish.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
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
use kernel::net::IpCidr;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// What a connection and a request may take (`http.*` settings).
#[derive(Debug, Clone)]
pub struct Limits {
    /// To send a request's headers (and the longest a kept-alive connection idles).
    pub header_timeout: Duration,
    /// The longest pause while a request body is read.
    pub body_timeout: Duration,
    /// Until the response starts.
    pub request_timeout: Duration,
    /// Open connections served at once.
    pub max_connections: usize,
    /// Open connections served at once from one client (IPv4 address, IPv6 /64).
    pub max_connections_per_ip: usize,
    /// Peers the per-client cap does not apply to (the proxies).
    pub trusted_proxies: Arc<[IpCidr]>,
    /// The longest a response write may make no progress.
    pub write_timeout: Duration,
}

impl Limits {
    pub fn from_config(http: &HttpConfig) -> Self {
        Self {
            header_timeout: Duration::from_secs(http.header_timeout_secs),
            body_timeout: Duration::from_secs(http.body_timeout_secs),
            request_timeout: Duration::from_secs(http.request_timeout_secs),
            max_connections: http.max_connections.max(1),
            max_connections_per_ip: http.max_connections_per_ip.max(1),
            trusted_proxies: http.trusted_proxies.iter().copied().collect(),
            write_timeout: Duration::from_secs(http.write_timeout_secs),
        }
    }
}

/// Serves `router` on `listener` until `stop` is cancelled; then stops
/// accepting, lets each connection finish the request it is on, and returns
/// when all are closed. Past `max_connections` open connections a new one is
/// answered 503 `too_many_connections` and closed at once, so a flood of idle
/// sockets costs the shop nothing but the accept; the same past
/// `max_connections_per_ip` from one client that is not a trusted proxy, so
/// one client cannot take every slot.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_client = PerClient::default();
    let mut refusals = Refusals::default();
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
        let trusted = limits.trusted_proxies.iter().any(|net| net.contains(peer.ip()));
        let client = match trusted {
            true => None,
            false => match per_client.enter(peer.ip(), limits.max_connections_per_ip) {
                Some(client) => Some(client),
                None => {
                    refuse(&stream, "http.max_connections_per_ip", &mut refusals);
                    continue;
                }
            },
        };
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                tokio::spawn(connection(stream, peer, router.clone(), limits.clone(), stop.clone(), (slot, client)));
            }
            Err(_) => refuse(&stream, "http.max_connections", &mut refusals),
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
    _slots: (OwnedSemaphorePermit, Option<ClientSlot>),
) {
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let io = TokioIo::new(WriteDeadline::new(stream, limits.write_timeout));
    let conn = builder.serve_connection(io, service).with_upgrades();
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

/// Answers a connection over a cap (the setting named by `cap`) without serving it.
fn refuse(stream: &TcpStream, cap: &'static str, refusals: &mut Refusals) {
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
    metrics::counter!("http_connections_refused_total", "cap" => cap).increment(1);
    if let Some(refused) = refusals.note(std::time::Instant::now()) {
        tracing::warn!(cap, refused, "connections refused at a connection limit (count since the last such warning)");
    }
}

/// At most one "connection refused" warning per this long: one client
/// opening sockets in a loop must not flood the logs (the metric
/// `http_connections_refused_total` counts every refusal).
const REFUSAL_WARN_EVERY: Duration = Duration::from_secs(60);

/// Refused connections since the last warning about them, and when that was.
#[derive(Default)]
struct Refusals {
    since_warning: u64,
    last_warning: Option<std::time::Instant>,
}

impl Refusals {
    /// Counts one refusal at `now`: the number to report (this one
    /// included) when a warning is due, `None` while it is not.
    fn note(&mut self, now: std::time::Instant) -> Option<u64> {
        self.since_warning = self.since_warning.saturating_add(1);
        if self.last_warning.is_some_and(|at| now.saturating_duration_since(at) < REFUSAL_WARN_EVERY) {
            return None;
        }
        self.last_warning = Some(now);
        Some(std::mem::take(&mut self.since_warning))
    }
}

/// Open connections per client (IPv4 address or IPv6 /64).
#[derive(Clone, Default)]
struct PerClient(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One open connection of a client; counted until dropped.
struct ClientSlot {
    counts: PerClient,
    client: IpAddr,
}

impl PerClient {
    /// A slot for one more connection of `peer`'s client, unless it has `max` open.
    fn enter(&self, peer: IpAddr, max: usize) -> Option<ClientSlot> {
        let client = kernel::net::client_prefix(peer);
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let open = counts.entry(client).or_insert(0);
        if *open >= max {
            return None;
        }
        *open += 1;
        Some(ClientSlot { counts: self.clone(), client })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = counts.get_mut(&self.client) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                counts.remove(&self.client);
            }
        }
    }
}

/// A connection whose writes fail with `TimedOut` once one makes no progress
/// for `limit`: a client that requests and never reads would otherwise hold
/// its slot for ever (the request timeout ends when the response starts).
/// Hyper then drops the connection, which frees the slot.
struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    /// Armed when a write waits, disarmed when one makes progress.
    stalled_since: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteDeadline<S> {
    fn new(inner: S, limit: Duration) -> Self {
        Self { inner, limit, stalled_since: None }
    }

    /// `polled` is what the inner stream said to a write, flush or shutdown.
    fn watch<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(done) => {
                self.stalled_since = None;
                Poll::Ready(done)
            }
            Poll::Pending => {
                let limit = self.limit;
                let sleep = self.stalled_since.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if sleep.as_mut().poll(cx).is_ready() {
                    tracing::debug!(timeout_secs = limit.as_secs(), "connection closed: the client stopped reading (http.write_timeout_secs)");
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading")));
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, polled)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, polled)
    }
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn refused_connections_warn_once_a_minute_with_their_count() {
        let mut refusals = Refusals::default();
        let start = Instant::now();
        assert_eq!(refusals.note(start), Some(1), "the first refusal is told at once");
        for n in 1..1000 {
            assert_eq!(refusals.note(start + Duration::from_millis(n)), None, "a flood writes no more lines");
        }
        let later = start + REFUSAL_WARN_EVERY;
        assert_eq!(refusals.note(later), Some(1000), "the next line counts what was not told");
        assert_eq!(refusals.note(later + Duration::from_secs(1)), None);
        assert_eq!(refusals.note(later + REFUSAL_WARN_EVERY * 2), Some(2));
    }
}
