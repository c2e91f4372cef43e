//! `deploy/`: the route tables hold every route the services' routers
//! answer, `emporium deploy nginx` writes a configuration real nginx takes
//! and that sends every path to its role (with the headers, limits and
//! retry rules it promises), and `emporium health` tells ready from not.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use emporium::deploy::{self, RouteMap, Server, Target};
use platform::routes::Reach;
use platform::service::{Ports, ServiceContext, ServiceSpec};
use platform::testing::Sandbox;
use serde_json::{Value, json};
use tower::ServiceExt;

/// A path a route answers: each parameter a value, the rest of the path two segments.
fn sample(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with("{*") { "a/b.jpg" } else if s.starts_with('{') { "x1" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

/// A service mounted on its own, as a process of that one role mounts it.
async fn mount(sandbox: &Sandbox, spec: &ServiceSpec, config: Arc<kernel::config::Config>) -> (Router, utoipa::openapi::OpenApi) {
    let db = sandbox.db(spec.name, &[spec.migrations]).await;
    let ctx = ServiceContext {
        name: spec.name,
        db,
        bus: Arc::new(platform::bus::InProcessBus::new()),
        config,
        shutdown: tokio_util::sync::CancellationToken::new(),
        ports: Ports::default(),
    };
    let mounted = (spec.mount)(ctx).await.unwrap_or_else(|e| panic!("{} does not mount: {e}", spec.name));
    mounted.router.split_for_parts()
}

/// The paths a crate's source gives its routers by hand (`.route("…"`),
/// which no OpenAPI document lists.
fn hand_written_routes(service: &str) -> Vec<String> {
    fn visit(dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                visit(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for call in [".route(\"", ".route_service(\"", ".nest(\"", ".nest_service(\""] {
                    for (at, _) in text.match_indices(call) {
                        let rest = &text[at + call.len()..];
                        let end = rest.find('"').unwrap();
                        found.push(format!("{}{}", if call.starts_with(".nest") { "nest " } else { "" }, &rest[..end]));
                    }
                }
            }
        }
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(service).join("src");
    let mut found = Vec::new();
    visit(&dir, &mut found);
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_tables_hold_every_route_the_routers_answer() {
    let sandbox = Sandbox::new().await;
    let mut config = (*sandbox.config()).clone();
    config.public_url = Some("http://shop.test".into());
    config.catalog.service_token = Some("c".repeat(40));
    config.auth.service_token = Some("a".repeat(40));
    let config = Arc::new(config);
    let map = RouteMap::new(&deploy::route_tables()).unwrap();
    let tables: BTreeMap<&str, _> = deploy::route_tables().into_iter().collect();
    let services = emporium::services();
    let mut names: Vec<&str> = services.iter().map(|s| s.name).collect();
    names.sort_unstable();
    assert_eq!(tables.keys().copied().collect::<Vec<_>>(), names, "a table for every service, and no other");
    for spec in &services {
        let table = tables.get(spec.name).unwrap_or_else(|| panic!("no route table for {}", spec.name));
        let (router, openapi) = mount(&sandbox, spec, config.clone()).await;
        for path in openapi.paths.paths.keys() {
            assert!(table.iter().any(|r| r.path == path), "{}: the documented route `{path}` is missing from {}::ROUTES", spec.name, spec.name);
        }
        let hand_written = hand_written_routes(spec.name);
        if spec.name == "catalog" {
            assert!(hand_written.iter().any(|p| p == "/media/{*key}"), "the scan finds the routes written by hand: {hand_written:?}");
        }
        assert!(!openapi.paths.paths.is_empty(), "{} documents its routes", spec.name);
        for path in hand_written {
            assert!(!path.starts_with("nest "), "{}: `{path}`: a nested router's routes cannot be listed; add them one by one", spec.name);
            assert!(table.iter().any(|r| r.path == path), "{}: the route `{path}` is missing from {}::ROUTES", spec.name, spec.name);
        }
        // Every route in the table is one the router answers (by path: a
        // wrong method is 405, a missing route reaches the fallback), and
        // the map sends it to this service.
        let router = router.fallback(|| async { (StatusCode::IM_A_TEAPOT, [("x-route-miss", "1")]) });
        for route in *table {
            let path = sample(route.path);
            let response = router.clone().oneshot(Request::get(&path).body(Body::empty()).unwrap()).await.unwrap();
            assert!(response.headers().get("x-route-miss").is_none(), "{}: `{}` is in the table but the router does not answer {path}", spec.name, route.path);
            let server = if route.reach == Reach::Internal { Server::Internal } else { Server::Public };
            assert_eq!(map.resolve(server, &path), Target::Role(spec.name), "{path}");
        }
        // A path the router does not know does reach the fallback (the check above can fail).
        let response = router.clone().oneshot(Request::get("/api/v1/no-such-route").body(Body::empty()).unwrap()).await.unwrap();
        assert!(response.headers().get("x-route-miss").is_some());
    }
}

/// nginx: `/usr/sbin/nginx` or on PATH; `None` (the test skips) when absent,
/// unless `EMPORIUM_TEST_NGINX=required`.
fn nginx_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("nginx")).find(|p| p.is_file()));
    let found = [PathBuf::from("/usr/sbin/nginx")].into_iter().find(|p| p.is_file()).or(on_path);
    if found.is_none() && std::env::var("EMPORIUM_TEST_NGINX").is_ok_and(|v| v == "required") {
        panic!("EMPORIUM_TEST_NGINX=required, but there is no nginx (/usr/sbin/nginx or on PATH): apt-get install nginx-light");
    }
    found
}

/// A stand-in process of one role: answers every request with `status`,
/// its role in `x-role`, and what it was sent.
async fn stand_in(role: &'static str, status: StatusCode) -> SocketAddr {
    let app = Router::new().fallback(move |request: Request<Body>| async move {
        let mut seen = {
            let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            json!({
                "role": role,
                "path": request.uri().to_string(),
                "method": request.method().as_str(),
                "x_forwarded_for": header("x-forwarded-for"),
                "x_forwarded_proto": header("x-forwarded-proto"),
                "x_request_id": header("x-request-id"),
                "host": header("host"),
            })
        };
        let length = axum::body::to_bytes(request.into_body(), 64 * 1024 * 1024).await.map(|b| b.len()).unwrap_or(usize::MAX);
        seen["body_bytes"] = json!(length);
        (status, [("x-role", role)], axum::Json(seen))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A loopback port nobody listens on just now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// nginx in the foreground, stopped when dropped.
struct Running(Child);

impl Drop for Running {
    /// A fast shutdown (TERM) that takes the workers with it; SIGKILL would
    /// leave them running without their master.
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_for_port(port: u16, nginx: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if let Ok(Some(status)) = nginx.try_wait() {
            panic!("nginx stopped ({status}): {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "nginx does not listen on {port}: {}", std::fs::read_to_string(log).unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Answer {
    status: StatusCode,
    role: Option<String>,
    seen: Value,
}

async fn send(client: &reqwest::Client, method: &str, url: &str, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> Answer {
    let mut request = client.request(method.parse().unwrap(), url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status();
    let role = response.headers().get("x-role").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = response.bytes().await.unwrap_or_default();
    let seen = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    Answer { status, role, seen }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_takes_the_configuration_and_sends_every_path_to_its_role() {
    let Some(nginx) = nginx_binary() else {
        eprintln!("no nginx here: the generated configuration is checked where nginx is installed (EMPORIUM_TEST_NGINX=required in CI)");
        return;
    };
    let sandbox = Sandbox::new().await;
    let dir = sandbox.dir.path().join("nginx");
    std::fs::create_dir_all(&dir).unwrap();
    // nginx's workers run as another user when the master is root: they
    // need to reach their temporary files.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(sandbox.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut upstreams = Vec::new();
    for role in ["auth", "catalog", "orders", "search", "notify"] {
        upstreams.push(format!("{role}={}", stand_in(role, StatusCode::OK).await));
    }
    // Two web processes, the second failing every request with 503.
    let web = stand_in("web", StatusCode::OK).await;
    let failing = stand_in("web-failing", StatusCode::SERVICE_UNAVAILABLE).await;
    upstreams.push(format!("web={web},{failing}"));
    let (public, internal) = (free_port(), free_port());
    let conf = dir.join("nginx.conf");
    let mut generate = support::emporium_command(&sandbox);
    generate.args(["deploy", "nginx", "--listen", &format!("127.0.0.1:{public}"), "--internal-listen", &format!("127.0.0.1:{internal}")]);
    generate.arg("--run-dir").arg(&dir).arg("--out").arg(&conf);
    for u in &upstreams {
        generate.args(["--upstream", u]);
    }
    let output = generate.output().unwrap();
    let (_, stderr) = support::output_text(&output);
    assert!(output.status.success(), "{stderr}");

    let check = Command::new(&nginx).arg("-t").arg("-c").arg(&conf).arg("-p").arg(&dir).args(["-e", "stderr"]).output().unwrap();
    let (_, said) = support::output_text(&check);
    assert!(check.status.success(), "nginx -t refuses the configuration: {said}\n{}", std::fs::read_to_string(&conf).unwrap());
    assert!(!said.contains("[warn]") && !said.contains("[emerg]"), "{said}");

    let log = dir.join("startup.log");
    let child = Command::new(&nginx)
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(&dir)
        .arg("-e")
        .arg(&log)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    wait_for_port(public, &mut running.0, &log).await;
    wait_for_port(internal, &mut running.0, &log).await;
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(20)).build().unwrap();
    let public_url = |path: &str| format!("http://127.0.0.1:{public}{path}");
    let internal_url = |path: &str| format!("http://127.0.0.1:{internal}{path}");

    // First, while the failing web process is still in rotation: a POST is
    // never sent twice (one of them gets the failing process's 503), a GET
    // goes on to the other process.
    let mut posts = Vec::new();
    for _ in 0..4 {
        let a = send(&client, "POST", &public_url("/cart/items"), &[], Some(b"sku=A".to_vec())).await;
        posts.push((a.status, a.role));
    }
    assert!(posts.contains(&(StatusCode::SERVICE_UNAVAILABLE, Some("web-failing".into()))), "a POST that failed is not retried: {posts:?}");
    assert!(posts.contains(&(StatusCode::OK, Some("web".into()))), "{posts:?}");
    for _ in 0..6 {
        let a = send(&client, "GET", &public_url("/products/lamp"), &[], None).await;
        assert_eq!((a.status, a.role.as_deref()), (StatusCode::OK, Some("web")), "a GET goes on to a process that answers");
    }

    // Every route of every table, on the servers it is for, and on neither other.
    for (role, routes) in deploy::route_tables() {
        for route in routes {
            let path = sample(route.path);
            let on_public = send(&client, "GET", &public_url(&path), &[], None).await;
            let on_internal = send(&client, "GET", &internal_url(&path), &[], None).await;
            let (public_role, internal_role) = (on_public.role.as_deref(), on_internal.role.as_deref());
            match route.reach {
                Reach::Public => assert_eq!((public_role, internal_role, on_internal.status), (Some(role), None, StatusCode::NOT_FOUND), "{path}"),
                Reach::Internal => assert_eq!((public_role, on_public.status, internal_role), (None, StatusCode::NOT_FOUND, Some(role)), "{path}"),
                Reach::Both => assert_eq!((public_role, internal_role), (Some(role), Some(role)), "{path}"),
            }
            assert_eq!(on_public.seen["path"], if public_role.is_some() { json!(path) } else { Value::Null }, "the path goes on as it came");
        }
    }
    // The overlaps, the pages, and what stays private.
    for (path, expected) in [
        ("/api/v1/me", Some("auth")),
        ("/api/v1/me/recommendations", Some("search")),
        ("/api/v1/me/notification-preferences", Some("notify")),
        ("/api/v1/products?limit=5", Some("catalog")),
        ("/api/v1/products/lamp", Some("catalog")),
        ("/api/v1/products/prd_1/notify-me", Some("notify")),
        ("/api/v1/products/lamp/recommendations", Some("search")),
        ("/", Some("web")),
        ("/products/lamp/notify-me", Some("web")),
        ("/assets/site.css", Some("web")),
        ("/search?q=lamp", Some("web")),
        ("/api/v1/no-such-thing", Some("web")),
        ("/metrics", None),
        ("/internal/v1/offers", None),
        ("/internal/v1/api-keys/resolve", None),
    ] {
        let a = send(&client, "GET", &public_url(path), &[], None).await;
        assert_eq!(a.role.as_deref(), expected, "{path}");
        if expected.is_none() {
            assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}");
        }
    }
    for path in ["/", "/api/v1/products", "/metrics", "/.well-known/openid-configuration"] {
        let a = send(&client, "GET", &internal_url(path), &[], None).await;
        assert_eq!((a.status, a.role), (StatusCode::NOT_FOUND, None), "the internal server has nothing public: {path}");
    }

    // The headers a process relies on.
    let a = send(&client, "GET", &public_url("/api/v1/products"), &[("x-forwarded-for", "203.0.113.9"), ("x-request-id", "req-abc.1"), ("host", "shop.test")], None).await;
    assert_eq!(a.seen["x_forwarded_for"], "203.0.113.9, 127.0.0.1", "the connection's address is added last");
    assert_eq!(a.seen["x_request_id"], "req-abc.1");
    assert_eq!(a.seen["host"], "shop.test");
    assert_eq!(a.seen["x_forwarded_proto"], "http");
    for sent in [None, Some("not a sane id")] {
        let headers: Vec<(&str, &str)> = sent.iter().map(|v| ("x-request-id", *v)).collect();
        let a = send(&client, "GET", &public_url("/api/v1/products"), &headers, None).await;
        let id = a.seen["x_request_id"].as_str().unwrap();
        assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "a new id: {id}");
    }

    // Bodies: the server-wide limit, and more where a route takes more.
    let config = kernel::config::Config::default();
    let over = vec![b'x'; config.http.body_limit_bytes + 1];
    let a = send(&client, "POST", &public_url("/api/v1/carts"), &[], Some(over.clone())).await;
    assert_eq!((a.status, a.role), (StatusCode::PAYLOAD_TOO_LARGE, None));
    let picture = vec![b'x'; config.http.body_limit_bytes * 2];
    let a = send(&client, "POST", &public_url("/api/v1/admin/products/prd_1/media"), &[], Some(picture.clone())).await;
    assert_eq!((a.status, a.role.as_deref(), a.seen["body_bytes"].as_u64()), (StatusCode::OK, Some("catalog"), Some(picture.len() as u64)));
    let a = send(&client, "POST", &public_url("/api/v1/admin/products/import"), &[], Some(picture.clone())).await;
    assert_eq!((a.status, a.role.as_deref()), (StatusCode::OK, Some("catalog")));
    let too_big = vec![b'x'; config.media.max_upload_bytes + platform::routes::UPLOAD_FRAMING_BYTES + 1];
    let a = send(&client, "POST", &public_url("/api/v1/admin/products/prd_1/media"), &[], Some(too_big)).await;
    assert_eq!((a.status, a.role), (StatusCode::PAYLOAD_TOO_LARGE, None));
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_whether_a_process_is_ready() {
    let shop = support::Shop::new().await;
    let base = shop.serve().await;
    let health = |args: &[&str], env: &[(&str, String)]| {
        let mut cmd = support::emporium_command(&shop._sandbox);
        cmd.arg("health").args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let output = cmd.output().unwrap();
        let (out, err) = support::output_text(&output);
        (output.status.success(), out, err)
    };
    // The shop answers /readyz once it has caught up after start.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out, err) = health(&["--url", &format!("{base}/readyz")], &[]);
        if ok {
            assert!(out.contains("ready"), "{out}");
            break;
        }
        assert!(Instant::now() < deadline, "{err}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Without --url: /readyz on the port of `bind`, asked on loopback.
    let port = base.rsplit(':').next().unwrap().to_owned();
    let (ok, out, err) = health(&[], &[("EMPORIUM_BIND", format!("0.0.0.0:{port}"))]);
    assert!(ok && out.contains(&format!("http://127.0.0.1:{port}/readyz")), "{out}{err}");

    // Not ready: the status and what the process said.
    let unready = stand_in("unready", StatusCode::SERVICE_UNAVAILABLE).await;
    let (ok, _, err) = health(&["--url", &format!("http://{unready}/readyz")], &[]);
    assert!(!ok && err.contains("503"), "{err}");
    // Nobody there.
    let (ok, _, err) = health(&["--url", &format!("http://127.0.0.1:{}/readyz", free_port())], &[]);
    assert!(!ok && err.contains("no answer"), "{err}");
}
