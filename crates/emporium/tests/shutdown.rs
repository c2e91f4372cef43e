//! Graceful shutdown: on the signal the server stops accepting, lets the
//! requests in flight finish, and the outbox relay publishes what committed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use platform::app::App;
use platform::testing::Sandbox;
use platform::{on_db, outbox};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A plain HTTP/1.1 GET over a fresh connection; returns the raw response.
async fn fetch(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    stream.read_to_string(&mut out).await?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_and_the_outbox_is_flushed() {
    let sandbox = Sandbox::new().await;
    let slow = Router::new().route(
        "/probe/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(600)).await;
            "finished"
        }),
    );
    let app = App::start(sandbox.config(), &emporium::services(), slow, false).await.unwrap();
    let orders = app.db("orders").unwrap().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (signal, signalled) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve(listener, async move {
        let _ = signalled.await;
    }));

    let in_flight = tokio::spawn(fetch(addr, "/probe/slow"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    // An event committed just before the signal must not wait for a restart.
    let mut tx = orders.begin().await.unwrap();
    outbox::enqueue(&mut tx, &kernel::Envelope::new("order.placed", "ord_x", serde_json::json!({}))).await.unwrap();
    tx.commit().await.unwrap();
    signal.send(()).unwrap();

    let response = in_flight.await.unwrap().unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("finished"), "{response}");
    tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap().unwrap();

    assert!(fetch(addr, "/healthz").await.is_err(), "no longer accepting connections");
    // Shutdown closed the app's pools; look with a connection of our own.
    let db = platform::Db::connect(&sandbox.url_for("orders"), "orders", &Default::default()).await.unwrap();
    let pending: i64 = on_db!(db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(pool).await)
    .unwrap();
    assert_eq!(pending, 0);
}
