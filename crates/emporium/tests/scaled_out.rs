//! The scaled-out shape: a process without the auth service verifies tokens
//! with the keys auth publishes, fetched over HTTP, without calling auth per
//! request.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use http_body_util::BodyExt;
use platform::app::App;
use platform::auth::Principal;
use platform::testing::Sandbox;
use tower::ServiceExt;

async fn call(router: Router, request: Request<Body>) -> (StatusCode, String) {
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_process_verifies_tokens_from_the_auth_process() {
    let sandbox = Sandbox::new().await;
    let mut base = (*sandbox.config()).clone();
    base.public_url = Some("http://shop.test".into());

    let mut auth_config = base.clone();
    auth_config.services = vec!["auth".into()];
    let auth_app = App::start(Arc::new(auth_config), &emporium::services(), Router::new(), false).await.unwrap();
    let auth_router = auth_app.router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(auth_app.serve(listener, async move {
        let _ = stopped.await;
    }));

    let mut catalog_config = base.clone();
    catalog_config.services = vec!["catalog".into()];
    catalog_config.auth.jwks_url = Some(format!("http://{addr}/.well-known/jwks.json"));
    let whoami = Router::new().route("/probe/whoami", get(|who: Principal| async move { who.user_id.to_string() }));
    let catalog = App::start(Arc::new(catalog_config), &emporium::services(), whoami, false).await.unwrap();

    let json = |path: &str, body: &str| {
        Request::post(path).header("content-type", "application/json").body(Body::from(body.to_owned())).unwrap()
    };
    let (status, _) = call(auth_router.clone(), json("/api/v1/auth/register", r#"{"email":"sam@example.com","password":"a long passphrase","name":"Sam"}"#)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, tokens) = call(auth_router.clone(), json("/api/v1/auth/login", r#"{"email":"sam@example.com","password":"a long passphrase"}"#)).await;
    let token = serde_json::from_str::<serde_json::Value>(&tokens).unwrap()["access_token"].as_str().unwrap().to_owned();

    let ask = |token: &str| Request::get("/probe/whoami").header("authorization", format!("Bearer {token}")).body(Body::empty()).unwrap();
    let (status, who) = call(catalog.router(), ask(&token)).await;
    assert_eq!(status, StatusCode::OK, "{who}");
    assert!(who.starts_with("usr_"));
    let (status, _) = call(catalog.router(), ask(&format!("{token}x"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    // Keys are cached: verification goes on while auth is away.
    let (status, _) = call(catalog.router(), ask(&token)).await;
    assert_eq!(status, StatusCode::OK);
}
