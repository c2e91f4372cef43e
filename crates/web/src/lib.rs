//! The storefront (`/`) and the admin console (`/admin`): server-rendered
//! pages over the same services as the API. Pages arrive with their issue;
//! until then `/` says what is running and where the API lives.

use axum::Router;
use axum::response::Html;
use axum::routing::get;

pub fn router() -> Router {
    Router::new().route("/", get(home))
}

async fn home() -> Html<&'static str> {
    Html(concat!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<title>Emporium</title></head><body><main><h1>Emporium</h1>",
        "<p>The shop is running. The API reference is at <a href=\"/api/docs\">/api/docs</a>.</p>",
        "</main></body></html>"
    ))
}
