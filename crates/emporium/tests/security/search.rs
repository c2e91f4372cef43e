//! Item 1: a cursor is an offset into the ranked results; a forged one must
//! be refused before it sizes the index's collector.

use axum::http::StatusCode;
use kernel::page::encode_cursor;
use serde_json::json;

use super::support::pages::{Browser, create, searchable, storefront};

#[tokio::test]
async fn item_1_a_forged_search_cursor_is_refused_and_the_shop_stays_up() {
    let shop = storefront().await;
    create(&shop, json!({"title": "Cursor Lamp", "status": "active", "variants": [{"sku": "LAMP-1", "prices": {"USD": 900}}]})).await;
    searchable(&shop, "lamp").await;
    let anyone = Default::default();

    // The cursor of the review (4,000,000,000 as text), the largest offset,
    // one just past the window, and one that is not a number at all.
    for offset in ["4000000000", &usize::MAX.to_string(), "9981", "-1", "1e9"] {
        let path = format!("/api/v1/search?q=lamp&starting_after={}", encode_cursor(offset));
        let (status, body) = shop.send("GET", &path, &anyone, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{offset}: {body}");
        assert_eq!(body["error"]["code"], "invalid_cursor", "{body}");
        assert_eq!(body["error"]["field"], "starting_after", "{body}");
    }
    // A cursor inside the window is still a page (an empty one, here).
    let path = format!("/api/v1/search?q=lamp&limit=20&starting_after={}", encode_cursor("9980"));
    let (status, body) = shop.send("GET", &path, &anyone, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"], json!([]));

    // The storefront's search page with the same cursor shows the first page.
    let mut browser = Browser::new(&shop);
    let (status, headers, _) = browser.request("GET", &format!("/search?q=lamp&after={}", encode_cursor("4000000000")), None).await;
    assert!(status.is_redirection(), "{status}");
    assert_eq!(headers["location"], "/search");
    let (status, page) = browser.get("/search?q=lamp").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Cursor Lamp"));
}
