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
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let app = Router::new().route(
        "/healthz",
        get(|| async { ([("content-type", "application/json")], r#"{"status":"ok"}"#) }),
    );
    let listener = tokio::net::TcpListener::bind(args.bind).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
