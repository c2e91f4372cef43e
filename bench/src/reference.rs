//! The reference server: a bare axum route answering a fixed small JSON body,
//! built with the same toolchain, profile and runtime as Emporium, so each
//! benchmark figure can be stated as a ratio to what the stack alone costs.

use axum::Router;
use axum::routing::get;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Reference server for Emporium's benchmarks")]
struct Args {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: std::net::SocketAddr,
    /// Also answer `GET /body` with a fixed JSON body of this many bytes, to
    /// compare a route that sends as much as Emporium's answer does.
    #[arg(long)]
    body_bytes: Option<usize>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let pad = "a".repeat(args.body_bytes.unwrap_or(0).saturating_sub(r#"{"pad":""}"#.len()));
    let body: &'static str = Box::leak(format!(r#"{{"pad":"{pad}"}}"#).into_boxed_str());
    let app = Router::new()
        .route("/healthz", get(|| async { ([("content-type", "application/json")], r#"{"status":"ok"}"#) }))
        .route("/body", get(move || async move { ([("content-type", "application/json")], body) }));
    let listener = tokio::net::TcpListener::bind(args.bind).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
